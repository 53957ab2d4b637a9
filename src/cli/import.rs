//! `cnnc import`: an ONNX model as a .cnn file and its weights.

use std::path::{Path, PathBuf};

use cnnc::onnx::{self, ImportOptions};
use cnnc::runtime::weights;
use cnnc::Diagnostics;

use super::shared::failure;

/// Read an ONNX model (as PyTorch or cnnc export write them) and write it as a .cnn file and its
/// weights; every node the language cannot express is listed, and nothing is written.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX file.
    file: PathBuf,
    /// The .cnn file to write.
    #[arg(short, long)]
    output: PathBuf,
    /// The weights file to write (default: the .cnn file's name with .safetensors).
    #[arg(long, value_name = "FILE")]
    weights_out: Option<PathBuf>,
    /// The model's name in the .cnn file (default: the .cnn file's name).
    #[arg(long)]
    model: Option<String>,
    /// Replace the .cnn and weights files if they exist.
    #[arg(long)]
    overwrite: bool,
}

/// Imports the model; says what was written.
pub fn run(args: &Args) -> Result<String, Diagnostics> {
    let fail = |e: String| failure(&args.file, e);
    let weights_out = args
        .weights_out
        .clone()
        .unwrap_or_else(|| args.output.with_extension("safetensors"));
    for path in [&args.output, &weights_out] {
        if path.exists() && !args.overwrite {
            return Err(fail(format!(
                "{} exists; pass --overwrite to replace it",
                path.display()
            )));
        }
    }
    let bytes = std::fs::read(&args.file).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let stem = stem(&args.output);
    let source = args
        .file
        .file_name()
        .map_or_else(|| args.file.to_string_lossy(), |n| n.to_string_lossy());
    let options = ImportOptions {
        model: args.model.as_deref().unwrap_or(&stem),
        source: &source,
    };
    let imported = onnx::import(&bytes, options).map_err(|e| fail(e.to_string()))?;
    weights::save(&imported.weights, &weights_out).map_err(|e| fail(e.to_string()))?;
    weights::write_atomically(&args.output, imported.text.as_bytes())
        .map_err(|e| fail(format!("cannot write {}: {e}", args.output.display())))?;
    Ok(format!(
        "wrote {} (model `{}`) and {} ({} tensors)\n",
        args.output.display(),
        imported.model,
        weights_out.display(),
        imported.weights.len()
    ))
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map_or_else(|| "imported".into(), |s| s.to_string_lossy().into_owned())
}
