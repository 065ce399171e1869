"""A qwen3_moe decoder in plain PyTorch that computes what HF's Qwen3MoeForCausalLM computes
(RMSNorm, per-head q/k RMSNorm, RoPE, GQA, SwiGLU experts, softmax router, top-k, norm_topk_prob,
dense layers from mlp_only_layers), plus the Pre-gated MoE pre-gates.

Works with torch 1.13 and 2.x. Expert weights are held stacked ([E, I, H]) and every expert is
computed for every token with the unselected experts' combine weights exactly zero: the same sums
and the same gradients as the sparse loop, in three large matmuls (these models are small).

Routing modes of `CausalLM.forward`:
  own          each MoE layer uses its own router (the conventional model, what HF computes)
  next_router  layer i >= 1 uses layer i's router applied to layer i-1's MoE input
               (training-free strict pre-gating)
  pregate      layer i >= 1 uses layer i-1's trained pre-gate (`mlp.pregate.weight`) applied to
               layer i-1's MoE input (the Pre-gated MoE model)

Example:
    cfg = ModelConfig(vocab_size=259, hidden_size=64, num_hidden_layers=2)
    model = CausalLM(cfg)
    logits, stats = model(torch.tensor([[1, 2, 3]]), routing="own", collect=True)
"""
import dataclasses
import json
import math
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

ROUTINGS = ("own", "next_router", "pregate")


