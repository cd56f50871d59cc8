//! Bearer tokens with read and write permissions. With no token
//! configured the service is open; with any, every route but the health
//! probes needs one (401 without a valid token, 403 without the permission).

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
        Ok(Auth { tokens })
    }

    /// Whether any token is configured.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Checks the `Authorization` header value; `Ok` carries the token's
    /// name (`None` when authentication is off).
    pub fn check(&self, header: Option<&str>, need: Need) -> Result<Option<String>, Denied> {
        if self.tokens.is_empty() {
            return Ok(None);
        }
        let Some(header) = header else {
            return Err(Denied::Unauthenticated(
                "missing `Authorization: Bearer <token>` header",
            ));
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
