/**
 * Ceilings measured on the device itself: the bandwidth of a streaming-read WGSL kernel (what a
 * memory-bound kernel such as GEMV can at best reach) and the rate of an FMA-only kernel (what a
 * compute-bound kernel such as matmul can at best reach without tensor cores).
 * @module
 */
import type { Gpu, PipelineSource } from "../runtime/base/gpu/device.ts";
import { gpuTime } from "./harness.ts";
import type { ClockSampler } from "./clock.ts";

const STREAM: PipelineSource = {
  name: "bench_stream_read",
  entry: "main",
  source: () =>
    Promise.resolve(`
@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> sink: array<u32>;
override WG: u32 = 256u;
const PER: u32 = 16u;
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let base = (wid.x + wid.y * nwg.x) * WG * PER;
  var acc = vec4<u32>(0u);
  for (var i = 0u; i < PER; i++) {
    let j = base + i * WG + lid;
    if (j < arrayLength(&src)) { acc ^= src[j]; }
  }
  let r = acc.x ^ acc.y ^ acc.z ^ acc.w;
  if (r == 0x12345678u) { sink[0] = r; }
}`),
};

const FMA: PipelineSource = {
  name: "bench_fma_peak",
  entry: "main",
  source: () =>
    Promise.resolve(`
@group(0) @binding(0) var<storage, read_write> sink: array<f32>;
const ITERS: u32 = 512u;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  // b and c come from memory so the compiler cannot fold the chain; the result is always stored.
  let b = vec4<f32>(sink[0], sink[1], sink[2], sink[3]);
  let c = vec4<f32>(sink[4], sink[5], sink[6], sink[7]);
  var a = vec4<f32>(f32(gid.x) * 1e-7, 1.0, 2.0, 3.0);
  var d = vec4<f32>(0.5) + a;
  for (var i = 0u; i < ITERS; i++) {
    a = fma(a, b, c); d = fma(d, b, c);
    a = fma(a, b, c); d = fma(d, b, c);
    a = fma(a, b, c); d = fma(d, b, c);
    a = fma(a, b, c); d = fma(d, b, c);
  }
  let s = a + d;
  sink[8u + gid.x % 64u] = s.x + s.y + s.z + s.w;
}`),
};

/** GB/s of a streaming-read kernel over a buffer (1 GiB on a GPU, 32 MiB on a software adapter). */
export async function measureReadBandwidth(
  gpu: Gpu,
  clock: ClockSampler | null = null,
): Promise<number> {
  const bytes = (gpu.isFallback ? 32 : 1024) << 20;
  const src = gpu.storage("other", bytes, "stream-src");
  const sink = gpu.storage("other", 16, "sink");
  const pipe = await gpu.pipeline(STREAM, { WG: 256 });
  const d = gpu.dispatch(pipe, [src, sink], gpu.grid(Math.ceil(bytes / 16 / 256 / 16)));
  const t = await gpuTime(gpu, [d], { inner: gpu.isFallback ? 2 : 20, samples: 5, clock });
  gpu.destroyBuffer(src);
  gpu.destroyBuffer(sink);
  return bytes / t.seconds / 1e9;
}

/** TFLOP/s of an f32 FMA-only kernel (8 vec4 FMAs per iteration, 512 iterations per thread). */
export async function measureFmaRate(
  gpu: Gpu,
  clock: ClockSampler | null = null,
): Promise<number> {
  const threads = (gpu.isFallback ? 16 : 2048) * 256;
  const sink = gpu.storage(
    "other",
    Float32Array.from({ length: 72 }, (_, i) => (i < 4 ? 0.999 - i * 1e-3 : i < 8 ? 1e-3 * i : 0)),
    "sink",
  );
  const d = gpu.dispatch(await gpu.pipeline(FMA), [sink], [threads / 256]);
  const t = await gpuTime(gpu, [d], { inner: gpu.isFallback ? 1 : 10, samples: 5, clock });
  gpu.destroyBuffer(sink);
  return (threads * 512 * 8 * 4 * 2) / t.seconds / 1e12;
}
