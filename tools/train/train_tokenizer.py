#!/usr/bin/env python3
"""Trains the byte-level BPE tokenizer (Qwen2-style pre-tokenizer) with HF `tokenizers` and
encodes the data once for training and evaluation.

Writes into OUT:
  tokenizer.json, tokenizer_config.json  (eos <|endoftext|>, a ChatML chat_template)
  train.u16       training tokens (uint16 LE): each document encoded alone, <|endoftext|> after each
  heldout.u16     heldout.txt encoded whole, no special tokens added (the eval protocol)
  tokens.json     counts, vocabulary size and special-token ids
  tokenizer_fixture.json  HF's ids for a varied text set (for the JS tokenizer's tests)

`--bytes` (for machines without `tokenizers`): a byte tokenizer (ids 3 + byte value, no merges),
written as a tokenizer.json that HF loads and that gives the same ids.

Example:
    python3 tools/train/train_tokenizer.py --data .train/data --out .train/run/tokenizer
"""
import argparse
import json
import os
import time
import unicodedata
from typing import Dict, List

import numpy as np

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
FIXTURE_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces,   runs   of spaces\tand\ttabs\n\n\nand newlines\r\n",
    "Numbers: 3.14159, 1,000,000 and 2024-12-07; phone 555-0199.",
    "Unicode: naïve café, Größe, São Paulo, Ελληνικά, русский, 日本語のテキスト, 한국어",
    "Emoji: 🙂👍🏽 family 👨‍👩‍👧 flags 🇳🇿",
    "Contractions: don't, I'M, we've, they'll, she'd, it's.",
    "<|im_start|>user\nHello there!<|im_end|>\n<|im_start|>assistant\n",
    "Text with <|endoftext|> in the middle",
    "\"Quotes\" and 'single quotes' -- and dashes—em dashes.",
    "",
]


def bytes_to_unicode() -> Dict[int, str]:
    """GPT-2's byte -> printable character map (what the ByteLevel pre-tokenizer emits)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def pre_tokenizer_json() -> Dict[str, object]:
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": QWEN2_PATTERN}, "behavior": "Isolated",
         "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
         "use_regex": False},
    ]}


def byte_tokenizer_json() -> Dict[str, object]:
    """A tokenizer.json of the byte tokenizer: ids 0-2 specials, 3 + b for byte b, no merges."""
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for b, ch in bytes_to_unicode().items():
        vocab[ch] = len(SPECIALS) + b
    bl = {"add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": s, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
                         for i, s in enumerate(SPECIALS)],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": pre_tokenizer_json(),
        "post_processor": {"type": "ByteLevel", **bl},
        "decoder": {"type": "ByteLevel", **bl},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }


class ByteEncoder:
    """Encodes like byte_tokenizer_json() under HF (special tokens in the text are matched)."""

    def encode(self, text: str) -> List[int]:
        ids: List[int] = []
        rest = text
        while rest:
            hits = [(rest.find(s), s) for s in SPECIALS if s in rest]
            if not hits:
                break
            pos, special = min(hits)
            ids += self._bytes(rest[:pos]) + [SPECIALS.index(special)]
            rest = rest[pos + len(special):]
        return ids + self._bytes(rest)

    def _bytes(self, text: str) -> List[int]:
        return [len(SPECIALS) + b for b in unicodedata.normalize("NFC", text).encode("utf-8")]

    def encode_batch(self, texts: List[str]) -> List[List[int]]:
        return [self.encode(t) for t in texts]


class HfEncoder:
    def __init__(self, tok):
        self.tok = tok

    def encode(self, text: str) -> List[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: List[str]) -> List[List[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]


def train_hf(docs: List[str], vocab: int, out: str):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, \
        processors, trainers
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, min_frequency=2, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(docs, trainer, length=len(docs))  # whole documents, newlines kept
    for i, s in enumerate(SPECIALS):
        if tok.token_to_id(s) != i:
            raise SystemExit(f"special token {s} got id {tok.token_to_id(s)}, expected {i}")
    tok.save(os.path.join(out, "tokenizer.json"))
    return tok


def tokenizer_config(max_len: int) -> Dict[str, object]:
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {str(i): {"content": s, "lstrip": False, "normalized": False,
                                          "rstrip": False, "single_word": False, "special": True}
                                 for i, s in enumerate(SPECIALS)},
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "errors": "replace",
        "model_max_length": max_len,
        "pad_token": "<|endoftext|>",
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }


def documents(path: str) -> List[str]:
    text = open(path, encoding="utf-8").read()
    return [d.strip("\n") for d in text.split("\n\n") if d.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", required=True, help="directory with train.txt and heldout.txt")
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--max-len", type=int, default=256, help="model_max_length")
    ap.add_argument("--bytes", action="store_true", help="byte tokenizer (no `tokenizers`)")
    ap.add_argument("--limit-bytes", type=int, default=0,
                    help="use only the first N bytes of train.txt (tiny local tests)")
    args = ap.parse_args()
    t0 = time.time()
    os.makedirs(args.out, exist_ok=True)
    train_txt = os.path.join(args.data, "train.txt")
    if args.limit_bytes:
        cut = open(train_txt, encoding="utf-8").read()[:args.limit_bytes]
        train_txt = os.path.join(args.out, "train.limited.txt")
        open(train_txt, "w", encoding="utf-8").write(cut)
    docs = documents(train_txt)
    if args.bytes:
        with open(os.path.join(args.out, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(byte_tokenizer_json(), f, ensure_ascii=False, indent=2)
        enc = ByteEncoder()
        vocab = len(SPECIALS) + 256
    else:
        tok = train_hf(docs, args.vocab, args.out)
        enc = HfEncoder(tok)
        vocab = tok.get_vocab_size()
    with open(os.path.join(args.out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_config(args.max_len), f, ensure_ascii=False, indent=2)

    train_ids: List[int] = []
    for ids in enc.encode_batch(docs):
        train_ids += ids
        train_ids.append(0)  # <|endoftext|> between documents
    heldout = enc.encode(open(os.path.join(args.data, "heldout.txt"), encoding="utf-8").read())
    if vocab > 65535:
        raise SystemExit("vocabulary too large for uint16 token files")
    np.asarray(train_ids, dtype="<u2").tofile(os.path.join(args.out, "train.u16"))
    np.asarray(heldout, dtype="<u2").tofile(os.path.join(args.out, "heldout.u16"))
    fixture = [{"text": t, "ids": enc.encode(t)} for t in FIXTURE_TEXTS]
    with open(os.path.join(args.out, "tokenizer_fixture.json"), "w", encoding="utf-8") as f:
        json.dump({"kind": "bytes" if args.bytes else "hf-bpe", "cases": fixture}, f,
                  ensure_ascii=False, indent=1)
    info = {"kind": "bytes" if args.bytes else "hf-bpe", "vocab_size": vocab,
            "specials": {s: i for i, s in enumerate(SPECIALS)}, "eos_token_id": 0,
            "train_documents": len(docs), "train_tokens": len(train_ids),
            "heldout_tokens": len(heldout), "seconds": round(time.time() - t0, 2)}
    with open(os.path.join(args.out, "tokens.json"), "w") as f:
        json.dump(info, f, indent=2)
    print(f"[tokenizer] {json.dumps(info)}", flush=True)


if __name__ == "__main__":
    main()
