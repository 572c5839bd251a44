// The deadlines of every Redis call on one timer: a timer and an immediate per call cost more than the call's own code.
import { performance } from 'node:perf_hooks';
import { createSweep, type Swept } from './sweep.ts';

// A call's time starts once node-redis has written it: the check phase of the turn it was made in.
export interface Deadline extends Swept { started: number; done: boolean; expire(): void }

export function createDeadlines(timeoutMs: number) {
  // Checked every tenth of the timeout (10 to 100 ms): a call expires within 110% of it.
  const every = Math.min(100, Math.max(10, Math.floor(timeoutMs / 10)));
  // Timers run before the loop reads its sockets: an expired call fails one turn later, once a reply that came in
  // time (the process was busy) has been read, so that a 503 means Redis missed the deadline.
  const running = createSweep<Deadline>(every, (deadline, now) => {
    if (now - deadline.started < timeoutMs) return;
    running.delete(deadline);
    setImmediate(() => {
      if (!deadline.done) deadline.expire();
    });
  });
  let unstamped: Deadline[] = [];
  const stamp = () => {
    const now = performance.now();
    for (const deadline of unstamped) {
      if (deadline.done) continue;
      deadline.started = now;
      running.add(deadline);
    }
    unstamped = [];
  };

  return {
    start(deadline: Deadline): void {
      if (unstamped.push(deadline) === 1) setImmediate(stamp);
    },
    finish(deadline: Deadline): void {
      deadline.done = true;
      running.delete(deadline);
    },
  };
}
