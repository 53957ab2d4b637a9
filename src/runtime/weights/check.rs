//! The model check: whether a store holds exactly the weights a model
//! expects, with their shapes and finite values, and every way in which it
//! does not. A training checkpoint is read for the weights it holds.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

use super::error::WeightsError;
use super::file::load_file;
use super::initializers::specs;
use super::store::{Tensor, TensorStore};
use crate::diagnostics::did_you_mean;
use crate::shapes::TypedGraph;

/// The prefix under which a training checkpoint (`cnnc run`'s
/// `MODEL.checkpoint.safetensors`) stores the weights it would resume
/// from; its optimizer state and best weights are under `state:` and
/// `best:`, its counters in the metadata.
pub const CHECKPOINT_WEIGHTS: &str = "weight:";

/// How many problems a [`WeightsError::Mismatch`] lists before it counts
/// the rest.
pub const LISTED_PROBLEMS: usize = 10;

/// Reads the weights of `model` from `path` ([`load_file`]) and checks them:
/// every weight the model expects present with its shape, nothing else, and
/// every value finite.
///
/// A training checkpoint is accepted where weights are expected: its
/// weights (the `weight:` tensors, those a resumed run would start from)
/// are checked and returned, its optimizer state left aside.
///
/// All problems of names and shapes are reported at once, in one
/// [`WeightsError::Mismatch`]. A weight holding NaN or an infinity is
/// [`WeightsError::NonFinite`]: every command that computes with weights
/// refuses them, since one such value makes every output it reaches NaN;
/// [`load_file`] still reads such a file, for inspection. The returned
/// store follows the model's order (see [`specs`]) and keeps the file's
/// metadata.
pub fn load_for(model: &TypedGraph, path: &Path) -> Result<TensorStore, WeightsError> {
    let read = Read::new(model, path)?;
    if !read.problems.is_empty() {
        return Err(read.refused(model, path));
    }
    let TensorStore {
        tensors, metadata, ..
    } = read.loaded;
    let mut by_name: HashMap<String, Tensor> = tensors.into_iter().collect();
    let mut store: TensorStore = specs(model)
        .into_iter()
        .filter_map(|spec| by_name.remove_entry(&spec.name))
        .collect();
    store.metadata = metadata;
    check_finite(&store, path)?;
    Ok(store)
}

/// What [`load_initial`] took from a file, and what it left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initial {
    /// The model's weights read from the file.
    pub loaded: Vec<String>,
    /// The model's weights the file lacks: they keep their initializers
    /// (a new head, say).
    pub kept: Vec<String>,
    /// The file's tensors the model has no weight for (an old head).
    pub unused: Vec<String>,
}

/// The weights to start training from: `initial` (the model's
/// initializers) with every weight that `path` holds under the same name
/// replaced by the file's (fine-tuning, transfer learning). A weight the
/// file lacks keeps its initializer and a tensor the model lacks is left
/// out; both are listed in the returned [`Initial`]. A weight of another
/// shape is an error ([`WeightsError::Mismatch`], listing every problem):
/// a layer that changed (a head of other classes) must take another name
/// (`dense(10) as head`) to start afresh. So is a file of which no tensor
/// is a weight of the model (another model's), and a non-finite value.
pub fn load_initial(
    model: &TypedGraph,
    path: &Path,
    mut initial: TensorStore,
) -> Result<(TensorStore, Initial), WeightsError> {
    let read = Read::new(model, path)?;
    let misshapen = read
        .problems
        .iter()
        .any(|p| matches!(p, Problem::WrongShape { .. }));
    let unused: Vec<String> = read
        .problems
        .iter()
        .filter_map(|p| match p {
            Problem::Unexpected { name, .. } => Some(name.clone()),
            Problem::Missing { .. } | Problem::WrongShape { .. } => None,
        })
        .collect();
    if misshapen || unused.len() == read.loaded.len() {
        return Err(read.refused(model, path));
    }
    check_finite(&read.loaded, path)?;
    let TensorStore { tensors, .. } = read.loaded;
    let mut by_name: HashMap<String, Tensor> = tensors.into_iter().collect();
    let mut report = Initial {
        loaded: Vec::new(),
        kept: Vec::new(),
        unused,
    };
    for spec in specs(model) {
        match (by_name.remove(&spec.name), initial.get_mut(&spec.name)) {
            (Some(tensor), Some(slot)) => {
                *slot = tensor;
                report.loaded.push(spec.name);
            }
            _ => report.kept.push(spec.name),
        }
    }
    Ok((initial, report))
}

/// A weights file read for a model: its weights (a checkpoint's), and
/// how they differ from the model's.
struct Read {
    loaded: TensorStore,
    problems: Vec<Problem>,
    checkpoint: bool,
}

impl Read {
    fn new(model: &TypedGraph, path: &Path) -> Result<Read, WeightsError> {
        let file = load_file(path)?;
        let checkpoint = is_checkpoint(&file);
        let loaded = checkpoint_weights(file);
        let problems = mismatches(model, &loaded);
        Ok(Read {
            loaded,
            problems,
            checkpoint,
        })
    }

