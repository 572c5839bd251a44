// Connects to Redis in the mode the configuration names: a standalone server here, Cluster and Sentinel in modules
// of their own.
import fs from 'node:fs';
import { createClient } from './redis-core.ts';
import type { RedisConfig } from './config.ts';
import type { AppLog } from './app-log.ts';
// redis-cluster.ts and redis-sentinel.ts import the option helpers below in turn; no module calls another while
// loading.
import { connectCluster } from './redis-cluster.ts';
import { closeWithin, deadline, offline, reconnectDelay, stateReporter } from './redis-failures.ts';
import { connectSentinel } from './redis-sentinel.ts';

// The few commands the store needs, whatever the Redis topology behind them.
export interface RedisConnection {
  // SET, and with replicas > 0 a WAIT pipelined behind it on the same connection: WAIT counts only the writes of
  // the connection it is sent on (https://redis.io/docs/latest/commands/wait/). Resolves to the replicas that
  // acknowledged within waitMs, 0 when none were asked for.
  set(key: string, value: string, replicas: number, waitMs: number): Promise<number>;
  get(key: string): Promise<string | null>;
  ping(): Promise<unknown>;
  readonly isReady: boolean;
  // A graceful close lets replies in flight arrive; past `withinMs` the connections are cut.
  close(withinMs: number): Promise<void>;
}

// Credentials, TLS, fail-fast and backoff: the same for a standalone server and every cluster or replication node.
export function nodeOptions(config: RedisConfig) {
  return {
    ...(config.username === undefined ? {} : { username: config.username }),
    ...(config.password === undefined ? {} : { password: config.password }),
    // Fail fast while disconnected instead of queueing requests that would hang until Redis returns.
    disableOfflineQueue: true,
    // Commands a stalled Redis never takes stay queued once deadline() has answered 503 for them (the per-command
    // timeout is off, see connectStandalone): this bounds the queue, and past it commands fail at once.
    commandsQueueMaxLength: 10_000,
    socket: { ...tlsOptions(config), connectTimeout: config.timeoutMs, reconnectStrategy: reconnectDelay },
  };
}

export function tlsOptions(config: RedisConfig) {
  if (!config.tls) return {};
  return { tls: true as const, ...(config.caFile === undefined ? {} : { ca: fs.readFileSync(config.caFile) }) };
}

export function connectStandalone(config: RedisConfig, log: AppLog): RedisConnection {
  const target = config.url === undefined ? `${config.host}:${config.port}` : new URL(config.url).host;
  const state = stateReporter(log, target);
  const bounded = deadline(config.timeoutMs, log, target);
  const open = () => {
    const options = nodeOptions(config);
    const client = createClient({
      ...options,
      ...(config.url === undefined ? {} : { url: config.url }),
      socket: { ...options.socket, ...(config.url === undefined ? { host: config.host, port: config.port } : {}) },
      // deadline() bounds every command from call to reply. node-redis's own timeout would add an AbortSignal.timeout
      // per command (a timer, then a DOMException when it fires) for a bound that ends once the command is written.
      commandOptions: { timeout: 0 },
    });
    client.on('error', (err: unknown) => state.down(err));
    client.on('ready', () => state.up());
    client.connect().catch(() => {
      // Errors are reported through the 'error' event; connect() keeps retrying by reconnectStrategy.
    });
    return client;
  };
  const client = open();
  // WAIT holds its connection until the replicas answer or it times out: durable writes get a connection of their
  // own, so that reads and PINGs never queue behind one.
  const writer = config.minReplicas > 0 ? open() : client;
  return {
    set: (key, value, replicas, waitMs) => bounded(async () => {
      if (replicas === 0) return client.set(key, value).then(() => 0);
      // A pipeline is queued even while offline: refuse it here as single commands are.
      if (!writer.isReady) throw offline();
      const [, acked] = await writer.multi().set(key, value).wait(replicas, waitMs).execAsPipeline();
      return Number(acked);
    }),
    get: (key) => bounded(() => client.get(key)),
    ping: () => bounded(() => client.ping()),
    get isReady() {
      return client.isReady && writer.isReady;
    },
    close: async (withinMs) => {
      // A client still reconnecting has no replies to wait for; a stalled server never sends the ones it owes.
      await Promise.all([...new Set([client, writer])].map(async (each) => {
        if (each.isReady) await closeWithin(withinMs, () => each.close(), () => each.destroy());
        else if (each.isOpen) each.destroy();
      }));
    },
  };
}

export function connectRedis(config: RedisConfig, log: AppLog): RedisConnection {
  if (config.clusterNodes.length > 0) return connectCluster(config, log);
  if (config.sentinels.length > 0) return connectSentinel(config, log);
  return connectStandalone(config, log);
}
