// MESSAGES_MAX_BUFFERED_BYTES of bodies per process: a body that does not fit waits unread, so TCP pushes back.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { errors } from './errors.ts';

export type Release = () => void;

interface Waiter { bytes: number; grant: () => void }

export function createBudget(maxBytes: number) {
  let held = 0;
  const waiting: Waiter[] = [];

  const grantWaiting = () => {
    while (waiting.length > 0 && held + waiting[0]!.bytes <= maxBytes) {
      const next = waiting.shift()!;
      held += next.bytes;
      next.grant();
    }
  };

  const releaser = (bytes: number): Release => {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      held -= bytes;
      grantWaiting();
    };
  };

  return {
    // Resolves once `bytes` are held; a request that closes, or whose answer closes, while it waits gives up its place.
    reserve(bytes: number, req: IncomingMessage, res: ServerResponse): Promise<Release> {
      if (waiting.length === 0 && held + bytes <= maxBytes) {
        held += bytes;
        return Promise.resolve(releaser(bytes));
      }
      return new Promise((resolve, reject) => {
        const waiter: Waiter = {
          bytes,
          grant: () => {
            req.off('close', giveUp);
            res.off('close', giveUp);
            resolve(releaser(bytes));
          },
        };
        const giveUp = () => {
          const at = waiting.indexOf(waiter);
          if (at === -1) return; // the other 'close', or granted meanwhile
          waiting.splice(at, 1);
          grantWaiting();
          reject(errors.badRequest('Request body was not received completely'));
        };
        waiting.push(waiter);
        req.once('close', giveUp);
        res.once('close', giveUp);
        if (req.destroyed) giveUp();
      });
    },
    held: () => held,
  };
}

export type Budget = ReturnType<typeof createBudget>;
