//! The runtime: runs compiled programs ([`crate::Compiled`]); it never
//! compiles.
//!
//! [`inference::Inference`], [`training::Trainer`] and
//! [`gradients::Gradients`] own a compiled program, its weights (and a
//! trainer its optimizer state), and lend them to the program's external
//! slots for each run ([`binding`]).
//! [`executor`] runs the program's kernels over an arena on worker threads,
//! with results that do not depend on the number of threads; [`team`] is
//! the thread team it hands each kernel's parts to. [`weights`] holds named
//! f32 tensors ([`weights::TensorStore`]): it initialises a model's weights
//! the way Keras would, and saves and loads them as safetensors files,
//! checked against the model they belong to.

pub mod binding;
pub mod denormals;
pub mod executor;
pub mod gradients;
pub mod inference;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod parallel;
pub mod team;
pub mod training;
pub mod weights;
