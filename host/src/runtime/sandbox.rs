//! What a stage instance can reach: a WASI preview 1 context that grants
//! nothing the manifest does not (no files, no environment, a frozen clock),
//! stdout/stderr captured into the host's log tagged with the stage name, and
//! a memory limiter that remembers when it refused to grow.

use crate::manifest::Allow;
use anyhow::{Context as _, Result};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime::ResourceLimiter;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{FsPerms, HostMonotonicClock, HostWallClock, WasiCtxBuilder};

/// Longest guest log line kept; longer lines are cut (and say so) so that
/// a stage that prints without newlines cannot grow host memory.
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
                largest: 0,
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
    /// The largest size in bytes any of the instance's memories reached.
    pub largest: u64,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired as u64 <= self.limit;
        if ok {
            self.largest = self.largest.max(desired as u64);
        } else {
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

/// Builds the WASI preview 1 context for one instance of `stage`.
pub fn wasi_ctx(stage: &str, allow: &Allow, base_dir: &Path) -> Result<WasiP1Ctx> {
    Ok(wasi_builder(stage, allow, base_dir)?.build_p1())
}

/// What an instance of `stage` may reach, for either WASI version: what
/// `allow` grants and nothing else (no sockets or name lookups ever).
pub fn wasi_builder(stage: &str, allow: &Allow, base_dir: &Path) -> Result<WasiCtxBuilder> {
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
    Ok(b)
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
    /// Bytes of the current line past [`MAX_LOG_LINE`], not kept.
    cut: usize,
    /// Start of the current second, and lines logged in it.
    window: std::time::Instant,
    in_window: u32,
    /// Lines dropped since the last one logged.
    dropped: u64,
}

/// Most guest log lines kept per second and instance: a stage that logs
/// in a loop must not flood the host's log (or fill its disk).
const MAX_LOG_LINES_PER_SECOND: u32 = 200;

/// Guest log lines dropped by the rate limit, and lines cut at
/// [`MAX_LOG_LINE`], since the process started (shown by `/metrics`).
pub static LOG_LINES_DROPPED: AtomicU64 = AtomicU64::new(0);
/// See [`LOG_LINES_DROPPED`].
pub static LOG_LINES_CUT: AtomicU64 = AtomicU64::new(0);

impl LineWriter {
    fn new(log: GuestLog) -> Self {
        LineWriter {
            log,
            pending: Vec::new(),
            cut: 0,
            window: std::time::Instant::now(),
            in_window: 0,
            dropped: 0,
        }
    }

    fn push(&mut self, mut bytes: &[u8]) {
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            self.keep(&bytes[..nl]);
            self.emit();
            bytes = &bytes[nl + 1..];
        }
        self.keep(bytes);
    }

    /// Appends to the current line, up to [`MAX_LOG_LINE`].
    fn keep(&mut self, bytes: &[u8]) {
        let room = MAX_LOG_LINE.saturating_sub(self.pending.len());
        let kept = bytes.len().min(room);
        self.pending.extend_from_slice(&bytes[..kept]);
        self.cut += bytes.len() - kept;
    }

    fn emit(&mut self) {
        let now = std::time::Instant::now();
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.in_window = 0;
        }
        let cut = std::mem::take(&mut self.cut);
        if self.in_window >= MAX_LOG_LINES_PER_SECOND {
            self.dropped += 1;
            LOG_LINES_DROPPED.fetch_add(1, Ordering::Relaxed);
            self.pending.clear();
            return;
        }
        self.in_window += 1;
        let line = String::from_utf8_lossy(&self.pending);
        let line = line.trim_end_matches('\r');
        let mut notes = String::new();
        if cut > 0 {
            LOG_LINES_CUT.fetch_add(1, Ordering::Relaxed);
            notes.push_str(&format!(
                " [line cut at {} KiB, {cut} bytes dropped]",
                MAX_LOG_LINE >> 10
            ));
        }
        if self.dropped > 0 {
            notes.push_str(&format!(
                " [{} earlier lines dropped: more than {MAX_LOG_LINES_PER_SECOND} a second]",
                std::mem::take(&mut self.dropped)
            ));
        }
        if self.log.stream == "stderr" {
            tracing::warn!(target: "wasmpipe::guest", "[{}] {line}{notes}", self.log.stage);
        } else {
            tracing::info!(target: "wasmpipe::guest", "[{}] {line}{notes}", self.log.stage);
        }
        self.pending.clear();
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.pending.is_empty() || self.cut > 0 {
            self.emit();
        }
        if self.dropped > 0 {
            tracing::warn!(
                target: "wasmpipe::guest",
                "[{}] {} log lines dropped: more than {MAX_LOG_LINES_PER_SECOND} a second",
                self.log.stage,
                self.dropped
            );
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
