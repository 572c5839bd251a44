// TLS session tickets survive a certificate reload, so returning clients keep resuming (on any worker) after SIGHUP.
import assert from 'node:assert/strict';
import tls from 'node:tls';
import { test } from 'node:test';
import { makeCert, serveOnOwnRedis, serviceEnv, spawnService, startRedis, stopChild, tempDir, waitFor, type Cert } from './helpers.ts';

// The ticket a full handshake leaves the client with (TLS 1.3 sends it after the handshake).
function firstTicket(port: number, cert: Cert): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: cert.ca });
    socket.once('session', (ticket: Buffer) => {
      socket.end();
      resolve(ticket);
    });
    socket.once('error', reject);
  });
}

// Whether a connection offering `ticket` resumed that session instead of a full handshake.
function resumes(port: number, cert: Cert, ticket: Buffer): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: cert.ca, session: ticket });
    socket.once('secureConnect', () => {
      resolve(socket.isSessionReused());
      socket.end();
    });
    socket.once('error', reject);
  });
}

test('a ticket issued before a SIGHUP reload resumes on every worker after it (MESSAGES_WORKERS=2)', async (t) => {
  const dir = tempDir();
  const [redis, cert] = await Promise.all([startRedis(), makeCert(dir)]);
  const service = await spawnService(serviceEnv({ redis, cert, dir }, { MESSAGES_WORKERS: '2' }));
  t.after(async () => {
    await stopChild(service.child);
    await redis.stop();
  });
  await waitFor(() => (service.output().match(/"event":"listening"/g) ?? []).length >= 2, 15_000, 'both workers listening');
  const ticket = await firstTicket(service.port, cert);
  service.child.kill('SIGHUP');
  await waitFor(() => (service.output().match(/"event":"cert_reloaded"/g) ?? []).length >= 2, 15_000, 'both workers reloaded');
  // The primary hands connections to the workers in turn, so four reconnections reach both.
  const resumed: boolean[] = [];
  for (let i = 0; i < 4; i += 1) resumed.push(await resumes(service.port, cert, ticket));
  assert.deepEqual(resumed, [true, true, true, true]);
});

test('a ticket issued before a certificate reload still resumes after it', async (t) => {
  const { cert, app } = await serveOnOwnRedis(t);
  const ticket = await firstTicket(app.service.port, cert);
  app.service.reload();
  assert.equal(await resumes(app.service.port, cert, ticket), true);
});
