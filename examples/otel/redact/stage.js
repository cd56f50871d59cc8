// Enriches and redacts OpenTelemetry log records (one event per record,
// as docs/api.md "POST /v1/logs" shows them): the service, a level in
// words, and the request's sender are copied to plain top-level keys that
// field filters can name (`/v1/events?field.service=checkout`); anything
// that looks like a card number, in the body or an attribute, is masked.
// Test: `node --test`.

const CARD = /\b(?:\d[ -]?){12,15}(\d{4})\b/g;

/** The record, enriched, with card numbers masked. */
export function map(record, ctx) {
  const attributes = {};
  for (const [k, v] of Object.entries(record.attributes ?? {})) {
    attributes[k] = mask(v);
  }
  return {
    ...record,
    body: mask(record.body),
    attributes,
    service: record.resource?.['service.name'] ?? null,
    level: level(record.severity_number),
    sender: ctx.meta.identity ?? ctx.meta.remote_addr ?? null,
  };
}

/** OpenTelemetry's severity numbers in words (1-4 trace ... 21-24 fatal). */
function level(n) {
  const names = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'];
  return n >= 1 && n <= 24 ? names[Math.floor((n - 1) / 4)] : null;
}

/** Strings with card numbers masked, keeping the last four digits. */
function mask(v) {
  return typeof v === 'string' ? v.replace(CARD, '**** $1') : v;
}
