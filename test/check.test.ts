// The smoke checker (lib/check.ts and test/test.py): passes against a live service, fails naming the step against broken ones.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import type { RequestListener } from 'node:http';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { runCheck } from '../lib/check.ts';
import { projectRoot } from '../lib/config.ts';
import { freePort, makeCert, serviceEnv, startInProcess, startReady, startRedis, tempDir, type Cert, type InProcess, type RedisServer } from './helpers.ts';

const missing = 'a'.repeat(64);
const fooDigest = '2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae';
const barDigest = 'fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9';
const stars = '*'.repeat(75);
const base = (port: number) => `https://localhost:${port}/messages`;
// What the seed's test.py prints against a live service (its README's sample output has the same lines).
const passingLines = (port: number) => [
  `${base(port)}/${missing} correctly not found`,
  `${base(port)} POSTed successfully`,
  `${base(port)}/${fooDigest} correctly found`,
  `${base(port)} POSTed successfully`,
  `${base(port)}/${barDigest} correctly found`,
  `${base(port)}/${fooDigest} correctly found`,
  '',
  stars,
  'All tests passed!',
  stars,
];
const notFound = `{"err_msg":"Message not found for hash: ${missing}"}`;
const firstStep = (port: number) => `GET ${base(port)}/${missing}: FAILED, `;
const redisDownLine = (port: number) =>
  new RegExp(`^GET https://localhost:${port}/messages/a{64}: FAILED, expected 404 \\{"err_msg":"Message not found for hash: a{64}"\\}, received 503 \\{"err_msg":".+"\\}$`);
const wrongDigestLines = (port: number) => [
  `${base(port)}/${missing} correctly not found`,
  `POST "foo" to ${base(port)}: FAILED, expected 201 {"digest":"${fooDigest}"}, received 201 {"digest":"${'0'.repeat(64)}"}`,
];
// OpenSSL's words differ between Node lines and OpenSSL versions: a failure is known by the phase the checker names
// and by the error's code, and stays one line.
function assertFailure(lines: string[], prefix: string, code: string): void {
  assert.equal(lines.length, 1, lines.join('\n'));
  assert.ok(lines[0]!.startsWith(prefix), lines[0]);
  assert.match(lines[0]!, new RegExp(`[ (]${code}\\b`));
  assert.doesNotMatch(lines[0]!, /\n/);
}
const pythonSkip = spawnSync('python3', ['--version']).status === 0 ? false : 'python3 is not installed';

let cert: Cert;
let otherCert: Cert;
let liveRedis: RedisServer;
let downRedis: RedisServer;
let live: InProcess;
let down: InProcess;
const dirs: string[] = [];

// A temp directory removed in `after`.
function scratchDir(): string {
  const dir = tempDir('check-');
  dirs.push(dir);
  return dir;
}

before(async () => {
  const dir = scratchDir();
  [liveRedis, downRedis, cert, otherCert] = await Promise.all([startRedis(), startRedis(), makeCert(dir), makeCert(scratchDir())]);
  live = await startReady(serviceEnv({ redis: liveRedis, cert, dir }));
  down = await startInProcess(serviceEnv({ redis: downRedis, cert, dir: scratchDir() }));
  await downRedis.stop();
});

after(async () => {
  await Promise.all([live.stop(), down.stop()]);
  await Promise.all([liveRedis.stop(), downRedis.stop()]);
  for (const dir of [...dirs, liveRedis.dir, downRedis.dir]) fs.rmSync(dir, { recursive: true, force: true });
});

interface Run { code: number | null; lines: string[]; stderr: string }

async function run(command: string, args: string[], cwd = projectRoot): Promise<Run> {
  const child = spawn(command, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString(); });
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
  const [code] = await once(child, 'close');
  return { code: code as number | null, lines: stdout.trimEnd().split('\n'), stderr };
}

// tsx by absolute URL, so the CLI also starts from a working directory outside the project.
const checkCli = (args: string[], cwd?: string) =>
  run(process.execPath, ['--require', require.resolve('tsx/cjs'), path.join(projectRoot, 'lib', 'check.ts'), ...args], cwd);
const pythonCheck = (args: string[]) => run('python3', [path.join(projectRoot, 'test', 'test.py'), ...args]);
const flags = (port: number, certFile = cert.certFile) => ['-d', 'localhost', '-p', String(port), '-c', certFile];

async function check(port: number, certPath = cert.certFile, timeoutMs?: number): Promise<{ passed: boolean; lines: string[] }> {
  const lines: string[] = [];
  const passed = await runCheck({ domain: 'localhost', port, certPath, out: (line) => lines.push(line), timeoutMs });
  return { passed, lines };
}

