// A TLS connection before and after its requests: failed handshakes, connections per address, the lingering close.
import type { Server, Socket } from 'node:net';
import type { AppLog } from './app-log.ts';
import { throttle } from './throttle.ts';

// How long a closing connection may read and drop what the client still sends (nginx's lingering_close).
export const lingerMs = 2000;

// Rate-limited: scanners and plain-HTTP probes must not flood app.log (one line per 10 s, with a count).
export function handshakeReporter(appLog: AppLog) {
  const allow = throttle();
  return (err: Error, socket: Socket) => {
    const remote = socket.remoteAddress;
    // Node leaves the socket open after a handshake timeout: the listener must close it (fastify#3251).
    socket.destroy();
    const suppressed = allow();
    if (suppressed !== undefined) {
      appLog.warn('tls_handshake_failed', { remote, reason: err.message.slice(0, 200), suppressed });
    }
  };
}

// MESSAGES_MAX_CONNECTIONS_PER_IP, refused at accept before any TLS; off (0) by default, for load balancers.
export function limitPerAddress(server: Server, max: number): void {
  if (max === 0) return;
  const open = new Map<string, number>();
  server.on('connection', (socket: Socket) => {
    const address = socket.remoteAddress ?? '';
    const count = (open.get(address) ?? 0) + 1;
    if (count > max) {
      socket.destroy();
      return;
    }
    open.set(address, count);
    socket.once('close', () => {
      const left = open.get(address)! - 1;
      if (left === 0) open.delete(address);
      else open.set(address, left);
    });
  });
}

// FIN, then drop reads until close, lingerMs or `maxBytes`: destroy() would reset a sending client (RFC 9112 9.6).
export function lingeringClose(socket: Socket, maxBytes: number, last?: string): void {
  if (socket.destroyed) return;
  if (last === undefined) socket.end();
  else socket.end(last);
  const limit = socket.bytesRead + maxBytes;
  const timer = setTimeout(() => socket.destroy(), lingerMs);
  socket.on('data', () => {
    if (socket.bytesRead > limit) socket.destroy();
  });
  socket.once('close', () => clearTimeout(timer));
  socket.resume();
}
