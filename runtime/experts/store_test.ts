import assert from "node:assert/strict";
import { ArgumentError } from "../base/errors.ts";
import { loadConfig } from "../models/config.ts";
import { openCheckpoint } from "../weights/safetensors.ts";
import { HostExpertStore } from "./store.ts";

Deno.test("HostExpertStore: finds every expert of the MoE layers; other ids are typed errors", async () => {
  // Qwen2-MoE fixture: 4 layers, every second one MoE (layers 1 and 3), 8 experts of 80 x 64, f32.
  const dir = new URL("../../tests/fixtures/hf/qwen2_moe/", import.meta.url).pathname;
  const store = openCheckpoint(dir);
  try {
    const host = new HostExpertStore(await loadConfig(dir), store);
    assert.equal(host.experts, 8);
    assert.equal(host.bytesPerExpert, 3 * 80 * 64 * 4);
    assert.deepEqual(host.tensors(3, 7).down.shape, [64, 80]);
    for (const [layer, expert] of [[0, 0], [1, 8], [3, -1]]) {
      assert.throws(
        () => host.tensors(layer, expert),
        (e) => e instanceof ArgumentError && e.argument === "expert" && /1, 3/.test(e.message),
      );
    }
  } finally {
    store.close();
  }
});
