// The metrics registry: Prometheus text format 0.0.4 that promtool accepts, label escaping, and the merge of processes.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { projectRoot } from '../lib/config.ts';
import { labels, Registry } from '../lib/metrics.ts';

const hasPromtool = spawnSync('promtool', ['--version']).status === 0;

function sample(): Registry {
  const registry = new Registry();
  const requests = registry.counter('demo_requests_total', 'Requests answered.');
  const latency = registry.histogram('demo_request_duration_seconds', 'Time to answer.', [0.01, 0.1, 1]);
  registry.sampled('demo_open', 'Open things.', 'gauge', () => ({ '': 3 }));
  registry.sampled('demo_delay_seconds', 'The largest delay.', 'max', () => ({ '': 0.5 }));
  requests(labels({ route: '/messages', status_class: '2xx' }));
  requests(labels({ route: '/messages', status_class: '2xx' }), 2);
  requests(labels({ route: 'we"ird\\path\n', status_class: '4xx' }));
  latency(labels({ route: '/messages' }), 0.05);
  latency(labels({ route: '/messages' }), 5);
  return registry;
}

test('renders counters, histograms (cumulative buckets, +Inf, sum, count) and gauges in text format 0.0.4', () => {
  const text = sample().render([sample().snapshot()]);
  assert.match(text, /^# HELP demo_requests_total Requests answered\.\n# TYPE demo_requests_total counter\n/);
  assert.match(text, /\ndemo_requests_total\{route="\/messages",status_class="2xx"\} 3\n/);
  assert.match(text, /\ndemo_requests_total\{route="we\\"ird\\\\path\\n",status_class="4xx"\} 1\n/);
  for (const line of ['demo_request_duration_seconds_bucket{route="/messages",le="0.01"} 0', 'demo_request_duration_seconds_bucket{route="/messages",le="0.1"} 1',
    'demo_request_duration_seconds_bucket{route="/messages",le="1"} 1', 'demo_request_duration_seconds_bucket{route="/messages",le="+Inf"} 2',
    'demo_request_duration_seconds_sum{route="/messages"} 5.05', 'demo_request_duration_seconds_count{route="/messages"} 2', 'demo_open 3']) {
    assert.ok(text.includes(`\n${line}\n`), `missing ${line}`);
  }
});

test('merges processes: counters and histograms add up, gauges by their kind', () => {
  const registry = sample();
  const text = registry.render([sample().snapshot(), sample().snapshot()]);
  assert.ok(text.includes('\ndemo_requests_total{route="/messages",status_class="2xx"} 6\n'));
  assert.ok(text.includes('\ndemo_request_duration_seconds_count{route="/messages"} 4\n'));
  assert.ok(text.includes('\ndemo_open 6\n'));
  assert.ok(text.includes('\ndemo_delay_seconds 0.5\n'));
});

test('keeps only counters and histograms of an exited process, so that they never go backwards', () => {
  const registry = sample();
  const kept = registry.lasting(sample().snapshot());
  assert.deepEqual(Object.keys(kept).sort(), ['demo_request_duration_seconds', 'demo_requests_total']);
});

test('promtool check metrics accepts the output', { skip: hasPromtool ? false : 'promtool is not installed (Debian package prometheus)' }, () => {
  const text = sample().render([sample().snapshot()]);
  execFileSync('promtool', ['check', 'metrics'], { input: text });
});

test('the alert rules in docs/alerts.yml pass their promtool unit tests', { skip: hasPromtool ? false : 'promtool is not installed (Debian package prometheus)' }, () => {
  execFileSync('promtool', ['test', 'rules', 'alerts.test.yml'], { cwd: path.join(projectRoot, 'docs') });
});
