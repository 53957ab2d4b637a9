//! Code generation for a whole plan: each step's kernel compiled to native
//! code ([`crate::codegen`]), its arguments bound to the slots the memory
//! layout gives them, in one program with a JIT of its own ([`build`]).

use crate::codegen::contraction::bf16::{Backend, Bf16Forward, PackWeights};
use crate::codegen::contraction::step::{
    BackwardDataStep, BackwardFilterStep, ProductStep, TransformStep,
};
use crate::codegen::contraction::winograd::{
    Direction, WinogradBackwardFilter, WinogradConv, WinogradFilter, WinogradFilterGradient,
};
use crate::codegen::contraction::{ConvBackwardData, ConvBackwardFilter, ConvForward};
use crate::codegen::elementwise::Elementwise;
use crate::codegen::program::{Kernel, Program, RowEpilogue, RowKernel, Step};
use crate::codegen::{CodegenError, CompiledKernel, Jit};
use crate::memory::Layout;
use crate::plan::{Algorithm, ContractionPass, Geometry, KernelDesc, KernelPlan, Storage};

/// Element counts below which a kernel runs on one thread: below this,
/// waking a second thread costs more than it saves.
const SERIAL_ELEMENTS: usize = 16 * 1024;

/// A kernel plan compiled to native code: what the runtime runs.
pub struct Compiled {
    /// What the program computes: its buffers (with their roles) and steps.
    pub plan: KernelPlan,
    /// Where each buffer lives.
    pub layout: Layout,
    /// The native kernels, one per plan step.
    pub program: Program,
    // The kernels' code lives in the JIT, which must outlive `program`
    // (fields drop in declaration order).
    _jit: Jit,
}

/// Compiles every step of `plan`, whose buffers live where `layout` says,
/// into one program with a JIT of its own.
pub fn build(plan: KernelPlan, layout: Layout) -> Result<Compiled, CodegenError> {
    let mut jit = Jit::new()?;
    let mut steps = Vec::with_capacity(plan.steps.len());
    for (step, prepared) in plan.steps.iter().zip(plan.prepared()) {
        let (kernel, elements) = kernel(&mut jit, &step.kernel)?;
        // Small kernels run on one thread.
        let serial_below = if elements < SERIAL_ELEMENTS {
            usize::MAX
        } else {
            0
        };
        steps.push(Step {
            kernel,
            args: step.args.iter().map(|&b| layout.slots[b]).collect(),
            serial_below,
            prepared,
        });
    }
    let arena_len = (layout.arena_bytes / 4) as usize;
    Ok(Compiled {
        plan,
        layout,
        program: Program { steps, arena_len },
        _jit: jit,
    })
}

