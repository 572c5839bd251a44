// Fixtures for the Redis topologies: a cluster, a replication group watched by sentinels, a slow link, a private CA,
// and a bounded load runner. Every process listens on a free loopback port in a temp dir and is killed by pid.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { createClient } from '@redis/client';
import { freePort, onFreePort, request, startRedis, stopChild, tempDir, track, waitFor, waitForOutput, type RedisServer, type Reply } from './helpers.ts';

const run = promisify(execFile);

// A test that fails half-way still leaves no redis-server behind: whatever is running at exit is killed.
const running = new Set<{ child: ChildProcess }>();
process.once('exit', () => {
  for (const server of running) server.child.kill('SIGKILL');
});

// A master otherwise waits 5 s for more replicas before it streams a full sync (repl-diskless-sync-delay).
async function startTracked(args: string[] | (() => Promise<string[]>)): Promise<RedisServer> {
  const server = await startRedis(async () => ['--repl-diskless-sync-delay', '0', ...(typeof args === 'function' ? await args() : args)]);
  running.add(server);
  return server;
}

async function stopAll(servers: Array<{ child: ChildProcess }>): Promise<void> {
  await Promise.all(servers.map(async (server) => {
    await stopChild(server.child, 'SIGKILL');
    running.delete(server);
  }));
}

export async function redisCli(port: number, ...args: string[]): Promise<string> {
  const { stdout } = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 5000 });
  return stdout.trim();
}

