// Connects to Redis in the mode the configuration names and reports its state changes to app.log.
import fs from 'node:fs';
import { createClient } from 'redis';
import type { RedisConfig } from './config.ts';
import type { AppLog } from './app-log.ts';

// The few commands the store needs, whatever the Redis topology behind them.
export interface RedisConnection {
  set(key: string, value: string): Promise<unknown>;
  get(key: string): Promise<string | null>;
  ping(): Promise<unknown>;
  // WAIT numreplicas timeout, sent on the connection (and node) that took the write of `key`.
  waitReplicas(key: string, replicas: number, timeoutMs: number): Promise<number>;
  readonly isReady: boolean;
  close(): Promise<void>;
}

// Exponential backoff with jitter, capped at 2 s so recovery is seen within a few seconds of Redis returning.
export function reconnectDelay(retries: number): number {
  return Math.min(50 * 2 ** retries, 2000) + Math.floor(Math.random() * 100);
}

// An operator reads this line without the source at hand: say what failed and what to change.
export function describeRedisError(err: Error, target: string): { cause: string; hint: string } {
  const text = `${(err as NodeJS.ErrnoException).code ?? ''} ${err.message}`;
  let hint = 'check that Redis is running and reachable';
  if (/ECONNREFUSED/.test(text)) hint = `nothing listens at ${target}: start redis-server (apt-get install redis-server) or set MESSAGES_REDIS_HOST / MESSAGES_REDIS_PORT / MESSAGES_REDIS_URL`;
  else if (/ENOTFOUND|EAI_AGAIN/.test(text)) hint = `the host of ${target} does not resolve: check MESSAGES_REDIS_HOST or MESSAGES_REDIS_URL`;
  else if (/WRONGPASS|NOAUTH|invalid password|invalid username/i.test(text)) hint = 'Redis refused the credentials: check MESSAGES_REDIS_USERNAME and MESSAGES_REDIS_PASSWORD';
  else if (/NOPERM/.test(text)) hint = 'the Redis ACL user lacks a permission: allow GET, SET, PING, WAIT on messages:*';
  else if (/certificate|self[- ]signed|SSL|TLS|ERR_TLS|EPROTO/i.test(text)) hint = 'the TLS link to Redis failed: check MESSAGES_REDIS_CA_FILE and the server certificate';
  else if (/timeout/i.test(text)) hint = `${target} did not answer in time: check the network path and MESSAGES_REDIS_TIMEOUT_MS`;
  return { cause: text.trim(), hint };
}

// Logs "redis_down" once per outage and "redis_up" once per recovery, not every reconnect attempt.
export function trackState(emitter: NodeJS.EventEmitter, log: AppLog, target: string): void {
  let up = false;
  let reported = false;
  emitter.on('error', (err: Error) => {
    if (!up && reported) return;
    up = false;
    reported = true;
    log.warn('redis_down', { target, ...describeRedisError(err, target) });
  });
  emitter.on('ready', () => {
    if (up) return;
    up = true;
    reported = true;
    log.info('redis_up', { target });
  });
}

function tlsOptions(config: RedisConfig) {
  if (!config.tls) return {};
  return { tls: true as const, ...(config.caFile === undefined ? {} : { ca: fs.readFileSync(config.caFile) }) };
}

export function connectStandalone(config: RedisConfig, log: AppLog): RedisConnection {
  const client = createClient({
    ...(config.url === undefined ? {} : { url: config.url }),
    ...(config.username === undefined ? {} : { username: config.username }),
    ...(config.password === undefined ? {} : { password: config.password }),
    socket: {
      ...(config.url === undefined ? { host: config.host, port: config.port } : {}),
      ...tlsOptions(config),
      connectTimeout: config.timeoutMs,
      reconnectStrategy: reconnectDelay,
    },
    // Fail fast while disconnected instead of queueing requests that would hang until Redis returns.
    disableOfflineQueue: true,
    commandOptions: { timeout: config.timeoutMs },
  });
  const target = config.url === undefined ? `${config.host}:${config.port}` : new URL(config.url).host;
  trackState(client, log, target);
  client.connect().catch(() => {
    // Errors are reported through the 'error' event; connect() keeps retrying by reconnectStrategy.
  });
  return {
    set: (key, value) => client.set(key, value),
    get: (key) => client.get(key),
    ping: () => client.ping(),
    waitReplicas: async (_key, replicas, timeoutMs) =>
      Number(await client.sendCommand(['WAIT', String(replicas), String(timeoutMs)])),
    get isReady() {
      return client.isReady;
    },
    close: async () => {
      // close() lets replies in flight arrive; a client still reconnecting has none and is destroyed.
      if (client.isReady) await client.close();
      else if (client.isOpen) client.destroy();
    },
  };
}

export function connectRedis(config: RedisConfig, log: AppLog): RedisConnection {
  return connectStandalone(config, log);
}
