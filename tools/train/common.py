"""Shared pieces of tools/train: token files, batches, model directories, the perplexity
protocol, logging.

Example:
    tokens = load_tokens(".train/run/tokenizer/heldout.u16")
    model, cfg = load_model_dir(".train/run/a", "cpu")
    result = perplexity(model, tokens, routing="own", device="cpu")
"""
import contextlib
import json
import math
import os
import shutil
import sys
import time
from typing import Dict, List, Tuple

import numpy as np
import torch

from model import CausalLM, ModelConfig, build_from_tensors, config_json_text, \
    hf_state_dict
from st_io import load_file, save_file, sha256_file

EVAL_WINDOW = 256
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
T_START = float(os.environ.get("PREGATE_TRAIN_T0", time.time()))


def log(stage: str, msg: str) -> None:
    """One progress line with the time since the whole run started."""
    print(f"[{time.time() - T_START:7.1f}s] [{stage}] {msg}", flush=True)


def autocast_ctx(device: str, enabled: bool = True):
    """bf16 autocast on CUDA, nothing elsewhere (torch 1.13 rejects building a disabled one)."""
    if device == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def load_tokens(path: str) -> torch.Tensor:
    return torch.from_numpy(np.fromfile(path, dtype="<u2").astype(np.int64))


def pick_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def exact_float32() -> None:
    """Full float32 matmuls (no TF32) for evaluation: the new fp32_precision API where torch has
    it (torch >= 2.9 raises on some mixes of the new and legacy flags), else the legacy flag.
    cuDNN is left alone: nothing here runs a convolution."""
    matmul = torch.backends.cuda.matmul
    try:
        if matmul.fp32_precision not in ("ieee", "none"):  # "none": the default, full float32
            matmul.fp32_precision = "ieee"
    except (AttributeError, AssertionError):  # torch < 2.9 (1.13 raises AssertionError)
        matmul.allow_tf32 = False


class Batches:
    """Training batches [B, ctx+1] from a token stream: each epoch cuts the stream into
    non-overlapping chunks at a random offset and visits them in a random order. The order
    depends only on the seed, so runs with the same seed see the same data. An epoch's chunk
    starts go to the device once, so drawing a batch never waits for the GPU."""

    def __init__(self, tokens: torch.Tensor, batch: int, ctx: int, seed: int, device: str):
        if tokens.numel() < (ctx + 1) * batch + ctx:
            raise SystemExit(f"only {tokens.numel()} training tokens: too few for batch {batch} "
                             f"x context {ctx}")
        self.tokens = tokens.to(device)
        self.batch, self.ctx = batch, ctx
        self.gen = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self.span = torch.arange(ctx + 1, device=device)[None, :]
        self._starts = torch.zeros(0, dtype=torch.int64, device=device)
        self._pos = 0

    def _epoch_starts(self) -> torch.Tensor:
        offset = int(torch.randint(0, self.ctx, (1,), generator=self.gen))
        n = (self.tokens.numel() - offset - 1) // self.ctx
        order = torch.randperm(n, generator=self.gen)
        self.epoch += 1
        return (offset + order * self.ctx).to(self.tokens.device)

    def next(self) -> torch.Tensor:
        starts = self._starts[self._pos:self._pos + self.batch]
        self._pos += starts.numel()
        while starts.numel() < self.batch:
            self._starts, self._pos = self._epoch_starts(), 0
            more = self._starts[:self.batch - starts.numel()]
            self._pos = more.numel()
            starts = torch.cat([starts, more])
        return self.tokens[starts[:, None] + self.span]


def windows(tokens: torch.Tensor, size: int = EVAL_WINDOW) -> List[torch.Tensor]:
    """Consecutive non-overlapping windows; the last is kept if it has at least 2 tokens."""
    out = [tokens[i:i + size] for i in range(0, tokens.numel(), size)]
    return [w for w in out if w.numel() >= 2]


