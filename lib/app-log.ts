// app.log: one JSON object per line per event; JSON escaping makes a forged line impossible.
export type LineSink = (line: string) => void;

export interface AppLog {
  info(event: string, fields?: Record<string, unknown>): void;
  warn(event: string, fields?: Record<string, unknown>): void;
  error(event: string, err: unknown, fields?: Record<string, unknown>): void;
}

function errorFields(err: unknown): Record<string, unknown> {
  if (!(err instanceof Error)) return { error: String(err) };
  const code = (err as NodeJS.ErrnoException).code;
  return { error: err.message, ...(code === undefined ? {} : { code }), stack: err.stack };
}

export function createAppLog(sink: LineSink): AppLog {
  const write = (level: string, event: string, fields: Record<string, unknown> | undefined) => {
    sink(`${JSON.stringify({ time: new Date().toISOString(), level, event, pid: process.pid, ...fields })}\n`);
  };
  return {
    info: (event, fields) => write('info', event, fields),
    warn: (event, fields) => write('warn', event, fields),
    error: (event, err, fields) => write('error', event, { ...fields, ...errorFields(err) }),
  };
}
