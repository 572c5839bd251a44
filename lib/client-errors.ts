// Answers to what never reaches a handler: malformed or timed-out requests, CONNECT, failed TLS handshakes.
// Each is written on the socket with the JSON body and headers of app.ts's answers, and the connection closes.
import { STATUS_CODES, type IncomingMessage, type RequestListener, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { AppLog } from './app-log.ts';
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

// For a request no handler sees: the same JSON body and headers as app.ts's answers, then close.
function answerRaw(socket: Socket, err: HttpError): void {
  const body = JSON.stringify({ err_msg: err.message });
  const headers = {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
    ...securityHeaders,
    ...err.headers,
    Connection: 'close',
  };
  const head = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('');
  socket.end(`HTTP/1.1 ${err.status} ${STATUS_CODES[err.status]}\r\n${head}\r\n${body}`);
}

// The last response on each connection, and the one before it. An answer written on the socket waits for them to
// finish, so that pipelined requests are answered in the order they came (RFC 9112 section 9.3.2).
interface Turns { last: ServerResponse; previous: ServerResponse | undefined }
const turns = new WeakMap<Socket, Turns>();
const refused = new WeakSet<IncomingMessage>();

export function tracked(handle: RequestListener): RequestListener {
  return (req, res) => {
    const seen = turns.get(req.socket);
    if (seen === undefined) turns.set(req.socket, { last: res, previous: undefined });
    else {
      seen.previous = seen.last;
      seen.last = res;
    }
    // llhttp refuses some requests (an invalid Transfer-Encoding) only after Node has emitted them, in the same
    // tick: one tick later such a request is known to be refused, and gets the 400 alone, not also a handler's answer.
    process.nextTick(handleUnlessRefused, handle, req, res);
  };
}

function handleUnlessRefused(handle: RequestListener, req: IncomingMessage, res: ServerResponse): void {
  if (!refused.has(req)) handle(req, res);
}

function answerInTurn(socket: Socket, err: HttpError): void {
  const seen = turns.get(socket);
  let earlier = seen?.last;
  // A request still arriving is the one the error is about (refused by the parser, or its request timeout): it
  // gets this answer, after the request before it.
  if (earlier !== undefined && !earlier.req.complete) {
    refused.add(earlier.req);
    earlier = seen!.previous;
  }
  if (earlier === undefined || earlier.closed) answerRaw(socket, err);
  else earlier.once('close', () => (socket.writable ? answerRaw(socket, err) : socket.destroy()));
}

const clientErrors: Record<string, HttpError> = {
  HPE_HEADER_OVERFLOW: new HttpError(431, 'Request header fields too large'),
  ERR_HTTP_REQUEST_TIMEOUT: new HttpError(408, 'Request timed out'),
};

// Malformed HTTP never reaches a handler: answer it in JSON like every other error, then close.
export function answerClientError(err: NodeJS.ErrnoException, socket: Socket): void {
  // A client that reset or closed in the middle of a request reads no answer; one written anyway can hang the
  // socket until the headers timeout.
  if (err.code === 'ECONNRESET' || err.code === 'HPE_INVALID_EOF_STATE' || !socket.writable) {
    socket.destroy();
    return;
  }
  answerInTurn(socket, clientErrors[err.code ?? ''] ?? badRequest('Bad request'));
}

// Node drops a CONNECT without a word unless someone listens; this service is no proxy (RFC 9110 section 9.3.6).
export function answerConnect(_req: IncomingMessage, socket: Socket): void {
  answerInTurn(socket, methodNotAllowed('CONNECT', 'GET, HEAD, POST'));
}
