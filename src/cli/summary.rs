//! `cnnc summary`: the table of a model's layers, then its memory report.

use std::path::PathBuf;

use cnnc::Diagnostics;

use super::shared::load;

/// Print a Keras-like table of a model's layers, shapes, parameters, FLOPs and memory.
#[derive(clap::Args)]
pub struct Args {
    /// The .cnn file.
    file: PathBuf,
    /// The model to summarise, when the file defines several.
    #[arg(long)]
    model: Option<String>,
}

/// The summary table and the memory a training step at the train
/// section's batch size needs.
pub fn run(args: &Args) -> Result<String, Diagnostics> {
    let model = load(&args.file, args.model.as_deref())?;
    let train = model.graph.train.clone().unwrap_or_default();
    Ok(cnnc::emit::summary(&model)
        + &cnnc::bench::memory_report(&model, &train, train.batch as usize))
}
