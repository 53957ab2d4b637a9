//! The contraction kernels in bf16 ([`super`]): a layer's weights packed
//! once per run into the right operand of its products ([`PackWeights`]),
//! and the forward convolution or dense layer on them ([`Bf16Forward`]).
//! The input gradient's bf16 products are
//! [`crate::codegen::contraction::ConvBackwardData::bf16`]'s.
//!
//! The forward product reads the packed weights, packs its item's rows of
//! im2col (or, for a 1x1 stride-1 convolution and a dense layer, of the
//! input) a row at a time (the f32 row stays in L1 between im2col and the
//! packing), multiplies on the program's [`Backend`], then adds the bias
//! in f32 and runs the epilogue on the rows while they are in cache. Its
//! items are blocks of output rows; each sums every element from zero in
//! the backend's order, so any split of the items gives the same bits.

use std::ops::Range;

use super::{padded_pairs, panels_words, product, Backend, Packer, Panels, Rows, Source, PANEL};
use crate::codegen::contraction::geometry::Geometry;
use crate::codegen::contraction::{
    items_of_images, rows_per_item, scratch_for, Common, ConvShape, DenseShape, Epilogue,
    ForwardBuffers, Lengths,
};
use crate::codegen::{CodegenError, Storage};

/// The f32 slots (one per word of two bf16 values) of convolution
/// `shape`'s weights packed by [`PackWeights`]: the weight rows of its
/// active taps, in im2col's order, by its output channels.
pub fn packed_weights_len(shape: &ConvShape) -> Result<usize, CodegenError> {
    let g = Geometry::new("packed weights", shape)?;
    Ok(panels_words(g.cols, shape.out_channels))
}

/// [`packed_weights_len`] of dense layer `shape`.
pub fn packed_dense_len(shape: &DenseShape) -> usize {
    panels_words(shape.inputs, shape.units)
}

/// The f32 slots of convolution `shape`'s weights packed transposed
/// ([`PackWeights::transposed`]), for its input gradient.
pub fn packed_transposed_len(shape: &ConvShape) -> Result<usize, CodegenError> {
    let g = Geometry::new("packed weights", shape)?;
    Ok(panels_words(shape.out_channels, g.cols))
}

/// [`packed_transposed_len`] of dense layer `shape`.
pub fn packed_dense_transposed_len(shape: &DenseShape) -> usize {
    panels_words(shape.units, shape.inputs)
}

/// Packs a layer's f32 weights `[taps x in_channels, out_channels]` into
/// the right operand of its bf16 forward product: the weight rows of the
/// active taps (those im2col keeps), in im2col's column order, rounded to
/// bf16, in [`Panels`]. Domain: the panels of [`PANEL`] output channels.
/// Transposed ([`PackWeights::transposed`]), for the input gradient's
/// product `dy · Wᵀ`: depth the output channels, columns the active
/// taps' weight rows; domain, panels of those.
#[derive(Debug, Clone)]
pub struct PackWeights {
    name: String,
    /// The weight row of each im2col column.
    weight_rows: Vec<usize>,
    out_channels: usize,
    kernel_len: usize,
    transposed: bool,
    packer: Packer,
}

impl PackWeights {
    /// The packing of convolution `shape`'s weights.
    pub fn new(name: &str, shape: &ConvShape) -> Result<PackWeights, CodegenError> {
        let g = Geometry::new(name, shape)?;
        let weight_rows = g
            .groups
            .iter()
            .flat_map(|group| group.weight_row..group.weight_row + group.len)
            .collect();
        Ok(PackWeights {
            name: name.to_string(),
            weight_rows,
            out_channels: shape.out_channels,
            kernel_len: g.kernel_len,
            transposed: false,
            packer: Packer::new(),
        })
    }

    /// The packing of dense layer `shape`'s weights.
    pub fn dense(name: &str, shape: &DenseShape) -> Result<PackWeights, CodegenError> {
        PackWeights::new(name, &shape.as_conv())
    }

