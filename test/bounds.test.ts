// Every resource bounded under hostile clients that speak valid HTTPS: connection slots, send buffers, pipelines,
// Redis replies and buffered bodies; each attack is bounded in time and count, and a normal client keeps being served.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import type { IncomingMessage } from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { after, before, test, type TestContext } from 'node:test';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { connect, ResponseReader, startCapturing, type Captured } from './attack-fixtures.ts';
import { createAppLog } from '../lib/app-log.ts';
import { loadConfig } from '../lib/config.ts';
import { nodeOptions } from '../lib/redis-options.ts';
import { clientDone, lingerMs } from '../lib/sockets.ts';
import { boundedCalls } from '../lib/redis-calls.ts';
import { callReporter, refusalLog } from '../lib/redis-reports.ts';
import { createClient } from '@redis/client';
import { digestOf } from '../lib/store.ts';
import { info, redisCli, redisCliBatch } from './redis-fixtures.ts';
import { makeCert, openConnections, postMessage, request, serviceEnv, spawnService, startRedis, stopChild, tempDir, untilReady, waitFor, type Cert, type RedisServer } from './helpers.ts';

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
  await untilReady(app.service.port, cert.ca); // a first POST got a 503 once, before Redis had connected
  return app;
}

const connectionCount = (app: Captured) => openConnections(app.service.server);

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

test('a client that said close after a whole request (Connection: close, or HTTP/1.0) is answered and released at once, without lingering', async (t) => {
  const app = await serve(t);
  const requests = ['GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive, close\r\n\r\n', 'GET /healthz HTTP/1.0\r\n\r\n'];
  for (const request of requests) {
    // This client never closes its side: a lingering close would hold the connection for 2 s.
    const { socket, reader } = await stubbornClient(t, app.service.port);
    socket.write(request);
    const answer = await reader.next('GET');
    assert.equal(answer?.status, 200, request);
    assert.equal(answer?.headers.connection, 'close', request);
    await waitFor(async () => (await connectionCount(app)) === 0, 1000, `the connection of ${JSON.stringify(request)} released`);
  }
});

test('a closing connection reads and drops what its client still sends: after a 413 from Content-Length, the whole body and the FIN are read, and the connection is released at once', async (t) => {
  const app = await serve(t);
  const { socket, reader } = await connect(app.service.port, cert.ca);
  t.after(() => socket.destroy());
  // One byte over the limit: a 413 at once, and the rest within what a closing connection drops.
  const size = 1_048_577;
  socket.write(`POST /messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${size}\r\n\r\n`);
  socket.end(Buffer.alloc(size, 'x'));
  assert.equal((await reader.next('POST'))?.status, 413);
  // Unread, the body would stay in the kernel, the FIN behind it unseen, until the linger's end (then a reset).
  await waitFor(async () => (await connectionCount(app)) === 0, lingerMs / 2, 'the connection released after the FIN');
});

test('a closing connection drops at most 16 bodies of MESSAGES_MAX_BODY_BYTES: a client that keeps sending is reset past that, before the linger ends', async (t) => {
  const app = await serve(t);
  // What the server read on this connection, all told: the cap bounds it, whatever the kernel's buffers hold.
  const serverRead = new Promise<number>((resolve) => app.service.server.once('secureConnection', (server: tls.TLSSocket) => {
    server.once('close', () => resolve(server.bytesRead));
  }));
  // It ignores the server's FIN: a client with allowHalfOpen off would end its side on it, and stop sending.
  const { socket, reader } = await stubbornClient(t, app.service.port);
  const started = performance.now();
  socket.write('POST /messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n');
  // 64 MiB at most, past the 16 MiB dropped and what the kernel's buffers hold; the client never closes.
  const chunk = Buffer.alloc(65_536, 'x');
  let written = 0;
  const wroteAll = await new Promise<boolean>((resolve) => {
    const write = () => {
      while (written < 64 * 1_048_576) {
        written += chunk.length;
        if (!socket.write(chunk)) return;
      }
      resolve(true);
    };
    socket.on('drain', write);
    socket.once('close', () => resolve(false));
    write();
  });
  assert.equal(wroteAll, false, `the client wrote all ${written} bytes: nothing stopped it`);
  // The headers and the 16 MiB, and at most one more read (64 KiB) before it let go, TLS records included.
  const read = await serverRead;
  assert.ok(read > 16 * 1_048_576 && read < 16 * 1_048_576 + 256 * 1024, `the server read ${read} bytes`);
  assert.equal((await reader.next('POST'))?.status, 413);
  await waitFor(async () => (await connectionCount(app)) === 0, lingerMs, 'the connection released');
  const elapsedMs = performance.now() - started;
  assert.ok(elapsedMs < lingerMs, `released ${elapsedMs.toFixed(0)} ms after the request`);
});

