// The file under a rotating log: opened for append, written whole or not at all, closed; failures are reported.
import fs from 'node:fs';
import { throttle } from './throttle.ts';

export type Report = (message: string) => void;

export interface LiveFile {
  path: string;
  fd: number;
  size: number; // bytes in the file, from fstat at open, then counted as written
  regular: boolean; // only regular files rotate (not /dev/null, a FIFO, a terminal)
}

export const describe = (error: unknown): string => (error instanceof Error ? error.message : String(error));

const { O_WRONLY, O_APPEND, O_CREAT, O_NONBLOCK } = fs.constants;
const appendFlags = O_WRONLY | O_APPEND | O_CREAT | O_NONBLOCK;

// The size comes from fstat after an append-mode open, so an existing file's bytes count towards maxBytes.
export function openForAppend(path: string): LiveFile {
  // 0o640 (before umask) because logs hold client addresses; an existing file keeps its mode. O_NONBLOCK, which a
  // regular file ignores: a FIFO without a reader fails the open (ENXIO), one whose reader stalls fails the write
  // (EAGAIN), and its lines are dropped, where a blocking open or write froze the whole process.
  const fd = fs.openSync(path, appendFlags, 0o640);
  const stat = fs.fstatSync(fd);
  return { path, fd, size: stat.size, regular: stat.isFile() };
}

// One writeSync per segment, looped on partial writes; a failed segment is cut back whole, so no torn line stays.
// Returns whether the segment was written.
export function writeAll(live: LiveFile, segment: string[], report: Report): boolean {
  if (segment.length === 0) return true;
  const text = segment.join('');
  const bytes = Buffer.byteLength(text);
  let written = 0;
  try {
    // The string as it is, without a Buffer of its own (a write per turn); only a partial write needs its bytes.
    written = fs.writeSync(live.fd, text);
    if (written < bytes) {
      const data = Buffer.from(text, 'utf8');
      while (written < bytes) written += fs.writeSync(live.fd, data, written, bytes - written);
    }
    live.size += written;
    return true;
  } catch (error) {
    report(`write to ${live.path} failed, ${segment.length} line(s) dropped: ${describe(error)}`);
    if (written === 0 || !live.regular) return false;
    try {
      const end = fs.fstatSync(live.fd).size;
      fs.ftruncateSync(live.fd, end - written);
      live.size = end - written;
    } catch (cutError) {
      live.size += written;
      report(`could not remove a partly written line from ${live.path}: ${describe(cutError)}`);
    }
    return false;
  }
}

// The new file is opened first, under a name of its own, so that a failed open (EMFILE, a read-only directory) has
// shifted no backup; then the backups shift and it takes the live name. Returns it, or undefined when that failed.
export function rotateFiles(path: string, backupCount: number, report: Report): LiveFile | undefined {
  const next = `${path}.next`;
  let opened: LiveFile;
  try {
    fs.rmSync(next, { force: true }); // left by a crash mid-rotation
    opened = openForAppend(next);
  } catch (error) {
    report(`rotation of ${path} failed, lines past its limit are dropped: ${describe(error)}`);
    return undefined;
  }
  if (!shiftBackups(path, backupCount, report)) {
    closeQuietly(opened, report);
    fs.rmSync(next, { force: true });
    return undefined;
  }
  try {
    fs.renameSync(next, path);
    opened.path = path;
  } catch (error) {
    report(`could not rename ${next} to ${path}, writing to ${next}: ${describe(error)}`);
  }
  return opened;
}

// app.log.N-1 to .N, oldest first as CPython's doRollover, then app.log to .1 if it is there (deleted behind the
// service's back, it is not); POSIX rename replaces .N atomically.
function shiftBackups(path: string, backupCount: number, report: Report): boolean {
  try {
    for (let i = backupCount - 1; i >= 1; i--) {
      if (fs.existsSync(`${path}.${i}`)) fs.renameSync(`${path}.${i}`, `${path}.${i + 1}`);
    }
    if (fs.existsSync(path)) fs.renameSync(path, `${path}.1`);
    return true;
  } catch (error) {
    report(`rotation of ${path} failed, lines past its limit are dropped: ${describe(error)}`);
    return false;
  }
}

export function closeQuietly(live: LiveFile, report: Report): void {
  try {
    fs.closeSync(live.fd);
  } catch (error) {
    report(`could not close ${live.path}: ${describe(error)}`);
  }
}

// One line per 10 s at most, so a full disk cannot flood stderr (itself perhaps on that disk).
export function stderrReporter(): Report {
  const allow = throttle();
  return (message) => {
    const suppressed = allow();
    if (suppressed === undefined) return;
    const note = suppressed > 0 ? ` (${suppressed} earlier error(s) not shown)` : '';
    process.stderr.write(`rotate: ${message}${note}\n`);
  };
}
