// The command line as scripts use it: exit codes, JSON shapes, errors that name the argument.
import assert from "node:assert/strict";
import { makeModel } from "../runtime/models/make_model.ts";
import { pokeTensor } from "../runtime/weights/safetensors_test_util.ts";
import { loadTokenizer } from "../runtime/text/tokenizer.ts";
import { byteLevelTokenizer, makeTextModel } from "../runtime/text/text_test_util.ts";

const cli = new URL("../cli.ts", import.meta.url).pathname;
const fixture = (arch: string) => new URL(`./fixtures/hf/${arch}/`, import.meta.url).pathname;

async function pregate(...args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-lock", cli, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("bad arguments print usage and exit 2", async () => {
  const gen = ["generate", "--model", fixture("mixtral")];
  const tmp = await Deno.makeTempDir();
  const trace = ["trace", "--model", fixture("mixtral"), "--ids", "1"];
  for (
    const [args, flag, text] of [
      [[...gen, "--ids", "1,x"], "--ids"],
      [[...gen, "--ids", "1", "--mode", "fast"], "--mode"],
      [["logits", "--ids", "1,2"], "--model"],
      [[...gen, "--ids", "1", "--budget", "lots"], "--budget"],
      [["make-model", "--arch", "gpt2", "--out", "/tmp/x"], "arch"],
      [["inspect", "--model", fixture("mixtral"), "--nope"], "--nope"],
      // Empty items were token 0; hex and exponents are not decimal ids.
      [[...gen, "--ids", "5,,77"], "--ids", /item 2 of 3 in '5,,77' is empty/],
      [[...gen, "--ids", "5,77,"], "--ids", /item 3 of 3 in '5,77,' is empty/],
      [[...gen, "--ids", ","], "--ids", /item 1 of 2 in ',' is empty/],
      [[...gen, "--ids", "0x10"], "--ids", /'0x10' is not a token id/],
      [[...gen, "--ids", "1e2"], "--ids", /'1e2' is not a token id/],
      [[...gen, "--ids", "1", "--max-tokens", "-1"], "--max-tokens", /got '-1'/],
      [[...gen, "--ids", "1", "--uploader", "dma"], "--uploader", /mapped or pinned, got 'dma'/],
      [[...gen, "--ids", "1", "--uploader", "pinned"], "--uploader", /offloading modes/],
      // Output paths are checked before the generation runs.
      [[...trace, "--out", `${tmp}/no/t.svg`], "--out", /no does not exist/],
      [[...trace, "--out", tmp], "--out", /is a directory/],
      [[...trace, "--out", `${tmp}/t.svg`, "--json", tmp], "--json", /is a directory/],
    ] as const
  ) {
    const r = await pregate(...args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.ok(r.stderr.includes(flag), `${args.join(" ")} should name ${flag}: ${r.stderr}`);
    if (text) assert.match(r.stderr, text, args.join(" "));
    assert.match(r.stderr, /usage: pregate/);
  }
  assert.deepEqual(await Array.fromAsync(Deno.readDir(tmp)), [], "nothing was written");
  await Deno.remove(tmp);
  const none = await pregate();
  assert.equal(none.code, 2);
  assert.match(none.stdout, /commands:/);
});

Deno.test({
  name: "logits and generate print the documented JSON; modes agree",
  sanitizeResources: false,
  fn: async () => {
    const logits = await pregate("logits", "--model", fixture("qwen3_moe"), "--ids", "5,77,201");
    assert.equal(logits.code, 0, logits.stderr);
    const l = JSON.parse(logits.stdout);
    assert.equal(l.logits.length, 3);
    assert.equal(l.logits[0].length, 256);
    const ids: number[][] = [];
    for (const mode of ["resident", "pregated"]) {
      const g = await pregate(
        "generate",
        "--model",
        fixture("qwen3_moe"),
        "--ids",
        "5,77,201",
        "--max-tokens",
        "5",
        "--mode",
        mode,
        "--json",
      );
      assert.equal(g.code, 0, g.stderr);
      const j = JSON.parse(g.stdout);
      assert.equal(j.ids.length, 5);
      for (
        const key of [
          "mode",
          "gpu",
          "prefill_tokens_per_s",
          "decode_tokens_per_s",
          "upload_bytes_per_token",
          "syncs_per_token",
          "peak_gpu_bytes",
          "pregate_hit_rate",
          "expert_cache_hit_rate",
          "time_per_token",
        ]
      ) assert.ok(key in j.stats, `stats.${key}`);
      assert.equal(j.stats.mode, mode);
      ids.push(j.ids);
    }
    assert.deepEqual(ids[0], ids[1]);
  },
});

