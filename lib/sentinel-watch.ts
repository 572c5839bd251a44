// The master's address from the sentinels: GET-MASTER-ADDR-BY-NAME, then each +switch-master they publish, as in
// https://redis.io/docs/latest/develop/reference/sentinel-clients/ (node-redis's createSentinel follows 2 s late).
import type { HostPort, RedisConfig } from './config.ts';
import { createClient } from '@redis/client';
import type { Bounded } from './redis-calls.ts';
import { address, reconnectDelay } from './redis-failures.ts';
import type { StateReporter } from './redis-state.ts';
import { offline } from './redis-connection.ts';
import { tlsOptions } from './redis-options.ts';

export interface SentinelWatch {
  // Asks the sentinels in their configured order; the first that knows the master answers.
  locate(): Promise<HostPort>;
  close(): void;
}

export interface SentinelEvents {
  // A sentinel is reachable again: a master not yet located can be asked for now.
  reachable(): void;
  // A sentinel published +switch-master for this master.
  switched(from: string, to: HostPort): void;
}

export function watchSentinels(
  config: RedisConfig,
  bounded: Bounded,
  state: StateReporter,
  events: SentinelEvents,
): SentinelWatch {
  // "<master name> <old ip> <old port> <new ip> <new port>"
  const onSwitch = (message: string) => {
    const [name, fromHost, fromPort, toHost, toPort] = message.split(' ');
    if (name === config.sentinelName) {
      events.switched(`${fromHost}:${fromPort}`, { host: toHost!, port: Number(toPort) });
    }
  };
  // One subscribed connection per sentinel: a down or slow one costs nothing; RESP3 lets it answer SENTINEL too.
  const clients = config.sentinels.map((node) => {
    const client = createClient({
      ...(config.sentinelPassword === undefined ? {} : { password: config.sentinelPassword }),
      disableOfflineQueue: true,
      socket: {
        ...tlsOptions(config),
        host: node.host,
        port: node.port,
        connectTimeout: config.timeoutMs,
        reconnectStrategy: reconnectDelay,
      },
    });
    client.on('error', (err: unknown) => {
      if (!clients.some((each) => each.isReady)) state.down(err);
    });
    client.on('ready', () => {
      state.up();
      // The client subscribes again by itself after a reconnect; this covers a first SUBSCRIBE that failed.
      client.subscribe('+switch-master', onSwitch).catch(() => {});
      events.reachable();
    });
    client.connect().catch(() => {
      // Errors are reported through the 'error' event; connect() keeps retrying by reconnectStrategy.
    });
    return client;
  });

  return {
    async locate() {
      let failure: unknown = offline();
      for (const [i, client] of clients.entries()) {
        if (!client.isReady) continue;
        try {
          const reply = await bounded('SENTINEL', () => client.sendCommand([
            'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', config.sentinelName,
          ]));
          if (Array.isArray(reply) && reply.length === 2) return { host: String(reply[0]), port: Number(reply[1]) };
          const sentinel = address(config.sentinels[i]!);
          failure = new Error(`No such master: sentinel ${sentinel} does not monitor "${config.sentinelName}"`);
        } catch (err) {
          failure = err;
        }
      }
      throw failure;
    },
    close() {
      for (const client of clients) {
        if (client.isOpen) client.destroy();
      }
    },
  };
}
