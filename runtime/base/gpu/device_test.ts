import assert from "node:assert/strict";
import { openGpu } from "./device.ts";
import { ArgumentError, GpuError, GpuUnavailableError } from "../errors.ts";
import { GPU_TEST as GPU, testGpu } from "../../test_util.ts";

/** Whether the test device has GPU timestamps (profiles need them). */
const TIMESTAMPS = (await testGpu()).features.timestampQuery;

Deno.test({
  name: "buffer accounting: current and peak bytes, by purpose, through create and destroy",
  ...GPU,
  fn: async () => {
    const gpu = await openGpu({ gpu: "native" });
    try {
      assert.equal(gpu.memory().current, 0);
      const a = gpu.storage("dense", 1000); // sizes are multiples of 16 bytes: 1008
      const b = gpu.storage("kv", 4096);
      const c = gpu.uniform(new Uint32Array([1, 2, 3])); // uniform blocks are 16-byte multiples
      let m = gpu.memory();
      assert.equal(m.current, 1008 + 4096 + 16);
      assert.deepEqual(m.byPurpose.dense, { current: 1008, peak: 1008 });
      assert.deepEqual(m.byPurpose.kv, { current: 4096, peak: 4096 });
      gpu.destroyBuffer(b);
      m = gpu.memory();
      assert.equal(m.current, 1024);
      assert.equal(m.peak, 1008 + 4096 + 16);
      assert.deepEqual(m.byPurpose.kv, { current: 0, peak: 4096 });
      gpu.resetPeak();
      assert.equal(gpu.memory().peak, 1024);
      // Mappable buffers (upload staging, readback) are host-visible memory: counted apart.
      const st = gpu.createBuffer({
        size: 4096,
        purpose: "staging",
        usage: GPUBufferUsage.MAP_WRITE | GPUBufferUsage.COPY_SRC,
      });
      m = gpu.memory();
      assert.equal(m.current, 1024);
      assert.equal(m.peak, 1024);
      assert.deepEqual(m.host, { current: 4096, peak: 4096 });
      assert.deepEqual(m.byPurpose.staging, { current: 4096, peak: 4096 });
      gpu.destroyBuffer(st);
      assert.deepEqual(gpu.memory().host, { current: 0, peak: 4096 });
      gpu.destroyBuffer(a);
      gpu.destroyBuffer(c);
      assert.equal(gpu.memory().current, 0);
    } finally {
      gpu.destroy();
    }
  },
});

Deno.test({
  name: "the device gets the adapter's limits, not WebGPU's defaults",
  ...GPU,
  fn: async () => {
    const gpu = await testGpu();
    const adapter = await navigator.gpu.requestAdapter();
    assert.equal(gpu.limits.maxBufferSize, adapter!.limits.maxBufferSize);
    assert.equal(
      gpu.limits.maxStorageBufferBindingSize,
      adapter!.limits.maxStorageBufferBindingSize,
    );
    assert.equal(
      gpu.limits.maxComputeWorkgroupStorageSize,
      adapter!.limits.maxComputeWorkgroupStorageSize,
    );
    assert.throws(
      () => gpu.storage("other", gpu.limits.maxBufferSize + 4),
      (e) => e instanceof GpuError && /maxBufferSize/.test(e.message),
    );
  },
});

Deno.test({
  name: "pipelines are cached by kernel and constants; compile errors name the kernel",
  ...GPU,
  fn: async () => {
    const gpu = await testGpu();
    const src = (code: string, name: string) => ({
      name,
      entry: "main",
      source: () => Promise.resolve(code),
    });
    const ok = src(
      "override N: u32 = 1u; @group(0) @binding(0) var<storage, read_write> o: array<u32>;" +
        "@compute @workgroup_size(1) fn main() { o[0] = N; }",
      "test_ok",
    );
    const p1 = await gpu.pipeline(ok, { N: 2 });
    assert.equal(await gpu.pipeline(ok, { N: 2 }), p1);
    assert.notEqual(await gpu.pipeline(ok, { N: 3 }), p1);
    const out = gpu.storage("other", 4);
    gpu.submit([gpu.dispatch(await gpu.pipeline(ok, { N: 7 }), [out], [1])]);
    assert.equal((await gpu.readU32(out))[0], 7);
    await assert.rejects(
      () => gpu.pipeline(src("fn main( {", "test_broken")),
      (e) => e instanceof GpuError && /test_broken/.test(e.message),
    );
  },
});

