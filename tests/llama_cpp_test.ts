// Cross-check against llama.cpp itself (npm node-llama-cpp 3.21.1, CPU): llama.cpp loads a tiny
// llama-architecture GGUF written by Pregate's writer (F16, Q8_0 and Q4_K matrices, a byte-level
// BPE vocabulary with merges), tokenizes a prompt with the file's vocabulary and decodes greedily;
// the tokens are checked against a CPU reference forward that reads the same file through
// Pregate's GGUF reader and dequantisers (tests/llama_cpp_model.ts).
//
// node-llama-cpp is not a dependency of the project (its npm install pulls every platform's
// llama.cpp binaries, ~730 MB with CUDA and Vulkan, too much for node_modules and the GPU host's
// carry). The test runs where PREGATE_LLAMA_CPP names a directory holding a CPU-only install:
//   mkdir -p /tmp/nlc && cd /tmp/nlc && npm init -y && npm i --omit=optional --ignore-scripts \
//     node-llama-cpp@3.21.1 @node-llama-cpp/linux-x64@3.21.1        # 83 MB, about 5 s
//   PREGATE_LLAMA_CPP=/tmp/nlc deno test -A tests/llama_cpp_test.ts
// llama.cpp runs in its own Deno process (tests/llama_cpp_greedy.mjs), outside this project's
// configuration, with one thread. On a GPU host, PREGATE_LLAMA_CPP_GPU=vulkan runs llama.cpp's
// greedy decoding on its Vulkan build instead (an install from `bench/llama_cpp_pack.sh`;
// `tools/gpu_check.sh llamacpp`).
//
// What is compared: llama.cpp quantises activations (F16 / Q8_0 / Q8_K) and keeps its KV cache in
// F16, so its logits differ from any other implementation's by a few hundredths of their spread
// and a near-tie can flip a greedy choice. The check is therefore teacher-forced: every token
// llama.cpp picked must be the reference's greedy choice at that step, or within GAP_TOLERANCE of
// its logit (in units of the logits' standard deviation); with F16 weights the whole greedy
// sequences must be equal. A wrong tensor orientation, block layout, RoPE mode or vocabulary
// misses by whole standard deviations from the first token on.
//
// Then Pregate itself against llama.cpp, on GGUF files Pregate's `convert` wrote (f16, Q8_0, Q4_K)
// of the trained demo model and of a tiny random model of each decoder architecture (Mixtral as
// llama.cpp's llama, Qwen2-MoE, OLMoE, Qwen3-MoE): both tokenize the prompt with the file's
// vocabulary and decode greedily; teacher-forced on llama.cpp's tokens, each must be Pregate's best
// or within GAP_TOLERANCE of it, and the test prints how many of the greedy tokens agree (a near-tie
// may flip one, after which the sequences part). Pregate runs twice: with its own f32 activations,
// and with `activations: "llama.cpp"` (each product's input rounded as llama.cpp's CPU backend
// rounds it: Q8_0 / Q8_K blocks, f16; keys and values kept as its f16 cache keeps them, and
// attention computed as its CPU flash attention computes it), where only the order of additions
// differs: then the greedy tokens of every model must equal llama.cpp's at f16 and Q8_0.
//
// Then a SentencePiece (`llama`) vocabulary: a tiny Mixtral converted with the mixtral fixture's
// tokenizer.json (byte-fallback BPE, "▁" normaliser): llama.cpp's ids and detokenized text of
// every fixture text without special tokens (leading and repeated spaces, digits, characters only
// byte fallback spells) equal Pregate's (tests/llama_cpp_tokenize.mjs), and the f16 greedy tokens
// agree as above.
//
// Then llama.cpp's own quantiser (`llama_model_quantize`, what llama-quantize runs; through FFI,
// tests/llama_cpp_quantize.mjs) turns Pregate's F32 GGUF of the demo and of tiny random models
// into Q4_K_M files: each must hold, tensor by tensor, the types and bytes Pregate's
// `convert --type q4_k_m` writes from the same checkpoint (the mix of Q4_K, Q5_K, Q6_K, Q5_0 and
// Q8_0, and every quantiser). Pregate then runs llama.cpp's own Q4_K_M file of the demo, checked
// against llama.cpp's tokens on it as above.
import assert from "node:assert/strict";
import { openGguf } from "../runtime/weights/gguf.ts";
import { convertToGguf } from "../runtime/models/gguf_convert.ts";
import { makeMoeModel, Q4K_DIMS } from "../runtime/models/gguf_model_test_util.ts";
import { agreement, CROSS_MODELS, pregateRun, writeGguf } from "./llama_cpp_pregate.ts";
import { llamaCppParity } from "../tools/llama_cpp_parity.ts";
import { testGpu } from "./test_util.ts";
import { loadTokenizer } from "../runtime/text/tokenizer.ts";
import {
  tinyLlamaGaps,
  tinyLlamaGreedy,
  tinyTokenize,
  type TinyType,
  writeTinyLlama,
} from "./llama_cpp_model.ts";

