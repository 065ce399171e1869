#!/usr/bin/env python3
"""PyTorch evaluation of the saved models (bf16 files reloaded, computed in float32).

  table   perplexity on the held-out tokens with the protocol Pregate's `eval` uses (windows of
          256 tokens, float64 loss from the logits) for (a) the conventional model, (b) (a) with
          training-free strict pre-gating, (c) the pre-gated model, (d) the dense model; and the
          pre-gate agreement; optionally an HF transformers parity check of (a) and (d)
  logits  prints {"logits": [[...], ...]} for --ids, like `pregate logits`

Example:
    python3 tools/train/eval.py table --tok .train/run/tokenizer --a .train/run/a \\
        --c .train/run/c --d .train/run/d --hf-check --out .train/run/eval.json
    python3 tools/train/eval.py logits --model .train/run/c --ids 1,2,3 --routing pregate
"""
import argparse
import json
import os
import time
from typing import Dict, List, Optional

import torch

from common import exact_float32, load_model_dir, load_tokens, log, perplexity, pick_device, \
    windows
from model import ROUTINGS

HF_TOLERANCE = 2e-3  # float32 on both sides: differences are summation order only


def retokenize_check(model_dir: str, text_path: str, tokens: torch.Tensor) -> Dict[str, object]:
    """Re-encodes heldout.txt with the saved tokenizer.json (HF tokenizers, when installed) and
    compares with the token file the evaluation uses."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return {"checked": False, "why": "tokenizers is not installed"}
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    ids = tok.encode(open(text_path, encoding="utf-8").read(), add_special_tokens=False).ids
    same = ids == tokens.tolist()
    if not same:
        raise SystemExit(f"{model_dir}/tokenizer.json encodes {text_path} differently from the "
                         "token file (the tokenizer and the data do not belong together)")
    return {"checked": True, "equal": True, "tokens": len(ids)}


def hf_check(model_dir: str, tokens: torch.Tensor, device: str) -> Dict[str, object]:
    """Loads the directory with transformers' Qwen3MoeForCausalLM and compares its logits with
    this model's on two held-out windows (both float32). Fails loudly past HF_TOLERANCE."""
    import transformers
    from transformers import Qwen3MoeForCausalLM
    kwargs = {"attn_implementation": "eager"}
    if hasattr(transformers.PreTrainedModel, "set_experts_implementation"):
        kwargs["experts_implementation"] = "eager"
    try:
        hf, info = Qwen3MoeForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                       output_loading_info=True, **kwargs)
    except TypeError:
        hf, info = Qwen3MoeForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32,
                                                       output_loading_info=True, **kwargs)
    hf = hf.to(device).eval()
    missing = sorted(map(str, info.get("missing_keys") or []))
    unexpected = sorted(map(str, info.get("unexpected_keys") or []))
    ours, _ = load_model_dir(model_dir, device)
    x = torch.stack(windows(tokens)[:2]).to(device)
    with torch.no_grad():
        ref = hf(input_ids=x, use_cache=False).logits.float()
        got, _ = ours(x, routing="own")
    diff = (ref - got).abs().max().item()
    result = {"max_abs_diff": diff, "logits_max_abs": ref.abs().max().item(),
              "missing_keys": missing, "unexpected_keys": unexpected,
              "transformers": transformers.__version__, "tolerance": HF_TOLERANCE}
    if missing or unexpected or not diff <= HF_TOLERANCE:
        raise SystemExit(f"HF parity FAILED for {model_dir}: {json.dumps(result)}")
    return result


def evaluate(name: str, model_dir: str, routing: str, tokens: torch.Tensor, device: str,
             batch: int, max_windows: int, window: int) -> Dict[str, object]:
    t0 = time.time()
    model, _ = load_model_dir(model_dir, device)
    r = perplexity(model, tokens, routing, device, batch=batch, max_windows=max_windows,
                   window=window)
    r.update({"model": os.path.basename(os.path.normpath(model_dir)), "routing": routing,
              "seconds": round(time.time() - t0, 2)})
    agree = "" if r["agreement"] is None else f", agreement {r['agreement']:.4f}"
    log("eval", f"({name}) {model_dir} routing={routing}: ppl {r['ppl']:.4f} "
                f"(loss {r['loss']:.5f}, {r['tokens_predicted']} tokens{agree})")
    return r


