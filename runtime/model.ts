/**
 * The public model API: load a MoE model (a Hugging Face checkpoint directory or a GGUF file), score
 * tokens, generate, with every expert on the GPU (`resident`) or streamed from the memory-mapped
 * files by the offloading engine (`on-demand`, `prefetch-all`, `pregated`).
 *
 * @example
 * ```ts ignore
 * import { loadModel } from "./model.ts";
 * const model = await loadModel("models/tiny-mixtral", { mode: "pregated", budget: 2 ** 30 });
 * const logits = await model.logits([5, 77, 301]); // one Float32Array of vocab logits per position
 * for await (const id of model.generate([5, 77, 301], { maxTokens: 16 })) console.log(id);
 * console.log(model.lastStats);
 * await model.dispose();
 * ```
 * @module
 */
import { type Gpu, type GpuChoice, openGpu, type Step } from "./base/gpu/device.ts";
import { ArgumentError } from "./base/errors.ts";
import type { ModelConfig, MoeFfn } from "./models/config.ts";
import { loadModelConfig, openModelStore } from "./models/gguf_model.ts";
import type { TensorStore } from "./weights/safetensors.ts";
import type { ModelWeights } from "./models/weights.ts";
import type { RunState } from "./models/state.ts";
import { archOf } from "./models/arch/mod.ts";
import { allocModelState, buildForward, uploadModelWeights } from "./models/build.ts";
import type { ActivationRounding, ForwardPlan } from "./models/plan.ts";
import { Executor, RESIDENT } from "./executor.ts";
import {
  EXPERT_MODES,
  type ExpertMode,
  OffloadEngine,
  type PregatePolicy,
} from "./experts/engine.ts";
import type { ExpertTrace } from "./experts/trace.ts";
import type { UploadPath } from "./experts/uploader_types.ts";
import { argmax } from "../kernels/argmax.ts";
import { sample as sampleKernel, sampleRng } from "../kernels/sample.ts";
import { advanceStep } from "../kernels/step.ts";
import { checkLogitRows, checkToken } from "./numeric.ts";
import { type GenerateStats, generateStats, type OffloadCounters } from "./generate_stats.ts";
import { checkPositions, warnContextLength, warnUnusedTensors } from "./load_checks.ts";

export type { GenerateStats, OffloadCounters } from "./generate_stats.ts";
export type { ActivationRounding } from "./models/plan.ts";

/** Options of {@linkcode loadModel}. */
export interface LoadOptions {
  /** WebGPU implementation; default `native`. */
  gpu?: GpuChoice;
  /** An already opened device to use instead (then `gpu` is ignored and it is not destroyed). */
  device?: Gpu;
  /** Where experts live: `resident` (default), `on-demand`, `prefetch-all` or `pregated`. */
  mode?: ExpertMode;
  /** Pre-gate policy in `pregated` mode: `exact` (default, output identical) or `strict`. */
  pregate?: PregatePolicy;
  /** GPU memory budget in bytes (offloading modes). */
  budget?: number;
  /** Expert slots beyond the mode's minimum, or `auto` (as many as the budget allows). */
  expertCache?: number | "auto";
  /** Eviction policy of the expert slots: `lru` (default) or `lfu`. */
  cachePolicy?: "lru" | "lfu";
  /**
   * Expert copy path: `auto` (default: mapped on Dawn, writeBuffer on native), `write`, `mapped`,
   * or `pinned` (every expert copied at load into host-visible buffers the GPU copies from; a
   * second host copy of the experts, for bus-speed uploads).
   */
  uploader?: UploadPath | "auto";
  /** Record an expert trace (offloading modes); see {@linkcode Model.trace}. */
  trace?: boolean;
  /** Most positions (prompt + generated) per sequence; default min(config, 2048). */
  contextLength?: number;
  /** Most prompt tokens per forward pass (longer prompts run in chunks); default 128. */
  prefillChunk?: number;
  /** Encoder-decoder models: most encoder tokens per input; default 512. */
  maxEncoderTokens?: number;
  /** Encoder-decoder models with T5's relative position bias: see `UploadOptions.positionBias`. */
  positionBias?: "shared" | "first_layer_only";
  /**
   * How activations meet quantised and half-precision weights: `f32` (default: products of f32
   * activations with the weights as stored) or `llama.cpp` (activations rounded first as
   * llama.cpp's CPU backend rounds them: Q8_0 blocks before Q8_0 / Q5_0 / Q4_0 weights, Q8_K blocks
   * before K-quants, f16 / bf16 before f16 / bf16 weights; `kernels/round_activations.ts`; keys and
   * values kept rounded to f16 as its KV cache keeps them, and attention computed as its CPU flash
   * attention computes it), so that the products over a GGUF file are llama.cpp's up to the order
   * of additions. Decoder-only models.
   */
  activations?: ActivationRounding;
  /** One-line notices (device choice, mmap fallback). Default: none. */
  log?: (message: string) => void;
  /**
   * Load progress: bytes done, total bytes, and of what: the weights uploaded to the GPU, then
   * (with `uploader: "pinned"`) the experts pinned in host-visible memory.
   */
  onProgress?: (done: number, total: number, what: "weights" | "pinned experts") => void;
}

