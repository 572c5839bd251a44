// Covers lib/rotate.ts on real files: rotation like CPython's RotatingFileHandler, buffering, reopen, error reports.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { RotatingFile, type RotatingFileOptions } from '../lib/rotate.ts';

const rotateModule = path.join(__dirname, '..', 'lib', 'rotate.ts');

function tempDir(t: TestContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rotate-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// Opens dir/app.log with errors collected in an array, closed after the test.
function openLog(t: TestContext, dir: string, options: Partial<RotatingFileOptions>) {
  const errors: string[] = [];
  const onError = (message: string) => errors.push(message);
  const log = new RotatingFile({ path: path.join(dir, 'app.log'), maxBytes: 0, backupCount: 0, onError, ...options });
  t.after(() => log.close());
  return { log, errors };
}

function read(dir: string, name: string): string {
  return fs.readFileSync(path.join(dir, name), 'utf8');
}

// The descriptors of this process open on a file, read from /proc/self/fd.
function descriptorsOf(file: string): number[] {
  const target = fs.realpathSync(file);
  return fs.readdirSync('/proc/self/fd').map(Number).filter((fd) => {
    try {
      return fs.readlinkSync(`/proc/self/fd/${fd}`) === target;
    } catch {
      return false;
    }
  });
}

function writeAll(log: RotatingFile, lines: string[]): void {
  for (const line of lines) log.write(line);
  log.flush();
}

// Runs a script importing lib/rotate.ts in a child Node, under bash so a test can set a ulimit first (and a `timeout`
// command before it, for a child that might block).
async function runChild(dir: string, ulimit: string, body: string, prefix = ''): Promise<{ code: number | null; stdout: string }> {
  const script = path.join(dir, 'child.ts');
  const imports = `import fs from 'node:fs';\nimport { RotatingFile } from ${JSON.stringify(rotateModule)};\n`;
  fs.writeFileSync(script, `${imports}${body}\n`);
  const command = `${ulimit} && exec ${prefix} "$0" --require tsx/cjs "$1"`;
  const child = spawn('bash', ['-c', command, process.execPath, script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let stdout = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  const [code] = await once(child, 'close');
  return { code, stdout };
}

test('a line that would make the file reach maxBytes goes to a new file, one that stays below does not', (t) => {
  const dir = tempDir(t);
  const { log } = openLog(t, dir, { maxBytes: 10, backupCount: 2 });
  writeAll(log, ['abcd\n', 'efg\n', 'h\n']);
  assert.equal(read(dir, 'app.log.1'), 'abcd\nefg\n');
  assert.equal(read(dir, 'app.log'), 'h\n');
  writeAll(log, ['ijklmno\n']);
  assert.equal(read(dir, 'app.log.2'), 'abcd\nefg\n');
  assert.equal(read(dir, 'app.log.1'), 'h\n');
  assert.equal(read(dir, 'app.log'), 'ijklmno\n');
});

test('backups run from newest in app.log.1 to oldest in app.log.3', (t) => {
  const dir = tempDir(t);
  const { log } = openLog(t, dir, { maxBytes: 6, backupCount: 3 });
  writeAll(log, ['a\n', 'b\n', 'c\n', 'd\n', 'e\n', 'f\n', 'g\n', 'h\n']);
  assert.deepEqual(fs.readdirSync(dir).sort(), ['app.log', 'app.log.1', 'app.log.2', 'app.log.3']);
  assert.equal(read(dir, 'app.log.3'), 'a\nb\n');
  assert.equal(read(dir, 'app.log.2'), 'c\nd\n');
  assert.equal(read(dir, 'app.log.1'), 'e\nf\n');
  assert.equal(read(dir, 'app.log'), 'g\nh\n');
});

test('at most backupCount backups are kept and the oldest is dropped', (t) => {
  const dir = tempDir(t);
  const { log } = openLog(t, dir, { maxBytes: 6, backupCount: 3 });
  writeAll(log, ['a\n', 'b\n', 'c\n', 'd\n', 'e\n', 'f\n', 'g\n', 'h\n', 'i\n', 'j\n']);
  assert.deepEqual(fs.readdirSync(dir).sort(), ['app.log', 'app.log.1', 'app.log.2', 'app.log.3']);
  assert.equal(read(dir, 'app.log.3'), 'c\nd\n');
  assert.equal(read(dir, 'app.log.2'), 'e\nf\n');
  assert.equal(read(dir, 'app.log.1'), 'g\nh\n');
  assert.equal(read(dir, 'app.log'), 'i\nj\n');
});

test('rotation closes the descriptor of the file it moved away', (t) => {
  const dir = tempDir(t);
  const { log } = openLog(t, dir, { maxBytes: 6, backupCount: 3 });
  writeAll(log, ['a\n', 'b\n', 'c\n', 'd\n', 'e\n', 'f\n']);
  assert.equal(descriptorsOf(path.join(dir, 'app.log')).length, 1);
  for (const backup of ['app.log.1', 'app.log.2']) assert.deepEqual(descriptorsOf(path.join(dir, backup)), []);
});

test('a line longer than maxBytes goes alone into a fresh file', (t) => {
  const dir = tempDir(t);
  const { log } = openLog(t, dir, { maxBytes: 10, backupCount: 5 });
  const long = `${'x'.repeat(20)}\n`;
  writeAll(log, ['ab\n', long, 'cd\n']);
  assert.equal(read(dir, 'app.log.2'), 'ab\n');
  assert.equal(read(dir, 'app.log.1'), long);
  assert.equal(read(dir, 'app.log'), 'cd\n');
});

test('an empty file is never rotated, even for a line longer than maxBytes', (t) => {
  const dir = tempDir(t);
  const { log } = openLog(t, dir, { maxBytes: 10, backupCount: 5 });
  const long = `${'x'.repeat(20)}\n`;
  writeAll(log, [long]);
  assert.deepEqual(fs.readdirSync(dir), ['app.log']);
  assert.equal(read(dir, 'app.log'), long);
});

for (const [maxBytes, backupCount] of [[0, 3], [10, 0]]) {
  test(`maxBytes=${maxBytes} with backupCount=${backupCount} never rotates`, (t) => {
    const dir = tempDir(t);
    const { log } = openLog(t, dir, { maxBytes, backupCount });
    const lines = Array.from({ length: 100 }, (_, i) => `line ${i}\n`);
    writeAll(log, lines);
    assert.deepEqual(fs.readdirSync(dir), ['app.log']);
    assert.equal(read(dir, 'app.log'), lines.join(''));
  });
}

test('the size of an existing file counts towards maxBytes from the start', (t) => {
  const dir = tempDir(t);
  fs.writeFileSync(path.join(dir, 'app.log'), '12345678\n');
  const { log } = openLog(t, dir, { maxBytes: 10, backupCount: 1 });
  writeAll(log, ['a\n']);
  assert.equal(read(dir, 'app.log.1'), '12345678\n');
  assert.equal(read(dir, 'app.log'), 'a\n');
});

test('maxBytes counts UTF-8 bytes, not characters', (t) => {
  const dir = tempDir(t);
  const { log } = openLog(t, dir, { maxBytes: 10, backupCount: 1 });
  writeAll(log, ['éééé\n', 'a\n']);
  assert.equal(read(dir, 'app.log.1'), 'éééé\n');
  assert.equal(read(dir, 'app.log'), 'a\n');
});

test('a path that is a symlink to /dev/null is written to and never rotated', (t) => {
  const dir = tempDir(t);
  // A symlink, not /dev/null itself, so that a bug renames a file in the temp dir rather than the system's /dev/null.
  fs.symlinkSync('/dev/null', path.join(dir, 'app.log'));
  const { log, errors } = openLog(t, dir, { maxBytes: 10, backupCount: 2 });
  writeAll(log, Array.from({ length: 20 }, () => 'discarded\n'));
  assert.deepEqual(fs.readdirSync(dir), ['app.log']);
  assert.equal(fs.readlinkSync(path.join(dir, 'app.log')), '/dev/null');
  assert.deepEqual(errors, []);
});

// Opens the FIFO's read end without waiting for a writer: the reader a log file needs before it can open.
function fifoReader(t: TestContext, fifo: string): { read(): string } {
  const fd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  t.after(() => fs.closeSync(fd));
  return {
    read() {
      const chunk = Buffer.alloc(1 << 20);
      let text = '';
      for (let n; (n = readOrNone(fd, chunk)) > 0;) text += chunk.subarray(0, n).toString('utf8');
      return text;
    },
  };
}

const readOrNone = (fd: number, into: Buffer) => {
  try {
    return fs.readSync(fd, into);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EAGAIN') return 0;
    throw err;
  }
};

test('a FIFO is written to and never rotated', (t) => {
  const dir = tempDir(t);
  const fifo = path.join(dir, 'app.log');
  execFileSync('mkfifo', [fifo]);
  const reader = fifoReader(t, fifo);
  const { log, errors } = openLog(t, dir, { maxBytes: 10, backupCount: 2 });
  const lines = Array.from({ length: 20 }, (_, i) => `line ${i}\n`);
  writeAll(log, lines);
  assert.equal(reader.read(), lines.join(''));
  assert.deepEqual(fs.readdirSync(dir), ['app.log']);
  assert.deepEqual(errors, []);
});

test('a FIFO with no reader, or one that stops reading, never blocks the process: its lines are dropped and counted', { timeout: 30_000 }, async (t) => {
  const dir = tempDir(t);
  const fifo = path.join(dir, 'app.log');
  execFileSync('mkfifo', [fifo]);
  // In a child, under a time limit: a blocking open or write would hang it, not the test runner.
  const body = `const errors = [];
const log = new RotatingFile({ path: ${JSON.stringify(fifo)}, maxBytes: 0, backupCount: 0, onError: (m) => errors.push(m) });
log.write('nobody reads\\n');
log.flush();
const fd = fs.openSync(${JSON.stringify(fifo)}, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
for (let i = 0; i < 2000; i += 1) log.write('x'.repeat(1000) + '\\n');
log.flush();
log.close();
fs.closeSync(fd);
process.stdout.write(JSON.stringify({ errors, lines: log.lines }));`;
  const { code, stdout } = await runChild(dir, 'true', body, 'timeout -s KILL 10');
  assert.equal(code, 0, 'the child blocked or failed');
  const { errors, lines } = JSON.parse(stdout) as { errors: string[]; lines: { written: number; dropped: number } };
  assert.match(errors[0] ?? '', /could not open .*app\.log, lines are dropped until it opens: ENXIO/);
  // The second flush found a reader that reads nothing: the pipe's 64 KiB took what fit, the rest was dropped.
  assert.ok(lines.dropped > 1900 && lines.written + lines.dropped === 2001, JSON.stringify(lines));
  assert.ok(errors.some((error) => /EAGAIN/.test(error)), errors.join('\n'));
});

test('10,000 lines with a small maxBytes all arrive exactly once, in order and whole', (t) => {
  const dir = tempDir(t);
  const maxBytes = 1000;
  const { log, errors } = openLog(t, dir, { maxBytes, backupCount: 200 });
  const lines = Array.from({ length: 10_000 }, (_, i) => `line ${String(i).padStart(5, '0')}\n`);
  lines.forEach((line, i) => {
    log.write(line);
    if (i % 997 === 0) log.flush();
  });
  log.flush();
  const names = fs.readdirSync(dir);
  assert.equal(names.length, 112);
  const oldestFirst = [...Array.from({ length: 111 }, (_, i) => `app.log.${111 - i}`), 'app.log'];
  const contents = oldestFirst.map((name) => read(dir, name));
  for (const content of contents) {
    assert.ok(Buffer.byteLength(content) < maxBytes);
    assert.match(content, /^(line \d{5}\n)+$/);
  }
  assert.equal(contents.join(''), lines.join(''));
  assert.deepEqual(errors, []);
});

test('flush() writes each run of lines between rotations with one writeSync call', (t) => {
  const dir = tempDir(t);
  const { log } = openLog(t, dir, { maxBytes: 20, backupCount: 5 });
  const writeSync = t.mock.method(fs, 'writeSync');
  writeAll(log, ['1111\n', '2222\n', '3333\n', '4444\n', '5555\n', '6666\n', '7777\n', '8888\n']);
  assert.deepEqual(writeSync.mock.calls.map((call) => call.result), [15, 15, 10]);
  assert.equal(read(dir, 'app.log.2'), '1111\n2222\n3333\n');
  assert.equal(read(dir, 'app.log.1'), '4444\n5555\n6666\n');
  assert.equal(read(dir, 'app.log'), '7777\n8888\n');
});

test('write() only buffers, within one turn of the event loop, until more than 64 KiB are waiting', (t) => {
  const dir = tempDir(t);
  const { log } = openLog(t, dir, {});
  const line = `${'x'.repeat(1023)}\n`;
  for (let i = 0; i < 64; i++) log.write(line);
  assert.equal(read(dir, 'app.log'), '');
  log.write(line);
  assert.equal(read(dir, 'app.log'), line.repeat(65));
});

test('the lines of one turn of the event loop are on disk once that turn is over, without a call to flush()', async (t) => {
  const dir = tempDir(t);
  const { log } = openLog(t, dir, {});
  log.write('first\n');
  log.write('second\n');
  assert.equal(read(dir, 'app.log'), '');
  // An immediate queued now runs after the one the file queued at its first write, in the same check phase.
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(read(dir, 'app.log'), 'first\nsecond\n');
});

test('an open file lets the process exit and its buffered lines reach the disk', { timeout: 20_000 }, async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'app.log');
  // The child never closes the file: if a pending flush kept the process alive, this test would time out.
  const body = `const log = new RotatingFile({ path: ${JSON.stringify(file)}, maxBytes: 0, backupCount: 0 });
log.write('last words\\n');`;
  const { code } = await runChild(dir, 'true', body);
  assert.equal(code, 0);
  assert.equal(read(dir, 'app.log'), 'last words\n');
});

test('close() writes the lines still buffered', (t) => {
  const dir = tempDir(t);
  const { log } = openLog(t, dir, {});
  log.write('a\n');
  log.close();
  assert.equal(read(dir, 'app.log'), 'a\n');
});

test('close() twice is harmless, and a line written after close() is appended at once', (t) => {
  const dir = tempDir(t);
  const { log, errors } = openLog(t, dir, {});
  writeAll(log, ['a\n']);
  log.close();
  log.close();
  log.write('b\n');
  log.write('c\n');
  log.flush();
  log.reopen();
  assert.equal(read(dir, 'app.log'), 'a\nb\nc\n');
  assert.deepEqual(errors, []);
});

test('any number of open files share one exit listener, added with the first and removed with the last', (t) => {
  const dir = tempDir(t);
  const before = process.listenerCount('exit');
  const logs = Array.from({ length: 20 }, (_, i) => new RotatingFile({ path: path.join(dir, `f${i}.log`), maxBytes: 0, backupCount: 0 }));
  assert.equal(process.listenerCount('exit'), before + 1);
  for (const log of logs) log.close();
  assert.equal(process.listenerCount('exit'), before);
});

test('loading the module adds no listener: nothing happens at import', () => {
  const result = execFileSync(process.execPath, ['--require', 'tsx/cjs', '-e',
    `const before = process.listenerCount('exit'); require(${JSON.stringify(rotateModule)}); console.log(process.listenerCount('exit') - before)`], { encoding: 'utf8' });
  assert.equal(result.trim(), '0');
});

test('reopen() after an external mv sends new lines to a new app.log', (t) => {
  const dir = tempDir(t);
  const { log, errors } = openLog(t, dir, {});
  writeAll(log, ['before\n']);
  fs.renameSync(path.join(dir, 'app.log'), path.join(dir, 'app.log.old'));
  log.reopen();
  writeAll(log, ['after\n']);
  assert.equal(read(dir, 'app.log.old'), 'before\n');
  assert.equal(read(dir, 'app.log'), 'after\n');
  assert.deepEqual(descriptorsOf(path.join(dir, 'app.log.old')), []);
  assert.deepEqual(errors, []);
});

test('lines buffered before reopen() go to the old file', (t) => {
  const dir = tempDir(t);
  const { log } = openLog(t, dir, {});
  log.write('buffered\n');
  fs.renameSync(path.join(dir, 'app.log'), path.join(dir, 'app.log.old'));
  log.reopen();
  writeAll(log, ['after\n']);
  assert.equal(read(dir, 'app.log.old'), 'buffered\n');
  assert.equal(read(dir, 'app.log'), 'after\n');
});

test('a failed open on reopen() is reported and writing goes on to the old file', (t) => {
  const dir = tempDir(t);
  const { log, errors } = openLog(t, dir, {});
  writeAll(log, ['before\n']);
  fs.renameSync(path.join(dir, 'app.log'), path.join(dir, 'app.log.old'));
  fs.mkdirSync(path.join(dir, 'app.log'));
  log.reopen();
  writeAll(log, ['after\n']);
  assert.equal(read(dir, 'app.log.old'), 'before\nafter\n');
  assert.equal(errors.length, 1);
  assert.match(errors[0] ?? '', /could not open .*app\.log, writing on to the previous file: EISDIR/);
});

test('a rotation whose rename fails is reported, and the lines past the limit are dropped and counted: the file stays within it', (t) => {
  const dir = tempDir(t);
  fs.mkdirSync(path.join(dir, 'app.log.1'));
  const { log, errors } = openLog(t, dir, { maxBytes: 4, backupCount: 1 });
  assert.doesNotThrow(() => writeAll(log, ['a\n', 'b\n', 'c\n']));
  assert.equal(read(dir, 'app.log'), 'a\n');
  assert.deepEqual(log.lines, { written: 1, dropped: 2 });
  assert.match(errors[0] ?? '', /rotation of .*app\.log failed, lines past its limit are dropped: EISDIR/);
  assert.deepEqual(fs.readdirSync(dir).sort(), ['app.log', 'app.log.1'], 'no file of the failed rotation left behind');
});

test('a rotation that finds no descriptor for the new file (EMFILE) leaves the backups as they were', { timeout: 20_000 }, async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'app.log');
  fs.writeFileSync(`${file}.1`, 'one\n');
  fs.writeFileSync(`${file}.2`, 'two\n');
  // Fill the descriptor table so that opening a file fails with EMFILE; a low ulimit keeps that quick.
  const body = `const errors = [];
const log = new RotatingFile({ path: ${JSON.stringify(file)}, maxBytes: 4, backupCount: 2, onError: (m) => errors.push(m) });
log.write('a\\n');
log.flush();
const filler = [];
try { for (;;) filler.push(fs.openSync('/dev/null', 'r')); } catch {}
for (const line of ['b\\n', 'c\\n', 'd\\n']) {
  log.write(line);
  log.flush();
}
for (const fd of filler) fs.closeSync(fd);
log.write('e\\n');
log.flush();
log.close();
process.stdout.write(JSON.stringify({ errors, lines: log.lines }));`;
  const { code, stdout } = await runChild(dir, 'ulimit -n 200', body);
  assert.equal(code, 0);
  const { errors, lines } = JSON.parse(stdout) as { errors: string[]; lines: unknown };
  assert.match(errors[0] ?? '', /rotation of .*app\.log failed, lines past its limit are dropped: EMFILE/);
  // Three failed rotations shifted nothing; the one after them did, once: .2 is dropped, as in any rotation.
  assert.deepEqual(fs.readdirSync(dir).sort(), ['app.log', 'app.log.1', 'app.log.2', 'child.ts']);
  assert.equal(read(dir, 'app.log.2'), 'one\n');
  assert.equal(read(dir, 'app.log.1'), 'a\n');
  assert.equal(read(dir, 'app.log'), 'e\n');
  assert.deepEqual(lines, { written: 2, dropped: 3 });
});

