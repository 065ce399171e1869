// Metrics: counters add up, gauges follow the last generation, the text is Prometheus' format.
import assert from "node:assert/strict";
import type { GenerateStats } from "../model.ts";
import { parsePrometheus, ServerMetrics } from "./metrics.ts";

const stats = (over: Partial<GenerateStats>) =>
  ({
    generated_tokens: 5,
    decode_tokens_per_s: 10,
    upload_bytes_per_token: 0,
    peak_gpu_bytes: 1000,
    ...over,
  }) as GenerateStats;

Deno.test("metrics count requests and tokens and render as Prometheus text", () => {
  const m = new ServerMetrics();
  m.countRequest("/v1/chat/completions", 200);
  m.countRequest("/v1/chat/completions", 200);
  m.countRequest("/v1/chat/completions", 429);
  m.countRequest('/odd"path', 404);
  m.recordGeneration({ promptTokens: 7, completionTokens: 5, outcome: "length", stats: stats({}) });
  m.recordGeneration({
    promptTokens: 3,
    completionTokens: 2,
    outcome: "stop",
    stats: stats({ decode_tokens_per_s: 25, upload_bytes_per_token: 4096, peak_gpu_bytes: 800 }),
  });
  // a one-token generation has no decode rate: the last one stays
  m.recordGeneration({
    promptTokens: 1,
    completionTokens: 1,
    outcome: "cancelled",
    stats: stats({ generated_tokens: 1, decode_tokens_per_s: 0 }),
  });
  m.recordGeneration({ promptTokens: 2, completionTokens: 0, outcome: "timeout", stats: null });
  const text = m.render({
    queueDepth: 3,
    queueCapacity: 8,
    busy: true,
    offload: { pregateHits: 3, pregateChosen: 4, cacheHits: 1, cacheLookups: 4, uploadBytes: 0 },
  });
  for (const line of text.trimEnd().split("\n")) {
    assert.match(line, /^(# (HELP|TYPE) \w+ .+|\w+(\{[^}]*\})? ([-+0-9.e]+|NaN|\+Inf))$/, line);
  }
  const v = parsePrometheus(text);
  assert.equal(v.get('pregate_requests_total{endpoint="/v1/chat/completions",status="200"}'), 2);
  assert.equal(v.get('pregate_requests_total{endpoint="/v1/chat/completions",status="429"}'), 1);
  assert.equal(v.get('pregate_requests_total{endpoint="/odd\\"path",status="404"}'), 1);
  assert.equal(m.requests("/v1/chat/completions", 200), 2);
  assert.equal(v.get("pregate_prompt_tokens_total"), 13);
  assert.equal(v.get("pregate_completion_tokens_total"), 8);
  assert.equal(v.get('pregate_generations_total{outcome="timeout"}'), 1);
  assert.equal(v.get("pregate_decode_tokens_per_second"), 25);
  assert.equal(v.get("pregate_upload_bytes_per_token"), 4096);
  assert.equal(v.get("pregate_peak_gpu_bytes"), 1000);
  assert.equal(v.get("pregate_pregate_hit_rate"), 0.75);
  assert.equal(v.get("pregate_expert_cache_hit_rate"), 0.25);
  assert.equal(v.get("pregate_queue_depth"), 3);
  assert.equal(v.get("pregate_gpu_busy"), 1);
  const resident = parsePrometheus(
    m.render({ queueDepth: 0, queueCapacity: 8, busy: false, offload: null }),
  );
  assert.ok(Number.isNaN(resident.get("pregate_pregate_hit_rate")));
  assert.equal(resident.get("pregate_gpu_busy"), 0);
});
