//! The forward pass for the command line: `cnnc predict --input X.npy
//! --output Y.npy` on NumPy arrays, so that outputs can be compared with
//! other frameworks', in inference or training mode, and `cnnc predict
//! img.png …` on image files, giving each image's most likely classes by
//! name, or, for a segmentation model, each pixel's class ([`masks`]:
//! `cnnc predict img.png … --masks DIR`). `cnnc grad` ([`gradients_npy`])
//! runs the gradient program on NumPy arrays, so that gradients can be
//! compared too.

pub mod masks;

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use thiserror::Error;

use crate::data::folder::{self, Conversion, FolderError};
use crate::runtime::gradients::{GradientError, Gradients};
use crate::runtime::inference::{Inference, InferenceError};
use crate::runtime::weights::{self, TensorStore, WeightsError};
use crate::shapes::TypedGraph;
use crate::{CompileError, Mode, Precision};

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
    /// The .npy file's header declares more values than the file holds.
    #[error("`{}` is truncated: its header declares shape {shape:?}, {values} values taking {}, but the file holds only {holds} bytes after its header", path.display(), crate::limits::bytes(u64::try_from(*.bytes).unwrap_or(u64::MAX)))]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The shape its header declares.
        shape: Vec<usize>,
        /// The values that shape holds (saturated at `u128::MAX`).
        values: u128,
        /// The bytes they take in the file's dtype (saturated).
        bytes: u128,
        /// The bytes after the header.
        holds: u64,
    },
    /// The .npy file's values, as float32, need more than the memory cap.
    #[error("`{}` holds {} of float32 values, more than {cap}: split it into smaller arrays ({})", path.display(), crate::limits::bytes(*.bytes), .cap.help())]
    OverCap {
        /// The file.
        path: PathBuf,
        /// The bytes its values take as float32.
        bytes: u64,
        /// The cap.
        cap: crate::limits::MemoryCap,
    },
    /// The memory cap could not be read.
    #[error(transparent)]
    Cap(#[from] crate::limits::CapError),
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
    #[error("output `{output}` has shape [{}], not one score per class: images can only be classified by a model whose output is a vector (`cnnc maps` draws feature maps{})", join(.shape), if .shape.len() == 3 { "; `cnnc predict --masks DIR` segments images with per-pixel scores [height, width, classes]" } else { "" })]
    NotScores {
        /// The output.
        output: String,
        /// Its per-example shape.
        shape: Vec<usize>,
    },
    /// Masks were asked of a model whose output is not per-pixel scores.
    #[error("output `{output}` has shape [{}], not per-pixel scores [height, width, classes]: --masks needs a segmentation model (without --masks, images are classified)", join(.shape))]
    NotPerPixel {
        /// The model's first output.
        output: String,
        /// Its per-example shape.
        shape: Vec<usize>,
    },
    /// A per-pixel output has more classes than a PNG mask can hold.
    #[error("output `{output}` scores {classes} classes per pixel, more than the {} class indices a 16-bit greyscale PNG mask can hold", masks::MAX_MASK_CLASSES)]
    TooManyClasses {
        /// The output.
        output: String,
        /// Its classes.
        classes: usize,
    },
    /// Two images would write their masks to the same file.
    #[error("`{}` and `{}` would both write their mask to `{}`: rename one of them, or segment them in separate runs with different --masks folders", first.display(), second.display(), mask.display())]
    SameMask {
        /// The first image of that name.
        first: PathBuf,
        /// The second.
        second: PathBuf,
        /// The mask file.
        mask: PathBuf,
    },
    /// A mask file would replace a file that exists.
    #[error("`{}` already exists: replace it with --overwrite, or write the masks into another folder with --masks DIR", path.display())]
    MaskExists {
        /// The file.
        path: PathBuf,
    },
    /// A mask file would replace the image it is made from.
    #[error("the mask of `{}` would replace the image itself: write the masks into another folder with --masks DIR", image.display())]
    MaskIsImage {
        /// The image.
        image: PathBuf,
    },
    /// The model could not be compiled.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// The forward pass failed.
    #[error(transparent)]
    Inference(#[from] InferenceError),
    /// The gradient program failed.
    #[error(transparent)]
    Gradient(#[from] GradientError),
    /// An upstream gradient's array does not have its output's shape.
    #[error("`{path}` has shape {actual:?}, but the upstream gradient of output `{output}` for the input's {count} example{} has shape [{}]", if *.count == 1 { "" } else { "s" }, join(.expected))]
    UpstreamShape {
        /// The file.
        path: PathBuf,
        /// The output.
        output: String,
        /// The examples in the input.
        count: usize,
        /// The shape needed, the batch first.
        expected: Vec<usize>,
        /// The array's shape.
        actual: Vec<usize>,
    },
    /// The upstream gradients are not one per output.
    #[error("upstream gradients are given for [{}], but the model's outputs are [{}]: give one per output, each as NAME=FILE when there are several", .given.join(", "), .outputs.join(", "))]
    UpstreamOutputs {
        /// The outputs named (`?` for a file given without a name).
        given: Vec<String>,
        /// The model's outputs.
        outputs: Vec<String>,
    },
    /// Two results would go to the same file.
    #[error("two results would be written to `{path}` (an output and a weight's gradient have the same file name): rename the output or the layer")]
    Clash {
        /// The file.
        path: PathBuf,
    },
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

/// How [`predict_npy`] runs the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NpyOptions {
    /// Examples per batch.
    pub batch: usize,
    /// Inference or training mode. In training mode batchnorm normalises
    /// each batch with its own statistics, so the outputs depend on the
    /// batch size: Keras's `model(x, training=True)` takes the whole array
    /// as one batch.
    pub mode: Mode,
    /// Worker threads.
    pub threads: usize,
    /// The arithmetic of the convolutions and dense layers.
    pub precision: Precision,
}

/// Runs `model` with the weights in `weights` on the examples in `input`
/// (`[N, ...]` or one example) in batches of at most `options.batch`, in
/// `options.mode`, and writes each output to `output` (a model with several
/// outputs writes `output` with `.{name}` before the extension). Returns
/// the files written.
pub fn predict_npy(
    model: &TypedGraph,
    weights: &Path,
    input: &Path,
    output: &Path,
    options: NpyOptions,
) -> Result<Vec<PathBuf>, PredictError> {
    let store = weights::load_for(model, weights)?;
    let (values, _, count) = read_input(model, input)?;
    let batches = Batches {
        count,
        batch: options.batch.max(1),
        threads: options.threads,
        precision: options.precision,
    };
    let outputs = forward(model, store, &values, batches, options.mode)?;
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
        write_array(&path, &dims, values)?;
        written.push(path);
    }
    Ok(written)
}

/// The float32 array in `path`, flattened, with its shape.
fn read_array(path: &Path) -> Result<(Vec<f32>, Vec<usize>), PredictError> {
    check_npy_size(path)?;
    let bytes = std::fs::read(path).map_err(|e| PredictError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    read_npy_bytes(&bytes, path)
}

/// The float32 `.npy` array in `bytes` (the file at `path`, which only
/// names it in errors), flattened, with its shape: what `cnnc predict
/// --input` and `cnnc grad` read. A header that claims more values than the
/// bytes after it hold is refused before anything is allocated for them.
pub fn read_npy_bytes(bytes: &[u8], path: &Path) -> Result<(Vec<f32>, Vec<usize>), PredictError> {
    let fail = |message: String| PredictError::Read {
        path: path.to_path_buf(),
        message,
    };
    if let Some(len) = npy_header_len(&mut &bytes[..]).map_err(|e| fail(e.to_string()))? {
        let len = usize::try_from(len).unwrap_or(usize::MAX).min(bytes.len());
        check_npy_dict(&bytes[..len]).map_err(fail)?;
    }
    let mut data = bytes;
    let header = ndarray_npy::npy::header::Header::from_reader(&mut data)
        .map_err(|e| fail(e.to_string()))?;
    let needed = header
        .shape
        .iter()
        .try_fold(4usize, |bytes, &d| bytes.checked_mul(d));
    if needed.is_none_or(|needed| needed > data.len()) {
        return Err(fail(format!(
            "its header claims shape {:?} ({} bytes of float32), but only {} bytes follow it",
            header.shape,
            needed.map_or("more than 2^64".to_string(), |n| n.to_string()),
            data.len()
        )));
    }
    let array: ArrayD<f32> =
        ndarray_npy::ReadNpyExt::read_npy(bytes).map_err(|e| fail(e.to_string()))?;
    let shape = array.shape().to_vec();
    // A C-ordered array (NumPy's default) holds its values in order already:
    // taken without a copy, the input is in memory once.
    let values = if array.is_standard_layout() {
        array.into_raw_vec_and_offset().0
    } else {
        array.iter().copied().collect()
    };
    Ok((values, shape))
}

/// Refuses a .npy file whose header declares more values than the file
/// holds, or more than the memory cap allows as float32, before anything
/// is allocated from the header: the reader allocates the values its
/// header declares before it reads them. A file that is not .npy at all is
/// left to the reader to report.
fn check_npy_size(path: &Path) -> Result<(), PredictError> {
    let read_error = |message: String| PredictError::Read {
        path: path.to_path_buf(),
        message,
    };
    let mut file = std::fs::File::open(path).map_err(|e| read_error(e.to_string()))?;
    let file_len = file
        .metadata()
        .map_err(|e| read_error(e.to_string()))?
        .len();
    let Some(header_len) = npy_header_len(&mut file).map_err(|e| read_error(e.to_string()))? else {
        return Ok(());
    };
    if header_len > file_len {
        return Err(read_error(format!(
            "its header declares {header_len} bytes of header, but the file holds only {file_len}"
        )));
    }
    std::io::Seek::rewind(&mut file).map_err(|e| read_error(e.to_string()))?;
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, header_len), &mut text)
        .map_err(|e| read_error(e.to_string()))?;
    check_npy_dict(&text).map_err(read_error)?;
    let header = ndarray_npy::npy::header::Header::from_reader(&mut &text[..])
        .map_err(|e| read_error(e.to_string()))?;
    let values = header
        .shape
        .iter()
        .try_fold(1u128, |n, &d| n.checked_mul(d as u128))
        .unwrap_or(u128::MAX);
    let item = npy_item_size(&header.type_descriptor.to_string());
    let holds = file_len - header_len;
    let bytes = values.saturating_mul(item);
    if bytes > u128::from(holds) {
        return Err(PredictError::Truncated {
            path: path.to_path_buf(),
            shape: header.shape,
            values,
            bytes,
            holds,
        });
    }
    let cap = crate::limits::MemoryCap::current()?;
    let bytes = u64::try_from(values.saturating_mul(4)).unwrap_or(u64::MAX);
    if !cap.allows(bytes) {
        return Err(PredictError::OverCap {
            path: path.to_path_buf(),
            bytes,
            cap,
        });
    }
    Ok(())
}

