//! What the commands that talk to a running server (`tail`, `diff`,
//! `query`) share: the server's address and how to trust it ([`Remote`]),
//! the token, and a refusal turned into an error that quotes the server's
//! message.

use anyhow::{Context as _, Result, bail};
use std::path::PathBuf;

/// A running server, as every client command is given it.
#[derive(Debug, clap::Args)]
pub struct Remote {
    /// The server, e.g. `http://127.0.0.1:8080` or `https://logs.internal:8443`.
    #[arg(long)]
    pub server: String,
    /// A token with the permission the command needs (or set
    /// `WASMPIPE_TOKEN`, which keeps it out of `ps`).
    #[arg(long)]
    token: Option<String>,
    /// For an https server whose certificate your own CA signed: that CA's
    /// certificate (PEM), instead of the public CAs (or set
    /// `WASMPIPE_CA_FILE`).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// A client certificate (PEM) to authenticate with instead of a token,
    /// for a server with `[serve.tls] client_ca`.
    #[arg(long, value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
}

impl Remote {
    /// `path` on the server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.trim_end_matches('/'))
    }

    /// An agent that hands back every status (refusals carry a JSON
    /// message), never times out a response that streams, and trusts the
    /// CA and presents the certificate given.
    pub fn agent(&self) -> Result<ureq::Agent> {
        use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
        let mut tls = TlsConfig::builder();
        let ca = self
            .ca_file
            .clone()
            .or_else(|| std::env::var_os("WASMPIPE_CA_FILE").map(PathBuf::from))
            .filter(|p| !p.as_os_str().is_empty());
        if let Some(ca) = ca {
            let certs = crate::tls::read_certs(&ca).context("--ca-file")?;
            let certs: Vec<_> = certs
                .iter()
                .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                .collect();
            tls = tls.root_certs(RootCerts::new_with_certs(&certs));
        }
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            let chain: Vec<_> = crate::tls::read_certs(cert)
                .context("--client-cert")?
                .iter()
                .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                .collect();
            let pem = std::fs::read(key)
                .with_context(|| format!("--client-key: cannot read {}", key.display()))?;
            let key = PrivateKey::from_pem(&pem).map_err(|e| {
                anyhow::anyhow!("--client-key: {} holds no private key: {e}", key.display())
            })?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        Ok(ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(None)
            .tls_config(tls.build())
            .build()
            .into())
    }

    /// `req` with the token, if there is one.
    pub fn authorize<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match token(&self.token) {
            Some(t) => req.header("authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    /// The error of a request that reached no answer, with what to do
    /// when it is the server's certificate that was not trusted.
    pub fn unreachable(&self, e: ureq::Error) -> anyhow::Error {
        let text = e.to_string();
        let hint = if text.contains("certificate") || text.contains("UnknownIssuer") {
            "; hint: if your own CA signed the server's certificate, pass it with --ca-file"
        } else if self.server.starts_with("http://") && text.contains("onnection") {
            "; hint: is the server running, and does it serve https (then use an https:// URL)?"
        } else {
            ""
        };
        anyhow::anyhow!("cannot reach {}: {text}{hint}", self.server)
    }
}

/// `--token`, else `WASMPIPE_TOKEN` (which keeps it out of `ps`).
fn token(arg: &Option<String>) -> Option<String> {
    arg.clone()
        .or_else(|| std::env::var("WASMPIPE_TOKEN").ok())
        .filter(|t| !t.is_empty())
}

/// `resp` if it is a success, else an error with the server's message.
pub fn success(
    resp: ureq::http::Response<ureq::Body>,
    server: &str,
) -> Result<ureq::http::Response<ureq::Body>> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.into_body().read_to_string().unwrap_or_default();
    let why = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(String::from))
        .unwrap_or(body);
    bail!("{server} answered {status}: {why}");
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
