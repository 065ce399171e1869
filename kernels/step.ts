/**
 * Decode-loop bookkeeping (`step.wgsl`): records the sampled token and advances the position on the
 * GPU, so a recorded decode step can be replayed many times between readbacks.
 *
 * @example
 * ```ts ignore
 * // state: u32 [pos, count]; history: u32 [capacity]
 * gpu.submit([...decodeSteps, await advanceStep(gpu, { ids, state, history, advance: 1, capacity })]);
 * ```
 * @module
 */
import type { Binding, Dispatch, Gpu } from "../runtime/base/gpu/device.ts";
import { defineKernel, type KernelSpec, ParamWriter } from "./registry.ts";
import { argBinding, argCount, argDisjoint, argDistinct, argObject } from "./args.ts";

/** `history[count] = ids[0]; pos += advance; count += 1` (state = [pos, count]). */
export const ADVANCE_STEP: KernelSpec = defineKernel({
  name: "advance_step",
  file: "step.wgsl",
  bindings: ["params", "ids", "state", "history"],
});

/**
 * Builds the bookkeeping dispatch that ends a generation step. `state` and `history` must not share
 * a buffer with `ids`, nor overlap each other.
 *
 * @throws {ArgumentError} naming the bad argument (counts, bindings too small, shared buffers).
 */
export async function advanceStep(
  gpu: Gpu,
  args: { ids: Binding; state: Binding; history: Binding; advance: number; capacity: number },
): Promise<Dispatch> {
  argObject(args);
  const advance = argCount("advance", args.advance, 0);
  const capacity = argCount("capacity", args.capacity);
  const ids = argBinding(gpu, "ids", args.ids, 4);
  const state = argBinding(gpu, "state", args.state, 8);
  const history = argBinding(gpu, "history", args.history, capacity * 4);
  argDistinct("state", state, { ids });
  argDistinct("history", history, { ids });
  argDisjoint("history", history, "state", state); // both written: disjoint ranges are fine
  const pipeline = await gpu.pipeline(ADVANCE_STEP);
  const params = gpu.uniform(new ParamWriter().u32(advance, capacity).bytes(), "advance.params");
  return gpu.dispatch(pipeline, [params, ids, state, history], [1], "advance_step");
}
