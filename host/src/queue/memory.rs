//! The in-memory queue of a single `wasmpipe serve`: it holds only chunk
//! keys (the chunks themselves are in the SQLite journal), so memory does
//! not grow with the backlog's bytes, and a restart refills it from the
//! journal.

use crate::exec::ChunkId;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};

/// Chunk keys waiting for a worker.
#[derive(Default)]
pub struct Queue {
    inner: Mutex<Inner>,
    cv: Condvar,
}

#[derive(Default)]
struct Inner {
    ready: VecDeque<ChunkId>,
    closed: bool,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds chunks at the back.
    pub fn push(&self, keys: impl IntoIterator<Item = ChunkId>) {
        let mut q = self.lock();
        q.ready.extend(keys);
        drop(q);
        self.cv.notify_all();
    }

    /// The next chunk; `None` once the queue is closed.
    pub fn pop(&self) -> Option<ChunkId> {
        let mut q = self.lock();
        loop {
            if q.closed {
                return None;
            }
            if let Some(k) = q.ready.pop_front() {
                return Some(k);
            }
            q = self.cv.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Stops handing out chunks; those left stay in the store for the next start.
    pub fn close(&self) {
        self.lock().closed = true;
        self.cv.notify_all();
    }

    /// Whether [`Queue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Chunks waiting.
    pub fn len(&self) -> usize {
        self.lock().ready.len()
    }

    /// Whether no chunk is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
