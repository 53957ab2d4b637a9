//! `cnnc bench`: compile time, training and inference throughput, batch-1
//! latency, arena sizes and achieved GFLOP/s of one model, on random data.

use std::fmt;
use std::time::{Duration, Instant};

use crate::autodiff::LossSpec;
use crate::config::TrainConfig;
use crate::plan::Flops;
use crate::runtime::executor::StepTime;
use crate::runtime::inference::{Inference, InferenceError};
use crate::runtime::parallel::{shares, Collective, Exchanged};
use crate::runtime::training::{Trainer, TrainingError};
use crate::runtime::weights;
use crate::shapes::TypedGraph;
use crate::{CompileError, KernelPlan};

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct BenchConfig {
    /// Training batch size.
    pub batch: usize,
    /// Inference batch size.
    pub inference_batch: usize,
    /// Worker threads.
    pub threads: usize,
    /// Timed training steps (after one warm-up step).
    pub steps: usize,
    /// Whether to record the time of every kernel of the training step and
    /// of the batch-1 inference.
    pub profile: bool,
}

/// The measurements, medians over the timed runs.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// The model's name.
    pub model: String,
    /// The configuration.
    pub config: BenchConfig,
    /// Differentiating, lowering and compiling the training step.
    pub compile_training: Duration,
    /// Lowering and compiling the inference program.
    pub compile_inference: Duration,
    /// From the start of compilation to the end of the first training step.
    pub first_step: Duration,
    /// Median training step time.
    pub train_step: Duration,
    /// Median inference batch time.
    pub inference_batch: Duration,
    /// Median batch-1 latency.
    pub latency: Duration,
    /// Arena bytes of the training step and of inference.
    pub arena_bytes: (u64, u64),
    /// Forward FLOPs per example.
    pub flops: u64,
    /// When profiling: the training step's kernels and their total time.
    pub profile: Vec<KernelTime>,
    /// When profiling: the batch inference program's kernels and their
    /// total time over the timed batches.
    pub inference_profile: Vec<KernelTime>,
    /// When profiling: the batch-1 inference program's kernels and their
    /// total time over the latency runs.
    pub latency_profile: Vec<KernelTime>,
}

