// Hostile clients: slow, idle and too many connections, oversized and malformed requests, old TLS, plain HTTP,
// clients that vanish, secrets kept out of logs and answers, and log injection.
import assert from 'node:assert/strict';
import { createHash, createPrivateKey, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { generateCert } from '../lib/certs.ts';
import {
  makeCert, openConnections, postMessage, readIfExists, request, serviceEnv, spawnService, startRedis, stopChild, tempDir,
  waitFor,
  type Cert, type RedisServer, type Reply,
} from './helpers.ts';
import { closed, connect, contractViolation, exchange, startCapturing, type Captured, type RawResponse } from './attack-fixtures.ts';

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
  await waitFor(() => app.appLines.some((line) => line.includes('"event":"redis_up"')), 10_000, 'redis_up');
  return app;
}

const errorLines = (app: Captured) => app.appLines.filter((line) => line.includes('"level":"error"'));
const healthz = (port: number) => request(port, cert.ca, { path: '/healthz' });
// Each access.log line as its request line and status, e.g. "POST /messages HTTP/1.1 408".
const loggedAnswers = (app: Captured) => app.accessLines.map((line) => / "([^"]*)" (\d{3}) /.exec(line)?.slice(1, 3).join(' '));

function assertContract(response: RawResponse | null | undefined, status: number, target = '/') {
  assert.ok(response, 'a response');
  assert.equal(response.status, status);
  assert.equal(contractViolation(response, 'GET', target), undefined);
}

// Once the server has let go of every connection, the handlers they held have seen it: whatever they would answer or
// log on that close has been, a turn of the event loop later.
async function settledAfterClose(app: Captured): Promise<void> {
  await waitFor(async () => (await connectionCount(app)) === 0, 5000, 'the server to release the connection');
  await new Promise((resolve) => setImmediate(resolve));
}

const connectionCount = (app: Captured) => openConnections(app.service.server);

// Writes `first`, then `more` every 100 ms until the server closes the connection.
async function trickle(port: number, first: string, more: string) {
  const connection = await connect(port, cert.ca);
  const opened = Date.now();
  connection.socket.write(first);
  const timer = setInterval(() => connection.socket.write(more), 100);
  const response = connection.reader.next('GET', 30_000);
  await closed(connection.socket);
  clearInterval(timer);
  return { response: await response, elapsedMs: Date.now() - opened };
}

