// The official client without the Redis Stack modules: `redis` is @redis/client plus Bloom, JSON, Search and
// TimeSeries, which this service never calls and whose loading cost every start about 0.2 s and every process about
// 20 MB. The core is resolved from the `redis` package's own directory, so it is always the version that
// package.json's `redis` pins.
import { createRequire } from 'node:module';

type Core = typeof import('@redis/client');

const fromRedis = createRequire(require.resolve('redis'));

// tsx turns on Node's source-map support, which then reads the .map file of each of the client's few hundred
// CommonJS files as they load: about 0.1 s of every start, for stack traces into a library we do not debug.
const sourceMaps = process.sourceMapsEnabled;
process.setSourceMapsEnabled(false);
let core: Core;
try {
  core = fromRedis('@redis/client') as Core;
} finally {
  process.setSourceMapsEnabled(sourceMaps);
}

export const { createClient, createCluster, createSentinel, ErrorReply } = core;
