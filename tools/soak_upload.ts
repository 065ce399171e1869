/**
 * Soak test and throughput probe of the expert uploader (runtime/experts/uploader.ts), the `mapped`
 * path by default: staging buffers filled by parallel FFI `memcpy` from a memory-mapped file, as the
 * engine does with a checkpoint. ../shared/docs/platform.md reports dawn.node crashing after a few
 * dozen 64 MB map/unmap cycles; this runs thousands.
 *
 * Every cycle uploads one chunk (a view of a temporary file of random bytes, mapped with
 * `openMapped`) into one of `--slots` destination slots. Every `--verify-every` cycles it flushes,
 * waits for the GPU, reads every slot back and compares it byte for byte with the source (and the
 * zero padding of a ragged tail). It prints GB/s per window (host bytes / wall time from the first
 * upload of the window to the GPU finishing its copies; verification excluded) and overall, then a
 * final `PASS` or `FAIL` line. Exit status: 0 passed, 1 data mismatch, 2 error (a GPU error, a
 * rejected map); a crash shows as the signal's status (139 for a segfault).
 *
 * Flags (defaults in brackets):
 *   --gpu dawn|native|auto [dawn]   --path mapped|write [mapped]
 *   --cycles N [5000]               --mb MiB per chunk, fractions allowed [64]
 *   --staging-mb MiB per staging buffer [= --mb]   --buffers N staging buffers [3]
 *   --threads N or a list 1,4,8 (one run each) [min(8, cores)]
 *   --min-piece-kb KiB per parallel memcpy [256]  --fill auto|ffi|set [auto]
 *   --source mmap|heap [mmap]
 *   --ragged  chunk lengths vary (ragged tails) and sources start at odd offsets
 *   --slots N [4]   --verify-every N [100]   --json FILE  (results as JSON)
 *   --parts N [1]   each chunk goes as N ranges in one `uploadMany` (the engine's path: an
 *                   expert's tensors, a layer's experts, in one batch)
 *   --gc-every N  force a full GC every N cycles (needs --v8-flags=--expose-gc): provokes the
 *                 collection of detached mapped ArrayBuffers, a suspected crash trigger
 *
 * Run on the GPU host (device workflow):
 *   source .device/env.sh && deno run -A tools/soak_upload.ts --gpu dawn --cycles 3000 --mb 64 \
 *     --verify-every 250
 * Here (llvmpipe, slow maps): deno run -A tools/soak_upload.ts --gpu native --cycles 20 --mb 4
 * @module
 */
import { parseArgs } from "node:util";
import { type GpuChoice, openGpu } from "../runtime/gpu/device.ts";
import {
  createUploader,
  type Uploader,
  type UploaderOptions,
} from "../runtime/experts/uploader.ts";
import { type MappedFile, openMapped } from "../runtime/weights/mmap.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    gpu: { type: "string", default: "dawn" },
    path: { type: "string", default: "mapped" },
    cycles: { type: "string", default: "5000" },
    mb: { type: "string", default: "64" },
    "staging-mb": { type: "string" },
    buffers: { type: "string", default: "3" },
    threads: { type: "string" },
    "min-piece-kb": { type: "string", default: "256" },
    fill: { type: "string", default: "auto" },
    source: { type: "string", default: "mmap" },
    ragged: { type: "boolean", default: false },
    slots: { type: "string", default: "4" },
    "verify-every": { type: "string", default: "100" },
    "gc-every": { type: "string", default: "0" },
    json: { type: "string" },
    parts: { type: "string", default: "1" },
  },
});

function num(name: string, v: string | undefined, min: number): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < min) {
    console.error(`soak: --${name} expects a number >= ${min}, got '${v}'`);
    Deno.exit(2);
  }
  return n;
}

