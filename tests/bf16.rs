//! Contractions in bf16 (`--precision bf16`): the forward kernel against
//! the f64 reference within the bound bf16 allows, derived in
//! `cnnc::codegen::contraction::bf16` (`error_bound`), on odd shapes,
//! strides, padding, dilation and batches 1 and 7; any split of its items
//! bitwise the same; and whole programs, for inference and training,
//! against their f32 twins.
//!
//! On a CPU without AMX-BF16 or AVX512-BF16 there is nothing to run, and
//! each test says so on stderr.

#[path = "support/reference.rs"]
mod reference;

use std::ops::Range;

use cnnc::autodiff::LossSpec;
use cnnc::codegen::contraction::bf16::{error_bound, round, Backend, Bf16Forward, PackWeights};
use cnnc::codegen::contraction::{
    BackwardDataBuffers, BackwardFilterBuffers, ConvBackwardData, ConvBackwardFilter, ConvShape,
    DenseShape, Epilogue, ForwardBuffers,
};
use cnnc::codegen::elementwise::{Binary, Elementwise, Expr, Operand};
use cnnc::codegen::{CompiledKernel, Jit, Storage};
use cnnc::config::{Optimizer, OptimizerKind, TrainConfig};
use cnnc::graph::{AxisPadding, Padding};
use cnnc::ops::{output_size, same_padding};
use cnnc::runtime::inference::Inference;
use cnnc::runtime::training::Trainer;
use cnnc::runtime::weights::{self, TensorStore};
use cnnc::{Precision, TypedGraph};
use ndarray::{ArrayD, IxDyn};

/// Every backend this machine runs (none: the kernel tests check nothing,
/// and say so).
fn backends() -> Vec<Backend> {
    let found: Vec<Backend> = Backend::ALL.into_iter().filter(|b| b.available()).collect();
    if found.is_empty() {
        eprintln!("this CPU runs no bf16 backend (AMX-BF16, AVX512-BF16): nothing to check");
    }
    found
}

/// The backend compiled programs use, or `None` after saying there is none.
fn backend() -> Option<Backend> {
    let best = Backend::best();
    if best.is_none() {
        eprintln!("this CPU runs no bf16 backend (AMX-BF16, AVX512-BF16): nothing to check");
    }
    best
}

/// A small deterministic generator of test data in [-1, 1).
fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

fn array(shape: &[usize], values: &[f32]) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(shape), values.to_vec()).expect("shape matches")
}

/// A convolution, its operands and its output's length.
struct Case {
    shape: ConvShape,
    x: Vec<f32>,
    w: Vec<f32>,
    b: Option<Vec<f32>>,
    /// A random output gradient.
    dy: Vec<f32>,
    output_size: [usize; 2],
}

impl Case {
    fn new(
        [batch, height, width, in_channels, out_channels]: [usize; 5],
        kernel: [usize; 2],
        [stride, dilation]: [[usize; 2]; 2],
        padding: Padding,
        bias: bool,
    ) -> Case {
        let shape = ConvShape {
            batch,
            height,
            width,
            in_channels,
            out_channels,
            kernel,
            stride,
            dilation,
            padding,
            bias,
        };
        let [oh, ow] = [0, 1].map(|i| {
            output_size(
                [height, width][i] as u64,
                kernel[i] as u64,
                stride[i] as u64,
                dilation[i] as u64,
                padding.axis(i),
            )
            .expect("the window fits") as usize
        });
        let seed = (batch * 1000 + height * 100 + width * 10 + in_channels) as u64;
        Case {
            x: data(batch * height * width * in_channels, seed),
            w: data(kernel[0] * kernel[1] * in_channels * out_channels, seed + 1),
            b: bias.then(|| data(out_channels, seed + 2)),
            dy: data(batch * oh * ow * out_channels, seed + 3),
            output_size: [oh, ow],
            shape,
        }
    }

    fn output_len(&self) -> usize {
        self.dy.len()
    }

    /// The gradients of `dy` with respect to the input and the kernel,
    /// exact (in f64), each with the sum of its terms' magnitudes:
    /// `((dx, |dx|), (dw, |dw|))`.
    #[allow(clippy::type_complexity)]
    fn vjp(&self) -> ((Vec<f64>, Vec<f64>), (Vec<f64>, Vec<f64>)) {
        let s = &self.shape;
        let before = |i: usize| match s.padding.axis(i) {
            AxisPadding::Same => {
                let input = [s.height, s.width][i] as u64;
                let k = [s.kernel[i], s.stride[i], s.dilation[i]].map(|v| v as u64);
                same_padding(input, k[0], k[1], k[2]).0 as isize
            }
            AxisPadding::Explicit { before, .. } => before as isize,
        };
        let (top, left) = (before(0), before(1));
        let [oh, ow] = self.output_size;
        let (c, f) = (s.in_channels, s.out_channels);
        let (mut dx, mut dx_abs) = (vec![0.0; self.x.len()], vec![0.0; self.x.len()]);
        let (mut dw, mut dw_abs) = (vec![0.0; self.w.len()], vec![0.0; self.w.len()]);
        for (row, g) in self.dy.chunks(f).enumerate() {
            let (b, oy, ox) = (row / (oh * ow), row / ow % oh, row % ow);
            for ky in 0..s.kernel[0] {
                let iy = (oy * s.stride[0] + ky * s.dilation[0]) as isize - top;
                for kx in 0..s.kernel[1] {
                    let ix = (ox * s.stride[1] + kx * s.dilation[1]) as isize - left;
                    if iy < 0 || iy >= s.height as isize || ix < 0 || ix >= s.width as isize {
                        continue;
                    }
                    let xi = ((b * s.height + iy as usize) * s.width + ix as usize) * c;
                    for ci in 0..c {
                        let wi = ((ky * s.kernel[1] + kx) * c + ci) * f;
                        for (fi, &gf) in g.iter().enumerate() {
                            let (gf, w, x) = (
                                f64::from(gf),
                                f64::from(self.w[wi + fi]),
                                f64::from(self.x[xi + ci]),
                            );
                            dx[xi + ci] += gf * w;
                            dx_abs[xi + ci] += (gf * w).abs();
                            dw[wi + fi] += gf * x;
                            dw_abs[wi + fi] += (gf * x).abs();
                        }
                    }
                }
            }
        }
        ((dx, dx_abs), (dw, dw_abs))
    }

