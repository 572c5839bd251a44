// The sweep behind Redis deadlines and body rates: every registered item is looked at, none deleted, and a deleted
// item is garbage at once (a Set kept finished requests alive through young collections: ~500 bytes promoted each).
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { createSweep, type Swept } from '../lib/sweep.ts';

interface Item extends Swept { id: number; payload: number[] }
const item = (id: number, payloadLength = 0): Item => ({ slot: -1, id, payload: new Array<number>(payloadLength).fill(id) });

test('a sweep looks at every registered item and at none deleted, as slots are emptied and reused', async () => {
  const seen = new Set<number>();
  const sweep = createSweep<Item>(5, (each) => seen.add(each.id));
  const items = Array.from({ length: 300 }, (_, id) => item(id));
  // Calls start and finish interleaved, a few out of order, as on several Redis connections.
  for (const [at, each] of items.entries()) {
    sweep.add(each);
    if (at >= 10 && at % 7 !== 0) sweep.delete(items[at - 10]!);
  }
  sweep.delete(items[299]!);
  sweep.delete(items[299]!); // twice is harmless
  const registered = items.filter((each) => each.slot !== -1).map((each) => each.id);
  await sleep(30);
  assert.deepEqual([...seen].sort((a, b) => a - b), registered);
  assert.ok(registered.length > 30 && registered.length < 290);
  for (const each of items) sweep.delete(each);
});

test('a sweep\'s look may delete the item it is given; once none is left the timer stops, and the next add restarts it', async () => {
  const looked: number[] = [];
  const sweep = createSweep<Item>(5, (each) => {
    looked.push(each.id);
    sweep.delete(each);
  });
  for (let id = 0; id < 5; id += 1) sweep.add(item(id));
  await sleep(30);
  assert.deepEqual(looked, [0, 1, 2, 3, 4]);
  sweep.add(item(5));
  await sleep(30);
  assert.deepEqual(looked, [0, 1, 2, 3, 4, 5]);
});

// Bytes the old generation grows by per item, over rounds of forty items that are garbage once the round is over.
async function promotedPerItem(register: (each: Item) => void, unregister: (each: Item) => void): Promise<number> {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as (options?: { type: 'major' | 'minor' }) => void;
  const oldSpaceUsed = () => getHeapSpaceStatistics().find((space) => space.space_name === 'old_space')!.space_used_size;
  let promoted = 0;
  let counted = 0;
  for (let round = 0; round < 50; round += 1) {
    // Eight in flight at a time, then all finished, as calls are.
    const items = Array.from({ length: 40 }, (_, id) => item(id, payloadLength));
    for (const [at, each] of items.entries()) {
      register(each);
      if (at >= 8) unregister(items[at - 8]!);
    }
    for (const each of items.slice(32)) unregister(each);
    items.length = 0;
    await sleep(0);
    // A major collection now and then ages what holds the items into the old generation, as in a service.
    if (round % 10 === 9) {
      gc();
      continue;
    }
    const before = oldSpaceUsed();
    gc({ type: 'minor' });
    gc({ type: 'minor' });
    promoted += oldSpaceUsed() - before;
    counted += 40;
  }
  return promoted / counted;
}

const payloadLength = 256;

test('a deleted item is not kept alive by the sweep through young collections', async () => {
  const sweep = createSweep<Item>(50, () => {});
  const baseline = await promotedPerItem(() => {}, () => {});
  const swept = await promotedPerItem((each) => sweep.add(each), (each) => sweep.delete(each));
  // With a Set in the sweep: about 1,700 bytes more per item (its whole payload); with slots: none.
  const payloadBytes = payloadLength * 4; // a small integer takes 4 bytes at least
  assert.ok(swept - baseline < payloadBytes / 4, `${Math.round(swept)} bytes promoted per deleted item, ${Math.round(baseline)} without the sweep`);
});
