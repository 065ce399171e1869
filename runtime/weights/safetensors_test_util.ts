/**
 * Fixtures of the safetensors tests: seeded tensors, hand-made (raw or malformed) files, the typed
 * error of a bad file and a full check of a {@linkcode TensorStore} against what was written; the
 * generic helpers (`assertThrows`, `withTempDir`, ...) come from `runtime/test_util.ts` and are
 * re-exported here. Used by `safetensors*_test.ts` files only.
 * @module
 */
import assert from "node:assert/strict";
import { WeightFileError } from "../base/errors.ts";
import { assertEquals, assertThrows } from "../test_util.ts";
import { type DType, roundTo } from "../base/dtype.ts";
import type { MapKind } from "./mmap.ts";
import { openCheckpoint, openSafetensors, type TensorStore } from "./safetensors.ts";
import { encodeTensor, type TensorToWrite } from "./safetensors_writer.ts";

export { assertEquals, assertRejects, assertThrows, withTempDir } from "../test_util.ts";

/** Both access modes, for tests that run in each. */
export const KINDS: MapKind[] = ["mmap", "read"];
const enc = new TextEncoder();

/** A WeightFileError naming `file` (and `tensor`, when given) with every string in its message. */
export function assertWeightError(
  fn: () => unknown,
  file: string,
  tensor: string | undefined,
  ...includes: string[]
): WeightFileError {
  const e = assertThrows(fn, WeightFileError, file, ...includes);
  assertEquals(e.file, file);
  assertEquals(e.tensor, tensor);
  if (tensor) assert.ok(e.message.includes(`[tensor ${tensor}]`), e.message);
  assertEquals(e.code, "E_WEIGHTS");
  return e;
}

/** `n` seeded pseudo-random values in [-4, 4) (xorshift32; never all zeros). */
export function randomValues(n: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 2 ** 32 - 0.5) * 8;
  }
  return out;
}

/** A tensor to write and the values it holds. */
export interface Spec {
  name: string;
  dtype: DType;
  shape: number[];
  values: Float32Array;
}

/** A {@linkcode Spec} of seeded random values. */
export function spec(name: string, dtype: DType, shape: number[], seed: number): Spec {
  return { name, dtype, shape, values: randomValues(shape.reduce((a, b) => a * b, 1), seed) };
}

/** The {@linkcode TensorToWrite} of a {@linkcode Spec}, its values encoded to its dtype. */
export function toWrite(s: Spec): TensorToWrite {
  return { name: s.name, dtype: s.dtype, shape: s.shape, data: encodeTensor(s.values, s.dtype) };
}

/** The names in `dir`, sorted. */
export async function listDir(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names.sort();
}

/** A raw safetensors file: 8-byte length (or `length`), header bytes, data. */
export function rawFile(
  header: string | Uint8Array,
  data = new Uint8Array(0),
  length?: bigint,
): Uint8Array {
  const h = typeof header === "string" ? enc.encode(header) : header;
  const out = new Uint8Array(8 + h.byteLength + data.byteLength);
  new DataView(out.buffer).setBigUint64(0, length ?? BigInt(h.byteLength), true);
  out.set(h, 8);
  out.set(data, 8 + h.byteLength);
  return out;
}

/** Checks that `store` holds exactly `specs`, in order, with their bytes and values. */
export function checkStore(store: TensorStore, specs: Spec[], kind: MapKind): void {
  assertEquals(store.kind, kind);
  assertEquals(store.names(), specs.map((s) => s.name));
  for (const s of specs) {
    assert.ok(store.has(s.name));
    const t = store.get(s.name);
    assertEquals(t.name, s.name);
    assertEquals(t.dtype, s.dtype);
    assertEquals(t.shape, s.shape);
    assertEquals(t.elements, s.values.length);
    assertEquals(t.byteLength, encodeTensor(s.values, s.dtype).byteLength);
    assertEquals(t.bytes(), encodeTensor(s.values, s.dtype), `bytes of ${s.name}`);
    assertEquals(t.alignment >= 4, t.offset % 4 === 0);
    assertEquals(t.offset % t.alignment, 0);
    assertEquals(store.tensorF32(s.name), roundTo(s.values, s.dtype), `values of ${s.name}`);
  }
  assert.ok(!store.has("nope"));
}

/** Tensors of every dtype, with odd sizes (unaligned offsets), a scalar and an empty tensor. */
export const SPECS: Spec[] = [
  spec("embed.weight", "bf16", [7, 6], 1),
  spec("odd.f16", "f16", [5], 2), // 10 bytes: the next tensor is only 2-byte aligned
  spec("unaligned.f32", "f32", [3, 1, 2], 3),
  spec("scalar", "f32", [], 4),
  spec("empty", "f16", [0, 4], 5),
  spec("norm.weight", "f32", [16], 6),
];

/** Writes `bytes` to `dir/bad.safetensors` and returns the path. */
export async function badFile(dir: string, bytes: Uint8Array): Promise<string> {
  const path = `${dir}/bad.safetensors`;
  await Deno.writeFile(path, bytes);
  return path;
}

/** A valid header entry: two F32 values at the start of the data section. */
export const F32x2 = { dtype: "F32", shape: [2], data_offsets: [0, 8] };

/** Runs the check in both access modes. */
export function bothModes(path: string, check: (open: () => TensorStore) => void): void {
  for (const mode of KINDS) check(() => openSafetensors(path, { mode }));
}

/**
 * Overwrites elements of a tensor in a checkpoint directory in place: element `i` of `indices`
 * (row-major, counted in the tensor's own dtype) gets `value` (NaN, Infinity, ...), encoded in the
 * tensor's dtype. For tests that plant bad values in an otherwise valid checkpoint.
 */
export async function pokeTensor(
  dir: string,
  tensor: string,
  indices: Iterable<number>,
  value: number,
): Promise<void> {
  const store = openCheckpoint(dir, { mode: "read" });
  const e = store.describe(tensor);
  store.close();
  if (e.dtype === null) throw new Error(`${tensor}: cannot poke dtype ${e.fileDType}`);
  const bytes = encodeTensor([value], e.dtype as DType);
  const file = await Deno.open(e.file, { write: true });
  try {
    for (const i of indices) {
      if (!(i >= 0 && i < e.elements)) throw new Error(`${tensor}: element ${i} out of range`);
      await file.seek(e.offset + i * bytes.byteLength, Deno.SeekMode.Start);
      await file.write(bytes);
    }
  } finally {
    file.close();
  }
}
