// Redis Cluster (sharding), built with the official client's own cluster support.
import { createCluster } from '@redis/client';
import type { AppLog } from './app-log.ts';
import { boundedCalls, NotAnswered } from './redis-calls.ts';
import { callReporter, refusalLog, type CallObserver } from './redis-reports.ts';
import type { HostPort, RedisConfig } from './config.ts';
import {
  offline, probeCommand, probeWrite, readinessProbe, writeDurably, type RedisConnection,
} from './redis-connection.ts';
import { nodeOptions } from './redis-options.ts';
import { replicaFirst } from './replica-reads.ts';
import { address, closeWithin, keepConnecting } from './redis-failures.ts';
import { stateReporter, type StateReporter } from './redis-state.ts';
import { throttle } from './throttle.ts';

const clusterSlots = 16384;

const isRedirect = (err: unknown) => err instanceof Error && /^(MOVED|ASK) /.test(err.message);

// One probe key per master: keys hash to slots, so names are tried until every master owns one.
async function probeKeys<Client>(cluster: {
  masters: unknown[];
  getNodeClientForKey(key: string, readonly: boolean): Promise<Client>;
}): Promise<Map<Client, string>> {
  const keys = new Map<Client, string>();
  for (let i = 0; keys.size < cluster.masters.length && i < 10_000; i += 1) {
    const key = `${readinessProbe.key}:${i}`;
    const client = await cluster.getNodeClientForKey(key, false);
    if (!keys.has(client)) keys.set(client, key);
  }
  return keys;
}

export function connectCluster(config: RedisConfig, log: AppLog, observe: CallObserver): RedisConnection {
  const hints = {
    variables: 'MESSAGES_REDIS_CLUSTER_NODES',
    refused: 'start the node or check MESSAGES_REDIS_CLUSTER_NODES; ' +
      'the cluster promotes a replica of a failed master after cluster-node-timeout',
  };
  const seeds = `cluster ${config.clusterNodes.map(address).join(',')}`;
  const refused = refusalLog(log);
  const bounded = boundedCalls(config, callReporter(log, refused, seeds, config, observe));
  const seedState = stateReporter(log, refused, seeds, hints);
  const replicaRead = replicaFirst(config.timeoutMs, log, `replicas of ${seeds}`);
  const nodeStates = new Map<string, StateReporter>();
  const nodeState = (node: HostPort) => {
    const key = address(node);
    if (!nodeStates.has(key)) nodeStates.set(key, stateReporter(log, refused, key, hints));
    return nodeStates.get(key)!;
  };
  const open = () => {
    const cluster = createCluster({
      rootNodes: config.clusterNodes.map((node) => ({ socket: { host: node.host, port: node.port } })),
      // The seeds only serve discovery: credentials and TLS reach the discovered nodes through `defaults`.
      defaults: nodeOptions(config),
      useReplicas: config.readFromReplicas,
      // boundedCalls() bounds every call; see connectStandalone for why node-redis's own command timeout is off.
      commandOptions: { timeout: 0 },
    });
    cluster.on('error', (err: unknown) => seedState.down(err));
    cluster.on('node-error', (err: unknown, node: HostPort) => nodeState(node).down(err));
    cluster.on('node-ready', (node: HostPort) => nodeState(node).up());
    // node-redis never asks a cluster being set up for its slots again: a partial slot map is dropped and retried.
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
  const fromMaster = (key: string) => cluster.sendCommand<string | null>(key, false, ['GET', key]);
  // WAIT holds its connection until replicas answer: durable writes get their own per master, so reads never wait.
  const durable = config.minReplicas > 0 ? open() : main;

  // A master that hangs without a reset keeps its link while commands trickle to it (each write restarts node-redis's
  // socket timeout), so node-redis never asks for the slots again, as it does on MOVED: a call to it that got no
  // answer makes it ask the other nodes, once a second at most, until they name the replica promoted in its place.
  const asking = throttle(1000);
  const askForSlots = async (links: typeof cluster, key: string) => {
    const master = await links.getNodeClientForKey(key, false);
    const hung = links.masters.find((node) => node.client === master)?.address;
    await links._slots.rediscover(undefined, new Set(hung === undefined ? [] : [hung]));
  };
  const onKey = <T>(links: typeof cluster, command: string, key: string, work: () => Promise<T>) =>
    bounded(command, work).catch((err: unknown) => {
      if (err instanceof NotAnswered && asking() !== undefined) void askForSlots(links, key).catch(() => {});
      throw err;
    });

  // node-redis sends WAIT to all shards (its request policy): pipeline it behind the SET on the key's master.
  const setDurably = async (key: string, value: string) => {
    const master = await durable.cluster.getNodeClientForKey(key, false);
    if (!master.isReady) throw offline();
    try {
      await writeDurably(master, key, value, config);
    } catch (err) {
      // The slot moved: a plain SET follows the redirect and refreshes the slot map for the client's retry.
      if (isRedirect(err)) await durable.cluster.set(key, value);
      throw err;
    }
  };
  return {
    // Chosen once, as in connectStandalone; the name is what the log says.
    set: config.minReplicas === 0
      ? (key, value) => onKey(cluster, 'SET', key, () => cluster.set(key, value))
      : (key, value) => onKey(durable.cluster, 'SET+WAIT', key, () => setDurably(key, value)),
    // A replica may be down, hung or behind: its miss is asked again of the master before it becomes a 404.
    get: config.readFromReplicas
      ? (key) => onKey(cluster, 'GET', key, () => replicaRead(cluster.get(key), () => fromMaster(key)))
      : (key) => onKey(cluster, 'GET', key, () => cluster.get(key)),
    // Ready means every master takes writes: any key may hash to any of them.
    probe: () => bounded(probeCommand(config), async () => {
      if (durable.cluster.masters.length === 0) throw offline();
      // Each master's connection that a message's write takes: a key may hash to any of them.
      const probes = [...await probeKeys(durable.cluster)];
      await Promise.all(probes.map(([client, key]) => probeWrite(config, client, client, key)));
    }),
    get isReady() {
      return cluster.isReady && durable.cluster.isReady;
    },
    close: async (withinMs) => {
      await Promise.all([...new Set([main, durable])].map(async (each) => {
        each.connecting.stop();
        await closeWithin(withinMs, () => each.cluster.close(), () => each.cluster.destroy());
      }));
    },
  };
}