// An HTTPS server with the test certificate that answers as the handler says, closed after the test.
async function fakeService(t: TestContext, handler: RequestListener): Promise<number> {
  const server = https.createServer({ cert: fs.readFileSync(cert.certFile), key: fs.readFileSync(cert.keyFile) }, handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  return (server.address() as net.AddressInfo).port;
}

const answer500: RequestListener = (_req, res) => {
  res.writeHead(500, { 'Content-Type': 'text/plain' }).end('Internal error\n\u0000');
};

// Right about the unknown digest, wrong about every posted one.
const wrongDigests: RequestListener = (req, res) => {
  req.resume();
  if (req.method === 'POST') res.writeHead(201).end(JSON.stringify({ digest: '0'.repeat(64) }));
  else res.writeHead(404).end(notFound);
};

// Accepts TCP connections and never says a word, not even a TLS handshake.
async function silentServer(t: TestContext): Promise<number> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => sockets.add(socket.on('error', () => {})));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    for (const socket of sockets) socket.destroy();
    server.close();
  });
  return (server.address() as net.AddressInfo).port;
}

// Answers every connection with an HTTP/1.1 error in clear text, as a plain HTTP server on the port would.
async function plainHttpServer(t: TestContext): Promise<number> {
  const server = net.createServer((socket) => socket.on('error', () => {}).end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n'));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  return (server.address() as net.AddressInfo).port;
}

describe('runCheck (npm run check, in process)', () => {
  test('passes against a live service, printing the seed test.py\'s line for each step and its closing banner', async () => {
    assert.deepEqual(await check(live.service.port), { passed: true, lines: passingLines(live.service.port) });
  });

  test('fails at the first step when Redis is down and the service answers 503', async () => {
    const { passed, lines } = await check(down.service.port);
    assert.equal(passed, false);
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, redisDownLine(down.service.port));
  });

  test('fails at the first step against a server answering 500, escaping control characters in the body', async (t) => {
    const port = await fakeService(t, answer500);
    const { passed, lines } = await check(port);
    assert.equal(passed, false);
    assert.deepEqual(lines, [`${firstStep(port)}expected 404 ${notFound}, received 500 Internal error\\u000a\\u0000`]);
  });

  test('fails at POST "foo" against a server answering a wrong digest', async (t) => {
    const port = await fakeService(t, wrongDigests);
    const { passed, lines } = await check(port);
    assert.equal(passed, false);
    assert.deepEqual(lines, wrongDigestLines(port));
  });

  test('fails with a could-not-connect line when nothing listens on the port', async () => {
    const port = await freePort();
    const { passed, lines } = await check(port);
    assert.equal(passed, false);
    assert.deepEqual(lines, [`${firstStep(port)}could not connect to localhost:${port}: connect ECONNREFUSED 127.0.0.1:${port}`]);
  });

  test('fails with a TLS line carrying the error code, on every Node line, when the certificate does not verify against --cert-path', async () => {
    const { passed, lines } = await check(live.service.port, otherCert.certFile);
    assert.equal(passed, false);
    assertFailure(lines, `${firstStep(live.service.port)}TLS handshake with localhost failed: `, 'DEPTH_ZERO_SELF_SIGNED_CERT');
  });

  test('prints one line, not OpenSSL\'s trailing newline, when the port answers plain HTTP', async (t) => {
    const port = await plainHttpServer(t);
    const { passed, lines } = await check(port);
    assert.equal(passed, false);
    assertFailure(lines, `${firstStep(port)}TLS handshake with localhost failed: `, 'EPROTO');
  });

  test('fails with a deadline line when the server accepts the connection but never answers', async (t) => {
    const port = await silentServer(t);
    const { passed, lines } = await check(port, cert.certFile, 200);
    assert.equal(passed, false);
    assert.deepEqual(lines, [`${firstStep(port)}no complete response within 0.2 s`]);
  });

  test('fails naming --cert-path when the certificate file is missing', async () => {
    const missing = path.join(scratchDir(), 'absent.crt');
    const { passed, lines } = await check(live.service.port, missing);
    assert.equal(passed, false);
    assert.deepEqual(lines, [`FAILED, cannot use --cert-path ${missing}: ENOENT: no such file or directory, open '${missing}'`]);
  });

  test('fails naming --cert-path and the error code when the file is not a certificate', async () => {
    const { passed, lines } = await check(live.service.port, path.join(projectRoot, 'package.json'));
    assert.equal(passed, false);
    assertFailure(lines, `FAILED, cannot use --cert-path ${path.join(projectRoot, 'package.json')}: `, 'ERR_OSSL_PEM_NO_START_LINE');
  });
});

