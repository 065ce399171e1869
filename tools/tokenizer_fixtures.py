#!/usr/bin/env python3
"""Train small tokenizers of each family Pregate's models use and record HF's ids for them.

Hugging Face's own ``tokenizers`` library trains, on the corpus shipped beside this script
(``tokenizer_fixtures_corpus.txt``), one small tokenizer per family, built the way the hub's
tokenizer.json files of the supported models are:

  qwen2    byte-level BPE as Qwen2/Qwen3(-MoE): NFC, the Qwen2 split regex, ByteLevel without its own
           regex, ChatML special tokens, and a tokenizer_config.json with Qwen's ChatML chat template
  olmoe    byte-level BPE as GPT-NeoX / OLMoE: NFC, ByteLevel with the GPT-2 regex
  llama    SentencePiece-style BPE as Llama/Mistral converted with legacy=false: Metaspace
           (prepend_scheme first, no split), <0x00>..<0xFF> byte-fallback tokens, fuse_unk, decoder
           Replace/ByteFallback/Fuse/Strip, <s> prepended by the post-processor; a chat template
           in Mixtral's [INST] form that uses bos_token/eos_token
  mixtral  the same model in the legacy form Mixtral-8x7B's tokenizer.json has: Prepend("▁") and
           Replace(" ", "▁") normalizers, no pre-tokenizer
  t5       Unigram as T5/Switch: NFKC + collapsed space runs, WhitespaceSplit + Metaspace, </s>
           appended by the post-processor, <extra_id_N> sentinels

Each goes to ``<out>/<family>/`` as tokenizer.json, tokenizer_config.json and expected.json: for a
varied text set (unicode, emoji with ZWJ sequences, digits and long numbers, runs of spaces, tabs
and newlines, leading/trailing spaces, special tokens inside text, the empty string) the ids and
tokens with and without special tokens, both decodings (special tokens kept and skipped), the
chunks ``tokenizers.decoders.DecodeStream`` yields token by token, and decodings of every prefix of
the ids of a few texts (partial UTF-8). The qwen2 and llama expected.json also hold chat template
renderings (as transformers renders them) and their ids.

Usage (no network needed):
    python3 tools/tokenizer_fixtures.py --out tests/fixtures/tokenizers

Needs ``tokenizers`` (written against 0.23.2); ``transformers`` (5.x) or ``jinja2`` for the chat
renderings. Deterministic: the same versions write the same files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import unicodedata
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import tokenizers  # noqa: E402
from tokenizers import (  # noqa: E402
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

FAMILIES = ["qwen2", "olmoe", "llama", "mixtral", "t5"]
CORPUS = Path(__file__).with_name("tokenizer_fixtures_corpus.txt")

# Qwen2's pre-tokenizer split pattern, as in its tokenizer.json.
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

MIXTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
    "{% endif %}{% endfor %}"
)

CHATS = [
    [{"role": "user", "content": "Hello! Who are you?"}],
    [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "What is a mixture of experts?"},
        {"role": "assistant", "content": "A model that routes each token to a few sub-networks."},
        {"role": "user", "content": "Why pre-gate?\nTo hide the copy time. 😀"},
    ],
]
MIXTRAL_CHATS = [
    [{"role": "user", "content": "Hello! Who are you?"}],
    [
        {"role": "user", "content": "What is a mixture of experts?"},
        {"role": "assistant", "content": "A model that routes each token to a few sub-networks."},
        {"role": "user", "content": "Why pre-gate? Café, 中文, 😀."},
    ],
]

# The texts every family encodes. Special tokens of every family appear in some of them: a family
# that lacks one sees it as plain text.
TEXTS = [
    "",
    "Hello world",
    "Hello, world! How are you doing today?",
    "The lighthouse keeper counted one hundred and twelve steps.",
    " leading space",
    "trailing space ",
    "   three leading spaces and two trailing  ",
    "multiple   spaces    between     words",
    "tabs\tand\t\tdouble tabs\t",
    "line one\nline two\n\nline four after a blank line\n",
    "\n\n\nleading newlines",
    "windows\r\nline endings\r\n",
    "mixed \t \n whitespace \n\t ",
    " ",
    "  ",
    "\n",
    "\t",
    "a",
    "Numbers: 0 7 42 123 2024 3.14159 -17 1,000,000 and 12345678901234567890",
    "phone 555-0199, version v1.2.3, 50% off, $9.99, 1e-9, 0x1F",
    "Café, naïve, résumé, jalapeño, Ångström, Straße, Œuvre, façade, São Paulo",
    "combining: e\u0301 a\u0308 n\u0303 and precomposed: é ä ñ",
    "ligature \ufb01 and fullwidth ＡＢＣ１２３ and ① ㎏",
    "Ελληνικά κείμενα και русский текст",
    "中文测试：你好，世界！",
    "日本語のテキストとカタカナ、ひらがな。",
    "한국어 텍스트입니다",
    "مرحبا بالعالم، هذا نص عربي",
    "עברית ועוד हिन्दी ภาษาไทย",
    "emoji: 😀 🎉 👍🏽 ❤️ 🔥",
    "ZWJ: 👨\u200d👩\u200d👧\u200d👦 🏳️\u200d🌈 🧑🏿\u200d💻",
    "flags 🇫🇷🇯🇵 and keycap 1️⃣ and 😀😀😀",
    "math: x² + y² = z², ∑ aᵢ, √2 ≈ 1.414, ∞",
    "code:\ndef f(x):\n    return x**2  # square\n\tindented with a tab\n",
    "don't won't I'm you're they've we'll she'd DON'T I'LL",
    "ALL CAPS AND MiXeD cAsE",
    "URLs like https://example.com/path?q=1&r=2#top and someone@example.org",
    "punctuation!!! ... ??? ;;; --- *** (((nested))) [x] {y}",
    "\u00a0non-breaking\u00a0space, zero\u200bwidth, and soft\u00adhyphen",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "text with <s> and </s> inside",
    "<s>starts with bos",
    "a<|endoftext|>b and <pad> and <unk>",
    "<extra_id_0> sentinel <extra_id_1>",
]

# Texts whose every id prefix is also decoded (partial characters at the end).
PREFIX_TEXTS = [
    "中文测试：你好，世界！",
    "ZWJ: 👨\u200d👩\u200d👧\u200d👦 🏳️\u200d🌈 🧑🏿\u200d💻",
    "Café, naïve, résumé, jalapeño, Ångström, Straße, Œuvre, façade, São Paulo",
]


def log(msg: str) -> None:
    print(msg, flush=True)


def corpus_lines() -> list[str]:
    text = CORPUS.read_text(encoding="utf-8")
    return [line for line in text.split("\n") if line.strip()]


def special(content: str) -> AddedToken:
    return AddedToken(content, special=True, normalized=False)


# ---------------------------------------------------------------------------------------------
# Families


def train_qwen2(lines: list[str]) -> tuple[Tokenizer, dict]:
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(
        add_prefix_space=False, trim_offsets=False, use_regex=False
    )
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(lines, trainer)
    # Qwen's special tokens come after the learned vocabulary.
    tok.add_special_tokens([special("<|endoftext|>"), special("<|im_start|>"), special("<|im_end|>")])
    config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": QWEN_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    return tok, config


def train_olmoe(lines: list[str]) -> tuple[Tokenizer, dict]:
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(
        add_prefix_space=False, trim_offsets=True, use_regex=True
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=800,
        min_frequency=2,
        show_progress=False,
        special_tokens=[special("<|endoftext|>"), special("<|padding|>")],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(lines, trainer)
    config = {
        "add_bos_token": False,
        "add_eos_token": False,
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "model_max_length": 4096,
        "pad_token": "<|padding|>",
        "tokenizer_class": "GPTNeoXTokenizer",
        "unk_token": None,
    }
    return tok, config


LLAMA_SPECIALS = ["<unk>", "<s>", "</s>"]
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]


def train_llama(lines: list[str]) -> tuple[Tokenizer, dict]:
    """BPE trained on words that start with ▁ (as SentencePiece does), then laid out as Llama's
    vocabulary is: <unk> <s> </s>, the 256 byte tokens, the learned pieces."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        min_frequency=2,
        show_progress=False,
        special_tokens=[special(t) for t in LLAMA_SPECIALS],
        # Rare characters (CJK, emoji, most accents) stay out of the vocabulary: byte fallback.
        limit_alphabet=72,
    )
    tok.train_from_iterator(lines, trainer)
    data = json.loads(tok.to_str())
    learned = sorted(data["model"]["vocab"].items(), key=lambda kv: kv[1])
    pieces = [t for t, _ in learned if t not in LLAMA_SPECIALS and t not in BYTE_TOKENS]
    layout = LLAMA_SPECIALS + BYTE_TOKENS + pieces
    data["model"]["vocab"] = {t: i for i, t in enumerate(layout)}
    for added in data["added_tokens"]:
        added["id"] = layout.index(added["content"])
    tok = Tokenizer.from_str(json.dumps(data))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = llama_decoder()
    tok.post_processor = llama_post_processor()
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "chat_template": MIXTRAL_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "legacy": False,
        "model_max_length": 32768,
        "pad_token": None,
        "spaces_between_special_tokens": False,
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
    }
    return tok, config


