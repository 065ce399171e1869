/**
 * Where do expert copies lose their speed? The offload bench's 8-layer Qwen3 runs fill staging at
 * 1.5-2.4 GB/s (every mode, the checkpoint 100% in the page cache, 125 GiB free), the 4-layer ones
 * at 11-12 GB/s, and the bench's own upload probe (16 experts of one layer, again and again) at
 * 15.7 GB/s on the same 8-layer file. This sweeps every expert of a range of layers, as
 * prefetch-all does, and times each sweep in two ways:
 *
 * - `host`: parallel FFI `memcpy` from the mapped file into one plain host buffer (no GPU at all);
 * - `stage`: the same memcpy into one GPU staging buffer (MAP_WRITE, mapped once and kept mapped):
 *   the staging memory's own write rate, without map/unmap cycles or GPU copies;
 * - `gpu`: the engine's uploader (`mapped` on Dawn) into a pool of expert slots, as the engine does;
 *   it also prints the uploader's fill, remap-wait and WebGPU-call seconds of the sweep.
 *
 * `pause:MS-0` sleeps MS milliseconds (does a slow uploader recover when left alone?);
 * `drop:A-B` drops the process's mapping of layers A-B's experts (`madvise(MADV_DONTNEED)`: the
 * pages stay in the page cache, the page-table entries go; the next touch faults them back).
 *
 * `--gc` runs a full garbage collection between sweeps (add `--v8-flags=--expose-gc`): the
 * uploader's per-cycle `getMappedRange` leaves one external ArrayBuffer per cycle to the collector.
 *
 * Each sweep prints GB/s, the process's page faults (minor/major, from `getrusage` via
 * /proc/self/stat) and its resident memory, so a sweep that is slow because it faults the mapping
 * in (first touch) shows apart from one that is slow with the mapping in place.
 *
 * Usage: deno run -A tools/diag_fill.ts --dir CHECKPOINT [--gpu dawn] [--threads 8]
 *          [--sweeps host:0-3,host:0-3,host:0-7,host:0-7,gpu:0-7,gpu:0-7]
 *          [--buffers N] [--staging-mb MiB] [--gc]
 * @module
 */
import { parseArgs } from "node:util";
import { type GpuChoice, openGpu } from "../runtime/gpu/device.ts";
import { openCheckpoint } from "../runtime/weights/safetensors.ts";
import { loadConfig } from "../runtime/models/config.ts";
import { HostExpertStore } from "../runtime/experts/store.ts";
import { stagingPlan } from "../runtime/experts/engine.ts";
import { expertPool } from "../runtime/models/weights.ts";
import { createUploader } from "../runtime/experts/uploader.ts";
import { hostMemcpy } from "../runtime/weights/mmap.ts";
import { ArgumentError } from "../runtime/errors.ts";
import { uploadEveryExpert } from "../bench/harness.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    dir: { type: "string" },
    gpu: { type: "string", default: "dawn" },
    threads: { type: "string", default: "8" },
    sweeps: { type: "string", default: "host:0-3,host:0-3,host:0-7,host:0-7,gpu:0-7,gpu:0-7" },
    buffers: { type: "string" },
    "staging-mb": { type: "string" },
    gc: { type: "boolean", default: false },
    "min-piece-kb": { type: "string" },
  },
});
if (!values.dir) throw new ArgumentError("--dir", "expected a checkpoint folder, got nothing");
const threads = Number(values.threads);
if (!Number.isInteger(threads) || threads < 1) {
  throw new ArgumentError("--threads", `expected an integer >= 1, got '${values.threads}'`);
}
const sweeps = values.sweeps.split(",").map((s) => {
  const m = /^(host|stage|gpu|pause|drop):(\d+)-(\d+)$/.exec(s.trim());
  if (!m) {
    throw new ArgumentError(
      "--sweeps",
      `expected host|stage|gpu|pause|drop:FIRST-LAST, got '${s}'`,
    );
  }
  return {
    how: m[1] as "host" | "stage" | "gpu" | "pause" | "drop",
    first: Number(m[2]),
    last: Number(m[3]),
  };
});