/** Options of {@linkcode Model.logits}. */
export interface SequenceOptions {
  /** The encoder's input of an encoder-decoder model (required there, refused elsewhere). */
  encoderIds?: readonly number[];
}

/** Options of {@linkcode Model.generate}. */
export interface GenerateOptions extends SequenceOptions {
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

/** A loaded model: config, GPU weights, run state, plans and (optionally) the offloading engine. */
export class Model {
  /** The parsed config. */
  readonly config: ModelConfig;
  /** The GPU it runs on. */
  readonly gpu: Gpu;
  /** Where experts live. */
  readonly mode: ExpertMode;
  /** Statistics of the last generation. */
  lastStats: GenerateStats | null = null;

  #store: TensorStore;
  #weights: ModelWeights;
  #state: RunState;
  #engine: OffloadEngine | null;
  #ownsGpu: boolean;
  #contextLength: number;
  #dir: string;
  #plans = new Map<string, Promise<ForwardPlan>>();
  #executor: Executor;
  #activations: ActivationRounding;

  private constructor(
    dir: string,
    cfg: ModelConfig,
    gpu: Gpu,
    parts: {
      store: TensorStore;
      weights: ModelWeights;
      state: RunState;
      engine: OffloadEngine | null;
      mode: ExpertMode;
      ownsGpu: boolean;
      contextLength: number;
      activations: ActivationRounding;
    },
  ) {
    this.#dir = dir;
    this.config = cfg;
    this.gpu = gpu;
    this.mode = parts.mode;
    this.#store = parts.store;
    this.#weights = parts.weights;
    this.#state = parts.state;
    this.#engine = parts.engine;
    this.#executor = new Executor(gpu, parts.engine ?? RESIDENT);
    this.#ownsGpu = parts.ownsGpu;
    this.#contextLength = parts.contextLength;
    this.#activations = parts.activations;
  }

