/**
 * Writing safetensors files and Hugging Face style (optionally sharded) checkpoints, streaming: the
 * header is written first, then each tensor's data straight to the file handle, so a multi-GB
 * checkpoint never has to be in memory at once. A tensor's data may be given eagerly (a typed
 * array) or lazily (a function called once, when the tensor's turn comes, returning the bytes or an
 * iterable / async iterable of chunks).
 *
 * Layout: the JSON header is padded with spaces to a multiple of 8 bytes (so the data section starts
 * 8-byte aligned), `__metadata__` comes first, and tensors are stored back to back in the order
 * given, with no gaps (as the format requires). Files are written to `<path>.partial`, flushed to
 * disk and renamed into place when complete, so a failed or interrupted write never leaves a truncated file under
 * the final name.
 *
 * @example
 * ```ts
 * import { encodeTensor, writeShardedCheckpoint } from "./safetensors_writer.ts";
 * await writeShardedCheckpoint("/tmp/ckpt", [
 *   { name: "norm.weight", dtype: "f32", shape: [4], data: encodeTensor([1, 1, 1, 1], "f32") },
 *   {
 *     name: "big.weight",
 *     dtype: "bf16",
 *     shape: [4096, 4096],
 *     data: () => encodeTensor(new Float32Array(4096 * 4096).map(Math.random), "bf16"),
 *   },
 * ], { maxShardBytes: 16 << 20 });
 * ```
 * @module
 */
import { ArgumentError } from "../base/errors.ts";
import { asWriteError } from "../output_files.ts";
import { type DType, packWeights } from "../base/dtype.ts";
import {
  DTYPE_TO_SAFETENSORS,
  INDEX_FILE_NAME,
  SAFETENSORS_DTYPE_BYTES,
  SINGLE_FILE_NAME,
} from "./safetensors.ts";

/** Bytes of tensor data: any typed array or `DataView` (its bytes are written as they are in memory). */
export type TensorData = ArrayBufferView;

/**
 * A tensor's data: the bytes themselves, or a function called exactly once, when the tensor is
 * written, that returns (or resolves to) the bytes or an iterable / async iterable of byte chunks.
 */
export type TensorDataSource =
  | TensorData
  | (() =>
    | TensorData
    | Promise<TensorData>
    | Iterable<TensorData>
    | AsyncIterable<TensorData>);

/**
 * One tensor to write. `dtype` is a {@linkcode DType} (`f32`, `f16`, `bf16`) or any safetensors dtype
 * name with a whole-byte size (`F32`, `BF16`, `I64`, `U8`, `F8_E4M3`, ...). The data must hold exactly
 * `product(shape) * dtype size` bytes, little-endian.
 *
 * @example
 * ```ts
 * import type { TensorToWrite } from "./safetensors_writer.ts";
 * const t: TensorToWrite = {
 *   name: "model.norm.weight",
 *   dtype: "f32",
 *   shape: [2],
 *   data: new Float32Array([1, 1]),
 * };
 * console.log(t.name);
 * ```
 */
export interface TensorToWrite {
  /** The tensor's name (not empty, not `__metadata__`, unique in the checkpoint). */
  name: string;
  /** The dtype: `f32` / `f16` / `bf16`, or a safetensors dtype name. */
  dtype: DType | string;
  /** The shape (non-negative integers; `[]` for a scalar). */
  shape: readonly number[];
  /** The data, eager or lazy. */
  data: TensorDataSource;
}

/**
 * What {@linkcode writeSafetensors} wrote.
 *
 * @example
 * ```ts
 * import { writeSafetensors } from "./safetensors_writer.ts";
 * const w = await writeSafetensors("/tmp/a.safetensors", []);
 * console.log(w.byteLength, w.headerLength); // 16 8
 * ```
 */
export interface WrittenFile {
  /** The file written. */
  path: string;
  /** Its size in bytes. */
  byteLength: number;
  /** The JSON header's length in bytes (a multiple of 8), after the 8-byte length prefix. */
  headerLength: number;
  /** Each tensor's absolute byte offset and length in the file, in order. */
  tensors: { name: string; dtype: string; offset: number; byteLength: number }[];
}

