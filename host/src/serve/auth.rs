//! Bearer tokens with read and write permissions, and client certificates
//! (`[serve.tls] client_ca`) as the other way in. With neither configured
//! the service is open; with either, every route but the health probes
//! needs a valid token or a verified client certificate (401 without, 403
//! without the permission). A token, when sent, is what counts.

use crate::manifest::{Manifest, Permission, ServeSection};
use anyhow::{Result, anyhow};
use sha2::{Digest, Sha256};

/// One configured token.
#[derive(Debug, Clone)]
struct Token {
    name: String,
    /// SHA-256 of the token: comparing digests keeps the comparison's
    /// timing independent of how much of a guess was right.
    digest: [u8; 32],
    read: bool,
    write: bool,
}

/// The configured tokens.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    tokens: Vec<Token>,
    /// What a verified client certificate may do (read, write), when
    /// client certificates are accepted.
    client_certs: Option<(bool, bool)>,
}

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Reading.
    Read,
    /// Writing.
    Write,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No token, or an unknown one (401).
    Unauthenticated(&'static str),
    /// A valid token without the permission (403).
    Forbidden(String),
}

impl Auth {
    /// Tokens from the manifest, reading `env` ones from the environment.
    pub fn from_manifest(manifest: &Manifest, serve: &ServeSection) -> Result<Auth> {
        let mut tokens = Vec::new();
        for t in &serve.tokens {
            let secret = match (&t.token, &t.env) {
                (Some(tok), _) => tok.clone(),
                (None, Some(env)) => match std::env::var(env.get_ref()) {
                    Ok(v) if !v.is_empty() => v,
                    _ => {
                        let d = manifest.diagnostic_at(
                            env.span(),
                            format!(
                                "environment variable `{}` of token `{}` is not set",
                                env.get_ref(),
                                t.name.get_ref()
                            ),
                        );
                        return Err(anyhow!(
                            d.with_hint("export it before starting `wasmpipe serve`")
                        ));
                    }
                },
                (None, None) => unreachable!("validated while parsing"),
            };
            let perms = t.permissions.get_ref();
            tokens.push(Token {
                name: t.name.get_ref().to_string(),
                digest: Sha256::digest(secret.as_bytes()).into(),
                read: perms.contains(&Permission::Read),
                write: perms.contains(&Permission::Write),
            });
        }
        let client_certs = serve
            .tls
            .as_ref()
            .filter(|t| t.client_ca.is_some())
            .map(|t| {
                let p = t.client_permissions.get_ref();
                (
                    p.contains(&Permission::Read),
                    p.contains(&Permission::Write),
                )
            });
        Ok(Auth {
            tokens,
            client_certs,
        })
    }

    /// Whether requests must authenticate.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty() || self.client_certs.is_some()
    }

    /// Checks the `Authorization` header value, else the name of the
    /// client certificate the connection was verified with; `Ok` carries
    /// the token's or certificate's name (`None` when authentication is
    /// off).
    pub fn check(
        &self,
        header: Option<&str>,
        client_cert: Option<&str>,
        need: Need,
    ) -> Result<Option<String>, Denied> {
        if !self.enabled() {
            return Ok(None);
        }
        let Some(header) = header else {
            if let (Some(name), Some((read, write))) = (client_cert, self.client_certs) {
                let ok = match need {
                    Need::Read => read,
                    Need::Write => write,
                };
                if ok {
                    return Ok(Some(name.to_string()));
                }
                let what = if need == Need::Read { "read" } else { "write" };
                return Err(Denied::Forbidden(format!(
                    "client certificate `{name}` lacks the `{what}` permission (`[serve.tls] client_permissions`)"
                )));
            }
            return Err(Denied::Unauthenticated(if self.client_certs.is_some() {
                "missing `Authorization: Bearer <token>` header or client certificate"
            } else {
                "missing `Authorization: Bearer <token>` header"
            }));
        };
        let Some(given) = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
        else {
            return Err(Denied::Unauthenticated(
                "the `Authorization` header must be `Bearer <token>`",
            ));
        };
        let digest: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
        let Some(t) = self.tokens.iter().find(|t| t.digest == digest) else {
            return Err(Denied::Unauthenticated("unknown token"));
        };
        let ok = match need {
            Need::Read => t.read,
            Need::Write => t.write,
        };
        if ok {
            Ok(Some(t.name.clone()))
        } else {
            let what = if need == Need::Read { "read" } else { "write" };
            Err(Denied::Forbidden(format!(
                "token `{}` lacks the `{what}` permission",
                t.name
            )))
        }
    }
}
