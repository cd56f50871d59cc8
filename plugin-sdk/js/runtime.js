// The wasmpipe runtime for JavaScript stages: it turns a module that
// exports one plain function (`map`, `filter`, `flatMap` or `reduce`) into
// the `wasmpipe:stage` component interface (plugin-sdk/wit/stage.wit).
//
// One call per chunk: the host hands over every event of the chunk as
// JSON lines; the loop below parses them, calls the stage function on
// each, and collects outputs, their origins and one error per failed
// event. An exception thrown on one event makes that event a dead letter
// with the exception's message; the rest of the chunk carries on.
//
// `wasmpipe build` writes this file next to the stage, with an entry
// module that imports both; stage authors never import it.

import { cursor } from 'wasmpipe:stage/host@0.1.0';

const NO_EVENT = 0xffffffff;
const utf8 = new TextEncoder();
const KINDS = { map: 'map', filter: 'filter', flatMap: 'flat_map', reduce: 'reduce' };

/// The message of whatever a stage threw.
function messageOf(e) {
  if (e instanceof Error) return e.message || e.name;
  if (typeof e === 'string') return e;
  try {
    return JSON.stringify(e) ?? String(e);
  } catch {
    return String(e);
  }
}

/// `JSON.stringify` that refuses what JSON cannot say, rather than
/// writing `undefined` or dropping it.
function toJson(value, what) {
  if (value === undefined) throw new Error(`${what} returned undefined; return a JSON value`);
  if (value !== null && typeof value.then === 'function') {
    throw new Error(`${what} returned a Promise; stage functions must be synchronous`);
  }
  const text = JSON.stringify(value);
  if (text === undefined) throw new Error(`${what} returned a ${typeof value}, which is not JSON`);
  return text;
}

/// How many lines the chunk has (each ends in "\n").
function lineCount(events) {
  let n = 0;
  for (let at = events.indexOf('\n'); at >= 0; at = events.indexOf('\n', at + 1)) n++;
  return n;
}

/// A function giving line `i` of the chunk (without its "\n"); the lines
/// are found once, when it is made.
function lineAt(events) {
  const starts = [0];
  for (let at = events.indexOf('\n'); at >= 0; at = events.indexOf('\n', at + 1)) starts.push(at + 1);
  return (i) => events.slice(starts[i], starts[i + 1] - 1);
}

/// The grouping key at a JSON pointer: strings as they are, numbers and
/// booleans by their JSON text; anything else is refused (as in Rust).
function keyAt(event, pointer, tokens) {
  let v = event;
  for (const t of tokens) {
    if (v === null || typeof v !== 'object' || !Object.hasOwn(v, Array.isArray(v) ? Number(t) : t)) {
      throw new Error(`key \`${pointer}\` not found in event`);
    }
    v = Array.isArray(v) ? v[Number(t)] : v[t];
  }
  switch (typeof v) {
    case 'string':
      return v;
    case 'number':
    case 'boolean':
      return JSON.stringify(v);
    default:
      if (v === null) throw new Error(`key \`${pointer}\` is null in event`);
      throw new Error(
        `key \`${pointer}\` is ${Array.isArray(v) ? 'an array' : 'an object'}; keys must be strings, numbers or booleans`,
      );
  }
}

/// Sets group `k` of a keyed accumulator as an own property, whatever `k`
/// is: a plain assignment of `__proto__` would set the prototype instead.
function setGroup(acc, k, v) {
  Object.defineProperty(acc, k, { value: v, writable: true, enumerable: true, configurable: true });
}

