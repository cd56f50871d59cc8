//! Filter stage: keeps log events at or above `min_level` (default `warn`),
//! so by default the warnings and errors.

use wasmpipe_sdk::prelude::*;

/// Levels in increasing severity. A `min_level` outside this list fails the
/// stage's configuration, rather than silently dropping every event.
#[derive(Deserialize, Clone, Copy, PartialEq, PartialOrd, Debug)]
#[serde(rename_all = "lowercase")]
enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Deserialize)]
struct Params {
    #[serde(default = "warn")]
    min_level: Level,
}

fn warn() -> Level {
    Level::Warn
}

/// Only the level is decoded; the event passes on byte for byte.
#[derive(Deserialize)]
struct Log {
    #[serde(default)]
    level: String,
}

#[filter]
fn errors_only(ev: &Log, ctx: &Context<Params>) -> bool {
    let level = match ev.level.as_str() {
        "debug" => Level::Debug,
        "info" => Level::Info,
        "warn" => Level::Warn,
        "error" => Level::Error,
        _ => return false,
    };
    level >= ctx.params().min_level
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keeps(level: &str, min_level: Level) -> bool {
        errors_only(
            &Log {
                level: level.into(),
            },
            &Context::new("errors_only", Params { min_level }),
        )
    }

    #[test]
    fn keeps_warnings_and_errors_by_default() {
        assert!(keeps("error", warn()) && keeps("warn", warn()));
        assert!(
            !keeps("info", warn())
                && !keeps("debug", warn())
                && !keeps("", warn())
                && !keeps("fatal", warn())
        );
        assert!(keeps("info", Level::Info) && !keeps("warn", Level::Error));
    }
}
