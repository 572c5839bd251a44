// Preloaded into a server that test/callgrind.ts runs under valgrind: a "mark" line on stdin calls os.loadavg(), whose
// native uv_loadavg callgrind dumps and zeroes its counts before (--dump-before=uv_loadavg), so that each phase of
// requests is a dump of its own. The server's own code never calls os.loadavg().
import os from 'node:os';

process.stdin.setEncoding('utf8');
process.stdin.on('data', (text: string) => {
  for (const line of text.split('\n')) {
    if (line !== 'mark') continue;
    os.loadavg();
    process.stderr.write('callgrind: marked\n');
  }
});
// Reading stdin must not keep a server alive that is told to stop.
process.stdin.unref();
