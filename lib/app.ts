// The API: routes, handlers and the one function that writes every response and its access-log line.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { AppLog, LineSink } from './app-log.ts';
import { accessLine } from './access-log.ts';
import { readMessage, type BodyLimits } from './body.ts';
import {
  errorAnswer, isHttpError, messageNotFound, missingHost, securityHeaders, shuttingDown, targetWithoutHost, versionNotSupported,
} from './errors.ts';
import { authorityOf, createRouter } from './router.ts';
import type { Store } from './store.ts';

export interface AppOptions {
  store: Store;
  appLog: AppLog;
  accessLog: LineSink;
  body: BodyLimits;
}

const startTimes = new WeakMap<IncomingMessage, number>();

// A stored message never changes under its digest, so clients may cache it for good (RFC 8246).
const immutable = 'public, max-age=31536000, immutable';

export function createApp({ store, appLog, accessLog, body: bodyLimits }: AppOptions) {
  let draining = false;

  function send(req: IncomingMessage, res: ServerResponse, status: number, body: string, headers: Record<string, string | number> = {}) {
    // A 304 carries the validator and caching headers, no representation metadata (RFC 9110 section 15.4.5).
    const length = status === 304 ? 0 : Buffer.byteLength(body);
    const representation = status === 304 ? {} : { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': length, 'Cache-Control': 'no-store' };
    res.writeHead(status, {
      ...representation,
      ...securityHeaders,
      // An answer given before the request's body arrived (an error) ends the connection: the rest of the body is
      // read and dropped while it closes (lingering close, connections.ts), never parsed as the next request.
      ...(draining || !req.complete ? { Connection: 'close' } : {}),
      ...headers,
    });
    res.end(status === 304 ? undefined : body);
    const bytes = req.method === 'HEAD' ? 0 : length;
    accessLog(accessLine(req, status, bytes, performance.now() - (startTimes.get(req) ?? 0)));
  }

  function sendError(req: IncomingMessage, res: ServerResponse, err: unknown) {
    if (res.headersSent) return;
    if (isHttpError(err)) {
      const { headers, body } = errorAnswer(err);
      send(req, res, err.status, body, headers);
      return;
    }
    appLog.error('request_failed', err, { method: req.method, url: req.url?.slice(0, 256) });
    send(req, res, 500, '{"err_msg":"Internal server error"}');
  }

  async function postMessage(req: IncomingMessage, res: ServerResponse) {
    const { message, release } = await readMessage(req, bodyLimits);
    const digest = await store.put(message).finally(release);
    // RFC 9110 section 15.3.2: a 201 names the resource it created.
    send(req, res, 201, `{"digest":"${digest}"}`, { Location: `/messages/${digest}` });
  }

  async function getMessage(req: IncomingMessage, res: ServerResponse, digest: string) {
    const message = await store.get(digest);
    if (message === null) throw messageNotFound(digest);
    const etag = `"${digest.toLowerCase()}"`;
    const headers = { ETag: etag, 'Cache-Control': immutable };
    const match = req.headers['if-none-match'];
    // RFC 9110 section 13.1.2: weak comparison, a list, or "*".
    if (match !== undefined && (match.trim() === '*' || match.split(',').some((tag) => tag.trim().replace(/^W\//, '') === etag))) {
      send(req, res, 304, '', headers);
      return;
    }
    send(req, res, 200, `{"message":${JSON.stringify(message)}}`, headers);
  }

  async function readiness(req: IncomingMessage, res: ServerResponse) {
    const reason = await store.unready();
    if (reason === undefined) send(req, res, 200, '{"status":"ready"}');
    else send(req, res, 503, JSON.stringify({ err_msg: `${reason}; see app.log for the cause` }), { 'Retry-After': '1' });
  }

  const route = createRouter([
    { path: '/messages', param: false, methods: { POST: postMessage } },
    { path: '/messages/', param: true, methods: { GET: getMessage } },
    { path: '/healthz', param: false, methods: { GET: (req, res) => send(req, res, 200, '{"status":"ok"}') } },
    { path: '/readyz', param: false, methods: { GET: readiness } },
  ]);

  function handle(req: IncomingMessage, res: ServerResponse): void {
    startTimes.set(req, performance.now());
    try {
      if (draining) throw shuttingDown();
      if (req.httpVersion !== '1.1' && req.httpVersion !== '1.0') throw versionNotSupported();
      // RFC 9112 section 3.2: an HTTP/1.1 request names its host, in Host or in an absolute-form target.
      const authority = authorityOf(req.url ?? '');
      if (authority === '') throw targetWithoutHost();
      if (authority === undefined && req.headers.host === undefined && req.httpVersion === '1.1') throw missingHost();
      const { handler, param } = route(req.method ?? '', req.url ?? '');
      const pending = handler(req, res, param);
      if (pending !== undefined) pending.catch((err: unknown) => sendError(req, res, err));
    } catch (err) {
      sendError(req, res, err);
    }
  }

  return {
    handle,
    // From now on every response says Connection: close and new requests get 503.
    drain() {
      draining = true;
    },
  };
}
