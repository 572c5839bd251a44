// A single-writer, size-rotated, buffered log file that rotates like CPython's RotatingFileHandler.
import {
  closeQuietly, describe, openForAppend, rotateFiles, stderrReporter, writeAll, type LiveFile, type Report,
} from './log-file.ts';

export interface RotatingFileOptions {
  path: string; // the live file; its directory must exist
  maxBytes: number; // 0 = never rotate
  backupCount: number; // 0 = never rotate, as in CPython
  onError?: (message: string) => void; // default: stderr, at most one line per 10 s
}

// Counted in UTF-16 units, which the lines are kept in until a flush encodes them at once: at most 3 bytes each.
const maxBufferedUnits = 64 * 1024;

// Buffered lines (say, an uncaught exception's) must survive process.exit(): one 'exit' listener flushes them all.
const flushedAtExit = new Set<RotatingFile>();
const flushAll = () => {
  for (const file of flushedAtExit) file.flush();
};

export class RotatingFile {
  private readonly path: string;
  private readonly maxBytes: number;
  private readonly backupCount: number;
  private readonly report: Report;
  private readonly flushNow = (): void => this.flush();
  private flushing: NodeJS.Immediate | undefined;
  private buffer: string[] = [];
  private bufferedUnits = 0;
  readonly lines = { written: 0, dropped: 0 }; // those written, and those that could not be (for the metrics)
  private live: LiveFile | undefined; // undefined only until the first open succeeds
  private closed = false;

  // Throws only on invalid options; an unopenable file is reported and the service goes on without it.
  constructor(options: RotatingFileOptions) {
    this.path = options.path;
    this.maxBytes = checkCount('maxBytes', options.maxBytes, 0);
    this.backupCount = checkCount('backupCount', options.backupCount, 0);
    this.report = options.onError ?? stderrReporter();
    this.openAgain();
    if (flushedAtExit.size === 0) process.on('exit', flushAll);
    flushedAtExit.add(this);
  }

  write(line: string): void {
    if (this.closed) {
      this.appendNow(line);
      return;
    }
    this.buffer.push(line);
    this.bufferedUnits += line.length;
    if (this.bufferedUnits > maxBufferedUnits) this.flush();
    // Written at the turn's end (check phase): no request waits for the disk, and lines are on disk when it ends.
    else this.flushing ??= setImmediate(this.flushNow);
  }

  flush(): void {
    clearImmediate(this.flushing);
    this.flushing = undefined;
    if (this.closed || this.buffer.length === 0) return;
    const lines = this.buffer;
    this.buffer = [];
    this.bufferedUnits = 0;
    // Until the file opens (say its directory is created later), every flush tries again.
    if (this.live === undefined) this.openAgain();
    if (this.live === undefined) {
      this.lines.dropped += lines.length;
      return;
    }
    let start = 0;
    let segmentBytes = 0;
    for (let i = 0; i < lines.length && this.rotates(this.live); i++) {
      const lineBytes = Buffer.byteLength(lines[i]!);
      if (this.shouldRotate(this.live.size + segmentBytes, lineBytes)) {
        this.count(lines.slice(start, i));
        start = i;
        segmentBytes = 0;
        // The file is at its limit and stays there: the rest of this flush is dropped, and the next flush tries again.
        if (!this.rotate()) {
          this.lines.dropped += lines.length - i;
          return;
        }
      }
      segmentBytes += lineBytes;
    }
    this.count(start === 0 ? lines : lines.slice(start));
  }

  private count(segment: string[]): void {
    if (writeAll(this.live!, segment, this.report)) this.lines.written += segment.length;
    else this.lines.dropped += segment.length;
  }

  // logrotate's "create" mode and SIGHUP: lines already buffered belong to the file that was moved away.
  reopen(): void {
    if (this.closed) return;
    this.flush();
    this.openAgain();
  }

  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    flushedAtExit.delete(this);
    if (flushedAtExit.size === 0) process.off('exit', flushAll);
    if (this.live !== undefined) closeQuietly(this.live, this.report);
  }

  // After close() nothing flushes: a late line (a request ending during the stop) is appended at once, unrotated.
  private appendNow(line: string): void {
    try {
      const live = openForAppend(this.path);
      writeAll(live, [line], this.report);
      closeQuietly(live, this.report);
    } catch (error) {
      this.report(`write to ${this.path} after close() failed: ${describe(error)}`);
    }
  }

  // CPython: never roll over a non-regular file such as /dev/null (bpo-45401)...
  private rotates(live: LiveFile): boolean {
    return this.maxBytes > 0 && this.backupCount > 0 && live.regular;
  }

  // ...or an empty one (gh-116263).
  private shouldRotate(sizeBefore: number, lineBytes: number): boolean {
    return sizeBefore > 0 && sizeBefore + lineBytes >= this.maxBytes;
  }

  private rotate(): boolean {
    const opened = rotateFiles(this.path, this.backupCount, this.report);
    if (opened === undefined) return false;
    closeQuietly(this.live!, this.report);
    this.live = opened;
    return true;
  }

  // Open the new file before closing the old one, so a failed open leaves logging where it was.
  private openAgain(): boolean {
    let opened: LiveFile;
    try {
      opened = openForAppend(this.path);
    } catch (error) {
      const fallback = this.live === undefined ? 'lines are dropped until it opens' : 'writing on to the previous file';
      this.report(`could not open ${this.path}, ${fallback}: ${describe(error)}`);
      return false;
    }
    if (this.live !== undefined) closeQuietly(this.live, this.report);
    this.live = opened;
    return true;
  }
}

function checkCount(name: string, value: number, min: number): number {
  if (Number.isSafeInteger(value) && value >= min) return value;
  throw new RangeError(`The value of "${name}" is out of range. It must be an integer >= ${min}. Received ${value}`);
}
