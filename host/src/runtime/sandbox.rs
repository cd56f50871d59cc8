//! What a stage instance can reach: a WASI preview 1 context that grants
//! nothing the manifest does not (no files, no environment, a frozen clock),
//! stdout/stderr captured into the host's log tagged with the stage name, and
//! a memory limiter that remembers when it refused to grow.

use crate::manifest::Allow;
use anyhow::{Context as _, Result};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime::ResourceLimiter;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{FsPerms, HostMonotonicClock, HostWallClock, WasiCtxBuilder};

/// Longest guest log line kept; longer lines are cut so a stage that prints
/// without newlines cannot grow host memory.
const MAX_LOG_LINE: usize = 16 << 10;

/// The data each stage `Store` carries.
pub struct StageState {
    /// The WASI context.
    pub wasi: WasiP1Ctx,
    /// The memory limiter.
    pub limiter: MemoryLimiter,
    /// When the current guest call must end: host calls that wait (see
    /// [`super::deadline`]) give up here, as the epoch does in wasm code.
    pub deadline: Instant,
    /// Whether the manifest grants the real clocks (else they read zero).
    pub clock: bool,
    /// When the instance was created: the origin of its monotonic clock.
    pub started: Instant,
}

impl StageState {
    /// The state of a new instance with `memory` bytes at most and calls
    /// limited to `timeout` until the caller sets a new deadline.
    pub fn new(wasi: WasiP1Ctx, memory: u64, timeout: Duration, clock: bool) -> StageState {
        let started = Instant::now();
        StageState {
            wasi,
            limiter: MemoryLimiter {
                limit: memory,
                refused: false,
            },
            deadline: started + timeout,
            clock,
            started,
        }
    }

    /// Starts a guest call limited to `timeout`.
    pub fn start_call(&mut self, timeout: Duration) {
        self.limiter.refused = false;
        self.deadline = Instant::now() + timeout;
    }
}

/// Caps linear memory growth and records refusals, so a trap that follows
/// a refused `memory.grow` can be reported as out-of-memory.
pub struct MemoryLimiter {
    /// Largest memory size in bytes.
    pub limit: u64,
    /// Set when a growth was refused; cleared by the caller before each call.
    pub refused: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired as u64 <= self.limit;
        if !ok {
            self.refused = true;
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a stage needing a million is broken.
        Ok(desired <= 1_000_000)
    }
}

/// Builds the WASI context for one instance of `stage`.
pub fn wasi_ctx(stage: &str, allow: &Allow, base_dir: &Path) -> Result<WasiP1Ctx> {
    let mut b = WasiCtxBuilder::new();
    let stage: Arc<str> = Arc::from(stage);
    b.stdout(GuestLog {
        stage: stage.clone(),
        stream: "stdout",
    });
    b.stderr(GuestLog {
        stage: stage.clone(),
        stream: "stderr",
    });
    for name in &allow.env {
        if let Ok(v) = std::env::var(name) {
            b.env(name, v);
        }
    }
    for grant in &allow.dirs {
        let host = base_dir.join(grant.host.get_ref());
        let perms = if grant.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        b.preopened_dir(&host, &grant.guest, perms)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("cannot grant directory {host:?} to stage `{stage}`"))?;
    }
    if !allow.clock {
        b.wall_clock(FrozenClock);
        b.monotonic_clock(FrozenClock);
    }
    Ok(b.build_p1())
}

/// A clock stuck at the Unix epoch: stages are deterministic unless the
/// manifest grants `allow.clock`.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// A guest's stdout or stderr, forwarded line by line to `tracing`.
#[derive(Clone)]
struct GuestLog {
    stage: Arc<str>,
    stream: &'static str,
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineWriter::new(self.clone()))
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineWriter::new(self.clone()))
    }
}

struct LineWriter {
    log: GuestLog,
    pending: Vec<u8>,
}

impl LineWriter {
    fn new(log: GuestLog) -> Self {
        LineWriter {
            log,
            pending: Vec::new(),
        }
    }

    fn push(&mut self, mut bytes: &[u8]) {
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            let room = MAX_LOG_LINE.saturating_sub(self.pending.len());
            self.pending.extend_from_slice(&bytes[..nl.min(room)]);
            self.emit();
            bytes = &bytes[nl + 1..];
        }
        let room = MAX_LOG_LINE.saturating_sub(self.pending.len());
        self.pending
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn emit(&mut self) {
        let line = String::from_utf8_lossy(&self.pending);
        let line = line.trim_end_matches('\r');
        if self.log.stream == "stderr" {
            tracing::warn!(target: "wasmpipe::guest", "[{}] {line}", self.log.stage);
        } else {
            tracing::info!(target: "wasmpipe::guest", "[{}] {line}", self.log.stage);
        }
        self.pending.clear();
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            self.emit();
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
