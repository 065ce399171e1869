/**
 * Benchmark helpers: GPU timing (timestamp queries when the device has them, else wall clock around a
 * submit + sync), medians, and a results table that prints each figure beside its ceiling.
 * @module
 */
import type { Dispatch, Gpu } from "../runtime/base/gpu/device.ts";
import { ArgumentError } from "../runtime/base/errors.ts";
import { makeModel } from "../runtime/models/make_model.ts";
import type { ClockSampler } from "./clock.ts";
import { HostExpertStore } from "../runtime/experts/store.ts";
import {
  createUploader,
  PinnedUploader,
  type Uploader,
  type UploadPath,
} from "../runtime/experts/uploader.ts";
import { hostMemcpy } from "../runtime/weights/mmap.ts";
import { type ExpertPool, expertPool } from "../runtime/models/weights.ts";
import { stagingPlan } from "../runtime/experts/pool_size.ts";
import { loadModelConfig, openModelStore } from "../runtime/models/gguf_model.ts";
import { convertToGguf, type ConvertType } from "../runtime/models/gguf_convert.ts";

/** Median of a list of numbers. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Options of {@linkcode gpuTime}. */
export interface GpuTimeOptions {
  /** Runs per sample, in one compute pass (default 10). */
  inner?: number;
  /** Timed samples (default 7); the result is their median. */
  samples?: number;
  /** Untimed samples before them (default 2). */
  warmup?: number;
  /** Milliseconds of untimed runs first (default 1000 on a GPU, 0 on a software adapter). */
  warmupMs?: number;
  /**
   * The SM clock sampler (`bench/clock.ts`): the result then carries the clock range seen while the
   * samples ran, and a measurement whose clock fell below 90% of the maximum is repeated (up to
   * `attempts` in all, default 3; the one with the highest lowest clock is kept); see
   * docs/decisions.md, "Benchmarks warm up and watch the clock".
   */
  clock?: ClockSampler | null;
  attempts?: number;
}

/** What {@linkcode gpuTime} measured. */
export interface GpuTime {
  seconds: number;
  how: "timestamps" | "wall";
  /** SM clock range (MHz) during the timed samples, with a `clock` sampler that saw some. */
  clock?: { min: number; max: number };
  /** Measurements made (more than 1 when the clock fell). */
  attempts?: number;
}

/**
 * Seconds the GPU spends on one run of `dispatches` (median over `samples`, each sample timing
 * `inner` back-to-back runs in one compute pass, after `warmupMs` of untimed runs and `warmup`
 * untimed samples). Uses timestamp queries when available (`how: "timestamps"`), else wall clock
 * around submit + sync, which includes the sync cost (`how: "wall"`). With `clock`, measurements at
 * a fallen SM clock are repeated (see {@linkcode GpuTimeOptions.clock}).
 */
export async function gpuTime(
  gpu: Gpu,
  dispatches: readonly Dispatch[],
  opts: GpuTimeOptions = {},
): Promise<GpuTime> {
  const clock = opts.clock ?? null;
  const attempts = clock ? Math.max(1, opts.attempts ?? 3) : 1;
  let best: GpuTime | undefined;
  for (let a = 1; a <= attempts; a++) {
    const r = await gpuTimeOnce(gpu, dispatches, opts);
    // The clock over the timed samples (the sampler's period can exceed them: from 200 ms before).
    const range = clock?.range(r.timedFrom - 200, performance.now()) ?? undefined;
    if (!best || (range && (!best.clock || range.min > best.clock.min))) {
      best = { seconds: r.seconds, how: r.how, clock: range };
    }
    best.attempts = a;
    const max = clock?.maxMhz;
    if (!range || !max || range.min >= 0.9 * max) break;
  }
  return best!;
}

