// systemd/watchdog.sh, run as the timer and cron run it: silent against a healthy service, a restart only when a
// restart can help, and the checks it makes trust what the operator's certificate needs.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { projectRoot } from '../lib/config.ts';
import { makeCert, serviceEnv, startInProcess, startReady, startRedis, tempDir, type Cert, type InProcess, type RedisServer } from './helpers.ts';
import { makePrivateCa, type PrivateCa } from './redis-fixtures.ts';

let redis: RedisServer;
let downRedis: RedisServer;
let cert: Cert;
let ca: PrivateCa;
let live: InProcess;
let down: InProcess;
let issued: InProcess;
const dir = tempDir('watchdog-');

before(async () => {
  [redis, downRedis, cert, ca] = await Promise.all([startRedis(), startRedis(), makeCert(dir), makePrivateCa(dir)]);
  live = await startReady(serviceEnv({ redis, cert, dir: path.join(dir, 'live') }));
  // A certificate a CA issued, as a real one is: it is no CA itself, so it cannot be the checker's trust anchor.
  const issuedCert = { certFile: ca.certFile, keyFile: ca.keyFile, ca: fs.readFileSync(ca.caFile) };
  issued = await startReady(serviceEnv({ redis, cert: issuedCert, dir: path.join(dir, 'issued') }));
  down = await startInProcess(serviceEnv({ redis: downRedis, cert, dir: path.join(dir, 'down') }));
  await downRedis.stop();
});

after(async () => {
  await Promise.all([live?.stop(), issued?.stop(), down?.stop()]);
  await Promise.all([redis?.stop(), downRedis?.stop()]);
  fs.rmSync(dir, { recursive: true, force: true });
});

// Runs the watchdog with only the given environment, and a restart command that leaves a mark.
async function watchdog(env: Record<string, string>) {
  const marker = path.join(dir, `restarted-${Math.random()}`);
  const child = spawn('/bin/sh', [path.join(projectRoot, 'systemd', 'watchdog.sh')], {
    env: { MESSAGES_WATCHDOG_RESTART: `echo > ${marker}`, MESSAGES_WATCHDOG_TIMEOUT: '20', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  const [code] = await once(child, 'close');
  return { code: code as number | null, output, restarted: fs.existsSync(marker) };
}

// Each waits out the watchdog's 10 s between its two checks: side by side, not one after another.
describe('systemd/watchdog.sh', { concurrency: true }, () => {
  // Regression: cron's PATH (/usr/bin:/bin) lacks /usr/local/bin, where nodejs.org's node goes: "timeout: failed to
  // run command 'node'" (exit 127) restarted a healthy service every minute.
  test('exits 0 and says nothing against a healthy service, even with a PATH that names none of its tools', async () => {
    const run = await watchdog({ PATH: '/nonexistent', MESSAGES_PORT: String(live.service.port), MESSAGES_CERT_FILE: cert.certFile });
    assert.deepEqual(run, { code: 0, output: '', restarted: false });
  });

  // Regression: the checker trusted MESSAGES_CERT_FILE alone, which for a CA-issued certificate is no trust anchor:
  // install.sh never passed and the watchdog restarted a healthy service every minute.
  test('verifies a CA-issued certificate against MESSAGES_WATCHDOG_CA_FILE, and needs it', { timeout: 60_000 }, async () => {
    const env = { MESSAGES_PORT: String(issued.service.port), MESSAGES_CERT_FILE: ca.certFile };
    assert.deepEqual(await watchdog({ ...env, MESSAGES_WATCHDOG_CA_FILE: ca.caFile }), { code: 0, output: '', restarted: false });
    const without = await watchdog(env);
    assert.equal(without.code, 1);
    assert.match(without.output, /smoke check failed \(exit 1\): .*FAILED, .*restarting with/);
    assert.equal(without.restarted, true);
  });

  // Regression: a restart cannot bring Redis back, and the service reconnects by itself: each minute of an outage
  // restarted it (and mailed) for nothing.
  test('does not restart a service that answers 503 (Redis down): says why and exits 1', { timeout: 60_000 }, async () => {
    const run = await watchdog({ MESSAGES_PORT: String(down.service.port), MESSAGES_CERT_FILE: cert.certFile });
    assert.equal(run.code, 1);
    assert.equal(run.restarted, false);
    assert.match(run.output, /^messages-watchdog: the service answers 503, Redis unavailable \(it reconnects by itself\); not restarting: .*received 503 /m);
  });

  // Regression: any 503 was taken for Redis, also a proxy's that stands for a hung service behind it.
  test('restarts when the 503 is not the service\'s own (a proxy\'s page for a hung service)', { timeout: 60_000 }, async (t) => {
    const proxy = https.createServer({ cert: fs.readFileSync(cert.certFile), key: fs.readFileSync(cert.keyFile) }, (_req, res) => {
      res.writeHead(503, { 'Content-Type': 'text/html' }).end('<html><body><h1>503 Service Unavailable</h1></body></html>\n');
    });
    proxy.listen(0, '127.0.0.1');
    await once(proxy, 'listening');
    t.after(() => {
      proxy.closeAllConnections();
      proxy.close();
    });
    const run = await watchdog({ MESSAGES_PORT: String((proxy.address() as AddressInfo).port), MESSAGES_CERT_FILE: cert.certFile });
    assert.equal(run.code, 1);
    assert.equal(run.restarted, true);
    assert.match(run.output, /smoke check failed \(exit 1\): .*received 503 <html>.*restarting with/);
  });
});
