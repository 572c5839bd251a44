// A Redis link's log in every mode: one line per outage and per recovery, with a hint an operator can act on.
import type { AppLog } from './app-log.ts';
import { throttle } from './throttle.ts';
import { queueFull, replyHint, replyKind, type Refusals } from './redis-reports.ts';

// What an operator can change, in the words of each mode.
export interface Hints {
  variables: string; // the variables that name the server
  refused: string; // what to do when nothing listens there
  credentials?: string; // which credentials to check, when not MESSAGES_REDIS_USERNAME/PASSWORD
}

const standaloneVariables = 'MESSAGES_REDIS_HOST / MESSAGES_REDIS_PORT / MESSAGES_REDIS_URL';
const standaloneHints: Hints = {
  variables: standaloneVariables,
  refused: `start redis-server (apt-get install redis-server) or set ${standaloneVariables}`,
};

// An operator reads this line without the source at hand: say what failed and what to change.
export function describeRedisError(
  err: unknown,
  target: string,
  hints = standaloneHints,
): { cause: string; hint: string } {
  const text = err instanceof Error ? `${(err as NodeJS.ErrnoException).code ?? ''} ${err.message}` : String(err);
  let hint = 'check that Redis is running and reachable';
  const kind = replyKind(err);
  // A mode with credentials of its own (the sentinels') names them for a NOAUTH; otherwise the kind's hint holds.
  if (kind !== undefined && !(kind === 'NOAUTH' && hints.credentials !== undefined) && replyHint(kind) !== undefined) {
    hint = replyHint(kind)!;
  } else if (/ECONNREFUSED/.test(text)) {
    hint = `nothing listens at ${target}: ${hints.refused}`;
  } else if (/ECONNRESET|Socket closed unexpectedly/.test(text)) {
    // Redis cuts a client itself past client-output-buffer-limit, its idle timeout or maxclients, or by CLIENT KILL.
    hint = `${target} closed the connection: if Redis runs, its log says why (client-output-buffer-limit, ` +
      `timeout, maxclients, CLIENT KILL); else ${hints.refused}`;
  } else if (/Disconnects client/.test(text)) {
    // node-redis lets a node go that the topology no longer lists, failing the commands it still had.
    hint = `the client let ${target} go (the sentinels or the cluster no longer list it): ${hints.refused}`;
  } else if (/ENOTFOUND|EAI_AGAIN/.test(text)) {
    hint = `the host of ${target} does not resolve: check ${hints.variables}`;
  } else if (/WRONGPASS|NOAUTH|invalid password|invalid username/i.test(text)) {
    hint = hints.credentials ?? 'Redis refused the credentials: ' +
      'check MESSAGES_REDIS_USERNAME and MESSAGES_REDIS_PASSWORD (or the user:password of MESSAGES_REDIS_URL)';
  } else if (/certificate|self[- ]signed|SSL|TLS|ERR_TLS|EPROTO/i.test(text)) {
    hint = 'the TLS link to Redis failed: check MESSAGES_REDIS_CA_FILE and the server certificate';
  } else if (/slots$/.test(text)) {
    hint = 'the cluster does not serve every slot yet: ' +
      'assign them all (redis-cli --cluster create, or --cluster fix); writes resume by themselves';
  } else if (/No such master|no valid master/i.test(text)) {
    hint = 'the sentinels know no usable master by that name: check MESSAGES_REDIS_SENTINEL_NAME';
  } else if (/timeout|did not answer/i.test(text)) {
    hint = `${target} did not answer in time: check the network path and MESSAGES_REDIS_TIMEOUT_MS`;
  }
  return { cause: text.trim(), hint };
}

export interface StateReporter {
  // `callLogged`: the error came from a call, whose error reply boundedCalls has logged already.
  down(err: unknown, callLogged?: boolean): void;
  up(fields?: Record<string, unknown>): void;
}

// Logs "redis_down" once per outage and "redis_up" once per recovery, not every reconnect attempt; a link that keeps
// dropping logs one "redis_down" per 10 s, with the count of outages held back, and no "redis_up" for those.
export function stateReporter(log: AppLog, refused: Refusals, target: string, hints = standaloneHints): StateReporter {
  let up = false;
  let reported = false; // the current state, up or down, has been seen
  let said: 'up' | 'down' | undefined; // what app.log says of the link now
  let held: NodeJS.Timeout | undefined; // an outage held back, logged if it lasts until its 10 s are over
  const allow = throttle();
  const writeDown = (described: { cause: string; hint: string }, suppressed: number) => {
    said = 'down';
    log.warn('redis_down', { target, ...described, ...(suppressed > 0 ? { suppressed } : {}) });
  };
  return {
    down(err, callLogged = false) {
      // The link is up, Redis silent: the PING each second, refused so, comes here (redis_timeout reports the stall).
      if (queueFull(err)) return;
      // Redis answered the handshake with an error (NOAUTH, WRONGPASS, ...): logged as a call's refusal is.
      const kind = replyKind(err);
      const described = describeRedisError(err, target, hints);
      if (kind !== undefined && !callLogged) refused(target, 'connect', kind, described.hint);
      if (!up && reported) return;
      up = false;
      reported = true;
      const suppressed = allow();
      if (suppressed !== undefined) return writeDown(described, suppressed);
      held = setTimeout(() => {
        held = undefined;
        // Counted as held back when it came; now it is the one written.
        if (!up) writeDown(described, (allow() ?? 1) - 1);
      }, 10_000);
      held.unref();
    },
    up(fields) {
      if (up) return;
      up = true;
      reported = true;
      clearTimeout(held);
      held = undefined;
      if (said === 'up') return;
      said = 'up';
      log.info('redis_up', { target, ...fields });
    },
  };
}