test('a client that said close is still lingered for while its body is unread or a request is queued behind it', () => {
  // The request objects as Node's parser leaves them, only the fields clientDone reads.
  const turn = (complete: boolean, connection: string | undefined, httpVersion = '1.1') => ({ req: { complete, httpVersion, headers: { connection } } as unknown as IncomingMessage });
  assert.equal(clientDone([turn(true, 'close')]), true);
  assert.equal(clientDone([turn(true, undefined, '1.0')]), true);
  // An early 413 while the body still arrives: a close now would reset the client, erasing its answer.
  assert.equal(clientDone([turn(false, 'close')]), false);
  assert.equal(clientDone([turn(true, 'close'), turn(true, undefined)]), false);
  assert.equal(clientDone([turn(true, 'keep-alive')]), false);
  assert.equal(clientDone([turn(true, 'keep-alive', '1.0')]), false);
  assert.equal(clientDone([]), false);
});

for (const trickle of [false, true]) {
  const how = trickle ? ', though the client sends a blank line every 300 ms' : '';
  test(`a response the client never reads is abandoned after MESSAGES_SEND_TIMEOUT_MS without progress${how}, and its slot freed`, async (t) => {
    // 4 MB messages, 8 pipelined (the cap): 32 MB of answers against a few MB of socket buffers, so the writes stall.
    const app = await serve(t, { MESSAGES_MAX_CONNECTIONS: '4', MESSAGES_SEND_TIMEOUT_MS: '1000', MESSAGES_MAX_BODY_BYTES: '4194304' });
    const port = app.service.port;
    const message = 'x'.repeat(4_000_000);
    assert.equal((await postMessage(port, cert.ca, message)).status, 201);
    await waitFor(async () => (await connectionCount(app)) === 0, 8000, 'the POST connection closed');
    const clients = await Promise.all(Array.from({ length: 4 }, () => stubbornClient(t, port)));
    for (const { socket } of clients) {
      socket.pause();
      socket.write(`GET /messages/${digestOf(message)} HTTP/1.1\r\nHost: localhost\r\n\r\n`.repeat(8));
    }
    // Bytes from the client restart Node's own timer, which counts bytes either way.
    const timer = setInterval(() => { if (trickle) for (const { socket } of clients) socket.write('\r\n'); }, 300);
    t.after(() => clearInterval(timer));
    const started = performance.now();
    await waitFor(async () => (await connectionCount(app)) === 0, 15_000, 'the stalled connections abandoned');
    clearInterval(timer);
    t.diagnostic(`all four abandoned ${(performance.now() - started).toFixed(0)} ms after the requests`);
    assert.equal((await healthz(port)).status, 200);
  });
}

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
  await untilReady(port, cert.ca);
  stalled.child.kill('SIGSTOP');
  // One GET is 93 bytes on the wire: *2 $3 GET $73 messages:<64 hex>.
  let started = 0;
  app.service.server.on('request', () => { started += 1; });
  const digests = Array.from({ length: 40 }, (_, i) => digestOf(`in flight ${i}`));
  const answers = Promise.all(digests.map((digest) => request(port, cert.ca, { path: `/messages/${digest}` })));
  await waitFor(async () => started === 40 && (await unreadByRedis(stalled.port)) >= 8 * 93, 5000, 'all 40 GETs received, 8 queued at Redis');
  // The handlers start a tick after their request and node-redis writes at the end of the turn: more would be sent by now.
  await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setImmediate(resolve));
  const queued = await unreadByRedis(stalled.port);
  stalled.child.kill('SIGCONT');
  assert.equal(queued, 8 * 93, `${queued / 93} GETs sent to a stopped Redis`);
  assert.deepEqual([...new Set((await answers).map((reply) => reply.status))], [404]);
});

