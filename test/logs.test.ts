// Logs through the running service: access-log format and escaping, rotation by size, one writer for cluster workers.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { escapeField, maxAccessLineBytes, timestamp } from '../lib/access-log.ts';
import { createAppLog, maxAppLineBytes } from '../lib/app-log.ts';
import { listeningPids, makeCert, readIfExists, request, serviceEnv, spawnService, startReady, startRedis, stopChild, tempDir, waitFor, type RedisServer } from './helpers.ts';

// Combined Log Format plus the response time in milliseconds.
const accessLinePattern = /^(\S+) - - \[\d{2}\/\w{3}\/\d{4}:\d{2}:\d{2}:\d{2} \+0000\] "((?:[^"\\]|\\.)*)" (\d{3}) (\d+|-) "((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)" (\d+\.\d{3})$/;

let redis: RedisServer;

before(async () => {
  redis = await startRedis();
});

after(async () => {
  await redis.stop();
});

// Every log file of one kind, oldest first, as lines.
function allLines(logDir: string, name: string, backups: number): string[][] {
  const files = [];
  for (let i = backups; i >= 1; i -= 1) files.push(path.join(logDir, `${name}.${i}`));
  files.push(path.join(logDir, name));
  return files.filter((f) => fs.existsSync(f)).map((f) => readIfExists(f).split('\n').slice(0, -1));
}

test('formats the timestamp as in Apache, in UTC', () => {
  assert.equal(timestamp(Date.UTC(2026, 0, 5, 3, 4, 5, 999)), '[05/Jan/2026:03:04:05 +0000]');
});

for (const [input, expected] of [
  ['plain/path?a=1', 'plain/path?a=1'],
  ['say "hi"', 'say \\"hi\\"'],
  ['back\\slash', 'back\\\\slash'],
  ['line\r\nfeed', 'line\\x0d\\x0afeed'],
  ['\u001b[31mred', '\\x1b[31mred'],
  ['caf\u00e9', 'caf\\xe9'],
  ['', '-'],
]) {
  test(`escapes ${JSON.stringify(input)} in an access-log field`, () => {
    assert.equal(escapeField(input, 100), expected);
  });
}

test('caps an access-log field at its maximum length', () => {
  assert.equal(escapeField('x'.repeat(5000), 2048).length, 2048);
});

test('every method Node parses is a short token, which the access log writes unescaped', () => {
  for (const method of http.METHODS) assert.match(method, /^[A-Z-]{1,16}$/);
});

test('caps an escaped access-log field at its maximum length too, never splitting an escape', () => {
  const escaped = escapeField('\u00ff'.repeat(5000), 2048);
  assert.ok(escaped.length <= 2048, `${escaped.length} characters`);
  assert.match(escaped, /^(\\xff)+$/);
});

test(`never writes an access-log line longer than maxAccessLineBytes (${maxAccessLineBytes}), nor an app.log line longer than maxAppLineBytes (${maxAppLineBytes})`, async (t) => {
  const dir = tempDir();
  const cert = await makeCert(dir);
  const app = await startReady(serviceEnv({ redis, cert, dir }));
  t.after(() => app.stop());
  // Every field a client controls at its longest, in bytes that each escape to four characters.
  const worst = '\u00e9'.repeat(4000);
  await request(app.service.port, cert.ca, { method: 'X'.repeat(40), path: `/${worst}`, headers: { 'User-Agent': worst, Referer: worst } }).catch(() => undefined);
  await request(app.service.port, cert.ca, { path: `/${worst}`, headers: { 'User-Agent': worst, Referer: worst } });
  const huge = new Error('x'.repeat(100_000));
  createAppLog(app.logs.app).error('test_line', huge, { extra: 'y'.repeat(100_000) });
  app.logs.close();
  const lines = readIfExists(path.join(dir, 'logs', 'access.log')).split('\n').slice(0, -1);
  assert.equal(lines.length, 2);
  for (const line of lines) assert.ok(Buffer.byteLength(line) + 1 <= maxAccessLineBytes, `an access line of ${Buffer.byteLength(line) + 1} bytes`);
  const appLines = readIfExists(path.join(dir, 'logs', 'app.log')).split('\n').slice(0, -1);
  const last = appLines.at(-1)!;
  assert.ok(Buffer.byteLength(last) + 1 <= maxAppLineBytes, `an app.log line of ${Buffer.byteLength(last) + 1} bytes`);
  assert.equal(JSON.parse(last).event, 'test_line');
});

test('writes one well-formed access line per request, with escaped user agent and referer', async (t) => {
  const dir = tempDir();
  const cert = await makeCert(dir);
  const app = await startReady(serviceEnv({ redis, cert, dir }));
  await request(app.service.port, cert.ca, { path: '/healthz', headers: { 'User-Agent': 'evil"\tagent\u00e9', Referer: 'https://r.example/"x' } });
  await request(app.service.port, cert.ca, { path: '/nowhere' });
  await app.stop();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const lines = readIfExists(path.join(dir, 'logs', 'access.log')).split('\n').slice(0, -1);
  assert.equal(lines.length, 2);
  const first = accessLinePattern.exec(lines[0]!);
  assert.ok(first, lines[0]);
  assert.equal(first[1], '127.0.0.1');
  assert.equal(first[2], 'GET /healthz HTTP/1.1');
  assert.equal(first[3], '200');
  assert.equal(first[4], '15');
  assert.equal(first[5], 'https://r.example/\\"x');
  assert.equal(first[6], 'evil\\"\\x09agent\\xe9');
  assert.equal(accessLinePattern.exec(lines[1]!)?.[3], '404');
});

test('writes app.log as one JSON object per line', async (t) => {
  const dir = tempDir();
  const cert = await makeCert(dir);
  const app = await startReady(serviceEnv({ redis, cert, dir }));
  await app.stop();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const events = readIfExists(path.join(dir, 'logs', 'app.log')).split('\n').slice(0, -1).map((l) => JSON.parse(l) as { event: string; level: string; time: string });
  assert.deepEqual(events.map((e) => e.event).filter((e) => e !== 'redis_up'), ['listening', 'draining', 'stopped']);
  for (const e of events) assert.match(e.time, /^\d{4}-\d{2}-\d{2}T/);
});

test('rotates access.log by size, keeping BACKUP_COUNT files, every line whole and the newest ones kept in order', async (t) => {
  const dir = tempDir();
  const cert = await makeCert(dir);
  const app = await startReady(serviceEnv({ redis, cert, dir }, { MESSAGES_LOG_MAX_BYTES: '2000', MESSAGES_LOG_BACKUP_COUNT: '3' }));
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
  for (let i = 0; i < 120; i += 1) {
    await request(app.service.port, cert.ca, { path: `/healthz?n=${String(i).padStart(4, '0')}`, agent });
  }
  agent.destroy();
  await app.stop();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const logDir = path.join(dir, 'logs');
  assert.ok(!fs.existsSync(path.join(logDir, 'access.log.4')));
  const files = allLines(logDir, 'access.log', 3);
  assert.equal(files.length, 4);
  for (const name of ['access.log', 'access.log.1', 'access.log.2', 'access.log.3']) {
    assert.ok(fs.statSync(path.join(logDir, name)).size < 2000, `${name} is under MAX_BYTES`);
  }
  const numbers = files.flat().map((line) => {
    assert.match(line, accessLinePattern);
    return Number(/n=(\d{4})/.exec(line)![1]);
  });
  // The kept lines are exactly the last ones sent, none missing, none twice.
  const first = numbers[0]!;
  assert.deepEqual(numbers, Array.from({ length: 120 - first }, (_, i) => first + i));
});

test('with two workers, the primary alone writes the logs: rotation tears no line and loses none', async (t) => {
  const dir = tempDir();
  const cert = await makeCert(dir);
  const service = await spawnService(serviceEnv({ redis, cert, dir }, { MESSAGES_WORKERS: '2', MESSAGES_LOG_MAX_BYTES: '3000', MESSAGES_LOG_BACKUP_COUNT: '100' }));
  t.after(() => stopChild(service.child, 'SIGKILL'));
  const logDir = path.join(dir, 'logs');
  // Both workers listen before the load, so both take part in it.
  await waitFor(() => (readIfExists(path.join(logDir, 'app.log')).match(/"event":"listening"/g) ?? []).length === 2, 15_000, 'two workers listening');
  const total = 300;
  const agent = new https.Agent({ keepAlive: false, maxSockets: 8 });
  await Promise.all(Array.from({ length: total }, (_, i) =>
    request(service.port, cert.ca, { path: `/healthz?n=${String(i).padStart(4, '0')}`, agent: undefined, headers: { Connection: 'close' } })));
  agent.destroy();
  const exited = once(service.child, 'exit');
  service.child.kill('SIGTERM');
  assert.equal((await exited)[0], 0);

  const files = allLines(logDir, 'access.log', 100);
  assert.ok(files.length > 3, `rotated into ${files.length} files`);
  const lines = files.flat();
  for (const line of lines) assert.match(line, accessLinePattern);
  const seen = lines.map((line) => Number(/n=(\d{4})/.exec(line)![1])).sort((a, b) => a - b);
  assert.deepEqual(seen, Array.from({ length: total }, (_, i) => i));
  const pids = new Set(readIfExists(path.join(logDir, 'app.log')).split('\n').filter((l) => l.includes('"listening"')).map((l) => JSON.parse(l).pid));
  assert.equal(pids.size, 2);
});

test('with two workers, the primary restarts a worker that dies and passes SIGHUP on to every worker', async (t) => {
  const dir = tempDir();
  const cert = await makeCert(dir);
  const service = await spawnService(serviceEnv({ redis, cert, dir }, { MESSAGES_WORKERS: '2' }));
  t.after(() => stopChild(service.child, 'SIGKILL'));
  await waitFor(() => listeningPids(service).length === 2, 15_000, 'two workers listening');
  const victim = listeningPids(service)[0]!;
  process.kill(victim, 'SIGKILL');
  await waitFor(() => listeningPids(service).length === 3, 15_000, 'a replacement worker');
  assert.match(service.output(), new RegExp(`"event":"worker_exited".*"worker":${victim}.*"signal":"SIGKILL"`));
  assert.equal((await request(service.port, cert.ca, { path: '/healthz' })).status, 200);

  service.child.kill('SIGHUP');
  await waitFor(() => (service.output().match(/"event":"cert_reloaded"/g) ?? []).length === 2, 10_000, 'both workers reloaded');
  assert.equal(await stopChild(service.child, 'SIGTERM'), 0);
});

test('a SIGKILL right after a burst loses no access-log line of a request already answered', async (t) => {
  const dir = tempDir();
  const cert = await makeCert(dir);
  const service = await spawnService(serviceEnv({ redis, cert, dir }));
  t.after(() => stopChild(service.child, 'SIGKILL'));
  const agent = new https.Agent({ keepAlive: true, maxSockets: 8, ca: cert.ca });
  t.after(() => agent.destroy());
  const replies = await Promise.all(Array.from({ length: 200 }, (_, i) => request(service.port, cert.ca, { path: `/healthz?n=${i}`, agent })));
  assert.ok(replies.every((reply) => reply.status === 200));
  // The burst's answers were written in turns before the one that reads this request: theirs are over (the promise).
  assert.equal((await request(service.port, cert.ca, { path: '/healthz?last', agent })).status, 200);
  const exited = once(service.child, 'exit');
  service.child.kill('SIGKILL');
  await exited;
  const lines = readIfExists(path.join(dir, 'logs', 'access.log')).split('\n').filter((line) => line.includes('/healthz?n='));
  assert.equal(lines.length, 200);
});
