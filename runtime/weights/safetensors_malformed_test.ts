// Malformed safetensors files: every check of the header, in both access modes.
import assert from "node:assert/strict";
import {
  assertEquals,
  assertWeightError,
  badFile,
  bothModes,
  F32x2,
  rawFile,
  withTempDir,
} from "./safetensors_test_util.ts";

Deno.test("malformed: file shorter than 8 bytes", () =>
  withTempDir(async (dir) => {
    for (const n of [0, 5]) {
      const path = await badFile(dir, new Uint8Array(n));
      bothModes(path, (open) => {
        assertWeightError(
          open,
          path,
          undefined,
          `file is ${n} bytes, shorter than the 8-byte header length`,
        );
      });
    }
  }));

Deno.test("malformed: header length past the end of the file", () =>
  withTempDir(async (dir) => {
    const path = await badFile(
      dir,
      rawFile(JSON.stringify({ x: F32x2 }), new Uint8Array(8), 1000n),
    );
    bothModes(path, (open) => {
      assertWeightError(open, path, undefined, "header length 1000 runs past the end of the file");
    });
    const huge = await badFile(dir, rawFile("{}", new Uint8Array(0), 2n ** 62n));
    bothModes(huge, (open) => {
      assertWeightError(open, huge, undefined, `header length ${2n ** 62n}`, "absurdly large");
    });
  }));

Deno.test("malformed: header length absurdly large but inside the (sparse) file", () =>
  withTempDir(async (dir) => {
    const path = `${dir}/sparse.safetensors`;
    const f = await Deno.open(path, { write: true, create: true });
    const prefix = new Uint8Array(8);
    new DataView(prefix.buffer).setBigUint64(0, 100_000_001n, true);
    await f.write(prefix);
    await f.truncate(100_000_100);
    f.close();
    bothModes(path, (open) => {
      assertWeightError(
        open,
        path,
        undefined,
        "header length 100000001 is absurdly large (limit 100000000",
      );
    });
  }));

Deno.test("malformed: header is not UTF-8, not JSON, or not an object", () =>
  withTempDir(async (dir) => {
    const cases: [string | Uint8Array, string][] = [
      [new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), "not valid UTF-8"],
      ['{"x": {"dtype": "F32",', "not valid JSON"],
      ["", "not valid JSON"],
      ["[1, 2]", "must be a JSON object of tensor entries, found an array"],
      ["null", "found null"],
      ["42", "found a number (42)"],
    ];
    for (const [header, msg] of cases) {
      const path = await badFile(dir, rawFile(header));
      bothModes(path, (open) => assertWeightError(open, path, undefined, msg));
    }
  }));

Deno.test("malformed: __metadata__ is not an object", () =>
  withTempDir(async (dir) => {
    const path = await badFile(
      dir,
      rawFile(JSON.stringify({ __metadata__: "pt", x: F32x2 }), new Uint8Array(8)),
    );
    bothModes(path, (open) =>
      assertWeightError(open, path, undefined, "__metadata__ must be an object"));
  }));

Deno.test("malformed: tensor entries missing fields or of the wrong types", () =>
  withTempDir(async (dir) => {
    const cases: [unknown, string][] = [
      ["F32", "entry must be an object with dtype, shape and data_offsets, found a string"],
      [[1, 2], "entry must be an object"],
      [
        { shape: [2], data_offsets: [0, 8] },
        'dtype: expected a string such as "BF16", found nothing',
      ],
      [
        { dtype: 4, shape: [2], data_offsets: [0, 8] },
        'dtype: expected a string such as "BF16", found 4',
      ],
      [
        { dtype: "F32", data_offsets: [0, 8] },
        "shape: expected an array of non-negative integers, found nothing",
      ],
      [{ dtype: "F32", shape: "2", data_offsets: [0, 8] }, "shape: expected an array"],
      [{ dtype: "F32", shape: [-2], data_offsets: [0, 8] }, "found [-2]"],
      [{ dtype: "F32", shape: [1.5], data_offsets: [0, 8] }, "found [1.5]"],
      [
        { dtype: "F32", shape: [2] },
        "data_offsets: expected [begin, end] (two non-negative integers), found nothing",
      ],
      [{ dtype: "F32", shape: [2], data_offsets: [0, 4, 8] }, "found [0,4,8]"],
      [{ dtype: "F32", shape: [2], data_offsets: [-8, 0] }, "found [-8,0]"],
      [
        { dtype: "F32", shape: [2], data_offsets: { begin: 0 } },
        "data_offsets: expected [begin, end]",
      ],
    ];
    for (const [entry, msg] of cases) {
      const header = JSON.stringify({ ok: F32x2, "bad.tensor": entry });
      const path = await badFile(dir, rawFile(header, new Uint8Array(16)));
      bothModes(path, (open) => assertWeightError(open, path, "bad.tensor", msg));
    }
  }));

