//! `[queue]` and `[store]`: where `wasmpipe serve` keeps accepted work and
//! where results go. The default is one process with an embedded SQLite
//! journal; `nats` + `postgres` spreads the work over any number of
//! `wasmpipe worker` processes on JetStream, with PostgreSQL as the
//! central database.

use super::Diagnostic;
use super::units::{ByteSize, DurationSpec};
use serde::Deserialize;
use serde_spanned::Spanned;

/// Environment variable that overrides `[queue] url`.
pub const NATS_URL_ENV: &str = "WASMPIPE_NATS_URL";
/// Environment variable that overrides `[store] url`.
pub const POSTGRES_URL_ENV: &str = "WASMPIPE_POSTGRES_URL";

/// `[queue]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSection {
    /// `embedded` (the SQLite journal of one `serve` process) or `nats`.
    #[serde(default = "default_queue_kind")]
    pub kind: Spanned<QueueKind>,
    /// The NATS server (`nats` only); `WASMPIPE_NATS_URL` overrides it.
    #[serde(default = "default_nats_url")]
    pub url: String,
    /// The JetStream stream holding chunks (default `wasmpipe-<pipeline>`).
    #[serde(default)]
    pub stream: Option<Spanned<String>>,
    /// How long a worker may go silent before its chunk is handed to
    /// another. Workers report progress every third of it while busy.
    #[serde(default = "default_ack_wait")]
    pub ack_wait: DurationSpec,
    /// Times workers may start a chunk and never finish it (each one
    /// killed, crashed or cut off) before the chunk is split, without
    /// running it again, to isolate the event that stops workers; a single
    /// event past this becomes a dead letter.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: std::num::NonZeroU32,
    /// Most bytes queued in the stream; past it ingest answers 429.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// The CA that signed the NATS server's certificate (PEM, relative to
    /// the manifest): TLS is then required and the server checked. A
    /// `tls://` URL requires TLS too, checked against the system's CAs.
    #[serde(default)]
    pub tls_ca: Option<String>,
    /// A client certificate for NATS (PEM), with `tls_key`, for a server
    /// that verifies its clients (`verify: true` in its `tls` block).
    #[serde(default)]
    pub tls_cert: Option<String>,
    /// The client certificate's key (PEM).
    #[serde(default)]
    pub tls_key: Option<String>,
}

/// `[queue] kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueKind {
    /// The SQLite journal inside `wasmpipe serve`.
    Embedded,
    /// A NATS JetStream work queue consumed by `wasmpipe worker`s.
    Nats,
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `sqlite` (the file `[serve] database`) or `postgres`.
    #[serde(default = "default_store_kind")]
    pub kind: Spanned<StoreKind>,
    /// The PostgreSQL connection string (`postgres` only), such as
    /// `postgres://wasmpipe@db.internal/wasmpipe`; `WASMPIPE_POSTGRES_URL`
    /// overrides it.
    #[serde(default)]
    pub url: Option<String>,
    /// Connections each process keeps open.
    #[serde(default = "default_pool")]
    pub pool: std::num::NonZeroUsize,
}

/// `[store] kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// One SQLite file.
    Sqlite,
    /// A PostgreSQL database shared by every process.
    Postgres,
}

fn default_queue_kind() -> Spanned<QueueKind> {
    Spanned::new(0..0, QueueKind::Embedded)
}
fn default_store_kind() -> Spanned<StoreKind> {
    Spanned::new(0..0, StoreKind::Sqlite)
}
fn default_nats_url() -> String {
    "nats://127.0.0.1:4222".into()
}
fn default_ack_wait() -> DurationSpec {
    DurationSpec(std::time::Duration::from_secs(30))
}
fn default_max_attempts() -> std::num::NonZeroU32 {
    std::num::NonZeroU32::new(3).expect("nonzero")
}
fn default_max_bytes() -> ByteSize {
    ByteSize(1 << 30)
}
fn default_pool() -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::new(8).expect("nonzero")
}

impl Default for QueueSection {
    fn default() -> Self {
        toml::from_str("").expect("every field of [queue] has a default")
    }
}

impl Default for StoreSection {
    fn default() -> Self {
        toml::from_str("").expect("every field of [store] has a default")
    }
}

