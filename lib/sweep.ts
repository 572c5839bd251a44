// One interval, only while any item is registered, for what needs a look now and then: a timer each cost more.
import { performance } from 'node:perf_hooks';

// Where an item is registered (-1: nowhere, its start); not a Set, whose old tables kept deleted items alive.
export interface Swept { slot: number }

export function createSweep<T extends Swept>(everyMs: number, look: (item: T, now: number) => void) {
  // As long as the most items registered at once since the sweep was last empty; a deleted item's slot is reused.
  const items: Array<T | undefined> = [];
  const free: number[] = [];
  let timer: NodeJS.Timeout | undefined;
  const tick = () => {
    const now = performance.now();
    for (const item of items) if (item !== undefined) look(item, now);
    if (free.length < items.length) return;
    items.length = free.length = 0;
    clearInterval(timer);
    timer = undefined;
  };
  return {
    add(item: T): void {
      if (item.slot !== -1) return; // registered already
      item.slot = free.pop() ?? items.length;
      items[item.slot] = item;
      timer ??= setInterval(tick, everyMs);
    },
    delete(item: T): void {
      if (item.slot === -1 || items[item.slot] !== item) return;
      items[item.slot] = undefined;
      free.push(item.slot);
      item.slot = -1;
    },
  };
}
