/**
 * Reading safetensors checkpoints, zero-copy through {@linkcode openMapped}: one file
 * ({@linkcode openSafetensors}) or a Hugging Face checkpoint directory, single-file or sharded
 * ({@linkcode openCheckpoint}), behind one {@linkcode TensorStore}.
 *
 * Each file's header is parsed and fully validated at open by `parseHeader`
 * (`./safetensors_header.ts`, whose constants are re-exported here); every failure is a
 * {@linkcode WeightFileError} naming the file and the tensor. A tensor of a dtype Pregate does not
 * compute with (I64, U8, F8_E4M3, ...) is validated at open but only rejected when it is asked for
 * with {@linkcode TensorStore.get}, because Hugging Face checkpoints often carry such tensors that
 * the model never needs.
 *
 * Alignment: the data section may start at any byte and tensors are packed back to back, so an
 * F16/BF16 tensor is in general only 2-byte aligned (and a file written by another tool may not even
 * align the data section). GPU uploads (`writeBuffer`) want 4-byte aligned offsets and sizes:
 * {@linkcode Tensor.alignment} tells you what you have; this module does not copy or fix anything.
 *
 * @example
 * ```ts
 * import { openCheckpoint } from "./safetensors.ts";
 * const ckpt = openCheckpoint("tests/fixtures/hf/olmoe");
 * const w = ckpt.get("model.layers.0.mlp.experts.0.down_proj.weight");
 * console.log(w.dtype, w.shape, w.file, w.offset, w.alignment >= 4);
 * const norm = ckpt.tensorF32("model.norm.weight"); // a copy, converted to f32
 * console.log(norm.length);
 * ckpt.close();
 * ```
 * @module
 */
import { WeightFileError } from "../base/errors.ts";
import { weightsToF32, type WeightType } from "./weight_type.ts";
import {
  type Advice,
  type MapKind,
  type MappedFile,
  openMapped,
  type OpenMappedOptions,
} from "./mmap.ts";
import { type HeaderEntry, isObject, parseHeader, typeName } from "./safetensors_header.ts";

export {
  DTYPE_TO_SAFETENSORS,
  MAX_HEADER_BYTES,
  SAFETENSORS_DTYPE_BYTES,
  SAFETENSORS_DTYPES,
} from "./safetensors_header.ts";

/**
 * One tensor's header entry as stored, whatever its dtype: what {@linkcode TensorStore.describe}
 * returns.
 *
 * @example
 * ```ts
 * import { openSafetensors } from "./safetensors.ts";
 * const st = openSafetensors("tests/fixtures/hf/olmoe/model.safetensors");
 * const e = st.describe("model.norm.weight");
 * console.log(e.fileDType, e.shape, e.dtype ?? "(unsupported)"); // "F32" [64] "f32"
 * st.close();
 * ```
 */
export interface TensorEntry {
  /** The tensor's name. */
  readonly name: string;
  /** The dtype as written in the file (`F32`, `BF16`, `I64`, ...). */
  readonly fileDType: string;
  /**
   * The {@linkcode WeightType} Pregate computes with (safetensors files: f32, f16, bf16; a GGUF
   * model's store also gives q8_0 and q4_k), or `null` when the file dtype is unsupported.
   */
  readonly dtype: WeightType | null;
  /** The shape (a fresh copy). */
  readonly shape: number[];
  /** The number of elements (the product of the shape; 1 for a scalar). */
  readonly elements: number;
  /** The file holding the tensor. */
  readonly file: string;
  /** Absolute byte offset of the tensor's data in {@linkcode TensorEntry.file}. */
  readonly offset: number;
  /** Bytes of data. */
  readonly byteLength: number;
  /**
   * The largest power of two (at most 4096) dividing {@linkcode TensorEntry.offset}; GPU uploads
   * want at least 4. F16/BF16 tensors are in general only 2-byte aligned.
   */
  readonly alignment: number;
}

