//! TLS to PostgreSQL, set in the connection string the way `psql` and
//! libpq spell it: `sslmode` (`disable`, `prefer`, `require`,
//! `verify-ca`, `verify-full`), `sslrootcert` (a PEM file, or `system`
//! for the machine's trust store), `sslcert` and `sslkey` (a client
//! certificate). The same string works in `psql`.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, and none
//! of the files, so [`split`] takes these options out of the string and
//! [`PgTls::connector`] does what libpq would:
//!
//! - `prefer` (the default, as in libpq) and `require` encrypt without
//!   checking who answers, which keeps out a passive listener only;
//!   `require` with an `sslrootcert` checks the chain, as libpq does.
//! - `verify-ca` checks the chain, `verify-full` the chain and that the
//!   certificate names the host connected to: the modes that keep out a
//!   machine in the middle. The docs recommend `verify-full`.

use super::{provider, read_certs, read_key, read_roots};
use anyhow::{Context as _, Result, bail};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::path::PathBuf;
use std::sync::Arc;

/// `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, unchecked.
    Prefer,
    /// TLS, unchecked (checked against `sslrootcert` when one is given).
    Require,
    /// TLS, the chain checked against `sslrootcert`.
    VerifyCa,
    /// TLS, the chain and the host name checked.
    VerifyFull,
}

/// The TLS options of a connection string.
#[derive(Debug, Clone)]
pub struct PgTls {
    /// `sslmode`.
    pub mode: Mode,
    /// `sslrootcert`: a file, or `system`.
    pub root_cert: Option<String>,
    /// `sslcert`.
    pub cert: Option<PathBuf>,
    /// `sslkey`.
    pub key: Option<PathBuf>,
}

const OURS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Splits a connection string (URL or `key=value` form) into the string
/// tokio-postgres is given (with `sslmode` reduced to what it knows) and
/// the TLS options.
pub fn split(conn: &str) -> Result<(String, PgTls)> {
    let (rest, options) = if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        split_url(conn)
    } else {
        split_key_values(conn)?
    };
    let mut tls = PgTls {
        mode: Mode::Prefer,
        root_cert: None,
        cert: None,
        key: None,
    };
    for (k, v) in options {
        match k.as_str() {
            "sslmode" => {
                tls.mode = match v.as_str() {
                    "disable" => Mode::Disable,
                    // libpq's `allow` tries without TLS first; without
                    // TLS is what it gets from a server that allows both.
                    "allow" | "prefer" => Mode::Prefer,
                    "require" => Mode::Require,
                    "verify-ca" => Mode::VerifyCa,
                    "verify-full" => Mode::VerifyFull,
                    other => bail!(
                        "`sslmode={other}` is not a TLS mode; hint: use disable, prefer, require, verify-ca or verify-full"
                    ),
                }
            }
            "sslrootcert" => tls.root_cert = Some(v),
            "sslcert" => tls.cert = Some(PathBuf::from(v)),
            _ => tls.key = Some(PathBuf::from(v)),
        }
    }
    let mode = match tls.mode {
        Mode::Disable => "disable",
        Mode::Prefer => "prefer",
        _ => "require",
    };
    let sep = if conn.starts_with("postgres") {
        if rest.contains('?') { "&" } else { "?" }
    } else {
        " "
    };
    Ok((format!("{rest}{sep}sslmode={mode}"), tls))
}

fn split_url(url: &str) -> (String, Vec<(String, String)>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), Vec::new());
    };
    let mut kept = Vec::new();
    let mut ours = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if OURS.contains(&k) {
            ours.push((k.to_string(), percent_decode(v)));
        } else {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (rest, ours)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// libpq's `key = value` form: values may be single-quoted, with `\'`
/// and `\\` inside.
fn split_key_values(conn: &str) -> Result<(String, Vec<(String, String)>)> {
    let mut kept = Vec::new();
    let mut ours = Vec::new();
    let mut chars = conn.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            bail!("the connection string's `{key}` has no `=value`");
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => bail!("the connection string's `{key}` has an unclosed quote"),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(c);
            }
        }
        if OURS.contains(&key.as_str()) {
            ours.push((key, value));
        } else {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push(format!("{key}='{quoted}'"));
        }
    }
    Ok((kept.join(" "), ours))
}

