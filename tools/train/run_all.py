#!/usr/bin/env python3
"""The whole recipe in one command (GPU host): tokenizer -> pretrain (a's and c's start) and the
dense model (d) side by side -> the two fine-tunes (a) and (c) side by side -> evaluation
(perplexity table, pre-gate agreement, HF transformers parity) -> results.json and the model
directories packed into <= 15 MiB parts under --out.

Progress lines carry the time since the start; results.json and run.log in --out are rewritten
after every stage, so a run cut short still leaves its log and what it measured.

Writes into --out:
  run.log        every stage's progress
  results.json   perplexities, agreements, HF parity, steps, seeds, wall times, parameter counts,
                 sha256 of every model file and of every part
  models.tar.NN  a tar of a/, c/, d/ (HF directories: bf16 model.safetensors, config.json,
                 generation_config.json, tokenizer.json, tokenizer_config.json, train_info.json),
                 tokenizer/ (tokenizer files, tokens.json, tokenizer_fixture.json) and eval.json,
                 split into parts: `cat models.tar.* | tar xf -`

Example (GPU host, carrying .train/data):
    python3 tools/train/run_all.py --data .train/data --out "$OUT"
Tiny CPU test:
    /usr/bin/python3 tools/train/run_all.py --data .train/data --out /tmp/o --tiny --bytes
"""
import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
PART_BYTES = 15 * 2 ** 20
PACKED_FILES = ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                "tokenizer_config.json", "train_info.json")
TOKENIZER_PACKED = ("tokenizer.json", "tokenizer_config.json", "tokens.json",
                    "tokenizer_fixture.json")
TINY_MODEL = ["--hidden", "64", "--layers", "3", "--heads", "2", "--kv-heads", "1",
              "--head-dim", "32", "--experts", "4", "--top-k", "2", "--moe-inter", "32"]
TINY_TRAIN = ["--ctx", "64", "--batch", "8", "--log-every", "10", "--eval-every", "20",
              "--eval-windows", "4", "--threads", "1"]


