// The HTTP contract: every route, status code, error body and header, over real HTTPS against a real Redis.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import https from 'node:https';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import { closed, connect, exchange } from './attack-fixtures.ts';
import { parseMessage } from '../lib/body.ts';
import { redisCli } from './redis-fixtures.ts';
import { makeCert, postMessage, request, serviceEnv, startReady, startRedis, tempDir, type Cert, type InProcess, type RedisServer } from './helpers.ts';

const fooDigest = '2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae';
const sha256 = (text: string) => createHash('sha256').update(Buffer.from(text, 'utf8')).digest('hex');

let redis: RedisServer;
let cert: Cert;
let app: InProcess;
let port: number;

before(async () => {
  const dir = tempDir();
  [redis, cert] = await Promise.all([startRedis(), makeCert(dir)]);
  app = await startReady(serviceEnv({ redis, cert, dir }, { MESSAGES_MAX_BODY_BYTES: '1024' }));
  port = app.service.port;
});

after(async () => {
  await app.stop();
  await redis.stop();
});

const get = (path: string, headers: Record<string, string> = {}) => request(port, cert.ca, { path, headers });
const post = (body: string | Buffer, headers: Record<string, string | number> = { 'Content-Type': 'application/json' }) =>
  request(port, cert.ca, { method: 'POST', path: '/messages', headers, body });

function assertJsonError(reply: { status: number; headers: Record<string, unknown>; body: string }, status: number, errMsg: string | RegExp) {
  assert.equal(reply.status, status);
  assert.equal(reply.headers['content-type'], 'application/json; charset=utf-8');
  assert.equal(reply.headers['cache-control'], 'no-store');
  const body = JSON.parse(reply.body) as Record<string, unknown>;
  assert.deepEqual(Object.keys(body), ['err_msg']);
  if (typeof errMsg === 'string') assert.equal(body.err_msg, errMsg);
  else assert.match(String(body.err_msg), errMsg);
}