test('320 GETs of a 1 MB message, 8 pipelined on each of 40 connections that never read, leave Redis below 256 MB of reply buffers, and others are served', { timeout: 60_000 }, async (t) => {
  const app = await serve(t);
  const port = app.service.port;
  const large = 'y'.repeat(1_000_000);
  assert.equal((await postMessage(port, cert.ca, large)).status, 201);
  assert.equal((await postMessage(port, cert.ca, 'small')).status, 201);
  // 8 each: the most a connection may have parsed ahead of its answers; MESSAGES_MAX_INFLIGHT bounds them all.
  for (const attacker of await Promise.all(Array.from({ length: 40 }, () => stubbornClient(t, port)))) {
    attacker.socket.pause();
    attacker.socket.write(`GET /messages/${digestOf(large)} HTTP/1.1\r\nHost: localhost\r\n\r\n`.repeat(8));
  }
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

test('a client pipelining more than 8 requests ahead of their answers is cut: of 20,000 GETs in one write, few are parsed and none held', { timeout: 30_000 }, async (t) => {
  const app = await serve(t);
  let received = 0;
  app.service.server.on('request', () => { received += 1; });
  const attacker = await connect(app.service.port, cert.ca);
  t.after(() => attacker.socket.destroy());
  attacker.socket.pause(); // never reads an answer
  attacker.socket.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n'.repeat(20_000));
  // Not once(): the cut is a reset, and once() rejects on 'error'.
  await new Promise((resolve) => {
    attacker.socket.once('close', resolve);
    setTimeout(resolve, 5000);
  });
  t.diagnostic(`${received} requests parsed before the cut`);
  assert.ok(attacker.socket.closed, `the connection is still open with ${received} requests parsed`);
  assert.ok(received < 5000, `${received} requests parsed`);
  assert.equal(await connectionCount(app), 0);
  assert.equal((await healthz(app.service.port)).status, 200);
});

test('a burst of 400 concurrent 1 MB POSTs within the limits gets at least 95% 201s, and every 201 is stored', { timeout: 120_000 }, async (t) => {
  const dir = tempDir();
  const service = await spawnService(serviceEnv({ redis, cert, dir }));
  t.after(() => stopChild(service.child, 'SIGKILL'));
  const messages = Array.from({ length: 400 }, (_, i) => `${String(i).padStart(4, '0')}${randomBytes(375_000).toString('base64')}`);
  const agent = new https.Agent({ keepAlive: false, maxSockets: 400, ca: cert.ca });
  t.after(() => agent.destroy());
  const replies = await Promise.all(messages.map((message) => request(service.port, cert.ca, {
    method: 'POST', path: '/messages', agent, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ message }),
  }).catch((err: Error) => ({ status: 0, headers: {}, body: err.message }))));
  const created = replies.filter((reply) => reply.status === 201).length;
  const others = replies.filter((reply) => reply.status !== 201).map((reply) => `${reply.status} ${reply.body.slice(0, 80)}`);
  const warnings = service.output().split('\n').filter((line) => /redis_(timeout|busy|down|error)/.test(line));
  t.diagnostic(`${created} of 400 answered 201; others: ${JSON.stringify([...new Set(others)])}; ${warnings.join(' ')}`);
  assert.ok(created >= 380, `${created} of 400 answered 201`);
  for (const [i, reply] of replies.entries()) {
    if (reply.status === 201) assert.equal(JSON.parse(reply.body).digest, digestOf(messages[i]!));
  }
  const stored = await redisCliBatch(redis.port, replies.flatMap((reply, i) => (reply.status === 201 ? [['EXISTS', `messages:${digestOf(messages[i]!)}`]] : [])));
  assert.deepEqual([...new Set(stored)], ['1']);
});

