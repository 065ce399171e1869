#!/usr/bin/env python3
"""Peer figures for Pregate, measured with PyTorch / HF transformers on the same GPU host.

Three independent parts (each in its own try/except; one failing does not stop the others):

1. gemv: y = W @ x for W 14336x4096 (fp32, fp16, bf16) on CUDA with x a vector (cuBLAS through
   torch.matmul -> mv), several W copies rotated so no rep finds W in L2, CUDA-event timing,
   warm-up, median of many reps; GB/s of weight bytes. Plus a 1 GiB device-to-device copy_
   (read + write bytes), the peer of Pregate's copyBufferToBuffer row.
2. copy: host->GPU `src.to("cuda", non_blocking=True)` from pinned (torch.empty(..., pin_memory=True))
   and pageable host tensors of 4/16/64/256 MiB; median GB/s (CUDA events; wall clock also kept).
3. hf: HF transformers decode tokens/s on Pregate `make-model` checkpoints (--dirs): batch 1, the
   16-token prompt bench/offload.ts uses ((i * 7919 + 13) % vocab), greedy, EOS disabled,
   min_new_tokens = max_new_tokens, KV cache; per-token timestamps from a streamer (synchronize +
   perf_counter), decode tok/s = (N - 1) / (t_N - t_1), i.e. time per token after the first.
   (a) gpu_only: from_pretrained(..., device_map="cuda").
   (b) offload: every expert module (transformers 5 fuses a layer's experts into one module,
       `model.layers.L.mlp.experts`, parameters gate_up_proj [E, 2I, H] and down_proj [E, H, I]) is
       mapped to "cpu" in an explicit device_map, everything else to GPU 0. transformers hands that
       map to accelerate's dispatch_model, which (main device = GPU 0) keeps those weights in a CPU
       state dict, replaces the module's parameters by meta tensors and attaches an AlignDevicesHook
       (offload=True, execution_device=0): before every forward of the experts module the hook copies
       each of its parameters to the GPU (set_module_tensor_to_device -> tensor.to(device), a blocking
       copy from ordinary, unpinned host memory), the forward runs on the GPU, and afterwards the
       parameters are set back to meta (freed). With fused experts that is ALL E experts of the layer
       per MoE layer per forward (decode step), like Pregate's prefetch-all mode, not only the top-k.
       The script checks this placement after loading (hooks, meta parameters, CUDA outputs) and
       records it; `--offload-via dispatch` loads on the CPU and calls dispatch_model itself instead.

Outputs PREFIX.json and PREFIX.md (--out PREFIX), rewritten after every part (and after every HF run;
on SIGTERM, e.g. from `timeout`, the part running is marked "interrupted", the outputs are written and
the exit status is 143). Exit status 1 only if every part that ran failed. See bench/README.md.
`--selftest` checks the pure-Python parts (arguments, statistics, device map, report writing) without
torch or a GPU.

Needs torch (CUDA), and for part 3 transformers (5.x) + accelerate + safetensors. No network.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GEMV_ROWS, GEMV_COLS = 14336, 4096
COPY_SIZES_MIB = [4, 16, 64, 256]
PROMPT_LEN = 16
GIB = 1 << 30
MIB = 1 << 20


def log(msg: str) -> None:
    print(f"[peer_bench] {msg}", flush=True)


def err_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def percentile(xs, q: float):
    """Lower nearest-rank percentile (q in [0, 1]): sorted(xs)[floor(q * (n - 1))]; nan if empty."""
    if not xs:
        return float("nan")
    ys = sorted(xs)
    return ys[int(q * (len(ys) - 1))]


def tf32_setting(torch):
    """torch.backends.cuda.matmul.allow_tf32, or a note if the (legacy) getter fails."""
    try:
        return bool(torch.backends.cuda.matmul.allow_tf32)
    except Exception as e:  # noqa: BLE001
        return f"unavailable ({err_text(e)})"


class Interrupted(BaseException):
    """Raised from the SIGTERM/SIGINT handler (e.g. `timeout` ran out) so the outputs still get written."""


def pregate_prompt(vocab: int) -> list[int]:
    """The prompt bench/offload.ts uses, so generated tokens can be compared with Pregate's."""
    return [(i * 7919 + 13) % vocab for i in range(PROMPT_LEN)]


# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------


def collect_env() -> dict:
    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "argv": sys.argv,
    }
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_cuda"] = torch.version.cuda
        env["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            env["gpu"] = p.name
            env["gpu_total_bytes"] = p.total_memory
            env["gpu_capability"] = f"{p.major}.{p.minor}"
            env["gpu_sm_count"] = p.multi_processor_count
            env["matmul_allow_tf32"] = tf32_setting(torch)
    except Exception as e:  # noqa: BLE001
        env["torch_error"] = err_text(e)
    for mod in ("transformers", "accelerate", "safetensors"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001
            env[mod] = f"unavailable ({err_text(e)})"
    try:
        q = "name,driver_version,pcie.link.gen.current,pcie.link.gen.max,pcie.link.width.current"
        r = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20)
        env["nvidia_smi"] = {"query": q, "result": r.stdout.strip() or r.stderr.strip()}
    except Exception as e:  # noqa: BLE001
        env["nvidia_smi"] = f"unavailable ({err_text(e)})"
    return env


# --------------------------------------------------------------------------------------------
# Part 1: GEMV (+ device copy)
# --------------------------------------------------------------------------------------------


def time_events(torch, fn, reps: int) -> list[float]:
    """Per-call GPU time (ms) of fn(i) for i in range(reps), one event pair around each call."""
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    torch.cuda.synchronize()
    for i in range(reps):
        starts[i].record()
        fn(i)
        ends[i].record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in zip(starts, ends)]


def time_loop(torch, fn, reps: int) -> float:
    """Mean GPU time (ms) per call of reps back-to-back calls between one event pair."""
    a = torch.cuda.Event(enable_timing=True)
    b = torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    a.record()
    for i in range(reps):
        fn(i)
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / reps


