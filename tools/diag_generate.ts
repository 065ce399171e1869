/**
 * Diagnoses stalls in load and generate: loads a checkpoint `--loads` times in one process (each
 * after disposing the last), generates `--tokens` tokens `--runs` times per load, and prints the time
 * of every phase plus any GPU submit, read or sync that took longer than `--slow-ms`. Written for a
 * stall seen on the H200 under Dawn: the first generate after a second load in one process took 70 s.
 * `--keep` loads each model on top of the last (no dispose); `--settle-ms N` waits for the GPU and
 * N ms after each dispose. The SM clock during each run is shown where `nvidia-smi` runs.
 *
 * ```sh
 * deno run -A tools/diag_generate.ts --make mixtral:mixtral-8x7b:2:bf16 --gpu dawn
 * ```
 * @module
 */
import { parseArgs } from "node:util";
import { openGpu } from "../runtime/gpu/device.ts";
import { loadModel } from "../runtime/model.ts";
import { MODEL_ARG_OPTIONS, modelFromArgs } from "../bench/harness.ts";
import { ArgumentError } from "../runtime/errors.ts";
import { ClockSampler } from "../bench/clock.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    ...MODEL_ARG_OPTIONS,
    loads: { type: "string", default: "3" },
    runs: { type: "string", default: "3" },
    tokens: { type: "string", default: "16" },
    "slow-ms": { type: "string", default: "20" },
    mode: { type: "string", default: "resident" },
    keep: { type: "boolean", default: false },
    "settle-ms": { type: "string", default: "0" },
  },
});
const loads = Number(values.loads), runs = Number(values.runs), tokens = Number(values.tokens);
const slowMs = Number(values["slow-ms"]);
for (const [k, v] of [["loads", loads], ["runs", runs], ["tokens", tokens]] as const) {
  if (!Number.isInteger(v) || v < 1) throw new ArgumentError(`--${k}`, `expected >= 1, got ${v}`);
}
const dir = await modelFromArgs(values, (m) => console.error(m));
const gpu = await openGpu({ gpu: values.gpu as "auto", log: (m) => console.error(m) });
const clock = ClockSampler.start(50);
const settleMs = Number(values["settle-ms"]);
const kept: { dispose(): Promise<void> }[] = [];
const t0 = performance.now();
let phase = "start";
const say = (m: string) => console.log(`+${((performance.now() - t0) / 1e3).toFixed(3)} s ${m}`);
// Time every submit, read and sync; report the slow ones with the phase they happened in.
const submit = gpu.submit.bind(gpu), read = gpu.read.bind(gpu), sync = gpu.sync.bind(gpu);
gpu.submit = (steps, after) => {
  const t = performance.now();
  submit(steps, after);
  const ms = performance.now() - t;
  if (ms > slowMs) say(`  slow submit ${ms.toFixed(1)} ms (${steps.length} steps) in ${phase}`);
};
gpu.read = async (buffer, offset, size) => {
  const t = performance.now();
  const out = await read(buffer, offset, size);
  const ms = performance.now() - t;
  if (ms > slowMs) say(`  slow read ${ms.toFixed(1)} ms (${out.byteLength} B) in ${phase}`);
  return out;
};
gpu.sync = async () => {
  const t = performance.now();
  await sync();
  const ms = performance.now() - t;
  if (ms > slowMs) say(`  slow sync ${ms.toFixed(1)} ms in ${phase}`);
};
say(`${gpu.describe()}; ${dir}`);
for (let l = 0; l < loads; l++) {
  phase = `load ${l}`;
  let t = performance.now();
  const model = await loadModel(dir, {
    device: gpu,
    contextLength: 256,
    mode: values.mode as "resident",
  });
  say(`load ${l}: ${((performance.now() - t) / 1e3).toFixed(2)} s`);
  for (let r = 0; r < runs; r++) {
    phase = `load ${l} run ${r}`;
    t = performance.now();
    const gaps: number[] = [];
    let last = t;
    for await (const _ of model.generate([1, 2, 3, 4], { maxTokens: tokens })) {
      const now = performance.now();
      gaps.push(now - last);
      last = now;
    }
    const st = model.lastStats!;
    const c = clock?.range(t, performance.now());
    say(
      `load ${l} run ${r}: ${((performance.now() - t) / 1e3).toFixed(3)} s; prefill ${
        (st.prefill_seconds * 1e3).toFixed(1)
      } ms, decode ${st.decode_tokens_per_s.toFixed(0)} tok/s; ms between tokens: ${
        gaps.map((g) => g.toFixed(1)).join(" ")
      }${c ? `; SM clock ${c.min}-${c.max} MHz` : ""}`,
    );
  }
  if (values.keep) {
    kept.push(model); // --keep: the next load comes on top of this one
    continue;
  }
  phase = `dispose ${l}`;
  t = performance.now();
  await model.dispose();
  if (settleMs > 0) { // --settle-ms: let the GPU finish and idle before the next load
    await gpu.sync();
    await new Promise((r) => setTimeout(r, settleMs));
  }
  say(
    `dispose ${l}: ${(performance.now() - t).toFixed(1)} ms; GPU memory now ${
      (gpu.memory().current / 2 ** 30).toFixed(2)
    } GiB`,
  );
}
for (const m of kept) await m.dispose();
await clock?.stop();
gpu.destroy();
