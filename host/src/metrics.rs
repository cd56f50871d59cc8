//! Prometheus metrics, written by hand: a few counters, gauges and
//! fixed-bucket histograms, rendered in the text exposition format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Histogram bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A latency histogram.
#[derive(Default)]
pub struct Histogram {
    /// Cumulative counts are computed when rendering; these are per bucket
    /// (the last one is `+Inf`).
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(d.as_nanos() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cum = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cum += self.buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
        }
        cum += self.buckets[BUCKETS.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cum}");
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count.load(Relaxed));
    }
}

/// Counts of one stage.
#[derive(Default)]
pub struct StageMetrics {
    /// Events given to the stage.
    pub events_in: AtomicU64,
    /// Events it produced.
    pub events_out: AtomicU64,
    /// Events it failed.
    pub failed: AtomicU64,
    /// Time per chunk call (including fault isolation).
    pub latency: Histogram,
}

/// Every metric of the service.
pub struct Metrics {
    /// Stage names, in order.
    pub stage_names: Vec<String>,
    /// Per stage.
    pub stages: Vec<StageMetrics>,
    /// Batches accepted (202).
    pub batches_accepted: AtomicU64,
    /// Batches refused, by reason.
    pub batches_refused: Refused,
    /// Events accepted.
    pub events_received: AtomicU64,
    /// Output events stored.
    pub events_stored: AtomicU64,
    /// Dead letters stored.
    pub dead_letters: AtomicU64,
    /// Timeout retries.
    pub retries: AtomicU64,
    /// Chunks done.
    pub chunks_done: AtomicU64,
    /// Chunk processing failed as a whole (retried later).
    pub chunk_errors: AtomicU64,
    /// Jobs finished.
    pub jobs_done: AtomicU64,
    /// Accept latency (request read to 202).
    pub ingest_latency: Histogram,
    /// Whole-chunk latency (load, process, commit).
    pub chunk_latency: Histogram,
}

/// Refused batches by status.
#[derive(Default)]
pub struct Refused {
    /// 400.
    pub bad_request: AtomicU64,
    /// 401 / 403.
    pub unauthorized: AtomicU64,
    /// 404.
    pub not_found: AtomicU64,
    /// 413.
    pub too_large: AtomicU64,
    /// 415.
    pub media_type: AtomicU64,
    /// 429.
    pub backlog: AtomicU64,
    /// 503.
    pub unavailable: AtomicU64,
}

impl Metrics {
    /// Metrics for a pipeline with these stages.
    pub fn new(stage_names: Vec<String>) -> Metrics {
        let stages = stage_names
            .iter()
            .map(|_| StageMetrics::default())
            .collect();
        Metrics {
            stage_names,
            stages,
            batches_accepted: AtomicU64::new(0),
            batches_refused: Refused::default(),
            events_received: AtomicU64::new(0),
            events_stored: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            chunks_done: AtomicU64::new(0),
            chunk_errors: AtomicU64::new(0),
            jobs_done: AtomicU64::new(0),
            ingest_latency: Histogram::default(),
            chunk_latency: Histogram::default(),
        }
    }