test('a live file deleted behind its back is replaced by a new one at the next rotation, as CPython does', (t) => {
  const dir = tempDir(t);
  const { log, errors } = openLog(t, dir, { maxBytes: 6, backupCount: 2 });
  writeAll(log, ['a\n', 'b\n']);
  fs.writeFileSync(path.join(dir, 'app.log.1'), 'older\n');
  fs.rmSync(path.join(dir, 'app.log'));
  writeAll(log, ['c\n', 'd\n']);
  assert.deepEqual(errors, []);
  assert.equal(read(dir, 'app.log'), 'c\nd\n');
  assert.equal(read(dir, 'app.log.2'), 'older\n');
  assert.equal(fs.existsSync(path.join(dir, 'app.log.1')), false, 'nothing to move to .1: the file was gone');
});

test('a full disk (/dev/full) is reported through onError and never thrown', (t) => {
  const dir = tempDir(t);
  fs.symlinkSync('/dev/full', path.join(dir, 'app.log'));
  const { log, errors } = openLog(t, dir, { maxBytes: 10, backupCount: 1 });
  assert.doesNotThrow(() => writeAll(log, ['a\n', 'b\n']));
  assert.doesNotThrow(() => writeAll(log, ['c\n']));
  assert.deepEqual(errors.length, 2);
  assert.match(errors[0] ?? '', /write to .*app\.log failed, 2 line\(s\) dropped: ENOSPC/);
});

