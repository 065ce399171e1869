/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
// A worker of `QuantPool` (quant_pool.ts): quantises the values it is sent and sends the blocks
// back (transferred), or the error's message.
import { quantize, type QuantType } from "./quant.ts";

self.onmessage = (e: MessageEvent<{ values: Float32Array; type: QuantType }>) => {
  try {
    const out = quantize(e.data.values, e.data.type);
    self.postMessage({ out }, [out.buffer as ArrayBuffer]);
  } catch (err) {
    self.postMessage({ error: (err as Error).message });
  }
};
