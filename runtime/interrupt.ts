/**
 * Cleaning up after an interrupted command: {@linkcode withSignalCleanup} runs a synchronous
 * cleanup (e.g. removing half-written files) when SIGINT or SIGTERM arrives during a task, then
 * exits with the shell's code for that signal (130, 143).
 *
 * @example
 * ```ts ignore
 * import { withSignalCleanup } from "./interrupt.ts";
 * await withSignalCleanup(() => Deno.removeSync("out.partial"), async () => {
 *   await Deno.writeTextFile("out.partial", "...");
 *   await Deno.rename("out.partial", "out");
 * });
 * ```
 * @module
 */

const SIGNALS: [Deno.Signal, number][] = [["SIGINT", 2], ["SIGTERM", 15]];

/**
 * Runs `task`; if SIGINT or SIGTERM arrives before it settles, runs `cleanup` (errors ignored) and
 * exits the process with `128 + signal number`. The listeners are removed when `task` settles.
 * Signals that cannot be listened to on this platform are skipped.
 *
 * @example
 * ```ts
 * import { withSignalCleanup } from "./interrupt.ts";
 * const n = await withSignalCleanup(() => {}, () => Promise.resolve(42));
 * console.log(n); // 42
 * ```
 */
export async function withSignalCleanup<T>(
  cleanup: () => void,
  task: () => Promise<T>,
): Promise<T> {
  const added: [Deno.Signal, () => void][] = [];
  for (const [signal, number] of SIGNALS) {
    const handler = () => {
      try {
        cleanup();
      } catch { /* exiting anyway: the signal's exit code says what happened */ }
      Deno.exit(128 + number);
    };
    try {
      Deno.addSignalListener(signal, handler);
      added.push([signal, handler]);
    } catch { /* not supported here (e.g. SIGTERM on Windows) */ }
  }
  try {
    return await task();
  } finally {
    for (const [signal, handler] of added) Deno.removeSignalListener(signal, handler);
  }
}
