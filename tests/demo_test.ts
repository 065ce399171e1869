// The demo as `deno task demo` runs it (the task's own permissions, from a fresh directory): the
// embedded model continues the prompt in English with experts streamed in pregated/strict mode,
// the summary's figures are there and sane, the trace picture is written; bad flags exit 2.
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url).pathname;
const denoJson = JSON.parse(await Deno.readTextFile(`${root}deno.json`));

/** `deno task demo ARGS` in `cwd`, with the task's permission flags. */
async function demo(cwd: string, ...args: string[]) {
  const task = String(denoJson.tasks.demo).split(/\s+/);
  assert.equal(task[0], "deno");
  assert.equal(task.at(-1), "examples/demo.ts");
  const flags = task.slice(2, -1);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...flags, "--config", `${root}deno.json`, `${root}examples/demo.ts`, ...args],
    cwd,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** The value of a summary row (`  name   value`), or a failed assertion naming it. */
function row(stdout: string, name: string): string {
  const m = stdout.match(new RegExp(`^  ${name} +(.+)$`, "m"));
  assert.ok(m, `summary row '${name}' missing:\n${stdout}`);
  return m[1];
}

Deno.test({
  name: "deno task demo: English text streamed, then a sane summary and the trace SVG",
  sanitizeResources: false,
  fn: async () => {
    const cwd = await Deno.makeTempDir({ prefix: "pregate_demo_" });
    try {
      const prompt = "The history of the United States";
      const r = await demo(cwd, "--max-tokens", "8");
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /loading .*models\/demo \(pregated, strict\): .* on the GPU/);
      assert.match(r.stderr, /warming up \(compiling GPU kernels\)/);
      assert.match(r.stderr, /measuring resident memory/);
      assert.doesNotMatch(r.stderr, /warning/, "the trained pre-gates are used, not warned about");
      // the text: the prompt, then its continuation in words
      assert.ok(r.stdout.startsWith(prompt), r.stdout);
      const text = r.stdout.slice(prompt.length, r.stdout.indexOf("\nsummary\n")).trim();
      assert.ok(text.length >= 8, `too little text: '${text}'`);
      const wordy = [...text].filter((c) => /[A-Za-z ]/.test(c)).length;
      assert.ok(wordy / text.length >= 0.75, `not mostly letters and spaces: '${text}'`);
      // the summary
      assert.match(
        row(r.stdout, "mode"),
        /^pregated, pre-gate strict \(trained pre-gates\), 4 expert slots$/,
      );
      assert.match(row(r.stdout, "device"), /^native: /);
      assert.match(row(r.stdout, "decode"), /^8 tokens generated, [0-9.]+ tokens\/s/);
      const decodeRate = Number(row(r.stdout, "decode").match(/, ([0-9.]+) tokens\/s/)![1]);
      assert.ok(decodeRate > 0, row(r.stdout, "decode"));
      assert.ok(Number(row(r.stdout, "prefill").match(/at ([0-9.]+) tokens\/s/)![1]) > 0);
      const upload = Number(row(r.stdout, "upload/token").match(/^(\d+) bytes/)![1]);
      assert.ok(upload > 0, "pregated mode copies experts every token");
      const copies = Number(row(r.stdout, "upload/token").match(/: ([0-9.]+) expert copies/)![1]);
      const waited = Number(row(r.stdout, "waited for").split(" ")[0]);
      assert.ok(waited >= 0 && waited < copies, `waited for ${waited} of ${copies} copies`);
      const [, peak, resident] = row(r.stdout, "peak GPU").match(
        /^(\d+) bytes .* resident (\d+) bytes/,
      )!
        .map(Number);
      assert.ok(peak > 0 && peak < resident, `peak ${peak} vs resident ${resident}`);
      for (const name of ["pre-gate hit", "cache hit"]) {
        const rate = Number(row(r.stdout, name).split(" ")[0]);
        assert.ok(rate >= 0 && rate <= 1, `${name}: ${row(r.stdout, name)}`);
      }
      // the trace picture, at the default path in the working directory
      const svgPath = row(r.stdout, "trace");
      assert.equal(svgPath, await Deno.realPath(`${cwd}/demo_trace.svg`));
      const svg = await Deno.readTextFile(svgPath);
      assert.ok(svg.startsWith("<svg"), svg.slice(0, 80));
      assert.ok(svg.trimEnd().endsWith("</svg>"));
    } finally {
      await Deno.remove(cwd, { recursive: true });
    }
  },
});

Deno.test("deno task demo: bad flags print usage and exit 2 before loading anything", async () => {
  const cwd = await Deno.makeTempDir({ prefix: "pregate_demo_" });
  try {
    const cases: [string[], string][] = [
      [["--mode", "fast"], "--mode"],
      [["--pregate", "maybe"], "--pregate"],
      [["--max-tokens", "0"], "--max-tokens"],
      [["--temperature=-1"], "--temperature"],
      [["--top-p", "1.5"], "--top-p"],
      [["--trace", `${cwd}/no/such/dir/t.svg`], "--trace"],
      [["--nope"], "--nope"],
    ];
    for (const [args, flag] of cases) {
      const r = await demo(cwd, ...args);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.ok(r.stderr.includes(flag), `${args.join(" ")} should name ${flag}: ${r.stderr}`);
      assert.match(r.stderr, /usage: deno task demo/);
      assert.doesNotMatch(r.stderr, /loading/);
    }
    assert.deepEqual(await Array.fromAsync(Deno.readDir(cwd)), [], "nothing was written");
  } finally {
    await Deno.remove(cwd, { recursive: true });
  }
});
