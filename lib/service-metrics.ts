// Every metric the service exposes (docs/metrics.md says what each answers), and the calls the code makes to count.
import fs from 'node:fs';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { labels, Registry, type Count, type Histogram } from './metrics.ts';

// Also what the primary reports for a worker gone silent (metrics-server.ts).
export const eventLoopDelay = 'nodejs_eventloop_delay_p99_seconds';
type Counts = Record<'app' | 'access', { written: number; dropped: number }>;

// What the gauges read when a snapshot is taken, set by the modules that own them; unset ones give no value.
export interface Sources {
  connectionsOpen?: () => number;
  bufferedBytes?: () => number;
  redisUp?: () => boolean;
  redisMaster?: () => string | undefined;
  logLines?: () => Counts;
}

const seconds = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5] as const;
// Label values are bounded: a route of the table, a method the service answers, a status class, a cause.
const routes = new Set(['/messages', '/messages/:param', '/healthz', '/readyz']);
const methods = new Set(['GET', 'HEAD', 'POST']);
const causes: Record<number, string> = { 400: 'invalid', 408: 'too_slow', 413: 'too_large', 415: 'unsupported_type' };

export function createServiceMetrics(version: string) {
  const registry = new Registry();
  const sources: Sources = {};
  const value = (read: () => number | undefined) => (): Record<string, number> => {
    const current = read();
    return current === undefined ? {} : { '': current };
  };
  const requests = registry.counter('messages_http_requests_total', 'Answers, by route, method and status class.');
  const latency = registry.histogram('messages_http_request_duration_seconds', 'Arrival to answer.', seconds);
  const rejected = registry.counter('messages_http_bodies_rejected_total', 'POST bodies refused, by cause.');
  const commands = registry.counter('messages_redis_commands_total', 'Redis calls, by command, outcome and reply.');
  const commandLatency = registry.histogram('messages_redis_command_duration_seconds', 'Call to reply.', seconds);
  let inflight = 0;
  registry.sampled('messages_redis_inflight', 'Redis calls in flight (MESSAGES_MAX_INFLIGHT bounds them).', 'gauge',
    () => ({ '': inflight }));
  registry.sampled('messages_redis_up', '1 when every serving process has its Redis link up.', 'min',
    value(() => (sources.redisUp === undefined ? undefined : Number(sources.redisUp()))));
  registry.sampled('messages_redis_master_info', 'The master the sentinels named, as a label.', 'max', () => {
    const master = sources.redisMaster?.();
    return master === undefined ? {} : { [labels({ master })]: 1 };
  });
  registry.sampled('messages_connections_open', 'Connections open.', 'gauge', value(() => sources.connectionsOpen?.()));
  const refused = registry.counter('messages_connections_refused_total', 'Connections refused at accept, by limit.');
  const handshakes = registry.counter('messages_tls_handshake_failures_total', 'TLS handshakes failed or timed out.');
  const sendTimeouts = registry.counter('messages_send_timeouts_total', 'Connections cut by MESSAGES_SEND_TIMEOUT_MS.');
  // Created at 0 now, so that rate() and increase() see the first event (requests' series come with their route).
  for (const cause of Object.values(causes)) rejected(labels({ cause }));
  for (const limit of ['max_connections', 'per_ip']) refused(labels({ limit }));
  [handshakes, sendTimeouts].forEach((counter) => counter(''));
  registry.sampled('messages_buffered_body_bytes', 'Body bytes held (MESSAGES_MAX_BUFFERED_BYTES bounds them).',
    'gauge', value(() => sources.bufferedBytes?.()));
  const logFamilies: Array<[string, 'written' | 'dropped']> =
    [['messages_log_lines_total', 'written'], ['messages_log_lines_dropped_total', 'dropped']];
  for (const [name, field] of logFamilies) {
    registry.sampled(name, `Log lines ${field}, by log.`, 'counter', () => Object.fromEntries(
      Object.entries(sources.logLines?.() ?? {}).map(([log, counts]) => [labels({ log }), counts[field]])));
  }
  processMetrics(registry, version);
  // The series of each route and method, resolved once, found by the strings the router and Node hand over: a
  // request pays two Map lookups of constant strings, no key built.
  const answers = new Map<string, Map<string, { latency: Histogram; byClass: Count[] }>>();
  const answersOf = (anyRoute: string, anyMethod: string) => {
    const route = routes.has(anyRoute) ? anyRoute : 'other';
    const method = methods.has(anyMethod) ? anyMethod : 'other';
    const byMethod = answers.get(route) ?? answers.set(route, new Map()).get(route)!;
    let found = byMethod.get(method);
    if (found === undefined) {
      const byClass = [1, 2, 3, 4, 5].map((digit) => requests(labels({ route, method, status_class: `${digit}xx` })));
      byMethod.set(method, found = { latency: latency(labels({ route, method })), byClass });
    }
    return found;
  };
  const calls = new Map<string, { latency: Histogram; outcomes: Map<string, Count> }>();

  return {
    registry,
    sources,
    answered(route: string, method: string, status: number, elapsedMs: number) {
      const series = answersOf(route, method);
      series.byClass[Math.min(Math.max(Math.floor(status / 100), 1), 5) - 1]!.add();
      series.latency.observe(elapsedMs / 1000);
    },
    bodyRejected(status: number) {
      if (Object.hasOwn(causes, status)) rejected(labels({ cause: causes[status]! })).add();
    },
    // For boundedCalls (redis-calls.ts): each call's outcome, and the calls in flight.
    redis: {
      call(command: string, outcome: string, reply: string, elapsedMs: number) {
        let series = calls.get(command);
        if (series === undefined) {
          series = { latency: commandLatency(labels({ command })), outcomes: new Map() };
          calls.set(command, series);
        }
        const kind = reply === '' ? outcome : reply;
        let count = series.outcomes.get(kind);
        if (count === undefined) series.outcomes.set(kind, count = commands(labels({ command, outcome, reply })));
        count.add();
        series.latency.observe(elapsedMs / 1000);
      },
      inflight(count: number) {
        inflight = count;
      },
    },
    connectionRefused: (limit: 'max_connections' | 'per_ip') => refused(labels({ limit })).add(),
    handshakeFailed: () => handshakes('').add(),
    sendTimedOut: () => sendTimeouts('').add(),
  };
}