test('a descriptor closed behind its back is reported and never thrown', (t) => {
  const dir = tempDir(t);
  const { log, errors } = openLog(t, dir, {});
  const [fd] = descriptorsOf(path.join(dir, 'app.log'));
  assert.ok(fd !== undefined);
  fs.closeSync(fd);
  assert.doesNotThrow(() => writeAll(log, ['a\n']));
  assert.doesNotThrow(() => log.close());
  assert.equal(errors.length, 2);
  assert.match(errors[0] ?? '', /failed, 1 line\(s\) dropped: EBADF/);
  assert.match(errors[1] ?? '', /could not close .*app\.log: EBADF/);
});

test('a file-size limit (EFBIG) is survived, reported, and the torn part of the line is removed', (t) => {
  const dir = tempDir(t);
  const { log, errors } = openLog(t, dir, {});
  // prlimit on this process rather than ulimit in a child: a child under the limit could not write its coverage file.
  // Node ignores SIGXFSZ, so writeSync writes up to the limit, then throws EFBIG.
  const setFileSizeLimit = (limit: string) => {
    execFileSync('prlimit', ['--pid', String(process.pid), `--fsize=${limit}`]);
  };
  t.after(() => setFileSizeLimit('unlimited:unlimited'));
  setFileSizeLimit('1024:unlimited');
  writeAll(log, [`${'a'.repeat(599)}\n`]);
  writeAll(log, [`${'b'.repeat(599)}\n`]);
  writeAll(log, [`${'c'.repeat(99)}\n`]);
  setFileSizeLimit('unlimited:unlimited');
  assert.equal(read(dir, 'app.log'), `${'a'.repeat(599)}\n${'c'.repeat(99)}\n`);
  assert.equal(errors.length, 1);
  assert.match(errors[0] ?? '', /write to .*app\.log failed, 1 line\(s\) dropped: EFBIG/);
});

