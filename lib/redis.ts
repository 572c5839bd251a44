// Connects to Redis in the mode the configuration names and reports its state changes to app.log.
import fs from 'node:fs';
import { createClient } from './redis-core.ts';
import type { RedisConfig } from './config.ts';
import type { AppLog } from './app-log.ts';
import { throttle } from './throttle.ts';
// redis-modes.ts imports the helpers below in turn; neither module calls the other while loading.
import { connectCluster, connectSentinel } from './redis-modes.ts';

// The few commands the store needs, whatever the Redis topology behind them.
export interface RedisConnection {
  // SET, and with replicas > 0 a WAIT pipelined behind it on the same connection: WAIT counts only the writes of
  // the connection it is sent on (https://redis.io/docs/latest/commands/wait/). Resolves to the replicas that
  // acknowledged within waitMs, 0 when none were asked for.
  set(key: string, value: string, replicas: number, waitMs: number): Promise<number>;
  get(key: string): Promise<string | null>;
  ping(): Promise<unknown>;
  readonly isReady: boolean;
  close(): Promise<void>;
}

// Exponential backoff with jitter, capped at 2 s so recovery is seen within a few seconds of Redis returning.
export function reconnectDelay(retries: number): number {
  return Math.min(50 * 2 ** retries, 2000) + Math.floor(Math.random() * 100);
}

// What an operator can change, in the words of each mode: the variables that name the server, what to do when
// nothing listens there, and which credentials to check when they are not MESSAGES_REDIS_USERNAME/PASSWORD.
export interface Hints { variables: string; refused: string; credentials?: string }

const standaloneVariables = 'MESSAGES_REDIS_HOST / MESSAGES_REDIS_PORT / MESSAGES_REDIS_URL';
const standaloneHints: Hints = {
  variables: standaloneVariables,
  refused: `start redis-server (apt-get install redis-server) or set ${standaloneVariables}`,
};

// An operator reads this line without the source at hand: say what failed and what to change.
export function describeRedisError(err: unknown, target: string, hints = standaloneHints): { cause: string; hint: string } {
  const text = err instanceof Error ? `${(err as NodeJS.ErrnoException).code ?? ''} ${err.message}` : String(err);
  let hint = 'check that Redis is running and reachable';
  if (/ECONNREFUSED/.test(text)) hint = `nothing listens at ${target}: ${hints.refused}`;
  else if (/ECONNRESET|Socket closed unexpectedly/.test(text)) hint = `${target} closed the connection: ${hints.refused}`;
  else if (/ENOTFOUND|EAI_AGAIN/.test(text)) hint = `the host of ${target} does not resolve: check ${hints.variables}`;
  else if (/WRONGPASS|NOAUTH|invalid password|invalid username/i.test(text)) hint = hints.credentials ?? 'Redis refused the credentials: check MESSAGES_REDIS_USERNAME and MESSAGES_REDIS_PASSWORD (or the user:password of MESSAGES_REDIS_URL)';
  else if (/NOPERM/.test(text)) hint = 'the Redis ACL user lacks a permission: allow GET, SET, PING (and WAIT with MESSAGES_REDIS_MIN_REPLICAS) on ~messages:*';
  else if (/certificate|self[- ]signed|SSL|TLS|ERR_TLS|EPROTO/i.test(text)) hint = 'the TLS link to Redis failed: check MESSAGES_REDIS_CA_FILE and the server certificate';
  else if (/slots$/.test(text)) hint = 'the cluster does not serve every slot yet: assign them all (redis-cli --cluster create, or --cluster fix); writes resume by themselves';
  else if (/No such master|no valid master/i.test(text)) hint = 'the sentinels know no usable master by that name: check MESSAGES_REDIS_SENTINEL_NAME';
  else if (/timeout|did not answer/i.test(text)) hint = `${target} did not answer in time: check the network path and MESSAGES_REDIS_TIMEOUT_MS`;
  return { cause: text.trim(), hint };
}

export interface StateReporter {
  down(err: unknown): void;
  up(fields?: Record<string, unknown>): void;
}

// Logs "redis_down" once per outage and "redis_up" once per recovery, not every reconnect attempt.
export function stateReporter(log: AppLog, target: string, hints = standaloneHints): StateReporter {
  let up = false;
  let reported = false;
  return {
    down(err) {
      if (!up && reported) return;
      up = false;
      reported = true;
      log.warn('redis_down', { target, ...describeRedisError(err, target, hints) });
    },
    up(fields) {
      if (up) return;
      up = true;
      reported = true;
      log.info('redis_up', { target, ...fields });
    },
  };
}

export const offline = () => new Error('The connection to Redis is not ready');

export type Bounded = <T>(work: () => Promise<T>) => Promise<T>;

// node-redis's command timeout ends once a command is written; this bounds the reply too, so a hung or failing-over
// Redis costs a request at most `ms`. A hung Redis raises no error event: misses are logged, at most once per 10 s.
export function deadline(ms: number, log: AppLog, target: string): Bounded {
  const allow = throttle();
  const expire = (reject: (err: Error) => void) => {
    const suppressed = allow();
    if (suppressed !== undefined) {
      log.warn('redis_timeout', { target, timeoutMs: ms, missed: suppressed + 1, hint: `${target} did not answer in time: a failover, a hung server, replicas slow to acknowledge WAIT, or MESSAGES_REDIS_TIMEOUT_MS too low` });
    }
    reject(new Error(`Redis did not answer within ${ms} ms`));
  };
  return (work) => new Promise((resolve, reject) => {
    const timer = setTimeout(expire, ms, reject);
    work().then((value) => {
      clearTimeout(timer);
      resolve(value);
    }, (err: unknown) => {
      clearTimeout(timer);
      reject(err);
    });
  });
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
    close: async () => {
      // close() lets replies in flight arrive; a client still reconnecting has none and is destroyed.
      for (const each of new Set([client, writer])) {
        if (each.isReady) await each.close();
        else if (each.isOpen) each.destroy();
      }
    },
  };
}

export function connectRedis(config: RedisConfig, log: AppLog): RedisConnection {
  if (config.clusterNodes.length > 0) return connectCluster(config, log);
  if (config.sentinels.length > 0) return connectSentinel(config, log);
  return connectStandalone(config, log);
}
