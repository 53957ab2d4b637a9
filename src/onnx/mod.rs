//! ONNX interchange: a typed model and its weights written as an ONNX
//! model (opset 17) that any ONNX runtime reads.
//!
//! The model keeps cnnc's NHWC interface: the input is `[batch, h, w, c]`
//! (the batch symbolic) and so is every feature-map output; inside, feature
//! maps are NCHW, as ONNX's convolutions and poolings want, with one
//! transpose at the input and one per feature-map output (and one before a
//! flatten, so that a dense layer after it reads the elements in cnnc's
//! order). Weights are permuted into ONNX's layouts once, when written.
//! Node names are the layer paths (`stage2.residual_unit1.conv1`).

mod export;
mod proto;

pub use export::{export, ExportError, ExportOptions, OPSET};
