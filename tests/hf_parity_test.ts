// Parity with the Hugging Face transformers implementation: for each fixture (one per
// architecture, plus olmoe_clip: OLMoE with clip_qkv set low enough to clamp), a tiny random
// checkpoint written by HF's own save_pretrained (tools/hf_fixtures.py, run on the GPU host with
// transformers 5.17) is loaded by Pregate, and its teacher-forced logits and greedy tokens are
// compared with HF's (tests/fixtures/hf/<fixture>/reference.json). A fixture not generated yet is
// ignored (the summary says so). Switch Transformers (switch_tiny) follows the decoders, every mode.
import assert from "node:assert/strict";
import { loadModel } from "../runtime/model.ts";
import { testGpu } from "./test_util.ts";

const FIXTURES = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "olmoe_clip"];
const fixtures = new URL("./fixtures/hf/", import.meta.url);

interface Reference {
  ids: number[];
  logits: number[][];
  greedy: number[];
  transformers_version: string;
}

async function readReference(path: string): Promise<Reference | null> {
  try {
    return JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

for (const arch of FIXTURES) {
  const dir = new URL(`${arch}/`, fixtures).pathname;
  const found = await readReference(`${dir}reference.json`);
  // Absent: `python3 tools/hf_fixtures.py --out tests/fixtures/hf --only <fixture>` on the GPU host.
  const ignore = found === null;
  const ref: Reference = found ?? { ids: [], logits: [], greedy: [], transformers_version: "" };
  const hf = found
    ? `HF transformers ${ref.transformers_version}`
    : `HF (no fixture yet: tools/hf_fixtures.py --only ${arch})`;

  Deno.test({
    name: `${arch}: logits match ${hf} (max abs diff < 2e-3)`,
    ignore,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const model = await loadModel(dir, { device: await testGpu() });
      try {
        const logits = await model.logits(ref.ids);
        assert.equal(logits.length, ref.ids.length);
        let worst = 0;
        for (let t = 0; t < ref.ids.length; t++) {
          assert.equal(logits[t].length, ref.logits[t].length);
          for (let v = 0; v < logits[t].length; v++) {
            worst = Math.max(worst, Math.abs(logits[t][v] - ref.logits[t][v]));
          }
        }
        assert.ok(worst < 2e-3, `max abs logit difference ${worst}`);
      } finally {
        await model.dispose();
      }
    },
  });

  Deno.test({
    name: `${arch}: greedy generation reproduces the tokens of ${hf}`,
    ignore,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const model = await loadModel(dir, { device: await testGpu() });
      try {
        const out: number[] = [];
        for await (const id of model.generate(ref.ids, { maxTokens: ref.greedy.length })) {
          out.push(id);
        }
        assert.deepEqual(out, ref.greedy);
        const st = model.lastStats!;
        assert.equal(st.generated_tokens, ref.greedy.length);
        assert.ok(st.syncs_per_token < 1, `syncs per token ${st.syncs_per_token}`);
      } finally {
        await model.dispose();
      }
    },
  });
}

// Switch Transformers (an encoder-decoder): HF's teacher-forced decoder logits for its encoder ids
// and its greedy tokens from decoder_start_token_id, in every expert mode, with the relative
// position bias read as the fixture's transformers version applies it.
const SWITCH = new URL("switch_tiny/", fixtures).pathname;
const switchRef = await readReference(`${SWITCH}reference.json`) as unknown as
  | (Reference & {
    encoder_ids: number[];
    decoder_input_ids: number[];
    hf_semantics: { position_bias: "shared" | "first_layer_only" };
  })
  | null;
const SWITCH_RUNS = [
  { mode: "resident" },
  { mode: "on-demand" },
  { mode: "prefetch-all" },
  { mode: "pregated" },
  { mode: "pregated", uploader: "pinned" },
] as const;
for (const { mode, ...rest } of SWITCH_RUNS) {
  const uploader = "uploader" in rest ? rest.uploader : undefined;
  Deno.test({
    name: `switch_tiny (${mode}${
      uploader ? `, ${uploader} uploader` : ""
    }): logits (< 2e-3) and greedy tokens match ${
      switchRef
        ? `HF transformers ${switchRef.transformers_version}`
        : "HF (no fixture yet: tools/hf_fixtures.py --only switch_tiny)"
    }`,
    ignore: switchRef === null,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const ref = switchRef!;
      const model = await loadModel(SWITCH, {
        device: await testGpu(),
        mode,
        uploader,
        positionBias: ref.hf_semantics.position_bias,
      });
      try {
        const encoderIds = ref.encoder_ids;
        const logits = await model.logits(ref.decoder_input_ids, { encoderIds });
        let worst = 0;
        logits.forEach((row, t) =>
          row.forEach((v, i) => worst = Math.max(worst, Math.abs(v - ref.logits[t][i])))
        );
        assert.ok(worst < 2e-3, `max abs logit difference ${worst}`);
        const out: number[] = [];
        const start = model.encoderDecoder!.decoderStartTokenId!;
        for await (
          const id of model.generate([start], { encoderIds, maxTokens: ref.greedy.length })
        ) {
          out.push(id);
        }
        assert.deepEqual(out, ref.greedy);
      } finally {
        await model.dispose();
      }
    },
  });
}
