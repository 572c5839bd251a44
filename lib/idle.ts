// Connections that hold a slot without progress: idle past the keep-alive timeout, or with an answer that stopped
// leaving; cut whatever the client sends meanwhile.
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { createSweep, type Swept } from './sweep.ts';

// performance.now() at the connection's last answer, and its socket's bytesRead then.
export interface Idle extends Swept { socket: Socket; idleSince: number; readThen: number }

// A keep-alive connection idle past MESSAGES_KEEPALIVE_TIMEOUT_MS is closed; if it sent bytes meanwhile (a request
// begun late, or blank lines), once MESSAGES_HEADERS_TIMEOUT_MS more has passed with no request. Node's own timer
// restarts at any byte, and the blank lines llhttp skips before a request start no request to time.
export function watchIdle<T extends Idle>(keepAliveMs: number, headersMs: number, close: (item: T) => void) {
  const idle = createSweep<T>(Math.min(1000, keepAliveMs), (item, now) => {
    const quiet = item.socket.bytesRead === item.readThen;
    const over = now - item.idleSince >= keepAliveMs + (quiet ? 0 : headersMs);
    if (!over && !item.socket.destroyed) return;
    idle.delete(item); // a closed connection is dropped at the next look, not held until its time is over
    if (!item.socket.destroyed) close(item);
  });
  return {
    add(item: T): void {
      item.idleSince = performance.now();
      item.readThen = item.socket.bytesRead;
      idle.add(item);
    },
    delete: (item: T): void => idle.delete(item),
  };
}

interface Sending extends Swept { socket: Socket; unsent: number; movedAt: number }

// An answer whose write has not completed for MESSAGES_SEND_TIMEOUT_MS (a client that does not read, or too slowly:
// writableLength shrinks only as whole writes complete) is abandoned; Node's own timer restarts at any client byte.
export function watchSends(sendTimeoutMs: number, abandoned: () => void): (socket: Socket) => void {
  const sending = createSweep<Sending>(Math.min(1000, sendTimeoutMs), (item, now) => {
    if (item.socket.destroyed) return sending.delete(item);
    const unsent = item.socket.writableLength;
    // Moving: nothing waits to leave, or less than at the last look.
    if (unsent === 0 || unsent < item.unsent) item.movedAt = now;
    item.unsent = unsent;
    if (now - item.movedAt < sendTimeoutMs) return;
    abandoned();
    item.socket.destroy();
  });
  return (socket) => sending.add({ socket, slot: -1, unsent: 0, movedAt: performance.now() });
}