export type ServiceMetrics = ReturnType<typeof createServiceMetrics>;

// The process: CPU, memory, heap, event-loop delay, open descriptors, start time, and what is running.
function processMetrics(registry: Registry, version: string): void {
  const delay = monitorEventLoopDelay({ resolution: 20 });
  delay.enable();
  const started = Math.round(performance.timeOrigin / 1000);
  registry.sampled('process_cpu_seconds_total', 'CPU time, user and system, in seconds.', 'counter', () => {
    const { user, system } = process.cpuUsage();
    return { '': (user + system) / 1e6 };
  });
  const one = (read: () => number) => () => ({ '': read() });
  registry.sampled('process_resident_memory_bytes', 'Resident memory.', 'gauge', one(() => process.memoryUsage.rss()));
  registry.sampled('nodejs_heap_used_bytes', 'V8 heap in use.', 'gauge', one(() => process.memoryUsage().heapUsed));
  registry.sampled(eventLoopDelay, 'Event-loop delay, 99th percentile, since the last snapshot.', 'max', () => {
    const p99 = delay.percentile(99) / 1e9;
    delay.reset();
    return { '': Number.isFinite(p99) ? p99 : 0 };
  });
  // Linux 6.2 and later give the count as the directory's size (9 us); listing it, as earlier ones need (their size
  // is 0), blocks the loop 7.6 ms per 10,000 descriptors.
  const descriptors = () => fs.statSync('/proc/self/fd').size || fs.readdirSync('/proc/self/fd').length;
  registry.sampled('process_open_fds', 'Open file descriptors.', 'gauge', one(descriptors));
  // Read at each sample: the soft limit may be changed while the process runs (prlimit).
  const limits = /^Max open files\s+(\d+)/m;
  const allowed = () => {
    const limit = limits.exec(fs.readFileSync('/proc/self/limits', 'utf8'))?.[1];
    if (limit === undefined) throw new Error('no "Max open files" in /proc/self/limits');
    return Number(limit);
  };
  registry.sampled('process_max_fds', 'File descriptors allowed (the soft limit).', 'min', one(allowed));
  // EMFILE: /proc cannot be read as no descriptor is free below the limit, which is what a ratio of 1 says.
  const used = () => {
    try {
      return descriptors() / allowed();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EMFILE') return 1;
      throw err;
    }
  };
  // Per process, merged by the largest: a sum of workers' descriptors against one process's limit would mislead.
  registry.sampled('messages_open_fds_ratio', 'Open file descriptors over the limit, of the process closest to it.',
    'max', one(used));
  registry.sampled('process_start_time_seconds', 'Start time, seconds since the epoch.', 'min', one(() => started));
  registry.sampled('messages_build_info', 'The running version and Node.js.', 'max',
    () => ({ [labels({ version, nodejs: process.version })]: 1 }));
}
