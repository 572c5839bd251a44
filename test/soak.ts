// `npm run soak -- --seconds N [--clients C]`: mixed GET/POST load on a spawned service with log rotation active,
// then the pass criteria: no unexpected status or error, RSS growth under 20% from the middle to the end, rotation
// seen, a clean drain. Prints requests, errors by kind, p50/p99 latency and RSS at start, middle and end.
// Exits 1 when a criterion fails, 2 on a bad flag or when the run overstays its deadline.
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { makeCert, request, serviceEnv, spawnService, startRedis, stopChild, tempDir, type Reply, type RequestOptions } from './helpers.ts';

const args = process.argv.slice(2);
function option(name: string, fallback: number): number {
  const at = args.indexOf(name);
  if (at === -1) return fallback;
  const value = Number(args[at + 1]);
  if (!Number.isInteger(value) || value < 1) {
    console.error(`soak: the value of "${name}" must be an integer >= 1. Received ${args[at + 1]}`);
    process.exit(2);
  }
  return value;
}
const seconds = option('--seconds', 60);
const clients = option('--clients', 8);
const requestTimeoutMs = 10_000;

const sha256 = (text: string) => createHash('sha256').update(text, 'utf8').digest('hex');

// Latency in 0.1 ms buckets up to 10 s, the last one holding everything slower: constant memory for any duration.
const buckets = new Uint32Array(100_001);
let requests = 0;
const errors = new Map<string, number>();
const fail = (kind: string) => errors.set(kind, (errors.get(kind) ?? 0) + 1);

function percentile(p: number): number {
  let seen = 0;
  for (let i = 0; i < buckets.length; i += 1) {
    seen += buckets[i]!;
    if (seen >= requests * p) return i / 10;
  }
  return Infinity;
}

function rssKiB(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1] ?? NaN);
}