def llama_decoder():
    return decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(content=" ", left=1, right=0),
        ]
    )


def llama_post_processor():
    return processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )


def mixtral_from_llama(llama: Tokenizer) -> tuple[Tokenizer, dict]:
    """The llama model in the legacy layout of Mixtral-8x7B's tokenizer.json."""
    tok = Tokenizer.from_str(llama.to_str())
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = None
    tok.decoder = llama_decoder()
    tok.post_processor = llama_post_processor()
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "legacy": True,
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": None,
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
    }
    return tok, config


T5_SPECIALS = ["<pad>", "</s>", "<unk>"]
T5_EXTRA_IDS = 3


def train_t5(lines: list[str]) -> tuple[Tokenizer, dict]:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.UnigramTrainer(
        vocab_size=600,
        show_progress=False,
        special_tokens=[special(t) for t in T5_SPECIALS],
        unk_token="<unk>",
        max_piece_length=12,
    )
    tok.train_from_iterator(lines, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))]
    )
    extra = [f"<extra_id_{i}>" for i in range(T5_EXTRA_IDS)]
    tok.add_special_tokens([special(t) for t in extra])
    config = {
        "additional_special_tokens": extra,
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "extra_ids": T5_EXTRA_IDS,
        "model_max_length": 512,
        "pad_token": "<pad>",
        "tokenizer_class": "T5Tokenizer",
        "unk_token": "<unk>",
    }
    return tok, config