// A client of the file's Redis and boundedCalls over it with a 200 ms timeout; `lines` collects what it logs.
async function boundedOnRedis(t: TestContext) {
  const client = createClient({ socket: { host: '127.0.0.1', port: redis.port } });
  await client.connect();
  t.after(() => client.destroy());
  const lines: string[] = [];
  const limits = { timeoutMs: 200, maxInflight: 8 };
  const log = createAppLog((line) => lines.push(line));
  // Every outcome and every count of calls in flight, as the metrics would see them.
  const outcomes: string[] = [];
  const inflight: number[] = [];
  const observer = { call: (_command: string, outcome: string) => { outcomes.push(outcome); }, inflight: (count: number) => { inflight.push(count); } };
  const bounded = boundedCalls(limits, callReporter(log, refusalLog(log), 'test', limits, observer));
  return { client, lines, bounded, outcomes, inflight };
}

test('a reply that came in time while the process was busy is no timeout: a 503 means Redis missed its deadline', async (t) => {
  const { client, lines, bounded } = await boundedOnRedis(t);
  const reply = bounded('PING', () => client.ping());
  // node-redis writes its commands once the current turn of the loop is done.
  await new Promise((resolve) => setImmediate(resolve));
  // The process is busy (other requests' bodies) past the deadline; the reply waits in the socket meanwhile.
  const busyUntil = performance.now() + 500;
  while (performance.now() < busyUntil) { /* busy */ }
  assert.equal(await reply, 'PONG');
  assert.deepEqual(lines, []);
});

test('the deadline of a call starts once its command is handed to node-redis: a pause before the client writes it is no timeout', async (t) => {
  const { client, lines, bounded } = await boundedOnRedis(t);
  // The command goes to node-redis in an immediate queued by the call, after a 500 ms pause (a major collection).
  const reply = bounded('PING', () => new Promise<string>((resolve, reject) => {
    setImmediate(() => {
      const until = performance.now() + 500;
      while (performance.now() < until) { /* the pause */ }
      client.ping().then(resolve, reject);
    });
  }));
  assert.equal(await reply, 'PONG');
  assert.deepEqual(lines, []);
});

test('a call whose work throws before it returns a promise gives its slot back: MESSAGES_MAX_INFLIGHT of them take none', async (t) => {
  const { client, bounded, outcomes, inflight } = await boundedOnRedis(t);
  for (let i = 0; i < 8; i += 1) {
    await assert.rejects(bounded('SET', () => { throw new Error('no master known'); }), /no master known/);
  }
  // With the eight slots kept, this call would wait 200 ms for one and fail with "No Redis call slot".
  assert.equal(await bounded('PING', () => client.ping()), 'PONG');
  // Each failure counted once, as a rejected call's is, and each slot given back once: 1, 0, 1, 0, ...
  assert.deepEqual(outcomes, [...Array(8).fill('unavailable'), 'ok']);
  assert.deepEqual(inflight, Array.from({ length: 18 }, (_, i) => (i % 2 === 0 ? 1 : 0)));
});

test('large values sent in one turn all reach Redis at once, however busy the next turns are: no command waits a turn for a drain', async (t) => {
  const options = nodeOptions(loadConfig({ MESSAGES_REDIS_PORT: String(redis.port) }).redis);
  const client = createClient({ ...options, socket: { ...options.socket, host: '127.0.0.1', port: redis.port }, commandOptions: { timeout: 0 } });
  await client.connect();
  t.after(() => client.destroy());
  // Sixteen 1 MB SETs, as MESSAGES_MAX_BUFFERED_BYTES lets in flight, made in one turn; then every turn takes 100 ms.
  const value = 'v'.repeat(1_000_000);
  const started = performance.now();
  const replies = Array.from({ length: 16 }, (_, i) => client.set(`drain-test:${i}`, value).then(() => performance.now() - started));
  let busy = true;
  const spin = () => {
    const until = performance.now() + 100;
    while (performance.now() < until) { /* another request's body */ }
    if (busy) setImmediate(spin);
  };
  setImmediate(spin);
  const elapsed = await Promise.all(replies).finally(() => { busy = false; });
  await client.del(Array.from({ length: 16 }, (_, i) => `drain-test:${i}`));
  // Written a command a turn (a drain each), the last would come 1.6 s in; written at once, a few turns suffice.
  assert.ok(Math.max(...elapsed) < 1200, `replies after ${elapsed.map((ms) => ms.toFixed(0)).join(', ')} ms`);
});