    /// The bf16 input-gradient kernel's output, its items run in the
    /// parts `split` makes of its domain.
    fn backward_data(
        &self,
        backend: Backend,
        split: impl Fn(usize) -> Vec<Range<usize>>,
    ) -> Vec<f32> {
        let name = format!("{:?}", self.shape);
        let pack = PackWeights::transposed(&name, &self.shape).expect("a valid shape");
        let kernel = ConvBackwardData::bf16(&name, &self.shape, backend).expect("a valid shape");
        let mut packed = vec![f32::NAN; pack.packed_len()];
        for part in split(pack.domain()) {
            // SAFETY: the buffers have the lengths the kernel reports.
            unsafe { pack.run(self.w.as_ptr(), packed.as_mut_ptr(), part) }.expect("packs");
        }
        let mut dx = vec![f32::NAN; self.x.len()];
        let buffers = BackwardDataBuffers {
            output_grad: self.dy.as_ptr(),
            kernel: packed.as_ptr(),
            input_grad: dx.as_mut_ptr(),
        };
        let mut scratch = vec![f32::NAN; kernel.scratch_len()];
        for part in split(kernel.domain()) {
            // SAFETY: as above; the packed weights are `pack`'s.
            unsafe { kernel.run(&buffers, None, &mut scratch, part) }.expect("runs");
        }
        dx
    }

    /// The reference convolution of `x` by `w` with `bias`, in f32.
    fn reference(&self, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let s = &self.shape;
        let bias = bias.map(|b| array(&[s.out_channels], b));
        reference::conv2d(
            &array(&[s.batch, s.height, s.width, s.in_channels], x),
            &array(
                &[s.kernel[0], s.kernel[1], s.in_channels, s.out_channels],
                w,
            ),
            bias.as_ref(),
            s.stride.map(|v| v as u64),
            s.dilation.map(|v| v as u64),
            s.padding,
        )
        .iter()
        .copied()
        .collect()
    }

    /// The input as a kernel reads it stored as `storage`: its f32s, or
    /// them rounded to bf16, two to a slot.
    fn input(&self, storage: Storage) -> Vec<f32> {
        match storage {
            Storage::F32 => self.x.clone(),
            Storage::Bf16 => self
                .x
                .chunks(2)
                .map(|pair| {
                    let high = pair.get(1).map_or(0, |&v| round(v));
                    f32::from_bits(u32::from(round(pair[0])) | u32::from(high) << 16)
                })
                .collect(),
        }
    }

    /// The bf16 forward kernel's output, its items run in the parts
    /// `split` makes of its domain.
    fn forward(&self, backend: Backend, split: impl Fn(usize) -> Vec<Range<usize>>) -> Vec<f32> {
        self.forward_reading(backend, split, Storage::F32)
    }

    /// [`Self::forward`] on the input stored as `storage`.
    fn forward_reading(
        &self,
        backend: Backend,
        split: impl Fn(usize) -> Vec<Range<usize>>,
        storage: Storage,
    ) -> Vec<f32> {
        self.forward_stored(backend, split, [storage, Storage::F32], None)
    }

    /// The bf16 forward kernel's output buffer (its f32s, or its bf16
    /// values two to a slot), the input and the output stored as
    /// `[input, output]` and `epilogue` (if any) run on its rows.
    fn forward_stored(
        &self,
        backend: Backend,
        split: impl Fn(usize) -> Vec<Range<usize>>,
        [input, output]: [Storage; 2],
        epilogue: Option<&Epilogue>,
    ) -> Vec<f32> {
        let name = format!("{:?}", self.shape);
        let pack = PackWeights::new(&name, &self.shape).expect("a valid shape");
        let kernel = Bf16Forward::new(&name, &self.shape, backend)
            .expect("a valid shape")
            .reading(input)
            .writing(output);
        let x = self.input(input);
        let mut packed = vec![f32::NAN; pack.packed_len()];
        for part in split(pack.domain()) {
            // SAFETY: the buffers have the lengths the kernel reports.
            unsafe { pack.run(self.w.as_ptr(), packed.as_mut_ptr(), part) }.expect("packs");
        }
        let slots = match output {
            Storage::F32 => self.output_len(),
            Storage::Bf16 => self.output_len().div_ceil(2),
        };
        let mut y = vec![f32::NAN; slots];
        let buffers = ForwardBuffers {
            input: x.as_ptr(),
            kernel: packed.as_ptr(),
            bias: self.b.as_ref().map(|b| b.as_ptr()),
            output: y.as_mut_ptr(),
        };
        let mut scratch = vec![f32::NAN; kernel.scratch_len()];
        for part in split(kernel.domain()) {
            // SAFETY: as above; the packed weights are `pack`'s, and the
            // epilogue stores its output as the kernel does.
            unsafe { kernel.run(&buffers, epilogue, &mut scratch, part) }.expect("runs");
        }
        y
    }
}