// Each test waits out a timeout on its own service: they run side by side.
describe('slow and idle connections', { concurrency: true }, () => {
  test('slowloris: connections trickling header bytes get 408 from the headers timeout while a normal client is served', async (t) => {
    const app = await serve(t, { MESSAGES_HEADERS_TIMEOUT_MS: '1000', MESSAGES_REQUEST_TIMEOUT_MS: '2000' });
    const port = app.service.port;
    const attack = Array.from({ length: 40 }, (_, i) => trickle(port, 'GET /healthz HTTP/1.1\r\nHost: localhost\r\n', `X-Slow-${i}: y\r\n`));
    let attackOver = false;
    const attackDone = Promise.all(attack).finally(() => {
      attackOver = true;
    });
    const servedDuringAttack: Reply[] = [];
    while (!attackOver) {
      const reply = await healthz(port);
      if (!attackOver) servedDuringAttack.push(reply);
    }
    const attackers = await attackDone;
    assert.ok(servedDuringAttack.length >= 3, `served ${servedDuringAttack.length} requests during the attack`);
    for (const reply of servedDuringAttack) assert.equal(reply.status, 200);
    for (const { response, elapsedMs } of attackers) {
      assertContract(response, 408);
      assert.ok(elapsedMs >= 800 && elapsedMs < 8000, `cut after ${elapsedMs} ms`);
    }
    assert.deepEqual(errorLines(app), []);
  });

  test('a slow body gets 408 from the request timeout', async (t) => {
    const app = await serve(t, { MESSAGES_HEADERS_TIMEOUT_MS: '1000', MESSAGES_REQUEST_TIMEOUT_MS: '1500' });
    const head = 'POST /messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"message":"';
    const { response, elapsedMs } = await trickle(app.service.port, head, 'x');
    assertContract(response, 408);
    assert.ok(elapsedMs >= 1300 && elapsedMs < 8000, `cut after ${elapsedMs} ms`);
    assert.deepEqual(errorLines(app), []);
    // The handler reading the body sees the connection close, and must not log an answer of its own.
    await settledAfterClose(app);
    assert.deepEqual(loggedAnswers(app), ['POST /messages HTTP/1.1 408']);
  });

  test('a body still arriving after its early answer (415) is cut by the request timeout, with no second answer', async (t) => {
    const app = await serve(t, { MESSAGES_HEADERS_TIMEOUT_MS: '1000', MESSAGES_REQUEST_TIMEOUT_MS: '1500' });
    const connection = await connect(app.service.port, cert.ca);
    connection.socket.write('POST /messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\nx');
    const timer = setInterval(() => connection.socket.write('x'), 100);
    t.after(() => clearInterval(timer));
    assertContract(await connection.reader.next('POST'), 415);
    await closed(connection.socket);
    assert.equal(await connection.reader.next('POST'), null, 'no answer after the 415');
    await settledAfterClose(app);
    assert.deepEqual(loggedAnswers(app), ['POST /messages HTTP/1.1 415']);
    assert.deepEqual(errorLines(app), []);
  });

  test('a TLS connection that sends nothing is closed with 408 by the headers timeout', async (t) => {
    const app = await serve(t, { MESSAGES_HEADERS_TIMEOUT_MS: '1000', MESSAGES_REQUEST_TIMEOUT_MS: '2000' });
    const { socket, reader } = await connect(app.service.port, cert.ca);
    const opened = Date.now();
    assertContract(await reader.next('GET'), 408);
    await closed(socket);
    assert.ok(Date.now() - opened < 8000);
  });

  // Regression: without a TLS handshake timeout, Node held such a connection for its default of 120 s.
  test('a TCP connection that never starts TLS is closed by the headers timeout', async (t) => {
    const app = await serve(t, { MESSAGES_HEADERS_TIMEOUT_MS: '1000', MESSAGES_REQUEST_TIMEOUT_MS: '2000' });
    const socket = net.connect(app.service.port, '127.0.0.1');
    socket.on('error', () => {});
    const opened = Date.now();
    await once(socket, 'close');
    const elapsedMs = Date.now() - opened;
    assert.ok(elapsedMs >= 800 && elapsedMs < 8000, `closed after ${elapsedMs} ms`);
    assert.deepEqual(errorLines(app), []);
  });

  test('an idle keep-alive connection is closed after the keep-alive timeout', async (t) => {
    const app = await serve(t, { MESSAGES_KEEPALIVE_TIMEOUT_MS: '500' });
    const { socket, reader } = await connect(app.service.port, cert.ca);
    socket.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n');
    const response = await reader.next('GET');
    const answered = Date.now();
    assertContract(response, 200);
    assert.equal(response!.headers.connection, 'keep-alive');
    await closed(socket);
    const idleMs = Date.now() - answered;
    assert.ok(idleMs >= 400 && idleMs < 5000, `closed after ${idleMs} ms idle`);
  });

  // Regression: any byte reset Node's keep-alive timer, and the blank lines llhttp skips start no request to time.
  test('a keep-alive connection that sends only blank lines after its answer is closed once the keep-alive and headers timeouts have passed', async (t) => {
    const app = await serve(t, { MESSAGES_KEEPALIVE_TIMEOUT_MS: '500', MESSAGES_HEADERS_TIMEOUT_MS: '1000' });
    const { socket, reader } = await connect(app.service.port, cert.ca);
    socket.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n');
    assertContract(await reader.next('GET'), 200);
    const answered = Date.now();
    const trickle = setInterval(() => socket.write('\r\n'), 200);
    t.after(() => clearInterval(trickle));
    await Promise.race([closed(socket), new Promise((resolve) => setTimeout(resolve, 6000))]);
    clearInterval(trickle);
    const idleMs = Date.now() - answered;
    assert.ok(socket.closed, 'still open 6 s after its answer');
    assert.ok(idleMs >= 1400 && idleMs < 3000, `closed after ${idleMs} ms`);
  });

  test('a request begun just before the keep-alive timeout, its head arriving slowly, is answered', async (t) => {
    const app = await serve(t, { MESSAGES_KEEPALIVE_TIMEOUT_MS: '500', MESSAGES_HEADERS_TIMEOUT_MS: '2000' });
    const { socket, reader } = await connect(app.service.port, cert.ca);
    socket.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n');
    assertContract(await reader.next('GET'), 200);
    await new Promise((resolve) => setTimeout(resolve, 400));
    // Its head in three parts over 900 ms: past the keep-alive timeout, within the headers timeout.
    for (const part of ['GET /heal', 'thz HTTP/1.1\r\nHost: local', 'host\r\n\r\n']) {
      socket.write(part);
      await new Promise((resolve) => setTimeout(resolve, 450));
    }
    assertContract(await reader.next('GET'), 200);
  });

  test('MESSAGES_MAX_CONNECTIONS refuses the connection past the cap, and a freed slot serves again', async (t) => {
    const app = await serve(t, { MESSAGES_MAX_CONNECTIONS: '4' });
    const port = app.service.port;
    const held = await Promise.all(Array.from({ length: 4 }, () => connect(port, cert.ca)));
    try {
      const dropped = once(app.service.server, 'drop');
      await assert.rejects(connect(port, cert.ca));
      await dropped;
      // The connections within the cap are untouched.
      held[0]!.socket.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n');
      assertContract(await held[0]!.reader.next('GET'), 200);
      held[3]!.socket.destroy();
      await waitFor(async () => (await connectionCount(app)) === 3, 5000, 'the freed slot');
      assert.equal((await healthz(port)).status, 200);
    } finally {
      for (const { socket } of held) socket.destroy();
    }
  });
});

