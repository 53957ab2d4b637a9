//! The kernel plan's invariants, checked after lowering and after every
//! rewrite ([`KernelPlan::verify`]).
//!
//! Every kernel states its signature ([`KernelDesc::signature`]): for each
//! argument, whether the kernel reads or writes it and how many values it
//! needs. Passes use the same signature to know what a step reads and
//! writes, so that no pass guesses it from argument positions.

use thiserror::Error;

use super::{
    Algorithm, BufferId, ContractionPass, Geometry, KernelDesc, KernelPlan, Role, Storage,
};
use crate::codegen::contraction::bf16;
use crate::codegen::contraction::winograd::{self, Direction, Tile};
use crate::codegen::contraction::{forward_splits_columns, ConvShape};
use crate::codegen::elementwise::{Elementwise, Expr, Operand};
use crate::codegen::native::PadCopy;
use crate::codegen::reduce::{Reduce, ReduceKind};
use crate::codegen::window::Window;

/// Whether a kernel reads or writes an argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The kernel only reads it.
    Read,
    /// The kernel writes it (an epilogue or an in-place update may read it
    /// too, element by element, before writing).
    Write,
}

/// How many values an argument must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Len {
    /// Exactly this many.
    Exactly(usize),
    /// At least this many (a buffer of per-step scalars).
    AtLeast(usize),
}

/// One argument of a kernel: how it is used and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    /// Read or written.
    pub access: Access,
    /// Its length in values.
    pub len: Len,
    /// How the kernel reads or writes its values.
    pub storage: Storage,
}

/// A broken invariant of a kernel plan: always a defect of the compiler,
/// never of the model, so the message says where it was found.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    /// A kernel's description is inconsistent.
    #[error("internal compiler error in plan `{plan}`, step {step} (`{kernel}`): {message}")]
    Kernel {
        /// The plan's name.
        plan: String,
        /// The step's index.
        step: usize,
        /// The kernel's name.
        kernel: String,
        /// What is wrong.
        message: String,
    },
}

impl KernelPlan {
    /// Checks the plan's invariants: every step has as many arguments as its
    /// kernel's signature and each is an existing buffer of the length the
    /// kernel needs; every buffer is written before it is read (the caller's
    /// input, labels, weights, state and scalars count as written); no step
    /// writes what the caller lends read-only (input, labels, scalars); and
    /// only an element-wise kernel may read a buffer that it writes (it loads
    /// every input at an index before storing there).
    pub fn verify(&self) -> Result<(), PlanError> {
        let mut written: Vec<bool> = self.buffers.iter().map(|b| lent(&b.role)).collect();
        for (i, step) in self.steps.iter().enumerate() {
            let fail = |message: String| PlanError::Kernel {
                plan: self.name.clone(),
                step: i,
                kernel: step.kernel.name().to_string(),
                message,
            };
            let signature = step.kernel.signature().map_err(fail)?;
            self.check_arguments(&step.args, &signature).map_err(fail)?;
            let elementwise = matches!(step.kernel, KernelDesc::Elementwise { .. });
            for (&b, param) in step.args.iter().zip(&signature) {
                let name = &self.buffers[b].name;
                match param.access {
                    Access::Read if !written[b] => {
                        return Err(fail(format!("reads `{name}` before any step writes it")))
                    }
                    Access::Read => {}
                    Access::Write if read_only(&self.buffers[b].role) => {
                        return Err(fail(format!(
                            "writes `{name}`, which the caller lends read-only"
                        )))
                    }
                    Access::Write if !elementwise && reads(&step.args, &signature, b) => {
                        return Err(fail(format!("reads and writes `{name}` at once")))
                    }
                    Access::Write => {}
                }
            }
            for (&b, param) in step.args.iter().zip(&signature) {
                written[b] |= param.access == Access::Write;
            }
        }
        Ok(())
    }

