#!/usr/bin/env python3
"""Trains the models of the Pre-gated MoE recipe (tools/train/README.md).

  pretrain   the conventional MoE from scratch for --steps steps
  finetune   from --init (a pretrain directory): the conventional twin, or with --pregated the
             pre-gated form (layer 0 keeps its router and gets a pre-gate for layer 1; layer i's
             pre-gate, initialised from layer i+1's router, selects and weights layer i+1's
             experts from layer i's MoE input; the last layer has none)
  dense      a dense qwen3_moe (mlp_only_layers = every layer, intermediate_size = top_k *
             moe_intermediate_size) from scratch

Every stage writes an HF directory (bf16 model.safetensors, config.json, tokenizer files),
checkpoint.pt (float32) and train_info.json.

Example:
    python3 tools/train/train.py pretrain --tok .train/run/tokenizer --out .train/run/base --steps 3000
    python3 tools/train/train.py finetune --tok .train/run/tokenizer --init .train/run/base \\
        --out .train/run/c --steps 1000 --pregated
"""
import argparse
import json
import os
import time

import torch

from common import Batches, autocast_ctx, load_checkpoint, load_tokens, log, lr_at, perplexity, pick_device, \
    save_model_dir
from model import CausalLM, ModelConfig, param_counts


def model_config(args: argparse.Namespace, vocab: int, dense: bool) -> ModelConfig:
    cfg = ModelConfig(
        vocab_size=vocab,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        head_dim=args.head_dim,
        num_experts=args.experts,
        num_experts_per_tok=args.top_k,
        moe_intermediate_size=args.moe_inter,
        intermediate_size=args.top_k * args.moe_inter,
        norm_topk_prob=True,
        rope_theta=args.rope_theta,
        max_position_embeddings=args.ctx,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    if dense:
        cfg.mlp_only_layers = list(range(args.layers))
    return cfg


def make_optimizer(model: CausalLM, lr: float, wd: float, device: str) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs = {"lr": lr, "betas": (0.9, 0.95), "eps": 1e-8}
    if device == "cuda":
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (TypeError, RuntimeError):
            pass
    return torch.optim.AdamW(groups, **kwargs)


def train_loop(stage: str, model: CausalLM, args: argparse.Namespace, routing: str,
               device: str) -> dict:
    """Runs args.steps optimizer steps; returns what the stage's train_info records."""
    tokens = load_tokens(os.path.join(args.tok, "train.u16"))
    heldout = load_tokens(os.path.join(args.tok, "heldout.u16"))
    batches = Batches(tokens, args.batch, args.ctx, args.seed, device)
    opt = make_optimizer(model, args.lr, args.weight_decay, device)
    t0 = time.time()
    history = []
    model.train()
    for step in range(args.steps):
        lr = lr_at(step, args.steps, args.lr, args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = batches.next()
        with autocast_ctx(device):
            logits, stats = model(batch[:, :-1], routing=routing, dropout=args.dropout)
        loss = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        aux = torch.stack(stats.aux).mean() if stats.aux else torch.zeros((), device=device)
        opt.zero_grad(set_to_none=True)
        (loss + args.aux_coef * aux).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        last = step + 1 == args.steps
        if (step + 1) % args.log_every == 0 or last or step == 0:
            dt = time.time() - t0
            tok_s = (step + 1) * args.batch * args.ctx / max(dt, 1e-9)
            msg = (f"step {step + 1}/{args.steps} loss {loss.item():.4f} aux {aux.item():.3f} "
                   f"lr {lr:.2e} epoch {batches.epoch} {tok_s / 1e3:.1f}k tok/s")
            entry = {"step": step + 1, "loss": round(loss.item(), 5), "aux": round(aux.item(), 5),
                     "seconds": round(dt, 2)}
            if args.eval_every and ((step + 1) % args.eval_every == 0 or last):
                ev = perplexity(model, heldout, routing, device, max_windows=args.eval_windows,
                                amp=True)
                model.train()
                entry["heldout_ppl"] = round(ev["ppl"], 4)
                msg += f" | heldout ppl {ev['ppl']:.3f}"
                if ev["agreement"] is not None:
                    entry["agreement"] = round(ev["agreement"], 4)
                    msg += f" agree {ev['agreement']:.3f}"
            history.append(entry)
            log(stage, msg)
    return {"steps": args.steps, "seconds": round(time.time() - t0, 2), "history": history,
            "epochs": batches.epoch, "final_loss": history[-1]["loss"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("stage", choices=["pretrain", "finetune", "dense"])
    ap.add_argument("--tok", required=True, help="tokenizer directory (train_tokenizer.py)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--init", help="finetune: the pretrain directory")
    ap.add_argument("--pregated", action="store_true", help="finetune: the pre-gated form")
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate "
                    "(default 2e-3 from scratch, 3e-4 fine-tuning)")
    ap.add_argument("--warmup", type=int, default=None, help="warmup steps (default steps/20)")
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.1, help="residual dropout (training only)")
    ap.add_argument("--aux-coef", type=float, default=0.01, help="load-balancing loss weight")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--moe-inter", type=int, default=128)
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=500, help="heldout ppl every N steps (0: off)")
    ap.add_argument("--eval-windows", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    stage = args.stage if not (args.stage == "finetune") else (
        "finetune-c" if args.pregated else "finetune-a")
    if args.lr is None:
        args.lr = 3e-4 if args.stage == "finetune" else 2e-3
    if args.warmup is None:
        args.warmup = max(1, args.steps // 20)
    with open(os.path.join(args.tok, "tokens.json")) as f:
        vocab = json.load(f)["vocab_size"]

    torch.manual_seed(args.seed)
    if args.stage == "finetune":
        if not args.init:
            raise SystemExit("finetune needs --init (the pretrain directory)")
        model = load_checkpoint(os.path.join(args.init, "checkpoint.pt"), "cpu")
        if args.pregated:
            model.add_pregates()
        routing = "pregate" if args.pregated else "own"
    else:
        model = CausalLM(model_config(args, vocab, dense=args.stage == "dense"))
        model.init_weights(args.seed)
        routing = "own"
    model = model.to(device)
    counts = param_counts(model)
    log(stage, f"device {device}, params {counts}, routing {routing}, steps {args.steps}, "
               f"batch {args.batch}x{args.ctx}, lr {args.lr}, seed {args.seed}")
    info = train_loop(stage, model, args, routing, device)
    info.update({"stage": stage, "routing": routing, "seed": args.seed, "batch": args.batch,
                 "ctx": args.ctx, "lr": args.lr, "warmup": args.warmup, "dropout": args.dropout,
                 "aux_coef": args.aux_coef, "weight_decay": args.weight_decay,
                 "init": args.init, "device": device, "params": counts,
                 "torch": torch.__version__})
    shas = save_model_dir(args.out, model, args.tok, info)
    log(stage, f"saved {args.out} ({info['seconds']}s training; model.safetensors "
               f"{shas['model.safetensors'][:12]})")


if __name__ == "__main__":
    main()
