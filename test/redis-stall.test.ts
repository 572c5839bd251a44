// A Redis that stops answering (SIGSTOP) with node-redis's per-command timeout off: deadline() still answers 503 in time.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { makeCert, postMessage, request, serviceEnv, startInProcess, startRedis, tempDir } from './helpers.ts';

test('a stalled Redis costs each request a 503 within MESSAGES_REDIS_TIMEOUT_MS, and answers resume after it', async (t) => {
  const dir = tempDir();
  const [redis, cert] = await Promise.all([startRedis(), makeCert(dir)]);
  const app = await startInProcess(serviceEnv({ redis, cert, dir }, { MESSAGES_REDIS_TIMEOUT_MS: '300' }));
  t.after(async () => {
    redis.child.kill('SIGCONT');
    await app.stop();
    await redis.stop();
  });
  const port = app.service.port;
  const getStored = () => request(port, cert.ca, { path: `/messages/${createHash('sha256').update('before the stall').digest('hex')}` });
  while ((await request(port, cert.ca, { path: '/readyz' })).status !== 200) await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal((await postMessage(port, cert.ca, 'before the stall')).status, 201);

  redis.child.kill('SIGSTOP');
  const started = performance.now();
  const replies = await Promise.all([getStored(), postMessage(port, cert.ca, 'during the stall'), getStored()]);
  const elapsedMs = performance.now() - started;
  assert.deepEqual(replies.map((reply) => reply.status), [503, 503, 503]);
  assert.ok(elapsedMs < 2000, `answered after ${elapsedMs.toFixed(0)} ms`);

  redis.child.kill('SIGCONT');
  let reply = await getStored();
  for (let tries = 0; reply.status !== 200 && tries < 100; tries += 1) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    reply = await getStored();
  }
  assert.equal(reply.status, 200);
  assert.equal(reply.body, '{"message":"before the stall"}');
});
