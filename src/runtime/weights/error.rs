//! Why weights could not be saved or loaded: one error type for the file
//! and the model check, so that callers handle a single `Result`.

use std::io;
use std::path::PathBuf;

use safetensors::{Dtype, SafeTensorError};

use super::check::{mismatch_text, Problem};

/// Why weights could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file could not be read.
    #[error("cannot read weights file `{}`: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The file (or its temporary sibling) could not be written.
    #[error("cannot write weights file `{}`: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The file is not a well-formed safetensors file.
    #[error("`{}` is not a valid safetensors file: {source}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What safetensors found wrong.
        source: SafeTensorError,
    },
    /// A tensor of the file is not F32.
    #[error("tensor `{tensor}` in `{}` has dtype {dtype}, but cnnc reads only F32 weights", path.display())]
    Dtype {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// Its dtype.
        dtype: Dtype,
    },
    /// A tensor to save holds a number of elements its shape does not call for.
    #[error("cannot save tensor `{tensor}` to `{}`: its shape {shape:?} does not fit its {len} elements", path.display())]
    Inconsistent {
        /// The file it was to be saved to.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// Its shape.
        shape: Vec<usize>,
        /// The length of its data.
        len: usize,
    },
    /// safetensors could not lay out the file (a header over its size limit).
    #[error("cannot encode weights for `{}`: {source}", path.display())]
    Encode {
        /// The file it was to be saved to.
        path: PathBuf,
        /// What safetensors said.
        source: SafeTensorError,
    },
    /// The file's tensors do not fit the model's weights.
    #[error("{}", mismatch_text(path, model, problems, *tensors, *checkpoint))]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The model's name.
        model: String,
        /// Every problem found, in the order of [`mismatches`](super::mismatches).
        problems: Vec<Problem>,
        /// The tensors of the file compared (a checkpoint's weights).
        tensors: usize,
        /// Whether the file is a training checkpoint.
        checkpoint: bool,
    },
    /// A weight holds NaN or an infinity.
    #[error(
        "weights file `{}`: weight `{tensor}` holds {value} at index {index:?} ({count} of its {len} values {} NaN \
         or infinite{}): did the run that wrote it diverge? (help: train again with a lower learning rate, or from \
         an earlier checkpoint)",
        path.display(),
        if *count == 1 { "is" } else { "are" },
        match tensors - 1 {
            0 => String::new(),
            1 => "; so does 1 other weight".to_string(),
            others => format!("; so do {others} other weights"),
        }
    )]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The first weight holding one, in the model's order.
        tensor: String,
        /// The index of its first such value.
        index: Vec<usize>,
        /// That value.
        value: f32,
        /// How many of its values are not finite.
        count: usize,
        /// How many values it has.
        len: usize,
        /// How many weights hold such values.
        tensors: usize,
    },
}
