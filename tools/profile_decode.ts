/**
 * Where a decode step's time goes: GPU timestamps around every dispatch of a resident decode, beside
 * the unprofiled wall-clock speed and the CPU time spent encoding and submitting.
 *
 * ```sh
 * deno run -A tools/profile_decode.ts --make mixtral:mixtral-8x7b:2:bf16 --gpu dawn
 * deno run -A tools/profile_decode.ts --model tests/fixtures/hf/mixtral
 * ```
 *
 * It warms the GPU up (`--warmup-s`, so its clock has climbed), times `--tokens` decode steps as
 * `generate` runs them, then runs them again with each dispatch in its own timestamped pass
 * ({@linkcode Gpu.startProfile}) and prints per kernel: dispatches and GPU microseconds per token,
 * and the share of the step. Per token it splits the wall time into GPU time inside kernels, GPU time
 * between them (pass boundaries, barriers, idle waiting for the CPU) and, separately, the CPU time in
 * `Gpu.submit` (encoding). `--json PATH` writes everything.
 * @module
 */
import { parseArgs } from "node:util";
import { type Gpu, openGpu, type ProfiledDispatch } from "../runtime/gpu/device.ts";
import { loadModel } from "../runtime/model.ts";
import { MODEL_ARG_OPTIONS, modelFromArgs } from "../bench/harness.ts";
import { warmUp } from "../bench/clock.ts";
import { ArgumentError } from "../runtime/errors.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    ...MODEL_ARG_OPTIONS,
    tokens: { type: "string", default: "64" },
    "warmup-s": { type: "string", default: "3" },
    json: { type: "string" },
  },
});
const tokens = Number(values.tokens), warmupS = Number(values["warmup-s"]);
if (!Number.isInteger(tokens) || tokens < 2) {
  throw new ArgumentError("--tokens", `expected an integer >= 2, got '${values.tokens}'`);
}
if (!(warmupS >= 0)) {
  throw new ArgumentError("--warmup-s", `expected seconds >= 0, got '${values["warmup-s"]}'`);
}
const dir = await modelFromArgs(values, (m) => console.error(m));

const gpu: Gpu = await openGpu({
  gpu: values.gpu as "native" | "dawn" | "auto",
  log: (m) => console.error(m),
});
// CPU time inside submit (encoding the plan's dispatches and handing them to the queue).
let submitMs = 0;
const submit = gpu.submit.bind(gpu);
gpu.submit = (steps, after) => {
  const t = performance.now();
  submit(steps, after);
  submitMs += performance.now() - t;
};

const model = await loadModel(dir, { device: gpu, contextLength: 512 });
const prompt = [1]; // a one-token prompt: every step, the first included, has decode shapes
const run = async () => {
  const out: number[] = [];
  for await (const id of model.generate(prompt, { maxTokens: tokens })) out.push(id);
  return out;
};
const warm = await warmUp(run, warmupS);

// Unprofiled: wall time per decode token, CPU time in submit per token.
const walls: number[] = [], submits: number[] = [];
for (let i = 0; i < 5; i++) {
  submitMs = 0;
  await run();
  const st = model.lastStats!;
  walls.push((st.decode_seconds * 1e3) / (st.generated_tokens - 1));
  submits.push(submitMs / tokens);
}
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const wallMs = med(walls), submitPerToken = med(submits);
const dispatchesPerToken = model.lastStats!.dispatches_per_token;

// Profiled: every dispatch timestamped (capacity 2048 dispatches).
const steps = Math.min(tokens, Math.floor(2048 / Math.ceil(dispatchesPerToken)));
gpu.startProfile(2048);
for await (const _ of model.generate(prompt, { maxTokens: steps })) { /* drain */ }
const prof: ProfiledDispatch[] = await gpu.stopProfile();
await model.dispose();

const byKernel = new Map<string, { n: number; ns: number }>();
let busy = 0;
for (const p of prof) {
  const name = p.label.split("|")[0];
  const k = byKernel.get(name) ?? { n: 0, ns: 0 };
  k.n++;
  k.ns += p.end - p.start;
  busy += p.end - p.start;
  byKernel.set(name, k);
}
const span = prof.at(-1)!.end - prof[0].start;
const usPer = (ns: number) => ns / 1e3 / steps;
console.log(
  `\nDecode profile, ${new Date().toISOString().slice(0, 10)}, ${gpu.describe()}\n` +
    `model ${dir}; ${steps} profiled steps (${prof.length} dispatches), after ${warm} warm-up runs\n`,
);
console.log("| kernel | dispatches/token | GPU us/token | share of kernel time |");
console.log("|---|---|---|---|");
const kernels = [...byKernel.entries()].sort((a, b) => b[1].ns - a[1].ns);
for (const [name, k] of kernels) {
  console.log(
    `| ${name} | ${(k.n / steps).toFixed(1)} | ${usPer(k.ns).toFixed(1)} | ${
      ((100 * k.ns) / busy).toFixed(1)
    }% |`,
  );
}
const summary = {
  wall_ms_per_token_unprofiled: wallMs,
  submit_cpu_ms_per_token: submitPerToken,
  dispatches_per_token: dispatchesPerToken,
  profiled_kernel_ms_per_token: usPer(busy) / 1e3,
  profiled_span_ms_per_token: usPer(span) / 1e3,
  profiled_gap_ms_per_token: usPer(span - busy) / 1e3,
};
console.log(
  `\nper token: unprofiled wall ${wallMs.toFixed(3)} ms (${(1e3 / wallMs).toFixed(0)} tok/s); ` +
    `profiled: kernels ${summary.profiled_kernel_ms_per_token.toFixed(3)} ms, between kernels ${
      summary.profiled_gap_ms_per_token.toFixed(3)
    } ms (span ${summary.profiled_span_ms_per_token.toFixed(3)} ms); CPU in submit ${
      submitPerToken.toFixed(3)
    } ms for ${dispatchesPerToken.toFixed(0)} dispatches`,
);
if (values.json) {
  await Deno.writeTextFile(
    values.json,
    JSON.stringify(
      {
        gpu: gpu.describe(),
        model: dir,
        steps,
        summary,
        kernels: Object.fromEntries(
          kernels.map(([n, k]) => [n, { per_token: k.n / steps, us_per_token: usPer(k.ns) }]),
        ),
        dispatches: prof,
      },
      null,
      1,
    ),
  );
}
gpu.destroy();
