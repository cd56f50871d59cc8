//! Which of a chunk's events are folded together: one fold (one guest
//! call) per window the chunk touches, or for sessions one per "round":
//! the first run of close events of every key, then the second, and so on.
//! Pure functions of the events' times and keys, so that the tests can
//! check them against the definitions alone.

use super::spec::{Millis, WindowSpec};
use std::collections::{BTreeMap, HashMap};

/// One fold: the window it is for (`None`: sessions, one per key of its
/// members) and the positions of its events, in fold order.
pub type Group = (Option<(Millis, Millis)>, Vec<usize>);

/// Groups events `0..times.len()` into folds. `keys` holds each event's
/// key for sessions (and is empty otherwise).
pub fn plan(spec: &WindowSpec, times: &[Millis], keys: &[String]) -> Vec<Group> {
    match spec.sessions() {
        None => {
            let mut by_window: BTreeMap<(Millis, Millis), Vec<usize>> = BTreeMap::new();
            for (i, &t) in times.iter().enumerate() {
                for w in spec.windows_of(t) {
                    by_window.entry(w).or_default().push(i);
                }
            }
            by_window.into_iter().map(|(w, m)| (Some(w), m)).collect()
        }
        Some(gap) => {
            let mut by_key: HashMap<&str, Vec<usize>> = HashMap::new();
            for (i, k) in keys.iter().enumerate() {
                by_key.entry(k.as_str()).or_default().push(i);
            }
            let mut rounds: Vec<Vec<usize>> = Vec::new();
            let mut keyed: Vec<_> = by_key.into_iter().collect();
            keyed.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (_, mut events) in keyed {
                events.sort_by_key(|&i| (times[i], i));
                let mut round = 0;
                for (n, &i) in events.iter().enumerate() {
                    if n > 0 && times[i] - times[events[n - 1]] >= gap {
                        round += 1;
                    }
                    if rounds.len() <= round {
                        rounds.push(Vec::new());
                    }
                    rounds[round].push(i);
                }
            }
            rounds.into_iter().map(|m| (None, m)).collect()
        }
    }
}

/// The session of each key among `members` (which hold at most one run
/// of close events per key): key, first time, end (last time + gap).
pub fn sessions_of(
    gap: Millis,
    members: &[usize],
    times: &[Millis],
    keys: &[String],
) -> BTreeMap<String, (Millis, Millis)> {
    let mut out: BTreeMap<String, (Millis, Millis)> = BTreeMap::new();
    for &i in members {
        let t = times[i];
        out.entry(keys[i].clone())
            .and_modify(|(s, e)| {
                *s = (*s).min(t);
                *e = (*e).max(t + gap);
            })
            .or_insert((t, t + gap));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::window::spec::{Kind, TimeSource};

    fn spec(kind: Kind) -> WindowSpec {
        WindowSpec {
            kind,
            time: TimeSource::Arrival,
            lateness: 0,
            idle: 1,
            max_open: 10,
        }
    }

    #[test]
    fn an_event_is_in_every_window_covering_it() {
        let s = spec(Kind::Hopping { size: 10, hop: 5 });
        let g = plan(&s, &[0, 7, 12], &[]);
        assert_eq!(
            g,
            vec![
                (Some((-5, 5)), vec![0]),
                (Some((0, 10)), vec![0, 1]),
                (Some((5, 15)), vec![1, 2]),
                (Some((10, 20)), vec![2]),
            ]
        );
    }

    #[test]
    fn sessions_split_at_the_gap_and_go_in_rounds() {
        let s = spec(Kind::Session { gap: 10 });
        let keys: Vec<String> = ["a", "b", "a", "a", "b"].map(String::from).into();
        // a: 0, 9 | 19 (19 - 9 = 10: a new session); b: 100, 50 (apart).
        let times = [0, 100, 19, 9, 50];
        let g = plan(&s, &times, &keys);
        assert_eq!(g, vec![(None, vec![0, 3, 4]), (None, vec![2, 1])]);
        let first = sessions_of(10, &g[0].1, &times, &keys);
        assert_eq!(first["a"], (0, 19));
        assert_eq!(first["b"], (50, 60));
    }
}
