//! Training a model on a data set: epochs of shuffled batches, validation
//! after each epoch, learning-rate schedules, early stopping, checkpoints,
//! and the final evaluation on the test set.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use thiserror::Error;

use super::checkpoint::{Cadence, Checkpoint, CheckpointEvery, Position, RunState};
use super::folder::RunFiles;
use crate::autodiff::LossSpec;
use crate::config::{Loss, Schedule, TrainConfig};
use crate::data::augment::augment_items;
use crate::data::Dataset;
pub use crate::predict::{arg_max, predicted_class};
use crate::predict::{run_in_batches, Batches};
use crate::runtime::inference::InferenceError;
use crate::runtime::parallel::{shares, Collective};
use crate::runtime::training::{Trainer, TrainingError};
use crate::runtime::weights::{self, TensorStore, WeightsError};
use crate::shapes::TypedGraph;
use crate::CompileError;

/// Why training stopped with an error.
#[derive(Debug, Error)]
pub enum FitError {
    /// The ranks of a data-parallel run could not exchange what they
    /// share (whether to stop, the evaluation's scores): another rank
    /// stopped, or MPI failed.
    #[error("the ranks of this data-parallel run could not exchange results: {0}")]
    Ranks(String),
    /// A training step failed (a non-finite loss names its epoch and step).
    #[error("epoch {epoch}: {source}")]
    Step {
        /// The epoch (1-based).
        epoch: u64,
        /// What went wrong.
        source: TrainingError,
    },
    /// The model could not be compiled.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// Evaluation failed.
    #[error(transparent)]
    Inference(#[from] InferenceError),
    /// Setting up training failed.
    #[error(transparent)]
    Training(#[from] TrainingError),
    /// The checkpoint to resume from could not be read.
    #[error(transparent)]
    Checkpoint(#[from] WeightsError),
    /// A file of the run (the checkpoint, the weights or the history) could
    /// not be written: a full disk, a file-size limit. Its previous version
    /// is intact, and no temporary file is left.
    #[error("cannot write the {what} `{}`: {source}; {kept}", path.display())]
    Save {
        /// `checkpoint`, `weights` or `history`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
        /// What is still there, and how to continue.
        kept: String,
    },
    /// `resume` found no checkpoint in the output folder.
    #[error("no checkpoint yet: start without --resume (`{}` does not exist{})", path.display(), weights.as_ref().map(|w| format!("; `{}` does, but holds no optimizer state to continue from: --overwrite replaces it", w.display())).unwrap_or_default())]
    NoCheckpoint {
        /// The checkpoint looked for.
        path: PathBuf,
        /// The run's weights file, when it exists without a checkpoint.
        weights: Option<PathBuf>,
    },
    /// Another run is training the same model into the same folder.
    #[error("another `cnnc run`{} is training model `{model}` into `{}` (it holds the lock `{}`): wait for it to end, or train into another folder with --out DIR", pid.map(|p| format!(" (process {p})")).unwrap_or_default(), folder.display(), lock.display())]
    Busy {
        /// The model.
        model: String,
        /// The output folder.
        folder: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// The process holding it, when it has written its id there.
        pid: Option<u32>,
    },
    /// The lock file could not be created or locked.
    #[error("cannot lock `{}`: {source}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The checkpoint to resume from does not belong to this model or run.
    #[error("cannot resume from `{path}`: {message}")]
    Resume {
        /// The checkpoint.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Training was interrupted (Ctrl-C) after a step; everything was saved.
    #[error("interrupted in epoch {epoch} after step {step}; saved `{checkpoint}`: continue with --resume")]
    Interrupted {
        /// The epoch.
        epoch: u64,
        /// Steps done in it.
        step: usize,
        /// The checkpoint written.
        checkpoint: PathBuf,
    },
    /// An output has fewer scores than the data set has classes. Every
    /// output is scored against the same labels, and a label must be below
    /// each output's number of scores; more scores than classes are
    /// allowed, as Keras's sparse categorical cross-entropy allows them.
    #[error("output `{output}` gives {scores} scores per {}, but the data set has {classes} classes: every output is scored against the same labels, so each needs at least {classes} scores (more are allowed, as in Keras); make its last layer `{}`", if *per_pixel { "pixel" } else { "image" }, if *per_pixel { format!("conv({classes}, 1, activation: softmax)") } else { format!("dense({classes}, activation: softmax)") })]
    Classes {
        /// The first output (in the model's order) with too few scores.
        output: String,
        /// Its scores per image.
        scores: usize,
        /// The data set's classes.
        classes: usize,
        /// Whether the output's scores are per pixel.
        per_pixel: bool,
    },
    /// The model's outputs take labels of another shape than the data
    /// set's: a classifier on masks, or a segmentation model on one label
    /// per image, or masks of another size.
    #[error("{}", label_shape_text(output, output_shape, label_shape))]
    LabelShape {
        /// The model's first output.
        output: String,
        /// Its per-example shape.
        output_shape: Vec<u64>,
        /// The data set's labels per image (empty: one label).
        label_shape: Vec<usize>,
    },
    /// The train section names the binary cross-entropy, but an output
    /// gives more than one score per label.
    #[error("the train section names `binary_crossentropy`, which scores one sigmoid score per example or per pixel, but output `{output}` gives {shape}: end it with one unit, e.g. `dense(1, activation: sigmoid)` or `conv(1, 1, activation: sigmoid)`, or use `sparse_categorical_crossentropy` with a softmax over the classes")]
    NotBinary {
        /// The first output with more than one score.
        output: String,
        /// Its per-example shape.
        shape: crate::graph::Shape,
    },
    /// A data set's label is not one of its classes (its `class_names`).
    #[error("received a label value of {label} (image {index} of the {set} set), which is outside the valid range of [0, {classes}) of the data set's class indices")]
    Label {
        /// Which set: `training`, `validation`, `test` or `evaluated`.
        set: &'static str,
        /// The image, from 0.
        index: usize,
        /// Its label.
        label: u32,
        /// The data set's classes.
        classes: usize,
    },
    /// A data set's pixels are not one image of its shape per label.
    #[error("the {set} set has {values} pixel values, but {images} images of shape {shape:?} need {expected}")]
    Images {
        /// Which set, as for [`FitError::Label`].
        set: &'static str,
        /// The pixel values it holds.
        values: usize,
        /// Its labels, one per image.
        images: usize,
        /// The shape of one image.
        shape: [usize; 3],
        /// The values its images need (saturated at `usize::MAX`).
        expected: usize,
    },
    /// Training was interrupted (Ctrl-C) during an epoch's validation; it
    /// stopped after saving that epoch's checkpoint.
    #[error("interrupted after epoch {epoch}; saved `{}`: continue with --resume", checkpoint.display())]
    InterruptedAfterEpoch {
        /// The epoch completed.
        epoch: u64,
        /// The checkpoint written.
        checkpoint: PathBuf,
    },
    /// The output folder holds an earlier run that training would replace.
    #[error("`{}` holds an earlier run's weights: continue that run with --resume, start over with --overwrite (replacing them), or train into another folder with --out DIR", path.display())]
    EarlierRun {
        /// The weights or checkpoint found.
        path: PathBuf,
    },
    /// The data set is smaller than one batch.
    #[error("the training set has {images} images, fewer than one batch of {batch}")]
    TooFewImages {
        /// Training images.
        images: usize,
        /// The batch size.
        batch: usize,
    },
}

/// The text of [`FitError::LabelShape`].
fn label_shape_text(output: &str, output_shape: &[u64], label_shape: &[usize]) -> String {
    let shape = crate::graph::Shape(output_shape.to_vec());
    match (output_shape.len(), label_shape) {
        (3, []) => format!("output `{output}` gives per-pixel scores {shape}, but the data set has one label per image: train a segmentation model on a folder of images and masks (`images/` and `masks/`) or `--train shapes`"),
        (_, [h, w]) if output_shape.len() != 3 => format!("the data set's labels are {h}x{w} masks, a class per pixel, but output `{output}` gives {shape}: a segmentation model ends with per-pixel scores [{h}, {w}, classes], e.g. `conv(classes, 1, activation: softmax)`"),
        (_, [h, w]) => format!("the data set's masks are {h}x{w}, but output `{output}` gives per-pixel scores {shape}: the scores must have the masks' height and width"),
        _ => format!("output `{output}` gives {shape}, which does not fit the data set's labels {label_shape:?}"),
    }
}

/// One epoch's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Epoch {
    /// 1-based.
    pub epoch: u64,
    /// Mean training loss (the weighted sum of the outputs' losses).
    pub loss: f64,
    /// Training accuracy.
    pub accuracy: f64,
    /// Validation loss.
    pub val_loss: f64,
    /// Validation accuracy.
    pub val_accuracy: f64,
    /// The learning rate at the end of the epoch.
    pub lr: f64,
    /// Wall time of the epoch, validation included.
    pub seconds: f64,
    /// Each `top_k` metric: (k, training, validation) top-k accuracy.
    pub top_k: Vec<(u64, f64, f64)>,
    /// A segmentation set's mean intersection over union of the classes
    /// (training, validation); `None` for one label per image.
    pub mean_iou: Option<(f64, f64)>,
}

/// What training produced.
#[derive(Debug, Clone)]
pub struct Fitted {
    /// The final weights (the best epoch's, with early stopping's restore).
    pub weights: TensorStore,
    /// Every epoch's figures.
    pub history: Vec<Epoch>,
    /// Loss and accuracy on the test set.
    pub test: (f64, f64),
    /// The test set's mean intersection over union, for a segmentation set.
    pub test_mean_iou: Option<f64>,
}

/// Progress reports, for the command line.
pub enum Progress<'a> {
    /// Within an epoch: steps done, steps in the epoch, running loss and accuracy, images/s.
    Step(u64, usize, usize, f64, f64, f64),
    /// The epoch's training is done and its validation starts, on this
    /// many images; every [`Progress::Epoch`] comes after one.
    Validating(u64, usize),
    /// An epoch ended.
    Epoch(&'a Epoch),
    /// Training is over and everything is saved (the checkpoint, the final
    /// weights, the history); the evaluation on the test set starts, on
    /// this many images. Ending the process from here on loses nothing:
    /// `resume` only evaluates again.
    Testing(usize),
}

/// Where training writes its files, and how it reports.
pub struct FitOptions<'p> {
    /// Worker threads.
    pub threads: usize,
    /// The ranks of a data-parallel run, when this process is one of them:
    /// every rank trains on its share of each batch and ends with the same
    /// weights as one process would ([`crate::runtime::parallel`]); only
    /// rank 0 writes files. Every rank must be given the same model,
    /// configuration, data and options.
    pub world: Option<&'p dyn Collective>,
    /// Folder for `{model}.safetensors` (the weights after every epoch, and
    /// the final weights at the end), `{model}.checkpoint.safetensors`
    /// (weights, optimizer state, epoch and step: what `resume` continues
    /// from) and `{model}.history.csv` (after every epoch). Every file is
    /// replaced atomically, so a crash at any instant leaves each one
    /// whole. A run holds the lock `.{model}.lock` there while it trains:
    /// a second run of the same model into the same folder is refused
    /// ([`FitError::Busy`]).
    pub out: PathBuf,
    /// Continue from the checkpoint in `out`, bit for bit as if training
    /// had not stopped ([`FitError::NoCheckpoint`] when there is none).
    pub resume: bool,
    /// Start afresh even when `out` holds an earlier run's weights or
    /// checkpoint, replacing them; otherwise that is an error
    /// ([`FitError::EarlierRun`]), so that no trained weights are lost.
    pub overwrite: bool,
    /// When set (by a Ctrl-C handler), training stops after the current
    /// step, or after the epoch's checkpoint when set during validation,
    /// and saves a checkpoint to resume from.
    pub stop: Option<&'p std::sync::atomic::AtomicBool>,
    /// How often a checkpoint is saved within an epoch (one is saved at
    /// the end of every epoch in any case).
    pub checkpoint_every: CheckpointEvery,
    /// Called as training goes.
    pub progress: &'p mut dyn FnMut(Progress),
}

/// Trains `model` on `train`, validating on `validation` after every epoch,
/// and evaluates the result on `test`.
///
/// After every epoch it saves the checkpoint, then the weights, then the
/// history; within an epoch, the checkpoint as
/// [`FitOptions::checkpoint_every`] says. When a file cannot be written (a
/// full disk, a file-size limit), training stops with [`FitError::Save`],
/// the file's previous version intact.
pub fn fit(
    model: &TypedGraph,
    config: &TrainConfig,
    sets: (&Dataset, &Dataset, &Dataset),
    options: FitOptions,
) -> Result<Fitted, FitError> {
    fit_from(
        model,
        config,
        sets,
        options,
        weights::init(model, config.seed),
    )
}

/// [`fit`], starting from the weights `initial` instead of the model's
/// initializers (`cnnc run --init-weights`: fine-tuning, transfer
/// learning; [`weights::load_initial`] makes them). With
/// [`FitOptions::resume`] the checkpoint's weights replace them.
pub fn fit_from(
    model: &TypedGraph,
    config: &TrainConfig,
    (train, validation, test): (&Dataset, &Dataset, &Dataset),
    options: FitOptions,
    initial: TensorStore,
) -> Result<Fitted, FitError> {
    let first_output = check_sets(model, config, (train, validation, test))?;
    // A CPU without the precision's instructions fails before the folder
    // is touched (not even its lock is created).
    crate::check_precision(config.precision)?;
    let files = RunFiles::new(&options.out, &model.graph.name);
    // Only rank 0 writes, so only it holds the folder.
    let writes = options.world.is_none_or(|w| w.rank() == 0);
    let _lock = writes.then(|| files.lock()).transpose()?;
    check_start(&files, &options)?;
    let loss = LossSpec {
        smoothing: config.label_smoothing,
        weights: config.loss_weights.clone(),
    };
    let step = crate::compile_training_in(
        model,
        &loss,
        &config.optimizer,
        config.batch as usize,
        config.precision,
    )?;
    let mut trainer = Trainer::new(step, initial, options.threads)?;
    trainer.seed = config.seed;
    let total_steps = (train.len() / config.batch as usize) as u64 * config.epochs;
    let mut run = Run::new((model, config, &files), trainer, first_output, options);
    run.total_steps = total_steps;
    if run.options.resume {
        run.resume()?;
    }
    // The class names travel with the weights, for `cnnc predict`.
    weights::set_class_names(&mut run.trainer.weights, &train.class_names);
    for epoch in run.first_epoch..=config.epochs {
        let (tally, started) = run.train_epoch(epoch, train)?;
        if run.end_epoch(epoch, (tally, started), validation)? {
            break;
        }
        if epoch < config.epochs && run.stop_requested()? {
            return Err(FitError::InterruptedAfterEpoch {
                epoch,
                checkpoint: files.checkpoint.clone(),
            });
        }
    }
    run.finish(&train.class_names, test)
}

/// Checks the three sets ([`check_data`]), the model's outputs against the
/// training set's classes, and that the training set holds a batch;
/// returns the name of the model's first output.
fn check_sets(
    model: &TypedGraph,
    config: &TrainConfig,
    (train, validation, test): (&Dataset, &Dataset, &Dataset),
) -> Result<String, FitError> {
    for (set, data) in [
        ("training", train),
        ("validation", validation),
        ("test", test),
    ] {
        check_data(data, set)?;
    }
    if config.loss == Loss::Binary {
        if let Some((output, shape)) = model
            .outputs()
            .into_iter()
            .find(|(_, shape)| shape.last() != Some(&1))
        {
            return Err(FitError::NotBinary {
                output,
                shape: crate::graph::Shape(shape),
            });
        }
    }
    let (first_output, _) = check_classes(model, train)?;
    let batch = config.batch as usize;
    if train.len() < batch {
        return Err(FitError::TooFewImages {
            images: train.len(),
            batch,
        });
    }
    Ok(first_output)
}

/// Whether `options` may start in the folder of `files`: `resume` needs a
/// checkpoint, and a fresh start (without `overwrite`) needs a folder with
/// no earlier run's weights or checkpoint.
fn check_start(files: &RunFiles, options: &FitOptions) -> Result<(), FitError> {
    if options.resume {
        if !files.checkpoint.exists() {
            return Err(FitError::NoCheckpoint {
                path: files.checkpoint.clone(),
                weights: files.weights.exists().then(|| files.weights.clone()),
            });
        }
    } else if !options.overwrite {
        if let Some(path) = [&files.checkpoint, &files.weights]
            .into_iter()
            .find(|p| p.exists())
        {
            return Err(FitError::EarlierRun { path: path.clone() });
        }
    }
    Ok(())
}

/// A run in progress: the trainer, and everything a checkpoint saves with it.
struct Run<'r, 'p> {
    model: &'r TypedGraph,
    config: &'r TrainConfig,
    files: &'r RunFiles,
    options: FitOptions<'p>,
    /// The output whose scores count for accuracy.
    first_output: String,
    top_ks: Vec<u64>,
    /// Steps in the whole run, for the schedules.
    total_steps: u64,
    trainer: Trainer,
    history: Vec<Epoch>,
    /// The best validation loss yet, and the weights that had it.
    best: Option<(f64, TensorStore)>,
    /// Epochs since the best one.
    since_best: u64,
    /// The first epoch to train (after those a resumed run already did).
    first_epoch: u64,
    /// Steps already done in the first epoch, and its running sums, when
    /// resuming a run stopped in the middle of an epoch.
    partial: Option<Partial>,
    /// Where this run's checkpoint on disk was saved; `None` before its first.
    saved: Option<Position>,
    /// When the next checkpoint within an epoch is due.
    cadence: Cadence,
}

impl<'r, 'p> Run<'r, 'p> {
    fn new(
        (model, config, files): (&'r TypedGraph, &'r TrainConfig, &'r RunFiles),
        trainer: Trainer,
        first_output: String,
        options: FitOptions<'p>,
    ) -> Run<'r, 'p> {
        let cadence = Cadence::new(options.checkpoint_every);
        Run {
            model,
            config,
            files,
            options,
            first_output,
            top_ks: config.top_ks(),
            total_steps: 0,
            trainer,
            history: Vec::new(),
            best: None,
            since_best: 0,
            first_epoch: 1,
            partial: None,
            saved: None,
            cadence,
        }
    }

    /// Takes up where the checkpoint left off.
    fn resume(&mut self) -> Result<(), FitError> {
        let state = Checkpoint::load(&self.files.checkpoint, self.model, &self.trainer)?;
        self.saved = Some(state.position());
        self.first_epoch = state.epoch + 1;
        self.partial = state.partial;
        self.trainer.weights = state.weights;
        self.trainer.states = state.states;
        self.trainer.step = state.step;
        self.history = state.history;
        self.best = state.best;
        self.since_best = state.since_best;
        Ok(())
    }

    /// Whether the Ctrl-C handler asked training to stop (on any rank: all
    /// of them stop at the same step).
    fn stop_requested(&self) -> Result<bool, FitError> {
        let asked = self
            .options
            .stop
            .is_some_and(|stop| stop.load(std::sync::atomic::Ordering::SeqCst));
        match self.options.world {
            None => Ok(asked),
            Some(world) => world.any(asked).map_err(|e| FitError::Ranks(e.0)),
        }
    }

    /// Whether this process writes the run's files: rank 0 of a
    /// data-parallel run, or a run of one process.
    fn writes(&self) -> bool {
        self.options.world.is_none_or(|w| w.rank() == 0)
    }

    /// Trains epoch `epoch` (from where a resumed run stopped in it),
    /// saving checkpoints as they fall due; returns its running sums and
    /// when it started. Fails with [`FitError::Interrupted`] when asked to
    /// stop, after saving a checkpoint.
    fn train_epoch(&mut self, epoch: u64, train: &Dataset) -> Result<(Tally, Instant), FitError> {
        let started = Instant::now();
        let batch = self.config.batch as usize;
        let steps = train.len() / batch;
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(
            self.config.seed.wrapping_add(epoch),
        ));
        let (skip, mut tally) = match self.partial.take() {
            Some(p) => (p.steps, p.tally),
            // A segmentation set's mean IoU comes from the confusion matrix.
            None if train.is_segmentation() => (
                0,
                Tally::with_confusion(self.top_ks.len(), train.class_names.len()),
            ),
            None => (0, Tally::new(self.top_ks.len())),
        };
        for (step, indices) in order.chunks_exact(batch).enumerate().skip(skip) {
            self.train_step((epoch, step), indices, train, &mut tally)?;
            let done = step + 1;
            let rate = ((done - skip) * batch) as f64 / started.elapsed().as_secs_f64().max(1e-9);
            (self.options.progress)(Progress::Step(
                epoch,
                done,
                steps,
                tally.loss_sum / tally.seen as f64,
                tally.correct as f64 / tally.seen as f64,
                rate,
            ));
            let stop = self.stop_requested()?;
            // The last step's checkpoint comes after validation, with the epoch's figures.
            let due = self.cadence.step() && done < steps;
            if stop || due {
                let partial = Partial {
                    steps: done,
                    tally: tally.clone(),
                };
                self.save_checkpoint(epoch - 1, Some(&partial))?;
            }
            if stop {
                return Err(FitError::Interrupted {
                    epoch,
                    step: done,
                    checkpoint: self.files.checkpoint.clone(),
                });
            }
        }
        Ok((tally, started))
    }

    /// One training step of epoch `epoch` on the images `indices` of
    /// `train`, counted into `tally`.
    fn train_step(
        &mut self,
        (epoch, step): (u64, usize),
        indices: &[usize],
        train: &Dataset,
        tally: &mut Tally,
    ) -> Result<(), FitError> {
        let lr = learning_rate(self.config, self.trainer.step.iterations, self.total_steps);
        // A rank reads its share of the images, and every label.
        let own = match self.options.world {
            Some(world) => shares(indices.len(), world.size())[world.rank()].clone(),
            None => 0..indices.len(),
        };
        let labels = gather_labels(train, indices);
        let mut images = gather_images(train, &indices[own.clone()]);
        if let Some(augment) = &self.config.augment {
            let key = (self.config.seed, epoch, step);
            augment_items(&mut images, train.shape, augment, key, own.start);
        }
        let result = match self.options.world {
            Some(world) => self.trainer.train_step_shared(&images, &labels, lr, world),
            None => self.trainer.train_step(&images, &labels, lr),
        }
        .map_err(|source| FitError::Step { epoch, source })?;
        // Weighted by the labels (the rows of scores), which `seen` counts.
        tally.loss_sum +=
            total_loss(&result.losses, &self.config.loss_weights) * labels.len() as f64;
        tally.count(
            output_values(&result.outputs, &self.first_output),
            &labels,
            &self.top_ks,
        );
        Ok(())
    }

    /// Validates after epoch `epoch`'s training (`tally`, begun at
    /// `started`), records its figures, and saves the checkpoint, the
    /// weights and the history, in that order; returns whether early
    /// stopping ends training here.
    fn end_epoch(
        &mut self,
        epoch: u64,
        (tally, started): (Tally, Instant),
        validation: &Dataset,
    ) -> Result<bool, FitError> {
        (self.options.progress)(Progress::Validating(epoch, validation.len()));
        let checked = evaluate_as(
            self.model,
            &self.trainer.weights,
            validation,
            (&self.top_ks, self.options.threads),
            self.options.world,
        )?;
        let figures = self.figures(epoch, &tally, &checked, started);
        (self.options.progress)(Progress::Epoch(&figures));
        self.history.push(figures);
        if self.best.as_ref().is_none_or(|(l, _)| checked.loss < *l) {
            self.best = Some((checked.loss, self.trainer.weights.clone()));
            self.since_best = 0;
        } else {
            self.since_best += 1;
        }
        self.save_checkpoint(epoch, None)?;
        self.save_weights(&self.trainer.weights)?;
        self.save_history()?;
        Ok(self
            .config
            .early_stopping
            .is_some_and(|stopping| self.since_best >= stopping.patience))
    }

    /// Epoch `epoch`'s figures, from its training `tally` and its
    /// validation `checked`.
    fn figures(&self, epoch: u64, tally: &Tally, checked: &Evaluation, started: Instant) -> Epoch {
        let seen = tally.seen.max(1) as f64;
        // The rate of the epoch's last step (the step counter is past it).
        let last_step = self.trainer.step.iterations.saturating_sub(1);
        Epoch {
            epoch,
            loss: tally.loss_sum / seen,
            accuracy: tally.correct as f64 / seen,
            val_loss: checked.loss,
            val_accuracy: checked.accuracy,
            lr: learning_rate(self.config, last_step, self.total_steps),
            seconds: started.elapsed().as_secs_f64(),
            top_k: self
                .top_ks
                .iter()
                .zip(&tally.top_k_correct)
                .zip(&checked.top_k)
                .map(|((&k, &c), &(_, v))| (k, c as f64 / seen, v))
                .collect(),
            mean_iou: checked
                .mean_iou()
                .map(|validation| (mean_iou(&tally.confusion).unwrap_or(0.0), validation)),
        }
    }

    /// Saves the final weights (the best epoch's, with early stopping's
    /// restore), named by `class_names`, and the history; then evaluates
    /// them on `test`.
    fn finish(mut self, class_names: &[String], test: &Dataset) -> Result<Fitted, FitError> {
        let restore = self.config.early_stopping.is_some_and(|s| s.restore_best);
        let mut weights = match (restore, self.best.take()) {
            (true, Some((_, best))) => best,
            _ => self.trainer.weights.clone(),
        };
        // The best weights read back from a checkpoint carry no metadata.
        weights::set_class_names(&mut weights, class_names);
        self.save_weights(&weights)?;
        self.save_history()?;
        (self.options.progress)(Progress::Testing(test.len()));
        let threads = self.options.threads;
        let test = evaluate_as(
            self.model,
            &weights,
            test,
            (&[], threads),
            self.options.world,
        )?;
        Ok(Fitted {
            weights,
            history: self.history,
            test: (test.loss, test.accuracy),
            test_mean_iou: test.mean_iou(),
        })
    }

    /// Saves the checkpoint: after `epoch` whole epochs, and `partial` into
    /// the next when within it.
    fn save_checkpoint(&mut self, epoch: u64, partial: Option<&Partial>) -> Result<(), FitError> {
        if !self.writes() {
            return Ok(());
        }
        let state = RunState {
            epoch,
            partial,
            trainer: &self.trainer,
            history: &self.history,
            best: self.best.as_ref(),
            since_best: self.since_best,
        };
        let position = state.position();
        Checkpoint::save(&self.files.checkpoint, &state)
            .map_err(|e| self.save_error("checkpoint", &self.files.checkpoint, e))?;
        self.saved = Some(position);
        self.cadence.saved();
        Ok(())
    }

    fn save_weights(&self, store: &TensorStore) -> Result<(), FitError> {
        if !self.writes() {
            return Ok(());
        }
        weights::save(store, &self.files.weights)
            .map_err(|e| self.save_error("weights", &self.files.weights, e))
    }

    fn save_history(&self) -> Result<(), FitError> {
        if !self.writes() {
            return Ok(());
        }
        let path = &self.files.history;
        weights::write_atomically(path, history_csv(&self.history).as_bytes()).map_err(|source| {
            self.save_error(
                "history",
                path,
                WeightsError::Write {
                    path: path.clone(),
                    source,
                },
            )
        })
    }

    /// [`FitError::Save`] for `what` at `path`, saying what is still there
    /// to continue from.
    fn save_error(&self, what: &'static str, path: &Path, error: WeightsError) -> FitError {
        let source = match error {
            WeightsError::Write { source, .. } => source,
            other => std::io::Error::other(other.to_string()),
        };
        let remedy = "once there is room (free disk space, or a higher file-size limit), continue with --resume";
        let kept = match (what, self.saved) {
            ("checkpoint", Some(at)) => format!("the previous checkpoint ({at}) is intact: {remedy}"),
            ("checkpoint", None) => "this run had saved no checkpoint yet, and nothing else was \
                                     written: once there is room, start again"
                .to_string(),
            (_, Some(at)) => format!(
                "the previous {what} file is intact, and the checkpoint `{}` ({at}) holds this run: {remedy}",
                self.files.checkpoint.display()
            ),
            (_, None) => format!("the previous {what} file is intact"),
        };
        FitError::Save {
            what,
            path: path.to_path_buf(),
            source,
            kept,
        }
    }
}

/// How far into an epoch a checkpoint saved within it got.
#[derive(Debug, Clone)]
pub(super) struct Partial {
    /// Steps done.
    pub(super) steps: usize,
    /// Their running sums.
    pub(super) tally: Tally,
}

/// The running sums of an epoch's training figures.
#[derive(Debug, Clone)]
pub(super) struct Tally {
    /// The sum over images of the weighted total loss.
    pub(super) loss_sum: f64,
    /// Images whose top score is their label.
    pub(super) correct: usize,
    /// For each `top_k` metric, images whose label is among the k top scores.
    pub(super) top_k_correct: Vec<usize>,
    /// Images seen.
    pub(super) seen: usize,
    /// `confusion[true class][predicted class]`, when asked for (else empty).
    pub(super) confusion: Vec<Vec<u64>>,
}

impl Tally {
    fn new(top_ks: usize) -> Tally {
        Tally {
            loss_sum: 0.0,
            correct: 0,
            top_k_correct: vec![0; top_ks],
            seen: 0,
            confusion: Vec::new(),
        }
    }

    /// A tally that also counts the confusion matrix of `classes` classes.
    fn with_confusion(top_ks: usize, classes: usize) -> Tally {
        Tally {
            confusion: vec![vec![0; classes]; classes],
            ..Tally::new(top_ks)
        }
    }

    /// Counts a batch's predictions (`scores`, a row per label).
    fn count(&mut self, scores: &[f32], labels: &[u32], top_ks: &[u64]) {
        let classes = scores.len() / labels.len().max(1);
        for (r, &label) in labels.iter().enumerate() {
            let row = &scores[r * classes..(r + 1) * classes];
            let predicted = predicted_class(row);
            self.correct += usize::from(predicted == label as usize);
            if let Some(cell) = self
                .confusion
                .get_mut(label as usize)
                .and_then(|counts| counts.get_mut(predicted))
            {
                *cell += 1;
            }
            let rank = rank_of(row, label as usize);
            for (hits, &k) in self.top_k_correct.iter_mut().zip(top_ks) {
                *hits += usize::from((rank as u64) < k);
            }
        }
        self.seen += labels.len();
    }
}

/// Reads a checkpoint already in memory as `--resume` reads the file at
/// `path` (which only names it in errors), for `model` trained by
/// `trainer`: `Ok` when a run could resume from it. The fuzz targets call
/// it, so that no input goes through a temporary file.
pub fn check_checkpoint(
    bytes: &[u8],
    path: &Path,
    model: &TypedGraph,
    trainer: &Trainer,
) -> Result<(), FitError> {
    let store = weights::load_bytes(bytes, path)?;
    Checkpoint::read(store, path, model, trainer).map(drop)
}

/// The learning rate at step `step` of `total`.
fn learning_rate(config: &TrainConfig, step: u64, total: u64) -> f64 {
    let lr = config.optimizer.lr;
    match &config.schedule {
        None => lr,
        Some(Schedule::Exponential {
            decay_rate,
            decay_steps,
        }) => lr * decay_rate.powf(step as f64 / *decay_steps as f64),
        Some(Schedule::Piecewise { boundaries, values }) => {
            let i = boundaries.iter().take_while(|&&b| step >= b).count();
            values[i.min(values.len() - 1)]
        }
        // Linear warm-up from max_lr / 10 to max_lr over the first half, back
        // down over the second, then a final decay to a hundredth of the start.
        Some(Schedule::OneCycle { max_lr }) => {
            let t = step as f64 / total.max(1) as f64;
            let start = max_lr / 10.0;
            if t < 0.45 {
                start + (max_lr - start) * t / 0.45
            } else if t < 0.9 {
                max_lr - (max_lr - start) * (t - 0.45) / 0.45
            } else {
                start - (start - start / 100.0) * (t - 0.9) / 0.1
            }
        }
    }
}

fn gather_images(data: &Dataset, indices: &[usize]) -> Vec<f32> {
    let mut images = Vec::with_capacity(indices.len() * data.image_len());
    for &i in indices {
        images.extend_from_slice(data.image(i));
    }
    images
}

fn gather_labels(data: &Dataset, indices: &[usize]) -> Vec<u32> {
    let mut labels = Vec::with_capacity(indices.len() * data.label_len());
    for &i in indices {
        labels.extend_from_slice(data.labels_of(i));
    }
    labels
}

/// The weighted sum of the outputs' losses (an output not named in
/// `weights` weighs 1), as Keras reports a model's loss.
fn total_loss(losses: &[(String, f64)], weights: &[(String, f64)]) -> f64 {
    losses
        .iter()
        .map(|(name, loss)| {
            let weight = weights.iter().find(|(n, _)| n == name).map_or(1.0, |w| w.1);
            weight * loss
        })
        .sum()
}

/// The probability a row of class probabilities gives class `label`: its
/// entry, or for a row of one (a sigmoid's probability of class 1) that
/// entry for class 1 and its complement for class 0.
fn probability(row: &[f32], label: usize) -> f64 {
    match row {
        [p] if label == 0 => 1.0 - f64::from(*p),
        [p] => f64::from(*p),
        _ => f64::from(row[label]),
    }
}

/// How many scores are larger than the label's: 0 when the label has the
/// top score; the label is among the top k when this is below k. For a
/// row of one score (two classes), 0 when it predicts the label, else 1.
fn rank_of(row: &[f32], label: usize) -> usize {
    if let [_] = row {
        return usize::from(predicted_class(row) != label);
    }
    row.get(label)
        .map_or(row.len(), |&own| row.iter().filter(|&&v| v > own).count())
}

/// Mean cross-entropy (of the first output's probabilities) and accuracy on `data`.
pub fn evaluate(
    model: &TypedGraph,
    weights: &TensorStore,
    data: &Dataset,
    threads: usize,
) -> Result<(f64, f64), FitError> {
    let report = evaluate_in_detail(model, weights, data, (&[], threads))?;
    Ok((report.loss, report.accuracy))
}

/// Examples per batch when evaluating.
const EVALUATION_BATCH: usize = 256;

/// Evaluation runs the master weights in f32 whatever precision trained
/// them: the accuracy reported is the model's, and `cnnc predict
/// --precision bf16` is there for speed.
const EVALUATION_PRECISION: crate::Precision = crate::Precision::F32;

/// An evaluation's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy of the first output's probabilities.
    pub loss: f64,
    /// Top-1 accuracy.
    pub accuracy: f64,
    /// For each k asked for, the top-k accuracy.
    pub top_k: Vec<(u64, f64)>,
    /// `confusion[true class][predicted class]` counts.
    pub confusion: Vec<Vec<u64>>,
    /// Whether the set was scored per pixel (a segmentation set).
    pub per_pixel: bool,
}

impl Evaluation {
    /// A segmentation set's mean intersection over union ([`mean_iou`]).
    pub fn mean_iou(&self) -> Option<f64> {
        self.per_pixel.then(|| mean_iou(&self.confusion)).flatten()
    }