test('the Redis socket\'s high-water mark stays above the bodies MESSAGES_MAX_BUFFERED_BYTES lets in flight, however large', () => {
  for (const budget of [16, 16_777_216, 268_435_456]) {
    const config = loadConfig({ MESSAGES_MAX_BODY_BYTES: '16', MESSAGES_MAX_BUFFERED_BYTES: String(budget) });
    const mark = nodeOptions(config.redis).socket.highWaterMark;
    // Below the bodies in flight, the test above would fail with that budget: commands would wait a turn each.
    assert.ok(mark > budget, `mark ${mark} for MESSAGES_MAX_BUFFERED_BYTES=${budget}`);
  }
  // The default's mark, which the test above proves, is the 64 MiB it was when it was a constant.
  assert.equal(nodeOptions(loadConfig({}).redis).socket.highWaterMark, 64 * 2 ** 20);
});

test('a connection flood past the file-descriptor limit leaves the service up: the excess is closed at once, and it serves again after', { timeout: 60_000 }, async (t) => {
  const service = await spawnService(serviceEnv({ redis, cert, dir: tempDir() }));
  t.after(() => stopChild(service.child));
  await untilReady(service.port, cert.ca);
  const pid = service.child.pid!;
  // Room for 20 connections more than the service holds now (listener, logs, Redis, its own descriptors).
  const limit = fs.readdirSync(`/proc/${pid}/fd`).length + 20;
  await run('prlimit', ['--pid', String(pid), `--nofile=${limit}:${limit}`]);
  const flood = Array.from({ length: 100 }, () => {
    const socket = net.connect({ port: service.port, host: '127.0.0.1' });
    const entry = { socket, closedByServer: false };
    socket.on('error', () => { entry.closedByServer = true; });
    socket.on('close', () => { entry.closedByServer = true; });
    return entry;
  });
  t.after(() => { for (const { socket } of flood) socket.destroy(); });
  // The connections that find no descriptor are accepted and closed at once (libuv's reserve descriptor): none waits.
  const closed = await waitFor(() => {
    const count = flood.filter((entry) => entry.closedByServer).length;
    return count >= 60 ? count : undefined;
  }, 5000, 'the connections past the limit to be closed');
  assert.ok(closed <= 100 - 10, `${closed} of 100 closed: the limit left no room for the first ones`);
  assert.equal(service.child.exitCode, null, 'the service exited');
  for (const { socket } of flood) socket.destroy();
  // Once the flood is gone, every descriptor is free again: a POST and its GET work on the same process. Until the
  // service has seen the flood's sockets close, a new connection may still be one closed at once (a reset).
  const reset = (err: NodeJS.ErrnoException) => {
    if (err.code === 'ECONNRESET') return undefined;
    throw err;
  };
  await waitFor(async () => (await healthz(service.port).catch(reset))?.status === 200, 10_000, '/healthz 200 after the flood');
  const posted = await postMessage(service.port, cert.ca, 'after the flood');
  assert.equal(posted.status, 201);
  const digest = digestOf('after the flood');
  assert.equal((await request(service.port, cert.ca, { path: `/messages/${digest}` })).body, '{"message":"after the flood"}');
  assert.equal(await stopChild(service.child), 0);
});

// A POST whose body is sent in two parts: the first at once, the rest when `finish` is called.
function postInParts(port: number, body: string, firstBytes: number) {
  const req = https.request({ host: '127.0.0.1', servername: 'localhost', port, ca: cert.ca, agent: false, method: 'POST', path: '/messages',
    headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } });
  const answered = new Promise<{ status: number; at: number }>((resolve) => {
    req.on('response', (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, at: performance.now() }));
    });
    req.on('error', () => resolve({ status: 0, at: performance.now() }));
  });
  req.write(body.slice(0, firstBytes));
  return { answered, finish: () => req.end(body.slice(firstBytes)) };
}

