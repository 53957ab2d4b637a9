//! `cnnc bench`: compile time, speed, latency and memory on random data.

use std::path::PathBuf;

use cnnc::bench::BenchConfig;
use cnnc::Diagnostics;

use super::overrides::{PrecisionArg, TrainOverrides};
use super::ranks::Ranks;
use super::shared::{failure, load, threads_or_cores};

/// Measure compile time, training and inference speed, latency and memory on random data.
#[derive(clap::Args)]
pub struct Args {
    /// The .cnn file.
    file: PathBuf,
    /// The model, when the file defines several.
    #[arg(long)]
    model: Option<String>,
    /// Training batch size.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Inference batch size.
    #[arg(long, default_value_t = 256)]
    inference_batch: usize,
    /// Worker threads (default: the machine's cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Timed training steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Also print the time of the training step's slowest kernels.
    #[arg(long)]
    profile: bool,
    /// Arithmetic of the convolutions and dense layers: bf16 multiplies in bfloat16 and sums in f32, on AMX-BF16 or AVX512-BF16 (overrides the train section).
    #[arg(long, value_enum)]
    precision: Option<PrecisionArg>,
}

/// Runs the benchmark with the model's train section and reports it.
pub fn run(args: &Args) -> Result<String, Diagnostics> {
    let model = load(&args.file, args.model.as_deref())?;
    let config = BenchConfig {
        batch: args.batch,
        inference_batch: args.inference_batch,
        profile: args.profile,
        threads: threads_or_cores(args.threads),
        steps: args.steps,
    };
    let overrides = TrainOverrides {
        precision: args.precision,
        ..TrainOverrides::default()
    };
    let train = overrides.apply(model.graph.train.clone().unwrap_or_default());
    // Under mpirun: the training step alone, its batch split across the ranks.
    let ranks = Ranks::join().map_err(|e| failure(&args.file, e))?;
    match ranks.world() {
        Some(world) => {
            let report = cnnc::bench::run_shared(&model, &train, config, world);
            let report = ranks.or_end_job(report.map_err(|e| failure(&args.file, e)))?;
            Ok(if ranks.leads() {
                report.to_string()
            } else {
                String::new()
            })
        }
        None => cnnc::bench::run(&model, &train, config)
            .map(|report| report.to_string())
            .map_err(|e| failure(&args.file, e)),
    }
}
