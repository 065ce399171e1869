/**
 * Soak test of the mapped-staging uploader (runtime/experts/uploader.ts) before it may become the
 * default on Dawn: ../shared/docs/platform.md reports dawn.node crashing after a few dozen 64 MB
 * map/unmap cycles. Runs many upload cycles of random data, verifies the destination against a
 * host copy every few cycles, and reports throughput and cycle counts. A crash shows as the process's
 * exit status (e.g. 139 for a segfault); a data mismatch exits 1.
 *
 * Run on the GPU host (device workflow):
 *   source .device/env.sh && deno run -A tools/soak_upload.ts --gpu dawn --cycles 5000 --mb 64
 * @module
 */
import { parseArgs } from "node:util";
import { type GpuChoice, openGpu } from "../runtime/gpu/device.ts";
import { createUploader } from "../runtime/experts/uploader.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    gpu: { type: "string", default: "dawn" },
    cycles: { type: "string", default: "5000" },
    mb: { type: "string", default: "64" },
    buffers: { type: "string", default: "3" },
    "verify-every": { type: "string", default: "100" },
    path: { type: "string", default: "mapped" },
  },
});
const cycles = Number(values.cycles), mb = Number(values.mb);
const verifyEvery = Number(values["verify-every"]);
const gpu = await openGpu({ gpu: values.gpu as GpuChoice, log: console.error });
console.log(`soak: ${gpu.describe()}, ${values.path} path, ${cycles} cycles of ${mb} MiB`);
const chunk = mb << 20;
const slots = 4;
const dst = gpu.storage("experts", chunk * slots, "soak.dst");
const up = createUploader(gpu, values.path as "mapped" | "write", {
  stagingBytes: chunk,
  buffers: Number(values.buffers),
});
// A few distinct random sources (like experts in a mapped file), rotated.
const sources = Array.from({ length: 3 }, (_, k) => {
  const a = new Uint32Array(chunk / 4);
  let x = 0x9e3779b9 ^ (k * 7919);
  for (let i = 0; i < a.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    a[i] = x >>> 0;
  }
  return new Uint8Array(a.buffer);
});
const expected: number[] = Array(slots).fill(-1);
const t0 = performance.now();
let bytes = 0;
for (let c = 1; c <= cycles; c++) {
  const slot = c % slots, src = c % sources.length;
  await up.upload(dst, slot * chunk, sources[src]);
  expected[slot] = src;
  bytes += chunk;
  if (c % verifyEvery === 0 || c === cycles) {
    up.flush();
    for (let s = 0; s < slots; s++) {
      if (expected[s] < 0) continue;
      // Check a 64 KiB window at a cycle-dependent place in each slot.
      const at = ((c * 4099) % (chunk - 65536)) & ~3;
      const got = new Uint8Array(await gpu.read(dst, s * chunk + at, 65536));
      const want = sources[expected[s]].subarray(at, at + 65536);
      if (got.some((v, i) => v !== want[i])) {
        console.error(`MISMATCH at cycle ${c}, slot ${s}, offset ${at}`);
        Deno.exit(1);
      }
    }
    const sec = (performance.now() - t0) / 1e3;
    console.log(`cycle ${c}: ${(bytes / sec / 1e9).toFixed(2)} GB/s, verified`);
  }
}
up.dispose();
gpu.destroy();
console.log(`soak passed: ${cycles} cycles, ${(bytes / 2 ** 30).toFixed(1)} GiB`);
