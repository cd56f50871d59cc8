// W1 (docs/performance.md) without wasmpipe: the JavaScript stages
// (bench/stages/js/w1_double, w1_sum) called once per event by plain node,
// one process, the whole file read at once: what the same handler costs
// in a plain Node.js program. Prints the sum.
//
//   node bench/plain/w1.mjs numbers.jsonl
import { readFileSync } from 'node:fs';
import { map as double } from '../stages/js/w1_double/stage.js';
import * as sum from '../stages/js/w1_sum/stage.js';

const ctx = { stage: 'w1', params: {}, meta: {}, index: 0 };
let acc = structuredClone(sum.initial);
for (const line of readFileSync(process.argv[2], 'utf8').split('\n')) {
  if (line === '') continue;
  acc = sum.reduce(acc, double(JSON.parse(line), ctx), ctx);
}
console.log(JSON.stringify(acc));
