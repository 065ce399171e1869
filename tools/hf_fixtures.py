#!/usr/bin/env python3
"""Generate tiny Hugging Face reference fixtures for Pregate's MoE loaders.

For each architecture (mixtral, qwen2_moe, qwen3_moe, olmoe) this script builds a tiny random
model with transformers' own config and model classes (float32, CPU, eager attention, fixed
seed), re-initialises every parameter so that activations, routing and logits are O(1), saves it
with ``save_pretrained`` (config.json, generation_config.json, model.safetensors) and writes
``reference.json`` holding what HF computes for a fixed prompt: teacher-forced logits, the
per-layer residual stream, the per-MoE-layer routing decisions, and 16 greedy tokens generated
with the KV cache (checked against a cache-free greedy loop).

It also checks itself and fails loudly (non-zero exit) when something is not as intended:
config keys the installed transformers does not know, a dense/MoE layer pattern other than the
one asked for, rope theta not honoured, generation stopping early, or a checkpoint that does not
reload to bit-identical weights and logits.

Besides one fixture per architecture it writes ``olmoe_clip``: the OLMoE fixture with
``clip_qkv`` set low enough that q, k (after their norms) and v are actually clamped (checked).

Usage (see tools/README.md):
    python3 tools/hf_fixtures.py --out tests/fixtures/hf            # all fixtures
    python3 tools/hf_fixtures.py --out /tmp/hf --only qwen3_moe     # one (repeatable)
    python3 tools/hf_fixtures.py --out tests/fixtures/hf --only olmoe_clip
    python3 tools/hf_fixtures.py --out /tmp/hf --only switch_tiny   # just this fixture

Needs torch, transformers (written against 5.x) and safetensors. No network, no tokenizer.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
import os
import re
import shutil
import sys
import time
import traceback

# No network on the target host: make sure nothing tries the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ARCHS = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"]
# Fixtures: one per architecture, plus variants of one (their spec names the arch).
FIXTURES = ARCHS + ["olmoe_clip"]

# olmoe_clip's clip_qkv: q and k after their norms have rms ~1 and v ~0.8 with the init below, so a
# bound of 1.0 clamps a good share (>= 5% is checked) of every layer's q, k and v values.
CLIP_QKV = 1.0
MIN_CLIPPED_SHARE = 0.05
# Fixtures built by their own modules beside this script (selected with --only).
EXTRA_FIXTURES = ["switch_tiny"]

# Prompt token ids (no tokenizer: raw ids < vocab_size; 0 is reserved as pad and not used).
PROMPT = [3, 17, 42, 99, 128, 201, 250]
NEW_TOKENS = 16
VOCAB = 256

# Init scales (see reinit_parameters).
STD_WEIGHT = 0.1
STD_ROUTER = 0.2
STD_BIAS = 0.1
STD_NORM = 0.1

MAX_BYTES_DEFAULT = 2_000_000


def log(msg: str) -> None:
    print(msg, flush=True)


class FixtureError(RuntimeError):
    pass


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise FixtureError(msg)


# --------------------------------------------------------------------------------------------
# Per-architecture configuration
# --------------------------------------------------------------------------------------------

# Each entry: (config class name, causal-LM class name, common kwargs, arch kwargs,
#              keys that MUST be real fields of the config class, expected layer kinds,
#              rope theta, intent notes)
#
# Sizes keep every checkpoint under 2 MB in float32 while keeping all matrix dims distinct
# (64 hidden vs 80/96/128 intermediate, 8 experts) so a transposed tensor cannot go unnoticed.


def arch_specs() -> dict:
    common = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        hidden_act="silu",
        initializer_range=0.02,
        use_cache=True,
        # No EOS/BOS: generation must never stop early; pad is only needed by generate().
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
    )
    specs = {
        "mixtral": dict(
            config_class="MixtralConfig",
            model_class="MixtralForCausalLM",
            kwargs=dict(
                common,
                num_hidden_layers=3,
                intermediate_size=80,  # per-expert FFN width (mixtral has no separate moe size)
                num_local_experts=8,
                num_experts_per_tok=2,
                rms_norm_eps=1e-5,
                tie_word_embeddings=False,
                sliding_window=None,
                router_jitter_noise=0.0,
            ),
            required_keys=[
                "intermediate_size", "num_local_experts", "num_experts_per_tok", "rms_norm_eps",
                "tie_word_embeddings", "sliding_window",
            ],
            expected_kinds=["moe", "moe", "moe"],
            rope_theta=10000.0,  # class default is 1e6
            notes="Mixtral: all layers sparse, softmax over all experts -> top-k -> renormalised "
            "(always). Untied embeddings. rope_theta 1e4 (class default 1e6).",
        ),
        "qwen2_moe": dict(
            config_class="Qwen2MoeConfig",
            model_class="Qwen2MoeForCausalLM",
            kwargs=dict(
                common,
                num_hidden_layers=4,
                intermediate_size=96,  # dense-MLP layers
                moe_intermediate_size=80,  # each routed expert
                shared_expert_intermediate_size=128,  # shared expert (sigmoid-gated)
                num_experts=8,
                num_experts_per_tok=2,
                norm_topk_prob=False,
                decoder_sparse_step=2,  # layers with (i+1) % 2 == 0 are MoE: 1, 3
                mlp_only_layers=[],
                rms_norm_eps=1e-6,
                tie_word_embeddings=False,
                use_sliding_window=False,
            ),
            required_keys=[
                "intermediate_size", "moe_intermediate_size", "shared_expert_intermediate_size",
                "num_experts", "num_experts_per_tok", "norm_topk_prob", "decoder_sparse_step",
                "mlp_only_layers", "rms_norm_eps", "tie_word_embeddings",
            ],
            expected_kinds=["dense", "moe", "dense", "moe"],
            rope_theta=50000.0,
            notes="Qwen2-MoE: decoder_sparse_step=2 so layers 0,2 are dense MLP "
            "(intermediate_size) and 1,3 are MoE (moe_intermediate_size) with a shared expert "
            "(shared_expert_intermediate_size) scaled by sigmoid(shared_expert_gate(x)). "
            "norm_topk_prob False: top-k softmax probabilities used as-is. q/k/v have biases. "
            "Untied.",
        ),
        "qwen3_moe": dict(
            config_class="Qwen3MoeConfig",
            model_class="Qwen3MoeForCausalLM",
            kwargs=dict(
                common,
                num_hidden_layers=3,
                # Explicit and != hidden/heads (16): q_proj is 64 -> 128. Not a declared field of
                # Qwen3MoeConfig in 5.17: stored as an extra attribute and read by the modeling code
                # with getattr(config, "head_dim", hidden_size // num_attention_heads).
                head_dim=32,
                intermediate_size=128,  # dense-MLP layer (mlp_only_layers)
                moe_intermediate_size=96,
                num_experts=8,
                num_experts_per_tok=2,
                norm_topk_prob=True,
                decoder_sparse_step=1,
                mlp_only_layers=[1],  # layer 1 dense, layers 0 and 2 MoE
                rms_norm_eps=1e-6,
                tie_word_embeddings=True,
                use_sliding_window=False,
            ),
            extra_keys=["head_dim"],
            required_keys=[
                "intermediate_size", "moe_intermediate_size", "num_experts",
                "num_experts_per_tok", "norm_topk_prob", "decoder_sparse_step", "mlp_only_layers",
                "rms_norm_eps", "tie_word_embeddings",
            ],
            expected_kinds=["moe", "dense", "moe"],
            rope_theta=1000000.0,
            notes="Qwen3-MoE: explicit head_dim=32 (num_heads*head_dim=128 != hidden 64), "
            "per-head q_norm/k_norm RMSNorm(head_dim) before RoPE, mlp_only_layers=[1] makes "
            "layer 1 a dense MLP (intermediate_size), norm_topk_prob True (top-k weights "
            "renormalised). TIED embeddings: lm_head.weight is embed_tokens.weight.",
        ),
        "olmoe": dict(
            config_class="OlmoeConfig",
            model_class="OlmoeForCausalLM",
            kwargs=dict(
                common,
                num_hidden_layers=3,
                intermediate_size=80,  # each expert
                num_experts=8,
                num_experts_per_tok=3,
                norm_topk_prob=False,
                rms_norm_eps=1e-5,
                tie_word_embeddings=False,
                clip_qkv=None,
            ),
            required_keys=[
                "intermediate_size", "num_experts", "num_experts_per_tok", "norm_topk_prob",
                "rms_norm_eps", "tie_word_embeddings", "clip_qkv",
            ],
            expected_kinds=["moe", "moe", "moe"],
            rope_theta=500000.0,
            notes="OLMoE: top-3 of 8, norm_topk_prob False. q_norm/k_norm are RMSNorms over the "
            "WHOLE q projection (num_heads*head_dim) and WHOLE k projection "
            "(num_kv_heads*head_dim), applied before the head reshape and RoPE. Untied.",
        ),
    }
    olmoe = specs["olmoe"]
    specs["olmoe_clip"] = dict(
        olmoe,
        arch="olmoe",
        kwargs=dict(olmoe["kwargs"], clip_qkv=CLIP_QKV),
        clip_qkv=CLIP_QKV,
        notes=olmoe["notes"] + f" clip_qkv={CLIP_QKV}: q and k (after q_norm/k_norm) and v are "
        f"clamped to [-{CLIP_QKV}, {CLIP_QKV}] before the head reshape and RoPE; the share of "
        "values clamped per layer is in reference.json's clip_qkv_clamped_share.",
    )
    return specs


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def r6(x: float) -> float:
    """Round to 6 significant digits (for diagnostics)."""
    x = float(x)
    check(math.isfinite(x), f"non-finite value {x}")
    return float(f"{x:.6g}")


def r9(x: float) -> float:
    """Round to 9 significant digits: float32 values survive the round trip exactly."""
    x = float(x)
    check(math.isfinite(x), f"non-finite value {x}")
    return float(f"{x:.9g}")


def tolist(t, rnd=r9):
    import torch

    t = t.detach().to(torch.float64).cpu()
    if t.ndim == 0:
        return rnd(t.item())
    return [tolist(s, rnd) for s in t] if t.ndim > 1 else [rnd(v) for v in t.tolist()]


def jsonable(v):
    """Best-effort conversion of config values to JSON."""
    import torch

    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, torch.dtype):
        return str(v).replace("torch.", "")
    return repr(v)


def known_config_keys(cls) -> set:
    keys = set()
    if dataclasses.is_dataclass(cls):
        keys |= {f.name for f in dataclasses.fields(cls)}
    try:
        keys |= set(inspect.signature(cls.__init__).parameters)
    except (TypeError, ValueError):
        pass
    keys.discard("self")
    keys.discard("kwargs")
    return keys


def dir_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def find_decoder_layers(model):
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    check(layers is not None, "model.model.layers not found")
    return inner, list(layers)


def layer_mlp(layer):
    for name in ("mlp", "block_sparse_moe", "feed_forward"):
        m = getattr(layer, name, None)
        if m is not None:
            return name, m
    raise FixtureError(f"no MLP submodule found in {type(layer).__name__}")


def reinit_parameters(model, seed: int) -> dict:
    """Give every parameter O(1)-producing values (HF's init is tiny and routers start at 0)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    counts = {"norm": 0, "bias": 0, "router": 0, "weight": 0}
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied parameters are listed once
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if p.ndim == 1 and "norm" in name:
                p.copy_(1.0 + STD_NORM * noise)
                counts["norm"] += 1
            elif name.endswith(".bias") or p.ndim == 1:
                p.copy_(STD_BIAS * noise)
                counts["bias"] += 1
            elif re.search(r"(^|\.)(gate|router)(\.weight)?$", name):
                p.copy_(STD_ROUTER * noise)
                counts["router"] += 1
            else:
                p.copy_(STD_WEIGHT * noise)
                counts["weight"] += 1
    return counts


def list_safetensors(out_dir: str) -> tuple[list[dict], list[str]]:
    from safetensors import safe_open

    files = sorted(f for f in os.listdir(out_dir) if f.endswith(".safetensors"))
    check(files, f"save_pretrained wrote no .safetensors file in {out_dir}")
    tensors = []
    for fn in files:
        with safe_open(os.path.join(out_dir, fn), framework="pt") as f:
            for k in f.keys():
                sl = f.get_slice(k)
                tensors.append(
                    {"name": k, "shape": list(sl.get_shape()), "dtype": str(sl.get_dtype()),
                     "file": fn}
                )
    tensors.sort(key=lambda t: t["name"])
    return tensors, files


def classify_layout(names: list[str]) -> str:
    per_expert = any(re.search(r"\.experts\.\d+\.", n) for n in names)
    fused = any(re.search(r"\.experts\.(gate_up_proj|down_proj|gate_proj|up_proj)(\.weight)?$", n)
                for n in names)
    if per_expert and not fused:
        return "per_expert"
    if fused and not per_expert:
        return "fused"
    if fused and per_expert:
        return "mixed"
    return "none"


# --------------------------------------------------------------------------------------------
# One architecture
# --------------------------------------------------------------------------------------------


def build_arch(name: str, spec: dict, out_root: str, seed: int, max_bytes: int) -> dict:
    """Builds fixture `name` (an architecture, or a variant whose spec names its `arch`)."""
    import torch
    import transformers
    import safetensors

    arch = spec.get("arch", name)
    t0 = time.time()
    warnings: list[str] = []

    def warn(msg: str) -> None:
        warnings.append(msg)
        log(f"  WARNING: {msg}")

    cfg_cls = getattr(transformers, spec["config_class"])
    model_cls = getattr(transformers, spec["model_class"])
    known = known_config_keys(cfg_cls)

    # --- config -------------------------------------------------------------------------
    kwargs = dict(spec["kwargs"])
    extra_keys = spec.get("extra_keys", [])
    unknown_required = [k for k in spec["required_keys"] if k not in known]
    check(not unknown_required,
          f"{spec['config_class']} in transformers {transformers.__version__} does not declare "
          f"{unknown_required}; the quirk would be silently ignored")
    theta = spec["rope_theta"]
    if "rope_parameters" in known:
        kwargs["rope_parameters"] = {"rope_type": "default", "rope_theta": theta}
        rope_via = "rope_parameters"
    else:
        kwargs["rope_theta"] = theta
        rope_via = "rope_theta"
    dropped = []
    for k in list(kwargs):
        if k not in known and k not in spec["required_keys"] and k not in extra_keys:
            # Not a declared field (e.g. a key renamed in this version): drop it rather than
            # storing a meaningless attribute, and say so.
            dropped.append(k)
            kwargs.pop(k)
    # Ids are generic PreTrainedConfig keys in some versions (not class fields): keep them.
    for k in ("bos_token_id", "eos_token_id", "pad_token_id", "tie_word_embeddings"):
        if k in spec["kwargs"] and k in dropped:
            kwargs[k] = spec["kwargs"][k]
            dropped.remove(k)
    if dropped:
        warn(f"config keys not declared by {spec['config_class']}, not passed: {dropped}")
    config = cfg_cls(**kwargs)
    # Read back the essentials to make sure they stuck.
    for k in spec["required_keys"] + extra_keys:
        got = getattr(config, k, "<missing>")
        check(got == spec["kwargs"][k],
              f"config.{k} is {got!r} after construction, expected {spec['kwargs'][k]!r}")
    log(f"  config: {type(config).__name__} ({rope_via}={theta})")

    # --- model --------------------------------------------------------------------------
    torch.manual_seed(seed)
    impl_kwargs = {"attn_implementation": "eager"}
    if hasattr(transformers.PreTrainedModel, "set_experts_implementation"):
        # 5.x defaults to a grouped_mm experts kernel; use the plain per-expert loop.
        impl_kwargs["experts_implementation"] = "eager"
    try:
        model = model_cls._from_config(config, dtype=torch.float32, **impl_kwargs)
    except TypeError:
        model = model_cls._from_config(config, torch_dtype=torch.float32, **impl_kwargs)
    model = model.to(dtype=torch.float32, device="cpu").eval()
    attn_impl = getattr(model.config, "_attn_implementation", None)
    check(attn_impl == "eager", f"attention implementation is {attn_impl!r}, wanted 'eager'")
    experts_impl = getattr(model.config, "_experts_implementation", None)
    if "experts_implementation" in impl_kwargs:
        check(experts_impl == "eager", f"experts implementation is {experts_impl!r}, wanted 'eager'")
    counts = reinit_parameters(model, seed)
    config = model.config

    inner, layers = find_decoder_layers(model)
    check(len(layers) == spec["kwargs"]["num_hidden_layers"], "layer count mismatch")

    # Tied / untied embeddings.
    emb = inner.embed_tokens.weight
    head = model.lm_head.weight
    tied = emb.data_ptr() == head.data_ptr()
    check(tied == spec["kwargs"]["tie_word_embeddings"],
          f"lm_head tied={tied} but tie_word_embeddings={spec['kwargs']['tie_word_embeddings']}")

    # Layer kinds, MoE modules, attention quirks.
    kinds, layer_info = [], []
    for i, layer in enumerate(layers):
        mlp_name, mlp = layer_mlp(layer)
        is_moe = hasattr(mlp, "experts")
        kinds.append("moe" if is_moe else "dense")
        attn = layer.self_attn
        info = {
            "layer": i,
            "kind": kinds[-1],
            "mlp_module": f"model.layers.{i}.{mlp_name} ({type(mlp).__name__})",
            "shared_expert": hasattr(mlp, "shared_expert"),
            "shared_expert_gate": hasattr(mlp, "shared_expert_gate"),
            "q_norm": list(attn.q_norm.weight.shape) if hasattr(attn, "q_norm") else None,
            "k_norm": list(attn.k_norm.weight.shape) if hasattr(attn, "k_norm") else None,
            "qkv_bias": getattr(attn.q_proj, "bias", None) is not None,
            "o_bias": getattr(attn.o_proj, "bias", None) is not None,
            "sliding_window": getattr(attn, "sliding_window", None),
        }
        if is_moe:
            info["experts_module"] = type(mlp.experts).__name__
            info["router_module"] = type(getattr(mlp, "gate", None)).__name__
        layer_info.append(info)
    check(kinds == spec["expected_kinds"],
          f"dense/MoE layer pattern is {kinds}, expected {spec['expected_kinds']}")
    if arch == "qwen2_moe":
        for info in layer_info:
            if info["kind"] == "moe":
                check(info["shared_expert"] and info["shared_expert_gate"],
                      "qwen2_moe MoE layer without shared_expert / shared_expert_gate")
        check(layer_info[0]["qkv_bias"], "qwen2_moe attention without q/k/v bias")
    if arch == "qwen3_moe":
        check(layer_info[0]["q_norm"] == [32] and layer_info[0]["k_norm"] == [32],
              f"qwen3_moe q/k norm shapes {layer_info[0]['q_norm']}/{layer_info[0]['k_norm']}, "
              "expected per-head [head_dim=32]")
        check(list(layers[0].self_attn.q_proj.weight.shape) == [128, 64],
              "qwen3_moe q_proj should be [num_heads*head_dim=128, hidden=64]")
    if arch == "olmoe":
        check(layer_info[0]["q_norm"] == [64] and layer_info[0]["k_norm"] == [32],
              f"olmoe q/k norm shapes {layer_info[0]['q_norm']}/{layer_info[0]['k_norm']}, "
              "expected [num_heads*head_dim=64]/[num_kv_heads*head_dim=32]")

    # RoPE: every inv_freq buffer must match theta.
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    expected_inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float()
                                    / head_dim))
    n_rope = 0
    for buf_name, buf in model.named_buffers():
        if buf_name.endswith("inv_freq"):
            n_rope += 1
            check(buf.shape == expected_inv.shape and torch.allclose(buf.float(), expected_inv,
                                                                     rtol=1e-6, atol=0),
                  f"{buf_name} does not match rope_theta={theta} (head_dim {head_dim})")
    check(n_rope > 0, "no rotary inv_freq buffer found")

    # --- teacher-forced forward with hooks ---------------------------------------------
    ids = torch.tensor([PROMPT], dtype=torch.long)
    mask = torch.ones_like(ids)
    T = ids.shape[1]

    captured: dict = {"layers": {}, "router": {}, "shared_gate": {}, "qkv": {}}
    hooks = []

    def first_tensor(out):
        if isinstance(out, torch.Tensor):
            return out
        if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
            return out[0]
        raise FixtureError(f"unexpected module output type {type(out)}")

    hooks.append(inner.embed_tokens.register_forward_hook(
        lambda m, a, o: captured.__setitem__("embed", o.detach().clone())))
    hooks.append(inner.norm.register_forward_hook(
        lambda m, a, o: captured.__setitem__("final_norm", first_tensor(o).detach().clone())))
    for i, layer in enumerate(layers):
        hooks.append(layer.register_forward_hook(
            lambda m, a, o, i=i: captured["layers"].__setitem__(i, first_tensor(o).detach().clone())))
        if spec.get("clip_qkv") is not None:
            # The values clip_qkv clamps, as they leave q_norm, k_norm and v_proj (the clamp is
            # applied in place afterwards, so the clones hold the unclamped values).
            attn = layer.self_attn
            for part, mod in (("q", attn.q_norm), ("k", attn.k_norm), ("v", attn.v_proj)):
                hooks.append(mod.register_forward_hook(
                    lambda m, a, o, i=i, part=part: captured["qkv"].__setitem__(
                        (i, part), o.detach().clone())))
        _, mlp = layer_mlp(layer)
        if hasattr(mlp, "experts"):
            gate = mlp.gate

            def router_hook(m, a, o, i=i):
                x = a[0].detach().reshape(-1, m.weight.shape[-1])
                logits = torch.nn.functional.linear(x, m.weight, getattr(m, "bias", None))
                returned_idx = None
                if isinstance(o, (tuple, list)):
                    for t in o:
                        if (isinstance(t, torch.Tensor) and not t.is_floating_point()
                                and t.ndim == 2):
                            returned_idx = t.detach().clone()
                captured["router"][i] = (logits.float(), returned_idx)

            hooks.append(gate.register_forward_hook(router_hook))
            if hasattr(mlp, "shared_expert_gate"):
                hooks.append(mlp.shared_expert_gate.register_forward_hook(
                    lambda m, a, o, i=i: captured["shared_gate"].__setitem__(
                        i, torch.sigmoid(o.detach().float()).reshape(-1))))
    try:
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    logits = out.logits[0].float()
    clamped_share = None
    if spec.get("clip_qkv") is not None:
        clip = spec["clip_qkv"]
        check(float(getattr(config, "clip_qkv", 0) or 0) == clip, "config.clip_qkv not set")
        clamped_share = {}
        for i in range(len(layers)):
            for part in ("q", "k", "v"):
                t = captured["qkv"].get((i, part))
                check(t is not None, f"layer {i}: no {part} captured for clip_qkv")
                share = (t.abs() > clip).float().mean().item()
                check(share >= MIN_CLIPPED_SHARE,
                      f"layer {i}: only {share:.1%} of {part} exceeds clip_qkv={clip}")
                clamped_share[f"{i}.{part}"] = r6(share)
        log(f"  clip_qkv {clip}: clamped shares {clamped_share}")
    check(tuple(logits.shape) == (T, VOCAB), f"logits shape {tuple(logits.shape)}")
    check(bool(torch.isfinite(logits).all()), "non-finite logits")
    log(f"  forward: logits std {logits.std().item():.3f}, max |x| {logits.abs().max().item():.3f}")
    if not (0.2 < logits.std().item() < 20):
        warn(f"logits std {logits.std().item():.3g} is not O(1)")

    # Router decisions.
    top_k = config.num_experts_per_tok
    normalise = True if arch == "mixtral" else bool(config.norm_topk_prob)
    router = []
    min_margin = float("inf")
    for i in sorted(captured["router"]):
        rl, returned_idx = captured["router"][i]
        probs = torch.softmax(rl, dim=-1)
        top_v, top_i = torch.topk(probs, top_k, dim=-1)
        weights = top_v / top_v.sum(-1, keepdim=True) if normalise else top_v
        sorted_p = torch.sort(probs, dim=-1, descending=True).values
        sorted_l = torch.sort(rl, dim=-1, descending=True).values
        margin_p = (sorted_p[:, top_k - 1] - sorted_p[:, top_k]).min().item()
        margin_l = (sorted_l[:, top_k - 1] - sorted_l[:, top_k]).min().item()
        min_margin = min(min_margin, margin_l)
        matches = None
        if returned_idx is not None and tuple(returned_idx.shape) == tuple(top_i.shape):
            matches = bool(torch.equal(torch.sort(returned_idx, -1).values,
                                       torch.sort(top_i, -1).values))
            check(matches, f"layer {i}: HF router chose {returned_idx.tolist()}, recomputed "
                  f"{top_i.tolist()}")
        entry = {
            "layer": i,
            "topk_ids": top_i.tolist(),
            "topk_weights": tolist(weights),
            "probs": tolist(probs),
            "router_logits": tolist(rl),
            "min_topk_margin_prob": r6(margin_p),
            "min_topk_margin_logit": r6(margin_l),
            "matches_hf_router_indices": matches,
        }
        if i in captured["shared_gate"]:
            entry["shared_expert_gate_sigmoid"] = tolist(captured["shared_gate"][i])
        router.append(entry)
    check([r["layer"] for r in router] == [i for i, k in enumerate(kinds) if k == "moe"],
          "router hooks did not fire on exactly the MoE layers")
    if min_margin < 1e-3:
        warn(f"a top-k routing decision has a logit margin of only {min_margin:.2e}")
    counts_per_expert = [0] * config.num_experts if hasattr(config, "num_experts") else None
    if counts_per_expert is not None:
        for r in router:
            for row in r["topk_ids"]:
                for e in row:
                    counts_per_expert[e] += 1
    log("  router: " + "; ".join(f"L{r['layer']} {r['topk_ids']}" for r in router))

    # Cross-check with output_router_logits (informational).
    router_logits_output = None
    try:
        with torch.no_grad():
            out2 = model(input_ids=ids, attention_mask=mask, use_cache=False,
                         output_router_logits=True)
        rls = getattr(out2, "router_logits", None)
        if rls is not None:
            desc = []
            for j, t in enumerate(rls):
                t = t.float().reshape(-1, t.shape[-1])
                ref = captured["router"][router[j]["layer"]][0] if j < len(router) else None
                what = "?"
                if ref is not None and t.shape == ref.shape:
                    if torch.allclose(t, ref, atol=1e-5):
                        what = "logits"
                    elif torch.allclose(t, torch.softmax(ref, -1), atol=1e-6):
                        what = "softmax probs"
                desc.append({"shape": list(t.shape), "content": what})
            router_logits_output = {"count": len(rls), "entries": desc}
    except Exception as e:  # noqa: BLE001
        router_logits_output = {"error": f"{type(e).__name__}: {e}"}

    # --- greedy generation with KV cache -------------------------------------------------
    gc = model.generation_config
    gc.eos_token_id = None
    gc.bos_token_id = None
    gc.pad_token_id = 0
    gc.do_sample = False
    with torch.no_grad():
        gen = model.generate(
            input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS, pad_token_id=0, use_cache=True,
            return_dict_in_generate=True, output_logits=True,
        )
    seq = gen.sequences[0].tolist()
    check(seq[:T] == PROMPT, "generate() did not echo the prompt")
    greedy = seq[T:]
    check(len(greedy) == NEW_TOKENS, f"generate() produced {len(greedy)} tokens, not {NEW_TOKENS}")
    step_logits = torch.stack([l[0].float() for l in gen.logits])  # [16, V], raw (unprocessed)
    pkv = getattr(gen, "past_key_values", None)
    cache_type = type(pkv).__name__ if pkv is not None else None
    check(pkv is not None, "generate() returned no past_key_values: KV cache not used")

    # Cache-free greedy loop: full forward over the growing sequence each step.
    full = list(PROMPT)
    full_logits = []
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            t = torch.tensor([full], dtype=torch.long)
            lg = model(input_ids=t, attention_mask=torch.ones_like(t), use_cache=False).logits[0, -1]
            full_logits.append(lg.float())
            full.append(int(torch.argmax(lg).item()))
    full_logits = torch.stack(full_logits)
    greedy_nocache = full[T:]
    cache_diff = (step_logits - full_logits).abs().max().item()
    top2 = torch.topk(step_logits, 2, dim=-1).values
    greedy_margin = (top2[:, 0] - top2[:, 1]).min().item()
    # Step 0 of generate is the prompt's last position of the teacher-forced forward.
    step0_diff = (step_logits[0] - logits[-1]).abs().max().item()
    if greedy != greedy_nocache:
        check(greedy_margin < 1e-4,
              f"KV-cache greedy {greedy} != cache-free greedy {greedy_nocache} "
              f"(min top-2 margin {greedy_margin:.3g})")
        warn(f"KV-cache and cache-free greedy differ at a near tie: {greedy} vs {greedy_nocache}")
    check(cache_diff < 1e-3, f"KV-cache step logits differ from cache-free ones by {cache_diff}")
    log(f"  greedy: {greedy} (cache vs full max|d| {cache_diff:.2e}, min top-2 margin "
        f"{greedy_margin:.3g})")

    # --- save + verify --------------------------------------------------------------------
    out_dir = os.path.join(out_root, name)
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    try:
        model.save_pretrained(out_dir, safe_serialization=True)
    except TypeError:
        model.save_pretrained(out_dir)
    tensors, st_files = list_safetensors(out_dir)
    names = [t["name"] for t in tensors]
    layout = classify_layout(names)
    check(layout in ("per_expert", "fused"), f"unexpected expert tensor layout {layout!r}")
    for t in tensors:
        check(t["dtype"] in ("F32", "float32", "torch.float32"), f"{t['name']} saved as {t['dtype']}")
    has_lm_head = "lm_head.weight" in names
    if tied and has_lm_head:
        warn("tied model saved an lm_head.weight tensor anyway")
    if not tied:
        check(has_lm_head, "untied model saved no lm_head.weight")

    with open(os.path.join(out_dir, "config.json")) as f:
        config_json = json.load(f)
    config_dict = jsonable(config.to_dict())
    missing_in_json = {k: v for k, v in config_dict.items() if k not in config_json}
    for k in extra_keys:
        check(config_json.get(k) == spec["kwargs"][k],
              f"config.json has {k}={config_json.get(k)!r}, expected {spec['kwargs'][k]!r}")

    # Reload from disk and compare weights and logits bit for bit.
    try:
        reloaded, info = model_cls.from_pretrained(out_dir, dtype=torch.float32,
                                                   output_loading_info=True, **impl_kwargs)
    except TypeError:
        reloaded, info = model_cls.from_pretrained(out_dir, torch_dtype=torch.float32,
                                                   output_loading_info=True, **impl_kwargs)
    reloaded.eval()
    loading_info = {k: sorted(map(str, v)) if isinstance(v, (set, list)) else str(v)
                    for k, v in (info or {}).items()}
    check(not loading_info.get("missing_keys"), f"reload missing keys {loading_info.get('missing_keys')}")
    check(not loading_info.get("unexpected_keys"),
          f"reload unexpected keys {loading_info.get('unexpected_keys')}")
    sd0, sd1 = model.state_dict(), reloaded.state_dict()
    check(set(sd0) == set(sd1), "state_dict keys differ after reload")
    for k in sd0:
        check(torch.equal(sd0[k], sd1[k]), f"{k} differs after save/reload")
    with torch.no_grad():
        logits_re = reloaded(input_ids=ids, attention_mask=mask, use_cache=False).logits[0].float()
    reload_diff = (logits_re - logits).abs().max().item()
    check(reload_diff == 0.0, f"reloaded model logits differ by {reload_diff}")

    # Informational: how far HF's default fused-experts kernel (grouped_mm) is from the eager loop.
    other_impl = {}
    if "experts_implementation" in impl_kwargs:
        for impl in ("grouped_mm", "batched_mm"):
            try:
                reloaded.set_experts_implementation(impl)
                with torch.no_grad():
                    lo = reloaded(input_ids=ids, attention_mask=mask, use_cache=False).logits[0]
                other_impl[impl] = r6((lo.float() - logits).abs().max().item())
            except Exception as e:  # noqa: BLE001
                other_impl[impl] = f"unavailable: {type(e).__name__}: {str(e)[:120]}"

    size = dir_bytes(out_dir)
    if size > max_bytes:
        warn(f"{out_dir} holds {size} bytes (> {max_bytes})")

    memory_params = [{"name": n, "shape": list(p.shape)} for n, p in model.named_parameters()]

    ref = {
        "arch": arch,
        "fixture": name,
        "clip_qkv_clamped_share": clamped_share,
        "model_class": spec["model_class"],
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "safetensors_version": getattr(safetensors, "__version__", None),
        "seed": seed,
        "ids": list(PROMPT),
        "logits": tolist(logits),
        "greedy": greedy,
        "greedy_nocache": greedy_nocache,
        "greedy_step_logits": tolist(step_logits),
        "greedy_cache_vs_full_max_abs_diff": r6(cache_diff),
        "greedy_step0_vs_prompt_last_max_abs_diff": r6(step0_diff),
        "greedy_min_top2_margin": r6(greedy_margin),
        "greedy_logits_max_abs": r6(step_logits.abs().max().item()),
        "logits_max_abs": r6(logits.abs().max().item()),
        "generation": {
            "method": "model.generate(do_sample=False, max_new_tokens=16, min_new_tokens=16, "
                      "pad_token_id=0, use_cache=True); eos_token_id None in config and "
                      "generation_config",
            "cache_type": cache_type,
        },
        "embed": tolist(captured["embed"][0], r6),
        "layer_outputs": [tolist(captured["layers"][i][0], r6) for i in range(len(layers))],
        "final_norm": tolist(captured["final_norm"][0], r6),
        "router": router,
        "router_normalise_topk": normalise,
        "router_expert_use_counts": counts_per_expert,
        "router_logits_output": router_logits_output,
        "layer_kinds": kinds,
        "layer_info": layer_info,
        "tied_embeddings": tied,
        "rope": {"passed_via": rope_via, "theta": theta, "head_dim": head_dim,
                 "inv_freq_buffers_checked": n_rope},
        "attn_implementation": attn_impl,
        "experts_implementation": experts_impl,
        "other_experts_implementations_logits_max_abs_diff": other_impl,
        "config": config_dict,
        "config_json": config_json,
        "config_keys_missing_from_config_json": missing_in_json,
        "config_keys_declared_and_verified": sorted(set(spec["required_keys"]) | {rope_via}),
        "config_keys_extra_attributes": extra_keys,
        "tensor_layout": layout,
        "tensor_names": names,
        "tensors": tensors,
        "safetensors_files": st_files,
        "memory_params": memory_params,
        "reinit": {"seed": seed, "std_weight": STD_WEIGHT, "std_router": STD_ROUTER,
                   "std_bias": STD_BIAS, "norm": f"1 + {STD_NORM}*randn", "counts": counts},
        "reload": {"loading_info": loading_info, "weights_bit_identical": True,
                   "logits_max_abs_diff": reload_diff},
        "checkpoint_bytes": size,
        "warnings": warnings,
        "notes": [
            spec["notes"],
            "experts ran with experts_implementation='eager' (per-expert loop); "
            "other_experts_implementations_logits_max_abs_diff shows HF's own fused kernels.",
            "logits[i] are the teacher-forced next-token logits after ids[0..i] (one full "
            "forward over the prompt, float32, CPU, eager attention, no cache).",
            "greedy = 16 tokens from generate() with the KV cache; greedy_step_logits[j] are the "
            "raw logits that chose greedy[j] (step 0 = prompt's last position). greedy_nocache "
            "is a cache-free argmax loop and must equal greedy.",
            "router: for each MoE layer (model.layers.<layer>), per prompt token, the top-k "
            "expert ids sorted by descending probability, their weights (renormalised iff "
            "router_normalise_topk), the full softmax probs and the raw router logits.",
            "embed / layer_outputs[l] / final_norm: residual stream after the embedding, after "
            "decoder layer l, and after the final norm (6 significant digits).",
            "config_json is the file as written; config_keys_missing_from_config_json lists "
            "values the loader must take as class defaults because save_pretrained omitted them.",
        ],
    }
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
    size = dir_bytes(out_dir)
    log(f"  saved {out_dir}: {len(names)} tensors ({layout}), {size / 1e6:.2f} MB, "
        f"{time.time() - t0:.1f}s")
    return {"arch": name, "ok": True, "layout": layout, "bytes": size, "greedy": greedy,
            "kinds": kinds, "warnings": warnings, "tensor_names": names}


