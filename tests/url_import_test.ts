// Pregate must work when imported from an http(s) URL, not only from disk: nothing may read its own
// files through the file system. This test serves the repository on loopback with Deno.serve and, in
// a separate Deno process (so the project's lockfile is not touched), imports mod.ts,
// kernels/mod.ts and runtime/weights/mod.ts (the package's `.`, `./kernels` and `./weights`
// exports) from http://127.0.0.1:PORT/, runs a kernel through them and round-trips a Q8_0 block.
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url);

Deno.test({
  name: "mod.ts, kernels/mod.ts and runtime/weights/mod.ts imported from an http URL work",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const ac = new AbortController();
    const requested: string[] = [];
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen: () => {} },
      async (req) => {
        const path = decodeURIComponent(new URL(req.url).pathname);
        requested.push(path);
        if (path.includes("..")) return new Response("bad path", { status: 400 });
        try {
          const body = await Deno.readFile(new URL("." + path, root));
          const type = path.endsWith(".ts") ? "application/typescript" : "text/plain";
          return new Response(body, { headers: { "content-type": type } });
        } catch {
          return new Response("not found", { status: 404 });
        }
      },
    );
    try {
      const { port } = server.addr as Deno.NetAddr;
      const script = `
        const mod = await import("http://127.0.0.1:${port}/mod.ts");
        const kernels = await import("http://127.0.0.1:${port}/kernels/mod.ts");
        const weights = await import("http://127.0.0.1:${port}/runtime/weights/mod.ts");
        const block = Float32Array.from({ length: 32 }, (_, i) => i - 16);
        const back = weights.dequantize(weights.quantize(block, "q8_0"), "q8_0");
        console.log(JSON.stringify([...back].map((v, i) => Math.abs(v - block[i]) < 0.07)));
        const gpu = await mod.openGpu({ gpu: "native" });
        const a = gpu.storage("activations", new Float32Array([1, 2, 3]));
        const b = gpu.storage("activations", new Float32Array([10, 20, 30]));
        const out = gpu.storage("activations", 12);
        gpu.submit([await kernels.add(gpu, { a, b, out, n: 3 })]);
        console.log(JSON.stringify([...await gpu.readF32(out)]));
        gpu.destroy();`;
      // No read permission at all: the kernels must come over HTTP.
      const cmd = new Deno.Command(Deno.execPath(), {
        args: ["eval", "--no-lock", "--allow-net=127.0.0.1", "--allow-env", script],
        cwd: await Deno.makeTempDir(),
        stdout: "piped",
        stderr: "piped",
      });
      const res = await cmd.output();
      const lines = new TextDecoder().decode(res.stdout).trim().split("\n");
      assert.equal(res.code, 0, new TextDecoder().decode(res.stderr));
      assert.deepEqual(JSON.parse(lines.at(-2) ?? ""), Array(32).fill(true));
      assert.deepEqual(JSON.parse(lines.at(-1) ?? ""), [11, 22, 33]);
      assert.ok(requested.includes("/kernels/elementwise.wgsl"), `requested: ${requested}`);
    } finally {
      ac.abort();
      await server.finished;
    }
  },
});
