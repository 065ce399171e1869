// Pregate must work when imported from an http(s) URL, not only from disk: nothing may read its own
// files through the file system. This test serves the repository on loopback and imports mod.ts from
// http://127.0.0.1:PORT/, then runs a kernel through the imported module.
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url);

Deno.test({
  name: "mod.ts imported from an http URL runs a kernel",
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
          const type = path.endsWith(".ts")
            ? "application/typescript"
            : path.endsWith(".wgsl")
            ? "text/plain"
            : "application/octet-stream";
          return new Response(body, { headers: { "content-type": type } });
        } catch {
          return new Response("not found", { status: 404 });
        }
      },
    );
    try {
      const { port } = server.addr as Deno.NetAddr;
      const mod = await import(`http://127.0.0.1:${port}/mod.ts`);
      const gpu = await mod.openGpu({ gpu: "native" });
      const a = gpu.storage("activations", new Float32Array([1, 2, 3]));
      const b = gpu.storage("activations", new Float32Array([10, 20, 30]));
      const out = gpu.storage("activations", 12);
      gpu.submit([await mod.add(gpu, { a, b, out, n: 3 })]);
      assert.deepEqual([...await gpu.readF32(out)], [11, 22, 33]);
      // The kernel source itself came over HTTP, not from the file system.
      assert.ok(requested.includes("/kernels/elementwise.wgsl"), `requested: ${requested}`);
      gpu.destroy();
    } finally {
      ac.abort();
      await server.finished;
    }
  },
});
