// The shape an auditor relies on: no import cycle, small modules within 120 columns, an audit guide (docs/audit.md)
// that names only files, line counts, code and tests that exist, and docs whose relative links resolve.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { projectRoot } from '../lib/config.ts';

const libFiles = fs.readdirSync(path.join(projectRoot, 'lib')).filter((name) => name.endsWith('.ts'));
const sources = ['server.ts', ...libFiles.map((name) => `lib/${name}`)];
const read = (file: string) => fs.readFileSync(path.join(projectRoot, file), 'utf8');

// The local modules a source imports at run time (type-only imports are erased and load nothing).
function importsOf(file: string): string[] {
  const found: string[] = [];
  for (const match of read(file).matchAll(/^import (?!type )[^;]*? from '(\.{1,2}\/[^']+)';$/gms)) {
    found.push(path.posix.normalize(path.posix.join(path.posix.dirname(file), match[1]!)));
  }
  return found;
}

test('no module imports itself through others: the import graph of server.ts and lib/ has no cycle', () => {
  const graph = new Map(sources.map((file) => [file, importsOf(file)]));
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (file: string, trail: string[]): void => {
    if (state.get(file) === 'done') return;
    assert.notEqual(state.get(file), 'visiting', `import cycle: ${[...trail, file].join(' -> ')}`);
    state.set(file, 'visiting');
    for (const next of graph.get(file) ?? []) visit(next, [...trail, file]);
    state.set(file, 'done');
  };
  for (const file of sources) visit(file, []);
});

for (const file of sources) {
  test(`${file} stays small: at most 160 lines, 6 exported values (and 3 types), 120 columns`, () => {
    const lines = read(file).split('\n');
    assert.ok(lines.length <= 161, `${lines.length - 1} lines`);
    const exports = lines.filter((line) => /^export /.test(line));
    const values = exports.filter((line) => !/^export (type|interface) /.test(line));
    assert.ok(values.length <= 6 && exports.length - values.length <= 3, `exports: ${exports.join(' | ')}`);
    const wide = lines.map((line, i) => [i + 1, line.length] as const).filter(([, width]) => width > 120);
    assert.deepEqual(wide, [], 'lines wider than 120 columns (line, width)');
  });
}

const guide = read('docs/audit.md');

// As `wc -l` counts: newline characters.
const lineCount = (file: string) => read(file).split('\n').length - 1;

// A section of a markdown text: from its heading line to the next heading of the same level or above.
function section(markdown: string, heading: string): string {
  const start = markdown.indexOf(`\n${heading}\n`);
  assert.notEqual(start, -1, `no heading "${heading}"`);
  const level = heading.indexOf(' ');
  const rest = markdown.slice(start + heading.length + 2);
  const end = rest.search(new RegExp(`^#{1,${level}} `, 'm'));
  return end === -1 ? rest : rest.slice(0, end);
}

// The rows `| lib/x.ts | N | what to look for |` of a reading-order table, and the total stated after it.
function readingTable(heading: string): { rows: { file: string; stated: number }[]; total: number | undefined } {
  const text = section(guide, heading);
  const rows = [...text.matchAll(/^\| ([^|\s]+) \| (\d+) \|/gm)].map((m) => ({ file: m[1]!, stated: Number(m[2]) }));
  const total = /total: (\d+) lines/.exec(text)?.[1];
  return { rows, total: total === undefined ? undefined : Number(total) };
}

const requestPath = readingTable('### The request path');
const theRest = readingTable('### The rest');
const sum = (rows: { stated: number }[]) => rows.reduce((total, row) => total + row.stated, 0);

// A path in the repository as the guide writes one: under a top directory, or a file at the root.
const pathPattern = new RegExp('(?<![\\w./-])((?:lib|test|docs|systemd|docker|\\.ci)/[\\w./-]*\\w' +
  '|server\\.ts|Dockerfile|docker-compose\\.yml|package\\.json)(?![\\w/-])', 'g');
const isPath = (text: string) => new RegExp(`^(?:${pathPattern.source})$`).test(text);

test('every file the audit guide names exists', () => {
  const named = new Set([...guide.matchAll(pathPattern)].map((m) => m[1]!));
  assert.ok(named.size > 40, `only ${named.size} paths found: the pattern no longer matches the guide`);
  const missing = [...named].filter((file) => !fs.existsSync(path.join(projectRoot, file)));
  assert.deepEqual(missing, [], 'files named in docs/audit.md that do not exist');
});

test('every line count in the audit guide is the file\'s own, and each stated total is the sum of its table', () => {
  const wrong: string[] = [];
  for (const { file, stated } of [...requestPath.rows, ...theRest.rows]) {
    const actual = lineCount(file);
    if (actual !== stated) wrong.push(`${file}: the guide says ${stated} lines, the file has ${actual}`);
  }
  for (const [name, table] of [['request path', requestPath], ['the rest', theRest]] as const) {
    const rows = sum(table.rows);
    if (table.total !== rows) wrong.push(`${name}: stated total ${table.total}, its rows add up to ${rows}`);
  }
  assert.ok(wrong.length === 0, wrong.join('; '));
});