// A function, not top-level await: the project's files load as CommonJS (see package.json's scripts).
async function main(): Promise<void> {
  const dir = tempDir('messages-soak-');
  const logDir = path.join(dir, 'logs');
  const [redis, cert] = await Promise.all([startRedis(), makeCert(dir)]);
  const service = await spawnService(serviceEnv({ redis, cert, dir }, { MESSAGES_LOG_MAX_BYTES: '200000', MESSAGES_LOG_BACKUP_COUNT: '3' }));

  async function stopAll(signal: NodeJS.Signals): Promise<number | null> {
    const code = await stopChild(service.child, signal);
    await redis.stop(signal);
    return code;
  }

  // Whatever happens, the run ends: past this deadline the children are killed and the soak exits 2.
  const deadline = setTimeout(() => {
    console.error(`soak: still running ${seconds + 60} s after the start; giving up`);
    stopAll('SIGKILL').finally(() => process.exit(2));
  }, (seconds + 60) * 1000);
  deadline.unref();

  // One request with a bound on its time; a timeout counts as an error and the client goes on.
  function timed(options: RequestOptions): Promise<Reply | 'timeout'> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), requestTimeoutMs);
    });
    return Promise.race([request(service.port, cert.ca, options), timeout]).finally(() => clearTimeout(timer));
  }

  // Each client: 45% POST a new message, 35% GET one it stored (a tenth of them with If-None-Match), 10% GET an
  // unknown digest, 10% /healthz. Every answer is checked against what that request must get.
  async function client(id: number, until: number): Promise<void> {
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    const stored: [string, string][] = [];
    for (let i = 0; performance.now() < until; i += 1) {
      const roll = Math.random();
      let options: RequestOptions;
      let check: (reply: Reply) => string | undefined;
      if (roll < 0.45 || stored.length === 0) {
        const message = `soak ${id} ${i} ${randomBytes(8).toString('hex')}`;
        options = { method: 'POST', path: '/messages', agent, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ message }) };
        check = (reply) => {
          if (reply.status !== 201) return `POST status ${reply.status}`;
          if (JSON.parse(reply.body).digest !== sha256(message)) return 'POST digest mismatch';
          if (stored.length < 1000) stored.push([sha256(message), message]);
          return undefined;
        };
      } else if (roll < 0.8) {
        const [digest, message] = stored[Math.floor(Math.random() * stored.length)]!;
        const revalidate = Math.random() < 0.1;
        options = { path: `/messages/${digest}`, agent, headers: revalidate ? { 'If-None-Match': `"${digest}"` } : {} };
        check = (reply) => {
          if (reply.status !== (revalidate ? 304 : 200)) return `GET status ${reply.status}`;
          if (!revalidate && JSON.parse(reply.body).message !== message) return 'GET message mismatch';
          return undefined;
        };
      } else if (roll < 0.9) {
        options = { path: `/messages/${randomBytes(32).toString('hex')}`, agent };
        check = (reply) => (reply.status === 404 ? undefined : `GET unknown status ${reply.status}`);
      } else {
        options = { path: '/healthz', agent };
        check = (reply) => (reply.status === 200 ? undefined : `healthz status ${reply.status}`);
      }
      const started = performance.now();
      try {
        const reply = await timed(options);
        if (reply === 'timeout') fail('timeout');
        else {
          const problem = check(reply);
          if (problem !== undefined) fail(problem);
        }
      } catch (err) {
        fail(`connection ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      }
      requests += 1;
      buckets[Math.min(buckets.length - 1, Math.round((performance.now() - started) * 10))]! += 1;
    }
    agent.destroy();
  }

  const pid = service.child.pid!;
  const rss = { start: rssKiB(pid), middle: NaN, end: NaN };
  console.log(`soak: ${seconds} s, ${clients} clients, service pid ${pid} on port ${service.port}, logs in ${logDir}`);
  const started = performance.now();
  const until = started + seconds * 1000;
  const middle = setTimeout(() => {
    rss.middle = rssKiB(pid);
    console.log(`soak: middle, ${requests} requests so far, RSS ${rss.middle} KiB`);
  }, (seconds * 1000) / 2);
  await Promise.all(Array.from({ length: clients }, (_, id) => client(id, until)));
  clearTimeout(middle);
  rss.end = rssKiB(pid);
  const elapsed = (performance.now() - started) / 1000;
  const rotated = fs.readdirSync(logDir).filter((name) => /^(access|app)\.log\.\d+$/.test(name)).sort();
  const exitCode = await stopAll('SIGTERM');
  clearTimeout(deadline);

  const growth = (rss.end - rss.middle) / rss.middle;
  const criteria: [string, boolean][] = [
    ['no unexpected status or error', errors.size === 0],
    [`RSS growth from the middle to the end under 20% (${(growth * 100).toFixed(1)}%)`, growth < 0.2],
    [`log rotation happened (${rotated.join(', ') || 'no rotated file'})`, rotated.length > 0],
    [`the service drained and exited 0 on SIGTERM (exit ${exitCode})`, exitCode === 0],
  ];
  console.log(`requests: ${requests} in ${elapsed.toFixed(1)} s (${(requests / elapsed).toFixed(0)}/s)`);
  console.log(`errors: ${errors.size === 0 ? 'none' : JSON.stringify(Object.fromEntries(errors))}`);
  console.log(`latency: p50 ${percentile(0.5).toFixed(1)} ms, p99 ${percentile(0.99).toFixed(1)} ms`);
  console.log(`RSS: start ${rss.start} KiB, middle ${rss.middle} KiB, end ${rss.end} KiB`);
  for (const [criterion, passed] of criteria) console.log(`${passed ? 'PASS' : 'FAIL'} ${criterion}`);
  const failed = criteria.some(([, passed]) => !passed);
  if (!failed) fs.rmSync(dir, { recursive: true, force: true });
  process.exit(failed ? 1 : 0);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
