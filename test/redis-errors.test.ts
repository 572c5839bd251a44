// Redis answers with an error (OOM, NOPERM, NOAUTH, READONLY, MISCONF, LOADING): 503 with Retry-After, one throttled
// redis_error line per kind naming the command and what to change (never the key or the value), /readyz 503 with the
// reason, and recovery once Redis takes writes again.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { digestOf } from '../lib/store.ts';
import { freePort, makeCert, postMessage, request, serviceEnv, startInProcess, startRedis, stopChild, tempDir, track, untilReady, waitFor, waitForOutput, type Cert, type RedisServer } from './helpers.ts';
import { redisCli } from './redis-fixtures.ts';
import { ErrorReply } from '@redis/client';
import { createAppLog } from '../lib/app-log.ts';
import { callReporter, refusalLog } from '../lib/redis-reports.ts';
import { stateReporter } from '../lib/redis-state.ts';

const appLogEvents = (logDir: string): Array<Record<string, unknown>> =>
  fs.readFileSync(path.join(logDir, 'app.log'), 'utf8').split('\n').filter((line) => line !== '').map((line) => JSON.parse(line));

interface Started { port: number; cert: Cert; logDir: string }

async function startAgainst(t: TestContext, redis: { port: number }, extra: Record<string, string> = {}): Promise<Started> {
  const dir = tempDir();
  const cert = await makeCert(dir);
  const app = await startInProcess(serviceEnv({ redis: redis as RedisServer, cert, dir }, extra));
  t.after(() => app.stop());
  return { port: app.service.port, cert, logDir: path.join(dir, 'logs') };
}

// A refused POST: 503 with Retry-After, one redis_error line for the kind however many refusals, /readyz 503 saying
// why; the line names the command and gives the hint, and holds neither the message nor its key.
async function expectRefusal(service: Started, kind: string, hint: RegExp): Promise<void> {
  const messages = Array.from({ length: 5 }, (_, i) => `refused by ${kind} ${i}`);
  for (const message of messages) {
    const reply = await postMessage(service.port, service.cert.ca, message);
    assert.equal(reply.status, 503, `POST during ${kind}: ${reply.body}`);
    assert.ok(reply.headers['retry-after'] !== undefined, 'Retry-After');
  }
  const lines = await waitFor(() => {
    const found = appLogEvents(service.logDir).filter((line) => line.event === 'redis_error');
    return found.length > 0 ? found : undefined;
  }, 5000, `redis_error (${kind}) in app.log`).catch((err: Error) => {
    throw new Error(`${err.message}; app.log has ${JSON.stringify(appLogEvents(service.logDir).map((line) => [line.event, line.cause]))}`);
  });
  assert.equal(lines.length, 1, `one line per kind per 10 s: ${JSON.stringify(lines)}`);
  const [line] = lines as [Record<string, unknown>];
  assert.equal(line.reply, kind);
  assert.match(String(line.command), /^SET/);
  assert.match(String(line.hint), hint);
  const text = JSON.stringify(line);
  for (const message of messages) {
    assert.ok(!text.includes(message) && !text.includes(digestOf(message)), 'the line holds a message or its key');
  }
  const ready = await request(service.port, service.cert.ca, { path: '/readyz' });
  assert.equal(ready.status, 503);
  assert.deepEqual(JSON.parse(ready.body), { err_msg: `Redis refuses writes (${kind}); see app.log for the cause` });
}

async function expectRecovery(service: Started, message: string): Promise<void> {
  await untilReady(service.port, service.cert.ca, '/readyz 200 again');
  assert.equal((await postMessage(service.port, service.cert.ca, message)).status, 201);
}

test('OOM (maxmemory reached): 503, one redis_error line with a maxmemory hint, /readyz 503 until writes are taken again', async (t) => {
  const redis = await startRedis(['--maxmemory', '1']);
  t.after(() => redis.stop());
  const service = await startAgainst(t, redis);
  await expectRefusal(service, 'OOM', /maxmemory/);
  await redisCli(redis.port, 'CONFIG', 'SET', 'maxmemory', '0');
  await expectRecovery(service, 'after maxmemory was raised');
});

