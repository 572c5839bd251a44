// One report per interval, so a flood costs one line; undefined means hold it back, else how many were held back.
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
