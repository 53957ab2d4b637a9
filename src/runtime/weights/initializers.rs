//! Initial values: every weight of a model set by its initializer with
//! Keras' semantics (glorot, he and lecun are instances of Keras'
//! `VarianceScaling`), each weight drawn from its own seeded stream so that
//! the values depend only on the seed and the weight.

use std::ops::Range;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

use super::store::{Tensor, TensorStore};
use crate::graph::{Init, Param, Slice};
use crate::shapes::TypedGraph;

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
        // A transposed convolution's kernel [kh, kw, filters, in], taken
        // as Keras takes it, as any kernel: 3*3*16 in, 3*3*8 out.
        assert_eq!(fans(&[3, 3, 16, 8]), (144, 72));
        // A grouped kernel (Keras's Conv2D(128, 3, groups=32)): Keras
        // computes the fans from its shape [3, 3, 128 / 32, 128].
        assert_eq!(fans(&[3, 3, 4, 128]), (36, 1152));
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
}
