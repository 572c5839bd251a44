// Seeded fuzzer: thousands of random, malformed and hostile requests over keep-alive, pipelined and fresh TLS
// connections to a spawned service; every answer keeps the contract and the process stays up.
// Replay a run with the seed it printed: FUZZ_SEED=<seed> FUZZ_COUNT=<count> node --require tsx/cjs --test test/fuzz.test.ts
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { makeCert, request, serviceEnv, spawnService, startRedis, stopChild, tempDir, type Cert, type RedisServer, type Spawned } from './helpers.ts';
import { connect, contractViolation, type RawConnection, type RawResponse } from './attack-fixtures.ts';

const seed = process.env.FUZZ_SEED ?? randomBytes(8).toString('hex');
const count = Number(process.env.FUZZ_COUNT ?? 3000);
const lanes = 4;
const maxBodyBytes = 65_536;

// sfc32 (PractRand's small fast counter), its state drawn from SHA-256 of the seed: same seed, same requests.
class Random {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(text: string) {
    const h = createHash('sha256').update(text).digest();
    [this.a, this.b, this.c, this.d] = [h.readUInt32LE(0), h.readUInt32LE(4), h.readUInt32LE(8), h.readUInt32LE(12)];
    for (let i = 0; i < 15; i += 1) this.next();
  }

  next(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return (t >>> 0) / 4294967296;
  }

  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }

  text(length: number, alphabet: string): string {
    let out = '';
    for (let i = 0; i < length; i += 1) out += alphabet[this.int(alphabet.length)];
    return out;
  }

  bytes(length: number): Buffer {
    return Buffer.from(Array.from({ length }, () => this.int(256)));
  }
}

const printable = ' !"#$%&\'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~';
const pathSafe = "abcdefABCDEF0123456789-._~!$&'()*+,;=:@%/";
const hex = '0123456789abcdef';
const sha256 = (text: string) => createHash('sha256').update(text, 'utf8').digest('hex');

interface Case {
  bytes: Buffer;
  method: string;
  target: string;
  // Set when the request is well-formed enough that exactly these statuses are right.
  expect?: number[];
  // The digest a 201 must name.
  digest?: string;
  // The service may read these bytes as more than one request, so nothing more is sent on the connection.
  last?: boolean;
}

// One lane's generator; `stored` holds the messages this lane got a 201 for, so GETs can find them.
class Generator {
  readonly stored = new Set<string>();

  constructor(private readonly r: Random) {}

  message(): string {
    const r = this.r;
    const pieces = ['a', 'é', '漢', '😀', '\n', '"', '\\', '\u0000', '\u2028', '\ud800', '\udc00', ' ', '</script>', '%00', 'message'];
    let out = '';
    for (let i = r.int(20); i > 0; i -= 1) out += r.chance(0.5) ? r.text(1 + r.int(8), printable) : r.pick(pieces);
    return out;
  }

  json(depth: number): string {
    const r = this.r;
    switch (depth > 3 ? r.int(4) : r.int(7)) {
      case 0: return String(r.pick([0, -1, 1e308, 3.14, 2 ** 53 + 1]));
      case 1: return r.pick(['true', 'false', 'null']);
      case 2: return JSON.stringify(this.message());
      case 3: return `"${r.text(r.int(10), printable).replace(/["\\]/g, '')}\\u${r.text(4, hex)}"`;
      case 4: return `[${Array.from({ length: r.int(4) }, () => this.json(depth + 1)).join(',')}]`;
      default: {
        const keys = ['message', 'msg', '__proto__', 'constructor', 'Message', ''];
        return `{${Array.from({ length: r.int(4) }, () => `${JSON.stringify(r.pick(keys))}:${this.json(depth + 1)}`).join(',')}}`;
      }
    }
  }

