// Reads and validates the JSON body of POST /messages: media type, size limit, buffered bytes, data rate, UTF-8, shape.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Budget, Release } from './budget.ts';
import { createSweep, type Swept } from './sweep.ts';
import { errors } from './errors.ts';

const utf8 = new TextDecoder('utf-8', { fatal: true });
const noBody: Buffer = Buffer.alloc(0);

// "application/json" with any parameters, case-insensitive (RFC 9110 8.3.1); a comma joins two Content-Type lines.
export function isJson(contentType: string | undefined): boolean {
  if (contentType === undefined || contentType.includes(',')) return false;
  const end = contentType.indexOf(';');
  const type = (end === -1 ? contentType : contentType.slice(0, end)).trim().toLowerCase();
  return type === 'application/json';
}

export interface BodyLimits {
  maxBytes: number; // MESSAGES_MAX_BODY_BYTES
  budget: Budget; // MESSAGES_MAX_BUFFERED_BYTES for the whole process
  rates: ReturnType<typeof watchBodyRates>; // MESSAGES_MIN_BODY_RATE's sweep; undefined when 0
}

interface Reading extends Swept { started: number; size: number; fail(err: Error): void }

// A slow start is allowed, then a minimum rate holds, as Kestrel's MinRequestBodyDataRate (240 bytes/s after 5 s).
const rateGraceMs = 5000;

// Every body being read, looked at once a second: one below `minRate` bytes/s after the grace period gets a 408.
export function watchBodyRates(minRate: number) {
  if (minRate === 0) return undefined;
  return createSweep<Reading>(1000, (reading, now) => {
    const elapsedMs = now - reading.started;
    const slow = elapsedMs >= rateGraceMs && reading.size < (minRate * elapsedMs) / 1000;
    if (slow) reading.fail(errors.bodyTooSlow(minRate));
  });
}

// The most a body can hold: its Content-Length, else (chunked) the limit. A larger Content-Length is a 413 at once.
function largestSize(req: IncomingMessage, limit: number): number {
  const declared = req.headers['content-length'];
  if (declared === undefined) return limit;
  if (Number(declared) > limit) throw errors.payloadTooLarge(limit);
  return Number(declared);
}

// Settles once: whole body, 413 past the limit, or 408 too slow; inline listeners dodge tsx's keepNames (3% of a POST).
function readBody(req: IncomingMessage, res: ServerResponse, largest: number, { maxBytes, rates }: BodyLimits) {
  return new Promise<Buffer>((resolve, reject) => {
    // One buffer, doubled up to `largest`: a client may send a byte per piece, and each piece costs ~200 bytes of heap.
    let body = noBody;
    let settled = false;
    const reading: Reading = {
      started: performance.now(), size: 0, slot: -1,
      fail(err) {
        settled = true;
        body = noBody;
        rates?.delete(reading);
        reject(err);
      },
    };
    rates?.add(reading);
    req.on('data', (chunk: Buffer) => {
      if (settled) return;
      const end = reading.size + chunk.length;
      // The rest is read and dropped, never buffered, while the 413 closes the connection.
      if (end > maxBytes) return reading.fail(errors.payloadTooLarge(maxBytes));
      if (end === largest && reading.size === 0) body = chunk; // the whole body in one piece, as most come: no copy
      else {
        if (end > body.length) body = Buffer.concat([body], Math.min(largest, Math.max(2 * end, 16_384)));
        chunk.copy(body, reading.size);
      }
      reading.size = end;
    });
    req.on('end', () => {
      if (settled) return;
      settled = true;
      rates?.delete(reading);
      resolve(body.length === reading.size ? body : body.subarray(0, reading.size));
    });
    // Either 'close': a request refused mid-body never emits its own, a queued answer never gets the socket to close.
    const gone = () => {
      if (!settled) reading.fail(errors.badRequest('Request body was not received completely'));
    };
    req.on('close', gone); // a client gone is a 400, and needs no 'error' listener
    res.on('close', gone);
    if (req.destroyed) gone();
  });
}

// Deeper is refused before parsing: deep nesting costs JSON.parse 17x per byte (1 MiB of "[" vs a 1 MiB message).
const maxDepth = 32;
function nestsTooDeep(text: string): boolean {
  // Fewer brackets than the limit cannot nest deeper: two memchr-like scans settle almost every body.
  let brackets = 0;
  for (const open of ['[', '{']) {
    for (let at = text.indexOf(open); at !== -1 && brackets <= maxDepth; at = text.indexOf(open, at + 1)) brackets += 1;
  }
  if (brackets <= maxDepth) return false;
  // One pass, linear: brackets inside strings do not nest (a regex that emptied the strings was not: audit.md).
  let depth = 0;
  let inString = false;
  for (let at = 0; at < text.length && depth <= maxDepth; at += 1) {
    const char = text[at];
    if (inString) {
      if (char === '\\') at += 1;
      else inString = char !== '"';
    } else if (char === '"') inString = true;
    else if (char === '[' || char === '{') depth += 1;
    else if (char === ']' || char === '}') depth -= 1;
  }
  return depth > maxDepth;
}

// Returns the message of a {"message": "..."} body, or throws the 400 that names what is wrong.
export function parseMessage(body: Buffer): string {
  let text: string;
  try {
    text = utf8.decode(body);
  } catch {
    throw errors.badRequest('Request body is not valid UTF-8');
  }
  if (nestsTooDeep(text)) throw errors.badRequest(`Request body nests deeper than ${maxDepth} levels`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw errors.badRequest('Request body is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw errors.badRequest('Request body must be a JSON object');
  }
  if (!Object.hasOwn(value, 'message')) throw errors.badRequest('Field "message" is missing');
  const message = (value as { message: unknown }).message;
  if (typeof message !== 'string') throw errors.badRequest('Field "message" must be a string');
  // A lone surrogate has no UTF-8 form, so it has no honest digest either.
  if (!message.isWellFormed()) throw errors.badRequest('Field "message" contains an unpaired surrogate');
  return message;
}

interface Received { message: string; release: Release }

// Reads a POST's message once its body fits the budget; `release` returns the bytes once it is stored or refused.
export async function readMessage(req: IncomingMessage, res: ServerResponse, limits: BodyLimits): Promise<Received> {
  if (!isJson(req.headers['content-type'])) throw errors.unsupportedMediaType(req.headers['content-type']);
  const largest = largestSize(req, limits.maxBytes);
  const release = await limits.budget.reserve(largest, req, res);
  // RFC 9110 section 10.1.1: after the 415 and 413; to HTTP/1.0 never, which would take the 100 for the answer.
  if (req.httpVersion === '1.1' && /(^|,)\s*100-continue\s*(,|$)/i.test(req.headers.expect ?? '')) res.writeContinue();
  try {
    return { message: parseMessage(await readBody(req, res, largest, limits)), release };
  } catch (err) {
    release();
    throw err;
  }
}
