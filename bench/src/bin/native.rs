//! The native baseline: `native w1|w2|w3 <threads> <input> <output>` reads
//! the whole input, computes the workload and writes its output.

use anyhow::{Context, Result, bail};
use std::io::Write;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [work, threads, input, output] = args.as_slice() else {
        bail!("usage: native w1|w2|w3 <threads> <input> <output>");
    };
    let threads: usize = threads.parse().context("threads must be a number")?;
    let data = std::fs::read(input).with_context(|| format!("cannot read {input}"))?;
    let mut out =
        std::fs::File::create(output).with_context(|| format!("cannot create {output}"))?;
    match work.as_str() {
        "w1" => out.write_all(&wasmpipe_bench::native::adder(&data, threads))?,
        "w2" => wasmpipe_bench::native::enrich_all(&data, threads, &mut out)?,
        "w3" => out.write_all(&wasmpipe_bench::native::service_stats(&data, threads))?,
        _ => bail!("unknown workload `{work}`"),
    }
    Ok(())
}
