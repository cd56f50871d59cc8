//! The dead-letter file: one JSON line per failed event, saying which stage
//! failed it, why, where it was in the source, and the original event.

use anyhow::{Context as _, Result};
use serde::Serialize;
use serde_json::value::RawValue;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

/// One failed event, as every mode records it: the dead-letter file of
/// `run`, and the SQLite and PostgreSQL stores of `serve` and `worker`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The stage that failed it; `None` when the source refused it before
    /// any stage saw it (too large, not UTF-8, too deep).
    pub stage: Option<String>,
    /// Why, in words a person can act on.
    pub error: String,
    /// 0-based index of the event in its source or job.
    pub index: u64,
    /// 1-based source line the event starts on (for stored jobs, the
    /// event's number in its job).
    pub line: u64,
    /// Times the event was tried (more than one after timeout retries).
    pub attempts: u32,
    /// The event as it arrived.
    pub event: Vec<u8>,
}

impl DeadLetter {
    /// The stage name as stored: a source refusal is recorded as `source`.
    pub fn stage_name(&self) -> &str {
        self.stage.as_deref().unwrap_or("source")
    }
}

#[derive(Serialize)]
struct Record<'a> {
    pipeline: &'a str,
    stage: Option<&'a str>,
    error: &'a str,
    index: u64,
    line: u64,
    /// The original event: embedded as JSON when it is valid JSON, else as
    /// a string holding its (lossily decoded) text.
    event: EventField<'a>,
    /// The event's bytes in hex, when they are not UTF-8 (`event` is then
    /// their lossy decoding).
    #[serde(skip_serializing_if = "Option::is_none")]
    event_hex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    versions: Option<&'a RawValue>,
}

/// A dead letter's event as every record of one shows it (the file of
/// `run`, the API of `serve`): see [`event_fields`].
#[derive(Serialize)]
#[serde(untagged)]
pub enum EventField<'a> {
    /// The event itself, as JSON.
    Json(&'a RawValue),
    /// Its text, decoded lossily.
    Text(String),
}

/// Where dead letters go: a file created on the first dead letter, so that
/// a clean run leaves none behind.
pub struct DeadLetterSink {
    path: Option<PathBuf>,
    out: Option<Box<dyn Write + Send>>,
    count: u64,
    flush_each: bool,
}

impl DeadLetterSink {
    /// Dead letters to the file at `path`, so that it always describes the
    /// latest run. What is at `path` decides how:
    /// - nothing: the file is created on the first dead letter;
    /// - a regular file (an earlier run's dead letters): it is removed now,
    ///   so a clean run leaves none behind;
    /// - a symbolic link: written through, never removed; a regular file
    ///   it points to is emptied now;
    /// - a FIFO, a device or a socket: written to, never removed or
    ///   truncated (`/dev/null`, `/dev/stderr`, a pipe to another program);
    /// - a directory: refused before anything runs.
    pub fn file(path: PathBuf) -> Result<DeadLetterSink> {
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot use {path:?} for dead letters"));
            }
            Ok(m) if m.file_type().is_file() => std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove the old dead-letter file {path:?}"))?,
            Ok(m) if m.file_type().is_dir() => {
                anyhow::bail!(
                    "cannot write dead letters to {path:?}: it is a directory; hint: name a file, such as {:?}",
                    path.join("dead.jsonl")
                )
            }
            Ok(m) if m.file_type().is_symlink() => {
                if std::fs::metadata(&path).is_ok_and(|t| t.is_dir()) {
                    anyhow::bail!(
                        "cannot write dead letters to {path:?}: it links to a directory; hint: name a file"
                    );
                }
                if std::fs::metadata(&path).is_ok_and(|t| t.is_file()) {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .truncate(true)
                        .open(&path)
                        .with_context(|| format!("cannot empty the dead-letter file {path:?}"))?;
                }
            }
            Ok(_) => {}
        }
        Ok(DeadLetterSink {
            path: Some(path),
            out: None,
            count: 0,
            flush_each: false,
        })
    }

    /// Dead letters to any writer (tests, stderr).
    pub fn writer(w: Box<dyn Write + Send>) -> DeadLetterSink {
        DeadLetterSink {
            path: None,
            out: Some(w),
            count: 0,
            flush_each: false,
        }
    }

    /// Flushes after every dead letter, for long-running pipelines whose
    /// dead letters should be visible as they happen.
    pub fn flush_each(mut self) -> DeadLetterSink {
        self.flush_each = true;
        self
    }

    /// The file path, when writing to a file.
    pub fn path(&self) -> Option<&PathBuf> {
        self.path.as_ref()
    }

    /// Dead letters written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Writes one dead letter of `pipeline`, processed by the stage
    /// `versions` (`{"stage":"<12 hex>",...}`) when known.
    pub fn write(
        &mut self,
        pipeline: &str,
        d: &DeadLetter,
        versions: Option<&RawValue>,
    ) -> Result<()> {
        if self.out.is_none() {
            let path = self
                .path
                .as_ref()
                .expect("a sink without a writer has a path");
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create directory {dir:?} for dead letters"))?;
            }
            // Not `File::create`: a FIFO or device is written to as it is.
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(std::fs::metadata(path).map_or(true, |m| m.is_file()))
                .open(path)
                .with_context(|| format!("cannot create the dead-letter file {path:?}"))?;
            self.out = Some(Box::new(BufWriter::new(f)));
        }
        let (event, event_hex) = event_fields(&d.event);
        let rec = Record {
            pipeline,
            stage: d.stage.as_deref(),
            error: &d.error,
            index: d.index,
            line: d.line,
            event,
            event_hex,
            versions,
        };
        let out = self.out.as_mut().expect("opened above");
        serde_json::to_writer(&mut *out, &rec)?;
        out.write_all(b"\n").context("cannot write a dead letter")?;
        if self.flush_each {
            out.flush().context("cannot write the dead-letter file")?;
        }
        self.count += 1;
        Ok(())
    }

    /// Flushes buffered dead letters to disk.
    pub fn flush(&mut self) -> Result<()> {
        if let Some(out) = &mut self.out {
            out.flush().context("cannot write the dead-letter file")?;
        }
        Ok(())
    }
}

/// A dead letter's event as it is shown: embedded as JSON only when any
/// JSON tool can read it back (valid UTF-8, nested no deeper than the
/// limit); else as text, and bytes that are not UTF-8 also in hex
/// (`event_hex`), so nothing of the event is lost.
pub fn event_fields(event: &[u8]) -> (EventField<'_>, Option<String>) {
    let readable = super::framing::check(event).is_ok();
    let field = match serde_json::from_slice::<&RawValue>(event) {
        Ok(raw) if readable => EventField::Json(raw),
        _ => EventField::Text(String::from_utf8_lossy(event).into_owned()),
    };
    let hex = std::str::from_utf8(event)
        .is_err()
        .then(|| hex::encode(event));
    (field, hex)
}
