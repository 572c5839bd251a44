// Configuration: defaults, every validation rule naming its variable, secrets kept out of the summary, exit 1 on a bad start.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { defaultPair, describeConfig, loadConfig, projectRoot } from '../lib/config.ts';
import { ConfigError } from '../lib/env.ts';
import { freePort, makeCert } from './helpers.ts';

test('uses the documented defaults when nothing is set', () => {
  const config = loadConfig({});
  assert.equal(config.port, 5000);
  assert.equal(config.bind, '0.0.0.0');
  assert.equal(config.workers, 1);
  assert.equal(config.redis.host, 'localhost');
  assert.equal(config.redis.port, 6379);
  assert.equal(config.redis.password, undefined);
  assert.equal(config.redis.minReplicas, 0);
  assert.equal(config.redis.sentinelName, 'mymaster');
  assert.equal(config.certFile, defaultPair.certFile);
  assert.equal(config.keyFile, defaultPair.keyFile);
  assert.equal(config.logDir, path.join(projectRoot, 'logs'));
  assert.equal(config.logMaxBytes, 100_000_000);
  assert.equal(config.logBackupCount, 5);
  assert.equal(config.maxBodyBytes, 1_048_576);
  assert.equal(config.maxBufferedBytes, 16_777_216);
  assert.equal(config.maxConnectionsPerIp, 0);
  assert.equal(config.redis.maxInflight, 128);
  assert.equal(config.minBodyRate, 240);
  assert.equal(config.sendTimeoutMs, 30_000);
});

test('returns a frozen object', () => {
  const config = loadConfig({});
  assert.ok(Object.isFrozen(config));
  assert.ok(Object.isFrozen(config.redis));
});

test('resolves relative paths against the project root, not the working directory', () => {
  const config = loadConfig({ MESSAGES_LOG_DIR: 'var/logs', MESSAGES_CERT_FILE: 'x.crt', MESSAGES_REDIS_CA_FILE: 'ca.pem' });
  assert.equal(config.logDir, path.join(projectRoot, 'var/logs'));
  assert.equal(config.certFile, path.join(projectRoot, 'x.crt'));
  assert.equal(config.redis.caFile, path.join(projectRoot, 'ca.pem'));
});

test('keeps absolute paths as given', () => {
  assert.equal(loadConfig({ MESSAGES_KEY_FILE: '/etc/ssl/k.pem' }).keyFile, '/etc/ssl/k.pem');
});

test('reads MESSAGES_WORKERS=auto as one worker per CPU', () => {
  assert.ok(loadConfig({ MESSAGES_WORKERS: 'auto' }).workers >= 1);
});

test('parses cluster and sentinel lists of host:port, including bracketed IPv6', () => {
  const config = loadConfig({ MESSAGES_REDIS_CLUSTER_NODES: '10.0.0.1:7000, redis-b:7001,[::1]:7002' });
  assert.deepEqual(config.redis.clusterNodes, [
    { host: '10.0.0.1', port: 7000 }, { host: 'redis-b', port: 7001 }, { host: '::1', port: 7002 },
  ]);
  assert.deepEqual(loadConfig({ MESSAGES_REDIS_SENTINELS: 's1:26379' }).redis.sentinels, [{ host: 's1', port: 26379 }]);
});

test('turns TLS on for a rediss:// URL', () => {
  assert.equal(loadConfig({ MESSAGES_REDIS_URL: 'rediss://u:p@h:6380' }).redis.tls, true);
  assert.equal(loadConfig({ MESSAGES_REDIS_URL: 'redis://h:6380' }).redis.tls, false);
});

