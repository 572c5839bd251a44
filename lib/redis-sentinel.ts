// Redis replicas watched by Sentinel (failover), built with the official client's own Sentinel support.
import { createSentinel } from './redis-core.ts';
import type { AppLog } from './app-log.ts';
import type { HostPort, RedisConfig } from './config.ts';
import { nodeOptions, probeKey, probeOptions, tlsOptions, type RedisConnection } from './redis-connection.ts';
import { address, closeWithin, deadline, describeRedisError, keepConnecting, offline, stateReporter } from './redis-failures.ts';
import { throttle } from './throttle.ts';

export function connectSentinel(config: RedisConfig, log: AppLog): RedisConnection {
  const variables = 'MESSAGES_REDIS_SENTINELS';
  const target = `master ${config.sentinelName} via sentinels ${config.sentinels.map(address).join(',')}`;
  const bounded = deadline(config.timeoutMs, log, target);
  const masterState = stateReporter(log, target, {
    variables,
    refused: 'the master is down; the sentinels promote a replica once a quorum agrees, and writes resume by themselves',
  });
  const sentinelState = stateReporter(log, `sentinels ${config.sentinels.map(address).join(',')}`, {
    variables,
    refused: 'start the sentinels or check MESSAGES_REDIS_SENTINELS',
    credentials: 'the sentinels refused the credentials: check MESSAGES_REDIS_SENTINEL_PASSWORD (their requirepass)',
  });
  // A failing replica (READ_FROM_REPLICAS) costs only its share of the reads, which its misses send to the master:
  // a warning at most every 10 s, not an outage.
  const replicaTrouble = throttle();
  const replicaHints = { variables, refused: 'a replica is down; reads go to the master until it is back or the sentinels drop it' };
  // replicaPoolSize > 0: node-redis spreads read-only commands over the master and its replicas.
  const open = (replicaPoolSize = 0) => {
    const sentinel = createSentinel({
      name: config.sentinelName,
      sentinelRootNodes: config.sentinels,
      replicaPoolSize,
      nodeClientOptions: nodeOptions(config),
      sentinelClientOptions: {
        ...(config.sentinelPassword === undefined ? {} : { password: config.sentinelPassword }),
        socket: { ...tlsOptions(config), connectTimeout: config.timeoutMs },
      },
      // RedisSentinel does not pass its node connections' 'client-error' on; with this they come as 'error',
      // named "Master Client (host:port): ...", "Replica Client ..." or "Sentinel Client ...".
      passthroughClientErrorEvents: true,
      // deadline() bounds every call; see connectStandalone for why node-redis's own command timeout is off.
      commandOptions: { timeout: 0 },
    });
    sentinel.on('error', (err: unknown) => {
      const source = err instanceof Error ? err.message : '';
      if (source.startsWith('Replica Client')) {
        const suppressed = replicaTrouble();
        if (suppressed !== undefined) log.warn('redis_replica_error', { ...describeRedisError(err, `a replica of ${config.sentinelName}`, replicaHints), suppressed });
        return;
      }
      (source.startsWith('Master Client') ? masterState : sentinelState).down(err);
    });
    sentinel.on('ready', () => {
      const master = sentinel.getMasterNode();
      masterState.up({ master: master === undefined ? undefined : address(master) });
      sentinelState.up();
    });
    return { sentinel, connecting: keepConnecting(() => sentinel.connect(), masterState) };
  };
  const main = open();
  const sentinel = main.sentinel;
  let master: string | undefined;
  sentinel.on('topology-change', (event: { type: string; node?: HostPort }) => {
    if (event.type !== 'MASTER_CHANGE' || event.node === undefined) return;
    const next = address(event.node);
    if (master !== undefined && master !== next) log.warn('redis_master_changed', { target, from: master, to: next });
    master = next;
  });
  // WAIT holds its connection until the replicas answer or it times out: durable writes get a connection of their
  // own, so that reads and PINGs never queue behind one. (Leasing pooled connections with use() instead costs
  // node-redis a new command class per call: ~100 ms of CPU in 6.3.1.)
  const durable = config.minReplicas > 0 ? open() : main;
  // Reads from replicas go through a connection of their own, so that the master one is still there for a read a
  // lagging replica missed: a message acknowledged a moment ago must not come back 404.
  const reader = config.readFromReplicas ? open(1) : main;
  // Before the first connect and after a failed one the client has no master to send to.
  const whenOpen = <T>(each: typeof main, command: string, work: () => Promise<T>) =>
    (each.sentinel.isOpen ? bounded(command, work) : Promise.reject(offline()));

  return {
    set: (key, value, replicas, waitMs) => whenOpen(replicas === 0 ? main : durable, replicas === 0 ? 'SET' : 'SET+WAIT', async () => {
      if (replicas === 0) return sentinel.set(key, value).then(() => 0);
      // If the master fails mid-pipeline the client sends SET and WAIT again, together, to the new master.
      const [, acked] = await durable.sentinel.multi().set(key, value).wait(replicas, waitMs).execAsPipeline();
      return Number(acked);
    }),
    get: (key) => whenOpen(reader, 'GET', async () => {
      if (reader === main) return sentinel.get(key);
      const fromAnyNode = await reader.sentinel.get(key).catch(() => null);
      return fromAnyNode ?? sentinel.get(key);
    }),
    probe: () => whenOpen(main, 'SET', () => sentinel.set(probeKey, '1', probeOptions)).then(() => undefined),
    get isReady() {
      return sentinel.isReady && durable.sentinel.isReady && reader.sentinel.isReady;
    },
    close: async (withinMs) => {
      await Promise.all([...new Set([main, durable, reader])].map(async (each) => {
        each.connecting.stop();
        await closeWithin(withinMs, () => each.sentinel.close(), () => each.sentinel.destroy());
      }));
    },
  };
}
