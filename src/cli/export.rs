//! `cnnc export`: a model and its weights as an ONNX file.

use std::path::PathBuf;

use cnnc::onnx::{self, ExportOptions};
use cnnc::runtime::weights;
use cnnc::Diagnostics;

use super::shared::{failure, initializers, load, load_weights};

/// Write a model and its weights as an ONNX file (opset 17) that onnxruntime and other ONNX
/// runtimes read: NHWC input and outputs as cnnc has them, the batch dimension symbolic, node
/// names the layer paths.
#[derive(clap::Args)]
pub struct Args {
    /// The .cnn file.
    file: PathBuf,
    /// The model, when the file defines several.
    #[arg(long)]
    model: Option<String>,
    /// The weights (safetensors, as `cnnc run` or `cnnc init` write them, or a training
    /// checkpoint); without it, the initial weights that `cnnc init` writes.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// The ONNX file to write (replaced atomically if it exists).
    #[arg(short, long)]
    output: PathBuf,
}

/// Exports the model; says what was written.
pub fn run(args: &Args) -> Result<String, Diagnostics> {
    let model = load(&args.file, args.model.as_deref())?;
    let store = match &args.weights {
        Some(path) => load_weights(&args.file, &model, path).map_err(|e| failure(&args.file, e))?,
        None => initializers(&model),
    };
    let source = args.file.to_string_lossy();
    let bytes = onnx::export(&model, &store, ExportOptions { source: &source })
        .map_err(|e| failure(&args.file, e))?;
    weights::write_atomically(&args.output, &bytes).map_err(|e| {
        failure(
            &args.file,
            format!("cannot write {}: {e}", args.output.display()),
        )
    })?;
    let input = model
        .input_shape()
        .map(|s| {
            let dims: String = s.0.iter().map(|d| format!(", {d}")).collect();
            format!("[batch{dims}]")
        })
        .unwrap_or_default();
    let outputs: Vec<String> = model
        .outputs()
        .into_iter()
        .map(|(name, shape)| {
            let dims: String = shape.iter().map(|d| format!(", {d}")).collect();
            format!("`{name}` [batch{dims}]")
        })
        .collect();
    Ok(format!(
        "wrote {} (ONNX opset {}, {} bytes): input {input}, output {}\n",
        args.output.display(),
        onnx::OPSET,
        bytes.len(),
        outputs.join(", ")
    ))
}
