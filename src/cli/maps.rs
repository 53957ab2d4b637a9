//! `cnnc maps`: the feature maps of one layer for some input images.

use std::path::PathBuf;

use cnnc::runtime::weights;
use cnnc::viz::maps::{self, MapsConfig};
use cnnc::{Diagnostics, TypedGraph};

use super::shared::{failure, initializers, load, threads_or_cores};

/// Draw the feature maps of one layer for one or more input images (PNG).
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
    /// The layer, by its path as `cnnc summary` or `cnnc graph` shows it.
    #[arg(long)]
    layer: String,
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
    let config = MapsConfig {
        layer: args.layer.clone(),
        images: args.image.clone(),
        threads: threads_or_cores(args.threads),
    };
    draw(&model, args, &config).map_err(|e| failure(&args.file, e))
}

/// The maps with the weights given, or else the model's initializers.
fn draw(model: &TypedGraph, args: &Args, config: &MapsConfig) -> Result<String, String> {
    let store = match &args.weights {
        Some(path) => weights::load_for(model, path).map_err(|e| e.to_string())?,
        None => {
            eprintln!("no --weights: using the model's initializers (fixed filters as written, other weights random)");
            initializers(model)
        }
    };
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
