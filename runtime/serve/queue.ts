/**
 * The server's scheduler: one generation at a time on the GPU (batch 1) and a bounded FIFO queue
 * of requests waiting for it. Pure (no HTTP, no GPU): a request {@linkcode GpuQueue.acquire}s the
 * GPU, runs, and calls the release function it got; the next waiting request then gets it.
 *
 * @example
 * ```ts
 * import { GpuQueue } from "./queue.ts";
 * const queue = new GpuQueue(4);
 * const release = await queue.acquire();
 * try {
 *   // ... generate ...
 * } finally {
 *   release();
 * }
 * ```
 * @module
 */
import { ArgumentError, PregateError } from "../base/errors.ts";

/** The queue is full: the request was not accepted (HTTP 429). */
export class QueueFullError extends PregateError {
  /** How many requests were waiting (the queue's capacity). */
  readonly waiting: number;
  /** Creates the error. */
  constructor(waiting: number) {
    super(
      "E_QUEUE_FULL",
      `the server is busy: ${waiting} request(s) are already waiting for the GPU`,
      "retry later, or start the server with a larger --queue",
    );
    this.waiting = waiting;
  }
}

/** Gives the GPU back (idempotent: a second call does nothing). */
export type Release = () => void;

interface Waiter {
  grant: (release: Release) => void;
  reject: (reason: unknown) => void;
  signal?: AbortSignal;
  onAbort?: () => void;
}

/**
 * One GPU, many requests: {@linkcode GpuQueue.acquire} resolves, in arrival order, once the GPU is
 * free; at most `capacity` requests wait (the one running not counted); more are rejected at once
 * with {@linkcode QueueFullError}. A waiting request whose signal aborts leaves the queue.
 *
 * @example
 * ```ts
 * import { GpuQueue, QueueFullError } from "./queue.ts";
 * const q = new GpuQueue(0); // no waiting: only the running request
 * const release = await q.acquire();
 * await q.acquire().catch((e) => console.log(e instanceof QueueFullError)); // true
 * release();
 * ```
 */
export class GpuQueue {
  /** Most requests that may wait while one runs. */
  readonly capacity: number;
  #busy = false;
  #waiting: Waiter[] = [];
  #granted = 0;

  /** A queue holding at most `capacity` waiting requests (an integer >= 0). */
  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 0) {
      throw new ArgumentError("queue", `expected an integer >= 0, got ${capacity}`);
    }
    this.capacity = capacity;
  }

  /** Requests waiting for the GPU (the running one not counted). */
  get waiting(): number {
    return this.#waiting.length;
  }

  /** Whether a request holds the GPU. */
  get busy(): boolean {
    return this.#busy;
  }

  /** How many times the GPU has been granted since the queue was made. */
  get granted(): number {
    return this.#granted;
  }

  /**
   * Waits for the GPU; resolves with the function that gives it back. Rejects with
   * {@linkcode QueueFullError} when `capacity` requests already wait, and with `signal.reason`
   * when `signal` aborts first (the request then leaves the queue).
   */
  acquire(signal?: AbortSignal): Promise<Release> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (!this.#busy) {
      this.#busy = true;
      return Promise.resolve(this.#release());
    }
    if (this.#waiting.length >= this.capacity) {
      return Promise.reject(new QueueFullError(this.#waiting.length));
    }
    return new Promise<Release>((grant, reject) => {
      const waiter: Waiter = { grant, reject, signal };
      if (signal) {
        waiter.onAbort = () => {
          const i = this.#waiting.indexOf(waiter);
          if (i >= 0) this.#waiting.splice(i, 1);
          reject(signal.reason);
        };
        signal.addEventListener("abort", waiter.onAbort, { once: true });
      }
      this.#waiting.push(waiter);
    });
  }

  /** A release function for a new holder of the GPU. */
  #release(): Release {
    this.#granted++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#next();
    };
  }

  /** Hands the GPU to the first waiter, or marks it free. */
  #next(): void {
    const waiter = this.#waiting.shift();
    if (!waiter) {
      this.#busy = false;
      return;
    }
    if (waiter.onAbort) waiter.signal!.removeEventListener("abort", waiter.onAbort);
    waiter.grant(this.#release());
  }
}
