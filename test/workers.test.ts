// MESSAGES_WORKERS > 1 on a real process: a second signal joins the drain, dead workers are restarted, a primary that
// cannot keep workers running exits non-zero, and a reload never takes the primary down.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { events, freePort, makeCert, readIfExists, request, serviceEnv, spawnProcess, spawnService, startRedis, stopChild, tempDir, waitFor, type Cert, type RedisServer, type Spawned } from './helpers.ts';

let redis: RedisServer;
let cert: Cert;

before(async () => {
  [redis, cert] = await Promise.all([startRedis(), makeCert(tempDir())]);
});

after(async () => {
  await redis.stop();
});

async function startWorkers(t: { after: (fn: () => Promise<unknown>) => void }, extra: Record<string, string> = {}): Promise<Spawned> {
  const dir = tempDir();
  const service = await spawnService(serviceEnv({ redis, cert, dir }, { MESSAGES_WORKERS: '2', ...extra }));
  t.after(() => stopChild(service.child, 'SIGKILL'));
  await waitFor(() => events(service, 'listening').length === 2, 15_000, 'two workers listening');
  return service;
}

test('a second SIGTERM 100 ms after the first joins the drain: the POST in flight still gets its 201 (MESSAGES_WORKERS=2)', async (t) => {
  const service = await startWorkers(t);
  const body = JSON.stringify({ message: 'in flight through two SIGTERMs' });
  const req = https.request({ host: '127.0.0.1', servername: 'localhost', port: service.port, ca: cert.ca, agent: false, method: 'POST', path: '/messages',
    headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), Expect: '100-continue' } });
  const answered = new Promise<number | string>((resolve) => {
    req.on('response', (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', (err) => resolve(err.message));
  });
  // "100 Continue" comes from the worker that holds the request: from here on it is in flight there.
  await once(req, 'continue');
  service.child.kill('SIGTERM');
  await new Promise((resolve) => setTimeout(resolve, 100));
  service.child.kill('SIGTERM');
  // The body follows a while after the second signal, as from a slow client.
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(service.child.exitCode, null, 'the primary exited before the request in flight was answered');
  req.end(body);
  assert.equal(await answered, 201);
  const [code] = await once(service.child, 'exit');
  assert.equal(code, 0);
});

test('when every worker dies, the primary restarts them and keeps serving (MESSAGES_WORKERS=2)', async (t) => {
  // A fixed port: with none left listening the port closes, and port 0 would pick another one for the replacements.
  const service = await startWorkers(t, { MESSAGES_PORT: String(await freePort()) });
  for (const worker of events(service, 'listening')) process.kill(worker.pid as number, 'SIGKILL');
  await waitFor(() => events(service, 'listening').length === 4, 15_000, 'two replacement workers listening');
  assert.equal(service.child.exitCode, null);
  assert.equal((await request(service.port, cert.ca, { path: '/healthz' })).status, 200);
  assert.equal(await stopChild(service.child, 'SIGTERM'), 0);
});

test('workers that cannot start (the port is taken) make the primary give up and exit 1 with a reason', async (t) => {
  const taken = net.createServer();
  taken.listen(0, '127.0.0.1');
  await once(taken, 'listening');
  t.after(() => taken.close());
  const dir = tempDir();
  const env = serviceEnv({ redis, cert, dir }, { MESSAGES_WORKERS: '2', MESSAGES_PORT: String((taken.address() as net.AddressInfo).port) });
  const { child } = spawnProcess(env);
  t.after(() => stopChild(child, 'SIGKILL'));
  const [code] = await once(child, 'exit');
  assert.equal(code, 1);
  const log = readIfExists(`${dir}/logs/app.log`);
  assert.match(log, /"event":"workers_failed".*"hint":"[^"]*MESSAGES_PORT/);
});

test('a worker that dies while its replacements cannot start (a broken key) leaves the primary serving with the other', { timeout: 60_000 }, async (t) => {
  const dir = tempDir();
  const own = await makeCert(dir);
  const service = await spawnService(serviceEnv({ redis, cert: own, dir }, { MESSAGES_WORKERS: '2' }));
  t.after(() => stopChild(service.child, 'SIGKILL'));
  await waitFor(() => events(service, 'listening').length === 2, 15_000, 'two workers listening');
  fs.writeFileSync(own.keyFile, 'garbage\n'); // a renewal gone wrong: the running workers keep their pair
  process.kill(events(service, 'listening')[0]!.pid as number, 'SIGKILL');
  // Five replacements fail within about 5 s (backoff 0.25, 0.5, 1, 2 s); before, the primary gave up then.
  await waitFor(() => events(service, 'start_failed').length >= 6 || service.child.exitCode !== null, 30_000, 'six failed starts');
  assert.equal(service.child.exitCode, null, `the primary exited:\n${service.output().slice(-2000)}`);
  assert.equal((await request(service.port, own.ca, { path: '/healthz' })).status, 200);
  assert.match(service.output(), /"event":"workers_failing".*"listening":1/);
});

test('SIGHUP while a worker is dying and being replaced never takes the primary down (MESSAGES_WORKERS=2)', async (t) => {
  const service = await startWorkers(t);
  const rounds = 3;
  for (let round = 0; round < rounds; round += 1) {
    const victim = events(service, 'listening').at(-1)!.pid as number;
    process.kill(victim, 'SIGKILL');
    // Reloads reach the primary before, while and after it learns of the death, as from a logrotate run at that moment.
    for (let i = 0; i < 500; i += 1) {
      service.child.kill('SIGHUP');
      await new Promise((resolve) => setImmediate(resolve));
    }
    await waitFor(() => events(service, 'listening').length === 3 + round || service.child.exitCode !== null, 15_000, 'a replacement worker');
    assert.equal(service.child.exitCode, null, `the primary exited in round ${round}:\n${service.output().slice(-3000)}`);
  }
  assert.equal((await request(service.port, cert.ca, { path: '/healthz' })).status, 200);
  assert.equal(await stopChild(service.child, 'SIGTERM'), 0);
});