  // A body and whether it is a valid {"message": "..."} with that message.
  body(): { body: Buffer; message?: string } {
    const r = this.r;
    const kind = r.int(14);
    if (kind < 5) {
      const message = this.message();
      return { body: Buffer.from(JSON.stringify({ message })), message: message.isWellFormed() ? message : undefined };
    }
    switch (kind) {
      case 5: return { body: Buffer.from(this.json(0)) };
      case 6: return { body: Buffer.from(`{"message":${r.pick(['42', 'null', '[]', '{}', 'true', '"a","message":7'])}}`) };
      case 7: {
        const message = this.message();
        // Duplicate keys: JSON.parse keeps the last one.
        return { body: Buffer.from(`{"message":"first","message":${JSON.stringify(message)}}`), message: message.isWellFormed() ? message : undefined };
      }
      case 8: return { body: Buffer.concat([Buffer.from('{"message":"'), r.bytes(1 + r.int(8)), Buffer.from('"}')]) };
      case 9: {
        const depth = 1 + r.int(10_000);
        return { body: Buffer.from(r.chance(0.5) ? `${'['.repeat(depth)}${']'.repeat(depth)}` : `{"message":${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}}`) };
      }
      case 10: return { body: Buffer.from(`{"message":"${'x'.repeat(maxBodyBytes)}"}`) };
      case 11: return { body: r.bytes(r.int(200)) };
      case 12: return { body: Buffer.from(`{"message":"\\u${r.pick(['d800', 'dbff', 'dc00', 'DFFF'])}${r.pick(['', 'x', '\\\\u0041'])}"}`) };
      default: return { body: Buffer.alloc(0) };
    }
  }

  target(): { target: string; known?: string; valid: boolean } {
    const r = this.r;
    const known = [...this.stored];
    switch (r.int(16)) {
      case 0: case 1: case 2: return { target: '/messages', valid: true };
      case 3: case 4: case 5: {
        if (known.length === 0) return { target: `/messages/${r.text(64, hex)}`, valid: true };
        const digest = r.pick(known);
        return { target: `/messages/${r.chance(0.2) ? digest.toUpperCase() : digest}`, known: digest, valid: true };
      }
      case 6: return { target: `/messages/${r.text(64, hex)}`, valid: true };
      case 7: return { target: r.pick(['/healthz', '/readyz', '/']), valid: true };
      case 8: return { target: r.pick(['/messages/../healthz', '/./healthz', '/healthz/.', '/%2e%2e/healthz', '/messages/%2e%2e', '/messages/.']), valid: false };
      case 9: return { target: r.pick(['//messages', '/messages//', `//messages/${r.text(64, hex)}`, '///', '/messages/a//b']), valid: false };
      case 10: return { target: `/messages/${r.text(r.int(80), pathSafe)}${r.pick(['%', '%zz', '%E0%A4%A', '%00', '%ff', '%C0%AF', '%2F', ''])}`, valid: false };
      case 11: return { target: `/messages/${'a'.repeat(r.chance(0.5) ? 1000 + r.int(5000) : 17_000 + r.int(4000))}`, valid: false };
      case 12: return { target: `${r.pick(['/healthz', '/messages'])}?${r.text(r.int(40), pathSafe + '?=&#')}`, valid: false };
      case 13: return { target: r.pick(['*', 'https://localhost/healthz', 'localhost:443', 'http://[::1]/messages', '']), valid: false };
      case 14: return { target: `/${r.text(r.int(30), printable)}`, valid: false };
      default: return { target: `/${r.bytes(1 + r.int(10)).toString('latin1')}`, valid: false };
    }
  }