test('MESSAGES_REDIS_MIN_REPLICAS=1 with no replica: every POST is 503, and so is /readyz, naming the count; one app.log line says why', async (t) => {
  const redis = await startRedis();
  t.after(() => redis.stop());
  const service = await startAgainst(t, redis, { MESSAGES_REDIS_MIN_REPLICAS: '1', MESSAGES_REDIS_TIMEOUT_MS: '400' });
  await waitFor(() => appLogEvents(service.logDir).some((line) => line.event === 'redis_up'), 10_000, 'redis_up');
  for (let i = 0; i < 3; i += 1) {
    const reply = await postMessage(service.port, service.cert.ca, `no replica ${i}`);
    assert.deepEqual([reply.status, JSON.parse(reply.body)], [503, { err_msg: 'Write reached 0 of 1 required replicas, retry later' }]);
  }
  const ready = await request(service.port, service.cert.ca, { path: '/readyz' });
  assert.deepEqual([ready.status, JSON.parse(ready.body)], [503, { err_msg: 'Write reached 0 of 1 required replicas; see app.log for the cause' }]);
  const lines = appLogEvents(service.logDir).filter((line) => line.event === 'redis_replicas_missing');
  assert.equal(lines.length, 1, JSON.stringify(lines));
  assert.match(String(lines[0]!.hint), /MESSAGES_REDIS_MIN_REPLICAS/);
});

test('NOPERM (an ACL user without +set): 503, a redis_error line naming the permission to allow, /readyz 503', async (t) => {
  const redis = await startRedis();
  t.after(() => redis.stop());
  await redisCli(redis.port, 'ACL', 'SETUSER', 'reader', 'on', '>reader-secret', '~messages:*', '-@all', '+get', '+ping');
  const service = await startAgainst(t, redis, { MESSAGES_REDIS_USERNAME: 'reader', MESSAGES_REDIS_PASSWORD: 'reader-secret' });
  await expectRefusal(service, 'NOPERM', /allow get, set/);
  await redisCli(redis.port, 'ACL', 'SETUSER', 'reader', '+set');
  await expectRecovery(service, 'after +set was granted');
});

test('NOAUTH (Redis requires a password the service was not given): 503, a redis_error line saying to set it, /readyz 503', async (t) => {
  const password = `pw-${process.pid}-${Date.now()}`;
  const redis = await startRedis(['--requirepass', password]);
  t.after(() => redis.stop());
  const service = await startAgainst(t, redis);
  const reply = await postMessage(service.port, service.cert.ca, 'refused by NOAUTH');
  assert.equal(reply.status, 503, reply.body);
  assert.ok(reply.headers['retry-after'] !== undefined, 'Retry-After');
  // Refused while connecting: the command is the connection's handshake, and the line repeats at most once per 10 s.
  const lines = await waitFor(() => {
    const found = appLogEvents(service.logDir).filter((line) => line.event === 'redis_error');
    return found.length > 0 ? found : undefined;
  }, 5000, 'redis_error (NOAUTH) in app.log');
  // The service retries the handshake every 2 s at most: two more refused attempts, and still one line.
  let ownConnections = 0; // each redisCli() below is one connection too
  const attempts = async () => {
    const info = await redisCli(redis.port, '--no-auth-warning', '-a', password, 'INFO', 'stats');
    ownConnections += 1;
    return Number(/total_connections_received:(\d+)/.exec(info)![1]) - ownConnections;
  };
  const seen = await attempts();
  await waitFor(async () => (await attempts()) >= seen + 2, 10_000, 'two more connection attempts');
  // Within the 10 s of the first line (a slow machine may take longer: then a second line is right).
  if (Date.now() - Date.parse(String(lines[0]!.time)) < 9000) {
    assert.equal(appLogEvents(service.logDir).filter((line) => line.event === 'redis_error').length, 1);
  }
  assert.equal(lines.length, 1, JSON.stringify(lines));
  assert.deepEqual([lines[0]!.reply, lines[0]!.command], ['NOAUTH', 'connect']);
  assert.match(String(lines[0]!.hint), /MESSAGES_REDIS_PASSWORD/);
  assert.ok(!JSON.stringify(lines).includes(password));
  const ready = await request(service.port, service.cert.ca, { path: '/readyz' });
  assert.equal(ready.status, 503);
  assert.deepEqual(JSON.parse(ready.body), { err_msg: 'Redis is not connected; see app.log for the cause' });
  await redisCli(redis.port, '--no-auth-warning', '-a', password, 'CONFIG', 'SET', 'requirepass', '');
  await expectRecovery(service, 'after the password was lifted');
});

