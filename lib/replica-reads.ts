// READ_FROM_REPLICAS: a read a replica misses, fails or leaves unanswered is asked of the master, within one deadline.
import type { AppLog } from './app-log.ts';
import { createDeadlines, type Deadline } from './deadlines.ts';
import { throttle } from './throttle.ts';

type Read = Promise<string | null>;

// A replica has half the Redis timeout, the master the other half; `target` names the replicas in the warning. In a
// cluster `fromReplica` may have gone to the master itself: node-redis spreads reads over a slot's nodes.
export function replicaFirst(timeoutMs: number, log: AppLog, target: string) {
  const replicaMs = Math.floor(timeoutMs / 2);
  const deadlines = createDeadlines(replicaMs);
  const held = throttle();
  const hung = () => {
    const suppressed = held();
    if (suppressed === undefined) return;
    log.warn('redis_replica_timeout', {
      target, timeoutMs: replicaMs, missed: suppressed + 1,
      hint: 'the node asked for a read did not answer in time (a hung, overloaded or cut-off replica; in a cluster, ' +
        'possibly the master node-redis picked): the read went to the master',
    });
  };
  return (fromReplica: Read, fromMaster: () => Read): Read => new Promise((resolve, reject) => {
    // fromMaster may throw (no master known): from a deadline's immediate that would end the process.
    const askMaster = async () => {
      try {
        resolve(await fromMaster());
      } catch (err) {
        reject(err);
      }
    };
    // A hung replica sends no reset: only a deadline tells it from a slow one.
    const wait: Deadline = {
      started: 0, done: false, slot: -1,
      expire() {
        wait.done = true;
        hung();
        void askMaster();
      },
    };
    deadlines.start(wait);
    const settle = (value: string | null) => {
      if (wait.done) return;
      deadlines.finish(wait);
      if (value === null) void askMaster();
      else resolve(value);
    };
    fromReplica.then(settle, () => settle(null));
  });
}
