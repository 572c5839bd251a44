// The bench's ceiling: a bare node:https server that answers every request with one constant body, nothing more.
// With a Redis port it first GETs one key through the service's Redis client, set up as the service sets it up:
// the cost of that round trip alone, without anything else the service does.
import fs from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { createClient } from '@redis/client';

const [certFile, keyFile, redisPort] = process.argv.slice(2);
if (certFile === undefined || keyFile === undefined) {
  console.error('usage: node --require tsx/cjs test/ceiling.ts CERT_FILE KEY_FILE [REDIS_PORT]');
  process.exit(2);
}

const body = '{"message":"ceiling"}';
const headers = { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(body) };

const redis = redisPort === undefined ? undefined : createClient({
  socket: { host: '127.0.0.1', port: Number(redisPort) },
  disableOfflineQueue: true,
  commandOptions: { timeout: 0 },
});

// Node's defaults otherwise, as a plain `https.createServer` gets them (session tickets on, keep-alive 5 s).
// An unread POST body is drained by Node itself once the response ends.
const server = https.createServer({ cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) }, (_req, res) => {
  if (redis === undefined) {
    res.writeHead(200, headers);
    res.end(body);
    return;
  }
  redis.get('messages:ceiling').then(() => {
    res.writeHead(200, headers);
    res.end(body);
  }, () => {
    res.writeHead(503);
    res.end();
  });
});

// Listening only once the key is stored: the bench starts its load when it reads this line.
void (async () => {
  await redis?.connect();
  await redis?.set('messages:ceiling', body);
  server.listen(0, '127.0.0.1', () => {
    console.log(`listening ${(server.address() as AddressInfo).port}`);
  });
})();
// Nothing to drain or flush: the bench only needs it gone.
process.on('SIGTERM', () => process.exit(0));