test('without onError, errors go to stderr at most once per 10 s with a count of those not shown', (t) => {
  const dir = tempDir(t);
  t.mock.timers.enable({ apis: ['Date'], now: 0 });
  const stderrWrite = t.mock.method(process.stderr, 'write', () => true);
  fs.symlinkSync('/dev/full', path.join(dir, 'app.log'));
  const log = new RotatingFile({ path: path.join(dir, 'app.log'), maxBytes: 0, backupCount: 0 });
  t.after(() => log.close());
  const shown = () => {
    const texts = stderrWrite.mock.calls.map((call) => String(call.arguments[0]));
    return texts.filter((text) => text.startsWith('rotate:'));
  };
  for (let i = 0; i < 3; i++) writeAll(log, ['x\n']);
  assert.equal(shown().length, 1);
  t.mock.timers.tick(9_999);
  writeAll(log, ['x\n']);
  assert.equal(shown().length, 1);
  t.mock.timers.tick(1);
  writeAll(log, ['x\n']);
  assert.equal(shown().length, 2);
  assert.match(shown()[1] ?? '', /^rotate: write to .*app\.log failed, 1 line\(s\) dropped: ENOSPC.* \(3 earlier error\(s\) not shown\)\n$/);
});

test('a file that cannot be opened at start is reported, its lines dropped, and opened by a later flush', (t) => {
  const dir = tempDir(t);
  const { log, errors } = openLog(t, path.join(dir, 'later'), {});
  writeAll(log, ['dropped\n']);
  assert.equal(errors.length, 2);
  assert.match(errors[0] ?? '', /could not open .*app\.log, lines are dropped until it opens: ENOENT/);
  fs.mkdirSync(path.join(dir, 'later'));
  writeAll(log, ['kept\n']);
  assert.equal(read(dir, 'later/app.log'), 'kept\n');
  assert.equal(errors.length, 2);
});