for (const [name, value, message] of [
  ['MESSAGES_PORT', '70000', 'The value of "MESSAGES_PORT" is out of range. It must be >= 0 && <= 65535. Received 70000'],
  ['MESSAGES_PORT', 'abc', 'The value of "MESSAGES_PORT" is invalid. It must be an integer. Received "abc"'],
  ['MESSAGES_PORT', '-1', 'The value of "MESSAGES_PORT" is invalid. It must be an integer. Received "-1"'],
  ['MESSAGES_PORT', '5000.5', 'The value of "MESSAGES_PORT" is invalid. It must be an integer. Received "5000.5"'],
  ['MESSAGES_REDIS_PORT', '0', 'The value of "MESSAGES_REDIS_PORT" is out of range. It must be >= 1 && <= 65535. Received 0'],
  ['MESSAGES_LOG_BACKUP_COUNT', '1e3', 'The value of "MESSAGES_LOG_BACKUP_COUNT" is invalid. It must be an integer. Received "1e3"'],
  ['MESSAGES_MAX_BODY_BYTES', '8', 'The value of "MESSAGES_MAX_BODY_BYTES" is out of range. It must be >= 16 && <= 1073741824. Received 8'],
  ['MESSAGES_WORKERS', '0', 'The value of "MESSAGES_WORKERS" is out of range. It must be >= 1 && <= 256. Received 0'],
  ['MESSAGES_WORKERS', 'many', 'The value of "MESSAGES_WORKERS" is invalid. It must be an integer. Received "many"'],
  ['MESSAGES_REDIS_READ_FROM_REPLICAS', 'maybe', 'The value of "MESSAGES_REDIS_READ_FROM_REPLICAS" is invalid. It must be one of 0, 1, true, false. Received "maybe"'],
  ['MESSAGES_REDIS_CLUSTER_NODES', 'a:1,b', 'The value of "MESSAGES_REDIS_CLUSTER_NODES" is invalid. It must be a comma-separated list of host:port. Received "a:1,b"'],
  ['MESSAGES_REDIS_SENTINELS', 'a:99999', 'The value of "MESSAGES_REDIS_SENTINELS" is invalid. It must be a comma-separated list of host:port. Received "a:99999"'],
  ['MESSAGES_REDIS_URL', 'http://h:1', 'The value of "MESSAGES_REDIS_URL" is invalid. It must be a redis:// or rediss:// URL. Received scheme "http:"'],
  ['MESSAGES_REDIS_URL', 'not a url', 'The value of "MESSAGES_REDIS_URL" is invalid. It must be a redis:// or rediss:// URL. Received an unparsable URL'],
]) {
  test(`rejects ${name}=${value} naming the variable, the rule and the value`, () => {
    assert.throws(() => loadConfig({ [name!]: value }), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.message, message);
      return true;
    });
  });
}

test('rejects cluster nodes and sentinels set together', () => {
  assert.throws(() => loadConfig({ MESSAGES_REDIS_CLUSTER_NODES: 'a:1', MESSAGES_REDIS_SENTINELS: 'b:2' }), /MESSAGES_REDIS_CLUSTER_NODES.*MESSAGES_REDIS_SENTINELS/);
});

for (const name of ['MESSAGES_REDIS_CLUSTER_NODES', 'MESSAGES_REDIS_SENTINELS']) {
  test(`rejects MESSAGES_REDIS_URL with ${name}, naming both: the URL would be ignored there`, () => {
    assert.throws(() => loadConfig({ MESSAGES_REDIS_URL: 'redis://u:secret@h:1', [name]: 'a:1' }), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.message, `The values of "MESSAGES_REDIS_URL" and "${name}" are in conflict. Set MESSAGES_REDIS_USERNAME, MESSAGES_REDIS_PASSWORD and MESSAGES_REDIS_TLS instead of the URL`);
      return true;
    });
  });
}

test('rejects MESSAGES_MAX_BUFFERED_BYTES below MESSAGES_MAX_BODY_BYTES: the largest body could never be read', () => {
  assert.throws(() => loadConfig({ MESSAGES_MAX_BODY_BYTES: '2048', MESSAGES_MAX_BUFFERED_BYTES: '1024' }),
    { message: 'The value of "MESSAGES_MAX_BUFFERED_BYTES" is out of range. It must be >= MESSAGES_MAX_BODY_BYTES (2048). Received 1024' });
});