impl PgTls {
    /// The connector for tokio-postgres.
    pub fn connector(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
        let roots = match self.root_cert.as_deref() {
            Some("system") => Some(system_roots()?),
            Some(file) => Some(read_roots(std::path::Path::new(file))?),
            None => None,
        };
        let check = match (self.mode, roots) {
            (Mode::VerifyCa | Mode::VerifyFull, None) => bail!(
                "`sslmode={}` needs the CA that signed the server's certificate; hint: add `sslrootcert=/path/to/ca.pem` (or `sslrootcert=system`) to the connection string",
                if self.mode == Mode::VerifyCa {
                    "verify-ca"
                } else {
                    "verify-full"
                }
            ),
            (Mode::VerifyFull, Some(r)) => Check::Full(r),
            (Mode::VerifyCa | Mode::Require, Some(r)) => Check::Chain(r),
            (Mode::Prefer, Some(r)) => Check::Chain(r),
            _ => Check::Nothing,
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS 1.2 and 1.3 are not available")?;
        let builder = match check {
            Check::Full(roots) => builder.with_root_certificates(roots),
            Check::Chain(roots) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Lenient {
                    chain: Some(webpki(roots)?),
                })),
            Check::Nothing => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Lenient { chain: None })),
        };
        let config = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => builder
                .with_client_auth_cert(read_certs(c)?, read_key(k)?)
                .with_context(|| {
                    format!(
                        "the sslkey {} does not go with the sslcert {}",
                        k.display(),
                        c.display()
                    )
                })?,
            (None, None) => builder.with_no_client_auth(),
            _ => bail!(
                "give both `sslcert` and `sslkey` (a client certificate and its key), or neither"
            ),
        };
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    }
}

enum Check {
    Full(RootCertStore),
    Chain(RootCertStore),
    Nothing,
}

fn system_roots() -> Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        bail!(
            "`sslrootcert=system`: this machine's trust store has no certificates ({:?}); hint: install ca-certificates or name a file",
            found.errors
        );
    }
    Ok(roots)
}

fn webpki(roots: RootCertStore) -> Result<Arc<WebPkiServerVerifier>> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .context("the sslrootcert cannot verify server certificates")
}

/// The verifier of every mode but `verify-full`: with a chain
/// (`verify-ca`, or `require` / `prefer` given an `sslrootcert`) the chain
/// is checked and the name is not, libpq's meaning; without one anyone's
/// certificate is accepted. The handshake's signatures are checked either
/// way, so the connection is encrypted to whoever holds the key.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_options_are_taken_out_and_the_mode_reduced() {
        let (rest, tls) = split(
            "postgres://u:p@db:5432/x?application_name=a&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p@db:5432/x?application_name=a&sslmode=require"
        );
        assert_eq!(tls.mode, Mode::VerifyFull);
        assert_eq!(tls.root_cert.as_deref(), Some("/etc/ca.pem"));
        let (rest, tls) = split("postgres://db/x").unwrap();
        assert_eq!(rest, "postgres://db/x?sslmode=prefer");
        assert_eq!(tls.mode, Mode::Prefer);
    }

    #[test]
    fn key_value_options_are_taken_out_with_their_quotes() {
        let (rest, tls) =
            split(r"host=db password='a\'b' sslmode = verify-ca sslrootcert='/a b/ca.pem'")
                .unwrap();
        assert_eq!(rest, r"host='db' password='a\'b' sslmode=require");
        assert_eq!(tls.mode, Mode::VerifyCa);
        assert_eq!(tls.root_cert.as_deref(), Some("/a b/ca.pem"));
        assert!(split("host=db sslmode=verify").is_err());
        assert!(split("host=db password='x").is_err());
    }

    #[test]
    fn verifying_without_a_root_certificate_says_what_to_add() {
        let (_, tls) = split("postgres://db/x?sslmode=verify-full").unwrap();
        let e = tls.connector().err().unwrap().to_string();
        assert!(e.contains("sslrootcert="), "{e}");
    }
}
