// Redis Cluster mode: messages spread over three masters and all read back; WAIT goes to the master owning the key's
// slot; a lost replica or master fails only its own slots, fast; a promoted replica serves every acknowledged message.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import type https from 'node:https';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { digestOf } from '../lib/store.ts';
import { freePort, makeCert, request, serviceEnv, startInProcess, tempDir, waitFor, type Cert, type InProcess } from './helpers.ts';
import {
  get, inParallel, info, keepAliveAgent, post, redisCli, startCluster, startClusterNode, startSingleNodeCluster, type Cluster, type Shard,
} from './redis-fixtures.ts';

let cluster: Cluster;
let cert: Cert;
let agent: https.Agent;
// Acknowledges a write once one replica has it, and reads from replicas.
let durable: InProcess;
// The defaults: acknowledges once the master has it, reads from masters.
let plain: InProcess;
const stored: string[] = Array.from({ length: 3000 }, (_, i) => `cluster message ${i}`);

before(async () => {
  const dir = tempDir();
  [cluster, cert] = await Promise.all([startCluster(3, 1), makeCert(dir)]);
  agent = keepAliveAgent(cert.ca, 16);
  const env = (logs: string, extra: Record<string, string>) => serviceEnv({ redis: cluster.nodes[0]!, cert, dir }, {
    MESSAGES_REDIS_CLUSTER_NODES: cluster.seeds, MESSAGES_LOG_DIR: path.join(dir, logs), ...extra,
  });
  durable = await startInProcess(env('durable', { MESSAGES_REDIS_MIN_REPLICAS: '1', MESSAGES_REDIS_READ_FROM_REPLICAS: '1' }));
  plain = await startInProcess(env('plain', {}));
  for (const app of [durable, plain]) {
    await waitFor(async () => (await readyz(app)) === 200, 20_000, '/readyz 200');
  }
});

after(async () => {
  agent?.destroy();
  await durable?.stop();
  await plain?.stop();
  await cluster?.stop();
});

const readyz = async (app: InProcess) => (await request(app.service.port, cert.ca, { path: '/readyz', agent })).status;

async function postTimed(app: InProcess, message: string) {
  const started = Date.now();
  const reply = await post(app.service.port, cert.ca, agent, message);
  return { message, status: reply.status, body: reply.body, elapsedMs: Date.now() - started };
}

async function shardsOf(messages: string[]): Promise<Shard[]> {
  const slots = await cluster.slotsOf(messages.map((message) => `messages:${digestOf(message)}`));
  return slots.map((slot) => cluster.shardOf(slot));
}

test('stores 3000 messages spread over all three masters, each on its replica too, and reads every one back', async () => {
  const posted = await inParallel(stored, 16, (message) => post(durable.service.port, cert.ca, agent, message));
  assert.deepEqual(posted.filter((reply) => reply.status !== 201), []);
  assert.deepEqual(posted.map((reply) => JSON.parse(reply.body).digest), stored.map(digestOf));

  const sizes = await Promise.all(cluster.shards.map(async (shard) => ({
    master: Number(await redisCli(shard.master.port, 'DBSIZE')),
    replica: Number(await redisCli(shard.replica!.port, 'DBSIZE')),
  })));
  for (const size of sizes) {
    assert.ok(size.master > 0, `a master holds no key: ${JSON.stringify(sizes)}`);
    assert.equal(size.replica, size.master);
  }
  assert.equal(sizes.reduce((sum, size) => sum + size.master, 0), stored.length);

  const read = await inParallel(stored, 16, (message) => get(durable.service.port, cert.ca, agent, digestOf(message)));
  assert.deepEqual(read.map((reply) => reply.status === 200 ? JSON.parse(reply.body).message : reply.status), stored);
});

// Regression: GETs sent to a replica that hangs (SIGSTOP, no reset) waited the whole deadline and were 503s.
test('with READ_FROM_REPLICAS=1 a frozen replica costs its reads time, never a 503: they are asked of the master', async (t) => {
  const [shard] = cluster.shards;
  const owned = (await shardsOf(stored)).map((owner, i) => (owner === shard ? stored[i]! : undefined))
    .filter((message) => message !== undefined).slice(0, 40);
  const replicaGets = async () => Number(/calls=(\d+)/.exec((await info(shard!.replica!.port, 'commandstats')).get('cmdstat_get') ?? '')?.[1] ?? 0);
  const before = await replicaGets();
  shard!.replica!.child.kill('SIGSTOP');
  t.after(() => shard!.replica!.child.kill('SIGCONT'));
  const read = await inParallel(owned, 4, async (message) => {
    const started = Date.now();
    const reply = await get(durable.service.port, cert.ca, agent, digestOf(message));
    return { status: reply.status, body: reply.body, elapsedMs: Date.now() - started };
  });
  assert.deepEqual(read.map((reply) => reply.status === 200 ? JSON.parse(reply.body).message : reply.body), owned);
  for (const reply of read) assert.ok(reply.elapsedMs < durable.config.redis.timeoutMs + 500, `answered after ${reply.elapsedMs} ms`);
  shard!.replica!.child.kill('SIGCONT');
  const hung = fs.readFileSync(path.join(durable.config.logDir, 'app.log'), 'utf8').split('\n')
    .find((line) => line.includes('"event":"redis_replica_timeout"'));
  assert.match(hung ?? 'no redis_replica_timeout in app.log', /the read went to the master/);
  // The frozen replica was asked: its reads arrive once it runs again.
  await waitFor(async () => (await replicaGets()) > before, 10_000, 'the replica to have been asked');
});