// Many commands through one redis-cli, one reply line each (no tty: raw replies).
export async function redisCliBatch(port: number, commands: string[][]): Promise<string[]> {
  const child = spawn('redis-cli', ['-h', '127.0.0.1', '-p', String(port)], { stdio: ['pipe', 'pipe', 'inherit'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  child.stdin.end(commands.map((command) => `${command.join(' ')}\n`).join(''));
  await once(child, 'close');
  return output.trim().split('\n');
}

// "key:value" lines of INFO, or the flat key/value list of SENTINEL MASTER.
export async function info(port: number, section: string): Promise<Map<string, string>> {
  const lines = (await redisCli(port, 'INFO', section)).split(/\r?\n/);
  return new Map(lines.filter((line) => line.includes(':')).map((line) => [line.slice(0, line.indexOf(':')), line.slice(line.indexOf(':') + 1)]));
}

// The master's own view counts for WAIT: a replica that finished its sync but has not acknowledged yet is not online.
async function replicaOnline(masterPort: number): Promise<void> {
  await waitFor(async () => (await info(masterPort, 'replication')).get('slave0')?.includes('state=online'), 20_000, `a replica online at ${masterPort}`);
}

export interface Shard { master: RedisServer; replica: RedisServer | undefined; slots: Array<[number, number]> }

export interface Cluster {
  nodes: RedisServer[];
  shards: Shard[];
  seeds: string;
  slotsOf(keys: string[]): Promise<number[]>;
  shardOf(slot: number): Shard;
  stop(): Promise<void>;
}

// `redis-cli --cluster create` over fresh nodes; `cluster-require-full-coverage no` keeps the other shards
// writable while one has no master, and a 2 s node timeout makes a failover take seconds.
export async function startCluster(masters: number, replicasPerMaster: number): Promise<Cluster> {
  const nodes: RedisServer[] = [];
  try {
    for (let i = 0; i < masters * (1 + replicasPerMaster); i += 1) {
      nodes.push(await startTracked(async () => [
        '--cluster-enabled', 'yes', '--cluster-port', String(await freePort()), '--cluster-config-file', 'nodes.conf',
        '--cluster-node-timeout', '2000', '--cluster-require-full-coverage', 'no', '--repl-ping-replica-period', '1',
      ]));
    }
    await run('redis-cli', ['--cluster', 'create', ...nodes.map((node) => `127.0.0.1:${node.port}`),
      '--cluster-replicas', String(replicasPerMaster), '--cluster-yes'], { timeout: 30_000 });
    for (const node of nodes) {
      await waitFor(async () => (await redisCli(node.port, 'CLUSTER', 'INFO')).includes('cluster_state:ok'), 20_000, `cluster_state:ok on ${node.port}`);
    }
    // Gossip tells every node about the replicas' roles a moment after the slots are covered.
    const shards = await waitFor(async () => {
      const found = await readShards(nodes);
      return found.length === masters && found.every((shard) => (shard.replica !== undefined) === (replicasPerMaster > 0)) ? found : undefined;
    }, 20_000, 'every replica known to its master');
    for (const shard of shards) {
      if (shard.replica !== undefined) await replicaOnline(shard.master.port);
    }
    // CLUSTER SLOTS, where clients learn of replicas, lists one only once its replication offset has gossiped past
    // 0; the master pings its replicas every second (repl-ping-replica-period) to get there.
    const replicaPorts = shards.flatMap((shard) => (shard.replica === undefined ? [] : [String(shard.replica.port)]));
    for (const shard of shards) {
      await waitFor(async () => {
        const lines = (await redisCli(shard.master.port, 'CLUSTER', 'SLOTS')).split('\n');
        return replicaPorts.every((port) => lines.includes(port));
      }, 20_000, `CLUSTER SLOTS on ${shard.master.port} to list the replicas`);
    }
    return {
      nodes,
      shards,
      seeds: shards.map((shard) => `127.0.0.1:${shard.master.port}`).join(','),
      async slotsOf(keys) {
        const replies = await redisCliBatch(shards[0]!.master.port, keys.map((key) => ['CLUSTER', 'KEYSLOT', key]));
        return replies.map(Number);
      },
      shardOf(slot) {
        const shard = shards.find((candidate) => candidate.slots.some(([from, to]) => slot >= from && slot <= to));
        if (shard === undefined) throw new Error(`no shard owns slot ${slot}`);
        return shard;
      },
      stop: () => stopAll(nodes),
    };
  } catch (err) {
    await stopAll(nodes);
    throw err;
  }
}

// One cluster node owning every slot, on a port the caller chose: a service may already be waiting for it.
// A cluster-enabled redis-server that has no slots yet, as a cluster being set up; assignSlots() gives it all of them.
export async function startClusterNode(port: number): Promise<{ port: number; assignSlots(): Promise<void>; stop(): Promise<void> }> {
  const child = spawn('redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--dir', tempDir('redis-'), '--save', '', '--appendonly', 'no', '--logfile', '',
    '--cluster-enabled', 'yes', '--cluster-port', String(await freePort()),
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  track(child);
  const node = { child };
  running.add(node);
  try {
    await waitForOutput(child, /Ready to accept connections/);
  } catch (err) {
    await stopAll([node]);
    throw err;
  }
  return {
    port,
    async assignSlots() {
      await redisCli(port, 'CLUSTER', 'ADDSLOTSRANGE', '0', '16383');
      await waitFor(async () => (await redisCli(port, 'CLUSTER', 'INFO')).includes('cluster_state:ok'), 20_000, `cluster_state:ok on ${port}`);
    },
    stop: () => stopAll([node]),
  };
}

export async function startSingleNodeCluster(port: number): Promise<{ port: number; stop(): Promise<void> }> {
  const node = await startClusterNode(port);
  try {
    await node.assignSlots();
  } catch (err) {
    await node.stop();
    throw err;
  }
  return node;
}

// CLUSTER NODES: "<id> <ip:port@bus> <flags> <master id or -> <ping> <pong> <epoch> <state> <slot ranges...>".
async function readShards(nodes: RedisServer[]): Promise<Shard[]> {
  const lines = (await redisCli(nodes[0]!.port, 'CLUSTER', 'NODES')).split('\n').map((line) => line.trim().split(' '));
  const byId = new Map(lines.map((fields) => [fields[0]!, nodes.find((node) => fields[1]!.startsWith(`127.0.0.1:${node.port}@`))!]));
  return lines.filter((fields) => fields[2]!.includes('master') && fields.length > 8).map((fields) => ({
    master: byId.get(fields[0]!)!,
    replica: byId.get(lines.find((other) => other[3] === fields[0])?.[0] ?? ''),
    slots: fields.slice(8).map((range) => {
      const [from, to] = range.split('-').map(Number);
      return [from!, to ?? from!] as [number, number];
    }),
  }));
}

export interface Sentinel { port: number; child: ChildProcess }

export interface ReplicationGroup {
  name: string;
  master: RedisServer;
  replica: RedisServer;
  link: ReplicationLink;
  sentinels: Sentinel[];
  sentinelList: string;
  masterPort(): Promise<number>;
  addReplica(masterPort: number): Promise<RedisServer>;
  stop(): Promise<void>;
}

// A master, one replica behind a link the test can stall, and three sentinels (quorum 2). A master is judged down
// after 1 s, so a failover takes a few seconds.
export async function startReplicationGroup(): Promise<ReplicationGroup> {
  const name = 'mymaster';
  const dir = tempDir('sentinel-');
  const servers: Array<{ child: ChildProcess }> = [];
  let link: ReplicationLink | undefined;
  try {
    const master = await startTracked([]);
    servers.push(master);
    link = await replicationLink(master.port);
    const replica = await startTracked(['--replicaof', '127.0.0.1', String(link.port)]);
    servers.push(replica);
    await replicaOnline(master.port);
    const sentinels: Sentinel[] = [];
    for (let i = 0; i < 3; i += 1) {
      const sentinel = await startSentinel(dir, name, master.port);
      servers.push(sentinel);
      sentinels.push(sentinel);
    }
    // A failover needs sentinels that know each other (hello messages every 2 s) and the replica.
    for (const sentinel of sentinels) {
      await waitFor(async () => {
        const fields = (await redisCli(sentinel.port, 'SENTINEL', 'MASTER', name)).split('\n');
        const value = (key: string) => fields[fields.indexOf(key) + 1];
        return value('num-other-sentinels') === '2' && value('num-slaves') === '1';
      }, 20_000, `sentinel ${sentinel.port} to see its peers and the replica`);
    }
    return {
      name,
      master,
      replica,
      link,
      sentinels,
      sentinelList: sentinels.map((sentinel) => `127.0.0.1:${sentinel.port}`).join(','),
      async masterPort() {
        const reply = await redisCli(sentinels[0]!.port, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name);
        return Number(reply.split('\n')[1]);
      },
      async addReplica(masterPort) {
        const added = await startTracked(['--replicaof', '127.0.0.1', String(masterPort)]);
        servers.push(added);
        return added;
      },
      async stop() {
        await link!.close();
        await stopAll(servers);
      },
    };
  } catch (err) {
    await link?.close();
    await stopAll(servers);
    throw err;
  }
}

export interface SwitchWatch {
  // When each sentinel that has announced it so far published `+switch-master`, and the port it named, by sentinel.
  seen: Map<number, { at: number; to: number }>;
  // The first announcement by any sentinel, the moment the switch became public; undefined until there is one.
  first(): { at: number; to: number } | undefined;
  stop(): void;
}

// Subscribes to `+switch-master` on every sentinel of the group, as an operator's monitor would
// (https://redis.io/docs/latest/operate/oss_and_stack/management/sentinel/#pubsub-messages).
export async function watchSwitchMaster(group: ReplicationGroup): Promise<SwitchWatch> {
  const seen = new Map<number, { at: number; to: number }>();
  const clients = await Promise.all(group.sentinels.map(async (sentinel) => {
    const client = createClient({ socket: { host: '127.0.0.1', port: sentinel.port, reconnectStrategy: false } });
    client.on('error', () => {});
    await client.connect();
    // "<master name> <old ip> <old port> <new ip> <new port>"
    await client.subscribe('+switch-master', (message) => {
      const [name, , , , port] = message.split(' ');
      if (name === group.name && !seen.has(sentinel.port)) seen.set(sentinel.port, { at: Date.now(), to: Number(port) });
    });
    return client;
  }));
  return {
    seen,
    first: () => [...seen.values()].sort((a, b) => a.at - b.at)[0],
    stop() {
      for (const client of clients) client.destroy();
    },
  };
}

// A master watched by one sentinel that asks its own clients for `password` (requirepass). One sentinel cannot
// fail the master over (quorum 2); it is enough to show that the service authenticates to the sentinels.
export async function startGuardedSentinel(password: string): Promise<{ name: string; sentinelList: string; stop(): Promise<void> }> {
  const master = await startTracked([]);
  try {
    const sentinel = await startSentinel(tempDir('sentinel-'), 'mymaster', master.port, [`requirepass ${password}`]);
    return { name: 'mymaster', sentinelList: `127.0.0.1:${sentinel.port}`, stop: () => stopAll([master, sentinel]) };
  } catch (err) {
    await stopAll([master]);
    throw err;
  }
}

function startSentinel(dir: string, name: string, masterPort: number, extra: string[] = []): Promise<Sentinel> {
  return onFreePort((port) => startSentinelOn(port, dir, name, masterPort, extra));
}

async function startSentinelOn(port: number, dir: string, name: string, masterPort: number, extra: string[]): Promise<Sentinel> {
  const configFile = path.join(dir, `sentinel-${port}.conf`);
  // Sentinel rewrites its own configuration file, so each one gets a writable file of its own.
  fs.writeFileSync(configFile, [
    `port ${port}`, 'bind 127.0.0.1', `dir ${dir}`, 'logfile ""',
    `sentinel monitor ${name} 127.0.0.1 ${masterPort} 2`,
    `sentinel down-after-milliseconds ${name} 1000`,
    `sentinel failover-timeout ${name} 5000`,
    ...extra,
    '',
  ].join('\n'));
  const child = track(spawn('redis-server', [configFile, '--sentinel'], { stdio: ['ignore', 'pipe', 'pipe'] }));
  const sentinel = { port, child };
  running.add(sentinel);
  try {
    await waitForOutput(child, /\+monitor master/);
  } catch (err) {
    running.delete(sentinel);
    throw err;
  }
  return sentinel;
}

export interface ReplicationLink { port: number; stall(): void; close(): Promise<void> }

// A TCP link from a replica to its master that a test can stall: from stall() on nothing passes in either direction,
// as over a partitioned or congested network, while both connections stay open.
export async function replicationLink(targetPort: number): Promise<ReplicationLink> {
  const sockets = new Set<net.Socket>();
  let stalled = false;
  const server = net.createServer((downstream) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    const cut = () => {
      downstream.destroy();
      upstream.destroy();
    };
    for (const [from, to] of [[downstream, upstream], [upstream, downstream]] as const) {
      sockets.add(from);
      from.on('data', (chunk: Buffer) => {
        if (!stalled) to.write(chunk);
      });
      from.on('error', cut);
      from.on('close', () => {
        sockets.delete(from);
        cut();
      });
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as net.AddressInfo).port,
    stall() {
      stalled = true;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}

export interface PrivateCa { caFile: string; certFile: string; keyFile: string }

// A private CA and a server certificate it signs for localhost and 127.0.0.1, as an operator would make for Redis.
export async function makePrivateCa(dir: string): Promise<PrivateCa> {
  const file = (name: string) => path.join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await run('openssl', ['req', '-x509', '-new', ...ec, '-sha256', '-days', '2', '-subj', '/CN=messages test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    '-keyout', file('ca.key'), '-out', file('ca.crt')]);
  await run('openssl', ['req', '-new', ...ec, '-subj', '/CN=localhost', '-keyout', file('redis.key'), '-out', file('redis.csr')]);
  fs.writeFileSync(file('redis.ext'), 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n' +
    'extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n');
  await run('openssl', ['x509', '-req', '-in', file('redis.csr'), '-CA', file('ca.crt'), '-CAkey', file('ca.key'),
    '-CAcreateserial', '-days', '2', '-sha256', '-extfile', file('redis.ext'), '-out', file('redis.crt')]);
  return { caFile: file('ca.crt'), certFile: file('redis.crt'), keyFile: file('redis.key') };
}

// Reused TLS connections: thousands of requests must not each pay a handshake on a shared two-core machine.
export function keepAliveAgent(ca: Buffer, maxSockets: number): https.Agent {
  return new https.Agent({ keepAlive: true, maxSockets, ca });
}

export function post(port: number, ca: Buffer, agent: https.Agent, message: string): Promise<Reply> {
  return request(port, ca, {
    method: 'POST', path: '/messages', agent, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ message }),
  });
}

export function get(port: number, ca: Buffer, agent: https.Agent, digest: string): Promise<Reply> {
  return request(port, ca, { path: `/messages/${digest}`, agent });
}

// Runs `work` over `items` with at most `limit` in flight, results in item order.
export async function inParallel<T, R>(items: T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const index = next;
      next += 1;
      results[index] = await work(items[index]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return results;
}
