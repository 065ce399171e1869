/**
 * Stop strings over streamed text: pieces go in, the text that is certainly before any stop string
 * comes out. A tail that could be the start of a stop string is held back until the next piece
 * settles it, so a stop string split over several tokens is found, and the text ends just before
 * it. Pure.
 *
 * @example
 * ```ts
 * import { StopMatcher } from "./stop_strings.ts";
 * const m = new StopMatcher(["\n\n"]);
 * m.push("Hello\n"); // { text: "Hello", stopped: false } ("\n" held back)
 * m.push("\nworld"); // { text: "", stopped: true }
 * ```
 * @module
 */

/** What {@linkcode StopMatcher.push} lets out. */
export interface StopStep {
  /** Text to emit now. */
  text: string;
  /** A stop string was found: the text ends here (the stop string itself left out). */
  stopped: boolean;
}

/** Finds stop strings in streamed text (see the module doc). */
export class StopMatcher {
  #stops: readonly string[];
  #held = "";
  #stopped = false;

  /** A matcher for `stops` (non-empty strings; none: every piece passes through). */
  constructor(stops: readonly string[]) {
    this.#stops = stops.filter((s) => s.length > 0);
  }

  /** Whether a stop string has been found. */
  get stopped(): boolean {
    return this.#stopped;
  }

  /** Adds a piece; returns the text that can be emitted, and whether a stop string was found. */
  push(piece: string): StopStep {
    if (this.#stopped) return { text: "", stopped: true };
    if (this.#stops.length === 0) return { text: piece, stopped: false };
    const text = this.#held + piece;
    let at = -1;
    for (const stop of this.#stops) {
      const i = text.indexOf(stop);
      if (i >= 0 && (at < 0 || i < at)) at = i;
    }
    if (at >= 0) {
      this.#stopped = true;
      this.#held = "";
      return { text: text.slice(0, at), stopped: true };
    }
    const keep = this.#partialTail(text);
    this.#held = text.slice(text.length - keep);
    return { text: text.slice(0, text.length - keep), stopped: false };
  }

  /** The text held back, at the end of the generation (empty after a stop). */
  flush(): string {
    const rest = this.#stopped ? "" : this.#held;
    this.#held = "";
    return rest;
  }

  /** Length of the longest tail of `text` that is a proper prefix of a stop string. */
  #partialTail(text: string): number {
    let best = 0;
    for (const stop of this.#stops) {
      for (let n = Math.min(stop.length - 1, text.length); n > best; n--) {
        if (text.endsWith(stop.slice(0, n))) {
          best = n;
          break;
        }
      }
    }
    return best;
  }
}
