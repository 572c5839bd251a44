// GET /metrics on a plain-HTTP listener of its own, off the API's port, and with workers the primary's view of them:
// each worker sends its snapshot every second; what an exited worker counted is kept, so no counter goes backwards.
import http from 'node:http';
import type { Worker } from 'node:cluster';
import { performance } from 'node:perf_hooks';
import type { Registry, Snapshot } from './metrics.ts';
import { eventLoopDelay } from './service-metrics.ts';

interface SnapshotMessage { type: 'messages:metrics'; snapshot: Snapshot }

const isSnapshot = (value: unknown): value is SnapshotMessage =>
  typeof value === 'object' && value !== null && (value as { type?: unknown }).type === 'messages:metrics';

// Answers GET /metrics with `render()` and anything else with 404; it never touches the API or Redis.
export function serveMetrics(bind: string, port: number, render: () => string): Promise<http.Server> {
  // Node checks the two request timeouts below every 30 s by default: a trickled request would hold a slot 40 s.
  const server = http.createServer({ connectionsCheckingInterval: 1000 }, (req, res) => {
    const found = req.method === 'GET' && (req.url === '/metrics' || req.url?.startsWith('/metrics?') === true);
    const body = found ? render() : 'Not found: this port serves GET /metrics only\n';
    res.writeHead(found ? 200 : 404, {
      'Content-Type': found ? 'text/plain; version=0.0.4; charset=utf-8' : 'text/plain; charset=utf-8',
      'Content-Length': Buffer.byteLength(body),
    });
    res.end(body);
  });
  // A scraper that stalls must not hold a socket: Prometheus asks again on its next interval anyway. The send too:
  // a connection that moves no byte for 10 s is destroyed (Node's default with no 'timeout' listener).
  server.requestTimeout = 10_000;
  server.headersTimeout = 10_000;
  server.timeout = 10_000;
  // One scrape per connection (Connection: close): Node answers a pipelined one 503 itself, without a render.
  server.maxRequestsPerSocket = 1;
  // Past it Node closes a new connection at once: a flood here must not take the descriptors the API needs.
  server.maxConnections = 16;
  return new Promise((resolve, reject) => {
    const failed = (err: Error) => reject(new Error(`metrics listener on ${bind}:${port} (MESSAGES_METRICS_BIND, ` +
      `MESSAGES_METRICS_PORT; 0 turns it off): ${err.message}`));
    server.once('error', failed);
    server.listen(port, bind, () => {
      server.off('error', failed);
      resolve(server);
    });
  });
}

// A worker's side: its snapshot goes to the primary every second, and once more when it stops.
export function sendSnapshots(registry: Registry, send: (message: SnapshotMessage) => void): { stop(): void } {
  const push = () => send({ type: 'messages:metrics', snapshot: registry.snapshot() });
  const timer = setInterval(push, 1000);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      push();
    },
  };
}

// A worker that sent nothing for this long is stuck (a busy loop holds its timer too): its gauges are no longer
// current, and the time since it last sent is its event-loop delay, which MessagesEventLoopDelay watches.
const silentMs = 3000;

// The primary's side: the latest snapshot of each worker, and the counters of the ones that exited.
export function collectSnapshots(registry: Registry) {
  const latest = new Map<Worker, { snapshot: Snapshot; at: number }>();
  let retired: Snapshot = {};
  const current = ({ snapshot, at }: { snapshot: Snapshot; at: number }, now: number): Snapshot =>
    (now - at < silentMs ? snapshot : { ...registry.lasting(snapshot), [eventLoopDelay]: { '': (now - at) / 1000 } });
  return {
    watch(worker: Worker): void {
      // Counted from its start, so one stuck before its first snapshot shows too; not from the fork, which can fail
      // (EAGAIN) with an 'error' and no 'exit' that would ever remove it.
      worker.once('online', () => latest.set(worker, { snapshot: {}, at: performance.now() }));
      worker.on('message', (message: unknown) => {
        if (isSnapshot(message)) latest.set(worker, { snapshot: message.snapshot, at: performance.now() });
      });
      worker.once('exit', () => {
        const last = latest.get(worker);
        if (last !== undefined) retired = registry.merge([retired, registry.lasting(last.snapshot)]);
        latest.delete(worker);
      });
    },
    snapshots: (): Snapshot[] => [...[...latest.values()].map((each) => current(each, performance.now())), retired],
  };
}
