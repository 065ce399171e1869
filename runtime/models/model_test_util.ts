/**
 * Helpers shared by the model tests (make_model, random_weights, plan_model, inspect): fixture paths,
 * temporary directories, byte comparison. Test-only.
 * @module
 */
import assert from "node:assert/strict";
import { type MadeModel, makeModel, type MakeModelOptions } from "./make_model.ts";

/** The four architectures. */
export const ARCHS = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"] as const;
/** Directory of the HF-written fixtures. */
export const FIXTURES = new URL("../../tests/fixtures/hf/", import.meta.url).pathname;

/** Deep strict equality. */
export function assertEquals(actual: unknown, expected: unknown, message?: string): void {
  assert.deepStrictEqual(actual, expected, message);
}

/** Deep strict inequality. */
export function assertNotEquals(actual: unknown, expected: unknown, message?: string): void {
  assert.notDeepStrictEqual(actual, expected, message);
}

/** Whether two byte arrays are equal. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A fresh temporary directory. */
export async function tempDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "pregate_make_model_" });
}

/** Runs `fn` with a temporary directory, removed afterwards. */
export async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await tempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** makeModel into `dir`. */
export async function make(
  opts: Omit<MakeModelOptions, "out">,
  dir: string,
): Promise<MadeModel> {
  return await makeModel({ ...opts, out: dir });
}

/** A fixture's reference.json. */
export function reference(arch: string): Record<string, unknown> {
  return JSON.parse(Deno.readTextFileSync(`${FIXTURES}${arch}/reference.json`));
}
