// The two log files and who writes them: one process owns the files; cluster workers forward lines to it.
import fs from 'node:fs';
import path from 'node:path';
import type { Worker } from 'node:cluster';
import type { LineSink } from './app-log.ts';
import { RotatingFile } from './rotate.ts';

export interface LogFiles {
  app: LineSink;
  access: LineSink;
  reopen(): void;
  close(): void;
  // Lines written and dropped per file, where this process writes them (not in a worker).
  counts?: () => Record<'app' | 'access', { written: number; dropped: number }>;
}

export interface LogFileOptions {
  logDir: string;
  logMaxBytes: number;
  logBackupCount: number;
}

// The owning process: app.log lines are mirrored to stdout for the journal and `docker logs`.
export function openLogFiles(options: LogFileOptions, mirror: LineSink | undefined = undefined): LogFiles {
  try {
    fs.mkdirSync(options.logDir, { recursive: true });
  } catch {
    // RotatingFile reports the unwritable directory itself, rate-limited, and the service goes on.
  }
  const open = (name: string) => new RotatingFile({
    path: path.join(options.logDir, name),
    maxBytes: options.logMaxBytes,
    backupCount: options.logBackupCount,
  });
  const app = open('app.log');
  const access = open('access.log');
  return {
    app: (line) => {
      app.write(line);
      mirror?.(line);
    },
    access: (line) => access.write(line),
    reopen: () => {
      app.reopen();
      access.reopen();
    },
    close: () => {
      app.close();
      access.close();
    },
    counts: () => ({ app: { ...app.lines }, access: { ...access.lines } }),
  };
}

interface LogBatch { type: 'messages:logs'; app: string; access: string }

function isLogBatch(value: unknown): value is LogBatch {
  return typeof value === 'object' && value !== null && (value as { type?: unknown }).type === 'messages:logs';
}

// A cluster worker: the lines of one turn of the event loop are sent to the primary together, at its end.
export function forwardLogs(send: (batch: LogBatch) => void): LogFiles {
  let app = '';
  let access = '';
  let sending: NodeJS.Immediate | undefined;
  const flush = () => {
    clearImmediate(sending);
    sending = undefined;
    if (app === '' && access === '') return;
    send({ type: 'messages:logs', app, access });
    app = '';
    access = '';
  };
  return {
    app: (line) => {
      app += line;
      sending ??= setImmediate(flush);
    },
    access: (line) => {
      access += line;
      if (access.length > 65536) flush();
      else sending ??= setImmediate(flush);
    },
    reopen: () => {},
    close: flush,
  };
}

// Splits a batch back into lines so that rotation still happens between any two of them.
function writeLines(batch: string, sink: LineSink): void {
  let start = 0;
  for (let end = batch.indexOf('\n'); end !== -1; end = batch.indexOf('\n', start)) {
    sink(batch.slice(start, end + 1));
    start = end + 1;
  }
}

// The primary is the only writer, so workers' lines never interleave inside a line or race a rotation.
export function receiveLogs(worker: Worker, files: LogFiles): void {
  worker.on('message', (message: unknown) => {
    if (!isLogBatch(message)) return;
    writeLines(message.app, files.app);
    writeLines(message.access, files.access);
  });
}