/// The native kernel of one step, and its size in elements (for the
/// threading threshold).
fn kernel(jit: &mut Jit, desc: &KernelDesc) -> Result<(Box<dyn Kernel>, usize), CodegenError> {
    Ok(match desc {
        KernelDesc::Elementwise {
            kernel,
            rows,
            channels,
        } => {
            let compiled = jit.compile_elementwise(kernel)?;
            let kernel = RowKernel {
                kernel: compiled,
                rows: *rows,
                channels: *channels,
            };
            (Box::new(kernel), rows * channels)
        }
        KernelDesc::Reduce(r) => (Box::new(jit.compile_reduce(r)?), r.rows * r.n),
        KernelDesc::Window { window, epilogue } => {
            let elements = window.input.iter().product();
            let kernel = jit.compile_window(window)?;
            let Some(epilogue) = epilogue else {
                return Ok((Box::new(kernel), elements));
            };
            let Some((pixels, channels)) = window.row_items() else {
                return Err(CodegenError::Malformed {
                    kernel: window.name.clone(),
                    message: "an epilogue on a window kernel whose items do not write a row each"
                        .into(),
                });
            };
            let step = RowEpilogue {
                kernel,
                buffers: window.buffers()?.len(),
                epilogue: compile_epilogue(jit, epilogue)?,
                pixels,
                channels,
            };
            (Box::new(step), elements)
        }
        KernelDesc::Contraction {
            name,
            geometry,
            pass,
            algorithm: Algorithm::Gemm,
        } => contraction(jit, name, geometry, pass)?,
        KernelDesc::Contraction {
            name,
            geometry,
            pass,
            algorithm: Algorithm::Bf16 { input, output },
        } => bf16_contraction(jit, name, geometry, pass, (*input, *output))?,
        KernelDesc::PackWeights {
            name,
            geometry,
            transposed,
        } => {
            let kernel = match (geometry, transposed) {
                (Geometry::Conv(s), false) => PackWeights::new(name, s)?,
                (Geometry::Conv(s), true) => PackWeights::transposed(name, s)?,
                (Geometry::Dense(s), false) => PackWeights::dense(name, s)?,
                (Geometry::Dense(s), true) => PackWeights::dense_transposed(name, s)?,
            };
            let work = kernel.packed_len();
            let step = TransformStep {
                kernel,
                name: name.clone(),
            };
            (Box::new(step), work)
        }
        KernelDesc::Contraction {
            name,
            geometry,
            pass,
            algorithm: Algorithm::Winograd(tile),
        } => {
            let Geometry::Conv(shape) = geometry else {
                return Err(CodegenError::Malformed {
                    kernel: name.clone(),
                    message: format!("no Winograd algorithm computes {pass:?} of {geometry:?}"),
                });
            };
            let work =
                shape.batch * shape.height * shape.width * shape.in_channels * shape.out_channels;
            let direction = match pass {
                ContractionPass::Forward { .. } => Direction::Forward,
                ContractionPass::BackwardData { .. } => Direction::BackwardData,
                ContractionPass::BackwardFilter { live_rows: true } => {
                    return Err(CodegenError::Malformed {
                        kernel: name.clone(),
                        message: "Winograd's kernel gradient writes every tap's rows".into(),
                    })
                }
                ContractionPass::BackwardFilter { live_rows: false } => {
                    let step = BackwardFilterStep {
                        kernel: WinogradBackwardFilter::new(name, shape, *tile)?,
                        name: name.clone(),
                    };
                    return Ok((Box::new(step), work));
                }
            };
            let kernel = WinogradConv::new(name, shape, *tile, direction)?;
            let epilogue = match pass {
                ContractionPass::Forward { epilogue: Some(e) }
                | ContractionPass::BackwardData { epilogue: Some(e) } => {
                    Some(compile_epilogue(jit, e)?)
                }
                _ => None,
            };
            let step = ProductStep {
                kernel,
                name: name.clone(),
                epilogue,
            };
            (Box::new(step), work)
        }
        KernelDesc::WinogradFilter {
            name,
            shape,
            tile,
            direction,
            ..
        } if *direction == Direction::BackwardFilter => {
            let kernel = WinogradFilterGradient::new(name, shape, *tile)?;
            let work = kernel.transformed_len();
            let step = TransformStep {
                kernel,
                name: name.clone(),
            };
            (Box::new(step), work)
        }
        KernelDesc::WinogradFilter {
            name,
            shape,
            tile,
            direction,
            ..
        } => {
            let kernel = WinogradFilter::new(name, shape, *tile, *direction)?;
            let work = kernel.transformed_len();
            let step = TransformStep {
                kernel,
                name: name.clone(),
            };
            (Box::new(step), work)
        }
        KernelDesc::Grouped(g) => (Box::new(g.build()?), g.work()),
        KernelDesc::Copy(c) => (Box::new(c.clone()), c.rows * c.len),
        KernelDesc::Embed(e) => (Box::new(e.clone()), e.rows * e.width),
        KernelDesc::Pad(p) => (Box::new(p.clone()), p.to_len()),
        KernelDesc::Mask(m) => (Box::new(m.clone()), m.len),
        KernelDesc::Resample(r) => {
            let kernel = r.kernel().map_err(|message| CodegenError::Malformed {
                kernel: r.name.clone(),
                message,
            })?;
            let (_, written) = r.lengths().unwrap_or_default();
            (Box::new(kernel), written)
        }
    })
}

