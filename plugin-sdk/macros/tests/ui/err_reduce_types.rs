use wasmpipe_sdk::prelude::*;

#[derive(Default)]
struct Stats {
    count: u64,
}

fn merge(a: Stats, b: Stats) -> Stats {
    Stats { count: a.count + b.count }
}

#[reduce(combine = merge)]
fn count(acc: &mut Stats, _ev: Value) {
    acc.count += 1;
}

mod key_takes_value {
    use wasmpipe_sdk::prelude::*;

    #[derive(Deserialize)]
    struct Word {
        word: String,
    }

    fn by_word(w: Word) -> String {
        w.word
    }

    fn add(a: u64, b: u64) -> u64 {
        a + b
    }

    #[reduce(combine = add, key = by_word)]
    fn count(acc: u64, _w: Word) -> u64 {
        acc + 1
    }
}

fn main() {}
