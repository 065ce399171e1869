/**
 * Reading safetensors checkpoints, zero-copy through {@linkcode openMapped}.
 *
 * A safetensors file is an 8-byte little-endian header length `N`, `N` bytes of UTF-8 JSON
 * (`{"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__":
 * {..}}`), then the data section; `data_offsets` are relative to the start of the data section,
 * which is byte `8 + N` of the file. {@linkcode Tensor.offset} is the absolute offset in the file.
 *
 * Everything that can be checked is checked at open (header, every entry's types, offsets in range,
 * no overlaps, element count times dtype size equal to the byte length), and every failure is a
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
 * ```ts ignore
 * import { openCheckpoint } from "./safetensors.ts";
 * const ckpt = openCheckpoint("models/tiny-moe");
 * const w = ckpt.get("model.layers.0.mlp.experts.0.down_proj.weight");
 * console.log(w.dtype, w.shape, w.file, w.offset, w.alignment >= 4);
 * const norm = ckpt.tensorF32("model.norm.weight"); // a copy, converted to f32
 * console.log(norm.length);
 * ckpt.close();
 * ```
 * @module
 */
import { WeightFileError } from "../errors.ts";
import { bf16BitsToF32, type DType, f16BitsToF32 } from "./dtype.ts";
import { type MapKind, type MappedFile, openMapped, type OpenMappedOptions } from "./mmap.ts";

/**
 * Bytes per element of the safetensors dtypes whose size is a whole number of bytes (sub-byte types
 * such as `F4` are not listed; their byte lengths are not checked).
 */
export const SAFETENSORS_DTYPE_BYTES: Readonly<Record<string, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  F8_E8M0: 1,
  C64: 8,
};

/** The safetensors dtype names Pregate computes with, and their {@linkcode DType}. */
export const SAFETENSORS_DTYPES: Readonly<Record<string, DType>> = {
  F32: "f32",
  F16: "f16",
  BF16: "bf16",
};

/** The safetensors name of each {@linkcode DType}. */
export const DTYPE_TO_SAFETENSORS: Readonly<Record<DType, string>> = {
  f32: "F32",
  f16: "F16",
  bf16: "BF16",
};

/** The largest JSON header accepted, in bytes (the reference implementation's limit). */
export const MAX_HEADER_BYTES = 100_000_000;

/**
 * One tensor's header entry as stored, whatever its dtype: what {@linkcode TensorStore.describe}
 * returns.
 *
 * @example
 * ```ts ignore
 * import { openSafetensors } from "./safetensors.ts";
 * const st = openSafetensors("model.safetensors");
 * for (const name of st.names()) {
 *   const e = st.describe(name);
 *   console.log(name, e.fileDType, e.shape, e.dtype ?? "(unsupported)");
 * }
 * st.close();
 * ```
 */
