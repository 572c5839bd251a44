// Every resource bounded under hostile clients that speak valid HTTPS: connection slots, send buffers, pipelines,
// Redis replies and buffered bodies; each attack is bounded in time and count, and a normal client keeps being served.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { after, before, test, type TestContext } from 'node:test';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { ResponseReader, startCapturing, type Captured } from './attack-fixtures.ts';
import { digestOf } from '../lib/store.ts';
import { info } from './redis-fixtures.ts';
import { makeCert, postMessage, request, serviceEnv, startRedis, tempDir, waitFor, type Cert, type RedisServer } from './helpers.ts';

const run = promisify(execFile);

let redis: RedisServer;
let cert: Cert;

before(async () => {
  [redis, cert] = await Promise.all([startRedis(), makeCert(tempDir())]);
});

after(async () => {
  await redis.stop();
});

async function serve(t: TestContext, extra: Record<string, string> = {}): Promise<Captured> {
  const app = await startCapturing(serviceEnv({ redis, cert, dir: tempDir() }, extra));
  t.after(() => app.stop());
  return app;
}

const connectionCount = (app: Captured) => new Promise<number>((resolve, reject) =>
  app.service.server.getConnections((err, count) => (err ? reject(err) : resolve(count))));

const healthz = (port: number) => request(port, cert.ca, { path: '/healthz' });

// A client that never closes its side: it reads what comes but ignores the server's FIN, as a careless or hostile
// one does. The sockets are destroyed by the test at the end.
async function stubbornClient(t: TestContext, port: number, localAddress = '127.0.0.1'): Promise<{ socket: tls.TLSSocket; reader: ResponseReader }> {
  const tcp = net.connect({ port, host: '127.0.0.1', localAddress, allowHalfOpen: true });
  // A TLS socket over a TCP socket takes its allowHalfOpen.
  const socket = tls.connect({ socket: tcp, ca: cert.ca, servername: 'localhost' });
  t.after(() => tcp.destroy());
  const reader = new ResponseReader(socket);
  await once(socket, 'secureConnect');
  return { socket, reader };
}

test('connections closed after a 408 (nothing sent) or a 405 (CONNECT) are gone within 2 s, though the clients never close', async (t) => {
  const app = await serve(t, { MESSAGES_MAX_CONNECTIONS: '20', MESSAGES_HEADERS_TIMEOUT_MS: '500', MESSAGES_REQUEST_TIMEOUT_MS: '1000' });
  const port = app.service.port;
  const clients = await Promise.all(Array.from({ length: 20 }, () => stubbornClient(t, port)));
  for (const [i, client] of clients.entries()) {
    if (i % 2 === 1) client.socket.write('CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n');
  }
  const answers = await Promise.all(clients.map((client) => client.reader.next('GET')));
  const answered = performance.now();
  assert.deepEqual(answers.map((answer) => answer?.status).sort(), [...Array(10).fill(405), ...Array(10).fill(408)]);
  await waitFor(async () => (await connectionCount(app)) === 0, 5000, 'every closed connection released');
  const elapsedMs = performance.now() - answered;
  assert.ok(elapsedMs < 2000 + 700, `released ${elapsedMs.toFixed(0)} ms after the answers`);
  // Every slot is free again for a normal client.
  assert.equal((await healthz(port)).status, 200);
});

test('a response the client never reads is abandoned after MESSAGES_SEND_TIMEOUT_MS without progress, and its slot freed', async (t) => {
  const app = await serve(t, { MESSAGES_MAX_CONNECTIONS: '4', MESSAGES_SEND_TIMEOUT_MS: '1000' });
  const port = app.service.port;
  const message = 'x'.repeat(1_000_000);
  assert.equal((await postMessage(port, cert.ca, message)).status, 201);
  await waitFor(async () => (await connectionCount(app)) === 0, 5000, 'the POST connection closed');
  const clients = await Promise.all(Array.from({ length: 4 }, () => stubbornClient(t, port)));
  for (const { socket } of clients) {
    // 20 MB of answers against a few MB of socket buffers: the server's writes stall for good.
    socket.pause();
    socket.write(`GET /messages/${digestOf(message)} HTTP/1.1\r\nHost: localhost\r\n\r\n`.repeat(20));
  }
  const started = performance.now();
  await waitFor(async () => (await connectionCount(app)) === 0, 15_000, 'the stalled connections abandoned');
  t.diagnostic(`all four abandoned ${(performance.now() - started).toFixed(0)} ms after the requests`);
  assert.equal((await healthz(port)).status, 200);
});

