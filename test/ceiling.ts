// The bench's ceiling: a bare node:https server that answers every request with one constant body, nothing more.
import fs from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';

const [certFile, keyFile] = process.argv.slice(2);
if (certFile === undefined || keyFile === undefined) {
  console.error('usage: node --import tsx test/ceiling.ts CERT_FILE KEY_FILE');
  process.exit(2);
}

const body = '{"message":"ceiling"}';
const headers = { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(body) };

// Node's defaults otherwise, as a plain `https.createServer` gets them (session tickets on, keep-alive 5 s).
// An unread POST body is drained by Node itself once the response ends.
const server = https.createServer({ cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) }, (_req, res) => {
  res.writeHead(200, headers);
  res.end(body);
});

server.listen(0, '127.0.0.1', () => {
  console.log(`listening ${(server.address() as AddressInfo).port}`);
});
// Nothing to drain or flush: the bench only needs it gone.
process.on('SIGTERM', () => process.exit(0));
