// Instructions per request of the service and the floor (test/floor.ts), per scenario, counted by valgrind's callgrind:
// the way to see a change below this machine's 2x drift (issue 14). Each server runs under callgrind and this process
// is its client: a warm-up over every scenario, then per scenario phases of a fixed number of requests, over
// keep-alive connections opened beforehand (a new connection each in the TLS scenario), until two phases in a row
// agree, then the phases counted. Each phase is a dump of its own (test/callgrind-mark.ts). It prints instructions per
// request, the service's ratio to the floor, and where the difference goes: by part (V8, OpenSSL, each JS file...),
// by function, and the service's own functions with what they call, the JIT's code named through V8's perf map.
// Only user-space instructions are counted: time in the kernel (system calls, socket copies) is not in them.
// usage: node --require tsx/cjs test/callgrind.ts [--requests N] [--warmup N] [--tls-requests N] [--connections K]
//   [--repeat R] [--top T] [--scenarios get,missing,post,close] [--out DIR]
//   or: node --require tsx/cjs test/callgrind.ts --from DIR (the report of an earlier run, from its dumps)
// Exits 1 when an answer was wrong, 2 when valgrind is missing. Takes 10-15 minutes at the defaults.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { projectRoot } from '../lib/config.ts';
import { integerOption } from './cli-options.ts';
import { createClient } from '@redis/client';
import { freePort, makeCert, serviceEnv, startRedis, stopChild, tempDir, track, waitForOutput, type Cert, type RedisServer } from './helpers.ts';

const args = process.argv.slice(2);
const option = (name: string, fallback: number): number => integerOption(args, name, fallback);
const text = (name: string, fallback: string): string => {
  const at = args.indexOf(name);
  return at === -1 ? fallback : (args[at + 1] ?? fallback);
};
const requests = option('--requests', 4000);
const warmup = option('--warmup', 4000);
// A full TLS handshake costs about fifty keep-alive requests: fewer of them give as many instructions to count.
const tlsRequests = option('--tls-requests', 200);
const connections = option('--connections', 32);
const repeat = option('--repeat', 2);
// Settled: two phases in a row within 5% of each other (steady phases of 4000 requests still differ by up to 8%, by
// where the garbage collections fall), or the sixth phase.
const settledWithin = 0.05;
const maxSettlingPhases = 6;
const top = option('--top', 12);
const outDir = args.includes('--out') ? path.resolve(text('--out', '.')) : path.join(os.tmpdir(), `messages-callgrind-${process.pid}`);

interface Scenario { key: string; title: string; status: number }
const allScenarios: Scenario[] = [
  { key: 'get', title: 'GET stored', status: 200 },
  { key: 'missing', title: 'GET missing', status: 404 },
  { key: 'post', title: 'POST new', status: 201 },
  { key: 'close', title: 'GET with a new TLS connection each', status: 200 },
];
const wanted = text('--scenarios', allScenarios.map((s) => s.key).join(',')).split(',');
const scenarios = allScenarios.filter((s) => wanted.includes(s.key));

try {
  execFileSync('valgrind', ['--version'], { stdio: 'ignore' });
} catch {
  console.error('callgrind: valgrind is not installed. Install it from Debian\'s packages: apt-get install -y valgrind');
  process.exit(2);
}

const sha256 = (message: string) => createHash('sha256').update(message, 'utf8').digest('hex');
// The mean, not the median: phases alternate above and below the steady cost, by where the collections fall.
const mean = (values: number[]) => values.reduce((sum, value) => sum + value, 0) / values.length;
// Answers with another status than their scenario's, by server, scenario and status.
const wrongAnswers = new Map<string, number>();
let resets = 0;

// ---- a server under callgrind

// mark() ends a phase and returns how many bytes V8 had written to its perf map by then; phaseDump() names its dump.
interface Traced { name: string; port: number; child: ChildProcess; outFile: string; marks: number; mark(): Promise<number>; phaseDump(): string }

