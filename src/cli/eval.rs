//! `cnnc eval`: trained weights measured on a data set's test images.

use std::path::PathBuf;

use cnnc::train::fit::{self, Evaluation};
use cnnc::{Diagnostics, TypedGraph};

use super::shared::{cores, failure, load, load_splits, top_k_text, DataArgs};

/// Evaluate trained weights on a data set's test images: loss, accuracy, per-class accuracy, confusion matrix.
#[derive(clap::Args)]
pub struct Args {
    /// The .cnn file.
    file: PathBuf,
    /// The model, when the file defines several.
    #[arg(long)]
    model: Option<String>,
    /// The weights (safetensors).
    #[arg(long)]
    weights: PathBuf,
    /// The data set: `fashion`, or a folder of images with one sub-folder per class.
    #[arg(long, default_value = "fashion")]
    data: String,
    /// A folder holding Fashion-MNIST's files.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Resize images and convert their colours to fit the model's input (image folders).
    #[arg(long)]
    resize: bool,
    /// Also draw the confusion matrix into this picture (.png or .svg).
    #[arg(long)]
    confusion: Option<PathBuf>,
}

/// The test set's loss, accuracy, per-class accuracy and confusion
/// matrix, which `--confusion` also draws.
pub fn run(args: &Args) -> Result<String, Diagnostics> {
    let model = load(&args.file, args.model.as_deref())?;
    evaluate(&model, args).map_err(|e| failure(&args.file, e))
}

/// Loads the weights and the test set (no validation split), evaluates,
/// and reports.
fn evaluate(model: &TypedGraph, args: &Args) -> Result<String, String> {
    let store =
        cnnc::runtime::weights::load_for(model, &args.weights).map_err(|e| e.to_string())?;
    let data = DataArgs {
        name: &args.data,
        fashion_dir: args.data_dir.as_deref(),
        resize: args.resize,
    };
    let splits = load_splits(model, data, Some(0), 0)?;
    let top_ks = model.graph.train.clone().unwrap_or_default().top_ks();
    let report = fit::evaluate_in_detail(model, &store, &splits.test, (&top_ks, cores()))
        .map_err(|e| e.to_string())?;
    let names = &splits.test.class_names;
    let mut out = report_text(&report, names, splits.test.len());
    if let Some(path) = &args.confusion {
        cnnc::viz::confusion::render(&report.confusion, names, path).map_err(|e| e.to_string())?;
        out += &format!("\nconfusion matrix: {}\n", path.display());
    }
    Ok(out)
}

/// The figures, then accuracy per class, then the confusion matrix.
fn report_text(report: &Evaluation, names: &[String], images: usize) -> String {
    let mut out = format!(
        "test: loss {:.4} accuracy {:.4}{} ({images} images)\n\nper class:\n",
        report.loss,
        report.accuracy,
        top_k_text(report.top_k.iter().map(|&(k, a)| (k, a))),
    );
    let width = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(11)
        + 1;
    for (name, accuracy) in names.iter().zip(report.per_class()) {
        out += &format!("  {name:<width$} {accuracy:.4}\n");
    }
    out += "\nconfusion (rows: true class, columns: predicted):\n";
    for (name, row) in names.iter().zip(&report.confusion) {
        let cells: Vec<String> = row.iter().map(|c| format!("{c:5}")).collect();
        out += &format!("  {name:<width$}{}\n", cells.join(""));
    }
    out
}
