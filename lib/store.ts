// Messages in Redis: one key per digest, written idempotently, acknowledged only once Redis has it.
import { createHash } from 'node:crypto';
import { errors } from './errors.ts';
import { ReplicasMissing, type RedisConnection } from './redis-connection.ts';

const keyPrefix = 'messages:';

export function digestOf(message: string): string {
  return createHash('sha256').update(message, 'utf8').digest('hex');
}

// 64 hex digits in lower case, or undefined; a loop, as a regex and toLowerCase() cost 3k instructions per GET (2%).
export function canonicalDigest(value: string): string | undefined {
  if (value.length !== 64) return undefined;
  let upper = false;
  for (let i = 0; i < 64; i += 1) {
    const c = value.charCodeAt(i);
    if (c >= 0x41 && c <= 0x46) upper = true; // A-F
    else if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) return undefined; // 0-9, a-f
  }
  return upper ? value.toLowerCase() : value;
}

export interface Store {
  put(message: string): Promise<string>;
  get(digest: string): Promise<string | null>; // `digest` as canonicalDigest returns it
  close(withinMs: number): Promise<void>;
}

export function createStore(redis: RedisConnection): Store {
  // Every Redis failure is a fast 503; the cause is logged, not echoed, but for missing replicas: the client may retry.
  const unavailable = (err: unknown): never => {
    throw errors.storageUnavailable(err instanceof ReplicasMissing ? `${err.message}, retry later` : undefined);
  };
  return {
    put(message) {
      const digest = digestOf(message);
      // SET of the same value under the same key is harmless, so a repeated POST needs no check first.
      return redis.set(keyPrefix + digest, message).then(() => digest, unavailable);
    },
    get: (digest) => redis.get(keyPrefix + digest).catch(unavailable),
    close: (withinMs) => redis.close(withinMs),
  };
}
