import assert from "node:assert/strict";
import { profileByKernel, profileMarkdown } from "./profile_table.ts";

const d = (label: string, start: number, end: number) => ({ label, start, end });

Deno.test("profileByKernel groups by label per pass, busiest first, and counts the idle gaps", () => {
  // Two passes: gemv twice and norm once each, with gaps of 500 ns before each norm.
  const p = profileByKernel([
    d("gemv", 0, 1000),
    d("gemv", 1000, 2500),
    d("norm", 3000, 3200),
    d("gemv", 3200, 4200),
    d("gemv", 4200, 5700),
    d("norm", 6200, 6400),
  ], 2);
  const piped = profileMarkdown(profileByKernel([d("qkv:qkv|WG=128", 0, 10)], 1));
  assert.match(piped, /\| qkv:qkv\\\|WG=128 \| 1 \|/);
  assert.equal(p.passes, 2);
  assert.deepEqual(p.kernels.map((k) => k.label), ["gemv", "norm"]);
  assert.equal(p.kernels[0].dispatchesPerPass, 2);
  assert.equal(p.kernels[0].nsPerPass, 2500);
  assert.equal(p.kernels[1].nsPerPass, 200);
  assert.equal(p.busyNs, 2700);
  assert.equal(p.idleNs, (6400 - 5400) / 2);
  assert.ok(Math.abs(p.kernels[0].share - 2500 / 2700) < 1e-12);
  const md = profileMarkdown(p);
  assert.match(md, /\| gemv \| 2 \| 2\.5 \| 92\.6% \|/);
  assert.match(md, /\| \*\*all kernels\*\* \| 3 \| 2\.7 \| 100% \|/);
  assert.match(md, /between dispatches .* \| 0\.5 \|/);
});

Deno.test("profileByKernel refuses an empty profile and a bad pass count", () => {
  assert.throws(() => profileByKernel([], 1), /no dispatches/);
  assert.throws(() => profileByKernel([d("a", 0, 1)], 0), /passes: a positive integer, got 0/);
});
