import assert from "node:assert/strict";
import { ArgumentError, FileWriteError, WeightFileError } from "./base/errors.ts";
import { asWriteError, checkOutputFile, writeTextOutput } from "./output_files.ts";

/** Root ignores file permissions, so a read-only directory cannot be tested as root. */
const ROOT = Deno.build.os !== "windows" && Deno.uid() === 0;

async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "pregate_out_" });
  try {
    await fn(dir);
  } finally {
    await Deno.chmod(dir, 0o755).catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
}

function argumentError(fn: () => void, argument: string, text: RegExp): void {
  assert.throws(
    fn,
    (e) => e instanceof ArgumentError && e.argument === argument && text.test(e.message),
  );
}

Deno.test("checkOutputFile: a missing directory, a directory, a path through a file", async () => {
  await withTemp(async (dir) => {
    await Deno.writeTextFile(`${dir}/file.txt`, "x");
    checkOutputFile(`${dir}/out.svg`, "--out"); // a new file in an existing directory
    checkOutputFile(`${dir}/file.txt`, "--out"); // an existing file is overwritten
    argumentError(
      () => checkOutputFile(`${dir}/no/out.svg`, "--out"),
      "--out",
      /no does not exist/,
    );
    argumentError(() => checkOutputFile(dir, "--json"), "--json", /is a directory/);
    argumentError(
      () => checkOutputFile(`${dir}/file.txt/x.svg`, "--out"),
      "--out",
      /file\.txt is not a directory/,
    );
    argumentError(() => checkOutputFile("", "--out"), "--out", /file path/);
  });
});

Deno.test({
  name: "a full disk is a FileWriteError naming the file (/dev/full)",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    // /dev/full: every write fails with ENOSPC, as on a full disk.
    const full = await Deno.writeFile("/dev/full", new Uint8Array(8)).then(() => null, (e) => e);
    const e = asWriteError(full, "/dev/full");
    assert.ok(e instanceof FileWriteError, String(e));
    assert.equal(e.file, "/dev/full");
    assert.equal(e.code, "E_WRITE");
    assert.match(e.message, /\/dev\/full: cannot write: the disk is full \(ENOSPC\)/);
  },
});

Deno.test("a path through a file is a FileWriteError naming it; other errors pass", async () => {
  await withTemp(async (dir) => {
    await Deno.writeTextFile(`${dir}/file.txt`, "x");
    await assert.rejects(
      writeTextOutput(`${dir}/file.txt/x.json`, "{}"),
      (e) =>
        e instanceof FileWriteError && /x\.json: cannot write: .* not a directory/.test(e.message),
    );
  });
  // Pregate's own errors and non-file-system values pass through unchanged.
  const own = new WeightFileError("f", "bad");
  assert.equal(asWriteError(own, "x"), own);
  assert.equal(asWriteError("text", "x"), "text");
});

Deno.test({
  name: "a read-only directory is a FileWriteError naming the file (not as root)",
  ignore: ROOT,
  fn: async () => {
    await withTemp(async (dir) => {
      await Deno.chmod(dir, 0o555);
      await assert.rejects(
        writeTextOutput(`${dir}/a.json`, "{}"),
        (e) =>
          e instanceof FileWriteError && /a\.json: cannot write: permission denied/.test(e.message),
      );
    });
  },
});