    /// Checks a step's argument count and every argument's length.
    fn check_arguments(&self, args: &[BufferId], signature: &[Param]) -> Result<(), String> {
        if args.len() != signature.len() {
            return Err(format!(
                "the kernel takes {} buffers, but the step passes {}",
                signature.len(),
                args.len()
            ));
        }
        for (index, (&b, param)) in args.iter().zip(signature).enumerate() {
            let Some(buffer) = self.buffers.get(b) else {
                return Err(format!("argument {index} is %{b}, which does not exist"));
            };
            let fits = match param.len {
                Len::Exactly(n) => buffer.len == n,
                Len::AtLeast(n) => buffer.len >= n,
            };
            if !fits {
                return Err(format!(
                    "argument {index} (`{}`) has {} values, but the kernel needs {:?}",
                    buffer.name, buffer.len, param.len
                ));
            }
            if buffer.storage != Storage::F32 && buffer.role != Role::Temporary {
                return Err(format!(
                    "argument {index} (`{}`) is stored as {:?}, but the caller lends f32s",
                    buffer.name, buffer.storage
                ));
            }
            if buffer.storage != param.storage {
                return Err(format!(
                    "argument {index} (`{}`) is stored as {:?}, but the kernel takes {:?}",
                    buffer.name, buffer.storage, param.storage
                ));
            }
        }
        Ok(())
    }
}

/// Whether the caller provides the buffer's values before the run.
fn lent(role: &Role) -> bool {
    match role {
        Role::Input
        | Role::Labels
        | Role::Weight(_)
        | Role::State(_)
        | Role::Scalars(_)
        | Role::Upstream(_) => true,
        Role::Output(_)
        | Role::Loss(_)
        | Role::InputGradient
        | Role::Gradient(_)
        | Role::Temporary => false,
    }
}

/// Whether the program must leave the buffer as the caller lent it.
fn read_only(role: &Role) -> bool {
    match role {
        Role::Input | Role::Labels | Role::Scalars(_) | Role::Upstream(_) => true,
        Role::Weight(_)
        | Role::State(_)
        | Role::Output(_)
        | Role::Loss(_)
        | Role::InputGradient
        | Role::Gradient(_)
        | Role::Temporary => false,
    }
}

/// Whether buffer `b` is among the arguments the signature reads.
fn reads(args: &[BufferId], signature: &[Param], b: BufferId) -> bool {
    args.iter()
        .zip(signature)
        .any(|(&a, p)| a == b && p.access == Access::Read)
}

impl KernelDesc {
    /// The kernel's name, for errors.
    pub fn name(&self) -> &str {
        match self {
            KernelDesc::Elementwise { kernel, .. } => &kernel.name,
            KernelDesc::Reduce(r) => &r.name,
            KernelDesc::Window { window, .. } => &window.name,
            KernelDesc::Contraction { name, .. }
            | KernelDesc::WinogradFilter { name, .. }
            | KernelDesc::PackWeights { name, .. } => name,
            KernelDesc::Grouped(g) => &g.name,
            KernelDesc::Copy(c) => &c.name,
            KernelDesc::Embed(e) => &e.name,
            KernelDesc::Pad(p) => &p.name,
            KernelDesc::Mask(m) => &m.name,
            KernelDesc::Resample(r) => &r.name,
        }
    }

