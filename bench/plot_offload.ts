/**
 * Draws decode tokens/s per offloading mode from `bench/offload.ts` JSON results as an SVG bar chart
 * (log scale: the modes span three orders of magnitude), one bar group per mode, one bar per result
 * file, with each mode's copy ceiling (upload bytes per token / measured copy rate) as a tick.
 *
 * Run: `deno run -R -W bench/plot_offload.ts OUT.svg LABEL=FILE.json [LABEL=FILE.json ...]`
 * @module
 */

interface Row {
  mode: string;
  decode_tokens_per_s: number;
  ceiling_tokens_per_s: number | null;
  peak_gpu_bytes: number;
}

const COLORS = ["#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#a463f2", "#97bbf5"];

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** Renders the chart; `series` maps a label to the rows of one run. */
export function renderSvg(title: string, series: { label: string; rows: Row[] }[]): string {
  const modes: string[] = [];
  for (const s of series) for (const r of s.rows) if (!modes.includes(r.mode)) modes.push(r.mode);
  const values = series.flatMap((s) =>
    s.rows.flatMap((r) => [r.decode_tokens_per_s, r.ceiling_tokens_per_s ?? 0])
  ).filter((v) => v > 0);
  if (values.length === 0) throw new Error("no positive tokens/s values to plot");
  const lo = 10 ** Math.floor(Math.log10(Math.min(...values)));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(...values)));
  const left = 170, right = 40, top = 50, barH = 16, gap = 14;
  const plotW = 560, groupH = series.length * barH + gap;
  const height = top + modes.length * groupH + 70;
  const width = left + plotW + right;
  const x = (v: number) =>
    left + (Math.log10(Math.max(v, lo)) - Math.log10(lo)) /
      (Math.log10(hi) - Math.log10(lo)) * plotW;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="22" font-size="14" font-weight="bold">${esc(title)}</text>`,
  ];
  for (let e = Math.log10(lo); e <= Math.log10(hi); e++) {
    const v = 10 ** e, px = x(v);
    out.push(
      `<line x1="${px}" y1="${top - 8}" x2="${px}" y2="${height - 60}" stroke="#ddd"/>`,
      `<text x="${px}" y="${height - 45}" text-anchor="middle">${
        v >= 1 ? v : v.toFixed(-e)
      }</text>`,
    );
  }
  out.push(
    `<text x="${left + plotW / 2}" y="${height - 28}" text-anchor="middle">` +
      `decode tokens/s (log scale); tick = copy ceiling of the mode</text>`,
  );
  modes.forEach((mode, mi) => {
    const y0 = top + mi * groupH;
    out.push(
      `<text x="${left - 8}" y="${y0 + (series.length * barH) / 2 + 4}" text-anchor="end">${
        esc(mode)
      }</text>`,
    );
    series.forEach((s, si) => {
      const r = s.rows.find((row) => row.mode === mode);
      if (!r) return;
      const y = y0 + si * barH, c = COLORS[si % COLORS.length];
      const w = Math.max(1, x(r.decode_tokens_per_s) - left);
      out.push(
        `<rect x="${left}" y="${y}" width="${w.toFixed(1)}" height="${barH - 3}" fill="${c}"/>`,
        `<text x="${left + w + 4}" y="${y + barH - 5}" font-size="10">${
          r.decode_tokens_per_s.toPrecision(3)
        }</text>`,
      );
      if (r.ceiling_tokens_per_s) {
        const cx = x(r.ceiling_tokens_per_s);
        out.push(
          `<line x1="${cx}" y1="${y - 1}" x2="${cx}" y2="${y + barH - 2}" stroke="black" ` +
            `stroke-width="2"/>`,
        );
      }
    });
  });
  series.forEach((s, si) => {
    const lx = left + si * 190, ly = height - 14;
    out.push(
      `<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="${
        COLORS[si % COLORS.length]
      }"/>`,
      `<text x="${lx + 16}" y="${ly}">${esc(s.label)}</text>`,
    );
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}

if (import.meta.main) {
  const [outPath, ...specs] = Deno.args;
  if (!outPath?.endsWith(".svg") || specs.length === 0) {
    console.error("usage: deno run -R -W bench/plot_offload.ts OUT.svg LABEL=FILE.json [...]");
    Deno.exit(2);
  }
  const series = [];
  let title = "Decode tokens/s per offloading mode";
  for (const spec of specs) {
    const eq = spec.indexOf("=");
    if (eq < 1) {
      console.error(`bad series '${spec}': expected LABEL=FILE.json`);
      Deno.exit(2);
    }
    const data = JSON.parse(await Deno.readTextFile(spec.slice(eq + 1)));
    const rows = (data.results ?? []) as (Row & { spec?: string })[];
    if (rows.length === 0) {
      console.error(`${spec.slice(eq + 1)}: no results`);
      Deno.exit(1);
    }
    if (rows[0].spec) title = `Decode tokens/s per mode, ${rows[0].spec}`;
    series.push({ label: spec.slice(0, eq), rows });
  }
  await Deno.writeTextFile(outPath, renderSvg(title, series));
  console.log(`wrote ${outPath}`);
}