Deno.test("malformed: unsupported dtypes fail on get(), not at open", () =>
  withTempDir(async (dir) => {
    const header = JSON.stringify({
      __metadata__: { format: "pt" },
      w: F32x2,
      position_ids: { dtype: "I64", shape: [2], data_offsets: [8, 24] },
      scale: { dtype: "F8_E4M3", shape: [4], data_offsets: [24, 28] },
      mask: { dtype: "U8", shape: [3], data_offsets: [28, 31] },
      packed: { dtype: "F4", shape: [2], data_offsets: [31, 32] }, // sub-byte: size not checked
    });
    const path = await badFile(dir, rawFile(header, new Uint8Array(32)));
    bothModes(path, (open) => {
      const st = open();
      try {
        assertEquals(st.names(), ["w", "position_ids", "scale", "mask", "packed"]);
        assert.ok(st.has("position_ids"));
        assertEquals(st.get("w").shape, [2]);
        const d = st.describe("position_ids");
        assertEquals([d.fileDType, d.dtype, d.shape, d.byteLength], ["I64", null, [2], 16]);
        for (
          const [name, dt] of [["position_ids", "I64"], ["scale", "F8_E4M3"], ["mask", "U8"], [
            "packed",
            "F4",
          ]]
        ) {
          assertWeightError(
            () => st.get(name),
            path,
            name,
            `unsupported dtype ${dt} (supported: F32, F16, BF16)`,
          );
          assertWeightError(() => st.tensorF32(name), path, name, `unsupported dtype ${dt}`);
        }
      } finally {
        st.close();
      }
    });
  }));

Deno.test("malformed: offsets of unsupported-dtype tensors are still validated at open", () =>
  withTempDir(async (dir) => {
    const header = JSON.stringify({
      w: F32x2,
      ids: { dtype: "I64", shape: [2], data_offsets: [8, 40] },
    });
    const path = await badFile(dir, rawFile(header, new Uint8Array(24)));
    bothModes(
      path,
      (open) => assertWeightError(open, path, "ids", "run past the end of the data section"),
    );
    const header2 = JSON.stringify({
      w: F32x2,
      ids: { dtype: "I64", shape: [3], data_offsets: [8, 24] },
    });
    const path2 = await badFile(dir, rawFile(header2, new Uint8Array(24)));
    bothModes(
      path2,
      (open) => assertWeightError(open, path2, "ids", "needs 3 x 8 = 24 bytes", "hold 16 bytes"),
    );
  }));

Deno.test("malformed: data_offsets out of range, reversed or overlapping", () =>
  withTempDir(async (dir) => {
    const data = new Uint8Array(16);
    const cases: [Record<string, unknown>, string, string][] = [
      [
        { a: F32x2, b: { dtype: "F32", shape: [3], data_offsets: [8, 20] } },
        "b",
        "data_offsets [8, 20] run past the end of the data section (expected end <= 16",
      ],
      [
        { a: { dtype: "F32", shape: [0], data_offsets: [8, 0] } },
        "a",
        "data_offsets [8, 0]: begin is after end",
      ],
      [
        {
          a: { dtype: "F32", shape: [3], data_offsets: [0, 12] },
          b: { dtype: "F32", shape: [2], data_offsets: [8, 16] },
        },
        "b",
        "overlap those of tensor a [0, 12] (expected begin >= 12)",
      ],
      [
        // overlap discovered regardless of header order
        {
          b: { dtype: "F16", shape: [2], data_offsets: [2, 6] },
          a: { dtype: "F32", shape: [1], data_offsets: [0, 4] },
        },
        "b",
        "overlap those of tensor a [0, 4]",
      ],
    ];
    for (const [header, tensor, msg] of cases) {
      const path = await badFile(dir, rawFile(JSON.stringify(header), data));
      bothModes(path, (open) => assertWeightError(open, path, tensor, msg));
    }
    // zero-length tensors may share an offset with anything; gaps are allowed
    const ok = await badFile(
      dir,
      rawFile(
        JSON.stringify({
          a: { dtype: "F32", shape: [1], data_offsets: [0, 4] },
          z: { dtype: "F16", shape: [0], data_offsets: [2, 2] },
          b: { dtype: "F32", shape: [1], data_offsets: [8, 12] },
        }),
        data,
      ),
    );
    bothModes(ok, (open) => {
      const st = open();
      assertEquals(st.names(), ["a", "z", "b"]);
      st.close();
    });
  }));

Deno.test("malformed: shape x dtype size differs from the byte length", () =>
  withTempDir(async (dir) => {
    const header = JSON.stringify({ w: { dtype: "BF16", shape: [2, 3], data_offsets: [0, 8] } });
    const path = await badFile(dir, rawFile(header, new Uint8Array(16)));
    bothModes(path, (open) =>
      assertWeightError(
        open,
        path,
        "w",
        "shape [2,3] of dtype BF16 needs 6 x 2 = 12 bytes, but data_offsets [0, 8] hold 8 bytes",
      ));
  }));
