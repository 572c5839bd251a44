// The API: routes, handlers and the one function that writes every answer and its access-log line.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { AppLog, LineSink } from './app-log.ts';
import { accessLine } from './access-log.ts';
import { readMessage, type BodyLimits } from './body.ts';
import { answerHeaders, errorAnswer, errors, HttpError, messageNotFound, notModifiedHeaders } from './errors.ts';
import type { Answer, Headers } from './errors.ts';
import { authorityOf, createRouter } from './router.ts';
import type { ServiceMetrics } from './service-metrics.ts';
import { canonicalDigest, type Store } from './store.ts';

export interface AppOptions {
  store: Store;
  appLog: AppLog;
  accessLog: LineSink;
  body: BodyLimits;
  metrics: Pick<ServiceMetrics, 'answered' | 'bodyRejected'>;
  ready: () => Promise<Answer>; // the answer of /readyz (readiness.ts)
}

// One request and its answer: when it arrived (performance.now()) and its route's name, for the logs and metrics.
interface Exchange { req: IncomingMessage; res: ServerResponse; received: number; route: string }
type Handler = (exchange: Exchange, param: string) => Promise<void> | void;

// A stored message never changes under its digest, so clients may cache it for good (RFC 8246).
const immutable = 'public, max-age=31536000, immutable';
const healthy = '{"status":"ok"}';
const healthyHeaders = () => answerHeaders(healthy.length, 'no-store');

// Printable ASCII but what ends a URI's host (/?#@\) or joins two Host lines (,); zones, proxies' "a|b" pass.
const hostField = /^[^\0- \x7f-\xff,/?#@\\]*$/;

export function createApp({ store, appLog, accessLog, body: bodyLimits, metrics, ready }: AppOptions) {
  let draining = false;

  // `headers` are the answer's own, answerHeaders() for a body: send() adds only Connection when it closes.
  function send({ req, res, received, route }: Exchange, status: number, body: string, headers: Headers) {
    // An answer before the whole body arrived (an error) ends the connection; the rest is dropped while it closes.
    if (draining || !req.complete) headers.Connection = 'close';
    res.writeHead(status, headers);
    res.end(status === 304 ? undefined : body);
    const elapsedMs = performance.now() - received;
    const bytes = req.method === 'HEAD' || status === 304 ? 0 : (headers['Content-Length'] as number);
    accessLog(accessLine(req, status, bytes, elapsedMs));
    metrics.answered(route, req.method ?? '', status, elapsedMs);
  }

  function sendError(exchange: Exchange, err: unknown) {
    if (exchange.res.headersSent) return;
    const known = err instanceof HttpError ? err : errors.internal();
    const { method, url } = exchange.req;
    if (known !== err) appLog.error('request_failed', err, { method, url: url?.slice(0, 256) });
    reply(exchange, errorAnswer(known.status, known.message, known.headers));
  }

  const reply = (exchange: Exchange, { status, body, headers }: Answer) => send(exchange, status, body, headers);

  async function postMessage(exchange: Exchange) {
    const { req, res } = exchange;
    const { message, release } = await readMessage(req, res, bodyLimits).catch((err: unknown) => {
      // Already answered by a refusal mid-body (a bad chunk, the request timeout): counted by the status it sent.
      if (err instanceof HttpError) metrics.bodyRejected(res.headersSent ? res.statusCode : err.status);
      throw err;
    });
    let digest: string;
    try {
      digest = await store.put(message);
    } finally {
      release(); // not put(...).finally(release), which costs two more promises
    }
    const body = `{"digest":"${digest}"}`;
    const headers = answerHeaders(body.length, 'no-store');
    // RFC 9110 section 15.3.2: a 201 names the resource it created.
    headers.Location = `/messages/${digest}`;
    send(exchange, 201, body, headers);
  }

  async function getMessage(exchange: Exchange, param: string) {
    const digest = canonicalDigest(param);
    const message = digest === undefined ? null : await store.get(digest);
    if (digest === undefined || message === null) return reply(exchange, messageNotFound(param));
    const etag = `"${digest}"`;
    const match = exchange.req.headers['if-none-match'];
    // RFC 9110 section 13.1.2: weak comparison, a list, or "*".
    const matched = match !== undefined
      && (match.trim() === '*' || match.split(',').some((tag) => tag.trim().replace(/^W\//, '') === etag));
    if (matched) return send(exchange, 304, '', notModifiedHeaders(etag, immutable));
    const body = `{"message":${JSON.stringify(message)}}`;
    const headers = answerHeaders(Buffer.byteLength(body), immutable);
    headers.ETag = etag;
    send(exchange, 200, body, headers);
  }

  const route = createRouter<Handler>([
    { path: '/messages', param: false, methods: { POST: postMessage } },
    { path: '/messages/', param: true, methods: { GET: getMessage } },
    { path: '/healthz', param: false, methods: { GET: (exchange) => send(exchange, 200, healthy, healthyHeaders()) } },
    { path: '/readyz', param: false, methods: { GET: async (exchange) => reply(exchange, await ready()) } },
  ]);

  // Refusals that come before routing: draining, an HTTP version other than 1.x, no host named.
  function admit(req: IncomingMessage): void {
    if (draining) throw errors.shuttingDown();
    if (req.httpVersion !== '1.1' && req.httpVersion !== '1.0') throw errors.versionNotSupported();
    // RFC 9112 section 3.2: an HTTP/1.1 request names its host, in Host or in an absolute-form target.
    const authority = authorityOf(req.url ?? '');
    if (authority === '') throw errors.targetWithoutHost();
    const { host } = req.headers;
    if (host !== undefined && !hostField.test(host)) throw errors.badHost();
    const hostless = authority === undefined && host === undefined;
    if (hostless && req.httpVersion === '1.1') throw errors.missingHost();
  }

  // Returns what answers an error the parser finds in the request's body while the handler runs.
  function handle(req: IncomingMessage, res: ServerResponse, received: number) {
    const exchange = { req, res, received, route: 'other' };
    try {
      admit(req);
      const found = route(req.method ?? '', req.url ?? '');
      exchange.route = found.route;
      const pending = found.handler(exchange, found.param);
      if (pending !== undefined) pending.catch((err: unknown) => sendError(exchange, err));
    } catch (err) {
      sendError(exchange, err);
    }
    return (err: HttpError) => (res.headersSent ? req.socket.destroy() : sendError(exchange, err));
  }

  return {
    handle,
    // From now on every response says Connection: close and new requests get 503.
    drain() {
      draining = true;
    },
  };
}
