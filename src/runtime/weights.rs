//! Named f32 tensors: a model's weights (later also its gradients and
//! optimizer state), their initial values, and safetensors files.
//!
//! [`init`] gives every weight of a model its starting value the way Keras
//! would, deterministically from a seed; [`save`] writes a [`TensorStore`]
//! atomically; [`load_file`] reads any safetensors file of f32 tensors, and
//! [`load_for`] also checks it against a model, reporting every missing,
//! unexpected and misshapen weight at once.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensorError, SafeTensors, View};

use crate::diagnostics::did_you_mean;
use crate::graph::{Init, Param, Slice};
use crate::shapes::TypedGraph;

/// A dense f32 tensor, its elements in row-major (C) order.
///
/// `data.len()` should equal the product of `shape` (1 for a scalar, shape
/// `[]`); [`save`] refuses a tensor whose data does not fit its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// The size of each axis, outermost first, in the seed's layouts (conv
    /// kernels `[kh, kw, in, out]`, dense kernels `[in, out]`).
    pub shape: Vec<usize>,
    /// The elements, row-major.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor of `shape` filled with zeros.
    pub fn zeros(shape: Vec<usize>) -> Self {
        let elements = shape.iter().product();
        Tensor {
            shape,
            data: vec![0.0; elements],
        }
    }
}

/// Named f32 tensors: a model's weights, and later also gradients and
/// optimizer state.
///
/// Iteration follows insertion order; replacing a tensor keeps its place.
/// Names are unique.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TensorStore {
    tensors: Vec<(String, Tensor)>,
    index: HashMap<String, usize>,
    /// Free-form string pairs, saved as the safetensors header's `__metadata__`.
    pub metadata: BTreeMap<String, String>,
}

impl TensorStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `tensor` under `name`, at the end; when `name` is already
    /// present, replaces its tensor in place and returns the old one.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) -> Option<Tensor> {
        let name = name.into();
        match self.index.get(&name) {
            Some(&i) => Some(std::mem::replace(&mut self.tensors[i].1, tensor)),
            None => {
                self.index.insert(name.clone(), self.tensors.len());
                self.tensors.push((name, tensor));
                None
            }
        }
    }

    /// The tensor named `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.index.get(name).map(|&i| &self.tensors[i].1)
    }

    /// The tensor named `name`, mutably, if any.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Tensor> {
        self.index.get(name).map(|&i| &mut self.tensors[i].1)
    }

    /// Whether a tensor is named `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The names, in insertion order.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.tensors.iter().map(|(name, _)| name.as_str())
    }

    /// The number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the store holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Names and tensors, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> + '_ {
        self.tensors.iter().map(|(name, t)| (name.as_str(), t))
    }

    /// Names and mutable tensors, in insertion order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut Tensor)> + '_ {
        self.tensors.iter_mut().map(|(name, t)| (name.as_str(), t))
    }
}

impl FromIterator<(String, Tensor)> for TensorStore {
    /// Inserts the pairs in order (a repeated name replaces the earlier tensor).
    fn from_iter<I: IntoIterator<Item = (String, Tensor)>>(pairs: I) -> Self {
        let mut store = TensorStore::new();
        for (name, tensor) in pairs {
            store.insert(name, tensor);
        }
        store
    }
}

/// One weight a model expects.
#[derive(Debug, Clone)]
pub struct WeightSpec<'a> {
    /// Its full name, `{node.name}.{param.name}`: `stage2.residual_unit1.conv1.kernel`.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// The parameter it comes from: trainability and initializer.
    pub param: &'a Param,
}

/// Every weight of `model`, in graph order: nodes as in `model.order`, each
/// node's parameters in their declared order.
pub fn specs(model: &TypedGraph) -> Vec<WeightSpec<'_>> {
    let mut specs = Vec::new();
    for &id in &model.order {
        let node = &model.graph.nodes[id];
        for param in &node.params {
            specs.push(WeightSpec {
                name: format!("{}.{}", node.name, param.name),
                // Shapes that do not fit in memory fail to allocate anyway.
                shape: param
                    .shape
                    .iter()
                    .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
                    .collect(),
                param,
            });
        }
    }
    specs
}

