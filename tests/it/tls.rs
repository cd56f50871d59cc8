//! TLS from the outside: `serve` over https with certificates made by the
//! test (rcgen), a plain-http client on the https port, a client that
//! does not trust the server, a renewal on disk while serving, client
//! certificates as a second way in, and the client commands' `--ca-file`.
//! PostgreSQL and NATS over TLS are in `cluster.rs` (they need the
//! services).

use crate::util::http::Server;
use crate::util::{plugin, toml_path, wasmpipe, write};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use serde_json::Value;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A certificate authority made for one test.
pub(crate) struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.distinguished_name.push(DnType::CommonName, name);
        Ca {
            issuer: CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `cn` (and, for a server, 127.0.0.1 and
    /// localhost): its PEM, its key's PEM and its DER.
    pub(crate) fn leaf(&self, cn: &str) -> (String, String, Vec<u8>) {
        let mut p =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    /// Writes the CA's certificate and a leaf's files into `dir` as
    /// `<name>.pem`, `<name>.key`; returns the paths (ca, cert, key) and
    /// the leaf's DER.
    pub(crate) fn files(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf, Vec<u8>) {
        let (cert, key, der) = self.leaf(name);
        let ca = write(dir, &format!("{name}-ca.pem"), &self.pem());
        let c = write(dir, &format!("{name}.pem"), &cert);
        let k = write(dir, &format!("{name}.key"), &key);
        (ca, c, k, der)
    }
}

/// An HTTP client trusting `ca` (PEM), presenting `client` (cert and key
/// PEM) if given.
fn tls_agent(ca: &str, client: Option<(&str, &str)>) -> ureq::Agent {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
    let mut tls =
        TlsConfig::builder().root_certs(RootCerts::new_with_certs(&[Certificate::from_pem(
            ca.as_bytes(),
        )
        .unwrap()]));
    if let Some((cert, key)) = client {
        tls = tls.client_cert(Some(ClientCert::new_with_certs(
            &[Certificate::from_pem(cert.as_bytes()).unwrap()],
            PrivateKey::from_pem(key.as_bytes()).unwrap(),
        )));
    }
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .tls_config(tls.build())
        .build()
        .into()
}

/// Status and JSON body (or `Null`) of a request.
fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<(u16, Value), ureq::Error> {
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(body.unwrap_or("").to_string()).unwrap();
    let mut resp = agent.run(req)?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// The DER of the certificate the server at `addr` presents, read by a
/// plain rustls handshake trusting `roots`.
fn presented(addr: &str, roots: &[&str]) -> Vec<u8> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let mut store = rustls::RootCertStore::empty();
    for pem in roots {
        store
            .add(CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
            .unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    conn.peer_certificates().unwrap()[0].to_vec()
}

fn manifest(dir: &Path, tls: &str, extra: &str) -> PathBuf {
    let text = format!(
        "[pipeline]\nname = \"logs\"\n\n[[stage]]\nname = \"double\"\nkind = \"map\"\nplugin = {}\n\n\
         [serve]\ndatabase = \"logs.db\"\nheader_timeout = \"1s\"\n{extra}\n[serve.tls]\n{tls}\n",
        toml_path(&plugin("double"))
    );
    write(dir, "logs.toml", &text)
}

const EVENTS: &str = "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n";

fn addr(s: &Server) -> String {
    s.base
        .strip_prefix("https://")
        .expect("an https URL")
        .to_string()
}

#[test]
fn serve_speaks_https_refuses_plain_http_and_reads_a_renewed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (ca_file, cert, key, first) = ca.files(dir.path(), "first");
    let m = manifest(
        dir.path(),
        &format!("cert = {}\nkey = {}\n", toml_path(&cert), toml_path(&key)),
        "",
    );
    let s = Server::start(&m, &[]);
    assert!(s.base.starts_with("https://"), "{}", s.base);
    let agent = tls_agent(&ca.pem(), None);

    // Over https, ingest and reads work.
    let (status, body) = call(
        &agent,
        "POST",
        &s.url("/v1/pipelines/logs/jobs"),
        &[("content-type", "application/x-ndjson")],
        Some(EVENTS),
    )
    .unwrap();
    assert_eq!(status, 202, "{body}");

    // Plain http on the https port: a 400 that says what to do.
    let plain = format!("http://{}/v1/jobs", addr(&s));
    let (status, body) = call(&crate::util::agent(), "GET", &plain, &[], None).unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("https://"),
        "{body}"
    );

    // A connection that never starts its handshake is dropped after the
    // header deadline (1 s here), not held.
    let mut idle = TcpStream::connect(addr(&s)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let t = Instant::now();
    let n = idle.read(&mut [0u8; 16]).unwrap_or(0);
    assert_eq!(n, 0, "the server should close an idle connection");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // A client that does not trust the server's CA fails, and the CLI
    // says to pass --ca-file; with it, the same command works.
    let sql = "SELECT count(*) AS n FROM events";
    let out = wasmpipe()
        .args(["query", "--server", &s.base, "--json", sql])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--ca-file"), "{err}");
    let t = Instant::now();
    loop {
        let out = wasmpipe()
            .args(["query", "--server", &s.base, "--json", sql, "--ca-file"])
            .arg(&ca_file)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if text.trim() == r#"{"n":3}"# {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{text}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Renewal on disk: new connections get the new certificate.
    assert_eq!(presented(&addr(&s), &[&ca.pem()]), first);
    let (next_cert, next_key, next) = ca.leaf("second");
    std::fs::write(&key, &next_key).unwrap();
    std::fs::write(&cert, &next_cert).unwrap();
    let t = Instant::now();
    while presented(&addr(&s), &[&ca.pem()]) != next {
        assert!(t.elapsed() < Duration::from_secs(10), "{}", s.log());
        std::thread::sleep(Duration::from_millis(100));
    }

    // A key that does not go with the certificate (a renewal half done)
    // is not taken: the server warns and keeps presenting the last good
    // certificate.
    let (_, stray_key, _) = ca.leaf("stray");
    std::fs::write(&key, &stray_key).unwrap();
    let t = Instant::now();
    while !s.log().contains("previous certificate stays in use") {
        assert!(t.elapsed() < Duration::from_secs(10), "{}", s.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(presented(&addr(&s), &[&ca.pem()]), next);
    let (status, _) = call(&agent, "GET", &s.url("/v1/jobs"), &[], None).unwrap();
    assert_eq!(status, 200);
}

#[test]
fn a_broken_tls_setup_stops_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (_, cert, key, _) = ca.files(dir.path(), "server");
    let (_, _, other_key, _) = ca.files(dir.path(), "other");
    let cases = [
        // The certificate where the key should be.
        (toml_path(&cert), toml_path(&cert), "holds no private key"),
        // A key that is not the certificate's.
        (
            toml_path(&cert),
            toml_path(&other_key),
            "does not go with the certificate",
        ),
        (
            toml_path(&dir.path().join("missing.pem")),
            toml_path(&key),
            "missing.pem",
        ),
    ];
    for (c, k, want) in cases {
        let m = manifest(dir.path(), &format!("cert = {c}\nkey = {k}\n"), "");
        let out = wasmpipe()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .arg(&m)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{want}");
        assert!(err.contains(want), "wanted `{want}` in:\n{err}");
    }
}

#[test]
fn client_certificates_authenticate_with_their_own_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server CA");
    let (ca_file, cert, key, _) = ca.files(dir.path(), "server");
    let clients = Ca::new("clients CA");
    let clients_file = write(dir.path(), "clients-ca.pem", &clients.pem());
    let m = manifest(
        dir.path(),
        &format!(
            "cert = {}\nkey = {}\nclient_ca = {}\nclient_permissions = [\"write\"]\n",
            toml_path(&cert),
            toml_path(&key),
            toml_path(&clients_file)
        ),
        "[[serve.token]]\nname = \"reader\"\ntoken = \"reader-token-123\"\npermissions = [\"read\"]\n",
    );
    let s = Server::start(&m, &[]);
    let anonymous = tls_agent(&ca.pem(), None);
    let jobs = s.url("/v1/jobs");
    let post = s.url("/v1/pipelines/logs/jobs");
    let ndjson = [("content-type", "application/x-ndjson")];

    // Neither a token nor a certificate: 401, saying either would do.
    let (status, body) = call(&anonymous, "POST", &post, &ndjson, Some(EVENTS)).unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("client certificate"),
        "{body}"
    );
    // The header that carries a verified certificate's name, sent by the
    // client itself, counts for nothing.
    let spoofed = [
        ("content-type", "application/x-ndjson"),
        ("wasmpipe-client-certificate", "shipper"),
    ];
    let (status, _) = call(&anonymous, "POST", &post, &spoofed, Some(EVENTS)).unwrap();
    assert_eq!(status, 401);

    // A certificate from the clients' CA writes, as its common name...
    let (c, k, _) = clients.leaf("shipper");
    let shipper = tls_agent(&ca.pem(), Some((&c, &k)));
    let (status, body) = call(&shipper, "POST", &post, &ndjson, Some(EVENTS)).unwrap();
    assert_eq!(status, 202, "{body}");
    let job = body["job"].as_i64().unwrap();
    // ... and may not read (client_permissions = ["write"]).
    let (status, body) = call(&shipper, "GET", &jobs, &[], None).unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("`shipper`"),
        "{body}"
    );

    // The reader's token reads, and the job says who sent it.
    let bearer = [("authorization", "Bearer reader-token-123")];
    let (status, body) = call(&anonymous, "GET", &format!("{jobs}/{job}"), &bearer, None).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.to_string().contains("shipper"), "{body}");

    // A certificate from another CA does not get through the handshake.
    let (c2, k2, _) = Ca::new("stranger CA").leaf("shipper");
    let stranger = tls_agent(&ca.pem(), Some((&c2, &k2)));
    assert!(call(&stranger, "POST", &post, &ndjson, Some(EVENTS)).is_err());

    // The CLI presents a certificate too: it gets through, and is refused
    // the read it lacks the permission for.
    let cert_file = write(dir.path(), "shipper.pem", &c);
    let key_file = write(dir.path(), "shipper.key", &k);
    let out = wasmpipe()
        .args(["query", "--server", &s.base, "SELECT 1", "--ca-file"])
        .arg(&ca_file)
        .arg("--client-cert")
        .arg(&cert_file)
        .arg("--client-key")
        .arg(&key_file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("403") && err.contains("`shipper`"), "{err}");
}

#[test]
fn serve_takes_its_certificate_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (_, cert, key, der) = ca.files(dir.path(), "cli");
    let text = format!(
        "[pipeline]\nname = \"logs\"\n\n[[stage]]\nname = \"double\"\nkind = \"map\"\nplugin = {}\n\n[serve]\ndatabase = \"logs.db\"\n",
        toml_path(&plugin("double"))
    );
    let m = write(dir.path(), "plain.toml", &text);
    let s = Server::start_with(
        &m,
        &[],
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(s.base.starts_with("https://"), "{}", s.base);
    assert_eq!(presented(&addr(&s), &[&ca.pem()]), der);
    let mut sock = TcpStream::connect(addr(&s)).unwrap();
    sock.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    sock.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}

/// The real OpenTelemetry Python SDK exports to `https://…/v1/logs`,
/// trusting the server through `OTEL_EXPORTER_OTLP_CERTIFICATE` and
/// authenticated by a client certificate alone (no token), as deploy.md
/// tells an operator to set it up.
#[test]
fn the_opentelemetry_sdk_ships_logs_over_https_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server CA");
    let (ca_file, cert, key, _) = ca.files(dir.path(), "server");
    let clients = Ca::new("clients CA");
    let clients_file = write(dir.path(), "clients-ca.pem", &clients.pem());
    let (c, k, _) = clients.leaf("checkout-app");
    let client_cert = write(dir.path(), "app.pem", &c);
    let client_key = write(dir.path(), "app.key", &k);
    let text = format!(
        "[pipeline]\nname = \"otel\"\n\n[[stage]]\nname = \"stamp\"\nkind = \"map\"\nplugin = {}\n\n\
         [serve]\ndatabase = \"otel.db\"\n\n\
         [serve.tls]\ncert = {}\nkey = {}\nclient_ca = {}\n",
        toml_path(&plugin("stamp")),
        toml_path(&cert),
        toml_path(&key),
        toml_path(&clients_file)
    );
    let s = Server::start(&write(dir.path(), "otel.toml", &text), &[]);
    let n = 12;
    crate::otlp::run_python_app(
        &s.url("/v1/logs"),
        n,
        &[
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca_file.to_str().unwrap()),
            (
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                client_cert.to_str().unwrap(),
            ),
            (
                "OTEL_EXPORTER_OTLP_CLIENT_KEY",
                client_key.to_str().unwrap(),
            ),
        ],
    );
    // Read back with the client certificate (it has both permissions).
    let agent = tls_agent(&ca.pem(), Some((&c, &k)));
    let t = Instant::now();
    loop {
        let (status, body) =
            call(&agent, "GET", &s.url("/v1/events?limit=1000"), &[], None).unwrap();
        assert_eq!(status, 200, "{body}");
        let events = body["events"].as_array().unwrap();
        if events.len() == n {
            // The stage sees the certificate's name as the identity.
            assert!(
                events
                    .iter()
                    .all(|e| e["event"]["resource"]["service.name"] == "checkout"
                        && e["event"]["request"]["identity"] == "checkout-app"),
                "{body}"
            );
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{body}\n{}", s.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}
