// Redis Cluster (sharding) and Sentinel (failover) connections, built with the official client's own support.
import { createCluster, createSentinel } from './redis-core.ts';
import type { AppLog } from './app-log.ts';
import type { HostPort, RedisConfig } from './config.ts';
import {
  deadline, nodeOptions, offline, reconnectDelay, stateReporter, tlsOptions, type RedisConnection, type StateReporter,
} from './redis.ts';

const address = (node: HostPort) => `${node.host}:${node.port}`;

// The clients' connect() gives up when no seed answers; keep trying with the backoff single connections use.
function keepConnecting(connect: () => Promise<unknown>, state: StateReporter): { stop(): void } {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const attempt = (retries: number): void => {
    connect().catch((err: unknown) => {
      state.down(err);
      if (!stopped) timer = setTimeout(() => attempt(retries + 1), reconnectDelay(retries));
    });
  };
  attempt(0);
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

// A graceful close lets replies in flight arrive; past the deadline the connections are cut.
async function closeWithin(ms: number, close: () => Promise<unknown>, destroy: () => unknown): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const closed = await Promise.race([
    close().then(() => true, () => false),
    new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), ms); }),
  ]);
  clearTimeout(timer);
  if (!closed) await destroy();
}

const clusterSlots = 16384;

const isRedirect = (err: unknown) => err instanceof Error && /^(MOVED|ASK) /.test(err.message);

export function connectCluster(config: RedisConfig, log: AppLog): RedisConnection {
  const hints = {
    variables: 'MESSAGES_REDIS_CLUSTER_NODES',
    refused: 'start the node or check MESSAGES_REDIS_CLUSTER_NODES; the cluster promotes a replica of a failed master after cluster-node-timeout',
  };
  const seeds = `cluster ${config.clusterNodes.map(address).join(',')}`;
  const bounded = deadline(config.timeoutMs, log, seeds);
  const seedState = stateReporter(log, seeds, hints);
  const nodeStates = new Map<string, StateReporter>();
  const nodeState = (node: HostPort) => {
    const key = address(node);
    if (!nodeStates.has(key)) nodeStates.set(key, stateReporter(log, key, hints));
    return nodeStates.get(key)!;
  };
  const open = () => {
    const cluster = createCluster({
      rootNodes: config.clusterNodes.map((node) => ({ socket: { host: node.host, port: node.port } })),
      // The seeds only serve discovery: credentials and TLS reach the discovered nodes through `defaults`.
      defaults: nodeOptions(config),
      useReplicas: config.readFromReplicas,
      // deadline() bounds every call; see connectStandalone for why node-redis's own command timeout is off.
      commandOptions: { timeout: 0 },
    });
    cluster.on('error', (err: unknown) => seedState.down(err));
    cluster.on('node-error', (err: unknown, node: HostPort) => nodeState(node).down(err));
    cluster.on('node-ready', (node: HostPort) => nodeState(node).up());
    // A cluster still being set up answers with part of the slots, or none: node-redis connects to it and never asks
    // again, so every key of a missing slot would fail for good. Such a connection is dropped and tried again.
    const connect = async () => {
      await cluster.connect();
      const served = cluster.slots.filter((shard) => shard !== undefined).length;
      if (served < clusterSlots) {
        cluster.destroy();
        throw new Error(`the cluster serves ${served} of ${clusterSlots} slots`);
      }
      seedState.up({ masters: cluster.masters.map(address) });
    };
    return { cluster, connecting: keepConnecting(connect, seedState) };
  };
  const main = open();
  const cluster = main.cluster;
  // WAIT holds its connection until the replicas answer or it times out: durable writes get a connection per master
  // of their own, so that reads and PINGs never queue behind one.
  const durable = config.minReplicas > 0 ? open() : main;

  return {
    set: (key, value, replicas, waitMs) => bounded(async () => {
      if (replicas === 0) return cluster.set(key, value).then(() => 0);
      // node-redis sends a bare WAIT to every shard (its request policy for WAIT is all_shards): pipeline it
      // behind the SET on the connection to the master that owns the key's slot instead.
      const master = await durable.cluster.getNodeClientForKey(key, false);
      if (!master.isReady) throw offline();
      try {
        const [, acked] = await master.multi().set(key, value).wait(replicas, waitMs).execAsPipeline();
        return Number(acked);
      } catch (err) {
        // The slot moved: a plain SET follows the redirect and refreshes the slot map for the client's retry.
        if (isRedirect(err)) await durable.cluster.set(key, value);
        throw err;
      }
    }),
    get: (key) => bounded(async () => {
      if (!config.readFromReplicas) return cluster.get(key);
      // A replica may be down or behind: a miss there is asked again of the master before it becomes a 404.
      const fromAnyNode = await cluster.get(key).catch(() => null);
      return fromAnyNode ?? cluster.sendCommand<string | null>(key, false, ['GET', key]);
    }),
    // Ready means every master answers: any key may hash to any of them.
    ping: () => bounded(async () => {
      if (cluster.masters.length === 0) throw offline();
      return Promise.all(cluster.masters.map(async (node) => (await cluster.nodeClient(node)).ping()));
    }),
    get isReady() {
      return cluster.isReady && durable.cluster.isReady;
    },
    close: async () => {
      await Promise.all([...new Set([main, durable])].map(async (each) => {
        each.connecting.stop();
        await closeWithin(config.timeoutMs, () => each.cluster.close(), () => each.cluster.destroy());
      }));
    },
  };
}

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
      const fromMaster = err instanceof Error && err.message.startsWith('Master Client');
      (fromMaster ? masterState : sentinelState).down(err);
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
  const whenOpen = <T>(each: typeof main, work: () => Promise<T>) => (each.sentinel.isOpen ? bounded(work) : Promise.reject(offline()));

  return {
    set: (key, value, replicas, waitMs) => whenOpen(replicas === 0 ? main : durable, async () => {
      if (replicas === 0) return sentinel.set(key, value).then(() => 0);
      // If the master fails mid-pipeline the client sends SET and WAIT again, together, to the new master.
      const [, acked] = await durable.sentinel.multi().set(key, value).wait(replicas, waitMs).execAsPipeline();
      return Number(acked);
    }),
    get: (key) => whenOpen(reader, async () => {
      if (reader === main) return sentinel.get(key);
      const fromAnyNode = await reader.sentinel.get(key).catch(() => null);
      return fromAnyNode ?? sentinel.get(key);
    }),
    ping: () => whenOpen(main, () => sentinel.ping()),
    get isReady() {
      return sentinel.isReady && durable.sentinel.isReady && reader.sentinel.isReady;
    },
    close: async () => {
      await Promise.all([...new Set([main, durable, reader])].map(async (each) => {
        each.connecting.stop();
        await closeWithin(config.timeoutMs, () => each.sentinel.close(), () => each.sentinel.destroy());
      }));
    },
  };
}
