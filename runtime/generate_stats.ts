/**
 * The statistics of a generation ({@linkcode GenerateStats}, `Model.lastStats`), assembled from the
 * GPU's and the offloading engine's counters read at three marks: the start, the first new token on
 * the CPU (the end of prefill) and the end; and the engine's running totals
 * ({@linkcode OffloadCounters}, `Model.offloadCounters`).
 *
 * @example
 * ```ts ignore
 * const stats = generateStats(gpu, "resident", null, { t0, t1, t2, c1, e1: null, prompt, produced });
 * console.log(stats.decode_tokens_per_s, stats.syncs_per_token);
 * ```
 * @module
 */
import type { Gpu } from "./base/gpu/device.ts";
import type { ExpertMode, OffloadEngine } from "./experts/engine.ts";

/** Statistics of the last `Model.generate` call. */
export interface GenerateStats {
  /** Where experts lived: resident, on-demand, prefetch-all or pregated. */
  mode: string;
  /** Pre-gate policy (exact or strict) in pregated mode, else null. */
  pregate: string | null;
  /** Implementation and adapter, e.g. `native: NVIDIA H200 [shaderF16, timestampQuery]`. */
  gpu: string;
  /** Prompt length (an encoder-decoder's: encoder tokens + decoder prefix). */
  prompt_tokens: number;
  /** Tokens generated. */
  generated_tokens: number;
  /** Seconds from the start until the first new token was on the CPU. */
  prefill_seconds: number;
  /** Prompt tokens per prefill second. */
  prefill_tokens_per_s: number;
  /** Seconds of decoding after the first token. */
  decode_seconds: number;
  /** Tokens after the first per decode second. */
  decode_tokens_per_s: number;
  /** Expert bytes copied host -> GPU per generated token (decode only; 0 when resident). */
  upload_bytes_per_token: number;
  /** GPU -> CPU syncs per generated token (decode only). */
  syncs_per_token: number;
  /** Compute dispatches per generated token (decode only). */
  dispatches_per_token: number;
  /**
   * Most bytes of device-memory buffers held at once during the call (Pregate's own accounting;
   * mappable staging and readback buffers are host-visible memory and not counted here).
   */
  peak_gpu_bytes: number;
  /**
   * Most bytes of mappable (host-visible) buffers held at once: upload staging (with the `pinned`
   * uploader, every expert's copy), readback.
   */
  peak_host_staging_bytes: number;
  /** Share of the chosen experts the pre-gate had predicted (pregated mode), else null. */
  pregate_hit_rate: number | null;
  /** Share of expert acquisitions already resident (offloading modes), else null. */
  expert_cache_hit_rate: number | null;
  /**
   * Per decode token, seconds: awaiting routing readbacks, issuing expert copies, the rest; and of
   * `upload`, the time filling staging (`upload_fill`, summed over parallel fills) and waiting for a
   * staging buffer to come back (`upload_staging_wait`), both 0 for the writeBuffer path.
   */
  time_per_token: {
    sync_wait: number;
    upload: number;
    compute: number;
    upload_fill: number;
    upload_staging_wait: number;
  };
  /** Expert slots of the offloading engine, null when resident. */
  expert_slots: number | null;
}

/** Running totals of the offloading engine (see `Model.offloadCounters`). */
export interface OffloadCounters {
  /** Chosen experts the pre-gate had predicted, in MoE layers that had a prediction. */
  pregateHits: number;
  /** Experts chosen in MoE layers that had a prediction (per batch of tokens: their union). */
  pregateChosen: number;
  /** Expert acquisitions found already resident. */
  cacheHits: number;
  /** All expert acquisitions. */
  cacheLookups: number;
  /** Expert bytes copied host -> GPU. */
  uploadBytes: number;
}

/** What {@linkcode generateStats} reads at the marks of a generation. */
export interface GenerateMarks {
  /** `performance.now()` at the start, at the first new token on the CPU, and at the end. */
  t0: number;
  t1: number;
  t2: number;
  /** The GPU's counters at the first new token. */
  c1: { syncs: number; dispatches: number };
  /** The engine's running totals at the first new token (null when resident). */
  e1: OffloadEngine["stats"] | null;
  /** Prompt tokens (an encoder-decoder's: encoder tokens + decoder prefix). */
  prompt: number;
  /** Tokens generated. */
  produced: number;
}

/**
 * The statistics of a generation: prefill over t0..t1, decode over t1..t2 (per-token figures count
 * the tokens after the first), peaks since the GPU's last `resetPeak`, hit rates over the engine's
 * totals.
 */
export function generateStats(
  gpu: Gpu,
  mode: ExpertMode,
  engine: OffloadEngine | null,
  m: GenerateMarks,
): GenerateStats {
  const c = gpu.counters, e = engine?.stats, mem = gpu.memory();
  const decoded = Math.max(m.produced - 1, 0);
  const prefill = (m.t1 - m.t0) / 1e3, decode = (m.t2 - m.t1) / 1e3;
  const per = (x: number) => (decoded ? x / decoded : 0);
  const syncWait = e && m.e1 ? e.syncSeconds - m.e1.syncSeconds : 0;
  const upload = e && m.e1 ? e.uploadSeconds - m.e1.uploadSeconds : 0;
  return {
    mode,
    pregate: mode === "pregated" ? engine!.pregatePolicy : null,
    gpu: gpu.describe(),
    prompt_tokens: m.prompt,
    generated_tokens: m.produced,
    prefill_seconds: prefill,
    prefill_tokens_per_s: m.prompt / prefill,
    decode_seconds: decode,
    decode_tokens_per_s: decoded ? decoded / decode : 0,
    upload_bytes_per_token: e && m.e1 ? per(e.uploadBytes - m.e1.uploadBytes) : 0,
    syncs_per_token: per(c.syncs - m.c1.syncs),
    dispatches_per_token: per(c.dispatches - m.c1.dispatches),
    peak_gpu_bytes: mem.peak,
    peak_host_staging_bytes: mem.host.peak,
    pregate_hit_rate: e && e.pregateChosen ? e.pregateHits / e.pregateChosen : null,
    expert_cache_hit_rate: e && e.cacheLookups ? e.cacheHits / e.cacheLookups : null,
    time_per_token: {
      sync_wait: per(syncWait),
      upload: per(upload),
      compute: per(decode - syncWait - upload),
      upload_fill: per(e && m.e1 ? e.uploadFillSeconds - m.e1.uploadFillSeconds : 0),
      upload_staging_wait: per(
        e && m.e1 ? e.uploadStagingWaitSeconds - m.e1.uploadStagingWaitSeconds : 0,
      ),
    },
    expert_slots: engine?.slots ?? null,
  };
}