    /// The transposed packing of convolution `shape`'s weights, for its
    /// input gradient.
    pub fn transposed(name: &str, shape: &ConvShape) -> Result<PackWeights, CodegenError> {
        Ok(PackWeights {
            transposed: true,
            ..PackWeights::new(name, shape)?
        })
    }

    /// The transposed packing of dense layer `shape`'s weights.
    pub fn dense_transposed(name: &str, shape: &DenseShape) -> Result<PackWeights, CodegenError> {
        PackWeights::transposed(name, &shape.as_conv())
    }

    /// The depth and columns of the packed operand.
    fn operand(&self) -> (usize, usize) {
        let (taps, channels) = (self.weight_rows.len(), self.out_channels);
        if self.transposed {
            (channels, taps)
        } else {
            (taps, channels)
        }
    }

    /// The f32 slots of the packed weights.
    pub fn packed_len(&self) -> usize {
        let (depth, columns) = self.operand();
        panels_words(depth, columns)
    }

    /// The f32s of the layer's weights.
    pub fn kernel_len(&self) -> usize {
        self.kernel_len
    }

    /// The number of items: panels.
    pub fn domain(&self) -> usize {
        self.operand().1.div_ceil(PANEL)
    }

    /// Packs panels `items` of `kernel` into `packed`.
    ///
    /// # Safety
    /// `kernel` holds [`Self::kernel_len`] f32s and `packed`
    /// [`Self::packed_len`] slots, not overlapping; calls running at the
    /// same time on the same `packed` are given disjoint items.
    pub unsafe fn run(
        &self,
        kernel: *const f32,
        packed: *mut f32,
        items: Range<usize>,
    ) -> Result<(), CodegenError> {
        if items.start > items.end || items.end > self.domain() {
            return Err(CodegenError::Malformed {
                kernel: self.name.clone(),
                message: format!("items {items:?} are not in the domain 0..{}", self.domain()),
            });
        }
        // SAFETY: the caller's contract: the weights are only read.
        let kernel = unsafe { std::slice::from_raw_parts(kernel, self.kernel_len) };
        let cout = self.out_channels;
        let line = |p: usize| &kernel[self.weight_rows[p] * cout..][..cout];
        let (depth, _) = self.operand();
        let panel_len = padded_pairs(depth) * PANEL;
        // SAFETY: panels `items` of the packed operand, inside it (the
        // domain was checked), which this call alone writes (the caller's
        // contract).
        let words = unsafe {
            std::slice::from_raw_parts_mut(
                packed.cast::<u32>().add(items.start * panel_len),
                items.len() * panel_len,
            )
        };
        if self.transposed {
            let columns = self.weight_rows.len();
            for (panel, words) in items.zip(words.chunks_exact_mut(panel_len)) {
                self.packer
                    .transposed_panel((cout, columns), panel, line, words);
            }
        } else {
            self.packer.panels(depth, items, line, words);
        }
        Ok(())
    }
}

/// The forward convolution or dense layer in bf16: `output = im2col(input)
/// · weights (+ bias)`, the operands rounded to bf16 and the products
/// summed in f32, then the epilogue. Its kernel buffer holds the weights
/// as [`PackWeights`] packed them. Domain: blocks of output rows.
#[derive(Debug, Clone)]
pub struct Bf16Forward {
    common: Common,
    backend: Backend,
    packer: Packer,
    rows_per_item: usize,
    /// How the input is stored.
    input: Storage,
    /// How the output is stored.
    output: Storage,
}

impl Bf16Forward {
    /// The forward kernel of convolution `shape` on `backend`.
    ///
    /// # Errors
    /// When the shape is invalid or this CPU does not run `backend`.
    pub fn new(
        name: &str,
        shape: &ConvShape,
        backend: Backend,
    ) -> Result<Bf16Forward, CodegenError> {
        backend.require(name)?;
        let common = Common::new(name, shape)?;
        let stride = padded_pairs(common.geometry.cols);
        let rows_per_item = rows_per_item(common.geometry.rows, stride);
        Ok(Bf16Forward {
            common,
            backend,
            packer: Packer::new(),
            rows_per_item,
            input: Storage::F32,
            output: Storage::F32,
        })
    }

