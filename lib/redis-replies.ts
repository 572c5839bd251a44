// Error replies (OOM, NOPERM, ...): Redis is up but refuses; logged per kind every 10 s, never a key or value.
import type { AppLog } from './app-log.ts';
import { ErrorReply } from '@redis/client';
import { throttle } from './throttle.ts';

const hints: Readonly<Record<string, string>> = {
  OOM: 'maxmemory reached: raise maxmemory or set an eviction policy (maxmemory-policy)',
  NOPERM: 'the Redis ACL user lacks a permission: ' +
    'allow get, set and ping (and wait with MESSAGES_REDIS_MIN_REPLICAS) on ~messages:*',
  READONLY: 'this Redis is a read-only replica: ' +
    'point MESSAGES_REDIS_HOST / MESSAGES_REDIS_PORT at the master, or use MESSAGES_REDIS_SENTINELS',
  MISCONF: 'Redis stopped writes because it cannot save to disk (stop-writes-on-bgsave-error): ' +
    'see its log for the failed save',
  LOADING: 'Redis is loading its dataset after a restart: answers resume when it is done',
  NOAUTH: 'Redis requires a password: set MESSAGES_REDIS_PASSWORD (and MESSAGES_REDIS_USERNAME for an ACL user)',
  MASTERDOWN: 'this replica lost its master and serves no stale data: check the master and the sentinels',
  NOREPLICAS: 'the master has fewer good replicas than its min-replicas-to-write: check the replicas',
  BUSY: 'Redis is running a script past its time limit: SCRIPT KILL, or wait for it',
  CLUSTERDOWN: 'the cluster does not serve every slot: check the cluster nodes (redis-cli --cluster check)',
};

// The error's first word (OOM, NOPERM, ...), or undefined when Redis did not answer with an error.
export function replyKind(err: unknown): string | undefined {
  if (!(err instanceof ErrorReply)) return undefined;
  return /^[A-Z]+/.exec(err.message)?.[0] ?? 'ERR';
}

export function replyHint(kind: string): string | undefined {
  return Object.hasOwn(hints, kind) ? hints[kind] : undefined;
}

export function replyReporter(log: AppLog, target: string): (command: string, kind: string) => void {
  const throttles = new Map<string, () => number | undefined>();
  return (command, kind) => {
    let allow = throttles.get(kind);
    if (allow === undefined) {
      allow = throttle();
      throttles.set(kind, allow);
    }
    const suppressed = allow();
    if (suppressed === undefined) return;
    const hint = replyHint(kind) ?? 'Redis refused the command: see the Redis log';
    log.warn('redis_error', { target, reply: kind, command, hint, suppressed });
  };
}