    /// Each argument the kernel takes, in order: read or written, and its
    /// length. An error says why the description itself is inconsistent.
    pub fn signature(&self) -> Result<Vec<Param>, String> {
        match self {
            KernelDesc::Elementwise {
                kernel,
                rows,
                channels,
            } => {
                // A kernel gradient's live rows are read row by weight row.
                let misread = kernel.inputs.iter().find_map(|op| match op {
                    Operand::LiveTaps(taps) if taps.rows() != *rows => Some(taps.rows()),
                    _ => None,
                });
                if let Some(weight_rows) = misread {
                    return Err(format!(
                        "live taps of a kernel of {weight_rows} rows, read over {rows} rows"
                    ));
                }
                Ok(elementwise(kernel, *rows, *channels, 0))
            }
            KernelDesc::Reduce(r) => Ok(reduce(r)),
            KernelDesc::Window {
                window: w,
                epilogue,
            } => window(w, epilogue.as_ref()),
            KernelDesc::Contraction {
                geometry,
                pass,
                algorithm,
                ..
            } => contraction(geometry, pass, *algorithm),
            KernelDesc::WinogradFilter {
                shape,
                tile,
                direction,
                ..
            } => {
                let transformed = winograd_kernel_len(shape, *tile)?;
                Ok(match direction {
                    Direction::BackwardFilter => vec![read(transformed), write(kernel_len(shape))],
                    _ => vec![read(kernel_len(shape)), write(transformed)],
                })
            }
            KernelDesc::PackWeights {
                geometry,
                transposed,
                ..
            } => {
                let weights = match geometry {
                    Geometry::Conv(s) => kernel_len(s),
                    Geometry::Dense(s) => s.inputs * s.units,
                };
                Ok(vec![
                    read(weights),
                    write(packed_len(geometry, *transposed)?),
                ])
            }
            KernelDesc::Grouped(g) => g
                .buffers()
                .map(|args| {
                    args.into_iter()
                        .map(|(len, written)| if written { write(len) } else { read(len) })
                        .collect()
                })
                .map_err(|e| e.to_string()),
            KernelDesc::Copy(c) => Ok(vec![read(c.rows * c.from.0), write(c.rows * c.to.0)]),
            KernelDesc::Embed(e) => e
                .validate()
                .map(|()| vec![read(e.rows * e.len), write(e.rows * e.width)]),
            KernelDesc::Pad(p) => pad(p),
            KernelDesc::Mask(m) => Ok(vec![read(2), write(m.len)]),
            KernelDesc::Resample(r) => {
                let (source, target) = r.lengths()?;
                Ok(vec![read(source), write(target)])
            }
        }
    }
}

/// A pad copy's source and destination; an error for a size of zero or
/// lengths that overflow.
fn pad(p: &PadCopy) -> Result<Vec<Param>, String> {
    let sizes = [p.batch, p.from[0], p.from[1], p.from[2], p.to[0], p.to[1]];
    let len = |dims: &[usize]| dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    match (
        len(&sizes[..4]),
        len(&[p.batch, p.to[0], p.to[1], p.from[2]]),
    ) {
        (Some(from), Some(to))
            if !sizes.contains(&0) && from.max(to) <= isize::MAX as usize / 4 =>
        {
            Ok(vec![read(from), write(to)])
        }
        _ => Err(format!(
            "the pad copy {sizes:?} has a zero or too large size"
        )),
    }
}

fn read(len: usize) -> Param {
    Param {
        access: Access::Read,
        len: Len::Exactly(len),
        storage: Storage::F32,
    }
}

fn write(len: usize) -> Param {
    Param {
        access: Access::Write,
        len: Len::Exactly(len),
        storage: Storage::F32,
    }
}

/// An element-wise kernel over `[rows, channels]`: its inputs, then its
/// outputs; `skip` leaves out the first inputs and outputs (an epilogue's
/// input 0 and output 0 are its contraction's output).
fn elementwise(kernel: &Elementwise, rows: usize, channels: usize, skip: usize) -> Vec<Param> {
    let inputs = kernel.inputs.iter().enumerate().skip(skip).map(|(i, op)| {
        let len = match op {
            Operand::Tensor | Operand::Bf16 => Len::Exactly(rows * channels),
            Operand::LiveTaps(taps) => Len::Exactly(taps.stored_rows() * channels),
            Operand::PerChannel => Len::Exactly(channels),
            Operand::PerItem { rows_per_item } => {
                Len::Exactly(rows / (*rows_per_item).max(1) * channels)
            }
            Operand::Scalars => Len::AtLeast(scalars_read(kernel, i)),
        };
        let storage = match op {
            Operand::Bf16 => Storage::Bf16,
            _ => Storage::F32,
        };
        Param {
            access: Access::Read,
            len,
            storage,
        }
    });
    let outputs = (0..kernel.outputs.len()).skip(skip).map(|k| Param {
        storage: kernel.store(k),
        ..write(rows * channels)
    });
    inputs.chain(outputs).collect()
}

