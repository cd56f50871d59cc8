// The enrich example's map stage (plugins/enrich in Rust): enriches log
// events with the deployment's region and environment (stage params), the
// receiving host and time (chunk metadata) and a numeric level for range
// queries. Test: `node --test`.
//
// An event with an unknown level, or none, becomes a dead letter: a thrown
// exception's message is the dead letter's error.

const LEVELS = { debug: 10, info: 20, warn: 30, error: 40 };

/** Refuses params without a `region`, once per instance, as the Rust stage does. */
export function init(params) {
  if (typeof params.region !== 'string') throw new Error('params need a string `region`');
  if (params.env !== undefined && typeof params.env !== 'string') throw new Error('params `env` is a string');
}

/** Events stay free-form objects: the stage adds fields and keeps the rest. */
export function map(event, ctx) {
  if (event === null || typeof event !== 'object' || Array.isArray(event)) {
    throw new Error('an event is a JSON object');
  }
  const level = event.level;
  if (typeof level !== 'string') throw new Error('event has no string `level`');
  if (!Object.hasOwn(LEVELS, level)) throw new Error(`unknown level \`${level}\``);
  const { region, env = 'prod' } = ctx.params;
  const host = ctx.meta.host;
  return sortedKeys({
    ...event,
    region,
    env,
    host: typeof host === 'string' ? host : null,
    received_at: ctx.meta.received_at ?? null,
    level_num: LEVELS[level],
  });
}

/** The object with its keys in sorted order, as the Rust stage writes them. */
function sortedKeys(obj) {
  return Object.fromEntries(Object.keys(obj).sort().map((k) => [k, obj[k]]));
}
