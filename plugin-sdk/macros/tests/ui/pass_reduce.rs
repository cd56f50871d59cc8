//! Every accepted shape of reduce.
use wasmpipe_sdk::prelude::*;

#[derive(Deserialize)]
pub struct Num {
    n: i64,
}

#[derive(Serialize, Deserialize, Default)]
pub struct Stats {
    count: u64,
    total: i64,
}

fn merge_stats(a: Stats, b: Stats) -> Stats {
    Stats { count: a.count + b.count, total: a.total + b.total }
}

fn add(a: i64, b: i64) -> i64 {
    a + b
}

mod by_value {
    use super::*;
    #[reduce(combine = add)]
    pub fn sum(acc: i64, ev: Num) -> i64 {
        acc + ev.n
    }
}

mod with_init {
    use super::*;
    fn start() -> Stats {
        Stats { count: 0, total: 100 }
    }
    #[reduce(init = start, combine = merge_stats)]
    fn total(acc: Stats, ev: Num) -> Stats {
        Stats { count: acc.count + 1, total: acc.total + ev.n }
    }
}

mod in_place {
    use super::*;
    #[reduce(combine = merge_stats)]
    fn count(acc: &mut Stats, ev: Num) {
        acc.count += 1;
        acc.total += ev.n;
    }
}

mod in_place_fallible_with_ctx {
    use super::*;
    #[reduce(combine = merge_stats)]
    fn count(acc: &mut Stats, ev: Num, ctx: &Context<i64>) -> Result<(), String> {
        if ev.n > *ctx.params() {
            return Err(format!("{} is too large", ev.n));
        }
        acc.count += 1;
        Ok(())
    }
}

mod keyed {
    use super::*;
    #[derive(Deserialize)]
    pub struct Word {
        word: String,
    }
    // A key may borrow from the event.
    fn by_word(w: &Word) -> &str {
        &w.word
    }
    fn plus(a: u64, b: u64) -> u64 {
        a + b
    }
    #[reduce(combine = plus, key = by_word)]
    fn count(acc: u64, _w: Word) -> u64 {
        acc + 1
    }
}

mod keyed_by_number {
    use super::*;
    fn parity(n: &Num) -> i64 {
        n.n % 2
    }
    #[reduce(key = parity, combine = super::add)]
    fn sum(acc: i64, ev: Num) -> i64 {
        acc + ev.n
    }
}

fn main() {
    assert_eq!(by_value::sum(1, Num { n: 2 }), 3);
}
