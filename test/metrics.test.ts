// The metrics registry: Prometheus text format 0.0.4 that promtool accepts, label escaping, and the merge of processes.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { describe, test, type TestContext } from 'node:test';
import { projectRoot } from '../lib/config.ts';
import { labels, Registry } from '../lib/metrics.ts';
import { serveMetrics } from '../lib/metrics-server.ts';
import {
  freePort, listeningPids, makeCert, openConnections, postMessage, request, serviceEnv, spawnService, startRedis,
  stopChild, tempDir, track, waitFor, waitForOutput,
  type Cert, type RedisServer, type Spawned,
} from './helpers.ts';

const hasPromtool = spawnSync('promtool', ['--version']).status === 0;

function sample(): Registry {
  const registry = new Registry();
  const requests = registry.counter('demo_requests_total', 'Requests answered.');
  const latency = registry.histogram('demo_request_duration_seconds', 'Time to answer.', [0.01, 0.1, 1]);
  registry.sampled('demo_open', 'Open things.', 'gauge', () => ({ '': 3 }));
  registry.sampled('demo_delay_seconds', 'The largest delay.', 'max', () => ({ '': 0.5 }));
  requests(labels({ route: '/messages', status_class: '2xx' })).add();
  requests(labels({ route: '/messages', status_class: '2xx' })).add(2);
  requests(labels({ route: 'we"ird\\path\n', status_class: '4xx' })).add();
  latency(labels({ route: '/messages' })).observe(0.05);
  latency(labels({ route: '/messages' })).observe(5);
  return registry;
}

