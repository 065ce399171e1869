/**
 * Helpers of the GGUF model tests: tiny all-MoE checkpoints of the decoder architectures (llama.cpp
 * has no dense layers in them), a GGUF file rewritten with one thing changed (the malformed
 * cases), and the dequantised checkpoint of a quantised GGUF (the reference its logits must match).
 * @module
 */
import { type GgufEntry, openGguf } from "../weights/gguf.ts";
import { type GgufValueToWrite, writeGguf } from "../weights/gguf_writer.ts";
import { writeSafetensors } from "../weights/safetensors_writer.ts";
import { ggufModelConfig, ggufStore } from "./gguf_model.ts";
import { makeModel } from "./make_model.ts";
import type { ModelDims } from "./model_dims.ts";

/** Dimensions whose rows are whole Q4_K blocks (256 values), all layers MoE. */
export const Q4K_DIMS: Partial<ModelDims> = {
  hidden: 256,
  heads: 4,
  kvHeads: 2,
  headDim: 64,
  inter: 256,
  denseInter: 256,
  sharedInter: 256,
  experts: 8,
  topK: 2,
  layers: 3,
  vocab: 256,
  mlpOnlyLayers: [],
  sparseStep: 1,
};

/**
 * A tiny f32 checkpoint of `arch` in `dir` that llama.cpp's graph of it computes: every layer MoE
 * (Qwen2-MoE with a shared expert), OLMoE with as many key/value heads as heads; `dims` replace the
 * preset's.
 */
export async function makeMoeModel(
  arch: string,
  dir: string,
  dims: Partial<ModelDims> = {},
  seed = 1,
): Promise<void> {
  const qwen = arch.startsWith("qwen");
  const { denseInter, sharedInter, mlpOnlyLayers: _m, sparseStep: _s, headDim, ...rest } = dims;
  const overrides: Partial<ModelDims> = {
    ...rest,
    ...(qwen ? { mlpOnlyLayers: [], sparseStep: 1, denseInter } : {}),
    ...(arch === "qwen2_moe" ? { sharedInter: sharedInter ?? 96, normTopK: false } : {}),
    ...(arch === "olmoe" || arch === "qwen2_moe" ? {} : { headDim }),
    // llama.cpp's olmoe has no grouped-query attention (its k norm is hidden_size wide).
    ...(arch === "olmoe" ? { kvHeads: rest.heads ?? 4 } : {}),
  };
  for (const k of Object.keys(overrides) as (keyof ModelDims)[]) {
    if (overrides[k] === undefined) delete overrides[k];
  }
  await makeModel({ arch, out: dir, dtype: "f32", seed, overrides, force: true });
}

/** What {@linkcode rewriteGguf} changes. */
export interface GgufEdit {
  /** Tensors left out. */
  dropTensors?: string[];
  /** Metadata keys left out. */
  dropKeys?: string[];
  /** Metadata keys set (added or replaced). */
  setKeys?: Record<string, GgufValueToWrite>;
  /** Tensors replaced: new type, shape and bytes. */
  replace?: Record<string, { type: string; shape: number[]; data: Uint8Array }>;
}

/** Writes `src` to `dst` with `edit` applied. */
export async function rewriteGguf(src: string, dst: string, edit: GgufEdit): Promise<void> {
  const g = openGguf(src, { mode: "read" });
  try {
    const drop = new Set(edit.dropKeys ?? []);
    const meta: [string, GgufValueToWrite][] = g.entries()
      .filter((e: GgufEntry) => !drop.has(e.key) && !(e.key in (edit.setKeys ?? {})))
      .map((e) => [e.key, { type: e.type, value: e.value }]);
    meta.push(...Object.entries(edit.setKeys ?? {}));
    const tensors = g.names().filter((n) => !(edit.dropTensors ?? []).includes(n)).map((n) => {
      const r = edit.replace?.[n];
      if (r) return { name: n, ...r };
      const t = g.tensor(n);
      return { name: n, type: t.type, shape: t.shape, data: t.bytes().slice() };
    });
    await writeGguf(dst, meta, tensors);
  } finally {
    g.close();
  }
}

/**
 * Writes the dequantised checkpoint of GGUF model `gguf` into `dir`: its config.json (`configDir`'s)
 * and every tensor Pregate reads from the file, as f32 values (what the quantised kernels must
 * compute with).
 */
export async function dequantisedCheckpoint(
  gguf: string,
  configDir: string,
  dir: string,
): Promise<void> {
  const g = openGguf(gguf, { mode: "read" });
  const store = ggufStore(g, ggufModelConfig(g));
  try {
    await Deno.mkdir(dir, { recursive: true });
    await Deno.copyFile(`${configDir}/config.json`, `${dir}/config.json`);
    await writeSafetensors(
      `${dir}/model.safetensors`,
      store.names().map((name) => ({
        name,
        dtype: "f32" as const,
        shape: store.describe(name).shape,
        data: () => store.tensorF32(name),
      })),
    );
  } finally {
    store.close();
  }
}
