// A connection's requests run one at a time, in order; refusals, timeouts, CONNECT answer in turn and close it.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { LineSink } from './app-log.ts';
import { accessLine, refusedLine } from './access-log.ts';
import { errorAnswer, errors, type HttpError, rawAnswer } from './errors.ts';
import { lingeringClose } from './sockets.ts';

// A request the parser has emitted. A refused one (llhttp refuses some only after emitting them) never runs.
interface Turn { req: IncomingMessage; res: ServerResponse; received: number; state: 'waiting' | 'started' | 'refused' }

// Runs a request; `received` (performance.now()) is when it arrived.
export type Handle = (req: IncomingMessage, res: ServerResponse, received: number) => void;

interface Connection {
  socket: Socket;
  turns: Turn[]; // not yet answered, in arrival order; only turns[0] ever runs
  closing: boolean;
  last: (() => void) | undefined; // a raw answer that ends the connection, once the turns ahead of it are answered
}

// Counts an answer for the metrics: route, method, status, milliseconds since its request arrived.
type Answered = (route: string, method: string, status: number, elapsedMs: number) => void;

// What the access log says of an answer written on the socket, given its status and body bytes.
type Describe = (status: number, bytes: number) => string;

// Node's codes for the parser's refusals that have an answer of their own; any other is a 400.
const clientErrors: Record<string, () => HttpError> = {
  HPE_HEADER_OVERFLOW: errors.headersTooLarge,
  ERR_HTTP_REQUEST_TIMEOUT: errors.requestTimeout,
};

// `lingerBytes` caps what a closing connection reads and drops (sockets.ts).
export function createConnections(handle: Handle, accessLog: LineSink, lingerBytes: number, answered: Answered) {
  const connections = new WeakMap<Socket, Connection>();

  function close(socket: Socket, connection: Connection | undefined, last?: string): void {
    if (connection !== undefined) connection.closing = true;
    lingeringClose(socket, lingerBytes, last);
  }

  function connectionOf(socket: Socket): Connection {
    let connection = connections.get(socket);
    if (connection === undefined) {
      const created: Connection = { socket, turns: [], closing: false, last: undefined };
      connection = created;
      connections.set(socket, created);
      // Node ends a connection after its last answer with destroySoon() (end, then destroy at once): linger instead.
      socket.destroySoon = () => close(socket, created);
      // Read while open, the address is kept by Node: the access log still has it for a client that left early.
      void socket.remoteAddress;
    }
    return connection;
  }

  // The next turn runs once the one before it is answered; the first waits one tick, for a refusal.
  function advance(connection: Connection): void {
    while (connection.turns[0]?.state === 'refused') connection.turns.shift();
    const next = connection.turns[0];
    if (next === undefined) {
      connection.last?.();
      connection.last = undefined;
      if (!connection.closing) connection.socket.resume();
      return;
    }
    if (next.state !== 'waiting') return;
    next.state = 'started';
    // 'close' follows 'finish' (the answer handed to the kernel) and an aborted answer alike.
    next.res.on('close', () => {
      connection.turns.shift();
      advance(connection);
    });
    handle(next.req, next.res, next.received);
  }

  // Answers in order: after the turns ahead of it, then the connection closes.
  function answerLast(connection: Connection | undefined, socket: Socket, err: HttpError, describe: Describe): void {
    const answer = () => {
      const { bytes, bodyBytes } = rawAnswer(err);
      close(socket, connection, bytes);
      accessLog(describe(err.status, bodyBytes));
      answered('other', 'other', err.status, 0);
    };
    if (connection === undefined || connection.turns.every((turn) => turn.state === 'refused')) answer();
    else connection.last = answer;
  }

  // A running request whose body is cut (timeout, bad chunk) answers through its response, or closes if answered.
  function answerThrough(socket: Socket, turn: Turn, err: HttpError): void {
    if (turn.res.headersSent) {
      socket.destroy();
      return;
    }
    const { headers, body } = errorAnswer(err);
    headers.Connection = 'close';
    turn.res.writeHead(err.status, headers);
    turn.res.end(body);
    accessLog(accessLine(turn.req, err.status, Buffer.byteLength(body), undefined));
    answered('other', turn.req.method ?? '', err.status, performance.now() - turn.received);
  }

  // The refused request's first line, only if the packet is all the connection carried; else unknown, not guessed.
  function requestLineOf(err: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket: Socket): string | undefined {
    if (err.rawPacket === undefined || socket.bytesRead !== err.rawPacket.length || connections.has(socket)) {
      return undefined;
    }
    const text = err.rawPacket.subarray(0, 2048).toString('latin1');
    const end = text.indexOf('\n');
    return (end === -1 ? text : text.slice(0, end)).replace(/\r$/, '');
  }

  return {
    request(req: IncomingMessage, res: ServerResponse): void {
      const connection = connectionOf(req.socket);
      // A request pipelined behind an answer that ends the connection is never answered: the client sent it unasked.
      if (connection.closing) {
        req.socket.destroy();
        return;
      }
      connection.turns.push({ req, res, received: performance.now(), state: 'waiting' });
      if (connection.turns.length === 1) process.nextTick(advance, connection);
      // What the parser read ahead waits unread: TCP pushes back on a client pipelining faster than answered.
      else req.socket.pause();
    },

    // Malformed HTTP and timeouts: answered in JSON like every other error, then the connection closes.
    clientError(err: NodeJS.ErrnoException, socket: Socket): void {
      // A client that reset or closed mid-request reads no answer: one written anyway can hang till headersTimeout.
      if (err.code === 'ECONNRESET' || err.code === 'HPE_INVALID_EOF_STATE' || !socket.writable) {
        socket.destroy();
        return;
      }
      const connection = connections.get(socket);
      const code = err.code ?? '';
      const error = Object.hasOwn(clientErrors, code) ? clientErrors[code]!() : errors.badRequest('Bad request');
      const last = connection?.turns.at(-1);
      // A request still arriving is the one the error is about (refused by the parser, or its request timeout).
      if (last !== undefined && !last.req.complete) {
        if (last.state === 'started') {
          answerThrough(socket, last, error);
          return;
        }
        last.state = 'refused';
        answerLast(connection, socket, error, (status, bytes) => accessLine(last.req, status, bytes, undefined));
        return;
      }
      const remote = socket.remoteAddress;
      const requestLine = requestLineOf(err, socket);
      answerLast(connection, socket, error, (status, bytes) => refusedLine(remote, requestLine, status, bytes));
    },

    // Node drops a CONNECT without a word unless someone listens; this service is no proxy (RFC 9110 section 9.3.6).
    connect(req: IncomingMessage, socket: Socket): void {
      const error = errors.methodNotAllowed('CONNECT', 'GET, HEAD, POST');
      answerLast(connections.get(socket), socket, error, (status, bytes) => accessLine(req, status, bytes, undefined));
    },
  };
}
