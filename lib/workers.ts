// MESSAGES_WORKERS > 1: the primary forks workers that share the port, restarts the ones that die,
// owns the two log files for them, and passes reload and shutdown on.
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

export function runPrimary(count: number, logs: LogFiles, appLog: AppLog, shutdownTimeoutMs: number): Primary {
  let stopping = false;
  let failures = 0;

  function fork(): Worker {
    const worker = cluster.fork();
    const started = Date.now();
    receiveLogs(worker, logs);
    worker.on('exit', (code, signal) => {
      if (stopping) return;
      // A worker that dies soon after its start is likely to die again: back off, up to 30 s.
      failures = Date.now() - started < 10_000 ? failures + 1 : 0;
      const delayMs = failures === 0 ? 0 : Math.min(250 * 2 ** (failures - 1), 30_000);
      appLog.warn('worker_exited', { worker: worker.process.pid, code, signal, restartInMs: delayMs });
      setTimeout(() => {
        if (!stopping) fork();
      }, delayMs).unref();
    });
    return worker;
  }

  for (let i = 0; i < count; i += 1) fork();
  appLog.info('workers_started', { count });

  const workers = () => Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined);

  return {
    reload() {
      logs.reopen();
      for (const worker of workers()) worker.send(reloadMessage);
    },
    async stop() {
      if (stopping) return;
      stopping = true;
      const running = workers();
      await Promise.all(running.map((worker) => new Promise<void>((resolve) => {
        if (worker.isDead()) return resolve();
        worker.once('exit', () => resolve());
        worker.process.kill('SIGTERM');
        // Each worker drains within shutdownTimeoutMs; one that hangs past that is killed.
        setTimeout(() => worker.process.kill('SIGKILL'), shutdownTimeoutMs + 2000).unref();
      })));
      appLog.info('workers_stopped', { count: running.length });
    },
  };
}
