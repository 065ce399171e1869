/**
 * Pregate's half of the cross-check of Pregate against llama.cpp on Pregate-written GGUF files
 * (`llama_cpp_test.ts`): the models (the trained demo model, and a tiny random all-MoE model of each
 * decoder architecture with the qwen2 fixture's byte-level BPE vocabulary), and Pregate's greedy
 * tokens and teacher-forced logits on a file. Used by tests only.
 * @module
 */
import { type ActivationRounding, loadModel } from "../runtime/model.ts";
import { convertToGguf } from "../runtime/models/gguf_convert.ts";
import { makeMoeModel, Q4K_DIMS } from "../runtime/models/gguf_model_test_util.ts";
import type { WeightType } from "../runtime/weights/weight_type.ts";
import { testGpu } from "./test_util.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const VOCAB = `${ROOT}tests/fixtures/tokenizers/qwen2`;

/** A model of the cross-check: where its checkpoint is made, and its prompt. */
export interface CrossModel {
  name: string;
  /** Writes the checkpoint into `dir` (or returns an existing directory). */
  checkpoint(dir: string): Promise<string>;
  prompt: string;
  /** A trained model (its greedy tokens are no near-ties): the demo. */
  trained?: boolean;
}

/** The demo model and a tiny random model of each decoder architecture. */
export const CROSS_MODELS: readonly CrossModel[] = [
  {
    name: "demo (qwen3_moe, trained)",
    checkpoint: () => Promise.resolve(`${ROOT}models/demo`),
    prompt: "Once upon a time",
    trained: true,
  },
  ...["mixtral", "qwen2_moe", "olmoe", "qwen3_moe"].map((arch) => ({
    name: `${arch} (tiny, random)`,
    checkpoint: async (dir: string) => {
      const out = `${dir}/${arch}`;
      // An untied LM head: with the tiny presets' tied one (qwen3_moe), the random layers barely
      // move the residual stream and every logit row peaks at its input token.
      await makeMoeModel(arch, out, { ...Q4K_DIMS, vocab: 672, tieEmbeddings: false }, 7);
      for (const f of ["tokenizer.json", "tokenizer_config.json"]) {
        await Deno.copyFile(`${VOCAB}/${f}`, `${out}/${f}`);
      }
      return out;
    },
    prompt: "Hello world, how are you doing today?",
  })),
];

/** Writes `checkpoint` as a GGUF file of `type` at `out`. */
export async function writeGguf(checkpoint: string, out: string, type: WeightType): Promise<void> {
  await convertToGguf({ model: checkpoint, out, type, threads: 1 });
}

/** What Pregate computes on a GGUF file. */
export interface PregateRun {
  /** Its tokenizer's ids of the prompt. */
  prompt: number[];
  /** Greedy tokens after the prompt. */
  greedy: number[];
  /**
   * Teacher-forced on `forced` (another implementation's tokens after the prompt): per step, how far
   * the forced token's logit is below the best, and the spread (standard deviation) of the logits.
   */
  gaps: { gap: number; spread: number }[];
}

/** Pregate's greedy tokens and, teacher-forced on `forced`, its logit gaps (see {@linkcode PregateRun}). */
export async function pregateRun(
  gguf: string,
  prompt: number[],
  forced: readonly number[],
  n: number,
  activations: ActivationRounding = "f32",
): Promise<Omit<PregateRun, "prompt">> {
  const model = await loadModel(gguf, { device: await testGpu(), activations });
  try {
    const greedy: number[] = [];
    for await (const id of model.generate(prompt, { maxTokens: n })) greedy.push(id);
    const rows = await model.logits([...prompt, ...forced.slice(0, -1)]);
    const gaps = forced.map((tok, i) => {
      const l = rows[prompt.length - 1 + i];
      let best = -Infinity, mean = 0;
      for (const x of l) [best, mean] = [Math.max(best, x), mean + x / l.length];
      const spread = Math.sqrt(l.reduce((a, x) => a + (x - mean) ** 2, 0) / l.length);
      return { gap: best - l[tok], spread };
    });
    return { greedy, gaps };
  } finally {
    await model.dispose();
  }
}

/** How many leading tokens two sequences share, and how many positions agree. */
export function agreement(
  a: readonly number[],
  b: readonly number[],
): { prefix: number; same: number } {
  let prefix = 0;
  while (prefix < a.length && a[prefix] === b[prefix]) prefix++;
  return { prefix, same: a.filter((x, i) => x === b[i]).length };
}
