// W2 (docs/performance.md), as plugins/log_enrich in Rust: the whole event
// plus the time it was received (the chunk's `received_at`, set with
// `--meta received_at=...`), the host (the stage's params), a numeric level
// and whether it was slow.
const LEVELS = { debug: 0, info: 1, warn: 2, error: 3 };

export function map(event, ctx) {
  return {
    ...event,
    received_at: ctx.meta.received_at,
    host: ctx.params.host,
    level_num: LEVELS[event.level] ?? 255,
    slow: event.duration_ms > 500,
  };
}