impl Case {
    /// The bf16 kernel-gradient kernel's output (kernel, bias), its items
    /// run in the parts `split` makes of its domain.
    fn backward_filter(
        &self,
        backend: Backend,
        split: impl Fn(usize) -> Vec<Range<usize>>,
    ) -> (Vec<f32>, Vec<f32>) {
        self.backward_filter_reading(backend, split, Storage::F32)
    }

    /// [`Self::backward_filter`] on the input stored as `storage`.
    fn backward_filter_reading(
        &self,
        backend: Backend,
        split: impl Fn(usize) -> Vec<Range<usize>>,
        storage: Storage,
    ) -> (Vec<f32>, Vec<f32>) {
        let name = format!("{:?}", self.shape);
        let kernel = ConvBackwardFilter::bf16(&name, &self.shape, backend)
            .and_then(|kernel| kernel.reading(storage))
            .expect("a valid shape");
        let x = self.input(storage);
        let mut dw = vec![f32::NAN; self.w.len()];
        let mut db = vec![f32::NAN; self.shape.out_channels];
        let buffers = BackwardFilterBuffers {
            input: x.as_ptr(),
            output_grad: self.dy.as_ptr(),
            kernel_grad: dw.as_mut_ptr(),
            bias_grad: self.shape.bias.then_some(db.as_mut_ptr()),
        };
        let mut scratch = vec![f32::NAN; kernel.scratch_len()];
        for part in split(kernel.domain()) {
            // SAFETY: the buffers have the lengths the kernel reports.
            unsafe { kernel.run(&buffers, &mut scratch, part) }.expect("runs");
        }
        (dw, db)
    }
}

/// `0..domain` in three uneven parts (some possibly empty).
fn uneven(domain: usize) -> Vec<Range<usize>> {
    let a = domain / 3;
    let b = (a + 1).min(domain);
    vec![0..a, a..b, b..domain]
}

/// Batch 1 and 7, odd sizes and channel counts, strides 1 and 2, `same`,
/// `valid` and explicit padding, dilation 2, 1x1 (on the input itself),
/// 3x3, 5x5 and 7x7 kernels, taps that only read padding, more rows than
/// one item and more channels than one panel; dense layers.
fn cases() -> Vec<Case> {
    use Padding::{Same, Valid};
    let (one, two) = ([1, 1], [2, 2]);
    let explicit = Padding::explicit([[1, 2], [2, 0]], false);
    let dense = |rows, inputs, units, bias| {
        Case::new([rows, 1, 1, inputs, units], one, [one, one], Valid, bias)
    };
    vec![
        Case::new([7, 5, 7, 3, 5], one, [one, one], Valid, true),
        Case::new([1, 9, 7, 5, 6], one, [two, one], Same, false),
        Case::new([7, 9, 11, 5, 17], [3, 3], [one, one], Same, true),
        Case::new([1, 13, 9, 6, 7], [3, 3], [two, one], Valid, true),
        Case::new([1, 11, 9, 3, 18], [3, 3], [one, two], Same, true),
        Case::new([1, 15, 13, 1, 9], [7, 7], [one, one], Same, true),
        Case::new([7, 2, 2, 5, 6], [3, 3], [two, one], Same, true),
        Case::new([7, 5, 1, 3, 4], [3, 3], [one, one], Same, false),
        Case::new([7, 10, 9, 3, 7], [5, 5], [[2, 1], one], explicit, true),
        Case::new([7, 14, 14, 33, 70], [3, 3], [one, one], Same, true),
        Case::new([1, 6, 6, 64, 130], [3, 3], [one, one], Same, false),
        dense(7, 13, 10, true),
        dense(1, 37, 5, false),
        dense(33, 70, 129, true),
    ]
}

#[test]
fn forward_is_within_the_bound_of_the_exact_convolution() {
    for backend in backends() {
        for case in cases() {
            let got = case.forward(backend, uneven);
            let exact = case.reference(&case.x, &case.w, case.b.as_deref());
            // The sum of magnitudes of each element's products.
            let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
            let magnitude = case.reference(&abs(&case.x), &abs(&case.w), None);
            let s = &case.shape;
            let depth = s.kernel[0] * s.kernel[1] * s.in_channels;
            for (i, ((&y, &e), &m)) in got.iter().zip(&exact).zip(&magnitude).enumerate() {
                // The bound of the product, the bias added in f32 (half an ulp
                // of the sum), and the f32 reference's own rounding.
                let m = f64::from(m);
                let bound = error_bound(depth, m) + f64::from(y.abs()) * 2f64.powi(-24) + m * 1e-6;
                let error = (f64::from(y) - f64::from(e)).abs();
                assert!(
                    error <= bound,
                    "{:?} element {i}: {y} against {e}, off by {error}, bound {bound}",
                    case.shape
                );
            }
        }
    }
}

