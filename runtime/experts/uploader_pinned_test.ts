import assert from "node:assert/strict";
import {
  BUS_CEILING_GBS,
  packSources,
  PinnedUploader,
  placementNotice,
} from "./uploader_pinned.ts";
import type { UploadSource } from "./uploader_types.ts";
import { ArgumentError, PregateError } from "../base/errors.ts";
import { hostMemcpy, openMapped } from "../weights/mmap.ts";
import { rng, testGpu } from "../../kernels/test_util.ts";

const GPU = { sanitizeResources: false, sanitizeOps: false };

function noise(n: number, r: () => number): Uint8Array {
  return Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
}

function source(name: string, data: Uint8Array): UploadSource {
  return { name, byteLength: data.byteLength, bytes: () => data };
}

Deno.test("packSources: 4-aligned places, no source split, a large one alone", () => {
  const { places, bufferSizes } = packSources([6, 8, 10, 40, 1, 0, 3], 16);
  assert.deepEqual(places, [
    { buffer: 0, offset: 0 },
    { buffer: 0, offset: 8 },
    { buffer: 1, offset: 0 },
    { buffer: 2, offset: 0 }, // larger than a buffer: a buffer of its own size
    { buffer: 3, offset: 0 },
    { buffer: 3, offset: 4 },
    { buffer: 3, offset: 4 }, // an empty source takes no room
  ]);
  assert.deepEqual(bufferSizes, [16, 12, 40, 8]);
  assert.deepEqual(packSources([], 16), { places: [], bufferSizes: [] });
});

Deno.test("placementNotice: only copies faster than the bus on a hardware adapter", () => {
  assert.equal(placementNotice(46, false), null); // the H100 host: system memory over PCIe
  assert.equal(placementNotice(BUS_CEILING_GBS, false), null);
  const n = placementNotice(381, false); // the H200 host: mappable buffers behind the BAR
  assert.match(n!, /381 GB\/s.*GPU memory.*--uploader mapped/);
  assert.equal(placementNotice(381, true), null); // a software adapter's memory is host memory
});

Deno.test("packSources: random sizes never overlap and stay within their buffers", () => {
  const r = rng(5);
  for (let trial = 0; trial < 50; trial++) {
    const sizes = Array.from({ length: 1 + Math.floor(r() * 40) }, () => Math.floor(r() * 300));
    const cap = 64 + Math.floor(r() * 256) * 4;
    const { places, bufferSizes } = packSources(sizes, cap);
    const ends = new Map<number, number>();
    places.forEach((p, i) => {
      assert.equal(p.offset % 4, 0);
      assert.ok(p.offset >= (ends.get(p.buffer) ?? 0), `source ${i} overlaps the one before`);
      const end = p.offset + ((sizes[i] + 3) & ~3);
      assert.ok(end <= bufferSizes[p.buffer], `source ${i} ends past its buffer`);
      assert.ok(bufferSizes[p.buffer] <= Math.max(cap, (sizes[i] + 3) & ~3));
      ends.set(p.buffer, end);
    });
  }
});