    /// This kernel reading its input stored as `input`: bf16 values are
    /// copied into the packed rows where f32s would be rounded (the same
    /// operands, so the same result, bit for bit).
    pub fn reading(self, input: Storage) -> Bf16Forward {
        Bf16Forward { input, ..self }
    }

    /// This kernel storing its output as `output`: in bf16, each item's
    /// rows are summed, biased and run through the epilogue in f32 in
    /// scratch, then rounded as they are stored (by the epilogue, which
    /// must then store its output 0 in bf16, or by the kernel).
    pub fn writing(self, output: Storage) -> Bf16Forward {
        Bf16Forward { output, ..self }
    }

    /// The forward kernel of dense layer `shape` on `backend`.
    pub fn dense(
        name: &str,
        shape: &DenseShape,
        backend: Backend,
    ) -> Result<Bf16Forward, CodegenError> {
        Bf16Forward::new(name, &shape.as_conv(), backend)
    }

    /// Whether the layer adds a bias (and so the kernel takes a bias buffer).
    pub fn has_bias(&self) -> bool {
        self.common.geometry.shape.bias
    }

    /// The backend its products run on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The number of items.
    pub fn domain(&self) -> usize {
        self.common.geometry.rows.div_ceil(self.rows_per_item)
    }

    /// The items that write the output rows of images `examples` of a
    /// batch of `batch` ([`crate::codegen::program::Kernel::example_items`]).
    pub fn example_items(&self, batch: usize, examples: Range<usize>) -> Option<Range<usize>> {
        let g = &self.common.geometry;
        let per_image = g.y.output * g.x.output;
        items_of_images(g, None, (batch, examples), |examples| {
            Some(super::super::items_of(
                examples,
                per_image,
                self.rows_per_item,
            ))
        })
    }

    /// The f32s of scratch one thread needs: an item's packed rows, one
    /// im2col row in f32, and for a bf16 output the item's f32 rows.
    pub fn scratch_len(&self) -> usize {
        let g = &self.common.geometry;
        let row = if g.pointwise { 0 } else { g.cols };
        let block = match self.output {
            Storage::F32 => 0,
            Storage::Bf16 => self.rows_per_item * g.shape.out_channels,
        };
        scratch_for(self.rows_per_item * padded_pairs(g.cols) + row + block)
    }

    /// The geometry's figures; the kernel buffer holds
    /// [`packed_weights_len`] slots, not `kernel` f32s.
    pub fn lengths(&self) -> Lengths {
        Lengths::of(&self.common.geometry)
    }

