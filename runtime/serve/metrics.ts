/**
 * The server's counters and gauges, rendered in Prometheus' text format for `GET /metrics`. Pure.
 *
 * @example
 * ```ts
 * import { ServerMetrics } from "./metrics.ts";
 * const m = new ServerMetrics();
 * m.countRequest("/v1/chat/completions", 200);
 * console.log(m.render({ queueDepth: 0, queueCapacity: 8, busy: false, offload: null }));
 * ```
 * @module
 */
import type { GenerateStats, OffloadCounters } from "../model.ts";

/** How a generation ended. */
export type GenerationOutcome = "stop" | "length" | "cancelled" | "timeout" | "error";

/** What the server reads at render time. */
export interface LiveState {
  /** Requests waiting for the GPU. */
  queueDepth: number;
  /** Most requests that may wait. */
  queueCapacity: number;
  /** Whether a generation holds the GPU. */
  busy: boolean;
  /** The offloading engine's totals since load (null when resident). */
  offload: OffloadCounters | null;
}

/** One generation's figures. */
export interface GenerationRecord {
  promptTokens: number;
  completionTokens: number;
  outcome: GenerationOutcome;
  /** The model's statistics of the run (null when it never started). */
  stats: GenerateStats | null;
}

/** Request and token counters plus the last generation's figures (see the module doc). */
export class ServerMetrics {
  #requests = new Map<string, number>();
  #outcomes = new Map<GenerationOutcome, number>();
  #promptTokens = 0;
  #completionTokens = 0;
  #decodeTokensPerS = 0;
  #uploadBytesPerToken = 0;
  #peakGpuBytes = 0;

  /** Counts an answered request. */
  countRequest(endpoint: string, status: number): void {
    const key = `${endpoint}\u0000${status}`;
    this.#requests.set(key, (this.#requests.get(key) ?? 0) + 1);
  }

  /** How many requests to `endpoint` were answered with `status`. */
  requests(endpoint: string, status: number): number {
    return this.#requests.get(`${endpoint}\u0000${status}`) ?? 0;
  }

  /** Records a finished (or abandoned) generation. */
  recordGeneration(r: GenerationRecord): void {
    this.#outcomes.set(r.outcome, (this.#outcomes.get(r.outcome) ?? 0) + 1);
    this.#promptTokens += r.promptTokens;
    this.#completionTokens += r.completionTokens;
    if (r.stats) {
      if (r.stats.generated_tokens > 1) {
        this.#decodeTokensPerS = r.stats.decode_tokens_per_s;
        this.#uploadBytesPerToken = r.stats.upload_bytes_per_token;
      }
      this.#peakGpuBytes = Math.max(this.#peakGpuBytes, r.stats.peak_gpu_bytes);
    }
  }

  /** The Prometheus text exposition. */
  render(live: LiveState): string {
    const out: string[] = [];
    const metric = (name: string, type: string, help: string, samples: [string, number][]) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, v] of samples) out.push(`${name}${labels} ${formatValue(v)}`);
    };
    metric(
      "pregate_requests_total",
      "counter",
      "HTTP requests answered, by endpoint and status.",
      [...this.#requests].map(([key, n]) => {
        const [endpoint, status] = key.split("\u0000");
        return [`{endpoint="${escapeLabel(endpoint)}",status="${status}"}`, n];
      }),
    );
    metric(
      "pregate_generations_total",
      "counter",
      "Generations, by how they ended (stop, length, cancelled, timeout, error).",
      [...this.#outcomes].map(([o, n]) => [`{outcome="${o}"}`, n]),
    );
    metric("pregate_prompt_tokens_total", "counter", "Prompt tokens processed.", [
      ["", this.#promptTokens],
    ]);
    metric("pregate_completion_tokens_total", "counter", "Tokens generated.", [
      ["", this.#completionTokens],
    ]);
    const gauges: [string, string, number][] = [
      [
        "pregate_decode_tokens_per_second",
        "Decode tokens/s of the last generation of more than one token.",
        this.#decodeTokensPerS,
      ],
      [
        "pregate_upload_bytes_per_token",
        "Expert bytes copied to the GPU per decode token, last generation (0 when resident).",
        this.#uploadBytesPerToken,
      ],
      [
        "pregate_pregate_hit_rate",
        "Share of chosen experts the pre-gate predicted, since load (NaN unless pregated).",
        live.offload && live.offload.pregateChosen
          ? live.offload.pregateHits / live.offload.pregateChosen
          : NaN,
      ],
      [
        "pregate_expert_cache_hit_rate",
        "Share of expert acquisitions already on the GPU, since load (NaN when resident).",
        live.offload && live.offload.cacheLookups
          ? live.offload.cacheHits / live.offload.cacheLookups
          : NaN,
      ],
      ["pregate_peak_gpu_bytes", "Most GPU bytes held during a generation.", this.#peakGpuBytes],
      ["pregate_queue_depth", "Requests waiting for the GPU.", live.queueDepth],
      ["pregate_queue_capacity", "Most requests that may wait (--queue).", live.queueCapacity],
      ["pregate_gpu_busy", "1 while a generation holds the GPU.", live.busy ? 1 : 0],
    ];
    for (const [name, help, v] of gauges) metric(name, "gauge", help, [["", v]]);
    return out.join("\n") + "\n";
  }
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

function escapeLabel(s: string): string {
  return s.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/**
 * Parses Prometheus text into `name{labels}` -> value (for tests and scripts).
 *
 * @example
 * ```ts
 * import { parsePrometheus } from "./metrics.ts";
 * parsePrometheus("# TYPE x gauge\nx 3\n").get("x"); // 3
 * ```
 */
export function parsePrometheus(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const i = line.lastIndexOf(" ");
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}