const cfg = await loadConfig(values.dir);
const store = openCheckpoint(values.dir);
const host = new HostExpertStore(cfg, store);
const moe = cfg.layers.flatMap((l, i) => l.ffn.kind === "moe" ? [i] : []);
const memcpy = hostMemcpy();
if (!memcpy) throw new Error("diag_fill needs FFI (run with -A)");

function faults(): {
  minor: number;
  major: number;
  rssMiB: number;
  cpuS: number;
  sysS: number;
  nvcsw: number;
} {
  // /proc/self/stat fields 10 (minflt), 12 (majflt), 14 (utime), 15 (stime), 1-based, after the
  // parenthesised name; clock ticks of 1/100 s.
  const stat = Deno.readTextFileSync("/proc/self/stat");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const status = Deno.readTextFileSync("/proc/self/status");
  const rss = /VmRSS:\s+(\d+)/.exec(status)?.[1];
  return {
    minor: Number(f[7]),
    major: Number(f[9]),
    rssMiB: Number(rss) / 1024,
    cpuS: (Number(f[11]) + Number(f[12])) / 100,
    sysS: Number(f[12]) / 100,
    nvcsw: Number(/nonvoluntary_ctxt_switches:\s+(\d+)/.exec(status)?.[1]),
  };
}

// Host destination: one 64 MiB buffer, pieces written round-robin into it.
const dst = new Uint8Array(new ArrayBuffer(64 << 20));
dst.fill(1);
const dstPtr = Deno.UnsafePointer.of(dst)!;

async function hostSweep(
  layers: number[],
  dstPtr: Deno.PointerObject,
  dstBytes: number,
): Promise<number> {
  let bytes = 0, at = 0;
  for (const layer of layers) {
    for (let e = 0; e < host.experts; e++) {
      const t = host.tensors(layer, e);
      const jobs: Promise<void>[] = [];
      for (const x of [t.gate, t.up, t.down].filter((x) => x !== undefined)) {
        const src = x.bytes();
        void src.buffer;
        const sp = Deno.UnsafePointer.of(src as Uint8Array<ArrayBuffer>)!;
        const n = src.byteLength, step = Math.ceil(n / threads / 64) * 64;
        for (let p = 0; p < n; p += step) {
          const len = Math.min(step, n - p);
          if (at + len > dstBytes) at = 0;
          jobs.push(memcpy!.copyAsync(
            Deno.UnsafePointer.offset(dstPtr, at)!,
            Deno.UnsafePointer.offset(sp, p)!,
            len,
          ));
          at += len;
        }
        bytes += n;
      }
      await Promise.all(jobs);
    }
  }
  return bytes;
}

const gpu = sweeps.some((s) => s.how !== "host")
  ? await openGpu({ gpu: values.gpu as GpuChoice })
  : null;
const slots = 16;
const pool = gpu ? expertPool(gpu, host.experts, slots, host.inter, host.hidden, host.dtype) : null;
const uploader = gpu
  ? createUploader(gpu, "auto", {
    ...stagingPlan(host.bytesPerExpert, slots),
    ...(values.buffers ? { buffers: Number(values.buffers) } : {}),
    ...(values["staging-mb"] ? { stagingBytes: Number(values["staging-mb"]) << 20 } : {}),
    threads,
    ...(values["min-piece-kb"] ? { minPieceBytes: Number(values["min-piece-kb"]) << 10 } : {}),
  })
  : null;
// One staging buffer held mapped for `stage` sweeps.
const stage = gpu
  ? gpu.createBuffer({
    size: 64 << 20,
    purpose: "staging",
    label: "diag.stage",
    usage: GPUBufferUsage.MAP_WRITE | GPUBufferUsage.COPY_SRC,
    mappedAtCreation: true,
  })
  : null;
