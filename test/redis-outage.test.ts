// Redis being down: the service starts anyway, says why in app.log and /readyz, answers 503 fast, recovers by itself.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { makeCert, postMessage, readIfExists, request, serviceEnv, startInProcess, startRedis, tempDir, waitFor, type Cert, type InProcess, type RedisServer } from './helpers.ts';

let redis: RedisServer;
let cert: Cert;
let app: InProcess;
let appLogFile: string;

before(async () => {
  const dir = tempDir();
  [redis, cert] = await Promise.all([startRedis(), makeCert(dir)]);
  // Redis goes away before the service starts: the start must not depend on it.
  await redis.stop();
  app = await startInProcess(serviceEnv({ redis, cert, dir }));
  appLogFile = path.join(dir, 'logs', 'app.log');
});

after(async () => {
  await app.stop();
  await redis.stop();
});

const port = () => app.service.port;

test('starts and answers /healthz while Redis is down', async () => {
  assert.equal((await request(port(), cert.ca, { path: '/healthz' })).status, 200);
});

test('answers /readyz with 503 and Retry-After while Redis is down', async () => {
  const reply = await request(port(), cert.ca, { path: '/readyz' });
  assert.equal(reply.status, 503);
  assert.equal(reply.headers['retry-after'], '1');
  assert.match(JSON.parse(reply.body).err_msg, /Redis is not connected/);
});

test('says in app.log what is missing and how to fix it', async () => {
  const line = await waitFor(() => readIfExists(appLogFile).split('\n').find((l) => l.includes('"redis_down"')), 10_000, 'redis_down in app.log');
  const entry = JSON.parse(line) as Record<string, string>;
  assert.equal(entry.level, 'warn');
  assert.equal(entry.target, `127.0.0.1:${redis.port}`);
  assert.match(entry.cause!, /ECONNREFUSED/);
  assert.match(entry.hint!, /start redis-server .*MESSAGES_REDIS_HOST/);
});

test('logs the outage once, not once per reconnect attempt', async () => {
  await waitFor(() => readIfExists(appLogFile).includes('"redis_down"'), 10_000, 'redis_down');
  // A stand-in on Redis's port counts the reconnect attempts, each closed at once (another cause, the same outage).
  let attempts = 0;
  const standIn = net.createServer((socket) => {
    attempts += 1;
    socket.destroy();
  });
  standIn.listen(redis.port, '127.0.0.1');
  await once(standIn, 'listening');
  try {
    await waitFor(() => attempts >= 3, 15_000, 'three reconnect attempts');
  } finally {
    standIn.close();
    await once(standIn, 'close');
  }
  const downs = readIfExists(appLogFile).split('\n').filter((l) => l.includes('"redis_down"'));
  assert.equal(downs.length, 1);
});

test('answers POST and GET with 503 and Retry-After within 2 s while Redis is down', async () => {
  for (const send of [
    () => postMessage(port(), cert.ca, 'during outage'),
    () => request(port(), cert.ca, { path: `/messages/${'a'.repeat(64)}` }),
  ]) {
    const started = Date.now();
    const reply = await send();
    assert.ok(Date.now() - started < 2000, `answered after ${Date.now() - started} ms`);
    assert.equal(reply.status, 503);
    assert.match(String(reply.headers['retry-after']), /^[1-5]$/);
    assert.deepEqual(JSON.parse(reply.body), { err_msg: 'Storage is unavailable, retry later' });
  }
});

test('spreads the Retry-After of refused requests over 1 to 5 s, so that clients do not all come back in the same second', async () => {
  const replies = await Promise.all(Array.from({ length: 30 }, (_, i) => postMessage(port(), cert.ca, `spread ${i}`)));
  const seconds = new Set(replies.map((reply) => reply.headers['retry-after']));
  assert.ok(replies.every((reply) => reply.status === 503));
  assert.ok([...seconds].every((value) => /^[1-5]$/.test(String(value))), JSON.stringify([...seconds]));
  assert.ok(seconds.size >= 3, `Retry-After took only ${JSON.stringify([...seconds])}`);
});

test('serves again within 5 s of Redis starting, without a restart', async () => {
  await redis.start();
  const started = Date.now();
  await waitFor(async () => (await postMessage(port(), cert.ca, 'after outage')).status === 201, 5000, '201 after Redis returned');
  assert.ok(Date.now() - started <= 5000);
  await waitFor(() => readIfExists(appLogFile).includes('"redis_up"'), 5000, 'redis_up in app.log');
  assert.equal((await request(port(), cert.ca, { path: '/readyz' })).status, 200);
});

test('answers 503 when Redis stops mid-run, then recovers by itself when it returns', async () => {
  await waitFor(async () => (await postMessage(port(), cert.ca, 'before stop')).status === 201, 5000, 'Redis serving');
  await redis.stop('SIGKILL');
  const during = await waitFor(async () => {
    const reply = await postMessage(port(), cert.ca, 'while stopped');
    return reply.status === 503 ? reply : undefined;
  }, 5000, '503 after SIGKILL');
  assert.match(String(during.headers['retry-after']), /^[1-5]$/);
  await redis.start();
  await waitFor(async () => (await postMessage(port(), cert.ca, 'after restart')).status === 201, 5000, '201 after restart');
});
