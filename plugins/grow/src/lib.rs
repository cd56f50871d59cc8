//! Test fixture for a reduce that outgrows its memory: each event
//! `{"mb": k}` adds `k` MiB to the accumulator (a string), so a few events
//! fit the memory limit and the next do not. The host keeps the last
//! accumulator that fit and makes each event it could not fold a dead
//! letter.

use wasmpipe_sdk::prelude::*;

#[derive(Deserialize)]
struct Grow {
    mb: usize,
}

#[reduce(combine = join)]
fn grow(acc: String, ev: Grow) -> String {
    let mut acc = acc;
    acc.extend(std::iter::repeat_n('x', ev.mb << 20));
    acc
}

fn join(a: String, b: String) -> String {
    a + &b
}