test('renders counters, histograms (cumulative buckets, +Inf, sum, count) and gauges in text format 0.0.4', () => {
  const text = sample().render([sample().snapshot()]);
  assert.match(text, /^# HELP demo_requests_total Requests answered\.\n# TYPE demo_requests_total counter\n/);
  assert.match(text, /\ndemo_requests_total\{route="\/messages",status_class="2xx"\} 3\n/);
  assert.match(text, /\ndemo_requests_total\{route="we\\"ird\\\\path\\n",status_class="4xx"\} 1\n/);
  for (const line of ['demo_request_duration_seconds_bucket{route="/messages",le="0.01"} 0', 'demo_request_duration_seconds_bucket{route="/messages",le="0.1"} 1',
    'demo_request_duration_seconds_bucket{route="/messages",le="1"} 1', 'demo_request_duration_seconds_bucket{route="/messages",le="+Inf"} 2',
    'demo_request_duration_seconds_sum{route="/messages"} 5.05', 'demo_request_duration_seconds_count{route="/messages"} 2', 'demo_open 3']) {
    assert.ok(text.includes(`\n${line}\n`), `missing ${line}`);
  }
});

test('merges processes: counters and histograms add up, gauges by their kind', () => {
  const registry = sample();
  const text = registry.render([sample().snapshot(), sample().snapshot()]);
  assert.ok(text.includes('\ndemo_requests_total{route="/messages",status_class="2xx"} 6\n'));
  assert.ok(text.includes('\ndemo_request_duration_seconds_count{route="/messages"} 4\n'));
  assert.ok(text.includes('\ndemo_open 6\n'));
  assert.ok(text.includes('\ndemo_delay_seconds 0.5\n'));
});

test('a sample that throws (EMFILE: no descriptor left to read /proc with) repeats the last one: a snapshot never throws', () => {
  const registry = new Registry();
  let failing = false;
  registry.sampled('demo_fds', 'Open descriptors.', 'gauge', () => {
    if (failing) throw Object.assign(new Error('EMFILE: too many open files'), { code: 'EMFILE' });
    return { '': 42 };
  });
  assert.ok(registry.render([registry.snapshot()]).includes('\ndemo_fds 42\n'));
  failing = true;
  assert.ok(registry.render([registry.snapshot()]).includes('\ndemo_fds 42\n'));
  // One that never succeeded has no value to repeat: its series is left out.
  registry.sampled('demo_never', 'Never read.', 'gauge', () => { throw new Error('EMFILE'); });
  assert.doesNotMatch(registry.render([registry.snapshot()]), /\ndemo_never /);
});

test('keeps only counters and histograms of an exited process, so that they never go backwards', () => {
  const registry = sample();
  const kept = registry.lasting(sample().snapshot());
  assert.deepEqual(Object.keys(kept).sort(), ['demo_request_duration_seconds', 'demo_requests_total']);
});

test('promtool check metrics accepts the output', { skip: hasPromtool ? false : 'promtool is not installed (Debian package prometheus)' }, () => {
  const text = sample().render([sample().snapshot()]);
  execFileSync('promtool', ['check', 'metrics'], { input: text });
});

test('the alert rules in docs/alerts.yml pass their promtool unit tests', { skip: hasPromtool ? false : 'promtool is not installed (Debian package prometheus)' }, () => {
  execFileSync('promtool', ['test', 'rules', 'alerts.test.yml'], { cwd: path.join(projectRoot, 'docs') });
});

interface Running { service: Spawned; metricsPort: number; redis: RedisServer; cert: Cert }

async function startWithMetrics(t: TestContext, extra: Record<string, string> = {}): Promise<Running> {
  const dir = tempDir();
  const [redis, cert, metricsPort] = await Promise.all([startRedis(), makeCert(dir), freePort()]);
  t.after(() => redis.stop());
  const service = await spawnService(serviceEnv({ redis, cert, dir }, { MESSAGES_METRICS_PORT: String(metricsPort), ...extra }));
  t.after(() => stopChild(service.child, 'SIGKILL'));
  return { service, metricsPort, redis, cert };
}

const scrape = (port: number, target = '/metrics', method = 'GET') => new Promise<{ status: number; type: string; body: string }>((resolve, reject) => {
  const req = http.request({ host: '127.0.0.1', port, path: target, method }, (res) => {
    let body = '';
    res.on('data', (chunk: Buffer) => { body += chunk.toString(); });
    res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
  });
  req.on('error', reject);
  req.end();
});

// The value of one series in an exposition, or undefined.
const valueOf = (text: string, series: string) => {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
};

test('GET /metrics answers on its own plain-HTTP port with the text format promtool accepts; anything else is a 404', async (t) => {
  const { service, metricsPort, cert } = await startWithMetrics(t);
  assert.equal((await postMessage(service.port, cert.ca, 'counted')).status, 201);
  const reply = await scrape(metricsPort);
  assert.equal(reply.status, 200);
  assert.equal(reply.type, 'text/plain; version=0.0.4; charset=utf-8');
  assert.equal(valueOf(reply.body, 'messages_http_requests_total{route="/messages",method="POST",status_class="2xx"}'), 1);
  assert.equal(valueOf(reply.body, 'messages_redis_commands_total{command="SET",outcome="ok",reply=""}'), 1);
  assert.equal(valueOf(reply.body, 'messages_redis_up'), 1);
  assert.match(reply.body, /\nmessages_build_info\{version="\d+\.\d+\.\d+",nodejs="v\d+\.\d+\.\d+"\} 1\n/);
  // Regression: these series appeared only at their first event, which rate() and increase() then missed.
  for (const series of ['messages_tls_handshake_failures_total', 'messages_send_timeouts_total',
    'messages_connections_refused_total{limit="max_connections"}', 'messages_connections_refused_total{limit="per_ip"}',
    'messages_http_bodies_rejected_total{cause="invalid"}', 'messages_http_bodies_rejected_total{cause="unsupported_type"}']) {
    assert.equal(valueOf(reply.body, series), 0, series);
  }
  if (hasPromtool) execFileSync('promtool', ['check', 'metrics'], { input: reply.body });
  for (const [target, method] of [['/', 'GET'], ['/metrics', 'POST'], ['/metricsx', 'GET']] as const) {
    assert.equal((await scrape(metricsPort, target, method)).status, 404, `${method} ${target}`);
  }
});

test('process_max_fds is the descriptor limit the kernel enforces now, process_open_fds counts the open ones, messages_open_fds_ratio their ratio', async (t) => {
  const { service, metricsPort } = await startWithMetrics(t);
  const pid = service.child.pid!;
  const limit = fs.readdirSync(`/proc/${pid}/fd`).length + 500;
  // The soft limit, below the hard one: the one the kernel enforces.
  execFileSync('prlimit', ['--pid', String(pid), `--nofile=${limit}:${limit + 100}`]);
  const { body } = await scrape(metricsPort);
  assert.equal(valueOf(body, 'process_max_fds'), limit);
  const open = fs.readdirSync(`/proc/${pid}/fd`).length;
  assert.ok(Math.abs(valueOf(body, 'process_open_fds')! - open) <= 2, `open ${open}, ${body.match(/process_open_fds .*/)?.[0]}`);
  assert.ok(Math.abs(valueOf(body, 'messages_open_fds_ratio')! - open / limit) <= 2 / limit, body.match(/messages_open_fds_ratio .*/)?.[0]);
});

test('the metrics listener holds at most 16 connections: past them one is closed at once, and a freed slot serves again', async (t) => {
  const server = await serveMetrics('127.0.0.1', 0, () => 'demo 1\n');
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  const port = (server.address() as AddressInfo).port;
  const count = () => openConnections(server);
  const connect = async () => {
    const socket = net.connect(port, '127.0.0.1');
    t.after(() => socket.destroy());
    await once(socket, 'connect');
    return socket;
  };
  // Idle scrapers that send nothing: each holds a descriptor of the process until the headers timeout.
  const held = await Promise.all(Array.from({ length: 16 }, connect));
  await waitFor(async () => (await count()) === 16, 2000, '16 connections held');
  const extra = await connect();
  let closed = false;
  extra.once('close', () => { closed = true; });
  await waitFor(() => closed, 2000, 'the 17th connection closed by the server');
  held[0]!.destroy();
  await waitFor(async () => (await count()) === 15, 2000, 'a slot freed');
  assert.equal((await scrape(port)).status, 200);
});

test('connections held open on the metrics port do not hold the stop: SIGTERM exits within MESSAGES_SHUTDOWN_TIMEOUT_MS', { timeout: 30_000 }, async (t) => {
  const { service, metricsPort } = await startWithMetrics(t, { MESSAGES_SHUTDOWN_TIMEOUT_MS: '1000' });
  await waitFor(() => service.output().includes('"event":"metrics_listening"'), 10_000, 'the metrics listener');
  // One silent, one with half a request line: before, the stop waited for their clients (15 s, 51 s) to hang up.
  const held = ['', 'GET /metrics HTTP/1.1\r\n'].map((sent) => {
    const socket = net.connect(metricsPort, '127.0.0.1', () => socket.write(sent));
    socket.on('error', () => {});
    t.after(() => socket.destroy());
    return socket;
  });
  await Promise.all(held.map((socket) => once(socket, 'connect')));
  const started = performance.now();
  const exited = once(service.child, 'exit');
  service.child.kill('SIGTERM');
  const [code] = await Promise.race([exited, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('still running 5 s after SIGTERM')), 5000))]);
  assert.equal(code, 0);
  t.diagnostic(`exited ${Math.round(performance.now() - started)} ms after SIGTERM`);
});

