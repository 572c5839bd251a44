// Test fixtures that start real things: redis-server on a free loopback port, certificates, the service.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { generateCert } from '../lib/certs.ts';
import { loadConfig, projectRoot, type Config } from '../lib/config.ts';
import { createAppLog } from '../lib/app-log.ts';
import { createServiceMetrics } from '../lib/service-metrics.ts';
import { openLogFiles, type LogFiles } from '../lib/log-files.ts';
import { startService, type Service } from '../lib/service.ts';

export function tempDir(prefix = 'messages-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

// A port nothing listens on at this moment. Another process may take it before the caller listens on it: starts that
// choose their own port go through onFreePort(), which tries another one when that happens.
export async function freePort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}

// Resolves when the child prints a line matching `pattern` on stdout or stderr; rejects if it exits first.
export function waitForOutput(child: ChildProcess, pattern: RegExp, timeoutMs = 15_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const onData = (chunk: Buffer) => {
      seen += chunk.toString();
      const line = seen.split('\n').find((l) => pattern.test(l));
      if (line !== undefined) finish(() => resolve(line));
    };
    const onExit = (code: number | null, signal: string | null) =>
      finish(() => reject(new Error(`process exited (${code ?? signal}) before ${pattern}; output:\n${seen}`)));
    const timer = setTimeout(() => finish(() => reject(new Error(`timed out waiting for ${pattern}; output:\n${seen}`))), timeoutMs);
    const finish = (settle: () => void) => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.stderr?.off('data', onData);
      child.off('exit', onExit);
      settle();
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', onExit);
  });
}

// A test file that dies before its `after` hooks (a timeout, a crash) must not leave servers behind.
const children = new Set<ChildProcess>();
const killAll = () => {
  for (const child of children) child.kill('SIGKILL');
};
process.once('exit', killAll);
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    killAll();
    process.exit(128 + (signal === 'SIGTERM' ? 15 : 2));
  });
}

export function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

export async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const exited = once(child, 'exit');
  child.kill(signal);
  const [code] = await exited;
  return code as number | null;
}

export interface RedisServer {
  port: number;
  dir: string;
  child: ChildProcess;
  start(): Promise<void>;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

// Runs `start` on a free port, and on another one when the chosen port was taken meanwhile (up to five tries).
export async function onFreePort<T>(start: (port: number) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await start(await freePort());
    } catch (err) {
      if (attempt === 5 || !/Address already in use|EADDRINUSE/.test(String(err))) throw err;
    }
  }
}

// A throwaway redis-server in its own directory, never the machine's 6379. `start` again after `stop`
// reuses the port and the directory (so an AOF survives a restart). `extraArgs` may be a function, called for each
// try of a port, for arguments that need ports of their own.
export async function startRedis(extraArgs: string[] | (() => Promise<string[]>) = []): Promise<RedisServer> {
  const dir = tempDir('redis-');
  return onFreePort(async (port) => startRedisOn(port, dir, typeof extraArgs === 'function' ? await extraArgs() : extraArgs));
}

async function startRedisOn(port: number, dir: string, extraArgs: string[]): Promise<RedisServer> {
  const redis: RedisServer = {
    port,
    dir,
    child: undefined as unknown as ChildProcess,
    async start() {
      const child = spawn('redis-server', [
        '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no',
        '--logfile', '', ...extraArgs,
      ], { stdio: ['ignore', 'pipe', 'pipe'] });
      track(child);
      redis.child = child;
      await waitForOutput(child, /Ready to accept connections/);
    },
    async stop(signal = 'SIGTERM') {
      await stopChild(redis.child, signal);
    },
  };
  await redis.start();
  return redis;
}


export interface Cert { certFile: string; keyFile: string; ca: Buffer }

export async function makeCert(dir: string): Promise<Cert> {
  const certFile = path.join(dir, 'test.crt');
  const keyFile = path.join(dir, 'test.key');
  await generateCert(certFile, keyFile);
  return { certFile, keyFile, ca: fs.readFileSync(certFile) };
}

export interface TestEnv {
  redis: RedisServer;
  cert: Cert;
  dir: string;
}

// Environment for a service under test: its own port, cert, log directory and Redis.
export function serviceEnv(env: TestEnv, extra: Record<string, string> = {}): Record<string, string> {
  return {
    MESSAGES_PORT: '0',
    MESSAGES_BIND: '127.0.0.1',
    MESSAGES_REDIS_HOST: '127.0.0.1',
    MESSAGES_REDIS_PORT: String(env.redis.port),
    MESSAGES_CERT_FILE: env.cert.certFile,
    MESSAGES_KEY_FILE: env.cert.keyFile,
    MESSAGES_LOG_DIR: path.join(env.dir, 'logs'),
    // Off, so that services started side by side do not contend for 9464; metrics tests turn it on.
    MESSAGES_METRICS_PORT: '0',
    ...extra,
  };
}