/// One kernel of the training step, as the profile saw it.
#[derive(Debug, Clone)]
pub struct KernelTime {
    /// The kernel's name (its layer, for a contraction).
    pub name: String,
    /// How it computes ([`crate::plan::KernelDesc::method`]).
    pub method: String,
    /// Its arithmetic, for a contraction.
    pub flops: Option<Flops>,
    /// Its total time over the timed steps.
    pub time: Duration,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The model could not be compiled.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// Training could not be set up or run.
    #[error(transparent)]
    Training(#[from] TrainingError),
    /// Inference could not be set up or run.
    #[error(transparent)]
    Inference(#[from] InferenceError),
}

/// Measures `model` with `train`'s optimizer and loss.
///
/// Each program is compiled, and so checked against the memory cap
/// ([`crate::limits`]), before its weights and data are drawn; the training
/// step is dropped before inference is compiled, and each program holds
/// the only copy of the weights (as `cnnc run` does), so that the peak
/// memory is one program's.
pub fn run(
    model: &TypedGraph,
    train: &TrainConfig,
    config: BenchConfig,
) -> Result<BenchReport, BenchError> {
    let training = measure_training(model, train, config, None)?;
    let example = model.input_shape().map_or(0, |s| s.elements() as usize);

    let started = Instant::now();
    let compiled = crate::compile_inference_in(model, config.inference_batch, train.precision)?;
    let compile_inference = started.elapsed();
    // The weights the training step started from, drawn again.
    let mut inference = Inference::new(compiled, weights::init(model, 1), config.threads)?;
    let batch_input = noise(config.inference_batch * example);
    inference.run(&batch_input)?;
    if config.profile {
        inference.executor().enable_profile();
    }
    let inference_batch = median((0..INFERENCE_RUNS).map(|_| {
        let t = Instant::now();
        inference.run(&batch_input).map(|_| t.elapsed())
    }))?;
    let profile = inference.executor().profile().to_vec();
    let inference_profile = kernel_times(inference.plan(), &profile);

    let inference_arena = inference.arena_bytes();
    let store = inference.into_weights();
    let single_program = crate::compile_inference_in(model, 1, train.precision)?;
    let mut single = Inference::new(single_program, store, config.threads)?;
    let one = noise(example);
    single.run(&one)?;
    if config.profile {
        single.executor().enable_profile();
    }
    let latency = median((0..LATENCY_RUNS).map(|_| {
        let t = Instant::now();
        single.run(&one).map(|_| t.elapsed())
    }))?;
    let profile = single.executor().profile().to_vec();
    let latency_profile = kernel_times(single.plan(), &profile);

    Ok(BenchReport {
        model: model.graph.name.clone(),
        config,
        compile_training: training.compile,
        compile_inference,
        first_step: training.first_step,
        train_step: training.step,
        inference_batch,
        latency,
        arena_bytes: (training.arena_bytes, inference_arena),
        flops: model.flops(),
        profile: training.profile,
        inference_profile,
        latency_profile,
    })
}

/// A data-parallel training step as one rank measured it
/// ([`run_shared`]).
#[derive(Debug, Clone)]
pub struct SharedReport {
    /// The model's name.
    pub model: String,
    /// The configuration: the batch is the whole batch, over all ranks;
    /// the threads are each rank's.
    pub config: BenchConfig,
    /// The number of ranks.
    pub ranks: usize,
    /// Median training step time.
    pub train_step: Duration,
    /// Median time this rank spent exchanging rows in a step.
    pub exchange: Duration,
    /// What a step exchanges (the same every step).
    pub exchanged: Exchanged,
    /// When profiling: this rank's kernels and their total time.
    pub profile: Vec<KernelTime>,
    /// When profiling: the time of a step's kernels by how they run on a
    /// rank (`per example`, `split`, `whole`).
    pub by_mode: Vec<(&'static str, Duration)>,
}

/// Measures `model`'s training step as one rank of `world`, every rank
/// running this with the same arguments: batches of `config.batch` split
/// across the ranks ([`crate::runtime::parallel`]).
pub fn run_shared(
    model: &TypedGraph,
    train: &TrainConfig,
    config: BenchConfig,
    world: &dyn Collective,
) -> Result<SharedReport, BenchError> {
    let figures = measure_training(model, train, config, Some(world))?;
    let (exchange, exchanged) = figures.exchange.unwrap_or_default();
    let mut by_mode: Vec<(&'static str, Duration)> = Vec::new();
    for (kernel, mode) in figures.profile.iter().zip(&figures.modes) {
        match by_mode.iter_mut().find(|(m, _)| m == mode) {
            Some((_, time)) => *time += kernel.time / config.steps.max(1) as u32,
            None => by_mode.push((mode, kernel.time / config.steps.max(1) as u32)),
        }
    }
    Ok(SharedReport {
        model: model.graph.name.clone(),
        config,
        ranks: world.size(),
        train_step: figures.step,
        exchange,
        exchanged,
        profile: figures.profile,
        by_mode,
    })
}

impl fmt::Display for SharedReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let step = self.train_step.as_secs_f64();
        writeln!(
            f,
            "model {} ({} ranks of {} threads, medians)",
            self.model, self.ranks, self.config.threads
        )?;
        writeln!(
            f,
            "data-parallel training, batch {}: {:.1} images/s ({:.1} ms/step)",
            self.config.batch,
            self.config.batch as f64 / step,
            step * 1e3
        )?;
        writeln!(
            f,
            "exchanging rows: {:.1} ms/step ({:.0}% of the step, waiting included), {} gathers ({} started early) of {} in all",
            self.exchange.as_secs_f64() * 1e3,
            100.0 * self.exchange.as_secs_f64() / step.max(1e-12),
            self.exchanged.calls,
            self.exchanged.early,
            crate::emit::bytes(self.exchanged.values * 4)
        )?;
        let e = &self.exchanged;
        writeln!(
            f,
            "of which merged kernel gradients: {}; started early: {} in {:.1} ms of waiting (the rest: {} in {:.1} ms)",
            crate::emit::bytes(e.merged * 4),
            crate::emit::bytes(e.early_values * 4),
            e.early_time.as_secs_f64() * 1e3,
            crate::emit::bytes((e.values - e.early_values) * 4),
            (e.time - e.early_time).as_secs_f64() * 1e3
        )?;
        if !self.by_mode.is_empty() {
            let modes: Vec<String> = self
                .by_mode
                .iter()
                .map(|(mode, time)| format!("{mode} {:.1} ms", time.as_secs_f64() * 1e3))
                .collect();
            writeln!(f, "a step's kernels on rank 0: {}", modes.join(", "))?;
        }
        if !self.profile.is_empty() {
            let steps = self.config.steps.max(1);
            write_profile(f, "rank 0's training step", &self.profile, steps)?;
        }
        Ok(())
    }
}

/// How many batches the inference figure is the median of.
const INFERENCE_RUNS: usize = 5;

/// How many batch-1 runs the latency is the median of (as many as the
/// peers' scripts time: a batch-1 run is short enough for the other
/// processes on a shared machine to move a median of few).
const LATENCY_RUNS: usize = 200;

/// What [`measure_training`] finds.
struct TrainingFigures {
    compile: Duration,
    first_step: Duration,
    step: Duration,
    arena_bytes: u64,
    profile: Vec<KernelTime>,
    /// In a data-parallel run: the median time a step spent exchanging
    /// rows, and what a step exchanges.
    exchange: Option<(Duration, Exchanged)>,
    /// In a data-parallel run: how each step runs on a rank.
    modes: Vec<&'static str>,
}

/// Compiles and times the training step from the weights `weights::init`
/// draws with seed 1; as one rank of `world`, when given.
fn measure_training(
    model: &TypedGraph,
    train: &TrainConfig,
    config: BenchConfig,
    world: Option<&dyn Collective>,
) -> Result<TrainingFigures, BenchError> {
    let example = model.input_shape().map_or(0, |s| s.elements() as usize);
    // Every output is scored against the same labels (one per example, or
    // per pixel), so they must be below the smallest number of scores.
    let classes = model
        .outputs()
        .iter()
        .map(|(_, s)| s.last().copied().unwrap_or(1) as usize)
        .min()
        .unwrap_or(1)
        .max(1);
    let rows = model.outputs().first().map_or(1, |(_, s)| {
        (s.iter().product::<u64>() / s.last().copied().unwrap_or(1).max(1)) as usize
    });
    let loss = LossSpec {
        smoothing: train.label_smoothing,
        weights: train.loss_weights.clone(),
    };
    let started = Instant::now();
    let step = crate::compile_training_in(
        model,
        &loss,
        &train.optimizer,
        config.batch,
        train.precision,
    )?;
    // The weights are drawn once the step is known to fit the memory cap
    // (compiling checks it), and drawing them is not compile time.
    let drawing = Instant::now();
    let store = weights::init(model, 1);
    let drawn = drawing.elapsed();
    let mut trainer = Trainer::new(step, store, config.threads)?;
    let compile = started.elapsed() - drawn;
    let images = noise(config.batch * example);
    let labels: Vec<u32> = (0..config.batch * rows)
        .map(|i| (i % classes) as u32)
        .collect();
    let own = match world {
        Some(w) => shares(config.batch, w.size())[w.rank()].clone(),
        None => 0..config.batch,
    };
    let mine = &images[own.start * example..own.end * example];
    let step = |trainer: &mut Trainer| match world {
        Some(w) => trainer.train_step_shared(mine, &labels, train.optimizer.lr, w),
        None => trainer.train_step(&images, &labels, train.optimizer.lr),
    };
    step(&mut trainer)?;
    let first_step = started.elapsed() - drawn;
    if config.profile {
        trainer.executor().enable_profile();
    }
    let mut exchanges = Vec::new();
    let step = median((0..config.steps.max(1)).map(|_| {
        let t = Instant::now();
        let done = step(&mut trainer).map(|_| t.elapsed());
        exchanges.push(trainer.exchanged());
        done
    }))?;
    exchanges.sort_by_key(|e| e.time);
    let exchange = world.map(|_| {
        let median = exchanges[exchanges.len() / 2];
        (median.time, median)
    });
    let modes = match world {
        Some(w) => trainer.modes(w)?,
        None => Vec::new(),
    };
    let figures = TrainingFigures {
        exchange,
        modes,
        compile,
        first_step,
        step,
        arena_bytes: trainer.arena_bytes(),
        profile: {
            let profile = trainer.executor().profile().to_vec();
            kernel_times(trainer.plan(), &profile)
        },
    };
    Ok(figures)
}

/// The executor's profile of `plan` (one entry per step), with what each
/// step's kernel is.
fn kernel_times(plan: &KernelPlan, profile: &[StepTime]) -> Vec<KernelTime> {
    plan.steps
        .iter()
        .zip(profile)
        .map(|(step, time)| KernelTime {
            name: time.name.clone(),
            method: time
                .method
                .map_or_else(|| step.kernel.method(), str::to_string),
            flops: step.kernel.flops(),
            time: time.time,
        })
        .collect()
}

/// Deterministic data in [0, 1), like scaled pixels.
fn noise(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i.wrapping_mul(2_654_435_761) >> 8) % 256) as f32 / 255.0)
        .collect()
}