// Each waits out a 10 s timeout or a worker's silence: side by side, not one after another.
describe('the metrics listener and the workers\' snapshots, over time', { concurrency: true }, () => {
  test('the metrics listener renders one scrape per connection, and cuts one whose client stops reading after 10 s without progress', { timeout: 60_000 }, async (t) => {
    let renders = 0;
    // 16 MB: more than loopback's socket buffers take, so the answer cannot be written while the client does not read.
    const page = `demo 1\n${'# padding\n'.repeat(1_600_000)}`;
    const server = await serveMetrics('127.0.0.1', 0, () => {
      renders += 1;
      return page;
    });
    t.after(() => {
      server.closeAllConnections();
      server.close();
    });
    const port = (server.address() as AddressInfo).port;
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', () => {});
    t.after(() => socket.destroy());
    await once(socket, 'connect');
    socket.pause(); // never reads
    socket.write('GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(1000));
    const started = performance.now();
    await new Promise((resolve) => setTimeout(resolve, 1000));
    assert.equal(renders, 1, 'scrapes rendered for one connection');
    assert.equal(await openConnections(server), 1);
    // Within 10 s of the last byte the kernel took: the socket buffers fill slowly here (the cut came after 20 s).
    await waitFor(async () => (await openConnections(server)) === 0, 40_000, 'the stalled connection cut');
    const elapsedMs = performance.now() - started;
    t.diagnostic(`cut ${Math.round(elapsedMs)} ms after the pipeline`);
    assert.ok(elapsedMs >= 9000, `cut after ${Math.round(elapsedMs)} ms`);
  });

  // Regression: Node checks those timeouts every 30 s by default: trickled headers or a body held a connection 27 s.
  test('the metrics listener cuts a request whose headers or body trickle in within 10 s of its start, give or take 2 s', { timeout: 60_000 }, async (t) => {
    const server = await serveMetrics('127.0.0.1', 0, () => 'demo 1\n');
    t.after(() => {
      server.closeAllConnections();
      server.close();
    });
    const port = (server.address() as AddressInfo).port;
    const trickle = async (head: string) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.on('error', () => {});
      t.after(() => socket.destroy());
      await once(socket, 'connect');
      const started = performance.now();
      socket.write(head);
      const timer = setInterval(() => socket.write('x'), 500);
      t.after(() => clearInterval(timer));
      // Not once(): the server's 408 and close make a trickled byte fail with EPIPE, which once() would throw.
      await new Promise((resolve) => socket.on('close', resolve));
      clearInterval(timer);
      return performance.now() - started;
    };
    const [headers, body] = await Promise.all([
      trickle('GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: '),
      trickle('POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n'),
    ]);
    t.diagnostic(`headers cut after ${Math.round(headers)} ms, body after ${Math.round(body)} ms`);
    for (const elapsedMs of [headers, body]) assert.ok(elapsedMs >= 9000 && elapsedMs < 14_000, `cut after ${Math.round(elapsedMs)} ms`);
  });

  // Regression: a worker stuck in a loop (SIGSTOP here) sends no snapshot; its last one was served as current for good,
  // so its event-loop delay stayed low and MessagesEventLoopDelay could not fire.
  test('a worker silent for more than 3 s shows its silence as its event-loop delay', { timeout: 60_000 }, async (t) => {
    const { service, metricsPort } = await startWithMetrics(t, { MESSAGES_WORKERS: '2' });
    await waitFor(() => listeningPids(service).length === 2, 15_000, 'two workers listening');
    const p99 = async () => valueOf((await scrape(metricsPort)).body, 'nodejs_eventloop_delay_p99_seconds')!;
    await new Promise((resolve) => setTimeout(resolve, 2500)); // a snapshot from each (they send every second)
    assert.ok(await p99() < 1, 'a delay before the freeze');
    const [stuck] = listeningPids(service);
    process.kill(stuck!, 'SIGSTOP');
    t.after(() => process.kill(stuck!, 'SIGCONT'));
    await new Promise((resolve) => setTimeout(resolve, 5000));
    const delay = await p99();
    assert.ok(delay >= 3 && delay < 10, `event-loop delay ${delay} s with a worker silent for 5 s`);
    process.kill(stuck!, 'SIGCONT');
    await waitFor(async () => (await p99()) < 1, 10_000, 'the delay back down once the worker sends again');
  });
});