for (const fill of ["ffi", "set"] as const) {
  Deno.test({
    name: `pinned uploader (${fill} fill): mapped-file sources arrive intact at ragged offsets`,
    ...GPU,
    async fn() {
      const gpu = await testGpu();
      const r = rng(fill === "ffi" ? 11 : 12);
      const dir = await Deno.makeTempDir({ prefix: "pregate_pinned_" });
      await Deno.writeFile(`${dir}/src.bin`, noise(200_003, r));
      const file = openMapped(`${dir}/src.bin`, { mode: "mmap" });
      const dst = gpu.storage("experts", 64 << 10);
      const logs: string[] = [];
      try {
        // Sources at odd file offsets and ragged lengths, over several small store buffers.
        const sources = Array.from({ length: 40 }, (_, i) => {
          const len = 1 + Math.floor(r() * 3000);
          return source(`t${i}`, file.bytes(Math.floor(r() * (file.byteLength - len)), len));
        });
        const up = await PinnedUploader.create(gpu, sources, {
          bufferBytes: 8 << 10,
          memcpy: fill === "ffi" ? hostMemcpy() : null,
          threads: 3,
          log: (m) => logs.push(m),
        });
        assert.ok(up.stats.stagingBuffers > 2, `${up.stats.stagingBuffers} store buffers`);
        assert.ok(up.storeGBs > 0);
        const shadow = new Uint8Array(64 << 10);
        for (let round = 0; round < 3; round++) {
          const items = Array.from({ length: 12 }, () => {
            const s = sources[Math.floor(r() * sources.length)];
            const offset = Math.floor((r() * (shadow.length - s.byteLength - 4)) / 4) * 4;
            return { dst, offset, data: s };
          });
          await up.uploadMany(items);
          for (const it of items) {
            shadow.set(it.data.bytes(), it.offset);
            shadow.fill(
              0,
              it.offset + it.data.byteLength,
              (it.offset + it.data.byteLength + 3) & ~3,
            );
          }
          up.flush();
          const got = new Uint8Array(await gpu.read(dst));
          const at = got.findIndex((b, i) => b !== shadow[i]);
          assert.equal(at, -1, `round ${round}: first wrong byte at ${at}`);
        }
        assert.equal(up.stats.path, "pinned");
        assert.equal(up.stats.fill, "none");
        assert.equal(up.stats.submits, 3);
        await up.dispose();
        await assert.rejects(
          up.upload(dst, 0, sources[0]),
          (e) => e instanceof PregateError && e.code === "E_UPLOADER_DISPOSED",
        );
        // llvmpipe's "GPU" memory is host memory: copies run at memory speed, below the bus.
        assert.deepEqual(logs, []);
      } finally {
        gpu.destroyBuffer(dst);
        file.close();
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}

Deno.test({
  name: "pinned uploader: store memory is host memory, freed by dispose",
  ...GPU,
  async fn() {
    const gpu = await testGpu();
    const before = gpu.memory();
    const up = await PinnedUploader.create(gpu, [source("a", new Uint8Array(4096).fill(3))]);
    const during = gpu.memory();
    assert.equal(during.current, before.current, "device memory unchanged");
    assert.equal(during.host.current - before.host.current, 4096);
    await up.dispose();
    assert.equal(gpu.memory().host.current, before.host.current);
  },
});

Deno.test({
  name: "pinned uploader: unknown, unnamed and resized sources and bad offsets are refused",
  ...GPU,
  async fn() {
    const gpu = await testGpu();
    const dst = gpu.storage("experts", 1024);
    const data = new Uint8Array(100).fill(1);
    const up = await PinnedUploader.create(gpu, [source("w", data)]);
    try {
      const refused = (items: Parameters<PinnedUploader["uploadMany"]>[0], re: RegExp) =>
        assert.rejects(
          up.uploadMany(items),
          (e) => e instanceof ArgumentError && re.test(e.message),
        );
      await refused([{ dst, offset: 0, data: source("v", data) }], /'v' was not pinned/);
      await refused([{ dst, offset: 0, data }], /no source/);
      await refused(
        [{ dst, offset: 0, data: source("w", data.subarray(1)) }],
        /99 bytes given, 100/,
      );
      await refused([{ dst, offset: 2, data: source("w", data) }], /multiple of 4/);
      // A refused batch queues nothing, not even its valid items.
      await refused(
        [{ dst, offset: 0, data: source("w", data) }, { dst, offset: 0, data: source("x", data) }],
        /'x'/,
      );
      assert.equal(up.bytes, 0);
    } finally {
      await up.dispose();
      gpu.destroyBuffer(dst);
    }
  },
});

Deno.test({
  name: "pinned uploader: repeated names, oversized and lying sources are refused at create",
  ...GPU,
  async fn() {
    const gpu = await testGpu();
    const a = source("a", new Uint8Array(8));
    await assert.rejects(
      PinnedUploader.create(gpu, [a, a]),
      (e) => e instanceof ArgumentError && /'a' is given twice/.test(e.message),
    );
    const huge: UploadSource = {
      name: "huge",
      byteLength: gpu.limits.maxBufferSize + 1,
      bytes: () => new Uint8Array(0),
    };
    await assert.rejects(
      PinnedUploader.create(gpu, [huge]),
      (e) => e instanceof ArgumentError && /'huge'.*maxBufferSize/.test(e.message),
    );
    const before = gpu.memory().host.current;
    const liar: UploadSource = { name: "liar", byteLength: 16, bytes: () => new Uint8Array(12) };
    await assert.rejects(
      PinnedUploader.create(gpu, [a, liar]),
      (e) => e instanceof ArgumentError && /'liar' gave 12 bytes, 16 expected/.test(e.message),
    );
    assert.equal(gpu.memory().host.current, before, "a failed create frees its buffers");
  },
});

Deno.test({
  name: "pinned uploader: a store beyond the host memory limit is refused before allocating",
  ...GPU,
  async fn() {
    const gpu = await testGpu();
    const parts = [source("a", new Uint8Array(600)), source("b", new Uint8Array(600))];
    const before = gpu.memory().host.current;
    await assert.rejects(
      PinnedUploader.create(gpu, parts, { hostMemoryLimit: 1000 }),
      (e) =>
        e instanceof ArgumentError && e.argument === "uploader" &&
        /0\.00 GiB for 2 tensors, but 0\.00 GiB is available/.test(e.message) &&
        /--uploader mapped/.test(e.message),
    );
    assert.equal(gpu.memory().host.current, before, "nothing allocated");
    const up = await PinnedUploader.create(gpu, parts, { hostMemoryLimit: 1200 });
    assert.equal(up.stats.stagingBytes, 1200);
    await up.dispose();
  },
});