test('rejects a request timeout shorter than the headers timeout', () => {
  assert.throws(() => loadConfig({ MESSAGES_HEADERS_TIMEOUT_MS: '5000', MESSAGES_REQUEST_TIMEOUT_MS: '1000' }), /MESSAGES_REQUEST_TIMEOUT_MS/);
});

test('never names the password of a URL in a rejection', () => {
  assert.throws(() => loadConfig({ MESSAGES_REDIS_URL: 'http://user:hunter2@h:1' }), (err: unknown) => {
    assert.ok(err instanceof Error);
    assert.doesNotMatch(err.message, /hunter2/);
    return true;
  });
});

test('describes the configuration without the password, in either place it may be set', () => {
  const text = JSON.stringify(describeConfig(loadConfig({ MESSAGES_REDIS_PASSWORD: 'hunter2', MESSAGES_REDIS_URL: 'redis://me:hunter3@h:1' })));
  assert.doesNotMatch(text, /hunter2|hunter3/);
  assert.match(text, /"password":"set"/);
  assert.match(text, /redis:\/\/\*\*\*@h:1/);
});

test('describes each setting once: MESSAGES_MAX_BUFFERED_BYTES, which the Redis options carry too, is not repeated under redis', () => {
  const described = describeConfig(loadConfig({ MESSAGES_MAX_BUFFERED_BYTES: '33554432' }));
  assert.equal(described.maxBufferedBytes, 33_554_432);
  assert.equal(JSON.stringify(described).split('"maxBufferedBytes"').length - 1, 1);
});

test('stops the start with exit code 1 and a message naming the variable', () => {
  const result = spawnSync(process.execPath, ['--require', 'tsx/cjs', path.join(projectRoot, 'server.ts')], {
    env: { ...process.env, MESSAGES_PORT: '70000' },
    encoding: 'utf8',
    timeout: 30_000,
  });
  assert.equal(result.status, 1);
  assert.equal(result.stderr.trim(), 'messages: The value of "MESSAGES_PORT" is out of range. It must be >= 0 && <= 65535. Received 70000');
});

test('stops the start with exit code 1 and a message naming MESSAGES_BIND when the address cannot be bound', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'config-test-'));
  const [cert, redisPort] = await Promise.all([makeCert(dir), freePort()]);
  const result = spawnSync(process.execPath, ['--require', 'tsx/cjs', path.join(projectRoot, 'server.ts')], {
    // 192.0.2.1 (TEST-NET-1) is on no interface here; nothing listens on the Redis port either.
    env: { ...process.env, MESSAGES_PORT: '0', MESSAGES_BIND: '192.0.2.1', MESSAGES_METRICS_PORT: '0',
      MESSAGES_REDIS_HOST: '127.0.0.1', MESSAGES_REDIS_PORT: String(redisPort),
      MESSAGES_CERT_FILE: cert.certFile, MESSAGES_KEY_FILE: cert.keyFile, MESSAGES_LOG_DIR: path.join(dir, 'logs') },
    encoding: 'utf8',
    timeout: 30_000,
  });
  assert.equal(result.status, 1);
  assert.match(result.stderr, /^messages: HTTPS listener on 192\.0\.2\.1:0 \(MESSAGES_BIND, MESSAGES_PORT\): listen EADDRNOTAVAIL/m);
});

test('stops the start with exit code 1 when an explicit certificate path is missing', () => {
  const result = spawnSync(process.execPath, ['--require', 'tsx/cjs', path.join(projectRoot, 'server.ts')], {
    env: { ...process.env, MESSAGES_PORT: '0', MESSAGES_CERT_FILE: '/nonexistent/x.crt', MESSAGES_LOG_DIR: fs.mkdtempSync(path.join(os.tmpdir(), 'config-test-')) },
    encoding: 'utf8',
    timeout: 30_000,
  });
  assert.equal(result.status, 1);
  assert.match(result.stderr, /The file named by "MESSAGES_CERT_FILE" does not exist\. Received "\/nonexistent\/x\.crt"/);
});
