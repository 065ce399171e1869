/**
 * Quantisation on several threads: a pool of workers (`quant_worker.ts`) running
 * {@linkcode quantize}, for converting large models (llama.cpp's reference Q4_K quantiser does a
 * least-squares search per sub-block: slow on one core). Every
 * block is quantised on its own, so an array longer than {@linkcode QUANT_CHUNK_VALUES} is cut at
 * block boundaries into pieces that the workers quantise side by side (a 311 M-value embedding
 * table takes all the threads, not one). With one thread the pool quantises inline. Results are
 * byte-identical to `quantize`.
 *
 * @example
 * ```ts
 * import { QuantPool } from "./quant_pool.ts";
 * const pool = new QuantPool(2);
 * const q = await pool.quantize(new Float32Array(256).fill(0.5), "q4_k");
 * console.log(q.byteLength); // 144
 * pool.close();
 * ```
 * @module
 */
import { QUANT_BLOCK, quantize, type QuantType } from "./quant.ts";

/** Values per worker job at most (rounded down to whole blocks): about 4 MiB of f32. */
export const QUANT_CHUNK_VALUES = 1 << 20;

interface Job {
  values: Float32Array;
  type: QuantType;
  resolve: (q: Uint8Array) => void;
  reject: (e: Error) => void;
}

/** A pool of quantising workers (see the module documentation). */
export class QuantPool {
  /** Worker threads (0: quantise inline). */
  readonly threads: number;
  #idle: Worker[] = [];
  #all: Worker[] = [];
  #queue: Job[] = [];

  /** A pool of `threads` workers (default: the machine's cores, at most 16); 1 quantises inline. */
  constructor(threads = Math.min(16, navigator.hardwareConcurrency ?? 1)) {
    this.threads = threads > 1 ? Math.floor(threads) : 0;
    for (let i = 0; i < this.threads; i++) {
      const w = new Worker(new URL("./quant_worker.ts", import.meta.url), { type: "module" });
      this.#all.push(w);
      this.#idle.push(w);
    }
  }

  /**
   * `quantize(values, type)` on the free workers, in pieces of whole blocks when `values` is longer
   * than {@linkcode QUANT_CHUNK_VALUES}; `values` is transferred (unusable afterwards).
   */
  quantize(values: Float32Array, type: QuantType): Promise<Uint8Array> {
    if (!this.threads) return Promise.resolve().then(() => quantize(values, type));
    const block = QUANT_BLOCK[type];
    const step = Math.max(1, Math.floor(QUANT_CHUNK_VALUES / block.values)) * block.values;
    if (values.length <= step || values.length % block.values !== 0) {
      return this.#job(values, type);
    }
    // Views: each piece is copied out when a worker takes it, so a long tensor is not held twice.
    const pieces: Promise<Uint8Array>[] = [];
    for (let o = 0; o < values.length; o += step) {
      pieces.push(
        this.#job(values.subarray(o, o + step), type).catch((e: Error) => {
          throw new Error(`${e.message} (in the piece from value ${o})`);
        }),
      );
    }
    return Promise.all(pieces).then((parts) => {
      const out = new Uint8Array((values.length / block.values) * block.bytes);
      let at = 0;
      for (const part of parts) {
        out.set(part, at);
        at += part.byteLength;
      }
      return out;
    });
  }

  #job(values: Float32Array, type: QuantType): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ values, type, resolve, reject });
      this.#next();
    });
  }

  #next(): void {
    const w = this.#idle.pop();
    const job = w && this.#queue.shift();
    if (!w || !job) {
      if (w) this.#idle.push(w);
      return;
    }
    w.onmessage = (e: MessageEvent<{ out?: Uint8Array; error?: string }>) => {
      this.#idle.push(w);
      if (e.data.out) job.resolve(e.data.out);
      else job.reject(new Error(e.data.error));
      this.#next();
    };
    w.onerror = (e) => {
      e.preventDefault();
      job.reject(new Error(e.message));
    };
    const values = job.values.byteOffset === 0 &&
        job.values.byteLength === job.values.buffer.byteLength
      ? job.values
      : job.values.slice();
    w.postMessage({ values, type: job.type }, [values.buffer as ArrayBuffer]);
  }

  /** Stops the workers (pending jobs are dropped). */
  close(): void {
    for (const w of this.#all) w.terminate();
    this.#all = [];
    this.#idle = [];
    for (const j of this.#queue.splice(0)) j.reject(new Error("the quantisation pool was closed"));
  }
}
