//! Open windows in memory: where the window book keeps them. For `run`,
//! all of them (bounded by `max_open_windows`). For `serve` and `worker`, only
//! those one commit can touch ([`super::WindowBook::needs`]), loaded from
//! the database in the commit's transaction ([`MemoryWindows::staged`]),
//! then written back as [`MemoryWindows::changes`]: one implementation of
//! the book's store for every mode, and SQL only to load and save.

use super::field::format_rfc3339;
use super::spec::Millis;
use std::collections::{BTreeMap, BTreeSet};

/// The event-time clock of a windowed pipeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    /// The largest event time committed (advanced with the wall clock
    /// while the stream is idle).
    pub max_time: Option<Millis>,
    /// Wall time of the last commit with events, or of the last idle
    /// advance.
    pub last_seen: Option<Millis>,
}

/// A window's final result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// Start (inclusive), ms.
    pub start: Millis,
    /// End (exclusive), ms.
    pub end: Millis,
    /// Group key (`None`: an unkeyed reduce).
    pub key: Option<String>,
    /// The reduce's result for it (JSON).
    pub value: Vec<u8>,
}

impl Closed {
    /// Its output line (without the newline):
    /// `{"window":{"start":..,"end":..},"key":..,"value":..}`.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = format!(
            "{{\"window\":{{\"start\":\"{}\",\"end\":\"{}\"}}",
            format_rfc3339(self.start),
            format_rfc3339(self.end)
        )
        .into_bytes();
        if let Some(k) = &self.key {
            out.extend_from_slice(b",\"key\":");
            serde_json::to_writer(&mut out, k).expect("a string prints");
        }
        out.extend_from_slice(b",\"value\":");
        // Written as a reduce's result always is: the guest's own JSON.
        out.extend_from_slice(if self.value.is_empty() {
            b"null"
        } else {
            &self.value
        });
        out.push(b'}');
        out
    }
}

/// A window's identity as stored: (end, start, key).
pub type WindowKey = (Millis, Millis, String);

/// The window store of `run`, and the staging area of a database commit.
#[derive(Debug, Default)]
pub struct MemoryWindows {
    clock: Clock,
    /// By (end, start, key): due windows are a prefix.
    open: BTreeMap<WindowKey, Vec<u8>>,
    /// Sessions by (key, start) -> end, to find the ones an event touches.
    by_key: BTreeMap<(String, Millis), Millis>,
    /// Open windows in the database that were not loaded.
    elsewhere: u64,
    /// Whether this stages a database commit (and so records changes).
    staging: bool,
    /// Windows put or removed since loading.
    touched: BTreeSet<WindowKey>,
    /// Windows loaded from the database.
    loaded: BTreeSet<WindowKey>,
}

/// What a staged commit changed, to write back in the same transaction.
#[derive(Debug, Default)]
pub struct Changes {
    /// The clock.
    pub clock: Clock,
    /// Windows opened or updated: (start, end, key, partial).
    pub upserts: Vec<(Millis, Millis, String, Vec<u8>)>,
    /// Windows merged away or closed: (start, end, key).
    pub deletes: Vec<(Millis, Millis, String)>,
    /// Open windows added (less removed), for the stored count.
    pub opened: i64,
}

impl MemoryWindows {
    /// A staging area holding `rows` (start, end, key, partial) of the
    /// `total` open windows a database has, and its clock.
    pub fn staged(
        clock: Clock,
        rows: Vec<(Millis, Millis, String, Vec<u8>)>,
        total: u64,
    ) -> MemoryWindows {
        let mut m = MemoryWindows {
            clock,
            staging: true,
            ..MemoryWindows::default()
        };
        for (start, end, key, partial) in rows {
            m.by_key.insert((key.clone(), start), end);
            m.loaded.insert((end, start, key.clone()));
            m.open.insert((end, start, key), partial);
        }
        m.elsewhere = total.saturating_sub(m.open.len() as u64);
        m
    }

    fn touch(&mut self, k: WindowKey) {
        if self.staging {
            self.touched.insert(k);
        }
    }

    /// What changed since [`MemoryWindows::staged`].
    pub fn changes(self) -> Changes {
        let mut c = Changes {
            clock: self.clock,
            ..Changes::default()
        };
        for k in self.touched {
            let was = self.loaded.contains(&k);
            match self.open.get(&k) {
                Some(v) => {
                    c.opened += i64::from(!was);
                    c.upserts.push((k.1, k.0, k.2.clone(), v.clone()));
                }
                None if was => {
                    c.opened -= 1;
                    c.deletes.push((k.1, k.0, k.2));
                }
                // Opened and closed (or merged away) within the commit.
                None => {}
            }
        }
        c
    }
}

/// The book's operations; keys are `""` for an unkeyed reduce.
impl MemoryWindows {
    /// The clock.
    pub(super) fn clock(&self) -> Clock {
        self.clock
    }

    /// Sets the clock.
    pub(super) fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// The partial of an open window.
    pub(super) fn get(&self, start: Millis, end: Millis, key: &str) -> Option<Vec<u8>> {
        self.open.get(&(end, start, key.to_string())).cloned()
    }

    /// Opens or replaces a window's partial.
    pub(super) fn put(&mut self, start: Millis, end: Millis, key: &str, partial: &[u8]) {
        self.open
            .insert((end, start, key.to_string()), partial.to_vec());
        self.by_key.insert((key.to_string(), start), end);
        self.touch((end, start, key.to_string()));
    }

    /// Drops an open window.
    pub(super) fn remove(&mut self, start: Millis, end: Millis, key: &str) {
        self.open.remove(&(end, start, key.to_string()));
        self.by_key.remove(&(key.to_string(), start));
        self.touch((end, start, key.to_string()));
    }

    /// Open sessions of `key` overlapping `[start, end)`.
    pub(super) fn overlapping(
        &self,
        key: &str,
        start: Millis,
        end: Millis,
    ) -> Vec<(Millis, Millis, Vec<u8>)> {
        let from = (key.to_string(), Millis::MIN);
        let to = (key.to_string(), end);
        let hits: Vec<(Millis, Millis)> = self
            .by_key
            .range(from..to)
            .filter(|(_, e)| **e > start)
            .map(|((_, s), e)| (*s, *e))
            .collect();
        hits.into_iter()
            .filter_map(|(s, e)| Some((s, e, self.open.get(&(e, s, key.to_string()))?.clone())))
            .collect()
    }

    /// Open (window, key) entries, in the database too when staged.
    pub(super) fn open_count(&self) -> u64 {
        self.elsewhere + self.open.len() as u64
    }

    /// Removes and returns the open windows ending at or before
    /// `watermark`, in the order they close (end, start, key), each with
    /// its key. Whatever the chunking, a later commit only closes windows
    /// that end later, so the whole output is in this order.
    pub(super) fn take_due(&mut self, watermark: Millis) -> Vec<Closed> {
        let rest = match watermark.checked_add(1) {
            Some(bound) => self.open.split_off(&(bound, Millis::MIN, String::new())),
            None => BTreeMap::new(),
        };
        let due = std::mem::replace(&mut self.open, rest);
        let closed: Vec<Closed> = due
            .into_iter()
            .map(|((end, start, key), value)| {
                self.by_key.remove(&(key.clone(), start));
                self.touch((end, start, key.clone()));
                Closed {
                    start,
                    end,
                    key: Some(key),
                    value,
                }
            })
            .collect();
        closed
    }
}
