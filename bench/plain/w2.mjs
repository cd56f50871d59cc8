// W2 (docs/performance.md) without wasmpipe: the JavaScript stage
// (bench/stages/js/w2_enrich) called once per event by plain node, one
// process, the whole file read at once, outputs written as JSON lines.
//
//   node bench/plain/w2.mjs logs.jsonl OUT RECEIVED_AT
//
// The file (540 MB) is longer than V8's longest string, so it is decoded
// in blocks of whole lines of at most 64 MiB.
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { map as enrich } from '../stages/js/w2_enrich/stage.js';

const [input, output, receivedAt] = process.argv.slice(2);
const ctx = { stage: 'w2_enrich', params: { host: 'bench-host' }, meta: { received_at: receivedAt }, index: 0 };
const data = readFileSync(input);
const out = openSync(output, 'w');
const BLOCK = 64 << 20;
for (let start = 0; start < data.length; ) {
  let end = start + BLOCK >= data.length ? data.length : data.lastIndexOf(10, start + BLOCK) + 1;
  if (end <= start) end = data.length;
  const lines = [];
  for (const line of data.toString('utf8', start, end).split('\n')) {
    if (line === '') continue;
    lines.push(JSON.stringify(enrich(JSON.parse(line), ctx)));
  }
  writeSync(out, lines.join('\n') + '\n');
  start = end;
}
closeSync(out);
