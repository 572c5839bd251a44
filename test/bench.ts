// `npm run bench`: the service against the floor of issue 14 (test/floor.ts: bare node:https, the service's certificate
// and Redis client, one Redis command per request) and, when installed, Fastify 5 + redis with an access log, under wrk,
// in the same run, interleaved. Prints each target of issue 14 as a same-run ratio to the floor.
// Flags: --short (or BENCH_SHORT=1: ~1 s per scenario, one round, a wiring and correctness check for CI),
// --rounds N (medians of N rounds), --duration S (seconds per scenario and server), --connections N.
// Optional: a Fastify 5 service (test/fastify-cmp.mjs) when fastify is installed in BENCH_FASTIFY_DIR [/tmp/fastify-cmp].
// Exits 1 when a response was wrong, 2 when a tool is missing; a target not met is reported, never an exit code, since
// the machine's drift makes timing no gate. Numbers are only comparable within one run.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { projectRoot } from '../lib/config.ts';
import { integerOption } from './cli-options.ts';
import { freePort, makeCert, request, serviceEnv, startRedis, stopChild, tempDir, waitForOutput, type Cert } from './helpers.ts';

const args = process.argv.slice(2);
const option = (name: string, fallback: number): number => integerOption(args, name, fallback);
const short = args.includes('--short') || process.env.BENCH_SHORT === '1';
const roundCount = short ? 1 : option('--rounds', 1);
const seconds = short ? 1 : option('--duration', 5);
const connections = option('--connections', 32);
// Optional: Fastify 5 installed in a scratch directory outside the repo, never a dependency of the project.
const fastifyDir = process.env.BENCH_FASTIFY_DIR ?? '/tmp/fastify-cmp';
const withFastify = fs.existsSync(path.join(fastifyDir, 'node_modules', 'fastify', 'package.json'));

const sha256 = (text: string) => createHash('sha256').update(text, 'utf8').digest('hex');
const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};
const failures: string[] = [];
const check = (ok: boolean, what: string) => {
  if (!ok) failures.push(what);
};

function has(command: string, versionArg: string): boolean {
  try {
    execFileSync(command, [versionArg], { stdio: 'ignore' });
    return true;
  } catch (err) {
    // wrk --version exits 1 after printing its version; only a missing binary is fatal.
    return (err as NodeJS.ErrnoException).code !== 'ENOENT';
  }
}

if (!has('wrk', '--version')) {
  console.error('bench: wrk is not installed. Install it from Debian\'s packages: apt-get install -y wrk');
  process.exit(2);
}
// The server and redis-server get core 0, wrk core 1: wrk opening TLS connections saturates its core, and a
// redis-server starved there would slow the service for want of a third core, not by its own cost (which is only the
// server process's CPU, read from /proc). Without taskset or a second core, nothing is pinned.
const pinned = has('taskset', '--version') && os.availableParallelism() >= 2;
const serverCore = '0';
const clientCore = '1';
const clockTicks = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim());

// ---- /proc: CPU time and resident memory of a server process and its descendants (cluster workers)

function descendants(pid: number): number[] {
  const parents = new Map<number, number[]>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parents.set(ppid, [...(parents.get(ppid) ?? []), Number(entry)]);
    } catch {
      // The process ended between readdir and read.
    }
  }
  const family = [pid];
  for (let i = 0; i < family.length; i += 1) family.push(...(parents.get(family[i]!) ?? []));
  return family;
}

// utime + stime, fields 14 and 15 of /proc/<pid>/stat, counted after the ")" that ends the command name.
function cpuMicros(pid: number): number {
  let ticks = 0;
  for (const member of descendants(pid)) {
    try {
      const fields = fs.readFileSync(`/proc/${member}/stat`, 'utf8').split(')').pop()!.trim().split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // Gone: its time is no longer ours to count.
    }
  }
  return (ticks * 1e6) / clockTicks;
}

