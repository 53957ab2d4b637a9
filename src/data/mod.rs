//! Data sets to train and evaluate models on.
//!
//! [`fashion`] reads Fashion-MNIST from its IDX files: the full set when it
//! is installed (or named with `--data DIR`), otherwise a small real subset
//! embedded in cnnc, and splits it into training, validation and test sets.

pub mod fashion;
