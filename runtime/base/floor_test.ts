// The ground floor imports nothing above it: every module reachable from a file in runtime/base/
// is in runtime/base/ itself, a `node:` or `npm:` module, or (for tests only) the runtime's test
// helper, whose own imports are held to the same rule. Deno's own module graph (`deno info`) is the
// truth; the JSDoc examples, which `deno test --doc` runs, are checked by their import specifiers.
import assert from "node:assert/strict";
import { relative } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";

const FLOOR = fromFileUrl(new URL("./", import.meta.url));
const REPO = fromFileUrl(new URL("../../", import.meta.url));
const TEST_HELPER = fromFileUrl(new URL("../test_util.ts", import.meta.url));

async function floorFiles(dir = FLOOR): Promise<string[]> {
  const files: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const path = `${dir}${entry.name}`;
    if (entry.isDirectory) files.push(...await floorFiles(`${path}/`));
    else if (entry.name.endsWith(".ts")) files.push(path);
  }
  return files.sort();
}

interface GraphModule {
  specifier: string;
  dependencies?: { specifier: string }[];
}

/** Every module in the graph rooted at `file`, as Deno resolves it. */
async function moduleGraph(file: string): Promise<GraphModule[]> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", file],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, `deno info ${file}: ${new TextDecoder().decode(out.stderr)}`);
  return JSON.parse(new TextDecoder().decode(out.stdout)).modules;
}

function isFloor(path: string): boolean {
  return path.startsWith(FLOOR);
}

/** Why `specifier` may not be reached from `root`, or undefined when it may. */
function violation(root: string, specifier: string): string | undefined {
  if (/^(node|npm):/.test(specifier)) return undefined;
  if (!specifier.startsWith("file:")) return `${specifier} is neither a file nor node:/npm:`;
  const path = fromFileUrl(specifier);
  if (isFloor(path)) return undefined;
  if (root.endsWith("_test.ts") && path === TEST_HELPER) return undefined;
  return relative(REPO, path);
}

Deno.test("the ground floor's module graph stays inside runtime/base/", async () => {
  const files = await floorFiles();
  assert.ok(files.length >= 10, `found only ${files.length} files in ${FLOOR}`);
  const leaks: string[] = [];
  for (const file of files) {
    const modules = await moduleGraph(file);
    assert.ok(modules.some((m) => m.specifier.endsWith(relative(REPO, file))), file);
    for (const m of modules) {
      const why = violation(file, m.specifier);
      if (why) leaks.push(`${relative(REPO, file)} reaches ${why}`);
    }
  }
  assert.deepEqual(leaks, []);
});

Deno.test("the ground floor's JSDoc examples import only the floor", async () => {
  const leaks: string[] = [];
  for (const file of await floorFiles()) {
    const text = await Deno.readTextFile(file);
    const comments = text.match(/\/\*\*[\s\S]*?\*\//g) ?? [];
    for (const comment of comments) {
      for (const [, spec] of comment.matchAll(/\bfrom\s+"([^"]+)"/g)) {
        if (/^(node|npm):/.test(spec)) continue;
        const target = fromFileUrl(new URL(spec, `file://${file}`));
        if (!spec.startsWith(".") || !isFloor(target)) {
          leaks.push(`${relative(REPO, file)} example imports ${spec}`);
        }
      }
    }
  }
  assert.deepEqual(leaks, []);
});

Deno.test("the floor check sees a leak: a test helper import is refused outside tests", () => {
  const helper = new URL("../test_util.ts", import.meta.url).href;
  assert.equal(violation(`${FLOOR}gpu/device_test.ts`, helper), undefined);
  assert.equal(violation(`${FLOOR}gpu/device.ts`, helper), "runtime/test_util.ts");
  const model = new URL("../model.ts", import.meta.url).href;
  assert.equal(violation(`${FLOOR}errors.ts`, model), "runtime/model.ts");
});