fn median<E>(times: impl Iterator<Item = Result<Duration, E>>) -> Result<Duration, E> {
    let mut times = times.collect::<Result<Vec<_>, E>>()?;
    times.sort_unstable();
    Ok(times[times.len() / 2])
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per_second = |images: usize, d: Duration| images as f64 / d.as_secs_f64();
        let train_rate = per_second(self.config.batch, self.train_step);
        let infer_rate = per_second(self.config.inference_batch, self.inference_batch);
        // A training step costs about three forward passes.
        let train_gflops = train_rate * 3.0 * self.flops as f64 / 1e9;
        let infer_gflops = infer_rate * self.flops as f64 / 1e9;
        writeln!(
            f,
            "model {} ({} threads, medians)",
            self.model, self.config.threads
        )?;
        writeln!(
            f,
            "compile: training step {:.3} s, inference {:.3} s",
            self.compile_training.as_secs_f64(),
            self.compile_inference.as_secs_f64()
        )?;
        writeln!(
            f,
            "first training step done {:.3} s after compilation started",
            self.first_step.as_secs_f64()
        )?;
        writeln!(f, "training, batch {}: {train_rate:.1} images/s ({:.1} ms/step, ~{train_gflops:.1} GFLOP/s)", self.config.batch, self.train_step.as_secs_f64() * 1e3)?;
        writeln!(
            f,
            "inference, batch {}: {infer_rate:.1} images/s ({infer_gflops:.1} GFLOP/s)",
            self.config.inference_batch
        )?;
        writeln!(
            f,
            "batch-1 latency: {:.3} ms",
            self.latency.as_secs_f64() * 1e3
        )?;
        writeln!(
            f,
            "arena: training {}, inference {}",
            crate::emit::bytes(self.arena_bytes.0),
            crate::emit::bytes(self.arena_bytes.1)
        )?;
        if !self.profile.is_empty() {
            let steps = self.config.steps.max(1);
            write_profile(f, "training step", &self.profile, steps)?;
        }
        if !self.inference_profile.is_empty() {
            let program = format!("batch-{} inference", self.config.inference_batch);
            write_profile(f, &program, &self.inference_profile, INFERENCE_RUNS)?;
        }
        if !self.latency_profile.is_empty() {
            write_profile(f, "batch-1 inference", &self.latency_profile, LATENCY_RUNS)?;
        }
        Ok(())
    }
}