  // One request as bytes on the wire, with what its answer must be when that is known.
  next(): Case {
    const r = this.r;
    if (r.chance(0.01)) return { bytes: r.bytes(1 + r.int(300)), method: 'GET', target: '/', last: true };
    const { target, known, valid: validTarget } = this.target();
    const post = target.startsWith('/messages') && !target.startsWith('/messages/');
    const method = r.chance(0.8) ? (post ? 'POST' : r.pick(['GET', 'GET', 'GET', 'HEAD'])) : r.pick(['PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE', 'CONNECT', 'get', 'FOO', 'M-SEARCH', 'POST', 'GET', 'HEAD', '']);
    const version = r.chance(0.9) ? 'HTTP/1.1' : r.pick(['HTTP/1.0', 'HTTP/2.0', 'HTTP/1.2', 'HTTP/1.1 x', 'HTTP/1.10', 'http/1.1']);
    const headers: string[] = [];
    let valid = validTarget && version === 'HTTP/1.1';
    let last = false;
    if (r.chance(0.97)) headers.push(`Host: ${r.pick(['localhost', '127.0.0.1', 'example.com:443', ''])}`);
    else valid = false;
    const contentType = r.chance(0.8) ? r.pick(['application/json', 'application/json; charset=utf-8', 'Application/JSON;charset=UTF-8', 'application/json;;;'])
      : r.pick(['text/plain', 'application/jsonx', 'multipart/form-data; boundary=x', '', 'application/x-www-form-urlencoded', '*/*']);
    if (!/^application\/json(;|$)/i.test(contentType)) valid = false;
    for (let i = r.int(4); i > 0; i -= 1) {
      const name = r.pick(['User-Agent', 'Referer', 'Accept', 'Cookie', 'Authorization', 'X-Forwarded-For', 'Origin', 'Range', `X-${r.text(1 + r.int(10), 'abcXYZ-')}`]);
      headers.push(`${name}: ${r.text(r.int(60), printable)}`);
    }
    let notModified = false;
    if (r.chance(0.1)) {
      const tag = known !== undefined && r.chance(0.6) ? `"${known}"` : r.pick(['*', '"x"', 'W/"y"', `"${r.text(64, hex)}"`]);
      headers.push(`If-None-Match: ${tag}`);
      notModified = tag === '*' || tag === `"${known}"`;
    }
    if (r.chance(0.05)) headers.push(r.pick(['Connection: close', 'Connection: keep-alive', 'Expect: 100-continue', 'Expect: something-else', 'Upgrade: websocket', 'Content-Encoding: gzip']));
    if (r.chance(0.01)) {
      headers.push(r.pick([`X-Big: ${'b'.repeat(17_000)}`, 'Bad Header: x', 'X-Ctl: a\u0001b', ' X-Leading-Space: x', 'X-No-Colon', 'Content-Length: 5', 'Transfer-Encoding: gzip']));
      valid = false;
      last = true;
    }
    const { body, message } = method === 'POST' || r.chance(0.05) ? this.body() : { body: Buffer.alloc(0), message: undefined };
    if (body.length > 0 || method === 'POST') headers.push(`Content-Type: ${contentType}`);
    let framed = body;
    const framing = r.int(20);
    if (framing === 0) {
      headers.push('Transfer-Encoding: chunked');
      framed = Buffer.concat([...chunks(r, body), Buffer.from('0\r\n\r\n')]);
    } else if (framing === 1 && body.length > 1) {
      headers.push(`Content-Length: ${r.int(body.length)}`);
      valid = false;
      last = true;
    } else if (framing === 2 && r.chance(0.02)) {
      // Longer than what follows: the service waits for the rest until MESSAGES_REQUEST_TIMEOUT_MS.
      headers.push(`Content-Length: ${body.length + 1 + r.int(100)}`);
      valid = false;
      last = true;
    } else if (body.length > 0 || method === 'POST') headers.push(`Content-Length: ${body.length}`);
    const head = `${method} ${target} ${version}\r\n${headers.join('\r\n')}${headers.length > 0 ? '\r\n' : ''}\r\n`;
    const testCase: Case = { bytes: Buffer.concat([Buffer.from(head, 'latin1'), framed]), method, target, last };
    if (!valid) return testCase;
    if (method === 'POST' && post && message !== undefined && body.length <= maxBodyBytes) {
      return { ...testCase, expect: [201], digest: sha256(message) };
    }
    if ((method === 'GET' || method === 'HEAD') && known !== undefined) return { ...testCase, expect: notModified ? [304] : [200] };
    if ((method === 'GET' || method === 'HEAD') && target === '/healthz') return { ...testCase, expect: [200] };
    return testCase;
  }
}

function chunks(r: Random, body: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < body.length;) {
    const size = Math.min(body.length - at, 1 + r.int(5000));
    out.push(Buffer.from(`${size.toString(16)}\r\n`), body.subarray(at, at + size), Buffer.from('\r\n'));
    at += size;
  }
  return out;
}

interface Violation { lane: number; index: number; problem: string; request: string; before?: string }

let connectionsOpened = 0;

let redis: RedisServer;
let cert: Cert;
let service: Spawned;

before(async () => {
  const dir = tempDir();
  [redis, cert] = await Promise.all([startRedis(), makeCert(dir)]);
  service = await spawnService(serviceEnv({ redis, cert, dir }, {
    MESSAGES_MAX_BODY_BYTES: String(maxBodyBytes),
    MESSAGES_HEADERS_TIMEOUT_MS: '1000',
    MESSAGES_REQUEST_TIMEOUT_MS: '1000',
  }));
});

after(async () => {
  await stopChild(service.child, 'SIGKILL');
  await redis.stop();
});

