// A Redis link that can leave the host: TLS with a private CA and an ACL user limited to messages:* and the commands
// the service sends; a wrong password or an untrusted certificate fails clearly (503, a log line), never the password.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { freePort, makeCert, postMessage, request, spawnService, startRedis, stopChild, tempDir, untilReady, waitFor, type Cert, type RedisServer, type Reply } from './helpers.ts';
import { makePrivateCa, type PrivateCa } from './redis-fixtures.ts';

const password = `right-${randomBytes(12).toString('hex')}`;
const wrongPassword = `wrong-${randomBytes(12).toString('hex')}`;
// The least the service needs: HELLO (and AUTH) are always allowed; CLIENT SETINFO, sent at connect, may fail.
// With MESSAGES_REDIS_MIN_REPLICAS > 0 the user needs +wait as well.
const aclRules = ['on', `>${password}`, 'resetkeys', '~messages:*', 'resetchannels', '-@all', '+get', '+set', '+ping'];

let dir: string;
let ca: PrivateCa;
let cert: Cert;
let redis: RedisServer;
let tlsPort: number;

before(async () => {
  dir = tempDir();
  [ca, cert, tlsPort] = await Promise.all([makePrivateCa(dir), makeCert(dir), freePort()]);
  redis = await startRedis([
    '--port', '0', '--tls-port', String(tlsPort), '--tls-cert-file', ca.certFile, '--tls-key-file', ca.keyFile,
    '--tls-ca-cert-file', ca.caFile, '--tls-auth-clients', 'no', '--user', 'messages', ...aclRules, '--user', 'default', 'off',
  ]);
});

after(async () => {
  await redis.stop();
});

interface Run { port: number; logDir: string; stop(): Promise<number | null>; output(): string }

// The service as its own process, so that app.log holds everything it writes, its start-up line included.
async function startService(name: string, env: Record<string, string>): Promise<Run> {
  const logDir = path.join(dir, name);
  const spawned = await spawnService({
    MESSAGES_PORT: '0', MESSAGES_BIND: '127.0.0.1', MESSAGES_CERT_FILE: cert.certFile, MESSAGES_KEY_FILE: cert.keyFile,
    MESSAGES_LOG_DIR: logDir, ...env,
  });
  return { port: spawned.port, logDir, stop: () => stopChild(spawned.child), output: spawned.output };
}

const appLog = (run: Run) => fs.readFileSync(path.join(run.logDir, 'app.log'), 'utf8');
const accessLog = (run: Run) => fs.readFileSync(path.join(run.logDir, 'access.log'), 'utf8');
const downLine = (run: Run) => waitFor(() => {
  const line = appLog(run).split('\n').find((l) => l.includes('"redis_down"'));
  return line === undefined ? undefined : JSON.parse(line) as Record<string, string>;
}, 10_000, 'redis_down in app.log');

for (const [form, env] of [
  ['a rediss:// URL', () => ({ MESSAGES_REDIS_URL: `rediss://localhost:${tlsPort}` })],
  ['host, port and MESSAGES_REDIS_TLS=1', () => ({ MESSAGES_REDIS_HOST: '127.0.0.1', MESSAGES_REDIS_PORT: String(tlsPort), MESSAGES_REDIS_TLS: '1' })],
] as const) {
  test(`stores and reads a message over TLS with ${form}, as an ACL user allowed only GET, SET and PING on messages:*`, async (t) => {
    const run = await startService(`works-${form.length}`, {
      ...env(), MESSAGES_REDIS_CA_FILE: ca.caFile, MESSAGES_REDIS_USERNAME: 'messages', MESSAGES_REDIS_PASSWORD: password,
    });
    t.after(() => run.stop());
    await untilReady(run.port, cert.ca);
    const posted = await postMessage(run.port, cert.ca, `over TLS with ${form}`);
    assert.equal(posted.status, 201);
    const read = await request(run.port, cert.ca, { path: `/messages/${JSON.parse(posted.body).digest}` });
    assert.deepEqual([read.status, JSON.parse(read.body)], [200, { message: `over TLS with ${form}` }]);
  });
}

for (const [form, env] of [
  ['MESSAGES_REDIS_PASSWORD', () => ({ MESSAGES_REDIS_URL: `rediss://localhost:${tlsPort}`, MESSAGES_REDIS_USERNAME: 'messages', MESSAGES_REDIS_PASSWORD: wrongPassword })],
  ['the URL', () => ({ MESSAGES_REDIS_URL: `rediss://messages:${wrongPassword}@localhost:${tlsPort}` })],
] as const) {
  test(`answers 503 and logs WRONGPASS with a hint for a wrong password in ${form}, and writes the password nowhere`, async (t) => {
    const run = await startService(`wrongpass-${form.length}`, { ...env(), MESSAGES_REDIS_CA_FILE: ca.caFile });
    t.after(() => run.stop());
    const entry = await downLine(run);
    assert.match(entry.cause!, /WRONGPASS/);
    assert.match(entry.hint!, /check MESSAGES_REDIS_USERNAME and MESSAGES_REDIS_PASSWORD/);
    const replies: Reply[] = [await postMessage(run.port, cert.ca, 'refused'), await request(run.port, cert.ca, { path: '/readyz' })];
    assert.deepEqual(replies.map((reply) => reply.status), [503, 503]);
    await run.stop();
    const everything = [appLog(run), accessLog(run), run.output(), ...replies.map((reply) => JSON.stringify(reply))].join('\n');
    assert.ok(everything.includes('"redis_down"'));
    assert.ok(!everything.includes(wrongPassword), 'the wrong password was written out');
    assert.ok(!everything.includes(password), 'the right password was written out');
  });
}

test('answers 503 and logs the certificate problem with a hint when the server certificate is not trusted', async (t) => {
  // No MESSAGES_REDIS_CA_FILE: Node's default CAs do not know the private CA.
  const run = await startService('untrusted', {
    MESSAGES_REDIS_URL: `rediss://localhost:${tlsPort}`, MESSAGES_REDIS_USERNAME: 'messages', MESSAGES_REDIS_PASSWORD: password,
  });
  t.after(() => run.stop());
  const entry = await downLine(run);
  assert.match(entry.cause!, /certificate/i);
  assert.match(entry.hint!, /MESSAGES_REDIS_CA_FILE/);
  assert.equal((await postMessage(run.port, cert.ca, 'refused')).status, 503);
  assert.equal((await request(run.port, cert.ca, { path: '/readyz' })).status, 503);
});
