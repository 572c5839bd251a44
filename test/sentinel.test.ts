// Sentinel mode: the service follows a SIGKILLed master's failover within 1 s of the sentinels' +switch-master, and
// answers 503 fast meanwhile; each run prints its timeline. With MIN_REPLICAS=1 no acknowledged write is lost, and
// the same run with MIN_REPLICAS=0 shows what WAIT buys.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { digestOf } from '../lib/store.ts';
import { freePort, makeCert, postMessage, request, serviceEnv, startInProcess, stopChild, tempDir, untilReady, waitFor, type InProcess } from './helpers.ts';
import { get, info, inParallel, keepAliveAgent, post, redisCli, startGuardedSentinel, startReplicationGroup, watchSwitchMaster, type ReplicationGroup } from './redis-fixtures.ts';

const writers = 4;

// reached: the master took the write (a 201, or a 503 because too few replicas acknowledged it).
interface Outcome { message: string; status: number; reached: boolean; startedAt: number; endedAt: number }

// What a run measured. Times are in ms after the SIGKILL; the sentinels' are as their `+switch-master` reached a
// subscriber in this test.
interface RunNumbers {
  created: number; unavailable: number; lost: number; createdWhileStalled: number;
  switchMs: number; sentinelsMs: number[]; masterChangedMs: number; firstReachedSentMs: number; replicaOnlineMs: number | undefined; first201Ms: number;
  slowestCaughtAtKillMs: number; slowestDuringOutageMs: number;
}

// The events of an app.log so far, one object per line.
const appLogEvents = (logDir: string): Array<Record<string, string>> =>
  fs.readFileSync(path.join(logDir, 'app.log'), 'utf8').split('\n').filter((line) => line !== '').map((line) => JSON.parse(line));

