//! `cnnc summary`: the table of a model's layers, then its memory report.

use std::path::PathBuf;

use cnnc::Diagnostics;

use super::overrides::{PrecisionArg, TrainOverrides};
use super::shared::load;

/// Print a Keras-like table of a model's layers, shapes, parameters, FLOPs and memory.
#[derive(clap::Args)]
pub struct Args {
    /// The .cnn file.
    file: PathBuf,
    /// The model to summarise, when the file defines several.
    #[arg(long)]
    model: Option<String>,
    /// Arithmetic of the convolutions and dense layers the memory report plans for (overrides the train section).
    #[arg(long, value_enum)]
    precision: Option<PrecisionArg>,
}

/// The summary table and the memory a training step at the train
/// section's batch size needs.
pub fn run(args: &Args) -> Result<String, Diagnostics> {
    let model = load(&args.file, args.model.as_deref())?;
    let overrides = TrainOverrides {
        precision: args.precision,
        ..TrainOverrides::default()
    };
    let train = overrides.apply(model.graph.train.clone().unwrap_or_default());
    Ok(cnnc::emit::summary(&model)
        + &cnnc::bench::memory_report(&model, &train, train.batch as usize))
}