// Largest single process (the issue's limit is per process) and the sum over the family.
function rss(pid: number): { max: number; total: number } {
  let max = 0;
  let total = 0;
  for (const member of descendants(pid)) {
    try {
      const kb = Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${member}/status`, 'utf8'))?.[1] ?? 0);
      max = Math.max(max, kb * 1024);
      total += kb * 1024;
    } catch {
      // Gone.
    }
  }
  return { max, total };
}

// ---- servers

// accessLog: the file with one line per answered request (the service's, Fastify's).
interface Server { name: string; port: number; child: ChildProcess; accessLog?: string }

const children: ChildProcess[] = [];
const loopback = '127.0.0.1';

function launch(command: string[], env: Record<string, string>, core: string | undefined): ChildProcess {
  const argv = core !== undefined && pinned ? ['taskset', '-c', core, ...command] : command;
  const child = spawn(argv[0]!, argv.slice(1), { cwd: projectRoot, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  // Drain output so a chatty child never blocks on a full pipe.
  child.stdout!.resume();
  child.stderr!.resume();
  return child;
}

async function startFloor(cert: Cert, redisPort: number): Promise<Server> {
  const child = launch([process.execPath, '--require', 'tsx/cjs', 'test/floor.ts', cert.certFile, cert.keyFile, String(redisPort)], {}, serverCore);
  const line = await waitForOutput(child, /^listening \d+/);
  return { name: 'floor', port: Number(line.split(' ')[1]), child };
}

async function startFastify(cert: Cert, redisPort: number, logFile: string): Promise<Server> {
  const child = launch([process.execPath, '--require', 'tsx/cjs', 'test/fastify-cmp.mjs', fastifyDir, cert.certFile, cert.keyFile, String(redisPort), logFile], {}, serverCore);
  const line = await waitForOutput(child, /^listening \d+/);
  return { name: 'fastify', port: Number(line.split(' ')[1]), child, accessLog: logFile };
}

function healthy(port: number, ca: Buffer): Promise<boolean> {
  return request(port, ca, { path: '/healthz' }).then((reply) => reply.status === 200, () => false);
}

// Start to first 200 on /healthz, polled every 5 ms over a new connection.
async function startService(name: string, env: Record<string, string>, ca: Buffer, core: string | undefined): Promise<Server & { startMs: number }> {
  const port = await freePort();
  const started = performance.now();
  const child = launch([process.execPath, '--require', 'tsx/cjs', 'server.ts'], { ...env, MESSAGES_PORT: String(port) }, core);
  while (!(await healthy(port, ca))) {
    if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode} before answering /healthz`);
    if (performance.now() - started > 20_000) throw new Error(`${name} did not answer /healthz within 20 s`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return { name, port, child, startMs: performance.now() - started, accessLog: path.join(env.MESSAGES_LOG_DIR!, 'access.log') };
}

// ---- wrk

// The targets of issue 14: CPU per request within `cpuLimit` of the floor's, and throughput at least `rpsLimit` of it.
interface Scenario { key: string; title: string; status: number; cpuLimit: number; rpsLimit?: number }

const scenarios: Scenario[] = [
  { key: 'get', title: 'GET stored', status: 200, cpuLimit: 1.1 },
  { key: 'missing', title: 'GET missing', status: 404, cpuLimit: 1.1 },
  { key: 'post', title: 'POST new', status: 201, cpuLimit: 1.2 },
  { key: 'close', title: 'GET with a new TLS connection each', status: 200, cpuLimit: 1.1, rpsLimit: 0.95 },
];
// The serving process's RSS under load may exceed the floor's by this much (issue 14).
const rssAllowanceMb = 10;

const luaString = (text: string) => JSON.stringify(text);

// One Lua script per run: prepared GETs cycled over `paths`, or POSTs of unique messages "bench TAG THREAD N".
function luaScript(scenario: Scenario, paths: string[], tag: string): string {
  const headers = scenario.key === 'close' ? '{ ["Connection"] = "close" }' : '{}';
  return `-- generated by test/bench.ts for scenario ${scenario.key}
local paths = { ${paths.map(luaString).join(', ')} }
local prepared = {}
local i = 0
local n = 0
threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  for k, p in ipairs(paths) do prepared[k] = wrk.format("GET", p, ${headers}) end
end
function request()
  ${scenario.key === 'post'
    ? `n = n + 1
  return wrk.format("POST", "/messages", { ["Content-Type"] = "application/json" }, string.format('{"message":"bench %s %d %d"}', ${luaString(tag)}, tid, n))`
    : `i = i % #prepared + 1
  return prepared[i]`}
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d %d %d %d %d\\n", summary.duration, summary.requests,
    e.connect, e.read, e.write, e.timeout, e.status, latency:percentile(50), latency:percentile(99)))
end
`;
}

interface Sample {
  requests: number; rps: number; p50Ms: number; p99Ms: number; cpuUs: number; rssMb: number;
  status4xx5xx: number; socketErrors: number;
}

async function runWrk(server: Server, scenario: Scenario, paths: string[], tag: string, runSeconds: number, dir: string, clientOptions = { core: clientCore as string | undefined, threads: 1 }): Promise<Sample> {
  const script = path.join(dir, `${scenario.key}-${tag}.lua`);
  fs.writeFileSync(script, luaScript(scenario, paths, tag));
  const pid = server.child.pid!;
  const cpuBefore = cpuMicros(pid);
  const wrkArgs = ['wrk', `-t${clientOptions.threads}`, `-c${connections}`, `-d${runSeconds}s`, '--timeout', '10s', '-s', script, `https://${loopback}:${server.port}/`];
  const argv = clientOptions.core !== undefined && pinned ? ['taskset', '-c', clientOptions.core, ...wrkArgs] : wrkArgs;
  const wrk = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  wrk.stdout.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  wrk.stderr.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  // The largest RSS of three samples, at a quarter, half and three quarters of the run.
  let memory = 0;
  const sampler = setInterval(() => { memory = Math.max(memory, rss(pid).max); }, (runSeconds * 1000) / 4);
  const [code] = await new Promise<[number | null]>((resolve) => wrk.once('exit', (c) => resolve([c])));
  clearInterval(sampler);
  const cpu = cpuMicros(pid) - cpuBefore;
  const line = /^BENCH (.*)$/m.exec(output);
  if (code !== 0 || line === null) throw new Error(`wrk failed (exit ${code}) against ${server.name}:\n${output}`);
  const [durationUs, requests, connect, read, write, timeout, status, p50, p99] = line[1]!.split(' ').map(Number) as number[];
  return {
    requests: requests!,
    rps: requests! / (durationUs! / 1e6),
    p50Ms: p50! / 1000,
    p99Ms: p99! / 1000,
    cpuUs: requests! > 0 ? cpu / requests! : Infinity,
    rssMb: memory / 2 ** 20,
    status4xx5xx: status!,
    socketErrors: connect! + read! + write! + timeout!,
  };
}

// ---- correctness: wrk's own counts, a sample of responses read and compared in full, one log line per request

interface Corpus { messages: string[]; digests: string[]; missing: string[] }

async function preload(port: number, ca: Buffer, count: number): Promise<Corpus> {
  const agent = new https.Agent({ keepAlive: true, maxSockets: 16 });
  const messages = Array.from({ length: count }, (_, i) => `bench stored ${i} ${randomBytes(24).toString('hex')} \u00e9\u{1F600}`);
  const digests: string[] = [];
  for (let i = 0; i < count; i += 64) {
    await Promise.all(messages.slice(i, i + 64).map(async (message, j) => {
      const reply = await request(port, ca, { method: 'POST', path: '/messages', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ message }), agent });
      check(reply.status === 201 && reply.body === `{"digest":"${sha256(message)}"}`, `preload: POST answered ${reply.status} ${reply.body}`);
      digests[i + j] = sha256(message);
    }));
  }
  agent.destroy();
  return { messages, digests, missing: Array.from({ length: 100 }, () => sha256(randomBytes(16).toString('hex'))) };
}

