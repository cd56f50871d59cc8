//! TLS with rustls, everywhere a wasmpipe process talks over a network:
//! [`server`] is serve's https (an ingest node's too), [`postgres`] the
//! connections to PostgreSQL; NATS and the client commands use their
//! crates' own TLS, given the files read here.
//!
//! Certificates and keys are PEM files. Every error names the file and
//! says what it should hold, because a TLS set-up fails far more often on
//! the wrong file than on anything else.

pub mod postgres;
pub mod server;

use anyhow::{Context as _, Result, bail};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// The one cryptography provider (ring), named rather than taken from the
/// process default: with two providers linked in (another crate may bring
/// aws-lc), rustls refuses to pick one.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates in a PEM file, in order (a chain: leaf first).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read certificates from {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM file", path.display()))?;
    if certs.is_empty() {
        bail!(
            "{} holds no certificate; hint: give a PEM file with `-----BEGIN CERTIFICATE-----` blocks",
            path.display()
        );
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read the key {}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} holds no private key ({e}); hint: give the PEM file with `-----BEGIN PRIVATE KEY-----` (or RSA / EC PRIVATE KEY), not the certificate",
            path.display()
        )
    })
}

/// The CA certificates in a PEM file, as trust roots.
pub fn read_roots(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).with_context(|| {
            format!(
                "{} holds a certificate that is not a valid CA",
                path.display()
            )
        })?;
    }
    Ok(roots)
}