/** Options of {@linkcode writeShardedCheckpoint}. */
export interface WriteCheckpointOptions {
  /**
   * The most tensor bytes per shard (default 5e9, as Hugging Face's "5GB"). A tensor larger than
   * this gets a shard of its own.
   */
  maxShardBytes?: number;
  /** `__metadata__` written into every file (e.g. `{format: "pt"}`). */
  metadata?: Record<string, string>;
}

/**
 * What {@linkcode writeShardedCheckpoint} wrote.
 *
 * @example
 * ```ts
 * import { writeShardedCheckpoint } from "./safetensors_writer.ts";
 * const c = await writeShardedCheckpoint("/tmp/ck", [], {});
 * console.log(c.files, c.index); // ["/tmp/ck/model.safetensors"] null
 * ```
 */
export interface WrittenCheckpoint {
  /** The checkpoint directory. */
  dir: string;
  /** The safetensors files written, in order. */
  files: string[];
  /** The index written, or `null` for a single-file checkpoint. */
  index: string | null;
  /** The total tensor bytes (the index's `metadata.total_size`). */
  totalSize: number;
}

interface Planned {
  name: string;
  dtype: string;
  shape: number[];
  byteLength: number;
  data: TensorDataSource;
}

/**
 * Encodes numbers as the bytes of a `dtype` tensor (little-endian; f16/bf16 rounded to nearest
 * even), exactly `values.length * size` bytes long.
 *
 * @example
 * ```ts
 * import { encodeTensor } from "./safetensors_writer.ts";
 * console.log(encodeTensor([1, 2, 3], "bf16").byteLength); // 6
 * ```
 */
export function encodeTensor(values: ArrayLike<number>, dtype: DType): Uint8Array {
  const words = packWeights(values, dtype);
  const size = dtype === "f32" ? 4 : 2;
  return new Uint8Array(words.buffer, words.byteOffset, values.length * size);
}

function normaliseDType(name: string, dtype: string): string {
  const mapped = (DTYPE_TO_SAFETENSORS as Record<string, string>)[dtype] ?? dtype;
  if (SAFETENSORS_DTYPE_BYTES[mapped] === undefined) {
    throw new ArgumentError(
      `dtype of tensor '${name}'`,
      `unsupported dtype '${dtype}'`,
      `use f32, f16, bf16 or one of ${Object.keys(SAFETENSORS_DTYPE_BYTES).join(", ")}`,
    );
  }
  return mapped;
}

function plan(tensors: Iterable<TensorToWrite>): Planned[] {
  const seen = new Set<string>();
  const out: Planned[] = [];
  for (const t of tensors) {
    const name = t.name;
    if (typeof name !== "string" || name === "" || name === "__metadata__") {
      throw new ArgumentError("name", `invalid tensor name ${JSON.stringify(name)}`);
    }
    if (seen.has(name)) {
      throw new ArgumentError(`name`, `duplicate tensor name '${name}'`, "names must be unique");
    }
    seen.add(name);
    const dtype = normaliseDType(name, t.dtype);
    if (
      !Array.isArray(t.shape) ||
      !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)
    ) {
      throw new ArgumentError(
        `shape of tensor '${name}'`,
        `expected an array of non-negative integers, found ${JSON.stringify(t.shape)}`,
      );
    }
    const shape = [...t.shape];
    const byteLength = shape.reduce((a, b) => a * b, 1) * SAFETENSORS_DTYPE_BYTES[dtype];
    if (!Number.isSafeInteger(byteLength)) {
      throw new ArgumentError(`shape of tensor '${name}'`, `${JSON.stringify(shape)} is too large`);
    }
    if (ArrayBuffer.isView(t.data)) checkLength(name, shape, dtype, byteLength, t.data.byteLength);
    else if (typeof t.data !== "function") {
      throw new ArgumentError(
        `data of tensor '${name}'`,
        "expected a typed array or a function returning the data",
      );
    }
    out.push({ name, dtype, shape, byteLength, data: t.data });
  }
  return out;
}