def bench_gemv(args, progress=None) -> dict:
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available")
    dev = torch.device("cuda")
    res = {
        "shape": [GEMV_ROWS, GEMV_COLS],
        "op": "torch.matmul(W, x, out=y) (2-D @ 1-D: dispatches to mv, cuBLAS gemv)",
        "copies": args.gemv_copies,
        "reps": args.gemv_reps,
        "warmup": args.gemv_warmup,
        "timing": "CUDA events around each call; median; GB/s = weight bytes / time",
        "matmul_allow_tf32": tf32_setting(torch),
        "results": [],
        "errors": [],
    }
    for name, dt in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
        ws = x = y = call = None
        try:
            g = torch.Generator(device=dev)
            g.manual_seed(1234)
            ws = [torch.randn(GEMV_ROWS, GEMV_COLS, device=dev, dtype=dt, generator=g)
                  for _ in range(args.gemv_copies)]
            x = (torch.randn(GEMV_COLS, device=dev, dtype=torch.float32, generator=g) / 64).to(dt)
            y = torch.empty(GEMV_ROWS, device=dev, dtype=dt)
            k = len(ws)

            def call(i, ws=ws, x=x, y=y, k=k):
                torch.matmul(ws[i % k], x, out=y)

            for i in range(args.gemv_warmup):
                call(i)
            torch.cuda.synchronize()
            # Correctness (informational): against an fp32 reference of copy 0.
            torch.matmul(ws[0], x, out=y)
            ref = ws[0].float() @ x.float()
            rel = ((y.float() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
            del ref
            ms = time_events(torch, call, args.gemv_reps)
            loop_ms = time_loop(torch, call, args.gemv_reps)
            wbytes = ws[0].numel() * ws[0].element_size()
            med = median(ms)
            r = {
                "dtype": name,
                "weight_bytes": wbytes,
                "rotated_bytes": wbytes * k,
                "median_us": med * 1e3,
                "min_us": min(ms) * 1e3,
                "p90_us": percentile(ms, 0.9) * 1e3,
                "gb_s": wbytes / (med * 1e-3) / 1e9,
                "best_gb_s": wbytes / (min(ms) * 1e-3) / 1e9,
                "loop_mean_us": loop_ms * 1e3,
                "loop_gb_s": wbytes / (loop_ms * 1e-3) / 1e9,
                "max_rel_err_vs_fp32": rel,
            }
            res["results"].append(r)
            log(f"gemv {name}: {r['gb_s']:.0f} GB/s (median {r['median_us']:.1f} us; back-to-back "
                f"{r['loop_gb_s']:.0f} GB/s; rel err {rel:.2e})")
        except Exception as e:  # noqa: BLE001
            res["errors"].append({"dtype": name, "error": err_text(e),
                                  "traceback": traceback.format_exc()})
            log(f"gemv {name} FAILED: {err_text(e)}")
        finally:
            del ws, x, y, call  # call's defaults hold the W copies too
            gc.collect()
            torch.cuda.empty_cache()

    # Device-to-device copy (peer of "copyBufferToBuffer 1024 MiB x4 (read+write bytes)").
    src = dst = None
    try:
        n = GIB
        src = torch.empty(n, dtype=torch.uint8, device=dev).fill_(1)
        dst = torch.empty_like(src)
        for _ in range(3):
            dst.copy_(src)
        ms = time_events(torch, lambda i, d=dst, s=src: d.copy_(s), 10)
        med = median(ms)
        res["d2d_copy"] = {
            "bytes": n,
            "median_ms": med,
            "gb_s_read_plus_write": 2 * n / (med * 1e-3) / 1e9,
            "note": "dst.copy_(src), 1 GiB, 10 reps, CUDA events; read + write bytes",
        }
        log(f"d2d copy 1 GiB: {res['d2d_copy']['gb_s_read_plus_write']:.0f} GB/s (read+write)")
    except Exception as e:  # noqa: BLE001
        res["errors"].append({"dtype": "d2d_copy", "error": err_text(e)})
        log(f"d2d copy FAILED: {err_text(e)}")
    finally:
        del src, dst
        gc.collect()
        torch.cuda.empty_cache()
    if not res["results"]:
        raise RuntimeError("every GEMV dtype failed: " + "; ".join(x["error"] for x in res["errors"]))
    return res


# --------------------------------------------------------------------------------------------
# Part 2: host -> GPU copies
# --------------------------------------------------------------------------------------------


def bench_copy(args, progress=None) -> dict:
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available")
    res = {
        "op": 'src.to("cuda", non_blocking=True); src = torch.empty(n, dtype=torch.uint8, '
              'pin_memory=True|False)',
        "timing": "CUDA events around the call (median) and wall clock (synchronize + perf_counter)",
        "results": [],
        "errors": [],
    }
    for mib in COPY_SIZES_MIB:
        n = mib * MIB
        reps = args.copy_reps if mib < 256 else max(5, args.copy_reps // 2)
        for kind in ("pinned", "pageable"):
            src = None
            try:
                src = torch.empty(n, dtype=torch.uint8, pin_memory=(kind == "pinned"))
                src.fill_(7)  # touch every page
                for _ in range(3):
                    d = src.to("cuda", non_blocking=True)
                    torch.cuda.synchronize()
                    del d
                ev_ms, wall_ms = [], []
                for _ in range(reps):
                    a = torch.cuda.Event(enable_timing=True)
                    b = torch.cuda.Event(enable_timing=True)
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    a.record()
                    d = src.to("cuda", non_blocking=True)
                    b.record()
                    torch.cuda.synchronize()
                    wall_ms.append((time.perf_counter() - t0) * 1e3)
                    ev_ms.append(a.elapsed_time(b))
                    del d
                r = {
                    "kind": kind,
                    "mib": mib,
                    "reps": reps,
                    "is_pinned": bool(src.is_pinned()),
                    "median_ms": median(ev_ms),
                    "gb_s": n / (median(ev_ms) * 1e-3) / 1e9,
                    "wall_median_ms": median(wall_ms),
                    "wall_gb_s": n / (median(wall_ms) * 1e-3) / 1e9,
                }
                res["results"].append(r)
                log(f"h2d {kind} {mib} MiB: {r['gb_s']:.2f} GB/s (wall {r['wall_gb_s']:.2f} GB/s)")
            except Exception as e:  # noqa: BLE001
                res["errors"].append({"kind": kind, "mib": mib, "error": err_text(e)})
                log(f"h2d {kind} {mib} MiB FAILED: {err_text(e)}")
            finally:
                del src
                gc.collect()
                torch.cuda.empty_cache()
    if not res["results"]:
        raise RuntimeError("every copy failed: " + "; ".join(x["error"] for x in res["errors"]))
    return res


# --------------------------------------------------------------------------------------------
# Part 3: HF transformers decode
# --------------------------------------------------------------------------------------------


def torch_dtype_of(torch, name: str):
    table = {
        "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
        "fp16": torch.float16, "f16": torch.float16, "float16": torch.float16,
        "fp32": torch.float32, "f32": torch.float32, "float32": torch.float32,
    }
    if name not in table:
        raise ValueError(f"unknown dtype {name!r}")
    return table[name]


def checkpoint_dtype(torch, ckpt: str, override: str) -> tuple:
    """(torch dtype, where it came from): --dtype, else config.json dtype/torch_dtype, else bf16."""
    if override != "auto":
        return torch_dtype_of(torch, override), f"--dtype {override}"
    with open(os.path.join(ckpt, "config.json")) as fh:
        cfg = json.load(fh)
    for key in ("dtype", "torch_dtype"):
        v = cfg.get(key)
        if isinstance(v, str):
            try:
                return torch_dtype_of(torch, v.replace("torch.", "")), f"config.json {key}={v}"
            except ValueError:
                pass
    return torch.bfloat16, "default bfloat16 (config.json names no dtype)"


def meta_model(ckpt: str):
    """The model's module tree on the meta device (no weights read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(ckpt, local_files_only=True)
    try:
        from accelerate import init_empty_weights

        with init_empty_weights():
            return config, AutoModelForCausalLM.from_config(config)
    except Exception as e:  # noqa: BLE001
        log(f"  init_empty_weights failed ({err_text(e)}); using torch.device('meta')")
        with torch.device("meta"):
            return config, AutoModelForCausalLM.from_config(config)


def find_expert_modules(model) -> list[str]:
    """Modules named `...experts` that hold parameters (fused or one submodule per expert)."""
    names = []
    for name, mod in model.named_modules():
        if name.split(".")[-1] == "experts" and any(True for _ in mod.parameters()):
            if not any(name.startswith(p + ".") for p in names):
                names.append(name)
    return names


def offload_device_map(model, expert_names: list[str], gpu=0) -> dict:
    """Complete, non-overlapping device_map: expert modules -> "cpu", everything else -> gpu.

    Modules that contain an expert module are split into their children (and their own direct
    parameters / persistent buffers, if any); all other modules are mapped whole. The first entry
    is a GPU one (cosmetic: accelerate's dispatch_model takes its main device from the set of non-"cpu"/"disk"
    values, which here is just the one GPU; the dispatch path passes main_device=0 explicitly anyway)."""
    experts = set(expert_names)
    state_keys = set(model.state_dict().keys())
    dm: dict = {}

    def join(prefix, name):
        return f"{prefix}.{name}" if prefix else name

    def has_expert_below(prefix):
        return any(e.startswith(prefix + ".") for e in experts) if prefix else bool(experts)

    def visit(module, prefix):
        for pname, _ in module.named_parameters(recurse=False):
            dm[join(prefix, pname)] = gpu
        for bname, _ in module.named_buffers(recurse=False):
            if join(prefix, bname) in state_keys:
                dm[join(prefix, bname)] = gpu
        for cname, child in module.named_children():
            full = join(prefix, cname)
            if full in experts:
                dm[full] = "cpu"
            elif has_expert_below(full):
                visit(child, full)
            else:
                dm[full] = gpu

    visit(model, "")
    # Put a GPU entry first (readability of the recorded map; see the docstring).
    first_gpu = next((k for k, v in dm.items() if v != "cpu"), None)
    if first_gpu is not None:
        dm = {first_gpu: dm[first_gpu], **{k: v for k, v in dm.items() if k != first_gpu}}
    return dm


def expert_bytes(model, expert_names: list[str], itemsize: int) -> dict:
    per_module, fused = {}, True
    for name in expert_names:
        m = model.get_submodule(name)
        per_module[name] = sum(p.numel() for p in m.parameters()) * itemsize
        if not any(True for _ in m.parameters(recurse=False)):
            fused = False
    return {"per_module": per_module, "total": sum(per_module.values()), "fused": fused}


def hooks_under(module) -> list:
    out = []
    for sub in module.modules():
        h = getattr(sub, "_hf_hook", None)
        if h is None:
            continue
        out.extend(getattr(h, "hooks", None) or [h])  # SequentialHook holds .hooks
    return out


def placement_report(torch, model, expert_names: list[str], mode: str) -> dict:
    """Where the weights live after loading, and whether that is the intended mechanism."""
    experts = []
    for name in expert_names:
        m = model.get_submodule(name)
        devs = sorted({str(p.device) for p in m.parameters()})
        hooks = hooks_under(m)
        info = {
            "name": name,
            "param_devices": devs,
            "hooks": [type(h).__name__ for h in hooks],
            "offload": any(bool(getattr(h, "offload", False)) for h in hooks),
            "execution_devices": sorted({str(getattr(h, "execution_device", None)) for h in hooks}),
        }
        # Where the offloaded copy lives and whether it is pinned (first tensor only).
        for h in hooks:
            wm = getattr(h, "weights_map", None)
            if wm is None:
                continue
            try:
                pname = next(n for n, _ in m.named_parameters(recurse=False)) if any(
                    True for _ in m.parameters(recurse=False)) else None
                if pname is not None:
                    t = wm[pname]
                    info["host_copy_device"] = str(t.device)
                    info["host_copy_pinned"] = bool(t.is_pinned())
            except Exception as e:  # noqa: BLE001
                info["host_copy_error"] = err_text(e)
            break
        experts.append(info)
    prefixes = tuple(n + "." for n in expert_names)
    other = {}
    for n, p in model.named_parameters():
        if n.startswith(prefixes):
            continue
        other[str(p.device)] = other.get(str(p.device), 0) + 1
    if mode == "gpu_only":
        ok = set(other) <= {"cuda:0"} and all(set(e["param_devices"]) <= {"cuda:0"} for e in experts)
        why = "all parameters on cuda:0" if ok else "some parameters are not on cuda:0"
    else:
        bad = [e["name"] for e in experts
               if e["param_devices"] != ["meta"] or not e["offload"]
               or not any(d in ("0", "cuda:0", "cuda") for d in e["execution_devices"])]
        ok = not bad and set(other) <= {"cuda:0"} and bool(experts)
        why = ("every expert module: parameters on meta, AlignDevicesHook(offload=True) with a GPU "
               "execution device; all other parameters on cuda:0") if ok else (
            f"not the accelerate cpu-offload placement: experts not offloaded {bad[:3]}"
            f"{'...' if len(bad) > 3 else ''}; other parameter devices {other}")
    hf_map = getattr(model, "hf_device_map", None)
    return {
        "ok": ok,
        "why": why,
        "other_param_devices": other,
        "experts": experts,
        "hf_device_map_entries": len(hf_map) if isinstance(hf_map, dict) else None,
        "hf_device_map_cpu_entries": sum(1 for v in hf_map.values() if v == "cpu")
        if isinstance(hf_map, dict) else None,
    }


def make_token_clock(torch):
    """A generate() streamer that timestamps every generated token (after a CUDA synchronize).

    generate() calls put() once with the prompt, then once per new token (with the token, already
    copied to the CPU), then end()."""
    try:
        from transformers.generation.streamers import BaseStreamer
    except Exception:  # noqa: BLE001
        BaseStreamer = object

    class TokenClock(BaseStreamer):
        def __init__(self):
            self.times: list[float] = []
            self.prompt_puts = 0

        def put(self, value):
            if not self.times and self.prompt_puts == 0 and value.numel() != 1:
                self.prompt_puts += 1  # the prompt
                return
            torch.cuda.synchronize()
            self.times.append(time.perf_counter())

        def end(self):
            pass

    return TokenClock()


def generate_timed(torch, model, ids, n_new: int, pad_id: int) -> dict:
    clock = make_token_clock(torch)
    mask = torch.ones_like(ids)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n_new,
                         min_new_tokens=n_new, pad_token_id=pad_id, use_cache=True, streamer=clock)
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    tokens = out[0, ids.shape[1]:].tolist()
    ts = clock.times
    r = {"tokens": tokens, "n_tokens": len(tokens), "total_s": t1 - t0, "stamps": len(ts)}
    if len(ts) >= 2:
        steps = [b - a for a, b in zip(ts, ts[1:])]
        r["prefill_s"] = ts[0] - t0  # prompt forward + first token
        r["decode_s_per_token"] = (ts[-1] - ts[0]) / (len(ts) - 1)
        r["decode_step_ms_median"] = median(steps) * 1e3
        r["decode_step_ms"] = [round(s * 1e3, 3) for s in steps]
        r["decode_tokens_per_s"] = 1.0 / r["decode_s_per_token"]
        r["timing"] = "streamer timestamps: (t_last - t_first) / (N - 1)"
    elif len(tokens) >= 2:
        r["decode_tokens_per_s"] = (len(tokens) - 1) / (t1 - t0)
        r["timing"] = "streamer gave < 2 stamps; whole generate() incl. prefill (upper bound on time)"
    return r


def free_model(torch, model) -> None:
    try:
        from accelerate.hooks import remove_hook_from_submodules

        remove_hook_from_submodules(model)
    except Exception:  # noqa: BLE001
        pass
    del model
    gc.collect()
    torch.cuda.empty_cache()


def load_model(torch, ckpt, mode, via, dtype, dm, args):
    from transformers import AutoModelForCausalLM

    kw = {"dtype": dtype, "attn_implementation": args.attn, "local_files_only": True}
    if args.experts_impl:
        kw["experts_implementation"] = args.experts_impl
    if mode == "gpu_only":
        return AutoModelForCausalLM.from_pretrained(ckpt, device_map="cuda", **kw)
    if via == "from_pretrained":
        return AutoModelForCausalLM.from_pretrained(ckpt, device_map=dm, **kw)
    # via == "dispatch": load everything on the CPU, then accelerate.dispatch_model ourselves.
    from accelerate import dispatch_model

    model = AutoModelForCausalLM.from_pretrained(ckpt, device_map="cpu", **kw)
    extra = {}
    skip = getattr(model, "_skip_keys_device_placement", None)
    if skip is not None:
        extra["skip_keys"] = skip
    return dispatch_model(model, device_map=dm, main_device=0, **extra)


def run_hf_mode(torch, ckpt, mode, n_new, info, args) -> dict:
    res = {"mode": mode, "requested_tokens": n_new}
    try:
        return _run_hf_mode(torch, ckpt, mode, n_new, info, args, res)
    except Exception as e:  # noqa: BLE001
        e.partial_result = res  # what was learnt before the failure (placement, load time)
        raise


def _run_hf_mode(torch, ckpt, mode, n_new, info, args, res) -> dict:
    if mode != "offload":
        attempts = [None]
    elif args.offload_via == "auto":
        attempts = ["from_pretrained", "dispatch"]
    else:
        attempts = [args.offload_via]
    model = None
    for attempt in attempts:
        last = attempt == attempts[-1]
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        try:
            model = load_model(torch, ckpt, mode, attempt, info["dtype"], info["device_map"], args)
            torch.cuda.synchronize()
        except Exception as e:  # noqa: BLE001
            res.setdefault("placement_attempts", []).append({"via": attempt, "error": err_text(e)})
            model = None
            if last:
                raise
            log(f"  {mode} via {attempt} FAILED to load: {err_text(e)}; retrying via dispatch_model")
            continue
        res["load_s"] = time.perf_counter() - t0
        place = placement_report(torch, model, info["expert_modules"], mode)
        res.setdefault("placement_attempts", []).append({"via": attempt, **place})
        if place["ok"] or last:
            res["via"] = attempt
            res["placement"] = place
            break
        log(f"  {mode} via {attempt}: {place['why']}; retrying via dispatch_model")
        free_model(torch, model)
        model = None
    try:
        if not res["placement"]["ok"]:
            raise RuntimeError(f"placement check failed: {res['placement']['why']}")
        res["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
        res["experts_implementation"] = getattr(model.config, "_experts_implementation", None)
        res["gpu_allocated_after_load"] = torch.cuda.memory_allocated()
        res["gpu_peak_during_load"] = torch.cuda.max_memory_allocated()
        gcfg = model.generation_config
        gcfg.eos_token_id = None  # EOS disabled (min_new_tokens = max_new_tokens as well)
        gcfg.do_sample = False
        pad = gcfg.pad_token_id if gcfg.pad_token_id is not None else (
            model.config.pad_token_id if getattr(model.config, "pad_token_id", None) is not None else 0)
        gcfg.pad_token_id = pad
        ids = torch.tensor([info["prompt"]], dtype=torch.long, device="cuda")

        # Evidence that the experts run on the GPU: device of each expert module's output and of
        # its parameters once its forward has returned (meta again when offloaded).
        seen = {"calls": 0, "output_devices": set(), "param_devices_after": set(),
                "impl_prefill": set(), "impl_decode": set()}
        handles = []

        def after(mod, inp, out):
            seen["calls"] += 1
            try:  # experts(hidden_states [tokens, H], top_k_index, top_k_weights); 1 row = a decode step
                rows = inp[0].shape[0] if inp and hasattr(inp[0], "shape") else None
                impl = getattr(getattr(mod, "config", None), "_experts_implementation", None)
                seen["impl_decode" if rows == 1 else "impl_prefill"].add(str(impl))
            except Exception:  # noqa: BLE001
                pass
            t = out[0] if isinstance(out, (tuple, list)) else out
            if hasattr(t, "device"):
                seen["output_devices"].add(str(t.device))
            for p in mod.parameters(recurse=False):
                seen["param_devices_after"].add(str(p.device))
                break

        for name in info["expert_modules"]:
            handles.append(model.get_submodule(name).register_forward_hook(after))

        warm = max(1, min(args.warmup_tokens, n_new))
        log(f"  {mode}: warm-up generate ({warm} tokens)")
        w = generate_timed(torch, model, ids, warm, pad)
        res["warmup"] = {k: w[k] for k in ("n_tokens", "total_s") if k in w}
        for h in handles:
            h.remove()
        res["expert_forward_check"] = {
            "calls_in_warmup": seen["calls"],
            "output_devices": sorted(seen["output_devices"]),
            "param_devices_after_forward": sorted(seen["param_devices_after"]),
            "experts_impl_prefill": sorted(seen["impl_prefill"]),
            "experts_impl_decode": sorted(seen["impl_decode"]),
        }
        res["experts_implementation_decode"] = ",".join(sorted(seen["impl_decode"])) or None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        log(f"  {mode}: timed generate ({n_new} tokens)")
        g = generate_timed(torch, model, ids, n_new, pad)
        res.update(g)
        res["gpu_peak_bytes"] = torch.cuda.max_memory_allocated()
        res["gpu_peak_note"] = ("torch.cuda.max_memory_allocated() over the timed generate "
                                "(peak reset just before it; resident weights included)")
        if g["n_tokens"] != n_new:
            res["warning"] = f"generated {g['n_tokens']} tokens, asked for {n_new}"
        if mode == "offload":
            bpt = info["expert_bytes"]["total"]
            res["h2d_bytes_per_token"] = bpt
            res["h2d_bytes_per_token_note"] = (
                "all parameters of every offloaded experts module, copied once per decode step "
                + ("(fused experts: the whole module moves)" if info["expert_bytes"]["fused"]
                   else "(UPPER BOUND: per-expert submodules; only those called are copied)"))
            if g.get("decode_tokens_per_s"):
                res["h2d_effective_gb_s"] = bpt * g["decode_tokens_per_s"] / 1e9
        tps = g.get("decode_tokens_per_s")
        log(f"  {mode}: {tps:.2f} tok/s decode, prefill {g.get('prefill_s', float('nan')) * 1e3:.0f}"
            f" ms, peak GPU {res['gpu_peak_bytes'] / GIB:.2f} GiB, tokens {g['tokens'][:8]}..."
            if tps else f"  {mode}: no decode rate ({g['n_tokens']} tokens)")
        return res
    finally:
        if model is not None:
            free_model(torch, model)
            model = None  # drop this frame's reference too, so the memory can go now
            gc.collect()
            torch.cuda.empty_cache()


def bench_hf_dir(ckpt: str, args, on_update=None) -> dict:
    """One checkpoint: gpu_only and offload runs. on_update(out) is called after each run (to write
    the results so far); its failures are ignored."""
    import torch

    def update():
        if on_update is not None:
            try:
                on_update(out)
            except Exception as e:  # noqa: BLE001
                log(f"could not write intermediate results: {err_text(e)}")

    if not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available")
    ckpt = os.path.abspath(ckpt)
    out = {"dir": ckpt, "name": os.path.basename(ckpt.rstrip("/")), "runs": [], "errors": []}
    with open(os.path.join(ckpt, "config.json")) as fh:
        cj = json.load(fh)
    out["model_type"] = cj.get("model_type")
    out["architectures"] = cj.get("architectures")
    dtype, why = checkpoint_dtype(torch, ckpt, args.dtype)
    out["dtype"] = str(dtype).replace("torch.", "")
    out["dtype_source"] = why
    itemsize = torch.empty((), dtype=dtype).element_size()
    try:  # the module tree on meta: expert modules, sizes, the offload device_map
        config, meta = meta_model(ckpt)
        experts = find_expert_modules(meta)
        out["num_hidden_layers"] = getattr(config, "num_hidden_layers", None)
        vocab = getattr(config, "vocab_size", None) or cj.get("vocab_size")
        eb = expert_bytes(meta, experts, itemsize)
        out["param_bytes_total"] = sum(p.numel() for p in meta.parameters()) * itemsize
        dm = offload_device_map(meta, experts, 0) if experts else None
        del meta
    except Exception as e:  # noqa: BLE001  (the gpu_only run does not need it)
        out["errors"].append({"mode": "meta_model", "error": err_text(e),
                              "traceback": traceback.format_exc()})
        log(f"{out['name']}: meta-device model FAILED ({err_text(e)}); offload run not possible")
        experts, eb, dm = [], {"per_module": {}, "total": 0, "fused": False}, None
        out["num_hidden_layers"] = cj.get("num_hidden_layers")
        vocab = cj.get("vocab_size")
        out["param_bytes_total"] = None
    gc.collect()
    if not vocab:
        raise RuntimeError("vocab_size not found (config / config.json)")
    out["vocab_size"] = vocab
    out["expert_modules"] = experts
    out["expert_bytes_total"] = eb["total"]
    out["experts_fused"] = eb["fused"]
    out["offload_device_map"] = dm
    prompt = pregate_prompt(vocab)
    out["prompt"] = prompt
    log(f"{out['name']}: {out['model_type']}, {out['num_hidden_layers']} layers, {out['dtype']} "
        f"({why}), {len(experts)} expert modules ({eb['total'] / GIB:.2f} GiB"
        f"{', fused' if eb['fused'] else ''}), {f((out['param_bytes_total'] or 0) / GIB, 2)} GiB in all")
    info = {"dtype": dtype, "device_map": dm, "expert_modules": experts, "expert_bytes": eb,
            "prompt": prompt}
    modes = []
    if not args.skip_gpu_only:
        modes.append(("gpu_only", args.tokens))
    if not args.skip_offload:
        modes.append(("offload", args.offload_tokens))
    for mode, n in modes:
        if mode == "offload" and not experts:
            out["errors"].append({"mode": mode, "error": "no expert modules found"})
            continue
        log(f"{out['name']}: {mode}")
        try:
            out["runs"].append(run_hf_mode(torch, ckpt, mode, n, info, args))
        except Exception as e:  # noqa: BLE001
            out["errors"].append({"mode": mode, "error": err_text(e),
                                  "traceback": traceback.format_exc(),
                                  "partial": getattr(e, "partial_result", None)})
            log(f"{out['name']} {mode} FAILED: {err_text(e)}")
            gc.collect()
            torch.cuda.empty_cache()
        runs = {r["mode"]: r for r in out["runs"]}
        if "gpu_only" in runs and "offload" in runs:
            a, b = runs["gpu_only"].get("tokens", []), runs["offload"].get("tokens", [])
            k = min(len(a), len(b))
            out["offload_tokens_match_gpu_only"] = a[:k] == b[:k]
        update()
    if not out["runs"]:
        raise RuntimeError("every HF run failed: " + "; ".join(e["error"] for e in out["errors"]))
    return out


def bench_hf(args, progress=None) -> dict:
    try:  # tqdm bars over thousands of tensors only clutter the log
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # noqa: BLE001
        pass
    res = {
        "prompt": "16 ids (i * 7919 + 13) % vocab, as bench/offload.ts",
        "generate": "greedy, batch 1, KV cache, eos_token_id=None, min_new_tokens=max_new_tokens",
        "attn_requested": args.attn,
        "experts_impl_requested": args.experts_impl or "transformers default",
        "offload_via_requested": args.offload_via,
        "mechanism": (
            "offload: device_map maps each `...experts` module to 'cpu', the rest to GPU 0; "
            "accelerate.dispatch_model keeps those weights in a CPU state dict and attaches "
            "AlignDevicesHook(offload=True, execution_device=0): every forward of an experts module "
            "first copies all its parameters to the GPU (tensor.to(device), blocking, unpinned host "
            "memory), runs on the GPU, then sets them back to meta"),
        "checkpoints": [],
        "errors": [],
    }
    def on_update(ck):  # results so far, this checkpoint included, written now (a kill loses little)
        if progress is not None:
            progress({**res, "checkpoints": res["checkpoints"] + [ck]})

    for d in args.dirs:
        try:
            res["checkpoints"].append(bench_hf_dir(d, args, on_update))
        except Exception as e:  # noqa: BLE001
            res["errors"].append({"dir": d, "error": err_text(e), "traceback": traceback.format_exc()})
            log(f"{d} FAILED: {err_text(e)}")
    if not res["checkpoints"]:
        raise RuntimeError("every checkpoint failed: " + "; ".join(e["error"] for e in res["errors"]))
    return res


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def f(x, d=1):
    try:
        return f"{x:.{d}f}"
    except (TypeError, ValueError):
        return "-"


def impl_note(r: dict) -> str:
    """' (decode: X)' when the experts kernel seen in the decode steps differs from the loaded one
    (transformers swaps grouped_mm for batched_mm during GPU decoding)."""
    d = r.get("experts_implementation_decode")
    return f" (decode: {d})" if d and d != r.get("experts_implementation") else ""


def render_markdown(report: dict) -> str:
    env = report.get("env", {})
    L = [f"# Peer figures (PyTorch / HF transformers) on {env.get('gpu', '?')}", ""]
    L.append(f"`{' '.join(env.get('argv', []))}` at {env.get('time_utc', '?')} on "
             f"{env.get('hostname', '?')}: torch {env.get('torch', '?')} (CUDA "
             f"{env.get('torch_cuda', '?')}), transformers {env.get('transformers', '?')}, accelerate "
             f"{env.get('accelerate', '?')}, Python {env.get('python', '?')}.")
    smi = env.get("nvidia_smi")
    if isinstance(smi, dict):
        L.append(f"nvidia-smi ({smi['query']}): {smi['result']}")
    L.append("")
    parts = report.get("parts", {})
    for key in ("gemv", "copy", "hf"):
        st = parts.get(key, {})
        if st.get("status") not in (None, "ok"):
            L.append(f"- part `{key}`: {st.get('status')}{': ' + st['error'] if st.get('error') else ''}")
    L.append("")

    g = report.get("gemv")
    if g:
        L += ["## GEMV and device copy (PyTorch, cuBLAS)", "",
              f"{g['op']}; {g['copies']} copies of W rotated, {g['warmup']} warm-up, median of "
              f"{g['reps']} CUDA-event-timed calls; GB/s of weight bytes.", "",
              "| measurement | value | notes |", "|---|---|---|"]
        for r in g["results"]:
            L.append(f"| GEMV {r['dtype']} {GEMV_ROWS}x{GEMV_COLS} | {f(r['gb_s'], 0)} GB/s | "
                     f"{f(r['median_us'])} us median, best {f(r['best_gb_s'], 0)} GB/s, back-to-back "
                     f"loop {f(r['loop_gb_s'], 0)} GB/s; max rel err vs fp32 {r['max_rel_err_vs_fp32']:.1e} |")
        c = g.get("d2d_copy")
        if c:
            L.append(f"| copy_ 1024 MiB device->device (read+write bytes) | "
                     f"{f(c['gb_s_read_plus_write'], 0)} GB/s | {f(c['median_ms'], 2)} ms median of 10 |")
        for e in g.get("errors", []):
            L.append(f"| {e['dtype']} | failed | {e['error'][:120]} |")
        L.append("")

    c = report.get("copy")
    if c:
        L += ["## Host->GPU copies (PyTorch)", "", f"{c['op']}; {c['timing']}.", "",
              "| size | pinned GB/s | pageable GB/s | pinned wall GB/s | pageable wall GB/s |",
              "|---|---|---|---|---|"]
        by = {(r["mib"], r["kind"]): r for r in c["results"]}
        for mib in COPY_SIZES_MIB:
            p, q = by.get((mib, "pinned"), {}), by.get((mib, "pageable"), {})
            L.append(f"| {mib} MiB | {f(p.get('gb_s'), 2)} | {f(q.get('gb_s'), 2)} | "
                     f"{f(p.get('wall_gb_s'), 2)} | {f(q.get('wall_gb_s'), 2)} |")
        for e in c.get("errors", []):
            L.append(f"| {e['mib']} MiB {e['kind']} | failed: {e['error'][:100]} | | | |")
        L.append("")

    h = report.get("hf")
    if h:
        L += ["## HF transformers decode", "",
              f"Prompt: {h['prompt']}; {h['generate']}. Decode tok/s = 1 / (time per token after the "
              "first), from per-token timestamps (torch.cuda.synchronize + perf_counter). Peak GPU = "
              "torch.cuda.max_memory_allocated over the timed run (weights included).", "",
              f"Offload mechanism: {h['mechanism']}.", "",
              "| checkpoint | mode | decode tok/s | ms/token | prefill ms | peak GPU GiB | "
              "H2D GiB/token | load s | tokens | attn / experts impl | notes |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        for ck in h["checkpoints"]:
            for r in ck["runs"]:
                notes = [f"via {r.get('via')}" if r.get("via") else "",
                         r.get("warning", "")]
                if r["mode"] == "offload":
                    fc = r.get("expert_forward_check", {})
                    notes.append(f"expert outputs on {','.join(fc.get('output_devices', [])) or '?'}, "
                                 f"params after forward {','.join(fc.get('param_devices_after_forward', [])) or '?'}")
                    e0 = (r.get("placement", {}).get("experts") or [{}])[0]
                    if "host_copy_pinned" in e0:
                        notes.append(f"host copy pinned={e0['host_copy_pinned']}")
                    if r.get("h2d_effective_gb_s"):
                        notes.append(f"effective H2D {f(r['h2d_effective_gb_s'], 2)} GB/s")
                    m = ck.get("offload_tokens_match_gpu_only")
                    if m is not None:
                        notes.append("tokens = gpu_only" if m else "TOKENS DIFFER from gpu_only")
                dps = r.get("decode_s_per_token")
                L.append(
                    f"| {ck['name']} | {r['mode']} | {f(r.get('decode_tokens_per_s'), 2)} | "
                    f"{f(dps * 1e3 if dps else None, 1)} | {f((r.get('prefill_s') or 0) * 1e3 or None, 0)} | "
                    f"{f(r.get('gpu_peak_bytes', 0) / GIB, 2)} | "
                    f"{f(r['h2d_bytes_per_token'] / GIB, 2) if r.get('h2d_bytes_per_token') else '-'} | "
                    f"{f(r.get('load_s'), 1)} | {r.get('n_tokens', '-')} | "
                    f"{r.get('attn_implementation')} / {r.get('experts_implementation')}"
                    f"{impl_note(r)} | "
                    f"{'; '.join(n for n in notes if n)} |")
            for e in ck.get("errors", []):
                L.append(f"| {ck['name']} | {e['mode']} | failed | | | | | | | | {e['error'][:140]} |")
        for e in h.get("errors", []):
            L.append(f"| {os.path.basename(e['dir'].rstrip('/'))} | - | failed | | | | | | | | "
                     f"{e['error'][:140]} |")
        L.append("")
    return "\n".join(L)


def json_safe(x):
    """Strict-JSON form: NaN/inf -> None, tuples/sets -> lists, non-str keys and other objects
    (torch dtypes, devices) -> str, so Deno's JSON.parse can read the file."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in (sorted(x, key=str) if isinstance(x, (set, frozenset)) else x)]
    return str(x)


def write_outputs(report: dict, prefix: str) -> None:
    d = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(d, exist_ok=True)
    text_json = json.dumps(json_safe(report), indent=1, allow_nan=False)
    text_md = render_markdown(report)
    for ext, text in ((".json", text_json), (".md", text_md)):
        tmp = prefix + ext + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, prefix + ext)  # never a half-written file, even if killed mid-write


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="peer_bench",
                    help="output path prefix: writes PREFIX.json and PREFIX.md (default %(default)s)")
    ap.add_argument("--dirs", nargs="+", default=[],
                    help="checkpoint directories written by `make-model` (HF hub format)")
    ap.add_argument("--tokens", type=int, default=32, help="new tokens, GPU-only run (default 32)")
    ap.add_argument("--offload-tokens", type=int, default=8,
                    help="new tokens, expert-offloaded run (default 8)")
    ap.add_argument("--warmup-tokens", type=int, default=4,
                    help="tokens of the untimed warm-up generate (capped at the run's; default 4)")
    ap.add_argument("--skip-gemv", action="store_true")
    ap.add_argument("--skip-copy", action="store_true")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--skip-gpu-only", action="store_true", help="HF: only the offloaded run")
    ap.add_argument("--skip-offload", action="store_true", help="HF: only the GPU-only run")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"],
                    help="attn_implementation (default %(default)s)")
    ap.add_argument("--experts-impl", default=None, choices=["eager", "grouped_mm", "batched_mm"],
                    help="experts_implementation (default: transformers' own default)")
    ap.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                    help="load dtype (default: the checkpoint's config.json dtype, else bf16)")
    ap.add_argument("--offload-via", default="auto", choices=["auto", "from_pretrained", "dispatch"],
                    help="auto: from_pretrained(device_map=...) and, if the placement check fails, "
                         "load on CPU + accelerate.dispatch_model (default auto)")
    ap.add_argument("--gemv-reps", type=int, default=200)
    ap.add_argument("--gemv-warmup", type=int, default=20)
    ap.add_argument("--gemv-copies", type=int, default=4)
    ap.add_argument("--copy-reps", type=int, default=20)
    ap.add_argument("--selftest", action="store_true",
                    help="check the pure-Python parts (arguments, statistics, device map, report "
                         "writing) without torch or a GPU, then exit")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.selftest:
        return selftest()
    signal.signal(signal.SIGTERM, _on_signal)  # `timeout` (tools/gpu_check.sh): still write the outputs
    report = {"tool": "bench/peer_bench.py", "env": collect_env(), "parts": {}}
    env = report["env"]
    log(f"torch {env.get('torch')} CUDA {env.get('torch_cuda')} on {env.get('gpu', 'no GPU')}; "
        f"transformers {env.get('transformers')}, accelerate {env.get('accelerate')}")
    parts = [("gemv", args.skip_gemv, bench_gemv), ("copy", args.skip_copy, bench_copy),
             ("hf", args.skip_hf or not args.dirs, bench_hf)]
    interrupted = None
    for name, skip, fn in parts:
        if interrupted:
            report["parts"][name] = {"status": "not run", "why": f"interrupted ({interrupted})"}
            continue
        if skip:
            why = "no --dirs given" if name == "hf" and not args.skip_hf else "skipped by flag"
            report["parts"][name] = {"status": "skipped", "why": why}
            log(f"part {name}: skipped ({why})")
            continue
        log(f"part {name}: start")
        t0 = time.perf_counter()

        def progress(partial, name=name, t0=t0):  # results so far of a long part, written now
            report[name] = partial
            report["parts"][name] = {"status": "running", "seconds": round(time.perf_counter() - t0, 1)}
            try:
                write_outputs(report, args.out)
            except Exception as e:  # noqa: BLE001
                log(f"could not write {args.out}.json/.md: {err_text(e)}")

        try:
            report[name] = fn(args, progress)
            errs = report[name].get("errors") or []
            report["parts"][name] = {"status": "partial" if errs else "ok",
                                     "seconds": round(time.perf_counter() - t0, 1)}
        except Exception as e:  # noqa: BLE001
            report["parts"][name] = {"status": "failed", "error": err_text(e),
                                     "traceback": traceback.format_exc(),
                                     "seconds": round(time.perf_counter() - t0, 1)}
            log(f"part {name} FAILED: {err_text(e)}")
        except (Interrupted, KeyboardInterrupt) as e:
            interrupted = str(e) or type(e).__name__
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the outputs be written
            report["parts"][name] = {"status": "interrupted", "error": interrupted,
                                     "seconds": round(time.perf_counter() - t0, 1)}
            log(f"part {name} INTERRUPTED: {interrupted}")
        log(f"part {name}: {report['parts'][name]['status']} "
            f"({report['parts'][name]['seconds']} s)")
        try:
            write_outputs(report, args.out)
        except Exception as e:  # noqa: BLE001
            log(f"could not write {args.out}.json/.md: {err_text(e)}")
    try:
        write_outputs(report, args.out)
        log(f"wrote {args.out}.json and {args.out}.md")
        print(render_markdown(report), flush=True)
    except Exception as e:  # noqa: BLE001
        log(f"could not write outputs: {err_text(e)}")
    if interrupted:
        return 143
    return exit_status(report["parts"])


