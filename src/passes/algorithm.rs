//! Chooses how each convolution computes its product ([`Algorithm`]), by a
//! cost model over the sizes known at compile time: the forward pass, the
//! input gradient and the kernel gradient of a 3x3 stride-1 convolution
//! run on Winograd's transforms where they cost less than im2col and the
//! GEMM. The kernel's transform becomes a step of its own, into a
//! temporary the memory planner places: before the convolution that uses
//! it, or, for the kernel gradient, after the step that computes the
//! transformed kernel's gradient, transforming it into the layer's.
//!
//! The model counts multiply-adds. The GEMM path does one per tap that
//! reads the image (taps that only read padding are skipped), per output
//! position and pair of channels. A Winograd tile does `a²` per pair of
//! channels for `m²` outputs (whole tiles, so a 7x7 image pays for 8x8);
//! its transforms of the input and of the products cost
//! [`TRANSFORM_COST`] multiply-adds per value, which also accounts for
//! their running at a fraction of the GEMM's speed; the transformed
//! kernel costs as much per value when its own step makes it, and
//! [`KERNEL_READ_COST`] each time a work item of the convolution reads it
//! (which is what makes small images, with few tiles to share it, lose),
//! or for the kernel gradient each time a chunk of tiles adds to it. Items
//! of few tiles multiply in registers, loading the transformed kernel as
//! they go: for them the reads and the products overlap, and the larger of
//! the two counts. The constants, and the speed of each algorithm on the
//! layers of the example models, are in `docs/performance.md`.

use crate::codegen::contraction::winograd::{
    self, Direction, Tile, WinogradBackwardFilter, WinogradConv,
};
use crate::codegen::contraction::{position_pairs, ConvShape};
use crate::plan::{
    Algorithm, ContractionPass, Geometry, KernelDesc, KernelPlan, PlanError, Role, Step,
};

/// The cost of transforming one value (of the input, the products or the
/// kernel), in GEMM multiply-adds.
const TRANSFORM_COST: f64 = 8.0;

/// The cost of one value of the transformed kernel read by a work item,
/// in GEMM multiply-adds: a transformed kernel is larger than its layer's
/// (16/9 or 4 times), and where the choice matters larger than a core's
/// L2, so that each item streams it from L3 or memory.
const KERNEL_READ_COST: f64 = 8.0;

/// The share of a Winograd convolution's cost its kernel's transform must
/// reach for a frozen kernel's transform to be kept from run to run.
const KEEP_SHARE: f64 = 0.05;

/// Winograd is chosen only when the model puts it at most at this fraction
/// of the GEMM's cost, so that an error of the model does not choose it
/// where it barely wins.
const MARGIN: f64 = 0.8;

/// Gives each convolution pass that costs less on Winograd's transforms
/// that algorithm, with the step that transforms its kernel (or its
/// kernel's gradient); returns how many were chosen, after checking that
/// the plan still holds every invariant.
pub fn run(plan: &mut KernelPlan) -> Result<usize, PlanError> {
    let mut chosen = 0;
    let mut steps = Vec::with_capacity(plan.steps.len());
    for mut step in std::mem::take(&mut plan.steps) {
        // A forward pass whose kernel is a frozen weight transforms it once
        // (`KernelPlan::prepared`), not on every run.
        let once = plan.frozen_weights
            && step
                .args
                .get(1)
                .is_some_and(|&b| matches!(plan.buffers[b].role, Role::Weight(_)));
        let Some((shape, direction, tile, keep)) = choice(&step.kernel, once) else {
            steps.push(step);
            continue;
        };
        let name = format!("{}.winograd", step.kernel.name());
        let len = tile.points() * shape.in_channels * shape.out_channels;
        let transformed = plan.buffer(name.clone(), len, Role::Temporary);
        let mut transform = Step {
            kernel: KernelDesc::WinogradFilter {
                name,
                shape,
                tile,
                direction,
                keep,
            },
            args: Vec::new(),
            nodes: step.nodes.clone(),
        };
        if let KernelDesc::Contraction { algorithm, .. } = &mut step.kernel {
            *algorithm = Algorithm::Winograd(tile);
        }
        if direction == Direction::BackwardFilter {
            // The step writes the transformed kernel's gradient where it
            // wrote the kernel's (its third argument), and the transform
            // after it writes the kernel's.
            transform.args = vec![transformed, step.args[2]];
            step.args[2] = transformed;
            steps.extend([step, transform]);
        } else {
            // Both convolutions take the layer's kernel as their second
            // argument.
            transform.args = vec![step.args[1], transformed];
            step.args[1] = transformed;
            steps.extend([transform, step]);
        }
        chosen += 1;
    }
    plan.steps = steps;
    plan.verify()?;
    Ok(chosen)
}