/// Every weight of every node of `model`, in graph order (see [`specs`]),
/// set by its initializer with Keras' semantics.
///
/// Each tensor draws from its own ChaCha8 stream: the key is `seed`, the
/// stream number the FNV-1a hash of the weight's full name. The values
/// therefore depend only on the seed, the name, the shape and the
/// initializer: not on the order of initialisation nor on the number of
/// threads, and the same seed gives bitwise the same weights. The metadata
/// is left empty.
pub fn init(model: &TypedGraph, seed: u64) -> TensorStore {
    let specs = specs(model);
    let tensors: Vec<Tensor> = specs
        .par_iter()
        .map(|spec| init_tensor(&spec.name, &spec.shape, &spec.param.init, seed))
        .collect();
    specs
        .into_iter()
        .zip(tensors)
        .map(|(spec, tensor)| (spec.name, tensor))
        .collect()
}

/// Writes `store` to `path` as a safetensors file: dtype F32, the shapes as
/// given, the metadata kept (tensors are stored sorted by name, as
/// safetensors does).
///
/// The write is atomic: the bytes go to a temporary file in the same folder,
/// which is flushed to disk and then renamed over `path`, so a crash leaves
/// either the previous file or the new one, never a torn one; the folder is
/// then synced where the platform allows. A tensor whose data does not fit
/// its shape is refused before anything is written.
pub fn save(store: &TensorStore, path: &Path) -> Result<(), WeightsError> {
    let bytes = encode(store, path)?;
    write_atomically(path, &bytes).map_err(|source| WeightsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads any safetensors file whose tensors are all F32, in the file's order
/// (by data offset), with its metadata.
///
/// Fails with [`WeightsError::Read`] when the file cannot be read,
/// [`WeightsError::Format`] when it is not a well-formed safetensors file
/// (too short, truncated, a corrupt header), and [`WeightsError::Dtype`] for
/// a tensor of another dtype. It does not panic on any input bytes.
pub fn load_file(path: &Path) -> Result<TensorStore, WeightsError> {
    let bytes = fs::read(path).map_err(|source| WeightsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    decode(&bytes, path)
}

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
    #[error(
        "weights file `{}` does not fit model `{model}` ({} problem{}):{}",
        path.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        list(problems)
    )]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The model's name.
        model: String,
        /// Every problem found, in the order of [`mismatches`].
        problems: Vec<Problem>,
    },
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
fn list(problems: &[Problem]) -> String {
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

/// The standard deviation of a standard normal truncated to [-2, 2]. Keras'
/// `VarianceScaling` divides its truncated normal's stddev by it, so that the
/// values, after truncation, have the intended standard deviation.
const TRUNCATED_NORMAL_STDDEV: f64 = 0.879_625_661_034_239_8;

/// Keras' `VarianceScaling`, of which glorot, he and lecun are instances.
struct VarianceScaling {
    scale: f64,
    mode: FanMode,
    distribution: Sampling,
}

/// Which fan divides the scale.
enum FanMode {
    FanIn,
    FanAvg,
}

/// The distribution the values are drawn from.
enum Sampling {
    /// U(-limit, limit), limit = sqrt(3 scale).
    Uniform,
    /// N(0, sqrt(scale) / 0.8796...), re-drawn beyond 2 of its stddevs.
    TruncatedNormal,
}

/// The values of one weight, drawn from its own stream.
fn init_tensor(name: &str, shape: &[usize], init: &Init, seed: u64) -> Tensor {
    let mut rng = stream(seed, name);
    Tensor {
        shape: shape.to_vec(),
        data: fill(init, shape, &mut rng),
    }
}

/// The random stream of the weight `name`: ChaCha8 keyed by `seed`, on the
/// stream numbered by the name's FNV-1a hash. Changing this changes every
/// model's initial weights.
fn stream(seed: u64, name: &str) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(fnv1a(name.as_bytes()));
    rng
}

