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
    const date = `${pad(d.getUTCDate())}/${months[d.getUTCMonth()]}/${d.getUTCFullYear()}`;
    stamp = `[${date}:${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} +0000]`;
    stampSecond = second;
  }
  return stamp;
}

const unsafe = /[^\x20-\x21\x23-\x5b\x5d-\x7e]/;

const escapeChar = (ch: string): string => {
  if (ch === '"') return '\\"';
  if (ch === '\\') return '\\\\';
  const code = ch.charCodeAt(0);
  return code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
};

// Apache's rule: quote, backslash and bytes outside printable ASCII escaped; at most `max` chars, no escape cut.
export function escapeField(value: string | undefined, max: number): string {
  if (value === undefined || value === '') return '-';
  const capped = value.length > max ? value.slice(0, max) : value;
  if (!unsafe.test(capped)) return capped;
  let out = '';
  for (let i = 0; i < capped.length; i += 1) {
    const ch = capped[i]!;
    const piece = unsafe.test(ch) ? escapeChar(ch) : ch;
    if (out.length + piece.length > max) break;
    out += piece;
  }
  return out;
}

// The longest field of each kind, in characters after escaping: every line is ASCII, so characters are bytes.
const caps = { method: 16, url: 2048, version: 8, referer: 512, agent: 512 } as const;
// The longest line, newline included: address, timestamp, status, bytes, time, the fields, 25 format characters.
export const maxAccessLineBytes =
  45 + 28 + 3 + 16 + 16 + caps.method + caps.url + caps.version + caps.referer + caps.agent + 25;

export function accessLine(req: IncomingMessage, status: number, bytes: number, elapsedMs: number | undefined): string {
  // Node's parser gives a method of http.METHODS (11 letters at most) and a version of digits: nothing to escape.
  const request = `${req.method} ${escapeField(req.url, caps.url)} HTTP/${req.httpVersion}`;
  const referer = escapeField(req.headers.referer, caps.referer);
  const agent = escapeField(req.headers['user-agent'], caps.agent);
  return line(req.socket.remoteAddress, request, status, bytes, referer, agent, elapsedMs);
}

// A request the HTTP parser refused before it became one: its first line as received, escaped ("-" when unknown).
export function refusedLine(
  remote: string | undefined,
  requestLine: string | undefined,
  status: number,
  bytes: number,
): string {
  return line(remote, escapeField(requestLine, caps.url), status, bytes, '-', '-', undefined);
}

function line(
  remote: string | undefined,
  request: string,
  status: number,
  bytes: number,
  referer: string,
  agent: string,
  elapsedMs: number | undefined,
): string {
  const size = bytes === 0 ? '-' : bytes;
  const time = elapsedMs === undefined ? '-' : elapsedMs.toFixed(3);
  return `${remote ?? '-'} - - ${timestamp()} "${request}" ${status} ${size} "${referer}" "${agent}" ${time}\n`;
}