export interface TensorEntry {
  /** The tensor's name. */
  readonly name: string;
  /** The dtype as written in the file (`F32`, `BF16`, `I64`, ...). */
  readonly fileDType: string;
  /** The {@linkcode DType} Pregate computes with, or `null` when the file dtype is unsupported. */
  readonly dtype: DType | null;
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
 * ```ts ignore
 * import { openSafetensors } from "./safetensors.ts";
 * const st = openSafetensors("model.safetensors");
 * const t = st.get("lm_head.weight");
 * const raw = t.bytes(); // zero-copy, read-only when mapped
 * console.log(t.dtype, t.shape, raw.byteLength === t.byteLength);
 * st.close();
 * ```
 */
export interface Tensor extends TensorEntry {
  /** The dtype (always supported here). */
  readonly dtype: DType;
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
 * ```ts ignore
 * import { openCheckpoint } from "./safetensors.ts";
 * const store = openCheckpoint("models/tiny-moe");
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
  /** Closes (unmaps) every file. Idempotent; tensors' views must not be used afterwards. */
  close(): void;
}

// ---------------------------------------------------------------------------------------------
// header parsing
// ---------------------------------------------------------------------------------------------

interface Entry {
  name: string;
  fileDType: string;
  dtype: DType | null;
  shape: number[];
  elements: number;
  offset: number;
  byteLength: number;
  /** data_offsets as in the file, for messages. */
  begin: number;
  end: number;
  mapped: MappedFile;
}

interface Parsed {
  entries: Entry[];
  metadata: Record<string, string>;
}

const HEADER_HINT = "the file is not a safetensors file, or it is truncated or corrupt";

function show(value: unknown): string {
  let s: string;
  try {
    s = value === undefined ? "nothing" : JSON.stringify(value);
  } catch {
    s = String(value);
  }
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

function typeName(value: unknown): string {
  if (value === null) return "null";
  if (value === undefined) return "nothing";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? "an object" : `a ${typeof value} (${show(value)})`;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

function alignmentOf(offset: number): number {
  let a = 1;
  while (a < 4096 && offset % (a * 2) === 0) a *= 2;
  return a;
}

function parseFile(mapped: MappedFile): Parsed {
  const path = mapped.path;
  const size = mapped.byteLength;
  if (size < 8) {
    throw new WeightFileError(
      path,
      `file is ${size} bytes, shorter than the 8-byte header length that starts a safetensors file`,
      { hint: HEADER_HINT },
    );
  }
  const prefix = mapped.bytes(0, 8);
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n + 8n > BigInt(size)) {
    throw new WeightFileError(
      path,
      `header length ${n} runs past the end of the file (expected at most ${size - 8} bytes of ` +
        `header in a ${size}-byte file${
          n > BigInt(MAX_HEADER_BYTES) ? "; it is also absurdly large" : ""
        })`,
      { hint: HEADER_HINT },
    );
  }
  if (n > BigInt(MAX_HEADER_BYTES)) {
    throw new WeightFileError(
      path,
      `header length ${n} is absurdly large (limit ${MAX_HEADER_BYTES} bytes)`,
      { hint: HEADER_HINT },
    );
  }
  const headerLength = Number(n);
  const dataStart = 8 + headerLength;
  const dataLength = size - dataStart;
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(mapped.bytes(8, headerLength));
  } catch {
    throw new WeightFileError(path, `header (${headerLength} bytes) is not valid UTF-8`, {
      hint: HEADER_HINT,
    });
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    throw new WeightFileError(
      path,
      `header is not valid JSON (${(e as Error).message}); it starts with ${
        show(text.slice(0, 40))
      }`,
      { hint: HEADER_HINT },
    );
  }
  if (!isObject(header)) {
    throw new WeightFileError(
      path,
      `header must be a JSON object of tensor entries, found ${typeName(header)}`,
      { hint: HEADER_HINT },
    );
  }

  const metadata: Record<string, string> = {};
  const entries: Entry[] = [];
  for (const [name, value] of Object.entries(header)) {
    if (name === "__metadata__") {
      if (!isObject(value)) {
        throw new WeightFileError(
          path,
          `__metadata__ must be an object of strings, found ${typeName(value)}`,
          { hint: HEADER_HINT },
        );
      }
      for (const [k, v] of Object.entries(value)) {
        metadata[k] = typeof v === "string" ? v : JSON.stringify(v);
      }
      continue;
    }
    const bad = (what: string): never => {
      throw new WeightFileError(path, what, { tensor: name, hint: HEADER_HINT });
    };
    if (!isObject(value)) {
      bad(`entry must be an object with dtype, shape and data_offsets, found ${typeName(value)}`);
    }
    const entry = value as Record<string, unknown>;
    const { dtype, shape, data_offsets: offsets } = entry;
    if (typeof dtype !== "string") {
      bad(`dtype: expected a string such as "BF16", found ${show(dtype)}`);
    }
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      bad(`shape: expected an array of non-negative integers, found ${show(shape)}`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
      bad(
        `data_offsets: expected [begin, end] (two non-negative integers), found ${show(offsets)}`,
      );
    }
    const dims = shape as number[];
    const [begin, end] = offsets as [number, number];
    const fileDType = dtype as string;
    if (begin > end) bad(`data_offsets [${begin}, ${end}]: begin is after end`);
    if (end > dataLength) {
      bad(
        `data_offsets [${begin}, ${end}] run past the end of the data section (expected end <= ` +
          `${dataLength}: the data starts at byte ${dataStart} of a ${size}-byte file)`,
      );
    }
    let elements = 1;
    for (const d of dims) elements *= d;
    if (!Number.isSafeInteger(elements)) bad(`shape ${show(dims)} has too many elements`);
    const unit = SAFETENSORS_DTYPE_BYTES[fileDType];
    if (unit !== undefined && elements * unit !== end - begin) {
      bad(
        `shape ${show(dims)} of dtype ${fileDType} needs ${elements} x ${unit} = ${
          elements * unit
        } bytes, but data_offsets [${begin}, ${end}] hold ${end - begin} bytes`,
      );
    }
    entries.push({
      name,
      fileDType,
      dtype: SAFETENSORS_DTYPES[fileDType] ?? null,
      shape: dims.slice(),
      elements,
      offset: dataStart + begin,
      byteLength: end - begin,
      begin,
      end,
      mapped,
    });
  }

  const byBegin = entries.filter((e) => e.byteLength > 0).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < byBegin.length; i++) {
    const prev = byBegin[i - 1];
    const cur = byBegin[i];
    if (cur.begin < prev.end) {
      throw new WeightFileError(
        path,
        `data_offsets [${cur.begin}, ${cur.end}] overlap those of tensor ${prev.name} ` +
          `[${prev.begin}, ${prev.end}] (expected begin >= ${prev.end})`,
        { tensor: cur.name, hint: HEADER_HINT },
      );
    }
  }
  return { entries, metadata };
}

// ---------------------------------------------------------------------------------------------
// the store
// ---------------------------------------------------------------------------------------------

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

function toF32(t: Tensor): Float32Array {
  const b = t.bytes();
  const n = t.elements;
  if (t.dtype === "f32") {
    const aligned = b.byteOffset % 4 === 0 ? b : b.slice();
    return new Float32Array(aligned.buffer, aligned.byteOffset, n).slice();
  }
  const conv = t.dtype === "f16" ? f16BitsToF32 : bf16BitsToF32;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = conv(b[2 * i] | (b[2 * i + 1] << 8));
  return out;
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
    private readonly entries: Map<string, Entry>,
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

  #entry(name: string): Entry {
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

  tensorF32(name: string): Float32Array {
    return toF32(this.get(name));
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
 * ```ts ignore
 * import { openSafetensors } from "./safetensors.ts";
 * const st = openSafetensors("model.safetensors");
 * const emb = st.get("model.embed_tokens.weight");
 * console.log(emb.shape, emb.dtype, emb.bytes().byteLength);
 * st.close();
 * ```
 */
export function openSafetensors(path: string, options: OpenMappedOptions = {}): TensorStore {
  const mapped = openMapped(path, options);
  try {
    const { entries, metadata } = parseFile(mapped);
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
 * ```ts ignore
 * import { openCheckpoint } from "./safetensors.ts";
 * const ckpt = openCheckpoint("models/tiny-moe"); // mmap when --allow-ffi, else read
 * for (const name of ckpt.names().filter((n) => n.includes("experts.0."))) {
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
    const entries = new Map<string, Entry>();
    const metadata: Record<string, string> = {};
    const pathOf = new Map<string, string>();
    for (const shard of shardNames) {
      const path = joinPath(dir, shard);
      pathOf.set(shard, path);
      const mapped = openMapped(path, options);
      opened.push(mapped);
      const parsed = parseFile(mapped);
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