test('a worker with no descriptor left reports messages_open_fds_ratio 1 through the primary, and stays up', { timeout: 60_000 }, async (t) => {
  const { service, metricsPort } = await startWithMetrics(t, { MESSAGES_WORKERS: '2' });
  await waitFor(() => listeningPids(service).length === 2, 15_000, 'two workers listening');
  const worker = listeningPids(service)[0]!;
  // A soft limit of 3 leaves no descriptor free: every open in the worker fails with EMFILE (stdio holds 0 to 2).
  execFileSync('prlimit', ['--pid', String(worker), '--nofile=3:3']);
  // Workers send their snapshot every second; before, the failed reads of /proc repeated the last ratio, far below 1.
  await waitFor(async () => valueOf((await scrape(metricsPort)).body, 'messages_open_fds_ratio') === 1, 5000, 'ratio 1');
  assert.ok(fs.existsSync(`/proc/${worker}`), 'the worker exited');
});

test('with two workers the primary sums their counters, and a worker that dies takes none of them with it', { timeout: 60_000 }, async (t) => {
  const { service, metricsPort, cert } = await startWithMetrics(t, { MESSAGES_WORKERS: '2' });
  await waitFor(() => listeningPids(service).length === 2, 15_000, 'two workers listening');
  const agent = new https.Agent({ keepAlive: false, maxSockets: 4, ca: cert.ca });
  t.after(() => agent.destroy());
  await Promise.all(Array.from({ length: 40 }, () => request(service.port, cert.ca, { path: '/healthz', agent, headers: { Connection: 'close' } })));
  const series = 'messages_http_requests_total{route="/healthz",method="GET",status_class="2xx"}';
  await waitFor(async () => valueOf((await scrape(metricsPort)).body, series) === 40, 10_000, '40 answers counted across workers');
  process.kill(listeningPids(service)[0]!, 'SIGKILL');
  await waitFor(() => listeningPids(service).length === 3, 15_000, 'a replacement worker');
  assert.ok(valueOf((await scrape(metricsPort)).body, series)! >= 40, 'the count went backwards');
});


