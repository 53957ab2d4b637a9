//! `cnnc show`: a grid of a data set's training images.

use std::path::{Path, PathBuf};

use cnnc::data::{fashion, folder, masks, shapes, Splits};
use cnnc::viz::grid::{self, GridConfig};
use cnnc::Diagnostics;

/// Draw a grid of a data set's training images with their class names (PNG).
#[derive(clap::Args)]
pub struct Args {
    /// The data set: `fashion` (Fashion-MNIST), `shapes` (the generated segmentation set, at 128x128), a folder of images with a sub-folder per class, or of `images/` and `masks/` (shown at the size of its first image, masks in colour).
    dataset: String,
    /// The picture to write (.png).
    #[arg(short, long)]
    output: PathBuf,
    /// A folder holding the data set's files (otherwise $CNNC_DATA, the system's, or the bundled subset).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Rows of images.
    #[arg(long, default_value_t = 4)]
    rows: usize,
    /// Images per row.
    #[arg(long, default_value_t = 10)]
    cols: usize,
    /// Screen pixels per image pixel.
    #[arg(long, default_value_t = 3)]
    scale: u32,
    /// Show a random choice of images, drawn with this seed (default: the first ones).
    #[arg(long)]
    seed: Option<u64>,
}

/// Draws the grid into `--output`; failures name the data set.
pub fn run(args: &Args) -> Result<String, Diagnostics> {
    let config = GridConfig {
        rows: args.rows,
        cols: args.cols,
        scale: args.scale,
        seed: args.seed,
    };
    show(args, &config).map_err(|e| Diagnostics::message(&args.dataset, e))
}

/// Loads the training images and draws `config`'s grid of them.
fn show(args: &Args, config: &GridConfig) -> Result<String, String> {
    let splits = training_images(&args.dataset, args.data.as_deref())?;
    let shown = grid::render(&splits.train, config, &args.output).map_err(|e| e.to_string())?;
    Ok(format!(
        "wrote {} ({shown} training images)\n",
        args.output.display()
    ))
}

/// All of a data set's training images, none held out for validation.
/// Unlike training, which fits images to a model, `show` has no model:
/// a folder's images are all shown at the size and colour of its first.
fn training_images(data_set: &str, data: Option<&Path>) -> Result<Splits, String> {
    let dir = Path::new(data_set);
    if data_set == "fashion" {
        let splits = fashion::load(data, 0, 0).map_err(|e| e.to_string())?;
        if let Some(note) = splits.source.note() {
            eprintln!("{note}");
        }
        Ok(splits)
    } else if data_set == "shapes" {
        shapes::load(&[128, 128, 1], Some(0), 0).map_err(|e| e.to_string())
    } else if dir.is_dir() && masks::is_mask_folder(dir) {
        let shape = masks::first_shape(dir).map_err(|e| e.to_string())?;
        let conversion = folder::Conversion {
            shape,
            convert: true,
        };
        masks::load(dir, conversion, Some(0), 0).map_err(|e| e.to_string())
    } else if dir.is_dir() {
        let shape = folder::first_shape(dir).map_err(|e| e.to_string())?;
        let conversion = folder::Conversion {
            shape,
            convert: true,
        };
        folder::load(dir, conversion, Some(0), 0).map_err(|e| e.to_string())
    } else {
        Err(format!(
            "unknown data set `{data_set}`: give `fashion` (Fashion-MNIST), `shapes`, a folder of images with a sub-folder per class, or a folder of `images/` and `masks/`"
        ))
    }
}