/// The layer, direction and tile of a convolution step that should run as
/// a Winograd convolution, and whether its transformed kernel is worth
/// keeping from run to run; `once`: a forward pass could transform its
/// kernel once (frozen weights), not on every run.
fn choice(kernel: &KernelDesc, once: bool) -> Option<(ConvShape, Direction, Tile, bool)> {
    let KernelDesc::Contraction {
        geometry: Geometry::Conv(shape),
        pass,
        algorithm: Algorithm::Gemm,
        ..
    } = kernel
    else {
        return None;
    };
    let direction = match pass {
        ContractionPass::Forward { .. } => Direction::Forward,
        ContractionPass::BackwardData { .. } => Direction::BackwardData,
        ContractionPass::BackwardFilter { .. } => Direction::BackwardFilter,
    };
    let once = once && direction == Direction::Forward;
    let (tile, keep) = cheapest(shape, direction, once)?;
    Some((*shape, direction, tile, keep))
}

/// The Winograd tile that costs at most [`MARGIN`] of the GEMM for
/// `direction` of `shape`, the cheapest if several do, when the kernel is
/// transformed on every run.
pub fn cheaper(shape: &ConvShape, direction: Direction) -> Option<Tile> {
    cheapest(shape, direction, false).map(|(tile, _)| tile)
}

/// [`cheaper`], with the kernel transformed once (frozen weights) when
/// `once`; and whether that transform is worth its memory for the whole
/// program: when making it costs at least [`KEEP_SHARE`] of its
/// convolution (at batch 1, as much as half of the seed CNN's conv3; at
/// batch 256 a fraction of a percent, where keeping every layer's would add
/// 17 MiB to the seed CNN's arena, `docs/performance.md`).
fn cheapest(shape: &ConvShape, direction: Direction, once: bool) -> Option<(Tile, bool)> {
    if winograd::unsupported(shape).is_some() {
        return None;
    }
    let sizes = Sizes::new(shape, direction)?;
    let gemm = sizes.gemm();
    Tile::ALL
        .into_iter()
        .filter_map(|tile| {
            // The items the convolution would be split into, each reading
            // the whole transformed kernel; or the chunks of tiles that each
            // add to the whole of its gradient.
            let items = match direction {
                Direction::BackwardFilter => Items {
                    count: WinogradBackwardFilter::new("cost", shape, tile)
                        .ok()?
                        .chunks(),
                    small: false,
                },
                _ => {
                    let conv = WinogradConv::new("cost", shape, tile, direction).ok()?;
                    Items {
                        count: conv.kernel_reads(),
                        small: conv.has_small_items(),
                    }
                }
            };
            let per_run = sizes.winograd(tile, items, false);
            let kept = sizes.winograd(tile, items, true);
            let keep = once && per_run - kept >= KEEP_SHARE * per_run;
            Some((tile, if once { kept } else { per_run }, keep))
        })
        .filter(|&(_, cost, _)| cost <= MARGIN * gemm)
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(tile, _, keep)| (tile, keep))
}

/// The work items of a Winograd convolution (or the chunks of a kernel
/// gradient), as far as the cost model is concerned.
#[derive(Debug, Clone, Copy)]
struct Items {
    /// How many times they read the whole transformed kernel between
    /// them ([`WinogradConv::kernel_reads`]), or add to its gradient.
    count: usize,
    /// Whether they multiply in registers
    /// ([`WinogradConv::has_small_items`]).
    small: bool,
}

/// What the costs depend on: the convolution as its kernel sees it.
struct Sizes {
    batch: f64,
    /// The layer's output positions per image.
    positions: usize,
    /// The destination's height and width.
    destination: [usize; 2],
    /// The taps that read the image along each axis.
    taps: [usize; 2],
    /// The pairs of connected positions per image, when the GEMM path
    /// computes the layer by position (tiny images).
    pairs: Option<usize>,
    source_channels: f64,
    destination_channels: f64,
}

