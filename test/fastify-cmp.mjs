// The bench's optional comparison: the same API on Fastify 5, with the same Redis client options and a buffered
// Combined Log Format access log. Fastify is never a dependency of the project: it is loaded from a scratch
// directory (npm install fastify@5 there) named by the first argument.
// usage: node test/fastify-cmp.mjs FASTIFY_DIR CERT_FILE KEY_FILE REDIS_PORT LOG_FILE
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { createClient } from '@redis/client';

const [fastifyDir, certFile, keyFile, redisPort, logFile] = process.argv.slice(2);
const Fastify = createRequire(path.join(fastifyDir, 'package.json'))('fastify');

const redis = createClient({
  socket: { host: '127.0.0.1', port: Number(redisPort), highWaterMark: 64 * 2 ** 20 },
  disableOfflineQueue: true,
  commandsQueueMaxLength: 256,
  commandOptions: { timeout: 0 },
});
redis.on('error', () => {});
await redis.connect();

const log = fs.openSync(logFile, 'a');
let pending = [];
setInterval(() => {
  if (pending.length === 0) return;
  fs.writeSync(log, pending.join(''));
  pending = [];
}, 100).unref();

const app = Fastify({ https: { cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) }, logger: false, bodyLimit: 1_048_576 });
const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const quote = (value) => (value === undefined ? '-' : String(value).replace(/["\\]/g, (ch) => `\\${ch}`));
app.addHook('onResponse', (req, reply, done) => {
  const d = new Date();
  const stamp = `${d.getUTCDate()}/${months[d.getUTCMonth()]}/${d.getUTCFullYear()}:${d.toISOString().slice(11, 19)} +0000`;
  pending.push(`${req.ip} - - [${stamp}] "${req.method} ${quote(req.url)} HTTP/${req.raw.httpVersion}" ${reply.statusCode} ` +
    `${reply.getHeader('content-length') ?? '-'} "${quote(req.headers.referer)}" "${quote(req.headers['user-agent'])}" ${reply.elapsedTime.toFixed(3)}\n`);
  done();
});

app.post('/messages', async (req, reply) => {
  const message = req.body?.message;
  if (typeof message !== 'string') return reply.code(400).send({ err_msg: 'Field "message" must be a string' });
  const digest = createHash('sha256').update(message, 'utf8').digest('hex');
  try {
    await redis.set(`messages:${digest}`, message);
  } catch {
    return reply.code(503).send({ err_msg: 'Storage is unavailable, retry later' });
  }
  return reply.code(201).send({ digest });
});

app.get('/messages/:digest', async (req, reply) => {
  const { digest } = req.params;
  const message = /^[0-9a-fA-F]{64}$/.test(digest) ? await redis.get(`messages:${digest.toLowerCase()}`) : null;
  if (message === null) return reply.code(404).send({ err_msg: `Message not found for hash: ${digest}` });
  return reply.header('ETag', `"${digest.toLowerCase()}"`).header('Cache-Control', 'public, max-age=31536000, immutable').send({ message });
});

app.get('/healthz', async () => ({ status: 'ok' }));

const address = await app.listen({ port: 0, host: '127.0.0.1' });
console.log(`listening ${new URL(address).port}`);
process.on('SIGTERM', () => process.exit(0));
