//! The HTTP/1 server loop: accepts connections up to a bound and serves
//! each with hyper, with a deadline for a request's headers.
//!
//! Written out (rather than `axum::serve`) for the two bounds a server on
//! the open network needs: a client that sends its headers a byte at a
//! time (slowloris) is dropped after `header_timeout`, where it would
//! otherwise hold its connection for ever; and past `max_connections`
//! open connections the next ones wait in the kernel's accept queue (as
//! a TCP connection, never reset) until one closes, so a crowd of clients
//! costs a bounded amount of memory. Shutdown stops accepting and lets
//! the open requests finish. With TLS, each connection's handshake runs
//! in its own task under the same deadline as the headers (tls/server.rs).

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::tls::server::ServerTls;

/// The request header that carries the name of the client certificate a
/// connection was verified with, from this loop to `authorize`. Any copy
/// a client sends is removed first: only this loop sets it.
pub const CLIENT_CERT_HEADER: &str = "wasmpipe-client-certificate";

/// The bounds of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Longest a request's headers may take to arrive.
    pub header_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// How long open requests may take to finish once shutdown begins.
    pub drain: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves and the requests
/// in flight are done (or `drain` has passed: a client that never reads
/// its response must not hold the shutdown for ever).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    bounds: Bounds,
    tls: Option<Arc<ServerTls>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(bounds.header_timeout)
        .keep_alive(true);
    let slots = Arc::new(Semaphore::new(bounds.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let http = http.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_one(&http, watcher, addr, stream, with_client(app, addr, None)).await,
                Some(tls) => {
                    let Some((stream, client)) = tls.accept(stream, bounds.header_timeout).await
                    else {
                        return;
                    };
                    serve_one(&http, watcher, addr, stream, with_client(app, addr, client)).await
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(bounds.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still open {:?} after shutdown began are dropped",
            bounds.drain
        );
    }
    Ok(())
}

/// Serves one connection, plain or TLS, until it ends. Errors here are
/// the client's (a reset, headers too slow): its connection ends, the
/// server goes on.
async fn serve_one<I>(
    http: &hyper::server::conn::http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
    addr: SocketAddr,
    io: I,
    svc: TowerToHyperService<Router>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = http.serve_connection(TokioIo::new(io), svc);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!("connection from {addr} ended: {e}");
    }
}

/// The app for one connection: the peer's address, and the name of its
/// verified client certificate in [`CLIENT_CERT_HEADER`] (or no such
/// header, whatever the client sent).
fn with_client(
    app: Router,
    addr: SocketAddr,
    client: Option<String>,
) -> TowerToHyperService<Router> {
    let client = client.and_then(|c| axum::http::HeaderValue::from_str(&c).ok());
    let app = app
        .layer(axum::middleware::map_request(
            move |mut req: axum::extract::Request| {
                let client = client.clone();
                async move {
                    let headers = req.headers_mut();
                    headers.remove(CLIENT_CERT_HEADER);
                    if let Some(c) = client {
                        headers.insert(CLIENT_CERT_HEADER, c);
                    }
                    req
                }
            },
        ))
        .layer(axum::Extension(ConnectInfo::<SocketAddr>(addr)));
    TowerToHyperService::new(app)
}
