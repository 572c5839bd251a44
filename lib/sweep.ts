// One interval for many things that each need a look now and then (slow bodies, Redis deadlines), running only while
// one is registered: a timer per request cost more than that request's own checks.
import { performance } from 'node:perf_hooks';

// Where an item is registered (-1: nowhere). Not a Set: its discarded tables kept deleted requests alive through
// young collections, ~500 bytes promoted to the old generation per request (docs/performance.md).
export interface Swept { slot: number }

export function createSweep<T extends Swept>(everyMs: number, look: (item: T, now: number) => void) {
  // As long as the most items ever registered at once; a deleted item's slot is emptied and reused (also by `look`).
  const items: Array<T | undefined> = [];
  const free: number[] = [];
  let timer: NodeJS.Timeout | undefined;
  const tick = () => {
    const now = performance.now();
    for (const item of items) if (item !== undefined) look(item, now);
    if (free.length < items.length) return;
    clearInterval(timer);
    timer = undefined;
  };
  return {
    add(item: T): void {
      item.slot = free.pop() ?? items.length;
      items[item.slot] = item;
      timer ??= setInterval(tick, everyMs);
    },
    delete(item: T): void {
      if (item.slot === -1) return;
      items[item.slot] = undefined;
      free.push(item.slot);
      item.slot = -1;
    },
  };
}
