// The only module that reads process.env: every MESSAGES_* variable is parsed and validated here, once.
import { availableParallelism } from 'node:os';
import path from 'node:path';

export const projectRoot = path.resolve(__dirname, '..');
export const defaultCertFile = path.join(projectRoot, 'certs', 'localhost.crt');
export const defaultKeyFile = path.join(projectRoot, 'certs', 'localhost.key');

export interface HostPort { host: string; port: number }

export interface RedisConfig {
  url: string | undefined;
  host: string;
  port: number;
  username: string | undefined;
  password: string | undefined;
  tls: boolean;
  caFile: string | undefined;
  clusterNodes: HostPort[];
  readFromReplicas: boolean;
  sentinels: HostPort[];
  sentinelName: string;
  sentinelPassword: string | undefined; // the sentinels' own (requirepass), not the master's
  minReplicas: number;
  timeoutMs: number;
  maxInflight: number;
}

export interface Config {
  port: number;
  bind: string;
  workers: number;
  certFile: string;
  keyFile: string;
  logDir: string;
  logMaxBytes: number;
  logBackupCount: number;
  maxBodyBytes: number;
  maxBufferedBytes: number;
  maxConnections: number;
  maxConnectionsPerIp: number;
  minBodyRate: number;
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  keepAliveTimeoutMs: number;
  sendTimeoutMs: number;
  shutdownTimeoutMs: number;
  redis: RedisConfig;
}

// Every integer setting: its variable, default and range. 0 means off where a setting allows it.
const integers = {
  port: ['MESSAGES_PORT', 5000, 0, 65535],
  logMaxBytes: ['MESSAGES_LOG_MAX_BYTES', 100_000_000, 0, Number.MAX_SAFE_INTEGER],
  logBackupCount: ['MESSAGES_LOG_BACKUP_COUNT', 5, 0, 1000],
  maxBodyBytes: ['MESSAGES_MAX_BODY_BYTES', 1_048_576, 16, 1_073_741_824],
  maxBufferedBytes: ['MESSAGES_MAX_BUFFERED_BYTES', 16_777_216, 16, Number.MAX_SAFE_INTEGER],
  maxConnections: ['MESSAGES_MAX_CONNECTIONS', 10_000, 1, 1_000_000],
  maxConnectionsPerIp: ['MESSAGES_MAX_CONNECTIONS_PER_IP', 0, 0, 1_000_000],
  maxInflight: ['MESSAGES_MAX_INFLIGHT', 128, 1, 100_000],
  minBodyRate: ['MESSAGES_MIN_BODY_RATE', 240, 0, 1_073_741_824],
  headersTimeoutMs: ['MESSAGES_HEADERS_TIMEOUT_MS', 10_000, 100, 600_000],
  requestTimeoutMs: ['MESSAGES_REQUEST_TIMEOUT_MS', 30_000, 100, 600_000],
  keepAliveTimeoutMs: ['MESSAGES_KEEPALIVE_TIMEOUT_MS', 5_000, 100, 600_000],
  sendTimeoutMs: ['MESSAGES_SEND_TIMEOUT_MS', 30_000, 100, 600_000],
  shutdownTimeoutMs: ['MESSAGES_SHUTDOWN_TIMEOUT_MS', 10_000, 0, 600_000],
  redisPort: ['MESSAGES_REDIS_PORT', 6379, 1, 65535],
  redisMinReplicas: ['MESSAGES_REDIS_MIN_REPLICAS', 0, 0, 100],
  redisTimeoutMs: ['MESSAGES_REDIS_TIMEOUT_MS', 1000, 50, 60_000],
} as const satisfies Record<string, readonly [string, number, number, number]>;

export class ConfigError extends Error {}

type Env = Record<string, string | undefined>;

function received(value: string): string {
  return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}...` : value);
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw.trim())) {
    throw new ConfigError(`The value of "${name}" is invalid. It must be an integer. Received ${received(raw)}`);
  }
  const value = Number(raw.trim());
  if (value < min || value > max) {
    throw new ConfigError(`The value of "${name}" is out of range. It must be >= ${min} && <= ${max}. Received ${raw.trim()}`);
  }
  return value;
}

function flag(env: Env, name: string): boolean {
  const raw = (env[name] ?? '').trim().toLowerCase();
  if (['', '0', 'false', 'no'].includes(raw)) return false;
  if (['1', 'true', 'yes'].includes(raw)) return true;
  throw new ConfigError(`The value of "${name}" is invalid. It must be one of 0, 1, true, false. Received ${received(raw)}`);
}

function text(env: Env, name: string, fallback: string): string {
  const raw = env[name];
  return raw === undefined || raw.trim() === '' ? fallback : raw.trim();
}

function optional(env: Env, name: string): string | undefined {
  const raw = env[name];
  return raw === undefined || raw === '' ? undefined : raw;
}

// Relative paths resolve against the project root so that the working directory never matters.
function filePath(env: Env, name: string, fallback: string): string {
  return path.resolve(projectRoot, text(env, name, fallback));
}

function hostPortList(env: Env, name: string): HostPort[] {
  const raw = optional(env, name);
  if (raw === undefined) return [];
  return raw.split(',').map((entry) => {
    const match = /^\[?([^\]\s]+?)\]?:(\d{1,5})$/.exec(entry.trim());
    if (match === null || Number(match[2]) > 65535 || Number(match[2]) === 0) {
      throw new ConfigError(`The value of "${name}" is invalid. It must be a comma-separated list of host:port. Received ${received(raw)}`);
    }
    return { host: match[1]!, port: Number(match[2]) };
  });
}

function redisUrl(env: Env): string | undefined {
  const raw = optional(env, 'MESSAGES_REDIS_URL');
  if (raw === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError('The value of "MESSAGES_REDIS_URL" is invalid. It must be a redis:// or rediss:// URL. Received an unparsable URL');
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    // The URL may hold a password: name the scheme only.
    throw new ConfigError(`The value of "MESSAGES_REDIS_URL" is invalid. It must be a redis:// or rediss:// URL. Received scheme ${received(url.protocol)}`);
  }
  return raw;
}

