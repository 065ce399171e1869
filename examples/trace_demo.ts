/**
 * Expert trace demo: builds a synthetic, deterministic expert trace of a pre-gated MoE run (skewed
 * expert popularity, some reuse from token to token, a pre-gate that is right about 80% of the
 * time, a small LRU expert cache per layer), prints its summary and writes the heat map as SVG.
 *
 * Usage: deno run --allow-write examples/trace_demo.ts [out.svg] [--experts 16] [--top-k 2]
 *          [--layers 8] [--steps 48] [--prompt 12] [--accuracy 0.8] [--cache 2] [--seed 1]
 *          [--mode pregated|on-demand] [--layout auto|cells|strips]
 *
 * Then open out.svg in a browser, or `rsvg-convert out.svg -o out.png`.
 * @module
 */
import { parseArgs } from "node:util";
import { ArgumentError } from "../runtime/base/errors.ts";
import {
  type ExpertTrace,
  formatTraceSummary,
  summarizeTrace,
  type TraceRecord,
} from "../runtime/experts/trace.ts";
import { type TraceSvgOptions, traceToSvg } from "../runtime/experts/trace_svg.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    experts: { type: "string", default: "16" },
    "top-k": { type: "string", default: "2" },
    layers: { type: "string", default: "8" },
    steps: { type: "string", default: "48" },
    prompt: { type: "string", default: "12" },
    accuracy: { type: "string", default: "0.8" },
    cache: { type: "string", default: "2" },
    seed: { type: "string", default: "1" },
    mode: { type: "string", default: "pregated" },
    layout: { type: "string", default: "auto" },
  },
});

/** A seeded PRNG (mulberry32) returning floats in [0, 1). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Options of {@linkcode syntheticTrace}. */
interface SyntheticOptions {
  experts: number;
  topK: number;
  layers: number;
  steps: number;
  prompt: number;
  accuracy: number;
  cache: number;
  seed: number;
  mode: "pregated" | "on-demand";
}

/** Builds a deterministic synthetic trace; see the module doc. */
function syntheticTrace(o: SyntheticOptions): ExpertTrace {
  const rand = rng(o.seed);
  const E = o.experts, L = o.layers;
  // Per layer: Zipf-like popularity over a random permutation of the experts.
  const weights = Array.from({ length: L }, () => {
    const perm = Array.from({ length: E }, (_, i) => i).sort(() => rand() - 0.5);
    const w = new Array<number>(E);
    perm.forEach((e, rank) => (w[e] = 1 / (rank + 1) ** 0.9));
    return w;
  });
  const sample = (w: number[], exclude: Set<number>) => {
    let total = 0;
    for (let e = 0; e < E; e++) if (!exclude.has(e)) total += w[e];
    let u = rand() * total, last = 0;
    for (let e = 0; e < E; e++) {
      if (exclude.has(e)) continue;
      last = e;
      u -= w[e];
      if (u <= 0) return e;
    }
    return last;
  };
  const prev: number[][] = Array.from({ length: L }, () => []);
  const route = (layer: number) => {
    const pick = new Set<number>();
    while (pick.size < Math.min(o.topK, E)) {
      const reuse = prev[layer].filter((e) => !pick.has(e));
      pick.add(
        reuse.length && rand() < 0.35
          ? reuse[Math.floor(rand() * reuse.length)]
          : sample(weights[layer], pick),
      );
    }
    prev[layer] = [...pick];
    return [...pick];
  };
  const predict = (layer: number, chosen: number[]) => {
    const out = new Set<number>();
    for (const e of chosen) {
      out.add(rand() < o.accuracy ? e : sample(weights[layer], new Set([...chosen, ...out])));
    }
    return out;
  };
  const caches: number[][] = Array.from({ length: L }, () => []); // LRU order, most recent last
  const records: TraceRecord[] = [];
  for (let step = 0; step <= o.steps; step++) {
    const tokens = step === 0 ? o.prompt : 1;
    const chosenAll = Array.from({ length: L }, () => new Set<number>());
    const predAll = Array.from({ length: L }, () => new Set<number>());
    for (let t = 0; t < tokens; t++) {
      for (let l = 0; l < L; l++) {
        const c = route(l);
        c.forEach((e) => chosenAll[l].add(e));
        if (l > 0 && o.mode === "pregated") predict(l, c).forEach((e) => predAll[l].add(e));
      }
    }
    for (let l = 0; l < L; l++) {
      const chosen = [...chosenAll[l]].sort((a, b) => a - b);
      const predicted = l > 0 && o.mode === "pregated"
        ? [...predAll[l]].sort((a, b) => a - b)
        : null;
      const resident = [...caches[l]].sort((a, b) => a - b);
      const res = new Set(resident);
      const prefetched = (predicted ?? []).filter((e) => !res.has(e));
      const onDemand = chosen.filter((e) => !res.has(e) && !predAll[l].has(e));
      records.push({
        step,
        tokens,
        layer: 2 * l + 1,
        chosen,
        predicted,
        resident,
        uploaded: [...prefetched, ...onDemand].sort((a, b) => a - b),
        onDemand,
      });
      // Keep the most recently used experts of this layer resident.
      const used = [...prefetched.filter((e) => !chosenAll[l].has(e)), ...chosen];
      caches[l] = [...caches[l].filter((e) => !used.includes(e)), ...used].slice(-o.cache);
      if (o.cache === 0) caches[l] = [];
    }
  }
  return {
    model: "synthetic-switch",
    arch: "switch",
    mode: o.mode,
    pregate: o.mode === "pregated" ? "next-router" : "none",
    experts: E,
    moeLayers: Array.from({ length: L }, (_, l) => 2 * l + 1),
    records,
  };
}

const int = (name: keyof typeof values) => {
  const n = Number(values[name]);
  if (!Number.isFinite(n) || n < 0) {
    throw new ArgumentError(`--${name}`, `expected a number >= 0, found ${values[name]}`);
  }
  return n;
};
const trace = syntheticTrace({
  experts: int("experts"),
  topK: int("top-k"),
  layers: int("layers"),
  steps: int("steps"),
  prompt: Math.max(1, int("prompt")),
  accuracy: int("accuracy"),
  cache: int("cache"),
  seed: int("seed"),
  mode: values.mode === "on-demand" ? "on-demand" : "pregated",
});
const out = positionals[0] ?? "./trace.svg";
const svg = traceToSvg(trace, { layout: values.layout as TraceSvgOptions["layout"] });
await Deno.writeTextFile(out, svg);
console.log(formatTraceSummary(summarizeTrace(trace)));
console.log(`\nwrote ${out} (${(svg.length / 1024).toFixed(0)} KiB)`);