/**
 * A tensor of a supported dtype, with a view of its bytes: what {@linkcode TensorStore.get} returns.
 *
 * @example
 * ```ts
 * import { openSafetensors } from "./safetensors.ts";
 * const st = openSafetensors("tests/fixtures/hf/olmoe/model.safetensors");
 * const t = st.get("lm_head.weight");
 * const raw = t.bytes(); // zero-copy, read-only when mapped
 * console.log(t.dtype, t.shape, raw.byteLength === t.byteLength);
 * st.close();
 * ```
 */
export interface Tensor extends TensorEntry {
  /** The weight type (always supported here). */
  readonly dtype: WeightType;
  /**
   * The tensor's bytes, in file order (little-endian). Zero-copy and **read-only** when the file is
   * memory-mapped (writing into it crashes the process; `slice()` to get a writable copy), a fresh
   * copy in read mode. Must not be used after the store is closed.
   */
  bytes(): Uint8Array;
}

/**
 * A set of named tensors in one or more safetensors files.
 *
 * @example
 * ```ts
 * import { openCheckpoint } from "./safetensors.ts";
 * const store = openCheckpoint("tests/fixtures/hf/olmoe");
 * console.log(store.names().length, store.has("model.norm.weight"), store.metadata);
 * store.close();
 * ```
 */
export interface TensorStore {
  /** The files (one, or the shards in index order). */
  readonly files: readonly string[];
  /** Metadata: the files' `__metadata__` and, for a sharded checkpoint, the index's `metadata`. */
  readonly metadata: Readonly<Record<string, string>>;
  /** How the files are accessed (`mmap` zero-copy, or `read`). */
  readonly kind: MapKind;
  /** All tensor names (any dtype), in file order. */
  names(): string[];
  /** Whether a tensor of that name exists (any dtype). */
  has(name: string): boolean;
  /** The header entry of a tensor of any dtype; throws like {@linkcode get} if it is missing. */
  describe(name: string): TensorEntry;
  /**
   * The tensor. Throws {@linkcode WeightFileError} if it is missing (listing close names) or its
   * dtype is not F32, F16 or BF16.
   */
  get(name: string): Tensor;
  /** The tensor converted to a new Float32Array (any supported dtype; meant for small tensors). */
  tensorF32(name: string): Float32Array;
  /**
   * The fraction (0 .. 1) of the bytes of the named tensors (default: every tensor) whose pages are
   * in RAM now (the page cache; see `MappedFile.resident`), or `null` where that cannot be known
   * (`read` access). Throws like {@linkcode get} for a missing name.
   */
  resident(names?: readonly string[]): number | null;
  /**
   * Gives the kernel an access hint (`madvise`; see `MappedFile.advise`) for the bytes of the named
   * tensors (default: every tensor), e.g. `dontneed` to drop this process's mapping of them (the
   * pages stay in the page cache; the next touch maps them again). Returns whether every hint took
   * effect (`false` with `read` access). Throws like {@linkcode get} for a missing name.
   */
  advise(advice: Advice, names?: readonly string[]): boolean;
  /**
   * Throws {@linkcode WeightFileError} naming the file and tensor if a file holding the named
   * tensors (default: every file) is now shorter than when it was opened: another process truncated
   * it, and copying from the lost part of a mapping would kill the process with SIGBUS. One
   * syscall per distinct file (see `MappedFile.checkIntact`); call it before copying, e.g. before
   * each batch of expert copies.
   */
  checkIntact(names?: readonly string[]): void;
  /** Closes (unmaps) every file. Idempotent; tensors' views must not be used afterwards. */
  close(): void;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

/** Up to `count` names closest to `name` (edit distance), for "did you mean" messages. */
function closeNames(name: string, names: Iterable<string>, count = 3): string[] {
  const scored: [number, string][] = [];
  for (const n of names) scored.push([editDistance(name, n), n]);
  scored.sort((x, y) => x[0] - y[0] || (x[1] < y[1] ? -1 : 1));
  return scored.slice(0, count).map((s) => s[1]);
}

function alignmentOf(offset: number): number {
  let a = 1;
  while (a < 4096 && offset % (a * 2) === 0) a *= 2;
  return a;
}

class Store implements TensorStore {
  readonly files: readonly string[];
  readonly metadata: Readonly<Record<string, string>>;
  readonly kind: MapKind;
  #closed = false;