    /// Each class's accuracy (the diagonal over the row sums).
    pub fn per_class(&self) -> Vec<f64> {
        self.confusion
            .iter()
            .enumerate()
            .map(|(c, row)| row[c] as f64 / row.iter().sum::<u64>().max(1) as f64)
            .collect()
    }
}

/// The mean over the classes of the intersection over union of each,
/// `TP / (TP + FP + FN)` from the confusion matrix `[true][predicted]`,
/// as Keras's `MeanIoU` computes it: a class that is neither in the labels
/// nor predicted (a zero denominator) is left out of the mean. `None` when
/// no class counts.
pub fn mean_iou(confusion: &[Vec<u64>]) -> Option<f64> {
    let ious: Vec<f64> = class_ious(confusion).into_iter().flatten().collect();
    (!ious.is_empty()).then(|| ious.iter().sum::<f64>() / ious.len() as f64)
}

/// Each class's intersection over union, `None` for a class neither
/// labelled nor predicted.
pub fn class_ious(confusion: &[Vec<u64>]) -> Vec<Option<f64>> {
    (0..confusion.len())
        .map(|c| {
            let true_positives = confusion[c][c];
            let labelled: u64 = confusion[c].iter().sum();
            let predicted: u64 = confusion.iter().map(|row| row[c]).sum();
            let union = labelled + predicted - true_positives;
            (union > 0).then(|| true_positives as f64 / union as f64)
        })
        .collect()
}

/// Loss, accuracy, the top-k accuracy for each of `top_ks` and the
/// confusion matrix of `model` with `weights` on `data`. For a
/// segmentation set, each pixel counts as one example.
///
/// The confusion matrix is square, one row and one column per score of the
/// first output (two for one score, a sigmoid's): that is the data set's
/// classes, plus any scores beyond them (which no label names, so their
/// rows are zero). Fails with
/// [`FitError::Label`] or [`FitError::Images`] when `data` does not hold
/// what its type promises, and [`FitError::Classes`] when an output has
/// fewer scores than `data` has classes.
pub fn evaluate_in_detail(
    model: &TypedGraph,
    weights: &TensorStore,
    data: &Dataset,
    (top_ks, threads): (&[u64], usize),
) -> Result<Evaluation, FitError> {
    evaluate_as(model, weights, data, (top_ks, threads), None)
}

/// [`evaluate_in_detail`], as one rank of `world` when given: each rank
/// runs a share of the batches and the ranks gather the class scores, from
/// which every rank counts the figures in the order one process would
/// (a segmentation set, whose scores are per pixel, runs whole on each).
fn evaluate_as(
    model: &TypedGraph,
    weights: &TensorStore,
    data: &Dataset,
    (top_ks, threads): (&[u64], usize),
    world: Option<&dyn Collective>,
) -> Result<Evaluation, FitError> {
    check_data(data, "evaluated")?;
    let (first_output, classes) = check_classes(model, data)?;
    let mut loss = 0.0;
    // One score (a sigmoid's) predicts one of two classes.
    let mut tally = Tally::with_confusion(top_ks.len(), classes.max(2));
    // The scores of examples `start..`, counted in order.
    let mut count = |start: usize, scores: &[f32]| {
        let rows = scores.len() / classes;
        let labels = &data.labels[start * data.label_len()..][..rows];
        tally.count(scores, labels, top_ks);
        for (row, &label) in scores.chunks_exact(classes).zip(labels) {
            loss -= probability(row, label as usize)
                .clamp(1e-7, 1.0 - 1e-7)
                .ln();
        }
    };
    let examples =
        |start: usize, size: usize| gather_images(data, &(start..start + size).collect::<Vec<_>>());
    let width = data.label_len() * classes;
    match world.filter(|_| !data.is_segmentation()) {
        None => run_in_batches::<FitError>(
            model,
            weights,
            Batches {
                count: data.len(),
                batch: EVALUATION_BATCH,
                threads,
                precision: EVALUATION_PRECISION,
            },
            examples,
            |start, outputs| {
                let examples = EVALUATION_BATCH.min(data.len() - start);
                // The program returns every output, `examples` of each.
                count(
                    start,
                    &output_values(&outputs, &first_output)[..examples * width],
                );
            },
        )?,
        Some(world) => {
            // Whole batches for each rank: the same batches one process runs.
            let batches = data.len().div_ceil(EVALUATION_BATCH);
            let parts: Vec<Range<usize>> = shares(batches, world.size())
                .into_iter()
                .map(|b| {
                    (b.start * EVALUATION_BATCH).min(data.len())
                        ..(b.end * EVALUATION_BATCH).min(data.len())
                })
                .collect();
            let own = parts[world.rank()].clone();
            let mut scores = vec![0.0f32; data.len() * width];
            run_in_batches::<FitError>(
                model,
                weights,
                Batches {
                    count: own.len(),
                    batch: EVALUATION_BATCH,
                    threads,
                    precision: EVALUATION_PRECISION,
                },
                |start, size| examples(own.start + start, size),
                |start, outputs| {
                    let first = (own.start + start) * width;
                    let values = output_values(&outputs, &first_output);
                    let n = values.len().min(scores.len() - first);
                    scores[first..first + n].copy_from_slice(&values[..n]);
                },
            )?;
            let parts: Vec<Range<usize>> = parts
                .iter()
                .map(|p| p.start * width..p.end * width)
                .collect();
            world
                .all_gather(&mut scores, &parts)
                .map_err(|e| FitError::Ranks(e.0))?;
            count(0, &scores);
        }
    }
    let n = data.labels.len().max(1) as f64;
    Ok(Evaluation {
        loss: loss / n,
        accuracy: tally.correct as f64 / n,
        top_k: top_ks
            .iter()
            .zip(&tally.top_k_correct)
            .map(|(&k, &c)| (k, c as f64 / n))
            .collect(),
        confusion: tally.confusion,
        per_pixel: data.is_segmentation(),
    })
}

/// The name and number of scores (per label) of the model's first output,
/// after checking that every output takes labels of `data`'s shape and
/// has at least as many scores as `data` has classes (labels are checked
/// against the classes by [`check_data`]).
fn check_classes(model: &TypedGraph, data: &Dataset) -> Result<(String, usize), FitError> {
    let classes = data.class_names.len();
    for (output, shape) in model.outputs() {
        let fits = match (shape.as_slice(), data.label_shape.as_slice()) {
            ([_], []) => true,
            ([h, w, _], [mh, mw]) => (*h as usize, *w as usize) == (*mh, *mw),
            _ => false,
        };
        if !fits {
            return Err(FitError::LabelShape {
                output,
                output_shape: shape,
                label_shape: data.label_shape.clone(),
            });
        }
    }
    let outputs: Vec<(String, usize)> = model
        .outputs()
        .into_iter()
        .map(|(name, shape)| (name, shape.last().copied().unwrap_or(1) as usize))
        .collect();
    // One score is a sigmoid's probability of class 1 of two.
    let bound = |scores: usize| if scores == 1 { 2 } else { scores };
    if let Some((output, scores)) = outputs.iter().find(|(_, s)| bound(*s) < classes) {
        return Err(FitError::Classes {
            per_pixel: data.is_segmentation(),
            output: output.clone(),
            scores: *scores,
            classes,
        });
    }
    Ok(outputs.into_iter().next().unwrap_or_default())
}

/// The values of output `name` among a step's or a batch's outputs, which
/// come in the program's order rather than the model's (empty when absent).
fn output_values<'a>(outputs: &'a [(String, Vec<f32>)], name: &str) -> &'a [f32] {
    outputs
        .iter()
        .find(|(output, _)| output == name)
        .map_or(&[], |(_, values)| values)
}

