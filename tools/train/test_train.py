#!/usr/bin/env python3
"""Tests of tools/train (CPU, a few seconds): `/usr/bin/python3 tools/train/test_train.py`.

Needs torch (Debian's python3-torch works) and numpy; not transformers or tokenizers.
"""
import json
import math
import os
import sys
import tempfile
import unittest

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import Batches, perplexity, windows  # noqa: E402
from model import CausalLM, ModelConfig, build_from_tensors, hf_state_dict, route  # noqa: E402
from prepare_data import detokenize  # noqa: E402
from st_io import load_file, save_file  # noqa: E402
from train_tokenizer import ByteEncoder, byte_tokenizer_json  # noqa: E402

FIXTURE = os.path.join(HERE, "..", "..", "tests", "fixtures", "hf", "qwen3_moe")


def read_json(path: str):
    with open(path) as f:
        return json.load(f)


def tiny(layers: int = 3, **kw) -> CausalLM:
    cfg = ModelConfig(vocab_size=97, hidden_size=32, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=4,
                      num_experts_per_tok=2, moe_intermediate_size=24, intermediate_size=48, **kw)
    model = CausalLM(cfg)
    model.init_weights(7)
    with torch.no_grad():  # larger weights than the init so routing and norms matter
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.3 if "norm" in name else 0.2))
    return model.eval()


class HfParity(unittest.TestCase):
    def test_matches_transformers_reference_logits(self):
        """tests/fixtures/hf/qwen3_moe: written and evaluated by transformers 5.17 (tied
        embeddings, a dense layer from mlp_only_layers, head_dim != hidden / heads)."""
        cfg = ModelConfig.from_hf(read_json(os.path.join(FIXTURE, "config.json")))
        model = build_from_tensors(cfg, load_file(os.path.join(FIXTURE, "model.safetensors")))
        ref = read_json(os.path.join(FIXTURE, "reference.json"))
        with torch.no_grad():
            logits, _ = model.eval()(torch.tensor([ref["ids"]]))
        diff = (logits[0] - torch.tensor(ref["logits"])).abs().max().item()
        self.assertLess(diff, 1e-4)


class Experts(unittest.TestCase):
    def test_stacked_experts_equal_the_per_expert_loop(self):
        model = tiny()
        moe = model.model.layers[0].mlp
        x = torch.randn(11, 32)
        ids, w, _ = route(moe.gate(x), 2, True)
        got = moe(x, ids, w)
        want = torch.zeros_like(x)
        ex = moe.experts
        for n in range(x.shape[0]):
            for j in range(2):
                e = int(ids[n, j])
                h = F.silu(x[n] @ ex.gate_proj[e].T) * (x[n] @ ex.up_proj[e].T)
                want[n] += w[n, j] * (h @ ex.down_proj[e].T)
        self.assertLess((got - want).abs().max().item(), 1e-5)
        self.assertGreater(want.abs().max().item(), 1e-2)

    def test_router_renormalises_top_k(self):
        ids, w, probs = route(torch.tensor([[0.0, 1.0, 2.0, 3.0]]), 2, True)
        self.assertEqual(ids.tolist(), [[3, 2]])
        self.assertAlmostEqual(w.sum().item(), 1.0, places=6)
        _, w2, _ = route(torch.tensor([[0.0, 1.0, 2.0, 3.0]]), 2, False)
        self.assertAlmostEqual(w2[0, 0].item(), probs[0, 3].item(), places=6)


