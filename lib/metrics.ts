// Counters, gauges and histograms in Prometheus's text format 0.0.4, written by hand, and merged across workers.

// The values of one process: per family, per rendered label set ({a="x"}, or '' for none), a number or a histogram.
export type Snapshot = Record<string, Record<string, number | Histogram>>;
interface Histogram { counts: number[]; sum: number; count: number }

// How the values of several processes add up: counters and histograms sum, gauges sum, take the largest or smallest.
type Kind = 'counter' | 'histogram' | 'gauge' | 'max' | 'min';
interface Family { help: string; kind: Kind; buckets?: readonly number[]; sample?: () => Record<string, number> }

// Text format 0.0.4: a label value escapes backslash, double quote and line feed.
const escape = (value: string) => value.replace(/[\\"\n]/g, (ch) => (ch === '\n' ? '\\n' : `\\${ch}`));
export const labels = (pairs: Record<string, string>) => {
  const text = Object.entries(pairs).map(([name, value]) => `${name}="${escape(value)}"`).join(',');
  return text === '' ? '' : `{${text}}`;
};

export class Registry {
  private readonly families = new Map<string, Family>();
  private readonly values: Snapshot = {};

  // inc(key) adds to a counter; the key is a labels() string, built once by the caller where it can.
  counter(name: string, help: string): (key: string, by?: number) => void {
    const values = this.define(name, { help, kind: 'counter' });
    return (key, by = 1) => {
      values[key] = ((values[key] as number | undefined) ?? 0) + by;
    };
  }

  histogram(name: string, help: string, buckets: readonly number[]): (key: string, value: number) => void {
    const values = this.define(name, { help, kind: 'histogram', buckets });
    return (key, value) => {
      let histogram = values[key] as Histogram | undefined;
      if (histogram === undefined) values[key] = histogram = { counts: buckets.map(() => 0), sum: 0, count: 0 };
      const at = buckets.findIndex((bound) => value <= bound);
      if (at !== -1) histogram.counts[at]! += 1;
      histogram.sum += value;
      histogram.count += 1;
    };
  }

  // A value read when a snapshot is taken (a gauge, or a counter kept elsewhere): `sample` gives it per labels().
  sampled(name: string, help: string, kind: Exclude<Kind, 'histogram'>, sample: () => Record<string, number>): void {
    this.define(name, { help, kind, sample });
  }

  // What an exited worker leaves behind: its counters and histograms, which must never go backwards.
  lasting(snapshot: Snapshot): Snapshot {
    const kept: Snapshot = {};
    for (const [name, family] of this.families) {
      const lasts = family.kind === 'counter' || family.kind === 'histogram';
      if (lasts && snapshot[name] !== undefined) kept[name] = snapshot[name];
    }
    return kept;
  }

  snapshot(): Snapshot {
    const copy: Snapshot = {};
    for (const [name, family] of this.families) {
      copy[name] = family.sample?.() ?? structuredClone(this.values[name]!);
    }
    return copy;
  }

  // The exposition of the given snapshots (one per process, and what exited workers left) merged.
  render(snapshots: Snapshot[]): string {
    const merged = this.merge(snapshots);
    let text = '';
    for (const [name, family] of this.families) {
      const type = family.kind === 'histogram' || family.kind === 'counter' ? family.kind : 'gauge';
      text += `# HELP ${name} ${family.help}\n# TYPE ${name} ${type}\n`;
      for (const [key, value] of Object.entries(merged[name] ?? {})) {
        if (typeof value === 'number') {
          text += `${name}${key} ${value}\n`;
          continue;
        }
        let cumulative = 0;
        for (const [i, bound] of family.buckets!.entries()) {
          cumulative += value.counts[i]!;
          text += `${name}_bucket${withLe(key, String(bound))} ${cumulative}\n`;
        }
        text += `${name}_bucket${withLe(key, '+Inf')} ${value.count}\n`;
        text += `${name}_sum${key} ${value.sum}\n${name}_count${key} ${value.count}\n`;
      }
    }
    return text;
  }

  // Sums counters and histograms, and gauges by their kind.
  merge(snapshots: Snapshot[]): Snapshot {
    const merged: Snapshot = {};
    for (const [name, { kind }] of this.families) {
      const into: Record<string, number | Histogram> = {};
      for (const snapshot of snapshots) {
        for (const [key, value] of Object.entries(snapshot[name] ?? {})) into[key] = combine(kind, into[key], value);
      }
      merged[name] = into;
    }
    return merged;
  }

  private define(name: string, family: Family): Record<string, number | Histogram> {
    this.families.set(name, family);
    this.values[name] = {};
    return this.values[name];
  }
}

const withLe = (key: string, le: string) => (key === '' ? `{le="${le}"}` : `${key.slice(0, -1)},le="${le}"}`);

function combine(kind: Kind, seen: number | Histogram | undefined, value: number | Histogram): number | Histogram {
  if (typeof value !== 'number') {
    const sum = (seen as Histogram | undefined) ?? { counts: value.counts.map(() => 0), sum: 0, count: 0 };
    value.counts.forEach((count, i) => {
      sum.counts[i]! += count;
    });
    return { counts: sum.counts, sum: sum.sum + value.sum, count: sum.count + value.count };
  }
  if (seen === undefined) return value;
  if (kind === 'max') return Math.max(seen as number, value);
  if (kind === 'min') return Math.min(seen as number, value);
  return (seen as number) + value;
}