Deno.test({
  name: "readback counts syncs and surfaces GPU validation errors as GpuError",
  ...GPU,
  fn: async () => {
    const gpu = await testGpu();
    const buf = gpu.storage("other", new Uint32Array([5, 6, 7]));
    const before = gpu.counters.syncs;
    assert.deepEqual([...await gpu.readU32(buf)], [5, 6, 7]);
    assert.equal(gpu.counters.syncs, before + 1);
    // An invalid copy (past the end) raises an uncaptured validation error, reported at the next read.
    const small = gpu.storage("other", 16);
    gpu.submit([{ src: buf, srcOffset: 0, dst: small, dstOffset: 8, size: 12 }]);
    await assert.rejects(() => gpu.readU32(buf), (e) => e instanceof GpuError);
  },
});

Deno.test({
  name: "choosing an implementation: unknown names fail; dawn and auto say what they found",
  ...GPU,
  fn: async () => {
    await assert.rejects(
      () => openGpu({ gpu: "metal" as never }),
      (e) =>
        e instanceof ArgumentError && e.argument === "gpu" &&
        /native, dawn or auto/.test(e.message),
    );
    // Dawn either opens a hardware adapter (GPU hosts) or fails with advice (CPU-only Mesa here).
    try {
      const d = await openGpu({ gpu: "dawn" });
      assert.equal(d.impl, "dawn");
      d.destroy();
    } catch (e) {
      assert.ok(e instanceof GpuUnavailableError, String(e));
      assert.match((e as Error).message, /Dawn|webgpu/);
    }
    const notes: string[] = [];
    const auto = await openGpu({ gpu: "auto", log: (m) => notes.push(m) });
    assert.ok(notes.some((n) => n.includes(`using ${auto.impl}`)), notes.join("\n"));
    auto.destroy();
  },
});

Deno.test({
  name: "profile: without timestamp queries, starting one is a clear error",
  ignore: TIMESTAMPS,
  ...GPU,
  fn: async () => {
    const gpu = await testGpu();
    assert.throws(() => gpu.startProfile(), /timestamp-query/);
    await assert.rejects(() => gpu.stopProfile(), /no profile is running/);
  },
});

Deno.test({
  name: "profile: each dispatch timed in order with its label; misuse is a clear error",
  ignore: !TIMESTAMPS,
  ...GPU,
  fn: async () => {
    const gpu = await testGpu();
    assert.throws(() => gpu.startProfile(0), /maxDispatches/);
    await assert.rejects(() => gpu.stopProfile(), /no profile is running/);
    const pipeline = await gpu.pipeline({
      name: "profile_test_fill",
      entry: "main",
      source: () =>
        Promise.resolve(`@group(0) @binding(0) var<storage, read_write> y: array<u32>;
          @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
            if (g.x < arrayLength(&y)) { y[g.x] = y[g.x] + g.x; } }`),
    });
    const y = gpu.storage("other", 4 * 1024);
    const steps = ["a", "b", "c"].map((l) => gpu.dispatch(pipeline, [y], [16], l));
    gpu.startProfile(2);
    assert.throws(() => gpu.startProfile(), /already running/);
    const before = gpu.counters.dispatches;
    gpu.submit(steps); // two timed (the capacity), the third encoded as usual
    const prof = await gpu.stopProfile();
    assert.equal(gpu.counters.dispatches - before, 3);
    assert.deepEqual(prof.map((p) => p.label), ["a", "b"]);
    assert.equal(prof[0].start, 0);
    for (const p of prof) assert.ok(p.end >= p.start, JSON.stringify(p));
    assert.ok(prof[1].start >= prof[0].end, "in submission order");
    // The work itself ran three times: y[i] = 3 i.
    const out = await gpu.readU32(y);
    assert.equal(out[5], 15);
    gpu.destroyBuffer(y);
  },
});
