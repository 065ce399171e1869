import assert from "node:assert/strict";
import { ArgumentError, PregateError, WeightFileError } from "../base/errors.ts";
import { type MapKind, mmapSupport, openMapped } from "./mmap.ts";

const KINDS: MapKind[] = ["mmap", "read"];

const assertEquals = (actual: unknown, expected: unknown, message?: string): void =>
  assert.deepEqual(actual, expected, message);

/** Asserts that `fn` throws an instance of `cls` whose message includes `includes`; returns it. */
function assertThrows<E extends Error>(
  fn: () => unknown,
  cls: new (...args: never[]) => E,
  includes = "",
): E {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${String(e)}`);
    assert.ok(e.message.includes(includes), `expected "${includes}" in: ${e.message}`);
    return e;
  }
  throw new assert.AssertionError({ message: `expected ${cls.name} to be thrown` });
}

async function tempFile(bytes: Uint8Array): Promise<{ dir: string; path: string }> {
  const dir = await Deno.makeTempDir({ prefix: "pregate_mmap_" });
  const path = `${dir}/data.bin`;
  await Deno.writeFile(path, bytes);
  return { dir, path };
}

function pattern(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 131 + 7) & 0xff;
  return b;
}

Deno.test("mmap is available under -A on this platform", () => {
  const s = mmapSupport();
  assert.ok(s.available, `mmap unavailable: ${s.reason}`);
});

for (const kind of KINDS) {
  Deno.test(`${kind}: bytes() returns the file's bytes at any offset`, async () => {
    const data = pattern(10_000);
    const { dir, path } = await tempFile(data);
    const f = openMapped(path, { mode: kind });
    try {
      assertEquals(f.kind, kind);
      assertEquals(f.byteLength, data.length);
      assertEquals(f.path, path);
      for (const [off, len] of [[0, 8], [1, 3], [4093, 10], [9_990, 10], [0, 10_000], [5, 0]]) {
        assertEquals(f.bytes(off, len), data.subarray(off, off + len), `range ${off}+${len}`);
      }
      assertEquals(new Uint8Array(f.arrayBuffer()), data);
    } finally {
      f.close();
      await Deno.remove(dir, { recursive: true });
    }
  });

  Deno.test(`${kind}: an empty file opens, has no bytes and closes`, async () => {
    const { dir, path } = await tempFile(new Uint8Array(0));
    const f = openMapped(path, { mode: kind });
    assertEquals(f.byteLength, 0);
    assertEquals(f.bytes(0, 0).length, 0);
    assertEquals(f.arrayBuffer().byteLength, 0);
    assertEquals(f.advise(0, 0, "willneed"), false);
    assertThrows(() => f.bytes(0, 1), WeightFileError, "outside the file (0 bytes)");
    f.close();
    f.close(); // idempotent
    assert.ok(f.closed);
    await Deno.remove(dir, { recursive: true });
  });

  Deno.test(`${kind}: out-of-range and invalid ranges throw naming the file`, async () => {
    const { dir, path } = await tempFile(pattern(100));
    const f = openMapped(path, { mode: kind });
    try {
      for (const [off, len] of [[0, 101], [100, 1], [-1, 2], [1.5, 2], [50, -1], [2 ** 60, 1]]) {
        const e = assertThrows(() => f.bytes(off, len), WeightFileError);
        assert.ok(e.message.includes(path), e.message);
        assert.ok(e.message.includes("outside the file (100 bytes)"), e.message);
      }
      assertThrows(() => f.advise(90, 20, "willneed"), WeightFileError, "outside the file");
    } finally {
      f.close();
      await Deno.remove(dir, { recursive: true });
    }
  });

  Deno.test(`${kind}: use after close throws`, async () => {
    const { dir, path } = await tempFile(pattern(64));
    const f = openMapped(path, { mode: kind });
    f.close();
    assert.ok(f.closed);
    assertThrows(() => f.bytes(0, 1), WeightFileError, "used after close()");
    assertThrows(() => f.advise(0, 1, "normal"), WeightFileError, "used after close()");
    await Deno.remove(dir, { recursive: true });
  });
}

