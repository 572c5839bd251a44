// At most one report per interval, so a flood (scanners, a full disk, a hung Redis) costs one line per interval.
// Returns undefined for a report to hold back, else how many were held back since the last one that went out.
export function throttle(intervalMs = 10_000): () => number | undefined {
  let last = -Infinity;
  let held = 0;
  return () => {
    const now = Date.now();
    if (now - last < intervalMs) {
      held += 1;
      return undefined;
    }
    const suppressed = held;
    last = now;
    held = 0;
    return suppressed;
  };
}