test('with MIN_REPLICAS=1 answers 503 within 2 s exactly for the slots whose master lost its replica, and still reads them', async () => {
  const [lonely] = cluster.shards;
  await lonely!.replica!.stop('SIGKILL');
  const messages = Array.from({ length: 90 }, (_, i) => `after the replica died ${i}`);
  // Reads run alongside the writes stuck in WAIT: they use other connections, and a read that picked the dead
  // replica falls back to the master.
  const earlier = stored.filter((_, i) => i % 10 === 0);
  const [replies, read] = await Promise.all([
    inParallel(messages, 8, (message) => postTimed(durable, message)),
    inParallel(earlier, 8, (message) => get(durable.service.port, cert.ca, agent, digestOf(message))),
  ]);
  assert.deepEqual(read.map((reply) => reply.status), earlier.map(() => 200));
  const owners = await shardsOf(messages);
  assert.ok(owners.includes(lonely!) && owners.some((owner) => owner !== lonely), 'messages hash to both kinds of shard');
  replies.forEach((reply, i) => {
    if (owners[i] === lonely) {
      assert.equal(reply.status, 503, reply.message);
      // The first WAIT in line reports its count; those queued behind it on the connection reach the deadline.
      assert.match(JSON.parse(reply.body).err_msg, /^(Write reached 0 of 1 required replicas|Storage is unavailable), retry later$/);
      assert.ok(reply.elapsedMs < 2000, `answered after ${reply.elapsedMs} ms`);
    } else {
      assert.equal(reply.status, 201, reply.message);
    }
  });
});

test('a killed master fails only its own slots within 2 s, then its promoted replica serves them with every acknowledged message', async (t) => {
  const failed = cluster.shards[1]!;
  await failed.master.stop('SIGKILL');
  const killedAt = Date.now();
  const messages = Array.from({ length: 60 }, (_, i) => `after the master died ${i}`);
  const replies = await inParallel(messages, 8, (message) => postTimed(plain, message));
  const owners = await shardsOf(messages);
  replies.forEach((reply, i) => {
    if (owners[i] === failed) {
      assert.equal(reply.status, 503, reply.message);
      assert.ok(reply.elapsedMs < 2000, `answered after ${reply.elapsedMs} ms`);
    } else {
      assert.equal(reply.status, 201, reply.message);
    }
  });
  assert.equal(await readyz(plain), 503);

  const retry = messages.filter((_, i) => owners[i] === failed);
  await waitFor(async () => (await postTimed(plain, retry[0]!)).status === 201, 30_000, 'a write to the failed slots to succeed');
  t.diagnostic(`writes to the failed master's slots succeeded again ${Date.now() - killedAt} ms after the SIGKILL`);
  assert.equal((await info(failed.replica!.port, 'replication')).get('role'), 'master');
  const again = await inParallel(retry, 8, (message) => postTimed(plain, message));
  assert.deepEqual(again.map((reply) => reply.status), retry.map(() => 201));
  await waitFor(async () => (await readyz(plain)) === 200, 20_000, '/readyz 200');

  // Every message the durable service acknowledged on the failed shard was on the replica that took over.
  const owned = (await shardsOf(stored)).map((owner, i) => (owner === failed ? stored[i]! : undefined)).filter((m) => m !== undefined);
  const read = await inParallel(owned, 16, (message) => get(plain.service.port, cert.ca, agent, digestOf(message)));
  assert.deepEqual(read.map((reply) => reply.status === 200 ? JSON.parse(reply.body).message : reply.status), owned);
});

