// How a Redis link is retried and closed in every mode: reconnect backoff, retried first connect, bounded close.
import type { HostPort } from './config.ts';
import type { StateReporter } from './redis-state.ts';

// Exponential backoff with jitter, capped at 2 s so recovery is seen within a few seconds of Redis returning.
export function reconnectDelay(retries: number): number {
  return Math.min(50 * 2 ** retries, 2000) + Math.floor(Math.random() * 100);
}

export const address = (node: HostPort) => `${node.host}:${node.port}`;

// The clients' connect() gives up when no seed answers; keep trying with the backoff single connections use.
export function keepConnecting(connect: () => Promise<unknown>, state: StateReporter): { stop(): void } {
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
export async function closeWithin(ms: number, close: () => Promise<unknown>, destroy: () => unknown): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const closed = await Promise.race([
    close().then(() => true, () => false),
    new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), ms); }),
  ]);
  clearTimeout(timer);
  if (!closed) await destroy();
}

// A client still reconnecting has no replies to wait for; a stalled server never sends the ones it owes.
export async function closeClient(client: Closable & { isReady: boolean; isOpen: boolean }, withinMs: number) {
  if (client.isReady) await closeWithin(withinMs, () => client.close(), () => client.destroy());
  else if (client.isOpen) client.destroy();
}

interface Closable { close(): Promise<unknown>; destroy(): unknown }