/// How many values of scalar input `input` the kernel reads.
fn scalars_read(kernel: &Elementwise, input: usize) -> usize {
    kernel
        .exprs
        .iter()
        .map(|e| match *e {
            Expr::Scalar { input: i, index } if i == input => index + 1,
            Expr::Load(i) if i == input => 1,
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}

/// The buffers [`ReduceKind`] documents for each reduction.
fn reduce(r: &Reduce) -> Vec<Param> {
    // Every reduction lists its inputs first.
    reduce_params(r)
        .into_iter()
        .enumerate()
        .map(|(i, param)| match param.access {
            Access::Read => Param {
                storage: r.load(i),
                ..param
            },
            Access::Write => param,
        })
        .collect()
}

/// [`reduce`]'s buffers, all f32.
fn reduce_params(r: &Reduce) -> Vec<Param> {
    let (rows, n) = (r.rows, r.n);
    let matrix = rows * n;
    match r.kind {
        ReduceKind::Softmax => vec![read(matrix), write(matrix)],
        ReduceKind::SoftmaxBackward => vec![read(matrix), read(matrix), write(matrix)],
        ReduceKind::CrossEntropy { .. } => {
            vec![read(matrix), read(rows), write(rows), write(matrix)]
        }
        ReduceKind::ColumnMoments => vec![read(matrix), write(n), write(n)],
        ReduceKind::ColumnSums => vec![read(matrix), read(matrix), write(n), write(n)],
        ReduceKind::ItemSums { rows_per_item } => {
            let sums = rows / rows_per_item.max(1) * n;
            vec![read(matrix), read(matrix), write(sums), write(sums)]
        }
        ReduceKind::Rbf { units } => vec![read(matrix), read(n * units), write(rows * units)],
        ReduceKind::RbfBackwardData { units } => vec![
            read(matrix),
            read(n * units),
            read(rows * units),
            write(matrix),
        ],
        ReduceKind::RbfBackwardCenters { units } => vec![
            read(matrix),
            read(n * units),
            read(rows * units),
            write(n * units),
        ],
    }
}

/// The buffers a window kernel lists for itself, then its epilogue's
/// extra ones.
fn window(w: &Window, epilogue: Option<&Elementwise>) -> Result<Vec<Param>, String> {
    let buffers = w.buffers().map_err(|e| e.to_string())?;
    let mut params: Vec<Param> = buffers
        .iter()
        .map(|b| {
            let len = b.shape.iter().product();
            let param = if b.role.is_written() {
                write(len)
            } else {
                read(len)
            };
            Param {
                storage: b.storage,
                ..param
            }
        })
        .collect();
    if let Some(e) = epilogue {
        let Some((pixels, channels)) = w.row_items() else {
            return Err(format!(
                "an epilogue on the {:?} pass of {:?}, whose work items do not write a row each",
                w.pass, w.kind
            ));
        };
        let rows = w.domain().map_err(|e| e.to_string())? * pixels;
        params.extend(elementwise(e, rows, channels, 1));
    }
    Ok(params)
}

/// The buffers [`ContractionPass`] documents for each pass, the kernel
/// transformed when the algorithm is Winograd's.
fn contraction(
    geometry: &Geometry,
    pass: &ContractionPass,
    algorithm: Algorithm,
) -> Result<Vec<Param>, String> {
    let (x, w, bias, (rows, channels)) = match geometry {
        Geometry::Conv(s) => (
            s.batch * s.height * s.width * s.in_channels,
            match algorithm {
                Algorithm::Gemm => kernel_len(s),
                Algorithm::Winograd(tile) => winograd_kernel_len(s, tile)?,
                Algorithm::Bf16 { .. } => bf16_kernel_len(geometry, pass)?,
            },
            s.bias.then_some(s.out_channels),
            conv_output(s)?,
        ),
        Geometry::Dense(_) if matches!(algorithm, Algorithm::Winograd(_)) => {
            return Err("a dense layer has no Winograd algorithm".to_string())
        }
        Geometry::Dense(s) => (
            s.rows * s.inputs,
            match algorithm {
                Algorithm::Bf16 { .. } => bf16_kernel_len(geometry, pass)?,
                _ => s.inputs * s.units,
            },
            s.bias.then_some(s.units),
            (s.rows, s.units),
        ),
    };
    let y = rows * channels;
    // The input as the forward pass and the kernel gradient read it.
    let (input, output) = match algorithm {
        Algorithm::Bf16 { input, output } => (input, output),
        Algorithm::Gemm | Algorithm::Winograd(_) => (Storage::F32, Storage::F32),
    };
    let input = Param {
        storage: input,
        ..read(x)
    };
    if output != Storage::F32 && !matches!(pass, ContractionPass::Forward { .. }) {
        return Err(format!(
            "a {output:?} output on a gradient product, which writes f32"
        ));
    }
    Ok(match pass {
        ContractionPass::Forward { epilogue } => {
            let mut params = vec![input, read(w)];
            params.extend(bias.map(read));
            params.push(Param {
                storage: output,
                ..write(y)
            });
            if let Some(e) = epilogue {
                // The epilogue stores the output: as the product says.
                if e.store(0) != output {
                    return Err(format!(
                        "an epilogue storing the output in {:?}, which the product stores in \
                         {output:?}",
                        e.store(0)
                    ));
                }
                // Whatever the algorithm: a Winograd forward pass of so
                // few rows may split over its channels too.
                if forward_splits_columns(rows, channels) {
                    return Err(format!(
                        "an epilogue on a product of {rows} rows, which is split over its \
                         channels and finishes no whole row"
                    ));
                }
                params.extend(elementwise(e, rows, channels, 1));
            }
            params
        }
        ContractionPass::BackwardData { epilogue } => {
            let mut params = vec![read(y), read(w), write(x)];
            if let Some(e) = epilogue {
                let Geometry::Conv(s) = geometry else {
                    return Err("an epilogue on a dense layer's input gradient".to_string());
                };
                if algorithm == Algorithm::Gemm {
                    return Err(
                        "an epilogue on an input gradient off Winograd's transforms".to_string()
                    );
                }
                let rows = s.batch * s.height * s.width;
                params.extend(elementwise(e, rows, s.in_channels, 1));
            }
            params
        }
        ContractionPass::BackwardFilter { live_rows } => {
            let w = if *live_rows {
                live_rows_len(geometry, algorithm)?
            } else {
                w
            };
            let mut params = vec![input, read(y), write(w)];
            params.extend(bias.map(write));
            params
        }
    })
}

/// The f32 slots of a layer's weights packed for its bf16 products:
/// transposed for its input gradient.
fn packed_len(geometry: &Geometry, transposed: bool) -> Result<usize, String> {
    let len = match (geometry, transposed) {
        (Geometry::Conv(s), false) => bf16::packed_weights_len(s),
        (Geometry::Conv(s), true) => bf16::packed_transposed_len(s),
        (Geometry::Dense(s), false) => Ok(bf16::packed_dense_len(s)),
        (Geometry::Dense(s), true) => Ok(bf16::packed_dense_transposed_len(s)),
    };
    len.map_err(|e| e.to_string())
}

/// The length of the kernel buffer of a bf16 contraction: the weights
/// packed for the forward pass, packed transposed for the input gradient,
/// and the kernel gradient itself (in f32) for the kernel gradient.
fn bf16_kernel_len(geometry: &Geometry, pass: &ContractionPass) -> Result<usize, String> {
    match (pass, geometry) {
        (ContractionPass::Forward { .. }, _) => packed_len(geometry, false),
        (ContractionPass::BackwardData { .. }, _) => packed_len(geometry, true),
        (ContractionPass::BackwardFilter { .. }, Geometry::Conv(s)) => Ok(kernel_len(s)),
        (ContractionPass::BackwardFilter { .. }, Geometry::Dense(s)) => Ok(s.inputs * s.units),
    }
}

/// The length of a kernel gradient that holds only the rows of the taps
/// that read some input: a convolution's, in im2col's columns, on the
/// GEMM or in bf16 (Winograd's transforms write every tap).
fn live_rows_len(geometry: &Geometry, algorithm: Algorithm) -> Result<usize, String> {
    let Geometry::Conv(s) = geometry else {
        return Err("the live rows of a dense layer's kernel gradient".to_string());
    };
    if matches!(algorithm, Algorithm::Winograd(_)) {
        return Err("the live rows of a kernel gradient on Winograd's transforms".to_string());
    }
    crate::codegen::contraction::live_rows_len(s).map_err(|e| e.to_string())
}

/// The length of a convolution's kernel.
fn kernel_len(s: &ConvShape) -> usize {
    s.kernel[0] * s.kernel[1] * s.in_channels * s.out_channels
}

/// The length of a convolution's kernel transformed for `tile`, or why the
/// convolution has no Winograd algorithm. Both directions have the same
/// length (`a²` times both channel counts).
fn winograd_kernel_len(s: &ConvShape, tile: Tile) -> Result<usize, String> {
    if let Some(message) = winograd::unsupported(s) {
        return Err(message);
    }
    tile.points()
        .checked_mul(s.in_channels)
        .and_then(|n| n.checked_mul(s.out_channels))
        .ok_or_else(|| format!("the Winograd transform of {s:?} overflows"))
}

/// The rows and channels of a convolution's output.
fn conv_output(s: &crate::codegen::contraction::ConvShape) -> Result<(usize, usize), String> {
    let axis = |input: usize, k: usize| {
        crate::ops::output_size(
            input as u64,
            s.kernel[k] as u64,
            s.stride[k] as u64,
            s.dilation[k] as u64,
            s.padding.axis(k),
        )
        .map(|n| n as usize)
        .ok_or_else(|| format!("the convolution's window does not fit its {input}-pixel input"))
    };
    Ok((
        s.batch * axis(s.height, 0)? * axis(s.width, 1)?,
        s.out_channels,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codegen::elementwise::Binary;

    fn relu_kernel() -> Elementwise {
        Elementwise {
            name: "relu".into(),
            inputs: vec![Operand::Tensor],
            exprs: vec![
                Expr::Load(0),
                Expr::Const(0.0),
                Expr::Binary(Binary::Max, 0, 1),
            ],
            outputs: vec![2],
            stores: Vec::new(),
        }
    }

    fn relu(rows: usize, channels: usize) -> KernelDesc {
        KernelDesc::Elementwise {
            kernel: relu_kernel(),
            rows,
            channels,
        }
    }

    /// A plan `x -> relu -> t -> relu -> y` with the given second step's
    /// arguments.
    fn plan(second: Vec<BufferId>) -> KernelPlan {
        let mut plan = KernelPlan {
            name: "p".into(),
            batch: 2,
            ..KernelPlan::default()
        };
        let x = plan.buffer("x", 6, Role::Input);
        let t = plan.buffer("t", 6, Role::Temporary);
        plan.buffer("y", 6, Role::Output("y".into()));
        plan.buffer("short", 5, Role::Temporary);
        for args in [vec![x, t], second] {
            plan.steps.push(super::super::Step {
                kernel: relu(2, 3),
                args,
                nodes: vec![],
            });
        }
        plan
    }

    fn message(plan: &KernelPlan) -> String {
        plan.verify().unwrap_err().to_string()
    }

    #[test]
    fn a_consistent_plan_verifies() {
        assert_eq!(plan(vec![1, 2]).verify(), Ok(()));
    }

    #[test]
    fn reading_a_buffer_before_it_is_written_is_a_defect() {
        assert_eq!(
            message(&plan(vec![2, 1])),
            "internal compiler error in plan `p`, step 1 (`relu`): reads `y` before any step writes it"
        );
    }

    #[test]
    fn a_wrong_length_or_count_is_a_defect() {
        assert!(message(&plan(vec![3, 2]))
            .ends_with("argument 0 (`short`) has 5 values, but the kernel needs Exactly(6)"));
        assert!(
            message(&plan(vec![1])).ends_with("the kernel takes 2 buffers, but the step passes 1")
        );
        assert!(message(&plan(vec![1, 9])).ends_with("argument 1 is %9, which does not exist"));
    }

    #[test]
    fn writing_the_input_is_a_defect() {
        assert!(
            message(&plan(vec![1, 0])).ends_with("writes `x`, which the caller lends read-only")
        );
    }

    #[test]
    fn only_element_wise_kernels_may_read_what_they_write() {
        let mut ok = plan(vec![1, 1]);
        assert_eq!(
            ok.verify(),
            Ok(()),
            "an in-place element-wise update is fine"
        );
        ok.steps[1].kernel = KernelDesc::Copy(crate::codegen::native::CopyRows {
            name: "copy".into(),
            rows: 2,
            len: 3,
            from: (3, 0),
            to: (3, 0),
        });
        assert!(message(&ok).ends_with("reads and writes `t` at once"));
    }

    /// A bf16 buffer must be written and read as bf16, and only a
    /// temporary may be one (the caller lends and takes f32s).
    #[test]
    fn storage_must_match_and_stay_inside_the_arena() {
        let mut bf16 = plan(vec![1, 2]);
        bf16.buffers[1].storage = Storage::Bf16;
        assert!(message(&bf16)
            .ends_with("argument 1 (`t`) is stored as Bf16, but the kernel takes F32"));
        let KernelDesc::Elementwise { kernel, .. } = &mut bf16.steps[0].kernel else {
            unreachable!("the plan's steps are element-wise");
        };
        kernel.stores = vec![Storage::Bf16];
        assert!(message(&bf16)
            .ends_with("argument 0 (`t`) is stored as Bf16, but the kernel takes F32"));
        let KernelDesc::Elementwise { kernel, .. } = &mut bf16.steps[1].kernel else {
            unreachable!("the plan's steps are element-wise");
        };
        kernel.inputs = vec![Operand::Bf16];
        assert_eq!(bf16.verify(), Ok(()));
        bf16.buffers[2].storage = Storage::Bf16;
        assert!(message(&bf16)
            .ends_with("argument 1 (`y`) is stored as Bf16, but the caller lends f32s"));
    }

    /// Only a bf16 forward product stores its output in bf16, and its
    /// epilogue, which stores that output, must store it so too.
    #[test]
    fn a_bf16_output_is_a_forward_products_stored_as_its_epilogue_stores_it() {
        use crate::codegen::contraction::DenseShape;
        let geometry = Geometry::Dense(DenseShape {
            rows: 128,
            inputs: 4,
            units: 128,
            bias: false,
        });
        let bf16 = Algorithm::Bf16 {
            input: Storage::F32,
            output: Storage::Bf16,
        };
        let forward = |epilogue| ContractionPass::Forward { epilogue };
        let plain = contraction(&geometry, &forward(None), bf16).expect("a bf16 output");
        assert_eq!(plain.last().map(|p| p.storage), Some(Storage::Bf16));
        let f32_relu = contraction(&geometry, &forward(Some(relu_kernel())), bf16);
        assert!(f32_relu
            .expect_err("an epilogue storing f32")
            .starts_with("an epilogue storing the output in F32"));
        let bf16_relu = Elementwise {
            stores: vec![Storage::Bf16],
            ..relu_kernel()
        };
        assert!(contraction(&geometry, &forward(Some(bf16_relu)), bf16).is_ok());
        for pass in [
            ContractionPass::BackwardFilter { live_rows: false },
            ContractionPass::BackwardData { epilogue: None },
        ] {
            let refused = contraction(&geometry, &pass, bf16).expect_err("a gradient in bf16");
            assert!(refused.contains("gradient product"), "{refused}");
        }
    }

    /// A forward product of a few rows is split over its channels: no
    /// item finishes a whole row, so an epilogue on it is a defect.
    #[test]
    fn an_epilogue_needs_whole_rows() {
        use crate::codegen::contraction::DenseShape;
        for (rows, refused) in [(16, true), (128, false)] {
            let mut plan = KernelPlan {
                name: "p".into(),
                batch: rows,
                ..KernelPlan::default()
            };
            let x = plan.buffer("x", rows * 4, Role::Input);
            let w = plan.buffer("w", 4 * 128, Role::Weight("w".into()));
            let y = plan.buffer("y", rows * 128, Role::Output("y".into()));
            plan.steps.push(super::super::Step {
                kernel: KernelDesc::Contraction {
                    name: "dense".into(),
                    geometry: Geometry::Dense(DenseShape {
                        rows,
                        inputs: 4,
                        units: 128,
                        bias: false,
                    }),
                    pass: ContractionPass::Forward {
                        epilogue: Some(relu_kernel()),
                    },
                    algorithm: Algorithm::Gemm,
                },
                args: vec![x, w, y],
                nodes: vec![],
            });
            match refused {
                true => assert!(message(&plan).contains("split over its channels")),
                false => assert_eq!(plan.verify(), Ok(())),
            }
        }
    }
}
