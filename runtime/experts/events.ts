/**
 * The offloading engine's named points and the listeners that turn them into statistics and the
 * expert trace. The engine emits; it keeps no counter itself.
 *
 * - `sync`: a MoE layer's routing readback came back.
 * - `upload`: a batch of expert copies was issued (on demand or as a prefetch).
 * - `layer`: a MoE layer was scheduled and its work submitted (the scheduler's report).
 *
 * @example
 * ```ts
 * import { countStats, type EngineEvents, EventHub, newEngineStats } from "./events.ts";
 * const events = new EventHub<EngineEvents>();
 * const stats = newEngineStats();
 * countStats(events, stats);
 * events.emit("sync", { layer: 0, seconds: 0.002 });
 * console.log(stats.syncs); // 1
 * ```
 * @module
 */
import type { LayerReport } from "./schedule.ts";
import type { TraceRecord } from "./trace.ts";

/**
 * Named points with one payload type each, and their listeners.
 *
 * @example
 * ```ts
 * import { EventHub } from "./events.ts";
 * const hub = new EventHub<{ tick: number }>();
 * const off = hub.on("tick", (n) => console.log("tick", n));
 * hub.emit("tick", 1); // tick 1
 * off();
 * hub.emit("tick", 2); // (nothing)
 * ```
 */
export class EventHub<Events> {
  readonly #listeners = new Map<keyof Events, ((payload: never) => void)[]>();

  /** Calls `listener` at every `name` point from now on; returns a function that stops it. */
  on<K extends keyof Events>(name: K, listener: (payload: Events[K]) => void): () => void {
    const list = this.#listeners.get(name) ?? [];
    list.push(listener);
    this.#listeners.set(name, list);
    return () => {
      const i = list.indexOf(listener);
      if (i >= 0) list.splice(i, 1);
    };
  }

  /** Calls the listeners of `name`, in the order they were added. */
  emit<K extends keyof Events>(name: K, payload: Events[K]): void {
    const list = this.#listeners.get(name) as ((payload: Events[K]) => void)[] | undefined;
    if (list) { for (const listener of list) listener(payload); }
  }
}

/**
 * The engine's points (see the module documentation).
 *
 * @example
 * ```ts
 * import type { EngineEvents } from "./events.ts";
 * const sync: EngineEvents["sync"] = { layer: 3, seconds: 0.01 };
 * console.log(sync.layer);
 * ```
 */
export interface EngineEvents {
  /** A routing readback came back; `seconds` awaited, less the copies issued meanwhile. */
  sync: { readonly layer: number; readonly seconds: number };
  /** A batch of copies into `layer`'s slots was issued. */
  upload: UploadEvent;
  /** A MoE layer was scheduled and its work submitted. */
  layer: LayerReport;
}

/**
 * One batch of expert copies (see {@linkcode EngineEvents}).
 *
 * @example
 * ```ts
 * import type { UploadEvent } from "./events.ts";
 * const e: UploadEvent = { layer: 1, experts: 2, bytes: 1 << 20, seconds: 0.001, fillSeconds: 0,
 *   stagingWaitSeconds: 0, prefetch: true };
 * console.log(e.bytes);
 * ```
 */
export interface UploadEvent {
  /** The MoE layer whose experts were copied. */
  readonly layer: number;
  /** Experts copied. */
  readonly experts: number;
  /** Bytes copied. */
  readonly bytes: number;
  /** Seconds spent issuing them (host memcpy into staging, or `writeBuffer`). */
  readonly seconds: number;
  /** Of those, seconds filling staging (summed over parallel fills) and awaiting a remap. */
  readonly fillSeconds: number;
  readonly stagingWaitSeconds: number;
  /** A prefetch (true) or copies on the critical path (false). */
  readonly prefetch: boolean;
}