/// Checks `got` against `exact` element by element: within the bound of
/// bf16 products summed over `depth` terms whose magnitudes sum to
/// `magnitude`, and the f32 rounding of a result of `got`'s size.
fn assert_within_bound(got: &[f32], exact: &[f64], magnitude: &[f64], depth: usize, what: &str) {
    assert_eq!(got.len(), exact.len(), "{what}: length");
    for (i, ((&y, &e), &m)) in got.iter().zip(exact).zip(magnitude).enumerate() {
        let bound = error_bound(depth, m) + f64::from(y.abs()) * 2f64.powi(-24);
        let error = (f64::from(y) - e).abs();
        assert!(
            error <= bound,
            "{what} element {i}: {y} against {e}, off by {error}, bound {bound}"
        );
    }
}

#[test]
fn input_gradient_is_within_the_bound_of_the_exact_one() {
    for backend in backends() {
        for case in cases() {
            let dx = case.backward_data(backend, uneven);
            let ((exact, magnitude), _) = case.vjp();
            let s = &case.shape;
            // Each tap's product sums `out_channels` terms; col2im then adds
            // the taps in f32: as many sums as all their terms.
            let depth = s.kernel[0] * s.kernel[1] * s.out_channels;
            assert_within_bound(&dx, &exact, &magnitude, depth, &format!("dx {s:?}"));
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<u32>>();
            let whole = bits(case.backward_data(backend, |d| std::iter::once(0..d).collect()));
            assert_eq!(bits(dx), whole, "dx {s:?}: split against whole");
        }
    }
}

#[test]
fn kernel_gradient_is_within_the_bound_of_the_exact_one() {
    for backend in backends() {
        // Enough rows that the gradient sums several blocks of them.
        let tall = Case::new(
            [7, 48, 48, 3, 5],
            [3, 3],
            [[1, 1], [1, 1]],
            Padding::Same,
            true,
        );
        for case in cases().into_iter().chain([tall]) {
            let (dw, db) = case.backward_filter(backend, uneven);
            let (_, (exact, magnitude)) = case.vjp();
            let s = &case.shape;
            let rows = case.dy.len() / s.out_channels;
            assert_within_bound(&dw, &exact, &magnitude, rows, &format!("dw {s:?}"));
            if s.bias {
                // The bias gradient stays f32: the column sums of dy.
                for (o, &got) in db.iter().enumerate() {
                    let column = case.dy.iter().skip(o).step_by(s.out_channels);
                    let exact: f64 = column.clone().map(|&g| f64::from(g)).sum();
                    let magnitude: f64 = column.map(|&g| f64::from(g.abs())).sum();
                    let error = (f64::from(got) - exact).abs();
                    assert!(
                        error <= rows as f64 * 2f64.powi(-24) * magnitude,
                        "db[{o}] {s:?}"
                    );
                }
            }
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<u32>>();
            let (whole, _) = case.backward_filter(backend, |d| std::iter::once(0..d).collect());
            assert_eq!(bits(dw), bits(whole), "dw {s:?}: split against whole");
        }
    }
}

#[test]
fn forward_differs_from_f32_by_what_bf16_rounding_does() {
    // A test that the bound above is not met by accident: the kernel
    // rounds, so on data that bf16 cannot hold exactly it is not the f32
    // result, and it is exactly the f32 result of the rounded operands
    // where every product and sum is exact (small integers).
    for backend in backends() {
        let case = Case::new(
            [7, 9, 11, 5, 17],
            [3, 3],
            [[1, 1], [1, 1]],
            Padding::Same,
            true,
        );
        let exact = case.reference(&case.x, &case.w, case.b.as_deref());
        let got = case.forward(backend, uneven);
        assert!(got.iter().zip(&exact).any(|(a, b)| a != b), "not rounded");
        let mut integers = Case::new(
            [7, 9, 11, 5, 17],
            [3, 3],
            [[1, 1], [1, 1]],
            Padding::Same,
            true,
        );
        let small = |v: &mut Vec<f32>| v.iter_mut().for_each(|x| *x = (*x * 8.0).round());
        small(&mut integers.x);
        small(&mut integers.w);
        small(integers.b.as_mut().expect("a bias"));
        let exact = integers.reference(&integers.x, &integers.w, integers.b.as_deref());
        assert_eq!(integers.forward(backend, uneven), exact);
    }
}

