//! `[serve]`: how `wasmpipe serve` listens, stores and throttles. Plain
//! serde types that validate while parsing, like the rest of the manifest;
//! checks that need the whole table (token names, permissions) run in
//! [`ServeSection::validate`].

use super::units::{ByteSize, DurationSpec};
use super::{Diagnostic, Name};
use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::HashSet;
use std::net::SocketAddr;

/// `[serve]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSection {
    /// Address to listen on; port 0 picks a free port (printed at start).
    #[serde(default = "default_listen")]
    pub listen: Spanned<ListenAddr>,
    /// The SQLite database file (journal, stored events, results),
    /// relative to the manifest.
    #[serde(default = "default_database")]
    pub database: String,
    /// Largest request body.
    #[serde(default = "default_max_body")]
    pub max_body: ByteSize,
    /// Most events in one batch.
    #[serde(default = "default_max_events")]
    pub max_events: std::num::NonZeroUsize,
    /// Largest single event.
    #[serde(default = "default_max_event_size")]
    pub max_event_size: ByteSize,
    /// Most events accepted but not yet processed; past it ingest answers 429.
    #[serde(default = "default_max_backlog")]
    pub max_backlog: std::num::NonZeroU64,
    /// Longest a request body may take to arrive, whole; past it the
    /// request gets 408 and its ingest slot is free again.
    #[serde(default = "default_body_timeout")]
    pub body_timeout: DurationSpec,
    /// Longest a request's headers may take to arrive; a client slower
    /// than that (a slowloris) loses its connection.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: DurationSpec,
    /// Most connections open at once; past it, new ones wait to be
    /// accepted until one closes (bounding memory under a crowd).
    #[serde(default = "default_max_connections")]
    pub max_connections: std::num::NonZeroUsize,
    /// Requests reading or parsing a body at once; past it ingest waits a
    /// little, then answers 503. Bounds ingest memory to about this many
    /// times `max_body`.
    #[serde(default = "default_max_ingest")]
    pub max_concurrent_ingest: std::num::NonZeroUsize,
    /// Events per chunk (default `[runtime].chunk_size`, else 1000).
    #[serde(default)]
    pub chunk_size: Option<std::num::NonZeroUsize>,
    /// How long stored events (and finished jobs' inputs) are kept.
    #[serde(default)]
    pub retention: Option<DurationSpec>,
    /// The older name of `[runtime] retries`, which wins when both are set.
    #[serde(default)]
    pub retries: Option<u32>,
    /// The older name of `[runtime] retry_backoff`, which wins when both
    /// are set.
    #[serde(default)]
    pub backoff: Option<DurationSpec>,
    /// A request header whose value becomes the `identity` stages see
    /// (e.g. a user id set by a trusted proxy); otherwise the token's name.
    #[serde(default)]
    pub identity_header: Option<Spanned<String>>,
    /// For a pipeline ending in a reduce: also store each event the reduce
    /// folds in (as it enters the reduce), besides the job's result.
    #[serde(default = "default_true")]
    pub store_reduce_input: bool,
    /// Web origins (`https://app.example.com`) whose pages may post to the
    /// ingest routes (CORS); none by default.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// Fields of the stored events worth an index of their own (JSON
    /// pointers, `["/service", "/level"]`): filters on them use it.
    #[serde(default)]
    pub index: Vec<Spanned<String>>,
    /// Index the stored events' text for search (`GET /v1/events?q=`).
    #[serde(default = "default_true")]
    pub full_text: bool,
    /// Where a stored event's own time is (a JSON pointer, `"/ts"`): RFC
    /// 3339 text or epoch seconds or milliseconds. Time filters and the
    /// `time` column use it; without it, a windowed reduce's `time`, else
    /// the arrival.
    #[serde(default)]
    pub time: Option<Spanned<String>>,
    /// `[[serve.token]]`: bearer tokens. None configured (and no
    /// `[serve.tls] client_ca`) = no authentication.
    #[serde(default, rename = "token")]
    pub tokens: Vec<TokenSection>,
    /// `[serve.tls]`: serve https instead of http.
    #[serde(default)]
    pub tls: Option<TlsSection>,
}

/// `[serve.tls]`: the server's certificate and key (PEM files, relative to
/// the manifest, re-read when they change), and optionally the CA whose
/// client certificates authenticate a client instead of a token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The certificate chain, leaf first.
    pub cert: String,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// A CA: a client presenting a certificate it signed is authenticated
    /// as the certificate's common name, with `client_permissions`.
    #[serde(default)]
    pub client_ca: Option<String>,
    /// What a client certificate may do (default both).
    #[serde(default = "default_client_permissions")]
    pub client_permissions: Spanned<Vec<Permission>>,
}

impl TlsSection {
    /// A certificate and key alone (`serve --tls-cert --tls-key`).
    pub fn files(cert: String, key: String) -> TlsSection {
        TlsSection {
            cert,
            key,
            client_ca: None,
            client_permissions: default_client_permissions(),
        }
    }
}

fn default_client_permissions() -> Spanned<Vec<Permission>> {
    Spanned::new(0..0, vec![Permission::Read, Permission::Write])
}

