/**
 * The buffer accounting behind `Gpu.memory()`: every buffer a `Gpu` creates, its size, purpose and
 * whether it is host-visible (mappable), with current and peak bytes in total and by purpose.
 *
 * @example
 * ```ts
 * import { BufferLedger } from "./memory.ts";
 * const ledger = new BufferLedger();
 * const buffer = {} as GPUBuffer; // any key: the ledger never touches the buffer
 * ledger.add(buffer, { size: 1024, requested: 1000, purpose: "experts", host: false });
 * ledger.remove(buffer);
 * console.log(ledger.report().peak); // 1024
 * ```
 * @module
 */
import type { BufferPurpose, MemoryReport } from "./types.ts";

/** What the ledger keeps of one buffer. */
export interface LedgerEntry {
  /** Bytes allocated (a multiple of 16). */
  size: number;
  /** Bytes asked for (rounded to 4), which reads default to. */
  requested: number;
  /** What the buffer is for. */
  purpose: BufferPurpose;
  /** Mappable (MAP_READ or MAP_WRITE): host-visible memory, counted apart. */
  host: boolean;
}

/** Current and peak bytes of the buffers added and not yet removed. */
export class BufferLedger {
  #entries = new Map<GPUBuffer, LedgerEntry>();
  #current = 0;
  #peak = 0;
  #hostCurrent = 0;
  #hostPeak = 0;
  #byPurpose: MemoryReport["byPurpose"] = {};

  /** Counts `buffer`'s bytes. */
  add(buffer: GPUBuffer, entry: LedgerEntry): void {
    this.#entries.set(buffer, entry);
    if (entry.host) {
      this.#hostCurrent += entry.size;
      this.#hostPeak = Math.max(this.#hostPeak, this.#hostCurrent);
    } else {
      this.#current += entry.size;
      this.#peak = Math.max(this.#peak, this.#current);
    }
    const p = this.#byPurpose[entry.purpose] ??= { current: 0, peak: 0 };
    p.current += entry.size;
    p.peak = Math.max(p.peak, p.current);
  }

  /** Releases `buffer`'s bytes; returns false when it was not counted here. */
  remove(buffer: GPUBuffer): boolean {
    const entry = this.#entries.get(buffer);
    if (!entry) return false;
    this.#entries.delete(buffer);
    if (entry.host) this.#hostCurrent -= entry.size;
    else this.#current -= entry.size;
    this.#byPurpose[entry.purpose]!.current -= entry.size;
    return true;
  }

  /** What was recorded for `buffer`, if it is counted here. */
  get(buffer: GPUBuffer): LedgerEntry | undefined {
    return this.#entries.get(buffer);
  }

  /** Every buffer counted now. */
  buffers(): GPUBuffer[] {
    return [...this.#entries.keys()];
  }

  /** Current and peak bytes, in total and by purpose (a copy). */
  report(): MemoryReport {
    const byPurpose: MemoryReport["byPurpose"] = {};
    for (const [k, v] of Object.entries(this.#byPurpose)) {
      byPurpose[k as BufferPurpose] = { ...v };
    }
    return {
      current: this.#current,
      peak: this.#peak,
      host: { current: this.#hostCurrent, peak: this.#hostPeak },
      byPurpose,
    };
  }

  /** Restarts peak tracking from the current figures. */
  resetPeak(): void {
    this.#peak = this.#current;
    this.#hostPeak = this.#hostCurrent;
    for (const v of Object.values(this.#byPurpose)) v.peak = v.current;
  }
}