/// An input stored in bf16 (an activation its producer wrote rounded)
/// gives the forward product and the kernel gradient bit for bit what its
/// f32 values give: the kernels copy bf16 values where they round f32s.
#[test]
fn a_bf16_input_gives_the_bits_its_f32_values_give() {
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<u32>>();
    for backend in backends() {
        for case in cases() {
            let s = &case.shape;
            let [f32_y, bf16_y] = [Storage::F32, Storage::Bf16]
                .map(|st| bits(case.forward_reading(backend, uneven, st)));
            assert_eq!(f32_y, bf16_y, "forward {s:?}");
            let [(f32_dw, f32_db), (bf16_dw, bf16_db)] = [Storage::F32, Storage::Bf16].map(|st| {
                let (dw, db) = case.backward_filter_reading(backend, uneven, st);
                (bits(dw), bits(db))
            });
            assert_eq!(f32_dw, bf16_dw, "dw {s:?}");
            assert_eq!(f32_db, bf16_db, "db {s:?}");
        }
    }
}

/// A ReLU epilogue storing its output as `storage`, with the JIT that
/// holds its code (bound first, so that it outlives the kernel).
fn relu(storage: Storage) -> (Jit, CompiledKernel) {
    let relu = Elementwise {
        name: "relu".into(),
        inputs: vec![Operand::Tensor],
        exprs: vec![
            Expr::Load(0),
            Expr::Const(0.0),
            Expr::Binary(Binary::Max, 0, 1),
        ],
        outputs: vec![2],
        stores: vec![storage],
    };
    let mut jit = Jit::new().expect("jit");
    let compiled = jit.compile_elementwise(&relu).expect("compiles");
    (jit, compiled)
}

/// The bf16 values held two to a slot in `slots`, the first `len`.
fn halves(slots: &[f32], len: usize) -> Vec<u16> {
    let mut values: Vec<u16> = slots
        .iter()
        .flat_map(|v| {
            let bits = v.to_bits();
            [bits as u16, (bits >> 16) as u16]
        })
        .collect();
    values.truncate(len);
    values
}

#[test]
fn a_bf16_output_holds_the_f32_output_rounded() {
    for backend in backends() {
        for case in cases() {
            let s = &case.shape;
            let n = case.output_len();
            let stored = |epilogue: Option<&Epilogue>, output| {
                case.forward_stored(backend, uneven, [Storage::F32, output], epilogue)
            };
            let plain = stored(None, Storage::F32);
            let rounded: Vec<u16> = plain.iter().map(|&v| round(v)).collect();
            assert_eq!(halves(&stored(None, Storage::Bf16), n), rounded, "{s:?}");
            let (_f32_jit, f32_relu) = relu(Storage::F32);
            let (_bf16_jit, bf16_relu) = relu(Storage::Bf16);
            // SAFETY: each kernel has one input and one output, the
            // product's, stored as the product stores it below.
            let [f32_relu, bf16_relu] =
                [&f32_relu, &bf16_relu].map(|k| unsafe { Epilogue::new(k, &[], &[]) });
            let activated = stored(Some(&f32_relu), Storage::F32);
            assert!(activated.iter().zip(&plain).all(|(a, p)| *a == p.max(0.0)));
            let rounded: Vec<u16> = activated.iter().map(|&v| round(v)).collect();
            let got = halves(&stored(Some(&bf16_relu), Storage::Bf16), n);
            assert_eq!(got, rounded, "relu {s:?}");
        }
    }
}

#[test]
fn any_split_of_the_forward_items_gives_the_same_bits() {
    for backend in backends() {
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<u32>>();
        for case in cases() {
            let whole = bits(case.forward(backend, |domain| std::iter::once(0..domain).collect()));
            let singles =
                bits(case.forward(backend, |domain| (0..domain).map(|i| i..i + 1).collect()));
            let parts = bits(case.forward(backend, uneven));
            assert_eq!(whole, singles, "{:?}", case.shape);
            assert_eq!(whole, parts, "{:?}", case.shape);
        }
    }
}

#[test]
fn a_dense_layer_packs_as_a_one_by_one_convolution() {
    for backend in backends() {
        let shape = DenseShape {
            rows: 9,
            inputs: 45,
            units: 70,
            bias: true,
        };
        let case = Case::new(
            [9, 1, 1, 45, 70],
            [1, 1],
            [[1, 1], [1, 1]],
            Padding::Valid,
            true,
        );
        let pack = PackWeights::dense("d", &shape).expect("valid");
        let kernel = Bf16Forward::dense("d", &shape, backend).expect("valid");
        let mut packed = vec![0.0; pack.packed_len()];
        // SAFETY: the buffers have the lengths the kernels report.
        unsafe { pack.run(case.w.as_ptr(), packed.as_mut_ptr(), 0..pack.domain()) }.expect("packs");
        let mut y = vec![0.0; 9 * 70];
        let buffers = ForwardBuffers {
            input: case.x.as_ptr(),
            kernel: packed.as_ptr(),
            bias: case.b.as_ref().map(|b| b.as_ptr()),
            output: y.as_mut_ptr(),
        };
        let mut scratch = vec![0.0; kernel.scratch_len()];
        // SAFETY: as above.
        unsafe { kernel.run(&buffers, None, &mut scratch, 0..kernel.domain()) }.expect("runs");
        assert_eq!(y, case.forward(backend, uneven));
    }
}

