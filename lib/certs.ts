// Generates the default self-signed localhost certificate; `npm run certs` runs this file directly.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { loadConfig } from './config.ts';

const run = promisify(execFile);

// The extensions strict verifiers (Python 3.13's VERIFY_X509_STRICT, Go) insist on for a leaf certificate.
const opensslConfig = `[req]
distinguished_name = dn
x509_extensions = leaf
prompt = no
[dn]
CN = localhost
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
`;

// ECDSA P-256: several times cheaper to sign a TLS handshake with than RSA-2048.
export async function generateCert(certFile: string, keyFile: string): Promise<void> {
  fs.mkdirSync(path.dirname(certFile), { recursive: true });
  fs.mkdirSync(path.dirname(keyFile), { recursive: true });
  const scratch = fs.mkdtempSync(path.join(path.dirname(keyFile), '.certs-'));
  try {
    const configFile = path.join(scratch, 'openssl.cnf');
    fs.writeFileSync(configFile, opensslConfig);
    const tmpCert = path.join(scratch, 'cert.pem');
    const tmpKey = path.join(scratch, 'key.pem');
    await run('openssl', [
      'req', '-x509', '-new', '-nodes', '-sha256', '-days', '825',
      '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
      '-config', configFile, '-keyout', tmpKey, '-out', tmpCert,
    ]);
    fs.chmodSync(tmpKey, 0o600);
    // Renames are atomic: a concurrent reader sees either no file or a whole one.
    fs.renameSync(tmpKey, keyFile);
    fs.renameSync(tmpCert, certFile);
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

// Returns true when a pair was generated, false when both files were already there.
export async function ensureCert(certFile: string, keyFile: string): Promise<boolean> {
  if (fs.existsSync(certFile) && fs.existsSync(keyFile)) return false;
  await generateCert(certFile, keyFile);
  return true;
}

if (require.main === module) {
  const config = loadConfig();
  ensureCert(config.certFile, config.keyFile).then((generated) => {
    const files = `${config.certFile} and ${config.keyFile}`;
    console.log(generated ? `wrote ${files}` : `kept existing ${files}`);
  }, (err: unknown) => {
    console.error(`certs: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  });
}