/// The 20 slowest kernels of a profiled program (`kernels`, their totals
/// over `runs` runs): share, time per run, and for a contraction its
/// GFLOP/s, nominal (every tap) and useful (padding taps excluded), as if
/// computed directly whatever the algorithm (a Winograd kernel's figures
/// can pass the machine's peak).
fn write_profile(
    f: &mut fmt::Formatter<'_>,
    program: &str,
    kernels: &[KernelTime],
    runs: usize,
) -> fmt::Result {
    let total: Duration = kernels.iter().map(|k| k.time).sum();
    let runs = runs as f64;
    let mut slowest: Vec<&KernelTime> = kernels.iter().collect();
    slowest.sort_by_key(|k| std::cmp::Reverse(k.time));
    writeln!(
        f,
        "{program} profile (the 20 slowest kernels of {}, {:.3} ms per run in all; GFLOP/s nominal / useful):",
        kernels.len(),
        total.as_secs_f64() / runs * 1e3
    )?;
    for k in slowest.iter().take(20) {
        let seconds = k.time.as_secs_f64() / runs;
        let share = k.time.as_secs_f64() / total.as_secs_f64().max(1e-12) * 100.0;
        let rates = match k.flops {
            Some(flops) => {
                let rate = |n: u64| n as f64 / seconds.max(1e-12) / 1e9;
                format!("{:6.1} / {:6.1}", rate(flops.nominal), rate(flops.useful))
            }
            None => format!("{:>15}", ""),
        };
        writeln!(
            f,
            "  {share:5.1}%  {:8.3} ms  {rates}  {}  ({})",
            seconds * 1e3,
            k.name,
            k.method
        )?;
    }
    // Every kernel, by how it computes: where the time goes by kind.
    let mut methods: Vec<(&str, Duration, usize)> = Vec::new();
    for k in kernels {
        match methods.iter_mut().find(|(m, _, _)| *m == k.method) {
            Some((_, time, count)) => {
                *time += k.time;
                *count += 1;
            }
            None => methods.push((&k.method, k.time, 1)),
        }
    }
    methods.sort_by_key(|&(_, time, _)| std::cmp::Reverse(time));
    writeln!(f, "  by method:")?;
    for (method, time, count) in methods {
        let share = time.as_secs_f64() / total.as_secs_f64().max(1e-12) * 100.0;
        writeln!(
            f,
            "  {share:5.1}%  {:8.3} ms  {count:4} kernels  {method}",
            time.as_secs_f64() / runs * 1e3
        )?;
    }
    Ok(())
}

