// Pregate must work when imported from an http(s) URL, not only from disk: nothing may read its own
// files through the file system. This test serves the repository on loopback with Deno.serve and, in
// a separate Deno process (so the project's lockfile is not touched), imports mod.ts and
// kernels/mod.ts (the package's `.` and `./kernels` exports) from http://127.0.0.1:PORT/ and runs a
// kernel through them.
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url);

Deno.test({
  name: "mod.ts and kernels/mod.ts imported from an http URL run a kernel",
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
      const stdout = new TextDecoder().decode(res.stdout).trim().split("\n").at(-1);
      assert.equal(res.code, 0, new TextDecoder().decode(res.stderr));
      assert.deepEqual(JSON.parse(stdout ?? ""), [11, 22, 33]);
      assert.ok(requested.includes("/kernels/elementwise.wgsl"), `requested: ${requested}`);
    } finally {
      ac.abort();
      await server.finished;
    }
  },
});