impl Sizes {
    fn new(s: &ConvShape, direction: Direction) -> Option<Sizes> {
        let (y, x) = (s.axis(0)?, s.axis(1)?);
        let input = [s.height, s.width];
        let output = [y.output, x.output];
        let taps = [y.active_taps().len(), x.active_taps().len()];
        let (destination, source_channels, destination_channels) = match direction {
            Direction::Forward | Direction::BackwardFilter => {
                (output, s.in_channels, s.out_channels)
            }
            Direction::BackwardData => (input, s.out_channels, s.in_channels),
        };
        let pairs = match direction {
            Direction::Forward => position_pairs(s, true),
            Direction::BackwardData => position_pairs(s, false),
            Direction::BackwardFilter => None,
        };
        Some(Sizes {
            batch: s.batch as f64,
            positions: output[0] * output[1],
            destination,
            taps,
            pairs,
            source_channels: source_channels as f64,
            destination_channels: destination_channels as f64,
        })
    }

    /// The multiply-adds of im2col and the GEMM: every active tap of every
    /// output position, in both directions (the input gradient's GEMM
    /// makes the im2col matrix's gradient); or, by position, every pair of
    /// connected positions.
    fn gemm(&self) -> f64 {
        let taps = match self.pairs {
            Some(pairs) => pairs as f64,
            None => (self.positions * self.taps[0] * self.taps[1]) as f64,
        };
        self.batch * taps * self.source_channels * self.destination_channels
    }