/// 64-bit FNV-1a: stable across platforms, builds and runs, unlike std's
/// randomly keyed hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(PRIME)
    })
}

/// The row-major values of a weight of `shape` under `init`.
fn fill(init: &Init, shape: &[usize], rng: &mut ChaCha8Rng) -> Vec<f32> {
    use FanMode::*;
    use Sampling::*;
    let keras = |scale, mode, distribution| VarianceScaling {
        scale,
        mode,
        distribution,
    };
    match init {
        Init::GlorotUniform => keras(1.0, FanAvg, Uniform).sample(shape, rng),
        Init::HeNormal => keras(2.0, FanIn, TruncatedNormal).sample(shape, rng),
        Init::HeUniform => keras(2.0, FanIn, Uniform).sample(shape, rng),
        Init::LecunNormal => keras(1.0, FanIn, TruncatedNormal).sample(shape, rng),
        Init::Zeros => vec![0.0; shape.iter().product()],
        Init::Ones => vec![1.0; shape.iter().product()],
        Init::Set(base, entries) => {
            let mut data = fill(base, shape, rng);
            for (slices, value) in entries {
                set_entries(&mut data, shape, slices, *value as f32);
            }
            data
        }
    }
}

impl VarianceScaling {
    /// Keras' `VarianceScaling.__call__`: the scale divided by the fan (at
    /// least 1), then a uniform or truncated normal of that variance.
    fn sample(&self, shape: &[usize], rng: &mut ChaCha8Rng) -> Vec<f32> {
        let (fan_in, fan_out) = fans(shape);
        let fan = match self.mode {
            FanMode::FanIn => fan_in as f64,
            FanMode::FanAvg => (fan_in as f64 + fan_out as f64) / 2.0,
        };
        let scale = self.scale / fan.max(1.0);
        let elements: usize = shape.iter().product();
        match self.distribution {
            Sampling::Uniform => {
                let limit = (3.0 * scale).sqrt();
                (0..elements)
                    .map(|_| (limit * (2.0 * rng.random::<f64>() - 1.0)) as f32)
                    .collect()
            }
            Sampling::TruncatedNormal => {
                let stddev = scale.sqrt() / TRUNCATED_NORMAL_STDDEV;
                (0..elements)
                    .map(|_| (stddev * truncated_standard_normal(rng)) as f32)
                    .collect()
            }
        }
    }
}

/// A standard normal value, re-drawn until it lies within [-2, 2].
fn truncated_standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    loop {
        let z: f64 = StandardNormal.sample(rng);
        if z.abs() <= 2.0 {
            return z;
        }
    }
}

/// Keras' `compute_fans`: `[in, out]` for a dense kernel; for a conv kernel
/// `[kh, kw, in, out]` the receptive field `kh * kw` times `in` and `out`;
/// the size for both of a vector, and 1 for a scalar.
fn fans(shape: &[usize]) -> (usize, usize) {
    match *shape {
        [] => (1, 1),
        [size] => (size, size),
        [fan_in, fan_out] => (fan_in, fan_out),
        [ref receptive @ .., input, output] => {
            let field: usize = receptive.iter().product();
            (field * input, field * output)
        }
    }
}

/// Sets the elements of `data` (row-major, of `shape`) that `slices` select
/// to `value`. Shape inference checked that the slices fit the shape
/// (`shapes::check_init`); here they are clamped to it all the same, so that
/// a graph built by other means cannot index out of bounds.
fn set_entries(data: &mut [f32], shape: &[usize], slices: &[Slice], value: f32) {
    if slices.len() != shape.len() || data.len() != shape.iter().product::<usize>() {
        return;
    }
    let ranges: Vec<Range<usize>> = slices
        .iter()
        .zip(shape)
        .map(|(&slice, &dim)| axis_range(slice, dim))
        .collect();
    if ranges.iter().any(|r| r.is_empty()) {
        return;
    }
    let mut strides = vec![1; shape.len()];
    for axis in (0..shape.len().saturating_sub(1)).rev() {
        strides[axis] = strides[axis + 1] * shape[axis + 1];
    }
    // An odometer over the selected indices, the last axis turning fastest.
    let mut index: Vec<usize> = ranges.iter().map(|r| r.start).collect();
    loop {
        let offset: usize = index.iter().zip(&strides).map(|(i, s)| i * s).sum();
        data[offset] = value;
        let mut axis = ranges.len();
        loop {
            if axis == 0 {
                return;
            }
            axis -= 1;
            index[axis] += 1;
            if index[axis] < ranges[axis].end {
                break;
            }
            index[axis] = ranges[axis].start;
        }
    }
}

