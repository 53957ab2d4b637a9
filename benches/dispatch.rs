//! The cost of handing one small kernel to two threads and waiting for it:
//! cnnc's thread team (the caller runs the first half, workers spin between
//! kernels) against a rayon pool's `scope` called from outside the pool,
//! which the executor used before. A ResNet-34 training step dispatches
//! about 470 kernels, so each microsecond here is about half a millisecond
//! per step. `cargo bench --bench dispatch`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use cnnc::runtime::team::Team;
use criterion::{criterion_group, criterion_main, Criterion};

/// A few hundred nanoseconds of work per half, like the smallest kernels.
fn half(sum: &AtomicU64, seed: u64) {
    let mut x = black_box(seed);
    for _ in 0..200 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
    }
    sum.fetch_add(black_box(x) & 1, Ordering::Relaxed);
}

fn dispatch(c: &mut Criterion) {
    let mut group = c.benchmark_group("dispatch one kernel to 2 threads");
    let sum = AtomicU64::new(0);
    let mut team = Team::new(2).expect("threads");
    group.bench_function("cnnc team", |b| {
        b.iter(|| team.run(&|member| half(&sum, member as u64)))
    });
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("pool");
    group.bench_function("rayon scope", |b| {
        b.iter(|| {
            pool.scope(|scope| {
                scope.spawn(|_| half(&sum, 1));
                half(&sum, 0);
            })
        })
    });
    group.bench_function("serial (both halves on the caller)", |b| {
        b.iter(|| {
            half(&sum, 0);
            half(&sum, 1);
        })
    });
    group.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
