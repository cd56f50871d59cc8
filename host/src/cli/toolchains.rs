//! `wasmpipe toolchains`: set up, once per machine, the tools that build
//! JavaScript, TypeScript and Python stages. The script that does it is
//! `plugin-sdk/toolchains`, built into the binary so that a user with an
//! installed `wasmpipe` and no checkout of its sources can run it.

use anyhow::{Context as _, Result, bail};

/// The setup script, as `bash plugin-sdk/toolchains` runs it in a checkout.
const SCRIPT: &str = include_str!("../../../plugin-sdk/toolchains");

/// Set up the tools that build JavaScript, TypeScript and Python stages,
/// once per machine: componentize-js, rolldown, TypeScript and
/// `@types/node` from npm (Node.js 20+ and npm must be installed), and
/// componentize-py in a Python virtual environment (Python 3.10+ with
/// venv). They go to `$WASMPIPE_TOOLCHAINS`, else
/// `$XDG_DATA_HOME/wasmpipe/toolchains`, else
/// `~/.local/share/wasmpipe/toolchains`, where `wasmpipe build` looks.
/// Rust stages need none of this (only `rustup target add wasm32-wasip1`).
#[derive(Debug, clap::Args)]
pub struct ToolchainsArgs {
    #[command(subcommand)]
    command: ToolchainsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ToolchainsCommand {
    /// Install the toolchains of these languages (default: all).
    Install {
        /// `js` (JavaScript and TypeScript) or `python`.
        #[arg(value_parser = ["js", "ts", "python"])]
        langs: Vec<String>,
    },
    /// Print the folder the toolchains are installed in.
    Dir,
}

pub fn run(args: ToolchainsArgs) -> Result<u8> {
    let script_args: Vec<String> = match args.command {
        ToolchainsCommand::Install { langs } => std::iter::once("install".to_string())
            .chain(langs)
            .collect(),
        ToolchainsCommand::Dir => vec!["dir".into()],
    };
    // `bash -c SCRIPT NAME ARGS...`: the script runs as written, with no
    // temporary file to leave behind; NAME is its `$0`.
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(SCRIPT)
        .arg("wasmpipe toolchains")
        .args(&script_args)
        .status()
        .context(
            "cannot run bash, which installs the toolchains; install bash and run this again",
        )?;
    match status.code() {
        Some(0) => Ok(super::EXIT_OK),
        Some(code) => bail!(
            "setting up the toolchains failed (exit code {code}); what went wrong is printed above"
        ),
        None => bail!("setting up the toolchains was stopped by a signal"),
    }
}
