//! `cnnc eval`: trained weights measured on a data set's test images.

use std::path::{Path, PathBuf};

use cnnc::train::fit::{self, Evaluation};
use cnnc::{Diagnostics, TypedGraph};

use super::shared::{cores, failure, load, load_splits, load_weights, top_k_text, DataArgs};

/// Evaluate trained weights on a data set's test images: loss, accuracy, per-class accuracy, confusion matrix.
#[derive(clap::Args)]
pub struct Args {
    /// The .cnn file.
    file: PathBuf,
    /// The model, when the file defines several.
    #[arg(long)]
    model: Option<String>,
    /// The weights (safetensors), or a training checkpoint.
    #[arg(long)]
    weights: PathBuf,
    /// The data set whose test images to evaluate on: `fashion` (Fashion-MNIST), or a folder of
    /// images with one sub-folder per class (as `cnnc run --train` takes it).
    #[arg(long, value_name = "DATA_SET", default_value = "fashion")]
    test: String,
    /// A folder holding Fashion-MNIST's files (otherwise $CNNC_DATA, the system's, or the bundled subset).
    // `--data-dir` was this flag's name before `--data` meant the same in every command.
    #[arg(long, alias = "data-dir")]
    data: Option<PathBuf>,
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
    check_data_folder(args)?;
    let store = load_weights(&args.file, model, &args.weights)?;
    let data = DataArgs {
        name: &args.test,
        fashion_dir: args.data.as_deref(),
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

/// Refuses `--data` used in its old meaning here (before it named
/// Fashion-MNIST's folder in every command, it named `eval`'s data set):
/// `--data fashion`, or `--data DIR` for a folder of class sub-folders
/// without Fashion-MNIST's files, when the data set is Fashion-MNIST.
fn check_data_folder(args: &Args) -> Result<(), String> {
    let Some(dir) = args.data.as_deref().filter(|_| args.test == "fashion") else {
        return Ok(());
    };
    let holds_fashion = ["t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"]
        .iter()
        .any(|name| dir.join(name).is_file());
    let has_classes = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().any(|e| e.path().is_dir()))
        .unwrap_or(false);
    if dir == Path::new("fashion") && !dir.exists() {
        return Err(
            "`--data` names the folder holding Fashion-MNIST's files, as in `cnnc run` \
             and `cnnc show`; the data set is `--test fashion` (the default)"
                .into(),
        );
    }
    if has_classes && !holds_fashion {
        return Err(format!(
            "`{}` holds class folders, not Fashion-MNIST's files: to evaluate on a folder of \
             images, pass `--test {}` (`--data` names Fashion-MNIST's folder, as in `cnnc run`)",
            dir.display(),
            dir.display()
        ));
    }
    Ok(())
}

/// The figures, then accuracy per class, then the confusion matrix.
fn report_text(report: &Evaluation, names: &[String], images: usize) -> String {
    let mean_iou = report.mean_iou();
    let mut out = format!(
        "test: loss {:.4} accuracy {:.4}{}{} ({images} images)\n\nper class:{}\n",
        report.loss,
        report.accuracy,
        top_k_text(report.top_k.iter().map(|&(k, a)| (k, a))),
        mean_iou
            .map(|m| format!(" mean IoU {m:.4}"))
            .unwrap_or_default(),
        if mean_iou.is_some() {
            " (accuracy, intersection over union)"
        } else {
            ""
        },
    );
    let width = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(11)
        + 1;
    let ious = fit::class_ious(&report.confusion);
    for ((name, accuracy), iou) in names.iter().zip(report.per_class()).zip(ious) {
        let iou = match (mean_iou, iou) {
            (Some(_), Some(iou)) => format!(" {iou:.4}"),
            (Some(_), None) => " -".to_string(),
            (None, _) => String::new(),
        };
        out += &format!("  {name:<width$} {accuracy:.4}{iou}\n");
    }
    out += &format!(
        "\nconfusion (rows: true class, columns: predicted{}):\n",
        if mean_iou.is_some() { "; pixels" } else { "" }
    );
    // Wide enough for the largest count (a segmentation set counts pixels).
    let digits = report
        .confusion
        .iter()
        .flatten()
        .max()
        .map_or(1, |m| m.to_string().len());
    let cell = digits.max(4) + 1;
    for (name, row) in names.iter().zip(&report.confusion) {
        let cells: Vec<String> = row.iter().map(|c| format!("{c:>cell$}")).collect();
        out += &format!("  {name:<width$}{}\n", cells.join(""));
    }
    out
}
