// Reads and validates the JSON body of POST /messages: media type, size limit, UTF-8, shape.
import type { IncomingMessage } from 'node:http';
import { badRequest, payloadTooLarge, unsupportedMediaType } from './errors.ts';

const utf8 = new TextDecoder('utf-8', { fatal: true });

// "application/json" with any parameters (charset=...), case-insensitive (RFC 9110 section 8.3.1).
export function isJson(contentType: string | undefined): boolean {
  if (contentType === undefined) return false;
  const end = contentType.indexOf(';');
  const type = (end === -1 ? contentType : contentType.slice(0, end)).trim().toLowerCase();
  return type === 'application/json';
}

// Settles exactly once: with the whole body, or with a 413 as soon as the limit is passed. The listeners are inline
// and stay on the request, which ends with this exchange: tsx's keepNames gives every named closure a
// defineProperty call, which was the largest cost of reading a body.
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) return Promise.reject(payloadTooLarge(limit));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    req.on('data', (chunk: Buffer) => {
      if (settled) return;
      size += chunk.length;
      if (size > limit) {
        // The rest is read and dropped, never buffered, while the 413 closes the connection.
        settled = true;
        chunks.length = 0;
        reject(payloadTooLarge(limit));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (settled) return;
      settled = true;
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    });
    // The client went away mid-body: a 4xx for the access log, never an error in the process. 'close' always follows
    // an abort, and Node emits the request's 'error' only to a listener (IncomingMessage's onError), so none is added.
    req.on('close', () => {
      if (settled) return;
      settled = true;
      reject(badRequest('Request body was not received completely'));
    });
  });
}

// Returns the message of a {"message": "..."} body, or throws the 400 that names what is wrong.
export function parseMessage(body: Buffer): string {
  let text: string;
  try {
    text = utf8.decode(body);
  } catch {
    throw badRequest('Request body is not valid UTF-8');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw badRequest('Request body is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw badRequest('Request body must be a JSON object');
  }
  if (!Object.hasOwn(value, 'message')) throw badRequest('Field "message" is missing');
  const message = (value as { message: unknown }).message;
  if (typeof message !== 'string') throw badRequest('Field "message" must be a string');
  // A lone surrogate has no UTF-8 form, so it has no honest digest either.
  if (!message.isWellFormed()) throw badRequest('Field "message" contains an unpaired surrogate');
  return message;
}

export async function readMessage(req: IncomingMessage, limit: number): Promise<string> {
  if (!isJson(req.headers['content-type'])) throw unsupportedMediaType(req.headers['content-type']);
  return parseMessage(await readBody(req, limit));
}
