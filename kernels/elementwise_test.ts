import { add } from "./elementwise.ts";
import { addRef } from "./reference.ts";
import { assertClose, GPU_TEST, poisoned, randn, testGpu } from "./test_util.ts";

Deno.test({
  name: "add matches the CPU reference at several sizes",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    for (const n of [1, 255, 256, 1000, 70_001]) {
      const a = randn(n), b = randn(n);
      const out = poisoned(gpu, n);
      gpu.submit([
        await add(gpu, {
          a: gpu.storage("activations", a),
          b: gpu.storage("activations", b),
          out,
          n,
        }),
      ]);
      assertClose(await gpu.readF32(out, 0, n), addRef(a, b), 1e-6, `add n=${n}`);
    }
  },
});
