"""The tiny Switch Transformers fixture (``hf_fixtures.py --only switch_tiny``).

Builds a tiny random ``SwitchTransformersForConditionalGeneration`` with transformers' own config
and model classes (float32, CPU, eager attention, fixed seed), re-initialises its parameters so that
activations, routing and logits are O(1) and the relative position bias is large enough to matter,
saves it with ``save_pretrained`` into ``<out>/switch_tiny/`` and writes ``reference.json``: HF's
teacher-forced logits for fixed encoder ids and decoder input ids, HF's greedy tokens from
``generate`` (decoder_start_token_id, greedy, the KV cache; checked against a cache-free loop), the
routing of every sparse layer, HF's relative-position buckets over a range of distances (for the tiny
and the real checkpoints' bucket settings), and what HF's implementation actually does where
versions have differed:

- ``hf_semantics.position_bias``: whether the relative position bias computed in the first layer of
  each stack reaches the later layers (``shared``, as T5 and the Switch paper define it) or only the
  first layer gets one (``first_layer_only``). Found by comparing HF's logits with an independent
  float64 forward written here, run both ways.
- ``hf_semantics.expert_capacity_honoured``: whether setting every router's ``expert_capacity`` to 1
  changes HF's logits (token dropping at inference) on the same weights.

Run from hf_fixtures.py (shared helpers); see tools/README.md.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import hf_fixtures as base

NAME = "switch_tiny"

# Raw ids (no tokenizer): 0 = pad = decoder start, 1 = EOS; the prompts use neither.
ENCODER_IDS = [13, 7, 42, 99, 5, 61, 23, 88, 2, 47, 74, 30, 11, 56, 95, 38, 19, 66, 81, 27]
DECODER_IDS = [0, 44, 9, 71, 3, 58, 90, 16]
NEW_TOKENS = 20
VOCAB = 100

# Encoder 4 layers (sparse 1, 3), decoder 6 layers (sparse 1, 3, 5): the counts differ so a swap of
# the stacks cannot go unnoticed; inner attention width 4 * 12 = 48 != d_model 32 so a transposed
# q/k/v/o cannot either. Jitter, dropout and capacity are the real checkpoints' values (no effect
# at inference, which the fixture shows).
CONFIG = dict(
    vocab_size=VOCAB,
    d_model=32,
    d_kv=12,
    d_ff=64,
    num_heads=4,
    num_layers=4,
    num_decoder_layers=6,
    num_sparse_encoder_layers=2,
    num_sparse_decoder_layers=3,
    num_experts=8,
    expert_capacity=64,
    router_bias=False,
    router_jitter_noise=0.01,
    router_dtype="float32",
    router_ignore_padding_tokens=False,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
    dropout_rate=0.1,
    layer_norm_epsilon=1e-6,
    dense_act_fn="relu",
    tie_word_embeddings=True,
    is_encoder_decoder=True,
    use_cache=True,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)
REQUIRED_KEYS = [
    "vocab_size", "d_model", "d_kv", "d_ff", "num_heads", "num_layers", "num_decoder_layers",
    "num_sparse_encoder_layers", "num_sparse_decoder_layers", "num_experts", "expert_capacity",
    "router_bias", "router_jitter_noise", "router_dtype", "relative_attention_num_buckets",
    "relative_attention_max_distance", "layer_norm_epsilon", "dense_act_fn",
]
EXPECTED_SPARSE = {
    "encoder": [False, True, False, True],
    "decoder": [False, True, False, True, False, True],
}
# Bucket settings recorded: the fixture's and the real checkpoints' (32 buckets, distance 128).
BUCKET_SETTINGS = [(8, 16), (32, 128)]
BUCKET_RANGE = 300

# Init scales (see reinit): layers strong enough against the embedding that greedy decoding does
# not just repeat one token (tied embeddings favour copying the input), router logits decisive,
# attention not so sharp that float32 drifts from float64 by more than ~1e-5 in the logits.
STD = {"embed": 0.6, "rel_bias": 1.0, "router": 1.0, "attn": 0.2, "wi": 0.3, "wo": 0.3,
       "head": 0.2, "bias": 0.1, "norm": 0.1}


def reinit(model, seed: int) -> dict:
    """O(1) activations; a relative bias of std 1 so its presence in a layer shows in the logits;
    ReLU layers; the parameters in named_parameters order from one seeded generator."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    counts: dict = {}
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied parameters are listed once
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if "layer_norm" in name:
                kind, value = "norm", 1.0 + STD["norm"] * noise
            elif name.endswith(".bias"):
                kind, value = "bias", STD["bias"] * noise
            elif "relative_attention_bias" in name:
                kind, value = "rel_bias", STD["rel_bias"] * noise
            elif "router" in name:
                kind, value = "router", STD["router"] * noise
            elif "shared" in name or "embed_tokens" in name:
                kind, value = "embed", STD["embed"] * noise
            elif "lm_head" in name:
                kind, value = "head", STD["head"] * noise
            elif name.endswith(".wi.weight"):
                kind, value = "wi", STD["wi"] * noise
            elif name.endswith(".wo.weight"):
                kind, value = "wo", STD["wo"] * noise
            elif any(name.endswith(f".{m}.weight") for m in "qkvo"):
                kind, value = "attn", STD["attn"] * noise
            else:
                raise base.FixtureError(f"reinit: parameter {name} {list(p.shape)} not classified")
            p.copy_(value)
            counts[kind] = counts.get(kind, 0) + 1
    return counts


