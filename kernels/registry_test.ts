import type { Gpu } from "../runtime/base/gpu/device.ts";
import * as kernels from "./mod.ts";
import { KERNELS, type KernelSpec } from "./mod.ts";
import { GPU_TEST, testGpu } from "./test_util.ts";

const specs = Object.values(KERNELS);

/** The `@binding(n)` indices declared in a WGSL source. */
function declaredBindings(src: string): Set<number> {
  return new Set([...src.matchAll(/@binding\(\s*(\d+)\s*\)/g)].map((m) => Number(m[1])));
}

Deno.test("KERNELS holds every exported kernel spec once, under its unique name", () => {
  if (specs.length < 27) throw new Error(`only ${specs.length} kernels registered`);
  for (const [name, spec] of Object.entries(KERNELS)) {
    if (spec.name !== name) throw new Error(`KERNELS.${name} is named '${spec.name}'`);
  }
  const exported = Object.entries(kernels).filter(([, v]) =>
    v && typeof v === "object" && "file" in v && "bindings" in v && "entry" in v
  ) as [string, KernelSpec][];
  const byName = new Map<string, string>();
  for (const [exportName, spec] of exported) {
    if (KERNELS[spec.name] !== spec) {
      throw new Error(`${exportName} ('${spec.name}') is exported but not in KERNELS`);
    }
    const other = byName.get(spec.name);
    if (other) throw new Error(`kernel name '${spec.name}' used by ${other} and ${exportName}`);
    byName.set(spec.name, exportName);
  }
  if (byName.size !== specs.length) {
    throw new Error(`${specs.length} kernels in KERNELS, ${byName.size} exported specs`);
  }
});

Deno.test("every kernel's WGSL loads, has its entry point and declares its bindings", async () => {
  for (const spec of specs) {
    const src = await spec.source();
    if (!new RegExp(`@compute[^;{]*fn\\s+${spec.entry}\\s*\\(`).test(src)) {
      throw new Error(`${spec.name}: no @compute fn ${spec.entry} in ${spec.file}`);
    }
    if (spec.bindings[0] !== "params" || !/@binding\(0\)\s*var<uniform>/.test(src)) {
      throw new Error(`${spec.name}: binding 0 must be the uniform params block`);
    }
    const declared = declaredBindings(src);
    for (let i = 0; i < spec.bindings.length; i++) {
      if (!declared.has(i)) {
        throw new Error(
          `${spec.name}: '${spec.bindings[i]}' (binding ${i}) is not in ${spec.file}`,
        );
      }
    }
    // A file may hold several entry points; none may use more bindings than the file declares.
    if (Math.max(...declared) + 1 < spec.bindings.length) {
      throw new Error(`${spec.name}: more bindings listed than ${spec.file} declares`);
    }
    for (const name of Object.keys(spec.constants)) {
      if (!new RegExp(`override\\s+${name}\\b`).test(src)) {
        throw new Error(`${spec.name}: constant ${name} is not an override in ${spec.file}`);
      }
    }
  }
});

/** WGSL `enable` extensions and the device feature each needs. */
const ENABLE_FEATURES: Readonly<Record<string, keyof Gpu["features"]>> = {
  f16: "shaderF16",
  subgroups: "subgroups",
  chromium_experimental_subgroup_matrix: "subgroupMatrix",
};

/** The `enable` extensions of `src` that this device lacks the feature for. */
function missingEnables(gpu: Gpu, src: string, name: string): string[] {
  const enables = [...src.matchAll(/^\s*enable\s+([\w\s,]+);/gm)]
    .flatMap((m) => m[1].split(",").map((e) => e.trim()).filter(Boolean));
  return enables.filter((e) => {
    const feature = ENABLE_FEATURES[e];
    if (!feature) {
      throw new Error(`${name}: unknown WGSL extension '${e}' (add it to ENABLE_FEATURES)`);
    }
    return !gpu.features[feature];
  });
}

/** Creates a bind group of `n` buffers (binding 0 uniform) for `pipeline`; returns the error. */
async function bindError(gpu: Gpu, pipeline: GPUComputePipeline, n: number) {
  const buffers = Array.from(
    { length: n },
    (_, i) =>
      i === 0
        ? gpu.uniform(new Uint8Array(256), "registry_test.params")
        : gpu.storage("other", 256, "registry_test.storage"),
  );
  gpu.device.pushErrorScope("validation");
  gpu.device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
  const err = await gpu.device.popErrorScope();
  for (const b of buffers) gpu.destroyBuffer(b);
  return err;
}

Deno.test({
  name: "every kernel compiles with its default constants and binds exactly its listed bindings",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const skipped: string[] = [];
    for (const spec of specs) {
      // Kernels written for optional features (a variant beside a portable kernel) compile only
      // where the device has them; their own tests run them there.
      const missing = missingEnables(gpu, await spec.source(), spec.name);
      if (missing.length) {
        skipped.push(`${spec.name} (enable ${missing.join(", ")})`);
        continue;
      }
      const pipeline = await gpu.pipeline(spec, { ...spec.constants });
      const err = await bindError(gpu, pipeline, spec.bindings.length);
      if (err) {
        throw new Error(
          `${spec.name}: its ${spec.bindings.length} bindings [${spec.bindings}] do not match ` +
            `the bindings entry point '${spec.entry}' uses: ${err.message}`,
        );
      }
    }
    if (skipped.length) {
      console.log(`not compiled on ${gpu.describe()}, for lack of features: ${skipped.join("; ")}`);
    }
    // The check has teeth: one binding short is a validation error.
    const add = await gpu.pipeline(KERNELS.add, { ...KERNELS.add.constants });
    if (!await bindError(gpu, add, KERNELS.add.bindings.length - 1)) {
      throw new Error("a bind group missing a binding was accepted");
    }
  },
});