    /// The file refused for its problems.
    fn refused(self, model: &TypedGraph, path: &Path) -> WeightsError {
        WeightsError::Mismatch {
            path: path.to_path_buf(),
            model: model.graph.name.clone(),
            tensors: self.loaded.len(),
            problems: self.problems,
            checkpoint: self.checkpoint,
        }
    }
}

/// Whether `store` is a training checkpoint: it holds its weights under
/// [`CHECKPOINT_WEIGHTS`].
pub fn is_checkpoint(store: &TensorStore) -> bool {
    store.names().any(|n| n.starts_with(CHECKPOINT_WEIGHTS))
}

/// The weights of a training checkpoint, under their own names, with the
/// file's metadata; any other store as it is.
pub fn checkpoint_weights(store: TensorStore) -> TensorStore {
    if !is_checkpoint(&store) {
        return store;
    }
    let TensorStore {
        tensors, metadata, ..
    } = store;
    let mut weights: TensorStore = tensors
        .into_iter()
        .filter_map(|(name, t)| Some((name.strip_prefix(CHECKPOINT_WEIGHTS)?.to_string(), t)))
        .collect();
    weights.metadata = metadata;
    weights
}

/// The first value of `store` that is NaN or infinite, in the store's
/// order: [`WeightsError::NonFinite`] naming its tensor and index.
fn check_finite(store: &TensorStore, path: &Path) -> Result<(), WeightsError> {
    let bad = |t: &Tensor| t.data.iter().filter(|v| !v.is_finite()).count();
    let Some((name, tensor, first)) = store.iter().find_map(|(name, t)| {
        let first = t.data.iter().position(|v| !v.is_finite())?;
        Some((name, t, first))
    }) else {
        return Ok(());
    };
    Err(WeightsError::NonFinite {
        path: path.to_path_buf(),
        tensor: name.to_string(),
        index: unravel(first, &tensor.shape),
        value: tensor.data[first],
        count: bad(tensor),
        len: tensor.data.len(),
        tensors: store.iter().filter(|(_, t)| bad(t) > 0).count(),
    })
}

/// The index of element `flat` of a row-major array of `shape`.
fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (i, &d) in shape.iter().enumerate().rev() {
        let d = d.max(1);
        index[i] = flat % d;
        flat /= d;
    }
    index
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

/// The text of a [`WeightsError::Mismatch`]: what the file is, the
/// problems by kind, the first few of each side (the model's missing and
/// misshapen weights, the file's unexpected tensors) up to
/// [`LISTED_PROBLEMS`] with the count of the rest, and, when no tensor of
/// the file is a weight of the model, a line that says so.
pub(super) fn mismatch_text(
    path: &Path,
    model: &str,
    problems: &[Problem],
    tensors: usize,
    checkpoint: bool,
) -> String {
    let what = if checkpoint {
        "training checkpoint"
    } else {
        "weights file"
    };
    let count = |f: fn(&Problem) -> bool| problems.iter().filter(|p| f(p)).count();
    let missing = count(|p| matches!(p, Problem::Missing { .. }));
    let unexpected = count(|p| matches!(p, Problem::Unexpected { .. }));
    let misshapen = problems.len() - missing - unexpected;
    let kinds: Vec<String> = [
        (missing, "missing"),
        (unexpected, "unexpected"),
        (misshapen, "misshapen"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, kind)| format!("{n} {kind}"))
    .collect();
    let mut text = format!(
        "{what} `{}` does not fit model `{model}` ({} problem{}: {}):",
        path.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        kinds.join(", ")
    );
    // When no name matches, the file is another model's: a close name is
    // a coincidence, not a typo, and suggesting it would mislead.
    let none_match = tensors > 0 && unexpected == tensors;
    let shown = shown(problems);
    for p in &shown {
        match p {
            Problem::Unexpected { name, .. } if none_match => {
                text += &format!("\n  unexpected `{name}`");
            }
            _ => text += &format!("\n  {p}"),
        }
    }
    if shown.len() < problems.len() {
        text += &format!("\n  … and {} more", problems.len() - shown.len());
    }
    if none_match {
        let of = if checkpoint { "weights" } else { "tensors" };
        text += &format!(
            "\nnone of the {what}'s {tensors} {of} is a weight of model `{model}`: is it another model's?"
        );
    }
    text
}

/// The problems to list: up to half of [`LISTED_PROBLEMS`] from each side
/// (the model's, then the file's), more from one side when the other has
/// fewer, each side in its own order.
fn shown(problems: &[Problem]) -> Vec<&Problem> {
    let (file, model): (Vec<&Problem>, Vec<&Problem>) = problems
        .iter()
        .partition(|p| matches!(p, Problem::Unexpected { .. }));
    let from_file = file.len().min(LISTED_PROBLEMS / 2);
    let from_model = model.len().min(LISTED_PROBLEMS - from_file);
    let from_file = file.len().min(LISTED_PROBLEMS - from_model);
    model
        .into_iter()
        .take(from_model)
        .chain(file.into_iter().take(from_file))
        .collect()
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