  /** @internal use {@linkcode loadModel}. */
  static async load(dir: string, opts: LoadOptions = {}): Promise<Model> {
    const mode = opts.mode ?? "resident";
    if (!EXPERT_MODES.includes(mode)) {
      throw new ArgumentError("mode", `unknown mode '${mode}'`, `use ${EXPERT_MODES.join(", ")}`);
    }
    if (opts.pregate !== undefined && opts.pregate !== "exact" && opts.pregate !== "strict") {
      throw new ArgumentError("pregate", `expected exact or strict, got '${opts.pregate}'`);
    }
    if (opts.budget !== undefined && !(Number.isFinite(opts.budget) && opts.budget > 0)) {
      throw new ArgumentError("budget", `expected a positive number of bytes, got ${opts.budget}`);
    }
    const cfg = await loadModelConfig(dir);
    warnContextLength(cfg, opts.contextLength, opts.log);
    const contextLength = opts.contextLength ?? Math.min(cfg.maxPositions, 2048);
    if (!Number.isInteger(contextLength) || contextLength < 1) {
      throw new ArgumentError("contextLength", `expected a positive integer, got ${contextLength}`);
    }
    const prefillChunk = opts.prefillChunk ?? 128;
    if (!Number.isInteger(prefillChunk) || prefillChunk < 1) {
      throw new ArgumentError("prefillChunk", `expected a positive integer, got ${prefillChunk}`);
    }
    const store = openModelStore(dir, cfg, { log: opts.log });
    warnUnusedTensors(cfg, store, opts.log);
    const encoderDecoder = archOf(cfg).encoderDecoder !== undefined;
    const maxEncoder = opts.maxEncoderTokens ?? 512;
    if (!Number.isInteger(maxEncoder) || maxEncoder < 1) {
      throw new ArgumentError("maxEncoderTokens", `expected a positive integer, got ${maxEncoder}`);
    }
    const activations = opts.activations ?? "f32";
    if (activations !== "f32" && activations !== "llama.cpp") {
      throw new ArgumentError("activations", `expected f32 or llama.cpp, got '${activations}'`);
    }
    if (encoderDecoder && activations !== "f32") {
      throw new ArgumentError(
        "activations",
        `llama.cpp's rounding applies to decoder-only models; ${cfg.arch} is an encoder-decoder`,
      );
    }
    if (!encoderDecoder && opts.positionBias !== undefined) {
      throw new ArgumentError("positionBias", `${cfg.arch} has no relative position bias`);
    }
    const gpu = opts.device ?? await openGpu({ gpu: opts.gpu, log: opts.log });
    const before = gpu.memory().current;
    let weights: ModelWeights | undefined, state: RunState | undefined;
    try {
      weights = uploadModelWeights(gpu, cfg, store, {
        experts: mode === "resident" ? "resident" : "none",
        onProgress: opts.onProgress && ((done, total) => opts.onProgress!(done, total, "weights")),
        positionBias: opts.positionBias,
      });
      const maxT = Math.min(prefillChunk, contextLength);
      state = allocModelState(gpu, cfg, {
        maxT,
        maxSeq: contextLength,
        logitRows: maxT,
        maxEncoder,
        roundedActivations: activations === "llama.cpp",
      });
      let engine: OffloadEngine | null = null;
      if (mode !== "resident") {
        // The budget covers what this model allocates on the device (not other models sharing it).
        const budget = opts.budget === undefined ? undefined : opts.budget + before;
        engine = await OffloadEngine.create(gpu, cfg, store, weights, state, {
          mode,
          pregate: opts.pregate,
          budget,
          expertCache: opts.expertCache,
          cachePolicy: opts.cachePolicy,
          uploader: opts.uploader,
          onPinProgress: opts.onProgress &&
            ((done, total) => opts.onProgress!(done, total, "pinned experts")),
          log: opts.log,
          trace: opts.trace,
        });
      }
      return new Model(dir, cfg, gpu, {
        store,
        weights,
        state,
        engine,
        mode,
        ownsGpu: !opts.device,
        contextLength,
        activations,
      });
    } catch (e) {
      if (state) freeBuffers(gpu, state);
      if (weights) freeBuffers(gpu, weights);
      store.close();
      if (!opts.device) gpu.destroy();
      throw e;
    }
  }

  /** Most positions (prompt + generated tokens) per sequence (`contextLength` at load). */
  get contextLength(): number {
    return this.#contextLength;
  }

  /** Expert slots of the offloading engine (null when resident). */
  get expertSlots(): number | null {
    return this.#engine?.slots ?? null;
  }

  /** The pre-gate policy in `pregated` mode (`exact` or `strict`), else null. */
  get pregatePolicy(): PregatePolicy | null {
    return this.mode === "pregated" ? this.#engine!.pregatePolicy : null;
  }

  /**
   * The offloading engine's running totals since load (null when resident); the difference of two
   * readings covers the calls between them, `logits` included.
   */
  get offloadCounters(): OffloadCounters | null {
    const e = this.#engine?.stats;
    if (!e) return null;
    const { pregateHits, pregateChosen, cacheHits, cacheLookups, uploadBytes } = e;
    return { pregateHits, pregateChosen, cacheHits, cacheLookups, uploadBytes };
  }

  /** The expert trace recorded so far (when loaded with `trace: true` in an offloading mode). */
  trace(): ExpertTrace | null {
    const t = this.#engine?.trace;
    if (!t) return null;
    return {
      model: this.#dir,
      arch: this.config.arch,
      mode: this.mode,
      pregate: this.#engine!.pregatePolicy,
      experts: (this.config.layers.find((l) => l.ffn.kind === "moe")?.ffn as MoeFfn).experts,
      moeLayers: this.config.layers.flatMap((l, i) => (l.ffn.kind === "moe" ? [i] : [])),
      records: [...t],
    };
  }