  constructor(
    /** What errors about missing tensors name: the file, or the index of a sharded checkpoint. */
    private readonly label: string,
    private readonly mapped: MappedFile[],
    private readonly entries: Map<string, HeaderEntry>,
    metadata: Record<string, string>,
  ) {
    this.files = mapped.map((m) => m.path);
    this.metadata = Object.freeze({ ...metadata });
    this.kind = mapped[0]?.kind ?? "read";
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  #entry(name: string): HeaderEntry {
    if (this.#closed) {
      throw new WeightFileError(this.label, "the tensor store was used after close()", {
        tensor: name,
        hint: "keep the checkpoint open while its tensors are in use",
      });
    }
    const e = this.entries.get(name);
    if (e) return e;
    const close = closeNames(name, this.entries.keys());
    throw new WeightFileError(
      this.label,
      `no such tensor (the checkpoint has ${this.entries.size} tensors${
        close.length ? `; closest names: ${close.join(", ")}` : ""
      })`,
      { tensor: name, hint: "the checkpoint may be for a different model or architecture" },
    );
  }

  describe(name: string): TensorEntry {
    const e = this.#entry(name);
    return {
      name: e.name,
      fileDType: e.fileDType,
      dtype: e.dtype,
      shape: e.shape.slice(),
      elements: e.elements,
      file: e.mapped.path,
      offset: e.offset,
      byteLength: e.byteLength,
      alignment: alignmentOf(e.offset),
    };
  }

  get(name: string): Tensor {
    const e = this.#entry(name);
    const dtype = e.dtype;
    if (dtype === null) {
      throw new WeightFileError(
        e.mapped.path,
        `unsupported dtype ${e.fileDType} (supported: F32, F16, BF16)`,
        {
          tensor: name,
          hint: "convert the checkpoint's floating-point weights to F32, F16 or BF16",
        },
      );
    }
    const { mapped, offset, byteLength } = e;
    return {
      ...this.describe(name),
      dtype,
      bytes: () => mapped.bytes(offset, byteLength),
    };
  }

  resident(names?: readonly string[]): number | null {
    let bytes = 0, inRam = 0;
    for (const name of names ?? this.entries.keys()) {
      const e = this.#entry(name);
      if (e.byteLength === 0) continue;
      const r = e.mapped.resident(e.offset, e.byteLength);
      if (r === null) return null;
      bytes += e.byteLength;
      inRam += r * e.byteLength;
    }
    return bytes ? inRam / bytes : null;
  }

  advise(advice: Advice, names?: readonly string[]): boolean {
    let ok = true;
    for (const name of names ?? this.entries.keys()) {
      const e = this.#entry(name);
      if (e.byteLength > 0) ok = e.mapped.advise(e.offset, e.byteLength, advice) && ok;
    }
    return ok;
  }

  tensorF32(name: string): Float32Array {
    const t = this.get(name);
    return weightsToF32(t.bytes(), t.dtype, t.elements);
  }

