// Redis under Sentinel: master connections move the moment the sentinels announce a switch (sentinel-watch.ts).
import { createClient } from '@redis/client';
import type { AppLog } from './app-log.ts';
import { boundedCalls } from './redis-calls.ts';
import { callReporter, refusalLog, type CallObserver } from './redis-reports.ts';
import type { HostPort, RedisConfig } from './config.ts';
import { offline, probeCommand, probeWrite, writeDurably, type RedisConnection } from './redis-connection.ts';
import { nodeOptions } from './redis-options.ts';
import { address, closeClient, reconnectDelay } from './redis-failures.ts';
import { stateReporter } from './redis-state.ts';
import { openReplicaReader } from './sentinel-replicas.ts';
import { watchSentinels } from './sentinel-watch.ts';

export function connectSentinel(config: RedisConfig, log: AppLog, observe: CallObserver): RedisConnection {
  const variables = 'MESSAGES_REDIS_SENTINELS';
  const target = `master ${config.sentinelName} via sentinels ${config.sentinels.map(address).join(',')}`;
  const refused = refusalLog(log);
  const bounded = boundedCalls(config, callReporter(log, refused, target, config, observe));
  const masterState = stateReporter(log, refused, target, {
    variables,
    refused: 'the master is down; the sentinels promote a replica once a quorum agrees, ' +
      'and writes resume by themselves',
  });
  const sentinelState = stateReporter(log, refused, `sentinels ${config.sentinels.map(address).join(',')}`, {
    variables,
    refused: 'start the sentinels or check MESSAGES_REDIS_SENTINELS',
    credentials: 'the sentinels refused the credentials: check MESSAGES_REDIS_SENTINEL_PASSWORD (their requirepass)',
  });

  let master: HostPort | undefined;
  // Counts moves, so that an address asked for before a move cannot undo it.
  let moves = 0;
  let closed = false;

  const connectTo = (node: HostPort) => {
    const options = nodeOptions(config);
    const client = createClient({
      ...options,
      socket: {
        ...options.socket, host: node.host, port: node.port,
        // A lost master may have moved while no sentinel could tell us: ask again at every reconnect.
        reconnectStrategy: (retries: number) => {
          relocate();
          return reconnectDelay(retries);
        },
      },
      // boundedCalls() bounds every call; see connectStandalone for why node-redis's own command timeout is off.
      commandOptions: { timeout: 0 },
    });
    client.on('error', (err: unknown) => masterState.down(err));
    client.on('ready', () => masterState.up({ master: address(node) }));
    client.connect().catch(() => {
      // Errors are reported through the 'error' event; connect() keeps retrying by reconnectStrategy.
    });
    return client;
  };
  let links: { main: ReturnType<typeof connectTo>; durable: ReturnType<typeof connectTo> } | undefined;
  const moveTo = (node: HostPort) => {
    if (closed || (master !== undefined && address(master) === address(node))) return;
    if (master !== undefined) log.warn('redis_master_changed', { target, from: address(master), to: address(node) });
    master = node;
    moves += 1;
    const previous = links;
    const main = connectTo(node);
    // WAIT holds its connection until replicas answer: durable writes (and the probe) get their own; reads never wait.
    links = { main, durable: config.minReplicas > 0 ? connectTo(node) : main };
    // Commands still waiting on the old master fail now, as a 503, instead of at their deadline.
    for (const client of new Set([previous?.main, previous?.durable])) {
      if (client?.isOpen) client.destroy();
    }
  };

  let locating = false;
  let retry: NodeJS.Timeout | undefined;
  // One question at a time; until a master is known, asked again with backoff.
  const relocate = (retries = 0): void => {
    if (locating || closed) return;
    locating = true;
    const asked = moves;
    watch.locate().then((node) => {
      if (moves === asked) moveTo(node);
    }, (err: unknown) => {
      masterState.down(err, true);
      if (master === undefined && !closed) retry = setTimeout(() => relocate(retries + 1), reconnectDelay(retries));
    }).finally(() => {
      locating = false;
    });
  };
  const watch = watchSentinels(config, bounded, sentinelState, {
    reachable: () => {
      if (master === undefined) relocate();
    },
    // Taken only from the master it replaces: a late announcement of an earlier switch must not move us back.
    switched: (from, to) => {
      if (master === undefined || address(master) === from) moveTo(to);
    },
  });

  const reader = config.readFromReplicas ? openReplicaReader(config, log) : undefined;
  const masterLinks = () => {
    if (links === undefined) throw offline();
    return links;
  };

  return {
    // Chosen once, as in connectStandalone; the name is what the log says. masterLinks() throws while no master is
    // known: boundedCalls takes that as the call's failure.
    set: config.minReplicas === 0
      ? (key, value) => bounded('SET', () => masterLinks().main.set(key, value))
      : (key, value) => bounded('SET+WAIT', async () => {
        const { durable } = masterLinks();
        // A pipeline is queued even while offline: refuse it here as single commands are.
        if (!durable.isReady) throw offline();
        await writeDurably(durable, key, value, config);
      }),
    get: (key) => bounded('GET', () => {
      const fromMaster = () => masterLinks().main.get(key);
      return reader === undefined ? fromMaster() : reader.get(key, fromMaster);
    }),
    probe: async () => void await bounded(probeCommand(config), () => {
      const { main, durable } = masterLinks();
      return probeWrite(config, main, durable);
    }),
    get master() {
      return master === undefined ? undefined : address(master);
    },
    // Reads need no replica: a read that fails on one is asked of the master.
    get isReady() {
      return links !== undefined && links.main.isReady && links.durable.isReady;
    },
    close: async (withinMs) => {
      closed = true;
      clearTimeout(retry);
      watch.close();
      const clients = links === undefined ? [] : [...new Set([links.main, links.durable])];
      await Promise.all([...clients.map((client) => closeClient(client, withinMs)), reader?.stop(withinMs)]);
    },
  };
}