def exit_status(parts: dict) -> int:
    """1 only if every part that ran failed (skipped parts do not count), else 0."""
    ran = [p for p in parts.values() if p.get("status") not in ("skipped", "not run")]
    return 1 if ran and all(p.get("status") == "failed" for p in ran) else 0


def _on_signal(signum, _frame):
    raise Interrupted(f"signal {signum}")


# --------------------------------------------------------------------------------------------
# Self-test (no torch, no GPU): python3 bench/peer_bench.py --selftest
# --------------------------------------------------------------------------------------------


class _FakeTensor:
    def __init__(self, n, device="meta"):
        self.n, self.device = n, device

    def numel(self):
        return self.n


class _FakeModule:
    """Just enough of torch.nn.Module for find_expert_modules / offload_device_map / expert_bytes."""

    def __init__(self, params=None, buffers=None, children=None):
        self._p = dict(params or {})
        self._b = dict(buffers or {})  # name -> (tensor, persistent)
        self._c = dict(children or {})

    def named_children(self):
        return iter(self._c.items())

    def named_parameters(self, prefix="", recurse=True):
        for k, v in self._p.items():
            yield (f"{prefix}.{k}" if prefix else k), v
        if recurse:
            for cn, c in self._c.items():
                yield from c.named_parameters(f"{prefix}.{cn}" if prefix else cn, True)

    def parameters(self, recurse=True):
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix="", recurse=True):
        for k, (v, _) in self._b.items():
            yield (f"{prefix}.{k}" if prefix else k), v
        if recurse:
            for cn, c in self._c.items():
                yield from c.named_buffers(f"{prefix}.{cn}" if prefix else cn, True)

    def named_modules(self, prefix=""):
        yield prefix, self
        for cn, c in self._c.items():
            yield from c.named_modules(f"{prefix}.{cn}" if prefix else cn)

    def state_dict(self, prefix=""):
        out = {(f"{prefix}.{k}" if prefix else k): v for k, v in self._p.items()}
        out.update({(f"{prefix}.{k}" if prefix else k): v for k, (v, pers) in self._b.items() if pers})
        for cn, c in self._c.items():
            out.update(c.state_dict(f"{prefix}.{cn}" if prefix else cn))
        return out

    def get_submodule(self, name):
        m = self
        for part in name.split(".") if name else []:
            m = m._c[part]
        return m


