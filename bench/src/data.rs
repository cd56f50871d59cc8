//! Deterministic benchmark data: a fixed-seed generator, so every run and
//! every machine sees the same bytes.

use std::io::{self, Write};

/// SplitMix64: tiny, fast, and good enough to make varied test data.
pub struct Rng(u64);

impl Rng {
    /// A generator with a fixed seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// W1: `lines` lines of `{"n":<0..1_000_000>}`.
pub fn adder(out: &mut impl Write, lines: u64) -> io::Result<()> {
    let mut rng = Rng::new(1);
    for _ in 0..lines {
        writeln!(out, "{{\"n\":{}}}", rng.below(1_000_000))?;
    }
    Ok(())
}

const SERVICES: [&str; 20] = [
    "api-gateway",
    "auth",
    "billing",
    "cart",
    "catalog",
    "checkout",
    "email",
    "search",
    "inventory",
    "orders",
    "payments",
    "pricing",
    "profile",
    "recommendations",
    "reviews",
    "sessions",
    "shipping",
    "tax",
    "uploads",
    "users",
];
const LEVELS: [&str; 4] = ["debug", "info", "warn", "error"];
const REGIONS: [&str; 4] = ["eu-west-1", "us-east-1", "us-west-2", "ap-south-1"];
const WORDS: [&str; 16] = [
    "request",
    "served",
    "cache",
    "miss",
    "timeout",
    "upstream",
    "retrying",
    "connection",
    "reset",
    "by",
    "peer",
    "slow",
    "query",
    "token",
    "refreshed",
    "declined",
];

/// W2/W3: `count` log events of about 250-350 bytes each.
pub fn logs(out: &mut impl Write, count: u64) -> io::Result<()> {
    let mut rng = Rng::new(2);
    for i in 0..count {
        let level = LEVELS[[0, 1, 1, 1, 1, 1, 2, 3][rng.below(8) as usize]];
        let service = SERVICES[rng.below(20) as usize];
        let words = 12 + rng.below(14);
        let mut msg = String::new();
        for w in 0..words {
            if w > 0 {
                msg.push(' ');
            }
            msg.push_str(WORDS[rng.below(16) as usize]);
        }
        let secs = i / 1000;
        writeln!(
            out,
            "{{\"ts\":\"2026-11-27T{:02}:{:02}:{:02}.{:03}Z\",\"level\":\"{level}\",\"service\":\"{service}\",\"user_id\":{},\"msg\":\"{msg}\",\"duration_ms\":{},\"tags\":{{\"region\":\"{}\",\"version\":\"v{}.{}.{}\"}}}}",
            (secs / 3600) % 24,
            (secs / 60) % 60,
            secs % 60,
            i % 1000,
            rng.below(10_000_000),
            rng.below(1000),
            REGIONS[rng.below(4) as usize],
            1 + rng.below(3),
            rng.below(20),
            rng.below(10),
        )?;
    }
    Ok(())
}