/// `[[serve.token]]`: one bearer token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSection {
    /// Who holds it; the default `identity` of its requests.
    pub name: Spanned<Name>,
    /// The token itself (prefer `env` to keep secrets out of files).
    #[serde(default)]
    pub token: Option<String>,
    /// An environment variable holding the token.
    #[serde(default)]
    pub env: Option<Spanned<String>>,
    /// What it may do: `"read"`, `"write"` or both.
    pub permissions: Spanned<Vec<Permission>>,
}

/// A token permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Read jobs, events, dead letters, metrics.
    Read,
    /// Submit jobs, retry dead letters, replay jobs.
    Write,
}

/// A socket address such as `"127.0.0.1:8080"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ListenAddr(pub SocketAddr);

impl TryFrom<String> for ListenAddr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse().map(ListenAddr).map_err(|_| {
            format!("invalid listen address `{s}`; hint: write an IP address and a port, e.g. \"127.0.0.1:8080\" or \"0.0.0.0:0\" for any free port")
        })
    }
}

fn default_listen() -> Spanned<ListenAddr> {
    Spanned::new(0..0, ListenAddr(SocketAddr::from(([127, 0, 0, 1], 8080))))
}
fn default_database() -> String {
    "wasmpipe.db".into()
}
fn default_max_body() -> ByteSize {
    ByteSize(16 << 20)
}
fn default_max_events() -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::new(100_000).expect("nonzero")
}
fn default_max_event_size() -> ByteSize {
    ByteSize(1 << 20)
}
fn default_max_backlog() -> std::num::NonZeroU64 {
    std::num::NonZeroU64::new(1_000_000).expect("nonzero")
}
fn default_max_ingest() -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::new(4).expect("nonzero")
}
fn default_body_timeout() -> DurationSpec {
    DurationSpec(std::time::Duration::from_secs(30))
}
fn default_header_timeout() -> DurationSpec {
    DurationSpec(std::time::Duration::from_secs(10))
}
fn default_max_connections() -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::new(4096).expect("nonzero")
}
fn default_true() -> bool {
    true
}

impl ServeSection {
    /// Checks that need the whole table. `at` builds a diagnostic for a span.
    pub(super) fn validate(
        &self,
        at: &dyn Fn(std::ops::Range<usize>, String) -> Diagnostic,
    ) -> Result<(), Diagnostic> {
        let mut names = HashSet::new();
        let mut env_seen = HashSet::new();
        for t in &self.tokens {
            let name = t.name.get_ref();
            if !names.insert(name.clone()) {
                return Err(
                    at(t.name.span(), format!("token name `{name}` is used twice"))
                        .with_hint("give every `[[serve.token]]` a unique `name`"),
                );
            }
            match (&t.token, &t.env) {
                (Some(_), Some(env)) => {
                    return Err(at(
                        env.span(),
                        format!("token `{name}` sets both `token` and `env`"),
                    )
                    .with_hint("keep one: `env` names a variable holding the token"));
                }
                (None, None) => {
                    return Err(at(t.name.span(), format!("token `{name}` has neither `token` nor `env`"))
                        .with_hint("add `env = \"SOME_VARIABLE\"` naming an environment variable that holds the token"));
                }
                (Some(tok), None) if tok.len() < 8 => {
                    return Err(at(
                        t.name.span(),
                        format!("token `{name}` is shorter than 8 characters"),
                    )
                    .with_hint("use a long random token, e.g. `openssl rand -hex 32`"));
                }
                (None, Some(env)) => {
                    let v = env.get_ref();
                    if v.is_empty() || v.contains(['=', '\0']) {
                        return Err(at(
                            env.span(),
                            format!("`{v}` is not an environment variable name"),
                        )
                        .with_hint("write the variable's name, e.g. `env = \"WASMPIPE_TOKEN\"`"));
                    }
                    env_seen.insert(v.clone());
                }
                _ => {}
            }
            if t.permissions.get_ref().is_empty() {
                return Err(at(
                    t.permissions.span(),
                    format!("token `{name}` has no permissions"),
                )
                .with_hint("use `[\"read\"]`, `[\"write\"]` or `[\"read\", \"write\"]`"));
            }
        }
        if let Some(tls) = &self.tls
            && tls.client_permissions.get_ref().is_empty()
        {
            return Err(at(
                tls.client_permissions.span(),
                "`client_permissions` is empty: client certificates could do nothing".into(),
            )
            .with_hint("use `[\"read\"]`, `[\"write\"]` or `[\"read\", \"write\"]`"));
        }
        for f in self.index.iter().chain(&self.time) {
            if let Err(e) = crate::store::FieldPath::pointer(f.get_ref()) {
                return Err(at(f.span(), e).with_hint(
                    "name a field by its JSON pointer, e.g. `index = [\"/service\", \"/request/user\"]`",
                ));
            }
        }
        if let Some(h) = &self.identity_header {
            let v = h.get_ref();
            let ok = !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(
                    at(h.span(), format!("`{v}` is not an HTTP header name")).with_hint(
                        "use letters, digits and '-', e.g. `identity_header = \"x-user-id\"`",
                    ),
                );
            }
        }
        Ok(())
    }
}

impl Default for ServeSection {
    /// Every field at its default, as for an empty `[serve]` table.
    fn default() -> Self {
        toml::from_str("").expect("every field of [serve] has a default")
    }
}
