// One interval for many things that each need a look now and then (slow bodies, Redis deadlines), running only while
// one is registered: a timer per request cost more than that request's own checks.
import { performance } from 'node:perf_hooks';

export interface Sweep<T> { add(item: T): void; delete(item: T): void }

export function createSweep<T>(everyMs: number, look: (item: T, now: number) => void): Sweep<T> {
  const items = new Set<T>();
  let timer: NodeJS.Timeout | undefined;
  const tick = () => {
    const now = performance.now();
    for (const item of items) look(item, now);
    if (items.size > 0) return;
    clearInterval(timer);
    timer = undefined;
  };
  return {
    add(item) {
      items.add(item);
      timer ??= setInterval(tick, everyMs);
    },
    delete(item) {
      items.delete(item);
    },
  };
}
