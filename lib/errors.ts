// Every error the API answers with, each carrying its HTTP status where it is thrown, and the one renderer of them.
import { STATUS_CODES } from 'node:http';

// On every answer, including those written on the socket before a request reaches the app.
export const securityHeaders = { 'X-Content-Type-Options': 'nosniff', 'Strict-Transport-Security': 'max-age=31536000' } as const;

export class HttpError extends Error {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;

  constructor(status: number, message: string, headers: Record<string, string> = {}) {
    // An answer, not a fault: its stack is never logged or shown, and capturing one was the largest single cost of
    // answering a 404 (https://v8.dev/docs/stack-trace-api: no frames are collected at a limit of 0).
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(message);
    Error.stackTraceLimit = limit;
    this.status = status;
    this.headers = headers;
  }
}

// Anything a client sent that we echo back is capped, so an error body or a log line stays small.
export function truncate(value: string, max = 256): string {
  return value.length > max ? `${value.slice(0, max)}...` : value;
}

export const badRequest = (reason: string) => new HttpError(400, reason);
// RFC 9112 section 3.2: an HTTP/1.1 request without Host must be answered 400.
export const missingHost = () => badRequest('Header "Host" is missing');
export const targetWithoutHost = () => badRequest('Request target has no host');
// RFC 9110 section 15.6.6; the connection closes, since the client speaks another protocol.
export const versionNotSupported = () =>
  new HttpError(505, 'HTTP version not supported; use HTTP/1.1', { Connection: 'close' });
export const messageNotFound = (digest: string) => new HttpError(404, `Message not found for hash: ${truncate(digest)}`);
export const pathNotFound = () => new HttpError(404, 'Not found');
export const methodNotAllowed = (method: string, allow: string) =>
  new HttpError(405, `Method ${truncate(method, 32)} not allowed; allowed: ${allow}`, { Allow: allow });
export const payloadTooLarge = (limit: number) =>
  new HttpError(413, `Request body exceeds the limit of ${limit} bytes`, { Connection: 'close' });
export const bodyTooSlow = (rate: number) => new HttpError(408, `Request body arrived slower than ${rate} bytes/s`);
export const unsupportedMediaType = (type: string | undefined) =>
  new HttpError(415, `Content-Type must be application/json; received ${type === undefined ? 'none' : truncate(type, 64)}`);
// Retry-After: RFC 9110 section 10.2.3. Outages and overloads are usually short; 1 to 5 s at random, so that the
// clients refused in one second do not all come back in the same next one.
export const storageUnavailable = (reason = 'Storage is unavailable, retry later') =>
  new HttpError(503, reason, { 'Retry-After': String(1 + Math.floor(Math.random() * 5)) });
export const shuttingDown = () =>
  new HttpError(503, 'Server is shutting down, retry later', { 'Retry-After': '1', Connection: 'close' });

export function isHttpError(value: unknown): value is HttpError {
  return value instanceof HttpError;
}

// The body and headers of an error answer: {"err_msg"}, never cached, with the security headers and the error's own.
export function errorAnswer(err: HttpError, extra: Record<string, string> = {}) {
  const body = JSON.stringify({ err_msg: err.message });
  const headers: Record<string, string | number> = {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
    ...securityHeaders,
    ...err.headers,
    ...extra,
  };
  return { headers, body };
}

// The same answer as bytes for the socket, for a request no handler sees.
export function rawAnswer(err: HttpError, extra: Record<string, string> = {}): { bytes: string; bodyBytes: number } {
  const { headers, body } = errorAnswer(err, extra);
  const head = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('');
  return { bytes: `HTTP/1.1 ${err.status} ${STATUS_CODES[err.status]}\r\n${head}\r\n${body}`, bodyBytes: Buffer.byteLength(body) };
}
