// The bench's floor (issue 14): what any server keeping this contract pays per request, and nothing more. Bare
// node:https with the service's certificate and TLS settings, the service's Redis client with its options, exactly
// one Redis command per request (GET for a GET, SET for a POST, whose body is JSON.parse'd and hashed with SHA-256)
// and a fixed JSON answer per status, as issue 14 defines it. No routing, validation, limits or logging: a body that
// is not {"message": "..."} crashes it.
// usage: node --require tsx/cjs test/floor.ts CERT_FILE KEY_FILE REDIS_PORT
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import type { ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { createClient } from '@redis/client';
import { tlsSettings } from '../lib/tls.ts';

const [certFile, keyFile, redisPort] = process.argv.slice(2);
if (certFile === undefined || keyFile === undefined || redisPort === undefined) {
  console.error('usage: node --require tsx/cjs test/floor.ts CERT_FILE KEY_FILE REDIS_PORT');
  process.exit(2);
}

// The options lib/redis-options.ts and lib/redis-standalone.ts give the service's client, reconnection aside.
// highWaterMark reaches the net.Socket (a Duplex), though node-redis's type leaves it out, as in redis-options.ts.
const socket = { host: '127.0.0.1', port: Number(redisPort), highWaterMark: 64 * 2 ** 20, socketTimeout: 5000 };
const redis = createClient({
  socket,
  pingInterval: 1000,
  disableOfflineQueue: true,
  commandsQueueMaxLength: 256, // 2 x MESSAGES_MAX_INFLIGHT's default
  commandOptions: { timeout: 0 },
});

const stored = '{"message":"stored"}';
const created = '{"digest":"created"}';
const missing = '{"err_msg":"not found"}';
const unavailable = '{"err_msg":"unavailable"}';

// The answer of a settled Redis command; a rejected one is a 503 the bench counts as wrong.
function answer(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

// Inline arrow functions only: tsx's keepNames gives every named closure a defineProperty call per request.
const server = https.createServer({ cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile), ...tlsSettings }, (req, res) => {
  if (req.method === 'POST') {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const { message } = JSON.parse((chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)).toString()) as { message: string };
      const digest = createHash('sha256').update(message, 'utf8').digest('hex');
      redis.set(`messages:${digest}`, message).then(
        () => answer(res, 201, created),
        () => answer(res, 503, unavailable),
      );
    });
    return;
  }
  // Every other request is a GET of /messages/<digest>: the key is what follows the prefix, unchecked.
  redis.get(`messages:${req.url!.slice('/messages/'.length)}`).then(
    (value) => answer(res, value === null ? 404 : 200, value === null ? missing : stored),
    () => answer(res, 503, unavailable),
  );
});

// Listening only once Redis is connected: the bench starts its load when it reads this line.
void (async () => {
  redis.on('error', (err: unknown) => console.error(`floor: Redis error: ${String(err)}`));
  await redis.connect();
  server.listen(0, '127.0.0.1', () => {
    console.log(`listening ${(server.address() as AddressInfo).port}`);
  });
})();
// Nothing to drain or flush: the bench only needs it gone.
process.on('SIGTERM', () => process.exit(0));