describe('oversized and malformed requests', () => {
  for (const [name, bytes] of [
    ['one 20 KiB header', `GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`],
    ['1000 small headers', `GET /healthz HTTP/1.1\r\nHost: localhost\r\n${'X-Many: aaaaaaaaaaaaaaaaaaaa\r\n'.repeat(1000)}\r\n`],
    ['a 20 KiB URL', `GET /messages/${'a'.repeat(20_000)} HTTP/1.1\r\nHost: localhost\r\n\r\n`],
  ]) {
    test(`answers 431 in JSON for ${name}, and goes on serving`, async (t) => {
      const app = await serve(t);
      const [response] = await exchange(app.service.port, cert.ca, bytes!);
      assertContract(response, 431);
      assert.equal(response!.body.toString(), '{"err_msg":"Request header fields too large"}');
      assert.equal((await healthz(app.service.port)).status, 200);
    });
  }

  // Regression: the answers Node's parser writes itself lacked Strict-Transport-Security.
  for (const [name, bytes] of [
    ['a lower-case method', 'get /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n'],
    ['bare LF line ends', 'GET /healthz HTTP/1.1\nHost: localhost\n\n'],
    ['a folded header', 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-A: b\r\n c\r\n\r\n'],
    ['Transfer-Encoding with Content-Length', 'POST /messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
    ['two different Content-Lengths', 'POST /messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd'],
    ['HTTP/1.2', 'GET /healthz HTTP/1.2\r\nHost: localhost\r\n\r\n'],
    ['TLS bytes inside TLS', '\x16\x03\x01\x00\x05\x01\x02\x03\x04\x05\r\n\r\n'],
  ]) {
    test(`answers ${name} with a JSON 400 carrying nosniff and HSTS`, async (t) => {
      const app = await serve(t);
      const [response] = await exchange(app.service.port, cert.ca, bytes!);
      assertContract(response, 400);
      assert.equal(response!.headers.connection, 'close');
    });
  }

  // Regression: Node answered a missing Host itself, with an empty chunked 400 and none of the service's headers.
  test('answers an HTTP/1.1 request without Host with a JSON 400', async (t) => {
    const app = await serve(t);
    const [response] = await exchange(app.service.port, cert.ca, 'GET /healthz HTTP/1.1\r\n\r\n');
    assertContract(response, 400);
  });

  test('serves an HTTP/1.0 request without Host', async (t) => {
    const app = await serve(t);
    const [response] = await exchange(app.service.port, cert.ca, 'GET /healthz HTTP/1.0\r\n\r\n');
    assertContract(response, 200);
  });

  // Regression: Node answered an unknown expectation itself with an undocumented, bodiless 417.
  test('serves a request whose Expect names something other than 100-continue as if it were absent', async (t) => {
    const app = await serve(t);
    const body = '{"message":"expect"}';
    const [response] = await exchange(app.service.port, cert.ca,
      `POST /messages HTTP/1.1\r\nHost: localhost\r\nExpect: 200-ok\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`, ['POST']);
    assert.equal(response?.status, 201);
    assert.equal(contractViolation(response, 'POST', '/messages'), undefined);
  });

  // Regression: Node answered 100 Continue to every Expect: 100-continue, so curl sent bodies refused by their head.
  test('answers Expect: 100-continue with the 415 or 413 its head earns, without asking for the body; a valid POST gets 100 Continue, then 201', async (t) => {
    const app = await serve(t);
    const head = (type: string, length: number) =>
      `POST /messages HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Type: ${type}\r\nContent-Length: ${length}\r\n\r\n`;
    for (const [name, bytes, status] of [['text/plain', head('text/plain', 10), '415'], ['5 MB', head('application/json', 5_000_000), '413']]) {
      const { socket } = await connect(app.service.port, cert.ca);
      t.after(() => socket.destroy());
      let text = '';
      socket.on('data', (chunk: Buffer) => { text += chunk.toString('latin1'); });
      socket.write(bytes!);
      await waitFor(() => text.includes('\r\n\r\n'), 5000, `the answer to ${name}`);
      assert.ok(text.startsWith(`HTTP/1.1 ${status} `), `${name}: ${text.slice(0, 40)}`);
    }
    const body = '{"message":"continue"}';
    const { socket } = await connect(app.service.port, cert.ca);
    t.after(() => socket.destroy());
    let text = '';
    socket.on('data', (chunk: Buffer) => { text += chunk.toString('latin1'); });
    socket.write(head('application/json', body.length));
    await waitFor(() => text.includes('\r\n\r\n'), 5000, 'the 100 Continue');
    assert.equal(text, 'HTTP/1.1 100 Continue\r\n\r\n');
    socket.write(body);
    await waitFor(() => text.includes('{"digest"'), 5000, 'the 201');
    assert.match(text, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 201 /);
  });

  // Regression: an HTTP/1.0 client, which takes any status line for the answer, got 100 Continue (RFC 9110 section
  // 10.1.1: a server MUST ignore the expectation in HTTP/1.0); a list naming 100-continue, or two Expect lines, got none.
  for (const [version, expect, continues] of [
    ['1.0', 'Expect: 100-continue', false],
    ['1.1', 'Expect: 100-continue, x-other', true],
    ['1.1', 'Expect: 100-Continue\r\nExpect: 100-continue', true],
    ['1.1', 'Expect: x100-continue', false],
    ['1.1', 'Expect: 100-continuex', false],
  ] as const) {
    test(`${continues ? 'sends' : 'never sends'} 100 Continue to HTTP/${version} with ${JSON.stringify(expect)}`, async (t) => {
      const app = await serve(t);
      const body = `{"message":"expect ${version}"}`;
      const { socket } = await connect(app.service.port, cert.ca);
      t.after(() => socket.destroy());
      let text = '';
      socket.on('data', (chunk: Buffer) => { text += chunk.toString('latin1'); });
      socket.write(`POST /messages HTTP/${version}\r\nHost: localhost\r\n${expect}\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${body.length}\r\n\r\n`);
      if (continues) await waitFor(() => text.includes('\r\n\r\n'), 5000, 'the 100 Continue');
      else await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(text, continues ? 'HTTP/1.1 100 Continue\r\n\r\n' : '');
      socket.write(body);
      await waitFor(() => text.includes('{"digest"'), 5000, 'the 201');
      assert.match(text, continues ? /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 201 / : /^HTTP\/1\.1 201 /);
    });
  }

  // Regression: the answer to a malformed request was written at once, ahead of the earlier request's answer.
  for (const [name, second, status] of [
    ['a malformed request', 'get / HTTP/1.1\r\n\r\n', 400],
    ['a CONNECT', 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n', 405],
    ['an oversized header', `GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, 431],
    // llhttp refuses this one only after Node has emitted it as a request (found by the fuzzer, seed 04e69411dec94d04).
    ['an invalid Transfer-Encoding', 'GET /messages HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip\r\n\r\n', 400],
  ] as const) {
    test(`answers ${name} pipelined behind a POST in request order`, async (t) => {
      const app = await serve(t);
      const body = '{"message":"pipelined"}';
      const post = `POST /messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
      // A third read shows that nothing else answers the refused request.
      const responses = await exchange(app.service.port, cert.ca, post + second, ['POST', 'GET', 'GET']);
      assert.deepEqual(responses.map((response) => response.status), [201, status]);
      assert.deepEqual(JSON.parse(responses[0]!.body.toString()), { digest: createHash('sha256').update('pipelined').digest('hex') });
    });
  }

  // Regression: Node dropped a CONNECT request without any answer.
  test('answers CONNECT with a JSON 405 and Allow', async (t) => {
    const app = await serve(t);
    const [response] = await exchange(app.service.port, cert.ca, 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n', ['CONNECT']);
    assertContract(response, 405);
    assert.equal(response!.headers.allow, 'GET, HEAD, POST');
    assert.equal((await healthz(app.service.port)).status, 200);
  });
});

describe('TLS', () => {
  for (const version of ['TLSv1', 'TLSv1.1'] as const) {
    test(`refuses a client that offers at most ${version} with a protocol_version alert`, async (t) => {
      const app = await serve(t);
      // SECLEVEL=0 lets this client offer the old versions at all, so the refusal is the server's.
      const offered = connect(app.service.port, cert.ca, { minVersion: 'TLSv1', maxVersion: version, ciphers: 'DEFAULT:@SECLEVEL=0' });
      await assert.rejects(offered, { code: 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION' });
      assert.equal((await healthz(app.service.port)).status, 200);
    });
  }

  for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
    test(`accepts ${version}`, async (t) => {
      const app = await serve(t);
      const { socket } = await connect(app.service.port, cert.ca, { minVersion: version, maxVersion: version });
      assert.equal(socket.getProtocol(), version);
      socket.destroy();
    });
  }

  // Regression: Node let a TLS 1.2 client renegotiate 3 times per connection: each a full handshake's CPU on demand.
  test('refuses a TLS 1.2 client\'s renegotiation, and keeps serving', async (t) => {
    const app = await serve(t);
    const { socket } = await connect(app.service.port, cert.ca, { maxVersion: 'TLSv1.2' });
    t.after(() => socket.destroy());
    socket.on('error', () => {});
    const outcome = await new Promise<string>((resolve) => {
      socket.once('close', () => resolve('closed'));
      const asked = socket.renegotiate({}, (err) => resolve(err === null ? 'renegotiated' : `refused: ${err.message}`));
      if (!asked) resolve('not sent');
    });
    assert.notEqual(outcome, 'renegotiated');
    assert.equal((await healthz(app.service.port)).status, 200);
  });

  // Mozilla's "intermediate" TLS 1.2 list: forward secrecy and AEAD only.
  const cbcOnly = 'ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384';
  test('refuses a TLS 1.2 client that offers only CBC suites, before and after a certificate reload', async (t) => {
    const app = await serve(t);
    for (const moment of ['at start', 'after a reload']) {
      const offered = connect(app.service.port, cert.ca, { maxVersion: 'TLSv1.2', ciphers: cbcOnly });
      // The alert (handshake_failure) is the protocol's; its code's prefix is OpenSSL's and differs by Node line.
      await assert.rejects(offered, { code: /_ALERT_HANDSHAKE_FAILURE$/ }, moment);
      app.service.reload();
    }
    assert.equal((await healthz(app.service.port)).status, 200);
  });

  for (const cipher of ['ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDHE-ECDSA-CHACHA20-POLY1305']) {
    test(`negotiates ${cipher} with a TLS 1.2 client that offers only it`, async (t) => {
      const app = await serve(t);
      const { socket } = await connect(app.service.port, cert.ca, { maxVersion: 'TLSv1.2', ciphers: cipher });
      assert.equal(socket.getCipher().name, cipher);
      socket.destroy();
    });
  }

  test('closes plain HTTP sent to the HTTPS port, with at most one app.log line for twenty probes', async (t) => {
    const app = await serve(t);
    for (let i = 0; i < 20; i += 1) {
      const socket = net.connect(app.service.port, '127.0.0.1');
      socket.on('error', () => {});
      socket.write('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n');
      await once(socket, 'close');
    }
    assert.equal((await healthz(app.service.port)).status, 200);
    const lines = app.appLines.filter((line) => !/"event":"(listening|redis_up)"/.test(line));
    assert.ok(lines.length <= 1, lines.join(''));
    for (const line of lines) assert.deepEqual([JSON.parse(line).level, line.includes('"stack"')], ['warn', false]);
  });
});

describe('clients that vanish', () => {
  const bigMessage = 'x'.repeat(3_000_000);
  let bigDigest = '';
  const post = (head: string) => `POST /messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n${head}`;
  const stages: [string, (port: number) => Promise<unknown>][] = [
    ['during the TLS handshake', async (port) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.on('error', () => {});
      sockets.push(socket);
      await once(socket, 'connect');
      socket.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
    }],
    ['in the request line', async (port) => write(port, 'GET /heal')],
    ['in the headers', async (port) => write(port, 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-A: ')],
    ['in a Content-Length body', async (port) => write(port, `${post('Content-Length: 100\r\n\r\n')}{"message":"`)],
    ['in a chunked body', async (port) => write(port, `${post('Transfer-Encoding: chunked\r\n\r\n')}10\r\n{"message":"`)],
    ['after the request, before the response', async (port) => write(port, `GET /messages/${bigDigest} HTTP/1.1\r\nHost: localhost\r\n\r\n`)],
    ['in the middle of a 3 MB response', async (port) => {
      const { socket } = await write(port, `GET /messages/${bigDigest} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
      await once(socket, 'data');
    }],
  ];
  let sockets: net.Socket[] = [];

  async function write(port: number, bytes: string) {
    const connection = await connect(port, cert.ca);
    sockets.push(connection.tcp);
    connection.socket.write(bytes);
    return connection;
  }

  for (const [stage, act] of stages) {
    for (const how of ['closes', 'resets'] as const) {
      test(`a client that ${how} the connection ${stage} leaves no error line and no open connection`, async (t) => {
        const app = await serve(t, { MESSAGES_MAX_BODY_BYTES: '4000000' });
        const port = app.service.port;
        if (bigDigest === '') bigDigest = JSON.parse((await postMessage(port, cert.ca, bigMessage)).body).digest;
        sockets = [];
        const listened = once(app.service.server, 'connection');
        await act(port);
        await listened;
        for (const socket of sockets) {
          if (how === 'resets') socket.resetAndDestroy();
          else socket.destroy();
        }
        await waitFor(async () => (await connectionCount(app)) === 0, 5000, 'every connection closed');
        assert.equal((await healthz(port)).status, 200);
        assert.deepEqual(errorLines(app), []);
      });
    }
  }

  // Regression: the line said "-" for the address, which Node no longer knows once the socket is gone.
  test('a client that leaves mid-body is logged with its address and a 400', async (t) => {
    const app = await serve(t);
    const emitted = once(app.service.server, 'request');
    const connection = await write(app.service.port, `${post('Content-Length: 100\r\n\r\n')}{"message":"`);
    await emitted;
    connection.tcp.destroy();
    await waitFor(() => app.accessLines.length === 1, 5000, 'the access.log line');
    assert.match(app.accessLines[0]!, /^127\.0\.0\.1 - - \[[^\]]+\] "POST \/messages HTTP\/1\.1" 400 /);
  });
});

describe('secrets', { concurrency: true }, () => {
  const password = `pw-${randomBytes(12).toString('hex')}`;
  let secured: RedisServer;

  before(async () => {
    secured = await startRedis(['--requirepass', password]);
  });

  after(async () => {
    await secured.stop();
  });

  // Every base64 line of a PEM key and its private scalar, as they would appear if leaked.
  function keyMaterial(keyFile: string): string[] {
    const pem = fs.readFileSync(keyFile, 'utf8');
    const lines = pem.split('\n').filter((line) => line !== '' && !line.startsWith('-----')).map((line) => line.slice(0, 40));
    const jwk = createPrivateKey(pem).export({ format: 'jwk' });
    return [...lines, String(jwk.d)];
  }

  function assertNothingLeaks(texts: string[], secrets: string[]) {
    for (const text of texts) {
      for (const secret of secrets) assert.ok(!text.includes(secret), `a secret leaked into: ${text.slice(0, 200)}`);
    }
  }

  async function answers(port: number, ca: Buffer): Promise<string[]> {
    const replies = [
      await postMessage(port, ca, 'secret test'),
      await request(port, ca, { path: `/messages/${'a'.repeat(64)}` }),
      await request(port, ca, { method: 'POST', path: '/messages', headers: { 'Content-Type': 'application/json' }, body: '{' }),
      await request(port, ca, { path: '/readyz' }),
      await request(port, ca, { method: 'DELETE', path: '/messages' }),
    ];
    const raw = await exchange(port, ca, `GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    return [...replies.map((reply) => JSON.stringify(reply.headers) + reply.body), ...raw.map((r) => JSON.stringify(r.headers) + r.body.toString())];
  }

  test('the Redis password in MESSAGES_REDIS_URL and the TLS key appear in no log line and no answer, even on a failed reload', async (t) => {
    const dir = tempDir();
    const ownCert = await makeCert(dir);
    const url = `redis://:${password}@127.0.0.1:${secured.port}`;
    const service = await spawnService(serviceEnv({ redis: secured, cert: ownCert, dir }, { MESSAGES_REDIS_URL: url }));
    t.after(() => stopChild(service.child, 'SIGKILL'));
    await waitFor(() => service.output().includes('"redis_up"'), 10_000, 'redis_up');
    const texts = await answers(service.port, ownCert.ca);
    assert.match(texts[0]!, /"digest"/);
    // A key that does not match the certificate: the reload fails and logs why.
    const original = keyMaterial(ownCert.keyFile);
    const other = path.join(dir, 'other');
    await generateCert(path.join(other, 'c.crt'), path.join(other, 'k.key'));
    fs.copyFileSync(path.join(other, 'k.key'), ownCert.keyFile);
    service.child.kill('SIGHUP');
    await waitFor(() => service.output().includes('"cert_reload_failed"'), 10_000, 'cert_reload_failed');
    assert.equal(await stopChild(service.child), 0);

    const starting = JSON.parse(service.output().split('\n').find((line) => line.includes('"event":"starting"'))!);
    assert.equal(starting.config.redis.url, `redis://***@127.0.0.1:${secured.port}`);
    const logs = ['app.log', 'access.log'].map((name) => readIfExists(path.join(dir, 'logs', name)));
    assert.match(logs[0]!, /"cert_reload_failed"/);
    assertNothingLeaks([...texts, ...logs, service.output()], [password, ...original, ...keyMaterial(ownCert.keyFile)]);
  });

  test('a wrong MESSAGES_REDIS_PASSWORD is reported as refused credentials without the password', async (t) => {
    const dir = tempDir();
    const ownCert = await makeCert(dir);
    const wrong = `wrong-${password}`;
    const service = await spawnService(serviceEnv({ redis: secured, cert: ownCert, dir }, { MESSAGES_REDIS_PASSWORD: wrong }));
    t.after(() => stopChild(service.child, 'SIGKILL'));
    await waitFor(() => service.output().includes('"redis_down"'), 10_000, 'redis_down');
    const texts = await answers(service.port, ownCert.ca);
    assert.match(texts[0]!, /Storage is unavailable/);
    assert.equal(await stopChild(service.child), 0);
    const down = JSON.parse(service.output().split('\n').find((line) => line.includes('"redis_down"'))!);
    assert.match(down.hint, /refused the credentials/);
    const logs = ['app.log', 'access.log'].map((name) => readIfExists(path.join(dir, 'logs', name)));
    assertNothingLeaks([...texts, ...logs, service.output()], [wrong, password]);
  });
});

describe('log injection', () => {
  // Combined Log Format plus the response time ("-" for an answer no handler wrote); every quoted field holds only
  // printable ASCII with \" \\ \xHH escapes.
  const accessLine = /^127\.0\.0\.1 - - \[[^\]]+\] "((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\]|\\x[0-9a-f]{2})*)" \d{3} (?:\d+|-) "((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\]|\\x[0-9a-f]{2})*)" "((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\]|\\x[0-9a-f]{2})*)" (\d+\.\d{3}|-)$/;
  const unescape = (field: string) => field.replace(/\\x([0-9a-f]{2})|\\(["\\])/g, (_, hex: string | undefined, ch: string | undefined) =>
    hex === undefined ? ch! : String.fromCharCode(parseInt(hex, 16)));

  // The request line is logged as the parser received it, escaped; a refused header is never logged.
  for (const [name, bytes, requestLine] of [
    ['an ANSI escape in the path', 'GET /\x1b[2J\x1b[31mred HTTP/1.1\r\nHost: localhost\r\n\r\n', 'GET /\x1b[2J\x1b[31mred HTTP/1.1'],
    ['an ANSI escape in the user agent', 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nUser-Agent: \x1b]0;owned\x07\r\n\r\n', 'GET /healthz HTTP/1.1'],
    ['a lone CR in the referer', 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nReferer: a\rb\r\n\r\n', 'GET /healthz HTTP/1.1'],
    ['NUL in the path', 'GET /\x00 HTTP/1.1\r\nHost: localhost\r\n\r\n', 'GET /\x00 HTTP/1.1'],
    ['DEL in the user agent', 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nUser-Agent: a\x7fb\r\n\r\n', 'GET /healthz HTTP/1.1'],
    // The method and version of a request that reaches a handler are logged unescaped: the parser refuses others.
    ['an ANSI escape in the method', 'G\x1b[2JET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n', 'G\x1b[2JET /healthz HTTP/1.1'],
    ['an unknown method', 'BREW /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n', 'BREW /healthz HTTP/1.1'],
    ['a quote in the version', 'GET /healthz HTTP/1."\r\nHost: localhost\r\n\r\n', 'GET /healthz HTTP/1."'],
    ['TLS-wrapped garbage', '\x16\x03\x01\x00\xa5\x01"\\ \r\n\r\n', '\x16\x03\x01\x00\xa5\x01"\\ '],
  ]) {
    test(`refuses ${name} with a JSON 400 and one escaped access.log line`, async (t) => {
      const app = await serve(t);
      const [response] = await exchange(app.service.port, cert.ca, Buffer.from(bytes!, 'latin1'));
      assertContract(response, 400);
      await waitFor(() => app.accessLines.length > 0, 2000, 'the access.log line');
      assert.equal(app.accessLines.length, 1);
      const fields = accessLine.exec(app.accessLines[0]!.replace(/\n$/, ''));
      assert.ok(fields, app.accessLines[0]);
      assert.deepEqual([unescape(fields[1]!), fields[2], fields[3], fields[4]], [requestLine, '-', '-', '-']);
      assert.match(app.accessLines[0]!, / 400 25 /);
    });
  }

  test('logs a request refused after earlier ones on its connection with "-" for a request line it cannot place', async (t) => {
    const app = await serve(t);
    const responses = await exchange(app.service.port, cert.ca, 'GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\nGET /\x00 HTTP/1.1\r\n\r\n', ['GET', 'GET']);
    assert.deepEqual(responses.map((response) => response.status), [200, 400]);
    await waitFor(() => app.accessLines.length === 2, 2000, 'two access.log lines');
    assert.match(app.accessLines[0]!, /"GET \/healthz HTTP\/1\.1" 200 /);
    assert.match(app.accessLines[1]!, /^127\.0\.0\.1 - - \[[^\]]+\] "-" 400 25 "-" "-" -\n$/);
  });

  test('bytes sent after a request that said close get no answer and no access.log line: the client sends nothing more (RFC 9112 9.6)', async (t) => {
    const app = await serve(t);
    const responses = await exchange(app.service.port, cert.ca, 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\nGET /\x00 HTTP/1.1\r\n\r\n', ['GET', 'GET']);
    assert.deepEqual(responses.map((response) => response.status), [200]);
    await settledAfterClose(app);
    assert.deepEqual(loggedAnswers(app), ['GET /healthz HTTP/1.1 200']);
  });

  test('logs "-" for the request line of a request refused in a later piece than its first line', async (t) => {
    const app = await serve(t);
    const { socket, reader } = await connect(app.service.port, cert.ca);
    try {
      socket.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\n');
      await new Promise((resolve) => setTimeout(resolve, 100));
      socket.write('X-\x01: forged line\r\n\r\n');
      assert.equal((await reader.next('GET'))?.status, 400);
    } finally {
      socket.destroy();
    }
    await waitFor(() => app.accessLines.length === 1, 2000, 'the access.log line');
    assert.match(app.accessLines[0]!, /^127\.0\.0\.1 - - \[[^\]]+\] "-" 400 25 "-" "-" -\n$/);
  });

  test('logs CONNECT and a request refused after Node made one of it (invalid Transfer-Encoding) as themselves', async (t) => {
    const app = await serve(t);
    await exchange(app.service.port, cert.ca, 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nUser-Agent: probe\r\n\r\n', ['CONNECT']);
    await exchange(app.service.port, cert.ca, 'GET /messages HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip\r\n\r\n');
    await waitFor(() => app.accessLines.length === 2, 2000, 'two access.log lines');
    assert.match(app.accessLines[0]!, /"CONNECT example\.com:443 HTTP\/1\.1" 405 \d+ "-" "probe" -\n$/);
    assert.match(app.accessLines[1]!, /"GET \/messages HTTP\/1\.1" 400 25 "-" "-" -\n$/);
  });

  test('a CR LF inside the request line ends that request there: the rest is refused and forges no access.log line', async (t) => {
    const app = await serve(t);
    const responses = await exchange(app.service.port, cert.ca, 'GET /a\r\nX-Forged: 1 HTTP/1.1\r\nHost: localhost\r\n\r\n', ['GET', 'GET']);
    // The parser takes "GET /a" for an HTTP/0.9 request line, which gets a 505 and the connection closes.
    assert.equal(responses[0]?.status, 505);
    for (const response of responses) assert.equal(contractViolation(response, 'GET', '/a'), undefined);
    assert.equal(app.accessLines.length, 1);
    assert.match(app.accessLines[0]!, /^127\.0\.0\.1 - - \[[^\]]+\] "GET \/a HTTP\/0\.9" 505 /);
  });

  test('escapes quotes, backslashes, tabs and bytes above 0x7f in path, user agent and referer, one parseable access.log line each', async (t) => {
    const app = await serve(t);
    const sent: [string, string, string][] = [
      ['/a"b\\c%0d%0a%1b[31m', 'ua" "with quotes\\', '"ref\\" - -'],
      ['/tab', 'a\tb', 'x\ty'],
      ['/caf%C3%A9', '\xff\x80\xfe', 'https://x/\xe9"'],
      ['/"\\x0a', '\\x1b[31m', '" 200 - "-" "-" 0.1\\'],
    ];
    for (const [target, agent, referer] of sent) {
      const bytes = Buffer.from(`GET ${target} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: ${agent}\r\nReferer: ${referer}\r\n\r\n`, 'latin1');
      const [response] = await exchange(app.service.port, cert.ca, bytes);
      assert.equal(contractViolation(response!, 'GET', target), undefined);
    }
    const file = path.join(app.logDir, 'access.log');
    const lines = await waitFor(() => {
      const text = readIfExists(file);
      return text.split('\n').length === sent.length + 1 && text.split('\n').slice(0, -1);
    }, 5000, 'one access.log line per request');
    lines.forEach((line, i) => {
      const fields = accessLine.exec(line);
      assert.ok(fields, line);
      assert.deepEqual([unescape(fields[1]!), unescape(fields[3]!), unescape(fields[2]!)], [`GET ${sent[i]![0]} HTTP/1.1`, sent[i]![1], sent[i]![2]]);
    });
  });
});
