// A TLS connection before and after its requests: failed handshakes, connections per address, the lingering close.
import type { IncomingMessage } from 'node:http';
import type { Server, Socket } from 'node:net';
import type { AppLog } from './app-log.ts';
import { throttle } from './throttle.ts';

// How long a closing connection may read and drop what the client still sends (nginx's lingering_close).
export const lingerMs = 2000;
// And how much, in bodies of MESSAGES_MAX_BODY_BYTES: a client that sends a body many times too large before it reads
// still gets its 413 rather than a reset; dropping costs about 3 ms of CPU per MB here.
export const lingerBodies = 16;

// Rate-limited: scanners and plain-HTTP probes must not flood app.log (one line per 10 s, with a count).
export function handshakeReporter(appLog: AppLog, failed: () => void) {
  const allow = throttle();
  return (err: Error, socket: Socket) => {
    const remote = socket.remoteAddress;
    // Node leaves the socket open after a handshake timeout: the listener must close it (fastify#3251).
    socket.destroy();
    failed();
    const suppressed = allow();
    if (suppressed !== undefined) {
      appLog.warn('tls_handshake_failed', { remote, reason: err.message.slice(0, 200), suppressed });
    }
  };
}

// Counts open connections; refuses at accept, before any TLS, an address past MESSAGES_MAX_CONNECTIONS_PER_IP (off,
// 0, by default: behind a load balancer every client has its address). Returns the count of open ones.
export function watchConnections(server: Server, maxPerAddress: number, refused: (limit: Limit) => void): () => number {
  let open = 0;
  const perAddress = new Map<string, number>();
  // Node drops a connection past server.maxConnections itself; 'drop' tells of it.
  server.on('drop', () => refused('max_connections'));
  server.on('connection', (socket: Socket) => {
    const address = socket.remoteAddress ?? '';
    const count = (perAddress.get(address) ?? 0) + 1;
    if (maxPerAddress > 0 && count > maxPerAddress) {
      refused('per_ip');
      socket.destroy();
      return;
    }
    perAddress.set(address, count);
    open += 1;
    socket.once('close', () => {
      open -= 1;
      const left = perAddress.get(address)! - 1;
      if (left === 0) perAddress.delete(address);
      else perAddress.set(address, left);
    });
  });
  return () => open;
}

type Limit = 'max_connections' | 'per_ip';

// The client said "close" (or spoke HTTP/1.0 without keep-alive) after a whole request and sent none behind it: it
// sends nothing more (RFC 9112 section 9.6), so a close resets nothing: Node's own way, without the linger's wake-up.
export function clientDone(turns: ReadonlyArray<{ req: IncomingMessage }>): boolean {
  const req = turns[0]?.req;
  if (req === undefined || turns.length > 1 || !req.complete) return false;
  const options = (req.headers.connection ?? '').toLowerCase().split(',').map((option) => option.trim());
  return options.includes('close') || (req.httpVersion === '1.0' && !options.includes('keep-alive'));
}

// FIN, then drop reads until close, lingerMs or `maxBytes`: destroy() would reset a sending client (RFC 9112 9.6).
// A client that is done (clientDone) is closed once the answer is written, as Node does.
export function lingeringClose(socket: Socket, maxBytes: number, last?: string, done = false): void {
  if (socket.destroyed) return;
  if (last === undefined) socket.end();
  else socket.end(last);
  if (done) {
    if (socket.writableFinished) socket.destroy();
    else socket.once('finish', () => socket.destroy());
    return;
  }
  const limit = socket.bytesRead + maxBytes;
  const timer = setTimeout(() => socket.destroy(), lingerMs);
  socket.once('close', () => clearTimeout(timer));
  // Node's HTTP parser, which reads the socket itself, stops it when a body is left unread; a 'data' listener takes the
  // socket from the parser but restarts nothing: so pause and resume first, and take it on 'resume', once reading.
  socket.pause();
  socket.once('resume', () => {
    // Dropped unparsed: the parser of a refused request would refuse every chunk again, and that refusal reset.
    socket.removeAllListeners('data');
    socket.on('data', () => {
      if (socket.bytesRead > limit) socket.destroy();
    });
  });
  socket.resume();
}