def _fake_moe(layers=2, experts=4, fused=True):
    def moe():
        if fused:
            ex = _FakeModule({"gate_up_proj": _FakeTensor(experts * 12), "down_proj": _FakeTensor(experts * 6)})
        else:
            ex = _FakeModule(children={str(e): _FakeModule(children={
                w: _FakeModule({"weight": _FakeTensor(6)}) for w in ("w1", "w2", "w3")}) for e in range(experts)})
        return _FakeModule(children={"gate": _FakeModule({"weight": _FakeTensor(experts * 4)}), "experts": ex})

    lay = {str(i): _FakeModule(children={
        "self_attn": _FakeModule(children={"q_proj": _FakeModule({"weight": _FakeTensor(16)})}),
        "mlp": moe(), "input_layernorm": _FakeModule({"weight": _FakeTensor(4)})}) for i in range(layers)}
    model = _FakeModule(children={
        "embed_tokens": _FakeModule({"weight": _FakeTensor(40)}),
        "layers": _FakeModule(children=lay),
        "norm": _FakeModule({"weight": _FakeTensor(4)}),
        "rotary_emb": _FakeModule(buffers={"inv_freq": (_FakeTensor(2), False)})})
    return _FakeModule({"odd_direct": _FakeTensor(1)}, {"persist": (_FakeTensor(1), True),
                                                        "scratch": (_FakeTensor(1), False)},
                       {"model": model, "lm_head": _FakeModule({"weight": _FakeTensor(40)})})