describe('POST /messages', () => {
  test('answers 201 with the SHA-256 digest of "foo"', async () => {
    const reply = await postMessage(port, cert.ca, 'foo');
    assert.equal(reply.status, 201);
    assert.equal(reply.headers['content-type'], 'application/json; charset=utf-8');
    assert.deepEqual(JSON.parse(reply.body), { digest: fooDigest });
  });

  test('answers 201 with Location: /messages/<digest> (RFC 9110 section 15.3.2)', async () => {
    const reply = await postMessage(port, cert.ca, 'foo');
    assert.equal(reply.status, 201);
    assert.equal(reply.headers.location, `/messages/${fooDigest}`);
  });

  test('answers 400 for a body nested deeper than 32 levels, before parsing it', async () => {
    assertJsonError(await post(`{"message":"x","deep":${'['.repeat(32)}${']'.repeat(32)}}`), 400, 'Request body nests deeper than 32 levels');
    assertJsonError(await post('['.repeat(1000)), 400, 'Request body nests deeper than 32 levels');
  });

  test('checks nesting in time linear in the body: 256 KiB of escaped quotes in an open string cost no more than a message', () => {
    const hostile = Buffer.from(`${'['.repeat(33)}"${'\\"'.repeat(131_072)}`);
    const message = Buffer.from(JSON.stringify({ message: '['.repeat(262_144) }));
    const took = (body: Buffer) => {
      const started = performance.now();
      try {
        parseMessage(body);
      } catch {
        // Only the time counts here; the answers are the tests above.
      }
      return performance.now() - started;
    };
    // The fastest of three each, interleaved: a scan that restarts at every quote took 12 s for 200 KiB.
    const times = { hostile: Infinity, message: Infinity };
    for (let round = 0; round < 3; round += 1) {
      times.hostile = Math.min(times.hostile, took(hostile));
      times.message = Math.min(times.message, took(message));
    }
    assert.ok(times.hostile < 10 * times.message + 5, `hostile ${times.hostile} ms, a message ${times.message} ms`);
  });

  test('accepts nesting up to 32 levels, and brackets inside the message itself', async () => {
    assert.equal((await post(`{"message":"x","deep":${'['.repeat(31)}${']'.repeat(31)}}`)).status, 201);
    const reply = await post(JSON.stringify({ message: `[{"[${'['.repeat(500)}\\"` }));
    assert.equal(reply.status, 201);
  });

  test('answers 201 again when the same message is posted twice', async () => {
    const first = await postMessage(port, cert.ca, 'twice');
    const second = await postMessage(port, cert.ca, 'twice');
    assert.equal(second.status, 201);
    assert.equal(second.body, first.body);
  });

  for (const [name, message] of [
    ['empty', ''], ['emoji', '😀👍🏽'], ['CJK', '漢字かなカナ한국어'], ['NUL characters', 'a\u0000b\u0000'],
    ['newlines and quotes', 'line\r\n"quoted" \\ back'], ['a combining sequence', 'e\u0301'],
  ]) {
    test(`stores and returns a message with ${name} unchanged, under the digest node:crypto computes`, async () => {
      const reply = await postMessage(port, cert.ca, message!);
      assert.equal(reply.status, 201);
      const { digest } = JSON.parse(reply.body) as { digest: string };
      assert.equal(digest, sha256(message!));
      const back = await get(`/messages/${digest}`);
      assert.equal(back.status, 200);
      assert.deepEqual(JSON.parse(back.body), { message });
    });
  }

  test('accepts a charset parameter and any case in the content type', async () => {
    const reply = await post('{"message":"foo"}', { 'Content-Type': 'Application/JSON; charset=UTF-8' });
    assert.equal(reply.status, 201);
  });

  test('accepts a message of exactly the body limit', async () => {
    const body = JSON.stringify({ message: 'x'.repeat(1024 - 14) });
    assert.equal(Buffer.byteLength(body), 1024);
    assert.equal((await post(body)).status, 201);
  });

  for (const [name, body, errMsg] of [
    ['malformed JSON', '{"message": "foo"', 'Request body is not valid JSON'],
    ['an empty body', '', 'Request body is not valid JSON'],
    ['a JSON array', '["foo"]', 'Request body must be a JSON object'],
    ['JSON null', 'null', 'Request body must be a JSON object'],
    ['a JSON string', '"foo"', 'Request body must be a JSON object'],
    ['no message field', '{"msg":"foo"}', 'Field "message" is missing'],
    ['a number as message', '{"message":42}', 'Field "message" must be a string'],
    ['null as message', '{"message":null}', 'Field "message" must be a string'],
    ['an object as message', '{"message":{"a":1}}', 'Field "message" must be a string'],
    ['an unpaired high surrogate escape', '{"message":"a\\ud800b"}', 'Field "message" contains an unpaired surrogate'],
    ['an unpaired low surrogate escape', '{"message":"\\udc00"}', 'Field "message" contains an unpaired surrogate'],
  ]) {
    test(`answers 400 for ${name}`, async () => {
      assertJsonError(await post(body!), 400, errMsg!);
    });
  }

  test('answers 400 for a body that is not valid UTF-8', async () => {
    const body = Buffer.concat([Buffer.from('{"message":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]);
    assertJsonError(await post(body), 400, 'Request body is not valid UTF-8');
  });

  test('answers 400 for an overlong UTF-8 encoding rather than repairing it', async () => {
    const body = Buffer.concat([Buffer.from('{"message":"'), Buffer.from([0xc0, 0xaf]), Buffer.from('"}')]);
    assertJsonError(await post(body), 400, 'Request body is not valid UTF-8');
  });

  for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'application/jsonx', 'multipart/form-data']) {
    test(`answers 415 for Content-Type ${type}`, async () => {
      assertJsonError(await post('{"message":"foo"}', { 'Content-Type': type }), 415, `Content-Type must be application/json; received ${type}`);
    });
  }

  test('answers 415 when the Content-Type header is missing', async () => {
    assertJsonError(await post('{"message":"foo"}', {}), 415, 'Content-Type must be application/json; received none');
  });

  test('answers 413 from Content-Length before reading the body', async () => {
    const reply = await post('x'.repeat(2000), { 'Content-Type': 'application/json', 'Content-Length': 2000 });
    assertJsonError(reply, 413, 'Request body exceeds the limit of 1024 bytes');
    assert.equal(reply.headers.connection, 'close');
  });

  test('answers 413 for a chunked body that grows past the limit, without reading the rest', async () => {
    const reply = await new Promise<{ status: number; headers: Record<string, unknown>; body: string }>((resolve, reject) => {
      const req = https.request({ host: '127.0.0.1', servername: 'localhost', port, ca: cert.ca, method: 'POST', path: '/messages', agent: false,
        headers: { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' } }, (res) => {
        let body = '';
        res.on('data', (chunk: Buffer) => { body += chunk.toString(); });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      });
      req.on('error', reject);
      // 600 + 600 bytes passes the 1024-byte limit; the request is never ended by the client.
      req.write('{"message":"' + 'x'.repeat(588));
      req.write('x'.repeat(600));
    });
    assertJsonError(reply, 413, 'Request body exceeds the limit of 1024 bytes');
  });

  test('answers 400 (not valid JSON), then 400 (Bad request) and closes, when Content-Length lies low and more bytes follow', async () => {
    // Only Content-Length bytes are the body; the rest parses as a malformed next request, never as body.
    const { socket, reader } = await connect(port, cert.ca);
    const body = `{"message":"${'x'.repeat(1000)}"}`;
    socket.write(`POST /messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n${body}`);
    const first = await reader.next('POST');
    assert.equal(first?.status, 400);
    assert.deepEqual(JSON.parse(first!.body.toString()), { err_msg: 'Request body is not valid JSON' });
    const second = await reader.next('GET');
    assert.equal(second?.status, 400);
    assert.deepEqual(JSON.parse(second!.body.toString()), { err_msg: 'Bad request' });
    assert.equal(second!.headers.connection, 'close');
    // The server closes its side without waiting for the client to close first.
    await closed(socket);
    assert.equal((await get('/healthz')).status, 200);
  });

  test('a 405 to a request without a body keeps the connection open for the next request', async () => {
    const { socket, reader } = await connect(port, cert.ca);
    socket.write('DELETE /messages HTTP/1.1\r\nHost: localhost\r\n\r\nGET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n');
    const refused = await reader.next('DELETE');
    assert.equal(refused?.status, 405);
    assert.equal(refused!.headers.connection, 'keep-alive');
    assert.equal((await reader.next('GET'))?.status, 200);
    socket.destroy();
  });

  for (const [name, head] of [
    ['415 (Content-Type text/plain)', 'POST /messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\n'],
    ['405 (POST /healthz)', 'POST /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n'],
  ]) {
    test(`a ${name} answered while the body is still unread says Connection: close, and the connection closes`, async () => {
      const { socket, reader } = await connect(port, cert.ca);
      // Announced but never sent in full: the answer cannot wait for it.
      socket.write(`${head}Content-Length: 100000\r\n\r\n{"message":"`);
      const reply = await reader.next('POST');
      assert.equal(reply?.status, Number(name.slice(0, 3)));
      assert.equal(reply!.headers.connection, 'close');
      await closed(socket);
    });
  }
});

describe('GET /messages/<digest>', () => {
  test('answers 200 with the stored message', async () => {
    await postMessage(port, cert.ca, 'foo');
    const reply = await get(`/messages/${fooDigest}`);
    assert.equal(reply.status, 200);
    assert.deepEqual(JSON.parse(reply.body), { message: 'foo' });
  });

  test('finds the same message by upper-case hex', async () => {
    await postMessage(port, cert.ca, 'foo');
    const reply = await get(`/messages/${fooDigest.toUpperCase()}`);
    assert.equal(reply.status, 200);
    assert.deepEqual(JSON.parse(reply.body), { message: 'foo' });
  });

  test('answers 404 naming the digest as given for an unknown digest', async () => {
    const digest = 'a'.repeat(64);
    assertJsonError(await get(`/messages/${digest}`), 404, `Message not found for hash: ${digest}`);
  });

  test('answers 404 naming the upper-case digest as given', async () => {
    const digest = 'B'.repeat(64);
    assertJsonError(await get(`/messages/${digest}`), 404, `Message not found for hash: ${digest}`);
  });

  for (const digest of ['abc', 'g'.repeat(64), 'a'.repeat(65)]) {
    test(`answers 404 for the malformed digest ${digest.slice(0, 8)}... of length ${digest.length}`, async () => {
      assertJsonError(await get(`/messages/${digest}`), 404, `Message not found for hash: ${digest}`);
    });
  }

  test('reads a digest of mixed case as its lower-case form, and names that in the ETag', async () => {
    await postMessage(port, cert.ca, 'foo');
    const mixed = [...fooDigest].map((ch, i) => (i % 2 === 0 ? ch.toUpperCase() : ch)).join('');
    const reply = await get(`/messages/${mixed}`);
    assert.equal(reply.status, 200);
    assert.equal(reply.headers.etag, `"${fooDigest}"`);
  });

  // The characters on either side of 0-9, A-F and a-f: a key planted under each is never read.
  for (const ch of ['/', ':', '@', 'G', '`', 'g']) {
    test(`answers 404 without reading Redis for 63 hex digits and ${JSON.stringify(ch)}`, async () => {
      const digest = `${'a'.repeat(63)}${ch}`;
      await redisCli(redis.port, 'MSET', `messages:${digest}`, 'planted', `messages:${digest.toLowerCase()}`, 'planted');
      assertJsonError(await get(`/messages/${encodeURIComponent(digest)}`), 404, `Message not found for hash: ${digest}`);
    });
  }

  test('caps a very long digest echoed in the 404 body', async () => {
    const reply = await get(`/messages/${'z'.repeat(2000)}`);
    assertJsonError(reply, 404, `Message not found for hash: ${'z'.repeat(256)}...`);
  });

  test('answers 404 without throwing for a malformed percent-escape', async () => {
    assertJsonError(await get('/messages/%E0%A4%A'), 404, 'Message not found for hash: %E0%A4%A');
  });

  test('names the digest with its percent-escapes decoded in the 404, and finds a message by an escaped digest', async () => {
    assertJsonError(await get('/messages/%2Fx%20y'), 404, 'Message not found for hash: /x y');
    await postMessage(port, cert.ca, 'foo');
    const escaped = fooDigest.replace(/^2c/, '%32%63');
    assert.equal((await get(`/messages/${escaped}`)).status, 200);
  });

  test('answers HEAD like GET with the same headers and no body', async () => {
    await postMessage(port, cert.ca, 'foo');
    const head = await request(port, cert.ca, { method: 'HEAD', path: `/messages/${fooDigest}` });
    const full = await get(`/messages/${fooDigest}`);
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
    assert.equal(head.headers['content-length'], full.headers['content-length']);
    assert.equal(head.headers.etag, full.headers.etag);
  });

  test('lets clients cache a stored message under its digest as ETag', async () => {
    await postMessage(port, cert.ca, 'foo');
    const reply = await get(`/messages/${fooDigest.toUpperCase()}`);
    assert.equal(reply.headers.etag, `"${fooDigest}"`);
    assert.equal(reply.headers['cache-control'], 'public, max-age=31536000, immutable');
  });

  for (const header of [`"${fooDigest}"`, `W/"${fooDigest}"`, `"other", "${fooDigest}"`, '*']) {
    test(`answers 304 without a body for If-None-Match ${header.slice(0, 12)}`, async () => {
      await postMessage(port, cert.ca, 'foo');
      const reply = await get(`/messages/${fooDigest}`, { 'If-None-Match': header });
      assert.equal(reply.status, 304);
      assert.equal(reply.body, '');
      assert.equal(reply.headers.etag, `"${fooDigest}"`);
      assert.equal(reply.headers['cache-control'], 'public, max-age=31536000, immutable');
      // RFC 9110 section 15.4.5: no representation metadata, and no Content-Length but that of the 200.
      assert.equal(reply.headers['content-length'], undefined);
      assert.equal(reply.headers['content-type'], undefined);
    });
  }

  test('answers 200 when If-None-Match names another digest', async () => {
    await postMessage(port, cert.ca, 'foo');
    const reply = await get(`/messages/${fooDigest}`, { 'If-None-Match': `"${'0'.repeat(64)}"` });
    assert.equal(reply.status, 200);
  });
});

describe('routing', () => {
  for (const path of ['/', '/message', '/messages/', '/messages/a/b', '/healthz/x', '/MESSAGES']) {
    test(`answers 404 for the unknown path ${path}`, async () => {
      assertJsonError(await get(path), 404, 'Not found');
    });
  }

  for (const [method, path, allow] of [
    ['GET', '/messages', 'POST'], ['DELETE', '/messages', 'POST'], ['PUT', '/messages/abc', 'GET, HEAD'],
    ['POST', '/messages/abc', 'GET, HEAD'], ['POST', '/healthz', 'GET, HEAD'], ['PATCH', '/messages', 'POST'], ['OPTIONS', '/readyz', 'GET, HEAD'],
  ]) {
    test(`answers 405 with Allow: ${allow} for ${method} ${path}`, async () => {
      const reply = await request(port, cert.ca, { method: method!, path: path! });
      assertJsonError(reply, 405, `Method ${method} not allowed; allowed: ${allow}`);
      assert.equal(reply.headers.allow, allow);
    });
  }

  for (const [name, raw] of [
    ['with a Host header', 'GET https://localhost/healthz?x=1 HTTP/1.1\r\nHost: localhost\r\n\r\n'],
    ['without a Host header (the authority stands for it)', 'GET https://localhost:5000/healthz HTTP/1.1\r\n\r\n'],
  ]) {
    test(`routes an absolute-form target on its path, ${name} (RFC 9112 section 3.2.2)`, async () => {
      const [reply] = await exchange(port, cert.ca, raw!);
      assert.equal(reply?.status, 200);
      assert.deepEqual(JSON.parse(reply!.body.toString()), { status: 'ok' });
    });
  }

  // RFC 9112 section 3.2: more than one Host line, or one that is no host, is a 400 (Node kept the first; a proxy
  // before the service may have routed by the other).
  for (const [name, head] of [
    ['two Host lines', 'Host: localhost\r\nHost: evil.example'],
    ['two equal Host lines', 'Host: localhost\r\nhost: localhost'],
    ['a Host with a space', 'Host: local host'],
    ['a Host with a path', 'Host: localhost/x'],
    ['a Host with a user', 'Host: user@localhost'],
    ['a Host that is not ASCII', 'Host: l\u00f6calhost'],
  ]) {
    test(`answers 400 for ${name} (RFC 9112 section 3.2)`, async () => {
      const [reply] = await exchange(port, cert.ca, `GET /healthz HTTP/1.1\r\n${head}\r\n\r\n`);
      assert.equal(reply?.status, 400);
      assert.deepEqual(JSON.parse(reply!.body.toString()), { err_msg: 'Header "Host" must name one host' });
    });
  }

  // Also what Node's and Python's clients send for a link-local address (its zone), and an Envoy cluster name.
  for (const host of ['localhost', 'localhost:8443', '127.0.0.1:1', '[::1]:8443', 'a-b.example_1.', '', 'LOCALHOST.',
    '[fe80::1%eth0]:8443', 'outbound|5000||messages.default.svc.cluster.local']) {
    test(`serves a request whose Host is ${JSON.stringify(host)}`, async () => {
      const [reply] = await exchange(port, cert.ca, `GET /healthz HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
      assert.equal(reply?.status, 200);
    });
  }

  for (const first of ['application/json', 'application/json; charset=utf-8', 'application/json;']) {
    test(`answers 415 for two Content-Type lines, even when the first is ${first}`, async () => {
      const body = '{"message":"foo"}';
      const [reply] = await exchange(port, cert.ca, 'POST /messages HTTP/1.1\r\nHost: localhost\r\n' +
        `Content-Type: ${first}\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      assert.equal(reply?.status, 415);
      assert.deepEqual(JSON.parse(reply!.body.toString()),
        { err_msg: `Content-Type must be application/json; received ${first}, text/plain` });
    });
  }

  test('answers 400 for an absolute-form target with no host in it', async () => {
    const [reply] = await exchange(port, cert.ca, 'GET https:///healthz HTTP/1.1\r\nHost: localhost\r\n\r\n');
    assert.equal(reply?.status, 400);
    assert.deepEqual(JSON.parse(reply!.body.toString()), { err_msg: 'Request target has no host' });
  });

  for (const line of ['GET /healthz HTTP/2.0', 'GET /healthz HTTP/0.9', 'GET /healthz']) {
    test(`answers 505 in JSON, and closes, for the request line ${line}`, async () => {
      const [reply] = await exchange(port, cert.ca, `${line}\r\nHost: localhost\r\n\r\n`);
      assert.equal(reply?.status, 505);
      assert.deepEqual(JSON.parse(reply!.body.toString()), { err_msg: 'HTTP version not supported; use HTTP/1.1' });
      assert.equal(reply!.headers.connection, 'close');
    });
  }

  test('ignores the query string when routing', async () => {
    assert.equal((await get('/healthz?verbose=1')).status, 200);
  });

  test('sends nosniff and HSTS on every answer', async () => {
    for (const reply of [await get('/healthz'), await get('/nope'), await post('{')]) {
      assert.equal(reply.headers['x-content-type-options'], 'nosniff');
      assert.equal(reply.headers['strict-transport-security'], 'max-age=31536000');
    }
  });
});

describe('health', () => {
  test('answers /healthz with 200 while serving', async () => {
    const reply = await get('/healthz');
    assert.equal(reply.status, 200);
    assert.deepEqual(JSON.parse(reply.body), { status: 'ok' });
  });

  test('answers /readyz with 200 when Redis answers a PING', async () => {
    const reply = await get('/readyz');
    assert.equal(reply.status, 200);
    assert.deepEqual(JSON.parse(reply.body), { status: 'ready' });
  });
});