/// The indices of an axis of size `dim` that `slice` selects, clamped to it.
fn axis_range(slice: Slice, dim: usize) -> Range<usize> {
    let clamp = |i: u64| usize::try_from(i).unwrap_or(usize::MAX).min(dim);
    match slice {
        Slice::All => 0..dim,
        Slice::At(i) => clamp(i)..clamp(i.saturating_add(1)),
        Slice::Range(start, end) => clamp(start)..clamp(end),
    }
}

/// A tensor as safetensors sees it: F32, little-endian.
struct F32View<'a>(&'a Tensor);

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    fn data_len(&self) -> usize {
        self.0.data.len() * size_of::<f32>()
    }
}

/// The bytes of the safetensors file of `store` (to be written to `path`).
fn encode(store: &TensorStore, path: &Path) -> Result<Vec<u8>, WeightsError> {
    // safetensors trusts `data_len`; a tensor whose data does not fit its
    // shape would make a file no reader accepts.
    for (name, tensor) in store.iter() {
        let elements = tensor
            .shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d));
        if elements != Some(tensor.data.len()) {
            return Err(WeightsError::Inconsistent {
                path: path.to_path_buf(),
                tensor: name.to_string(),
                shape: tensor.shape.clone(),
                len: tensor.data.len(),
            });
        }
    }
    let metadata = (!store.metadata.is_empty()).then(|| {
        store
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    });
    let views = store.iter().map(|(name, tensor)| (name, F32View(tensor)));
    safetensors::serialize(views, metadata).map_err(|source| WeightsError::Encode {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to a new temporary file next to `path`, syncs it, renames
/// it over `path` and syncs the folder. On failure the temporary file is
/// removed and `path` is untouched.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let (temp, file) = create_temp(folder, path)?;
    let written = write_and_sync(file, bytes).and_then(|()| fs::rename(&temp, path));
    if let Err(e) = written {
        // Best effort: the write already failed, and that is the error to report.
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    sync_folder(folder);
    Ok(())
}

/// Writes `bytes` to `file`, flushes them to disk and closes it.
fn write_and_sync(mut file: fs::File, bytes: &[u8]) -> io::Result<()> {
    file.write_all(bytes)?;
    file.sync_all()
}

/// Creates a file in `folder` with a name no other writer uses: the target's
/// name, this process's id and a counter, never overwriting an existing file.
fn create_temp(folder: &Path, path: &Path) -> io::Result<(PathBuf, fs::File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let stem = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?
        .to_string_lossy();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = folder.join(format!(".{stem}.{}.{n}.tmp", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => return Ok((temp, file)),
            // A leftover of a crashed run with the same pid: try the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Makes the rename durable where directories can be synced (Unix). A
/// failure is ignored: the new file is already complete on disk, and at
/// worst a power cut brings back the previous file, which is also whole.
fn sync_folder(folder: &Path) {
    #[cfg(unix)]
    if let Ok(dir) = fs::File::open(folder) {
        let _ = dir.sync_all();
    }
    #[cfg(not(unix))]
    let _ = folder;
}

/// The tensors and metadata of the safetensors file `bytes` (read from `path`).
fn decode(bytes: &[u8], path: &Path) -> Result<TensorStore, WeightsError> {
    let format = |source| WeightsError::Format {
        path: path.to_path_buf(),
        source,
    };
    if offsets_overflow(bytes) {
        return Err(format(SafeTensorError::ValidationOverflow));
    }
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(format)?;
    let file = SafeTensors::deserialize(bytes).map_err(format)?;
    let mut store = TensorStore::new();
    for name in header.offset_keys() {
        let view = file.tensor(&name).map_err(format)?;
        if view.dtype() != Dtype::F32 {
            return Err(WeightsError::Dtype {
                path: path.to_path_buf(),
                tensor: name,
                dtype: view.dtype(),
            });
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        store.insert(
            name,
            Tensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    if let Some(metadata) = header.metadata() {
        store.metadata = metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
    }
    Ok(store)
}

/// Whether the JSON header of the safetensors file `bytes` holds an integer
/// so large that adding the header's length to it overflows. safetensors 0.8's
/// `read_metadata` adds the end of the data (the last data offset) to the
/// header's length unchecked: a panic in debug builds, and in release builds
/// a wrapped sum that can pass its size check and make a later slice panic.
/// No well-formed file has such an offset. Digits inside strings (metadata
/// values, names) are skipped; a file too short to hold its header is left
/// to safetensors, which reports it without overflowing.
fn offsets_overflow(bytes: &[u8]) -> bool {
    let Some(&length) = bytes.first_chunk::<8>() else {
        return false;
    };
    let Some(header) = usize::try_from(u64::from_le_bytes(length))
        .ok()
        .and_then(|n| bytes.get(8..n.checked_add(8)?))
    else {
        return false;
    };
    let limit = (usize::MAX - 8 - header.len()) as u128;
    let mut number: u128 = 0;
    let (mut in_string, mut escaped) = (false, false);
    for &b in header {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if b.is_ascii_digit() {
            number = number
                .saturating_mul(10)
                .saturating_add(u128::from(b - b'0'));
            if number > limit {
                return true;
            }
        } else {
            number = 0;
            in_string = b == b'"';
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mean and the (population) standard deviation of `values`.
    fn stats(values: &[f32]) -> (f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let variance = values
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean, variance.sqrt())
    }

    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    fn max_abs(values: &[f32]) -> f32 {
        values.iter().fold(0.0, |m: f32, v| m.max(v.abs()))
    }

    /// Checks a random initializer's values: the mean within 6 standard
    /// errors of 0, the standard deviation within 1.5% of `stddev` (its
    /// standard error is about 0.3% at these sizes).
    fn assert_moments(values: &[f32], stddev: f64) {
        let (mean, std) = stats(values);
        let standard_error = stddev / (values.len() as f64).sqrt();
        assert!(mean.abs() < 6.0 * standard_error, "mean {mean}");
        assert!(
            (std / stddev - 1.0).abs() < 0.015,
            "std {std}, expected {stddev}"
        );
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn fans_follow_keras_compute_fans() {
        assert_eq!(fans(&[7, 7, 1, 64]), (49, 49 * 64));
        assert_eq!(fans(&[3, 3, 32, 2]), (288, 18));
        assert_eq!(fans(&[2304, 128]), (2304, 128));
        assert_eq!(fans(&[10]), (10, 10));
        assert_eq!(fans(&[]), (1, 1));
    }

    #[test]
    fn he_normal_has_keras_stddev_after_truncation() {
        let shape = [3, 3, 64, 128];
        let t = init_tensor("w", &shape, &Init::HeNormal, 7);
        let stddev = (2.0f64 / 576.0).sqrt();
        assert_moments(&t.data, stddev);
        // Values are re-drawn beyond 2 stddevs of the untruncated normal,
        // whose stddev Keras scales up by 1 / 0.8796...
        let bound = (2.0 * stddev / TRUNCATED_NORMAL_STDDEV) as f32;
        let max = max_abs(&t.data);
        assert!(max <= bound, "{max} beyond {bound}");
        assert!(max > 0.99 * bound, "{max} never nears {bound}");
    }

    #[test]
    fn lecun_normal_uses_one_over_fan_in() {
        let t = init_tensor("w", &[256, 200], &Init::LecunNormal, 7);
        let stddev = (1.0f64 / 256.0).sqrt();
        assert_moments(&t.data, stddev);
        assert!(max_abs(&t.data) <= (2.0 * stddev / TRUNCATED_NORMAL_STDDEV) as f32);
    }

    #[test]
    fn glorot_uniform_spans_its_limit() {
        let shape = [3, 3, 64, 128];
        let t = init_tensor("w", &shape, &Init::GlorotUniform, 7);
        let limit = (6.0f64 / (576.0 + 1152.0)).sqrt();
        assert_moments(&t.data, limit / 3f64.sqrt());
        let max = max_abs(&t.data);
        assert!(
            max <= limit as f32 && max > 0.999 * limit as f32,
            "{max} vs {limit}"
        );
    }

    #[test]
    fn he_uniform_uses_fan_in() {
        let t = init_tensor("w", &[400, 300], &Init::HeUniform, 7);
        let limit = (6.0f64 / 400.0).sqrt();
        assert_moments(&t.data, limit / 3f64.sqrt());
        assert!(max_abs(&t.data) <= limit as f32);
    }

    #[test]
    fn constant_initializers() {
        let zeros = init_tensor("b", &[5], &Init::Zeros, 1);
        let ones = init_tensor("g", &[2, 3], &Init::Ones, 1);
        assert_eq!(zeros.data, vec![0.0; 5]);
        assert_eq!(
            ones,
            Tensor {
                shape: vec![2, 3],
                data: vec![1.0; 6]
            }
        );
        assert_eq!(Tensor::zeros(vec![2, 2]).data, vec![0.0; 4]);
    }

    #[test]
    fn same_seed_and_name_give_the_same_bits() {
        let a = init_tensor("conv1.kernel", &[3, 3, 8, 16], &Init::HeNormal, 42);
        let b = init_tensor("conv1.kernel", &[3, 3, 8, 16], &Init::HeNormal, 42);
        assert_eq!(bits(&a.data), bits(&b.data));
        let other_seed = init_tensor("conv1.kernel", &[3, 3, 8, 16], &Init::HeNormal, 43);
        let other_name = init_tensor("conv2.kernel", &[3, 3, 8, 16], &Init::HeNormal, 42);
        assert_ne!(bits(&a.data), bits(&other_seed.data));
        assert_ne!(bits(&a.data), bits(&other_name.data));
    }

    /// Pins the first values of one stream, so that a change of the seeding,
    /// the hash or the sampling algorithms (an upgrade of rand_distr, say),
    /// which would change every model's initial weights, does not go unseen.
    #[test]
    fn streams_are_stable_across_builds() {
        let normal = init_tensor("conv1.kernel", &[2, 2], &Init::HeNormal, 42);
        assert_eq!(
            bits(&normal.data),
            [3197600287, 1058920558, 1060442206, 1068519215]
        );
        let uniform = init_tensor("conv1.kernel", &[2, 2], &Init::GlorotUniform, 42);
        assert_eq!(
            bits(&uniform.data),
            [3190232491, 1049942613, 1055723897, 1059287123]
        );
    }

    #[test]
    fn set_entries_override_the_base() {
        // [2, 3, 2]: rows 0..1, every column, channel 1 = 5; then [1, 2, _] = 7.
        let init = Init::Set(
            Box::new(Init::Ones),
            vec![
                (vec![Slice::Range(0, 1), Slice::All, Slice::At(1)], 5.0),
                (vec![Slice::At(1), Slice::At(2), Slice::All], 7.0),
            ],
        );
        let t = init_tensor("w", &[2, 3, 2], &init, 0);
        assert_eq!(
            t.data,
            [1.0, 5.0, 1.0, 5.0, 1.0, 5.0, 1.0, 1.0, 1.0, 1.0, 7.0, 7.0]
        );
    }

    #[test]
    fn set_entries_ignore_what_does_not_fit() {
        let mut data = vec![0.0; 4];
        set_entries(&mut data, &[2, 2], &[Slice::At(9), Slice::All], 1.0);
        set_entries(&mut data, &[2, 2], &[Slice::All], 1.0);
        assert_eq!(data, [0.0; 4]);
        let mut scalar = vec![0.0];
        set_entries(&mut scalar, &[], &[], 3.0);
        assert_eq!(scalar, [3.0]);
    }

    #[test]
    fn store_keeps_insertion_order_and_replaces_in_place() {
        let mut store = TensorStore::new();
        assert!(store.insert("b", Tensor::zeros(vec![1])).is_none());
        store.insert("a", Tensor::zeros(vec![2]));
        let old = store.insert("b", Tensor::zeros(vec![3]));
        assert_eq!(old.map(|t| t.shape), Some(vec![1]));
        assert_eq!(store.names().collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(store.len(), 2);
        assert_eq!(store.get("b").map(|t| t.shape.clone()), Some(vec![3]));
        store.get_mut("a").expect("inserted above").data[1] = 4.0;
        assert_eq!(store.get("a").map(|t| t.data.clone()), Some(vec![0.0, 4.0]));
        assert!(store.get("c").is_none() && !store.contains("c"));
    }

    fn valid_file() -> Vec<u8> {
        let mut store = TensorStore::new();
        store.insert(
            "w",
            Tensor {
                shape: vec![2, 2],
                data: vec![1.0, -2.0, 0.5, 3.0],
            },
        );
        store.insert(
            "b",
            Tensor {
                shape: vec![2],
                data: vec![0.25, 0.0],
            },
        );
        store.metadata.insert("epoch".into(), "3".into());
        encode(&store, Path::new("valid.safetensors")).expect("a consistent store encodes")
    }

    fn format_error(bytes: &[u8]) -> bool {
        matches!(
            decode(bytes, Path::new("x.safetensors")),
            Err(WeightsError::Format { .. })
        )
    }

    #[test]
    fn decode_round_trips_encode() {
        let store = decode(&valid_file(), Path::new("x")).expect("valid");
        // safetensors orders tensors by name.
        assert_eq!(store.names().collect::<Vec<_>>(), ["b", "w"]);
        assert_eq!(
            bits(&store.get("w").expect("saved").data),
            bits(&[1.0, -2.0, 0.5, 3.0])
        );
        assert_eq!(store.metadata.get("epoch").map(String::as_str), Some("3"));
    }

    #[test]
    fn every_truncation_is_a_format_error() {
        let bytes = valid_file();
        for end in 0..bytes.len() {
            assert!(format_error(&bytes[..end]), "prefix of {end} bytes");
        }
    }

    #[test]
    fn corrupted_headers_never_panic() {
        let bytes = valid_file();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..3000 {
            let mut corrupt = bytes.clone();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..corrupt.len());
                corrupt[at] = rng.random();
            }
            // Any outcome but a panic will do.
            let _ = decode(&corrupt, Path::new("x"));
        }
    }

    #[test]
    fn offsets_near_usize_max_are_a_format_error() {
        // Eight U8 tensors of 2^61 - 1 bytes each: offsets valid one by one,
        // but their end plus the header's length overflows a usize.
        let size: u64 = (1 << 61) - 1;
        let tensors: Vec<String> = (0..8u64)
            .map(|i| {
                format!(
                    r#""t{i}":{{"dtype":"U8","shape":[{size}],"data_offsets":[{},{}]}}"#,
                    i * size,
                    (i + 1) * size
                )
            })
            .collect();
        let header = format!("{{{}}}", tensors.join(","));
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        assert!(offsets_overflow(&bytes));
        assert!(format_error(&bytes));
    }

    #[test]
    fn digits_in_strings_are_not_offsets() {
        let header = r#"{"__metadata__":{"id":"99999999999999999999999"}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        assert!(!offsets_overflow(&bytes));
        let store = decode(&bytes, Path::new("x")).expect("a file with no tensors");
        assert!(store.is_empty());
        assert_eq!(store.metadata.len(), 1);
    }

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
