/**
 * The public model API: load a Hugging Face MoE checkpoint from a directory, score tokens, generate.
 *
 * @example
 * ```ts ignore
 * import { loadModel } from "./model.ts";
 * const model = await loadModel("models/tiny-mixtral", { gpu: "native" });
 * const logits = await model.logits([5, 77, 301]); // one Float32Array of vocab logits per position
 * for await (const id of model.generate([5, 77, 301], { maxTokens: 16 })) console.log(id);
 * console.log(model.lastStats);
 * model.dispose();
 * ```
 * @module
 */
import { type Gpu, type GpuChoice, openGpu, type Step } from "./gpu/device.ts";
import { ArgumentError } from "./errors.ts";
import { loadConfig, type ModelConfig } from "./models/config.ts";
import { openCheckpoint, type TensorStore } from "./weights/safetensors.ts";
import { type ModelWeights, uploadWeights } from "./models/weights.ts";
import { allocState, type RunState } from "./models/state.ts";
import { buildForward, flattenPlan } from "./models/decoder.ts";
import { argmax } from "../kernels/argmax.ts";
import { sample as sampleKernel, sampleRng } from "../kernels/sample.ts";
import { advanceStep } from "../kernels/step.ts";

/** Options of {@linkcode loadModel}. */
export interface LoadOptions {
  /** WebGPU implementation; default `native`. */
  gpu?: GpuChoice;
  /** An already opened device to use instead (then `gpu` is ignored and it is not destroyed). */
  device?: Gpu;
  /** Most positions (prompt + generated) per sequence; default min(config, 2048). */
  contextLength?: number;
  /** Most prompt tokens per prefill pass (longer prompts run in chunks); default 256. */
  prefillChunk?: number;
  /** One-line notices (device choice, mmap fallback). Default: none. */
  log?: (message: string) => void;
  /** Load progress: bytes uploaded, total bytes. */
  onProgress?: (done: number, total: number) => void;
}

/** Options of {@linkcode Model.generate}. */
export interface GenerateOptions {
  /** Tokens to generate; default 32. */
  maxTokens?: number;
  /** Stop after emitting one of these ids. */
  stopIds?: readonly number[];
  /** 0 (default) = greedy; > 0 samples from softmax(logits / temperature) on the GPU. */
  temperature?: number;
  /** Nucleus sampling mass in (0, 1]; default 1. Used when temperature > 0. */
  topP?: number;
  /** Seed of the GPU random stream; default 0. Same seed, same tokens. */
  seed?: number;
}

/** Statistics of the last {@linkcode Model.generate} call. */
export interface GenerateStats {
  mode: string;
  gpu: string;
  prompt_tokens: number;
  generated_tokens: number;
  prefill_seconds: number;
  prefill_tokens_per_s: number;
  decode_seconds: number;
  decode_tokens_per_s: number;
  syncs_per_token: number;
  upload_bytes_per_token: number;
  peak_gpu_bytes: number;
}

/** A loaded model: config, GPU weights, run state and plans. */
export class Model {
  /** The parsed config. */
  readonly config: ModelConfig;
  /** The GPU it runs on. */
  readonly gpu: Gpu;
  /** Statistics of the last generation. */
  lastStats: GenerateStats | null = null;

  #store: TensorStore;
  #weights: ModelWeights;
  #state: RunState | null = null;
  #ownsGpu: boolean;
  #contextLength: number;
  #prefillChunk: number;
  #plans = new Map<string, Promise<Step[]>>();

  private constructor(
    cfg: ModelConfig,
    gpu: Gpu,
    store: TensorStore,
    weights: ModelWeights,
    opts: { ownsGpu: boolean; contextLength: number; prefillChunk: number },
  ) {
    this.config = cfg;
    this.gpu = gpu;
    this.#store = store;
    this.#weights = weights;
    this.#ownsGpu = opts.ownsGpu;
    this.#contextLength = opts.contextLength;
    this.#prefillChunk = opts.prefillChunk;
  }

  /** @internal use {@linkcode loadModel}. */
  static async load(dir: string, opts: LoadOptions = {}): Promise<Model> {
    const cfg = await loadConfig(dir);
    const contextLength = opts.contextLength ?? Math.min(cfg.maxPositions, 2048);
    if (!Number.isInteger(contextLength) || contextLength < 1) {
      throw new ArgumentError("contextLength", `expected a positive integer, got ${contextLength}`);
    }
    const prefillChunk = opts.prefillChunk ?? 256;
    if (!Number.isInteger(prefillChunk) || prefillChunk < 1) {
      throw new ArgumentError("prefillChunk", `expected a positive integer, got ${prefillChunk}`);
    }
    const store = openCheckpoint(dir, { log: opts.log });
    const gpu = opts.device ?? await openGpu({ gpu: opts.gpu, log: opts.log });
    try {
      const weights = uploadWeights(gpu, cfg, store, {
        experts: "resident",
        onProgress: opts.onProgress,
      });
      return new Model(cfg, gpu, store, weights, {
        ownsGpu: !opts.device,
        contextLength,
        prefillChunk,
      });
    } catch (e) {
      store.close();
      if (!opts.device) gpu.destroy();
      throw e;
    }
  }

