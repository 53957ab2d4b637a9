//! Speed of the bf16 product (`cnnc::codegen::contraction::bf16`) on each
//! backend this machine runs, against the f32 product of the `gemm` crate
//! that the im2col convolutions call, one thread, on the im2col products
//! of the seed CNN's 3x3 layers: an item of 512 rows (output positions) by
//! taps x input channels by output channels. Criterion's "elements" are
//! FLOPs, two per multiply-add. The packing of the bf16 operands is timed
//! on its own (`pack_rows`, `pack_panels`): a product reads operands that
//! an epilogue or a transform has packed.
//!
//! The packing of a layer's weights for a training step's products
//! (`PackWeights`: the forward operand and the input gradient's
//! transposed one) is timed on ResNet-34's stage-3 and stage-4 layers at
//! Fashion-MNIST's size; its "bytes" are the f32 weights read. `_cold`
//! packs weights that are not in any cache, as a training step does.
//!
//! ```text
//! cargo bench --bench bf16                 # everything (about a minute)
//! cargo bench --bench bf16 -- conv3        # one layer
//! cargo bench --bench bf16 -- pack_weights # the weight packing
//! ```

use std::time::Duration;

use cnnc::codegen::contraction::bf16::{self, Backend, PackWeights, Panels, Rows};
use cnnc::codegen::contraction::ConvShape;
use cnnc::graph::Padding;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

/// The rows of one item of an im2col convolution.
const ROWS: usize = 512;

/// The seed CNN's 3x3 layers: name, taps x input channels, output channels.
const LAYERS: [(&str, usize, usize); 4] = [
    ("conv2", 9 * 64, 128),
    ("conv3", 9 * 128, 128),
    ("conv4", 9 * 128, 256),
    ("conv5", 9 * 256, 256),
];

fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

fn products(c: &mut Criterion) {
    for (name, depth, columns) in LAYERS {
        let mut group = c.benchmark_group(format!("bf16/{name}"));
        group
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2))
            .sample_size(20)
            .throughput(Throughput::Elements((2 * ROWS * depth * columns) as u64));
        let a = values(ROWS * depth, 1);
        let b = values(depth * columns, 2);
        let mut dst = vec![0.0f32; ROWS * columns];
        group.bench_function("f32_gemm", |bench| {
            bench.iter(|| {
                // SAFETY: the three buffers hold the row-major matrices the
                // strides describe, and `dst` overlaps neither operand.
                unsafe {
                    gemm::gemm(
                        ROWS,
                        columns,
                        depth,
                        dst.as_mut_ptr(),
                        1,
                        columns as isize,
                        false,
                        a.as_ptr(),
                        1,
                        depth as isize,
                        b.as_ptr(),
                        1,
                        columns as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    )
                }
            })
        });
        let left = Rows::pack(&a, ROWS, depth);
        let right = Panels::pack(&b, depth, columns);
        for backend in Backend::ALL.into_iter().filter(|b| b.available()) {
            group.bench_function(format!("bf16_{}", backend.name()), |bench| {
                bench.iter(|| bf16::product(backend, &left, &right, 0..ROWS, &mut dst))
            });
        }
        group.bench_function("pack_rows", |bench| {
            bench.iter(|| Rows::pack(&a, ROWS, depth))
        });
        group.bench_function("pack_panels", |bench| {
            bench.iter(|| Panels::pack(&b, depth, columns))
        });
        group.finish();
    }
}

/// The bytes a cold packing writes first, to push the weights out of
/// the caches.
const EVICTED: usize = 256 << 20;

/// ResNet-34's 3x3 layers of stages 3 and 4 on 28x28 inputs: name,
/// input size, channels.
const PACKED: [(&str, usize, usize); 2] = [("stage3", 2, 256), ("stage4", 1, 512)];

fn pack_weights(c: &mut Criterion) {
    for (name, size, channels) in PACKED {
        let shape = ConvShape {
            batch: 32,
            height: size,
            width: size,
            in_channels: channels,
            out_channels: channels,
            kernel: [3, 3],
            stride: [1, 1],
            dilation: [1, 1],
            padding: Padding::Same,
            bias: false,
        };
        let mut group = c.benchmark_group(format!("bf16/pack_weights/{name}"));
        let kernel = values(9 * channels * channels, 3);
        group
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2))
            .sample_size(20)
            .throughput(Throughput::Bytes(4 * kernel.len() as u64));
        for (pass, packing) in [
            ("forward", PackWeights::new(name, &shape)),
            ("transposed", PackWeights::transposed(name, &shape)),
        ] {
            let packing = packing.expect("a valid shape");
            let mut packed = vec![0.0f32; packing.packed_len()];
            let mut pack = || {
                // SAFETY: the buffers have the lengths the packing states,
                // and do not overlap.
                unsafe { packing.run(kernel.as_ptr(), packed.as_mut_ptr(), 0..packing.domain()) }
                    .expect("every item")
            };
            group.bench_function(pass, |bench| bench.iter(&mut pack));
            // As a training step packs them: the weights come from memory,
            // the step having read 100s of MB since their last update.
            let mut evict = vec![0u8; EVICTED];
            group.bench_function(format!("{pass}_cold"), |bench| {
                bench.iter_batched(
                    || {
                        for (i, byte) in evict.iter_mut().enumerate().step_by(64) {
                            *byte = byte.wrapping_add(i as u8);
                        }
                    },
                    |()| pack(),
                    BatchSize::PerIteration,
                )
            });
        }
        group.finish();
    }
}

criterion_group!(benches, products, pack_weights);
criterion_main!(benches);