test('a body is read only once it fits MESSAGES_MAX_BUFFERED_BYTES: a small POST waits while two large ones hold it all', { timeout: 30_000 }, async (t) => {
  const large = (tag: string) => JSON.stringify({ message: tag.repeat(990_000) });
  // Room for the two large bodies and 10 bytes more: not for the small one's 19.
  const app = await serve(t, { MESSAGES_MAX_BODY_BYTES: '1000000', MESSAGES_MAX_BUFFERED_BYTES: String(2 * large('a').length + 10) });
  const port = app.service.port;
  let received = 0;
  app.service.server.on('request', () => { received += 1; });
  const first = postInParts(port, large('a'), 1000);
  const second = postInParts(port, large('b'), 1000);
  // Both large bodies are being read once their handlers have run: their bytes are held until one of them is stored.
  await waitFor(() => received === 2, 5000, 'both large POSTs received');
  await new Promise((resolve) => setImmediate(resolve));
  const small = postInParts(port, JSON.stringify({ message: 'small' }), 1000);
  let smallDone = false;
  const smallAnswered = small.answered.then((answer) => {
    smallDone = true;
    return answer;
  });
  // Its whole body is there once its handler has run: read, it would be answered within a Redis round trip.
  await waitFor(() => received === 3, 5000, 'the small POST received');
  await new Promise((resolve) => setImmediate(resolve));
  await waitFor(async () => (await redisCli(redis.port, 'PING')) === 'PONG', 1000, 'a Redis round trip');
  assert.equal(smallDone, false, 'the small POST was read while the budget was full');
  first.finish();
  const [firstAnswer, smallAnswer] = await Promise.all([first.answered, smallAnswered]);
  assert.equal(firstAnswer.status, 201);
  assert.equal(smallAnswer.status, 201);
  assert.ok(smallAnswer.at >= firstAnswer.at, 'the small POST was answered before the budget freed');
  second.finish();
  assert.equal((await second.answered).status, 201);
});

// The counter of bodies refused for `cause` (docs/metrics.md).
const rejectedBodies = (app: Captured, cause: string) =>
  app.metrics.registry.snapshot().messages_http_bodies_rejected_total?.[`{cause="${cause}"}`] ?? 0;

// A chunked POST's head and its first chunk, a valid start of {"message": ...}.
const chunkedStart = 'POST /messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n'
  + 'Transfer-Encoding: chunked\r\n\r\n5\r\n{"mes\r\n';

// Room for one chunked body only, and no minimum rate: nothing but the refusal itself can give the place back.
const oneBody = { MESSAGES_MAX_BODY_BYTES: '1000', MESSAGES_MAX_BUFFERED_BYTES: '1000', MESSAGES_MIN_BODY_RATE: '0',
  MESSAGES_HEADERS_TIMEOUT_MS: '1000', MESSAGES_REQUEST_TIMEOUT_MS: '1500' };

const refusedMidBody = [
  { refusal: 'a bad chunk (400)', rest: 'zz\r\n', status: 400, cause: 'invalid' },
  { refusal: 'the request timeout (408)', rest: '', status: 408, cause: 'too_slow' },
];

test('a body refused part-way, by a bad chunk (400) or by the request timeout (408), gives back its place in MESSAGES_MAX_BUFFERED_BYTES and is counted by its cause', { timeout: 30_000 }, async (t) => {
  for (const { refusal, rest, status, cause } of refusedMidBody) {
    const app = await serve(t, oneBody);
    const { socket, reader } = await connect(app.service.port, cert.ca);
    t.after(() => socket.destroy());
    socket.write(chunkedStart + rest);
    assert.equal((await reader.next('POST', 5000))?.status, status, refusal);
    await waitFor(() => app.metrics.sources.bufferedBytes!() === 0, 3000, `the bytes of the body refused by ${refusal} given back`);
    assert.equal(rejectedBodies(app, cause), 1, refusal);
    assert.equal((await postMessage(app.service.port, cert.ca, `after ${refusal}`)).status, 201, refusal);
  }
});