const INSTALL = Deno.env.get("PREGATE_LLAMA_CPP");
/** llama.cpp's backend: its CPU build (default) or, on a GPU host, its Vulkan build. */
const BACKEND = Deno.env.get("PREGATE_LLAMA_CPP_GPU") ?? "cpu";
const PROMPT = "the cat sat on the mat";
const STEPS = 16;
/** The most a llama.cpp token's logit may sit below the reference's best, in logit std units. */
const GAP_TOLERANCE = 0.08;

/**
 * A test that needs the node-llama-cpp install (ignored without it), with a temporary folder
 * removed afterwards. llama.cpp and Pregate leave resources and ops open between tests (a shared
 * GPU, child processes' pipes), so the sanitizers are off.
 */
function llamaCppTest(name: string, fn: (dir: string) => Promise<void>): void {
  Deno.test({
    name,
    ignore: !INSTALL,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const dir = await Deno.makeTempDir({ prefix: "pregate_llama_cpp_" });
      try {
        await fn(dir);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}

/** Runs llama.cpp greedy decoding on `model` in its own process. */
async function llamaCpp(
  model: string,
  prompt = PROMPT,
  steps = STEPS,
): Promise<{ prompt: number[]; tokens: number[]; version: string; backend: string }> {
  const script = new URL("llama_cpp_greedy.mjs", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--no-config",
      "--node-modules-dir=manual",
      script,
      INSTALL!,
      model,
      prompt,
      `${steps}`,
      BACKEND,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, `llama.cpp run failed:\n${new TextDecoder().decode(out.stderr)}`);
  return JSON.parse(text.trim().split("\n").at(-1)!);
}

for (const type of ["f16", "q8_0", "q4_k"] as TinyType[]) {
  llamaCppTest(
    `llama.cpp decodes a Pregate-written ${type} GGUF as Pregate's reference does`,
    async (dir) => {
      const path = `${dir}/tiny-${type}.gguf`;
      await writeTinyLlama(path, type, 2);
      const ll = await llamaCpp(path);
      assert.equal(ll.version, "3.21.1");
      assert.deepEqual(ll.prompt, tinyTokenize(PROMPT), "llama.cpp's tokens of the prompt");
      assert.equal(ll.tokens.length, STEPS);
      const g = openGguf(path);
      try {
        const gaps = tinyLlamaGaps(g, ll.prompt, ll.tokens);
        const rel = gaps.map((x) => x.gap / x.spread);
        const worst = Math.max(...rel);
        assert.ok(
          worst <= GAP_TOLERANCE,
          `llama.cpp's tokens ${ll.tokens} sit up to ${worst.toFixed(3)} logit std below the ` +
            `reference's best (per step: ${rel.map((r) => r.toFixed(3))})`,
        );
        const exact = rel.filter((r) => r === 0).length;
        assert.ok(exact >= STEPS - 2, `${exact} of ${STEPS} steps are the reference's choice`);
        if (type === "f16") {
          assert.deepEqual(ll.tokens, tinyLlamaGreedy(g, ll.prompt, STEPS).tokens);
        }
      } finally {
        g.close();
      }
    },
  );
}

/** Greedy tokens compared per model and type. */
const CROSS_STEPS = 32;

for (const m of CROSS_MODELS) {
  llamaCppTest(
    `Pregate and llama.cpp on Pregate-written GGUFs of ${m.name}: f16, q8_0, q4_0, q4_k`,
    async (dir) => {
      const checkpoint = await m.checkpoint(dir);
      for (const type of ["f16", "q8_0", "q4_0", "q4_k"] as const) {
        const path = `${dir}/m-${type}.gguf`;
        await writeGguf(checkpoint, path, type);
        const ll = await llamaCpp(path, m.prompt, CROSS_STEPS);
        assert.equal(ll.backend, BACKEND, "llama.cpp's backend");
        const prompt = (await loadTokenizer(path)).encode(m.prompt);
        assert.deepEqual(ll.prompt, prompt, `${type}: llama.cpp's tokens of the prompt`);
        const distinct = new Set(ll.tokens).size;
        for (const activations of ["f32", "llama.cpp"] as const) {
          const p = await pregateRun(path, prompt, ll.tokens, CROSS_STEPS, activations);
          const rel = p.gaps.map((x) => x.gap / x.spread);
          const worst = Math.max(...rel);
          const a = agreement(p.greedy, ll.tokens);
          const exact = rel.filter((r) => r === 0).length;
          console.log(
            `| ${m.name} (llama.cpp ${ll.backend}) | ${type} | ${activations} | ${a.prefix} | ` +
              `${a.same} | ${exact} | ${worst.toFixed(4)} | ${distinct} |`,
          );
          // With llama.cpp's activation rounding, f16 KV cache and attention arithmetic
          // (`activations: "llama.cpp"`), only the order of additions differs from its CPU
          // backend: Pregate's greedy tokens equal llama.cpp's for every model at f16 and Q8_0.
          // At Q4_0 and Q4_K near-ties of a few thousandths of a logit std still part some
          // sequences (bench/results/gguf.md). The teacher-forced gaps come from one batched pass, which
          // llama.cpp's decode did not run; they stay within the f32 bound. (llama.cpp's GPU
          // backends round activations their own ways: only the gap bound applies there.)
          const rounded = activations === "llama.cpp" && BACKEND === "cpu";
          assert.ok(
            worst <= GAP_TOLERANCE,
            `${type}, ${activations} activations: llama.cpp's tokens sit up to ` +
              `${worst.toFixed(4)} logit std below Pregate's best (per step: ${
                rel.map((r) => r.toFixed(4))
              })`,
          );
          if (rounded && (type === "f16" || type === "q8_0")) {
            assert.deepEqual(p.greedy, ll.tokens, `${type}: greedy tokens`);
          }
          // Exact where nothing is rounded differently: f16 weights (llama.cpp still rounds its
          // activations to f16 in places; the demo's and the tiny models' f16 runs agree at
          // every step). Quantised runs of random models sit at near-ties often; the gap bounds
          // them.
          if (type === "f16") assert.ok(exact >= CROSS_STEPS - 1, `f16: ${exact} exact steps`);
        }
      }
    },
  );
}

/** llama.cpp's ids and detokenized text of each of `texts` with the vocabulary of `model`. */
async function llamaCppTokenize(
  model: string,
  texts: readonly string[],
): Promise<{ ids: number[][]; decoded: string[]; version: string }> {
  const script = new URL("llama_cpp_tokenize.mjs", import.meta.url).pathname;
  const textsPath = await Deno.makeTempFile({ suffix: ".json" });
  try {
    await Deno.writeTextFile(textsPath, JSON.stringify(texts));
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--no-config",
        "--node-modules-dir=manual",
        script,
        INSTALL!,
        model,
        textsPath,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, `llama.cpp tokenization failed:\n${err}`);
    return JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
  } finally {
    await Deno.remove(textsPath);
  }
}

const SPM_VOCAB = new URL("fixtures/tokenizers/mixtral", import.meta.url).pathname;
/** Texts beyond the fixture's: leading spaces, byte fallback, digits. */
const SPM_TEXTS = [
  "  two leading spaces",
  "the cat sat on the mat",
  "bytes: 日本語 🙂 ẞ ǅ and 0123456789 3.14159",
];

llamaCppTest(
  "llama.cpp and Pregate agree on a tiny Mixtral GGUF with a SentencePiece (llama) vocabulary",
  async (dir) => {
    const checkpoint = `${dir}/mixtral`;
    await makeMoeModel("mixtral", checkpoint, { ...Q4K_DIMS, vocab: 698 }, 11);
    for (const f of ["tokenizer.json", "tokenizer_config.json"]) {
      await Deno.copyFile(`${SPM_VOCAB}/${f}`, `${checkpoint}/${f}`);
    }
    const path = `${dir}/mixtral-f16.gguf`;
    await writeGguf(checkpoint, path, "f16");
    assert.equal(openGguf(path).string("tokenizer.ggml.model"), "llama");
    // Every fixture text but those with special tokens (llama.cpp reads those as plain text here).
    const fixture = JSON.parse(await Deno.readTextFile(`${SPM_VOCAB}/expected.json`));
    const texts = [
      ...(fixture.cases as { text: string }[]).map((c) => c.text)
        .filter((t) => t !== "" && !/<s>|<\/s>|<unk>/.test(t)),
      ...SPM_TEXTS,
    ];
    const ll = await llamaCppTokenize(path, texts);
    assert.equal(ll.version, "3.21.1");
    const tok = await loadTokenizer(path);
    texts.forEach((text, i) => {
      const what = JSON.stringify(text);
      assert.deepEqual(ll.ids[i], tok.encode(text), `llama.cpp's ids of ${what}`);
      assert.equal(ll.decoded[i], tok.decode(ll.ids[i]), `llama.cpp's text of ${what}`);
    });
    const prompt = tok.encode(SPM_TEXTS[1]);
    const greedy = await llamaCpp(path, SPM_TEXTS[1], CROSS_STEPS);
    assert.deepEqual(greedy.prompt, prompt, "llama.cpp's tokens of the prompt");
    const p = await pregateRun(path, prompt, greedy.tokens, CROSS_STEPS);
    const rel = p.gaps.map((x) => x.gap / x.spread);
    const exact = rel.filter((r) => r === 0).length;
    console.log(`mixtral, llama vocabulary, f16: ${exact} of ${CROSS_STEPS} steps exact`);
    assert.ok(Math.max(...rel) <= GAP_TOLERANCE, `gaps ${rel.map((r) => r.toFixed(3))}`);
    assert.ok(exact >= CROSS_STEPS - 1, `f16: ${exact} exact steps`);
  },
);

/** Runs llama.cpp's quantiser on `input`, writing `output` in llama.cpp file type `ftype`. */
async function llamaQuantize(input: string, output: string, ftype: number): Promise<void> {
  const script = new URL("llama_cpp_quantize.mjs", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-config", script, INSTALL!, input, output, `${ftype}`],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(
    out.code,
    0,
    `llama_model_quantize failed:\n${new TextDecoder().decode(out.stderr)}`,
  );
}

/** Asserts that two GGUF files hold the same tensors (names, types, dimensions, bytes). */
function assertSameTensors(a: string, b: string, what: string): Record<string, number> {
  const [ga, gb] = [openGguf(a), openGguf(b)];
  try {
    // (llama.cpp writes them in its own order.)
    assert.deepEqual(ga.names().toSorted(), gb.names().toSorted(), `${what}: tensor names`);
    const types: Record<string, number> = {};
    for (const n of ga.names()) {
      const [ta, tb] = [ga.describe(n), gb.describe(n)];
      assert.deepEqual([ta.type, ta.dims], [tb.type, tb.dims], `${what}: ${n}`);
      const [ba, bb] = [ga.tensor(n).bytes(), gb.tensor(n).bytes()];
      const diff = ba.findIndex((x, i) => x !== bb[i]);
      assert.equal(diff, -1, `${what}: ${n} (${ta.type}) differs from byte ${diff}`);
      types[ta.type] = (types[ta.type] ?? 0) + 1;
    }
    return types;
  } finally {
    ga.close();
    gb.close();
  }
}

/** llama.cpp's `LLAMA_FTYPE_MOSTLY_Q4_K_M`. */
const FTYPE_Q4_K_M = 15;

llamaCppTest(
  "llama.cpp's own Q4_K_M files equal Pregate's q4_k_m, and Pregate runs them",
  async (dir) => {
    // The demo (8 experts: k, v Q8_0, o Q5_K; down rows of 128: Q5_0 / Q8_0), and tiny random
    // models of 4 experts (v Q6_K in the last layer): Qwen2-MoE (shared experts), Qwen3-MoE (tied
    // embeddings: token_embd Q6_K).
    const models: [string, string][] = [["demo", await CROSS_MODELS[0].checkpoint(dir)]];
    for (const arch of ["qwen2_moe", "qwen3_moe"]) {
      await makeMoeModel(arch, `${dir}/${arch}`, { ...Q4K_DIMS, experts: 4 }, 3);
      models.push([arch, `${dir}/${arch}`]);
    }
    for (const [name, checkpoint] of models) {
      const f32 = `${dir}/${name}-f32.gguf`, ours = `${dir}/${name}-ours.gguf`;
      const theirs = `${dir}/${name}-llama.gguf`;
      await convertToGguf({ model: checkpoint, out: f32, type: "f32", threads: 1 });
      await convertToGguf({ model: checkpoint, out: ours, type: "q4_k_m", threads: 1 });
      await llamaQuantize(f32, theirs, FTYPE_Q4_K_M);
      const types = assertSameTensors(ours, theirs, name);
      console.log(`${name}: ${JSON.stringify(types)}`);
    }
    const demo = CROSS_MODELS[0];
    const path = `${dir}/demo-llama.gguf`;
    const ll = await llamaCpp(path, demo.prompt, CROSS_STEPS);
    const prompt = (await loadTokenizer(path)).encode(demo.prompt);
    assert.deepEqual(ll.prompt, prompt, "llama.cpp's tokens of the prompt");
    const p = await pregateRun(path, prompt, ll.tokens, CROSS_STEPS);
    const rel = p.gaps.map((x) => x.gap / x.spread);
    const worst = Math.max(...rel);
    const a = agreement(p.greedy, ll.tokens);
    const exact = rel.filter((r) => r === 0).length;
    console.log(
      `| ${demo.name}, llama.cpp's Q4_K_M | q4_k_m | ${a.prefix} | ${a.same} | ${exact} | ` +
        `${worst.toFixed(4)} | ${new Set(ll.tokens).size} |`,
    );
    assert.ok(
      worst <= GAP_TOLERANCE,
      `llama.cpp's tokens sit up to ${worst.toFixed(3)} logit std below Pregate's best ` +
        `(per step: ${rel.map((r) => r.toFixed(3))})`,
    );
  },
);

/** Runs bench/llama_cpp_ffi.mjs (llama.cpp through FFI) with `flags`; its JSON line, or its error. */
async function llamaCppFfi(
  flags: string[],
): Promise<{ code: number; json?: Record<string, unknown>; stderr: string }> {
  const script = new URL("../bench/llama_cpp_ffi.mjs", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-config", script, "--install", INSTALL!, ...flags],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout).trim();
  const stderr = new TextDecoder().decode(out.stderr);
  return {
    code: out.code,
    json: stdout ? JSON.parse(stdout.split("\n").at(-1)!) : undefined,
    stderr,
  };
}

llamaCppTest(
  "llama.cpp through FFI (the experts-in-host-memory peer) decodes as node-llama-cpp does",
  async (dir) => {
    const demo = CROSS_MODELS[0];
    const path = `${dir}/demo-q4_k.gguf`;
    await writeGguf(await demo.checkpoint(dir), path, "q4_k");
    const prompt = (await loadTokenizer(path)).encode(demo.prompt);
    const ll = await llamaCpp(path, `ids:${prompt}`, STEPS);
    const common = ["--model", path, "--gpu", BACKEND, "--prompt-ids", `${prompt}`];
    const run = ["--tokens", `${STEPS}`, "--runs", "1", "--threads", "1"];
    // The structs passed by value follow the bundled llama.h; a wrong offset loads another
    // placement, another context, or nothing.
    for (const experts of BACKEND === "cpu" ? ["gpu"] : ["gpu", "host"]) {
      const r = await llamaCppFfi([...common, "--experts", experts, ...run]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.json?.experts, experts);
      assert.equal(r.json?.total_layers, 8);
      assert.deepEqual(r.json?.ids, ll.tokens, `experts on ${experts}: greedy ids`);
      if (experts === "host") assert.match(r.stderr, /ffn_up_exps\.weight .* overridden to/);
    }
    const cpu = await llamaCppFfi([...common.slice(0, 2), "--gpu", "cpu", "--experts", "host"]);
    assert.equal(cpu.code, 2);
    assert.match(cpu.stderr, /--experts host needs a GPU build/);
  },
);

llamaCppTest(
  "Pregate's logits with llama.cpp's activations are llama.cpp's up to the order of additions",
  async (dir) => {
    const demo = CROSS_MODELS[0];
    const checkpoint = await demo.checkpoint(dir);
    const gpu = await testGpu();
    // One-token prompts, one step each. A sum may land on the other side of a rounding boundary
    // in either implementation's order (later steps do, 2-16 steps in: bench/results/gguf.md,
    // "llama.cpp's logits"; none of 16 first passes of the demo did on the development machine),
    // so of four prompts at least one must be exact; a rounding that is not llama.cpp's misses
    // on all four.
    const prompts = [[49], [1036], [744], [261]];
    for (const type of ["f16", "q8_0", "q4_k"] as const) {
      const model = `${dir}/demo-${type}.gguf`;
      await writeGguf(checkpoint, model, type);
      const first: number[] = [];
      for (const prompt of prompts) {
        const steps = await llamaCppParity({
          install: INSTALL!,
          model,
          prompt,
          tokens: 2,
          activations: "llama.cpp",
          gpu,
        });
        first.push(steps[0].maxDiff);
      }
      const diffs = first.map((d) => d.toExponential(1)).join(", ");
      if (type === "f16") {
        // f16 activations: roundings that part move a logit by ~1e-3 of the spread, no more.
        assert.ok(first.every((d) => d < 5e-3), `f16: first steps ${diffs}`);
      } else {
        // Q8_0 / Q8_K activations: equal up to float order (~1e-6) unless a sum crossed a
        // rounding boundary; then a few hundredths.
        assert.ok(first.some((d) => d < 1e-5), `${type}: no exact first step (${diffs})`);
        assert.ok(first.every((d) => d < 0.15), `${type}: first steps ${diffs}`);
      }
    }
  },
);