# --------------------------------------------------------------------------------------------
# An independent float64 forward over the saved tensors (names as save_pretrained wrote them)
# --------------------------------------------------------------------------------------------


class Weights:
    def __init__(self, sd: dict):
        self.sd = sd

    def __call__(self, name: str):
        import torch

        if name not in self.sd:
            close = sorted(n for n in self.sd if n.split(".")[0] == name.split(".")[0])[:12]
            raise base.FixtureError(f"saved checkpoint has no tensor {name}; some names: {close}")
        return self.sd[name].to(torch.float64)

    def embedding(self):
        for n in ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            if n in self.sd:
                return self(n)
        raise base.FixtureError("saved checkpoint has no embedding (shared.weight)")


def rms(x, w, eps):
    import torch

    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def attend(W, prefix, xq, xkv, heads, d_kv, bias, mask):
    """T5 attention, no 1/sqrt(d) scaling: bias [H, Tq, Tk] or None, mask [Tq, Tk] (True = hidden)."""
    import torch

    def split(x, m):
        return (x @ W(f"{prefix}.{m}.weight").T).reshape(x.shape[0], heads, d_kv).transpose(0, 1)

    q, k, v = split(xq, "q"), split(xkv, "k"), split(xkv, "v")
    s = q @ k.transpose(1, 2)
    if bias is not None:
        s = s + bias
    if mask is not None:
        s = s.masked_fill(mask, float("-inf"))
    o = (torch.softmax(s, -1) @ v).transpose(0, 1).reshape(xq.shape[0], heads * d_kv)
    return o @ W(f"{prefix}.o.weight").T


def feed_forward(W, prefix, x, sparse, cfg, routes, layer):
    import torch

    n = rms(x, W(f"{prefix}.layer_norm.weight"), cfg["layer_norm_epsilon"])
    relu = torch.nn.functional.relu
    if not sparse:
        return x + relu(n @ W(f"{prefix}.mlp.wi.weight").T) @ W(f"{prefix}.mlp.wo.weight").T
    logits = n @ W(f"{prefix}.mlp.router.classifier.weight").T
    if cfg["router_bias"]:
        logits = logits + W(f"{prefix}.mlp.router.classifier.bias")
    probs = torch.softmax(logits, -1)
    top = torch.sort(probs, -1, descending=True)
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        e = int(top.indices[t, 0])
        ep = f"{prefix}.mlp.experts.expert_{e}"
        y = relu(n[t] @ W(f"{ep}.wi.weight").T) @ W(f"{ep}.wo.weight").T
        out[t] = top.values[t, 0] * y
    routes.append({
        "layer": layer,
        "expert": top.indices[:, 0].tolist(),
        "prob": [base.r9(v) for v in top.values[:, 0].tolist()],
        "min_top2_margin": base.r6((top.values[:, 0] - top.values[:, 1]).min().item()),
    })
    return x + out