class Pregates(unittest.TestCase):
    def test_fresh_pregates_equal_next_router_and_training_leaves_later_gates_alone(self):
        model = tiny()
        ids = torch.randint(0, 97, (2, 9))
        with torch.no_grad():
            own, _ = model(ids, routing="own")
            nxt, _ = model(ids, routing="next_router")
        self.assertGreater((own - nxt).abs().max().item(), 1e-4, "routing must matter here")
        model.add_pregates()
        with torch.no_grad():
            pre, stats = model(ids, routing="pregate", collect=True)
        self.assertLess((pre - nxt).abs().max().item(), 1e-6)
        self.assertEqual(sorted(stats.agree_n), [1, 2])
        model.train()
        logits, _ = model(ids, routing="pregate")
        logits.sum().backward()
        layers = model.model.layers
        self.assertIsNotNone(layers[0].mlp.gate.weight.grad)
        self.assertIsNone(layers[1].mlp.gate.weight.grad)
        self.assertIsNone(layers[2].mlp.gate.weight.grad)
        self.assertIsNotNone(layers[0].mlp.pregate.weight.grad)
        self.assertIsNone(layers[2].mlp.pregate)

    def test_saved_names_and_round_trip(self):
        model = tiny()
        model.add_pregates()
        tensors = hf_state_dict(model)
        self.assertIn("model.layers.1.mlp.experts.3.down_proj.weight", tensors)
        self.assertEqual(list(tensors["model.layers.0.mlp.pregate.weight"].shape), [4, 32])
        self.assertNotIn("model.layers.2.mlp.pregate.weight", tensors)
        self.assertEqual(tensors["lm_head.weight"].dtype, torch.bfloat16)
        with tempfile.TemporaryDirectory() as d:
            save_file(os.path.join(d, "m.safetensors"), tensors)
            back = load_file(os.path.join(d, "m.safetensors"))
        self.assertEqual(set(back), set(tensors))
        for k in tensors:
            self.assertTrue(torch.equal(back[k], tensors[k]), k)
        again = build_from_tensors(model.cfg, {k: v.float() for k, v in back.items()})
        self.assertTrue(again.has_pregates())
        ids = torch.randint(0, 97, (1, 7))
        with torch.no_grad():
            a, _ = again.eval()(ids, routing="pregate")
            b, _ = model(ids, routing="pregate")
        self.assertLess((a - b).abs().max().item(), 0.1)  # bf16 rounding only

    def test_dense_config(self):
        model = tiny(mlp_only_layers=[0, 1, 2])
        self.assertEqual(model.moe_layers(), [])
        self.assertFalse(any(".experts." in k for k in hf_state_dict(model)))
        self.assertIn("model.layers.2.mlp.gate_proj.weight", hf_state_dict(model))


class Protocol(unittest.TestCase):
    def test_windows(self):
        self.assertEqual([w.numel() for w in windows(torch.arange(514))], [256, 256, 2])
        self.assertEqual([w.numel() for w in windows(torch.arange(513))], [256, 256])

    def test_perplexity_is_the_float64_mean_over_windows(self):
        model = tiny()
        tokens = torch.randint(0, 97, (300,))
        got = perplexity(model, tokens, "own", "cpu", batch=4)
        nll, n = 0.0, 0
        for w in (tokens[:256], tokens[256:]):
            with torch.no_grad():
                lo, _ = model(w[None])
            lp = torch.log_softmax(lo[0, :-1].double(), -1)
            nll -= lp[torch.arange(w.numel() - 1), w[1:]].sum().item()
            n += w.numel() - 1
        self.assertEqual(got["tokens_predicted"], n)
        self.assertAlmostEqual(got["ppl"], math.exp(nll / n), places=9)
        self.assertIsNotNone(got["agreement"])

    def test_batches_depend_only_on_the_seed(self):
        tokens = torch.arange(5000)
        a = Batches(tokens, 4, 16, 3, "cpu")
        b = Batches(tokens, 4, 16, 3, "cpu")
        for _ in range(100):
            x, y = a.next(), b.next()
            self.assertTrue(torch.equal(x, y))
            self.assertTrue(torch.equal(x[:, 1:] - x[:, :-1], torch.ones(4, 16, dtype=x.dtype)))

    def test_an_epoch_visits_each_chunk_once(self):
        tokens = torch.arange(1000)
        b = Batches(tokens, 4, 16, 3, "cpu")
        firsts = [int(v) for _ in range(16) for v in b.next()[:, 0]]
        per_epoch = (1000 - firsts[0] % 16 - 1) // 16
        self.assertEqual(len(set(firsts[:per_epoch])), per_epoch)
        self.assertEqual({v % 16 for v in firsts[:per_epoch]}, {firsts[0] % 16})
        self.assertEqual(b.epoch, 2)  # 64 draws: the second epoch has begun


class Data(unittest.TestCase):
    def test_brown_detokenizer(self):
        words = ["``", "Only", "a", "handful", "''", ",", "the", "jury", "said", ";", ";", "(",
                 "see", "'", "Met", "'", ")", "--", "yes", "?", "?"]
        self.assertEqual(detokenize(words),
                         "\"Only a handful\", the jury said; (see 'Met') -- yes?")

    def test_byte_tokenizer(self):
        enc = ByteEncoder()
        self.assertEqual(enc.encode("a<|im_end|>é"), [3 + 97, 2, 3 + 0xC3, 3 + 0xA9])
        vocab = byte_tokenizer_json()["model"]["vocab"]
        self.assertEqual(len(vocab), 259)
        self.assertEqual(vocab["Ġ"], 3 + 32)  # the ByteLevel character of a space


if __name__ == "__main__":
    unittest.main(verbosity=1)
