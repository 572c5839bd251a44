// The only module that reads process.env: every MESSAGES_* variable is parsed and validated here, once.
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { ConfigError, read, type Env } from './env.ts';

export const projectRoot = path.resolve(__dirname, '..');
// The self-signed pair generated on first start when MESSAGES_CERT_FILE and MESSAGES_KEY_FILE are not set.
export const defaultPair = {
  certFile: path.join(projectRoot, 'certs', 'localhost.crt'),
  keyFile: path.join(projectRoot, 'certs', 'localhost.key'),
};

export interface HostPort { host: string; port: number }

// Every integer setting: its variable, default and range (0 means off where a setting allows it).
const integers = {
  port: ['MESSAGES_PORT', 5000, 0, 65535],
  metricsPort: ['MESSAGES_METRICS_PORT', 9464, 0, 65535],
  logMaxBytes: ['MESSAGES_LOG_MAX_BYTES', 100_000_000, 0, Number.MAX_SAFE_INTEGER],
  logBackupCount: ['MESSAGES_LOG_BACKUP_COUNT', 5, 0, 1000],
  maxBodyBytes: ['MESSAGES_MAX_BODY_BYTES', 1_048_576, 16, 1_073_741_824],
  maxBufferedBytes: ['MESSAGES_MAX_BUFFERED_BYTES', 16_777_216, 16, Number.MAX_SAFE_INTEGER],
  maxConnections: ['MESSAGES_MAX_CONNECTIONS', 10_000, 1, 1_000_000],
  maxConnectionsPerIp: ['MESSAGES_MAX_CONNECTIONS_PER_IP', 0, 0, 1_000_000],
  minBodyRate: ['MESSAGES_MIN_BODY_RATE', 240, 0, 1_073_741_824],
  headersTimeoutMs: ['MESSAGES_HEADERS_TIMEOUT_MS', 10_000, 100, 600_000],
  requestTimeoutMs: ['MESSAGES_REQUEST_TIMEOUT_MS', 30_000, 100, 600_000],
  keepAliveTimeoutMs: ['MESSAGES_KEEPALIVE_TIMEOUT_MS', 5_000, 100, 600_000],
  sendTimeoutMs: ['MESSAGES_SEND_TIMEOUT_MS', 30_000, 100, 600_000],
  shutdownTimeoutMs: ['MESSAGES_SHUTDOWN_TIMEOUT_MS', 10_000, 0, 600_000],
} as const satisfies Table;
const redisIntegers = {
  port: ['MESSAGES_REDIS_PORT', 6379, 1, 65535],
  minReplicas: ['MESSAGES_REDIS_MIN_REPLICAS', 0, 0, 100],
  timeoutMs: ['MESSAGES_REDIS_TIMEOUT_MS', 1000, 50, 60_000],
  maxInflight: ['MESSAGES_MAX_INFLIGHT', 128, 1, 100_000],
} as const satisfies Table;
type Table = Record<string, readonly [string, number, number, number]>;
type Integers<T extends Table> = { [K in keyof T]: number };

export type RedisConfig = Integers<typeof redisIntegers> & {
  url: string | undefined;
  host: string;
  username: string | undefined;
  password: string | undefined;
  tls: boolean;
  caFile: string | undefined;
  clusterNodes: HostPort[];
  readFromReplicas: boolean;
  sentinels: HostPort[];
  sentinelName: string;
  sentinelPassword: string | undefined; // the sentinels' own (requirepass), not the master's
  maxBufferedBytes: number; // MESSAGES_MAX_BUFFERED_BYTES: it bounds the values a connection has in flight
};

export type Config = Integers<typeof integers> & {
  bind: string;
  metricsBind: string;
  workers: number;
  certFile: string;
  keyFile: string;
  logDir: string;
  redis: RedisConfig;
};

const readIntegers = <T extends Table>(env: Env, table: T): Integers<T> => Object.fromEntries(Object.entries(table)
  .map(([key, [name, fallback, min, max]]) => [key, read.integer(env, name, fallback, min, max)])) as Integers<T>;

// Relative paths resolve against the project root so that the working directory never matters.
const filePath = (env: Env, name: string, fallback: string) =>
  path.resolve(projectRoot, read.text(env, name, fallback));

function workers(env: Env): number {
  const raw = read.text(env, 'MESSAGES_WORKERS', '1');
  if (raw.toLowerCase() === 'auto') return availableParallelism();
  return read.integer(env, 'MESSAGES_WORKERS', 1, 1, 256);
}