// The service's answers in full; for the floor and Fastify, a stored message and the status of a missing one. After a POST
// run, the first messages wrk posted to `server` are read back through the service: all three share one Redis.
async function validate(server: Server, service: Server, ca: Buffer, scenario: Scenario, corpus: Corpus, tag: string): Promise<void> {
  const where = `${server.name} ${scenario.title}`;
  const get = (on: Server, digest: string, headers: Record<string, string> = {}) => request(on.port, ca, { path: `/messages/${digest}`, headers });
  if (server === service) {
    for (const k of [0, 1, corpus.digests.length - 1]) {
      const headers: Record<string, string> = scenario.key === 'close' ? { Connection: 'close' } : {};
      const reply = await get(server, corpus.digests[k]!, headers);
      check(reply.status === 200 && reply.body === JSON.stringify({ message: corpus.messages[k] }) && reply.headers.etag === `"${corpus.digests[k]}"`,
        `${where}: GET of a stored digest answered ${reply.status} ${reply.body.slice(0, 120)}`);
      if (scenario.key === 'close') check(reply.headers.connection === 'close', `${where}: no Connection: close in the answer`);
    }
    const missing = await get(server, corpus.missing[0]!);
    check(missing.status === 404 && missing.body === `{"err_msg":"Message not found for hash: ${corpus.missing[0]}"}`, `${where}: GET of a missing digest answered ${missing.status} ${missing.body}`);
  } else {
    const [stored, missing] = [await get(server, corpus.digests[0]!), await get(server, corpus.missing[0]!)];
    // The floor answers a fixed body per status; Fastify the message.
    const body = server.name === 'floor' ? '{"message":"stored"}' : JSON.stringify({ message: corpus.messages[0] });
    check(stored.status === 200 && stored.body === body && missing.status === 404,
      `${where}: a stored and a missing digest answered ${stored.status} ${stored.body.slice(0, 120)} and ${missing.status}`);
  }
  if (scenario.key === 'post') {
    // wrk calls request() once to verify the script before its first thread starts, so thread 1's first message on
    // the wire is number 2.
    for (let n = 2; n <= 4; n += 1) {
      const message = `bench ${tag} 1 ${n}`;
      const reply = await get(service, sha256(message));
      check(reply.status === 200 && reply.body === JSON.stringify({ message }), `${where}: "${message}" posted by wrk is not stored (${reply.status})`);
    }
  }
}