class Run:
    def __init__(self, out: str):
        self.out = out
        self.t0 = time.time()
        self.log_file = open(os.path.join(out, "run.log"), "a", buffering=1)
        self.lock = threading.Lock()
        self.results: Dict[str, object] = {"stages": {}}

    def say(self, line: str) -> None:
        with self.lock:
            print(line, flush=True)
            self.log_file.write(line + "\n")

    def note(self, msg: str) -> None:
        self.say(f"[{time.time() - self.t0:7.1f}s] [run_all] {msg}")

    def save(self) -> None:
        path = os.path.join(self.out, "results.json")
        with open(path + ".tmp", "w") as f:
            json.dump(self.results, f, indent=2)
        os.replace(path + ".tmp", path)

    def stages(self, named: Dict[str, List[str]], fatal: bool = True) -> bool:
        """Runs the named commands side by side; a failure ends the run when fatal."""
        procs = {}
        start = time.time()
        env = {**os.environ, "PREGATE_TRAIN_T0": str(self.t0), "PYTHONUNBUFFERED": "1"}
        for name, cmd in named.items():
            self.note(f"start {name}: {' '.join(cmd)}")
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 env=env, cwd=os.getcwd())
            t = threading.Thread(target=self._pump, args=(p,), daemon=True)
            t.start()
            procs[name] = (p, t)
        failed = []
        for name, (p, t) in procs.items():
            rc = p.wait()
            t.join()
            self.results["stages"][name] = {"seconds": round(time.time() - start, 2), "rc": rc}
            if rc != 0:
                failed.append(f"{name} (exit {rc})")
        self.save()
        if failed:
            self.note(f"FAILED: {', '.join(failed)}")
            self.results.setdefault("failures", []).extend(failed)
            self.save()
            if fatal:
                sys.exit(1)
        return not failed

    def _pump(self, p: subprocess.Popen) -> None:
        assert p.stdout is not None
        for line in p.stdout:
            self.say(line.rstrip("\n"))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack(run: Run, work: str, dirs: List[str]) -> Dict[str, object]:
    """tar of the model directories (no checkpoint.pt), split into PART_BYTES parts."""
    buf = io.BytesIO()
    files: Dict[str, str] = {}
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = [(f"tokenizer/{n}", os.path.join(work, "tokenizer", n)) for n in TOKENIZER_PACKED]
        entries.append(("eval.json", os.path.join(work, "eval.json")))
        for d in dirs:
            entries += [(f"{d}/{n}", os.path.join(work, d, n)) for n in PACKED_FILES]
        for arc, path in entries:
            if os.path.exists(path):
                with open(path, "rb") as f:
                    files[arc] = sha256_bytes(f.read())
                tar.add(path, arcname=arc)
    data = buf.getvalue()
    parts = {}
    for k in range(0, len(data), PART_BYTES):
        name = f"models.tar.{k // PART_BYTES:02d}"
        chunk = data[k:k + PART_BYTES]
        with open(os.path.join(run.out, name), "wb") as f:
            f.write(chunk)
        parts[name] = {"bytes": len(chunk), "sha256": sha256_bytes(chunk)}
    return {"tar_bytes": len(data), "tar_sha256": sha256_bytes(data), "parts": parts,
            "files_sha256": files, "unpack": "cat models.tar.* | tar xf -"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", required=True, help="directory with train.txt and heldout.txt")
    ap.add_argument("--out", required=True, help="where results.json, run.log, parts go")
    ap.add_argument("--work", default="/tmp/pregate-train", help="scratch directory")
    ap.add_argument("--steps", type=int, default=3000, help="pretrain steps S")
    ap.add_argument("--ft-steps", type=int, default=1000, help="fine-tune steps K")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--bytes", action="store_true", help="byte tokenizer (no `tokenizers`)")
    ap.add_argument("--tiny", action="store_true", help="tiny model and data (CPU test)")
    ap.add_argument("--serial", action="store_true", help="run stages one at a time")
    ap.add_argument("--no-hf-check", action="store_true")
    ap.add_argument("--train-args", default="", help="extra arguments for every train.py stage")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.work, exist_ok=True)
    run = Run(args.out)
    py = sys.executable
    w = args.work
    tok = os.path.join(w, "tokenizer")
    run.results.update({"argv": sys.argv, "seed": args.seed, "pretrain_steps": args.steps,
                        "finetune_steps": args.ft_steps, "dense_steps": args.steps + args.ft_steps,
                        "python": sys.version.split()[0]})
    run.note(f"data {args.data}, work {w}, out {args.out}, S={args.steps}, K={args.ft_steps}, "
             f"seed {args.seed}")

    def go(named: Dict[str, List[str]], fatal: bool = True) -> bool:
        if args.serial:
            return all([run.stages({k: v}, fatal) for k, v in named.items()])
        return run.stages(named, fatal)

    tok_cmd = [py, f"{HERE}/train_tokenizer.py", "--data", args.data, "--out", tok,
               "--vocab", str(args.vocab)]
    if args.bytes:
        tok_cmd.append("--bytes")
    if args.tiny:
        tok_cmd += ["--limit-bytes", "300000"]
    go({"tokenizer": tok_cmd})
    with open(os.path.join(tok, "tokens.json")) as f:
        run.results["tokenizer"] = json.load(f)

    extra = (TINY_TRAIN + TINY_MODEL if args.tiny else []) + args.train_args.split()
    base = [py, f"{HERE}/train.py"]
    common = ["--tok", tok, "--seed", str(args.seed)] + extra
    go({"pretrain": base + ["pretrain", "--out", f"{w}/base", "--steps", str(args.steps)] + common,
        "dense": base + ["dense", "--out", f"{w}/d", "--steps",
                         str(args.steps + args.ft_steps)] + common})
    ft = ["finetune", "--init", f"{w}/base", "--steps", str(args.ft_steps)]
    go({"finetune-a": base + ft + ["--out", f"{w}/a"] + common,
        "finetune-c": base + ft + ["--out", f"{w}/c", "--pregated"] + common})
    for d in ("base", "a", "c", "d"):
        with open(os.path.join(w, d, "train_info.json")) as f:
            info = json.load(f)
        info.pop("history", None) if d == "base" else None
        run.results.setdefault("models", {})[d] = info
    run.save()

    ev = [py, f"{HERE}/eval.py", "table", "--tok", tok, "--a", f"{w}/a", "--c", f"{w}/c",
          "--d", f"{w}/d", "--out", f"{w}/eval.json", "--text",
          os.path.join(args.data, "heldout.txt")]
    if args.tiny:
        ev += ["--max-windows", "8"]
    if not args.no_hf_check:
        ev.append("--hf-check")
    eval_ok = go({"eval": ev}, fatal=False)  # pack the models even when a check failed
    eval_path = os.path.join(w, "eval.json")
    if os.path.exists(eval_path):
        with open(eval_path) as f:
            run.results["eval"] = json.load(f)
    r = run.results.get("eval", {}).get("runs", {})
    summary = {k: {"ppl": round(v["ppl"], 4), "agreement": v["agreement"] and round(v["agreement"], 4)}
               for k, v in r.items()}
    run.results["summary"] = summary
    run.save()
    run.note("summary: " + json.dumps(summary))
    if "c" in r and "a" in r:
        run.note(f"(c) vs (a): {100 * (r['c']['ppl'] / r['a']['ppl'] - 1):+.2f}% perplexity")

    run.results["pack"] = pack(run, w, ["a", "c", "d"])
    run.results["seconds_total"] = round(time.time() - run.t0, 2)
    run.save()
    run.note(f"packed {len(run.results['pack']['parts'])} parts "
             f"({run.results['pack']['tar_bytes'] / 2 ** 20:.1f} MiB); "
             f"done in {run.results['seconds_total']}s")
    if not eval_ok:
        run.note("FAILED: the evaluation reported failures (see results.json 'eval.failures')")
        sys.exit(1)


if __name__ == "__main__":
    main()