export function loadConfig(env: Env = process.env): Readonly<Config> {
  const url = read.redisUrl(env);
  const values = readIntegers(env, integers);
  const caFile = read.optional(env, 'MESSAGES_REDIS_CA_FILE');
  const redis: RedisConfig = {
    ...readIntegers(env, redisIntegers),
    url,
    host: read.text(env, 'MESSAGES_REDIS_HOST', 'localhost'),
    username: read.optional(env, 'MESSAGES_REDIS_USERNAME'),
    password: read.optional(env, 'MESSAGES_REDIS_PASSWORD'),
    tls: read.flag(env, 'MESSAGES_REDIS_TLS') || (url?.startsWith('rediss:') ?? false),
    caFile: caFile === undefined ? undefined : path.resolve(projectRoot, caFile),
    clusterNodes: read.hostPortList(env, 'MESSAGES_REDIS_CLUSTER_NODES'),
    readFromReplicas: read.flag(env, 'MESSAGES_REDIS_READ_FROM_REPLICAS'),
    sentinels: read.hostPortList(env, 'MESSAGES_REDIS_SENTINELS'),
    sentinelName: read.text(env, 'MESSAGES_REDIS_SENTINEL_NAME', 'mymaster'),
    sentinelPassword: read.optional(env, 'MESSAGES_REDIS_SENTINEL_PASSWORD'),
    maxBufferedBytes: values.maxBufferedBytes,
  };
  if (redis.clusterNodes.length > 0 && redis.sentinels.length > 0) {
    throw new ConfigError('The values of "MESSAGES_REDIS_CLUSTER_NODES" and "MESSAGES_REDIS_SENTINELS" ' +
      'are in conflict. Set at most one of them');
  }
  // The URL names one server; Cluster and Sentinel modes find theirs from the seeds: its credentials would be lost.
  for (const name of ['MESSAGES_REDIS_CLUSTER_NODES', 'MESSAGES_REDIS_SENTINELS'] as const) {
    if (url !== undefined && read.optional(env, name) !== undefined) {
      throw new ConfigError(`The values of "MESSAGES_REDIS_URL" and "${name}" are in conflict. ` +
        'Set MESSAGES_REDIS_USERNAME, MESSAGES_REDIS_PASSWORD and MESSAGES_REDIS_TLS instead of the URL');
    }
  }
  const config: Config = {
    ...values,
    bind: read.text(env, 'MESSAGES_BIND', '0.0.0.0'),
    metricsBind: read.text(env, 'MESSAGES_METRICS_BIND', '127.0.0.1'),
    workers: workers(env),
    certFile: filePath(env, 'MESSAGES_CERT_FILE', defaultPair.certFile),
    keyFile: filePath(env, 'MESSAGES_KEY_FILE', defaultPair.keyFile),
    logDir: filePath(env, 'MESSAGES_LOG_DIR', 'logs'),
    redis: Object.freeze(redis),
  };

  if (config.requestTimeoutMs < config.headersTimeoutMs) {
    throw new ConfigError('The value of "MESSAGES_REQUEST_TIMEOUT_MS" is out of range. ' +
      `It must be >= MESSAGES_HEADERS_TIMEOUT_MS (${config.headersTimeoutMs}). Received ${config.requestTimeoutMs}`);
  }
  // A body of the largest size allowed must fit, or such a request would wait for ever.
  if (config.maxBufferedBytes < config.maxBodyBytes) {
    throw new ConfigError('The value of "MESSAGES_MAX_BUFFERED_BYTES" is out of range. ' +
      `It must be >= MESSAGES_MAX_BODY_BYTES (${config.maxBodyBytes}). Received ${config.maxBufferedBytes}`);
  }
  return Object.freeze(config);
}

// The start-up line for app.log: every setting an operator may want to see, no secret.
export function describeConfig(config: Readonly<Config>): Record<string, unknown> {
  // maxBufferedBytes is the top-level setting, copied for the Redis options: shown once.
  const { password: _pass, sentinelPassword: _sentinelPass, maxBufferedBytes: _copy, url, ...redis } = config.redis;
  return {
    ...config,
    redis: {
      ...redis,
      url: url === undefined ? undefined : url.replace(/\/\/[^@/]*@/, '//***@'),
      password: config.redis.password === undefined ? 'unset' : 'set',
      sentinelPassword: config.redis.sentinelPassword === undefined ? 'unset' : 'set',
    },
  };
}
