// The sweep behind Redis deadlines and body rates: every registered item is looked at, none deleted, and a deleted
// item is garbage at once (a Set kept finished requests alive through young collections: ~500 bytes promoted each).
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { createSweep, type Swept } from '../lib/sweep.ts';

interface Item extends Swept { id: number; payload: number[] }
const item = (id: number, payloadLength = 0): Item =>
  ({ slot: -1, id, payload: new Array<number>(payloadLength).fill(id) });

test('a sweep looks at each registered item once a tick, at none deleted, as slots are reused: no more slots than items registered at once', async () => {
  const looks = new Map<number, number>();
  const sweep = createSweep<Item>(5, (each) => looks.set(each.id, (looks.get(each.id) ?? 0) + 1));
  const items = Array.from({ length: 300 }, (_, id) => item(id));
  let most = 0;
  let highestSlot = -1;
  // Calls start and finish interleaved, a few out of order, as on several Redis connections.
  for (const [at, each] of items.entries()) {
    sweep.add(each);
    most = Math.max(most, items.filter((one) => one.slot !== -1).length);
    highestSlot = Math.max(highestSlot, each.slot);
    if (at >= 10 && at % 7 !== 0) sweep.delete(items[at - 10]!);
  }
  assert.equal(highestSlot, most - 1, `slot ${highestSlot} with at most ${most} registered at once`);
  sweep.add(items[298]!); // twice is harmless, as is deleting twice
  sweep.delete(items[299]!);
  sweep.delete(items[299]!);
  const registered = items.filter((each) => each.slot !== -1).map((each) => each.id);
  await sleep(30);
  assert.deepEqual([...looks.keys()].sort((a, b) => a - b), registered);
  assert.equal(new Set(looks.values()).size, 1, 'every item looked at as often as the others');
  assert.ok(registered.length > 30 && registered.length < 290);
  for (const each of items) sweep.delete(each);
});

test('a look may delete the item it is given, and an item added once all were deleted is looked at', async () => {
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
  const oldSpaceUsed = () =>
    getHeapSpaceStatistics().find((space) => space.space_name === 'old_space')!.space_used_size;
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
  const held = new Set<Item>();
  const baseline = await promotedPerItem(() => {}, () => {});
  // The measure itself: a Set as the sweep had (about 1,900 bytes per item against 300-400, nearly the payload).
  const withSet = await promotedPerItem((each) => held.add(each), (each) => held.delete(each));
  const swept = await promotedPerItem((each) => sweep.add(each), (each) => sweep.delete(each));
  const payloadBytes = payloadLength * 4; // a small integer takes 4 bytes at least
  const per = (bytes: number) => `${Math.round(bytes)} bytes promoted per deleted item`;
  assert.ok(withSet - baseline >= payloadBytes / 4, `with a Set, ${per(withSet)}; without, ${per(baseline)}`);
  assert.ok(swept - baseline < payloadBytes / 4, `with the sweep, ${per(swept)}; without, ${per(baseline)}`);
});
