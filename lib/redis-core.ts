// The official client without the Redis Stack modules (about 0.2 s of start, 20 MB), in the version `redis` pins.
import { createRequire } from 'node:module';

type Core = typeof import('@redis/client');

const fromRedis = createRequire(require.resolve('redis'));

// Source maps off while it loads: tsx's source-map support would read its few hundred .map files, 0.1 s a start.
const sourceMaps = process.sourceMapsEnabled;
process.setSourceMapsEnabled(false);
let core: Core;
try {
  core = fromRedis('@redis/client') as Core;
} finally {
  process.setSourceMapsEnabled(sourceMaps);
}

export const { createClient, createCluster, createSentinel, ErrorReply } = core;
