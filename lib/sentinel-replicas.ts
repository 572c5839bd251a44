// Reads from the replicas the sentinels know (READ_FROM_REPLICAS), through node-redis's own Sentinel support: its
// slowness to follow a failover costs little here, since a read that fails or misses on a replica asks the master.
import { createSentinel } from './redis-core.ts';
import type { AppLog } from './app-log.ts';
import type { RedisConfig } from './config.ts';
import { nodeOptions, tlsOptions } from './redis-connection.ts';
import { closeWithin, keepConnecting } from './redis-failures.ts';
import { describeRedisError } from './redis-state.ts';
import { throttle } from './throttle.ts';

// GETs spread over the replicas by node-redis's Sentinel support (replicaPoolSize > 0 sends read-only commands to
// replicas), on connections of their own, so that a read a lagging replica missed can still ask the master.
export function openReplicaReader(config: RedisConfig, log: AppLog) {
  const variables = 'MESSAGES_REDIS_SENTINELS';
  // A failing replica costs only its share of the reads, which its misses send to the master: a warning at most
  // every 10 s, not an outage.
  const replicaTrouble = throttle();
  const replicaHints = { variables, refused: 'a replica is down; reads go to the master until it is back or the sentinels drop it' };
  const sentinel = createSentinel({
    name: config.sentinelName,
    sentinelRootNodes: config.sentinels,
    replicaPoolSize: 1,
    nodeClientOptions: nodeOptions(config),
    sentinelClientOptions: {
      ...(config.sentinelPassword === undefined ? {} : { password: config.sentinelPassword }),
      socket: { ...tlsOptions(config), connectTimeout: config.timeoutMs },
    },
    // One rediscovery per trouble, no 1 s retries: a read waiting for them would outlast its deadline, where asking
    // the master answers at once.
    maxCommandRediscovers: 0,
    // RedisSentinel does not pass its node connections' 'client-error' on; with this they come as 'error',
    // named "Master Client (host:port): ...", "Replica Client ..." or "Sentinel Client ...".
    passthroughClientErrorEvents: true,
    commandOptions: { timeout: 0 },
  });
  // Its master and sentinel links repeat what the master's connections and the sentinel watch already report.
  sentinel.on('error', (err: unknown) => {
    if (!(err instanceof Error && err.message.startsWith('Replica Client'))) return;
    const suppressed = replicaTrouble();
    if (suppressed !== undefined) log.warn('redis_replica_error', { ...describeRedisError(err, `a replica of ${config.sentinelName}`, replicaHints), suppressed });
  });
  // Its failures to connect are the sentinel watch's to report.
  const connecting = keepConnecting(() => sentinel.connect(), { down: () => {}, up: () => {} });
  return {
    sentinel,
    async stop(withinMs: number) {
      connecting.stop();
      await closeWithin(withinMs, () => sentinel.close(), () => sentinel.destroy());
    },
  };
}
