//! Training a model on a data set: epochs of shuffled batches, validation
//! after each epoch, learning-rate schedules, early stopping, checkpoints,
//! and the final evaluation on the test set.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use thiserror::Error;

use crate::autodiff::LossSpec;
use crate::config::{Schedule, TrainConfig};
use crate::data::augment::augment_batch;
use crate::data::Dataset;
use crate::predict::{run_in_batches, Batches};
use crate::runtime::inference::InferenceError;
use crate::runtime::training::{Trainer, TrainingError};
use crate::runtime::weights::{self, TensorStore, WeightsError};
use crate::shapes::TypedGraph;
use crate::CompileError;

/// Why training stopped with an error.
#[derive(Debug, Error)]
pub enum FitError {
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
    /// A checkpoint could not be written.
    #[error(transparent)]
    Checkpoint(#[from] WeightsError),
    /// The history could not be written.
    #[error("cannot write `{path}`: {message}")]
    History {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
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
    #[error("output `{output}` gives {scores} scores per image, but the data set has {classes} classes: every output is scored against the same labels, so each needs at least {classes} scores (more are allowed, as in Keras); make its last layer `dense({classes}, activation: softmax)`")]
    Classes {
        /// The first output (in the model's order) with too few scores.
        output: String,
        /// Its scores per image.
        scores: usize,
        /// The data set's classes.
        classes: usize,
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
}

/// Progress reports, for the command line.
pub enum Progress<'a> {
    /// Within an epoch: steps done, steps in the epoch, running loss and accuracy, images/s.
    Step(u64, usize, usize, f64, f64, f64),
    /// An epoch ended.
    Epoch(&'a Epoch),
}

/// Where training writes its files, and how it reports.
pub struct FitOptions<'p> {
    /// Worker threads.
    pub threads: usize,
    /// Folder for `{model}.safetensors` (the weights after every epoch),
    /// `{model}.checkpoint.safetensors` (weights, optimizer state, epoch:
    /// what `resume` continues from) and `{model}.history.csv`.
    pub out: PathBuf,
    /// Continue from the checkpoint in `out`, bit for bit as if training
    /// had not stopped.
    pub resume: bool,
    /// Start afresh even when `out` holds an earlier run's weights or
    /// checkpoint, replacing them; otherwise that is an error
    /// ([`FitError::EarlierRun`]), so that no trained weights are lost.
    pub overwrite: bool,
    /// When set (by a Ctrl-C handler), training stops after the current
    /// step and saves a checkpoint to resume from.
    pub stop: Option<&'p std::sync::atomic::AtomicBool>,
    /// Called as training goes.
    pub progress: &'p mut dyn FnMut(Progress),
}

/// Trains `model` on `train`, validating on `validation` after every epoch,
/// and evaluates the result on `test`.
pub fn fit(
    model: &TypedGraph,
    config: &TrainConfig,
    (train, validation, test): (&Dataset, &Dataset, &Dataset),
    options: FitOptions,
) -> Result<Fitted, FitError> {
    let batch = config.batch as usize;
    for (set, data) in [
        ("training", train),
        ("validation", validation),
        ("test", test),
    ] {
        check_data(data, set)?;
    }
    let (first_output, _) = check_classes(model, train)?;
    if train.len() < batch {
        return Err(FitError::TooFewImages {
            images: train.len(),
            batch,
        });
    }
    let loss = LossSpec {
        smoothing: config.label_smoothing,
        weights: config.loss_weights.clone(),
    };
    let step = crate::compile_training(model, &loss, &config.optimizer, batch)?;
    let mut trainer = Trainer::new(step, weights::init(model, config.seed), options.threads)?;
    trainer.seed = config.seed;
    let top_ks = config.top_ks();
    let steps_per_epoch = train.len() / batch;
    let total_steps = steps_per_epoch as u64 * config.epochs;
    let mut history = Vec::new();
    let mut best: Option<(f64, TensorStore)> = None;
    let mut since_best = 0;
    let weights_path = options
        .out
        .join(format!("{}.safetensors", model.graph.name));
    let checkpoint = options
        .out
        .join(format!("{}.checkpoint.safetensors", model.graph.name));
    let mut first_epoch = 1;
    // Steps already done in the first epoch, and its running sums, when
    // resuming a run interrupted in the middle of an epoch.
    let mut partial: Option<Partial> = None;
    if !options.resume && !options.overwrite {
        if let Some(path) = [&checkpoint, &weights_path]
            .into_iter()
            .find(|p| p.exists())
        {
            return Err(FitError::EarlierRun { path: path.clone() });
        }
    }
    if options.resume {
        let state = Checkpoint::load(&checkpoint, model, &trainer)?;
        first_epoch = state.epoch + 1;
        partial = state.partial;
        trainer.weights = state.weights;
        trainer.states = state.states;
        trainer.step = state.step;
        history = state.history;
        best = state.best;
        since_best = state.since_best;
    }
    // The class names travel with the weights, for `cnnc predict`.
    weights::set_class_names(&mut trainer.weights, &train.class_names);
    for epoch in first_epoch..=config.epochs {
        let started = Instant::now();
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(
            config.seed.wrapping_add(epoch),
        ));
        let mut tally = Tally::new(top_ks.len());
        let mut skip = 0;
        if let Some(p) = partial.take() {
            (skip, tally) = (p.steps, p.tally);
        }
        let mut lr = config.optimizer.lr;
        for (step, indices) in order.chunks_exact(batch).enumerate().skip(skip) {
            lr = learning_rate(config, trainer.step.iterations, total_steps);
            let (mut images, labels) = gather(train, indices);
            if let Some(augment) = &config.augment {
                augment_batch(
                    &mut images,
                    train.shape,
                    augment,
                    (config.seed, epoch, step),
                );
            }
            let result = trainer
                .train_step(&images, &labels, lr)
                .map_err(|source| FitError::Step { epoch, source })?;
            tally.loss_sum += total_loss(&result.losses, &config.loss_weights) * batch as f64;
            tally.count(
                output_values(&result.outputs, &first_output),
                &labels,
                &top_ks,
            );
            let rate = tally.seen as f64 / started.elapsed().as_secs_f64().max(1e-9);
            (options.progress)(Progress::Step(
                epoch,
                step + 1,
                steps_per_epoch,
                tally.loss_sum / tally.seen as f64,
                tally.correct as f64 / tally.seen as f64,
                rate,
            ));
            if options
                .stop
                .is_some_and(|stop| stop.load(std::sync::atomic::Ordering::SeqCst))
            {
                let partial = Partial {
                    steps: step + 1,
                    tally,
                };
                Checkpoint::save(
                    &checkpoint,
                    (epoch - 1, Some(partial)),
                    &trainer,
                    &history,
                    best.as_ref(),
                    since_best,
                )?;
                return Err(FitError::Interrupted {
                    epoch,
                    step: step + 1,
                    checkpoint,
                });
            }
        }
        let checked = evaluate_in_detail(
            model,
            &trainer.weights,
            validation,
            (&top_ks, options.threads),
        )?;
        let val_loss = checked.loss;
        weights::save(&trainer.weights, &weights_path)?;
        let seen = tally.seen.max(1) as f64;
        let figures = Epoch {
            epoch,
            loss: tally.loss_sum / seen,
            accuracy: tally.correct as f64 / seen,
            val_loss,
            val_accuracy: checked.accuracy,
            lr,
            seconds: started.elapsed().as_secs_f64(),
            top_k: top_ks
                .iter()
                .zip(&tally.top_k_correct)
                .zip(&checked.top_k)
                .map(|((&k, &c), &(_, v))| (k, c as f64 / seen, v))
                .collect(),
        };
        (options.progress)(Progress::Epoch(&figures));
        history.push(figures);
        if best.as_ref().is_none_or(|(l, _)| val_loss < *l) {
            best = Some((val_loss, trainer.weights.clone()));
            since_best = 0;
        } else {
            since_best += 1;
        }
        Checkpoint::save(
            &checkpoint,
            (epoch, None),
            &trainer,
            &history,
            best.as_ref(),
            since_best,
        )?;
        if let Some(stopping) = config.early_stopping {
            if since_best >= stopping.patience {
                break;
            }
        }
    }
    let restore = config.early_stopping.is_some_and(|s| s.restore_best);
    let weights = match (restore, best) {
        (true, Some((_, w))) => w,
        _ => trainer.weights.clone(),
    };
    write_history(
        &options
            .out
            .join(format!("{}.history.csv", model.graph.name)),
        &history,
    )?;
    let test = evaluate(model, &weights, test, options.threads)?;
    Ok(Fitted {
        weights,
        history,
        test,
    })
}

/// How far an interrupted epoch got.
#[derive(Debug, Clone)]
struct Partial {
    steps: usize,
    tally: Tally,
}

/// The running sums of an epoch's training figures.
#[derive(Debug, Clone)]
struct Tally {
    /// The sum over images of the weighted total loss.
    loss_sum: f64,
    /// Images whose top score is their label.
    correct: usize,
    /// For each `top_k` metric, images whose label is among the k top scores.
    top_k_correct: Vec<usize>,
    /// Images seen.
    seen: usize,
    /// `confusion[true class][predicted class]`, when asked for (else empty).
    confusion: Vec<Vec<u64>>,
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
            let predicted = arg_max(row);
            self.correct += usize::from(predicted == label as usize);
            if let Some(counts) = self.confusion.get_mut(label as usize) {
                counts[predicted] += 1;
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

/// What a checkpoint holds: everything a resumed run needs to continue bit
/// for bit. Tensors are stored under `weight:`, `state:` and `best:`
/// prefixes; counters and the history in the file's metadata.
struct Checkpoint {
    /// The last epoch completed.
    epoch: u64,
    /// Progress into the next epoch, when interrupted within it.
    partial: Option<Partial>,
    weights: TensorStore,
    states: TensorStore,
    step: crate::optimizer::StepState,
    history: Vec<Epoch>,
    best: Option<(f64, TensorStore)>,
    since_best: u64,
}

impl Checkpoint {
    fn save(
        path: &Path,
        (epoch, partial): (u64, Option<Partial>),
        trainer: &Trainer,
        history: &[Epoch],
        best: Option<&(f64, TensorStore)>,
        since_best: u64,
    ) -> Result<(), FitError> {
        let mut store = TensorStore::new();
        for (prefix, tensors) in [("weight:", &trainer.weights), ("state:", &trainer.states)] {
            for (name, t) in tensors.iter() {
                store.insert(format!("{prefix}{name}"), t.clone());
            }
        }
        if let Some((loss, tensors)) = best {
            for (name, t) in tensors.iter() {
                store.insert(format!("best:{name}"), t.clone());
            }
            store
                .metadata
                .insert("best_val_loss".into(), format!("{:e}", loss));
        }
        let meta = &mut store.metadata;
        meta.insert("epoch".into(), epoch.to_string());
        meta.insert("iterations".into(), trainer.step.iterations.to_string());
        // Exact bits, so that Nadam's schedule resumes without drift.
        meta.insert(
            "u_product_bits".into(),
            trainer.step.u_product.to_bits().to_string(),
        );
        meta.insert("since_best".into(), since_best.to_string());
        meta.insert("history".into(), history_csv(history));
        if let Some(p) = partial {
            let t = &p.tally;
            meta.insert("partial_steps".into(), p.steps.to_string());
            meta.insert("partial_loss_bits".into(), t.loss_sum.to_bits().to_string());
            meta.insert("partial_correct".into(), t.correct.to_string());
            meta.insert("partial_seen".into(), t.seen.to_string());
            let top_k: Vec<String> = t.top_k_correct.iter().map(|c| c.to_string()).collect();
            meta.insert("partial_top_k_correct".into(), top_k.join(","));
        }
        weights::save(&store, path)?;
        Ok(())
    }

    fn load(path: &Path, model: &TypedGraph, trainer: &Trainer) -> Result<Checkpoint, FitError> {
        Checkpoint::read(weights::load_file(path)?, path, model, trainer)
    }

    /// The checkpoint that `store`, read from `path`, holds for `model`
    /// trained by `trainer`.
    fn read(
        store: TensorStore,
        path: &Path,
        model: &TypedGraph,
        trainer: &Trainer,
    ) -> Result<Checkpoint, FitError> {
        let fail = |message: String| FitError::Resume {
            path: path.to_path_buf(),
            message,
        };
        let number = |key: &str| -> Result<u64, FitError> {
            store
                .metadata
                .get(key)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| fail(format!("it has no `{key}`: it is not a cnnc checkpoint")))
        };
        // In the order of `like`, so that a resumed run lists its tensors
        // as a fresh one does (files keep them sorted by name).
        let part = |prefix: &str, like: &TensorStore| -> TensorStore {
            let found: TensorStore = store
                .iter()
                .filter_map(|(n, t)| n.strip_prefix(prefix).map(|n| (n.to_string(), t.clone())))
                .collect();
            let mut ordered: TensorStore = like
                .names()
                .filter_map(|n| found.get(n).map(|t| (n.to_string(), t.clone())))
                .collect();
            for (n, t) in found.iter() {
                if ordered.get(n).is_none() {
                    ordered.insert(n.to_string(), t.clone());
                }
            }
            ordered
        };
        let weights = part("weight:", &trainer.weights);
        let problems = weights::mismatches(model, &weights);
        if !problems.is_empty() {
            return Err(fail(format!(
                "its weights do not fit model `{}` ({} problems)",
                model.graph.name,
                problems.len()
            )));
        }
        let states = part("state:", &trainer.states);
        let sorted = |store: &TensorStore| {
            let mut names: Vec<String> = store.names().map(|n| n.to_string()).collect();
            names.sort();
            names
        };
        if sorted(&states) != sorted(&trainer.states) {
            return Err(fail(
                "its optimizer state does not match this run's optimizer".into(),
            ));
        }
        let best_tensors = part("best:", &trainer.weights);
        let best = store
            .metadata
            .get("best_val_loss")
            .and_then(|v| v.parse::<f64>().ok())
            .map(|loss| (loss, best_tensors));
        let history = store
            .metadata
            .get("history")
            .map(|h| parse_history(h).map_err(|m| fail(format!("its history: {m}"))))
            .transpose()?
            .unwrap_or_default();
        let step = crate::optimizer::StepState {
            iterations: number("iterations")?,
            u_product: f64::from_bits(number("u_product_bits")?),
        };
        let partial = match number("partial_steps") {
            Ok(steps) => Some(Partial {
                steps: steps as usize,
                tally: Tally {
                    loss_sum: f64::from_bits(number("partial_loss_bits")?),
                    correct: number("partial_correct")? as usize,
                    top_k_correct: store
                        .metadata
                        .get("partial_top_k_correct")
                        .map(|list| list.split(',').filter_map(|c| c.parse().ok()).collect())
                        .unwrap_or_default(),
                    seen: number("partial_seen")? as usize,
                    confusion: Vec::new(),
                },
            }),
            Err(_) => None,
        };
        Ok(Checkpoint {
            epoch: number("epoch")?,
            partial,
            weights,
            states,
            step,
            history,
            best,
            since_best: number("since_best")?,
        })
    }
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

fn gather(data: &Dataset, indices: &[usize]) -> (Vec<f32>, Vec<u32>) {
    let mut images = Vec::with_capacity(indices.len() * data.image_len());
    let mut labels = Vec::with_capacity(indices.len());
    for &i in indices {
        images.extend_from_slice(data.image(i));
        labels.push(data.labels[i]);
    }
    (images, labels)
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

/// The index of the largest score (the first, on ties).
pub fn arg_max(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(0, |b, (j, &v)| if v > row[b] { j } else { b })
}

/// How many scores are larger than the label's: 0 when the label has the
/// top score; the label is among the top k when this is below k.
fn rank_of(row: &[f32], label: usize) -> usize {
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
}

impl Evaluation {
    /// Each class's accuracy (the diagonal over the row sums).
    pub fn per_class(&self) -> Vec<f64> {
        self.confusion
            .iter()
            .enumerate()
            .map(|(c, row)| row[c] as f64 / row.iter().sum::<u64>().max(1) as f64)
            .collect()
    }
}

/// Loss, accuracy, the top-k accuracy for each of `top_ks` and the
/// confusion matrix of `model` with `weights` on `data`.
///
/// The confusion matrix is square, one row and one column per score of the
/// first output: that is the data set's classes, plus any scores beyond
/// them (which no label names, so their rows are zero). Fails with
/// [`FitError::Label`] or [`FitError::Images`] when `data` does not hold
/// what its type promises, and [`FitError::Classes`] when an output has
/// fewer scores than `data` has classes.
pub fn evaluate_in_detail(
    model: &TypedGraph,
    weights: &TensorStore,
    data: &Dataset,
    (top_ks, threads): (&[u64], usize),
) -> Result<Evaluation, FitError> {
    check_data(data, "evaluated")?;
    let (first_output, classes) = check_classes(model, data)?;
    let mut loss = 0.0;
    let mut tally = Tally::with_confusion(top_ks.len(), classes);
    let examples =
        |start: usize, size: usize| gather(data, &(start..start + size).collect::<Vec<_>>()).0;
    run_in_batches::<FitError>(
        model,
        weights,
        Batches {
            count: data.len(),
            batch: EVALUATION_BATCH,
            threads,
        },
        examples,
        |start, outputs| {
            let rows = EVALUATION_BATCH.min(data.len() - start);
            // The program returns every output, `rows` examples of each.
            let scores = &output_values(&outputs, &first_output)[..rows * classes];
            let labels = &data.labels[start..start + rows];
            tally.count(scores, labels, top_ks);
            for (row, &label) in scores.chunks_exact(classes).zip(labels) {
                let p = f64::from(row[label as usize]).clamp(1e-7, 1.0 - 1e-7);
                loss -= p.ln();
            }
        },
    )?;
    let n = data.len().max(1) as f64;
    Ok(Evaluation {
        loss: loss / n,
        accuracy: tally.correct as f64 / n,
        top_k: top_ks
            .iter()
            .zip(&tally.top_k_correct)
            .map(|(&k, &c)| (k, c as f64 / n))
            .collect(),
        confusion: tally.confusion,
    })
}

/// The name and number of scores of the model's first output, after
/// checking that every output has at least as many scores as `data` has
/// classes (labels are checked against the classes by [`check_data`]).
fn check_classes(model: &TypedGraph, data: &Dataset) -> Result<(String, usize), FitError> {
    let classes = data.class_names.len();
    let outputs: Vec<(String, usize)> = model
        .outputs()
        .into_iter()
        .map(|(name, shape)| (name, shape.iter().product::<u64>() as usize))
        .collect();
    if let Some((output, scores)) = outputs.iter().find(|(_, scores)| *scores < classes) {
        return Err(FitError::Classes {
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
        Some((index, &label)) => Err(FitError::Label {
            set,
            index,
            label,
            classes,
        }),
        None => Ok(()),
    }
}

fn history_csv(history: &[Epoch]) -> String {
    let mut text = String::from("epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds");
    for (k, _, _) in history.first().map_or(&[][..], |e| &e.top_k[..]) {
        text += &format!(",top{k}_accuracy,val_top{k}_accuracy");
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
        text.push('\n');
    }
    text
}

/// The epochs of a history as [`history_csv`] writes it (`{model}.history.csv`):
/// a header naming the columns, then one row per epoch. The columns
/// `epoch`, `loss`, `accuracy`, `val_loss` and `val_accuracy` are needed,
/// in any order; `lr` and `seconds` are read when present (0 otherwise),
/// and so is every pair `topK_accuracy`, `val_topK_accuracy`. Fails with a
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
        })
    }
}

fn write_history(path: &Path, history: &[Epoch]) -> Result<(), FitError> {
    std::fs::write(path, history_csv(history)).map_err(|e| FitError::History {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
