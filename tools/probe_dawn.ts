/**
 * Probes what Dawn offers on this machine for the fast kernel paths: adapter info (subgroup sizes,
 * subgroup-matrix configurations), features, and whether a minimal subgroup and subgroup-matrix kernel
 * compile and give the right answer. Prints JSON. Run on the GPU host:
 * `deno run -A tools/probe_dawn.ts`.
 * @module
 */
const mod = await import("npm:webgpu@0.6.2");
const flags = (Deno.env.get("DAWN_FLAGS") ?? "enable-dawn-features=allow_unsafe_apis").split(" ")
  .filter(Boolean);
console.log(JSON.stringify({ flags }));
const g = mod.create(flags);
const adapter = await g.requestAdapter({ powerPreference: "high-performance" });
if (!adapter) throw new Error("no Dawn adapter");
const info: Record<string, unknown> = {};
for (const k in adapter.info) info[k] = (adapter.info as unknown as Record<string, unknown>)[k];
const KNOWN = [
  "shader-f16",
  "subgroups",
  "subgroup-size-control",
  "timestamp-query",
  "chromium-experimental-subgroup-matrix",
  "chromium-experimental-timestamp-query-inside-passes",
  "float32-filterable",
  "bgra8unorm-storage",
  "indirect-first-instance",
];
const fs = adapter.features as unknown as { has(f: string): boolean };
const features = KNOWN.filter((f) => fs.has(f));
console.log(JSON.stringify({ info, features }, null, 1));
const has = adapter.features as unknown as { has(f: string): boolean };
const want: string[] = ["subgroups", "shader-f16", "chromium-experimental-subgroup-matrix"]
  .filter((f) => has.has(f));
const device = await adapter.requestDevice({ requiredFeatures: want as GPUFeatureName[] });
device.addEventListener(
  "uncapturederror",
  (e) => console.log("uncaptured:", (e as GPUUncapturedErrorEvent).error.message),
);

async function run(
  name: string,
  code: string,
  inputs: Uint16Array<ArrayBuffer>[],
  outBytes: number,
  wg: number,
) {
  const module = device.createShaderModule({ code });
  const ci = await module.getCompilationInfo();
  for (const m of ci.messages) {
    console.log(`${name}: ${m.type} ${m.lineNum}:${m.linePos} ${m.message}`);
  }
  device.pushErrorScope("validation");
  const pipe = device.createComputePipeline({
    layout: "auto",
    compute: { module, entryPoint: "main" },
  });
  const bufs = inputs.map((a) => {
    const b = device.createBuffer({
      size: Math.max(16, a.byteLength),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
    });
    device.queue.writeBuffer(b, 0, a);
    return b;
  });
  const out = device.createBuffer({
    size: outBytes,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC,
  });
  const rb = device.createBuffer({
    size: outBytes,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const bg = device.createBindGroup({
    layout: pipe.getBindGroupLayout(0),
    entries: [...bufs, out].map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(pipe);
  pass.setBindGroup(0, bg);
  pass.dispatchWorkgroups(wg);
  pass.end();
  enc.copyBufferToBuffer(out, 0, rb, 0, outBytes);
  device.queue.submit([enc.finish()]);
  const err = await device.popErrorScope();
  if (err) console.log(`${name}: validation: ${err.message}`);
  await rb.mapAsync(GPUMapMode.READ);
  const r = new Float32Array(rb.getMappedRange().slice(0));
  rb.unmap();
  return r;
}

if (want.includes("subgroups")) {
  const r = await run(
    "subgroupAdd",
    `enable subgroups;
@group(0) @binding(0) var<storage, read_write> o: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(local_invocation_index) i: u32, @builtin(subgroup_size) s: u32) {
  let v = subgroupAdd(f32(i));
  if (i == 0u) { o[0] = v; o[1] = f32(s); }
}`,
    [],
    16,
    1,
  );
  console.log(JSON.stringify({ subgroupAdd_lane0: r[0], subgroup_size: r[1] }));
}
const cfgs =
  (adapter.info as unknown as { subgroupMatrixConfigs?: unknown[] }).subgroupMatrixConfigs;
if (want.includes("chromium-experimental-subgroup-matrix") && want.includes("shader-f16")) {
  // 16x16 f16 A, B; C = A * B in f32 through whatever 16-bit config the adapter lists first.
  for (const [M, N, K] of [[16, 16, 16], [8, 8, 8], [16, 8, 16]]) {
    const A = new Float32Array(M * K).map((_, i) => ((i * 7) % 13) / 8 - 0.75);
    const B = new Float32Array(K * N).map((_, i) => ((i * 5) % 11) / 8 - 0.6);
    const f16 = (a: Float32Array) => new Uint16Array(new Float16Array(a).buffer);
    const ref = new Float32Array(M * N);
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += A[i * K + k] * B[k * N + j];
        ref[i * N + j] = s;
      }
    }
    try {
      const r = await run(
        `sgmatrix ${M}x${N}x${K}`,
        `enable f16;
enable chromium_experimental_subgroup_matrix;
@group(0) @binding(0) var<storage, read> a: array<f16>;
@group(0) @binding(1) var<storage, read> b: array<f16>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@compute @workgroup_size(32) fn main() {
  let l = subgroupMatrixLoad<subgroup_matrix_left<f16, ${K}, ${M}>>(&a, 0u, false, ${K}u);
  let r = subgroupMatrixLoad<subgroup_matrix_right<f16, ${N}, ${K}>>(&b, 0u, false, ${N}u);
  var acc = subgroup_matrix_result<f32, ${N}, ${M}>();
  acc = subgroupMatrixMultiplyAccumulate(l, r, acc);
  subgroupMatrixStore(&c, 0u, acc, false, ${N}u);
}`,
        [f16(A), f16(B)],
        M * N * 4,
        1,
      );
      let err = 0;
      for (let i = 0; i < M * N; i++) err = Math.max(err, Math.abs(r[i] - ref[i]));
      console.log(
        JSON.stringify({
          sgmatrix: [M, N, K],
          maxErr: err,
          sample: [r[0], ref[0], r[M * N - 1], ref[M * N - 1]],
        }),
      );
    } catch (e) {
      console.log(`sgmatrix ${M}x${N}x${K} threw: ${(e as Error).message}`);
    }
  }
}
const cfgFields = (c: unknown) => {
  const o: Record<string, unknown> = {};
  for (const k of ["componentType", "resultComponentType", "M", "N", "K"]) {
    o[k] = (c as Record<string, unknown>)[k];
  }
  return o;
};
console.log(JSON.stringify({ subgroupMatrixConfigs: (cfgs ?? []).map(cfgFields) }));
device.destroy();
