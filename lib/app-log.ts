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

// The longest line, newline included, so that the disk a log takes has a bound (docs/operations.md, "Logs").
export const maxAppLineBytes = 8192;

// A field longer than this is cut when a line would pass maxAppLineBytes (a stack, an error from elsewhere).
const longField = 512;

function serialize(level: string, event: string, fields: Record<string, unknown> | undefined): string {
  const head = { time: new Date().toISOString(), level, event, pid: process.pid };
  const line = `${JSON.stringify({ ...head, ...fields })}\n`;
  if (line.length * 3 < maxAppLineBytes || Buffer.byteLength(line) <= maxAppLineBytes) return line;
  const cut = Object.fromEntries(Object.entries(fields ?? {}).map(([name, value]) => {
    const text = typeof value === 'string' ? value : JSON.stringify(value) ?? '';
    return [name, text.length > longField ? `${text.slice(0, longField)}...` : value];
  }));
  const shorter = `${JSON.stringify({ ...head, ...cut, truncated: true })}\n`;
  return Buffer.byteLength(shorter) <= maxAppLineBytes ? shorter : `${JSON.stringify({ ...head, truncated: true })}\n`;
}

export function createAppLog(sink: LineSink): AppLog {
  const write = (level: string, event: string, fields: Record<string, unknown> | undefined) =>
    sink(serialize(level, event, fields));
  return {
    info: (event, fields) => write('info', event, fields),
    warn: (event, fields) => write('warn', event, fields),
    error: (event, err, fields) => write('error', event, { ...fields, ...errorFields(err) }),
  };
}
