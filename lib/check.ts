// The smoke checker behind `npm run check`: walks the API over verified TLS; test/test.py is its Python twin.
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { isDeepStrictEqual, parseArgs } from 'node:util';

export interface CheckOptions {
  domain: string; port: number; certPath: string; out: (line: string) => void; timeoutMs?: number;
}
// A step's lines: `<url> <passed>`, as the seed's test.py prints them, or `<action> <url>: FAILED, <what went wrong>`.
interface Step {
  action: string; method: string; path: string; body?: string; status: number; expected: unknown; passed: string;
}
interface Reply { status: number; body: string }
const missing = 'a'.repeat(64);
// SHA-256 of the UTF-8 bytes, as `printf foo | sha256sum` prints it.
const fooDigest = '2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae';
const barDigest = 'fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9';
const get = (digest: string, status: number, expected: unknown, passed: string): Step =>
  ({ action: 'GET', method: 'GET', path: `/messages/${digest}`, status, expected, passed });
const post = (message: string, digest: string): Step => ({
  action: `POST "${message}" to`, method: 'POST', path: '/messages', body: JSON.stringify({ message }),
  status: 201, expected: { digest }, passed: 'POSTed successfully',
});
const steps: readonly Step[] = [
  get(missing, 404, { err_msg: `Message not found for hash: ${missing}` }, 'correctly not found'),
  post('foo', fooDigest),
  get(fooDigest, 200, { message: 'foo' }, 'correctly found'),
  post('bar', barDigest),
  get(barDigest, 200, { message: 'bar' }, 'correctly found'),
  get(fooDigest, 200, { message: 'foo' }, 'correctly found'),
];

// Happy eyeballs' AggregateError has no message of its own, OpenSSL's end in "\n"; codes outlast OpenSSL's words.
function reason(err: unknown): string {
  if (err instanceof AggregateError) return err.errors.map(reason).join('; ');
  if (!(err instanceof Error)) return String(err).trim();
  const message = err.message.trim();
  return 'code' in err && typeof err.code === 'string' && !message.includes(err.code)
    ? `${message} (${err.code})`
    : message;
}

// A received body is capped and its control characters escaped, so a failure stays one short line.
function show(body: string): string {
  const capped = body.length > 200 ? `${body.slice(0, 200)}...` : body;
  const toEscape = (c: string) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
  return capped.replace(/[\u0000-\u001f\u007f]/g, toEscape) || '(empty body)';
}

// The status and the whole JSON body must equal the expected ones; returns what differs, or undefined.
function mismatch(reply: Reply, step: Step): string | undefined {
  try {
    if (reply.status === step.status && isDeepStrictEqual(JSON.parse(reply.body), step.expected)) return undefined;
  } catch { /* a body that is not JSON is a mismatch like any other */ }
  return `expected ${step.status} ${JSON.stringify(step.expected)}, received ${reply.status} ${show(reply.body)}`;
}

// Settles once: the reply, or an Error naming the failed phase. --domain is sent as SNI and checked (RFC 6125).
function send(options: CheckOptions, ca: Buffer, step: Step): Promise<Reply> {
  return new Promise((resolve, reject) => {
    let phase = `could not connect to ${options.domain}:${options.port}`;
    const headers = step.body === undefined ? {} : { 'Content-Type': 'application/json' };
    const target = { host: options.domain, port: options.port, ca, method: step.method, path: step.path, agent: false };
    const req = https.request({ ...target, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      res.on('error', (err) => reject(new Error(`${phase}: ${reason(err)}`)));
    });
    const timeoutMs = options.timeoutMs ?? 5000;
    const timer = setTimeout(() => {
      reject(new Error(`no complete response within ${timeoutMs / 1000} s`));
      req.destroy();
    }, timeoutMs);
    req.on('close', () => clearTimeout(timer));
    req.on('socket', (socket) => {
      socket.once('connect', () => { phase = `TLS handshake with ${options.domain} failed`; });
      socket.once('secureConnect', () => { phase = 'connection failed'; });
    });
    req.on('error', (err) => reject(new Error(`${phase}: ${reason(err)}`)));
    req.end(step.body);
  });
}

// Runs the steps in order, one line each (the seed test.py's), and stops at the first failure; true when all passed.
export async function runCheck(options: CheckOptions): Promise<boolean> {
  const certPath = path.resolve(options.certPath);
  let ca: Buffer;
  try {
    ca = fs.readFileSync(certPath);
    new X509Certificate(ca); // Node silently ignores a CA that is not a certificate; say so instead.
  } catch (err) {
    options.out(`FAILED, cannot use --cert-path ${certPath}: ${reason(err)}`);
    return false;
  }
  // URLs from --domain and --port as given, as the seed's test.py; IPv6 literals need brackets (RFC 3986 3.2.2).
  const origin = `https://${options.domain.includes(':') ? `[${options.domain}]` : options.domain}:${options.port}`;
  for (const step of steps) {
    const failure = await send(options, ca, step).then((reply) => mismatch(reply, step), reason);
    if (failure !== undefined) {
      options.out(`${step.action} ${origin}${step.path}: FAILED, ${failure}`);
      return false;
    }
    options.out(`${origin}${step.path} ${step.passed}`);
  }
  // The seed's closing banner, which operators grep for.
  for (const line of ['', '*'.repeat(75), 'All tests passed!', '*'.repeat(75)]) options.out(line);
  return true;
}

const usage = `Usage: npm run check -- [-d|--domain localhost] [-p|--port 5000] [-c|--cert-path certs/localhost.crt]
Checks a running service: GET an unknown digest (404), POST "foo" and "bar", GET them back, each within 5 s.
TLS is verified with --cert-path as the only trusted CA and --domain as the name the certificate must carry.
A relative --cert-path resolves against the working directory (under npm run, the project root).
Exit status: 0 all passed, 1 a step failed, 2 bad usage.`;

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      domain: { type: 'string', short: 'd', default: 'localhost' },
      port: { type: 'string', short: 'p', default: '5000' },
      'cert-path': { type: 'string', short: 'c', default: 'certs/localhost.crt' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  const port = Number(values.port);
  if (!/^\d+$/.test(values.port) || port < 1 || port > 65535) {
    throw new RangeError('The value of "--port" is out of range. It must be an integer >= 1 && <= 65535. ' +
      `Received ${JSON.stringify(values.port)}`);
  }
  const passed = await runCheck({ domain: values.domain, port, certPath: values['cert-path'], out: console.log });
  return passed ? 0 : 1;
}
if (require.main === module) {
  void main(process.argv.slice(2)).catch((err: unknown) => {
    console.error(`check: ${reason(err)}\n${usage}`);
    return 2;
  }).then((code) => {
    process.exitCode = code;
  });
}
