// Answers to what never reaches a handler: malformed or timed-out requests, CONNECT, failed TLS handshakes.
// Each is written on the socket with the JSON body and headers of app.ts's answers, and the connection closes.
import { STATUS_CODES, type IncomingMessage, type RequestListener, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { AppLog, LineSink } from './app-log.ts';
import { accessLine, refusedLine } from './access-log.ts';
import { securityHeaders } from './app.ts';
import { badRequest, HttpError, methodNotAllowed } from './errors.ts';
import { throttle } from './throttle.ts';

// Rate-limited: scanners and plain-HTTP probes must not flood app.log (one line per 10 s, with a count).
export function handshakeReporter(appLog: AppLog) {
  const allow = throttle();
  return (err: Error, socket: Socket) => {
    const remote = socket.remoteAddress;
    // Node leaves the socket open after a handshake timeout: the listener must close it (fastify#3251).
    socket.destroy();
    const suppressed = allow();
    if (suppressed !== undefined) appLog.warn('tls_handshake_failed', { remote, reason: err.message.slice(0, 200), suppressed });
  };
}

// The same JSON body and headers as app.ts's answers, and the connection closes after it.
function errorAnswer(err: HttpError): { body: string; headers: Record<string, string | number> } {
  const body = JSON.stringify({ err_msg: err.message });
  const headers = {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
    ...securityHeaders,
    ...err.headers,
    Connection: 'close',
  };
  return { body, headers };
}

// For a request no handler sees. Returns the bytes of the body, for the access log.
function answerRaw(socket: Socket, err: HttpError): number {
  const { body, headers } = errorAnswer(err);
  const head = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('');
  socket.end(`HTTP/1.1 ${err.status} ${STATUS_CODES[err.status]}\r\n${head}\r\n${body}`);
  return Buffer.byteLength(body);
}

// For a request whose handler is reading its body (a body cut by the request timeout, a malformed chunk): through
// its own response, which Node sends after the earlier ones on the connection. The handler then finds the headers
// sent when its read fails, and neither answers nor logs again. One that has already answered is only closed.
function answerThrough(socket: Socket, res: ServerResponse, err: HttpError, accessLog: LineSink): void {
  if (res.headersSent) {
    socket.destroy();
    return;
  }
  const { body, headers } = errorAnswer(err);
  res.writeHead(err.status, headers);
  res.end(body);
  accessLog(accessLine(res.req, err.status, Buffer.byteLength(body), undefined));
}

// The last response on each connection, the one before it, and whether the last one's handler has started. An
// answer written on the socket waits for the earlier responses to finish, so that pipelined requests are answered
// in the order they came (RFC 9112 section 9.3.2).
interface Turns { last: ServerResponse; previous: ServerResponse | undefined; lastState: 'waiting' | 'started' | 'refused' }
const turns = new WeakMap<Socket, Turns>();

export function tracked(handle: RequestListener): RequestListener {
  return (req, res) => {
    let seen = turns.get(req.socket);
    if (seen === undefined) {
      seen = { last: res, previous: undefined, lastState: 'waiting' };
      turns.set(req.socket, seen);
      // Asked while the connection is open, the address is kept by Node: the access-log line of a request whose
      // client left before the answer still has it.
      void req.socket.remoteAddress;
    } else {
      seen.previous = seen.last;
      seen.last = res;
      seen.lastState = 'waiting';
    }
    // llhttp refuses some requests (an invalid Transfer-Encoding) only after Node has emitted them, in the same
    // tick: one tick later such a request is known to be refused, and gets the 400 alone, not also a handler's answer.
    process.nextTick(start, handle, seen, req, res);
  };
}

function start(handle: RequestListener, seen: Turns, req: IncomingMessage, res: ServerResponse): void {
  if (seen.last === res) {
    if (seen.lastState === 'refused') return;
    seen.lastState = 'started';
  }
  handle(req, res);
}

// What the access log says of an answer written on the socket, given its status and body bytes.
type Describe = (status: number, bytes: number) => string;

function answerInTurn(socket: Socket, err: HttpError, accessLog: LineSink, describe: Describe): void {
  const seen = turns.get(socket);
  let earlier = seen?.last;
  // A request still arriving is the one the error is about (refused by the parser, or its request timeout): it
  // gets this answer, after the request before it. A refused one never reaches a handler.
  if (seen !== undefined && earlier !== undefined && !earlier.req.complete) {
    if (seen.lastState === 'started') {
      answerThrough(socket, earlier, err, accessLog);
      return;
    }
    const req = earlier.req;
    seen.lastState = 'refused';
    describe = (status, bytes) => accessLine(req, status, bytes, undefined);
    earlier = seen.previous;
  }
  const answer = () => accessLog(describe(err.status, answerRaw(socket, err)));
  if (earlier === undefined || earlier.closed) answer();
  else earlier.once('close', () => (socket.writable ? answer() : socket.destroy()));
}

const clientErrors: Record<string, HttpError> = {
  HPE_HEADER_OVERFLOW: new HttpError(431, 'Request header fields too large'),
  ERR_HTTP_REQUEST_TIMEOUT: new HttpError(408, 'Request timed out'),
};

// The first line of what the parser was reading, when that is the start of the request: the bytes are all the
// connection has carried (a request sent in pieces fails on a later one) and held no request before this one.
// Otherwise the line is left unknown rather than guessed.
function requestLineOf(err: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket: Socket): string | undefined {
  if (err.rawPacket === undefined || socket.bytesRead !== err.rawPacket.length || turns.has(socket)) return undefined;
  const text = err.rawPacket.subarray(0, 2048).toString('latin1');
  const end = text.indexOf('\n');
  return (end === -1 ? text : text.slice(0, end)).replace(/\r$/, '');
}

// Answers to what never reaches a handler, each with its access-log line.
export function rawAnswers(accessLog: LineSink) {
  return {
    // Malformed HTTP: answer it in JSON like every other error, then close.
    clientError(err: NodeJS.ErrnoException, socket: Socket): void {
      // A client that reset or closed in the middle of a request reads no answer; one written anyway can hang the
      // socket until the headers timeout.
      if (err.code === 'ECONNRESET' || err.code === 'HPE_INVALID_EOF_STATE' || !socket.writable) {
        socket.destroy();
        return;
      }
      const remote = socket.remoteAddress;
      const requestLine = requestLineOf(err, socket);
      answerInTurn(socket, clientErrors[err.code ?? ''] ?? badRequest('Bad request'), accessLog,
        (status, bytes) => refusedLine(remote, requestLine, status, bytes));
    },
    // Node drops a CONNECT without a word unless someone listens; this service is no proxy (RFC 9110 section 9.3.6).
    connect(req: IncomingMessage, socket: Socket): void {
      answerInTurn(socket, methodNotAllowed('CONNECT', 'GET, HEAD, POST'), accessLog, (status, bytes) => accessLine(req, status, bytes, undefined));
    },
  };
}
