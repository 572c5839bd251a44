// A static route table, the first match wins: exact paths, parameterised prefixes; HEAD served by GET; 405 with Allow.
import { errors } from './errors.ts';

type Methods<H> = Partial<Record<'GET' | 'POST', H>>;

export interface Route<H> {
  path: string; // exact path, or a prefix ending in '/' when param is true
  param: boolean; // the segment after the prefix is passed to the handler
  methods: Methods<H>;
}

function allowOf(methods: Methods<unknown>): string {
  const names = Object.keys(methods);
  if ('GET' in methods) names.push('HEAD');
  return names.sort().join(', ');
}

// An absolute-form target (RFC 9112 section 3.2.2): scheme, authority, then the path and query.
const absoluteForm = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)(.*)$/i;

// The authority of an absolute-form target ('' when it has none), or undefined for an origin-form one ("/a?b").
export function authorityOf(url: string): string | undefined {
  return url.startsWith('/') ? undefined : absoluteForm.exec(url)?.[1];
}

// Only the path matters for routing; the query string is ignored, never parsed.
function pathOf(url: string): string {
  const target = url.startsWith('/') ? url : (absoluteForm.exec(url)?.[2] || '/');
  const end = target.indexOf('?');
  return end === -1 ? target : target.slice(0, end);
}

// A malformed percent-escape is returned as given rather than thrown (polka's rule).
function decodeSegment(segment: string): string {
  if (!segment.includes('%')) return segment;
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

// A parameterised route takes one segment after its prefix, not empty; another route, its exact path.
const matches = (route: Route<unknown>, path: string) => (route.param
  ? path.length > route.path.length && path.startsWith(route.path) && !path.includes('/', route.path.length)
  : path === route.path);

export function createRouter<H>(table: readonly Route<H>[]) {
  const routes = table.map((route) => ({
    ...route, allow: allowOf(route.methods), name: route.param ? `${route.path}:param` : route.path,
  }));

  // The handler, the parameter and the route's name ('/messages/:param'), or the 404/405 HttpError that answers.
  return function find(method: string, url: string): { handler: H; param: string; route: string } {
    const path = pathOf(url);
    // The first route of the table that matches (app.ts lists exact paths before the parameterised one).
    const entry = routes.find((route) => matches(route, path));
    if (entry === undefined) throw errors.pathNotFound();
    const key = method === 'HEAD' ? 'GET' : method;
    // hasOwn, not a plain lookup: a method named "constructor" must not reach Object.prototype.
    if (!Object.hasOwn(entry.methods, key)) throw errors.methodNotAllowed(method, entry.allow);
    const param = entry.param ? decodeSegment(path.slice(entry.path.length)) : '';
    return { handler: entry.methods[key as keyof Methods<H>]!, param, route: entry.name };
  };
}
