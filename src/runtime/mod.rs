//! The runtime: what a compiled model needs to run and train.
//!
//! [`weights`] holds named f32 tensors ([`weights::TensorStore`]): it
//! initialises a model's weights the way Keras would, and saves and loads
//! them as safetensors files, checked against the model they belong to.

pub mod weights;
