// The server's certificate and key: loaded at start, reloaded on SIGHUP without dropping connections.
import fs from 'node:fs';
import type { Server } from 'node:https';
import tls from 'node:tls';

export interface KeyPair { cert: Buffer; key: Buffer }

// Only TLS 1.2 and 1.3 (RFC 8996 deprecates 1.0 and 1.1).
export const minVersion = 'TLSv1.2';

// Reads and checks a pair; createSecureContext throws when the key does not match the certificate.
export function loadKeyPair(certFile: string, keyFile: string): KeyPair {
  const pair = { cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) };
  tls.createSecureContext({ ...pair, minVersion });
  return pair;
}

// Returns an error message when the new pair is unusable; the server then keeps the old one.
export function reloadKeyPair(server: Server, certFile: string, keyFile: string): string | undefined {
  try {
    // A new context draws new session-ticket keys: keep the current ones (in cluster mode Node gives every worker the
    // same at listen), or every ticket issued before the reload falls back to a full handshake.
    server.setSecureContext({ ...loadKeyPair(certFile, keyFile), minVersion, ticketKeys: server.getTicketKeys() });
    return undefined;
  } catch (err) {
    // OpenSSL's message names the problem (no start line, key values mismatch) without key material.
    return err instanceof Error ? err.message : String(err);
  }
}