export interface InProcess { service: Service; logs: LogFiles; config: Readonly<Config>; stop(): Promise<void> }

// The service in this process: fast to start, and its code counts for coverage directly.
export async function startInProcess(env: Record<string, string>): Promise<InProcess> {
  const config = loadConfig(env);
  const logs = openLogFiles(config);
  const service = await startService(config, logs, createAppLog(logs.app), createServiceMetrics('test'));
  return {
    service,
    logs,
    config,
    async stop() {
      await service.stop();
      logs.close();
    },
  };
}

// The service in this process once app.log says redis_up, for tests whose Redis is up: a request before Redis has
// connected is a 503 (the drain test's POST got one). No request is made, so access.log holds only the test's.
export async function startReady(env: Record<string, string>): Promise<InProcess> {
  const app = await startInProcess(env);
  try {
    const appLog = path.join(app.config.logDir, 'app.log');
    await waitFor(() => readIfExists(appLog).includes('"event":"redis_up"'), 10_000, 'redis_up in app.log');
  } catch (err) {
    await app.stop();
    throw err;
  }
  return app;
}

// The service in this process on a Redis of its own, stopped with it after the test (a frozen Redis is resumed
// first); its stop is idempotent, so a test may stop it itself.
export async function serveOnOwnRedis(t: { after(fn: () => Promise<void>): void }, extra: Record<string, string> = {}) {
  const dir = tempDir();
  const [redis, cert] = await Promise.all([startRedis(), makeCert(dir)]);
  const app = await startReady(serviceEnv({ redis, cert, dir }, extra));
  t.after(async () => {
    redis.child.kill('SIGCONT');
    await app.stop();
    await redis.stop();
  });
  return { redis, cert, app, port: app.service.port };
}

export interface Spawned { child: ChildProcess; port: number; output: () => string }

// The app.log lines of a spawned service (all its processes) for one event, parsed.
export const events = (service: Spawned, event: string) =>
  service.output().split('\n').filter((line) => line.includes(`"event":"${event}"`)).map((line) => JSON.parse(line) as Record<string, unknown>);

// The pids of every process that has listened so far: with workers, one per worker started.
export const listeningPids = (service: Spawned) => events(service, 'listening').map((line) => line.pid as number);

// The service as its own process (`node --require tsx/cjs server.ts`), for signals and exits, not yet listening.
export function spawnProcess(env: Record<string, string>): Spawned {
  const child = spawn(process.execPath, ['--require', 'tsx/cjs', path.join(projectRoot, 'server.ts')], {
    cwd: projectRoot,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  track(child);
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  child.stderr!.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  return { child, port: 0, output: () => output };
}

// The service as its own process, once it listens.
export async function spawnService(env: Record<string, string>): Promise<Spawned> {
  const spawned = spawnProcess(env);
  const line = await waitForOutput(spawned.child, /"event":"listening"/);
  return { ...spawned, port: (JSON.parse(line) as { port: number }).port };
}

export interface Reply { status: number; headers: Record<string, string | string[] | undefined>; body: string }

export interface RequestOptions {
  method?: string;
  path: string;
  headers?: Record<string, string | number>;
  body?: string | Buffer;
  agent?: https.Agent | false;
}

export function request(port: number, ca: Buffer, options: RequestOptions): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: '127.0.0.1',
      servername: 'localhost',
      port,
      ca,
      method: options.method ?? 'GET',
      path: options.path,
      headers: options.headers,
      agent: options.agent ?? false,
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

// Resolves once /readyz answers 200: Redis connects after the server listens, and a request before that is a 503.
export async function untilReady(port: number, ca: Buffer, what = '/readyz 200', timeoutMs = 10_000): Promise<void> {
  await waitFor(async () => (await request(port, ca, { path: '/readyz' })).status === 200, timeoutMs, what);
}

export function postMessage(port: number, ca: Buffer, message: string): Promise<Reply> {
  return request(port, ca, {
    method: 'POST',
    path: '/messages',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ message }),
  });
}

// How many connections a server in this process holds open now.
export const openConnections = (server: net.Server) => new Promise<number>((resolve, reject) =>
  server.getConnections((err, count) => (err ? reject(err) : resolve(count))));

// For state with no event to wait on (a file's contents, a port coming back): a bounded poll.
export async function waitFor<T>(probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

export function readIfExists(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}
