// Fixtures for the attack suites: TLS sockets that send any bytes, a strict reader of HTTP/1.1 responses, the
// response checks every answer must pass, and an in-process service whose log lines are also kept in memory.
import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import { loadConfig } from '../lib/config.ts';
import { createAppLog } from '../lib/app-log.ts';
import { createServiceMetrics, type ServiceMetrics } from '../lib/service-metrics.ts';
import { openLogFiles } from '../lib/log-files.ts';
import { startService, type Service } from '../lib/service.ts';

export interface RawResponse {
  status: number;
  // Lower-case names; a repeated header keeps every value, joined by ", ".
  headers: Record<string, string>;
  body: Buffer;
}

const statusLine = /^HTTP\/1\.[01] (\d{3}) [\t\x20-\x7e]*$/;
const headerLine = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[\t ]*([\t\x20-\x7e\x80-\xff]*?)[\t ]*$/;
const maxHeadBytes = 64 * 1024;

// Reads responses off one socket in order; `next` answers null when the server closed before a response began.
export class ResponseReader {
  private buffer = Buffer.alloc(0);
  private ended = false;
  private wake: (() => void) | undefined;

  constructor(readonly socket: tls.TLSSocket) {
    const notify = () => {
      const wake = this.wake;
      this.wake = undefined;
      wake?.();
    };
    socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      notify();
    });
    // A reset after the server's last response is how a closing peer may look: what arrived before it still counts.
    socket.on('error', () => {});
    socket.on('close', () => {
      this.ended = true;
      notify();
    });
  }

  get closed(): boolean {
    return this.ended;
  }

  // Rejects on anything that is not a well-formed response, or on a close in the middle of one. An interim
  // 100 Continue (the answer to Expect: 100-continue) is skipped: the final response follows it.
  async next(method: string, timeoutMs = 15_000): Promise<RawResponse | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const response = this.parse(method);
      if (response?.status === 100) continue;
      if (response !== undefined) return response;
      if (this.ended) {
        if (this.buffer.length === 0) return null;
        throw new Error(`connection closed in the middle of a response: ${preview(this.buffer)}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no complete response within ${timeoutMs} ms; received ${preview(this.buffer)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  private parse(method: string): RawResponse | undefined {
    const end = this.buffer.indexOf('\r\n\r\n');
    if (end === -1) {
      if (this.buffer.length > maxHeadBytes) throw new Error(`response head longer than ${maxHeadBytes} bytes`);
      return undefined;
    }
    const [first, ...lines] = this.buffer.subarray(0, end).toString('latin1').split('\r\n');
    const status = statusLine.exec(first!);
    if (status === null) throw new Error(`malformed status line: ${JSON.stringify(first)}`);
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const header = headerLine.exec(line);
      if (header === null) throw new Error(`malformed header line: ${JSON.stringify(line)}`);
      const name = header[1]!.toLowerCase();
      headers[name] = name in headers ? `${headers[name]}, ${header[2]!}` : header[2]!;
    }
    const code = Number(status[1]);
    if (headers['transfer-encoding'] !== undefined) throw new Error(`unexpected Transfer-Encoding: ${headers['transfer-encoding']}`);
    let length: number;
    if (method === 'HEAD' || code < 200 || code === 204 || code === 304) length = 0;
    else if (headers['content-length'] !== undefined) {
      if (!/^\d+$/.test(headers['content-length'])) throw new Error(`malformed Content-Length: ${headers['content-length']}`);
      length = Number(headers['content-length']);
    } else if (this.ended) length = this.buffer.length - end - 4;
    else return undefined;
    if (this.buffer.length < end + 4 + length) return undefined;
    const body = Buffer.from(this.buffer.subarray(end + 4, end + 4 + length));
    this.buffer = this.buffer.subarray(end + 4 + length);
    return { status: code, headers, body };
  }
}

function preview(bytes: Buffer): string {
  return JSON.stringify(bytes.subarray(0, 300).toString('latin1'));
}

export interface RawConnection {
  socket: tls.TLSSocket;
  reader: ResponseReader;
  // The TCP socket under TLS: `tcp.resetAndDestroy()` sends an RST, which a TLS socket cannot.
  tcp: net.Socket;
}

// A TLS connection to the service, ready once the handshake is done.
export async function connect(port: number, ca: Buffer, options: tls.ConnectionOptions = {}): Promise<RawConnection> {
  const tcp = net.connect(port, '127.0.0.1');
  const socket = tls.connect({ socket: tcp, ca, servername: 'localhost', ...options });
  const reader = new ResponseReader(socket);
  await Promise.race([once(socket, 'secureConnect'), once(socket, 'error').then(([err]) => Promise.reject(err))]);
  return { socket, reader, tcp };
}

// Sends `bytes` on a fresh connection and reads one response per method in `methods` (fewer if the server closes).
export async function exchange(port: number, ca: Buffer, bytes: string | Buffer, methods = ['GET']): Promise<RawResponse[]> {
  const { socket, reader } = await connect(port, ca);
  try {
    socket.write(bytes);
    const responses: RawResponse[] = [];
    for (const method of methods) {
      const response = await reader.next(method);
      if (response === null) break;
      responses.push(response);
    }
    return responses;
  } finally {
    socket.destroy();
  }
}

export function closed(socket: tls.TLSSocket): Promise<void> {
  return socket.closed ? Promise.resolve() : once(socket, 'close').then(() => undefined);
}

// Every err_msg the API can answer with; the captured part echoes what the client sent, already capped.
const errorMessages = [
  /^Not found$/,
  /^Message not found for hash: ([^]*)$/,
  /^Method ([^]{1,35}) not allowed; allowed: (?:POST|GET, HEAD|GET, HEAD, POST)$/,
  /^Request body exceeds the limit of \d+ bytes$/,
  /^Content-Type must be application\/json; received ([^]*)$/,
  /^Request body is not valid (?:UTF-8|JSON)$/,
  /^Request body must be a JSON object$/,
  /^Request body nests deeper than 32 levels$/,
  /^Request body arrived slower than \d+ bytes\/s$/,
  /^Field "message" (?:is missing|must be a string|contains an unpaired surrogate)$/,
  /^Request body was not received completely$/,
  /^Bad request$/,
  /^Header "Host" is missing$/,
  /^Header "Host" must name one host$/,
  /^Request target has no host$/,
  /^HTTP version not supported; use HTTP\/1\.1$/,
  /^Request header fields too large$/,
  /^Request timed out$/,
  /^Storage is unavailable, retry later$/,
];

export const documentedStatuses = new Set([200, 201, 304, 400, 404, 405, 408, 413, 415, 431, 503, 505]);
const internals = /\bat \S+ \(|\bat (?:file|node):|node:internal|\/work\/|\.ts:\d|\bError:/;

// The contract every answer keeps, whatever was sent: a documented status, the security headers and Date, a JSON body of
// a known shape, and nothing from inside the process. Returns what is wrong, or undefined.
export function contractViolation(response: RawResponse, method: string, target: string): string | undefined {
  const { status, headers } = response;
  if (!documentedStatuses.has(status)) return `undocumented status ${status}`;
  if (headers['x-content-type-options'] !== 'nosniff') return 'no X-Content-Type-Options: nosniff';
  if (headers['strict-transport-security'] === undefined) return 'no Strict-Transport-Security';
  // RFC 9110 section 6.6.1: an origin server with a clock sends Date in every 2xx, 3xx and 4xx answer.
  if (!/^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/.test(headers.date ?? '')) return `Date ${headers.date}`;
  const cacheable = (status === 200 || status === 304) && /^\/messages\/[^/?]+(?:\?|$)/.test(target);
  const expectedCache = cacheable ? 'public, max-age=31536000, immutable' : 'no-store';
  if (headers['cache-control'] !== expectedCache) return `Cache-Control ${headers['cache-control']} where ${expectedCache} belongs`;
  if (cacheable && !/^"[0-9a-f]{64}"$/.test(headers.etag ?? '')) return `ETag ${headers.etag} is not the quoted digest`;
  if (status === 503 && headers['retry-after'] === undefined) return '503 without Retry-After';
  if (status === 405 && headers.allow === undefined) return '405 without Allow';
  if (status === 304 || method === 'HEAD') return response.body.length === 0 ? undefined : 'a body on a 304 or HEAD answer';
  if (headers['content-type'] !== 'application/json; charset=utf-8') return `Content-Type ${headers['content-type']}`;
  let body: unknown;
  try {
    body = JSON.parse(response.body.toString('utf8'));
  } catch {
    return `body is not JSON: ${preview(response.body)}`;
  }
  return bodyViolation(status, body);
}

function bodyViolation(status: number, body: unknown): string | undefined {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return 'body is not a JSON object';
  const keys = Object.keys(body).join(',');
  const fields = body as Record<string, unknown>;
  if (status >= 400) {
    if (keys !== 'err_msg' || typeof fields.err_msg !== 'string') return `error body with keys ${keys}`;
    const known = errorMessages.map((pattern) => pattern.exec(fields.err_msg as string)).find((match) => match !== null);
    if (known === undefined) return `unknown err_msg ${JSON.stringify(fields.err_msg)}`;
    // What the client sent may say anything; the rest of the message must not show the process's insides.
    const own = known[1] === undefined ? known[0] : known[0].slice(0, known[0].length - known[1].length);
    return internals.test(own) ? `internals in err_msg ${JSON.stringify(fields.err_msg)}` : undefined;
  }
  if (status === 201) return keys === 'digest' && /^[0-9a-f]{64}$/.test(String(fields.digest)) ? undefined : `201 body with keys ${keys}`;
  if (keys === 'message' && typeof fields.message === 'string') return undefined;
  if (keys === 'status' && (fields.status === 'ok' || fields.status === 'ready')) return undefined;
  return `${status} body with keys ${keys}`;
}

export interface Captured {
  service: Service;
  appLines: string[];
  accessLines: string[];
  logDir: string;
  metrics: ServiceMetrics;
  stop(): Promise<void>;
}

// The service in this process with every log line also kept in memory, in the order it was written.
export async function startCapturing(env: Record<string, string>): Promise<Captured> {
  const config = loadConfig(env);
  const files = openLogFiles(config);
  const appLines: string[] = [];
  const accessLines: string[] = [];
  const logs = {
    ...files,
    app: (line: string) => {
      appLines.push(line);
      files.app(line);
    },
    access: (line: string) => {
      accessLines.push(line);
      files.access(line);
    },
  };
  const metrics = createServiceMetrics('test');
  const service = await startService(config, logs, createAppLog(logs.app), metrics);
  return {
    service,
    appLines,
    accessLines,
    logDir: config.logDir,
    metrics,
    async stop() {
      await service.stop();
      files.close();
    },
  };
}