Deno.test({
  name: "make-model, inspect and trace work end to end",
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    for (const arch of ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"]) {
      const out = `${dir}/${arch}`;
      const made = await pregate(
        "make-model",
        "--arch",
        arch,
        "--out",
        out,
        "--dtype",
        "bf16",
        "--json",
      );
      assert.equal(made.code, 0, made.stderr);
      assert.equal(JSON.parse(made.stdout).arch, arch);
      const info = await pregate("inspect", "--model", out, "--json");
      assert.equal(info.code, 0, info.stderr);
      assert.equal(JSON.parse(info.stdout).arch, arch);
    }
    const svg = `${dir}/trace.svg`;
    const t = await pregate(
      "trace",
      "--model",
      `${dir}/olmoe`,
      "--ids",
      "1,2,3",
      "--max-tokens",
      "6",
      "--out",
      svg,
    );
    assert.equal(t.code, 0, t.stderr);
    assert.match(t.stdout, /pre-gate hit/);
    assert.match(await Deno.readTextFile(svg), /^<svg[\s\S]*<\/svg>\s*$/);
    const missing = await pregate("inspect", "--model", `${dir}/nothing-here`);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /nothing-here/);
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "cli.ts logits matches HF's logits on every architecture fixture (max abs diff < 2e-3)",
  sanitizeResources: false,
  fn: async () => {
    for (const arch of ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"]) {
      const ref = JSON.parse(await Deno.readTextFile(`${fixture(arch)}reference.json`));
      const r = await pregate("logits", "--model", fixture(arch), "--ids", ref.ids.join(","));
      assert.equal(r.code, 0, r.stderr);
      const rows: number[][] = JSON.parse(r.stdout).logits;
      let worst = 0;
      rows.forEach((row, t) =>
        row.forEach((v, i) => worst = Math.max(worst, Math.abs(v - ref.logits[t][i])))
      );
      assert.ok(worst < 2e-3, `${arch}: max abs diff ${worst}`);
    }
  },
});

