/**
 * Reads an environment variable without prompting and without `--allow-env`: `undefined` when it
 * is unset or not readable. For Pregate's optional knobs (`PREGATE_DAWN_FLAGS`, `PREGATE_KERNELS`),
 * which a library must not require permissions for.
 * @module
 */

/** The value of `name`, or `undefined` when unset or when reading it is not permitted. */
export function readEnv(name: string): string | undefined {
  try {
    if (Deno.permissions.querySync({ name: "env", variable: name }).state !== "granted") {
      return undefined;
    }
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}
