// What every Redis mode shares: the few commands the store needs, WAIT behind a write, the readiness probe.
import type { RedisConfig } from './config.ts';

// The few commands the store needs, whatever the Redis topology behind them.
export interface RedisConnection {
  // Resolves once Redis has the write and MESSAGES_REDIS_MIN_REPLICAS replicas acknowledged it; rejects otherwise.
  set(key: string, value: string): Promise<unknown>; // the reply is not looked at
  get(key: string): Promise<string | null>;
  // Resolves when every master accepts writes; rejects with the reason (unreachable, OOM, READONLY, NOPERM, ...).
  probe(): Promise<void>;
  readonly isReady: boolean;
  // The master's host:port where the sentinels name it (Sentinel mode), for the metrics.
  readonly master?: string | undefined;
  // A graceful close lets replies in flight arrive; past `withinMs` the connections are cut.
  close(withinMs: number): Promise<void>;
}

// A write Redis took, that fewer replicas than MESSAGES_REDIS_MIN_REPLICAS acknowledged in time.
export class ReplicasMissing extends Error {
  constructor(readonly acked: number, readonly wanted: number) {
    super(`Write reached ${acked} of ${wanted} required replicas`);
  }
}

type Pipeline = { wait(replicas: number, ms: number): { execAsPipeline(): Promise<unknown> } };
type SetOptions = typeof readinessProbe.options;
interface Pipelines { multi(): { set(key: string, value: string, options?: SetOptions): Pipeline } }
interface Settable { set(key: string, value: string, options: SetOptions): Promise<unknown> }

// WAIT counts only its connection's writes (https://redis.io/docs/latest/commands/wait/), so it follows the SET.
// `options`: the readiness probe's SET XX, which writes nothing; WAIT then counts the replicas caught up with the rest.
export async function writeDurably(client: Pipelines, key: string, value: string, config: RedisConfig,
  options?: SetOptions): Promise<void> {
  // Half the Redis timeout, so that WAIT's count arrives before the call's deadline does.
  const waitMs = Math.floor(config.timeoutMs / 2);
  const replies = await client.multi().set(key, value, options).wait(config.minReplicas, waitMs).execAsPipeline();
  const acked = Number((replies as unknown[])[1]);
  if (acked < config.minReplicas) throw new ReplicasMissing(acked, config.minReplicas);
}

// What a call gets while its connection is down, where node-redis would queue it instead of refusing it.
export const offline = () => new Error('The connection to Redis is not ready');

// Readiness: SET XX of a key that never exists, refused exactly when a message's SET would be; otherwise a no-op.
export const readinessProbe = { key: 'messages:readyz-probe', options: { condition: 'XX' } } as const;

// The probe on the connections a message's write takes: with MESSAGES_REDIS_MIN_REPLICAS, WAIT follows it on the
// durable one, as it follows a message's SET. probeCommand names it for boundedCalls' log.
export function probeWrite(config: RedisConfig, main: Settable, durable: Pipelines, key: string = readinessProbe.key) {
  const { options } = readinessProbe;
  return config.minReplicas === 0 ? main.set(key, '1', options) : writeDurably(durable, key, '1', config, options);
}

export const probeCommand = (config: RedisConfig) => (config.minReplicas === 0 ? 'SET' : 'SET+WAIT');
