// W3 (docs/performance.md) without wasmpipe: the JavaScript stage
// (bench/stages/js/w3_stats) called once per event by plain node, one
// process, the whole file read at once, grouped by `service` as the
// manifest's `key = "/service"` does. Prints `{"key":...,"value":...}`
// lines, as wasmpipe does.
//
//   node bench/plain/w3.mjs logs.jsonl
import { readFileSync } from 'node:fs';
import * as stats from '../stages/js/w3_stats/stage.js';

const ctx = { stage: 'w3_stats', params: {}, meta: {}, index: 0 };
const data = readFileSync(process.argv[2]);
const groups = new Map();
const BLOCK = 64 << 20;
for (let start = 0; start < data.length; ) {
  let end = start + BLOCK >= data.length ? data.length : data.lastIndexOf(10, start + BLOCK) + 1;
  if (end <= start) end = data.length;
  for (const line of data.toString('utf8', start, end).split('\n')) {
    if (line === '') continue;
    const event = JSON.parse(line);
    const acc = groups.get(event.service) ?? structuredClone(stats.initial);
    groups.set(event.service, stats.reduce(acc, event, ctx));
  }
  start = end;
}
for (const key of [...groups.keys()].sort()) {
  console.log(JSON.stringify({ key, value: groups.get(key) }));
}