function countLines(file: string, from: number): number {
  const fd = fs.openSync(file, 'r');
  const chunk = Buffer.alloc(fs.fstatSync(fd).size - from);
  fs.readSync(fd, chunk, 0, chunk.length, from);
  fs.closeSync(fd);
  let lines = 0;
  for (let at = chunk.indexOf(10); at !== -1; at = chunk.indexOf(10, at + 1)) lines += 1;
  return lines;
}

// The log's size once no line has been added for 300 ms (Fastify's buffer is flushed every 100 ms), bounded at 5 s.
async function settledSize(file: string): Promise<number> {
  const deadline = performance.now() + 5000;
  let size = fs.statSync(file).size;
  let since = performance.now();
  while (performance.now() - since < 300 && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    const now = fs.statSync(file).size;
    if (now !== size) {
      size = now;
      since = performance.now();
    }
  }
  return size;
}

// ---- report

const fixed = (value: number, digits: number) => (Number.isFinite(value) ? value.toFixed(digits) : '-');

// Each ratio is the median of per-round ratios, each within one round, so drift between rounds cancels.
interface Results { samples: Map<string, Sample[]>; ratios: Map<string, number[]> }
const key = (scenario: Scenario, name: string) => `${scenario.key}/${name}`;
const medianOf = (results: Results, what: string) => {
  const values = results.ratios.get(what);
  return values === undefined ? NaN : median(values);
};
// Each round's value after the median, so that the drift between rounds shows.
const perRound = (results: Results, what: string, digits: number) => {
  const values = results.ratios.get(what) ?? [];
  return values.length > 1 ? ` (${values.map((v) => fixed(v, digits)).join(', ')})` : '';
};

function detailTable(results: Results, servers: string[]): string {
  const rows = ['| scenario | server | req/s | p50 ms | p99 ms | CPU µs/req | RSS MB | 4xx/5xx | socket errors | CPU × floor | req/s × floor | RSS − floor MB |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |'];
  for (const scenario of scenarios) {
    for (const name of servers) {
      const runs = results.samples.get(key(scenario, name));
      if (runs === undefined) continue;
      const m = (pick: (s: Sample) => number) => median(runs.map(pick));
      const vsFloor = (what: string, digits: number) => (name === 'floor' ? '-' : fixed(medianOf(results, `${key(scenario, name)}/${what}`), digits));
      rows.push(`| ${scenario.title} | ${name} | ${fixed(m((s) => s.rps), 0)} | ${fixed(m((s) => s.p50Ms), 2)} | ${fixed(m((s) => s.p99Ms), 2)} | ` +
        `${fixed(m((s) => s.cpuUs), 1)} | ${fixed(m((s) => s.rssMb), 0)} | ${m((s) => s.status4xx5xx)} | ${m((s) => s.socketErrors)} | ` +
        `${vsFloor('cpu', 2)} | ${vsFloor('rps', 2)} | ${vsFloor('rss', 0)} |`);
    }
  }
  return rows.join('\n');
}