/// Checks what [`Dataset`]'s fields promise but its type cannot: one image
/// of `shape` per label, and every label below the number of classes. The
/// sets cnnc loads are so by construction (Fashion-MNIST's labels are
/// checked as its files are read); this is the check for a set built by
/// hand, before anything indexes by its labels. `set` names it in errors.
fn check_data(data: &Dataset, set: &'static str) -> Result<(), FitError> {
    let expected = data.len().saturating_mul(data.image_len());
    if data.images.len() != expected {
        return Err(FitError::Images {
            set,
            values: data.images.len(),
            images: data.len(),
            shape: data.shape,
            expected,
        });
    }
    let classes = data.class_names.len();
    match data
        .labels
        .iter()
        .enumerate()
        .find(|(_, &label)| label as usize >= classes)
    {
        Some((position, &label)) => Err(FitError::Label {
            set,
            index: position / data.label_len(),
            label,
            classes,
        }),
        None => Ok(()),
    }
}

/// The text of `{model}.history.csv`: a header, then a row per epoch.
pub(super) fn history_csv(history: &[Epoch]) -> String {
    let mut text = String::from("epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds");
    for (k, _, _) in history.first().map_or(&[][..], |e| &e.top_k[..]) {
        text += &format!(",top{k}_accuracy,val_top{k}_accuracy");
    }
    let segmentation = history.first().is_some_and(|e| e.mean_iou.is_some());
    if segmentation {
        text += ",mean_iou,val_mean_iou";
    }
    text.push('\n');
    for e in history {
        text += &format!(
            "{},{},{},{},{},{},{}",
            e.epoch, e.loss, e.accuracy, e.val_loss, e.val_accuracy, e.lr, e.seconds
        );
        for (_, train, validation) in &e.top_k {
            text += &format!(",{train},{validation}");
        }
        if segmentation {
            let (train, validation) = e.mean_iou.unwrap_or_default();
            text += &format!(",{train},{validation}");
        }
        text.push('\n');
    }
    text
}