function workers(env: Env): number {
  const raw = text(env, 'MESSAGES_WORKERS', '1');
  if (raw.toLowerCase() === 'auto') return availableParallelism();
  return integer(env, 'MESSAGES_WORKERS', 1, 1, 256);
}

export function loadConfig(env: Env = process.env): Readonly<Config> {
  const int = (key: keyof typeof integers) => {
    const [name, fallback, min, max] = integers[key];
    return integer(env, name, fallback, min, max);
  };
  const url = redisUrl(env);
  const caFile = optional(env, 'MESSAGES_REDIS_CA_FILE');
  const redis: RedisConfig = {
    url,
    host: text(env, 'MESSAGES_REDIS_HOST', 'localhost'),
    port: int('redisPort'),
    username: optional(env, 'MESSAGES_REDIS_USERNAME'),
    password: optional(env, 'MESSAGES_REDIS_PASSWORD'),
    tls: flag(env, 'MESSAGES_REDIS_TLS') || (url?.startsWith('rediss:') ?? false),
    caFile: caFile === undefined ? undefined : path.resolve(projectRoot, caFile),
    clusterNodes: hostPortList(env, 'MESSAGES_REDIS_CLUSTER_NODES'),
    readFromReplicas: flag(env, 'MESSAGES_REDIS_READ_FROM_REPLICAS'),
    sentinels: hostPortList(env, 'MESSAGES_REDIS_SENTINELS'),
    sentinelName: text(env, 'MESSAGES_REDIS_SENTINEL_NAME', 'mymaster'),
    sentinelPassword: optional(env, 'MESSAGES_REDIS_SENTINEL_PASSWORD'),
    minReplicas: int('redisMinReplicas'),
    timeoutMs: int('redisTimeoutMs'),
    maxInflight: int('maxInflight'),
  };
  if (redis.clusterNodes.length > 0 && redis.sentinels.length > 0) {
    throw new ConfigError('The values of "MESSAGES_REDIS_CLUSTER_NODES" and "MESSAGES_REDIS_SENTINELS" are in conflict. Set at most one of them');
  }
  // The URL names one server; Cluster and Sentinel modes find theirs from the seeds: its credentials would be lost.
  for (const name of ['MESSAGES_REDIS_CLUSTER_NODES', 'MESSAGES_REDIS_SENTINELS'] as const) {
    if (url !== undefined && optional(env, name) !== undefined) {
      throw new ConfigError(`The values of "MESSAGES_REDIS_URL" and "${name}" are in conflict. Set MESSAGES_REDIS_USERNAME, MESSAGES_REDIS_PASSWORD and MESSAGES_REDIS_TLS instead of the URL`);
    }
  }
  const config: Config = {
    port: int('port'),
    bind: text(env, 'MESSAGES_BIND', '0.0.0.0'),
    workers: workers(env),
    certFile: filePath(env, 'MESSAGES_CERT_FILE', defaultCertFile),
    keyFile: filePath(env, 'MESSAGES_KEY_FILE', defaultKeyFile),
    logDir: filePath(env, 'MESSAGES_LOG_DIR', 'logs'),
    logMaxBytes: int('logMaxBytes'),
    logBackupCount: int('logBackupCount'),
    maxBodyBytes: int('maxBodyBytes'),
    maxBufferedBytes: int('maxBufferedBytes'),
    maxConnections: int('maxConnections'),
    maxConnectionsPerIp: int('maxConnectionsPerIp'),
    minBodyRate: int('minBodyRate'),
    headersTimeoutMs: int('headersTimeoutMs'),
    requestTimeoutMs: int('requestTimeoutMs'),
    keepAliveTimeoutMs: int('keepAliveTimeoutMs'),
    sendTimeoutMs: int('sendTimeoutMs'),
    shutdownTimeoutMs: int('shutdownTimeoutMs'),
    redis: Object.freeze(redis),
  };
  if (config.requestTimeoutMs < config.headersTimeoutMs) {
    throw new ConfigError(`The value of "MESSAGES_REQUEST_TIMEOUT_MS" is out of range. It must be >= MESSAGES_HEADERS_TIMEOUT_MS (${config.headersTimeoutMs}). Received ${config.requestTimeoutMs}`);
  }
  // A body of the largest size allowed must fit, or such a request would wait for ever.
  if (config.maxBufferedBytes < config.maxBodyBytes) {
    throw new ConfigError(`The value of "MESSAGES_MAX_BUFFERED_BYTES" is out of range. It must be >= MESSAGES_MAX_BODY_BYTES (${config.maxBodyBytes}). Received ${config.maxBufferedBytes}`);
  }
  return Object.freeze(config);
}

// The start-up line for app.log: every setting an operator may want to see, no secret.
export function describeConfig(config: Readonly<Config>): Record<string, unknown> {
  const { password: _password, sentinelPassword: _sentinelPassword, url, ...redis } = config.redis;
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
