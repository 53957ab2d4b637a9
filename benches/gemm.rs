//! Speed of the contraction kernels on the layers of the seed's Fashion CNN
//! and of ResNet-34 at 28x28x1, batch 32: forward, backward-data and
//! backward-filter, in FLOP/s (criterion's "elements" are FLOPs: 2 per
//! multiply-add of the dense im2col product, dead taps included, so that
//! skipping them shows as a speed-up).
//!
//! Each kernel runs its whole domain on one thread (`1t`), and split in two
//! halves on a long-lived pool of two threads (`2t`), as the executor will
//! run it. The 3x3 stride-1 layers also run on Winograd's transforms with
//! each tile (`forward_f2`, `backward_data_f4`, `backward_filter_f4`, ...),
//! the kernel's transform included, at the same nominal FLOPs: the
//! algorithm pass's cost model (`src/passes/algorithm.rs`) is checked
//! against these.
//!
//! ```text
//! cargo bench --bench gemm                    # everything (several minutes)
//! cargo bench --bench gemm -- fashion/conv2   # one layer
//! ```

use std::ops::Range;
use std::time::Duration;

use cnnc::codegen::contraction::winograd::{
    self, Direction, Tile, WinogradBackwardFilter, WinogradBuffers, WinogradConv, WinogradFilter,
    WinogradFilterGradient,
};
use cnnc::codegen::contraction::{
    BackwardDataBuffers, BackwardFilterBuffers, ConvBackwardData, ConvBackwardFilter, ConvForward,
    ConvShape, ForwardBuffers,
};
use cnnc::graph::Padding;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};

const BATCH: usize = 32;

/// A layer: its name and its shape as a convolution (dense layers are 1x1
/// convolutions over rows).
struct Layer {
    name: &'static str,
    shape: ConvShape,
}

fn conv(
    name: &'static str,
    size: usize,
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
) -> Layer {
    Layer {
        name,
        shape: ConvShape {
            batch: BATCH,
            height: size,
            width: size,
            in_channels: cin,
            out_channels: cout,
            kernel: [kernel, kernel],
            stride: [stride, stride],
            dilation: [1, 1],
            padding: Padding::Same,
            bias: true,
        },
    }
}

/// A dense layer, as the 1x1 convolution over rows that
/// `ConvForward::dense` and its siblings build.
fn dense(name: &'static str, inputs: usize, units: usize) -> Layer {
    let mut layer = conv(name, 1, inputs, units, 1, 1);
    layer.shape.padding = Padding::Valid;
    layer
}

/// The distinct layer shapes of `fashion_cnn` (examples/fashion_cnn.cnn).
fn fashion() -> Vec<Layer> {
    vec![
        conv("conv1", 28, 1, 64, 7, 1),
        conv("conv2", 14, 64, 128, 3, 1),
        conv("conv3", 14, 128, 128, 3, 1),
        conv("conv4", 7, 128, 256, 3, 1),
        conv("conv5", 7, 256, 256, 3, 1),
        dense("dense1", 2304, 128),
        dense("dense2", 128, 64),
    ]
}

/// The distinct layer shapes of `resnet34_fashion` (examples/resnet34.cnn;
/// ResNet's convolutions have no bias, batch norm follows).
fn resnet() -> Vec<Layer> {
    let no_bias = |mut layer: Layer| {
        layer.shape.bias = false;
        layer
    };
    vec![
        no_bias(conv("conv1", 28, 1, 64, 7, 2)),
        no_bias(conv("stage2", 7, 64, 64, 3, 1)),
        no_bias(conv("stage3_down", 7, 64, 128, 3, 2)),
        no_bias(conv("stage3_skip", 7, 64, 128, 1, 2)),
        no_bias(conv("stage3", 4, 128, 128, 3, 1)),
        no_bias(conv("stage4_down", 4, 128, 256, 3, 2)),
        no_bias(conv("stage4", 2, 256, 256, 3, 1)),
        no_bias(conv("stage5_down", 2, 256, 512, 3, 2)),
        no_bias(conv("stage5", 1, 512, 512, 3, 1)),
        dense("fc", 512, 10),
    ]
}

