// Stop strings over streamed pieces: the emitted text is the full text cut before the first stop
// string, however the text is split into pieces.
import assert from "node:assert/strict";
import { StopMatcher } from "./stop_strings.ts";

/** Runs pieces through a matcher; the emitted text and whether it stopped. */
function run(stops: string[], pieces: string[]): { text: string; stopped: boolean } {
  const m = new StopMatcher(stops);
  let text = "";
  for (const p of pieces) {
    const step = m.push(p);
    text += step.text;
    if (step.stopped) return { text, stopped: true };
  }
  return { text: text + m.flush(), stopped: false };
}

/** The answer by definition: cut before the earliest occurrence of any stop string. */
function reference(stops: string[], full: string): { text: string; stopped: boolean } {
  const hits = stops.map((s) => full.indexOf(s)).filter((i) => i >= 0);
  return hits.length ? { text: full.slice(0, Math.min(...hits)), stopped: true } : {
    text: full,
    stopped: false,
  };
}

Deno.test("a stop string split over pieces ends the text before it", () => {
  assert.deepEqual(run(["\n\n"], ["Hello\n", "\nworld"]), { text: "Hello", stopped: true });
  assert.deepEqual(run(["END"], ["abE", "N", "Dxyz"]), { text: "ab", stopped: true });
  assert.deepEqual(run(["END"], ["abEN", "d"]), { text: "abENd", stopped: false });
  // the earliest stop string wins, whichever is listed first
  assert.deepEqual(run(["world", "lo"], ["Hello world"]), { text: "Hel", stopped: true });
  // a held tail that turns out not to be a stop string comes out with the next piece or at the end
  const m = new StopMatcher(["abc"]);
  assert.deepEqual(m.push("xxab"), { text: "xx", stopped: false });
  assert.deepEqual(m.push("d"), { text: "abd", stopped: false });
  assert.deepEqual(m.push("a"), { text: "", stopped: false });
  assert.equal(m.flush(), "a");
  // no stop strings: pieces pass through unchanged
  assert.deepEqual(new StopMatcher([]).push("abc"), { text: "abc", stopped: false });
  // after a stop, nothing more
  const s = new StopMatcher(["x"]);
  assert.deepEqual(s.push("axb"), { text: "a", stopped: true });
  assert.deepEqual(s.push("c"), { text: "", stopped: true });
  assert.equal(s.flush(), "");
  // a stop string at the very start gives empty text
  assert.deepEqual(run(["Hi"], ["H", "i there"]), { text: "", stopped: true });
  // non-ASCII stop strings
  assert.deepEqual(run(["é!"], ["caf", "é", "!", "x"]), { text: "caf", stopped: true });
});

Deno.test("random texts, stops and splits agree with cutting the whole text", () => {
  let seed = 7;
  const rand = (n: number) => (seed = (seed * 1103515245 + 12345) >>> 0) % n;
  const alphabet = "aab\nc";
  const word = (len: number) =>
    Array.from({ length: len }, () => alphabet[rand(alphabet.length)]).join("");
  for (let trial = 0; trial < 2000; trial++) {
    const full = word(1 + rand(24));
    const stops = Array.from({ length: 1 + rand(3) }, () => word(1 + rand(4)));
    const pieces: string[] = [];
    for (let i = 0; i < full.length;) {
      const n = 1 + rand(4);
      pieces.push(full.slice(i, i + n));
      i += n;
    }
    assert.deepEqual(run(stops, pieces), reference(stops, full), JSON.stringify({ stops, pieces }));
  }
});