// Issue 14's targets, floor, service and Fastify side by side. Returns the table and the targets not met.
function targetTable(results: Results, withFastifyRows: boolean): { text: string; missed: string[] } {
  const rows = ['| scenario | measure | floor | service | Fastify | service vs floor | target | service vs Fastify |',
    '| --- | --- | ---: | ---: | ---: | ---: | --- | --- |'];
  const missed: string[] = [];
  const verdict = (what: string, ok: boolean) => {
    if (!ok) missed.push(what);
    return ok ? 'met' : 'NOT met';
  };
  for (const scenario of scenarios) {
    const absolute = (name: string, pick: (s: Sample) => number, digits: number) => {
      const runs = results.samples.get(key(scenario, name));
      return runs === undefined ? '-' : fixed(median(runs.map(pick)), digits);
    };
    const cpu = medianOf(results, `${key(scenario, 'service')}/cpu`);
    const cpuFastify = medianOf(results, `${key(scenario, 'service')}/cpu-fastify`);
    const fastifyCell = withFastifyRows
      ? `${fixed(cpuFastify, 2)}×${perRound(results, `${key(scenario, 'service')}/cpu-fastify`, 2)} ≤ 1.00× ${verdict(`${scenario.title}: CPU ≤ Fastify`, cpuFastify <= 1)}` : '-';
    rows.push(`| ${scenario.title} | CPU µs/req | ${absolute('floor', (s) => s.cpuUs, 1)} | ${absolute('service', (s) => s.cpuUs, 1)} | ${absolute('fastify', (s) => s.cpuUs, 1)} | ` +
      `${fixed(cpu, 2)}×${perRound(results, `${key(scenario, 'service')}/cpu`, 2)} | ≤ ${scenario.cpuLimit.toFixed(2)}× ${verdict(`${scenario.title}: CPU ≤ ${scenario.cpuLimit}× floor`, cpu <= scenario.cpuLimit)} | ${fastifyCell} |`);
    if (scenario.rpsLimit !== undefined) {
      const rps = medianOf(results, `${key(scenario, 'service')}/rps`);
      rows.push(`| ${scenario.title} | req/s | ${absolute('floor', (s) => s.rps, 0)} | ${absolute('service', (s) => s.rps, 0)} | ${absolute('fastify', (s) => s.rps, 0)} | ` +
        `${fixed(rps, 2)}×${perRound(results, `${key(scenario, 'service')}/rps`, 2)} | ≥ ${scenario.rpsLimit.toFixed(2)}× ${verdict(`${scenario.title}: req/s ≥ ${scenario.rpsLimit}× floor`, rps >= scenario.rpsLimit)} | |`);
    }
    const extra = medianOf(results, `${key(scenario, 'service')}/rss`);
    rows.push(`| ${scenario.title} | RSS MB | ${absolute('floor', (s) => s.rssMb, 0)} | ${absolute('service', (s) => s.rssMb, 0)} | ${absolute('fastify', (s) => s.rssMb, 0)} | ` +
      `${extra >= 0 ? '+' : ''}${fixed(extra, 0)} MB${perRound(results, `${key(scenario, 'service')}/rss`, 0)} | ≤ +${rssAllowanceMb} MB ${verdict(`${scenario.title}: RSS ≤ floor + ${rssAllowanceMb} MB`, extra <= rssAllowanceMb)} | |`);
  }
  return { text: rows.join('\n'), missed };
}

// ---- the run

