// Counters, gauges and histograms in Prometheus's text format 0.0.4, written by hand, and merged across workers.

// The values of one process: per family, per rendered label set ({a="x"}, or '' for none), a number or a histogram.
export type Snapshot = Record<string, Record<string, number | Buckets>>;
interface Buckets { counts: number[]; sum: number; count: number }

// How the values of several processes add up: counters and histograms sum, gauges sum, take the largest or smallest.
type Kind = 'counter' | 'histogram' | 'gauge' | 'max' | 'min';
interface Family { help: string; kind: Kind; buckets?: readonly number[]; sample?: () => Record<string, number> }

// Text format 0.0.4: a label value escapes backslash, double quote and line feed.
const escape = (value: string) => value.replace(/[\\"\n]/g, (ch) => (ch === '\n' ? '\\n' : `\\${ch}`));
export const labels = (pairs: Record<string, string>) => {
  const text = Object.entries(pairs).map(([name, value]) => `${name}="${escape(value)}"`).join(',');
  return text === '' ? '' : `{${text}}`;
};

// One series of a counter, or of a histogram: a caller keeps the one it counts into (no label lookup per request).
export class Count {
  value = 0;

  add(by = 1): void {
    this.value += by;
  }
}

export class Histogram {
  counts: number[];
  sum = 0;
  count = 0;

  constructor(private readonly buckets: readonly number[]) {
    this.counts = buckets.map(() => 0);
  }

  observe(value: number): void {
    let at = 0;
    while (at < this.buckets.length && value > this.buckets[at]!) at += 1;
    if (at < this.buckets.length) this.counts[at]! += 1;
    this.sum += value;
    this.count += 1;
  }
}

export class Registry {
  private readonly families = new Map<string, Family>();
  private readonly series = new Map<string, Map<string, Count | Histogram>>();
  private readonly lastSamples = new Map<string, Record<string, number>>();

  // series(key) gives the counter's series for a labels() string, created at first use.
  counter(name: string, help: string): (key: string) => Count {
    const series = this.define(name, { help, kind: 'counter' });
    return (key) => (series.get(key) ?? series.set(key, new Count()).get(key)) as Count;
  }

  histogram(name: string, help: string, buckets: readonly number[]): (key: string) => Histogram {
    const series = this.define(name, { help, kind: 'histogram', buckets });
    return (key) => (series.get(key) ?? series.set(key, new Histogram(buckets)).get(key)) as Histogram;
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
      const values: Record<string, number | Buckets> = {};
      for (const [key, cell] of this.series.get(name) ?? []) {
        const { counts, sum, count } = cell as Histogram;
        values[key] = cell instanceof Count ? cell.value : { counts: [...counts], sum, count };
      }
      copy[name] = family.sample === undefined ? values : this.sampleOf(name, family.sample);
    }
    return copy;
  }

  // A sample that throws (no descriptor left to read /proc with) repeats the last one: a snapshot never throws.
  private sampleOf(name: string, sample: () => Record<string, number>): Record<string, number> {
    try {
      const values = sample();
      this.lastSamples.set(name, values);
      return values;
    } catch {
      return this.lastSamples.get(name) ?? {};
    }
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
      const into: Record<string, number | Buckets> = {};
      for (const snapshot of snapshots) {
        for (const [key, value] of Object.entries(snapshot[name] ?? {})) into[key] = combine(kind, into[key], value);
      }
      merged[name] = into;
    }
    return merged;
  }

  private define(name: string, family: Family): Map<string, Count | Histogram> {
    this.families.set(name, family);
    const series = new Map<string, Count | Histogram>();
    this.series.set(name, series);
    return series;
  }
}

const withLe = (key: string, le: string) => (key === '' ? `{le="${le}"}` : `${key.slice(0, -1)},le="${le}"}`);

function combine(kind: Kind, seen: number | Buckets | undefined, value: number | Buckets): number | Buckets {
  if (typeof value !== 'number') {
    const sum = (seen as Buckets | undefined) ?? { counts: value.counts.map(() => 0), sum: 0, count: 0 };
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
