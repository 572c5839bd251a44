// Every Redis call: a MESSAGES_MAX_INFLIGHT slot, then the reply, each within the Redis timeout; troubles logged.
import { performance } from 'node:perf_hooks';
import type { AppLog } from './app-log.ts';
import { createDeadlines, type Deadline } from './deadlines.ts';
import { replyKind, replyReporter } from './redis-replies.ts';
import { throttle } from './throttle.ts';

// `command` names what is sent (SET, GET, ...) for the log; never a key or a value.
export type Bounded = <T>(command: string, work: () => Promise<T>) => Promise<T>;

export interface CallLimits { timeoutMs: number; maxInflight: number }

// Told each call's outcome (ok, error and the reply's first word, timeout, unavailable, busy) and the count in flight.
export interface CallObserver {
  call(command: string, outcome: string, reply: string, elapsedMs: number): void;
  inflight(count: number): void;
}

export function boundedCalls(limits: CallLimits, log: AppLog, target: string, observe: CallObserver): Bounded {
  const { timeoutMs, maxInflight } = limits;
  const missed = throttle();
  const full = throttle();
  const refused = replyReporter(log, target);
  let inflight = 0;
  const deadlines = createDeadlines(timeoutMs);
  // Calls waiting for a slot, oldest first; one that gave up is left in place as undefined.
  const waiting: Array<(() => void) | undefined> = [];

  const expire = (reject: (err: Error) => void) => {
    const suppressed = missed();
    if (suppressed !== undefined) {
      const hint = `${target} did not answer in time: a failover, a hung server, replicas slow to acknowledge WAIT, ` +
        'or MESSAGES_REDIS_TIMEOUT_MS too low';
      log.warn('redis_timeout', { target, timeoutMs, missed: suppressed + 1, hint });
    }
    reject(new Error(`Redis did not answer within ${timeoutMs} ms`));
  };

  const release = () => {
    let next: (() => void) | undefined;
    while (next === undefined && waiting.length > 0) next = waiting.shift();
    if (next === undefined) observe.inflight(--inflight);
    else next();
  };

  // node-redis's timeout stops at the write; this bounds the reply too and logs misses (a hang raises no error).
  const run = <T>(command: string, work: () => Promise<T>) => new Promise<T>((resolve, reject) => {
    const call: Deadline = {
      started: performance.now(),
      done: false,
      expire() {
        call.done = true;
        observe.call(command, 'timeout', '', performance.now() - call.started);
        release();
        expire(reject);
      },
    };
    deadlines.start(call);
    work().then((value) => {
      if (call.done) return;
      deadlines.finish(call);
      observe.call(command, 'ok', '', performance.now() - call.started);
      release();
      resolve(value);
    }, (err: unknown) => {
      const kind = replyKind(err);
      if (kind !== undefined) refused(command, kind);
      if (call.done) return;
      deadlines.finish(call);
      observe.call(command, kind === undefined ? 'unavailable' : 'error', kind ?? '', performance.now() - call.started);
      release();
      reject(err);
    });
  });

  // The slot is taken at once when one is free; otherwise the call waits its turn, at most timeoutMs.
  const waitForSlot = () => new Promise<void>((resolve, reject) => {
    const index = waiting.push(() => {
      clearTimeout(timer);
      resolve();
    }) - 1;
    const entry = waiting[index];
    const timer = setTimeout(() => {
      const at = waiting.indexOf(entry);
      if (at !== -1) waiting[at] = undefined;
      const suppressed = full();
      if (suppressed !== undefined) {
        const hint = `${maxInflight} Redis calls were in flight for ${timeoutMs} ms: ` +
          'raise MESSAGES_MAX_INFLIGHT or add workers, or look for a slow Redis';
        log.warn('redis_busy', { target, maxInflight, timeoutMs, refused: suppressed + 1, hint });
      }
      observe.call('-', 'busy', '', timeoutMs);
      reject(new Error(`No Redis call slot within ${timeoutMs} ms`));
    }, timeoutMs);
  });

  return (command, work) => {
    if (inflight < maxInflight) {
      observe.inflight(++inflight);
      return run(command, work);
    }
    return waitForSlot().then(() => run(command, work));
  };
}