/// The epochs of a history as [`history_csv`] writes it (`{model}.history.csv`):
/// a header naming the columns, then one row per epoch. The columns
/// `epoch`, `loss`, `accuracy`, `val_loss` and `val_accuracy` are needed,
/// in any order; `lr` and `seconds` are read when present (0 otherwise),
/// and so is every pair `topK_accuracy`, `val_topK_accuracy`, and the pair
/// `mean_iou`, `val_mean_iou`. Fails with a
/// message naming the line (1-based) or the column at fault.
pub fn parse_history(text: &str) -> Result<Vec<Epoch>, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or("it is empty")?;
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    let find = |name: &str| columns.iter().position(|c| *c == name);
    let mut required = [0; 5];
    for (slot, name) in required.iter_mut().zip(HISTORY_COLUMNS) {
        *slot = find(name).ok_or_else(|| {
            format!(
                "its header has no column `{name}` (it needs {})",
                HISTORY_COLUMNS.join(", ")
            )
        })?;
    }
    let columns = HistoryColumns {
        required,
        lr: find("lr"),
        seconds: find("seconds"),
        top_k: columns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let k = c
                    .strip_prefix("top")?
                    .strip_suffix("_accuracy")?
                    .parse()
                    .ok()?;
                Some((k, i, find(&format!("val_top{k}_accuracy"))?))
            })
            .collect(),
        mean_iou: find("mean_iou").zip(find("val_mean_iou")),
    };
    lines
        .map(|(i, line)| {
            columns
                .row(line)
                .map_err(|m| format!("line {}: {m}", i + 1))
        })
        .collect()
}