  /** The decoder's plan (over an encoder's `encoderLength` tokens), or the encoder's (`encoder`). */
  #plan(T: number, logits: "all" | "last", encoderLength?: number, encoder = false) {
    const key = `${T}|${logits}|${encoderLength}|${encoder}`;
    let p = this.#plans.get(key);
    if (!p) {
      const opts = {
        T,
        logits,
        encoderLength,
        activations: this.#activations,
        ...this.#engine?.planHooks(),
      };
      const s = this.#state, w = this.#weights;
      p = encoder
        ? archOf(this.config).encoderDecoder!.buildEncoder(this.gpu, this.config, w, s, opts)
        : buildForward(this.gpu, this.config, w, s, opts);
      this.#plans.set(key, p);
    }
    return p;
  }

  /**
   * An encoder-decoder's decoder start token and end-of-sequence ids (null for a decoder-only
   * model): `generate([start], { encoderIds })` decodes as HF's `generate` does.
   */
  get encoderDecoder():
    | { decoderStartTokenId: number | null; eosTokenIds: readonly number[] }
    | null {
    const g = archOf(this.config).encoderDecoder?.generation(this.config);
    return g ? { decoderStartTokenId: g.start, eosTokenIds: g.eos } : null;
  }

  /**
   * Runs an encoder-decoder's encoder over `encoderIds` (its cross-attention keys and values stay
   * in the run state); returns the encoder length the decoder's plans need. Checks that a
   * decoder-only model got none.
   */
  async #encode(encoderIds: readonly number[] | undefined): Promise<number | undefined> {
    const has = archOf(this.config).encoderDecoder !== undefined, s = this.#state;
    if (has !== (encoderIds !== undefined)) {
      const arch = this.config.arch;
      throw new ArgumentError(
        "encoderIds",
        has
          ? `${arch} is an encoder-decoder: give the encoder's input`
          : `${arch} is a decoder-only model: it has no encoder`,
      );
    }
    if (!encoderIds) return undefined;
    this.#checkIds(encoderIds, "encoderIds", 0, (s as { maxEncoder?: number }).maxEncoder);
    this.gpu.write(s.ids, Uint32Array.from(encoderIds));
    this.gpu.write(s.pos, new Uint32Array(4));
    await this.#run(await this.#plan(encoderIds.length, "last", undefined, true));
    return encoderIds.length;
  }

  /** Runs a forward plan, then `tail` (see {@linkcode Executor.run}). */
  #run(plan: ForwardPlan, tail: Step[] = []): Promise<void> {
    return this.#executor.run(plan, tail);
  }

  #checkIds(ids: readonly number[], argument: string, extra = 0, limit = this.#contextLength) {
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
    checkPositions(this.config, ids.length + extra, argument);
    if (ids.length + extra > limit) {
      throw new ArgumentError(
        argument,
        `${ids.length} prompt tokens + ${extra} new tokens exceed the context length ${limit}`,
        limit === this.#contextLength
          ? "load the model with a larger contextLength (--context)"
          : "load the model with a larger maxEncoderTokens",
      );
    }
  }

  /**
   * Teacher-forced logits: one Float32Array of `vocabSize` logits per input position, from a fresh
   * sequence (position 0); an encoder-decoder's decoder positions after its encoder has run over
   * `opts.encoderIds`. Throws `NumericError` naming the position if any is NaN or infinite.
   */
  async logits(ids: readonly number[], opts: SequenceOptions = {}): Promise<Float32Array[]> {
    this.#checkIds(ids, "ids");
    const s = this.#state, chunk = Math.min(s.maxT, s.logitRows);
    const V = this.config.vocabSize;
    const out: Float32Array[] = [];
    this.#engine?.resetSequence();
    const encoderLength = await this.#encode(opts.encoderIds);
    for (let start = 0; start < ids.length; start += chunk) {
      const part = ids.slice(start, start + chunk);
      this.gpu.write(s.ids, Uint32Array.from(part));
      this.gpu.write(s.pos, new Uint32Array([start, 0, 0, 0]));
      await this.#run(await this.#plan(part.length, "all", encoderLength));
      const flat = await this.gpu.readF32(s.logits, 0, part.length * V);
      checkLogitRows(flat, V, start);
      for (let t = 0; t < part.length; t++) out.push(flat.slice(t * V, (t + 1) * V));
    }
    return out;
  }

  /**
   * Generates up to `maxTokens` tokens after `ids`, yielding each id. Tokens are chosen on the GPU
   * (argmax, or sampling) and fed back without a CPU round trip; the CPU reads them in batches.
   * Throws `NumericError` naming the position when a row of logits is not finite.
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
    const gpu = this.gpu, s = this.#state, V = this.config.vocabSize;
    const chunk = s.maxT;
    const history = gpu.storage("activations", maxTokens * 4, "history");
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
    const advance = (n: number) =>
      advanceStep(gpu, { ids: s.ids, state: s.pos, history, advance: n, capacity: maxTokens });
    gpu.resetPeak();
    const c0 = { ...gpu.counters };
    const e0 = this.#engine ? { ...this.#engine.stats } : null;
    this.#engine?.resetSequence();
    const t0 = performance.now();
    let t1 = t0, c1 = c0, e1 = e0, produced = 0;
    try {
      const encoderLength = await this.#encode(opts.encoderIds);
      // Prefill in chunks; the last chunk's logits give the first new token.
      for (let start = 0; start < ids.length; start += chunk) {
        const part = ids.slice(start, start + chunk);
        const last = start + chunk >= ids.length;
        gpu.write(s.ids, Uint32Array.from(part));
        gpu.write(s.pos, new Uint32Array([start, 0, 0, 0]));
        await this.#run(
          await this.#plan(part.length, "last", encoderLength),
          last ? [sample, await advance(part.length)] : [],
        );
      }
      const first = await gpu.readU32(history, 0, 1);
      produced = 1;
      t1 = performance.now();
      c1 = { ...gpu.counters };
      e1 = this.#engine ? { ...this.#engine.stats } : null;
      const decodePlan = await this.#plan(1, "last", encoderLength);
      const tail = [sample, await advance(1)];
      // Decode in batches (1, 2, 4 ... 32 steps), each ending with one read of the tokens it made.
      // The next batch is queued before the current one's tokens are awaited, so the GPU always has
      // work while the CPU waits and encodes: no idle gap at each read (a gap also lets the GPU's
      // clock fall). After a stop id, at most one queued batch is computed in vain.
      let queued = produced, batch = 1;
      const queue = async () => {
        const n = Math.min(batch, maxTokens - queued);
        if (n <= 0) return null;
        for (let i = 0; i < n; i++) await this.#run(decodePlan, tail);
        const tokens = gpu.readU32(history, queued * 4, n);
        tokens.catch(() => {}); // awaited below; this keeps an early failure from going unhandled
        queued += n;
        batch = Math.min(batch * 2, 32);
        return { n, tokens };
      };
      let emitted = 0;
      let pending: number[] = [first[0]];
      let next = await queue();
      try {
        while (true) {
          for (const id of pending) {
            checkToken(id, { position: ids.length - 1 + emitted, promptTokens: ids.length });
            yield id;
            emitted++;
            if (stop.has(id) || emitted >= maxTokens) return;
          }
          if (!next) return;
          const current = next;
          next = await queue();
          pending = [...await current.tokens];
          produced += current.n;
        }
      } finally {
        // A batch queued past a stop id: let its read finish before the buffers go.
        await next?.tokens.catch(() => {});
      }
    } finally {
      const t2 = performance.now();
      const prompt = ids.length + (opts.encoderIds?.length ?? 0);
      this.lastStats = generateStats(gpu, this.mode, this.#engine, {
        t0,
        t1,
        t2,
        c1,
        e1,
        prompt,
        produced,
      });
      gpu.destroyBuffer(history);
      if (rng) gpu.destroyBuffer(rng);
    }
  }

  /**
   * Frees the GPU buffers and unmaps the weight files at once; staging buffers of the expert
   * uploader (and the device, if the model opened it) go once their pending maps have settled,
   * which the returned promise marks. Awaiting it is only needed before destroying a device the
   * caller passed in.
   */
  dispose(): Promise<void> {
    const staging = this.#engine?.dispose() ?? Promise.resolve();
    freeBuffers(this.gpu, this.#state);
    freeBuffers(this.gpu, this.#weights);
    this.#store.close();
    return staging.catch(() => {}).finally(() => {
      if (this.#ownsGpu) this.gpu.destroy();
    });
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

/**
 * Loads a MoE model onto the GPU: a Hugging Face checkpoint directory (config.json + safetensors)
 * or a GGUF file (llama.cpp's; F16, BF16, Q8_0, Q5_0, Q4_0, Q4_K, Q5_K and Q6_K weights stay as
 * stored).
 */
export function loadModel(dir: string, opts: LoadOptions = {}): Promise<Model> {
  return Model.load(dir, opts);
}
