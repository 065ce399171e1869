/**
 * Helpers for the GGUF tests: a raw byte builder for hand-made (malformed) files, typed-error
 * assertions and both access modes. Used by `gguf*_test.ts` files only.
 * @module
 */
import assert from "node:assert/strict";
import { GgufError } from "../base/errors.ts";
import { type GgufFile, openGguf } from "./gguf.ts";
import { GGUF_VALUE_TYPES, type GgufValueType } from "./gguf_header.ts";
import { KINDS } from "./safetensors_test_util.ts";

export { withTempDir } from "./safetensors_test_util.ts";

const enc = new TextEncoder();

/** Little-endian raw bytes, built field by field (no validation: for malformed files). */
export class Raw {
  #parts: number[] = [];

  /** Appends bytes. */
  bytes(b: ArrayLike<number>): this {
    for (let i = 0; i < b.length; i++) this.#parts.push(b[i] & 0xff);
    return this;
  }
  /** Appends an unsigned integer of `n` bytes (bigint for 8). */
  uint(v: number | bigint, n: number): this {
    let x = BigInt(v);
    for (let i = 0; i < n; i++, x >>= 8n) this.#parts.push(Number(x & 0xffn));
    return this;
  }
  u8(v: number): this {
    return this.uint(v, 1);
  }
  u32(v: number): this {
    return this.uint(v, 4);
  }
  u64(v: number | bigint): this {
    return this.uint(v, 8);
  }
  f32(v: number): this {
    return this.bytes(new Uint8Array(new Float32Array([v]).buffer));
  }
  /** A GGUF string: u64 length and UTF-8 bytes (or raw bytes). */
  str(s: string | Uint8Array): this {
    const b = typeof s === "string" ? enc.encode(s) : s;
    return this.u64(b.byteLength).bytes(b);
  }
  /** A value type id. */
  type(t: GgufValueType | number): this {
    return this.u32(typeof t === "number" ? t : GGUF_VALUE_TYPES.indexOf(t));
  }
  /** The header start: magic, version, tensor and key-value counts. */
  head(nTensors: number | bigint, nKv: number | bigint, version = 3, magic = "GGUF"): this {
    return this.bytes(enc.encode(magic)).u32(version).u64(nTensors).u64(nKv);
  }
  /** A key-value pair of a u32 value. */
  kvU32(key: string, v: number): this {
    return this.str(key).type("u32").u32(v);
  }
  /** A key-value pair of a string value. */
  kvStr(key: string, v: string): this {
    return this.str(key).type("string").str(v);
  }
  /** A tensor info: name, dims (ggml order), ggml type id, relative offset. */
  tensor(name: string, dims: number[], typeId: number, offset: number | bigint): this {
    this.str(name).u32(dims.length);
    for (const d of dims) this.u64(d);
    return this.u32(typeId).u64(offset);
  }
  /** Zeros up to a multiple of `a` bytes. */
  pad(a: number): this {
    while (this.#parts.length % a) this.#parts.push(0);
    return this;
  }
  /** `n` bytes of `v`. */
  fill(n: number, v = 0): this {
    for (let i = 0; i < n; i++) this.#parts.push(v);
    return this;
  }
  get length(): number {
    return this.#parts.length;
  }
  build(): Uint8Array {
    return Uint8Array.from(this.#parts);
  }
}

/** Asserts that `fn` throws a GgufError naming `file` (and `key` / `tensor`) with every string. */
export function assertGgufError(
  fn: () => unknown,
  file: string,
  where: { key?: string; tensor?: string },
  ...includes: string[]
): GgufError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof GgufError, `expected a GgufError, got ${String(e)}`);
    assert.equal(e.file, file);
    assert.equal(e.code, "E_WEIGHTS");
    assert.equal(e.key, where.key, `key in: ${e.message}`);
    assert.equal(e.tensor, where.tensor, `tensor in: ${e.message}`);
    assert.ok(e.message.startsWith(file), e.message);
    if (where.key) assert.ok(e.message.includes(`[key ${where.key}]`), e.message);
    if (where.tensor) assert.ok(e.message.includes(`[tensor ${where.tensor}]`), e.message);
    for (const s of includes) assert.ok(e.message.includes(s), `expected "${s}" in: ${e.message}`);
    return e;
  }
  throw new assert.AssertionError({ message: "expected a GgufError to be thrown" });
}

/** Writes `bytes` to `dir/name` and returns the path. */
export async function rawGguf(dir: string, bytes: Uint8Array, name = "bad.gguf"): Promise<string> {
  const path = `${dir}/${name}`;
  await Deno.writeFile(path, bytes);
  return path;
}

/** Opens `path` in each access mode and runs `check` with the opener. */
export function bothModes(path: string, check: (open: () => GgufFile) => void): void {
  for (const mode of KINDS) check(() => openGguf(path, { mode }));
}

/** Asserts that opening `path` (both modes) throws a GgufError as {@linkcode assertGgufError}. */
export function assertBad(
  path: string,
  where: { key?: string; tensor?: string },
  ...includes: string[]
): void {
  bothModes(path, (open) => assertGgufError(open, path, where, ...includes));
}