function checkLength(
  name: string,
  shape: number[],
  dtype: string,
  expected: number,
  found: number,
): void {
  if (found !== expected) {
    throw new ArgumentError(
      `data of tensor '${name}'`,
      `expected ${expected} bytes (shape ${JSON.stringify(shape)} x ${
        SAFETENSORS_DTYPE_BYTES[dtype]
      } bytes of ${dtype}), found ${found}${found > expected ? " or more" : ""}`,
    );
  }
}

function asBytes(view: TensorData): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

async function* chunksOf(source: TensorDataSource): AsyncGenerator<Uint8Array> {
  if (ArrayBuffer.isView(source)) {
    yield asBytes(source);
    return;
  }
  const produced = await source();
  if (ArrayBuffer.isView(produced)) {
    yield asBytes(produced);
  } else if (Symbol.asyncIterator in produced) {
    for await (const c of produced) yield asBytes(c);
  } else {
    for (const c of produced) yield asBytes(c);
  }
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.byteLength) done += await file.write(bytes.subarray(done));
}

function buildHeader(planned: Planned[], metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") {
        throw new ArgumentError(
          "metadata",
          `value of '${k}' must be a string, found ${typeof v}`,
          "safetensors __metadata__ maps strings to strings",
        );
      }
    }
    header.__metadata__ = metadata;
  }
  let at = 0;
  for (const t of planned) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [at, at + t.byteLength] };
    at += t.byteLength;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.byteLength / 8) * 8;
  const out = new Uint8Array(8 + padded).fill(0x20, 8 + json.byteLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  return out;
}

async function writePlanned(
  path: string,
  planned: Planned[],
  metadata?: Record<string, string>,
): Promise<WrittenFile> {
  const head = buildHeader(planned, metadata);
  const tmp = `${path}.partial`;
  let file: Deno.FsFile;
  try {
    file = await Deno.open(tmp, { write: true, create: true, truncate: true });
  } catch (e) {
    throw asWriteError(e, tmp);
  }
  let closed = false;
  try {
    await writeAll(file, head);
    let offset = head.byteLength;
    const tensors: WrittenFile["tensors"] = [];
    for (const t of planned) {
      let written = 0;
      for await (const chunk of chunksOf(t.data)) {
        if (written + chunk.byteLength > t.byteLength) {
          checkLength(t.name, t.shape, t.dtype, t.byteLength, written + chunk.byteLength);
        }
        await writeAll(file, chunk);
        written += chunk.byteLength;
      }
      checkLength(t.name, t.shape, t.dtype, t.byteLength, written);
      tensors.push({ name: t.name, dtype: t.dtype, offset, byteLength: t.byteLength });
      offset += t.byteLength;
    }
    await file.syncData(); // on disk before it takes the name: no dirty pages left behind
    file.close();
    closed = true;
    await Deno.rename(tmp, path);
    return { path, byteLength: offset, headerLength: head.byteLength - 8, tensors };
  } catch (e) {
    if (!closed) file.close();
    await Deno.remove(tmp).catch(() => {});
    throw asWriteError(e, tmp);
  }
}

/**
 * Writes one safetensors file, streaming each tensor's data to disk in order (lazy data functions
 * are called one at a time, in order, so at most one tensor's data needs to be in memory). Throws
 * {@linkcode ArgumentError} for a bad name, dtype or shape, a duplicate name, or data of the wrong
 * length (naming the tensor); nothing is left under `path` on failure.
 *
 * @example
 * ```ts
 * import { writeSafetensors } from "./safetensors_writer.ts";
 * await writeSafetensors("/tmp/one.safetensors", [
 *   { name: "w", dtype: "f32", shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) },
 *   { name: "ids", dtype: "I64", shape: [1], data: () => new BigInt64Array([7n]) },
 * ], { format: "pt" });
 * ```
 */
