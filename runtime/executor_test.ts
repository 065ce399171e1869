// The executor on the real GPU with a plan of buffer copies (each step writes its own word of `out`,
// so what ran shows in the result): resident runs the whole plan and the tail in one submit; a
// streamed source gets one sync point per MoE layer, with the steps queued since the previous one.
import assert from "node:assert/strict";
import { GPU_TEST, testGpu } from "../kernels/test_util.ts";
import type { Copy, Gpu, Step } from "./base/gpu/device.ts";
import type { MoeFfn } from "./models/config.ts";
import type { ForwardPlan, MoeOp } from "./models/plan.ts";
import { Executor, RESIDENT, type StreamedExperts } from "./executor.ts";

const N = 16;

function fixture(gpu: Gpu) {
  const src = gpu.storage("activations", Uint32Array.from({ length: N }, (_, i) => 100 + i));
  const out = gpu.storage("activations", N * 4);
  const step = (i: number): Copy => ({
    src,
    srcOffset: 4 * i,
    dst: out,
    dstOffset: 4 * i,
    size: 4,
  });
  const ffn = { kind: "moe", experts: 4, topK: 2 } as MoeFfn;
  const moe = (first: number) => ({
    kind: "moe" as const,
    route: [step(first)],
    pregate: [step(first + 1)],
    experts: [step(first + 2)],
    round: [step(first + 3)],
    finish: [step(first + 4)],
    ffn,
  });
  const plan: ForwardPlan = {
    T: 3,
    embed: [step(0)],
    layers: [
      { attention: [step(1)], ffn: moe(2) }, // 2..6
      { attention: [step(7)], ffn: { kind: "dense", steps: [step(8)] } },
      { attention: [step(9)], ffn: moe(10) }, // 10..14
    ],
    head: [],
  };
  const read = async () => Array.from(await gpu.readU32(out));
  const reset = () => gpu.write(out, new Uint32Array(N));
  return { plan, step, read, reset, free: () => [src, out].forEach((b) => gpu.destroyBuffer(b)) };
}

/** The words the steps `ids` write (others stay 0). */
const written = (ids: number[]) =>
  Array.from({ length: N }, (_, i) => (ids.includes(i) ? 100 + i : 0));

Deno.test({
  name: "executor: resident runs the plan (MoE blocks in line) and the tail in one submit",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const f = fixture(gpu);
    const exec = new Executor(gpu, RESIDENT);
    for (let run = 0; run < 2; run++) { // the second run replays the compiled plan
      f.reset();
      const c0 = { ...gpu.counters };
      await exec.run(f.plan, [f.step(15)]);
      assert.equal(gpu.counters.submits - c0.submits, 1);
      assert.equal(gpu.counters.syncs - c0.syncs, 0);
      assert.deepEqual(await f.read(), written([0, 1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 15]));
    }
    f.free();
  },
});

Deno.test({
  name: "executor: a streamed source gets each MoE layer with the steps queued before it",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const f = fixture(gpu);
    const calls: string[] = [];
    const label = (steps: readonly Step[]) =>
      steps.map((s) => ("dstOffset" in s ? s.dstOffset / 4 : -1)).join(",");
    // Runs the round steps and the finish instead of the one-go experts, as a layer in rounds does.
    const source: StreamedExperts = {
      kind: "streamed",
      beginPass: (T) => void calls.push(`pass ${T}`),
      moe: (op: MoeOp, queued) => {
        calls.push(`layer ${op.layer} T=${op.T} k=${op.ffn.topK} after ${label(queued)}`);
        gpu.submit([...queued, ...op.round, ...op.finish]);
        return Promise.resolve();
      },
    };
    await new Executor(gpu, source).run(f.plan, [f.step(15)]);
    assert.deepEqual(calls, [
      "pass 3",
      "layer 0 T=3 k=2 after 0,1,2,3",
      "layer 2 T=3 k=2 after 7,8,9,10,11",
    ]);
    assert.deepEqual(await f.read(), written([0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15]));
    f.free();
  },
});
