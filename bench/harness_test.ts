/**
 * Tests of the benchmark harness's GPU timing: the repeat of a measurement taken at a fallen SM
 * clock (with a scripted clock in place of `nvidia-smi`; the GPU work is real).
 * @module
 */
import assert from "node:assert/strict";
import { dirtyBytes, gpuTime, settleWriteback } from "./harness.ts";
import type { ClockSampler } from "./clock.ts";
import { GPU_TEST, testGpu } from "../runtime/test_util.ts";
import { add } from "../kernels/elementwise.ts";

/** A clock that reports the given lowest clocks, one per measurement, at a 1980 MHz maximum. */
function scriptedClock(lows: number[]): { clock: ClockSampler; asked: () => number } {
  let i = 0;
  const clock = {
    maxMhz: 1980,
    range: () => ({ min: lows[Math.min(i++, lows.length - 1)], max: 1980 }),
  } as unknown as ClockSampler;
  return { clock, asked: () => i };
}

Deno.test({
  name: "gpuTime repeats a measurement taken at a fallen clock and keeps the best-clocked one",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const n = 1024;
    const a = gpu.storage("activations", new Float32Array(n).fill(1));
    const b = gpu.storage("activations", new Float32Array(n).fill(2));
    const out = gpu.storage("activations", n * 4);
    const d = await add(gpu, { a, b, out, n });
    const opts = { inner: 1, samples: 1, warmup: 0, warmupMs: 0 };

    // Clock low twice, then at its maximum: three measurements, the third kept.
    let s = scriptedClock([500, 900, 1980]);
    let t = await gpuTime(gpu, [d], { ...opts, clock: s.clock });
    assert.equal(t.attempts, 3);
    assert.deepEqual(t.clock, { min: 1980, max: 1980 });
    assert.equal(s.asked(), 3);
    assert.ok(t.seconds > 0);

    // Low every time: `attempts` measurements, the one with the highest lowest clock kept.
    s = scriptedClock([500, 1200, 700]);
    t = await gpuTime(gpu, [d], { ...opts, clock: s.clock, attempts: 3 });
    assert.equal(t.attempts, 3);
    assert.equal(t.clock?.min, 1200);

    // At 90% of the maximum or more: one measurement.
    s = scriptedClock([1800]);
    t = await gpuTime(gpu, [d], { ...opts, clock: s.clock });
    assert.equal(t.attempts, 1);
    assert.equal(s.asked(), 1);

    // Without a clock: one measurement, no clock in the result.
    t = await gpuTime(gpu, [d], opts);
    assert.equal(t.clock, undefined);
    assert.equal(t.attempts, 1);
    for (const x of [a, b, out]) gpu.destroyBuffer(x);
  },
});

Deno.test("settleWriteback syncs a page cache dirtier than its threshold and reports both figures", async () => {
  const messages: string[] = [];
  // A threshold of -1 byte forces the sync path; the figures are the kernel's own.
  const r = await settleWriteback((m) => messages.push(m), -1);
  if (r === null) {
    assert.equal(await dirtyBytes(), null); // no /proc/meminfo: nothing to settle
    return;
  }
  assert.ok(r.before >= 0 && r.after >= 0);
  assert.equal(messages.length, 1);
  assert.match(messages[0], /GiB of the page cache dirty: sync took \d+\.\d s/);
  // Under the default threshold after a sync, nothing more is done.
  const quiet: string[] = [];
  const again = await settleWriteback((m) => quiet.push(m), Number.MAX_SAFE_INTEGER);
  assert.equal(quiet.length, 0);
  assert.equal(again!.before, again!.after);
});
