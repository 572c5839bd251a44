// Reading one environment variable: each reader names the variable, the rule and the value received when it fails.
export class ConfigError extends Error {}

export type Env = Record<string, string | undefined>;

function received(value: string): string {
  return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}...` : value);
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw.trim())) {
    throw new ConfigError(`The value of "${name}" is invalid. It must be an integer. Received ${received(raw)}`);
  }
  const value = Number(raw.trim());
  if (value < min || value > max) {
    throw new ConfigError(`The value of "${name}" is out of range. ` +
      `It must be >= ${min} && <= ${max}. Received ${raw.trim()}`);
  }
  return value;
}

function flag(env: Env, name: string): boolean {
  const raw = (env[name] ?? '').trim().toLowerCase();
  if (['', '0', 'false', 'no'].includes(raw)) return false;
  if (['1', 'true', 'yes'].includes(raw)) return true;
  throw new ConfigError(`The value of "${name}" is invalid. ` +
    `It must be one of 0, 1, true, false. Received ${received(raw)}`);
}

function text(env: Env, name: string, fallback: string): string {
  const raw = env[name];
  return raw === undefined || raw.trim() === '' ? fallback : raw.trim();
}

function optional(env: Env, name: string): string | undefined {
  const raw = env[name];
  return raw === undefined || raw === '' ? undefined : raw;
}

function hostPortList(env: Env, name: string): Array<{ host: string; port: number }> {
  const raw = optional(env, name);
  if (raw === undefined) return [];
  return raw.split(',').map((entry) => {
    const match = /^\[?([^\]\s]+?)\]?:(\d{1,5})$/.exec(entry.trim());
    if (match === null || Number(match[2]) > 65535 || Number(match[2]) === 0) {
      throw new ConfigError(`The value of "${name}" is invalid. ` +
        `It must be a comma-separated list of host:port. Received ${received(raw)}`);
    }
    return { host: match[1]!, port: Number(match[2]) };
  });
}

function redisUrl(env: Env): string | undefined {
  const raw = optional(env, 'MESSAGES_REDIS_URL');
  if (raw === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError('The value of "MESSAGES_REDIS_URL" is invalid. ' +
      'It must be a redis:// or rediss:// URL. Received an unparsable URL');
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    // The URL may hold a password: name the scheme only.
    throw new ConfigError('The value of "MESSAGES_REDIS_URL" is invalid. ' +
      `It must be a redis:// or rediss:// URL. Received scheme ${received(url.protocol)}`);
  }
  return raw;
}

export const read = { integer, flag, text, optional, hostPortList, redisUrl };
