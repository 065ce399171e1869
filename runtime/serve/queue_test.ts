// The scheduler on the CPU: one holder at a time, FIFO order, a bounded queue, aborts leave it.
import assert from "node:assert/strict";
import { GpuQueue, QueueFullError } from "./queue.ts";
import { ArgumentError } from "../base/errors.ts";

/** Lets pending promise callbacks run. */
const tick = () => new Promise((r) => setTimeout(r, 0));

Deno.test("requests get the GPU one at a time, in arrival order", async () => {
  const q = new GpuQueue(3);
  const order: number[] = [];
  let holders = 0, most = 0;
  const job = async (i: number) => {
    const release = await q.acquire();
    holders++;
    most = Math.max(most, holders);
    order.push(i);
    await tick();
    holders--;
    release();
    release(); // a second release does nothing
  };
  await Promise.all([0, 1, 2, 3].map(job));
  assert.deepEqual(order, [0, 1, 2, 3]);
  assert.equal(most, 1);
  assert.equal(q.busy, false);
  assert.equal(q.waiting, 0);
  assert.equal(q.granted, 4);
});

Deno.test("a full queue rejects at once; a freed place is taken again", async () => {
  const q = new GpuQueue(2);
  const first = await q.acquire();
  const a = q.acquire(), b = q.acquire();
  assert.equal(q.waiting, 2);
  await assert.rejects(q.acquire(), (e) => e instanceof QueueFullError && e.waiting === 2);
  first();
  const releaseA = await a;
  assert.equal(q.waiting, 1);
  const c = q.acquire(); // the place a left
  await assert.rejects(q.acquire(), QueueFullError);
  releaseA();
  (await b)();
  (await c)();
  assert.equal(q.busy, false);
  // capacity 0: only the running request
  const none = new GpuQueue(0);
  const r = await none.acquire();
  await assert.rejects(none.acquire(), QueueFullError);
  r();
  (await none.acquire())();
  assert.throws(() => new GpuQueue(-1), ArgumentError);
  assert.throws(() => new GpuQueue(1.5), ArgumentError);
});

Deno.test("an aborted waiter leaves the queue; the others keep their order", async () => {
  const q = new GpuQueue(3);
  const first = await q.acquire();
  const ctrl = new AbortController();
  const got: string[] = [];
  const a = q.acquire(ctrl.signal).then((r) => (got.push("a"), r));
  const b = q.acquire().then((r) => (got.push("b"), r));
  const c = q.acquire().then((r) => (got.push("c"), r));
  ctrl.abort(new Error("client went away"));
  await assert.rejects(a, /client went away/);
  assert.equal(q.waiting, 2);
  first();
  (await b)();
  (await c)();
  assert.deepEqual(got, ["b", "c"]);
  // an already aborted signal never enters
  await assert.rejects(q.acquire(AbortSignal.abort(new Error("late"))), /late/);
  assert.equal(q.waiting, 0);
  // a signal that aborts after its grant does not take the GPU away
  const ctrl2 = new AbortController();
  const r = await q.acquire(ctrl2.signal);
  ctrl2.abort();
  assert.equal(q.busy, true);
  r();
  assert.equal(q.busy, false);
});

Deno.test("random arrivals, releases and aborts: never two holders, none lost or granted twice", async () => {
  let seed = 12345;
  const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const q = new GpuQueue(4);
  let holders = 0, granted = 0, rejected = 0, aborted = 0;
  const jobs: Promise<void>[] = [];
  for (let i = 0; i < 200; i++) {
    const ctrl = new AbortController();
    if (rand() < 0.2) setTimeout(() => ctrl.abort(new Error("abort")), Math.floor(rand() * 3));
    jobs.push((async () => {
      let release;
      try {
        release = await q.acquire(ctrl.signal);
      } catch (e) {
        if (e instanceof QueueFullError) rejected++;
        else aborted++;
        return;
      }
      granted++;
      holders++;
      assert.equal(holders, 1);
      await tick();
      holders--;
      release();
    })());
    if (rand() < 0.5) await tick();
  }
  await Promise.all(jobs);
  assert.equal(granted + rejected + aborted, 200);
  assert.equal(q.granted, granted);
  assert.ok(granted > 0 && rejected > 0, `granted ${granted}, rejected ${rejected}`);
  assert.equal(q.busy, false);
  assert.equal(q.waiting, 0);
});