test('a POST refused while it waits for MESSAGES_MAX_BUFFERED_BYTES leaves the queue: the POSTs after it are read', { timeout: 20_000 }, async (t) => {
  const app = await serve(t, oneBody);
  const holder = await connect(app.service.port, cert.ca);
  const waiter = await connect(app.service.port, cert.ca);
  t.after(() => { holder.socket.destroy(); waiter.socket.destroy(); });
  holder.socket.write(chunkedStart);
  await waitFor(() => app.metrics.sources.bufferedBytes!() === 1000, 3000, 'the first body holding the budget');
  waiter.socket.write(`${chunkedStart}zz\r\n`);
  assert.equal((await waiter.reader.next('POST', 5000))?.status, 400);
  holder.socket.write('10\r\nsage": "holder"}\r\n0\r\n\r\n');
  assert.equal((await holder.reader.next('POST', 5000))?.status, 201);
  await waitFor(() => app.metrics.sources.bufferedBytes!() === 0, 3000, 'the bytes of every body given back');
  assert.equal((await postMessage(app.service.port, cert.ca, 'after the queue')).status, 201);
});

test('a POST pipelined behind another on a connection that dies gives back its place in MESSAGES_MAX_BUFFERED_BYTES', { timeout: 20_000 }, async (t) => {
  const app = await serve(t, oneBody);
  const holder = await connect(app.service.port, cert.ca);
  t.after(() => holder.socket.destroy());
  holder.socket.write(chunkedStart);
  await waitFor(() => app.metrics.sources.bufferedBytes!() === 1000, 3000, 'the first body holding the budget');
  // Two whole POSTs in one write, then the connection is gone: the second's answer never gets the socket.
  const body = JSON.stringify({ message: 'p'.repeat(880) });
  const post = `POST /messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
  const gone = await connect(app.service.port, cert.ca);
  gone.socket.write(post + post);
  await new Promise((resolve) => setTimeout(resolve, 200));
  gone.socket.destroy();
  holder.socket.write('10\r\nsage": "holder"}\r\n0\r\n\r\n');
  assert.equal((await holder.reader.next('POST', 5000))?.status, 201);
  await waitFor(() => app.metrics.sources.bufferedBytes!() === 0, 3000, 'the bytes of every body given back');
  assert.equal((await postMessage(app.service.port, cert.ca, 'after the pipeline')).status, 201);
});

test('a 1 MiB body sent a byte per chunk is held as its bytes, not as a million buffers: stored by a process with 96 MB of heap', { timeout: 60_000 }, async (t) => {
  // Each piece the parser hands over is a Buffer of its own, about 200 bytes of heap: kept as a list, 1 MiB of them
  // needs some 200 MB.
  const service = await spawnService({ ...serviceEnv({ redis, cert, dir: tempDir() }), NODE_OPTIONS: '--max-old-space-size=96' });
  t.after(() => stopChild(service.child, 'SIGKILL'));
  await untilReady(service.port, cert.ca);
  const body = JSON.stringify({ message: 'x'.repeat(1_048_576 - 14) });
  const { socket, reader } = await connect(service.port, cert.ca);
  t.after(() => socket.destroy());
  const chunks = Array.from(body, (char) => `1\r\n${char}\r\n`).join('');
  socket.write(`POST /messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n${chunks}0\r\n\r\n`);
  const answer = await reader.next('POST', 50_000);
  assert.equal(answer?.status, 201, `the answer: ${answer?.status}; the service: ${service.output().slice(-300)}`);
  assert.equal(JSON.parse(answer!.body.toString()).digest, digestOf(JSON.parse(body).message));
});

test('a body slower than MESSAGES_MIN_BODY_RATE after the 5 s grace gets 408 and loses its connection', { timeout: 30_000 }, async (t) => {
  const app = await serve(t);
  const client = await stubbornClient(t, app.service.port);
  const sent = performance.now();
  client.socket.write('POST /messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{');
  const answer = await client.reader.next('POST', 15_000);
  const elapsedMs = performance.now() - sent;
  assert.equal(answer?.status, 408);
  assert.deepEqual(JSON.parse(answer!.body.toString()), { err_msg: 'Request body arrived slower than 240 bytes/s' });
  assert.equal(answer!.headers.connection, 'close');
  assert.ok(elapsedMs >= 5000 && elapsedMs < 7500, `answered after ${elapsedMs.toFixed(0)} ms`);
  await waitFor(async () => (await connectionCount(app)) === 0, 5000, 'the connection released');
});

test('with MESSAGES_MAX_CONNECTIONS_PER_IP, one address re-opening stalled POSTs cannot hold every slot: others get through', { timeout: 60_000 }, async (t) => {
  const app = await serve(t, { MESSAGES_MAX_CONNECTIONS: '200', MESSAGES_MAX_CONNECTIONS_PER_IP: '20' });
  const port = app.service.port;
  let attacking = true;
  let refusedAttempts = 0;
  const open = new Set<net.Socket>();
  // 250 lanes from 127.0.0.2, each re-opening a POST that sends its headers and one body byte, for 10 s.
  const lane = async () => {
    while (attacking) {
      const tcp = net.connect({ port, host: '127.0.0.1', localAddress: '127.0.0.2' });
      open.add(tcp);
      // A full accept queue drops SYNs: a connection not up within 2 s is given up.
      tcp.setTimeout(2000, () => tcp.destroy());
      const socket = tls.connect({ socket: tcp, ca: cert.ca, servername: 'localhost' });
      socket.once('secureConnect', () => tcp.setTimeout(0));
      socket.on('error', () => {});
      socket.once('secureConnect', () => socket.write('POST /messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{'));
      const outcome = await new Promise<string>((resolve) => {
        socket.once('secureConnect', () => resolve('open'));
        socket.once('close', () => resolve('refused'));
      });
      if (outcome === 'refused') refusedAttempts += 1;
      else if (!socket.closed) await new Promise((resolve) => socket.once('close', resolve));
      tcp.destroy();
      open.delete(tcp);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };
  const lanes = Array.from({ length: 250 }, lane);
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const outcomes: number[] = [];
  const until = performance.now() + 6000;
  while (performance.now() < until) {
    outcomes.push(await Promise.race([
      healthz(port).then((reply) => reply.status, () => 0),
      new Promise<number>((resolve) => setTimeout(resolve, 2000, -1)),
    ]));
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  attacking = false;
  for (const socket of open) socket.destroy();
  await Promise.all(lanes);
  const served = outcomes.filter((status) => status === 200).length;
  t.diagnostic(`normal client: ${served} of ${outcomes.length} answered 200; attacker: ${refusedAttempts} connections refused`);
  assert.ok(served >= outcomes.length / 2, `${served} of ${outcomes.length} served`);
  assert.ok(refusedAttempts > 0, 'the attacker was never refused');
});

// Python's http.client sends the whole body before it reads the answer, as python-requests does.
const sendWholeBodyFirst = `
import http.client, json, ssl, sys
port, ca, tries, size = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
headers = {'Content-Type': 'application/json', **json.loads(sys.argv[5] if len(sys.argv) > 5 else '{}')}
body = json.dumps({'message': 'z' * size}).encode()
outcomes = []
for _ in range(tries):
    conn = http.client.HTTPSConnection('localhost', port, context=ssl.create_default_context(cafile=ca), timeout=10)
    try:
        conn.request('POST', '/messages', body=body, headers=headers)
        outcomes.append(str(conn.getresponse().status))
    except Exception as err:
        outcomes.append(type(err).__name__)
    finally:
        conn.close()
print(' '.join(outcomes))
`;

test('a 413 reaches a client that sends its whole 10 MB body, about ten times the limit, before it reads (python-requests does), 20 of 20 times', { timeout: 60_000 }, async (t) => {
  const app = await serve(t);
  const { stdout } = await run('python3', ['-c', sendWholeBodyFirst, String(app.service.port), cert.certFile, '20', '10000000'], { timeout: 50_000 });
  assert.deepEqual(stdout.trim().split(' '), Array(20).fill('413'));
});

test('a 400 or a 431 from the parser reaches a client that sends its whole 2 MB body before it reads, 10 of 10 times each', { timeout: 60_000 }, async (t) => {
  const app = await serve(t);
  // What follows a refused request is dropped unparsed: parsed, each chunk was refused again, and the refusal reset.
  for (const [status, headers] of [['400', { 'Transfer-Encoding': 'chunked', 'Content-Length': '5' }], ['431', { 'X-Big': 'a'.repeat(20_000) }]] as const) {
    const args = ['-c', sendWholeBodyFirst, String(app.service.port), cert.certFile, '10', '2000000', JSON.stringify(headers)];
    const { stdout } = await run('python3', args, { timeout: 25_000 });
    assert.deepEqual(stdout.trim().split(' '), Array(10).fill(status), status);
  }
});