def selftest() -> int:
    import tempfile
    from types import SimpleNamespace

    # Arguments.
    a = parse_args(["--out", "x/y", "--dirs", "d1", "d2", "--experts-impl", "batched_mm",
                    "--offload-via", "dispatch", "--dtype", "bf16", "--skip-gemv"])
    assert a.dirs == ["d1", "d2"] and a.experts_impl == "batched_mm" and a.offload_via == "dispatch"
    assert a.skip_gemv and not a.skip_copy and a.tokens == 32 and a.offload_tokens == 8
    d = parse_args([])
    assert d.dirs == [] and d.experts_impl is None and d.attn == "sdpa" and not d.selftest

    # Statistics.
    assert median([3.0, 1.0, 2.0]) == 2.0 and median([1.0, 2.0, 3.0, 4.0]) == 2.5
    assert math.isnan(median([])) and math.isnan(percentile([], 0.9))
    xs = [float(i) for i in range(1, 201)]  # 1..200
    assert percentile(xs, 0.9) == 180.0 and percentile(xs, 0.0) == 1.0 and percentile(xs, 1.0) == 200.0
    assert percentile([5.0], 0.9) == 5.0

    # Prompt (bench/offload.ts: (i * 7919 + 13) % vocab, 16 ids).
    pr = pregate_prompt(151936)
    assert len(pr) == 16 and pr[0] == 13 and pr[1] == 7932 and pr[-1] == (15 * 7919 + 13) % 151936
    assert all(0 <= t < 100 for t in pregate_prompt(100))

    # Checkpoint dtype with a stand-in torch.
    ft = SimpleNamespace(bfloat16="BF16", float16="F16", float32="F32")
    with tempfile.TemporaryDirectory() as td:
        cfg = os.path.join(td, "config.json")
        for body, want in (({"dtype": "bfloat16"}, "BF16"), ({"torch_dtype": "float16"}, "F16"),
                           ({"torch_dtype": "torch.float32"}, "F32"), ({}, "BF16"),
                           ({"dtype": "int8", "torch_dtype": "float32"}, "F32")):
            with open(cfg, "w") as fh:
                json.dump(body, fh)
            got, why = checkpoint_dtype(ft, td, "auto")
            assert got == want, (body, got, why)
        assert checkpoint_dtype(ft, td, "fp16")[0] == "F16"

    # Expert modules and the offload device map (fused and per-expert layouts).
    for fused in (True, False):
        m = _fake_moe(layers=2, experts=4, fused=fused)
        ex = find_expert_modules(m)
        assert ex == ["model.layers.0.mlp.experts", "model.layers.1.mlp.experts"], ex
        dm = offload_device_map(m, ex, 0)
        assert next(iter(dm.values())) == 0, dm
        assert {k for k, v in dm.items() if v == "cpu"} == set(ex), dm
        assert "scratch" not in dm and dm.get("persist") == 0 and dm.get("odd_direct") == 0
        for k in ("model.embed_tokens", "model.norm", "model.rotary_emb", "lm_head",
                  "model.layers.0.mlp.gate", "model.layers.1.self_attn"):
            assert dm.get(k) == 0, (k, dm)
        # Complete and non-overlapping: every parameter / persistent buffer under exactly one key.
        for key in m.state_dict():
            owners = [k for k in dm if key == k or key.startswith(k + ".")]
            assert len(owners) == 1, (key, owners)
        eb = expert_bytes(m, ex, 2)
        assert eb["fused"] == fused and eb["total"] == 2 * 2 * (4 * 18), eb
        json.dumps(dm)

    # Report writing: every part, failures, NaN, odd objects; strict JSON out.
    nan = float("nan")
    report = {
        "tool": "bench/peer_bench.py",
        "env": {"gpu": "Test GPU", "argv": ["peer_bench.py", "--selftest"], "time_utc": "now",
                "hostname": "h", "nvidia_smi": {"query": "q", "result": "r"}},
        "parts": {"gemv": {"status": "partial", "seconds": 1.0},
                  "copy": {"status": "failed", "error": "RuntimeError: x", "seconds": 0.1},
                  "hf": {"status": "running", "seconds": 3.0}},
        "gemv": {"op": "op", "copies": 4, "warmup": 20, "reps": 200,
                 "results": [{"dtype": "bf16", "gb_s": 4000.0, "median_us": 29.4, "best_gb_s": 4100.0,
                              "loop_gb_s": 4200.0, "max_rel_err_vs_fp32": 1e-3, "p90_us": nan}],
                 "d2d_copy": {"gb_s_read_plus_write": 6000.0, "median_ms": 0.36},
                 "errors": [{"dtype": "fp32", "error": "E"}]},
        "copy": {"op": "op", "timing": "t",
                 "results": [{"kind": "pinned", "mib": 4, "gb_s": 50.0, "wall_gb_s": 40.0}],
                 "errors": [{"kind": "pageable", "mib": 4, "error": "E"}]},
        "hf": {"prompt": "p", "generate": "g", "mechanism": "m", "errors": [{"dir": "/a/b/", "error": "E"}],
               "checkpoints": [{"name": "ck", "offload_tokens_match_gpu_only": False, "device": SimpleNamespace(),
                                "errors": [{"mode": "offload", "error": "E"}],
                                "runs": [{"mode": "gpu_only", "decode_tokens_per_s": 100.0,
                                          "decode_s_per_token": 0.01, "prefill_s": 0.05,
                                          "gpu_peak_bytes": 3 * GIB, "load_s": 2.0, "n_tokens": 32,
                                          "attn_implementation": "sdpa", "experts_implementation": "grouped_mm",
                                          "experts_implementation_decode": "batched_mm", "tokens": [1, 2]},
                                         {"mode": "offload", "via": "dispatch", "tokens": [1, 3],
                                          "decode_tokens_per_s": None, "h2d_bytes_per_token": 9 * GIB,
                                          "expert_forward_check": {"output_devices": ["cuda:0"]},
                                          "placement": {"experts": [{"host_copy_pinned": False}]}}]}]},
    }
    md = render_markdown(report)
    for needle in ("GEMV bf16 14336x4096 | 4000 GB/s", "| 4 MiB | 50.00 | - |", "part `copy`: failed",
                   "part `hf`: running", "| ck | gpu_only | 100.00 | 10.0 | 50 | 3.00 |",
                   "sdpa / grouped_mm (decode: batched_mm)", "| ck | offload | - |", "9.00",
                   "TOKENS DIFFER", "| b | - | failed |"):
        assert needle in md, (needle, md)
    with tempfile.TemporaryDirectory() as td:
        prefix = os.path.join(td, "sub", "peer")
        write_outputs(report, prefix)
        with open(prefix + ".json") as fh:
            back = json.loads(fh.read(), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
        assert back["gemv"]["results"][0]["p90_us"] is None
        assert isinstance(back["hf"]["checkpoints"][0]["device"], str)
        with open(prefix + ".md") as fh:
            assert fh.read() == md
        assert sorted(os.listdir(os.path.dirname(prefix))) == ["peer.json", "peer.md"]
    assert render_markdown({}).startswith("# Peer figures")

    # Exit status: 1 only if every part that ran failed.
    assert exit_status({"a": {"status": "failed"}, "b": {"status": "skipped"}}) == 1
    assert exit_status({"a": {"status": "failed"}, "b": {"status": "partial"}}) == 0
    assert exit_status({"a": {"status": "skipped"}}) == 0 and exit_status({}) == 0
    assert exit_status({"a": {"status": "failed"}, "b": {"status": "not run"}}) == 1

    print("[peer_bench] selftest ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