async function main(): Promise<void> {
  const dir = tempDir('messages-bench-');
  const redis = await startRedis();
  children.push(redis.child);
  if (pinned) execFileSync('taskset', ['-a', '-p', '-c', serverCore, String(redis.child.pid)], { stdio: 'ignore' });
  const cert = await makeCert(dir);
  const envFor = (workers: string, logDir: string) => serviceEnv({ redis, cert, dir: logDir }, {
    MESSAGES_WORKERS: workers,
    // Rotation off: the bench counts access.log lines, and a rename per 100 MB costs nothing per request.
    MESSAGES_LOG_MAX_BYTES: '0',
  });

  console.log(`bench: ${short ? 'short mode (wiring and correctness check, not a timing gate)' : `${roundCount} round(s) of ${seconds} s per scenario and server`}, ` +
    `${connections} connections, wrk ${pinned ? `pinned to core ${clientCore}, servers and redis-server to core ${serverCore}` : 'and servers unpinned (no taskset or one core)'}`);
  console.log(`bench: ${os.availableParallelism()} CPUs, load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')} at start. ` +
    'Other work on this machine skews absolute numbers: compare only the ratios of one run, and treat differences under 10-15% as noise.');

  const startTimes: number[] = [];
  for (let i = 0; i < (short ? 1 : 3); i += 1) {
    const probe = await startService('start probe', envFor('1', fs.mkdtempSync(path.join(dir, 'probe-'))), cert.ca, serverCore);
    startTimes.push(probe.startMs);
    await stopChild(probe.child);
  }

  const service = await startService('service', envFor('1', fs.mkdtempSync(path.join(dir, 'w1-'))), cert.ca, serverCore);
  const corpus = await preload(service.port, cert.ca, short ? 200 : 1000);
  const paths = { get: corpus.digests.slice(0, 100).map((d) => `/messages/${d}`), missing: corpus.missing.map((d) => `/messages/${d}`) };
  const pathsOf = (scenario: Scenario) => (scenario.key === 'missing' ? paths.missing : paths.get);

  const servers = [await startFloor(cert, redis.port), service];
  if (withFastify) {
    const logFile = path.join(dir, 'fastify-access.log');
    fs.writeFileSync(logFile, '');
    servers.push(await startFastify(cert, redis.port, logFile));
  }
  if (!short) {
    for (const scenario of scenarios) {
      for (const server of servers) await runWrk(server, scenario, pathsOf(scenario), `warm${randomBytes(4).toString('hex')}`, 1, dir);
    }
  }

  const results: Results = { samples: new Map(), ratios: new Map() };
  const addRatio = (what: string, value: number) => results.ratios.set(what, [...(results.ratios.get(what) ?? []), value]);
  for (let round = 1; round <= roundCount; round += 1) {
    // Every other round runs the servers in reverse order, so that a drift within a round favours none of them.
    const order = round % 2 === 1 ? servers : [...servers].reverse();
    for (const scenario of scenarios) {
      const byServer = new Map<string, Sample>();
      for (const server of order) {
        const tag = `r${round}${randomBytes(4).toString('hex')}`;
        const logFrom = server.accessLog === undefined ? 0 : await settledSize(server.accessLog);
        const sample = await runWrk(server, scenario, pathsOf(scenario), tag, seconds, dir);
        byServer.set(server.name, sample);
        results.samples.set(key(scenario, server.name), [...(results.samples.get(key(scenario, server.name)) ?? []), sample]);
        const where = `round ${round} ${scenario.title} ${server.name}`;
        check(sample.requests > 0, `${where}: no request completed`);
        check(sample.socketErrors === 0, `${where}: ${sample.socketErrors} socket errors`);
        const expected4xx5xx = scenario.status >= 400 ? sample.requests : 0;
        check(sample.status4xx5xx === expected4xx5xx, `${where}: ${sample.status4xx5xx} answers >= 400, expected ${expected4xx5xx}`);
        if (server.accessLog !== undefined) {
          // Access logging stays on: one line per answered request, and at most one more per connection for the
          // requests in flight when wrk stopped, answered after it counted.
          await settledSize(server.accessLog);
          const lines = countLines(server.accessLog, logFrom);
          check(lines >= sample.requests && lines <= sample.requests + connections,
            `${where}: ${lines} access-log lines for ${sample.requests} requests over ${connections} connections`);
        }
        await validate(server, service, cert.ca, scenario, corpus, tag);
      }
      const floor = byServer.get('floor')!;
      for (const [name, sample] of byServer) {
        if (name === 'floor') continue;
        addRatio(`${key(scenario, name)}/cpu`, sample.cpuUs / floor.cpuUs);
        addRatio(`${key(scenario, name)}/rps`, sample.rps / floor.rps);
        addRatio(`${key(scenario, name)}/rss`, sample.rssMb - floor.rssMb);
      }
      const fastify = byServer.get('fastify');
      if (fastify !== undefined) addRatio(`${key(scenario, 'service')}/cpu-fastify`, byServer.get('service')!.cpuUs / fastify.cpuUs);
    }
  }

  console.log(`\n### Issue 14's targets, workers=1 (${roundCount > 1 ? `medians of ${roundCount} interleaved rounds` : 'one round'}, ${seconds} s per run, ${connections} keep-alive connections)\n`);
  const targets = targetTable(results, withFastify);
  console.log(targets.text);
  console.log('\nEach "vs" column is the median of per-round ratios (RSS: differences), each within one round, each round\'s in ' +
    'brackets: it can differ from the ratio of the medians beside it when the machine drifts between rounds. RSS is the largest ' +
    'of three samples taken mid-run.');
  console.log(targets.missed.length === 0 ? '\nbench: every target of issue 14 met in this run.'
    : `\nbench: ${targets.missed.length} target(s) of issue 14 not met in this run: ${targets.missed.join('; ')}.`);
  console.log('\n### Every run\n');
  console.log(detailTable(results, servers.map((s) => s.name)));
  if (!withFastify) {
    console.log(`\n(Fastify comparison skipped: no fastify in ${fastifyDir}. To add it, outside the repo: ` +
      `mkdir -p ${fastifyDir} && cd ${fastifyDir} && npm init -y && npm install fastify@5; or set BENCH_FASTIFY_DIR.)`);
  }
  console.log(`\nstart to first 200 on /healthz: ${startTimes.map((t) => `${t.toFixed(0)} ms`).join(', ')} (target ≤ 1000 ms: ${median(startTimes) <= 1000 ? 'met' : 'NOT met'})`);

  await compareWorkers(service, envFor('auto', fs.mkdtempSync(path.join(dir, 'wauto-'))), cert, paths.get, dir);

  for (const child of children) await stopChild(child);
  console.log(`\nbench: load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')} at the end.`);
  fs.rmSync(dir, { recursive: true, force: true });
}

