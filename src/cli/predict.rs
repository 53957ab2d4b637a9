//! `cnnc predict`: image files classified, or a NumPy array run forward.

use std::path::{Path, PathBuf};

use cnnc::predict::{self, NpyOptions, PredictError};
use cnnc::{Diagnostics, TypedGraph};

use super::shared::{
    classify, cores, failure, load, load_weights, weights_text, ClassifyArgs, ModeArg,
};

/// Classify images (top classes by name), or run the forward pass on a NumPy array into .npy.
#[derive(clap::Args)]
pub struct Args {
    /// The .cnn file.
    file: PathBuf,
    /// The model, when the file defines several.
    #[arg(long)]
    model: Option<String>,
    /// The weights (safetensors, names as `cnnc compile --emit graph` shows them), or a training checkpoint.
    #[arg(long)]
    weights: PathBuf,
    /// Image files (PNG, JPEG) to classify.
    images: Vec<PathBuf>,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Resize images and convert their colours to fit the model's input.
    #[arg(long)]
    resize: bool,
    /// Instead of images: float32 .npy of shape [N, height, width, channels] (or one example).
    #[arg(long, requires = "output", conflicts_with = "images")]
    input: Option<PathBuf>,
    /// Where to write the outputs of --input (.npy; several outputs get `.NAME` before the extension).
    #[arg(long, requires = "input")]
    output: Option<PathBuf>,
    /// Examples per batch.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// How --input runs: inference (batchnorm on its moving statistics) or training (on each batch's statistics; dropout off). Images are classified in inference mode.
    #[arg(long, value_enum, default_value_t = ModeArg::Inference, hide_possible_values = true)]
    mode: ModeArg,
}

/// The files `--input` ran into, or each image's top classes.
pub fn run(args: &Args) -> Result<String, Diagnostics> {
    let model = load(&args.file, args.model.as_deref())?;
    let result = match (&args.input, &args.output) {
        (Some(input), Some(output)) => predict_npy(&model, args, input, output),
        _ if args.images.is_empty() => {
            Err("give image files to classify, or --input X.npy --output Y.npy".into())
        }
        _ => classify_images(&model, args),
    };
    result.map_err(|e| failure(&args.file, e))
}

/// Runs the model on the array in `input` and names the files written.
fn predict_npy(
    model: &TypedGraph,
    args: &Args,
    input: &Path,
    output: &Path,
) -> Result<String, String> {
    let options = NpyOptions {
        batch: args.batch,
        mode: args.mode.mode(),
        threads: cores(),
    };
    let files = predict::predict_npy(model, &args.weights, input, output, options).map_err(
        |e| match &e {
            PredictError::Weights(error) => weights_text(&args.file, model, error),
            _ => e.to_string(),
        },
    )?;
    Ok(files
        .iter()
        .map(|f| format!("wrote {}\n", f.display()))
        .collect())
}

/// Each image's `--top` classes with the weights given.
fn classify_images(model: &TypedGraph, args: &Args) -> Result<String, String> {
    if args.mode != ModeArg::Inference {
        return Err("--mode training runs the forward pass of an --input array; images are classified in inference mode".into());
    }
    let store = load_weights(&args.file, model, &args.weights)?;
    let options = ClassifyArgs {
        resize: args.resize,
        top: args.top,
        threads: cores(),
    };
    classify(model, store, &args.images, options)
}
