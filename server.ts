// Entry point: reads the configuration, then runs one serving process, or a primary with cluster workers.
import cluster from 'node:cluster';
import fs from 'node:fs';
import path from 'node:path';
import { createAppLog } from './lib/app-log.ts';
import { describeConfig, loadConfig, projectRoot, type Config } from './lib/config.ts';
import { forwardLogs, openLogFiles, type LogFiles } from './lib/log-files.ts';
import { collectSnapshots, sendSnapshots, serveMetrics } from './lib/metrics-server.ts';
import { createServiceMetrics } from './lib/service-metrics.ts';
import { prepareCert, startService } from './lib/service.ts';
import { isReloadMessage, runPrimary } from './lib/workers.ts';

let config: Readonly<Config>;
try {
  config = loadConfig();
} catch (err) {
  console.error(`messages: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}

const logs: LogFiles = cluster.isWorker
  ? forwardLogs((batch) => process.send?.(batch))
  : openLogFiles(config, (line) => process.stdout.write(line));
const appLog = createAppLog(logs.app);
const { version } = JSON.parse(fs.readFileSync(path.join(projectRoot, 'package.json'), 'utf8')) as { version: string };
const metrics = createServiceMetrics(version);
metrics.sources.logLines = logs.counts;

// An uncaught exception leaves the process in an unknown state: log it and exit 1 so the supervisor restarts it.
process.on('uncaughtException', (err) => {
  appLog.error('uncaught_exception', err);
  logs.close();
  process.exit(1);
});

function exit(code: number): void {
  logs.close();
  if (cluster.isWorker) process.send?.({ type: 'messages:exit' }, () => process.exit(code));
  else process.exit(code);
}

// A SIGTERM or SIGHUP during the start is acted on once started, instead of killing the process with no drain.
let stop: (() => Promise<void>) | undefined;
let reload: (() => void) | undefined;
let stopRequested: number | undefined;
// Every request joins the one drain in progress; the first request's exit code wins.
function requestStop(code: number): void {
  stopRequested ??= code;
  if (stop !== undefined) void stop().then(() => exit(code));
}
for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => requestStop(0));
process.on('SIGHUP', () => reload?.());

async function main(): Promise<void> {
  if (!cluster.isWorker) {
    appLog.info('starting', { config: describeConfig(config), node: process.version });
    await prepareCert(config, appLog);
  }
  // The process that owns the logs serves the metrics: of itself, and of its workers when it has them.
  let snapshots = () => [metrics.registry.snapshot()];
  if (cluster.isPrimary && config.workers > 1) {
    const workers = collectSnapshots(metrics.registry);
    snapshots = () => [metrics.registry.snapshot(), ...workers.snapshots()];
    const giveUp = () => requestStop(1);
    const primary = runPrimary(config.workers, logs, appLog, config.shutdownTimeoutMs, giveUp, workers.watch);
    reload = () => primary.reload();
    stop = () => primary.stop();
  } else {
    const service = await startService(config, logs, appLog, metrics);
    reload = () => service.reload();
    stop = () => service.stop();
    process.on('message', (message) => {
      if (isReloadMessage(message)) service.reload();
    });
    if (cluster.isWorker) {
      const pushing = sendSnapshots(metrics.registry, (message) => process.send?.(message));
      stop = () => service.stop().then(() => pushing.stop());
    }
  }
  if (!cluster.isWorker && config.metricsPort !== 0) {
    const render = () => metrics.registry.render(snapshots());
    const server = await serveMetrics(config.metricsBind, config.metricsPort, render);
    appLog.info('metrics_listening', { bind: config.metricsBind, port: config.metricsPort });
    const stopServing = stop!;
    let stopping: Promise<void> | undefined;
    // Its connections are cut: close() alone waits for each client to hang up, past the shutdown timeout.
    stop = () => (stopping ??= stopServing().then(() => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    })));
  }
  if (stopRequested !== undefined) requestStop(stopRequested);
}

main().catch((err: unknown) => {
  appLog.error('start_failed', err);
  console.error(`messages: ${err instanceof Error ? err.message : String(err)}`);
  exit(1);
});
