// Faults under load: Redis (appendfsync always) or the service SIGKILLed and restarted lose no acknowledged write;
// a log directory that cannot be written or a full disk (EFBIG) never stops the answers, and stderr says so.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { before, test } from 'node:test';
import {
  makeCert, request, serviceEnv, spawnService, startInProcess, startRedis, stopChild, tempDir, waitFor,
  type Cert, type Spawned,
} from './helpers.ts';

let cert: Cert;

before(async () => {
  cert = await makeCert(tempDir());
});

const sha256 = (text: string) => createHash('sha256').update(text, 'utf8').digest('hex');

interface Load {
  // digest -> message, for every POST answered 201.
  acked: Map<string, string>;
  // How many answers of each status, and of each connection error code.
  outcomes: Map<string, number>;
  slowest503Ms: number;
  unavailableWithoutRetryAfter: number;
  until(done: () => boolean, what: string, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

// `writers` clients POSTing distinct messages back to back over kept-alive connections to `port()`. After a 503 or
// a connection error a writer backs off 20 ms, or until `reachable()` resolves when one is given.
function writeLoad(port: () => number, writers: number, reachable?: () => Promise<void>): Load {
  let stopped = false;
  const waiters = new Set<() => void>();
  const load: Load = {
    acked: new Map(),
    outcomes: new Map(),
    slowest503Ms: 0,
    unavailableWithoutRetryAfter: 0,
    until(done, what, timeoutMs = 20_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; outcomes ${JSON.stringify([...load.outcomes])}`));
        }, timeoutMs);
        const check = () => {
          if (!done()) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve();
        };
        waiters.add(check);
        check();
      });
    },
    async stop() {
      stopped = true;
      await Promise.all(running);
    },
  };
  const count = (outcome: string) => load.outcomes.set(outcome, (load.outcomes.get(outcome) ?? 0) + 1);
  const backOff = () => new Promise((resolve) => setTimeout(resolve, 20));

  async function writer(id: number) {
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    for (let i = 0; !stopped; i += 1) {
      const message = `writer ${id} message ${i} ${randomBytes(6).toString('hex')}`;
      const started = performance.now();
      try {
        const reply = await request(port(), cert.ca, {
          method: 'POST', path: '/messages', agent, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ message }),
        });
        count(String(reply.status));
        if (reply.status === 201) {
          assert.deepEqual(JSON.parse(reply.body), { digest: sha256(message) });
          load.acked.set(sha256(message), message);
        } else if (reply.status === 503) {
          load.slowest503Ms = Math.max(load.slowest503Ms, performance.now() - started);
          if (reply.headers['retry-after'] === undefined) load.unavailableWithoutRetryAfter += 1;
          await backOff();
        }
      } catch (err) {
        count((err as NodeJS.ErrnoException).code ?? String(err));
        await (reachable?.() ?? backOff());
      }
      for (const check of [...waiters]) check();
    }
    agent.destroy();
  }
  const running = Array.from({ length: writers }, (_, id) => writer(id));
  return load;
}

// Reads back every acknowledged message; returns the digests that are missing or wrong.
async function unreadable(port: number, acked: Map<string, string>): Promise<string[]> {
  const agent = new https.Agent({ keepAlive: true, maxSockets: 4 });
  const lost: string[] = [];
  await Promise.all([...acked].map(async ([digest, message]) => {
    const reply = await request(port, cert.ca, { path: `/messages/${digest}`, agent });
    if (reply.status !== 200 || JSON.parse(reply.body).message !== message) lost.push(digest);
  }));
  agent.destroy();
  return lost;
}

test('Redis SIGKILLed under write load (appendfsync always): fast 503s with Retry-After, recovery without a restart, no acknowledged write lost', { timeout: 120_000 }, async (t) => {
  const redis = await startRedis(['--appendonly', 'yes', '--appendfsync', 'always']);
  t.after(() => redis.stop('SIGKILL'));
  const dir = tempDir();
  const app = await startInProcess(serviceEnv({ redis, cert, dir }));
  t.after(() => app.stop());
  const port = app.service.port;

  const load = writeLoad(() => port, 4);
  await load.until(() => load.acked.size >= 100, '100 writes before the kill');
  await redis.stop('SIGKILL');
  const unavailable = () => load.outcomes.get('503') ?? 0;
  await load.until(() => unavailable() >= 20, '503s while Redis is down');
  const ackedBeforeRestart = load.acked.size;
  await redis.start();
  await load.until(() => load.acked.size >= ackedBeforeRestart + 100, '100 writes after Redis is back');
  await load.stop();
  t.diagnostic(`outcomes ${JSON.stringify(Object.fromEntries(load.outcomes))}; slowest 503 ${load.slowest503Ms.toFixed(0)} ms`);

  assert.deepEqual([...load.outcomes.keys()].sort(), ['201', '503'], JSON.stringify([...load.outcomes]));
  assert.equal(load.unavailableWithoutRetryAfter, 0);
  assert.ok(load.slowest503Ms < 2000, `slowest 503 took ${load.slowest503Ms.toFixed(0)} ms`);
  assert.deepEqual(await unreadable(port, load.acked), []);
  assert.equal((await request(port, cert.ca, { path: '/readyz' })).status, 200);
});

test('the service SIGKILLed under write load and started again: every acknowledged write is readable', { timeout: 120_000 }, async (t) => {
  const redis = await startRedis();
  t.after(() => redis.stop());
  const dir = tempDir();
  const env = serviceEnv({ redis, cert, dir });
  let service: Spawned = await spawnService(env);
  t.after(() => stopChild(service.child, 'SIGKILL'));
  // Writers that lose the connection wait for the replacement instead of spinning.
  let replaced: Promise<void> = Promise.resolve();

  const load = writeLoad(() => service.port, 4, () => replaced);
  await load.until(() => load.acked.size >= 100, '100 writes before the kill');
  let up!: () => void;
  replaced = new Promise((resolve) => {
    up = resolve;
  });
  assert.equal(await stopChild(service.child, 'SIGKILL'), null);
  service = await spawnService(env);
  up();
  const ackedBeforeRestart = load.acked.size;
  await load.until(() => load.acked.size >= ackedBeforeRestart + 100, '100 writes to the new process');
  await load.stop();
  t.diagnostic(`outcomes ${JSON.stringify(Object.fromEntries(load.outcomes))}`);

  const failures = [...load.outcomes.keys()].filter((outcome) => outcome !== '201');
  assert.ok(failures.every((code) => ['ECONNRESET', 'ECONNREFUSED', 'EPIPE'].includes(code)), JSON.stringify([...load.outcomes]));
  assert.deepEqual(await unreadable(service.port, load.acked), []);
});

test('a log directory that cannot be created: the service starts, answers every request, and says on stderr what it cannot write, once', { timeout: 60_000 }, async (t) => {
  const redis = await startRedis();
  t.after(() => redis.stop());
  const dir = tempDir();
  // A regular file where a directory should be: mkdir and open fail with ENOTDIR, even for root.
  fs.writeFileSync(path.join(dir, 'not-a-directory'), '');
  const service = await spawnService(serviceEnv({ redis, cert, dir }, { MESSAGES_LOG_DIR: path.join(dir, 'not-a-directory', 'logs') }));
  t.after(() => stopChild(service.child, 'SIGKILL'));
  await assertServesWhileLogsFail(service, ['app.log', 'access.log']);
});

test('a full disk (EFBIG from a file-size limit): the service answers every request, keeps whole lines, says so on stderr once', { timeout: 60_000 }, async (t) => {
  const redis = await startRedis();
  t.after(() => redis.stop());
  const dir = tempDir();
  const service = await spawnService(serviceEnv({ redis, cert, dir }));
  t.after(() => stopChild(service.child, 'SIGKILL'));
  const limit = 4096;
  // RLIMIT_FSIZE on the running process: a write past `limit` bytes fails with EFBIG (Node ignores SIGXFSZ).
  execFileSync('prlimit', ['--pid', String(service.child.pid), `--fsize=${limit}:${limit}`]);
  await assertServesWhileLogsFail(service, ['access.log']);
  const accessLog = fs.readFileSync(path.join(dir, 'logs', 'access.log'), 'utf8');
  // A batch that fails part-way is cut back whole (lib/rotate.ts), so what stays is whole lines, maybe none.
  assert.ok(accessLog.length <= limit, `access.log holds ${accessLog.length} bytes`);
  assert.ok(accessLog === '' || accessLog.endsWith('\n'), 'no torn line at the end of access.log');
  assert.match(service.output(), /File too large|EFBIG/);
});

// 200 requests all answered, the process alive, and for each named file one stderr line saying it cannot be written.
async function assertServesWhileLogsFail(service: Spawned, files: string[]) {
  const agent = new https.Agent({ keepAlive: true, maxSockets: 4 });
  const statuses = await Promise.all(Array.from({ length: 200 }, (_, i) =>
    request(service.port, cert.ca, { path: `/healthz?request=${i}-${'x'.repeat(60)}`, agent }).then((reply) => reply.status)));
  agent.destroy();
  assert.deepEqual(new Set(statuses), new Set([200]));
  for (const file of files) {
    const about = (output: string) => output.split('\n').filter((line) => line.startsWith('rotate: ') && line.includes(file));
    const lines = await waitFor(() => about(service.output()).length > 0 && about(service.output()), 10_000, `a stderr line about ${file}`);
    // The reporter speaks at most once per 10 s per file; this test is shorter than that.
    assert.equal(lines.length, 1, lines.join('\n'));
  }
  assert.equal(service.child.exitCode, null);
  assert.equal((await request(service.port, cert.ca, { path: '/healthz' })).status, 200);
}

