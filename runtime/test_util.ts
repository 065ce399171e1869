/**
 * The test helpers of the whole repository: the shared test GPU, options for GPU tests, assertions
 * on typed errors, deep equality and temporary directories. Kernel tests add theirs in
 * `kernels/test_util.ts` (which re-exports these), end-to-end tests in `tests/test_util.ts`. Seeded
 * random inputs and the normwise comparison are in `kernels/check.ts` (benchmarks use them too).
 * Test code only.
 * @module
 */
import assert from "node:assert/strict";
import { ArgumentError } from "./base/errors.ts";
import { type Gpu, type GpuChoice, openGpu } from "./base/gpu/device.ts";

let shared: Promise<Gpu> | undefined;

/** The GPU tests run on (`PREGATE_TEST_GPU` = native | dawn | auto; default native), opened once. */
export function testGpu(): Promise<Gpu> {
  if (!shared) {
    shared = openGpu({ gpu: (Deno.env.get("PREGATE_TEST_GPU") ?? "native") as GpuChoice });
    // Native: destroy the device before the process exits rather than leaving it to driver
    // teardown. Dawn: leave it (docs/decisions.md, "Tests").
    let opened: Gpu | undefined;
    shared.then((g) => opened = g, () => {});
    globalThis.addEventListener("unload", () => {
      if (opened?.impl === "native") opened.destroy();
    });
  }
  return shared;
}

/** Options for GPU tests: WebGPU keeps a device and timers alive across tests. */
export const GPU_TEST = { sanitizeResources: false, sanitizeOps: false } as const;

/** `assert.deepStrictEqual`, under the name the tests use. */
export function assertEquals(actual: unknown, expected: unknown, message?: string): void {
  assert.deepStrictEqual(actual, expected, message);
}

/** Asserts that `fn` throws an instance of `cls` whose message includes every string; returns it. */
export function assertThrows<E extends Error>(
  fn: () => unknown,
  cls: new (...args: never[]) => E,
  ...includes: string[]
): E {
  try {
    fn();
  } catch (e) {
    return checkError(e, cls, includes);
  }
  throw new assert.AssertionError({ message: `expected ${cls.name} to be thrown` });
}

/** As {@linkcode assertThrows}, for a function returning a promise that should reject. */
export async function assertRejects<E extends Error>(
  fn: () => Promise<unknown>,
  cls: new (...args: never[]) => E,
  ...includes: string[]
): Promise<E> {
  try {
    await fn();
  } catch (e) {
    return checkError(e, cls, includes);
  }
  throw new assert.AssertionError({ message: `expected ${cls.name} to be thrown` });
}

function checkError<E extends Error>(
  e: unknown,
  cls: new (...args: never[]) => E,
  includes: string[],
): E {
  assert.ok(e instanceof cls, `expected ${cls.name}, got ${String(e)}`);
  for (const s of includes) {
    assert.ok(e.message.includes(s), `expected "${s}" in: ${e.message}`);
  }
  return e;
}

/**
 * Asserts that `what` (a promise, or a function that is called and awaited) rejects with an
 * `ArgumentError` whose `argument` is `argument` and whose message contains `text` (when given).
 */
export async function rejects(
  what: Promise<unknown> | (() => unknown),
  argument: string,
  text = "",
): Promise<void> {
  try {
    await (typeof what === "function" ? what() : what);
  } catch (e) {
    if (!(e instanceof ArgumentError)) throw e;
    if (e.argument !== argument || !e.message.includes(text)) {
      throw new assert.AssertionError({
        message: `expected an ArgumentError on '${argument}'${text ? ` (${text})` : ""}, got: ` +
          e.message,
      });
    }
    return;
  }
  throw new assert.AssertionError({
    message: `expected an ArgumentError on '${argument}', nothing was thrown`,
  });
}

/** Runs `fn` with a fresh temporary directory, removed afterwards. */
export async function withTempDir(fn: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "pregate_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
