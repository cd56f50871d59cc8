//! Keyed reduce stage: counts events per key. The key is the manifest's
//! `key` pointer (e.g. `/word` after the `words` stage), so the accumulator is
//! `{"<key>": count, ...}`.

use serde::de::IgnoredAny;
use wasmpipe_sdk::prelude::*;

/// Only the key matters, and the runtime has already read it: the rest of
/// the event is not decoded.
#[reduce(combine = add)]
fn word_count(count: u64, _event: IgnoredAny) -> u64 {
    count + 1
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_combines() {
        let count = (0..3).fold(0, |c, _| word_count(c, IgnoredAny));
        assert_eq!(add(count, word_count(0, IgnoredAny)), 4);
    }
}