// Sends `count / lanes` requests from one lane: mostly one at a time on a kept-alive connection, sometimes two or
// three pipelined, sometimes on a fresh connection. Returns what broke the contract.
async function runLane(lane: number, total: number): Promise<Violation[]> {
  const r = new Random(`${seed}:${lane}`);
  const generator = new Generator(r);
  const violations: Violation[] = [];
  let connection: RawConnection | undefined;
  // What this connection carried just before the failing request: a parser state left over is the usual culprit.
  let previous: Buffer | undefined;
  let index = 0;
  while (index < total && violations.length < 10) {
    if (connection === undefined || connection.reader.closed || r.chance(0.1)) {
      connection?.socket.destroy();
      connection = await connect(service.port, cert.ca);
      connectionsOpened += 1;
      previous = undefined;
    }
    // Only well-formed requests are followed by more on the same write: for them, one request is one answer.
    const batch = [generator.next()];
    for (let more = r.chance(0.1) ? 1 + r.int(2) : 0; more > 0 && batch.at(-1)!.expect !== undefined; more -= 1) batch.push(generator.next());
    connection.socket.write(Buffer.concat(batch.map((c) => c.bytes)));
    let closing = false;
    for (const testCase of batch) {
      const at = index;
      const before = previous;
      index += 1;
      previous = testCase.bytes;
      const fail = (problem: string) => violations.push({
        lane, index: at, problem, request: excerpt(testCase.bytes), ...(before === undefined ? {} : { before: excerpt(before) }),
      });
      let response: RawResponse | null;
      try {
        response = await connection.reader.next(testCase.method, 20_000);
      } catch (err) {
        fail(err instanceof Error ? err.message : String(err));
        break;
      }
      if (response === null) {
        // The service may close after an answer that said so, or on bytes it could not parse at all.
        if (!closing && testCase.expect !== undefined) fail('connection closed without an answer');
        break;
      }
      const problem = contractViolation(response, testCase.method, testCase.target) ?? expectationViolation(testCase, response, generator);
      if (problem !== undefined) fail(`${response.status}: ${problem}; body ${JSON.stringify(response.body.subarray(0, 200).toString())}`);
      if (response.headers.connection === 'close') closing = true;
    }
    if (closing || batch.at(-1)!.last === true) {
      connection.socket.destroy();
      connection = undefined;
    }
  }
  connection?.socket.destroy();
  return violations;
}

function excerpt(bytes: Buffer): string {
  return JSON.stringify(bytes.subarray(0, 300).toString('latin1'));
}

function expectationViolation(testCase: Case, response: RawResponse, generator: Generator): string | undefined {
  if (testCase.expect !== undefined && !testCase.expect.includes(response.status)) return `expected ${testCase.expect.join(' or ')}`;
  if (response.status === 201 && testCase.digest !== undefined) {
    const { digest } = JSON.parse(response.body.toString()) as { digest: string };
    if (digest !== testCase.digest) return `digest ${digest}, not the SHA-256 of the message`;
    generator.stored.add(digest);
  }
  const asked = /^\/messages\/([0-9a-fA-F]{64})(?:\?|$)/.exec(testCase.target)?.[1];
  if (response.status === 200 && asked !== undefined && testCase.method === 'GET') {
    const { message } = JSON.parse(response.body.toString()) as { message: string };
    if (sha256(message) !== asked.toLowerCase()) return 'the message does not hash to the digest it was asked for';
  }
  return undefined;
}

test(`${count} fuzzed requests each get a well-formed answer within the contract, and the service stays up`, { timeout: 120_000 }, async (t) => {
  t.diagnostic(`FUZZ_SEED=${seed} FUZZ_COUNT=${count}`);
  const started = Date.now();
  const perLane = Math.ceil(count / lanes);
  const violations = (await Promise.all(Array.from({ length: lanes }, (_, lane) => runLane(lane, Math.min(perLane, count - lane * perLane))))).flat();
  t.diagnostic(`${count} requests on ${connectionsOpened} connections in ${Date.now() - started} ms`);
  assert.deepEqual(violations, [], `replay with FUZZ_SEED=${seed} FUZZ_COUNT=${count}`);
  assert.equal(service.child.exitCode, null, 'the service is still running');
  assert.equal((await request(service.port, cert.ca, { path: '/healthz' })).status, 200);
  assert.doesNotMatch(service.output(), /"level":"error"/);
});