def stack_bias(W, stack, Tq, Tk, q0, bidirectional, cfg, bucket_fn):
    import torch

    table = W(f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
    rel = torch.arange(Tk)[None, :] - (torch.arange(Tq)[:, None] + q0)
    b = bucket_fn(rel, bidirectional=bidirectional,
                  num_buckets=cfg["relative_attention_num_buckets"],
                  max_distance=cfg["relative_attention_max_distance"])
    return table[b].permute(2, 0, 1)  # [H, Tq, Tk]


def reference_forward(W, cfg, enc_ids, dec_ids, position_bias, bucket_fn):
    """(encoder output, logits [T_dec, V], routes) in float64; position_bias: shared | first_layer_only."""
    import torch

    H, dk, eps = cfg["num_heads"], cfg["d_kv"], cfg["layer_norm_epsilon"]
    emb = W.embedding()
    routes: dict = {"encoder": [], "decoder": []}

    def layer_bias(bias, i):
        return bias if (i == 0 or position_bias == "shared") else None

    x = emb[torch.tensor(enc_ids)]
    T = len(enc_ids)
    bias = stack_bias(W, "encoder", T, T, 0, True, cfg, bucket_fn)
    for i, sparse in enumerate(EXPECTED_SPARSE["encoder"]):
        p = f"encoder.block.{i}.layer"
        n = rms(x, W(f"{p}.0.layer_norm.weight"), eps)
        x = x + attend(W, f"{p}.0.SelfAttention", n, n, H, dk, layer_bias(bias, i), None)
        x = feed_forward(W, f"{p}.1", x, sparse, cfg, routes["encoder"], i)
    enc = rms(x, W("encoder.final_layer_norm.weight"), eps)

    y = emb[torch.tensor(dec_ids)]
    S = len(dec_ids)
    bias = stack_bias(W, "decoder", S, S, 0, False, cfg, bucket_fn)
    causal = torch.arange(S)[None, :] > torch.arange(S)[:, None]
    for i, sparse in enumerate(EXPECTED_SPARSE["decoder"]):
        p = f"decoder.block.{i}.layer"
        n = rms(y, W(f"{p}.0.layer_norm.weight"), eps)
        y = y + attend(W, f"{p}.0.SelfAttention", n, n, H, dk, layer_bias(bias, i), causal)
        n = rms(y, W(f"{p}.1.layer_norm.weight"), eps)
        y = y + attend(W, f"{p}.1.EncDecAttention", n, enc, H, dk, None, None)
        y = feed_forward(W, f"{p}.2", y, sparse, cfg, routes["decoder"], i)
    y = rms(y, W("decoder.final_layer_norm.weight"), eps)
    if cfg["tie_word_embeddings"]:
        logits = (y * cfg["d_model"] ** -0.5) @ emb.T
    else:
        logits = y @ W("lm_head.weight").T
    return enc, logits, routes


def reference_greedy(W, cfg, enc_ids, start, n, position_bias, bucket_fn):
    import torch

    seq = [start]
    for _ in range(n):
        _, logits, _ = reference_forward(W, cfg, enc_ids, seq, position_bias, bucket_fn)
        seq.append(int(torch.argmax(logits[-1]).item()))
    return seq[1:]


# --------------------------------------------------------------------------------------------
# HF side
# --------------------------------------------------------------------------------------------


def make_model(seed: int, warn):
    import torch
    import transformers

    cfg_cls = transformers.SwitchTransformersConfig
    known = base.known_config_keys(cfg_cls)
    missing = [k for k in REQUIRED_KEYS if k not in known]
    base.check(not missing, f"SwitchTransformersConfig in transformers {transformers.__version__} "
               f"does not declare {missing}")
    try:
        config = cfg_cls(**CONFIG)
    except TypeError as e:  # a strict config class that does not take the generic key
        warn(f"SwitchTransformersConfig(decoder_start_token_id=...) failed ({e}); set afterwards")
        config = cfg_cls(**{k: v for k, v in CONFIG.items() if k != "decoder_start_token_id"})
        config.decoder_start_token_id = CONFIG["decoder_start_token_id"]
    for k in REQUIRED_KEYS + ["tie_word_embeddings", "decoder_start_token_id", "eos_token_id"]:
        got = getattr(config, k, "<missing>")
        base.check(got == CONFIG[k], f"config.{k} is {got!r} after construction, expected {CONFIG[k]!r}")
    base.check(config.encoder_sparse_step == 2 and config.decoder_sparse_step == 2,
               f"sparse steps {config.encoder_sparse_step}/{config.decoder_sparse_step}, expected 2/2")
    torch.manual_seed(seed)
    cls = transformers.SwitchTransformersForConditionalGeneration
    try:
        model = cls._from_config(config, dtype=torch.float32, attn_implementation="eager")
    except TypeError:
        model = cls._from_config(config, torch_dtype=torch.float32, attn_implementation="eager")
    model = model.to(dtype=torch.float32, device="cpu").eval()
    attn = getattr(model.config, "_attn_implementation", None)
    if attn != "eager":
        warn(f"attention implementation is {attn!r}, not 'eager'")
    counts = reinit(model, seed)
    shared = model.shared.weight.data_ptr()
    for name, w in (("lm_head", model.lm_head.weight),
                    ("encoder.embed_tokens", model.encoder.embed_tokens.weight),
                    ("decoder.embed_tokens", model.decoder.embed_tokens.weight)):
        base.check(w.data_ptr() == shared, f"{name} is not tied to shared.weight")
    for stack in ("encoder", "decoder"):
        blocks = getattr(model, stack).block
        kinds = [hasattr(b.layer[-1].mlp, "router") for b in blocks]
        base.check(kinds == EXPECTED_SPARSE[stack], f"{stack} sparse layers {kinds}, expected "
                   f"{EXPECTED_SPARSE[stack]}")
        has_bias = [b.layer[0].SelfAttention.has_relative_attention_bias for b in blocks]
        base.check(has_bias == [i == 0 for i in range(len(blocks))],
                   f"{stack} layers holding a relative_attention_bias: {has_bias}")
    return model, counts


def hf_buckets(model) -> list:
    import torch

    fn = model.encoder.block[0].layer[0].SelfAttention._relative_position_bucket
    rel = torch.arange(-BUCKET_RANGE, BUCKET_RANGE + 1)
    out = []
    for nb, md in BUCKET_SETTINGS:
        for bidirectional in (True, False):
            b = fn(rel, bidirectional=bidirectional, num_buckets=nb, max_distance=md)
            out.append({"bidirectional": bidirectional, "num_buckets": nb, "max_distance": md,
                        "first_relative_position": -BUCKET_RANGE, "buckets": b.tolist()})
    return out


def hf_routes(model, enc, dec) -> dict:
    """HF's routing of the teacher-forced run, from the router classifiers' inputs (top-1, prob)."""
    import torch

    found: dict = {"encoder": {}, "decoder": {}}
    hooks = []
    for stack in ("encoder", "decoder"):
        for i, b in enumerate(getattr(model, stack).block):
            mlp = b.layer[-1].mlp
            if hasattr(mlp, "router"):
                def hook(m, a, o, stack=stack, i=i):
                    logits = torch.nn.functional.linear(a[0].float().reshape(-1, m.weight.shape[1]),
                                                        m.weight.float(), m.bias)
                    p = torch.softmax(logits, -1)
                    found[stack][i] = (p.argmax(-1).tolist(), [base.r9(v) for v in p.max(-1).values])
                hooks.append(mlp.router.classifier.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(input_ids=enc, decoder_input_ids=dec, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    return {s: [{"layer": i, "expert": v[0], "prob": v[1]} for i, v in sorted(found[s].items())]
            for s in found}


def capacity_probe(model, enc, dec, logits) -> float:
    """max |logits(expert_capacity=1) - logits| on the same weights (0: capacity not applied)."""
    import torch

    routers = [m for m in model.modules() if hasattr(m, "expert_capacity")]
    base.check(routers, "no module with an expert_capacity attribute found")
    saved = [m.expert_capacity for m in routers]
    try:
        for m in routers:
            m.expert_capacity = 1
        with torch.no_grad():
            lo = model(input_ids=enc, decoder_input_ids=dec, use_cache=False).logits[0].float()
    finally:
        for m, c in zip(routers, saved):
            m.expert_capacity = c
    return (lo - logits).abs().max().item()


def hf_greedy(model, enc):
    import torch

    gc = model.generation_config
    gc.eos_token_id = None
    gc.do_sample = False
    gc.decoder_start_token_id = CONFIG["decoder_start_token_id"]
    # transformers 5.17's cached generate() fails for Switch (IndexError in the decoder's cache);
    # then the greedy tokens are HF's cache-free forward's (the loop below), and the failure is
    # recorded in reference.json.
    generate_error = None
    try:
        with torch.no_grad():
            gen = model.generate(input_ids=enc, attention_mask=torch.ones_like(enc),
                                 do_sample=False, max_new_tokens=NEW_TOKENS, eos_token_id=None,
                                 pad_token_id=0,
                                 decoder_start_token_id=CONFIG["decoder_start_token_id"],
                                 use_cache=True, return_dict_in_generate=True, output_logits=True)
        seq = gen.sequences[0].tolist()
        base.check(seq[0] == CONFIG["decoder_start_token_id"],
                   f"generate() did not start from decoder_start_token_id: {seq[:3]}")
        greedy = seq[1:]
        base.check(len(greedy) == NEW_TOKENS, f"generate() produced {len(greedy)} tokens")
        step_logits = torch.stack([l[0].float() for l in gen.logits])
    except IndexError as e:
        generate_error = f"{type(e).__name__}: {e}"
        base.log(f"  generate() with the cache failed ({generate_error}); greedy from the "
                 "cache-free forward")
        greedy, step_logits = None, None
    # Cache-free loop: the whole decoder recomputed for each step.
    dec = [CONFIG["decoder_start_token_id"]]
    full_logits = []
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            lg = model(input_ids=enc, decoder_input_ids=torch.tensor([dec]),
                       use_cache=False).logits[0, -1].float()
            full_logits.append(lg)
            dec.append(int(torch.argmax(lg).item()))
    full_logits = torch.stack(full_logits)
    if greedy is None:
        greedy, step_logits = dec[1:], full_logits
    top2 = torch.topk(step_logits, 2, dim=-1).values
    return {
        "generate_error": generate_error,
        "greedy": greedy,
        "greedy_nocache": dec[1:],
        "step_logits": step_logits,
        "cache_vs_full": (step_logits - full_logits).abs().max().item(),
        "margin": (top2[:, 0] - top2[:, 1]).min().item(),
    }


# --------------------------------------------------------------------------------------------
# The fixture
# --------------------------------------------------------------------------------------------


def build_switch_tiny(out_root: str, seed: int) -> dict:
    """Builds <out_root>/switch_tiny (config, weights, reference.json); raises FixtureError on a
    failed self-check."""
    import torch
    import transformers
    from safetensors.torch import load_file

    t0 = time.time()
    warnings: list[str] = []

    def warn(msg: str) -> None:
        warnings.append(msg)
        base.log(f"  WARNING: {msg}")

    model, counts = make_model(seed, warn)
    enc = torch.tensor([ENCODER_IDS])
    dec = torch.tensor([DECODER_IDS])
    with torch.no_grad():
        out = model(input_ids=enc, decoder_input_ids=dec, use_cache=False)
    logits = out.logits[0].float()
    base.check(tuple(logits.shape) == (len(DECODER_IDS), VOCAB), f"logits shape {logits.shape}")
    base.check(bool(torch.isfinite(logits).all()), "non-finite logits")
    base.log(f"  forward: logits std {logits.std().item():.3f}, max |x| "
             f"{logits.abs().max().item():.3f}")
    if not 0.2 < logits.std().item() < 20:
        warn(f"logits std {logits.std().item():.3g} is not O(1)")
    encoder_out = out.encoder_last_hidden_state[0].float()

    out_dir = os.path.join(out_root, NAME)
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    model.save_pretrained(out_dir)
    tensors, st_files = base.list_safetensors(out_dir)
    names = [t["name"] for t in tensors]
    for t in tensors:
        base.check(t["dtype"] in ("F32", "float32", "torch.float32"),
                   f"{t['name']} saved as {t['dtype']}")
    sd: dict = {}
    for fn in st_files:
        sd.update(load_file(os.path.join(out_dir, fn)))

    # The independent float64 forward over the saved tensors, both position-bias readings.
    W = Weights(sd)
    bucket_fn = model.encoder.block[0].layer[0].SelfAttention._relative_position_bucket
    cfg = dict(CONFIG)
    diffs, routes_ref, enc_ref = {}, {}, {}
    for mode in ("shared", "first_layer_only"):
        e, lg, r = reference_forward(W, cfg, ENCODER_IDS, DECODER_IDS, mode, bucket_fn)
        diffs[mode] = (lg - logits.double()).abs().max().item()
        routes_ref[mode], enc_ref[mode] = r, e
    base.log(f"  f64 reference vs HF logits: shared {diffs['shared']:.2e}, first_layer_only "
             f"{diffs['first_layer_only']:.2e}")
    matching = [m for m, d in diffs.items() if d < 1e-3]
    base.check(len(matching) == 1, f"the float64 reference matches HF in {matching or 'neither'} "
               f"position-bias reading(s): {diffs}")
    position_bias = matching[0]
    if position_bias != "shared":
        warn("HF applies the relative position bias in the first layer of each stack only; T5 and "
             "the Switch paper share it across all layers")
    enc_diff = (enc_ref[position_bias] - encoder_out.double()).abs().max().item()
    base.check(enc_diff < 1e-3, f"encoder output differs from the reference by {enc_diff}")

    routes = hf_routes(model, enc, dec)
    for stack in ("encoder", "decoder"):
        mine = [r["expert"] for r in routes_ref[position_bias][stack]]
        theirs = [r["expert"] for r in routes[stack]]
        base.check(mine == theirs, f"{stack} routing: reference {mine}, HF {theirs}")
        for r in routes[stack]:
            if len(set(r["expert"])) < 3:
                warn(f"{stack} layer {r['layer']} routes to only {sorted(set(r['expert']))}")
    cap_diff = capacity_probe(model, enc, dec, logits)
    base.log(f"  expert_capacity=1 probe: max |d logits| {cap_diff:.2e}")

    g = hf_greedy(model, enc)
    if g["greedy"] != g["greedy_nocache"]:
        base.check(g["margin"] < 1e-4, f"KV-cache greedy {g['greedy']} != cache-free "
                   f"{g['greedy_nocache']} (min top-2 margin {g['margin']:.3g})")
        warn("KV-cache and cache-free greedy differ at a near tie")
    base.check(g["cache_vs_full"] < 1e-3, f"KV-cache step logits differ by {g['cache_vs_full']}")
    greedy_ref = reference_greedy(W, cfg, ENCODER_IDS, CONFIG["decoder_start_token_id"],
                                  NEW_TOKENS, position_bias, bucket_fn)
    if greedy_ref != g["greedy"]:
        base.check(g["margin"] < 1e-4, f"reference greedy {greedy_ref} != HF {g['greedy']} "
                   f"(min top-2 margin {g['margin']:.3g})")
        warn(f"float64 reference greedy {greedy_ref} differs from HF's at a near tie")
    base.log(f"  greedy: {g['greedy']} (min top-2 margin {g['margin']:.3g})")
    eos = CONFIG["eos_token_id"]

    with open(os.path.join(out_dir, "config.json")) as f:
        config_json = json.load(f)
    ref = {
        "arch": "switch_transformers",
        "model_class": "SwitchTransformersForConditionalGeneration",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "seed": seed,
        "encoder_ids": ENCODER_IDS,
        "decoder_input_ids": DECODER_IDS,
        "logits": base.tolist(logits),
        "logits_max_abs": base.r6(logits.abs().max().item()),
        "encoder_output": base.tolist(encoder_out, base.r6),
        "decoder_start_token_id": CONFIG["decoder_start_token_id"],
        "eos_token_id": eos,
        "greedy": g["greedy"],
        "greedy_nocache": g["greedy_nocache"],
        "generate_error": g["generate_error"],
        "greedy_first_eos_index": g["greedy"].index(eos) if eos in g["greedy"] else None,
        "greedy_step_logits": base.tolist(g["step_logits"]),
        "greedy_min_top2_margin": base.r6(g["margin"]),
        "greedy_cache_vs_full_max_abs_diff": base.r6(g["cache_vs_full"]),
        "routing": routes,
        "routing_reference": routes_ref[position_bias],
        "hf_semantics": {
            "position_bias": position_bias,
            "reference_logits_max_abs_diff": {k: base.r6(v) for k, v in diffs.items()},
            "expert_capacity_honoured": cap_diff > 1e-6,
            "expert_capacity_1_logits_max_abs_diff": base.r6(cap_diff),
        },
        "relative_position_buckets": hf_buckets(model),
        "sparse_layers": EXPECTED_SPARSE,
        "config_json": config_json,
        "config": base.jsonable(model.config.to_dict()),
        "tensor_names": names,
        "tensors": tensors,
        "safetensors_files": st_files,
        "reinit": {"seed": seed, "std": STD, "counts": counts},
        "checkpoint_bytes": base.dir_bytes(out_dir),
        "warnings": warnings,
        "notes": [
            "logits[i]: teacher-forced next-token logits after decoder_input_ids[0..i] with the "
            "whole encoder_ids prompt (float32, CPU, eager attention, no cache).",
            "greedy: NEW_TOKENS tokens from generate() starting at decoder_start_token_id, KV "
            "cache on, EOS disabled in the generation config (greedy_first_eos_index tells where "
            "EOS would have stopped it); greedy_nocache is a cache-free argmax loop.",
            "routing: per sparse layer of each stack, the top-1 expert and its softmax probability "
            "(the expert output's scale) per token, from HF's router inputs.",
            "hf_semantics.position_bias: which reading of the first layer's relative position bias "
            "(every layer, or the first only) an independent float64 forward over the saved tensors "
            "needs to match HF's logits; the other reading's difference is shown for scale.",
            "relative_position_buckets: HF's _relative_position_bucket of relative positions "
            "first_relative_position .. -first_relative_position (memory - query).",
        ],
    }
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
    size = base.dir_bytes(out_dir)
    base.log(f"  saved {out_dir}: {len(names)} tensors, {size / 1e6:.2f} MB, "
             f"{time.time() - t0:.1f}s")
    sample = [n for n in names if ".block." not in n or ".block.1." in n]
    return {"arch": NAME, "ok": True, "bytes": size, "greedy": g["greedy"],
            "position_bias": position_bias, "warnings": warnings, "tensor_names": sample}
