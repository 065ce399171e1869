/**
 * The Q4_K, Q5_K and Q6_K quantisers in WebAssembly (`wasm/k_quants.ts`, AssemblyScript, embedded by
 * `tools/build_wasm.sh`): the same bytes as the TypeScript reference in `k_quants.ts`, 2.5-3x
 * faster, since every step of ggml's float arithmetic is a native f32 operation there rather than a
 * rounding of a double. One module instance per thread, made on first use; inputs go through its
 * memory 4 MiB of values at a time.
 *
 * @example
 * ```ts
 * import { quantizeQ4KWasm } from "./k_quants_wasm.ts";
 * import { quantizeQ4K } from "./k_quants.ts";
 * const x = Float32Array.from({ length: 512 }, (_, i) => Math.sin(i));
 * console.log(quantizeQ4KWasm(x, 2).join() === quantizeQ4K(x, 2).join()); // true
 * ```
 * @module
 */
import { K_QUANTS_WASM } from "./k_quants_wasm_module.ts";

interface KQuantsExports {
  memory: WebAssembly.Memory;
  heapBase(): number;
  quantizeQ4K(x: number, nb: number, out: number): void;
  quantizeQ5K(x: number, nb: number, out: number): void;
  quantizeQ6K(x: number, nb: number, out: number): void;
}

let instance: KQuantsExports | null = null;

function kQuants(): KQuantsExports {
  if (!instance) {
    const bytes = Uint8Array.from(atob(K_QUANTS_WASM), (c) => c.charCodeAt(0));
    const module = new WebAssembly.Module(bytes);
    instance = new WebAssembly.Instance(module, {
      env: {
        abort: () => {
          throw new Error("k_quants.wasm aborted");
        },
      },
    }).exports as unknown as KQuantsExports;
  }
  return instance;
}

const WASM_PAGE = 65536;
/** Super-blocks quantised per call into the module: 4 MiB of values, so its memory stays small. */
const CHUNK = 4096;

/** Runs the module's quantiser `fn` on `nb` super-blocks of `x`, `bytes` bytes each. */
function run(
  x: Float32Array,
  nb: number,
  bytes: number,
  fn: "quantizeQ4K" | "quantizeQ5K" | "quantizeQ6K",
) {
  const k = kQuants();
  const at = Math.ceil(k.heapBase() / 16) * 16;
  const blocks = Math.min(nb, CHUNK);
  const end = at + blocks * (256 * 4 + bytes);
  const have = k.memory.buffer.byteLength;
  if (end > have) k.memory.grow(Math.ceil((end - have) / WASM_PAGE));
  const result = new Uint8Array(nb * bytes);
  for (let b = 0; b < nb; b += CHUNK) {
    const n = Math.min(CHUNK, nb - b), out = at + n * 256 * 4;
    new Float32Array(k.memory.buffer, at, n * 256).set(x.subarray(b * 256, (b + n) * 256));
    k[fn](at, n, out);
    result.set(new Uint8Array(k.memory.buffer, out, n * bytes), b * bytes);
  }
  return result;
}

/** Quantises `nb` super-blocks of `x` to Q4_K, as `quantizeQ4K` in `k_quants.ts` does. */
export function quantizeQ4KWasm(x: Float32Array, nb: number): Uint8Array {
  return run(x, nb, 144, "quantizeQ4K");
}

/** Quantises `nb` super-blocks of `x` to Q5_K, as `quantizeQ5K` in `k_quants.ts` does. */
export function quantizeQ5KWasm(x: Float32Array, nb: number): Uint8Array {
  return run(x, nb, 176, "quantizeQ5K");
}

/** Quantises `nb` super-blocks of `x` to Q6_K, as `quantizeQ6K` in `k_quants.ts` does. */
export function quantizeQ6KWasm(x: Float32Array, nb: number): Uint8Array {
  return run(x, nb, 210, "quantizeQ6K");
}
