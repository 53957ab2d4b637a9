//! `cnnc maps`: the feature maps of one layer for some input images, or
//! with `--saliency` the saliency map of one image's class score.

use std::path::PathBuf;

use cnnc::runtime::weights;
use cnnc::runtime::weights::TensorStore;
use cnnc::viz::maps::{self, MapsConfig};
use cnnc::viz::saliency::{self, SaliencyConfig};
use cnnc::{Diagnostics, TypedGraph};

use super::shared::{failure, initializers, load, threads_or_cores};

/// Draw the feature maps of one layer for one or more input images, or an image's saliency map (PNG).
#[derive(clap::Args)]
pub struct Args {
    /// The .cnn file.
    file: PathBuf,
    /// The model, when the file defines several.
    #[arg(long)]
    model: Option<String>,
    /// The weights (safetensors); without them, the model's initializers.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// The input images (PNG or JPEG; resized to the model's input when their size differs).
    #[arg(long, required = true, num_args = 1..)]
    image: Vec<PathBuf>,
    /// The layer, by its path as `cnnc summary` or `cnnc graph` shows it (unless --saliency).
    #[arg(
        long,
        required_unless_present = "saliency",
        conflicts_with = "saliency"
    )]
    layer: Option<String>,
    /// Instead of feature maps: the saliency map of one image, max over channels of |d score / d pixel| of a class's score before the softmax (Simonyan et al., 2014).
    #[arg(long)]
    saliency: bool,
    /// The class whose score --saliency differentiates (default: the predicted class).
    #[arg(long, requires = "saliency")]
    class: Option<usize>,
    /// The picture to write (.png).
    #[arg(short, long)]
    output: PathBuf,
    /// Worker threads (default: the machine's cores).
    #[arg(long)]
    threads: Option<usize>,
}

/// Draws the maps into `--output` and says what it drew.
pub fn run(args: &Args) -> Result<String, Diagnostics> {
    let model = load(&args.file, args.model.as_deref())?;
    let drawn = match &args.layer {
        Some(layer) => {
            let config = MapsConfig {
                layer: layer.clone(),
                images: args.image.clone(),
                threads: threads_or_cores(args.threads),
            };
            draw(&model, args, &config)
        }
        None => draw_saliency(&model, args),
    };
    drawn.map_err(|e| failure(&args.file, e))
}

/// The weights given, or else the model's initializers.
fn store(model: &TypedGraph, args: &Args) -> Result<TensorStore, String> {
    match &args.weights {
        Some(path) => weights::load_for(model, path).map_err(|e| e.to_string()),
        None => {
            eprintln!("no --weights: using the model's initializers (fixed filters as written, other weights random)");
            Ok(initializers(model))
        }
    }
}

/// The saliency map of the one `--image` for `--class`.
fn draw_saliency(model: &TypedGraph, args: &Args) -> Result<String, String> {
    let [image] = args.image.as_slice() else {
        return Err(format!(
            "--saliency draws one image, but {} were given",
            args.image.len()
        ));
    };
    let config = SaliencyConfig {
        image: image.clone(),
        class: args.class,
        threads: threads_or_cores(args.threads),
    };
    let store = store(model, args)?;
    let drawn =
        saliency::render(model, &store, &config, &args.output).map_err(|e| e.to_string())?;
    if let Some(note) = &drawn.note {
        eprintln!("{note}");
    }
    let predicted = &drawn.scores;
    Ok(format!(
        "wrote {} (saliency of class {} `{}`, score {:.4}; the model predicts class {})\n",
        args.output.display(),
        drawn.class,
        drawn.class_name,
        predicted[drawn.class],
        drawn.predicted
    ))
}

/// The maps with the weights given, or else the model's initializers.
fn draw(model: &TypedGraph, args: &Args, config: &MapsConfig) -> Result<String, String> {
    let store = store(model, args)?;
    let drawn = maps::render(model, &store, config, &args.output).map_err(|e| e.to_string())?;
    for note in &drawn.notes {
        eprintln!("{note}");
    }
    let [height, width, channels] = drawn.shape;
    let images = drawn.maps.len();
    let plural = if images == 1 { "" } else { "s" };
    Ok(format!(
        "wrote {} ({images} image{plural} x {channels} maps of `{}`, {height}x{width} each)\n",
        args.output.display(),
        drawn.node
    ))
}
