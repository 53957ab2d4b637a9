//! `cnnc plot`: the learning curves of a training history.

use std::path::PathBuf;

use cnnc::viz::curves;
use cnnc::Diagnostics;

use super::shared::failure;

/// Draw the learning curves of a training history (`cnnc run` writes MODEL.history.csv) as PNG or SVG.
#[derive(clap::Args)]
pub struct Args {
    /// The history (CSV).
    history: PathBuf,
    /// The picture to write (.png or .svg).
    #[arg(short, long)]
    output: PathBuf,
}

/// Reads the history and draws it into the output file.
pub fn run(args: &Args) -> Result<String, Diagnostics> {
    curves::read_history(&args.history)
        .and_then(|epochs| curves::render(&epochs, &args.output))
        .map(|()| format!("wrote {}\n", args.output.display()))
        .map_err(|e| failure(&args.history, e))
}