/// The kernel of a contraction step, and its size in multiply-adds (for
/// the threading threshold).
fn contraction(
    jit: &mut Jit,
    name: &str,
    geometry: &Geometry,
    pass: &ContractionPass,
) -> Result<(Box<dyn Kernel>, usize), CodegenError> {
    let work = match geometry {
        Geometry::Conv(s) => s.batch * s.height * s.width * s.in_channels * s.out_channels,
        Geometry::Dense(s) => s.rows * s.inputs * s.units,
    };
    let kernel: Box<dyn Kernel> = match pass {
        ContractionPass::Forward { epilogue } => {
            let kernel = match geometry {
                Geometry::Conv(s) => ConvForward::new(name, s)?,
                Geometry::Dense(s) => ConvForward::dense(name, s)?,
            };
            let epilogue = match epilogue {
                Some(e) => Some(compile_epilogue(jit, e)?),
                None => None,
            };
            Box::new(ProductStep {
                kernel,
                name: name.to_string(),
                epilogue,
            })
        }
        ContractionPass::BackwardData { epilogue: Some(_) } => {
            return Err(CodegenError::Malformed {
                kernel: name.to_string(),
                message: "an epilogue on an input gradient off Winograd's transforms".into(),
            })
        }
        ContractionPass::BackwardData { epilogue: None } => {
            let kernel = match geometry {
                Geometry::Conv(s) => ConvBackwardData::new(name, s)?,
                Geometry::Dense(s) => ConvBackwardData::dense(name, s)?,
            };
            Box::new(BackwardDataStep {
                kernel,
                name: name.to_string(),
            })
        }
        ContractionPass::BackwardFilter { live_rows } => {
            let kernel = match geometry {
                Geometry::Conv(s) => ConvBackwardFilter::new(name, s)?,
                Geometry::Dense(s) => ConvBackwardFilter::dense(name, s)?,
            }
            .live_rows(*live_rows);
            Box::new(BackwardFilterStep {
                kernel,
                name: name.to_string(),
            })
        }
    };
    Ok((kernel, work))
}

/// The kernel of a contraction step in bf16, on the fastest backend this
/// CPU runs, and its size in multiply-adds.
fn bf16_contraction(
    jit: &mut Jit,
    name: &str,
    geometry: &Geometry,
    pass: &ContractionPass,
    (input, output): (Storage, Storage),
) -> Result<(Box<dyn Kernel>, usize), CodegenError> {
    let work = match geometry {
        Geometry::Conv(s) => s.batch * s.height * s.width * s.in_channels * s.out_channels,
        Geometry::Dense(s) => s.rows * s.inputs * s.units,
    };
    let Some(backend) = Backend::best() else {
        return Err(CodegenError::UnsupportedHost(format!(
            "kernel `{name}` multiplies in bf16, which needs {}",
            crate::plan::Precision::Bf16.requirement()
        )));
    };
    let epilogue = match pass {
        ContractionPass::Forward { epilogue } => epilogue,
        ContractionPass::BackwardData { epilogue: None } => {
            let kernel = match geometry {
                Geometry::Conv(s) => ConvBackwardData::bf16(name, s, backend)?,
                Geometry::Dense(s) => ConvBackwardData::dense_bf16(name, s, backend)?,
            };
            let step = BackwardDataStep {
                kernel,
                name: name.to_string(),
            };
            return Ok((Box::new(step), work));
        }
        ContractionPass::BackwardFilter { live_rows } => {
            let kernel = match geometry {
                Geometry::Conv(s) => ConvBackwardFilter::bf16(name, s, backend)?,
                Geometry::Dense(s) => ConvBackwardFilter::dense_bf16(name, s, backend)?,
            }
            .reading(input)?
            .live_rows(*live_rows);
            let step = BackwardFilterStep {
                kernel,
                name: name.to_string(),
            };
            return Ok((Box::new(step), work));
        }
        ContractionPass::BackwardData { epilogue: Some(_) } => {
            return Err(CodegenError::Malformed {
                kernel: name.to_string(),
                message: "an epilogue on an input gradient off Winograd's transforms".into(),
            })
        }
    };
    let kernel = match geometry {
        Geometry::Conv(s) => Bf16Forward::new(name, s, backend)?,
        Geometry::Dense(s) => Bf16Forward::dense(name, s, backend)?,
    }
    .reading(input)
    .writing(output);
    let epilogue = match epilogue {
        Some(e) => Some(compile_epilogue(jit, e)?),
        None => None,
    };
    let step = ProductStep {
        kernel,
        name: name.to_string(),
        epilogue,
    };
    Ok((Box::new(step), work))
}

/// An epilogue compiled, with its numbers of extra inputs and outputs (its
/// input 0 and output 0 are the contraction's output).
fn compile_epilogue(
    jit: &mut Jit,
    epilogue: &Elementwise,
) -> Result<(CompiledKernel, usize, usize), CodegenError> {
    Ok((
        jit.compile_elementwise(epilogue)?,
        epilogue.inputs.len() - 1,
        epilogue.outputs.len() - 1,
    ))
}
