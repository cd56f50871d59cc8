// Types for wasmpipe stages written in TypeScript. `wasmpipe new --lang ts`
// writes this file beside the stage; import the types with
//   import type { Context } from "./wasmpipe";
// A stage module exports one of `map`, `filter`, `flatMap` or `reduce`
// (with `initial` and `combine`), and optionally `init`.

/** A JSON value, as events, params and accumulators are. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** What a stage function sees besides the event. */
export interface Context<Params = { [key: string]: Json }> {
  /** The stage's name in the manifest. */
  readonly stage: string;
  /** The manifest's `params` table for the stage (`{}` when absent). */
  readonly params: Params;
  /** The chunk's context: `pipeline`, `job`, `host`, `received_at`, `chunk`, and `--meta` fields. */
  readonly meta: { [key: string]: Json };
  /** The event's index in its chunk. */
  readonly index: number;
}

/** A map: one output event per event. Throwing makes the event a dead letter. */
export type Map<In = any, Out = Json> = (event: In, ctx: Context) => Out;
/** A filter: keeps the events it returns true for. */
export type Filter<In = any> = (event: In, ctx: Context) => boolean;
/** A flat_map: any number of output events per event. */
export type FlatMap<In = any, Out = Json> = (event: In, ctx: Context) => Iterable<Out>;
/** A reduce: returns the new accumulator. */
export type Reduce<Acc = Json, In = any> = (acc: Acc, event: In, ctx: Context) => Acc;
/** Combines two accumulators; associative. */
export type Combine<Acc = Json> = (a: Acc, b: Acc) => Acc;
/** Called once per instance with the params; throwing refuses them. */
export type Init<Params = { [key: string]: Json }> = (params: Params, info: { stage: string }) => void;
