import assert from "node:assert/strict";
import { renderSvg } from "./plot_offload.ts";

const row = (mode: string, tps: number, ceil: number | null) => ({
  mode,
  decode_tokens_per_s: tps,
  ceiling_tokens_per_s: ceil,
  peak_gpu_bytes: 1,
});

Deno.test("plot_offload draws one bar per mode and series, a tick per ceiling, on a log axis", () => {
  const svg = renderSvg("t", [
    { label: "a", rows: [row("resident", 150, null), row("on-demand", 5, 6)] },
    { label: "b", rows: [row("resident", 200, null), row("on-demand", 0.5, 0.6)] },
  ]);
  assert.equal(svg.match(/height="13" fill/g)?.length, 4); // bars (the legend squares are 12 high)
  assert.equal(svg.match(/stroke-width="2"/g)?.length, 2); // two ceilings
  for (const t of [">0.1<", ">1<", ">10<", ">100<", ">1000<"]) assert.ok(svg.includes(t), t);
  assert.ok(svg.includes(">on-demand<") && svg.includes(">b<"));
  assert.throws(() => renderSvg("t", [{ label: "a", rows: [] }]), /no positive/);
});