// --perf-basic-prof: V8 writes /tmp/perf-<pid>.map, which names the JIT's code; --interpreted-frames-native-stack gives
// each interpreted function a trampoline of its own there. Both servers run with them, so their ratio stays fair.
// --dump-before=uv_loadavg: a dump (and zeroed counts) whenever test/callgrind-mark.ts calls os.loadavg().
async function startTraced(name: string, script: string[], env: Record<string, string>, ready: (child: ChildProcess) => Promise<number>): Promise<Traced> {
  const outFile = path.join(outDir, `${name}.callgrind`);
  const child = spawn('valgrind', [
    '--tool=callgrind', '--dump-before=uv_loadavg', `--callgrind-out-file=${outFile}`,
    process.execPath, '--perf-basic-prof', '--interpreted-frames-native-stack',
    '--require', 'tsx/cjs', '--require', './test/callgrind-mark.ts', ...script,
  ], { cwd: projectRoot, env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  track(child);
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
  child.stdout!.resume();
  const port = await ready(child);
  const traced: Traced = {
    name, port, child, outFile, marks: 0,
    // Resolves once the dump is written: the preload answers after os.loadavg() returns.
    async mark() {
      traced.marks += 1;
      const expected = traced.marks;
      child.stdin!.write('mark\n');
      const deadline = Date.now() + 120_000;
      while ((stderr.match(/^callgrind: marked$/gm) ?? []).length < expected) {
        if (child.exitCode !== null || Date.now() > deadline) throw new Error(`${name} did not mark its dump:\n${stderr.slice(-2000)}`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      return fs.existsSync(perfMapOf(child)) ? fs.statSync(perfMapOf(child)).size : 0;
    },
    phaseDump: () => `${outFile}.${traced.marks}`,
  };
  return traced;
}

const perfMapOf = (child: ChildProcess) => `/tmp/perf-${child.pid}.map`;

// Under callgrind a server starts in about 40 s and runs about 50x slower than natively.
const startTimeoutMs = 300_000;

function startFloor(cert: Cert, redisPort: number): Promise<Traced> {
  return startTraced('floor', ['test/floor.ts', cert.certFile, cert.keyFile, String(redisPort)], {}, async (child) => {
    const line = await waitForOutput(child, /^listening \d+/, startTimeoutMs);
    return Number(line.split(' ')[1]);
  });
}

async function startService(cert: Cert, redis: RedisServer, dir: string): Promise<Traced> {
  const port = await freePort();
  const env = serviceEnv({ redis, cert, dir }, { MESSAGES_PORT: String(port), MESSAGES_WORKERS: '1' });
  return startTraced('service', ['server.ts'], env, async (child) => {
    await waitForOutput(child, /"event":"listening"/, startTimeoutMs);
    return port;
  });
}

// ---- the client

interface Load { paths: string[]; post: boolean; fresh: boolean }

// `count` requests, `connections` at a time; a fresh load opens a new TLS connection (full handshake) for each.
async function drive(server: Traced, agent: https.Agent, ca: Buffer, scenario: Scenario, load: Load, count: number, tag: string): Promise<void> {
  let next = 0;
  const one = (i: number) => new Promise<void>((resolve, reject) => {
    const body = load.post ? JSON.stringify({ message: `callgrind ${tag} ${i}` }) : undefined;
    const req = https.request({
      host: '127.0.0.1', servername: 'localhost', port: server.port, ca,
      method: load.post ? 'POST' : 'GET',
      path: load.post ? '/messages' : load.paths[i % load.paths.length],
      headers: load.post ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body!) } : load.fresh ? { Connection: 'close' } : {},
      agent: load.fresh ? false : agent,
    }, (res) => {
      if (res.statusCode !== scenario.status) {
        const what = `${server.name} ${scenario.title}: ${res.statusCode}`;
        wrongAnswers.set(what, (wrongAnswers.get(what) ?? 0) + 1);
      }
      res.resume();
      res.on('end', resolve);
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
  await Promise.all(Array.from({ length: Math.min(connections, count) }, async () => {
    while (next < count) {
      next += 1;
      const i = next;
      // A keep-alive connection the server closes as a request goes out on it is reset: that request is sent once
      // more, and counted, so that a run of ten minutes does not end for it.
      await one(i).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ECONNRESET') throw new Error(`${server.name} ${scenario.title}, request ${i}: ${err.message}`);
        resets += 1;
        return one(i);
      });
    }
  }));
}

// ---- reading a dump: each function's own and inclusive instructions, the JIT's addresses named through the perf map

function totalOf(dump: string): number {
  const match = /^(?:summary|totals): (\d+)/m.exec(fs.readFileSync(dump, 'utf8'));
  if (match === null) throw new Error(`no summary line in ${dump}`);
  return Number(match[1]);
}

interface CodeRange { start: number; end: number; name: string }

// V8's perf map: "start size name" in hex, one code object a line, appended as code is made. Memory of freed code is
// reused for new code, so an address is named by the last line written before the end of the phase (`bytes`).
function perfMap(file: string, bytes: number): CodeRange[] {
  if (!fs.existsSync(file)) return [];
  const ranges: CodeRange[] = [];
  for (const line of fs.readFileSync(file).subarray(0, bytes).toString('utf8').split('\n')) {
    const match = /^([0-9a-f]+) ([0-9a-f]+) (.*)$/.exec(line);
    if (match === null) continue;
    const start = parseInt(match[1]!, 16);
    // "JS:*name file:line:col", "JS:~name ...": the tier markers go, so that every tier of a function adds up.
    ranges.push({ start, end: start + parseInt(match[2]!, 16), name: match[3]!.replace(/^(?:JS|LazyCompile|Function):[*~^+]?/, 'JS ') });
  }
  return ranges;
}

// callgrind names code without a symbol (the JIT's) by its address; "'2" marks a recursion level.
function nameOf(fn: string, ranges: CodeRange[]): string {
  const address = /^0x([0-9a-f]+)(?:'\d+)?$/.exec(fn);
  if (address === null) return fn.replace(/'\d+$/, '');
  const at = parseInt(address[1]!, 16);
  for (let i = ranges.length - 1; i >= 0; i -= 1) {
    if (ranges[i]!.start <= at && at < ranges[i]!.end) return ranges[i]!.name.slice(0, 160);
  }
  return 'JIT code not in the perf map';
}

interface Profile { self: Map<string, number>; inclusive: Map<string, number> }

// Per request. Own instructions are the cost lines after fn=; the line after each calls= is the inclusive cost of
// that call, added to the caller's inclusive cost unless the callee has the caller's name (recursion, another tier or
// entry of the same function).
function profileOf(dump: string, ranges: CodeRange[], requestCount: number): Profile {
  const names = new Map<string, string>();
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const add = (map: Map<string, number>, name: string, cost: number) => map.set(name, (map.get(name) ?? 0) + cost / requestCount);
  let current = '';
  let callee: string | undefined;
  let calling = false;
  for (const line of fs.readFileSync(dump, 'utf8').split('\n')) {
    const named = /^(c?fn)=\((\d+)\)(?: (.*))?$/.exec(line);
    if (named !== null) {
      if (named[3] !== undefined) names.set(named[2]!, nameOf(named[3], ranges));
      const name = names.get(named[2]!) ?? `fn ${named[2]}`;
      if (named[1] === 'fn') current = name;
      else callee = name;
      continue;
    }
    if (line.startsWith('calls=')) {
      calling = true;
      continue;
    }
    if (!/^[0-9+*-]/.test(line)) continue;
    const cost = Number(line.split(' ').at(-1));
    if (!calling) {
      add(self, current, cost);
      add(inclusive, current, cost);
    } else if (callee !== current) {
      add(inclusive, current, cost);
    }
    calling = false;
  }
  return { self, inclusive };
}

// What a function is part of, from its name: the JIT's code by source file, the rest by library.
const kinds: Array<[RegExp, string]> = [
  [/^RegExp:/, 'regular expressions (irregexp code)'],
  [/^v8::internal::(compiler|baseline|maglev)::|Compil|BaselineBatch|TranslatedState|Deoptimiz/, 'V8 compilers and deoptimization'],
  [/Scaveng|MarkCompact|Marking|Sweep|heap::|Heap::|Evacuat|RememberedSet|SlotSet|BodyDescriptor|GCTracer|LargeObjectSpace|PagedSpace|NewSpace|MemoryAllocator|MemoryChunk|Builtins_RecordWrite/, 'V8 garbage collector and write barrier'],
  [/^Builtins_/, 'V8 builtins (property access, calls, strings, promises)'],
  [/^v8::|^v8_|^unibrow::|^icu_/, 'V8 runtime (C++)'],
  [/^node::|^napi_/, 'Node.js C++ bindings'],
  [/^uv_|^uv__/, 'libuv'],
  [/^llhttp/, 'llhttp (HTTP parser)'],
  [/^_*(?:ossl|ssl|tls|dtls|statem|evp|inner_evp|bn|ec|ecp|ecdsa|x25519|fe|fe51|ge|cmov|table_select|sha\d*|aes|gcm|crypto|openssl|err|wpacket|packet|rand|drbg|hmac|asn1|x509|bio|chacha|poly1305|do_ssl3|ssl3|obj|sk|lh|ctr|aesni|engine|do_name|pem|dh|rsa)(?:_|\d|[A-Z]|$)/i, 'OpenSSL'],
  [/^(?:_int_|malloc|free|cfree|realloc|calloc|__mem|mem|__str|str|__libc|pthread|__pthread|___pthread|__GI___pthread|epoll|__GI|clock_gettime|__clock|__vdso|writev?$|readv?$|syscall|__lll|__futex|futex|tcache|unlink_chunk|__nss|_IO_|__GI_|sysmalloc|malloc_)/, 'libc (malloc, memcpy, system call stubs)'],
  [/^std::|^operator (?:new|delete)/, 'C++ standard library'],
];

function kindOf(name: string): string {
  const js = /^JS .*? (\S+?):\d+:\d+$/.exec(name);
  if (js !== null) {
    const file = js[1]!;
    const inPackage = /node_modules\/(@[^/]+\/[^/]+|[^/]+)\//.exec(file);
    if (inPackage !== null) return `JS ${inPackage[1]}`;
    return `JS ${file.startsWith(projectRoot) ? path.relative(projectRoot, file) : file}`;
  }
  if (name.startsWith('JS ')) return 'JS (other)';
  return kinds.find(([pattern]) => pattern.test(name))?.[1] ?? 'other';
}

function byKind(self: Map<string, number>): Map<string, number> {
  const kinds = new Map<string, number>();
  for (const [name, cost] of self) kinds.set(kindOf(name), (kinds.get(kindOf(name)) ?? 0) + cost);
  return kinds;
}

// tsx keeps the code it compiled in os.tmpdir()/tsx-<uid>, as JSON whose code starts with __filename="<file>", all of
// it on line 2: an anonymous function (named "JS  file:2:column" in the perf map) is shown by its first characters
// there, from the newest entry of its file. Best effort: without the cache it keeps its bare name.
function compiledCode(): Map<string, string> {
  const newest = new Map<string, { mtimeMs: number; line: string }>();
  const cache = path.join(os.tmpdir(), `tsx-${os.userInfo().uid}`);
  for (const entry of fs.existsSync(cache) ? fs.readdirSync(cache) : []) {
    try {
      const file = path.join(cache, entry);
      const { mtimeMs } = fs.statSync(file);
      const { code } = JSON.parse(fs.readFileSync(file, 'utf8')) as { code: string };
      const source = /^__filename="([^"]+)"/.exec(code)?.[1];
      if (source !== undefined && mtimeMs > (newest.get(source)?.mtimeMs ?? 0)) newest.set(source, { mtimeMs, line: code.split('\n')[1] ?? '' });
    } catch {
      // Not an entry of compiled code.
    }
  }
  return new Map([...newest].map(([source, { line }]) => [source, line]));
}

function shownName(name: string, compiled: Map<string, string>): string {
  const anonymous = /^JS  (\S+):2:(\d+)$/.exec(name);
  const code = anonymous === null ? undefined : compiled.get(anonymous[1]!);
  const short = name.replace(`${projectRoot}/`, '');
  if (anonymous === null || code === undefined) return short;
  return `${short} \`${code.slice(Number(anonymous[2]) - 1, Number(anonymous[2]) + 59)}\``;
}

function differenceTable(service: Map<string, number>, floor: Map<string, number>, rows: number): string {
  const lines = ['| service − floor | service | floor | what |', '| ---: | ---: | ---: | --- |'];
  const names = [...new Set([...service.keys(), ...floor.keys()])]
    .map((name) => ({ name, service: service.get(name) ?? 0, floor: floor.get(name) ?? 0 }))
    .sort((a, b) => Math.abs(b.service - b.floor) - Math.abs(a.service - a.floor));
  for (const row of names.slice(0, rows)) {
    lines.push(`| ${Math.round(row.service - row.floor)} | ${Math.round(row.service)} | ${Math.round(row.floor)} | ${row.name.replace(/\|/g, '\\|')} |`);
  }
  return lines.join('\n');
}

// ---- the run

// What a report needs to read the dumps again (--from DIR): the requests counted per phase of each scenario.
// mapBytes: per server, then per "<scenario>-<phase>", the perf map's length when that phase ended.
interface RunInfo { scenarios: string[]; repeat: number; counts: Record<string, number>; commit: string; mapBytes: Record<string, Record<string, number>> }
const dumpOf = (dir: string, server: string, scenario: string, phase: number) => path.join(dir, `${server}-${scenario}-${phase}.callgrind`);

// Returns, per dump, the bytes of the perf map written by its end.
async function measure(server: Traced, ca: Buffer, loads: Map<string, Load>, tag: string): Promise<Record<string, number>> {
  const mapBytes: Record<string, number> = {};
  const agent = new https.Agent({ keepAlive: true, maxSockets: connections });
  // Every path first, so that no scenario counts the compilation of code it shares with a later one (measured: the
  // first scenario still lost 10% between two phases after 8000 requests of its own warm-up).
  const warmOf = (load: Load) => (load.fresh ? Math.max(20, Math.floor(tlsRequests / 2)) : warmup);
  process.stderr.write(`callgrind: ${server.name}: warm-up\n`);
  for (const scenario of scenarios) {
    const load = loads.get(scenario.key)!;
    await drive(server, agent, ca, scenario, load, warmOf(load), `${tag} warm ${scenario.key}`);
  }
  for (const scenario of scenarios) {
    const load = loads.get(scenario.key)!;
    const count = load.fresh ? tlsRequests : requests;
    // Then phases of `count` requests until two in a row agree within settledWithin: under callgrind V8 keeps
    // compiling for a while after a fixed warm-up (the floor's first GETs cost 310k, 161k, then 104k per request).
    await server.mark();
    const settling: number[] = [];
    for (let chunk = 1; chunk <= maxSettlingPhases; chunk += 1) {
      await drive(server, agent, ca, scenario, load, count, `${tag} settle ${scenario.key} ${chunk}`);
      await server.mark();
      settling.push(totalOf(server.phaseDump()) / count);
      const [before, last] = settling.slice(-2) as [number, number];
      if (settling.length >= 2 && Math.abs(last - before) <= settledWithin * before) break;
    }
    process.stderr.write(`callgrind: ${server.name} ${scenario.title}: ${settling.map((v) => `${(v / 1000).toFixed(1)}k`).join(', ')} ` +
      `instructions per request while settling; ${repeat} x ${count} requests counted next\n`);
    // The phases counted start here; the connections they use are already open.
    for (let phase = 1; phase <= repeat; phase += 1) {
      await drive(server, agent, ca, scenario, load, count, `${tag} ${scenario.key} ${phase}`);
      mapBytes[`${scenario.key}-${phase}`] = await server.mark();
      fs.renameSync(server.phaseDump(), dumpOf(outDir, server.name, scenario.key, phase));
    }
  }
  agent.destroy();
  return mapBytes;
}

async function run(): Promise<void> {
  fs.mkdirSync(outDir, { recursive: true });
  const dir = tempDir('messages-callgrind-run-');
  const redis = await startRedis();
  const cert = await makeCert(dir);
  // The stored messages of the GET scenario go straight into Redis, so that both servers read the same ones.
  const client = createClient({ socket: { host: '127.0.0.1', port: redis.port } });
  await client.connect();
  const stored = Array.from({ length: 100 }, (_, i) => `callgrind stored ${i} ${'x'.repeat(40)} \u00e9\u{1F600}`);
  for (const message of stored) await client.set(`messages:${sha256(message)}`, message);
  await client.close();
  const storedPaths = stored.map((message) => `/messages/${sha256(message)}`);
  const loads = new Map<string, Load>([
    ['get', { paths: storedPaths, post: false, fresh: false }],
    ['missing', { paths: stored.map((message) => `/messages/${sha256(`missing ${message}`)}`), post: false, fresh: false }],
    ['post', { paths: [], post: true, fresh: false }],
    ['close', { paths: storedPaths, post: false, fresh: true }],
  ]);
  // The same messages are posted to both servers: the same bytes each way, the same work.
  const tag = randomBytes(4).toString('hex');

  console.log(`callgrind: ${warmup} requests of warm-up and ${repeat} x ${requests} counted per keep-alive scenario over ${connections} connections, ` +
    `${tlsRequests} for the TLS scenario; dumps in ${outDir}`);
  const mapBytes: Record<string, Record<string, number>> = {};
  for (const start of [() => startFloor(cert, redis.port), () => startService(cert, redis, fs.mkdtempSync(path.join(dir, 'service-')))]) {
    const server = await start();
    try {
      mapBytes[server.name] = await measure(server, cert.ca, loads, tag);
    } finally {
      await stopChild(server.child);
    }
    // Kept beside the dumps, to read them again; V8 wrote it where perf looks for it.
    if (fs.existsSync(perfMapOf(server.child))) fs.renameSync(perfMapOf(server.child), path.join(outDir, `${server.name}.perf-map`));
    // The warm-up dumps and the one written at exit: only the counted phases are kept.
    for (const file of fs.readdirSync(outDir)) if (file.startsWith(`${server.name}.callgrind`)) fs.rmSync(path.join(outDir, file));
  }
  await redis.stop();
  fs.rmSync(dir, { recursive: true, force: true });
  // The code measured: the commit, and whether the service's files differed from it.
  const git = (...gitArgs: string[]) => execFileSync('git', gitArgs, { cwd: projectRoot }).toString().trim();
  const changed = git('status', '--porcelain', '--', 'lib', 'server.ts', 'test/floor.ts') !== '';
  const commit = `${git('rev-parse', '--short', 'HEAD')}${changed ? ' with uncommitted changes to lib/, server.ts or test/floor.ts' : ''}`;
  const counts = Object.fromEntries(scenarios.map((s) => [s.key, s.key === 'close' ? tlsRequests : requests]));
  const info: RunInfo = { scenarios: scenarios.map((s) => s.key), repeat, counts, commit, mapBytes };
  fs.writeFileSync(path.join(outDir, 'run.json'), `${JSON.stringify(info)}\n`);
}

const collector = 'V8 garbage collector and write barrier';

function report(dir: string): void {
  const info = JSON.parse(fs.readFileSync(path.join(dir, 'run.json'), 'utf8')) as RunInfo;
  const measured = allScenarios.filter((s) => info.scenarios.includes(s.key));
  // One phase's profile, read with the perf map as it was at the end of that phase.
  const phaseProfile = (server: string, scenario: string, phase: number) => profileOf(dumpOf(dir, server, scenario, phase),
    perfMap(path.join(dir, `${server}.perf-map`), info.mapBytes[server]![`${scenario}-${phase}`]!), info.counts[scenario]!);
  const profiles = new Map<string, Profile[]>();
  for (const scenario of measured) {
    for (const server of ['floor', 'service']) {
      profiles.set(`${server}/${scenario.key}`, Array.from({ length: info.repeat }, (_, i) => phaseProfile(server, scenario.key, i + 1)));
    }
  }
  const total = (profile: Profile) => [...profile.self.values()].reduce((sum, cost) => sum + cost, 0);
  const collected = (profile: Profile) => byKind(profile.self).get(collector) ?? 0;
  const rows = ['| scenario | floor | service | service × floor | service − floor | of which the garbage collector | service × floor without it |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |'];
  const thousands = (values: number[]) => (values.length > 1 ? ` (${values.map((v) => (v / 1000).toFixed(1)).join(', ')} k)` : '');
  for (const scenario of measured) {
    const [floor, service] = ['floor', 'service'].map((server) => profiles.get(`${server}/${scenario.key}`)!);
    const [floorTotal, serviceTotal] = [floor!.map(total), service!.map(total)];
    const [floorGc, serviceGc] = [mean(floor!.map(collected)), mean(service!.map(collected))];
    rows.push(`| ${scenario.title} | ${Math.round(mean(floorTotal))}${thousands(floorTotal)} | ${Math.round(mean(serviceTotal))}${thousands(serviceTotal)} | ` +
      `${(mean(serviceTotal) / mean(floorTotal)).toFixed(2)} | ${Math.round(mean(serviceTotal) - mean(floorTotal))} | ` +
      `${Math.round(serviceGc - floorGc)} (${Math.round(floorGc)} and ${Math.round(serviceGc)}) | ` +
      `${((mean(serviceTotal) - serviceGc) / (mean(floorTotal) - floorGc)).toFixed(2)} |`);
  }
  console.log(`\n### Instructions per request at ${info.commit} (callgrind, user space only, ${info.repeat > 1 ? `mean of ${info.repeat} phases, each listed` : 'one phase'})\n`);
  console.log(rows.join('\n'));
  console.log('\nThe garbage collector\'s share moves most between phases (a phase holds a major collection or not): ' +
    'the last column is the steadier figure for comparing code, the totals the true cost.');

  const compiled = compiledCode();
  for (const scenario of measured) {
    // The mean over the phases counted.
    const profile = (server: string): Profile => {
      const sum: Profile = { self: new Map(), inclusive: new Map() };
      for (const one of profiles.get(`${server}/${scenario.key}`)!) {
        for (const part of ['self', 'inclusive'] as const) {
          for (const [name, cost] of one[part]) sum[part].set(name, (sum[part].get(name) ?? 0) + cost / info.repeat);
        }
      }
      return sum;
    };
    const floor = profile('floor');
    const service = profile('service');
    console.log(`\n### ${scenario.title}: where the instructions go, per request (own instructions, by part)\n`);
    console.log(differenceTable(byKind(service.self), byKind(floor.self), 40));
    console.log(`\n### ${scenario.title}: the ${top} functions whose own instructions differ most\n`);
    console.log(differenceTable(service.self, floor.self, top));
    // The project's functions with everything they call: what each step of a request costs.
    const own = [...service.inclusive].filter(([name]) => /^JS .*\/(lib\/[\w-]+|server)\.ts:/.test(name)).sort((a, b) => b[1] - a[1]);
    console.log(`\n### ${scenario.title}: the service's own functions, instructions per request including what they call\n`);
    console.log('| inclusive | own | function |\n| ---: | ---: | --- |');
    for (const [name, cost] of own.slice(0, top)) {
      console.log(`| ${Math.round(cost)} | ${Math.round(service.self.get(name) ?? 0)} | ${shownName(name, compiled).replace(/\|/g, '\\|')} |`);
    }
    const floorOwn = [...floor.inclusive].filter(([name]) => /^JS .*\/test\/floor\.ts:/.test(name)).sort((a, b) => b[1] - a[1]);
    console.log(`\n### ${scenario.title}: the floor's own functions, the same way\n`);
    console.log('| inclusive | own | function |\n| ---: | ---: | --- |');
    for (const [name, cost] of floorOwn.slice(0, 6)) {
      console.log(`| ${Math.round(cost)} | ${Math.round(floor.self.get(name) ?? 0)} | ${shownName(name, compiled).replace(/\|/g, '\\|')} |`);
    }
  }
  console.log(`\nDumps of the counted phases: ${dir}/<server>-<scenario>-<phase>.callgrind. callgrind_annotate reads them, showing the ` +
    'JIT\'s code as bare addresses, which this script names through <server>.perf-map; `--from DIR` prints this report again.');
}

const from = args.includes('--from') ? path.resolve(text('--from', '.')) : undefined;
(from === undefined ? run().then(() => report(outDir)) : Promise.resolve().then(() => report(from))).then(() => {
  if (resets > 0) console.log(`\ncallgrind: ${resets} request(s) were reset by the server and sent again.`);
  if (wrongAnswers.size > 0) {
    const counts = [...wrongAnswers].map(([what, count]) => `${count} x ${what}`).join('; ');
    console.error(`callgrind: answers with an unexpected status: ${counts}`);
    process.exitCode = 1;
  }
}, (err: unknown) => {
  console.error(err);
  // The servers under valgrind would keep this process alive; helpers.ts kills them on exit.
  process.exit(1);
});