async function gpuTimeOnce(
  gpu: Gpu,
  dispatches: readonly Dispatch[],
  opts: GpuTimeOptions,
): Promise<{ seconds: number; how: "timestamps" | "wall"; timedFrom: number }> {
  const inner = opts.inner ?? 10, samples = opts.samples ?? 7, warmup = opts.warmup ?? 2;
  const device = gpu.device;
  // Keep the GPU busy with the same work first, so it runs at its full clock when timed (see
  // docs/decisions.md). One timed batch, then enough batches queued for `warmupMs` and one wait.
  const warmupMs = opts.warmupMs ?? (gpu.isFallback ? 0 : 1000);
  /** `inner` runs of the dispatches in one pass (timestamped at its ends when `qs` is given). */
  const encode = (qs?: GPUQuerySet) => {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass(
      qs
        ? {
          timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 },
        }
        : {},
    );
    for (let i = 0; i < inner; i++) {
      for (const d of dispatches) {
        pass.setPipeline(d.pipeline);
        pass.setBindGroup(0, d.bindGroup);
        pass.dispatchWorkgroups(...d.workgroups);
      }
    }
    pass.end();
    return enc;
  };
  const batch = () => device.queue.submit([encode().finish()]);
  if (warmupMs > 0) {
    const t0 = performance.now();
    batch();
    await gpu.sync();
    const each = Math.max(performance.now() - t0, 0.05);
    for (let i = Math.min(2000, Math.ceil(warmupMs / each)); i > 0; i--) batch();
    await gpu.sync();
  }
  const useTs = gpu.features.timestampQuery;
  let qs: GPUQuerySet | undefined, resolve: GPUBuffer | undefined;
  if (useTs) {
    qs = device.createQuerySet({ type: "timestamp", count: 2 });
    resolve = gpu.createBuffer({
      size: 16,
      purpose: "other",
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
  }
  const times: number[] = [];
  let timedFrom = performance.now();
  for (let s = 0; s < warmup + samples; s++) {
    if (s === warmup) timedFrom = performance.now();
    const enc = encode(qs);
    if (qs) enc.resolveQuerySet(qs, 0, 2, resolve!, 0);
    const t0 = performance.now();
    device.queue.submit([enc.finish()]);
    let sec: number;
    if (qs) {
      const ts = new BigUint64Array(await gpu.read(resolve!, 0, 16));
      sec = Number(ts[1] - ts[0]) / 1e9;
    } else {
      await gpu.sync();
      sec = (performance.now() - t0) / 1e3;
    }
    if (s >= warmup) times.push(sec / inner);
  }
  qs?.destroy();
  if (resolve) gpu.destroyBuffer(resolve);
  return { seconds: median(times), how: useTs ? "timestamps" : "wall", timedFrom };
}

/** Median wall-clock seconds of an async function, after warm-up. */
export async function wallTime(
  fn: () => Promise<unknown> | unknown,
  opts: { samples?: number; warmup?: number } = {},
): Promise<number> {
  const samples = opts.samples ?? 7, warmup = opts.warmup ?? 2;
  const times: number[] = [];
  for (let s = 0; s < warmup + samples; s++) {
    const t0 = performance.now();
    await fn();
    if (s >= warmup) times.push((performance.now() - t0) / 1e3);
  }
  return median(times);
}

/** One row of a results table. */
export interface ResultRow {
  /** What was measured (shape, dtype...). */
  name: string;
  /** The measured figure. */
  value: number;
  /** Its unit, e.g. "GB/s". */
  unit: string;
  /** The ceiling it is compared with, in the same unit (when there is one). */
  ceiling?: number;
  /** Where the ceiling comes from. */
  ceilingNote?: string;
  /** Extra notes (timing method, validation error...). */
  note?: string;
}

/** Formats rows as a markdown table with a "% of ceiling" column. */
export function markdownTable(rows: readonly ResultRow[]): string {
  const f = (x: number) => x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toPrecision(3);
  const lines = [
    "| measurement | value | ceiling | % of ceiling | notes |",
    "|---|---|---|---|---|",
  ];
  for (const r of rows) {
    const c = r.ceiling === undefined ? "-" : `${f(r.ceiling)} ${r.unit} (${r.ceilingNote ?? ""})`;
    const pct = r.ceiling ? `${(100 * r.value / r.ceiling).toFixed(1)}%` : "-";
    lines.push(`| ${r.name} | ${f(r.value)} ${r.unit} | ${c} | ${pct} | ${r.note ?? ""} |`);
  }
  return lines.join("\n");
}

/**
 * The directory of the `make-model` checkpoint named by `spec` (`arch:preset:layers:dtype`) under
 * `root`, written first (seed 1) if it is not there yet. `overrides` (other make-model dimensions)
 * are added to the directory's name. Benches and tools share the checkpoints this way.
 * @throws {ArgumentError} naming `what` when the spec is malformed.
 */
export async function benchCheckpoint(
  spec: string,
  root: string,
  opts: { overrides?: Record<string, number>; log?: (m: string) => void; what?: string } = {},
): Promise<string> {
  const [arch, preset, layers, dtype, ...rest] = spec.split(":");
  if (!arch || !preset || !(Number(layers) >= 1) || !dtype || rest.length) {
    throw new ArgumentError(
      opts.what ?? "spec",
      `expected arch:preset:layers:dtype (e.g. mixtral:mixtral-8x7b:2:bf16), got '${spec}'`,
    );
  }
  const overrides = opts.overrides ?? {};
  const tag = Object.entries(overrides).map(([k, v]) => `${k}${v}`).join("-");
  const dir = `${root}/${arch}-${preset}-${layers}-${dtype}${tag ? `-${tag}` : ""}`;
  try {
    await Deno.stat(`${dir}/config.json`);
  } catch {
    const t0 = performance.now();
    const made = await makeModel({
      arch,
      preset,
      out: dir,
      dtype,
      seed: 1,
      overrides: { ...overrides, layers: Number(layers) },
    });
    opts.log?.(
      `wrote ${dir}: ${(made.tensorBytes / 2 ** 30).toFixed(2)} GiB in ` +
        `${((performance.now() - t0) / 1e3).toFixed(1)} s`,
    );
  }
  return dir;
}

/**
 * The kernel's memory figures in bytes (Linux `/proc/meminfo`: `MemTotal`, `Dirty`, ...), or null
 * where the file cannot be read.
 */
export async function meminfo(): Promise<Record<string, number> | null> {
  const info = await Deno.readTextFile("/proc/meminfo").catch(() => null);
  if (info === null) return null;
  const out: Record<string, number> = {};
  for (const m of info.matchAll(/^(\w+):\s+(\d+) kB/gm)) out[m[1]] = Number(m[2]) * 1024;
  return out;
}

/**
 * `checkpoint` as a GGUF file of `type` (`<checkpoint>-<type>.gguf` beside it), converted first if
 * it is not there yet.
 */
export async function benchGguf(
  checkpoint: string,
  type: ConvertType,
  log: (m: string) => void = () => {},
): Promise<string> {
  const out = `${checkpoint}-${type}.gguf`;
  if (!(await Deno.stat(out).catch(() => null))) {
    log(`converting ${checkpoint} to ${out}`);
    const r = await convertToGguf({ model: checkpoint, out, type, log });
    log(`${out}: ${(r.bytes / 2 ** 30).toFixed(2)} GiB, tensors ${JSON.stringify(r.types)}`);
  }
  return out;
}

/** Writes a bench's results: `md` to `<prefix>.md`, `data` as JSON to `<prefix>.json`. */
export async function writeResults(prefix: string, md: string, data: unknown): Promise<void> {
  await Deno.writeTextFile(`${prefix}.md`, md);
  await Deno.writeTextFile(`${prefix}.json`, JSON.stringify(data, null, 2) + "\n");
}

/** Dirty page-cache bytes (Linux `/proc/meminfo`), or null where the file cannot be read. */
export async function dirtyBytes(): Promise<number | null> {
  return (await meminfo())?.Dirty ?? null;
}

/**
 * Before timing: when more than `threshold` bytes of the page cache are dirty (files written and not
 * yet on disk, e.g. a checkpoint copied in just before), runs `sync` so that the kernel's writeback
 * does not run during the measurement (docs/decisions.md).
 * Returns the dirty bytes before and after, or null off Linux.
 */
export async function settleWriteback(
  log: (m: string) => void = () => {},
  threshold = 256 * 2 ** 20,
): Promise<{ before: number; after: number } | null> {
  const before = await dirtyBytes();
  if (before === null) return null;
  if (before <= threshold) return { before, after: before };
  const t0 = performance.now();
  await new Deno.Command("sync").output();
  const after = (await dirtyBytes()) ?? 0;
  log(
    `${(before / 2 ** 30).toFixed(2)} GiB of the page cache dirty: sync took ` +
      `${((performance.now() - t0) / 1e3).toFixed(1)} s (${(after / 2 ** 30).toFixed(2)} GiB left)`,
  );
  return { before, after };
}

/**
 * Copies every expert of `layers` once through `up` into slots 0 .. slots-1 of `pool`, a layer's
 * experts in batches of `slots` (each batch flushed, as the engine copies a layer's experts);
 * returns the bytes copied. The caller syncs the GPU before reading its clock.
 */
export async function uploadEveryExpert(
  host: HostExpertStore,
  up: Uploader,
  pool: ExpertPool,
  layers: readonly number[],
  slots: number,
): Promise<number> {
  let bytes = 0;
  for (const layer of layers) {
    for (let e0 = 0; e0 < host.experts; e0 += slots) {
      const n = Math.min(slots, host.experts - e0);
      const batch = Array.from({ length: n }, (_, s) => ({ expert: e0 + s, slot: s }));
      bytes += await host.uploadMany(up, layer, batch, pool);
      up.flush();
    }
  }
  return bytes;
}

/**
 * Host->GPU GB/s of expert copies from the mapped checkpoint in `dir` (or GGUF file) into slots, through the
 * uploader the engine uses (`path`): the median of batches of one layer's first experts (as the
 * engine copies a layer's experts), or with `sweep` one copy of every expert of every MoE layer.
 * The copy ceiling the offloading benches compare with.
 */
export async function measureUploadRate(
  gpu: Gpu,
  dir: string,
  path: UploadPath | "auto",
  sweep = false,
): Promise<number> {
  const cfg = await loadModelConfig(dir);
  const store = openModelStore(dir, cfg);
  const host = new HostExpertStore(cfg, store);
  const slots = Math.max(2, Math.min(16, Math.floor(2 ** 30 / host.bytesPerExpert)));
  const pool = expertPool(gpu, host.experts, slots, host.inter, host.hidden, host.types, host.act);
  const layer = cfg.layers.findIndex((l) => l.ffn.kind === "moe");
  const moe = cfg.layers.flatMap((l, i) => l.ffn.kind === "moe" ? [i] : []);
  // The engine's staging ring for a layer of `slots` experts (runtime/experts/engine.ts), or the
  // pinned copy of the layers copied (every MoE layer for a sweep, else the first).
  const uploader = path === "pinned"
    ? await PinnedUploader.create(gpu, host.sources(sweep ? moe : [layer]), {
      memcpy: hostMemcpy(),
    })
    : createUploader(gpu, path, stagingPlan(host.bytesPerExpert, slots));
  const rates: number[] = [];
  if (sweep) {
    // Every expert of every MoE layer once.
    const t0 = performance.now();
    const bytes = await uploadEveryExpert(host, uploader, pool, moe, slots);
    await gpu.sync();
    rates.push(bytes / ((performance.now() - t0) / 1e3) / 1e9);
  } else {
    for (let rep = 0; rep < 4; rep++) {
      const t0 = performance.now();
      const batch = Array.from(
        { length: slots },
        (_, s) => ({ expert: s % host.experts, slot: s }),
      );
      const bytes = await host.uploadMany(uploader, layer, batch, pool);
      uploader.flush();
      await gpu.sync();
      if (rep > 0) rates.push(bytes / ((performance.now() - t0) / 1e3) / 1e9);
    }
  }
  await uploader.dispose();
  for (const b of [pool.gate, pool.up, pool.down, pool.table]) if (b) gpu.destroyBuffer(b);
  store.close();
  return median(rates);
}
