// Connects to Redis in the mode the configuration names; each mode lives in a module of its own.
import type { AppLog } from './app-log.ts';
import type { RedisConfig } from './config.ts';
import { connectCluster } from './redis-cluster.ts';
import type { CallObserver } from './redis-reports.ts';
import type { RedisConnection } from './redis-connection.ts';
import { connectSentinel } from './redis-sentinel.ts';
import { connectStandalone } from './redis-standalone.ts';

export function connectRedis(config: RedisConfig, log: AppLog, observe: CallObserver): RedisConnection {
  if (config.clusterNodes.length > 0) return connectCluster(config, log, observe);
  if (config.sentinels.length > 0) return connectSentinel(config, log, observe);
  return connectStandalone(config, log, observe);
}
