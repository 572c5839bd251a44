// A Redis that stops answering (SIGSTOP) with node-redis's per-command timeout off: deadline() still answers 503 in
// time, answers resume after it, and a stop while Redis is still frozen is bounded by MESSAGES_SHUTDOWN_TIMEOUT_MS.
// That timeout stays off: node-redis creates no timer per command while the service serves (issue 14).
import assert from 'node:assert/strict';
import { createHook } from 'node:async_hooks';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { test, type TestContext } from 'node:test';
import { createClient } from '@redis/client';
import { makeCert, postMessage, readIfExists, request, serveOnOwnRedis, serviceEnv, spawnService, startInProcess, startReady, startRedis, stopChild, tempDir, untilReady, waitFor } from './helpers.ts';

const digestOf = (message: string) => createHash('sha256').update(message).digest('hex');

// The stacks of the timers node-redis's own code creates while `work` runs. Its per-command timeout is an
// AbortSignal.timeout, whose timer is created from the client's commands-queue.js.
async function redisClientTimers(work: () => Promise<void>): Promise<string[]> {
  const stacks: string[] = [];
  const hook = createHook({
    init(_asyncId, type) {
      if (type !== 'Timeout') return;
      const limit = Error.stackTraceLimit;
      Error.stackTraceLimit = 64;
      const site: { stack?: string } = {};
      Error.captureStackTrace(site);
      Error.stackTraceLimit = limit;
      // The PING timer (pingInterval) is one a second per link, not one per command.
      if (/[\\/]@redis[\\/]client[\\/]/.test(site.stack ?? '') && !/setPingTimer/.test(site.stack!)) stacks.push(site.stack!);
    },
  });
  hook.enable();
  try {
    await work();
  } finally {
    hook.disable();
  }
  return stacks;
}

// serveOnOwnRedis with a 300 ms Redis timeout, once /readyz is 200.
async function readyOnOwnRedis(t: TestContext, extra: Record<string, string>) {
  const { redis, cert, app, port } = await serveOnOwnRedis(t, { MESSAGES_REDIS_TIMEOUT_MS: '300', ...extra });
  await untilReady(port, cert.ca);
  return { redis, cert, port, app };
}

test('a stalled Redis costs each request a 503 within MESSAGES_REDIS_TIMEOUT_MS, /readyz says so, and answers resume after it', async (t) => {
  const { redis, cert, port } = await readyOnOwnRedis(t, {});
  const getStored = () => request(port, cert.ca, { path: `/messages/${digestOf('before the stall')}` });
  assert.equal((await postMessage(port, cert.ca, 'before the stall')).status, 201);

  redis.child.kill('SIGSTOP');
  const started = performance.now();
  const replies = await Promise.all([getStored(), postMessage(port, cert.ca, 'during the stall'), getStored()]);
  const elapsedMs = performance.now() - started;
  assert.deepEqual(replies.map((reply) => reply.status), [503, 503, 503]);
  assert.ok(elapsedMs < 2000, `answered after ${elapsedMs.toFixed(0)} ms`);
  const ready = await request(port, cert.ca, { path: '/readyz' });
  assert.deepEqual([ready.status, JSON.parse(ready.body)], [503, { err_msg: 'Redis did not answer within 300 ms; see app.log for the cause' }]);

  redis.child.kill('SIGCONT');
  const reply = await waitFor(async () => {
    const answer = await getStored();
    return answer.status === 200 ? answer : undefined;
  }, 10_000, 'a 200 after Redis resumed');
  assert.equal(reply.body, '{"message":"before the stall"}');
});

test('a stalled Redis keeps at most 2 x MESSAGES_MAX_INFLIGHT abandoned commands queued; past that, a call is a 503 at once', async (t) => {
  const { redis, cert, port } = await readyOnOwnRedis(t, { MESSAGES_MAX_INFLIGHT: '2' });
  redis.child.kill('SIGSTOP');
  // Each of these waits out the Redis timeout, and leaves its SET queued in the client: four fill the queue.
  for (let i = 0; i < 4; i += 1) assert.equal((await postMessage(port, cert.ca, `abandoned ${i}`)).status, 503);
  const started = performance.now();
  assert.equal((await postMessage(port, cert.ca, 'past the queue')).status, 503);
  const elapsedMs = performance.now() - started;
  assert.ok(elapsedMs < 200, `answered after ${elapsedMs.toFixed(0)} ms, not at once`);
  // The link is up, Redis is not answering: /readyz says that, not "not connected" (node-redis's "queue is full").
  const ready = await request(port, cert.ca, { path: '/readyz' });
  assert.deepEqual(JSON.parse(ready.body), { err_msg: 'Redis did not answer within 300 ms; see app.log for the cause' });
});

