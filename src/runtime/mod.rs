//! The runtime: what a compiled model needs to run and train.
//!
//! [`weights`] holds named f32 tensors ([`weights::TensorStore`]): it
//! initialises a model's weights the way Keras would, and saves and loads
//! them as safetensors files, checked against the model they belong to.
//! [`executor`] runs compiled kernels over an arena on worker threads,
//! with results that do not depend on the number of threads; [`team`] is
//! the thread team it hands each kernel's parts to.

pub mod contraction;
pub mod executor;
pub mod inference;
pub mod kernels;
pub mod predict;
pub mod program;
pub mod team;
pub mod training;
pub mod weights;
