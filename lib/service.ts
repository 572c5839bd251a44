// One serving process: HTTPS server with its limits, the store, reload and drain. server.ts wires it to signals.
import fs from 'node:fs';
import https from 'node:https';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { AppLog } from './app-log.ts';
import { createApp } from './app.ts';
import { watchBodyRates } from './body.ts';
import { createBudget } from './budget.ts';
import { ensureCert } from './certs.ts';
import { createConnections } from './connections.ts';
import { createRefusals } from './refusals.ts';
import { watchSends } from './idle.ts';
import { handshakeReporter, lingerBodies, watchConnections } from './sockets.ts';
import { defaultPair, type Config } from './config.ts';
import { ConfigError } from './env.ts';
import type { LogFiles } from './log-files.ts';
import { readiness } from './readiness.ts';
import { connectRedis } from './redis.ts';
import { createStore } from './store.ts';
import type { ServiceMetrics } from './service-metrics.ts';
import { loadKeyPair, reloadKeyPair, tlsSettings } from './tls.ts';

export interface Service {
  server: https.Server;
  port: number;
  reload(): void;
  stop(): Promise<void>;
}

// The default pair is generated on first start; explicit paths must exist, or the start fails naming them.
export async function prepareCert(config: Readonly<Config>, appLog: AppLog): Promise<void> {
  if (config.certFile === defaultPair.certFile && config.keyFile === defaultPair.keyFile) {
    if (await ensureCert(config.certFile, config.keyFile)) {
      appLog.info('cert_generated', { certFile: config.certFile, keyFile: config.keyFile });
    }
    return;
  }
  const files = [['MESSAGES_CERT_FILE', config.certFile], ['MESSAGES_KEY_FILE', config.keyFile]] as const;
  for (const [name, file] of files) {
    if (!fs.existsSync(file)) {
      throw new ConfigError(`The file named by "${name}" does not exist. Received ${JSON.stringify(file)}`);
    }
  }
}

export async function startService(
  config: Readonly<Config>,
  logs: LogFiles,
  appLog: AppLog,
  metrics: ServiceMetrics,
): Promise<Service> {
  const pair = loadKeyPair(config.certFile, config.keyFile);
  const redis = connectRedis(config.redis, appLog, metrics.redis);
  const store = createStore(redis);
  const body = {
    maxBytes: config.maxBodyBytes,
    budget: createBudget(config.maxBufferedBytes),
    rates: watchBodyRates(config.minBodyRate),
  };
  const ready = readiness(redis, config.redis.timeoutMs);
  const app = createApp({ store, appLog, accessLog: logs.access, body, metrics, ready });
  const idleMs = { keepAlive: config.keepAliveTimeoutMs, headers: config.headersTimeoutMs };
  const connections = createConnections(app.handle, lingerBodies * config.maxBodyBytes, idleMs);
  const refusals = createRefusals(connections, logs.access, metrics.answered);

  const server = https.createServer({
    ...pair,
    ...tlsSettings,
    headersTimeout: config.headersTimeoutMs,
    requestTimeout: config.requestTimeoutMs,
    keepAliveTimeout: config.keepAliveTimeoutMs,
    // The TLS handshake counts as part of the headers: Node's default would hold a silent connection for 120 s.
    handshakeTimeout: config.headersTimeoutMs,
    // Node checks the two timeouts above on this interval; a tighter one cuts slow clients closer to them.
    connectionsCheckingInterval: Math.min(1000, config.headersTimeoutMs),
    // Node's own 400 for a missing Host would not be JSON: app.ts answers it instead.
    requireHostHeader: false,
    // Node kept the first of two Host or Content-Type lines: joined, app.ts and body.ts refuse them.
    joinDuplicateHeaders: true,
  }, connections.request);
  server.maxConnections = config.maxConnections;
  const open = watchConnections(server, config.maxConnectionsPerIp, metrics.connectionRefused);
  // A connection moving no byte either way this long mid-request is destroyed; idle ones are keep-alive's.
  server.timeout = config.sendTimeoutMs;
  server.on('timeout', (socket: Socket) => {
    metrics.sendTimedOut();
    socket.destroy();
  });
  server.on('secureConnection', watchSends(config.sendTimeoutMs, metrics.sendTimedOut));
  server.on('tlsClientError', handshakeReporter(appLog, metrics.handshakeFailed));
  Object.assign(metrics.sources, { connectionsOpen: open, bufferedBytes: body.budget.held,
    redisUp: () => redis.isReady, redisMaster: () => redis.master });
  server.on('clientError', refusals.clientError);
  // RFC 9110 section 10.1.1: an expectation other than 100-continue may be ignored; Node's own answer is a bare 417.
  server.on('checkExpectation', connections.request);
  // Node would send 100 Continue before the handler sees the head; readMessage sends it once the head is accepted.
  server.on('checkContinue', connections.request);
  server.on('connect', refusals.connect);

  await new Promise<void>((resolve, reject) => {
    const failed = (err: Error) => reject(new Error(`HTTPS listener on ${config.bind}:${config.port} ` +
      `(MESSAGES_BIND, MESSAGES_PORT): ${err.message}`));
    server.once('error', failed);
    server.listen(config.port, config.bind, () => {
      server.off('error', failed);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : config.port;
  appLog.info('listening', { bind: config.bind, port });

  let stopping: Promise<void> | undefined;
  return {
    server,
    port,
    reload() {
      const failure = reloadKeyPair(server, config.certFile, config.keyFile);
      if (failure === undefined) {
        appLog.info('cert_reloaded', { certFile: config.certFile });
      } else {
        appLog.warn('cert_reload_failed', {
          certFile: config.certFile,
          keyFile: config.keyFile,
          reason: failure,
          kept: 'previous certificate',
        });
      }
      logs.reopen();
    },
    // Stop accepting, finish what is in flight, close Redis: all within shutdownTimeoutMs. Idempotent.
    stop() {
      stopping ??= (async () => {
        const started = performance.now();
        appLog.info('draining', { timeoutMs: config.shutdownTimeoutMs });
        app.drain();
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        let timer: NodeJS.Timeout | undefined;
        const deadline = new Promise<void>((resolve) => {
          timer = setTimeout(() => {
            appLog.warn('drain_deadline_passed', { timeoutMs: config.shutdownTimeoutMs });
            server.closeAllConnections();
            resolve();
          }, config.shutdownTimeoutMs);
        });
        // Not `closed` alone: a socket still in its TLS handshake is no HTTP connection, and would hold it.
        await Promise.race([closed, deadline]);
        clearTimeout(timer);
        // Redis gets what is left of the budget, at most its own timeout: a stalled Redis must not hold the exit.
        const left = config.shutdownTimeoutMs - (performance.now() - started);
        await store.close(Math.max(0, Math.min(config.redis.timeoutMs, left)));
        appLog.info('stopped');
      })();
      return stopping;
    },
  };
}
