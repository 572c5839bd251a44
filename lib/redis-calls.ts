// Every Redis call: a MESSAGES_MAX_INFLIGHT slot, then the reply, each within the Redis timeout.
import { performance } from 'node:perf_hooks';
import { createDeadlines, type Deadline } from './deadlines.ts';
import type { CallReport } from './redis-reports.ts';

// `command` names what is sent (SET, GET, ...) for the log; never a key or a value.
export type Bounded = <T>(command: string, work: () => Promise<T>) => Promise<T>;

export interface CallLimits { timeoutMs: number; maxInflight: number }
// boundedCalls' own failures: no reply, or no call slot, within the timeout.
export class NotAnswered extends Error {}

// `report` (redis-reports.ts) hears each outcome before the call settles; it only logs and counts, and never throws.
export function boundedCalls({ timeoutMs, maxInflight }: CallLimits, report: CallReport): Bounded {
  let inflight = 0;
  const deadlines = createDeadlines(timeoutMs);
  // Calls waiting for a slot, oldest first; one that gave up is left in place as undefined.
  const waiting: Array<(() => void) | undefined> = [];

  const release = () => {
    let next: (() => void) | undefined;
    while (next === undefined && waiting.length > 0) next = waiting.shift();
    if (next === undefined) report.inflight(--inflight);
    else next();
  };

  // node-redis's timeout stops at the write; this bounds the reply too (a hang raises no error).
  const run = <T>(command: string, work: () => Promise<T>) => new Promise<T>((resolve, reject) => {
    const call: Deadline = {
      started: performance.now(), done: false, slot: -1,
      expire() {
        call.done = true;
        report.timedOut(command, performance.now() - call.started);
        release();
        reject(new NotAnswered(`Redis did not answer within ${timeoutMs} ms`));
      },
    };
    // After work(): node-redis's write, queued in it, comes before the immediate that starts the deadline. A throw
    // before work() returns is its rejection: left to the executor, it would keep the slot for good.
    let pending: Promise<T>;
    try {
      pending = work();
    } catch (err) {
      pending = Promise.reject(err);
    }
    deadlines.start(call);
    pending.then((value) => {
      if (call.done) return;
      deadlines.finish(call);
      report.ok(command, performance.now() - call.started);
      release();
      resolve(value);
    }, (err: unknown) => {
      report.failed(command, err, call.done ? undefined : performance.now() - call.started);
      if (call.done) return;
      deadlines.finish(call);
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
      report.busy();
      reject(new NotAnswered(`No Redis call slot within ${timeoutMs} ms`));
    }, timeoutMs);
  });

  return (command, work) => {
    if (inflight < maxInflight) {
      report.inflight(++inflight);
      return run(command, work);
    }
    return waitForSlot().then(() => run(command, work));
  };
}