// A TCP relay to Redis whose open connections can be made silent (bytes dropped both ways, sockets kept open), as a
// peer gone behind a firewall or a NAT looks; connections opened after that are relayed again.
async function silentRelay(t: TestContext, redisPort: number) {
  const relayed = new Set<net.Socket>();
  const silent = new WeakSet<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(redisPort, '127.0.0.1');
    relayed.add(client);
    for (const [from, to] of [[client, upstream], [upstream, client]] as const) {
      from.on('data', (chunk: Buffer) => { if (!silent.has(client)) to.write(chunk); });
      from.on('error', () => to.destroy());
      from.on('close', () => to.destroy());
    }
    client.on('close', () => relayed.delete(client));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    for (const client of relayed) client.destroy();
    server.close();
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    silence: () => { for (const client of relayed) silent.add(client); },
  };
}

test('a Redis link that goes silent (no reset, no reply) is cut and opened again: answers resume without a restart', { timeout: 30_000 }, async (t) => {
  const dir = tempDir();
  const [redis, cert] = await Promise.all([startRedis(), makeCert(dir)]);
  t.after(() => redis.stop());
  const relay = await silentRelay(t, redis.port);
  // Calls keep the link writing until 2 x MESSAGES_MAX_INFLIGHT abandoned commands fill its queue: 4 here.
  const env = serviceEnv({ redis, cert, dir }, {
    MESSAGES_REDIS_PORT: String(relay.port), MESSAGES_REDIS_TIMEOUT_MS: '300', MESSAGES_MAX_INFLIGHT: '2',
  });
  const app = await startReady(env);
  t.after(() => app.stop());
  assert.equal((await postMessage(app.service.port, cert.ca, 'before the silence')).status, 201);
  relay.silence();
  assert.equal((await postMessage(app.service.port, cert.ca, 'during the silence')).status, 503);
  const started = performance.now();
  await waitFor(async () => (await postMessage(app.service.port, cert.ca, 'after the silence')).status === 201, 15_000, 'a 201 on a new link');
  t.diagnostic(`201 again ${Math.round(performance.now() - started)} ms after the first 503`);
  const down = readIfExists(path.join(dir, 'logs', 'app.log')).split('\n').filter((line) => line.includes('"event":"redis_down"'));
  assert.equal(down.length, 1, down.join('\n'));
  assert.match(down[0]!, /did not answer in time/);
});

test('a Redis that takes the connection but never answers its handshake is reported down, with a hint', { timeout: 30_000 }, async (t) => {
  const dir = tempDir();
  const [redis, cert] = await Promise.all([startRedis(), makeCert(dir)]);
  t.after(async () => {
    redis.child.kill('SIGCONT');
    await redis.stop();
  });
  redis.child.kill('SIGSTOP'); // the kernel still accepts connections on its port
  const app = await startInProcess(serviceEnv({ redis, cert, dir }, { MESSAGES_REDIS_TIMEOUT_MS: '300' }));
  t.after(() => app.stop());
  const appLog = path.join(dir, 'logs', 'app.log');
  await waitFor(() => readIfExists(appLog).includes('"event":"redis_down"'), 15_000, 'redis_down in app.log');
  assert.match(readIfExists(appLog), /"event":"redis_down".*did not answer in time/);
  redis.child.kill('SIGCONT');
  await waitFor(() => readIfExists(appLog).includes('"event":"redis_up"'), 15_000, 'redis_up once Redis answers');
});