/// Refuses a .npy header (`header`, its first bytes up to the end of its
/// dictionary) with more than one `{` outside its strings. The header is
/// one Python dictionary whose values hold none, and the parser that reads
/// it takes time exponential in the number of unclosed `{`: a fuzzed
/// header of 141 bytes with ten took 2.7 s.
fn check_npy_dict(header: &[u8]) -> Result<(), String> {
    let mut quote = None;
    let mut braces = 0;
    for &byte in header {
        match (quote, byte) {
            (Some(q), b) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => quote = Some(byte),
            (None, b'{') => braces += 1,
            (None, _) => {}
        }
    }
    if braces > 1 {
        return Err(format!(
            "its header holds {braces} `{{` where a .npy header is one dictionary"
        ));
    }
    Ok(())
}

/// The length of a .npy file's whole header (magic, version, length and
/// dictionary) as its first bytes declare it; `None` when the file does not
/// start like a .npy file of a version the reader knows.
fn npy_header_len(file: &mut impl std::io::Read) -> std::io::Result<Option<u64>> {
    let mut prefix = [0u8; 12];
    let mut filled = 0;
    while filled < prefix.len() {
        match file.read(&mut prefix[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    if filled < 10 || &prefix[..6] != b"\x93NUMPY" {
        return Ok(None);
    }
    // Version 1 declares the dictionary's length in two bytes, 2 and 3 in four.
    Ok(match prefix[6] {
        1 => Some(10 + u64::from(u16::from_le_bytes([prefix[8], prefix[9]]))),
        2 | 3 if filled == 12 => {
            let len = u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
            Some(12 + u64::from(len))
        }
        _ => None,
    })
}

/// The bytes of one value of a .npy type descriptor such as `'<f4'` (the
/// digits it ends with), 1 when it names none: the least a value can take.
fn npy_item_size(descriptor: &str) -> u128 {
    let descriptor = descriptor.trim_matches(|c| c == '\'' || c == '"');
    let digits = descriptor.trim_start_matches(|c: char| !c.is_ascii_digit());
    digits.parse().unwrap_or(1).max(1)
}

/// The examples in `path` (`[N, ...]` or one example of `model`'s input),
/// flattened, with the array's shape and how many examples there are.
fn read_input(
    model: &TypedGraph,
    path: &Path,
) -> Result<(Vec<f32>, Vec<usize>, usize), PredictError> {
    let (values, shape) = read_array(path)?;
    let example: Vec<usize> = model
        .input_shape()
        .map(|s| s.0.iter().map(|&d| d as usize).collect())
        .unwrap_or_default();
    let count = if shape == example {
        1
    } else if shape.len() == example.len() + 1 && shape[1..] == example[..] {
        shape[0]
    } else {
        return Err(PredictError::Shape {
            path: path.to_path_buf(),
            expected: example,
            actual: shape,
        });
    };
    Ok((values, shape, count))
}

/// Writes `values` as a float32 .npy array of shape `dims`.
fn write_array(path: &Path, dims: &[usize], values: Vec<f32>) -> Result<(), PredictError> {
    let write_error = |message: String| PredictError::Write {
        path: path.to_path_buf(),
        message,
    };
    let array =
        ArrayD::from_shape_vec(IxDyn(dims), values).map_err(|e| write_error(e.to_string()))?;
    ndarray_npy::write_npy(path, &array).map_err(|e| write_error(e.to_string()))
}

/// The files `cnnc grad` reads and where it writes.
#[derive(Debug, Clone, Copy)]
pub struct GradFiles<'a> {
    /// The weights (safetensors).
    pub weights: &'a Path,
    /// The input: float32 .npy of shape `[N, ...]` or one example.
    pub input: &'a Path,
    /// The upstream gradient of each output, float32 .npy of the output's
    /// shape over the `N` examples: `(None, file)` for a model's only
    /// output, or `(Some(output), file)` for each output.
    pub upstream: &'a [(Option<String>, PathBuf)],
    /// The folder the results go to (created when missing).
    pub out: &'a Path,
}

/// Runs the gradient program of `model` (the vector-Jacobian product of
/// [`crate::compile_gradients`]) in `mode` on every example of
/// `files.input` as one batch (so that batch statistics in training mode
/// are the whole array's, as in Keras), with the upstream gradients of
/// `files.upstream`, and writes into `files.out`: `output.npy` (or, for a
/// model with several outputs, `output.NAME.npy` per output), `input.npy`
/// (the input's gradient, in the input file's shape) and `WEIGHT.npy` per
/// trainable weight (its gradient, in the weight's own layout). Nothing is
/// written when an array does not fit. Returns the files written.
pub fn gradients_npy(
    model: &TypedGraph,
    files: GradFiles<'_>,
    mode: Mode,
    threads: usize,
) -> Result<Vec<PathBuf>, PredictError> {
    let store = weights::load_for(model, files.weights)?;
    let (input, input_shape, count) = read_input(model, files.input)?;
    let upstream = read_upstream(model, files.upstream, count)?;
    let compiled = crate::compile_gradients(model, mode, count)?;
    let mut program = Gradients::new(compiled, store, threads)?;
    let vjp = program.run(&input, &upstream)?;
    let several = vjp.outputs.len() > 1;
    let mut results: Vec<(PathBuf, Vec<usize>, Vec<f32>)> = Vec::new();
    for ((name, values), (_, shape)) in vjp.outputs.into_iter().zip(model.outputs()) {
        let file = if several {
            format!("output.{name}.npy")
        } else {
            "output.npy".to_string()
        };
        let dims = std::iter::once(count).chain(shape.iter().map(|&d| d as usize));
        results.push((files.out.join(file), dims.collect(), values));
    }
    results.push((files.out.join("input.npy"), input_shape, vjp.input));
    for (name, tensor) in vjp.weights.iter() {
        let path = files.out.join(format!("{name}.npy"));
        results.push((path, tensor.shape.clone(), tensor.data.clone()));
    }
    write_all(files.out, results)
}

/// Each output's upstream gradient, read from `given` and checked against
/// the output's shape over `count` examples.
fn read_upstream(
    model: &TypedGraph,
    given: &[(Option<String>, PathBuf)],
    count: usize,
) -> Result<Vec<(String, Vec<f32>)>, PredictError> {
    let outputs = model.outputs();
    let names: Vec<String> = outputs.iter().map(|(n, _)| n.clone()).collect();
    let mismatch = || PredictError::UpstreamOutputs {
        given: given
            .iter()
            .map(|(n, _)| n.clone().unwrap_or_else(|| "?".into()))
            .collect(),
        outputs: names.clone(),
    };
    let mut upstream = Vec::new();
    for (name, shape) in &outputs {
        let mut files = given.iter().filter(|(n, _)| match n {
            Some(n) => n == name,
            None => outputs.len() == 1,
        });
        let (Some((_, path)), None) = (files.next(), files.next()) else {
            return Err(mismatch());
        };
        let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        upstream.push((name.clone(), read_upstream_file(path, name, &shape, count)?));
    }
    if given.len() != outputs.len() {
        return Err(mismatch());
    }
    Ok(upstream)
}

/// The upstream gradient of output `output` (per-example shape `shape`) in
/// `path`: `[count, ...shape]`, or `shape` when there is one example.
fn read_upstream_file(
    path: &Path,
    output: &str,
    shape: &[usize],
    count: usize,
) -> Result<Vec<f32>, PredictError> {
    let (values, actual) = read_array(path)?;
    let expected: Vec<usize> = std::iter::once(count)
        .chain(shape.iter().copied())
        .collect();
    if actual == expected || (count == 1 && actual == shape) {
        return Ok(values);
    }
    Err(PredictError::UpstreamShape {
        path: path.to_path_buf(),
        output: output.to_string(),
        count,
        expected,
        actual,
    })
}

/// Writes each `(path, shape, values)` as .npy into `folder` (created when
/// missing), after checking that no two share a path.
fn write_all(
    folder: &Path,
    results: Vec<(PathBuf, Vec<usize>, Vec<f32>)>,
) -> Result<Vec<PathBuf>, PredictError> {
    let mut seen = std::collections::HashSet::new();
    if let Some((path, _, _)) = results.iter().find(|(p, _, _)| !seen.insert(p.clone())) {
        return Err(PredictError::Clash { path: path.clone() });
    }
    std::fs::create_dir_all(folder).map_err(|e| PredictError::Write {
        path: folder.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut written = Vec::new();
    for (path, shape, values) in results {
        write_array(&path, &shape, values)?;
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
    /// The arithmetic of the convolutions and dense layers.
    pub precision: Precision,
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
        precision,
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
    let batches = Batches {
        count: paths.len(),
        batch: paths.len().clamp(1, 256),
        threads,
        precision,
    };
    let outputs = forward(model, store, &values, batches, Mode::Inference)?;
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

/// The outputs of `batches.count` examples in `mode`, run in batches of
/// `batches.batch` (the last, smaller batch with its own program).
fn forward(
    model: &TypedGraph,
    store: TensorStore,
    values: &[f32],
    batches: Batches,
    mode: Mode,
) -> Result<Vec<(String, Vec<f32>)>, PredictError> {
    let per_example = values.len() / batches.count.max(1);
    let mut outputs: Vec<(String, Vec<f32>)> = model
        .outputs()
        .into_iter()
        .map(|(n, _)| (n, Vec::new()))
        .collect();
    let examples = |start: usize, size: usize| {
        values[start * per_example..(start + size) * per_example].to_vec()
    };
    run_in_batches_as::<PredictError>(model, &store, (batches, mode), examples, |_, results| {
        for (name, part) in results {
            if let Some((_, all)) = outputs.iter_mut().find(|(n, _)| *n == name) {
                all.extend(part);
            }
        }
    })?;
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

/// The class a row of scores predicts: the index of the largest, or for a
/// row of one (a sigmoid's probability of class 1) class 1 when it is
/// above one half, as Keras's `binary_accuracy` thresholds it.
pub fn predicted_class(row: &[f32]) -> usize {
    match row {
        [p] => usize::from(*p > 0.5),
        _ => arg_max(row),
    }
}

/// The index of the largest score (the first, on ties).
pub fn arg_max(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(0, |b, (j, &v)| if v > row[b] { j } else { b })
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
    /// The arithmetic of the convolutions and dense layers.
    pub precision: Precision,
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
    examples: impl FnMut(usize, usize) -> Vec<f32>,
    each: impl FnMut(usize, Vec<(String, Vec<f32>)>),
) -> Result<(), E> {
    run_in_batches_as(model, weights, (batches, Mode::Inference), examples, each)
}

/// Like [`run_in_batches`], the forward pass in `mode` (each batch of a
/// training-mode forward normalised with its own statistics).
pub fn run_in_batches_as<E: From<CompileError> + From<InferenceError>>(
    model: &TypedGraph,
    weights: &TensorStore,
    (batches, mode): (Batches, Mode),
    mut examples: impl FnMut(usize, usize) -> Vec<f32>,
    mut each: impl FnMut(usize, Vec<(String, Vec<f32>)>),
) -> Result<(), E> {
    let Batches {
        count,
        batch,
        threads,
        precision,
    } = batches;
    let batch = batch.max(1);
    let mut program: Option<Inference> = None;
    let mut start = 0;
    while start < count {
        let size = batch.min(count - start);
        if program.as_ref().is_none_or(|p| p.plan().batch != size) {
            let compiled = crate::compile_forward_in(model, mode, size, precision)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 1 `.npy` file: `header` padded to 64 bytes, then `data`.
    fn npy(header: &str, data: &[u8]) -> Vec<u8> {
        let padded = format!("{header:<117}\n");
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(padded.len() as u16).to_le_bytes());
        bytes.extend_from_slice(padded.as_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    fn header(shape: &str) -> String {
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}")
    }

    #[test]
    fn an_array_reads_with_its_shape() {
        let data: Vec<u8> = [1.0f32, -2.5]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let read = read_npy_bytes(&npy(&header("(2, 1)"), &data), Path::new("x.npy"));
        assert_eq!(
            read.map_err(|e| e.to_string()),
            Ok((vec![1.0, -2.5], vec![2, 1]))
        );
    }

    #[test]
    fn a_header_claiming_more_than_the_file_holds_is_refused_before_allocating() {
        // Issue 12: this aborted on an allocation of 3136000000000000 bytes.
        let bytes = npy(&header("(1000000000000, 28, 28, 1)"), &[0; 3072]);
        let error = read_npy_bytes(&bytes, Path::new("x.npy")).expect_err("refused");
        assert_eq!(
            error.to_string(),
            "cannot read `x.npy` as a float32 .npy array: its header claims shape \
             [1000000000000, 28, 28, 1] (3136000000000000 bytes of float32), but only \
             3072 bytes follow it"
        );
        let huge = npy(&header("(18446744073709551615, 2)"), &[]);
        let error = read_npy_bytes(&huge, Path::new("x.npy")).expect_err("refused");
        assert!(
            error.to_string().contains("(more than 2^64 bytes"),
            "{error}"
        );
    }

    /// Found by `fuzz/fuzz_targets/npy.rs`: a header with unclosed `{`s took
    /// the parser 2.7 s; it is refused before the parser sees it, the file
    /// and the bytes alike.
    #[test]
    fn a_header_with_nested_braces_is_refused_before_parsing() {
        let path = Path::new("tests/fuzzed/npy-timeout-unclosed-braces.npy");
        let bytes = std::fs::read(path).expect("the fuzzed file");
        let expected = "its header holds 10 `{` where a .npy header is one dictionary";
        let error = read_npy_bytes(&bytes, path).expect_err("refused");
        assert!(error.to_string().ends_with(expected), "{error}");
        let error = read_array(path).expect_err("refused");
        assert!(error.to_string().ends_with(expected), "{error}");
        // A `{` inside a string is not counted.
        let named = header("(2, 1)").replace("'descr'", "'{descr'");
        assert!(check_npy_dict(named.as_bytes()).is_ok());
    }
}
