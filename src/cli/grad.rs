//! `cnnc grad`: a model's outputs and the gradients of an upstream
//! gradient with respect to its input and weights, from NumPy arrays into
//! .npy files.

use std::path::PathBuf;

use cnnc::predict::{self, GradFiles};
use cnnc::{Diagnostics, TypedGraph};

use super::shared::{failure, load, threads_or_cores, ModeArg};

/// Compute gradients: the outputs, the input's gradient and every weight's gradient for an upstream gradient (.npy)
#[derive(clap::Args)]
pub struct Args {
    /// The .cnn file.
    file: PathBuf,
    /// The model, when the file defines several.
    #[arg(long)]
    model: Option<String>,
    /// The weights (safetensors, names as `cnnc compile --emit graph` shows them).
    #[arg(long)]
    weights: PathBuf,
    /// The input: float32 .npy of shape [N, height, width, channels] (or one example), run as one batch.
    #[arg(long)]
    input: PathBuf,
    /// The gradient of a scalar with respect to the output: float32 .npy of the output's shape [N, ...]; NAME=FILE once per output when there are several.
    #[arg(long, required = true, num_args = 1..)]
    upstream: Vec<String>,
    /// The folder for output.npy (output.NAME.npy per output when there are several), input.npy (the input's gradient) and WEIGHT.npy per trainable weight.
    #[arg(long)]
    out: PathBuf,
    /// How the forward pass runs: inference (batchnorm on its moving statistics) or training (on the batch's statistics, as Keras's training=True; moving statistics unchanged). Dropout is off in both.
    #[arg(long, value_enum, default_value_t = ModeArg::Inference, hide_possible_values = true)]
    mode: ModeArg,
    /// Worker threads (default: the machine's cores).
    #[arg(long)]
    threads: Option<usize>,
}

/// Writes the arrays into `--out` and names the files written.
pub fn run(args: &Args) -> Result<String, Diagnostics> {
    let model = load(&args.file, args.model.as_deref())?;
    let upstream = upstream_files(&model, &args.upstream);
    let files = GradFiles {
        weights: &args.weights,
        input: &args.input,
        upstream: &upstream,
        out: &args.out,
    };
    let threads = threads_or_cores(args.threads);
    let written = predict::gradients_npy(&model, files, args.mode.mode(), threads)
        .map_err(|e| failure(&args.file, e))?;
    Ok(written
        .iter()
        .map(|f| format!("wrote {}\n", f.display()))
        .collect())
}

/// Each `--upstream`: `NAME=FILE` when NAME is one of the model's outputs,
/// else a file for the model's only output (a path may hold `=`).
fn upstream_files(model: &TypedGraph, given: &[String]) -> Vec<(Option<String>, PathBuf)> {
    let outputs: Vec<String> = model.outputs().into_iter().map(|(n, _)| n).collect();
    given
        .iter()
        .map(|arg| match arg.split_once('=') {
            Some((name, file)) if outputs.iter().any(|o| o == name) => {
                (Some(name.to_string()), PathBuf::from(file))
            }
            _ => (None, PathBuf::from(arg)),
        })
        .collect()
}
