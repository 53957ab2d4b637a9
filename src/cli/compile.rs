//! `cnnc compile`: one stage of a model's compilation, as text.

use std::path::PathBuf;

use clap::ValueEnum;
use cnnc::autodiff::{self, LossSpec};
use cnnc::{CompileError, Diagnostics};

use super::overrides::{PrecisionArg, TrainOverrides};
use super::shared::load;

/// Compile a model and print a stage of its compilation.
#[derive(clap::Args)]
pub struct Args {
    /// The .cnn file.
    file: PathBuf,
    /// The model, when the file defines several.
    #[arg(long)]
    model: Option<String>,
    /// What to print: `graph` is the shape-inferred dataflow graph (stable text, for snapshot tests);
    /// `kernels` the inference kernel plan, `train-kernels` the training step's, `clif` the
    /// Cranelift IR of the generated inference kernels.
    #[arg(long, value_enum, default_value_t = Emit::Graph)]
    emit: Emit,
    /// The batch size the kernel plans are made for.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Arithmetic of the convolutions and dense layers the kernel plans are made for (overrides the train section).
    #[arg(long, value_enum)]
    precision: Option<PrecisionArg>,
}

/// What `--emit` prints.
#[derive(Clone, Copy, ValueEnum)]
enum Emit {
    /// The shape-inferred dataflow graph.
    Graph,
    /// The training graph: forward, losses and backward.
    TrainGraph,
    /// The kernel plan for inference.
    Kernels,
    /// The kernel plan of one training step.
    TrainKernels,
    /// The Cranelift IR of every generated inference kernel.
    Clif,
}

/// The stage `--emit` names, planned for `--batch` examples; failures past
/// the front end name the model, or point into its source.
pub fn run(args: &Args) -> Result<String, Diagnostics> {
    let model = load(&args.file, args.model.as_deref())?;
    let overrides = TrainOverrides {
        precision: args.precision,
        ..TrainOverrides::default()
    };
    let train = overrides.apply(model.graph.train.clone().unwrap_or_default());
    let precision = train.precision;
    let loss = LossSpec {
        smoothing: train.label_smoothing,
        weights: train.loss_weights.clone(),
    };
    let failed = |e: CompileError| match e {
        CompileError::Autodiff(diagnostics) => diagnostics,
        other => Diagnostics::message(&model.graph.name, other.to_string()),
    };
    match args.emit {
        Emit::Graph => Ok(cnnc::emit::graph_text(&model)),
        Emit::TrainGraph => autodiff::differentiate(&model, &loss)
            .map(|training| cnnc::emit::graph_text(&training.typed)),
        Emit::Kernels => cnnc::plan_inference_in(&model, args.batch, precision)
            .map(|plan| plan.to_string())
            .map_err(failed),
        Emit::TrainKernels => {
            cnnc::plan_training_in(&model, &loss, &train.optimizer, args.batch, precision)
                .map(|plan| plan.to_string())
        }
        .map_err(failed),
        Emit::Clif => cnnc::compile_inference_in(&model, args.batch, precision)
            .map(|compiled| {
                compiled
                    .program
                    .clif()
                    .iter()
                    .map(|(name, clif)| format!("; kernel {name}\n{clif}\n"))
                    .collect()
            })
            .map_err(failed),
    }
}