// Both unpinned, wrk with two threads: how much the second core adds (wrk needs a share of it too).
async function compareWorkers(single: Server, autoEnv: Record<string, string>, cert: Cert, paths: string[], dir: string): Promise<void> {
  if (pinned) execFileSync('taskset', ['-a', '-p', '-c', `0-${os.availableParallelism() - 1}`, String(single.child.pid)], { stdio: 'ignore' });
  const auto = await startService('workers=auto', autoEnv, cert.ca, undefined);
  const rows = ['| scenario | workers | req/s | p99 ms | CPU µs/req (all processes) | req/s × workers=1 |', '| --- | --- | ---: | ---: | ---: | ---: |'];
  for (const scenario of scenarios.filter((s) => s.key === 'get' || s.key === 'close')) {
    const runs = new Map<string, Sample[]>([['1', []], [`auto (${os.availableParallelism()})`, []]]);
    if (!short) {
      for (const server of [single, auto]) await runWrk(server, scenario, paths, `warm${randomBytes(4).toString('hex')}`, 1, dir, { core: undefined, threads: 2 });
    }
    for (let round = 0; round < roundCount; round += 1) {
      for (const [label, server] of [['1', single], [`auto (${os.availableParallelism()})`, auto]] as const) {
        const sample = await runWrk(server, scenario, paths, `w${randomBytes(4).toString('hex')}`, seconds, dir, { core: undefined, threads: 2 });
        check(sample.socketErrors === 0 && sample.status4xx5xx === 0, `workers=${label} ${scenario.title}: ${sample.socketErrors} socket errors, ${sample.status4xx5xx} answers >= 400`);
        runs.get(label)!.push(sample);
      }
    }
    const base = median(runs.get('1')!.map((s) => s.rps));
    for (const [label, samples] of runs) {
      const rps = median(samples.map((s) => s.rps));
      rows.push(`| ${scenario.title} | ${label} | ${rps.toFixed(0)} | ${median(samples.map((s) => s.p99Ms)).toFixed(2)} | ${median(samples.map((s) => s.cpuUs)).toFixed(1)} | ${(rps / base).toFixed(2)} |`);
    }
  }
  const memory = rss(auto.child.pid!);
  console.log(`\n### workers=1 vs workers=auto (both unpinned, wrk with 2 threads on the same ${os.availableParallelism()} cores)\n`);
  console.log(rows.join('\n'));
  console.log(`\nworkers=auto: start to first 200 on /healthz ${auto.startMs.toFixed(0)} ms; RSS ${(memory.total / 2 ** 20).toFixed(0)} MB in all, largest process ${(memory.max / 2 ** 20).toFixed(0)} MB`);
}

const stopAll = () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
};
process.on('SIGINT', () => {
  stopAll();
  process.exit(130);
});

main().then(() => {
  if (failures.length > 0) {
    console.error(`\nbench: ${failures.length} wrong response(s) or count(s):\n  ${failures.slice(0, 20).join('\n  ')}`);
    process.exitCode = 1;
  } else {
    console.log('bench: every checked response was right.');
  }
}, (err: unknown) => {
  stopAll();
  console.error(err);
  process.exitCode = 1;
});