  checkIntact(names?: readonly string[]): void {
    if (!names) {
      for (const m of this.mapped) m.checkIntact();
      return;
    }
    const seen = new Set<MappedFile>();
    for (const name of names) {
      const e = this.#entry(name);
      if (seen.has(e.mapped)) continue;
      seen.add(e.mapped);
      e.mapped.checkIntact(name);
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const m of this.mapped) m.close();
  }
}

function joinPath(dir: string, name: string): string {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

function statOrNull(path: string): Deno.FileInfo | null {
  try {
    return Deno.statSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new WeightFileError(path, `cannot stat: ${(e as Error).message}`);
  }
}

/**
 * Opens one safetensors file (memory-mapped when possible; see {@linkcode openMapped} for
 * `options`) and validates its whole header. Throws {@linkcode WeightFileError} naming the file and
 * tensor for anything malformed.
 *
 * @example
 * ```ts
 * import { openSafetensors } from "./safetensors.ts";
 * const st = openSafetensors("tests/fixtures/hf/olmoe/model.safetensors");
 * const emb = st.get("model.embed_tokens.weight");
 * console.log(emb.shape, emb.dtype, emb.bytes().byteLength);
 * st.close();
 * ```
 */
export function openSafetensors(path: string, options: OpenMappedOptions = {}): TensorStore {
  const mapped = openMapped(path, options);
  try {
    const { entries, metadata } = parseHeader(mapped);
    return new Store(path, [mapped], new Map(entries.map((e) => [e.name, e])), metadata);
  } catch (e) {
    mapped.close();
    throw e;
  }
}

/** The file name of a single-file checkpoint. */
export const SINGLE_FILE_NAME = "model.safetensors";
/** The file name of a sharded checkpoint's index. */
export const INDEX_FILE_NAME = "model.safetensors.index.json";

function readIndex(
  indexPath: string,
): { weightMap: [string, string][]; metadata: Record<string, string> } {
  let text: string;
  try {
    text = Deno.readTextFileSync(indexPath);
  } catch (e) {
    throw new WeightFileError(indexPath, `cannot read the index: ${(e as Error).message}`);
  }
  let index: unknown;
  try {
    index = JSON.parse(text);
  } catch (e) {
    throw new WeightFileError(indexPath, `index is not valid JSON (${(e as Error).message})`);
  }
  if (!isObject(index)) {
    throw new WeightFileError(indexPath, `index must be a JSON object, found ${typeName(index)}`);
  }
  const map = index.weight_map;
  if (!isObject(map)) {
    throw new WeightFileError(
      indexPath,
      `weight_map: expected an object mapping tensor names to shard files, found ${typeName(map)}`,
    );
  }
  const weightMap: [string, string][] = [];
  for (const [name, shard] of Object.entries(map)) {
    if (typeof shard !== "string" || shard === "") {
      throw new WeightFileError(
        indexPath,
        `weight_map: expected a shard file name, found ${typeName(shard)}`,
        { tensor: name },
      );
    }
    weightMap.push([name, shard]);
  }
  if (weightMap.length === 0) {
    throw new WeightFileError(indexPath, "weight_map is empty: the index lists no tensors");
  }
  const metadata: Record<string, string> = {};
  if (isObject(index.metadata)) {
    for (const [k, v] of Object.entries(index.metadata)) {
      metadata[k] = typeof v === "string" ? v : JSON.stringify(v);
    }
  }
  return { weightMap, metadata };
}

/**
 * Opens a checkpoint directory: sharded (`model.safetensors.index.json` + the shards it names; takes
 * precedence) or single-file (`model.safetensors`). A path to a `.safetensors` file is opened with
 * {@linkcode openSafetensors}. Validates every shard's header, that each shard the index names
 * exists, that every tensor of the index's `weight_map` is in the shard it names, and that no tensor
 * is stored in two shards. Errors are {@linkcode WeightFileError}s naming the file and tensor.
 *
 * @example
 * ```ts
 * import { openCheckpoint } from "./safetensors.ts";
 * const ckpt = openCheckpoint("tests/fixtures/hf/olmoe"); // mmap when --allow-ffi, else read
 * for (const name of ckpt.names().filter((n) => n.includes("layers.0.mlp.experts.0."))) {
 *   const t = ckpt.get(name);
 *   console.log(name, t.file, t.offset, t.byteLength);
 * }
 * ckpt.close();
 * ```
 */
export function openCheckpoint(dir: string, options: OpenMappedOptions = {}): TensorStore {
  const info = statOrNull(dir);
  if (!info) {
    throw new WeightFileError(dir, "checkpoint not found", {
      hint: "pass a directory holding model.safetensors or model.safetensors.index.json",
    });
  }
  if (info.isFile) return openSafetensors(dir, options);
  const indexPath = joinPath(dir, INDEX_FILE_NAME);
  if (!statOrNull(indexPath)) {
    const single = joinPath(dir, SINGLE_FILE_NAME);
    if (statOrNull(single)) return openSafetensors(single, options);
    let found: string[] = [];
    try {
      found = [...Deno.readDirSync(dir)].map((d) => d.name).filter((n) =>
        n.endsWith(".safetensors")
      )
        .sort();
    } catch {
      found = [];
    }
    throw new WeightFileError(
      dir,
      `expected ${SINGLE_FILE_NAME} or ${INDEX_FILE_NAME} in the directory, found ${
        found.length ? found.slice(0, 5).join(", ") + (found.length > 5 ? ", ..." : "") : "neither"
      }`,
      {
        hint: found.length === 1
          ? `open the file directly: ${joinPath(dir, found[0])}`
          : "download the checkpoint's safetensors files and index",
      },
    );
  }

  const { weightMap, metadata: indexMetadata } = readIndex(indexPath);
  const shardNames: string[] = [];
  const firstTensorOf = new Map<string, string>();
  for (const [name, shard] of weightMap) {
    if (!firstTensorOf.has(shard)) {
      firstTensorOf.set(shard, name);
      shardNames.push(shard);
    }
  }
  shardNames.sort(); // model-00001-of-N, model-00002-of-N, ...: file order is tensor order
  for (const shard of shardNames) {
    const p = joinPath(dir, shard);
    const st = statOrNull(p);
    if (!st || !st.isFile) {
      throw new WeightFileError(
        indexPath,
        `the weight_map maps this tensor to shard ${shard}, but ${p} ${
          st ? "is not a file" : "does not exist"
        }`,
        { tensor: firstTensorOf.get(shard), hint: "the checkpoint download is incomplete" },
      );
    }
  }

  const opened: MappedFile[] = [];
  try {
    const entries = new Map<string, HeaderEntry>();
    const metadata: Record<string, string> = {};
    const pathOf = new Map<string, string>();
    for (const shard of shardNames) {
      const path = joinPath(dir, shard);
      pathOf.set(shard, path);
      const mapped = openMapped(path, options);
      opened.push(mapped);
      const parsed = parseHeader(mapped);
      for (const [k, v] of Object.entries(parsed.metadata)) if (!(k in metadata)) metadata[k] = v;
      for (const e of parsed.entries) {
        const other = entries.get(e.name);
        if (other) {
          throw new WeightFileError(
            path,
            `duplicate tensor: it is also stored in ${other.mapped.path} (expected each tensor in ` +
              `exactly one shard)`,
            { tensor: e.name, hint: "the shards are from different checkpoints or conversions" },
          );
        }
        entries.set(e.name, e);
      }
    }
    for (const [name, shard] of weightMap) {
      const path = pathOf.get(shard)!;
      const e = entries.get(name);
      if (!e || e.mapped.path !== path) {
        throw new WeightFileError(
          path,
          `${indexPath} maps this tensor to this shard, but the shard does not contain it${
            e ? ` (it is in ${e.mapped.path})` : ""
          }`,
          { tensor: name, hint: "the index and the shards do not belong together" },
        );
      }
    }
    return new Store(indexPath, opened, entries, { ...metadata, ...indexMetadata });
  } catch (e) {
    for (const m of opened) m.close();
    throw e;
  }
}
