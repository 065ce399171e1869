/**
 * Opening a GPU: {@linkcode openGpu} finds an adapter in the chosen WebGPU implementation (Deno's
 * native `navigator.gpu`, or Dawn from the npm package `webgpu`, loaded only when asked for) and
 * returns a ready `Gpu`. Import it from `device.ts`.
 *
 * @example
 * ```ts
 * import { DAWN_FLAGS } from "./open.ts";
 * console.log(DAWN_FLAGS.length); // 2
 * ```
 * @module
 */
import { ArgumentError, GpuUnavailableError } from "../errors.ts";
import { readEnv } from "../env.ts";
import { Gpu, NO_ADAPTER_HINT } from "./gpu.ts";
import type { GpuEntry, OpenGpuOptions } from "./types.ts";

/**
 * Dawn instance flags used by default:
 * - `allow_unsafe_apis` exposes `chromium-experimental-subgroup-matrix` (tensor cores);
 * - `vulkan_enable_f16_on_nvidia` exposes `shader-f16` on NVIDIA's Vulkan driver, where Dawn hides
 *   it by default;
 * - `disable_robustness` drops the bounds clamps Dawn adds to every buffer access in shaders (as
 *   Chrome's Graphite and ONNX Runtime's WebGPU backend do): Pregate's kernels keep every access in
 *   bounds themselves, and their tests check the bytes past each output;
 * - disabling `timestamp_quantization` makes GPU timestamps exact (Dawn rounds them by default, a
 *   browser's defence against timing attacks).
 *
 * Kernels still validate every path against CPU references. `PREGATE_DAWN_FLAGS` (space-separated)
 * replaces the list, e.g. to keep robustness on. The measurements behind each flag:
 * docs/decisions.md.
 */
export const DAWN_FLAGS: readonly string[] = [
  "enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia,disable_robustness",
  "disable-dawn-features=timestamp_quantization",
];

function dawnFlagsFromEnv(): string[] | undefined {
  return readEnv("PREGATE_DAWN_FLAGS")?.split(" ").filter(Boolean);
}

async function loadDawn(flags: readonly string[]): Promise<GpuEntry> {
  // Loaded lazily so that native users never download or load dawn.node.
  const spec = "npm:webgpu@0.6.2";
  let mod: { create: (flags: string[]) => GPU };
  try {
    mod = await import(spec);
  } catch (e) {
    throw new GpuUnavailableError(
      `could not load Dawn from ${spec}: ${(e as Error).message}`,
      "run `deno install` in the project (the npm package `webgpu` must be reachable), or use " +
        "--gpu native",
      { cause: e },
    );
  }
  const gpu = mod.create([...flags]);
  return { gpu, impl: "dawn", keepAlive: gpu };
}

async function requestAdapter(entry: GpuEntry, pref: GPUPowerPreference) {
  try {
    return await entry.gpu.requestAdapter({ powerPreference: pref });
  } catch (e) {
    throw new GpuUnavailableError(
      `${entry.impl} WebGPU: requestAdapter failed: ${(e as Error).message}`,
      NO_ADAPTER_HINT,
      { cause: e },
    );
  }
}

/**
 * Opens a GPU device. `gpu: "auto"` tries Dawn first and falls back to native when Dawn does not load
 * or has no hardware adapter, reporting its choice through `log`.
 *
 * @throws {ArgumentError} for an unknown `gpu` choice.
 * @throws {GpuUnavailableError} when no adapter or device can be had.
 */
export async function openGpu(options: OpenGpuOptions = {}): Promise<Gpu> {
  const choice = options.gpu ?? "native";
  const pref = options.powerPreference ?? "high-performance";
  const log = options.log ?? (() => {});
  if (choice !== "native" && choice !== "dawn" && choice !== "auto") {
    throw new ArgumentError(
      "gpu",
      `unknown GPU implementation '${choice}'`,
      "use native, dawn or auto",
    );
  }
  let entry: GpuEntry | undefined;
  let adapter: GPUAdapter | null = null;
  if (choice === "dawn" || choice === "auto") {
    try {
      entry = await loadDawn(options.dawnFlags ?? dawnFlagsFromEnv() ?? DAWN_FLAGS);
      adapter = await requestAdapter(entry, pref);
      if (adapter && choice === "auto" && adapter.info.isFallbackAdapter) adapter = null;
      if (!adapter && choice === "dawn") {
        throw new GpuUnavailableError("Dawn WebGPU found no adapter", NO_ADAPTER_HINT);
      }
    } catch (e) {
      if (choice === "dawn") throw e;
      log(`gpu auto: Dawn unavailable (${(e as Error).message.split("\n")[0]}); using native`);
      adapter = null;
    }
    if (choice === "auto" && !adapter) entry = undefined;
  }
  if (!entry) {
    if (typeof navigator === "undefined" || !("gpu" in navigator) || !navigator.gpu) {
      throw new GpuUnavailableError("this Deno has no navigator.gpu", NO_ADAPTER_HINT);
    }
    entry = { gpu: navigator.gpu, impl: "native" };
    adapter = await requestAdapter(entry, pref);
    if (!adapter) {
      throw new GpuUnavailableError("Deno's native WebGPU found no adapter", NO_ADAPTER_HINT);
    }
  }
  if (choice === "auto") log(`gpu auto: using ${entry.impl} (${adapter!.info.description})`);
  return await Gpu.fromAdapter(entry, adapter!);
}
