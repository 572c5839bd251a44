// A connection's requests run one at a time, in order; an answer that ends the connection waits its turn.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { HttpError } from './errors.ts';
import { watchIdle, type Idle } from './idle.ts';
import { clientDone, lingeringClose } from './sockets.ts';

// A request the parser has emitted. A refused one (llhttp refuses some only after emitting them) never runs.
interface Turn { req: IncomingMessage; res: ServerResponse; received: number; state: State; interrupt?: Interrupt }
type State = 'waiting' | 'started' | 'refused';

// Runs a request (`received`: performance.now() at its arrival); what it returns answers `err` in the handler's place.
export type Handle = (req: IncomingMessage, res: ServerResponse, received: number) => Interrupt;
type Interrupt = (err: HttpError) => void;

export interface Connection extends Idle { // its socket, and the time it has been idle
  turns: Turn[]; // not yet answered, in arrival order; only turns[0] ever runs
  closing: boolean;
  last?: () => void; // a raw answer that ends the connection, once the turns ahead of it are answered
}

// Requests parsed ahead of their answers: Node's parser reads on through a pipeline, so past these the client is cut.
const maxPipelined = 8;

// `lingerBytes` caps what a closing connection reads and drops (sockets.ts); `idleMs` bounds an idle one (idle.ts).
export function createConnections(handle: Handle, lingerBytes: number, idleMs: { keepAlive: number; headers: number }) {
  const connections = new WeakMap<Socket, Connection>();
  const idle = watchIdle<Connection>(idleMs.keepAlive, idleMs.headers, (idler) => close(idler.socket, idler));

  function close(socket: Socket, connection: Connection | undefined, last?: string, done = false): void {
    if (connection !== undefined) connection.closing = true;
    lingeringClose(socket, lingerBytes, last, done);
  }

  function connectionOf(socket: Socket): Connection {
    const known = connections.get(socket);
    if (known !== undefined) return known;
    const connection: Connection = { socket, turns: [], closing: false, slot: -1, idleSince: 0, readThen: 0 };
    connections.set(socket, connection);
    // Node ends a connection after its last answer with destroySoon() (end, then destroy): linger, unless the client
    // is done. Its turn is still turns[0]: the answer's 'close', which shifts it, comes on the next tick.
    socket.destroySoon = () => close(socket, connection, undefined, clientDone(connection.turns));
    // Read while open, the address is kept by Node: the access log still has it for a client that left early.
    void socket.remoteAddress;
    return connection;
  }

  // The next turn runs once the one before it is answered; the first waits one tick, for a refusal.
  function advance(connection: Connection): void {
    while (connection.turns[0]?.state === 'refused') connection.turns.shift();
    const next = connection.turns[0];
    if (next === undefined) {
      connection.last?.();
      connection.last = undefined;
      if (connection.closing) return;
      connection.socket.resume();
      idle.add(connection);
      return;
    }
    if (next.state !== 'waiting') return;
    next.state = 'started';
    // 'close' follows 'finish' (the answer handed to the kernel) and an aborted answer alike.
    next.res.on('close', () => {
      connection.turns.shift();
      advance(connection);
    });
    next.interrupt = handle(next.req, next.res, next.received);
  }

  return {
    request(req: IncomingMessage, res: ServerResponse): void {
      const connection = connectionOf(req.socket);
      idle.delete(connection);
      // A request pipelined behind an answer that ends the connection is never answered: the client sent it unasked.
      if (connection.closing || connection.turns.length === maxPipelined) {
        req.socket.destroy();
        return;
      }
      connection.turns.push({ req, res, received: performance.now(), state: 'waiting' });
      if (connection.turns.length === 1) process.nextTick(advance, connection);
      // What the parser has not read yet waits, where Node lets it: TCP pushes back on a client pipelining.
      else req.socket.pause();
    },
    // The connection of a socket that has had a request, for the refusals (refusals.ts).
    of: (socket: Socket) => connections.get(socket),
    // FIN after `last` (a raw answer), then the lingering close; the connection takes no new request.
    close,
  };
}

export type Connections = ReturnType<typeof createConnections>;
