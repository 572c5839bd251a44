// MESSAGES_WORKERS > 1: the primary forks workers on one port, restarts them, owns their logs, relays reload/stop.
import cluster, { type Worker } from 'node:cluster';
import type { AppLog } from './app-log.ts';
import type { LogFiles } from './log-files.ts';
import { receiveLogs } from './log-files.ts';

export const reloadMessage = { type: 'messages:reload' } as const;

export function isReloadMessage(value: unknown): boolean {
  return typeof value === 'object' && value !== null && (value as { type?: unknown }).type === reloadMessage.type;
}

export interface Primary {
  reload(): void;
  stop(): Promise<void>;
}

// Workers that die before they listen, this many times in a row, cannot start: while none is listening, give up so
// the supervisor sees it; while another serves (it started before a certificate broke, say), keep it and retry.
const maxStartFailures = 5;

// Exponential backoff for a worker that died soon after its start, up to 30 s.
const restartDelay = (failures: number) => (failures === 0 ? 0 : Math.min(250 * 2 ** (failures - 1), 30_000));

export function runPrimary(
  count: number,
  logs: LogFiles,
  appLog: AppLog,
  shutdownTimeoutMs: number,
  giveUp: () => void,
  watch: (worker: Worker) => void, // the primary's other business with each worker (its metrics)
): Primary {
  let stopping: Promise<void> | undefined;
  let quickDeaths = 0;
  let startFailures = 0;
  let listeningNow = 0;
  // Not unref'd: while every worker is dead, a pending restart is what keeps the primary alive.
  const restarts = new Set<NodeJS.Timeout>();

  function fork(): void {
    const worker = cluster.fork();
    watch(worker);
    const started = Date.now();
    let listening = false;
    receiveLogs(worker, logs);
    worker.on('listening', () => {
      listening = true;
      listeningNow += 1;
      startFailures = 0;
    });
    // A send to a worker whose channel is closing fails here; its replacement reads certificate and settings anyway.
    worker.on('error', (err: Error) => appLog.warn('worker_error', { worker: worker.process.pid, error: err.message }));
    worker.on('exit', (code, signal) => {
      if (listening) listeningNow -= 1;
      if (stopping !== undefined) return;
      quickDeaths = Date.now() - started < 10_000 ? quickDeaths + 1 : 0;
      startFailures = listening ? 0 : startFailures + 1;
      if (startFailures >= maxStartFailures && listeningNow > 0) {
        appLog.warn('workers_failing', { startFailures, listening: listeningNow, hint: 'see the start_failed lines: ' +
          'the workers still listening serve; a replacement is tried again with backoff (up to 30 s)' });
      } else if (startFailures >= maxStartFailures) {
        appLog.error('workers_failed', new Error(`${startFailures} workers in a row exited before they listened`), {
          code,
          signal,
          hint: 'see the start_failed line above for the cause (MESSAGES_PORT taken, a certificate unreadable, ...)',
        });
        giveUp();
        return;
      }
      const delayMs = restartDelay(quickDeaths);
      appLog.warn('worker_exited', { worker: worker.process.pid, code, signal, restartInMs: delayMs });
      const timer = setTimeout(() => {
        restarts.delete(timer);
        fork();
      }, delayMs);
      restarts.add(timer);
    });
  }

  for (let i = 0; i < count; i += 1) fork();
  appLog.info('workers_started', { count });

  const workers = () => Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined);

  return {
    reload() {
      logs.reopen();
      for (const worker of workers()) {
        if (worker.isConnected()) worker.send(reloadMessage);
      }
    },
    // The one drain in progress, however often it is asked for.
    stop() {
      stopping ??= (async () => {
        for (const timer of restarts) clearTimeout(timer);
        const running = workers();
        await Promise.all(running.map((worker) => new Promise<void>((resolve) => {
          if (worker.isDead()) return resolve();
          worker.once('exit', () => resolve());
          worker.process.kill('SIGTERM');
          // Each worker drains within shutdownTimeoutMs; one that hangs past that is killed.
          setTimeout(() => worker.process.kill('SIGKILL'), shutdownTimeoutMs + 2000).unref();
        })));
        appLog.info('workers_stopped', { count: running.length });
      })();
      return stopping;
    },
  };
}
