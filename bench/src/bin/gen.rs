//! Writes benchmark data: `gen adder <lines> <file>` or `gen logs <events> <file>`.

use anyhow::{Context, Result, bail};
use std::io::{BufWriter, Write};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, count, path] = args.as_slice() else {
        bail!("usage: gen adder|logs <count> <file>");
    };
    let count: u64 = count.parse().context("count must be a number")?;
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    match kind.as_str() {
        "adder" => wasmpipe_bench::data::adder(&mut out, count)?,
        "logs" => wasmpipe_bench::data::logs(&mut out, count)?,
        _ => bail!("unknown data kind `{kind}`: use adder or logs"),
    }
    out.flush()?;
    Ok(())
}