const stagePtr = stage ? Deno.UnsafePointer.of(stage.getMappedRange(0, 64 << 20))! : null;
/** Drops the process's mapping of layers' experts (`MADV_DONTNEED`); returns their bytes. */
function drop(layers: number[]): number {
  const tensors = layers.flatMap((l) =>
    Array.from({ length: host.experts }, (_, e) => Object.values(host.tensors(l, e))).flat()
  );
  if (!store.advise("dontneed", tensors.map((t) => t.name))) {
    throw new Error("madvise(MADV_DONTNEED) failed");
  }
  return tensors.reduce((n, t) => n + t.byteLength, 0);
}
const gc = (globalThis as { gc?: () => void }).gc;
if (values.gc && !gc) throw new ArgumentError("--gc", "needs --v8-flags=--expose-gc");

async function gpuSweep(layers: number[]): Promise<number> {
  const bytes = await uploadEveryExpert(host, uploader!, pool!, layers, slots);
  await gpu!.sync();
  return bytes;
}

console.log(
  `diag_fill: ${values.dir}: ${moe.length} MoE layers x ${host.experts} experts of ` +
    `${(host.bytesPerExpert / 2 ** 20).toFixed(1)} MiB; ${threads} threads; ` +
    `${gpu ? gpu.describe() : "host only"}; page cache ${
      ((store.resident() ?? NaN) * 100).toFixed(1)
    }%`,
);
for (const s of sweeps) {
  if (s.how === "pause") {
    await new Promise((r) => setTimeout(r, s.first));
    console.log(`pause ${s.first} ms`);
    continue;
  }
  const layers = moe.slice(s.first, s.last + 1);
  if (!layers.length) throw new ArgumentError("--sweeps", `no MoE layers ${s.first}-${s.last}`);
  if (s.how === "drop") {
    const b = drop(layers);
    console.log(
      `drop layers ${s.first}-${s.last}: ${(b / 2 ** 30).toFixed(2)} GiB unmapped; RSS ` +
        `${faults().rssMiB.toFixed(0)} MiB`,
    );
    continue;
  }
  if (s.how === "gpu" && !gpu) throw new Error("unreachable");
  if (values.gc) gc!();
  // Event-loop lag: the longest gap between ticks of a 1 ms timer during the sweep.
  let lag = 0, last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    lag = Math.max(lag, now - last);
    last = now;
  }, 1);
  const f0 = faults(), u0 = uploader?.stats, t0 = performance.now();
  const bytes = s.how === "host"
    ? await hostSweep(layers, dstPtr, dst.byteLength)
    : s.how === "stage"
    ? await hostSweep(layers, stagePtr!, 64 << 20)
    : await gpuSweep(layers);
  const sec = (performance.now() - t0) / 1e3, f1 = faults(), u1 = uploader?.stats;
  clearInterval(timer);
  const up = s.how === "gpu" && u0 && u1
    ? `; uploader fill ${(u1.fillSeconds - u0.fillSeconds).toFixed(2)} s (summed over ` +
      `concurrent fills), remap wait ${(u1.waitSeconds - u0.waitSeconds).toFixed(2)} s, ` +
      `WebGPU calls ${(u1.callSeconds - u0.callSeconds).toFixed(2)} s, cycles ${u1.cycles}`
    : "";
  console.log(
    `${s.how} layers ${s.first}-${s.last}: ${(bytes / 2 ** 30).toFixed(2)} GiB in ` +
      `${sec.toFixed(2)} s = ${(bytes / sec / 1e9).toFixed(2)} GB/s; faults minor ` +
      `${f1.minor - f0.minor} major ${f1.major - f0.major}; RSS ${f1.rssMiB.toFixed(0)} MiB; CPU ` +
      `${(f1.cpuS - f0.cpuS).toFixed(2)} s (sys ${(f1.sysS - f0.sysS).toFixed(2)}); involuntary ` +
      `switches ${f1.nvcsw - f0.nvcsw}; event-loop lag ${lag.toFixed(1)} ms${up}`,
  );
}
await uploader?.dispose();
if (stage) {
  stage.unmap();
  gpu!.destroyBuffer(stage);
}
store.close();
gpu?.destroy();
