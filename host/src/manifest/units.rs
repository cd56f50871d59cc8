//! Human-friendly sizes (`"64MiB"`) and durations (`"250ms"`) for the
//! manifest. They validate while the TOML is parsed, so a bad value is
//! reported at its own line and column.

use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// A number of bytes, written as an integer or a string such as `"64MiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "SizeRepr")]
pub struct ByteSize(pub u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeRepr {
    Int(u64),
    Text(String),
}

impl TryFrom<SizeRepr> for ByteSize {
    type Error = String;
    fn try_from(r: SizeRepr) -> Result<Self, String> {
        match r {
            SizeRepr::Int(n) => Ok(ByteSize(n)),
            SizeRepr::Text(s) => s.parse(),
        }
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let hint =
            "hint: write a size such as \"64MiB\", \"512KiB\", \"1GiB\" or a number of bytes";
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid size `{s}`; {hint}"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" | "KB" | "kB" => 1 << 10,
            "MiB" | "M" | "MB" => 1 << 20,
            "GiB" | "G" | "GB" => 1 << 30,
            _ => return Err(format!("invalid size unit in `{s}`; {hint}")),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("size `{s}` is too large; hint: sizes go up to 16EiB"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
            write!(f, "{}GiB", n >> 30)
        } else if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", n >> 20)
        } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
            write!(f, "{}KiB", n >> 10)
        } else {
            write!(f, "{n}B")
        }
    }
}

/// A duration written as a string such as `"5s"`, `"250ms"` or `"2m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct DurationSpec(pub Duration);

impl TryFrom<String> for DurationSpec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for DurationSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let hint = "hint: write a duration such as \"250ms\", \"5s\", \"2m\", \"6h\" or \"7d\"";
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid duration `{s}`; {hint}"))?;
        let d = match unit.trim() {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" | "min" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86400)),
            "" => return Err(format!("duration `{s}` has no unit; {hint}")),
            _ => return Err(format!("invalid duration unit in `{s}`; {hint}")),
        };
        if d.is_zero() {
            return Err(format!(
                "duration `{s}` must be greater than zero; hint: a limit of zero would stop every call"
            ));
        }
        Ok(DurationSpec(d))
    }
}

impl fmt::Display for DurationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!("64MiB".parse::<ByteSize>().unwrap(), ByteSize(64 << 20));
        assert_eq!("512 KiB".parse::<ByteSize>().unwrap(), ByteSize(512 << 10));
        assert!(
            "64 parsecs"
                .parse::<ByteSize>()
                .unwrap_err()
                .contains("unit")
        );
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
    }

    #[test]
    fn parses_durations() {
        assert_eq!(
            "250ms".parse::<DurationSpec>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(
            "2m".parse::<DurationSpec>().unwrap().0,
            Duration::from_secs(120)
        );
        assert!("5".parse::<DurationSpec>().unwrap_err().contains("no unit"));
        assert!("0s".parse::<DurationSpec>().is_err());
    }
}

/// How often and how patiently to retry events whose stage timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries {
    /// Retries per event (0: a timeout is a dead letter at once).
    pub times: u32,
    /// First pause; doubles with each further one.
    pub backoff: Duration,
}

impl Retries {
    /// Default retries: two, after 100 ms and 200 ms.
    pub const DEFAULT: Retries = Retries {
        times: 2,
        backoff: Duration::from_millis(100),
    };

    /// The pause before retry number `attempt` (1-based): the backoff,
    /// doubled for each retry before it, capped at a minute.
    pub fn pause(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.backoff
            .saturating_mul(factor)
            .min(Duration::from_secs(60))
    }
}