test('a Redis link that keeps dropping (Redis cuts it over its output-buffer limit) logs at most one redis_down per 10 s, with a count', { timeout: 30_000 }, async (t) => {
  const dir = tempDir();
  // Past 100 kB of replies owed to it, Redis closes a client's connection at once.
  const [redis, cert] = await Promise.all([startRedis(['--client-output-buffer-limit', 'normal 100kb 100kb 0']), makeCert(dir)]);
  t.after(() => redis.stop());
  const app = await startReady(serviceEnv({ redis, cert, dir }));
  t.after(() => app.stop());
  const large = 'z'.repeat(300_000);
  assert.equal((await postMessage(app.service.port, cert.ca, large)).status, 201);
  const appLog = path.join(dir, 'logs', 'app.log');
  const downs = () => readIfExists(appLog).split('\n').filter((line) => line.includes('"event":"redis_down"'));
  // Each wave of GETs owes more than the limit, so Redis drops the link, which reconnects at once: 10 outages.
  for (let wave = 0; wave < 10; wave += 1) {
    const before = downs().length;
    await Promise.all(Array.from({ length: 5 }, () => request(app.service.port, cert.ca, { path: `/messages/${digestOf(large)}` })));
    await waitFor(async () => (await request(app.service.port, cert.ca, { path: '/readyz' })).status === 200, 5000, 'ready again');
    if (wave === 0) assert.ok(downs().length > before, 'the first outage logged');
  }
  assert.equal(downs().length, 1, downs().join('\n'));
  assert.match(downs()[0]!, /closed the connection: if Redis runs, its log says why \(client-output-buffer-limit/);
  // Held back, not lost: once 10 s have passed, the next outage is logged with the count of those held back.
  await new Promise((resolve) => setTimeout(resolve, 10_000));
  await Promise.all(Array.from({ length: 5 }, () => request(app.service.port, cert.ca, { path: `/messages/${digestOf(large)}` })));
  await waitFor(() => downs().length === 2, 5000, 'a second redis_down line');
  assert.ok(Number(JSON.parse(downs()[1]!).suppressed) >= 5, downs()[1]);
});

test('a stop while Redis is still frozen, with commands outstanding, ends within MESSAGES_SHUTDOWN_TIMEOUT_MS', { timeout: 20_000 }, async (t) => {
  const { redis, cert, port, app } = await readyOnOwnRedis(t, { MESSAGES_SHUTDOWN_TIMEOUT_MS: '1500' });
  redis.child.kill('SIGSTOP');
  assert.deepEqual((await Promise.all([postMessage(port, cert.ca, 'frozen 1'), postMessage(port, cert.ca, 'frozen 2')])).map((r) => r.status), [503, 503]);
  const started = performance.now();
  await app.stop();
  const elapsedMs = performance.now() - started;
  assert.ok(elapsedMs < 1500 + 500, `stop() took ${elapsedMs.toFixed(0)} ms`);
});

test('SIGTERM while Redis is frozen, with a command outstanding, exits 0 within MESSAGES_SHUTDOWN_TIMEOUT_MS', { timeout: 20_000 }, async (t) => {
  const dir = tempDir();
  const [redis, cert] = await Promise.all([startRedis(), makeCert(dir)]);
  const service = await spawnService(serviceEnv({ redis, cert, dir }, { MESSAGES_REDIS_TIMEOUT_MS: '300', MESSAGES_SHUTDOWN_TIMEOUT_MS: '1500' }));
  t.after(async () => {
    await stopChild(service.child, 'SIGKILL');
    redis.child.kill('SIGCONT');
    await redis.stop();
  });
  await untilReady(service.port, cert.ca);
  redis.child.kill('SIGSTOP');
  assert.equal((await postMessage(service.port, cert.ca, 'outstanding at the stop')).status, 503);
  const exited = once(service.child, 'exit');
  const started = performance.now();
  service.child.kill('SIGTERM');
  const timer = setTimeout(() => service.child.kill('SIGKILL'), 10_000);
  const [code] = await exited;
  clearTimeout(timer);
  const elapsedMs = performance.now() - started;
  assert.equal(code, 0);
  assert.ok(elapsedMs < 1500 + 1000, `exited ${elapsedMs.toFixed(0)} ms after SIGTERM`);
});

test('node-redis with its default options creates a timer per command, which redisClientTimers() sees', async (t) => {
  const redis = await startRedis();
  const client = createClient({ socket: { host: '127.0.0.1', port: redis.port } });
  t.after(async () => {
    client.destroy();
    await redis.stop();
  });
  await client.connect();
  const stacks = await redisClientTimers(async () => {
    for (let i = 0; i < 20; i += 1) await client.get(`messages:${digestOf(String(i))}`);
  });
  assert.equal(stacks.length, 20);
});

// Regression (issue 14): a per-command AbortSignal.timeout cost about a third of a GET's CPU.
test('the service\'s Redis client creates no timer while it answers POSTs and GETs (commandOptions timeout 0)', async (t) => {
  const { cert, port } = await serveOnOwnRedis(t);
  await untilReady(port, cert.ca);
  const statuses: number[] = [];
  const stacks = await redisClientTimers(async () => {
    for (let i = 0; i < 20; i += 1) {
      statuses.push((await postMessage(port, cert.ca, `timer check ${i}`)).status);
      statuses.push((await request(port, cert.ca, { path: `/messages/${digestOf(`timer check ${i}`)}` })).status);
    }
  });
  assert.deepEqual(statuses, Array.from({ length: 20 }, () => [201, 200]).flat());
  assert.equal(stacks.length, 0, `node-redis created ${stacks.length} timers for 40 commands, the first from:\n${stacks[0]}`);
});
