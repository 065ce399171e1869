/**
 * JSON as Python's `json.dumps(obj, indent=2, sort_keys=True)` writes it (how transformers writes
 * config.json), with {@linkcode PyFloat} marking the numbers Python holds as floats (`10000.0`,
 * `1e-05`).
 *
 * @example
 * ```ts
 * import { plainJson, PyFloat, pyJson } from "./py_json.ts";
 * const obj = { rope_theta: new PyFloat(10000), eps: new PyFloat(1e-5), layers: 2 };
 * console.log(pyJson(obj).includes('"eps": 1e-05'), pyJson(obj).includes('"rope_theta": 10000.0')); // true true
 * console.log(plainJson(obj)); // { rope_theta: 10000, eps: 0.00001, layers: 2 }
 * ```
 * @module
 */

/** A number Python's json module writes as a float (`10000.0`, `1e-05`). */
export class PyFloat {
  /** Marks `value` as a float. */
  constructor(readonly value: number) {}
}

/** Python's `repr(float)`: the shortest round-trip digits, `.0` for integers, `e-05` exponents. */
function pyFloat(x: number): string {
  if (!Number.isFinite(x)) return Number.isNaN(x) ? "NaN" : x > 0 ? "Infinity" : "-Infinity";
  if (Number.isInteger(x) && Math.abs(x) < 1e16) return `${x}.0`;
  const [mant, expText] = x.toExponential().split("e");
  const exp = Number(expText);
  if (exp < -4 || exp >= 16) {
    return `${mant}e${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`;
  }
  return String(x);
}

/** `json.dumps(obj, indent=2, sort_keys=True)` as transformers writes configs. */
export function pyJson(value: unknown, indent = ""): string {
  if (value instanceof PyFloat) return pyFloat(value.value);
  if (value === null || value === undefined) return "null";
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  if (typeof value === "string") return JSON.stringify(value);
  const inner = indent + "  ";
  if (Array.isArray(value)) {
    if (value.length === 0) return "[]";
    return `[\n${value.map((v) => inner + pyJson(v, inner)).join(",\n")}\n${indent}]`;
  }
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj).sort();
  if (keys.length === 0) return "{}";
  return `{\n${
    keys.map((k) => `${inner}${JSON.stringify(k)}: ${pyJson(obj[k], inner)}`).join(",\n")
  }\n${indent}}`;
}

/** Replaces PyFloat markers by plain numbers (the object `parseConfig` and callers see). */
export function plainJson(value: unknown): unknown {
  if (value instanceof PyFloat) return value.value;
  if (Array.isArray(value)) return value.map(plainJson);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plainJson(v)]));
  }
  return value;
}
