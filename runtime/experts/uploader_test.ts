import assert from "node:assert/strict";
import { createUploader } from "./uploader.ts";
import { ArgumentError } from "../errors.ts";
import { rng, testGpu } from "../../kernels/test_util.ts";

const GPU = { sanitizeResources: false, sanitizeOps: false };

for (const path of ["write", "mapped"] as const) {
  Deno.test({
    name: `${path} uploader: random sizes and offsets arrive intact, across many staging cycles`,
    ...GPU,
    fn: async () => {
      const gpu = await testGpu();
      const size = 64 << 10;
      const dst = gpu.storage("experts", size);
      const shadow = new Uint8Array(size);
      // A tiny ring (3 x 1 KiB) so that uploads span buffers and every buffer is remapped often.
      const up = createUploader(gpu, path, { stagingBytes: 1024, buffers: 3 });
      const r = rng(path === "write" ? 11 : 12);
      for (let i = 0; i < 120; i++) {
        const len = 1 + Math.floor(r() * 3000);
        const offset = Math.floor((r() * (size - len - 4)) / 4) * 4;
        const data = Uint8Array.from({ length: len }, () => Math.floor(r() * 256));
        await up.upload(dst, offset, data);
        shadow.set(data, offset);
        // A ragged tail is padded with zeros up to the next 4 bytes.
        shadow.fill(0, offset + len, (offset + len + 3) & ~3);
        if (i % 40 === 39) {
          up.flush();
          assert.deepEqual(new Uint8Array(await gpu.read(dst)), shadow, `after ${i + 1} uploads`);
        }
      }
      up.flush();
      assert.deepEqual(new Uint8Array(await gpu.read(dst)), shadow);
      assert.ok(up.bytes > 100_000);
      if (path === "mapped") assert.ok((up as { cycles?: number }).cycles! > 50, "ring recycled");
      up.dispose();
    },
  });
}

Deno.test({
  name: "uploader arguments are checked",
  ...GPU,
  fn: async () => {
    const gpu = await testGpu();
    assert.throws(() => createUploader(gpu, "dma" as never), (e) => e instanceof ArgumentError);
    assert.throws(
      () => createUploader(gpu, "mapped", { stagingBytes: 10 }),
      (e) => e instanceof ArgumentError && e.argument === "stagingBytes",
    );
    const up = createUploader(gpu, "mapped", { stagingBytes: 256, buffers: 2 });
    await assert.rejects(
      () => up.upload(gpu.storage("other", 64), 2, new Uint8Array(4)),
      (e) => e instanceof ArgumentError && e.argument === "offset",
    );
    up.dispose();
    assert.equal(createUploader(gpu).path, "write");
  },
});