Deno.test("mmap: views are zero-copy views of one mapping", async () => {
  const data = pattern(8192);
  const { dir, path } = await tempFile(data);
  const f = openMapped(path, { mode: "mmap" });
  try {
    const a = f.bytes(100, 10);
    const b = f.bytes(104, 4);
    assert.ok(a.buffer === b.buffer, "views share the mapping's ArrayBuffer");
    assert.ok(a.buffer === f.arrayBuffer());
    assertEquals(a.byteOffset, 100);
    assertEquals(a.buffer.byteLength, 8192);
  } finally {
    f.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("read: every bytes() call is an independent copy", async () => {
  const { dir, path } = await tempFile(pattern(100));
  const f = openMapped(path, { mode: "read" });
  try {
    const a = f.bytes(10, 4);
    a[0] ^= 0xff; // writable, and does not change the file or later reads
    assertEquals(f.bytes(10, 4), pattern(100).subarray(10, 14));
    assertEquals(a.buffer.byteLength, 4);
  } finally {
    f.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("mmap: close() detaches earlier views instead of leaving them dangling", async () => {
  const { dir, path } = await tempFile(pattern(4096 * 3));
  const f = openMapped(path, { mode: "mmap" });
  const view = f.bytes(4096, 100);
  const whole = f.arrayBuffer();
  assertEquals(view.length, 100);
  f.close();
  assert.ok(whole.detached, "the mapping's ArrayBuffer is detached");
  assertEquals(view.length, 0);
  assertEquals(view[0], undefined); // no segfault
  await Deno.remove(dir, { recursive: true });
});

Deno.test("mmap: advise accepts unaligned ranges and reports success", async () => {
  const data = pattern(5 * 4096 + 123);
  const { dir, path } = await tempFile(data);
  const f = openMapped(path, { mode: "mmap" });
  try {
    for (const a of ["normal", "random", "sequential", "willneed", "dontneed"] as const) {
      assertEquals(f.advise(4097, 8000, a), true, a);
    }
    assertEquals(f.advise(0, f.byteLength, "willneed"), true);
    assertEquals(f.advise(10, 0, "willneed"), false);
    // dontneed on a read-only private mapping drops pages; the data must still read back
    assertEquals(f.bytes(4097, 8000), data.subarray(4097, 12097));
  } finally {
    f.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("mmap: resident tells pages in RAM from pages never read (sparse file)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pregate_mmap_" });
  const path = `${dir}/sparse.bin`;
  const size = 64 << 20;
  const fh = await Deno.open(path, { write: true, create: true });
  await fh.truncate(size); // a hole: no page of it is cached until read
  fh.close();
  const f = openMapped(path, { mode: "mmap" });
  try {
    const [off, len] = [(32 << 20) + 100, (1 << 20) - 200];
    assertEquals(f.resident(off, len), 0);
    let sum = 0;
    const view = f.bytes(off, len);
    for (let i = 0; i < view.length; i += 512) sum += view[i];
    assertEquals(sum, 0);
    assertEquals(f.resident(off, len), 1);
    // The rest of the file was not read.
    const rest = f.resident(0, 16 << 20)!;
    assert.ok(rest < 0.5, `expected most of an unread range out of RAM, got ${rest}`);
    assertEquals(f.resident(10, 0), null);
    assertThrows(() => f.resident(size - 10, 11), WeightFileError, "outside the file");
  } finally {
    f.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("read: advise is a no-op that says so", async () => {
  const { dir, path } = await tempFile(pattern(100));
  const f = openMapped(path, { mode: "read" });
  assertEquals(f.advise(0, 100, "willneed"), false);
  assertEquals(f.resident(0, 100), null);
  f.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("missing files and directories are WeightFileErrors naming the path", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pregate_mmap_" });
  try {
    for (const mode of ["auto", "mmap", "read"] as const) {
      const e = assertThrows(
        () => openMapped(`${dir}/nope.safetensors`, { mode }),
        WeightFileError,
        "file not found",
      );
      assertEquals(e.file, `${dir}/nope.safetensors`);
      assertThrows(() => openMapped(dir, { mode }), WeightFileError, "found a directory");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an invalid mode is an ArgumentError", () => {
  assertThrows(
    () => openMapped("x", { mode: "bogus" as MapKind }),
    ArgumentError,
    "expected auto, mmap or read",
  );
});

Deno.test("mmap: a sparse file larger than 4 GiB maps and reads at both ends", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pregate_mmap_" });
  const path = `${dir}/big.bin`;
  const size = 5 * 2 ** 30 + 3;
  const f0 = await Deno.open(path, { write: true, create: true });
  await f0.truncate(size); // sparse: no disk space used
  await f0.seek(size - 2, Deno.SeekMode.Start);
  await f0.write(new Uint8Array([0xab, 0xcd]));
  f0.close();
  const f = openMapped(path, { mode: "mmap" });
  try {
    assertEquals(f.byteLength, size);
    assertEquals(f.arrayBuffer().byteLength, size);
    assertEquals(f.bytes(size - 3, 3), new Uint8Array([0, 0xab, 0xcd]));
    assertEquals(f.bytes(2 ** 32 + 17, 2), new Uint8Array([0, 0]));
  } finally {
    f.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("without --allow-ffi: auto reads instead, logs one notice, mmap mode refuses", async () => {
  const { dir, path } = await tempFile(pattern(300));
  const script = `
    import { openMapped } from ${JSON.stringify(new URL("./mmap.ts", import.meta.url).href)};
    const path = ${JSON.stringify(path)};
    const custom = [];
    const a = openMapped(path);                      // default log: console.error, once
    const b = openMapped(path);
    const c = openMapped(path, { log: (m) => custom.push(m) });
    const d = openMapped(path, { log: (m) => custom.push(m) }); // a new callback: notified too
    const e = openMapped(path, { mode: "read", log: (m) => custom.push("unexpected " + m) });
    let refused = "";
    try { openMapped(path, { mode: "mmap" }); } catch (err) { refused = err.code + " " + err.message; }
    console.log(JSON.stringify({
      kinds: [a.kind, b.kind, c.kind, d.kind, e.kind],
      sum: Array.from(a.bytes(0, 300)).reduce((s, x) => s + x, 0),
      same: a.bytes(7, 5).join() === c.bytes(7, 5).join(),
      custom,
      refused,
    }));
    for (const f of [a, b, c, d, e]) f.close();
  `;
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-check", "--no-config", `--allow-read=${dir},${import.meta.dirname}`, "-"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const w = out.stdin.getWriter();
    await w.write(new TextEncoder().encode(script));
    await w.close();
    const res = await out.output();
    const stdout = new TextDecoder().decode(res.stdout);
    const stderr = new TextDecoder().decode(res.stderr);
    assertEquals(res.code, 0, stderr);
    const r = JSON.parse(stdout) as {
      kinds: string[];
      sum: number;
      same: boolean;
      custom: string[];
      refused: string;
    };
    assertEquals(r.kinds, ["read", "read", "read", "read", "read"]);
    assertEquals(r.sum, pattern(300).reduce((s, x) => s + x, 0));
    assert.ok(r.same);
    const notices = stderr.split("\n").filter((l) => l.includes("instead of memory-mapped"));
    assertEquals(notices.length, 1, stderr);
    assert.ok(notices[0].includes("FFI is not permitted"), notices[0]);
    assertEquals(r.custom.length, 2, r.custom.join("\n"));
    assert.ok(r.custom.every((m) => m.includes("--allow-ffi")));
    assert.ok(r.refused.startsWith("E_NO_MMAP"), r.refused);
    assert.ok(r.refused.includes(path), r.refused);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("mmap mode error type is a PregateError subclass", () => {
  // E_NO_MMAP is only reachable without FFI (tested in a subprocess above); here just make sure
  // every error this module throws on purpose is a PregateError.
  const e = assertThrows(() => openMapped("/definitely/not/here"), WeightFileError);
  assert.ok(e instanceof PregateError);
  assertEquals(e.code, "E_WEIGHTS");
});

Deno.test("checkIntact: a truncated file is a WeightFileError; grown or replaced files pass", async () => {
  for (const kind of KINDS) {
    const { dir, path } = await tempFile(pattern(3 * 4096));
    const f = openMapped(path, { mode: kind });
    try {
      assertEquals(f.bytes(5000, 3), pattern(5003).subarray(5000)); // pages touched before
      f.checkIntact();
      await Deno.writeFile(path, new Uint8Array(100), { append: true });
      f.checkIntact(); // grown: what was mapped is still there
      // Replaced by rename: the old file stays alive under the mapping (and the open descriptor).
      await Deno.writeFile(`${dir}/new.bin`, new Uint8Array(10));
      await Deno.rename(`${dir}/new.bin`, path);
      f.checkIntact();
      f.close();
      // Truncated in place (never touching the lost pages here: that would be SIGBUS).
      await Deno.writeFile(path, pattern(3 * 4096));
      const g = openMapped(path, { mode: kind });
      await Deno.truncate(path, 4096);
      const e = assertThrows(
        () => g.checkIntact("w"),
        WeightFileError,
        "shrank from 12288 to 4096",
      );
      assertEquals([e.file, e.tensor], [path, "w"]);
      assert.match(e.message, /do not rewrite weight files/);
      g.close();
      assertThrows(() => g.checkIntact(), WeightFileError, "after close");
    } finally {
      f.close();
      await Deno.remove(dir, { recursive: true });
    }
  }
});
