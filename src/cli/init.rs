//! `cnnc init`: the weights a training run would start from, as a file.

use std::path::PathBuf;

use cnnc::runtime::weights;
use cnnc::Diagnostics;

use super::shared::{failure, load};

/// Write the initial weights of a model (its initializers, drawn with the train section's seed or
/// --seed) to a safetensors file, for predict, export or comparison across frameworks.
#[derive(clap::Args)]
pub struct Args {
    /// The .cnn file.
    file: PathBuf,
    /// The model, when the file defines several.
    #[arg(long)]
    model: Option<String>,
    /// The seed of the initializers (default: the train section's seed, as `cnnc run --train` uses).
    #[arg(long)]
    seed: Option<u64>,
    /// The safetensors file to write (replaced atomically if it exists).
    #[arg(short, long)]
    output: PathBuf,
}

/// Draws the initializers and writes them; says what was written.
pub fn run(args: &Args) -> Result<String, Diagnostics> {
    let model = load(&args.file, args.model.as_deref())?;
    let seed = args
        .seed
        .unwrap_or_else(|| model.graph.train.clone().unwrap_or_default().seed);
    let store = weights::init(&model, seed);
    weights::save(&store, &args.output).map_err(|e| failure(&args.file, e))?;
    let counts = model.param_counts();
    Ok(format!(
        "wrote {}: {} tensors, {} weights of model `{}`, seed {seed}\n",
        args.output.display(),
        store.len(),
        counts.total,
        model.graph.name
    ))
}