  /** The run state, (re)allocated to hold `rows` tokens and `logitRows` rows of logits. */
  #stateFor(rows: number, logitRows: number): RunState {
    const s = this.#state;
    if (s && s.maxT >= rows && s.logitRows >= logitRows) return s;
    if (s) this.#freeState(s);
    this.#plans.clear();
    const maxT = Math.max(rows, s?.maxT ?? 0);
    const lr = Math.max(logitRows, s?.logitRows ?? 0);
    this.#state = allocState(this.gpu, this.config, {
      maxT,
      maxSeq: this.#contextLength,
      logitRows: lr,
    });
    return this.#state;
  }

  #freeState(s: RunState) {
    freeBuffers(this.gpu, s);
  }

  #plan(s: RunState, T: number, logits: "all" | "last"): Promise<Step[]> {
    const key = `${T}|${logits}`;
    let p = this.#plans.get(key);
    if (!p) {
      p = buildForward(this.gpu, this.config, this.#weights, s, { T, logits }).then(flattenPlan);
      this.#plans.set(key, p);
    }
    return p;
  }

  #checkIds(ids: readonly number[], argument: string, extra = 0) {
    if (!Array.isArray(ids) || ids.length === 0) {
      throw new ArgumentError(argument, "expected a non-empty list of token ids");
    }
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.config.vocabSize) {
        throw new ArgumentError(
          argument,
          `token id ${id} is outside the vocabulary [0, ${this.config.vocabSize})`,
        );
      }
    }
    if (ids.length + extra > this.#contextLength) {
      throw new ArgumentError(
        argument,
        `${ids.length} prompt tokens + ${extra} new tokens exceed the context length ` +
          `${this.#contextLength}`,
        "load the model with a larger contextLength (--context)",
      );
    }
  }

  /**
   * Teacher-forced logits: one Float32Array of `vocabSize` logits per input position, from a fresh
   * sequence (position 0).
   */
  async logits(ids: readonly number[]): Promise<Float32Array[]> {
    this.#checkIds(ids, "ids");
    const chunk = Math.min(this.#prefillChunk, ids.length);
    const s = this.#stateFor(chunk, chunk);
    const V = this.config.vocabSize;
    const out: Float32Array[] = [];
    for (let start = 0; start < ids.length; start += chunk) {
      const part = ids.slice(start, start + chunk);
      this.gpu.write(s.ids, Uint32Array.from(part));
      this.gpu.write(s.pos, new Uint32Array([start, 0, 0, 0]));
      this.gpu.submit(await this.#plan(s, part.length, "all"));
      const flat = await this.gpu.readF32(s.logits, 0, part.length * V);
      for (let t = 0; t < part.length; t++) out.push(flat.slice(t * V, (t + 1) * V));
    }
    return out;
  }

  /**
   * Generates up to `maxTokens` tokens greedily after `ids`, yielding each id. Tokens are produced on
   * the GPU without a CPU round trip per token and read back in growing batches.
   */
  async *generate(ids: readonly number[], opts: GenerateOptions = {}): AsyncGenerator<number> {
    const maxTokens = opts.maxTokens ?? 32;
    if (!Number.isInteger(maxTokens) || maxTokens < 1) {
      throw new ArgumentError("maxTokens", `expected a positive integer, got ${maxTokens}`);
    }
    this.#checkIds(ids, "ids", maxTokens);
    const stop = new Set(opts.stopIds ?? []);
    const temperature = opts.temperature ?? 0, topP = opts.topP ?? 1, seed = opts.seed ?? 0;
    if (!Number.isFinite(temperature) || temperature < 0) {
      throw new ArgumentError("temperature", `expected a number >= 0, got ${temperature}`);
    }
    if (!(topP > 0 && topP <= 1)) {
      throw new ArgumentError("topP", `expected a number in (0, 1], got ${topP}`);
    }
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
      throw new ArgumentError("seed", `expected an integer in [0, 2^32), got ${seed}`);
    }
    const gpu = this.gpu;
    const chunk = Math.min(this.#prefillChunk, ids.length);
    const s = this.#stateFor(chunk, 1);
    const history = gpu.storage("activations", maxTokens * 4, "history");
    const c0 = { ...gpu.counters };
    gpu.resetPeak();
    const V = this.config.vocabSize;
    const rng = temperature > 0 ? sampleRng(gpu, seed) : null;
    const sample = rng
      ? await sampleKernel(gpu, {
        logits: s.logits,
        out: s.ids,
        rows: 1,
        V,
        temperature,
        topP,
        rng,
      })
      : await argmax(gpu, { x: s.logits, out: s.ids, rows: 1, cols: V });
    const t0 = performance.now();
    try {
      // Prefill in chunks; the last chunk's logits give the first new token.
      for (let start = 0; start < ids.length; start += chunk) {
        const part = ids.slice(start, start + chunk);
        const last = start + chunk >= ids.length;
        gpu.write(s.ids, Uint32Array.from(part));
        gpu.write(s.pos, new Uint32Array([start, 0, 0, 0]));
        const steps = [...await this.#plan(s, part.length, "last")];
        if (last) {
          steps.push(
            sample,
            await advanceStep(gpu, {
              ids: s.ids,
              state: s.pos,
              history,
              advance: part.length,
              capacity: maxTokens,
            }),
          );
        }
        gpu.submit(steps);
      }
      const first = await gpu.readU32(history, 0, 1);
      const prefillSeconds = (performance.now() - t0) / 1e3;
      const decode = [
        ...await this.#plan(s, 1, "last"),
        sample,
        await advanceStep(gpu, {
          ids: s.ids,
          state: s.pos,
          history,
          advance: 1,
          capacity: maxTokens,
        }),
      ];
      let produced = 1, emitted = 0, batch = 1;
      const t1 = performance.now();
      let pending: number[] = [first[0]];
      while (true) {
        for (const id of pending) {
          yield id;
          emitted++;
          if (stop.has(id) || emitted >= maxTokens) return;
        }
        // Queue the next batch of decode steps, then read back what they produce.
        const n = Math.min(batch, maxTokens - produced);
        for (let i = 0; i < n; i++) gpu.submit(decode);
        pending = [...await gpu.readU32(history, produced * 4, n)];
        produced += n;
        batch = Math.min(batch * 2, 32);
        const decodeSeconds = (performance.now() - t1) / 1e3;
        this.lastStats = this.#stats(c0, ids.length, produced, prefillSeconds, decodeSeconds);
      }
    } finally {
      if (!this.lastStats) {
        this.lastStats = this.#stats(c0, ids.length, 1, (performance.now() - t0) / 1e3, 0);
      }
      gpu.destroyBuffer(history);
      if (rng) gpu.destroyBuffer(rng);
    }
  }

  #stats(
    c0: { syncs: number; uploadBytes: number },
    prompt: number,
    produced: number,
    prefill: number,
    decode: number,
  ): GenerateStats {
    const c = this.gpu.counters;
    const decoded = Math.max(produced - 1, 0);
    return {
      mode: "resident",
      gpu: this.gpu.describe(),
      prompt_tokens: prompt,
      generated_tokens: produced,
      prefill_seconds: prefill,
      prefill_tokens_per_s: prompt / prefill,
      decode_seconds: decode,
      decode_tokens_per_s: decoded ? decoded / decode : 0,
      syncs_per_token: (c.syncs - c0.syncs) / Math.max(produced, 1),
      upload_bytes_per_token: (c.uploadBytes - c0.uploadBytes) / Math.max(produced, 1),
      peak_gpu_bytes: this.gpu.memory().peak,
    };
  }

  /** Frees the GPU buffers (and the device if the model opened it) and unmaps the weight files. */
  dispose(): void {
    if (this.#state) this.#freeState(this.#state);
    this.#state = null;
    freeBuffers(this.gpu, this.#weights);
    this.#store.close();
    if (this.#ownsGpu) this.gpu.destroy();
  }
}

/** Destroys every GPUBuffer reachable from `root` (plain objects and arrays), each once. */
function freeBuffers(gpu: Gpu, root: unknown, seen = new Set<unknown>()): void {
  if (!root || typeof root !== "object" || seen.has(root)) return;
  seen.add(root);
  if ("destroy" in root && "usage" in root && "size" in root) {
    gpu.destroyBuffer(root as GPUBuffer);
    return;
  }
  for (const v of Object.values(root)) freeBuffers(gpu, v, seen);
}

/** Loads a Hugging Face MoE checkpoint directory (config.json + safetensors) onto the GPU. */
export function loadModel(dir: string, opts: LoadOptions = {}): Promise<Model> {
  return Model.load(dir, opts);
}
