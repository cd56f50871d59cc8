//! Open windows in memory, for `run`: bounded by `max_open_windows`, and
//! emitted windows wait in [`MemoryWindows::out`] for the writer.

use super::book::{Clock, Closed, WindowStore};
use super::spec::Millis;
use anyhow::Result;
use std::collections::BTreeMap;

/// `run`'s window store.
#[derive(Debug, Default)]
pub struct MemoryWindows {
    clock: Clock,
    /// By (end, start, key): due windows are a prefix.
    open: BTreeMap<(Millis, Millis, String), Vec<u8>>,
    /// Sessions by (key, start) -> end, to find the ones an event touches.
    by_key: BTreeMap<(String, Millis), Millis>,
    /// Emitted and not yet written.
    pub out: Vec<Closed>,
}

impl WindowStore for MemoryWindows {
    fn clock(&mut self) -> Result<Clock> {
        Ok(self.clock)
    }

    fn set_clock(&mut self, clock: Clock) -> Result<()> {
        self.clock = clock;
        Ok(())
    }

    fn get(&mut self, start: Millis, end: Millis, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.open.get(&(end, start, key.to_string())).cloned())
    }

    fn put(&mut self, start: Millis, end: Millis, key: &str, partial: &[u8]) -> Result<()> {
        self.open
            .insert((end, start, key.to_string()), partial.to_vec());
        self.by_key.insert((key.to_string(), start), end);
        Ok(())
    }

    fn remove(&mut self, start: Millis, end: Millis, key: &str) -> Result<()> {
        self.open.remove(&(end, start, key.to_string()));
        self.by_key.remove(&(key.to_string(), start));
        Ok(())
    }

    fn overlapping(
        &mut self,
        key: &str,
        start: Millis,
        end: Millis,
    ) -> Result<Vec<(Millis, Millis, Vec<u8>)>> {
        let from = (key.to_string(), Millis::MIN);
        let to = (key.to_string(), end);
        let hits: Vec<(Millis, Millis)> = self
            .by_key
            .range(from..to)
            .filter(|(_, e)| **e > start)
            .map(|((_, s), e)| (*s, *e))
            .collect();
        Ok(hits
            .into_iter()
            .filter_map(|(s, e)| Some((s, e, self.open.get(&(e, s, key.to_string()))?.clone())))
            .collect())
    }

    fn open_count(&mut self) -> Result<u64> {
        Ok(self.open.len() as u64)
    }

    fn take_due(&mut self, watermark: Millis) -> Result<Vec<Closed>> {
        let rest = match watermark.checked_add(1) {
            Some(bound) => self.open.split_off(&(bound, Millis::MIN, String::new())),
            None => BTreeMap::new(),
        };
        let due = std::mem::replace(&mut self.open, rest);
        let closed: Vec<Closed> = due
            .into_iter()
            .map(|((end, start, key), value)| {
                self.by_key.remove(&(key.clone(), start));
                Closed {
                    start,
                    end,
                    key: Some(key),
                    value,
                }
            })
            .collect();
        Ok(closed)
    }

    fn emit(&mut self, closed: &[Closed]) -> Result<()> {
        self.out.extend_from_slice(closed);
        Ok(())
    }
}
