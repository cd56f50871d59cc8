//! Test fixture for the host's fault isolation: a map over `{"n": i64}` that
//! misbehaves on request.
//!
//! - `n % 1000 == 13`: fails the event (`Err("unlucky 13")`);
//! - `-1`: panics ("poison event"), which traps the instance;
//! - `-2`: never returns;
//! - `-3`: allocates until memory runs out;
//! - `-4`: tries to read `/etc/passwd` and `$HOME`; fails the event saying
//!   what was denied, or returns what it read if both were allowed;
//! - `-5`: is slow (spins for some milliseconds), then passes through;
//! - `-6`: prints `faulty: hanging on n=-6`, then never returns (the
//!   scale-out tests kill whichever worker prints it, standing in for an
//!   event that crashes its worker);
//! - `7`: prints `faulty saw n=7` to stdout;
//! - otherwise passes `{"n": n}` through.

use std::hint::black_box;

use serde_json::json;
use wasmpipe_sdk::prelude::*;

#[derive(Deserialize)]
struct Num {
    n: i64,
}

#[map]
fn faulty(ev: Num) -> Result<Value, String> {
    match ev.n {
        -1 => panic!("poison event"),
        -2 => loop {
            // `black_box` keeps the optimiser from reasoning about the loop.
            black_box(());
        },
        -3 => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                // Non-zero bytes, so every page is really touched.
                hoard.push(black_box(vec![0xA5; 1 << 20]));
            }
        }
        -4 => probe_wasi(),
        -6 => {
            println!("faulty: hanging on n=-6");
            loop {
                black_box(());
            }
        }
        -5 => {
            // About 10 ms of work, with no clock to read (the sandbox freezes it).
            let mut x = 0u64;
            for i in 0..10_000_000u64 {
                x = black_box(x.wrapping_add(i));
            }
            black_box(x);
            Ok(json!({ "n": -5 }))
        }
        n if n % 1000 == 13 => Err("unlucky 13".to_owned()),
        n => {
            if n == 7 {
                println!("faulty saw n={n}");
            }
            Ok(json!({ "n": n }))
        }
    }
}

/// What the sandbox lets a stage see of the host's files and environment.
fn probe_wasi() -> Result<Value, String> {
    match (
        std::fs::read_to_string("/etc/passwd"),
        std::env::var("HOME"),
    ) {
        (Ok(passwd), Ok(home)) => Ok(json!({ "n": -4, "passwd": passwd, "home": home })),
        (passwd, home) => {
            let passwd = passwd.map_or_else(
                |e| format!("denied ({e})"),
                |p| format!("allowed ({} bytes)", p.len()),
            );
            let home = home.map_or_else(|e| format!("denied ({e})"), |h| format!("allowed ({h})"));
            Err(format!("read /etc/passwd: {passwd}; env HOME: {home}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_through_and_fails_unlucky_events() {
        assert_eq!(faulty(Num { n: 5 }), Ok(json!({"n": 5})));
        assert_eq!(faulty(Num { n: 7 }), Ok(json!({"n": 7})));
        assert_eq!(faulty(Num { n: 13 }), Err("unlucky 13".to_owned()));
        assert_eq!(faulty(Num { n: 2013 }), Err("unlucky 13".to_owned()));
    }

    #[test]
    #[should_panic(expected = "poison event")]
    fn panics_on_poison() {
        let _ = faulty(Num { n: -1 });
    }
}