/// The columns a history needs.
const HISTORY_COLUMNS: [&str; 5] = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"];

/// Where a history's figures are: the indices of [`HISTORY_COLUMNS`], of
/// `lr` and `seconds`, and of each top-k pair (k, training, validation).
struct HistoryColumns {
    required: [usize; 5],
    lr: Option<usize>,
    seconds: Option<usize>,
    top_k: Vec<(u64, usize, usize)>,
    mean_iou: Option<(usize, usize)>,
}

impl HistoryColumns {
    fn row(&self, line: &str) -> Result<Epoch, String> {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        let number = |column: usize| -> Result<f64, String> {
            let cell = cells
                .get(column)
                .ok_or_else(|| format!("it has {} cells, fewer than the header", cells.len()))?;
            cell.parse()
                .map_err(|_| format!("`{cell}` is not a number"))
        };
        let optional = |column: Option<usize>| column.map_or(Ok(0.0), number);
        let epoch = number(self.required[0])?;
        if epoch < 0.0 || epoch.fract() != 0.0 {
            return Err(format!("epoch `{epoch}` is not a whole number"));
        }
        Ok(Epoch {
            epoch: epoch as u64,
            loss: number(self.required[1])?,
            accuracy: number(self.required[2])?,
            val_loss: number(self.required[3])?,
            val_accuracy: number(self.required[4])?,
            lr: optional(self.lr)?,
            seconds: optional(self.seconds)?,
            top_k: self
                .top_k
                .iter()
                .map(|&(k, train, val)| Ok((k, number(train)?, number(val)?)))
                .collect::<Result<_, String>>()?,
            mean_iou: self
                .mean_iou
                .map(|(train, val)| Ok::<_, String>((number(train)?, number(val)?)))
                .transpose()?,
        })
    }
}