@dataclasses.dataclass
class ModelConfig:
    vocab_size: int
    hidden_size: int = 256
    num_hidden_layers: int = 8
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 64
    num_experts: int = 8
    num_experts_per_tok: int = 2
    moe_intermediate_size: int = 128
    intermediate_size: int = 256  # dense layers (mlp_only_layers)
    mlp_only_layers: List[int] = dataclasses.field(default_factory=list)
    decoder_sparse_step: int = 1
    norm_topk_prob: bool = True
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 256
    tie_word_embeddings: bool = False
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[int] = None
    pad_token_id: Optional[int] = None

    def is_moe(self, i: int) -> bool:
        """HF's rule: sparse unless in mlp_only_layers, every decoder_sparse_step-th layer."""
        return (i not in self.mlp_only_layers and self.num_experts > 0
                and (i + 1) % self.decoder_sparse_step == 0)

    def to_hf(self, dtype: str = "bfloat16") -> Dict[str, object]:
        """config.json as transformers 5.17 writes it for Qwen3MoeForCausalLM."""
        return {
            "architectures": ["Qwen3MoeForCausalLM"],
            "attention_bias": False,
            "attention_dropout": 0.0,
            "bos_token_id": self.bos_token_id,
            "decoder_sparse_step": self.decoder_sparse_step,
            "dtype": dtype,
            "eos_token_id": self.eos_token_id,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "initializer_range": 0.02,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "mlp_only_layers": list(self.mlp_only_layers),
            "model_type": "qwen3_moe",
            "moe_intermediate_size": self.moe_intermediate_size,
            "norm_topk_prob": self.norm_topk_prob,
            "num_attention_heads": self.num_attention_heads,
            "num_experts_per_tok": self.num_experts_per_tok,
            "num_hidden_layers": self.num_hidden_layers,
            "num_key_value_heads": self.num_key_value_heads,
            "num_local_experts": self.num_experts,
            "output_router_logits": False,
            "pad_token_id": self.pad_token_id,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_parameters": {"rope_theta": float(self.rope_theta), "rope_type": "default"},
            "router_aux_loss_coef": 0.001,
            "sliding_window": None,
            "tie_word_embeddings": self.tie_word_embeddings,
            "transformers_version": "5.17.0",
            "use_cache": True,
            "use_sliding_window": False,
            "vocab_size": self.vocab_size,
        }

    @staticmethod
    def from_hf(raw: Dict[str, object]) -> "ModelConfig":
        """Reads a qwen3_moe config.json (HF 4 or 5 form); rejects what this model cannot do."""
        if raw.get("model_type") != "qwen3_moe":
            raise ValueError(f"config.json: model_type must be qwen3_moe, found {raw.get('model_type')}")
        rope = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
        if rope.get("rope_type", "default") not in ("default", None):
            raise ValueError(f"config.json: RoPE type {rope.get('rope_type')} is not supported")
        for key, ok in (("hidden_act", "silu"), ("attention_bias", False),
                        ("use_sliding_window", False)):
            if raw.get(key, ok) != ok:
                raise ValueError(f"config.json: {key}={raw.get(key)!r} is not supported")
        heads = int(raw["num_attention_heads"])
        experts = raw.get("num_experts", raw.get("num_local_experts"))
        return ModelConfig(
            vocab_size=int(raw["vocab_size"]),
            hidden_size=int(raw["hidden_size"]),
            num_hidden_layers=int(raw["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(raw.get("num_key_value_heads") or heads),
            head_dim=int(raw.get("head_dim") or int(raw["hidden_size"]) // heads),
            num_experts=int(experts),
            num_experts_per_tok=int(raw["num_experts_per_tok"]),
            moe_intermediate_size=int(raw["moe_intermediate_size"]),
            intermediate_size=int(raw["intermediate_size"]),
            mlp_only_layers=[int(x) for x in raw.get("mlp_only_layers") or []],
            decoder_sparse_step=int(raw.get("decoder_sparse_step", 1)),
            norm_topk_prob=bool(raw.get("norm_topk_prob", True)),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope.get("rope_theta", raw.get("rope_theta", 10000.0))),
            max_position_embeddings=int(raw.get("max_position_embeddings", 256)),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            bos_token_id=raw.get("bos_token_id"),
            eos_token_id=raw.get("eos_token_id"),
            pad_token_id=raw.get("pad_token_id"),
        )


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_cos_sin(cfg: ModelConfig, positions: torch.Tensor, dtype: torch.dtype):
    """HF's default RoPE: float32 angles, cos/sin of [freqs, freqs], cast to the activations."""
    dim = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (
        torch.arange(0, dim, 2, dtype=torch.int64, device=positions.device).float() / dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        h, d = cfg.hidden_size, cfg.head_dim
        self.q_proj = nn.Linear(h, cfg.num_attention_heads * d, bias=False)
        self.k_proj = nn.Linear(h, cfg.num_key_value_heads * d, bias=False)
        self.v_proj = nn.Linear(h, cfg.num_key_value_heads * d, bias=False)
        self.o_proj = nn.Linear(cfg.num_attention_heads * d, h, bias=False)
        self.q_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(d, cfg.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        c = self.cfg
        q = self.q_norm(self.q_proj(x).view(b, t, -1, c.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(b, t, -1, c.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(b, t, -1, c.head_dim).transpose(1, 2)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if q.dtype != v.dtype:  # under autocast the q/k norms return float32, v_proj bf16
            q, k = q.to(v.dtype), k.to(v.dtype)
        rep = c.num_attention_heads // c.num_key_value_heads
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        scale = c.head_dim ** -0.5
        if hasattr(F, "scaled_dot_product_attention"):
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale) \
                if _sdpa_takes_scale() else F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = torch.matmul(q, k.transpose(2, 3)) * scale
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(mask, float("-inf"))
            out = torch.matmul(F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype), v)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


_SDPA_SCALE: List[bool] = []


def _sdpa_takes_scale() -> bool:
    if not _SDPA_SCALE:
        import inspect
        try:
            _SDPA_SCALE.append("scale" in inspect.signature(F.scaled_dot_product_attention).parameters)
        except (TypeError, ValueError):
            _SDPA_SCALE.append(False)  # default scale is 1/sqrt(head_dim), the same
    return _SDPA_SCALE[0]


class Mlp(nn.Module):
    def __init__(self, hidden: int, inter: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Experts(nn.Module):
    """E SwiGLU experts, stacked: gate_proj/up_proj [E, I, H], down_proj [E, H, I]."""

    def __init__(self, experts: int, hidden: int, inter: int):
        super().__init__()
        self.gate_proj = nn.Parameter(torch.empty(experts, inter, hidden))
        self.up_proj = nn.Parameter(torch.empty(experts, inter, hidden))
        self.down_proj = nn.Parameter(torch.empty(experts, hidden, inter))

    def forward(self, x: torch.Tensor, combine: torch.Tensor) -> torch.Tensor:
        """x [N, H], combine [N, E] (zero for unselected experts) -> sum_e combine_e * expert_e(x)."""
        e, i, h = self.gate_proj.shape
        g = F.linear(x, self.gate_proj.reshape(e * i, h)).view(-1, e, i)
        u = F.linear(x, self.up_proj.reshape(e * i, h)).view(-1, e, i)
        a = F.silu(g) * u * combine.to(g.dtype)[:, :, None]
        return F.linear(a.reshape(-1, e * i), self.down_proj.permute(1, 0, 2).reshape(h, e * i))


def route(logits: torch.Tensor, k: int, renormalize: bool):
    """HF's router: softmax in float32, top-k, optional renormalisation -> (ids, weights, probs)."""
    probs = F.softmax(logits, dim=-1, dtype=torch.float32)
    weights, ids = torch.topk(probs, k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return ids, weights, probs


class SparseMoe(nn.Module):
    def __init__(self, cfg: ModelConfig, next_experts: int = 0):
        super().__init__()
        self.cfg = cfg
        self.gate = nn.Linear(cfg.hidden_size, cfg.num_experts, bias=False)
        self.experts = Experts(cfg.num_experts, cfg.hidden_size, cfg.moe_intermediate_size)
        self.pregate: Optional[nn.Linear] = None
        if next_experts:
            self.pregate = nn.Linear(cfg.hidden_size, next_experts, bias=False)

    def forward(self, h: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        combine = torch.zeros(h.shape[0], self.cfg.num_experts, dtype=weights.dtype,
                              device=h.device).scatter(1, ids, weights)
        return self.experts(h, combine.to(h.dtype))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, i: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = SparseMoe(cfg) if cfg.is_moe(i) else Mlp(cfg.hidden_size, cfg.intermediate_size)


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class RoutingStats:
    """Per MoE layer: routed tokens, predicted-vs-own agreement, expert use counts, aux losses."""

    def __init__(self):
        self.aux: List[torch.Tensor] = []
        self.agree_sum: Dict[int, float] = {}
        self.agree_n: Dict[int, int] = {}
        self.counts: Dict[int, torch.Tensor] = {}

    def agreement(self) -> Optional[float]:
        n = sum(self.agree_n.values())
        return sum(self.agree_sum.values()) / n if n else None

    def per_layer(self) -> Dict[int, float]:
        return {i: self.agree_sum[i] / self.agree_n[i] for i in sorted(self.agree_n)}


class CausalLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.model = Decoder(cfg)
        self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(
            cfg.hidden_size, cfg.vocab_size, bias=False)

    # ---- construction -------------------------------------------------------------------

    def moe_layers(self) -> List[int]:
        return [i for i in range(self.cfg.num_hidden_layers) if self.cfg.is_moe(i)]

    def add_pregates(self) -> None:
        """Gives each MoE layer but the last a pre-gate for the next layer, initialised from
        that layer's router (the paper's conversion). Needs consecutive MoE layers."""
        moe = self.moe_layers()
        for a, b in zip(moe, moe[1:]):
            if b != a + 1:
                raise ValueError(f"pre-gates need consecutive MoE layers; {a} and {b} are not")
            mlp = self.model.layers[a].mlp
            nxt = self.model.layers[b].mlp
            mlp.pregate = nn.Linear(self.cfg.hidden_size, self.cfg.num_experts, bias=False).to(
                nxt.gate.weight.device)
            with torch.no_grad():
                mlp.pregate.weight.copy_(nxt.gate.weight)

    def has_pregates(self) -> bool:
        return any(getattr(l.mlp, "pregate", None) is not None for l in self.model.layers)

    def init_weights(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        resid = 0.02 / math.sqrt(2 * self.cfg.num_hidden_layers)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
                continue
            std = resid if ("o_proj" in name or "down_proj" in name) else 0.02
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * std)

    # ---- forward ------------------------------------------------------------------------

    def forward(self, ids: torch.Tensor, routing: str = "own", collect: bool = False,
                dropout: float = 0.0) -> Tuple[torch.Tensor, RoutingStats]:
        """ids [B, T] -> logits [B, T, V] and routing statistics (aux losses always; agreement
        and expert counts when collect)."""
        if routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {routing!r}")
        if routing == "pregate" and not self.has_pregates():
            raise ValueError("routing='pregate' needs a model with pre-gates")
        cfg = self.cfg
        b, t = ids.shape
        x = self.model.embed_tokens(ids)
        cos, sin = rope_cos_sin(cfg, torch.arange(t, device=ids.device), x.dtype)
        stats = RoutingStats()
        prediction: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None
        for i, layer in enumerate(self.model.layers):
            a = layer.self_attn(layer.input_layernorm(x), cos, sin)
            x = x + (F.dropout(a, dropout, self.training) if dropout else a)
            h = layer.post_attention_layernorm(x)
            mlp = layer.mlp
            if not isinstance(mlp, SparseMoe):
                y = mlp(h)
                prediction = None
            else:
                hf = h.reshape(-1, cfg.hidden_size)
                k = cfg.num_experts_per_tok
                own_needed = prediction is None or routing == "own" or collect
                own = route(mlp.gate(hf), k, cfg.norm_topk_prob) if own_needed else None
                chosen = own if (prediction is None or routing == "own") else prediction
                if collect and prediction is not None and own is not None:
                    hit = (prediction[0][:, :, None] == own[0][:, None, :]).any(-1).float()
                    stats.agree_sum[i] = stats.agree_sum.get(i, 0.0) + hit.mean(-1).sum().item()
                    stats.agree_n[i] = stats.agree_n.get(i, 0) + hit.shape[0]
                sel, w, probs = chosen
                if collect:
                    stats.counts[i] = torch.bincount(sel.reshape(-1), minlength=cfg.num_experts)
                # Switch-style load balancing on the routing that was used.
                frac = torch.zeros(cfg.num_experts, device=hf.device).scatter_add(
                    0, sel.reshape(-1), torch.ones(sel.numel(), device=hf.device)) / sel.numel()
                stats.aux.append(cfg.num_experts * (frac * probs.mean(0)).sum())
                y = mlp(hf, sel, w.to(hf.dtype)).view(b, t, -1)
                prediction = self._predict(i, hf, routing, collect)
            x = x + (F.dropout(y, dropout, self.training) if dropout else y)
        x = self.model.norm(x)
        head = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(x, head), stats

    def _predict(self, i: int, hf: torch.Tensor, routing: str, collect: bool):
        """The routing of layer i+1 as predicted from layer i's MoE input (None when not needed)."""
        if i + 1 >= self.cfg.num_hidden_layers or not self.cfg.is_moe(i + 1):
            return None
        if routing == "own" and not collect:
            return None
        mlp = self.model.layers[i].mlp
        use_pregate = routing == "pregate" or (routing == "own" and mlp.pregate is not None)
        weight = mlp.pregate.weight if use_pregate else self.model.layers[i + 1].mlp.gate.weight
        return route(F.linear(hf, weight), self.cfg.num_experts_per_tok, self.cfg.norm_topk_prob)


def param_counts(model: CausalLM) -> Dict[str, int]:
    """Total parameters, and those a token uses (active: top-k experts, no unused routers)."""
    cfg = model.cfg
    total = sum(p.numel() for p in model.parameters())
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    moe = len(model.moe_layers())
    active_experts = experts * cfg.num_experts_per_tok // cfg.num_experts if moe else 0
    return {"total": total, "experts": experts, "active": total - experts + active_experts}


# ---- HF tensor names ------------------------------------------------------------------------

EXPERT_PARAMS = ("gate_proj", "up_proj", "down_proj")


def hf_state_dict(model: CausalLM, dtype: torch.dtype = torch.bfloat16) -> Dict[str, torch.Tensor]:
    """Tensors under HF's names (per-expert `mlp.experts.{e}.gate_proj.weight`, pre-gates as
    `mlp.pregate.weight`), in dtype, on the CPU."""
    out: Dict[str, torch.Tensor] = {}
    for name, p in model.state_dict().items():
        t = p.detach().to("cpu", dtype).contiguous()
        stem, _, leaf = name.rpartition(".")
        if stem.endswith(".experts") and leaf in EXPERT_PARAMS:
            for e in range(t.shape[0]):
                out[f"{stem}.{e}.{leaf}.weight"] = t[e].clone()
        else:
            out[name] = t
    return out


def load_hf_state_dict(model: CausalLM, tensors: Dict[str, torch.Tensor]) -> None:
    """Loads HF-named tensors (strict: every parameter present, nothing left over)."""
    own = model.state_dict()
    used = set()
    new: Dict[str, torch.Tensor] = {}
    for name, p in own.items():
        stem, _, leaf = name.rpartition(".")
        if stem.endswith(".experts") and leaf in EXPERT_PARAMS:
            parts = []
            for e in range(p.shape[0]):
                key = f"{stem}.{e}.{leaf}.weight"
                if key not in tensors:
                    raise KeyError(f"missing tensor {key}")
                parts.append(tensors[key])
                used.add(key)
            new[name] = torch.stack(parts)
        else:
            if name not in tensors:
                raise KeyError(f"missing tensor {name}")
            new[name] = tensors[name]
            used.add(name)
        if tuple(new[name].shape) != tuple(p.shape):
            raise ValueError(f"{name}: shape {tuple(new[name].shape)}, expected {tuple(p.shape)}")
    extra = sorted(set(tensors) - used)
    if extra:
        raise KeyError(f"unexpected tensors: {extra[:5]}{'...' if len(extra) > 5 else ''}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in new.items()})


def build_from_tensors(cfg: ModelConfig, tensors: Dict[str, torch.Tensor]) -> CausalLM:
    """A model for cfg with pre-gates when the tensors carry them, loaded from tensors."""
    model = CausalLM(cfg)
    if any(k.endswith(".mlp.pregate.weight") for k in tensors):
        model.add_pregates()
    load_hf_state_dict(model, tensors)
    return model


def config_json_text(cfg: ModelConfig, dtype: str = "bfloat16") -> str:
    return json.dumps(cfg.to_hf(dtype), indent=2, sort_keys=True) + "\n"
