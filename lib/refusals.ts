// The parser's refusals (malformed HTTP, timeouts) and CONNECT: answered in JSON in their turn, then the close.
import { STATUS_CODES } from 'node:http';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { LineSink } from './app-log.ts';
import { accessLine, refusedLine } from './access-log.ts';
import type { Connection, Connections } from './connections.ts';
import { errorAnswer, errors, type HttpError } from './errors.ts';

// Counts an answer for the metrics: route, method, status, milliseconds since its request arrived.
type Answered = (route: string, method: string, status: number, elapsedMs: number) => void;

// What the access log says of an answer written on the socket, given its status and body bytes.
type Describe = (status: number, bytes: number) => string;

// Node's codes for the parser's refusals that have an answer of their own; any other is a 400.
const clientErrors: Record<string, () => HttpError> = {
  HPE_HEADER_OVERFLOW: errors.headersTooLarge,
  ERR_HTTP_REQUEST_TIMEOUT: errors.requestTimeout,
};

// An error answer as bytes for the socket, for a request no handler sees; the connection closes after it.
function rawAnswer(err: HttpError): { bytes: string; bodyBytes: number } {
  const { headers, body } = errorAnswer(err.status, err.message, err.headers);
  headers.Date = new Date().toUTCString(); // RFC 9110 section 6.6.1, as Node's own answers carry it
  headers.Connection = 'close';
  const head = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('');
  const bytes = `HTTP/1.1 ${err.status} ${STATUS_CODES[err.status]}\r\n${head}\r\n${body}`;
  return { bytes, bodyBytes: Buffer.byteLength(body) };
}

// The refused request's first line, only if the packet is all the connection carried; else unknown, not guessed.
function requestLineOf(err: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket: Socket, known: boolean) {
  if (err.rawPacket === undefined || socket.bytesRead !== err.rawPacket.length || known) return undefined;
  const text = err.rawPacket.subarray(0, 2048).toString('latin1');
  const end = text.indexOf('\n');
  return (end === -1 ? text : text.slice(0, end)).replace(/\r$/, '');
}

export function createRefusals(connections: Connections, accessLog: LineSink, answered: Answered) {
  // Answers in order: after the turns ahead of it, then the connection closes.
  function answerLast(connection: Connection | undefined, socket: Socket, err: HttpError, describe: Describe): void {
    const answer = () => {
      // Ended meanwhile (its client said close, clientDone, or reset): nothing can be sent, so nothing is logged.
      if (!socket.writable) return;
      const { bytes, bodyBytes } = rawAnswer(err);
      connections.close(socket, connection, bytes);
      accessLog(describe(err.status, bodyBytes));
      answered('other', 'other', err.status, 0);
    };
    if (connection === undefined || connection.turns.every((turn) => turn.state === 'refused')) answer();
    else connection.last = answer;
  }

  return {
    // Malformed HTTP and timeouts: answered in JSON like every other error, then the connection closes.
    clientError(err: NodeJS.ErrnoException, socket: Socket): void {
      // A client that reset or closed mid-request reads no answer: one written anyway can hang till headersTimeout.
      if (err.code === 'ECONNRESET' || err.code === 'HPE_INVALID_EOF_STATE' || !socket.writable) {
        socket.destroy();
        return;
      }
      const connection = connections.of(socket);
      const code = err.code ?? '';
      const error = Object.hasOwn(clientErrors, code) ? clientErrors[code]!() : errors.badRequest('Bad request');
      const last = connection?.turns.at(-1);
      // A request still arriving is the one the error is about (refused by the parser, or its request timeout).
      if (last !== undefined && !last.req.complete) {
        // A running request is answered by its handler's exchange (app.ts), or cut if its answer has begun.
        if (last.state === 'started') {
          (last.interrupt ?? (() => socket.destroy()))(error);
          return;
        }
        last.state = 'refused';
        answerLast(connection, socket, error, (status, bytes) => accessLine(last.req, status, bytes, undefined));
        return;
      }
      const remote = socket.remoteAddress;
      const requestLine = requestLineOf(err, socket, connection !== undefined);
      answerLast(connection, socket, error, (status, bytes) => refusedLine(remote, requestLine, status, bytes));
    },

    // Node drops a CONNECT without a word unless someone listens; this service is no proxy (RFC 9110 section 9.3.6).
    connect(req: IncomingMessage, socket: Socket): void {
      const error = errors.methodNotAllowed('CONNECT', 'GET, HEAD, POST');
      answerLast(connections.of(socket), socket, error, (status, bytes) => accessLine(req, status, bytes, undefined));
    },
  };
}
