//! The dead-letter file: one JSON line per failed event, saying which stage
//! failed it, why, where it was in the source, and the original event.

use anyhow::{Context as _, Result};
use serde::Serialize;
use serde_json::value::RawValue;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

/// One failed event.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// The stage that failed it; `None` when the source refused it.
    pub stage: Option<&'a str>,
    /// Why.
    pub error: &'a str,
    /// 0-based index of the event in the source.
    pub index: u64,
    /// 1-based source line the event starts on.
    pub line: u64,
    /// The event as read from the source.
    pub event: &'a [u8],
    /// The version of each stage of the chunk the event was in
    /// (`{"stage":"<12 hex>",...}`), when known.
    pub versions: Option<&'a RawValue>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    versions: Option<&'a RawValue>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EventField<'a> {
    Json(&'a RawValue),
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
    /// Dead letters to the file at `path`. A file left by an earlier run is
    /// removed now, so the file always describes the latest run.
    pub fn file(path: PathBuf) -> Result<DeadLetterSink> {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot remove the old dead-letter file {path:?}"));
            }
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

    /// Writes one dead letter.
    pub fn write(&mut self, d: &DeadLetter<'_>) -> Result<()> {
        if self.out.is_none() {
            let path = self
                .path
                .as_ref()
                .expect("a sink without a writer has a path");
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create directory {dir:?} for dead letters"))?;
            }
            let f = File::create(path)
                .with_context(|| format!("cannot create the dead-letter file {path:?}"))?;
            self.out = Some(Box::new(BufWriter::new(f)));
        }
        let event = match serde_json::from_slice::<&RawValue>(d.event) {
            Ok(raw) => EventField::Json(raw),
            Err(_) => EventField::Text(String::from_utf8_lossy(d.event).into_owned()),
        };
        let rec = Record {
            pipeline: d.pipeline,
            stage: d.stage,
            error: d.error,
            index: d.index,
            line: d.line,
            event,
            versions: d.versions,
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
