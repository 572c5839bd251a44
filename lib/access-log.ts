// access.log: Combined Log Format plus the response time in milliseconds, one line per request.
import type { IncomingMessage } from 'node:http';

const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const pad = (n: number) => (n < 10 ? `0${n}` : String(n));

let stampSecond = -1;
let stamp = '';

// [10/Oct/2000:13:55:36 +0000], formatted once per second: most lines share it.
export function timestamp(now = Date.now()): string {
  const second = Math.floor(now / 1000);
  if (second !== stampSecond) {
    const d = new Date(second * 1000);
    stamp = `[${pad(d.getUTCDate())}/${months[d.getUTCMonth()]}/${d.getUTCFullYear()}:${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} +0000]`;
    stampSecond = second;
  }
  return stamp;
}

const unsafe = /[^\x20-\x21\x23-\x5b\x5d-\x7e]/;
const unsafeAll = /[^\x20-\x21\x23-\x5b\x5d-\x7e]/g;

// Apache's rule: quote and backslash escaped, every other byte outside printable ASCII as \xHH.
// Node hands header and URL bytes over as latin1, so each character here is one byte on the wire.
export function escapeField(value: string | undefined, max: number): string {
  if (value === undefined || value === '') return '-';
  const capped = value.length > max ? value.slice(0, max) : value;
  if (!unsafe.test(capped)) return capped;
  return capped.replace(unsafeAll, (ch) => {
    if (ch === '"') return '\\"';
    if (ch === '\\') return '\\\\';
    const code = ch.charCodeAt(0);
    return code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

export function accessLine(req: IncomingMessage, status: number, bytes: number, elapsedMs: number | undefined): string {
  const request = `${escapeField(req.method, 16)} ${escapeField(req.url, 2048)} HTTP/${escapeField(req.httpVersion, 8)}`;
  return line(req.socket.remoteAddress, request, status, bytes, escapeField(req.headers.referer, 512), escapeField(req.headers['user-agent'], 512), elapsedMs);
}

// A request the HTTP parser refused before it became one: its first line as received, escaped ("-" when unknown).
export function refusedLine(remote: string | undefined, requestLine: string | undefined, status: number, bytes: number): string {
  return line(remote, escapeField(requestLine, 2048), status, bytes, '-', '-', undefined);
}

function line(remote: string | undefined, request: string, status: number, bytes: number, referer: string, agent: string, elapsedMs: number | undefined): string {
  return `${remote ?? '-'} - - ${timestamp()} "${request}" ${status} ${bytes === 0 ? '-' : bytes} "${referer}" "${agent}" ${elapsedMs === undefined ? '-' : elapsedMs.toFixed(3)}\n`;
}