test('server.ts and every lib/ module appear exactly once in the audit guide\'s reading order', () => {
  const listed = [...requestPath.rows, ...theRest.rows].map((row) => row.file);
  assert.deepEqual([...listed].sort(), [...sources].sort());
});

test('the request path an auditor must read, as listed in docs/audit.md, is under 900 lines (issue 13)', () => {
  const listing = requestPath.rows.map((row) => `${row.file} ${row.stated}`).join(', ');
  assert.ok(requestPath.rows.length > 0, 'no request-path table found');
  assert.ok(sum(requestPath.rows) < 900, `the request path is ${sum(requestPath.rows)} lines: ${listing}`);
});

// Each cell's code spans and quoted titles in order: a path names the file the names or titles after it belong to.
function* references(cell: string): Generator<{ file: string | undefined; name?: string; title?: string }> {
  let file: string | undefined;
  for (const match of cell.matchAll(/`([^`]+)`|\u201c([^\u201d]+)\u201d/g)) {
    if (match[1] !== undefined && isPath(match[1])) file = match[1];
    else if (match[1] !== undefined) yield { file, name: match[1] };
    else yield { file, title: match[2]! };
  }
}

const promiseRows = section(guide, '## Promises and their proofs').split('\n')
  .filter((line) => line.startsWith('| ') && !line.startsWith('| promise |') && !line.startsWith('| ---'))
  .map((line) => line.slice(2, -2).split(' | '));

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

// The title as the first argument of test(...): a quoted string (its quotes and backslashes escaped) or a template.
function isTestTitle(source: string, title: string): boolean {
  const literals = [
    `'${title.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`,
    `"${title.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`,
    `\`${title}\``,
  ];
  return literals.some((literal) => new RegExp(`\\btest\\(\\s*${escapeRegExp(literal)}`).test(source));
}

test('every test title the audit guide quotes is a test in the named file (a deploy script: its check text)', () => {
  const wrong: string[] = [];
  let quoted = 0;
  for (const cells of promiseRows) {
    for (const { file, title } of references(cells.at(-1)!)) {
      if (title === undefined) continue;
      quoted += 1;
      if (file === undefined) wrong.push(`"${title}" names no file before it`);
      else if (!fs.existsSync(path.join(projectRoot, file))) wrong.push(`${file} does not exist`);
      else if (file.endsWith('.test.ts') ? !isTestTitle(read(file), title) : !read(file).includes(title)) {
        wrong.push(`${file} has no test "${title}"`);
      }
    }
  }
  assert.ok(quoted > 50, `only ${quoted} titles found: the guide's format no longer matches`);
  assert.ok(wrong.length === 0, wrong.join('; '));
});

test('every function or constant the audit guide names occurs in the file it names it in', () => {
  const named: { file: string; name: string }[] = [];
  for (const cells of promiseRows) {
    for (const { file, name } of references(cells.at(-2)!)) {
      if (file !== undefined && name !== undefined) named.push({ file, name });
    }
  }
  for (const match of section(guide, '## Why the code is as it is').matchAll(/^- `([^`]+)`, `([^`]+)`/gm)) {
    named.push({ file: match[1]!, name: match[2]! });
  }
  assert.ok(named.length > 80, `only ${named.length} names found: the guide's format no longer matches`);
  const wrong = named.filter(({ file, name }) => !read(file).includes(name)).map(({ file, name }) => `${file} ${name}`);
  assert.deepEqual(wrong, [], 'names the guide gives that the file does not contain');
});

// GitHub's anchor for a heading: its text without markup, lower-cased, punctuation dropped, spaces to hyphens.
function slug(heading: string): string {
  const text = heading.replace(/`/g, '').replace(/\[([^\]]*)\]\([^)]*\)/g, '$1');
  return text.toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/ /g, '-');
}

// The text a reader sees as prose: fenced blocks and code spans removed.
const prose = (markdown: string) =>
  markdown.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, '').replace(/`[^`]*`/g, '');

function anchorsOf(file: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  for (const match of prose(read(file)).matchAll(/^#{1,6} (.+)$/gm)) {
    const base = slug(match[1]!.trim());
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    anchors.add(count === 0 ? base : `${base}-${count}`);
  }
  return anchors;
}

const markdownFiles = ['README.md', ...fs.readdirSync(path.join(projectRoot, 'docs'))
  .filter((name) => name.endsWith('.md')).map((name) => `docs/${name}`)];

for (const file of markdownFiles) {
  test(`every relative link in ${file} resolves to a file, and its #anchor to a heading there`, () => {
    const wrong: string[] = [];
    for (const match of prose(read(file)).matchAll(/\[[^\]]*\]\(([^)\s]+)\)/g)) {
      const target = match[1]!;
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue;
      const [linked = '', anchor] = target.split('#');
      const resolved = linked === '' ? file : path.posix.normalize(path.posix.join(path.posix.dirname(file), linked));
      if (!fs.existsSync(path.join(projectRoot, resolved))) wrong.push(`${target}: no file ${resolved}`);
      else if (anchor !== undefined && !anchorsOf(resolved).has(anchor)) wrong.push(`${target}: no such heading`);
    }
    assert.deepEqual(wrong, [], 'links that do not resolve');
  });
}