/// 2 FLOPs per multiply-add of the layer's im2col product.
fn flops(s: &ConvShape, output_size: [usize; 2]) -> u64 {
    let rows = s.batch * output_size[0] * output_size[1];
    (2 * rows * s.kernel[0] * s.kernel[1] * s.in_channels * s.out_channels) as u64
}

fn data(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

/// Runs `run` over `0..domain`, whole on this thread, or in two halves on
/// the two threads of `pool` (a long-lived pool, as the executor's will be).
fn split(
    pool: Option<&rayon::ThreadPool>,
    domain: usize,
    scratch: &mut [Vec<f32>; 2],
    run: &(impl Fn(Range<usize>, &mut [f32]) + Sync),
) {
    let [first, second] = scratch;
    match pool {
        None => run(0..domain, first),
        Some(pool) => {
            let half = domain / 2;
            pool.join(|| run(0..half, first), || run(half..domain, second));
        }
    }
}

fn bench_layer(group: &mut BenchmarkGroup<criterion::measurement::WallTime>, layer: &Layer) {
    let s = &layer.shape;
    let forward = ConvForward::new(layer.name, s).expect("valid layer");
    let data_kernel = ConvBackwardData::new(layer.name, s).expect("valid layer");
    let filter = ConvBackwardFilter::new(layer.name, s).expect("valid layer");
    let lengths = forward.lengths();
    let (x, w, b, dy) = (
        data(lengths.input),
        data(lengths.kernel),
        data(s.out_channels),
        data(lengths.output),
    );
    let (mut y, mut dx, mut dw, mut db) = (
        vec![0.0; lengths.output],
        vec![0.0; lengths.input],
        vec![0.0; lengths.kernel],
        vec![0.0; s.out_channels],
    );
    let forward_buffers = ForwardBuffers {
        input: x.as_ptr(),
        kernel: w.as_ptr(),
        bias: s.bias.then_some(b.as_ptr()),
        output: y.as_mut_ptr(),
    };
    let data_buffers = BackwardDataBuffers {
        output_grad: dy.as_ptr(),
        kernel: w.as_ptr(),
        input_grad: dx.as_mut_ptr(),
    };
    let filter_buffers = BackwardFilterBuffers {
        input: x.as_ptr(),
        output_grad: dy.as_ptr(),
        kernel_grad: dw.as_mut_ptr(),
        bias_grad: s.bias.then_some(db.as_mut_ptr()),
    };
    group.throughput(Throughput::Elements(flops(s, lengths.output_size)));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("a thread pool");
    let scratch_len = forward
        .scratch_len()
        .max(data_kernel.scratch_len())
        .max(filter.scratch_len());
    let mut scratch = [vec![0.0; scratch_len], vec![0.0; scratch_len]];
    for (threads, pool) in [(1, None), (2, Some(&pool))] {
        let name = |pass: &str| format!("{}/{pass}/{threads}t", layer.name);
        if winograd::unsupported(s).is_none() {
            for tile in Tile::ALL {
                let convolutions = [
                    (Direction::Forward, &x, y.as_mut_ptr()),
                    (Direction::BackwardData, &dy, dx.as_mut_ptr()),
                ];
                for (direction, source, output) in convolutions {
                    let id = format!("{}/{threads}t", winograd_name(direction, tile));
                    group.bench_function(format!("{}/{id}", layer.name), |bench| {
                        let operands = (source.as_slice(), w.as_slice(), b.as_slice());
                        bench_winograd(bench, s, (tile, direction), operands, output, pool)
                    });
                }
                let id = winograd_name(Direction::BackwardFilter, tile);
                group.bench_function(format!("{}/{id}/{threads}t", layer.name), |bench| {
                    bench_winograd_gradient(bench, s, tile, filter_buffers, pool)
                });
            }
        }
        group.bench_function(name("forward"), |bench| {
            // SAFETY: the halves are disjoint; the buffers have the kernel's lengths.
            bench.iter(|| {
                split(
                    pool,
                    forward.domain(),
                    &mut scratch,
                    &|items, scratch| unsafe {
                        forward
                            .run(&forward_buffers, None, scratch, items)
                            .expect("runs")
                    },
                )
            })
        });
        group.bench_function(name("backward_data"), |bench| {
            // SAFETY: as above.
            bench.iter(|| {
                split(
                    pool,
                    data_kernel.domain(),
                    &mut scratch,
                    &|items, scratch| unsafe {
                        data_kernel
                            .run(&data_buffers, None, scratch, items)
                            .expect("runs")
                    },
                )
            })
        });
        group.bench_function(name("backward_filter"), |bench| {
            // SAFETY: as above.
            bench.iter(|| {
                split(
                    pool,
                    filter.domain(),
                    &mut scratch,
                    &|items, scratch| unsafe {
                        filter.run(&filter_buffers, scratch, items).expect("runs")
                    },
                )
            })
        });
    }
}

/// `forward_f4`, `backward_data_f2`, ...
fn winograd_name(direction: Direction, tile: Tile) -> String {
    let pass = match direction {
        Direction::Forward => "forward",
        Direction::BackwardData => "backward_data",
        Direction::BackwardFilter => "backward_filter",
    };
    format!("{pass}_f{}", tile.output())
}

/// One Winograd convolution of `shape`: the kernel's transform, then the
/// convolution, each over its whole domain or in two halves on `pool`.
fn bench_winograd(
    bench: &mut criterion::Bencher,
    shape: &ConvShape,
    (tile, direction): (Tile, Direction),
    (source, w, b): (&[f32], &[f32], &[f32]),
    output: *mut f32,
    pool: Option<&rayon::ThreadPool>,
) {
    let filter = WinogradFilter::new("u", shape, tile, direction).expect("3x3");
    let conv = WinogradConv::new("v", shape, tile, direction).expect("3x3");
    let mut u = vec![0.0; filter.transformed_len()];
    let buffers = WinogradBuffers {
        input: source.as_ptr(),
        kernel: u.as_ptr(),
        bias: conv.has_bias().then_some(b.as_ptr()),
        output,
    };
    let u_ptr = u.as_mut_ptr() as usize;
    let mut scratch = [vec![0.0; conv.scratch_len()], vec![0.0; conv.scratch_len()]];
    // SAFETY: the halves are disjoint; the buffers have the kernels' lengths.
    bench.iter(|| {
        split(pool, filter.domain(), &mut scratch, &|items, _| unsafe {
            filter
                .run(w.as_ptr(), u_ptr as *mut f32, items)
                .expect("runs")
        });
        split(
            pool,
            conv.domain(),
            &mut scratch,
            &|items, scratch| unsafe { conv.run(&buffers, None, scratch, items).expect("runs") },
        );
    });
}

/// The kernel gradient of `shape` on Winograd's transforms: the
/// transformed kernel's gradient, then its transform into `dW` (into
/// `buffers.kernel_grad`), each over its whole domain or in two halves on
/// `pool`.
fn bench_winograd_gradient(
    bench: &mut criterion::Bencher,
    shape: &ConvShape,
    tile: Tile,
    buffers: BackwardFilterBuffers,
    pool: Option<&rayon::ThreadPool>,
) {
    let product = WinogradBackwardFilter::new("du", shape, tile).expect("3x3");
    let transform = WinogradFilterGradient::new("dw", shape, tile).expect("3x3");
    let mut du = vec![0.0; transform.transformed_len()];
    let (du_ptr, dw_ptr) = (du.as_mut_ptr() as usize, buffers.kernel_grad as usize);
    let buffers = BackwardFilterBuffers {
        kernel_grad: du.as_mut_ptr(),
        ..buffers
    };
    let mut scratch = [
        vec![0.0; product.scratch_len()],
        vec![0.0; product.scratch_len()],
    ];
    // SAFETY: the halves are disjoint; the buffers have the kernels' lengths.
    bench.iter(|| {
        split(
            pool,
            product.domain(),
            &mut scratch,
            &|items, scratch| unsafe { product.run(&buffers, scratch, items).expect("runs") },
        );
        split(pool, transform.domain(), &mut scratch, &|items, _| unsafe {
            transform
                .run(du_ptr as *const f32, dw_ptr as *mut f32, items)
                .expect("runs")
        });
    });
}

fn contractions(c: &mut Criterion) {
    for (model, layers) in [("fashion", fashion()), ("resnet34", resnet())] {
        let mut group = c.benchmark_group(model);
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        for layer in &layers {
            bench_layer(&mut group, layer);
        }
        group.finish();
    }
}

criterion_group!(benches, contractions);
criterion_main!(benches);