    /// The multiply-adds of a Winograd convolution with `tile` split into
    /// `items`, its transforms included (the kernel's own only when it is
    /// not transformed `once`).
    fn winograd(&self, tile: Tile, items: Items, once: bool) -> f64 {
        let m = tile.output();
        let tiles =
            self.batch * (self.destination[0].div_ceil(m) * self.destination[1].div_ceil(m)) as f64;
        let points = tile.points() as f64;
        let (cin, cout) = (self.source_channels, self.destination_channels);
        let products = tiles * points * cin * cout;
        let reads = KERNEL_READ_COST * points * cin * cout * items.count as f64;
        let multiplied = if items.small {
            products.max(reads)
        } else {
            products + reads
        };
        let transforms = tiles * points * (cin + cout);
        let own = if once { 0.0 } else { points * cin * cout };
        multiplied + TRANSFORM_COST * (transforms + own)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Padding;

    fn conv(size: usize, cin: usize, cout: usize, kernel: usize, stride: usize) -> ConvShape {
        ConvShape {
            batch: 32,
            height: size,
            width: size,
            in_channels: cin,
            out_channels: cout,
            kernel: [kernel, kernel],
            stride: [stride, stride],
            dilation: [1, 1],
            padding: Padding::Same,
            bias: true,
        }
    }

    #[test]
    fn large_images_take_the_larger_tile() {
        for direction in [Direction::Forward, Direction::BackwardData] {
            assert_eq!(
                cheaper(&conv(14, 128, 128, 3, 1), direction),
                Some(Tile::F4)
            );
            assert_eq!(cheaper(&conv(56, 64, 64, 3, 1), direction), Some(Tile::F4));
        }
    }

    #[test]
    fn other_kernels_strides_and_one_pixel_images_keep_the_gemm() {
        assert_eq!(cheaper(&conv(14, 128, 128, 5, 1), Direction::Forward), None);
        assert_eq!(cheaper(&conv(14, 128, 128, 3, 2), Direction::Forward), None);
        assert_eq!(cheaper(&conv(14, 128, 128, 1, 1), Direction::Forward), None);
        // A 1x1 image keeps one tap of nine: the GEMM does a ninth of the work.
        assert_eq!(cheaper(&conv(1, 512, 512, 3, 1), Direction::Forward), None);
        let mut dilated = conv(14, 64, 64, 3, 1);
        dilated.dilation = [2, 2];
        assert_eq!(cheaper(&dilated, Direction::Forward), None);
    }

    /// Winograd's input gradient pads dY by `2 - before`: explicit padding
    /// of at most 2 before the image may take it, more stays on the GEMM,
    /// in every direction (whatever the padding after).
    #[test]
    fn explicit_padding_of_more_than_two_before_keeps_the_gemm() {
        let padded = |pads| ConvShape {
            padding: Padding::explicit(pads, false),
            ..conv(14, 128, 128, 3, 1)
        };
        for direction in [
            Direction::Forward,
            Direction::BackwardData,
            Direction::BackwardFilter,
        ] {
            assert!(cheaper(&padded([[2, 5], [0, 2]]), direction).is_some());
            assert_eq!(cheaper(&padded([[3, 0], [1, 1]]), direction), None);
            assert!(cheaper(&padded([[1, 1], [0, 3]]), direction).is_some());
            assert_eq!(cheaper(&padded([[1, 1], [4, 1]]), direction), None);
        }
    }

    #[test]
    fn few_channels_do_not_pay_for_the_transforms() {
        assert_eq!(cheaper(&conv(28, 1, 64, 3, 1), Direction::Forward), None);
    }

    /// ResNet-34's fourth stage at 28x28 inputs has 2x2 images: one tile
    /// each, too few to share the transformed kernel (measured: the GEMM
    /// runs it 1.4x faster than F(2x2,3x3), `docs/performance.md`); and
    /// computed by position, the GEMM path multiplies no padding, so that
    /// it keeps them at batch 256 too.
    #[test]
    fn small_images_keep_the_gemm() {
        for direction in [Direction::Forward, Direction::BackwardData] {
            assert_eq!(cheaper(&conv(2, 256, 256, 3, 1), direction), None);
            let mut large_batch = conv(2, 256, 256, 3, 1);
            large_batch.batch = 256;
            assert_eq!(cheaper(&large_batch, direction), None);
        }
    }

    /// The kernel gradient of the Fashion CNN's 3x3 layers takes the
    /// larger tile (measured: `docs/performance.md`), and keeps the GEMM
    /// where no tile is cheaper.
    #[test]
    fn kernel_gradients_are_chosen_like_the_convolutions() {
        assert_eq!(
            cheaper(&conv(14, 128, 128, 3, 1), Direction::BackwardFilter),
            Some(Tile::F4)
        );
        assert_eq!(
            cheaper(&conv(7, 256, 256, 3, 1), Direction::BackwardFilter),
            Some(Tile::F4)
        );
        // ResNet's 2x2 stage: F(2x2) measured 0.98-1.18x the GEMM in two
        // runs, F(4x4) 0.3-0.4x (docs/performance.md).
        assert_eq!(
            cheaper(&conv(2, 256, 256, 3, 1), Direction::BackwardFilter),
            Some(Tile::F2)
        );
        assert_eq!(
            cheaper(&conv(1, 512, 512, 3, 1), Direction::BackwardFilter),
            None
        );
        assert_eq!(
            cheaper(&conv(28, 1, 64, 3, 1), Direction::BackwardFilter),
            None
        );
    }

    /// At batch 1 with frozen weights, the seed CNN's 7x7 layers take
    /// F(2x2), whose items of eight tiles multiply in registers while they
    /// load the kept kernel (measured on a Zen 4: conv4 0.098 ms against
    /// 0.229 on the GEMM, conv5 0.186 against 0.448), and not F(4x4),
    /// whose items of two tiles wait on loading a kernel four times the
    /// layer's (the whole run 1.67-1.90 ms against 0.67-1.40 with F(2x2));
    /// ResNet-34's 2x2 images still keep the GEMM.
    #[test]
    fn batch_one_layers_with_kept_kernels_take_the_smaller_tile_where_it_pays() {
        let batch_one = |size, cin, cout| ConvShape {
            batch: 1,
            ..conv(size, cin, cout, 3, 1)
        };
        for (cin, cout) in [(128, 256), (256, 256)] {
            assert_eq!(
                cheapest(&batch_one(7, cin, cout), Direction::Forward, true),
                Some((Tile::F2, true))
            );
        }
        assert_eq!(
            cheapest(&batch_one(2, 256, 256), Direction::Forward, true),
            None
        );
        assert_eq!(
            cheapest(&batch_one(1, 512, 512), Direction::Forward, true),
            None
        );
    }

    #[test]
    fn active_taps_are_counted() {
        let sizes = Sizes::new(&conv(1, 8, 8, 3, 1), Direction::Forward).expect("fits");
        assert_eq!(sizes.taps, [1, 1]);
        let sizes = Sizes::new(&conv(2, 8, 8, 3, 1), Direction::Forward).expect("fits");
        assert_eq!(sizes.taps, [3, 3]);
        let mut valid = conv(5, 8, 8, 3, 1);
        valid.padding = Padding::Valid;
        let sizes = Sizes::new(&valid, Direction::BackwardData).expect("fits");
        assert_eq!((sizes.taps, sizes.destination), ([3, 3], [5, 5]));
    }
}