    /// The text exposition, given the current queue depth.
    pub fn render(&self, pipeline: &str, queued_events: u64, queued_chunks: u64) -> String {
        let mut o = String::new();
        let p = format!("pipeline=\"{pipeline}\"");
        let counter = |o: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                o,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{{p}}} {}",
                v.load(Relaxed)
            );
        };
        counter(
            &mut o,
            "wasmpipe_batches_accepted_total",
            "Batches accepted (202).",
            &self.batches_accepted,
        );
        counter(
            &mut o,
            "wasmpipe_guest_log_lines_dropped_total",
            "Guest log lines dropped: more than the per-instance rate.",
            &crate::runtime::LOG_LINES_DROPPED,
        );
        counter(
            &mut o,
            "wasmpipe_guest_log_lines_cut_total",
            "Guest log lines cut at 16 KiB.",
            &crate::runtime::LOG_LINES_CUT,
        );
        let r = &self.batches_refused;
        let _ = writeln!(
            o,
            "# HELP wasmpipe_batches_refused_total Batches refused, by HTTP status.\n# TYPE wasmpipe_batches_refused_total counter"
        );
        for (code, v) in [
            (400, &r.bad_request),
            (401, &r.unauthorized),
            (404, &r.not_found),
            (413, &r.too_large),
            (415, &r.media_type),
            (429, &r.backlog),
            (503, &r.unavailable),
        ] {
            let _ = writeln!(
                o,
                "wasmpipe_batches_refused_total{{{p},status=\"{code}\"}} {}",
                v.load(Relaxed)
            );
        }
        counter(
            &mut o,
            "wasmpipe_events_received_total",
            "Events accepted.",
            &self.events_received,
        );
        counter(
            &mut o,
            "wasmpipe_events_stored_total",
            "Output events stored.",
            &self.events_stored,
        );
        counter(
            &mut o,
            "wasmpipe_dead_letters_total",
            "Events dead-lettered.",
            &self.dead_letters,
        );
        counter(
            &mut o,
            "wasmpipe_retries_total",
            "Events retried after a timeout.",
            &self.retries,
        );
        counter(
            &mut o,
            "wasmpipe_chunks_done_total",
            "Chunks processed and committed.",
            &self.chunks_done,
        );
        counter(
            &mut o,
            "wasmpipe_chunk_errors_total",
            "Chunks whose processing failed as a whole (requeued).",
            &self.chunk_errors,
        );
        counter(
            &mut o,
            "wasmpipe_jobs_done_total",
            "Jobs finished.",
            &self.jobs_done,
        );
        let _ = writeln!(
            o,
            "# HELP wasmpipe_queue_events Events accepted but not yet processed.\n# TYPE wasmpipe_queue_events gauge\nwasmpipe_queue_events{{{p}}} {queued_events}"
        );
        let _ = writeln!(
            o,
            "# HELP wasmpipe_queue_chunks Chunks waiting for a worker.\n# TYPE wasmpipe_queue_chunks gauge\nwasmpipe_queue_chunks{{{p}}} {queued_chunks}"
        );
        for (name, help, get) in [
            (
                "wasmpipe_stage_events_in_total",
                "Events given to a stage.",
                (|s: &StageMetrics| &s.events_in) as fn(&StageMetrics) -> &AtomicU64,
            ),
            (
                "wasmpipe_stage_events_out_total",
                "Events a stage produced.",
                |s| &s.events_out,
            ),
            (
                "wasmpipe_stage_failures_total",
                "Events a stage failed.",
                |s| &s.failed,
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
            for (n, s) in self.stage_names.iter().zip(&self.stages) {
                let _ = writeln!(o, "{name}{{{p},stage=\"{n}\"}} {}", get(s).load(Relaxed));
            }
        }
        let _ = writeln!(
            o,
            "# HELP wasmpipe_stage_chunk_seconds Time a stage spends on one chunk.\n# TYPE wasmpipe_stage_chunk_seconds histogram"
        );
        for (n, s) in self.stage_names.iter().zip(&self.stages) {
            s.latency.render(
                &mut o,
                "wasmpipe_stage_chunk_seconds",
                &format!("{p},stage=\"{n}\""),
            );
        }
        let _ = writeln!(
            o,
            "# HELP wasmpipe_ingest_seconds Time from request to 202 (body read, parse, commit).\n# TYPE wasmpipe_ingest_seconds histogram"
        );
        self.ingest_latency
            .render(&mut o, "wasmpipe_ingest_seconds", &p);
        let _ = writeln!(
            o,
            "# HELP wasmpipe_chunk_seconds Time to load, process and commit one chunk.\n# TYPE wasmpipe_chunk_seconds histogram"
        );
        self.chunk_latency
            .render(&mut o, "wasmpipe_chunk_seconds", &p);
        o
    }
}

impl Metrics {
    /// Counts what one chunk's run did, per stage and in retries.
    pub fn record(&self, report: &crate::exec::ChunkReport) {
        use std::sync::atomic::Ordering::Relaxed;
        self.retries.fetch_add(report.retries, Relaxed);
        for (m, c) in self.stages.iter().zip(&report.counts) {
            m.events_in.fetch_add(c.events_in, Relaxed);
            m.events_out.fetch_add(c.events_out, Relaxed);
            m.failed.fetch_add(c.failed, Relaxed);
            if c.events_in > 0 {
                m.latency.observe(c.busy);
            }
        }
    }
}

/// The loop of stored chunks counts here what it did.
impl crate::exec::stored::Observer for Metrics {
    fn ran(&self, report: &crate::exec::ChunkReport) {
        self.record(report);
    }

    fn stored(&self, report: &crate::exec::ChunkReport, took: std::time::Duration, finished: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        self.chunk_latency.observe(took);
        self.chunks_done.fetch_add(1, Relaxed);
        if finished {
            self.jobs_done.fetch_add(1, Relaxed);
        }
        self.events_stored.fetch_add(report.outputs(), Relaxed);
        self.dead_letters
            .fetch_add(report.dead.len() as u64, Relaxed);
    }

    fn failed(&self) {
        self.chunk_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}
