//! serve's https: the certificate and key from `[serve.tls]` (or
//! `--tls-cert` / `--tls-key`), re-read when the files change, and the
//! optional client certificates that authenticate a client instead of a
//! token.
//!
//! - **TLS 1.2 and 1.3 only** (rustls has nothing older), HTTP/1.1 by ALPN.
//! - **Renewal without a restart**: the files are looked at every second
//!   and, when one changed, read again; new connections get the new
//!   certificate, open ones keep theirs. A renewal half-written (the key
//!   replaced before the certificate, say) does not match and is kept out:
//!   the old certificate stays in use, with a warning, until the pair is
//!   whole again.
//! - **Plain http on the https port** gets a `400` that says to use
//!   `https://`, not a dropped connection a user cannot explain.
//! - **The handshake has the headers' deadline**: a client that opens a
//!   connection and sends nothing, or half a handshake, is dropped after
//!   `[serve] header_timeout`, like a slow client of plain http.

use super::{provider, read_certs, read_key, read_roots};
use anyhow::{Context as _, Result};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::CertificateDer;
use sha2::{Digest as _, Sha256};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// The files a server's TLS is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA whose client certificates are accepted (PEM), if any.
    pub client_ca: Option<PathBuf>,
}

/// A server's TLS settings, swapped whole when its files change.
pub struct ServerTls {
    files: TlsFiles,
    config: RwLock<Arc<ServerConfig>>,
    /// The files' modification times and sizes when last read.
    seen: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

/// How often the files are looked at for a renewal.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

impl ServerTls {
    /// Reads the files; an error says which file is wrong and how.
    pub fn load(files: TlsFiles) -> Result<Arc<ServerTls>> {
        let seen = stamps(&files);
        let config = build(&files)?;
        Ok(Arc::new(ServerTls {
            files,
            config: RwLock::new(Arc::new(config)),
            seen: Mutex::new(seen),
        }))
    }

    /// Whether client certificates are accepted.
    pub fn client_certs(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Looks at the files every second, for as long as the runtime runs,
    /// and reads them again when they changed.
    pub fn watch(self: &Arc<Self>) {
        let tls = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RELOAD_EVERY).await;
                let Some(tls) = tls.upgrade() else { return };
                let tls2 = tls.clone();
                // Reading and parsing files: off the async threads.
                let _ = tokio::task::spawn_blocking(move || tls2.reload_if_changed()).await;
            }
        });
    }

    /// Reads the files again if one changed since they were last read;
    /// returns whether the certificate in use changed.
    pub fn reload_if_changed(&self) -> bool {
        let now = stamps(&self.files);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == now {
                return false;
            }
            *seen = now;
        }
        match build(&self.files) {
            Ok(config) => {
                *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
                tracing::info!(
                    "TLS: read {} again; new connections use it",
                    self.files.cert.display()
                );
                true
            }
            Err(e) => {
                tracing::warn!(
                    "TLS: the changed files cannot be used, the previous certificate stays in use: {e:#}"
                );
                false
            }
        }
    }

    /// Takes a new connection through the handshake, within `deadline`.
    /// `None` when the connection ended there: not TLS (answered with a
    /// 400 saying to use https), too slow, or a failed handshake; none of
    /// these concern anyone but that client.
    pub async fn accept(
        &self,
        stream: TcpStream,
        deadline: Duration,
    ) -> Option<(TlsStream<TcpStream>, Option<String>)> {
        let config = self
            .config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let addr = stream.peer_addr().ok();
        let handshake = async move {
            let mut first = [0u8; 1];
            let n = stream.peek(&mut first).await.ok()?;
            if n == 0 {
                return None;
            }
            if first[0] != TLS_HANDSHAKE {
                refuse_plain_http(stream).await;
                return None;
            }
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            match acceptor.accept(stream).await {
                Ok(tls) => {
                    let client = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(client_name);
                    Some((tls, client))
                }
                Err(e) => {
                    tracing::debug!("TLS handshake with {addr:?} failed: {e}");
                    None
                }
            }
        };
        tokio::time::timeout(deadline, handshake)
            .await
            .unwrap_or_else(|_| {
                tracing::debug!("TLS handshake with {addr:?} took longer than {deadline:?}");
                None
            })
    }
}

/// Answers a plain-http request on the https port, then closes.
async fn refuse_plain_http(mut stream: TcpStream) {
    let body = r#"{"error":"this port speaks HTTPS; use an https:// URL"}"#;
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn stamps(files: &TlsFiles) -> Vec<Option<(SystemTime, u64)>> {
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| {
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.len()))
    })
    .collect()
}

fn build(files: &TlsFiles) -> Result<ServerConfig> {
    let certs = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS 1.2 and 1.3 are not available")?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let roots = read_roots(ca)?;
            // Optional: a client may still authenticate with a token.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .with_context(|| format!("{} cannot verify client certificates", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).with_context(|| {
        format!(
            "the key {} does not go with the certificate {}; hint: give the key the certificate was issued for",
            files.key.display(),
            files.cert.display()
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Who a verified client certificate names: its subject's common name,
/// else its first DNS name, else its SHA-256 fingerprint (`sha256:` and
/// 16 hex digits), so a request always has an identity. A name that is
/// not printable ASCII is passed over (it travels in a header).
pub fn client_name(cert: &CertificateDer<'_>) -> String {
    use x509_parser::prelude::*;
    let printable = |s: &str| !s.is_empty() && s.bytes().all(|b| (b' '..=b'~').contains(&b));
    if let Ok((_, x)) = X509Certificate::from_der(cert.as_ref()) {
        if let Some(cn) = x
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .filter(|cn| printable(cn))
        {
            return cn.to_string();
        }
        if let Ok(Some(san)) = x.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::DNSName(d) = name
                    && printable(d)
                {
                    return d.to_string();
                }
            }
        }
    }
    let digest = Sha256::digest(cert.as_ref());
    format!("sha256:{}", &hex::encode(digest)[..16])
}
