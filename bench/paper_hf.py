#!/usr/bin/env python3
"""HF transformers on the Pre-gated MoE bench's Switch checkpoints (the peer of bench/paper.ts).

For one checkpoint written by Pregate's make-model (`SwitchTransformersForConditionalGeneration`),
batch 1, the encoder input bench/paper.ts uses (ids 2 + (i * 7919 + 13) % (vocab - 2)), greedy,
EOS disabled, min_new_tokens = max_new_tokens, KV cache:

- gpu-only: from_pretrained(..., device_map="cuda").
- offload: every expert module (`...mlp.experts.expert_N`, one module per expert in Switch) mapped to
  "cpu" in an explicit device_map, everything else to GPU 0; accelerate keeps those weights in host
  memory and copies an expert's weights to the GPU before each of its forwards (AlignDevicesHook,
  offload=True), so only the experts the router calls move: HF's on-demand offloading. The placement
  is checked after loading (bench/peer_bench.py's placement_report) and recorded.

Decode tokens/s = (N - 1) / (t_N - t_1) from per-token timestamps (a streamer that synchronizes
CUDA); peak GPU memory = torch.cuda.max_memory_allocated() over the timed generate (weights
included). One warm-up generate first. Writes --out JSON ({"rows": [...]}, rewritten after each
mode), rows shaped as bench/paper_report.ts's HfRow. `--selftest` checks the pure-Python parts.

Needs torch (CUDA), transformers 5.x, accelerate, safetensors. No network.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # peer_bench.py sits beside this file
import peer_bench as pb  # noqa: E402  (shared helpers: device map, placement check, env)

EXPERT_RE = re.compile(r"\.experts\.expert_\d+$")


def log(msg: str) -> None:
    print(f"[paper_hf] {msg}", flush=True)


def encoder_ids(n: int, vocab: int) -> list[int]:
    """The encoder input bench/paper.ts uses (never pad 0 or EOS 1)."""
    return [2 + ((i * 7919 + 13) % (vocab - 2)) for i in range(n)]


def expert_modules(model) -> list[str]:
    """One module per expert: `...mlp.experts.expert_N`."""
    return [name for name, _ in model.named_modules() if EXPERT_RE.search(name)]


def decode_rate(stamps: list[float]) -> float | None:
    """Tokens per second after the first token from per-token timestamps."""
    if len(stamps) < 2:
        return None
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def token_clock(torch):
    """A generate() streamer timestamping each new token; the first put (the decoder start) is not
    a generated token."""
    from transformers.generation.streamers import BaseStreamer

    class Clock(BaseStreamer):
        def __init__(self):
            self.times: list[float] = []
            self.puts = 0

        def put(self, value):
            self.puts += 1
            if self.puts == 1:
                return
            torch.cuda.synchronize()
            self.times.append(time.perf_counter())

        def end(self):
            pass

    return Clock()


def generate(torch, model, enc, n: int) -> dict:
    clock = token_clock(torch)
    ids = torch.tensor([enc], dtype=torch.long, device="cuda")
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                         max_new_tokens=n, min_new_tokens=n, eos_token_id=None, pad_token_id=0,
                         decoder_start_token_id=0, use_cache=True, streamer=clock)
    torch.cuda.synchronize()
    return {"tokens": out[0, 1:].tolist(), "decode_tokens_per_s": decode_rate(clock.times)}


def load(torch, mode: str, ckpt: str, dtype, device_map, via: str = "from_pretrained"):
    """The model on the GPU (gpu-only), or with its experts offloaded: through from_pretrained's
    device_map, or (`via` dispatch) loaded on the CPU and handed to accelerate's dispatch_model."""
    from transformers import SwitchTransformersForConditionalGeneration as Cls

    kw = {"dtype": dtype, "local_files_only": True}
    if mode == "gpu-only":
        return Cls.from_pretrained(ckpt, device_map="cuda", **kw)
    if via == "from_pretrained":
        return Cls.from_pretrained(ckpt, device_map=device_map, **kw)
    from accelerate import dispatch_model

    return dispatch_model(Cls.from_pretrained(ckpt, device_map="cpu", **kw),
                          device_map=device_map, main_device=0)