Deno.test({
  name: "a NaN weight: generate and logits exit 1 naming the position (no JSON null), " +
    "inspect --check names the tensor; generate | head exits 0 quietly",
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const clean = `${dir}/clean`, bad = `${dir}/bad`;
    await makeModel({ arch: "mixtral", out: clean });
    await makeModel({ arch: "mixtral", out: bad });
    await pokeTensor(bad, "lm_head.weight", [5 * 64], NaN);
    const gen = await pregate("generate", "--model", bad, "--ids", "5,77,201", "--max-tokens", "4");
    assert.equal(gen.code, 1, gen.stderr);
    assert.match(gen.stderr, /NumericError: the logits at position 2 are not finite/);
    assert.equal(gen.stdout.trim(), "", "no token was printed");
    const logits = await pregate("logits", "--model", bad, "--ids", "5,77");
    assert.equal(logits.code, 1, logits.stderr);
    assert.match(logits.stderr, /NumericError: the logits at position 0 hold NaN \(token 5\)/);
    assert.equal(logits.stdout, "", "no JSON with null was printed");
    const check = await pregate("inspect", "--model", bad, "--check");
    assert.equal(check.code, 1, check.stderr);
    assert.match(check.stdout, /warning {2}1 tensor\(s\) hold NaN or Inf values: lm_head\.weight/);
    assert.match(
      check.stderr,
      /NumericError: .*lm_head\.weight \(1 NaN, 0 Inf; first at element 320\)/,
    );
    const ok = await pregate("inspect", "--model", clean, "--check", "--json");
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(JSON.parse(ok.stdout).nonFinite, []);
    // The reader closes its end after the first bytes; generation goes on writing tokens.
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--no-lock",
        cli,
        "generate",
        "--model",
        clean,
        "--ids",
        "1",
        "--max-tokens",
        "200",
      ],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const reader = child.stdout.getReader();
    assert.ok(((await reader.read()).value?.byteLength ?? 0) > 0);
    await reader.cancel();
    const [status, stderr] = await Promise.all([child.status, new Response(child.stderr).text()]);
    assert.equal(stderr, "", "no stack trace");
    assert.equal(status.code, 0);
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "make-model: SIGINT removes model.safetensors.partial and exits 130; an uncreatable " +
    "directory exits 1 naming it",
  ignore: Deno.build.os !== "linux",
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const out = `${dir}/m`, partial = `${out}/model.safetensors.partial`;
    // ~200 MB of bf16 experts: long enough to be interrupted while writing.
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--no-lock",
        cli,
        "make-model",
        "--arch",
        "mixtral",
        "--out",
        out,
        "--dtype",
        "bf16",
        "--hidden",
        "1024",
        "--inter",
        "2048",
      ],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const exists = (p: string) => Deno.stat(p).then(() => true, () => false);
    for (let i = 0; i < 1000 && !(await exists(partial)); i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.ok(await exists(partial), "the partial file appeared");
    child.kill("SIGINT");
    const [status, stderr] = await Promise.all([child.status, new Response(child.stderr).text()]);
    assert.equal(status.code, 130, stderr);
    assert.deepEqual(await Array.fromAsync(Deno.readDir(out)), [], "nothing is left behind");
    const sys = await pregate(
      "make-model",
      "--arch",
      "mixtral",
      "--out",
      "/sys/pregate-cli-test/m",
    );
    assert.equal(sys.code, 1, sys.stderr);
    assert.match(sys.stderr, /FileWriteError: \/sys\/pregate-cli-test\/m: cannot write/);
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "text: generate --prompt streams text, tokenize prints ids, eval prints perplexity",
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "pregate_cli_text_" });
    try {
      await makeTextModel(dir, byteLevelTokenizer());
      const tok = await loadTokenizer(dir);
      const t = await pregate("tokenize", "--model", dir, "--text", "Hello world é", "--json");
      assert.equal(t.code, 0, t.stderr);
      assert.deepEqual(JSON.parse(t.stdout), { ids: tok.encode("Hello world é") });
      const plain = await pregate("tokenize", "--model", dir, "--text", "Hello world");
      assert.equal(plain.stdout.trim(), tok.encode("Hello world").join(","));

      const g = await pregate(
        "generate",
        "--model",
        dir,
        "--prompt",
        "Hello the",
        "--max-tokens",
        "6",
      );
      assert.equal(g.code, 0, g.stderr);
      const j = await pregate(
        "generate",
        "--model",
        dir,
        "--prompt",
        "Hello the",
        "--max-tokens",
        "6",
        "--json",
      );
      assert.equal(j.code, 0, j.stderr);
      const out = JSON.parse(j.stdout);
      assert.equal(g.stdout, out.text + "\n", "streamed text = the JSON's text");
      const prompt = tok.encode("Hello the");
      const ids = out.stop_reason === "eos" ? out.ids.slice(0, -1) : out.ids;
      assert.equal(
        tok.decode([...prompt, ...ids], { skipSpecialTokens: true }),
        "Hello the" + out.text,
      );
      assert.equal(out.stats.generated_tokens, out.ids.length);

      const chat = await pregate(
        "generate",
        "--model",
        dir,
        "--prompt",
        "Hi",
        "--chat",
        "--max-tokens",
        "2",
      );
      assert.equal(chat.code, 0, chat.stderr);

      const file = `${dir}/heldout.txt`;
      await Deno.writeTextFile(file, "Hello the world. The world is on the sun, in the world.\n");
      const e = await pregate("eval", "--model", dir, "--text", file, "--context", "8", "--json");
      assert.equal(e.code, 0, e.stderr);
      const r = JSON.parse(e.stdout);
      for (const key of ["tokens", "nll", "perplexity", "mode", "pregate", "pregate_hit_rate"]) {
        assert.ok(key in r, key);
      }
      assert.ok(r.tokens > 0 && Math.abs(Math.exp(r.nll) - r.perplexity) < 1e-9 * r.perplexity);

      const missing = await pregate("eval", "--model", dir, "--text", `${dir}/nope.txt`);
      assert.equal(missing.code, 2);
      assert.match(missing.stderr, /--text: cannot read/);
      await Deno.remove(`${dir}/tokenizer_config.json`);
      const noTemplate = await pregate("generate", "--model", dir, "--prompt", "Hi", "--chat");
      assert.equal(noTemplate.code, 1);
      assert.match(
        noTemplate.stderr,
        /TokenizerError: .*tokenizer_config\.json: has no chat_template/,
      );
      await Deno.remove(`${dir}/tokenizer.json`);
      const none = await pregate("generate", "--model", dir, "--prompt", "Hi");
      assert.equal(none.code, 1);
      assert.match(none.stderr, /TokenizerError: .*tokenizer\.json: not found/);
      const byIds = await pregate(
        "generate",
        "--model",
        dir,
        "--ids",
        "5,77",
        "--max-tokens",
        "2",
        "--json",
      );
      assert.equal(byIds.code, 0, "--ids needs no tokenizer");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