async function failoverUnderLoad(t: TestContext, minReplicas: number): Promise<{ numbers: RunNumbers; outcomes: Outcome[] }> {
  const dir = tempDir();
  let group: ReplicationGroup | undefined;
  let app: InProcess | undefined;
  t.after(async () => {
    await app?.stop();
    await group?.stop();
  });
  const [started, cert] = await Promise.all([startReplicationGroup(), makeCert(dir)]);
  group = started;
  const watch = await watchSwitchMaster(group);
  t.after(() => watch.stop());
  const agent = keepAliveAgent(cert.ca, writers);
  t.after(() => agent.destroy());
  app = await startInProcess(serviceEnv({ redis: group.master, cert, dir }, {
    MESSAGES_REDIS_SENTINELS: group.sentinelList, MESSAGES_REDIS_SENTINEL_NAME: group.name, MESSAGES_REDIS_MIN_REPLICAS: String(minReplicas),
  }));
  const port = app.service.port;

  const outcomes: Outcome[] = [];
  let stopping = false;
  let sequence = 0;
  const writer = async () => {
    while (!stopping) {
      const message = `min replicas ${minReplicas}, message ${sequence++}`;
      const startedAt = Date.now();
      const { status, body } = await post(port, cert.ca, agent, message).catch(() => ({ status: 0, body: '' }));
      outcomes.push({ message, status, reached: status === 201 || body.includes('required replicas'), startedAt, endedAt: Date.now() });
      // A client honouring Retry-After waits before trying again; 100 ms keeps the run short.
      if (status !== 201) await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };
  const load = Promise.all(Array.from({ length: writers }, writer));
  const acknowledged = () => outcomes.filter((outcome) => outcome.status === 201);

  try {
    await waitFor(() => acknowledged().length >= 20, 20_000, '20 acknowledged writes');
    // On loopback a replica is so close behind that a master almost never acknowledges a write the replica lacks.
    // The link stalls before the master dies, as a partitioned or congested one would: what the master takes from
    // now on never reaches the replica that will replace it.
    group.link.stall();
    const stalledAt = Date.now();
    await waitFor(() => outcomes.filter((outcome) => outcome.startedAt > stalledAt).length >= 8, 20_000, '8 answers to writes sent over the stalled link');
    const killingAt = Date.now();
    await group.master.stop('SIGKILL');
    const killedAt = Date.now();
    const switched = await waitFor(() => watch.first(), 30_000, 'a sentinel to announce +switch-master');
    assert.equal(switched.to, group.replica.port);
    // A supervisor brings a replacement replica up behind the new master, as after losing any node.
    const added = await group.addReplica(switched.to);
    let replicaOnlineAt: number | undefined;
    if (minReplicas > 0) {
      replicaOnlineAt = await waitFor(async () => {
        const line = (await info(switched.to, 'replication')).get('slave0') ?? '';
        return line.includes(`port=${added.port},`) && line.includes('state=online') ? Date.now() : undefined;
      }, 30_000, 'the replacement replica online');
    }
    const masterChangedAt = await waitFor(() => {
      const line = appLogEvents(path.join(dir, 'logs')).find((event) => event.event === 'redis_master_changed');
      return line === undefined ? undefined : Date.parse(line.time!);
    }, 30_000, 'redis_master_changed in app.log');
    const reached = await waitFor(() => outcomes.find((outcome) => outcome.reached && outcome.startedAt >= killedAt), 30_000, 'a write sent after the kill to reach the new master');
    const back = await waitFor(() => acknowledged().find((outcome) => outcome.startedAt >= killedAt), 30_000, 'a 201 for a write sent after the kill');
    const firstBefore = acknowledged()[0]!;
    await waitFor(async () => {
      const reply = await get(port, cert.ca, agent, digestOf(firstBefore.message));
      return reply.status === 200;
    }, 30_000, 'a 200 after the failover');
    stopping = true;
    await load;

    const created = acknowledged();
    const read = await inParallel(created, 8, (outcome) => get(port, cert.ca, agent, digestOf(outcome.message)));
    const lost = read.filter((reply, i) => reply.status !== 200 || JSON.parse(reply.body).message !== created[i]!.message).length;
    const unavailable = outcomes.filter((outcome) => outcome.status === 503);
    const caughtAtKill = unavailable.filter((outcome) => outcome.startedAt < killingAt && outcome.endedAt >= killingAt);
    const duringOutage = unavailable.filter((outcome) => outcome.startedAt >= killedAt && outcome.endedAt <= masterChangedAt);
    const numbers: RunNumbers = {
      created: created.length,
      unavailable: unavailable.length,
      lost,
      createdWhileStalled: created.filter((outcome) => outcome.startedAt > stalledAt && outcome.endedAt <= killedAt).length,
      switchMs: switched.at - killedAt,
      sentinelsMs: [...watch.seen.values()].map((seen) => seen.at - killedAt).sort((a, b) => a - b),
      masterChangedMs: masterChangedAt - killedAt,
      firstReachedSentMs: reached.startedAt - killedAt,
      replicaOnlineMs: replicaOnlineAt === undefined ? undefined : replicaOnlineAt - killedAt,
      first201Ms: back.endedAt - killedAt,
      slowestCaughtAtKillMs: Math.max(0, ...caughtAtKill.map((outcome) => outcome.endedAt - killingAt)),
      slowestDuringOutageMs: Math.max(0, ...duringOutage.map((outcome) => outcome.endedAt - outcome.startedAt)),
    };
    t.diagnostic(`MIN_REPLICAS=${minReplicas}: SIGKILL at 0 ms; +switch-master at ${numbers.switchMs} ms ` +
      `(each sentinel: ${numbers.sentinelsMs.join(', ')} ms); redis_master_changed at ${numbers.masterChangedMs} ms; ` +
      `${numbers.replicaOnlineMs === undefined ? '' : `first write the new master took sent at ${numbers.firstReachedSentMs} ms; replacement replica online at ${numbers.replicaOnlineMs} ms; `}` +
      `first 201 at ${numbers.first201Ms} ms. ${numbers.created} acknowledged (201), ${numbers.unavailable} refused (503), ` +
      `${numbers.lost} acknowledged but lost (${numbers.createdWhileStalled} acknowledged while the replica link was stalled); ` +
      `503s caught in flight at the kill (${caughtAtKill.length}) ended by ${numbers.slowestCaughtAtKillMs} ms after it, ` +
      `those sent during the outage (${duringOutage.length}) took at most ${numbers.slowestDuringOutageMs} ms`);
    return { numbers, outcomes };
  } finally {
    stopping = true;
    await load;
  }
}

// A 503 a client can tell is coming (the connection to the master is gone) must not wait out the deadline.
const fastMs = 250;

test('with MIN_REPLICAS=1: follows the master and writes reach it within 1 s of +switch-master, 503s fast meanwhile, loses no acknowledged write', { timeout: 90_000 }, async (t) => {
  const { numbers, outcomes } = await failoverUnderLoad(t, 1);
  assert.equal(numbers.lost, 0);
  assert.ok(numbers.masterChangedMs - numbers.switchMs <= 1000, `redis_master_changed ${numbers.masterChangedMs - numbers.switchMs} ms after +switch-master`);
  // Its answer waits for WAIT: when the write was sent tells when writes reached the new master again.
  assert.ok(numbers.firstReachedSentMs - numbers.switchMs <= 1000, `the first write the new master took was sent ${numbers.firstReachedSentMs - numbers.switchMs} ms after +switch-master`);
  // A 201 also needs a replica to acknowledge: Redis takes up to its 1 s REPLCONF ACK period for a replica that
  // has just come online, and WAITs queue behind one another on the durable connection.
  assert.ok(numbers.first201Ms - numbers.replicaOnlineMs! <= 3000, `first 201 ${numbers.first201Ms - numbers.replicaOnlineMs!} ms after the new master had a replica`);
  assert.ok(numbers.slowestCaughtAtKillMs < fastMs, `a write caught in flight at the kill was answered ${numbers.slowestCaughtAtKillMs} ms after it`);
  assert.ok(numbers.slowestDuringOutageMs < fastMs, `a 503 during the outage took ${numbers.slowestDuringOutageMs} ms`);
  assert.deepEqual(outcomes.filter((outcome) => outcome.status !== 201 && outcome.status !== 503), []);
});

test('with MIN_REPLICAS=0: follows the master and writes again within 1 s of +switch-master, 503s fast meanwhile', { timeout: 90_000 }, async (t) => {
  const { numbers, outcomes } = await failoverUnderLoad(t, 0);
  assert.ok(numbers.masterChangedMs - numbers.switchMs <= 1000, `redis_master_changed ${numbers.masterChangedMs - numbers.switchMs} ms after +switch-master`);
  assert.ok(numbers.first201Ms - numbers.switchMs <= 1000, `first 201 ${numbers.first201Ms - numbers.switchMs} ms after +switch-master`);
  assert.ok(numbers.slowestCaughtAtKillMs < fastMs, `a write caught in flight at the kill was answered ${numbers.slowestCaughtAtKillMs} ms after it`);
  assert.ok(numbers.slowestDuringOutageMs < fastMs, `a 503 during the outage took ${numbers.slowestDuringOutageMs} ms`);
  assert.deepEqual(outcomes.filter((outcome) => outcome.status !== 201 && outcome.status !== 503), []);
});

test('starts while no sentinel answers, answers 503 within 2 s and logs why', async (t) => {
  const dir = tempDir();
  const [cert, sentinelPort] = await Promise.all([makeCert(dir), freePort()]);
  const app = await startInProcess({
    MESSAGES_PORT: '0', MESSAGES_BIND: '127.0.0.1', MESSAGES_CERT_FILE: cert.certFile, MESSAGES_KEY_FILE: cert.keyFile,
    MESSAGES_LOG_DIR: path.join(dir, 'logs'), MESSAGES_REDIS_SENTINELS: `127.0.0.1:${sentinelPort}`,
  });
  t.after(() => app.stop());
  const started = Date.now();
  assert.equal((await postMessage(app.service.port, cert.ca, 'no sentinel')).status, 503);
  assert.ok(Date.now() - started < 2000, `answered after ${Date.now() - started} ms`);
  assert.equal((await request(app.service.port, cert.ca, { path: '/readyz' })).status, 503);
  const down = await waitFor(() => appLogEvents(path.join(dir, 'logs')).find((line) => line.event === 'redis_down'), 20_000, 'redis_down in app.log');
  assert.match(down.cause!, /ECONNREFUSED/);
  assert.equal(down.hint, `nothing listens at sentinels 127.0.0.1:${sentinelPort}: start the sentinels or check MESSAGES_REDIS_SENTINELS`);
});

test('authenticates to sentinels that require a password (MESSAGES_REDIS_SENTINEL_PASSWORD); without it, 503 and a hint', async (t) => {
  const password = 'sentinel-secret-4f1c';
  const dir = tempDir();
  const [cert, guarded] = await Promise.all([makeCert(dir), startGuardedSentinel(password)]);
  t.after(() => guarded.stop());
  const start = async (logDir: string, extra: Record<string, string>) => {
    const app = await startInProcess({
      MESSAGES_PORT: '0', MESSAGES_BIND: '127.0.0.1', MESSAGES_CERT_FILE: cert.certFile, MESSAGES_KEY_FILE: cert.keyFile,
      MESSAGES_LOG_DIR: path.join(dir, logDir), MESSAGES_REDIS_SENTINELS: guarded.sentinelList, MESSAGES_REDIS_SENTINEL_NAME: guarded.name, ...extra,
    });
    t.after(() => app.stop());
    return app;
  };
  const appLog = (logDir: string) => fs.readFileSync(path.join(dir, logDir, 'app.log'), 'utf8');

  const withPassword = await start('with', { MESSAGES_REDIS_SENTINEL_PASSWORD: password });
  // The sentinels' redis_up comes as soon as one answers; the master's once its connections are ready.
  await waitFor(() => appLogEvents(path.join(dir, 'with')).find((line) => line.event === 'redis_up' && line.target!.startsWith('master ')), 20_000, 'redis_up for the master');
  const created = await postMessage(withPassword.service.port, cert.ca, 'behind a guarded sentinel');
  assert.equal(created.status, 201);
  assert.equal((await request(withPassword.service.port, cert.ca, { path: `/messages/${digestOf('behind a guarded sentinel')}` })).status, 200);

  const without = await start('without', {});
  assert.equal((await postMessage(without.service.port, cert.ca, 'no password')).status, 503);
  const down = await waitFor(() => appLogEvents(path.join(dir, 'without')).find((line) => line.event === 'redis_down'), 20_000, 'redis_down in app.log');
  assert.match(down.cause!, /NOAUTH|WRONGPASS|auth/i);
  assert.match(down.hint!, /MESSAGES_REDIS_SENTINEL_PASSWORD/);
  for (const logDir of ['with', 'without']) assert.ok(!appLog(logDir).includes(password), `the password in ${logDir}/app.log`);
});

test('with READ_FROM_REPLICAS=1: GETs reach the replica, and one it lacks (a lagging link) or leaves unanswered (a frozen replica) is read from the master', { timeout: 60_000 }, async (t) => {
  const dir = tempDir();
  let app: InProcess | undefined;
  const [group, cert] = await Promise.all([startReplicationGroup(), makeCert(dir)]);
  t.after(async () => {
    await app?.stop();
    await group.stop();
  });
  app = await startInProcess(serviceEnv({ redis: group.master, cert, dir }, {
    MESSAGES_REDIS_SENTINELS: group.sentinelList, MESSAGES_REDIS_SENTINEL_NAME: group.name, MESSAGES_REDIS_READ_FROM_REPLICAS: '1',
  }));
  const port = app.service.port;
  await untilReady(port, cert.ca, '/readyz 200', 20_000);
  const replicaGets = async () => Number(/calls=(\d+)/.exec((await info(group.replica.port, 'commandstats')).get('cmdstat_get') ?? '')?.[1] ?? 0);
  const read = async (message: string) => {
    const reply = await request(port, cert.ca, { path: `/messages/${digestOf(message)}` });
    assert.equal(reply.status, 200, `GET of "${message}"`);
    assert.equal(JSON.parse(reply.body).message, message);
  };

  const messages = Array.from({ length: 20 }, (_, i) => `read from a replica ${i}`);
  for (const message of messages) assert.equal((await postMessage(port, cert.ca, message)).status, 201);
  await waitFor(async () => (await redisCli(group.replica.port, 'GET', `messages:${digestOf(messages.at(-1)!)}`)) === messages.at(-1), 20_000, 'the replica to have the writes');
  const before = await replicaGets();
  for (const message of messages) await read(message);
  assert.ok(await replicaGets() > before, 'no GET reached the replica');

  // From here on the replica gets nothing: every read of the new message that goes to it misses there.
  group.link.stall();
  const fresh = 'written while the replica lags';
  assert.equal((await postMessage(port, cert.ca, fresh)).status, 201);
  const lagging = await replicaGets();
  for (let i = 0; i < 10; i += 1) await read(fresh);
  assert.ok(await replicaGets() > lagging, 'no GET of the new message reached the replica');
  assert.equal(await redisCli(group.replica.port, 'GET', `messages:${digestOf(fresh)}`), '', 'the replica has the new message after all');

  // Regression: a replica that hangs (SIGSTOP, no reset) made the reads sent to it wait the deadline, then 503.
  group.replica.child.kill('SIGSTOP');
  for (const message of messages) {
    const started = Date.now();
    await read(message);
    assert.ok(Date.now() - started < app.config.redis.timeoutMs + 500, `answered after ${Date.now() - started} ms`);
  }
  group.replica.child.kill('SIGCONT');
  const hung = appLogEvents(path.join(dir, 'logs')).find((line) => line.event === 'redis_replica_timeout');
  assert.match(hung?.hint ?? 'no redis_replica_timeout in app.log', /the read went to the master/);

  // A replica that dies costs only its share of the reads: they go to the master, and app.log says so, not that the
  // sentinels or the master are down.
  await stopChild(group.replica.child, 'SIGKILL');
  for (const message of [...messages.slice(0, 5), fresh]) await read(message);
  assert.equal((await request(port, cert.ca, { path: '/readyz' })).status, 200);
  const events = () => appLogEvents(path.join(dir, 'logs'));
  const warning = await waitFor(() => events().find((line) => line.event === 'redis_replica_error'), 20_000, 'redis_replica_error in app.log');
  assert.match(warning.hint!, /reads go to the master/);
  assert.deepEqual(events().filter((line) => line.event === 'redis_down'), []);
});
