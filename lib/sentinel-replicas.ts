// READ_FROM_REPLICAS via node-redis's createSentinel, slow to follow a failover: a replica's miss asks the master.
import { createSentinel } from '@redis/client';
import type { AppLog } from './app-log.ts';
import type { RedisConfig } from './config.ts';
import { nodeOptions, tlsOptions } from './redis-options.ts';
import { replicaFirst } from './replica-reads.ts';
import { closeWithin, keepConnecting } from './redis-failures.ts';
import { describeRedisError } from './redis-state.ts';
import { throttle } from './throttle.ts';

// GETs go to replicas (replicaPoolSize > 0) on their own connections: a lagging replica's miss can ask the master.
export function openReplicaReader(config: RedisConfig, log: AppLog) {
  const variables = 'MESSAGES_REDIS_SENTINELS';
  // A failing replica costs only its share of reads, which go to the master: at most a warning per 10 s.
  const replicaTrouble = throttle();
  const replicaHints = {
    variables,
    refused: 'a replica is down; reads go to the master until it is back or the sentinels drop it',
  };
  const sentinel = createSentinel({
    name: config.sentinelName,
    sentinelRootNodes: config.sentinels,
    replicaPoolSize: 1,
    nodeClientOptions: nodeOptions(config),
    sentinelClientOptions: {
      ...(config.sentinelPassword === undefined ? {} : { password: config.sentinelPassword }),
      socket: { ...tlsOptions(config), connectTimeout: config.timeoutMs },
    },
    // One rediscovery per trouble, no 1 s retries: a read would outlast its deadline; the master answers at once.
    maxCommandRediscovers: 0,
    // RedisSentinel drops node connections' 'client-error'; this passes them as 'error' ("Replica Client ...").
    passthroughClientErrorEvents: true,
    commandOptions: { timeout: 0 },
  });
  // Its master and sentinel links repeat what the master's connections and the sentinel watch already report.
  sentinel.on('error', (err: unknown) => {
    if (!(err instanceof Error && err.message.startsWith('Replica Client'))) return;
    const suppressed = replicaTrouble();
    if (suppressed !== undefined) {
      log.warn('redis_replica_error', {
        ...describeRedisError(err, `a replica of ${config.sentinelName}`, replicaHints),
        suppressed,
      });
    }
  });
  // Its failures to connect are the sentinel watch's to report.
  const connecting = keepConnecting(() => sentinel.connect(), { down: () => {}, up: () => {} });
  const replicaRead = replicaFirst(config.timeoutMs, log, `a replica of ${config.sentinelName}`);
  return {
    // A replica may be down, hung or behind: its miss is asked again of the master before it becomes a 404.
    get: (key: string, fromMaster: () => Promise<string | null>) => replicaRead(sentinel.get(key), fromMaster),
    async stop(withinMs: number) {
      connecting.stop();
      await closeWithin(withinMs, () => sentinel.close(), () => sentinel.destroy());
    },
  };
}