/// The component's `stage` export for the stage module `user`.
export function makeStage(user, name) {
  const found = Object.keys(KINDS).filter((k) => typeof user[k] === 'function');
  if (found.length !== 1) {
    throw new Error(
      found.length === 0
        ? 'a stage module exports one function named map, filter, flatMap or reduce'
        : `a stage module exports one stage function, not ${found.join(' and ')}`,
    );
  }
  const jsKind = found[0];
  const kind = KINDS[jsKind];
  const fn = user[jsKind];
  if (kind === 'reduce' && (!('initial' in user) || typeof user.combine !== 'function')) {
    throw new Error('a reduce stage also exports `initial` (the empty accumulator, or a function returning it) and `combine(a, b)`');
  }
  const initial = () => (typeof user.initial === 'function' ? user.initial() : structuredClone(user.initial));
  let config = { stage: name, params: {}, key: null };
  let keyTokens = null;

  const context = (ctxText) => ({ stage: config.stage, params: config.params, meta: JSON.parse(ctxText), index: 0 });

  /// Calls `body(event, i)` for each event of the chunk; a bad line or a
  /// throw is that event's error alone. `line`, when the caller has one,
  /// is the chunk's `lineAt`.
  ///
  /// The chunk is parsed with one `JSON.parse`, as an array, when it can
  /// be: per line, the parser's start-up and the loop around it would cost
  /// more than the stage's function. A chunk with a bad line is parsed
  /// line by line, so only that line fails.
  ///
  /// The host is told which event is running (`cursor`) only when it asks,
  /// by `"cursor": "each"` in the config: a host call per event costs
  /// several microseconds here. When a call traps, runs out of time or out
  /// of memory with no event named, the host runs the chunk again on such
  /// an instance, which names the culprit.
  function eachEvent(ctx, events, errors, body, line = null) {
    const count = lineCount(events);
    let parsed = null;
    if (count > 0) {
      try {
        parsed = JSON.parse('[' + events.slice(0, -1).replaceAll('\n', ',') + ']');
        // A line holding `1,2` would be two elements.
        if (parsed.length !== count) parsed = null;
      } catch {
        parsed = null;
      }
    }
    const named = config.cursor === 'each';
    if (parsed === null) line ??= lineAt(events);
    for (let i = 0; i < count; i++) {
      if (named) cursor(i);
      ctx.index = i;
      try {
        let event;
        if (parsed !== null) {
          event = parsed[i];
        } else {
          try {
            event = JSON.parse(line(i));
          } catch (e) {
            throw new Error(`invalid event JSON: ${e.message}`);
          }
        }
        body(event, i);
      } catch (e) {
        errors.push({ index: i, message: messageOf(e) });
      }
    }
    if (named) cursor(NO_EVENT);
  }

  function process(ctxText, events) {
    const ctx = context(ctxText);
    const out = [];
    // A typed array is handed to the host in one copy; a plain array of
    // numbers costs microseconds per element.
    let origins = new Uint32Array(16);
    let n = 0;
    const origin = (i) => {
      if (n === origins.length) {
        const more = new Uint32Array(origins.length * 2);
        more.set(origins);
        origins = more;
      }
      origins[n++] = i;
    };
    const errors = [];
    const line = kind === 'filter' ? lineAt(events) : null;
    eachEvent(ctx, events, errors, (event, i) => {
      const r = fn(event, ctx);
      if (kind === 'map') {
        out.push(toJson(r, jsKind));
        origin(i);
      } else if (kind === 'filter') {
        if (r !== null && typeof r === 'object' && typeof r.then === 'function') {
          throw new Error('filter returned a Promise; stage functions must be synchronous');
        }
        if (r) {
          // The event as it came, not as JSON.stringify would write it.
          out.push(line(i));
          origin(i);
        }
      } else {
        if (r === null || r === undefined || typeof r[Symbol.iterator] !== 'function') {
          throw new Error('flatMap returns an array (or any iterable) of events');
        }
        const produced = [];
        for (const x of r) produced.push(toJson(x, 'flatMap'));
        for (const p of produced) {
          out.push(p);
          origin(i);
        }
      }
    }, line);
    return { out: utf8.encode(out.length ? out.join('\n') + '\n' : ''), origins: origins.slice(0, n), errors };
  }

  /// Folds the chunk. An object accumulator is checked to be JSON once, at
  /// the end: after every event, `JSON.stringify` of a growing accumulator
  /// would cost more than the fold. If it is not JSON then, the chunk is
  /// folded again from the same start, checking after each event, so the
  /// event that broke it is the one that fails.
  function reduce(ctxText, accText, events) {
    return fold(ctxText, accText, events, false) ?? fold(ctxText, accText, events, true);
  }

  function fold(ctxText, accText, events, eachChecked) {
    // A value that is not an object costs nothing to check, and must be
    // checked now: `undefined + 1` is NaN, which JSON writes as null.
    const check = (next) => {
      if (eachChecked || next === null || typeof next !== 'object') toJson(next, 'reduce');
    };
    const ctx = context(ctxText);
    let acc = accText == null ? (keyTokens ? Object.create(null) : initial()) : JSON.parse(accText);
    const errors = [];
    eachEvent(ctx, events, errors, (event) => {
      if (keyTokens) {
        const k = keyAt(event, config.key, keyTokens);
        const next = fn(Object.hasOwn(acc, k) ? acc[k] : initial(), event, ctx);
        check(next);
        setGroup(acc, k, next);
      } else {
        const next = fn(acc, event, ctx);
        check(next);
        acc = next;
      }
    });
    let text;
    try {
      text = toJson(acc, 'reduce');
    } catch (e) {
      if (!eachChecked) return null;
      throw e;
    }
    return { out: utf8.encode(text), origins: new Uint32Array(0), errors };
  }

  function combine(aText, bText) {
    const a = JSON.parse(aText);
    const b = JSON.parse(bText);
    if (!keyTokens) return toJson(user.combine(a, b), 'combine');
    for (const [k, v] of Object.entries(b)) setGroup(a, k, Object.hasOwn(a, k) ? user.combine(a[k], v) : v);
    return toJson(a, 'combine');
  }

  return {
    describe() {
      return { abi: 1, kind, name, sdk: 'wasmpipe-js 0.1.0', keyed: false };
    },
    init(text) {
      config = JSON.parse(text);
      if (config.key != null) {
        if (kind !== 'reduce') throw `stage \`${config.stage}\`: only a reduce takes a key`;
        if (!config.key.startsWith('/')) {
          throw `invalid key \`${config.key}\` for stage \`${config.stage}\`: a JSON pointer starts with \`/\`, e.g. \`/service\``;
        }
        keyTokens = config.key.split('/').slice(1).map((t) => t.replaceAll('~1', '/').replaceAll('~0', '~'));
      }
      if (typeof user.init === 'function') {
        try {
          user.init(config.params, { stage: config.stage });
        } catch (e) {
          throw `stage \`${config.stage}\`: ${messageOf(e)}`;
        }
      }
    },
    // A value thrown out of an export is the call's error, which the
    // component model carries as a string.
    process(ctx, events) {
      if (kind === 'reduce') throw 'a reduce stage has no `process`';
      try {
        return process(ctx, events);
      } catch (e) {
        throw messageOf(e);
      }
    },
    reduce(ctx, acc, events) {
      if (kind !== 'reduce') throw `a ${kind} stage has no \`reduce\``;
      try {
        return reduce(ctx, acc, events);
      } catch (e) {
        throw messageOf(e);
      }
    },
    combine(a, b) {
      if (kind !== 'reduce') throw `a ${kind} stage has no \`combine\``;
      try {
        return combine(a, b);
      } catch (e) {
        throw messageOf(e);
      }
    },
  };
}