// Regression: the PING sent each second, refused while a stall filled the queue, came through the client's 'error'
// event: app.log said redis_down, and as the link never dropped, no redis_up followed once Redis answered again.
test('a call refused because the command queue is full is no outage: the link reporter writes no redis_down', () => {
  const lines: string[] = [];
  const log = createAppLog((line) => lines.push(line));
  const state = stateReporter(log, refusalLog(log), '127.0.0.1:1');
  state.up();
  state.down(new Error('The queue is full'));
  assert.deepEqual(lines.map((line) => JSON.parse(line).event), ['redis_up']);
});

test('one throttle per Redis connection: a refused call and a refused handshake of one kind make one redis_error line', () => {
  const lines: string[] = [];
  const log = createAppLog((line) => lines.push(line));
  const refused = refusalLog(log);
  const limits = { timeoutMs: 1000, maxInflight: 8 };
  const calls = callReporter(log, refused, '127.0.0.1:1', limits, { call() {}, inflight() {} });
  const state = stateReporter(log, refused, '127.0.0.1:1');
  const reply = new ErrorReply('NOAUTH Authentication required.');
  calls.failed('SET', reply, 5);
  state.down(reply);
  calls.failed('GET', reply, 5);
  const errors = lines.map((line) => JSON.parse(line)).filter((line) => line.event === 'redis_error');
  assert.deepEqual(errors.map((line) => [line.reply, line.command]), [['NOAUTH', 'SET']]);
  assert.equal(lines.filter((line) => line.includes('"redis_down"')).length, 1);
});

test('READONLY (pointed at a replica): 503, a redis_error line saying to point at the master, /readyz 503', async (t) => {
  const master = await startRedis();
  t.after(() => master.stop());
  const replica = await startRedis(['--replicaof', '127.0.0.1', String(master.port)]);
  t.after(() => replica.stop());
  const service = await startAgainst(t, replica);
  await expectRefusal(service, 'READONLY', /master/);
  await redisCli(replica.port, 'REPLICAOF', 'NO', 'ONE');
  await expectRecovery(service, 'after the replica was promoted');
});

test('MISCONF (a failed RDB save stops writes): 503, a redis_error line pointing at the failed save, /readyz 503', async (t) => {
  const redis = await startRedis(['--enable-protected-configs', 'yes']);
  t.after(() => redis.stop());
  const service = await startAgainst(t, redis);
  await untilReady(service.port, service.cert.ca);
  // A save into /proc fails; with a save point configured, Redis then refuses writes (stop-writes-on-bgsave-error).
  await redisCli(redis.port, 'CONFIG', 'SET', 'save', '3600 1');
  await redisCli(redis.port, 'CONFIG', 'SET', 'dir', '/proc');
  await redisCli(redis.port, 'BGSAVE');
  await waitFor(async () => (await redisCli(redis.port, 'INFO', 'persistence')).includes('rdb_last_bgsave_status:err'), 10_000, 'the failed save');
  await expectRefusal(service, 'MISCONF', /save/);
  await redisCli(redis.port, 'CONFIG', 'SET', 'dir', redis.dir);
  await redisCli(redis.port, 'BGSAVE');
  await expectRecovery(service, 'after a save succeeded');
});

test('LOADING (Redis reading its dataset after a restart): 503, a redis_error line saying answers resume, then 201', { timeout: 60_000 }, async (t) => {
  const dir = tempDir('redis-');
  // A dataset that takes seconds to load: 20,000 keys, 0.2 ms each, with clients answered while it loads.
  const seed = await startRedis(['--dir', dir, '--enable-debug-command', 'local']);
  await redisCli(seed.port, 'DEBUG', 'POPULATE', '20000');
  await redisCli(seed.port, 'SAVE');
  await seed.stop();
  const port = await freePort();
  const loading = track(spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no',
    '--logfile', '', '--key-load-delay', '200', '--loading-process-events-interval-bytes', '1024'], { stdio: ['ignore', 'pipe', 'pipe'] }));
  t.after(() => stopChild(loading, 'SIGKILL'));
  await waitForOutput(loading, /Loading RDB/);
  const service = await startAgainst(t, { port });
  await expectRefusal(service, 'LOADING', /loading/);
  await expectRecovery(service, 'after the dataset was loaded');
});