const cycles = Math.floor(num("cycles", values.cycles, 1));
const chunk = Math.floor(num("mb", values.mb, 1 / 1024) * 2 ** 20 / 4) * 4;
const stagingBytes = Math.floor(
  num("staging-mb", values["staging-mb"] ?? values.mb, 1 / 4096) *
    2 ** 20 / 4,
) * 4;
const slots = Math.floor(num("slots", values.slots, 1));
const verifyEvery = Math.floor(num("verify-every", values["verify-every"], 1));
const gcEvery = Math.floor(num("gc-every", values["gc-every"], 0));
const parts = Math.floor(num("parts", values.parts, 1));
const threadList: (number | undefined)[] = values.threads
  ? values.threads.split(",").map((t) => Math.floor(num("threads", t, 1)))
  : [undefined];
const path = values.path as "mapped" | "write";
const gc = (globalThis as { gc?: () => void }).gc;
if (gcEvery > 0 && !gc) {
  console.error("soak: --gc-every needs `deno run --v8-flags=--expose-gc ...`");
  Deno.exit(2);
}

const gpu = await openGpu({ gpu: values.gpu as GpuChoice, log: console.error });
console.log(
  `soak: ${gpu.describe()}, ${path} path, ${cycles} cycles of ${chunk / 2 ** 20} MiB` +
    (values.ragged ? " (ragged)" : "") + `, ${values.source} sources, ${slots} slots`,
);

// Three sources (like experts in a checkpoint), with room for ragged starts: in a mapped temporary
// file (default; page cache warm once written) or in JS memory.
const SOURCES = 3;
const span = chunk + 64;
const random = new Uint8Array(SOURCES * span);
{
  const words = new Uint32Array(random.buffer);
  let x = 0x9e3779b9;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
}
let file: MappedFile | null = null;
let dir = "";
if (values.source === "mmap") {
  dir = await Deno.makeTempDir({ prefix: "pregate_soak_" });
  await Deno.writeFile(`${dir}/sources.bin`, random);
  file = openMapped(`${dir}/sources.bin`, { mode: "mmap", log: console.error });
  file.advise(0, file.byteLength, "willneed");
}
const source = (k: number, from: number, len: number): Uint8Array =>
  file ? file.bytes(k * span + from, len) : random.subarray(k * span + from, k * span + from + len);

const dst = gpu.storage("experts", chunk * slots, "soak.dst");

/** Byte-compares the slot's readback with what was uploaded there; returns the first bad offset. */
function check(got: Uint8Array, want: Uint8Array): number {
  const n = want.length;
  if (want.byteOffset % 4 === 0) {
    const a = new Uint32Array(got.buffer, got.byteOffset, n >> 2);
    const b = new Uint32Array(want.buffer, want.byteOffset, n >> 2);
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i * 4;
  } else {
    for (let i = 0; i < (n & ~3); i++) if (got[i] !== want[i]) return i;
  }
  for (let i = n & ~3; i < n; i++) if (got[i] !== want[i]) return i;
  for (let i = n; i < got.length; i++) if (got[i] !== 0) return i; // ragged tail padding
  return -1;
}

interface RunResult {
  threads: number;
  fill: string;
  ok: boolean;
  cycles: number;
  gbPerS: number;
  stats: Uploader["stats"];
  error?: string;
}