export async function writeSafetensors(
  path: string,
  tensors: Iterable<TensorToWrite>,
  metadata?: Record<string, string>,
): Promise<WrittenFile> {
  return await writePlanned(path, plan(tensors), metadata);
}

function shardName(i: number, n: number): string {
  const pad = (x: number) => String(x).padStart(5, "0");
  return `model-${pad(i + 1)}-of-${pad(n)}.safetensors`;
}

async function removeIfPresent(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}

/**
 * Writes a checkpoint directory (created if needed): a single `model.safetensors` when all tensors
 * fit in `maxShardBytes`, otherwise shards `model-00001-of-0000N.safetensors` (tensors in order,
 * packed greedily) and a Hugging Face `model.safetensors.index.json`
 * (`{"metadata": {"total_size": ...}, "weight_map": {name: shard}}`, written last). A stale index or
 * `model.safetensors` of the other layout is removed, so {@linkcode openCheckpoint} reads what was
 * just written. Lazy data is produced one tensor at a time.
 *
 * @example
 * ```ts
 * import { encodeTensor, writeShardedCheckpoint } from "./safetensors_writer.ts";
 * const experts = Array.from({ length: 8 }, (_, e) => ({
 *   name: `layers.0.experts.${e}.weight`,
 *   dtype: "f16",
 *   shape: [1024, 1024],
 *   data: () => encodeTensor(new Float32Array(1024 * 1024).fill(e), "f16"),
 * }));
 * const out = await writeShardedCheckpoint("/tmp/moe", experts, { maxShardBytes: 4 << 20 });
 * console.log(out.files.length, out.index); // 4 "/tmp/moe/model.safetensors.index.json"
 * ```
 */
export async function writeShardedCheckpoint(
  dir: string,
  tensors: Iterable<TensorToWrite>,
  options: WriteCheckpointOptions = {},
): Promise<WrittenCheckpoint> {
  const max = options.maxShardBytes ?? 5_000_000_000;
  if (!Number.isSafeInteger(max) || max <= 0) {
    throw new ArgumentError("maxShardBytes", `expected a positive integer, found ${max}`);
  }
  const planned = plan(tensors);
  const shards: Planned[][] = [];
  let size = Infinity;
  for (const t of planned) {
    if (shards.length === 0 || (size + t.byteLength > max && size > 0)) {
      shards.push([]);
      size = 0;
    }
    shards[shards.length - 1].push(t);
    size += t.byteLength;
  }
  if (shards.length === 0) shards.push([]);
  const join = (name: string) => (dir.endsWith("/") ? dir + name : `${dir}/${name}`);
  try {
    await Deno.mkdir(dir, { recursive: true });
  } catch (e) {
    throw asWriteError(e, dir);
  }
  const totalSize = planned.reduce((a, t) => a + t.byteLength, 0);
  const indexPath = join(INDEX_FILE_NAME);

  if (shards.length === 1) {
    await removeIfPresent(indexPath);
    const path = join(SINGLE_FILE_NAME);
    await writePlanned(path, shards[0], options.metadata);
    return { dir, files: [path], index: null, totalSize };
  }

  await removeIfPresent(indexPath);
  const files: string[] = [];
  const weightMap: Record<string, string> = {};
  for (let i = 0; i < shards.length; i++) {
    const name = shardName(i, shards.length);
    const path = join(name);
    await writePlanned(path, shards[i], options.metadata);
    files.push(path);
    for (const t of shards[i]) weightMap[t.name] = name;
  }
  const sorted: Record<string, string> = {};
  for (const k of Object.keys(weightMap).sort()) sorted[k] = weightMap[k];
  const index = { metadata: { total_size: totalSize }, weight_map: sorted };
  try {
    await Deno.writeTextFile(`${indexPath}.partial`, JSON.stringify(index, null, 2) + "\n");
    await Deno.rename(`${indexPath}.partial`, indexPath);
  } catch (e) {
    throw asWriteError(e, indexPath);
  }
  await removeIfPresent(join(SINGLE_FILE_NAME));
  return { dir, files, index: indexPath, totalSize };
}