impl QueueSection {
    /// The server to connect to: the environment's, else the manifest's.
    pub fn nats_url(&self) -> String {
        std::env::var(NATS_URL_ENV)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| self.url.clone())
    }

    /// The stream's name.
    pub fn stream_name(&self, pipeline: &str) -> String {
        self.stream
            .as_ref()
            .map_or_else(|| format!("wasmpipe-{pipeline}"), |s| s.get_ref().clone())
    }
}

impl StoreSection {
    /// The connection string: the environment's, else the manifest's.
    pub fn postgres_url(&self) -> Option<String> {
        std::env::var(POSTGRES_URL_ENV)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| self.url.clone())
    }
}

/// Checks that the queue and the store fit together.
pub(super) fn validate(
    queue: Option<&QueueSection>,
    store: Option<&StoreSection>,
    at: &dyn Fn(std::ops::Range<usize>, String) -> Diagnostic,
) -> Result<(), Diagnostic> {
    let q = queue.map_or(QueueKind::Embedded, |q| *q.kind.get_ref());
    let s = store.map_or(StoreKind::Sqlite, |s| *s.kind.get_ref());
    match (q, s) {
        (QueueKind::Nats, StoreKind::Sqlite) => {
            let span = queue.map_or(0..0, |q| q.kind.span());
            Err(at(span, "the `nats` queue needs the `postgres` store: workers on other machines cannot share a SQLite file".into())
                .with_hint("add `[store]` with `kind = \"postgres\"` and a `url`, or use `kind = \"embedded\"`"))
        }
        (QueueKind::Embedded, StoreKind::Postgres) => {
            let span = store.map_or(0..0, |s| s.kind.span());
            Err(at(span, "the `postgres` store needs the `nats` queue: the embedded queue is a SQLite journal".into())
                .with_hint("add `[queue]` with `kind = \"nats\"`, or use `kind = \"sqlite\"`"))
        }
        _ => {
            if let Some(stream) = queue.and_then(|q| q.stream.as_ref()) {
                let v = stream.get_ref();
                let ok = !v.is_empty()
                    && v.len() <= 64
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !ok {
                    return Err(at(
                        stream.span(),
                        format!("`{v}` is not a JetStream stream name"),
                    )
                    .with_hint("use letters, digits, '-' and '_' (no '.', '*', '>' or spaces)"));
                }
            }
            Ok(())
        }
    }
}

/// A connection string without its secrets, for messages and logs: the
/// password of a URL's `user:password@`, a NATS URL's bare `token@`, and
/// any `password` option, in a URL's query or libpq's `key=value` form.
pub fn redact(url: &str) -> String {
    let mut out = match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let user = &url[s + 3..at];
            match user.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &user[..c], &url[at..]),
                // PostgreSQL's `user@` is a name; anywhere else (NATS) a
                // lone user part is a token.
                None if url.starts_with("postgres") => url.to_string(),
                None => format!("{}***{}", &url[..s + 3], &url[at..]),
            }
        }
        _ => url.to_string(),
    };
    for key in ["password=", "sslpassword=", "token="] {
        let mut from = 0;
        while let Some(i) = out[from..].find(key).map(|i| i + from) {
            let starts_option = i == 0 || matches!(out.as_bytes()[i - 1], b'?' | b'&' | b' ');
            let v = i + key.len();
            if !starts_option || out[v..].starts_with("***") {
                from = v;
                continue;
            }
            let end = if out[v..].starts_with('\'') {
                // A quoted value: up to the closing quote not escaped.
                let b = out.as_bytes();
                let mut j = v + 1;
                while j < b.len() && b[j] != b'\'' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                (j + 1).min(b.len())
            } else {
                out[v..].find(['&', ' ']).map_or(out.len(), |e| v + e)
            };
            out.replace_range(v..end, "***");
            from = v + 3;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://app:secret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact("host=db user=app"), "host=db user=app");
        assert_eq!(
            redact(r"host=db password='a b\'c' user=app"),
            "host=db password=*** user=app"
        );
        assert_eq!(
            redact("postgres://db/x?user=a&password=s3cret&sslmode=require"),
            "postgres://db/x?user=a&password=***&sslmode=require"
        );
        assert_eq!(redact("nats://s3cret@nats:4222"), "nats://***@nats:4222");
        assert_eq!(redact("tls://u:pw@nats:4222"), "tls://u:***@nats:4222");
    }
}