# ---------------------------------------------------------------------------------------------
# Reference data


def stream_chunks(tok: Tokenizer, ids: list[int], skip_special_tokens: bool) -> list[str | None]:
    stream = decoders.DecodeStream(skip_special_tokens=skip_special_tokens)
    return [stream.step(tok, i) for i in ids]


def encode_case(tok: Tokenizer, text: str) -> dict:
    plain = tok.encode(text, add_special_tokens=False)
    full = tok.encode(text, add_special_tokens=True)
    return {
        "text": text,
        "ids": plain.ids,
        "tokens": plain.tokens,
        "ids_with_special": full.ids,
        "decoded": tok.decode(plain.ids, skip_special_tokens=False),
        "decoded_with_special": tok.decode(full.ids, skip_special_tokens=False),
        "decoded_skip_special": tok.decode(full.ids, skip_special_tokens=True),
        "stream": stream_chunks(tok, plain.ids, False),
    }


def prefix_case(tok: Tokenizer, text: str) -> dict:
    ids = tok.encode(text, add_special_tokens=False).ids
    return {
        "text": text,
        "ids": ids,
        "decoded_prefixes": [tok.decode(ids[:n], skip_special_tokens=False) for n in range(1, len(ids) + 1)],
    }


def render_chat(template: str, messages: list[dict], config: dict, add_generation_prompt: bool) -> tuple[str, str]:
    """Renders as transformers' apply_chat_template does; returns (text, renderer)."""
    special_tokens = {
        k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token") if config.get(k) is not None
    }
    try:
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, _ = render_jinja_template(
            conversations=[messages],
            chat_template=template,
            add_generation_prompt=add_generation_prompt,
            **special_tokens,
        )
        return rendered[0], "transformers.render_jinja_template"
    except Exception as e:  # noqa: BLE001 - fall back to the same jinja2 environment
        log(f"  note: transformers' renderer unavailable ({type(e).__name__}: {e}); using jinja2")
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    text = env.from_string(template).render(
        messages=messages, add_generation_prompt=add_generation_prompt, **special_tokens
    )
    return text, "jinja2 (transformers' settings)"


