// The client options of every Redis node, in every mode: credentials, TLS, fail-fast, bounds and liveness.
import fs from 'node:fs';
import type { RedisConfig } from './config.ts';
import { reconnectDelay } from './redis-failures.ts';

// Credentials, TLS, fail-fast and backoff: the same for a standalone server and every cluster or replication node.
export function nodeOptions(config: RedisConfig) {
  return {
    ...(config.username === undefined ? {} : { username: config.username }),
    ...(config.password === undefined ? {} : { password: config.password }),
    // Fail fast while disconnected instead of queueing requests that would hang until Redis returns.
    disableOfflineQueue: true,
    // Bounds what a stalled Redis leaves queued after boundedCalls() gave up, each with its value: then fail at once.
    commandsQueueMaxLength: 2 * config.maxInflight,
    // A link that moves no byte for `socketTimeout` is cut and opened again: a Redis gone silent (a dead peer, a frozen
    // process, a handshake never answered) sends no reset. A PING each second keeps a healthy idle link moving.
    pingInterval: 1000,
    // Past the mark node-redis writes one command per scheduled write: above the values in flight
    // (MESSAGES_MAX_BUFFERED_BYTES) and 48 MiB more, all go out at once, and a busy process is no timeout (64 MiB).
    socket: { ...tlsOptions(config), connectTimeout: config.timeoutMs, reconnectStrategy: reconnectDelay,
      highWaterMark: config.maxBufferedBytes + 48 * 2 ** 20, socketTimeout: Math.max(5000, 3 * config.timeoutMs) },
  };
}

export function tlsOptions(config: RedisConfig) {
  if (!config.tls) return {};
  return { tls: true as const, ...(config.caFile === undefined ? {} : { ca: fs.readFileSync(config.caFile) }) };
}