def run_mode(torch, args, mode: str, info: dict) -> dict:
    row = {"model": args.name, "dtype": args.dtype, "mode": f"hf-{mode}", "status": "failed"}
    model = None
    try:
        gc.collect()
        torch.cuda.empty_cache()
        for via in (["from_pretrained"] if mode == "gpu-only" else ["from_pretrained", "dispatch"]):
            t0 = time.perf_counter()
            try:
                model = load(torch, mode, args.model, info["dtype"], info["device_map"], via)
            except Exception as e:  # noqa: BLE001
                if via == "dispatch" or mode == "gpu-only":
                    raise
                log(f"{mode} via {via} failed to load ({pb.err_text(e)}); trying dispatch_model")
                continue
            row["load_s"], row["via"] = time.perf_counter() - t0, via
            place = pb.placement_report(torch, model, info["experts"],
                                        "gpu_only" if mode == "gpu-only" else "offload")
            row["placement_ok"], row["placement"] = place["ok"], place["why"]
            if place["ok"]:
                break
            pb.free_model(torch, model)
            model = None
        if model is None:
            raise RuntimeError(f"placement check failed: {row.get('placement')}")
        model.generation_config.eos_token_id = None
        log(f"{mode}: warm-up")
        generate(torch, model, info["enc"], min(4, args.tokens))
        torch.cuda.reset_peak_memory_stats()
        log(f"{mode}: timed generate of {args.tokens} tokens")
        g = generate(torch, model, info["enc"], args.tokens)
        row.update(g)
        row["peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
        row["status"] = "ok" if g["decode_tokens_per_s"] else "failed"
        log(f"{mode}: {g['decode_tokens_per_s']} tok/s, peak {row['peak_gpu_bytes'] / 2**30:.2f} GiB")
    except Exception as e:  # noqa: BLE001
        row["reason"] = pb.err_text(e)
        row["traceback"] = traceback.format_exc()
        log(f"{mode} FAILED: {row['reason']}")
    finally:
        if model is not None:
            pb.free_model(torch, model)
            model = None
            gc.collect()
            torch.cuda.empty_cache()
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="checkpoint directory (Pregate make-model, switch_transformers)")
    ap.add_argument("--name", help="preset name for the report, e.g. switch-base-8")
    ap.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16"])
    ap.add_argument("--encoder", type=int, default=256, help="encoder tokens")
    ap.add_argument("--tokens", type=int, default=64, help="decode tokens")
    ap.add_argument("--modes", default="gpu-only,offload")
    ap.add_argument("--out", help="JSON output path")
    ap.add_argument("--selftest", action="store_true", help="check the pure-Python parts and exit")
    args = ap.parse_args(argv)
    if args.selftest:
        return selftest()
    if not (args.model and args.name and args.out):
        ap.error("--model, --name and --out are required")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("gpu-only", "offload")]
    if bad:
        ap.error(f"--modes: unknown {bad}; expected gpu-only, offload")
    out = {"rows": [], "env": {}, "args": vars(args)}

    def write():
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=2)

    try:
        import torch
        from accelerate import init_empty_weights
        from transformers import AutoConfig, SwitchTransformersForConditionalGeneration as Cls

        out["env"] = pb.collect_env()
        config = AutoConfig.from_pretrained(args.model, local_files_only=True)
        with init_empty_weights():
            meta = Cls(config)
        experts = expert_modules(meta)
        info = {"dtype": pb.torch_dtype_of(torch, args.dtype), "experts": experts,
                "device_map": pb.offload_device_map(meta, experts, 0),
                "enc": encoder_ids(args.encoder, config.vocab_size)}
        del meta
        log(f"{args.name} {args.dtype}: {len(experts)} expert modules")
    except Exception as e:  # noqa: BLE001
        out["rows"].append({"model": args.name, "dtype": args.dtype, "mode": "hf-gpu-only",
                            "status": "failed", "reason": pb.err_text(e)})
        write()
        log(f"setup FAILED: {pb.err_text(e)}")
        return 1
    for mode in modes:
        out["rows"].append(run_mode(torch, args, mode, info))
        write()
    return 0 if any(r["status"] == "ok" for r in out["rows"]) else 1


def selftest() -> int:
    ids = encoder_ids(300, 32128)
    assert len(ids) == 300 and min(ids) >= 2 and max(ids) < 32128 and ids[0] == 15
    assert decode_rate([0.0]) is None and abs(decode_rate([1.0, 1.5, 2.0]) - 2.0) < 1e-12
    names = ["encoder.block.1.layer.1.mlp.experts.expert_0", "encoder.block.1.layer.1.mlp.experts",
             "decoder.block.3.layer.2.mlp.experts.expert_17", "decoder.block.3.layer.2.mlp.router"]

    class Fake:
        def named_modules(self):
            return [(n, None) for n in names]

    assert expert_modules(Fake()) == [names[0], names[2]]
    try:
        main(["--modes", "x", "--model", "d", "--name", "n", "--out", "o"])
    except SystemExit as e:
        assert e.code == 2
    print("paper_hf selftest ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
