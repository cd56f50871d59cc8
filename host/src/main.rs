//! The `wasmpipe` command; everything lives in [`wasmpipe::cli`].

fn main() -> std::process::ExitCode {
    wasmpipe::cli::main()
}