/// The memory a model needs at batch `batch`: weights, and the arena of the
/// planned inference program and training step (activations, gradients and
/// scratch placed by liveness), plus the optimizer's state.
pub fn memory_report(model: &TypedGraph, train: &TrainConfig, batch: usize) -> String {
    let weights = model.param_counts().total * 4;
    let bytes = crate::emit::bytes;
    let arena = |plan: Result<KernelPlan, CompileError>| -> Result<u64, CompileError> {
        Ok(crate::memory::plan(&plan?)?.arena_bytes)
    };
    let inference = arena(crate::plan_inference_in(model, batch, train.precision));
    let loss = LossSpec {
        smoothing: train.label_smoothing,
        weights: train.loss_weights.clone(),
    };
    let training = arena(crate::plan_training_in(
        model,
        &loss,
        &train.optimizer,
        batch,
        train.precision,
    ));
    let state =
        model.param_counts().trainable * 4 * crate::optimizer::state_count(&train.optimizer) as u64;
    let precision = match train.precision {
        crate::Precision::F32 => String::new(),
        // The packed weights are temporaries of the arena.
        p => format!(
            " ({} products, the weights packed for them in the arenas)",
            p.name()
        ),
    };
    let mut out = format!(
        "Memory at batch {batch}{precision}: weights {}\n",
        bytes(weights)
    );
    match inference {
        Ok(arena) => {
            out += &format!(
                "  inference: arena {} (activations, placed by liveness)\n",
                bytes(arena)
            )
        }
        Err(e) => out += &format!("  inference: not planned: {e}\n"),
    }
    match training {
        Ok(arena) => {
            out += &format!(
                "  training: arena {} (activations and gradients) + optimizer state {}\n",
                bytes(arena),
                bytes(state)
            );
        }
        Err(CompileError::Autodiff(diagnostics)) => {
            let messages: Vec<&str> = diagnostics
                .errors
                .iter()
                .map(|d| d.message.as_str())
                .collect();
            out += &format!("  training: not planned: {}\n", messages.join("; "));
        }
        Err(e) => out += &format!("  training: not planned: {e}\n"),
    }
    out
}
