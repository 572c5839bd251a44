// A standalone Redis server: one connection for reads and writes, and one of its own for durable writes.
import { createClient } from '@redis/client';
import type { AppLog } from './app-log.ts';
import { boundedCalls } from './redis-calls.ts';
import { callReporter, refusalLog, type CallObserver } from './redis-reports.ts';
import type { RedisConfig } from './config.ts';
import { offline, probeCommand, probeWrite, writeDurably, type RedisConnection } from './redis-connection.ts';
import { nodeOptions } from './redis-options.ts';
import { closeClient } from './redis-failures.ts';
import { stateReporter } from './redis-state.ts';

export function connectStandalone(config: RedisConfig, log: AppLog, observe: CallObserver): RedisConnection {
  const target = config.url === undefined ? `${config.host}:${config.port}` : new URL(config.url).host;
  const refused = refusalLog(log);
  const state = stateReporter(log, refused, target);
  const bounded = boundedCalls(config, callReporter(log, refused, target, config, observe));
  const open = () => {
    const options = nodeOptions(config);
    const client = createClient({
      ...options,
      ...(config.url === undefined ? {} : { url: config.url }),
      socket: { ...options.socket, ...(config.url === undefined ? { host: config.host, port: config.port } : {}) },
      // Off: boundedCalls() bounds call to reply; node-redis's timeout costs an AbortSignal.timeout per command.
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
  // WAIT holds its connection until replicas answer: durable writes (and the probe) get their own; reads never wait.
  const writer = config.minReplicas > 0 ? open() : client;
  return {
    // Chosen once: an async wrapper around a plain SET cost every POST a promise. The name is what the log says.
    set: config.minReplicas === 0
      ? (key, value) => bounded('SET', () => client.set(key, value))
      : (key, value) => bounded('SET+WAIT', async () => {
        // A pipeline is queued even while offline: refuse it here as single commands are.
        if (!writer.isReady) throw offline();
        await writeDurably(writer, key, value, config);
      }),
    get: (key) => bounded('GET', () => client.get(key)),
    probe: async () => void await bounded(probeCommand(config), () => probeWrite(config, client, writer)),
    get isReady() {
      return client.isReady && writer.isReady;
    },
    close: async (ms) => void await Promise.all([...new Set([client, writer])].map((each) => closeClient(each, ms))),
  };
}