/**
 * Counters of the engine, cumulative.
 *
 * @example
 * ```ts
 * import { type EngineStats, newEngineStats } from "./events.ts";
 * const s: EngineStats = newEngineStats();
 * console.log(s.uploadBytes); // 0
 * ```
 */
export interface EngineStats {
  /** Expert bytes copied host -> GPU. */
  uploadBytes: number;
  /** Routing readbacks (GPU -> CPU syncs). */
  syncs: number;
  /** Seconds awaiting routing readbacks (GPU work + sync latency). */
  syncSeconds: number;
  /** Seconds spent issuing expert copies (host-side memcpy into the implementation's staging). */
  uploadSeconds: number;
  /** Of those: filling staging (memcpy; mapped path) and waiting for a staging buffer's remap. */
  uploadFillSeconds: number;
  uploadStagingWaitSeconds: number;
  /**
   * Per token, router choices the pre-gate had predicted / all router choices, in layers that had a
   * prediction.
   */
  pregateHits: number;
  pregateChosen: number;
  /** Expert acquisitions for compute found resident / all of them. */
  cacheHits: number;
  cacheLookups: number;
}

/**
 * Zeroed {@linkcode EngineStats}.
 *
 * @example
 * ```ts
 * import { newEngineStats } from "./events.ts";
 * console.log(newEngineStats().syncs); // 0
 * ```
 */
export function newEngineStats(): EngineStats {
  return {
    uploadBytes: 0,
    syncs: 0,
    syncSeconds: 0,
    uploadSeconds: 0,
    uploadFillSeconds: 0,
    uploadStagingWaitSeconds: 0,
    pregateHits: 0,
    pregateChosen: 0,
    cacheHits: 0,
    cacheLookups: 0,
  };
}

/**
 * Keeps `stats` up to date from the engine's points.
 *
 * @example
 * ```ts
 * import { countStats, type EngineEvents, EventHub, newEngineStats } from "./events.ts";
 * const events = new EventHub<EngineEvents>();
 * const stats = newEngineStats();
 * countStats(events, stats);
 * events.emit("upload", { layer: 0, experts: 1, bytes: 4096, seconds: 0.001, fillSeconds: 0,
 *   stagingWaitSeconds: 0, prefetch: false });
 * console.log(stats.uploadBytes); // 4096
 * ```
 */
export function countStats(events: EventHub<EngineEvents>, stats: EngineStats): void {
  events.on("sync", (e) => {
    stats.syncs++;
    stats.syncSeconds += e.seconds;
  });
  events.on("upload", (e) => {
    stats.uploadBytes += e.bytes;
    stats.uploadSeconds += e.seconds;
    stats.uploadFillSeconds += e.fillSeconds;
    stats.uploadStagingWaitSeconds += e.stagingWaitSeconds;
  });
  events.on("layer", (r) => {
    // Per token: a pass of T tokens counts each token's prediction against its own routing.
    stats.pregateChosen += r.tokenChoices;
    stats.pregateHits += r.tokenHits;
    stats.cacheHits += r.cacheHits;
    stats.cacheLookups += r.cacheLookups;
  });
}

/**
 * Appends one {@linkcode TraceRecord} per MoE layer and pass to `records`.
 *
 * @example
 * ```ts
 * import { type EngineEvents, EventHub, recordTrace } from "./events.ts";
 * import type { TraceRecord } from "./trace.ts";
 * const events = new EventHub<EngineEvents>();
 * const records: TraceRecord[] = [];
 * recordTrace(events, records);
 * console.log(records.length); // 0
 * ```
 */
export function recordTrace(events: EventHub<EngineEvents>, records: TraceRecord[]): void {
  events.on("layer", (r) => {
    records.push({
      step: r.step,
      tokens: r.tokens,
      layer: r.layer,
      chosen: r.chosen,
      predicted: r.predicted,
      resident: r.resident,
      uploaded: r.uploaded,
      onDemand: r.onDemand,
      tokenHits: r.tokenHits,
      tokenChoices: r.tokenChoices,
    });
  });
}
