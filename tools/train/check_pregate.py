#!/usr/bin/env python3
"""Checks that Pregate computes what tools/train's PyTorch model computes on the same saved
files: runs `deno task pregate logits` and this model (float32 from the bf16 files) on the same
ids and compares every logit.

  --routing own          Pregate resident (each layer's own router)
  --routing next_router  Pregate --mode pregated --pregate strict on a model without pre-gates
  --routing pregate      Pregate --mode pregated --pregate strict on a model with pre-gates

Exits 1 when the largest difference exceeds --tol.

Example:
    /usr/bin/python3 tools/train/check_pregate.py --model .train/tiny/c --routing pregate --ids 5,9,77,3
"""
import argparse
import json
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import exact_float32, load_model_dir  # noqa: E402
from model import ROUTINGS  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pregate_logits(model_dir: str, ids: str, routing: str, repo: str) -> torch.Tensor:
    cmd = ["deno", "run", "-A", "cli.ts", "logits", "--model", os.path.abspath(model_dir),
           "--ids", ids]
    if routing != "own":
        cmd += ["--mode", "pregated", "--pregate", "strict"]
    env = {**os.environ, "XDG_RUNTIME_DIR": os.environ.get("XDG_RUNTIME_DIR", "/tmp/xdg")}
    os.makedirs(env["XDG_RUNTIME_DIR"], exist_ok=True)
    p = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"pregate logits failed ({p.returncode}):\n{p.stderr[-3000:]}")
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("{")][-1]
    return torch.tensor(json.loads(line)["logits"], dtype=torch.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--ids", default="5,9,77,3,120,44")
    ap.add_argument("--routing", default="own", choices=ROUTINGS)
    ap.add_argument("--tol", type=float, default=1e-2)
    ap.add_argument("--repo", default=REPO, help="the Pregate checkout whose cli.ts runs")
    args = ap.parse_args()
    exact_float32()
    model, _ = load_model_dir(args.model, "cpu")
    ids = [int(x) for x in args.ids.split(",")]
    with torch.no_grad():
        ours, stats = model(torch.tensor([ids]), routing=args.routing, collect=True)
        own, _ = model(torch.tensor([ids]), routing="own")
    ours = ours[0].double()
    # How much this routing moves the logits away from the model's own routing: the comparison
    # only says something about the routing when this is well above the tolerance.
    routing_effect = (ours - own[0].double()).abs().max().item()
    theirs = pregate_logits(args.model, args.ids, args.routing, args.repo)
    if theirs.shape != ours.shape:
        raise SystemExit(f"shape: pregate {tuple(theirs.shape)}, pytorch {tuple(ours.shape)}")
    diff = (theirs - ours).abs().max().item()
    same_argmax = bool((theirs.argmax(-1) == ours.argmax(-1)).all())
    agree = stats.agreement()
    print(json.dumps({"model": args.model, "routing": args.routing, "ids": ids,
                      "max_abs_diff": diff, "logits_max_abs": ours.abs().max().item(),
                      "same_argmax": same_argmax, "pytorch_agreement": agree,
                      "routing_effect": routing_effect,
                      "ok": diff <= args.tol}))
    if not diff <= args.tol:
        sys.exit(1)


if __name__ == "__main__":
    main()