/// A model with every kind of contraction the pass puts in bf16: 3x3
/// convolutions with an epilogue (relu), a 1x1 one, and dense layers; its
/// first layer, of one channel, stays f32.
const MODEL: &str = r#"
model m : [12, 12, 1] {
    conv(16, 5, padding: same, activation: relu)
    conv(64, 3, padding: same, activation: relu)
    maxpool(2)
    conv(70, 1)
    batchnorm
    relu
    flatten
    dense(64, activation: relu)
    dense(10, activation: softmax)
}
"#;

#[test]
fn a_bf16_program_agrees_with_its_f32_twin() {
    if backend().is_none() {
        return;
    }
    let model =
        cnnc::compile_source("model.cnn", MODEL, None, None).unwrap_or_else(|d| panic!("{d}"));
    let batch = 7;
    let input = data(batch * 144, 5);
    let run = |precision: Precision| {
        let compiled =
            cnnc::compile_inference_in(&model, batch, precision).unwrap_or_else(|e| panic!("{e}"));
        let kernels = compiled
            .plan
            .steps
            .iter()
            .map(|s| s.kernel.method())
            .collect::<Vec<_>>();
        let mut inference =
            Inference::new(compiled, weights::init(&model, 3), 2).unwrap_or_else(|e| panic!("{e}"));
        let first = inference.run(&input).unwrap_or_else(|e| panic!("{e}"));
        // A second run reuses the weights packed once (frozen weights).
        let again = inference.run(&input).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first, again, "{precision:?}: the same on every run");
        (first.into_iter().next().expect("an output").1, kernels)
    };
    let (f32_probabilities, f32_kernels) = run(Precision::F32);
    let (bf16_probabilities, bf16_kernels) = run(Precision::Bf16);
    let count =
        |kernels: &[String], what: &str| kernels.iter().filter(|k| k.starts_with(what)).count();
    assert_eq!(count(&f32_kernels, "forward, bf16"), 0);
    assert_eq!(count(&bf16_kernels, "forward, bf16"), 4, "{bf16_kernels:?}");
    assert_eq!(count(&bf16_kernels, "weights to bf16"), 4);
    // The 3x3 convolution (its output pooled in bf16), the 1x1 one
    // (batchnorm and relu folded in) and the first dense layer store their
    // outputs in bf16; the first layer, in f32, does not.
    let stored: Vec<&String> = bf16_kernels
        .iter()
        .filter(|k| k.ends_with("output bf16"))
        .collect();
    assert_eq!(stored.len(), 3, "{bf16_kernels:?}");
    // Pooling reads and writes bf16 between them.
    assert!(bf16_kernels.contains(&"window, x bf16, y bf16".to_string()));
    // Probabilities of unit-scale activations through five rounded layers:
    // each layer's relative error is about 2^-8 times its sums of
    // magnitudes (the bound), which a few percent of a probability covers.
    let mut largest = 0f32;
    for (a, b) in bf16_probabilities.iter().zip(&f32_probabilities) {
        largest = largest.max((a - b).abs());
    }
    assert!(largest < 0.03, "probabilities differ by up to {largest}");
    assert!(largest > 0.0, "the bf16 program rounded nothing");
    let argmax = |p: &[f32]| -> Vec<usize> {
        p.chunks(10)
            .map(|row| (0..10).fold(0, |best, i| if row[i] > row[best] { i } else { best }))
            .collect()
    };
    let agree = argmax(&bf16_probabilities)
        .iter()
        .zip(argmax(&f32_probabilities))
        .filter(|(a, b)| **a == *b)
        .count();
    assert!(agree >= batch - 1, "classes agree on {agree} of {batch}");
}

/// A residual model with every kind of contraction the training step runs
/// in bf16 (forward, input and kernel gradients of 3x3, 1x1 and dense
/// layers), batch norm and dropout.
const RESIDUAL: &str = "
    use resnet
    model m : [10, 10, 1] {
        conv(64, 3, padding: same, activation: relu)
        residual_unit(32, stride: 2)
        dropout(0.3)
        flatten
        dense(6, activation: softmax)
    }";

/// A trainer for `model`'s step in `precision` from `store`.
fn trainer(
    model: &TypedGraph,
    store: TensorStore,
    optimizer: Optimizer,
    (batch, threads): (usize, usize),
    precision: Precision,
) -> Trainer {
    let loss = LossSpec {
        smoothing: 0.0,
        weights: Vec::new(),
    };
    let step = cnnc::compile_training_in(model, &loss, &optimizer, batch, precision)
        .unwrap_or_else(|e| panic!("{e}"));
    Trainer::new(step, store, threads).unwrap_or_else(|e| panic!("{e}"))
}

fn optimizer(kind: OptimizerKind, lr: f64) -> Optimizer {
    Optimizer {
        kind,
        lr,
        ..TrainConfig::default().optimizer
    }
}

