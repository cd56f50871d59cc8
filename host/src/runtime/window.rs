//! What a windowed reduce runs with: the window kind and lengths, where
//! each event's time comes from, lateness, idle time and the bound on open
//! windows, in milliseconds. Built from a manifest's `window` table.

use crate::manifest::{
    DEFAULT_IDLE, DEFAULT_MAX_OPEN_WINDOWS, TimeFormat, WindowKind, WindowSection,
};

/// Times are epoch milliseconds throughout.
pub type Millis = i64;

/// The windows of a reduce stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSpec {
    /// Which windows an event falls in.
    pub kind: Kind,
    /// Where an event's time comes from.
    pub time: TimeSource,
    /// How far behind the latest event time the watermark stays.
    pub lateness: Millis,
    /// Quiet time after which the watermark follows the wall clock.
    pub idle: Millis,
    /// Most (window, key) entries open at once.
    pub max_open: u64,
}

/// Window kinds, with their lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `[k*size, (k+1)*size)`.
    Tumbling {
        /// Window length.
        size: Millis,
    },
    /// `[k*hop, k*hop + size)`, every one covering the event.
    Hopping {
        /// Window length.
        size: Millis,
        /// Distance between window starts.
        hop: Millis,
    },
    /// Per key: events less than `gap` apart; it ends `gap` after its last.
    Session {
        /// Quiet time that ends a session.
        gap: Millis,
    },
}

/// Where an event's time comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeSource {
    /// The time the chunk was read (`run`) or the batch received (`serve`).
    Arrival,
    /// A field of the event.
    Field {
        /// As written (`/ts`), for messages.
        pointer: String,
        /// Its unescaped segments.
        path: Vec<String>,
        /// How it is written.
        format: TimeFormat,
    },
}

impl WindowSpec {
    /// The spec of a manifest `window` table.
    pub fn from_section(w: &WindowSection) -> WindowSpec {
        let ms = |d: &std::time::Duration| d.as_millis().min(i64::MAX as u128) as Millis;
        let size = w.size.as_ref().map_or(0, |s| ms(&s.get_ref().0));
        let kind = match *w.kind.get_ref() {
            WindowKind::Tumbling => Kind::Tumbling { size },
            WindowKind::Hopping => Kind::Hopping {
                size,
                hop: w.hop.as_ref().map_or(size, |h| ms(&h.get_ref().0)),
            },
            WindowKind::Session => Kind::Session {
                gap: w.gap.as_ref().map_or(1, |g| ms(&g.get_ref().0)),
            },
        };
        let time = match w.time.get_ref().as_str() {
            "arrival" => TimeSource::Arrival,
            pointer => TimeSource::Field {
                pointer: pointer.to_string(),
                path: pointer_path(pointer),
                format: w.format.unwrap_or_default(),
            },
        };
        WindowSpec {
            kind,
            time,
            lateness: w.lateness.map_or(0, |d| ms(&d.0)),
            idle: ms(&w.idle.map_or(DEFAULT_IDLE, |d| d.0)),
            max_open: w
                .max_open_windows
                .map_or(DEFAULT_MAX_OPEN_WINDOWS, |n| n.get()),
        }
    }

    /// The tumbling or hopping windows covering time `t`, earliest first
    /// (none for sessions, which depend on the other events).
    pub fn windows_of(&self, t: Millis) -> impl Iterator<Item = (Millis, Millis)> {
        let (size, hop) = match self.kind {
            Kind::Tumbling { size } => (size, size),
            Kind::Hopping { size, hop } => (size, hop),
            Kind::Session { .. } => (0, 1),
        };
        // The latest start at or before `t`, then back while still covering.
        let last = t.div_euclid(hop.max(1)) * hop;
        let n = if size == 0 { 0 } else { (size - 1) / hop + 1 };
        (0..n)
            .rev()
            .map(move |k| last - k * hop)
            .filter(move |&start| start + size > t)
            .map(move |start| (start, start + size))
    }

    /// Whether windows are sessions (per key, of varying length).
    pub fn sessions(&self) -> Option<Millis> {
        match self.kind {
            Kind::Session { gap } => Some(gap),
            _ => None,
        }
    }
}

/// The unescaped segments of JSON pointer `p` (RFC 6901).
pub fn pointer_path(p: &str) -> Vec<String> {
    p.split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: Kind) -> WindowSpec {
        WindowSpec {
            kind,
            time: TimeSource::Arrival,
            lateness: 0,
            idle: 1000,
            max_open: 10,
        }
    }

    #[test]
    fn tumbling_and_hopping_windows_cover_exactly_their_times() {
        let t = spec(Kind::Tumbling { size: 60 });
        assert_eq!(t.windows_of(0).collect::<Vec<_>>(), [(0, 60)]);
        assert_eq!(t.windows_of(59).collect::<Vec<_>>(), [(0, 60)]);
        assert_eq!(t.windows_of(60).collect::<Vec<_>>(), [(60, 120)]);
        assert_eq!(t.windows_of(-1).collect::<Vec<_>>(), [(-60, 0)]);
        let h = spec(Kind::Hopping { size: 60, hop: 20 });
        assert_eq!(
            h.windows_of(45).collect::<Vec<_>>(),
            [(0, 60), (20, 80), (40, 100)]
        );
        assert_eq!(
            h.windows_of(40).collect::<Vec<_>>(),
            [(-0, 60), (20, 80), (40, 100)]
        );
        assert_eq!(
            h.windows_of(39).collect::<Vec<_>>(),
            [(-20, 40), (0, 60), (20, 80)]
        );
        // A hop that does not divide the size: every window is checked.
        let odd = spec(Kind::Hopping { size: 50, hop: 20 });
        for t in -100..100 {
            let got: Vec<_> = odd.windows_of(t).collect();
            let want: Vec<_> = (-10..10)
                .map(|k| (k * 20, k * 20 + 50))
                .filter(|&(s, e)| s <= t && t < e)
                .collect();
            assert_eq!(got, want, "t = {t}");
        }
    }

    #[test]
    fn pointers_unescape() {
        assert_eq!(pointer_path("/a~1b/c~0d"), ["a/b", "c~d"]);
    }
}
