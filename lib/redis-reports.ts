// What a Redis call's outcome tells the operator (throttled app.log lines with a hint) and the metrics; never a key.
import type { AppLog } from './app-log.ts';
import { ErrorReply } from '@redis/client';
import { ReplicasMissing } from './redis-connection.ts';
import { throttle } from './throttle.ts';

const hints: Readonly<Record<string, string>> = {
  OOM: 'maxmemory reached: raise maxmemory or set an eviction policy (maxmemory-policy)',
  NOPERM: 'the Redis ACL user lacks a permission: allow get, set and ping on ~messages:* ' +
    '(and wait with MESSAGES_REDIS_MIN_REPLICAS, cluster|slots in cluster mode)',
  READONLY: 'this Redis is a read-only replica: ' +
    'point MESSAGES_REDIS_HOST / MESSAGES_REDIS_PORT at the master, or use MESSAGES_REDIS_SENTINELS',
  MISCONF: 'Redis stopped writes because it cannot save to disk (stop-writes-on-bgsave-error): ' +
    'see its log for the failed save',
  LOADING: 'Redis is loading its dataset after a restart: answers resume when it is done',
  NOAUTH: 'Redis requires a password: set MESSAGES_REDIS_PASSWORD (and MESSAGES_REDIS_USERNAME for an ACL user), ' +
    'or the user:password of MESSAGES_REDIS_URL',
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

// node-redis refuses a call at once while commandsQueueMaxLength commands wait unanswered: the link is up, Redis mute.
export const queueFull = (err: unknown): boolean => err instanceof Error && err.message === 'The queue is full';

export function replyHint(kind: string): string | undefined {
  return Object.hasOwn(hints, kind) ? hints[kind] : undefined;
}

// Told each call's outcome (ok, error and the reply's first word, timeout, unavailable, busy) and the count in flight.
export interface CallObserver {
  call(command: string, outcome: string, reply: string, elapsedMs: number): void;
  inflight(count: number): void;
}

// What boundedCalls (redis-calls.ts) reports; `command` names what was sent (SET, GET, ...), never a key or value.
export interface CallReport {
  ok(command: string, elapsedMs: number): void;
  // `elapsedMs` is undefined for a failure after the call's deadline: not counted again; an error reply is logged.
  failed(command: string, err: unknown, elapsedMs: number | undefined): void;
  timedOut(command: string, elapsedMs: number): void;
  busy(): void; // no call slot within the timeout
  inflight(count: number): void;
}

// Writes a redis_error line: the reply's first word, the command, a hint (the kind's unless given).
export type Refusals = (target: string, command: string, kind: string, hint?: string) => void;

// One per Redis connection, shared by its calls and its handshakes: one line per kind per 10 s.
export function refusalLog(log: AppLog): Refusals {
  const throttles = new Map<string, () => number | undefined>();
  return (target, command, kind, hint = replyHint(kind) ?? 'Redis refused the command: see the Redis log') => {
    let allow = throttles.get(kind);
    if (allow === undefined) throttles.set(kind, allow = throttle());
    const suppressed = allow();
    if (suppressed !== undefined) log.warn('redis_error', { target, reply: kind, command, hint, suppressed });
  };
}

export function callReporter(log: AppLog, refused: Refusals, target: string,
  limits: { timeoutMs: number; maxInflight: number }, observe: CallObserver): CallReport {
  const { timeoutMs, maxInflight } = limits;
  const [missed, full, unreplicated] = [throttle(), throttle(), throttle()];
  const missedLine = () => {
    const suppressed = missed();
    if (suppressed === undefined) return;
    const hint = `${target} did not answer in time: a failover, a hung server, replicas slow to acknowledge WAIT, ` +
      'or MESSAGES_REDIS_TIMEOUT_MS too low';
    log.warn('redis_timeout', { target, timeoutMs, missed: suppressed + 1, hint });
  };
  return {
    ok: (command, elapsedMs) => observe.call(command, 'ok', '', elapsedMs),
    failed(command, err, elapsedMs) {
      const kind = replyKind(err);
      if (kind !== undefined) refused(target, command, kind);
      if (queueFull(err)) missedLine();
      const suppressed = err instanceof ReplicasMissing ? unreplicated() : undefined;
      if (suppressed !== undefined) {
        const { acked, wanted } = err as ReplicasMissing;
        log.warn('redis_replicas_missing', { target, acked, wanted, suppressed, hint: `${target} has fewer ` +
          'replicas acknowledging writes than MESSAGES_REDIS_MIN_REPLICAS: see INFO replication there' });
      }
      if (elapsedMs === undefined) return;
      observe.call(command, kind === undefined ? 'unavailable' : 'error', kind ?? '', elapsedMs);
    },
    timedOut(command, elapsedMs) {
      observe.call(command, 'timeout', '', elapsedMs);
      missedLine();
    },
    busy() {
      observe.call('-', 'busy', '', timeoutMs);
      const suppressed = full();
      if (suppressed === undefined) return;
      const hint = `${maxInflight} Redis calls were in flight for ${timeoutMs} ms: ` +
        'raise MESSAGES_MAX_INFLIGHT or add workers, or look for a slow Redis';
      log.warn('redis_busy', { target, maxInflight, timeoutMs, refused: suppressed + 1, hint });
    },
    inflight: (count) => observe.inflight(count),
  };
}