#[test]
fn a_bf16_step_takes_the_f32_steps_gradients_within_bf16s_error() {
    if backend().is_none() {
        return;
    }
    let model =
        cnnc::compile_source("model.cnn", RESIDUAL, None, None).unwrap_or_else(|d| panic!("{d}"));
    let batch = 16;
    let input = data(batch * 100, 21);
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % 6).collect();
    let store = weights::init(&model, 9);
    // SGD with learning rate 1: each weight moves by minus its gradient.
    let step = |precision| {
        let sgd = optimizer(OptimizerKind::Sgd, 1.0);
        let mut trainer = trainer(&model, store.clone(), sgd, (batch, 2), precision);
        let methods: Vec<String> = trainer
            .plan()
            .steps
            .iter()
            .map(|s| s.kernel.method())
            .collect();
        trainer.train_step(&input, &labels, 1.0).expect("a step");
        (trainer.weights, methods)
    };
    let (after_f32, f32_methods) = step(Precision::F32);
    let (after_bf16, bf16_methods) = step(Precision::Bf16);
    // Reading f32 inputs, or bf16 ones (activations that bf16 products
    // read and that only they, batchnorm's statistics, pooling and
    // element-wise kernels touch are stored in bf16).
    let bf16_kernels = |methods: &[String], pass: &str| {
        methods
            .iter()
            .filter(|m| m.starts_with(&format!("{pass}, bf16")))
            .count()
    };
    let bf16_inputs = bf16_methods
        .iter()
        .filter(|m| m.contains("bf16, input bf16"))
        .count();
    assert_eq!(bf16_kernels(&f32_methods, "forward"), 0);
    // The unit's two 3x3 and its 1x1 shortcut, dense; the first layer's
    // forward product sums 9 terms and stays f32.
    assert_eq!(
        bf16_kernels(&bf16_methods, "forward"),
        4,
        "{bf16_methods:?}"
    );
    assert_eq!(
        bf16_kernels(&bf16_methods, "backward-filter"),
        5,
        "{bf16_methods:?}"
    );
    // The first layer's input gradient is not needed.
    assert_eq!(
        bf16_kernels(&bf16_methods, "backward-data"),
        4,
        "{bf16_methods:?}"
    );
    // The unit's first 3x3 and its shortcut read the first layer's
    // output, which that layer's epilogue writes (f32); the unit's second
    // 3x3 and the dense layer read element-wise kernels' outputs (bf16):
    // their forward products and kernel gradients.
    assert_eq!(bf16_inputs, 4, "{bf16_methods:?}");
    for (name, before) in store.iter() {
        let gradient = |after: &TensorStore| -> Vec<f64> {
            let after = &after.get(name).expect("a weight").data;
            before
                .data
                .iter()
                .zip(after)
                .map(|(b, a)| f64::from(b - a))
                .collect()
        };
        let (exact, rounded) = (gradient(&after_f32), gradient(&after_bf16));
        let rms = (exact.iter().map(|g| g * g).sum::<f64>() / exact.len() as f64).sqrt();
        let error = (exact
            .iter()
            .zip(&rounded)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            / exact.len() as f64)
            .sqrt();
        // Each layer's products err by about 2^-8 of their sums of
        // magnitudes (the bound of the kernels), and the backward pass
        // carries the errors of the layers after it, through batch norm's
        // cancellations: measured here, 0.6% of the gradient's size for
        // the last layer and up to 5.7% for the first (its bias gradient,
        // a sum of signed terms); a wrong gradient is off by about 100%.
        assert!(
            error <= 0.1 * rms + 1e-7,
            "{name}: rms error {error} of {rms}"
        );
    }
}

#[test]
fn bf16_training_is_bitwise_deterministic_whatever_the_thread_count() {
    if backend().is_none() {
        return;
    }
    let model =
        cnnc::compile_source("model.cnn", RESIDUAL, None, None).unwrap_or_else(|d| panic!("{d}"));
    let batch = 16;
    let input = data(batch * 100, 22);
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % 6).collect();
    let run = |threads: usize| {
        let nadam = optimizer(OptimizerKind::Nadam, 0.01);
        let store = weights::init(&model, 9);
        let mut trainer = trainer(&model, store, nadam, (batch, threads), Precision::Bf16);
        for _ in 0..3 {
            trainer.train_step(&input, &labels, 0.01).expect("a step");
        }
        trainer.weights
    };
    let one = run(1);
    for threads in [2, 3] {
        for ((name, a), (_, b)) in one.iter().zip(run(threads).iter()) {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
            assert_eq!(
                bits(&a.data),
                bits(&b.data),
                "{name}: 1 vs {threads} threads"
            );
        }
    }
}

#[test]
fn a_small_model_learns_in_bf16_as_in_f32() {
    if backend().is_none() {
        return;
    }
    // Two classes told apart by where the bright pixels are: the left or
    // the right half of the image.
    let model = cnnc::compile_source(
        "model.cnn",
        "model m : [8, 8, 1] {
            conv(8, 3, padding: same, activation: relu)
            maxpool(2)
            conv(16, 3, padding: same, activation: relu)
            flatten
            dense(2, activation: softmax)
        }",
        None,
        None,
    )
    .unwrap_or_else(|d| panic!("{d}"));
    let batch = 32;
    let noise = data(batch * 64, 31);
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % 2).collect();
    let input: Vec<f32> = noise
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (example, column) = (i / 64, i % 8);
            let bright = (column < 4) == (labels[example] == 0);
            0.3 * n + if bright { 1.0 } else { 0.0 }
        })
        .collect();
    let losses = |precision| {
        let adam = optimizer(OptimizerKind::Adam, 0.01);
        let mut trainer = trainer(
            &model,
            weights::init(&model, 5),
            adam,
            (batch, 2),
            precision,
        );
        (0..30)
            .map(|_| {
                trainer
                    .train_step(&input, &labels, 0.01)
                    .expect("a step")
                    .losses[0]
                    .1
            })
            .collect::<Vec<f64>>()
    };
    let (f32_losses, bf16_losses) = (losses(Precision::F32), losses(Precision::Bf16));
    let last = |l: &[f64]| l[l.len() - 1];
    assert!(
        last(&f32_losses) < 0.1 * f32_losses[0],
        "f32 learns: {f32_losses:?}"
    );
    assert!(
        last(&bf16_losses) < 0.1 * bf16_losses[0],
        "bf16 learns: {bf16_losses:?}"
    );
    assert!(
        (last(&bf16_losses) - last(&f32_losses)).abs() < 0.05,
        "final losses {} (bf16) and {} (f32)",
        last(&bf16_losses),
        last(&f32_losses)
    );
}

