//! End-to-end tests of wasmpipe, one binary with a module per area. They run
//! the real `wasmpipe` binary over real files; stage plugins are built once
//! per test run from `plugins/` (see `util::plugin`).

mod util;

mod abi;
mod author;
mod browser;
mod cli;
mod cluster;
mod components;
mod console;
mod deploy;
mod deploy_console;
mod diff;
mod durability;
mod encoding;
mod examples;
mod fuzz_corpus;
mod hardening;
mod isolation;
mod manifest_errors;
mod otlp;
mod reload;
mod sandbox;
mod search;
mod search_console;
mod serve;
mod tail;
mod tls;
mod windows;
