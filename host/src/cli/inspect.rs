//! `wasmpipe inspect`: print what a plugin says about itself.

use super::EXIT_OK;
use crate::runtime::{Runtime, RuntimeConfig, Stage, StageSpec, linker};
use anyhow::Result;
use std::path::PathBuf;

/// Print a plugin's metadata (kind, name, ABI and SDK versions), its
/// content hash (the stage version) and its size. Refuses modules that are
/// not wasmpipe stages, saying why.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The plugin (`.wasm`).
    plugin: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: InspectArgs) -> Result<u8> {
    let rt = Runtime::new(&RuntimeConfig {
        max_instances: 4,
        cache_dir: None,
        ..RuntimeConfig::default()
    })?;
    let linker = linker(&rt)?;
    let spec = StageSpec::standalone("inspect", args.plugin.clone());
    let stage = Stage::load(&rt, &linker, spec)?;
    let size = std::fs::metadata(&args.plugin)?.len();
    if args.json {
        let v = serde_json::json!({
            "plugin": args.plugin, "metadata": stage.meta, "version": stage.version, "size": size,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let m = &stage.meta;
        println!("plugin:   {}", args.plugin.display());
        println!("name:     {}", m.name);
        println!(
            "kind:     {}{}",
            m.kind,
            if m.keyed {
                " (computes its own key)"
            } else {
                ""
            }
        );
        println!("abi:      {}", m.abi);
        println!("sdk:      {}", m.sdk.as_deref().unwrap_or("(none)"));
        // What the module takes (docs/abi.md, "Event encodings").
        let events = m
            .events
            .as_deref()
            .map_or("json".to_owned(), |e| e.join(", "));
        println!("events:   {events}");
        println!("version:  {}", stage.version);
        println!("size:     {size} bytes");
    }
    Ok(EXIT_OK)
}