// Regression: a master that hangs (SIGSTOP: no reset) while requests trickle to its slots kept its link, as each write
// restarted node-redis's socket timeout: its slots stayed 503 long after the cluster had promoted its replica (41 s at
// 2 requests a second with MESSAGES_MAX_INFLIGHT=16; minutes at the default 128).
test('a frozen master under a trickle of requests: its promoted replica serves its slots within 15 s', async (t) => {
  const frozen = cluster.shards[2]!;
  const candidates = Array.from({ length: 300 }, (_, i) => `while the master hangs ${i}`);
  const mine = (await shardsOf(candidates)).map((owner, i) => (owner === frozen ? candidates[i]! : undefined))
    .filter((message) => message !== undefined);
  frozen.master.child.kill('SIGSTOP');
  t.after(() => frozen.master.child.kill('SIGCONT'));
  const frozenAt = Date.now();
  let next = 0;
  // Two POSTs a second reach the frozen master's slots, as light traffic would.
  await waitFor(async () => {
    const reply = await postTimed(plain, mine[next++ % mine.length]!);
    if (reply.status !== 201) await new Promise((resolve) => setTimeout(resolve, Math.max(0, 500 - reply.elapsedMs)));
    return reply.status === 201;
  }, 15_000, 'a write to the frozen master\'s slots to succeed');
  t.diagnostic(`writes to the frozen master's slots succeeded again ${Date.now() - frozenAt} ms after the SIGSTOP`);
  const log = () => fs.readFileSync(path.join(plain.config.logDir, 'app.log'), 'utf8').split('\n');
  assert.ok(log().some((line) => line.includes('"event":"redis_timeout"')), 'no redis_timeout in app.log');
  // The hung master, dropped from the slot map, is let go: app.log names it and says why.
  const gone = await waitFor(() => log().find((line) => line.includes(`"target":"127.0.0.1:${frozen.master.port}"`) &&
    line.includes('Disconnects client')), 10_000, 'the hung master let go in app.log');
  assert.match(JSON.parse(gone).hint, /no longer list it/);
  assert.equal((await info(frozen.replica!.port, 'replication')).get('role'), 'master');
  // Every message the durable service acknowledged on that shard is on the replica that took over.
  const owned = (await shardsOf(stored)).map((owner, i) => (owner === frozen ? stored[i]! : undefined)).filter((m) => m !== undefined);
  const read = await inParallel(owned, 16, (message) => get(plain.service.port, cert.ca, agent, digestOf(message)));
  assert.deepEqual(read.map((reply) => reply.status === 200 ? JSON.parse(reply.body).message : reply.status), owned);
});

// Regression: a node reached before its slots were assigned left the service at 503 for good, logged as redis_up.
test('connects to a cluster node that serves no slots yet, answers 503 and logs why, then serves once the slots are assigned', async (t) => {
  const dir = tempDir();
  const node = await startClusterNode(await freePort());
  const app = await startInProcess(serviceEnv({ redis: cluster.nodes[0]!, cert, dir }, { MESSAGES_REDIS_CLUSTER_NODES: `127.0.0.1:${node.port}` }));
  t.after(async () => {
    await app.stop();
    await node.stop();
  });
  const appLog = () => fs.readFileSync(path.join(dir, 'logs', 'app.log'), 'utf8');
  const down = await waitFor(() => appLog().split('\n').find((line) => line.includes('"redis_down"')), 20_000, 'redis_down in app.log');
  assert.equal(JSON.parse(down).cause, 'the cluster serves 0 of 16384 slots');
  assert.match(JSON.parse(down).hint, /^the cluster does not serve every slot yet: assign them all/);
  assert.doesNotMatch(appLog(), /"redis_up"/);
  assert.equal((await postTimed(app, 'before the slots')).status, 503);
  assert.equal(await readyz(app), 503);

  await node.assignSlots();
  await waitFor(async () => (await postTimed(app, 'after the slots')).status === 201, 10_000, 'a 201 once the slots are assigned');
  assert.equal(await readyz(app), 200);
  assert.match(appLog(), /"event":"redis_up","pid":\d+,"target":"cluster 127\.0\.0\.1:\d+","masters":\["[^"]*:\d+"\]/);
});

test('starts while no cluster node answers, answers 503 within 2 s and logs why, then serves once a node is up', async (t) => {
  const dir = tempDir();
  const port = await freePort();
  const app = await startInProcess(serviceEnv({ redis: cluster.nodes[0]!, cert, dir }, { MESSAGES_REDIS_CLUSTER_NODES: `127.0.0.1:${port}` }));
  let node: { stop(): Promise<void> } | undefined;
  t.after(async () => {
    await app.stop();
    await node?.stop();
  });
  const started = Date.now();
  const refused = await postTimed(app, 'before the cluster');
  assert.equal(refused.status, 503);
  assert.ok(Date.now() - started < 2000, `answered after ${Date.now() - started} ms`);
  assert.equal(await readyz(app), 503);
  const appLog = () => fs.readFileSync(path.join(dir, 'logs', 'app.log'), 'utf8');
  const down = await waitFor(() => appLog().split('\n').find((line) => line.includes('"redis_down"')), 20_000, 'redis_down in app.log');
  assert.match(JSON.parse(down).cause, /ECONNREFUSED/);
  assert.match(JSON.parse(down).hint, /^nothing listens at cluster 127\.0\.0\.1:\d+: start the node or check MESSAGES_REDIS_CLUSTER_NODES/);

  node = await startSingleNodeCluster(port);
  await waitFor(async () => (await postTimed(app, 'after the cluster')).status === 201, 10_000, 'a 201 once the node is up');
  assert.equal(await readyz(app), 200);
  assert.match(appLog(), /"event":"redis_up","pid":\d+,"target":"cluster 127\.0\.0\.1:\d+"/);
});
