//! `cnnc shapes`: the generated segmentation set written as a folder.

use std::path::{Path, PathBuf};

use cnnc::data::shapes::{self, ShapesConfig};
use cnnc::Diagnostics;

/// Write shapes on noise and their masks as a segmentation folder (images/, masks/, classes.txt) to look at or to predict on.
#[derive(clap::Args)]
pub struct Args {
    /// The folder to write (created; it must not hold images or masks already).
    dir: PathBuf,
    /// How many images.
    #[arg(long, default_value_t = 16)]
    count: usize,
    /// Their height and width, in pixels (at least 8).
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// The seed the images are drawn from (`cnnc run --train shapes` trains on seed 0x5ea90001, tests on 0x5ea97e57).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Writes the folder; failures name it.
pub fn run(args: &Args) -> Result<String, Diagnostics> {
    write(args).map_err(|e| Diagnostics::message(&args.dir.display().to_string(), e))
}

fn write(args: &Args) -> Result<String, String> {
    if args.size < 8 || args.count == 0 {
        return Err("give --count 1 or more and --size 8 or more".into());
    }
    for sub in ["images", "masks"] {
        let folder = args.dir.join(sub);
        if holds_files(&folder) {
            return Err(format!(
                "`{}` already holds files: write into a new folder, so that nothing there is replaced",
                folder.display()
            ));
        }
    }
    let set = shapes::generate(&ShapesConfig {
        count: args.count,
        size: args.size,
        seed: args.seed,
    });
    let written = shapes::write_folder(&set, &args.dir).map_err(|e| e.to_string())?;
    Ok(format!(
        "wrote {written} images of {size}x{size} and their masks into {} (classes: {})\n",
        args.dir.display(),
        shapes::CLASS_NAMES.join(", "),
        size = args.size
    ))
}

/// Whether `folder` exists and holds any entry.
fn holds_files(folder: &Path) -> bool {
    std::fs::read_dir(folder).is_ok_and(|mut entries| entries.next().is_some())
}
