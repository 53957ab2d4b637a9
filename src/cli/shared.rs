//! What more than one command needs, written once: loading the model a
//! command names, failures as diagnostics, thread counts, data-set
//! arguments, the weights to start from, and the text of a classification.
//!
//! Data-set loading stays here rather than in `cnnc::data`: the library
//! already loads each kind of data set (`fashion::load`, `folder::load`),
//! and what is left is argument handling — reading `fashion` or a folder
//! out of one string, fitting images to the model's input when `--resize`
//! says so, and printing where a fallback took the data from. The data
//! module also sits below the graph in the layering, so it could not take
//! a model to fit images to.

use std::error::Error;
use std::path::{Path, PathBuf};

use cnnc::data::{fashion, folder, masks, shapes, Splits};
use cnnc::predict::{self, ClassifyOptions};
use cnnc::runtime::weights::{self, Problem, TensorStore, WeightsError};
use cnnc::{Diagnostics, TypedGraph};

/// Loads model `model` (or the only one) of the .cnn file `file`, with its
/// errors as diagnostics.
pub fn load(file: &Path, model: Option<&str>) -> Result<TypedGraph, Diagnostics> {
    cnnc::load_model(file, model)
}

/// A failure after the model compiled, as a diagnostic naming the file;
/// an error caused by diagnostics of its own (a model that cannot be
/// differentiated) is reported as those, at their places in the source.
pub fn failure<E: Into<Box<dyn Error>>>(file: &Path, error: E) -> Diagnostics {
    let error: Box<dyn Error> = error.into();
    let mut cause: Option<&dyn Error> = Some(error.as_ref());
    while let Some(e) = cause {
        if let Some(diagnostics) = e.downcast_ref::<Diagnostics>() {
            return diagnostics.clone();
        }
        cause = e.source();
    }
    Diagnostics::message(&file.to_string_lossy(), error.to_string())
}

/// The machine's cores, the default number of worker threads.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `--threads`, else the machine's cores.
pub fn threads_or_cores(threads: Option<usize>) -> usize {
    threads.unwrap_or_else(cores)
}

/// A data set as the command line names it, and how to read it.
#[derive(Clone, Copy)]
pub struct DataArgs<'a> {
    /// `fashion` (Fashion-MNIST), `shapes` (the generated segmentation
    /// set), a folder of images with one sub-folder per class, or a
    /// segmentation folder of `images/` and `masks/`.
    pub name: &'a str,
    /// Where Fashion-MNIST's files are (`--data`).
    pub fashion_dir: Option<&'a Path>,
    /// Resize and convert images to the model's input.
    pub resize: bool,
}

/// Loads `data` for `model`, splitting off `validation` training images
/// (the data set's default when `None`) with `seed`, and prints where a
/// fallback took the data from.
pub fn load_splits(
    model: &TypedGraph,
    data: DataArgs,
    validation: Option<u64>,
    seed: u64,
) -> Result<Splits, String> {
    let folder = Path::new(data.name);
    let splits = if data.name == "fashion" {
        let validation = validation.map_or(fashion::DEFAULT_VALIDATION, |v| v as usize);
        fashion::load(data.fashion_dir, validation, seed).map_err(|e| e.to_string())?
    } else if data.name == "shapes" {
        let input = model.input_shape().map(|s| s.0.clone()).unwrap_or_default();
        let validation = validation.map(|v| v as usize);
        shapes::load(&input, validation, seed).map_err(|e| e.to_string())?
    } else if folder.is_dir() && masks::is_mask_folder(folder) {
        let conversion = conversion(model, data.resize)?;
        let validation = validation.map(|v| v as usize);
        masks::load(folder, conversion, validation, seed).map_err(|e| e.to_string())?
    } else if folder.is_dir() {
        let conversion = conversion(model, data.resize)?;
        let validation = validation.map(|v| v as usize);
        folder::load(folder, conversion, validation, seed).map_err(|e| e.to_string())?
    } else {
        return Err(format!(
            "unknown data set `{}`: give `fashion` (Fashion-MNIST), `shapes` (a segmentation \
             set cnnc generates), a folder of images with one sub-folder per class, or a \
             folder of `images/` and their `masks/`",
            data.name
        ));
    };
    if let Some(note) = splits.source.note() {
        eprintln!("{note}");
    }
    Ok(splits)
}

