//! The forward pass for the command line: `cnnc predict --input X.npy
//! --output Y.npy` on NumPy arrays, so that outputs can be compared with
//! other frameworks', and `cnnc predict img.png …` on image files, giving
//! each image's most likely classes by name.

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use thiserror::Error;

use crate::data::folder::{self, Conversion, FolderError};
use crate::runtime::inference::{Inference, InferenceError};
use crate::runtime::weights::{self, TensorStore, WeightsError};
use crate::shapes::TypedGraph;
use crate::CompileError;

/// Why a prediction failed.
#[derive(Debug, Error)]
pub enum PredictError {
    /// The weights file is unusable.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The input file could not be read as an f32 array.
    #[error("cannot read `{path}` as a float32 .npy array: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The input array's shape does not fit the model.
    #[error("`{path}` has shape {actual:?}, but the model takes [N, {}] (or one example [{}])", join(.expected), join(.expected))]
    Shape {
        /// The file.
        path: PathBuf,
        /// The model's per-example input shape.
        expected: Vec<usize>,
        /// The array's shape.
        actual: Vec<usize>,
    },
    /// An image could not be read or does not fit the model.
    #[error(transparent)]
    Image(#[from] FolderError),
    /// The model's output is not a vector of class scores.
    #[error("output `{output}` has shape [{}], not one score per class: images can only be classified by a model whose output is a vector (`cnnc maps` draws feature maps)", join(.shape))]
    NotScores {
        /// The output.
        output: String,
        /// Its per-example shape.
        shape: Vec<usize>,
    },
    /// The model could not be compiled.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// The forward pass failed.
    #[error(transparent)]
    Inference(#[from] InferenceError),
    /// An output file could not be written.
    #[error("cannot write `{path}`: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

fn join(dims: &[usize]) -> String {
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs `model` with the weights in `weights` on the examples in `input`
/// (`[N, ...]` or one example) in batches of at most `batch`, and writes
/// each output to `output` (a model with several outputs writes
/// `output` with `.{name}` before the extension). Returns the files written.
pub fn predict_npy(
    model: &TypedGraph,
    weights: &Path,
    input: &Path,
    output: &Path,
    batch: usize,
    threads: usize,
) -> Result<Vec<PathBuf>, PredictError> {
    let store = weights::load_for(model, weights)?;
    let array: ArrayD<f32> = ndarray_npy::read_npy(input).map_err(|e| PredictError::Read {
        path: input.to_path_buf(),
        message: e.to_string(),
    })?;
    let example: Vec<usize> = model
        .input_shape()
        .map(|s| s.0.iter().map(|&d| d as usize).collect())
        .unwrap_or_default();
    let shape = array.shape().to_vec();
    let count = if shape == example {
        1
    } else if shape.len() == example.len() + 1 && shape[1..] == example[..] {
        shape[0]
    } else {
        return Err(PredictError::Shape {
            path: input.to_path_buf(),
            expected: example,
            actual: shape,
        });
    };
    let values: Vec<f32> = array.iter().copied().collect();
    let outputs = forward(model, store, &values, count, batch.max(1), threads)?;
    let mut written = Vec::new();
    let several = outputs.len() > 1;
    for ((name, values), (_, shape)) in outputs.into_iter().zip(model.outputs()) {
        let path = if several {
            with_suffix(output, &name)
        } else {
            output.to_path_buf()
        };
        let dims: Vec<usize> = std::iter::once(count)
            .chain(shape.iter().map(|&d| d as usize))
            .collect();
        let array =
            ArrayD::from_shape_vec(IxDyn(&dims), values).map_err(|e| PredictError::Write {
                path: path.clone(),
                message: e.to_string(),
            })?;
        ndarray_npy::write_npy(&path, &array).map_err(|e| PredictError::Write {
            path: path.clone(),
            message: e.to_string(),
        })?;
        written.push(path);
    }
    Ok(written)
}

/// One image's most likely classes.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePrediction {
    /// The image file.
    pub path: PathBuf,
    /// The top classes, most likely first: (label, class name, score).
    pub top: Vec<(usize, String, f32)>,
}

/// How [`predict_images`] reads images and what it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassifyOptions {
    /// How each image becomes the model's input ([`folder::read_image`]).
    pub conversion: Conversion,
    /// How many of the highest scores to report per image.
    pub top: usize,
    /// Worker threads.
    pub threads: usize,
}

/// Classifies the image files `paths` with `model` and the weights in
/// `store`: each image is read and converted as `options.conversion` says
/// ([`folder::read_image`]), and its `options.top` highest scores of the
/// model's first output are named by the class names stored with the
/// weights (`class 3` when there are none).
pub fn predict_images(
    model: &TypedGraph,
    store: TensorStore,
    paths: &[PathBuf],
    options: ClassifyOptions,
) -> Result<Vec<ImagePrediction>, PredictError> {
    let ClassifyOptions {
        conversion,
        top,
        threads,
    } = options;
    let (output, shape) = model.outputs().into_iter().next().unwrap_or_default();
    if shape.len() != 1 {
        return Err(PredictError::NotScores {
            output,
            shape: shape.iter().map(|&d| d as usize).collect(),
        });
    }
    let classes = shape[0] as usize;
    let names = weights::class_names(&store, classes);
    let mut values = Vec::new();
    for path in paths {
        values.extend(folder::read_image(path, conversion)?);
    }
    let batch = paths.len().clamp(1, 256);
    let outputs = forward(model, store, &values, paths.len(), batch, threads)?;
    let scores = &outputs[0].1;
    Ok(paths
        .iter()
        .zip(scores.chunks_exact(classes.max(1)))
        .map(|(path, row)| {
            let mut order: Vec<usize> = (0..classes).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            ImagePrediction {
                path: path.clone(),
                top: order
                    .into_iter()
                    .take(top)
                    .map(|c| (c, names[c].clone(), row[c]))
                    .collect(),
            }
        })
        .collect())
}

/// The outputs of `count` examples, run in batches of `batch` (the last,
/// smaller batch with its own program).
fn forward(
    model: &TypedGraph,
    store: TensorStore,
    values: &[f32],
    count: usize,
    batch: usize,
    threads: usize,
) -> Result<Vec<(String, Vec<f32>)>, PredictError> {
    let per_example = values.len() / count.max(1);
    let mut outputs: Vec<(String, Vec<f32>)> = model
        .outputs()
        .into_iter()
        .map(|(n, _)| (n, Vec::new()))
        .collect();
    let examples = |start: usize, size: usize| {
        values[start * per_example..(start + size) * per_example].to_vec()
    };
    run_in_batches::<PredictError>(
        model,
        &store,
        Batches {
            count,
            batch,
            threads,
        },
        examples,
        |_, results| {
            for (name, part) in results {
                if let Some((_, all)) = outputs.iter_mut().find(|(n, _)| *n == name) {
                    all.extend(part);
                }
            }
        },
    )?;
    Ok(outputs)
}

fn with_suffix(path: &Path, name: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let extension = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    path.with_file_name(format!("{stem}.{name}{extension}"))
}

/// How [`run_in_batches`] splits its examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batches {
    /// Examples in all.
    pub count: usize,
    /// Examples per batch (the last batch may be smaller).
    pub batch: usize,
    /// Worker threads.
    pub threads: usize,
}

/// Runs `model` on `batches.count` examples (`examples(start, size)` gives
/// the values of examples `start..start + size`) in batches of at most
/// `batches.batch`; the last, smaller batch gets a program of its own.
/// Calls `each` with the first example of every batch and its outputs.
/// Fails with the caller's error type, which says how compilation and
/// running fail.
pub fn run_in_batches<E: From<CompileError> + From<InferenceError>>(
    model: &TypedGraph,
    weights: &TensorStore,
    batches: Batches,
    mut examples: impl FnMut(usize, usize) -> Vec<f32>,
    mut each: impl FnMut(usize, Vec<(String, Vec<f32>)>),
) -> Result<(), E> {
    let Batches {
        count,
        batch,
        threads,
    } = batches;
    let batch = batch.max(1);
    let mut program: Option<Inference> = None;
    let mut start = 0;
    while start < count {
        let size = batch.min(count - start);
        if program.as_ref().is_none_or(|p| p.plan().batch != size) {
            let compiled = crate::compile_inference(model, size)?;
            program = Some(Inference::new(compiled, weights.clone(), threads)?);
        }
        let outputs = program
            .as_mut()
            .map(|p| p.run(&examples(start, size)))
            .transpose()?
            .unwrap_or_default();
        each(start, outputs);
        start += size;
    }
    Ok(())
}