const hasPrometheus = spawnSync('prometheus', ['--version']).status === 0;

// Debian's prometheus scraping `target` every second, from a scratch directory, stopped with the test.
async function startPrometheus(t: TestContext, target: string): Promise<(query: string) => Promise<number | undefined>> {
  const dir = tempDir('prometheus-');
  const port = await freePort();
  fs.writeFileSync(path.join(dir, 'prometheus.yml'), [
    'global: {scrape_interval: 1s, evaluation_interval: 1s}',
    'scrape_configs:',
    '  - job_name: messages',
    `    static_configs: [{targets: ['${target}']}]`,
    '',
  ].join('\n'));
  const child = track(spawn('prometheus', [`--config.file=${path.join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${path.join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`], { stdio: ['ignore', 'pipe', 'pipe'] }));
  t.after(() => stopChild(child, 'SIGKILL'));
  await waitForOutput(child, /Server is ready to receive web requests/, 30_000);
  return async (query) => {
    const reply = await new Promise<string>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, path: `/api/v1/query?query=${encodeURIComponent(query)}` }, (res) => {
        let body = '';
        res.on('data', (chunk: Buffer) => { body += chunk.toString(); });
        res.on('end', () => resolve(body));
      }).on('error', reject);
    });
    const result = (JSON.parse(reply) as { data: { result: Array<{ value: [number, string] }> } }).data.result;
    return result.length === 0 ? undefined : Number(result[0]!.value[1]);
  };
}

test('a real Prometheus scraping every second counts exactly the traffic sent: 201s, 404s, 503s of a Redis outage, and up',
  { skip: hasPrometheus ? false : 'prometheus is not installed (Debian package prometheus)', timeout: 120_000 }, async (t) => {
    const { service, metricsPort, redis, cert } = await startWithMetrics(t);
    const query = await startPrometheus(t, `127.0.0.1:${metricsPort}`);
    const settles = async (expression: string, expected: number) => {
      await waitFor(async () => (await query(expression)) === expected, 30_000, `${expression} == ${expected} in Prometheus`);
    };
    await settles('up{job="messages"}', 1);
    for (let i = 0; i < 5; i += 1) assert.equal((await postMessage(service.port, cert.ca, `scraped ${i}`)).status, 201);
    for (let i = 0; i < 3; i += 1) assert.equal((await request(service.port, cert.ca, { path: `/messages/${'f'.repeat(63)}${i}` })).status, 404);
    await settles('messages_redis_up', 1);
    await redis.stop();
    for (let i = 0; i < 2; i += 1) assert.equal((await postMessage(service.port, cert.ca, `refused ${i}`)).status, 503);
    await settles('messages_redis_up', 0);
    await redis.start();
    await settles('messages_redis_up', 1);
    assert.equal((await postMessage(service.port, cert.ca, 'after the outage')).status, 201);
    await settles('sum(messages_http_requests_total{route="/messages",method="POST",status_class="2xx"})', 6);
    await settles('sum(messages_http_requests_total{route="/messages/:param",method="GET",status_class="4xx"})', 3);
    await settles('sum(messages_http_requests_total{route="/messages",method="POST",status_class="5xx"})', 2);
    await settles('sum(messages_redis_commands_total{command="SET",outcome="unavailable"})', 2);
    await settles('min_over_time(messages_redis_up[5m])', 0);
    await settles('up{job="messages"}', 1);
  });