/// How images become `model`'s input: its `[height, width, channels]`,
/// converted to fit when `resize` (the `--resize` flag) allows it.
pub fn conversion(model: &TypedGraph, resize: bool) -> Result<folder::Conversion, String> {
    match model.input_shape().map(|s| s.0.as_slice()) {
        Some(&[h, w, c]) => Ok(folder::Conversion {
            shape: [h as usize, w as usize, c as usize],
            convert: resize,
        }),
        other => Err(format!(
            "the model's input has shape {other:?}; images need an input [height, width, channels]"
        )),
    }
}

/// The weights of `model` (from the .cnn file `file`) in `path`, checked
/// ([`weights::load_for`]); the error says which other model of `file`
/// they belong to when they are another's ([`weights_text`]).
pub fn load_weights(file: &Path, model: &TypedGraph, path: &Path) -> Result<TensorStore, String> {
    weights::load_for(model, path).map_err(|e| weights_text(file, model, &e))
}

/// A weights error as text: when no tensor of the file is a weight of
/// `model`, and the file's tensors are exactly the weights of another
/// model of `file`, a last line names that model.
pub fn weights_text(file: &Path, model: &TypedGraph, error: &WeightsError) -> String {
    let hint = match error {
        WeightsError::Mismatch {
            path,
            problems,
            tensors,
            ..
        } if problems
            .iter()
            .filter(|p| matches!(p, Problem::Unexpected { .. }))
            .count()
            == *tensors =>
        {
            other_model(file, model, path)
        }
        _ => None,
    };
    match hint {
        Some(other) => format!(
            "{error}\nthey are the weights of model `{other}`, also in `{}`: pass --model {other}",
            file.display()
        ),
        None => error.to_string(),
    }
}

/// The first model of `file` other than `model` whose weights are the
/// tensors of `path` (a checkpoint's weights for a checkpoint).
fn other_model(file: &Path, model: &TypedGraph, path: &Path) -> Option<String> {
    let store = weights::checkpoint_weights(weights::load_file(path).ok()?);
    let program = cnnc::syntax::load_file(file).ok()?;
    cnnc::elaborate::models(&program)
        .into_iter()
        .filter(|name| *name != model.graph.name)
        .find(|name| {
            cnnc::load_model(file, Some(name))
                .is_ok_and(|other| weights::mismatches(&other, &store).is_empty())
        })
}

/// The weights training would start from: the initializers, drawn with the
/// train section's seed, so `cnnc maps` and `cnnc run` without weights
/// agree with each other and with epoch 0 of `cnnc run --train`.
pub fn initializers(model: &TypedGraph) -> TensorStore {
    let seed = model.graph.train.clone().unwrap_or_default().seed;
    cnnc::runtime::weights::init(model, seed)
}

/// How `cnnc run` and `cnnc predict` classify image files.
#[derive(Clone, Copy)]
pub struct ClassifyArgs {
    /// Resize images and convert their colours to fit the model's input.
    pub resize: bool,
    /// How many classes to show per image.
    pub top: usize,
    /// Worker threads.
    pub threads: usize,
    /// The arithmetic of the convolutions and dense layers.
    pub precision: cnnc::Precision,
}

/// Each image's top classes, as lines of text.
pub fn classify(
    model: &TypedGraph,
    store: TensorStore,
    images: &[PathBuf],
    args: ClassifyArgs,
) -> Result<String, String> {
    let options = ClassifyOptions {
        conversion: conversion(model, args.resize)?,
        top: args.top,
        threads: args.threads,
        precision: args.precision,
    };
    let predictions =
        predict::predict_images(model, store, images, options).map_err(|e| e.to_string())?;
    let mut out = String::new();
    for p in predictions {
        out += &format!("{}\n", p.path.display());
        for (rank, (_, name, score)) in p.top.iter().enumerate() {
            out += &format!("  {}. {name:<16} {:6.2}%\n", rank + 1, 100.0 * score);
        }
    }
    Ok(out)
}

/// `  top-5 accuracy 0.9900` for each (k, accuracy).
pub fn top_k_text(figures: impl Iterator<Item = (u64, f64)>) -> String {
    figures
        .map(|(k, a)| format!("  top-{k} accuracy {a:.4}"))
        .collect()
}

/// `--mode`: how `cnnc predict` and `cnnc grad` run the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// Batchnorm on its moving statistics (Keras's `training=False`).
    Inference,
    /// Batchnorm on the batch's statistics (Keras's `training=True`),
    /// the moving statistics unchanged; dropout stays off.
    Training,
}

impl ModeArg {
    /// The library's mode.
    pub fn mode(self) -> cnnc::Mode {
        match self {
            ModeArg::Inference => cnnc::Mode::Inference,
            ModeArg::Training => cnnc::Mode::Training { dropout: false },
        }
    }
}
