import type { Gpu } from "../runtime/base/gpu/device.ts";
import {
  argBinding,
  argCount,
  argDisjoint,
  argDistinct,
  argDType,
  argInPlace,
  argOneOf,
  type BindingRange,
} from "./args.ts";
import { rejects } from "./test_util.ts";

/** A stand-in for the few `Gpu` fields the checks read. */
const fakeGpu = {
  limits: { minStorageBufferOffsetAlignment: 256, maxStorageBufferBindingSize: 1 << 20 },
  byteLength: (b: GPUBuffer) => b.size,
} as unknown as Gpu;
const fakeBuffer = (size: number) => ({ size }) as GPUBuffer;

Deno.test("argument checks name the argument and say what was expected and found", async () => {
  await rejects(() => argCount("n", 0), "n", "[1, 4294967295], got 0");
  await rejects(() => argCount("k", 2.5, 1, 4), "k", "[1, 4], got 2.5");
  await rejects(() => argCount("k", "3"), "k", "got '3' (a string)");
  await rejects(() => argDType("dtype", "fp8"), "dtype", "unsupported dtype 'fp8'");
  await rejects(() => argOneOf("style", "c", ["a", "b"]), "style", "use one of a, b");
  const buf = fakeBuffer(1024);
  await rejects(
    () => argBinding(fakeGpu, "x", buf, 2048, "f32 [n=512]"),
    "x",
    "expected at least 2048 bytes (f32 [n=512]), got a binding of 1024 bytes",
  );
  await rejects(() => argBinding(fakeGpu, "x", undefined, 4), "x", "got undefined");
  await rejects(
    () => argBinding(fakeGpu, "x", { buffer: buf, offset: 4 }, 4),
    "x",
    "not a multiple of 256",
  );
  await rejects(
    () => argBinding(fakeGpu, "x", { buffer: buf, offset: 256, size: 1024 }, 4),
    "x",
    "inside the buffer's 1024 bytes",
  );
  await rejects(
    () => argBinding(fakeGpu, "x", fakeBuffer(2 << 20), 4),
    "x",
    "maxStorageBufferBindingSize",
  );
  const r = argBinding(fakeGpu, "x", { buffer: buf, offset: 256 }, 4);
  if (r.offset !== 256 || r.size !== 768 || r.buffer !== buf) throw new Error("range");
});

Deno.test("aliasing checks: distinct buffers for written bindings, disjoint ranges, in place", async () => {
  const buf = fakeBuffer(1024), other = fakeBuffer(1024);
  const lo: BindingRange = { buffer: buf, offset: 0, size: 256 };
  const hi: BindingRange = { buffer: buf, offset: 256, size: 256 };
  const whole: BindingRange = { buffer: buf, offset: 0, size: 1024 };
  const elsewhere: BindingRange = { buffer: other, offset: 0, size: 1024 };
  // Read-only + written bindings may not share a buffer, even on disjoint ranges.
  await rejects(
    () => argDistinct("out", hi, { w: elsewhere, x: lo }),
    "out",
    "distinct from x, got the same GPU buffer (disjoint",
  );
  await rejects(
    () => argDistinct("out", whole, { x: lo }),
    "out",
    "(overlapping bytes [0, 1024) and [0, 256))",
  );
  argDistinct("out", lo, { x: elsewhere, bias: undefined });
  // Two written bindings may share a buffer on disjoint ranges.
  argDisjoint("out", lo, "rng", hi);
  await rejects(() => argDisjoint("out", whole, "rng", hi), "out", "overlaps rng");
  // In place: the same start; another range of the same buffer is an error on `out`.
  if (argInPlace({ ...lo }, lo) !== "inplace") throw new Error("inplace");
  if (argInPlace(elsewhere, lo) !== "separate") throw new Error("separate");
  await rejects(() => argInPlace(hi, lo), "out", "distinct from x");
});
