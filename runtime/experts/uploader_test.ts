import assert from "node:assert/strict";
import { createUploader, type Uploader, type UploaderOptions } from "./uploader.ts";
import { ArgumentError, PregateError } from "../base/errors.ts";
import { openMapped } from "../weights/mmap.ts";
import { rng, testGpu } from "../../kernels/test_util.ts";
import type { Gpu } from "../base/gpu/device.ts";

const GPU = { sanitizeResources: false, sanitizeOps: false };

/** Random bytes. */
function noise(n: number, r: () => number): Uint8Array {
  return Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
}

/** The first differing byte of two arrays, or -1. */
function firstDiff(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

async function assertGpuBytes(gpu: Gpu, dst: GPUBuffer, shadow: Uint8Array, what: string) {
  const got = new Uint8Array(await gpu.read(dst));
  const at = firstDiff(got, shadow);
  assert.equal(at, -1, `${what}: first wrong byte at ${at} (${got[at]} != ${shadow[at]})`);
}

function stagingBytes(gpu: Gpu): number {
  return gpu.memory().byPurpose.staging?.current ?? 0;
}

/**
 * Uploads `count` random ragged ranges (sources: heap arrays, or views at odd offsets of a mapped
 * file) to random 4-aligned offsets, checking the destination against a host shadow along the way.
 */
async function randomUploads(
  gpu: Gpu,
  up: Uploader,
  seed: number,
  count: number,
  source: "heap" | "mmap",
  maxLen: number,
): Promise<void> {
  const size = 64 << 10;
  const dst = gpu.storage("experts", size);
  const shadow = new Uint8Array(size);
  const r = rng(seed);
  let file: ReturnType<typeof openMapped> | null = null;
  let dir = "";
  if (source === "mmap") {
    dir = await Deno.makeTempDir({ prefix: "pregate_uploader_" });
    await Deno.writeFile(`${dir}/src.bin`, noise(maxLen * 4 + 7, r));
    file = openMapped(`${dir}/src.bin`, { mode: "mmap" });
  }
  try {
    for (let i = 0; i < count; i++) {
      const len = 1 + Math.floor(r() * maxLen);
      const offset = Math.floor((r() * (size - len - 4)) / 4) * 4;
      // mmap sources start at any byte of the file, so source addresses are unaligned too
      const data = file
        ? file.bytes(Math.floor(r() * (file.byteLength - len)), len)
        : noise(len, r);
      await up.upload(dst, offset, data);
      shadow.set(data, offset);
      // A ragged tail is padded with zeros up to the next 4 bytes.
      shadow.fill(0, offset + len, (offset + len + 3) & ~3);
      if (i % 50 === 49) {
        up.flush();
        await assertGpuBytes(gpu, dst, shadow, `after ${i + 1} uploads`);
      }
    }
    up.flush();
    await assertGpuBytes(gpu, dst, shadow, "at the end");
  } finally {
    file?.close();
    if (dir) await Deno.remove(dir, { recursive: true });
    gpu.destroyBuffer(dst);
  }
}

const CASES: { name: string; path: "write" | "mapped"; opts: UploaderOptions }[] = [
  { name: "write", path: "write", opts: {} },
  // A tiny ring (3 x 4 KiB) so that uploads span buffers and every buffer is remapped often; pieces
  // of >= 256 bytes so that one fill runs as up to 4 parallel memcpys.
  {
    name: "mapped ffi x4",
    path: "mapped",
    opts: { stagingBytes: 4096, buffers: 3, threads: 4, minPieceBytes: 256 },
  },
  {
    name: "mapped ffi x3 (uneven pieces), 2 buffers",
    path: "mapped",
    opts: { stagingBytes: 1028, buffers: 2, threads: 3, minPieceBytes: 64 },
  },
  { name: "mapped set", path: "mapped", opts: { stagingBytes: 1024, buffers: 3, fill: "set" } },
];

for (const [k, c] of CASES.entries()) {
  for (const source of ["heap", "mmap"] as const) {
    Deno.test({
      name: `${c.name} uploader, ${source} sources: ragged sizes and offsets arrive intact`,
      ...GPU,
      fn: async () => {
        const gpu = await testGpu();
        const before = stagingBytes(gpu);
        const up = createUploader(gpu, c.path, { log: () => {}, ...c.opts });
        await randomUploads(gpu, up, 11 + k * 2 + (source === "mmap" ? 1 : 0), 150, source, 9000);
        const st = up.stats;
        assert.equal(st.bytes, up.bytes);
        assert.ok(up.bytes > 150 * 3000, `bytes ${up.bytes}`);
        if (c.path === "mapped") {
          assert.equal(st.fill, c.opts.fill === "set" ? "set" : "ffi");
          // Every full staging buffer was submitted, and all but the last few remapped since.
          const staging = c.opts.stagingBytes!, buffers = c.opts.buffers!;
          assert.ok(st.submits >= Math.floor(st.bytes / staging), `${st.submits} submits`);
          assert.ok(st.cycles >= st.submits - buffers, `${st.cycles} of ${st.submits} remapped`);
          assert.ok(st.cycles > 100, `ring recycled: ${st.cycles} cycles`);
          if (st.fill === "ffi") {
            // Most fills are split: clearly more memcpy calls than staging buffers submitted.
            assert.ok(st.pieces > st.submits * 2, `${st.pieces} pieces, ${st.submits} submits`);
            assert.equal(st.threads, c.opts.threads);
          } else {
            assert.equal(st.pieces, 0);
          }
        }
        await up.dispose();
        assert.equal(stagingBytes(gpu), before, "staging buffers freed");
      },
    });
  }
}

Deno.test({
  name: "mapped uploader: a copy larger than the ring streams through it in order",
  ...GPU,
  fn: async () => {
    const gpu = await testGpu();
    const n = 50_001; // 12+ staging buffers of 4 KiB, ragged tail
    const dst = gpu.storage("experts", 50_004);
    const up = createUploader(gpu, "mapped", {
      stagingBytes: 4096,
      buffers: 3,
      threads: 4,
      minPieceBytes: 512,
    });
    const data = noise(n, rng(3));
    await up.upload(dst, 0, data);
    up.flush();
    const shadow = new Uint8Array(50_004);
    shadow.set(data);
    await assertGpuBytes(gpu, dst, shadow, "big copy");
    assert.ok(up.stats.cycles >= 9, `${up.stats.cycles} cycles`);
    await up.dispose();
    gpu.destroyBuffer(dst);
  },
});

Deno.test({
  name: "mapped uploader: uploads issued without awaiting run in order; flush waits for none",
  ...GPU,
  fn: async () => {
    const gpu = await testGpu();
    const dst = gpu.storage("experts", 8192);
    const up = createUploader(gpu, "mapped", {
      stagingBytes: 2048,
      buffers: 2,
      threads: 2,
      minPieceBytes: 256,
    });
    const r = rng(5);
    const shadow = new Uint8Array(8192);
    const pending: Promise<void>[] = [];
    for (let i = 0; i < 40; i++) {
      const len = 1 + Math.floor(r() * 3000);
      const offset = Math.floor((r() * (8192 - len - 4)) / 4) * 4;
      const data = noise(len, r);
      pending.push(up.upload(dst, offset, data)); // overlapping ranges: order matters
      shadow.set(data, offset);
      shadow.fill(0, offset + len, (offset + len + 3) & ~3);
    }
    assert.throws(
      () => up.flush(),
      (e) => e instanceof PregateError && e.code === "E_UPLOAD_IN_FLIGHT",
    );
    await Promise.all(pending);
    up.flush();
    await assertGpuBytes(gpu, dst, shadow, "after 40 unawaited uploads");
    await up.dispose();
    gpu.destroyBuffer(dst);
  },
});

Deno.test({
  name: "mapped uploader: dispose while idle, right after a flush, and with an upload in flight",
  ...GPU,
  fn: async () => {
    const gpu = await testGpu();
    const before = stagingBytes(gpu);
    const opts = { stagingBytes: 1024, buffers: 3, threads: 2, minPieceBytes: 64 };
    // Never used: every buffer is still mapped from creation.
    const idle = createUploader(gpu, "mapped", opts);
    assert.equal(stagingBytes(gpu), before + 3 * 1024);
    await idle.dispose();
    assert.equal(stagingBytes(gpu), before);
    await idle.dispose(); // idempotent
    await assert.rejects(
      () => idle.upload(gpu.storage("other", 16), 0, new Uint8Array(4)),
      (e) => e instanceof PregateError && e.code === "E_UPLOADER_DISPOSED",
    );
    idle.flush(); // no-op after dispose

    // Remaps pending: dispose submits what is staged and waits for them before destroying.
    const dst = gpu.storage("experts", 4096);
    const up = createUploader(gpu, "mapped", opts);
    const data = noise(3001, rng(9));
    await up.upload(dst, 0, data); // fills and seals two buffers, stages the rest in a third
    const disposed = up.dispose(); // not flushed: dispose submits the third
    await disposed;
    assert.equal(stagingBytes(gpu), before);
    const shadow = new Uint8Array(4096);
    shadow.set(data);
    await assertGpuBytes(gpu, dst, shadow, "copies staged before dispose");

    // An upload in flight when dispose is called completes and is submitted.
    const up2 = createUploader(gpu, "mapped", opts);
    const data2 = noise(2500, rng(10));
    const inFlight = up2.upload(dst, 1024, data2);
    const disposed2 = up2.dispose();
    await inFlight;
    await disposed2;
    shadow.set(data2, 1024);
    shadow.fill(0, 1024 + 2500, 1024 + 2500 + (4 - (2500 % 4)) % 4);
    await assertGpuBytes(gpu, dst, shadow, "upload in flight at dispose");
    assert.equal(stagingBytes(gpu), before);
    gpu.destroyBuffer(dst);
  },
});

Deno.test({
  name: "mapped uploader: empty uploads are no-ops",
  ...GPU,
  fn: async () => {
    const gpu = await testGpu();
    const up = createUploader(gpu, "mapped", { stagingBytes: 1024 });
    const dst = gpu.storage("experts", 1024);
    await up.upload(dst, 0, new Uint8Array(0));
    up.flush();
    assert.equal(up.bytes, 0);
    assert.equal(up.stats.submits, 0);
    await up.dispose();
    gpu.destroyBuffer(dst);
  },
});

Deno.test({
  name: "mapped uploader without --allow-ffi: falls back to Uint8Array.set with one notice",
  ...GPU,
  fn: async () => {
    const uploader = import.meta.resolve("./uploader.ts");
    const device = import.meta.resolve("../base/gpu/device.ts");
    const script = `
      import { createUploader } from "${uploader}";
      import { openGpu } from "${device}";
      const gpu = await openGpu({ gpu: "native" });
      const logs = [];
      const log = (m) => logs.push(m);
      let refused = "";
      try { createUploader(gpu, "mapped", { fill: "ffi", log }); } catch (e) { refused = e.code; }
      const ups = [0, 1].map(() =>
        createUploader(gpu, "mapped", { stagingBytes: 1024, buffers: 2, minPieceBytes: 64, log }));
      const dst = gpu.storage("experts", 4096);
      const data = Uint8Array.from({ length: 3001 }, (_, i) => (i * 7 + 3) & 255);
      for (const up of ups) { await up.upload(dst, 0, data); up.flush(); }
      const got = new Uint8Array(await gpu.read(dst, 0, 3001));
      const ok = got.every((v, i) => v === data[i]);
      for (const up of ups) await up.dispose();
      console.log(JSON.stringify({ refused, logs, ok, fill: ups[0].stats.fill }));
      gpu.destroy();
    `;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-read", "--allow-env", "-"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const w = out.stdin.getWriter();
    await w.write(new TextEncoder().encode(script));
    await w.close();
    const res = await out.output();
    const text = new TextDecoder().decode(res.stdout);
    assert.equal(res.code, 0, new TextDecoder().decode(res.stderr));
    const r = JSON.parse(text.trim().split("\n").at(-1)!);
    assert.equal(r.refused, "E_NO_FFI");
    assert.equal(r.fill, "set");
    assert.ok(r.ok, "bytes intact through the fallback");
    assert.equal(r.logs.length, 1, `one notice for two uploaders: ${r.logs.join(" | ")}`);
    assert.match(r.logs[0], /not permitted.*Uint8Array\.set/);
  },
});

Deno.test({
  name: "uploader arguments are checked",
  ...GPU,
  fn: async () => {
    const gpu = await testGpu();
    assert.throws(() => createUploader(gpu, "dma" as never), (e) => e instanceof ArgumentError);
    const bad: [UploaderOptions, string][] = [
      [{ stagingBytes: 10 }, "stagingBytes"],
      [{ stagingBytes: 1026 }, "stagingBytes"],
      [{ buffers: 0 }, "buffers"],
      [{ threads: 0 }, "threads"],
      [{ threads: 1.5 }, "threads"],
      [{ minPieceBytes: 8 }, "minPieceBytes"],
      [{ fill: "dma" as never }, "fill"],
    ];
    for (const [opts, argument] of bad) {
      assert.throws(
        () => createUploader(gpu, "mapped", opts),
        (e) => e instanceof ArgumentError && e.argument === argument,
        JSON.stringify(opts),
      );
    }
    const up = createUploader(gpu, "mapped", { stagingBytes: 256, buffers: 2 });
    await assert.rejects(
      () => up.upload(gpu.storage("other", 64), 2, new Uint8Array(4)),
      (e) => e instanceof ArgumentError && e.argument === "offset",
    );
    await up.dispose();
    // `auto`: mapped staging on Dawn (soak-tested there), writeBuffer on native.
    assert.equal(createUploader(gpu).path, gpu.impl === "dawn" ? "mapped" : "write");
  },
});

for (const path of ["mapped", "write"] as const) {
  Deno.test({
    name:
      `${path} uploader: uploadMany batches of ragged ranges across staging buffers arrive intact`,
    ...GPU,
    fn: async () => {
      const gpu = await testGpu();
      const up = createUploader(gpu, path, {
        log: () => {},
        stagingBytes: 4096,
        buffers: 3,
        threads: 3,
        minPieceBytes: 256,
      });
      const size = 48 << 10;
      const dsts = [gpu.storage("experts", size), gpu.storage("experts", size)];
      const shadows = [new Uint8Array(size), new Uint8Array(size)];
      const r = rng(97);
      try {
        for (let batch = 0; batch < 12; batch++) {
          // Non-overlapping ranges per batch (as an expert's tensors are), in random order.
          const n = 1 + Math.floor(r() * 9), span = Math.floor(size / n / 4) * 4;
          const items = [];
          for (let j = 0; j < n; j++) {
            const d = Math.floor(r() * 2);
            const len = 1 + Math.floor(r() * (span - 4));
            const offset = j * span;
            const data = noise(len, r);
            items.push({ dst: dsts[d], offset, data });
          }
          await up.uploadMany(items);
          for (const it of items) {
            const sh = shadows[dsts.indexOf(it.dst)];
            sh.set(it.data, it.offset);
            sh.fill(0, it.offset + it.data.length, (it.offset + it.data.length + 3) & ~3);
          }
          up.flush();
          for (const d of [0, 1]) await assertGpuBytes(gpu, dsts[d], shadows[d], `batch ${batch}`);
        }
        if (path === "mapped") {
          const st = up.stats;
          assert.ok(st.submits > 12, `batches span several staging buffers: ${st.submits}`);
          assert.ok(st.pieces > st.submits, `fills were split: ${st.pieces} pieces`);
        }
        await assert.rejects(
          up.uploadMany([{ dst: dsts[0], offset: 2, data: new Uint8Array(8) }]),
          ArgumentError,
        );
      } finally {
        await up.dispose();
        for (const d of dsts) gpu.destroyBuffer(d);
      }
    },
  });
}
