/**
 * The GPU time of one decoder MoE block of a checkpoint with its experts resident: the paper's
 * "MoE block latency" of GPU-only. The block is the model's own (`DecoderBlocks.moeFfn`: post-
 * attention norm, router, top-k, expert GEMVs and combine) at T = 1, timed with GPU timestamps
 * (`gpuTime`, wall clock without them). To keep the experts out of the L2 cache as decoding does
 * (each token and layer reads other experts), the timed list holds one block per resident expert,
 * each routed to its own expert, over at least 256 MiB of distinct expert weights; the result is
 * the time per block.
 *
 * @example
 * ```ts ignore
 * const t = await moeBlockTime(gpu, "/tmp/switch-base-8-f32");
 * console.log(t.seconds * 1e3, "ms per block", t.how);
 * ```
 * @module
 */
import type { Dispatch, Gpu } from "../runtime/base/gpu/device.ts";
import { loadConfig } from "../runtime/models/config.ts";
import { openCheckpoint } from "../runtime/weights/safetensors.ts";
import { HostExpertStore } from "../runtime/experts/store.ts";
import { createUploader } from "../runtime/experts/uploader.ts";
import { stagingPlan } from "../runtime/experts/pool_size.ts";
import { NO_SLOT } from "../runtime/experts/allocator.ts";
import {
  expertPool,
  type ModelWeights,
  uploadLayer,
  WeightUpload,
} from "../runtime/models/weights.ts";
import { allocState } from "../runtime/models/state.ts";
import { DecoderBlocks } from "../runtime/models/blocks.ts";
import { type GpuTime, gpuTime } from "./harness.ts";

/** Distinct expert bytes the timed blocks read, at least. */
const SPAN_BYTES = 256 * 2 ** 20;

/**
 * Times one MoE block of the checkpoint in `dir` (its last MoE layer: an encoder-decoder's is in
 * the decoder) at T = 1. Frees what it allocated.
 */
export async function moeBlockTime(gpu: Gpu, dir: string): Promise<GpuTime & { experts: number }> {
  const cfg = await loadConfig(dir);
  const layer = cfg.layers.findLastIndex((l) => l.ffn.kind === "moe");
  const ffn = cfg.layers[layer].ffn;
  if (ffn.kind !== "moe") throw new Error(`${dir}: no MoE layer`);
  const store = openCheckpoint(dir);
  const host = new HostExpertStore(cfg, store);
  const up = new WeightUpload(gpu, store);
  const lw = uploadLayer(up, cfg, layer, "none");
  up.run();
  const n = Math.min(ffn.experts, Math.max(1, Math.ceil(SPAN_BYTES / host.bytesPerExpert)));
  const pool = expertPool(
    gpu,
    ffn.experts,
    n,
    ffn.inter,
    cfg.hidden,
    host.typesOf(layer),
    host.act,
  );
  const uploader = createUploader(gpu, "write", stagingPlan(host.bytesPerExpert, n));
  await host.uploadMany(
    uploader,
    layer,
    Array.from({ length: n }, (_, e) => ({ expert: e, slot: e })),
    pool,
  );
  uploader.flush();
  const table = new Uint32Array(ffn.experts).fill(NO_SLOT);
  for (let e = 0; e < n; e++) table[e] = e;
  gpu.write(pool.table, table);
  const state = allocState(gpu, cfg, { maxT: 1, maxSeq: 4 });
  gpu.write(state.x, Float32Array.from({ length: cfg.hidden }, (_, i) => Math.sin(i + 1)));
  // The block reads only its layer's weights: the other layers are never touched.
  const weights = {
    layers: cfg.layers.map((_, i) => (i === layer ? lw : null)),
  } as unknown as ModelWeights;
  const one = gpu.storage("activations", new Float32Array(ffn.topK).fill(1 / ffn.topK));
  const dispatches: Dispatch[] = [];
  const ids: GPUBuffer[] = [];
  for (let e = 0; e < n; e++) {
    const routed = gpu.storage(
      "activations",
      Uint32Array.from({ length: ffn.topK }, (_, j) => (e + j) % n),
    );
    ids.push(routed);
    const b = new DecoderBlocks(gpu, cfg, weights, state, {
      T: 1,
      logits: "last",
      pool: () => pool,
      routing: () => ({ ids: routed, weights: one }),
    });
    const f = await b.moeFfn(layer);
    if (f.kind !== "moe") throw new Error("not a MoE block");
    for (const s of [...f.route, ...f.experts]) if ("pipeline" in s) dispatches.push(s);
  }
  await gpu.sync();
  try {
    const t = await gpuTime(gpu, dispatches, { inner: 1, samples: 7, warmup: 2 });
    return { ...t, seconds: t.seconds / n, experts: n };
  } finally {
    await uploader.dispose();
    const buffers = new Set<GPUBuffer>();
    collect({ pool, one, ids, state, lw }, buffers);
    for (const b of buffers) gpu.destroyBuffer(b);
    store.close();
  }
}

/** The GPU buffers reachable from `x` (plain objects). */
function collect(x: unknown, into: Set<GPUBuffer>): void {
  if (!x || typeof x !== "object") return;
  if ("destroy" in x && "usage" in x) {
    into.add(x as GPUBuffer);
    return;
  }
  for (const v of Object.values(x)) collect(v, into);
}