#[test]
fn predict_with_precision_bf16_runs_the_bf16_program() {
    if backend().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("cnnc-bf16-predict-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a folder");
    let model =
        cnnc::load_model(std::path::Path::new("examples/lenet5.cnn"), None).expect("lenet5");
    let store = weights::init(&model, 5);
    let weights_path = dir.join("lenet5.safetensors");
    weights::save(&store, &weights_path).expect("saved");
    let values: Vec<f32> = data(5 * 28 * 28, 8).iter().map(|v| v.abs()).collect();
    let input_path = dir.join("x.npy");
    ndarray_npy::write_npy(&input_path, &array(&[5, 28, 28, 1], &values)).expect("written");
    let predict = |precision: &str| -> Vec<f32> {
        let output_path = dir.join(format!("y_{precision}.npy"));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cnnc"))
            .args(["predict", "examples/lenet5.cnn", "--weights"])
            .arg(&weights_path)
            .arg("--input")
            .arg(&input_path)
            .arg("--output")
            .arg(&output_path)
            .args(["--precision", precision, "--batch", "2"])
            .output()
            .expect("cnnc runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let y: ArrayD<f32> = ndarray_npy::read_npy(&output_path).expect("an output");
        y.iter().copied().collect()
    };
    let (f32_scores, bf16_scores) = (predict("f32"), predict("bf16"));
    // The same program as the library's bf16 inference, batch by batch.
    let compiled = cnnc::compile_inference_in(&model, 5, Precision::Bf16).expect("compiles");
    let mut library = Inference::new(compiled, store, 1).expect("starts");
    let expected = library.run(&values).expect("runs").remove(0).1;
    assert_eq!(bf16_scores, expected);
    assert_ne!(bf16_scores, f32_scores, "rounded");
    for (a, b) in bf16_scores.iter().zip(&f32_scores) {
        assert!((a - b).abs() < 0.03, "{a} against {b} in f32");
    }
}

/// `cnnc` with `args`, as a CPU without bf16 instructions runs it
/// (`CNNC_NO_BF16`).
fn cnnc_without_bf16(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(args)
        .env("CNNC_NO_BF16", "1")
        .env("NO_COLOR", "1")
        .output()
        .expect("cnnc runs")
}

/// `CNNC_NO_AMX` runs the bf16 products on AVX512-BF16 where the CPU has
/// AMX too (as on AMD's Zen 4), and a profile says so.
#[test]
fn without_amx_the_products_run_on_avx512_bf16() {
    if !Backend::Avx512.available() {
        eprintln!("this CPU has no AVX512-BF16: nothing to check");
        return;
    }
    let args = [
        "bench",
        "examples/lenet5.cnn",
        "--precision",
        "bf16",
        "--steps",
        "1",
        "--profile",
    ];
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(args)
        .env("CNNC_NO_AMX", "1")
        .env("NO_COLOR", "1")
        .output()
        .expect("cnnc runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("bf16 on AVX512-BF16"), "{stdout}");
    assert!(!stdout.contains("on AMX"), "{stdout}");
}

#[test]
fn without_bf16_instructions_bf16_is_an_error_naming_them() {
    let model = "examples/lenet5.cnn";
    let out = std::env::temp_dir().join(format!("cnnc-bf16-refused-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).expect("scratch folder");
    let out_arg = out.to_str().expect("utf-8");
    for args in [
        vec!["bench", model, "--precision", "bf16", "--steps", "1"],
        vec![
            "run",
            model,
            "--precision",
            "bf16",
            "--train",
            "fashion",
            "--epochs",
            "1",
            "--out",
            out_arg,
        ],
    ] {
        let run = cnnc_without_bf16(&args);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{args:?}: {stderr}");
        for named in ["precision bf16 needs", "AMX-BF16", "AVX512-BF16", "f32"] {
            assert!(stderr.contains(named), "{args:?}: {stderr}");
        }
    }
    // Refused before anything was written: not even the run's lock.
    let written: Vec<_> = std::fs::read_dir(&out)
        .expect("scratch folder")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(written.is_empty(), "written: {written:?}");
    let _ = std::fs::remove_dir_all(&out);
    // A plan needs no such CPU: the summary reports bf16's memory.
    let out = cnnc_without_bf16(&["summary", model, "--precision", "bf16"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Memory at batch 32 (bf16 products"));
}
