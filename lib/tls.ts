// The server's certificate, key and TLS settings: loaded at start, reloaded on SIGHUP without dropping connections.
import { constants } from 'node:crypto';
import fs from 'node:fs';
import type { Server } from 'node:https';
import tls from 'node:tls';

export interface KeyPair { cert: Buffer; key: Buffer }

export const tlsSettings = {
  // Only TLS 1.2 and 1.3 (RFC 8996 deprecates 1.0 and 1.1).
  minVersion: 'TLSv1.2',
  // TLS 1.3's defaults, Mozilla's "intermediate" TLS 1.2 list (ECDHE, AEAD) without DHE: no DH parameters are set.
  ciphers: [
    'TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256',
    'ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-AES256-GCM-SHA384',
    'ECDHE-RSA-AES256-GCM-SHA384', 'ECDHE-ECDSA-CHACHA20-POLY1305', 'ECDHE-RSA-CHACHA20-POLY1305',
  ].join(':'),
  // No renegotiation (TLS 1.2; 1.3 has none): Node allowed a client 3 per connection, each a handshake's CPU.
  secureOptions: constants.SSL_OP_NO_RENEGOTIATION,
} as const;

// Reads and checks a pair; createSecureContext throws when the key does not match the certificate.
export function loadKeyPair(certFile: string, keyFile: string): KeyPair {
  const pair = { cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) };
  tls.createSecureContext({ ...pair, ...tlsSettings });
  return pair;
}

// Returns an error message when the new pair is unusable; the server then keeps the old one.
export function reloadKeyPair(server: Server, certFile: string, keyFile: string): string | undefined {
  try {
    // A new context draws new ticket keys: keep the current ones, or every earlier ticket costs a full handshake.
    server.setSecureContext({ ...loadKeyPair(certFile, keyFile), ...tlsSettings, ticketKeys: server.getTicketKeys() });
    return undefined;
  } catch (err) {
    // OpenSSL's message names the problem (no start line, key values mismatch) without key material.
    return err instanceof Error ? err.message : String(err);
  }
}
