// READ_FROM_REPLICAS's fallback on its own: a replica's miss, failure or silence sends the read to the master within
// the one Redis deadline, and a master that cannot be asked (none known) fails the read instead of the process.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createAppLog } from '../lib/app-log.ts';
import { replicaFirst } from '../lib/replica-reads.ts';

const logged = () => {
  const lines: Array<Record<string, unknown>> = [];
  return { lines, log: createAppLog((line) => lines.push(JSON.parse(line))) };
};
const never = () => new Promise<string | null>(() => {});

test('a replica\'s value is the answer; its miss or failure asks the master at once', async () => {
  const { lines, log } = logged();
  const read = replicaFirst(1000, log, 'replicas');
  let asked = 0;
  const master = async () => {
    asked += 1;
    return 'from the master';
  };
  assert.equal(await read(Promise.resolve('from the replica'), master), 'from the replica');
  assert.equal(asked, 0);
  const started = performance.now();
  assert.equal(await read(Promise.resolve(null), master), 'from the master');
  assert.equal(await read(Promise.reject(new Error('Socket closed unexpectedly')), master), 'from the master');
  assert.ok(performance.now() - started < 250, `took ${performance.now() - started} ms`);
  assert.equal(asked, 2);
  assert.deepEqual(lines, []);
});

test('a replica that never answers: the master is asked after half the timeout, and one warning says so', async () => {
  const { lines, log } = logged();
  const read = replicaFirst(400, log, 'replicas of cluster a:1');
  const started = performance.now();
  const answers = await Promise.all([1, 2, 3].map(() => read(never(), async () => 'from the master')));
  const elapsed = performance.now() - started;
  assert.deepEqual(answers, ['from the master', 'from the master', 'from the master']);
  assert.ok(elapsed >= 200 && elapsed < 400, `answered after ${elapsed} ms`);
  assert.deepEqual(lines.map((line) => [line.event, line.target, line.timeoutMs, line.missed]),
    [['redis_replica_timeout', 'replicas of cluster a:1', 200, 1]]);
  assert.match(String(lines[0]!.hint), /the read went to the master/);
});

test('a master that cannot be asked (it throws, as while no master is known) fails the read, never the process', async () => {
  const read = replicaFirst(100, logged().log, 'replicas');
  const noMaster = () => {
    throw new Error('The connection to Redis is not ready');
  };
  await assert.rejects(read(never(), noMaster), /not ready/);
  await assert.rejects(read(Promise.resolve(null), noMaster), /not ready/);
});