# --------------------------------------------------------------------------------------------


def build_extra(name: str, out_root: str, seed: int) -> dict:
    """An EXTRA_FIXTURES fixture, from its own module (imported here: it imports this one)."""
    if name == "switch_tiny":
        from hf_fixture_switch import build_switch_tiny

        r = build_switch_tiny(out_root, seed)
        return dict(r, layout="per_expert", kinds=f"position_bias={r['position_bias']}")
    raise FixtureError(f"unknown fixture {name}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/fixtures/hf", help="output root (default %(default)s)")
    ap.add_argument("--only", "--arch", dest="only", action="append",
                    choices=FIXTURES + EXTRA_FIXTURES,
                    help="fixture to build: an architecture, olmoe_clip or switch_tiny "
                    "(tools/hf_fixture_switch.py) (repeatable; default: all but switch_tiny)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--max-bytes", type=int, default=MAX_BYTES_DEFAULT,
                    help="warn when an arch's folder exceeds this (default %(default)s)")
    args = ap.parse_args(argv)

    t_start = time.time()
    try:
        import torch
        import transformers
        import safetensors  # noqa: F401
    except Exception as e:  # noqa: BLE001
        log(f"FATAL: cannot import torch/transformers/safetensors: {e}")
        return 2
    log(f"python {sys.version.split()[0]}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}")
    if not transformers.__version__.startswith("5."):
        log(f"WARNING: written against transformers 5.x, found {transformers.__version__}")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_grad_enabled(False)

    specs = arch_specs()
    archs = args.only or FIXTURES
    os.makedirs(args.out, exist_ok=True)
    results = []
    for arch in archs:
        log(f"== {arch}")
        try:
            if arch in EXTRA_FIXTURES:
                results.append(build_extra(arch, args.out, args.seed))
                continue
            results.append(build_arch(arch, specs[arch], args.out, args.seed, args.max_bytes))
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            sys.stdout.flush()
            log(f"  FAILED: {type(e).__name__}: {e}")
            results.append({"arch": arch, "ok": False, "error": f"{type(e).__name__}: {e}"})

    log("")
    log(f"== summary ({time.time() - t_start:.1f}s, transformers {transformers.__version__})")
    for r in results:
        if r["ok"]:
            log(f"  {r['arch']:10s} OK    layers {r['kinds']}  experts saved {r['layout']}  "
                f"{r['bytes'] / 1e6:.2f} MB  greedy {r['greedy']}")
            sample = [n for n in r["tensor_names"] if ".layers.0." in n or "layers" not in n]
            for n in sample:
                log(f"      {n}")
            for w in r["warnings"]:
                log(f"      warning: {w}")
        else:
            log(f"  {r['arch']:10s} FAIL  {r['error']}")
    failed = [r["arch"] for r in results if not r["ok"]]
    if failed:
        log(f"FAILED: {', '.join(failed)}")
        return 1
    log("all OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
