//! Named f32 tensors: a model's weights (later also its gradients and
//! optimizer state), their initial values, and safetensors files.
//!
//! [`init`] gives every weight of a model its starting value the way Keras
//! would, deterministically from a seed; [`save`] writes a [`TensorStore`]
//! atomically; [`load_file`] reads any safetensors file of f32 tensors, and
//! [`load_for`] also checks it against a model, reporting every missing,
//! unexpected and misshapen weight at once and refusing NaN and infinities
//! (it reads a training checkpoint's weights as well).
//!
//! The pieces, each in its own file, build on one another:
//!
//! - `store`: [`Tensor`] and [`TensorStore`], the values everything else
//!   reads and writes;
//! - `initializers`: [`specs`], the weights a model expects (names, shapes,
//!   initializers), and [`init`], which fills them from per-name random
//!   streams;
//! - `file`: the safetensors format, [`save`] and [`load_file`], which know
//!   nothing of models, and the atomic write under [`save`]
//!   ([`write_atomically`]);
//! - `check`: [`load_for`] and [`mismatches`], which hold a store against a
//!   model's [`specs`] and describe each [`Problem`];
//! - `classes`: the class names trained weights carry in their metadata
//!   ([`CLASS_NAMES_KEY`]);
//! - `error`: [`WeightsError`], the one error type of the file and the check.

mod check;
mod classes;
mod error;
mod file;
mod initializers;
mod store;

pub use check::{
    checkpoint_weights, is_checkpoint, load_for, load_initial, mismatches, Initial, Problem,
    CHECKPOINT_WEIGHTS, LISTED_PROBLEMS,
};
pub use classes::{class_names, set_class_names, CLASS_NAMES_KEY};
pub use error::WeightsError;
pub use file::{
    exit_between_writes, load_bytes, load_file, remove_stale_temporaries, save, write_atomically,
};
pub use initializers::{init, specs, WeightSpec};
pub use store::{Tensor, TensorStore};