describe('node --require tsx/cjs lib/check.ts (the CLI)', () => {
  test('exits 0 against a live service with the seed test.py\'s lines, All tests passed! between two lines of stars', async () => {
    const result = await checkCli(flags(live.service.port));
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(result.lines, passingLines(live.service.port));
  });

  test('resolves a relative --cert-path against the working directory', async () => {
    const result = await checkCli(flags(live.service.port, path.basename(cert.certFile)), path.dirname(cert.certFile));
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(result.lines, passingLines(live.service.port));
  });

  test('exits 1 naming the first step when Redis is down', async () => {
    const result = await checkCli(flags(down.service.port));
    assert.equal(result.code, 1);
    assert.match(result.lines.at(-1)!, redisDownLine(down.service.port));
  });

  // systemd/watchdog.sh reports the checker's last line as the reason: it must be the failing step's line.
  test('exits 1 with the failing step\'s line last when a later step fails', async (t) => {
    const port = await fakeService(t, wrongDigests);
    const result = await checkCli(flags(port));
    assert.equal(result.code, 1, result.stderr);
    assert.deepEqual(result.lines, wrongDigestLines(port));
  });

  test('exits 1 with one TLS line carrying the error code and no stack trace when the certificate does not verify', async () => {
    const result = await checkCli(flags(live.service.port, otherCert.certFile));
    assert.equal(result.code, 1);
    assertFailure(result.lines, `${firstStep(live.service.port)}TLS handshake with localhost failed: `, 'DEPTH_ZERO_SELF_SIGNED_CERT');
    assert.equal(result.stderr, '');
  });

  test('prints usage for --help and exits 0', async () => {
    const result = await checkCli(['--help']);
    assert.equal(result.code, 0);
    assert.match(result.lines[0]!, /^Usage: npm run check -- \[-d\|--domain localhost\] \[-p\|--port 5000\] \[-c\|--cert-path certs\/localhost\.crt\]$/);
    assert.match(result.lines.join('\n'), /relative --cert-path resolves against the working directory/);
  });

  for (const args of [['--port', '0'], ['--port', '70000'], ['--port', 'abc'], ['--bogus']]) {
    test(`exits 2 with usage on stderr for ${args.join(' ')}`, async () => {
      const result = await checkCli(args);
      assert.equal(result.code, 2);
      assert.match(result.stderr, /^check: .+\nUsage: npm run check/);
      assert.doesNotMatch(result.stderr, /^\s+at /m);
    });
  }
});

describe('python3 test/test.py', () => {
  test('exits 0 against a live service with the same lines as npm run check', { skip: pythonSkip }, async () => {
    const result = await pythonCheck(flags(live.service.port));
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(result.lines, passingLines(live.service.port));
  });

  test('exits 1 naming the first step when Redis is down', { skip: pythonSkip }, async () => {
    const result = await pythonCheck(flags(down.service.port));
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.lines.at(-1)!, redisDownLine(down.service.port));
  });

  test('exits 1 at POST "foo" against a server answering a wrong digest', { skip: pythonSkip }, async (t) => {
    const port = await fakeService(t, wrongDigests);
    const result = await pythonCheck(flags(port));
    assert.equal(result.code, 1, result.stderr);
    assert.deepEqual(result.lines, wrongDigestLines(port));
  });

  test('exits 1 escaping control characters when a server answers 500', { skip: pythonSkip }, async (t) => {
    const port = await fakeService(t, answer500);
    const result = await pythonCheck(flags(port));
    assert.equal(result.code, 1, result.stderr);
    assert.deepEqual(result.lines, [`${firstStep(port)}expected 404 ${notFound}, received 500 Internal error\\u000a\\u0000`]);
  });

  test('exits 1 with a could-not-connect line when nothing listens on the port', { skip: pythonSkip }, async () => {
    const port = await freePort();
    const result = await pythonCheck(flags(port));
    assert.equal(result.code, 1, result.stderr);
    assert.deepEqual(result.lines, [`${firstStep(port)}could not connect to localhost:${port}: Connection refused`]);
    assert.equal(result.stderr, '');
  });

  test('exits 1 with a TLS line carrying the verify error code when the certificate does not verify under strict verification', { skip: pythonSkip }, async () => {
    const result = await pythonCheck(flags(live.service.port, otherCert.certFile));
    assert.equal(result.code, 1, result.stderr);
    assertFailure(result.lines, `${firstStep(live.service.port)}TLS handshake with localhost failed: `, 'verify error 18');
    assert.equal(result.stderr, '');
  });

  test('exits 1 with a deadline line after 5 s when the server never answers', { skip: pythonSkip }, async (t) => {
    const port = await silentServer(t);
    const result = await pythonCheck(flags(port));
    assert.equal(result.code, 1, result.stderr);
    assert.deepEqual(result.lines, [`${firstStep(port)}no complete response within 5 s`]);
  });

  test('exits 2 with usage for a port out of range', { skip: pythonSkip }, async () => {
    const result = await pythonCheck(['--port', '70000']);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /^usage: test\.py .*\n.*--port: it must be an integer >= 1 and <= 65535, received '70000'/);
  });
});
