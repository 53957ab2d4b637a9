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
pub mod import;
mod proto;

pub use export::{export, ExportError, ExportOptions, OPSET};
pub use import::{import, ImportError, ImportOptions, Imported};

/// `data` of `shape` with its axes permuted by `perm` (output axis `k` is
/// input axis `perm[k]`), and the permuted shape. `data` must hold the
/// product of `shape` elements.
pub(crate) fn permute(data: &[f32], shape: &[usize], perm: &[usize]) -> (Vec<f32>, Vec<i64>) {
    let rank = shape.len();
    let mut strides = vec![1usize; rank];
    for k in (0..rank.saturating_sub(1)).rev() {
        strides[k] = strides[k + 1] * shape[k + 1];
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let mut out = Vec::with_capacity(data.len());
    let mut index = vec![0usize; rank];
    for _ in 0..data.len() {
        let offset: usize = (0..rank).map(|k| index[k] * strides[perm[k]]).sum();
        out.push(data[offset]);
        // The next output index, last axis fastest.
        for k in (0..rank).rev() {
            index[k] += 1;
            if index[k] < out_shape[k] {
                break;
            }
            index[k] = 0;
        }
    }
    (out, out_shape.iter().map(|&d| d as i64).collect())
}
