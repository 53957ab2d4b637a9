//! The model check: whether a store holds exactly the weights a model
//! expects, with their shapes, and every way in which it does not.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

use super::error::WeightsError;
use super::file::load_file;
use super::initializers::specs;
use super::store::{Tensor, TensorStore};
use crate::diagnostics::did_you_mean;
use crate::shapes::TypedGraph;

/// Reads the weights of `model` from `path` ([`load_file`]) and checks them:
/// every weight the model expects present with its shape, and nothing else.
///
/// All problems are reported at once, in one [`WeightsError::Mismatch`]. The
/// returned store follows the model's order (see [`specs`]) and keeps the
/// file's metadata.
pub fn load_for(model: &TypedGraph, path: &Path) -> Result<TensorStore, WeightsError> {
    let loaded = load_file(path)?;
    let problems = mismatches(model, &loaded);
    if !problems.is_empty() {
        return Err(WeightsError::Mismatch {
            path: path.to_path_buf(),
            model: model.graph.name.clone(),
            problems,
        });
    }
    let TensorStore {
        tensors, metadata, ..
    } = loaded;
    let mut by_name: HashMap<String, Tensor> = tensors.into_iter().collect();
    let mut store: TensorStore = specs(model)
        .into_iter()
        .filter_map(|spec| by_name.remove_entry(&spec.name))
        .collect();
    store.metadata = metadata;
    Ok(store)
}

/// What is wrong with `store` as the weights of `model`: the weights that
/// are missing or have another shape, in the model's order, then the
/// unexpected ones, in the store's order. Empty when it fits.
pub fn mismatches(model: &TypedGraph, store: &TensorStore) -> Vec<Problem> {
    let specs = specs(model);
    let mut problems = Vec::new();
    let mut missing = Vec::new();
    for spec in &specs {
        match store.get(&spec.name) {
            None => {
                missing.push(spec.name.as_str());
                problems.push(Problem::Missing {
                    name: spec.name.clone(),
                    shape: spec.shape.clone(),
                });
            }
            Some(t) if t.shape != spec.shape => problems.push(Problem::WrongShape {
                name: spec.name.clone(),
                found: t.shape.clone(),
                expected: spec.shape.clone(),
            }),
            Some(_) => {}
        }
    }
    let expected: HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    for name in store.names().filter(|n| !expected.contains(n)) {
        problems.push(Problem::Unexpected {
            name: name.to_string(),
            did_you_mean: did_you_mean(name, missing.iter().copied()).map(str::to_string),
        });
    }
    problems
}

/// One way in which a file's tensors differ from a model's weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The model has this weight; the file does not.
    Missing {
        /// The weight's full name.
        name: String,
        /// The shape the model needs.
        shape: Vec<usize>,
    },
    /// The file has this tensor; the model has no such weight.
    Unexpected {
        /// The tensor's name.
        name: String,
        /// A missing weight with a close name, when one exists.
        did_you_mean: Option<String>,
    },
    /// Both have it, with different shapes.
    WrongShape {
        /// The weight's full name.
        name: String,
        /// The shape in the file.
        found: Vec<usize>,
        /// The shape the model needs.
        expected: Vec<usize>,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing { name, shape } => write!(f, "missing `{name}` {shape:?}"),
            Problem::Unexpected { name, did_you_mean } => {
                write!(f, "unexpected `{name}`")?;
                match did_you_mean {
                    Some(close) => write!(f, " (did you mean `{close}`?)"),
                    None => Ok(()),
                }
            }
            Problem::WrongShape {
                name,
                found,
                expected,
            } => {
                write!(
                    f,
                    "`{name}` has shape {found:?} but the model needs {expected:?}"
                )?;
                f.write_str(layout_hint(found, expected).unwrap_or(""))
            }
        }
    }
}

/// The problems, one per indented line.
pub(super) fn list(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("\n  {p}")).collect()
}

/// A hint when a shape is an expected one in another framework's layout:
/// PyTorch stores conv kernels `[out, in, kh, kw]` and linear weights `[out, in]`.
fn layout_hint(found: &[usize], expected: &[usize]) -> Option<&'static str> {
    match *expected {
        [kh, kw, input, output] if found == [output, input, kh, kw] => {
            Some(" (PyTorch's [out, in, kh, kw] layout? cnnc's is [kh, kw, in, out])")
        }
        [input, output] if found == [output, input] => Some(" (transposed? cnnc's is [in, out])"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_problems_hint_at_other_layouts() {
        let torch = Problem::WrongShape {
            name: "conv1.kernel".into(),
            found: vec![64, 1, 7, 7],
            expected: vec![7, 7, 1, 64],
        };
        assert_eq!(
            torch.to_string(),
            "`conv1.kernel` has shape [64, 1, 7, 7] but the model needs [7, 7, 1, 64] \
             (PyTorch's [out, in, kh, kw] layout? cnnc's is [kh, kw, in, out])"
        );
        let other = Problem::WrongShape {
            name: "dense1.kernel".into(),
            found: vec![10, 5],
            expected: vec![2304, 128],
        };
        assert_eq!(
            other.to_string(),
            "`dense1.kernel` has shape [10, 5] but the model needs [2304, 128]"
        );
    }
}