def chat_cases(tok: Tokenizer, config: dict, chats: list[list[dict]]) -> list[dict]:
    out = []
    for messages in chats:
        for add_generation_prompt in (True, False):
            text, renderer = render_chat(config["chat_template"], messages, config, add_generation_prompt)
            out.append(
                {
                    "messages": messages,
                    "add_generation_prompt": add_generation_prompt,
                    "text": text,
                    "ids": tok.encode(text, add_special_tokens=False).ids,
                    "renderer": renderer,
                }
            )
    return out


def special_ids(tok: Tokenizer, config: dict) -> dict:
    out = {}
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        if config.get(key) is not None:
            out[key] = {"content": config[key], "id": tok.token_to_id(config[key])}
    return out


def write_family(out: Path, name: str, tok: Tokenizer, config: dict, chats: list[list[dict]] | None) -> dict:
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    tok.save(str(d / "tokenizer.json"), pretty=True)
    (d / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    # Everything below is computed from the file as saved, as a user of it would load it.
    saved = Tokenizer.from_file(str(d / "tokenizer.json"))
    cases = [encode_case(saved, t) for t in TEXTS]
    expected = {
        "family": name,
        "tokenizers_version": tokenizers.__version__,
        "vocab_size": saved.get_vocab_size(with_added_tokens=True),
        "special": special_ids(saved, config),
        "cases": cases,
        "prefix_cases": [prefix_case(saved, t) for t in PREFIX_TEXTS],
        "chat": chat_cases(saved, config, chats) if chats else [],
    }
    (d / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return {
        "vocab": expected["vocab_size"],
        "cases": len(cases),
        "tokens": sum(len(c["ids"]) for c in cases),
        "byte_fallback_tokens": sum(1 for c in cases for t in c["tokens"] if t in BYTE_TOKENS),
        "unk": sum(1 for c in cases for t in c["tokens"] if t == "<unk>"),
        "chat": len(expected["chat"]),
    }


def self_check(out: Path) -> list[str]:
    """The byte-level families are lossless (up to NFC); the llama vocabulary has Llama's layout and
    byte fallback is exercised; the chat renderings are non-empty."""
    problems = []
    for name in ("qwen2", "olmoe"):
        exp = json.loads((out / name / "expected.json").read_text(encoding="utf-8"))
        for c in exp["cases"]:
            want = unicodedata.normalize("NFC", c["text"])
            if c["decoded"] != want:
                problems.append(f"{name}: {c['text']!r} decodes to {c['decoded']!r}")
    llama = json.loads((out / "llama" / "expected.json").read_text(encoding="utf-8"))
    if llama["special"]["bos_token"]["id"] != 1 or llama["special"]["eos_token"]["id"] != 2:
        problems.append(f"llama: special ids {llama['special']}")
    if not any(t in BYTE_TOKENS for c in llama["cases"] for t in c["tokens"]):
        problems.append("llama: no byte-fallback token in any case")
    for name in ("qwen2", "llama"):
        exp = json.loads((out / name / "expected.json").read_text(encoding="utf-8"))
        if not exp["chat"] or not all(c["text"] and c["ids"] for c in exp["chat"]):
            problems.append(f"{name}: missing chat renderings")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/fixtures/tokenizers", help="output root (default %(default)s)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    lines = corpus_lines()
    log(f"tokenizers {tokenizers.__version__}; corpus {CORPUS.name}: {len(lines)} lines")
    qwen2, qwen2_cfg = train_qwen2(lines)
    olmoe, olmoe_cfg = train_olmoe(lines)
    llama, llama_cfg = train_llama(lines)
    mixtral, mixtral_cfg = mixtral_from_llama(llama)
    t5, t5_cfg = train_t5(lines)
    built = {
        "qwen2": (qwen2, qwen2_cfg, CHATS),
        "olmoe": (olmoe, olmoe_cfg, None),
        "llama": (llama, llama_cfg, MIXTRAL_CHATS),
        "mixtral": (mixtral, mixtral_cfg, None),
        "t5": (t5, t5_cfg, None),
    }
    for name in FAMILIES:
        tok, cfg, chats = built[name]
        s = write_family(out, name, tok, cfg, chats)
        log(
            f"{name:8s} vocab {s['vocab']:5d}  {s['cases']} texts, {s['tokens']} tokens, "
            f"{s['byte_fallback_tokens']} byte-fallback, {s['unk']} unk, {s['chat']} chat renderings "
            f"-> {out / name}"
        )
    problems = self_check(out)
    for p in problems:
        log(f"SELF-CHECK FAILED: {p}")
    log("ok" if not problems else f"{len(problems)} self-check failure(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