    /// Runs items `items`.
    ///
    /// # Safety
    /// The input, bias and output hold the values [`ForwardBuffers`] says
    /// (the input and the output as this kernel stores them), and the
    /// kernel buffer the packed weights ([`packed_weights_len`] slots);
    /// the output overlaps no other buffer. Calls running at the
    /// same time on the same output are given disjoint item ranges. The
    /// contract of the epilogue ([`Epilogue::new`]) holds.
    pub unsafe fn run(
        &self,
        buffers: &ForwardBuffers,
        epilogue: Option<&Epilogue>,
        scratch: &mut [f32],
        items: Range<usize>,
    ) -> Result<(), CodegenError> {
        let c = &self.common;
        let given = Some(buffers.bias.is_some());
        let scratch = c.check(&items, self.domain(), given, scratch, self.scratch_len())?;
        let g = &c.geometry;
        let cout = g.shape.out_channels;
        // SAFETY: the caller's contract: the input (f32s, or bf16 values
        // as the kernel was made to read) and the packed weights are only
        // read.
        let (input, weights) = unsafe {
            (
                match self.input {
                    Storage::F32 => {
                        Source::F32(std::slice::from_raw_parts(buffers.input, g.input_len))
                    }
                    Storage::Bf16 => Source::Bf16(std::slice::from_raw_parts(
                        buffers.input.cast::<u16>(),
                        g.input_len,
                    )),
                },
                std::slice::from_raw_parts(
                    buffers.kernel.cast::<u32>(),
                    panels_words(g.cols, cout),
                ),
            )
        };
        let right = Panels::new(weights, g.cols, cout);
        // SAFETY: the bias holds `cout` f32s.
        let bias = buffers
            .bias
            .map(|b| unsafe { std::slice::from_raw_parts(b, cout) });
        let (scratch, block) = match self.output {
            Storage::F32 => (scratch, &mut [][..]),
            Storage::Bf16 => {
                let split = scratch.len() - self.rows_per_item * cout;
                scratch.split_at_mut(split)
            }
        };
        for item in items {
            let first = item * self.rows_per_item;
            let rows = first..(first + self.rows_per_item).min(g.rows);
            let left = self.pack_rows(input, rows.clone(), scratch);
            let values = rows.len() * cout;
            let out = match self.output {
                // SAFETY: these output rows are this item's alone (the
                // caller's contract), inside the output.
                Storage::F32 => unsafe {
                    std::slice::from_raw_parts_mut(buffers.output.add(rows.start * cout), values)
                },
                Storage::Bf16 => &mut block[..values],
            };
            product(self.backend, &left, &right, 0..rows.len(), out);
            if let Some(bias) = bias {
                for row in out.chunks_exact_mut(cout) {
                    row.iter_mut().zip(bias).for_each(|(y, b)| *y += b);
                }
            }
            match (self.output, epilogue) {
                // SAFETY: the output holds `rows.end * cout` f32s, all
                // written; the rest is the caller's contract.
                (Storage::F32, Some(epilogue)) => unsafe {
                    epilogue.apply(buffers.output, rows, cout)
                },
                (Storage::F32, None) => {}
                // SAFETY: the block holds these rows in f32, the output
                // (bf16 values) their places, which the epilogue, made to
                // store in bf16 (the caller's contract), rounds them into.
                (Storage::Bf16, Some(epilogue)) => unsafe {
                    epilogue.apply_from(out.as_mut_ptr(), buffers.output, rows, cout)
                },
                (Storage::Bf16, None) => {
                    // SAFETY: the output holds bf16 values, these rows'
                    // this item's alone.
                    let stored = unsafe {
                        std::slice::from_raw_parts_mut(
                            buffers.output.cast::<u16>().add(rows.start * cout),
                            values,
                        )
                    };
                    self.packer.round(out, stored);
                }
            }
        }
        Ok(())
    }

    /// Packs the im2col rows `rows` (or the input's, for a pointwise
    /// layer) into the front of `scratch`, one row at a time through its
    /// back.
    fn pack_rows<'s>(
        &self,
        input: Source,
        rows: Range<usize>,
        scratch: &'s mut [f32],
    ) -> Rows<&'s [u32]> {
        let g = &self.common.geometry;
        let stride = padded_pairs(g.cols);
        let (packed, row) = scratch.split_at_mut(self.rows_per_item * stride);
        let packed = super::words_mut(packed);
        for (r, words) in rows.clone().zip(packed.chunks_exact_mut(stride)) {
            match input {
                Source::F32(input) => {
                    let values = if g.pointwise {
                        &input[r * g.cols..][..g.cols]
                    } else {
                        g.im2col(input, r..r + 1, 0..g.cols, &mut row[..g.cols]);
                        &row[..g.cols]
                    };
                    self.packer.row(values, words);
                }
                Source::Bf16(input) => {
                    // A packed row is its values in order, two to a word:
                    // bf16 values go there as they are.
                    let halves = super::halves_mut(words);
                    let (values, padding) = halves.split_at_mut(g.cols);
                    if g.pointwise {
                        values.copy_from_slice(&input[r * g.cols..][..g.cols]);
                    } else {
                        g.im2col(input, r..r + 1, 0..g.cols, values);
                    }
                    padding.fill(0);
                }
            }
        }
        Rows::new(&packed[..rows.len() * stride], rows.len(), g.cols)
    }
}
