//! `cnnc predict`: image files classified (or, by a segmentation model,
//! segmented into masks), or a NumPy array run forward.

use std::path::{Path, PathBuf};

use cnnc::predict::masks::{self, MaskFiles, PixelOutput, SegmentOptions, Segmented};
use cnnc::predict::{self, NpyOptions, PredictError};
use cnnc::{Diagnostics, TypedGraph};

use super::overrides::PrecisionArg;
use super::shared::{
    classify, conversion, cores, failure, load, load_weights, weights_text, ClassifyArgs, ModeArg,
};

/// Classify images (top classes by name), segment them (--masks), or run the forward pass on a
/// NumPy array into .npy.
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
    /// Image files (PNG, JPEG) to classify or segment.
    images: Vec<PathBuf>,
    /// Write a segmentation model's masks into DIR (created when missing): DIR/NAME.png per image, each pixel's class index as 8-bit grey (16-bit beyond 256 classes), at the output's size.
    #[arg(long, value_name = "DIR", conflicts_with = "input")]
    masks: Option<PathBuf>,
    /// With --masks: replace mask files that already exist.
    #[arg(long, requires = "masks")]
    overwrite: bool,
    /// How many classes to show per image (classification).
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
    /// How --input runs: inference (batchnorm on its moving statistics) or training (on each batch's statistics; dropout off). Images are classified or segmented in inference mode.
    #[arg(long, value_enum, default_value_t = ModeArg::Inference, hide_possible_values = true)]
    mode: ModeArg,
    /// Arithmetic of the convolutions and dense layers: bf16 multiplies in bfloat16 and sums in f32, on AMX-BF16 or AVX512-BF16.
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    precision: PrecisionArg,
}

/// The files `--input` ran into, each image's top classes, or a
/// segmentation model's masks and shares of each class.
pub fn run(args: &Args) -> Result<String, Diagnostics> {
    let model = load(&args.file, args.model.as_deref())?;
    let result = match (&args.input, &args.output) {
        (Some(input), Some(output)) => predict_npy(&model, args, input, output),
        _ if args.images.is_empty() => {
            Err("give image files to classify, or --input X.npy --output Y.npy".into())
        }
        _ => match (masks::pixel_output(&model), &args.masks) {
            (Ok(output), _) => segment_images(&model, args, output),
            (Err(not_per_pixel), Some(_)) => Err(not_per_pixel.to_string()),
            (Err(_), None) => classify_images(&model, args),
        },
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
        precision: args.precision.precision(),
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

/// Each image's share of pixels per class, largest first, after writing
/// its mask into `--masks` when given.
///
/// A segmentation model's images without `--masks` get the summary alone,
/// not an error: `cnnc predict` writes files only where it is told to (as
/// classification writes none), the shares already answer what each image
/// shows, and a file would need a folder the user has not named.
fn segment_images(model: &TypedGraph, args: &Args, output: PixelOutput) -> Result<String, String> {
    if args.mode != ModeArg::Inference {
        return Err("--mode training runs the forward pass of an --input array; images are segmented in inference mode".into());
    }
    let files = args
        .masks
        .as_deref()
        .map(|folder| MaskFiles::plan(&output, &args.images, folder, args.overwrite))
        .transpose()
        .map_err(|e| e.to_string())?;
    let store = load_weights(&args.file, model, &args.weights)?;
    let options = SegmentOptions {
        conversion: conversion(model, args.resize)?,
        threads: cores(),
        precision: args.precision.precision(),
    };
    let segmented =
        masks::segment_images(model, store, &args.images, options).map_err(|e| e.to_string())?;
    if let Some(files) = &files {
        files.write(&segmented).map_err(|e| e.to_string())?;
    }
    Ok(segmentation_lines(&segmented, files.as_ref()))
}

/// One line per image of `segmented`: the mask written (or the image, when
/// none is), then each class that holds pixels with its share, largest
/// first.
fn segmentation_lines(segmented: &Segmented, files: Option<&MaskFiles>) -> String {
    let mut out = String::new();
    for (i, image) in segmented.images.iter().enumerate() {
        let written = files.and_then(|files| files.paths().get(i));
        let label = match written {
            Some(mask) => format!("wrote {}", mask.display()),
            None => image.image.display().to_string(),
        };
        let shares = segmented.shares(image);
        let mut order: Vec<usize> = (0..shares.len()).filter(|&c| shares[c] > 0.0).collect();
        order.sort_by(|&a, &b| shares[b].total_cmp(&shares[a]).then(a.cmp(&b)));
        let classes: Vec<String> = order
            .into_iter()
            .map(|c| format!("{} {:.2}%", segmented.names[c], 100.0 * shares[c]))
            .collect();
        out += &format!("{label}: {}\n", classes.join(", "));
    }
    out
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
        precision: args.precision.precision(),
    };
    classify(model, store, &args.images, options)
}