test('close() of a file that never opened is harmless', (t) => {
  const dir = tempDir(t);
  const { log, errors } = openLog(t, path.join(dir, 'missing'), {});
  assert.doesNotThrow(() => log.close());
  assert.equal(errors.length, 1);
});

for (const [name, value] of [['maxBytes', -1], ['backupCount', 1.5]] as const) {
  test(`the constructor rejects ${name}=${value} naming the option, the rule and the value`, (t) => {
    const dir = tempDir(t);
    const options = { path: path.join(dir, 'app.log'), maxBytes: 0, backupCount: 0, [name]: value };
    const message = `The value of "${name}" is out of range. It must be an integer >= 0. Received ${value}`;
    assert.throws(() => new RotatingFile(options), { name: 'RangeError', message });
    assert.deepEqual(fs.readdirSync(dir), []);
  });
}

test('holds the disk at (backupCount + 1) x max(maxBytes - 1, longest line) when lines are longer than maxBytes', (t) => {
  const dir = tempDir(t);
  const { log } = openLog(t, dir, { maxBytes: 4096, backupCount: 2 });
  const long = `${'l'.repeat(8191)}\n`;
  const short = `${'s'.repeat(99)}\n`;
  for (let i = 0; i < 30; i += 1) {
    log.write(i % 3 === 0 ? long : short);
    log.flush();
  }
  const sizes = ['app.log', 'app.log.1', 'app.log.2'].map((name) => fs.statSync(path.join(dir, name)).size);
  for (const size of sizes) assert.ok(size <= Math.max(4096 - 1, long.length), `a file of ${size} bytes`);
  assert.ok(sizes.reduce((sum, size) => sum + size, 0) <= 3 * Math.max(4096 - 1, long.length));
  assert.equal(fs.existsSync(path.join(dir, 'app.log.3')), false);
});