def table(args: argparse.Namespace) -> None:
    device = pick_device(args.device)
    exact_float32()
    tokens = load_tokens(args.heldout or os.path.join(args.tok, "heldout.u16"))
    out: Dict[str, object] = {"protocol": f"windows of {args.window} tokens, non-overlapping, "
                                          "each alone; float64 mean NLL of positions 1..len-1; "
                                          "ppl = exp",
                              "device": device, "heldout_tokens": tokens.numel(), "runs": {}}
    runs: Dict[str, object] = out["runs"]  # type: ignore[assignment]
    specs = [("a", args.a, "own"), ("b", args.a, "next_router"), ("c", args.c, "pregate"),
             ("d", args.d, "own")]
    if args.c:
        specs.append(("c_own_routers", args.c, "own"))
    for name, path, routing in specs:
        if path:
            runs[name] = evaluate(name, path, routing, tokens, device, args.batch,
                                  args.max_windows, args.window)
    a = runs.get("a")
    if a:
        for k in ("b", "c", "d"):
            if k in runs:
                runs[k]["ppl_vs_a"] = runs[k]["ppl"] / a["ppl"] - 1
    write_json(args.out, out)
    failures = []
    if args.text:
        try:
            out["retokenize"] = retokenize_check(args.a or args.c or args.d, args.text, tokens)
        except SystemExit as e:
            out["retokenize"] = {"checked": True, "equal": False, "error": str(e)}
            failures.append(str(e))
    if args.hf_check:
        out["hf_check"] = {}
        for name, path in (("a", args.a), ("d", args.d)):
            if not path:
                continue
            try:
                r = hf_check(path, tokens, device)
                log("eval", f"HF parity ({name}): max |logits diff| {r['max_abs_diff']:.3e} "
                            f"(tolerance {HF_TOLERANCE}) OK")
            except Exception as e:  # recorded, then the run fails after writing everything
                r = {"error": f"{type(e).__name__}: {e}"}
                failures.append(f"HF parity ({name}): {r['error']}")
            out["hf_check"][name] = r
    out["failures"] = failures
    write_json(args.out, out)
    log("eval", f"wrote {args.out}")
    if failures:
        log("eval", "FAILED: " + " | ".join(failures))
        raise SystemExit(1)


def write_json(path: str, obj: Dict[str, object]) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)


def logits(args: argparse.Namespace) -> None:
    device = pick_device(args.device)
    exact_float32()
    model, _ = load_model_dir(args.model, device)
    ids: List[int] = [int(x) for x in args.ids.split(",")]
    with torch.no_grad():
        lo, stats = model(torch.tensor([ids], device=device), routing=args.routing, collect=True)
    out: Dict[str, Optional[object]] = {"logits": lo[0].cpu().tolist(),
                                        "agreement": stats.agreement()}
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("table")
    t.add_argument("--tok", required=True, help="tokenizer directory (heldout.u16)")
    t.add_argument("--a", help="conventional model directory (also (b))")
    t.add_argument("--c", help="pre-gated model directory")
    t.add_argument("--d", help="dense model directory")
    t.add_argument("--text", help="heldout.txt, to re-check the tokenization (needs tokenizers)")
    t.add_argument("--hf-check", action="store_true", help="compare (a), (d) with transformers")
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--max-windows", type=int, default=0, help="only the first N windows (tests)")
    t.add_argument("--window", type=int, default=256, help="window length (Pregate's --context)")
    t.add_argument("--heldout", help="token file to evaluate (default TOK/heldout.u16)")
    t.add_argument("--device", default="auto")
    t.add_argument("--out", required=True)
    g = sub.add_parser("logits")
    g.add_argument("--model", required=True)
    g.add_argument("--ids", required=True)
    g.add_argument("--routing", default="own", choices=ROUTINGS)
    g.add_argument("--device", default="cpu")
    args = ap.parse_args()
    table(args) if args.cmd == "table" else logits(args)


if __name__ == "__main__":
    main()
