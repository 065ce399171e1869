/**
 * Where a decode step's GPU time goes: the dispatches of a `Gpu.startProfile` profile grouped by
 * kernel (their label), per forward pass, busiest first, with the share of the GPU's busy time and
 * the idle time between dispatches (the CPU's part: encoding, submits, readbacks).
 *
 * @example
 * ```ts
 * import { profileByKernel } from "./profile_table.ts";
 * const p = profileByKernel([
 *   { label: "gemv", start: 0, end: 3000 },
 *   { label: "norm", start: 4000, end: 5000 },
 * ], 1);
 * console.log(p.kernels[0].label, p.busyNs, p.idleNs); // gemv 4000 1000
 * ```
 * @module
 */
import type { ProfiledDispatch } from "../runtime/base/gpu/types.ts";

/** One kernel's dispatches in a profile. */
export interface KernelTime {
  /** The kernel (the dispatches' label). */
  label: string;
  /** Dispatches per forward pass. */
  dispatchesPerPass: number;
  /** GPU nanoseconds per forward pass (the sum of its dispatches' durations). */
  nsPerPass: number;
  /** Its share of the GPU's busy time, 0..1. */
  share: number;
}

/** A profile grouped by kernel (see the module documentation). */
export interface KernelProfile {
  /** Kernels, the most GPU time first. */
  kernels: KernelTime[];
  /** Forward passes the profile covers. */
  passes: number;
  /** GPU nanoseconds busy in dispatches, per pass. */
  busyNs: number;
  /** Nanoseconds between dispatches (from the first start to the last end, minus busy), per pass. */
  idleNs: number;
}

/**
 * Groups `dispatches` (in submission order, as `Gpu.stopProfile` returns them) by label, per
 * forward pass of `passes`.
 *
 * @throws {RangeError} for no dispatches or `passes` not a positive integer.
 */
export function profileByKernel(
  dispatches: readonly ProfiledDispatch[],
  passes: number,
): KernelProfile {
  if (!dispatches.length) throw new RangeError("the profile holds no dispatches");
  if (!Number.isInteger(passes) || passes < 1) {
    throw new RangeError(`passes: a positive integer, got ${passes}`);
  }
  const byLabel = new Map<string, { n: number; ns: number }>();
  let busy = 0, first = Infinity, last = -Infinity;
  for (const d of dispatches) {
    const ns = Math.max(0, d.end - d.start);
    const k = byLabel.get(d.label) ?? { n: 0, ns: 0 };
    k.n++;
    k.ns += ns;
    byLabel.set(d.label, k);
    busy += ns;
    first = Math.min(first, d.start);
    last = Math.max(last, d.end);
  }
  const kernels = [...byLabel].map(([label, k]) => ({
    label,
    dispatchesPerPass: k.n / passes,
    nsPerPass: k.ns / passes,
    share: busy > 0 ? k.ns / busy : 0,
  })).sort((a, b) => b.nsPerPass - a.nsPerPass || a.label.localeCompare(b.label));
  return {
    kernels,
    passes,
    busyNs: busy / passes,
    idleNs: Math.max(0, last - first - busy) / passes,
  };
}

/** A markdown table of `p`: kernel, dispatches and microseconds per pass, share of busy time. */
export function profileMarkdown(p: KernelProfile): string {
  const us = (ns: number) => (ns / 1e3).toFixed(1);
  const lines = [
    "| kernel | dispatches / pass | GPU us / pass | share of GPU busy |",
    "|---|---|---|---|",
    ...p.kernels.map((k) =>
      `| ${k.label.replaceAll("|", "\\|")} | ${+k.dispatchesPerPass.toFixed(2)} | ${
        us(k.nsPerPass)
      } | ` +
      `${(100 * k.share).toFixed(1)}% |`
    ),
    `| **all kernels** | ${+p.kernels.reduce((a, k) => a + k.dispatchesPerPass, 0).toFixed(2)} | ${
      us(p.busyNs)
    } | 100% |`,
    `| between dispatches (CPU, submits, readbacks) | - | ${us(p.idleNs)} | - |`,
  ];
  return lines.join("\n");
}