// The bytes of Redis commands sent to `port` that Redis has not read yet (it is stopped): what `ss` says is queued.
async function unreadByRedis(port: number): Promise<number> {
  const { stdout } = await run('ss', ['-tnH', 'state', 'established', `( sport = :${port} )`]);
  return stdout.split('\n').filter((line) => line.trim() !== '').reduce((sum, line) => sum + Number(line.trim().split(/\s+/)[0]), 0);
}

test('at most MESSAGES_MAX_INFLIGHT Redis calls are in flight; the rest wait and are answered once Redis answers', async (t) => {
  const stalled = await startRedis();
  t.after(async () => {
    stalled.child.kill('SIGCONT');
    await stalled.stop();
  });
  const app = await startCapturing(serviceEnv({ redis: stalled, cert, dir: tempDir() }, { MESSAGES_MAX_INFLIGHT: '8', MESSAGES_REDIS_TIMEOUT_MS: '3000' }));
  t.after(() => app.stop());
  const port = app.service.port;
  await waitFor(async () => (await request(port, cert.ca, { path: '/readyz' })).status === 200, 10_000, '/readyz 200');
  stalled.child.kill('SIGSTOP');
  // One GET is 93 bytes on the wire: *2 $3 GET $73 messages:<64 hex>.
  const digests = Array.from({ length: 40 }, (_, i) => digestOf(`in flight ${i}`));
  const answers = Promise.all(digests.map((digest) => request(port, cert.ca, { path: `/messages/${digest}` })));
  await waitFor(async () => (await unreadByRedis(stalled.port)) >= 8 * 93, 5000, 'eight GETs queued at Redis');
  // Time for more to be sent, were they not held back.
  await new Promise((resolve) => setTimeout(resolve, 300));
  const queued = await unreadByRedis(stalled.port);
  stalled.child.kill('SIGCONT');
  assert.equal(queued, 8 * 93, `${queued / 93} GETs sent to a stopped Redis`);
  assert.deepEqual([...new Set((await answers).map((reply) => reply.status))], [404]);
});

test('3,000 GETs of a 1 MB message pipelined in one write leave Redis below 256 MB of reply buffers, and others are served', { timeout: 60_000 }, async (t) => {
  const app = await serve(t);
  const port = app.service.port;
  const large = 'y'.repeat(1_000_000);
  assert.equal((await postMessage(port, cert.ca, large)).status, 201);
  assert.equal((await postMessage(port, cert.ca, 'small')).status, 201);
  const attacker = await stubbornClient(t, port);
  attacker.socket.pause();
  attacker.socket.write(`GET /messages/${digestOf(large)} HTTP/1.1\r\nHost: localhost\r\n\r\n`.repeat(3000));
  let peak = 0;
  const statuses: number[] = [];
  const until = performance.now() + 3000;
  while (performance.now() < until) {
    const memory = await info(redis.port, 'memory');
    peak = Math.max(peak, Number(memory.get('mem_clients_normal')));
    statuses.push((await request(port, cert.ca, { path: `/messages/${digestOf('small')}` })).status);
  }
  t.diagnostic(`peak of Redis client buffers ${(peak / 2 ** 20).toFixed(1)} MiB; ${statuses.length} GETs of a normal client meanwhile`);
  assert.ok(peak < 256 * 2 ** 20, `Redis held ${(peak / 2 ** 20).toFixed(0)} MiB of client buffers`);
  assert.deepEqual([...new Set(statuses)], [200]);
});