@torch.no_grad()
def perplexity(model: CausalLM, tokens: torch.Tensor, routing: str, device: str,
               batch: int = 32, max_windows: int = 0, collect: bool = True,
               amp: bool = False, window: int = EVAL_WINDOW) -> Dict[str, object]:
    """The evaluation protocol: each window on its own, loss = mean over positions 1..len-1 of
    -log softmax(logits)[next] in float64, ppl = exp(loss). Also the pre-gate agreement (the
    share of predicted expert ids in the true router's top-k, per token and MoE layer >= 1)."""
    model.eval()
    ws = windows(tokens, window)
    if max_windows:
        ws = ws[:max_windows]
    groups: List[List[torch.Tensor]] = []
    for w in ws:  # batch windows of equal length
        if groups and len(groups[-1]) < batch and groups[-1][0].numel() == w.numel():
            groups[-1].append(w)
        else:
            groups.append([w])
    nll, count = 0.0, 0
    agree_sum: Dict[int, float] = {}
    agree_n: Dict[int, int] = {}
    counts: Dict[int, torch.Tensor] = {}
    for g in groups:
        x = torch.stack(g).to(device)
        with autocast_ctx(device, amp):
            logits, stats = model(x, routing=routing, collect=collect)
        logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
        nll -= logp.gather(-1, x[:, 1:, None]).sum().item()
        count += x.shape[0] * (x.shape[1] - 1)
        for i in stats.agree_n:
            agree_sum[i] = agree_sum.get(i, 0.0) + stats.agree_sum[i]
            agree_n[i] = agree_n.get(i, 0) + stats.agree_n[i]
        for i, c in stats.counts.items():
            counts[i] = counts.get(i, 0) + c.cpu()
    loss = nll / count
    n = sum(agree_n.values())
    return {
        "ppl": math.exp(loss),
        "loss": loss,
        "tokens_predicted": count,
        "windows": len(ws),
        "agreement": (sum(agree_sum.values()) / n) if n else None,
        "agreement_per_layer": {str(i): agree_sum[i] / agree_n[i] for i in sorted(agree_n)},
        "expert_use": {str(i): [int(v) for v in c.tolist()] for i, c in sorted(counts.items())},
    }


def save_model_dir(out: str, model: CausalLM, tok_dir: str, info: Dict[str, object]) -> Dict[str, str]:
    """Writes an HF checkpoint directory (bf16 safetensors, config, generation config, tokenizer
    files) plus checkpoint.pt (float32, for continuing training) and returns sha256 by file."""
    os.makedirs(out, exist_ok=True)
    cfg = model.cfg
    shas = {"model.safetensors": save_file(os.path.join(out, "model.safetensors"),
                                           hf_state_dict(model, torch.bfloat16))}
    with open(os.path.join(out, "config.json"), "w") as f:
        f.write(config_json_text(cfg))
    gen = {"_from_model_config": True, "bos_token_id": cfg.bos_token_id,
           "eos_token_id": cfg.eos_token_id, "pad_token_id": cfg.pad_token_id,
           "transformers_version": "5.17.0", "use_cache": True}
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        f.write(json.dumps(gen, indent=2, sort_keys=True) + "\n")
    for name in TOKENIZER_FILES:
        shutil.copyfile(os.path.join(tok_dir, name), os.path.join(out, name))
    for name in ("config.json", "generation_config.json", *TOKENIZER_FILES):
        shas[name] = sha256_file(os.path.join(out, name))
    torch.save({"config": cfg.__dict__, "state": {k: v.detach().cpu() for k, v in
                                                  model.state_dict().items()},
                "pregates": model.has_pregates()}, os.path.join(out, "checkpoint.pt"))
    with open(os.path.join(out, "train_info.json"), "w") as f:
        json.dump({**info, "sha256": shas}, f, indent=2)
    return shas


def load_checkpoint(path: str, device: str) -> CausalLM:
    """The float32 training checkpoint written beside a model directory."""
    ck = torch.load(path, map_location="cpu")
    model = CausalLM(ModelConfig(**ck["config"]))
    if ck["pregates"]:
        model.add_pregates()
    model.load_state_dict(ck["state"])
    return model.to(device)


def load_model_dir(path: str, device: str, dtype: torch.dtype = torch.float32
                   ) -> Tuple[CausalLM, ModelConfig]:
    """A saved HF directory as saved (bf16 weights), converted to dtype."""
    with open(os.path.join(path, "config.json")) as f:
        cfg = ModelConfig.from_hf(json.load(f))
    tensors = load_file(os.path.join(path, "model.safetensors"))
    model = build_from_tensors(cfg, {k: v.to(dtype) for k, v in tensors.items()})
    return model.to(device).eval(), cfg


def lr_at(step: int, steps: int, lr: float, warmup: int, min_ratio: float = 0.1) -> float:
    """Linear warmup, then cosine decay to min_ratio * lr."""
    if step < warmup:
        return lr * (step + 1) / warmup
    p = (step - warmup) / max(1, steps - warmup)
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def die(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr, flush=True)
    raise SystemExit(1)