async function run(threads: number | undefined): Promise<RunResult> {
  const opts: UploaderOptions = {
    stagingBytes,
    buffers: Number(values.buffers),
    threads,
    minPieceBytes: Math.max(64, Math.floor(Number(values["min-piece-kb"]) * 1024)),
    fill: values.fill as UploaderOptions["fill"],
    log: console.error,
  };
  const up = createUploader(gpu, path, opts);
  const st0 = up.stats;
  const label = path === "mapped"
    ? `${st0.fill} x${st0.threads}, ${opts.buffers} x ${stagingBytes / 2 ** 20} MiB staging`
    : "writeBuffer";
  console.log(`run: ${label}`);
  const expected: ({ k: number; from: number; len: number } | null)[] = Array(slots).fill(null);
  let seed = 12345;
  const rand = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  let bytes = 0, timed = 0, windowBytes = 0, ok = true, done = 0;
  let t0 = performance.now();
  try {
    for (let c = 1; c <= cycles; c++) {
      const slot = c % slots, k = c % SOURCES;
      const len = values.ragged ? chunk - rand(Math.min(chunk >> 1, 4096) + 1) : chunk;
      const from = values.ragged ? rand(64) : 0;
      const data = source(k, from, len);
      if (parts === 1) await up.upload(dst, slot * chunk, data);
      else {
        const step = Math.ceil(len / parts / 4) * 4;
        const items = [];
        for (let p = 0; p < len; p += step) {
          items.push({
            dst,
            offset: slot * chunk + p,
            data: data.subarray(p, Math.min(len, p + step)),
          });
        }
        await up.uploadMany(items);
      }
      expected[slot] = { k, from, len };
      bytes += len;
      windowBytes += len;
      done = c;
      if (gcEvery && c % gcEvery === 0) gc!();
      if (c % verifyEvery !== 0 && c !== cycles) continue;
      up.flush();
      await gpu.sync();
      const sec = (performance.now() - t0) / 1e3;
      timed += sec;
      for (let s = 0; s < slots && ok; s++) {
        const e = expected[s];
        if (!e) continue;
        const padded = (e.len + 3) & ~3;
        const got = new Uint8Array(await gpu.read(dst, s * chunk, padded));
        const bad = check(got, source(e.k, e.from, e.len));
        if (bad >= 0) {
          ok = false;
          console.log(
            `MISMATCH at cycle ${c}, slot ${s}, byte ${bad} of ${e.len}: got ${got[bad]}, ` +
              `want ${bad < e.len ? source(e.k, e.from, e.len)[bad] : 0}`,
          );
        }
      }
      const st = up.stats;
      console.log(
        `cycle ${c}: ${(windowBytes / sec / 1e9).toFixed(2)} GB/s (window), ` +
          `${(bytes / timed / 1e9).toFixed(2)} GB/s (all), ${ok ? "verified" : "MISMATCH"}; ` +
          `staging cycles ${st.cycles}, fill ${st.fillSeconds.toFixed(2)} s, ` +
          `wait ${st.waitSeconds.toFixed(2)} s`,
      );
      if (!ok) break;
      windowBytes = 0;
      t0 = performance.now();
    }
    await up.dispose();
    return {
      threads: st0.threads,
      fill: st0.fill,
      ok,
      cycles: done,
      gbPerS: bytes / timed / 1e9,
      stats: up.stats,
    };
  } catch (e) {
    const error = e instanceof Error ? e.message : String(e);
    console.log(`ERROR at cycle ${done + 1}: ${error}`);
    return {
      threads: st0.threads,
      fill: st0.fill,
      ok: false,
      cycles: done,
      gbPerS: NaN,
      stats: up.stats,
      error,
    };
  }
}

const results: RunResult[] = [];
for (const t of threadList) {
  const r = await run(t);
  results.push(r);
  if (!r.ok) break;
}
gpu.destroyBuffer(dst);
file?.close();
if (dir) await Deno.remove(dir, { recursive: true });
gpu.destroy();

if (values.json) {
  await Deno.writeTextFile(
    values.json,
    JSON.stringify({ device: gpu.describe(), path, chunk, stagingBytes, cycles, results }, null, 2),
  );
}
const summary = results.map((r) =>
  `${path === "mapped" ? `${r.fill} x${r.threads}` : "write"}: ${r.cycles} cycles, ` +
  `${r.gbPerS.toFixed(2)} GB/s`
).join("; ");
const total = results.reduce((a, r) => a + r.stats.bytes, 0) / 2 ** 30;
if (results.every((r) => r.ok)) {
  console.log(`PASS: ${summary} (${total.toFixed(1)} GiB uploaded)`);
} else {
  const failed = results.find((r) => !r.ok)!;
  console.log(`FAIL: ${summary}${failed.error ? ` (${failed.error})` : " (data mismatch)"}`);
  Deno.exit(failed.error ? 2 : 1);
}
