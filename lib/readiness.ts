// /readyz: 200 while Redis takes writes, else 503 with a reason an operator (and a load balancer) can act on.
import { answerHeaders, type Answer } from './errors.ts';
import { NotAnswered } from './redis-calls.ts';
import { ReplicasMissing, type RedisConnection } from './redis-connection.ts';
import { queueFull, replyKind } from './redis-reports.ts';

// Why Redis cannot take a write now, or undefined when it can; the probe is refused exactly when a write would be.
async function unready(redis: Pick<RedisConnection, 'isReady' | 'probe'>, timeoutMs: number) {
  if (!redis.isReady) return 'Redis is not connected';
  return redis.probe().then(() => undefined, (err: unknown) => {
    const kind = replyKind(err);
    if (kind !== undefined) return `Redis refuses writes (${kind})`;
    if (queueFull(err)) return `Redis did not answer within ${timeoutMs} ms`;
    if (err instanceof ReplicasMissing) return err.message; // Write reached 0 of 1 required replicas
    // boundedCalls' own failures say what happened (no reply in time, no call slot free); others are the link's.
    return err instanceof NotAnswered ? err.message : 'Redis is not connected';
  });
}

export function readiness(redis: Pick<RedisConnection, 'isReady' | 'probe'>, timeoutMs: number): () => Promise<Answer> {
  return async () => {
    const reason = await unready(redis, timeoutMs);
    const fields = reason === undefined ? { status: 'ready' } : { err_msg: `${reason}; see app.log for the cause` };
    const body = JSON.stringify(fields);
    const headers = answerHeaders(Buffer.byteLength(body), 'no-store');
    if (reason !== undefined) headers['Retry-After'] = '1';
    return { status: reason === undefined ? 200 : 503, body, headers };
  };
}
