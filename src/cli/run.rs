//! `cnnc run`: trains a model with its file's train section (`--train`),
//! or classifies image files with the weights training wrote.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use cnnc::config::TrainConfig;
use cnnc::train::checkpoint::CheckpointEvery;
use cnnc::train::fit::{self, FitOptions, Progress};
use cnnc::{Diagnostics, TypedGraph};

use super::overrides::{OptimizerArg, PrecisionArg, TrainOverrides};
use super::progress::ProgressPrinter;
use super::ranks::Ranks;
use super::shared::{
    classify, failure, initializers, load, load_splits, threads_or_cores, ClassifyArgs, DataArgs,
};

/// Train a model (`--train fashion` or `--train DIR`) with its file's train section, or run it on images.
#[derive(clap::Args)]
pub struct Args {
    /// The .cnn file.
    file: PathBuf,
    /// The model, when the file defines several.
    #[arg(long)]
    model: Option<String>,
    /// The data set to train on: `fashion` (Fashion-MNIST), `shapes` (generated segmentation masks), or a folder of PNG/JPEG images
    /// with one sub-folder per class, or of `images/` and their `masks/`. Without it, the model runs forward on INPUTS.
    #[arg(long)]
    train: Option<String>,
    /// A folder holding Fashion-MNIST's files (otherwise $CNNC_DATA, the system's, or the bundled subset).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Resize images and convert their colours to fit the model's input (image folders and INPUTS).
    #[arg(long)]
    resize: bool,
    /// Epochs (overrides the train section).
    #[arg(long)]
    epochs: Option<u64>,
    /// Batch size (overrides the train section).
    #[arg(long)]
    batch: Option<u64>,
    /// Learning rate (overrides the train section).
    #[arg(long)]
    lr: Option<f64>,
    /// Optimizer (overrides the train section's, keeping its learning rate).
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerArg>,
    /// Random seed (overrides the train section).
    #[arg(long)]
    seed: Option<u64>,
    /// Arithmetic of the convolutions and dense layers: bf16 multiplies in bfloat16 and sums in f32, on AMX-BF16 or AVX512-BF16 (overrides the train section).
    #[arg(long, value_enum)]
    precision: Option<PrecisionArg>,
    /// Folder for the weights, the checkpoint and the history (one run of a model at a time).
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Worker threads (default: the machine's cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Continue from the checkpoint in the output folder, bit for bit.
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Start afresh even though the output folder holds an earlier run, replacing its weights.
    #[arg(long)]
    overwrite: bool,
    /// How often to save a checkpoint within an epoch, besides the one at its end:
    /// `500steps`, `90s`, `5m`, `1h`, or `epoch` for only at its end.
    #[arg(long, default_value_t = CheckpointEvery::DEFAULT, value_name = "INTERVAL")]
    checkpoint_every: CheckpointEvery,
    /// With --train: start from these weights instead of the initializers (fine-tuning,
    /// transfer learning): every weight the file holds under the model's name for it; the
    /// others keep their initializers. A weight of another shape is an error: rename the
    /// layer that changed (`dense(10) as head`) to start it afresh.
    #[arg(
        long,
        value_name = "WEIGHTS",
        requires = "train",
        conflicts_with = "resume"
    )]
    init_weights: Option<PathBuf>,
    /// Without --train: the weights to run with (default: OUT/MODEL.safetensors, the file
    /// training writes, when it exists; otherwise the model's initializers).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Without --train: how many classes to show per image.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Without --train: image files (PNG, JPEG) to classify.
    inputs: Vec<PathBuf>,
}

impl Args {
    /// The flags that replace the train section's values.
    fn overrides(&self) -> TrainOverrides {
        TrainOverrides {
            epochs: self.epochs,
            batch: self.batch,
            lr: self.lr,
            optimizer: self.optimizer,
            seed: self.seed,
            precision: self.precision,
        }
    }
}

/// Trains on `--train`'s data set with the train section as the flags
/// override it, or else classifies INPUTS.
pub fn run(args: &Args) -> Result<String, Diagnostics> {
    let model = load(&args.file, args.model.as_deref())?;
    let section = model.graph.train.clone().unwrap_or_default();
    let config = args.overrides().apply(section);
    let result = match &args.train {
        Some(data_set) => return train(&model, &config, data_set, args),
        None if args.inputs.is_empty() => {
            Err("give --train DATA to train the model, or image files to run it on".into())
        }
        None => classify_inputs(&model, args),
    };
    result.map_err(|e| failure(&args.file, e))
}

/// Trains alone, or as one rank of the MPI job that started this process;
/// a rank that fails ends the whole job, once it has said why.
fn train(
    model: &TypedGraph,
    config: &TrainConfig,
    data_set: &str,
    args: &Args,
) -> Result<String, Diagnostics> {
    let ranks = Ranks::join().map_err(|e| failure(&args.file, e))?;
    match ranks.or_end_job(train_as(model, config, (data_set, args), &ranks))? {
        Ended::Trained(text) => Ok(text),
        Ended::Stopped(diagnostics) => {
            ranks.stopped(&diagnostics);
            Err(diagnostics)
        }
    }
}

/// How training ended, when no rank failed alone.
enum Ended {
    /// What to print (nothing on a rank other than 0).
    Trained(String),
    /// Every rank stopped at the same step (Ctrl-C), for this reason.
    Stopped(Diagnostics),
}

/// Loads the data, trains, reports, and saves the weights and the
/// learning curves into `--out`: the output is rank 0's alone.
fn train_as(
    model: &TypedGraph,
    config: &TrainConfig,
    (data_set, args): (&str, &Args),
    ranks: &Ranks,
) -> Result<Ended, Diagnostics> {
    let fail = |message: String| failure(&args.file, message);
    let data = DataArgs {
        name: data_set,
        fashion_dir: args.data.as_deref(),
        resize: args.resize,
    };
    let splits = load_splits(model, data, config.validation, config.seed).map_err(fail)?;
    let initial = cnnc::runtime::weights::init(model, config.seed);
    let (initial, started_from) = match &args.init_weights {
        Some(path) => {
            let (store, report) = cnnc::runtime::weights::load_initial(model, path, initial)
                .map_err(|e| fail(with_rename_hint(&e)))?;
            if ranks.leads() {
                eprintln!("{}", initial_report(path, &report));
            }
            (store, Some(report))
        }
        None => (initial, None),
    };
    let out = &args.out;
    std::fs::create_dir_all(out)
        .map_err(|e| fail(format!("cannot create `{}`: {e}", out.display())))?;
    let printer = ProgressPrinter::new(config);
    report_write_errors_instead_of_dying();
    let options = FitOptions {
        world: ranks.world(),
        threads: threads_or_cores(args.threads),
        out: out.clone(),
        resume: args.resume,
        overwrite: args.overwrite,
        stop: stop_on_ctrl_c(),
        checkpoint_every: args.checkpoint_every,
        progress: &mut |progress: Progress| {
            if let Progress::Testing(_) = progress {
                SAVED.store(true, Ordering::SeqCst);
            }
            if ranks.leads() {
                printer.report(progress)
            }
        },
    };
    let sets = (&splits.train, &splits.validation, &splits.test);
    let fitted = match fit::fit_from(model, config, sets, options, initial) {
        Ok(fitted) => fitted,
        // Every rank stopped at the same step, and rank 0 says so.
        Err(
            e @ (fit::FitError::Interrupted { .. } | fit::FitError::InterruptedAfterEpoch { .. }),
        ) => return Ok(Ended::Stopped(failure(&args.file, e))),
        Err(e) => return Err(failure(&args.file, e)),
    };
    if !ranks.leads() {
        return Ok(Ended::Trained(String::new()));
    }
    let name = &model.graph.name;
    let weights = out.join(format!("{name}.safetensors"));
    let curves = draw_curves(
        &fitted.history,
        &out.join(format!("{name}.learning_curves.png")),
    );
    let started_from = match (&args.init_weights, started_from) {
        (Some(path), Some(report)) => format!(
            "started from: {} ({} of the model's {} weights)\n",
            path.display(),
            report.loaded.len(),
            report.loaded.len() + report.kept.len()
        ),
        _ => String::new(),
    };
    Ok(Ended::Trained(format!(
        "{started_from}test: loss {:.4} accuracy {:.4}{} ({} images)\nweights: {}\nhistory: {}\n{curves}",
        fitted.test.0,
        fitted.test.1,
        fitted
            .test_mean_iou
            .map(|m| format!(" mean IoU {m:.4}"))
            .unwrap_or_default(),
        splits.test.len(),
        weights.display(),
        out.join(format!("{name}.history.csv")).display()
    )))
}

/// The error of `--init-weights`, with how to start a changed layer
/// afresh where a weight's shape differs.
fn with_rename_hint(error: &cnnc::runtime::weights::WeightsError) -> String {
    use cnnc::runtime::weights::{Problem, WeightsError};
    match error {
        WeightsError::Mismatch { problems, .. }
            if problems
                .iter()
                .any(|p| matches!(p, Problem::WrongShape { .. })) =>
        {
            format!(
                "{error}\nhelp: a layer that changed starts afresh under another name: \
                 `dense(3, activation: softmax) as head` keeps its initializers"
            )
        }
        _ => error.to_string(),
    }
}

/// What `--init-weights` took from `path`: how many weights, and by name
/// (the first few) those that kept their initializers and the file's
/// tensors the model does not use.
fn initial_report(path: &Path, report: &cnnc::runtime::weights::Initial) -> String {
    let names = |list: &[String]| {
        let shown: Vec<String> = list.iter().take(6).map(|n| format!("`{n}`")).collect();
        let more = list.len().saturating_sub(shown.len());
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        format!("{}{more}", shown.join(", "))
    };
    let mut text = format!(
        "starting from `{}`: {} weights loaded",
        path.display(),
        report.loaded.len()
    );
    if !report.kept.is_empty() {
        text += &format!(
            "; {} keep their initializers (not in the file): {}",
            report.kept.len(),
            names(&report.kept)
        );
    }
    if !report.unused.is_empty() {
        text += &format!(
            "; {} of the file's tensors are not the model's and are left out: {}",
            report.unused.len(),
            names(&report.unused)
        );
    }
    text
}

/// Set by a first Ctrl-C: training stops at its next step (or after the
/// epoch's checkpoint, during validation) and saves a checkpoint.
static STOP: AtomicBool = AtomicBool::new(false);

/// Set once training has saved everything (it reported
/// [`Progress::Testing`]): a Ctrl-C then quits at once, losing nothing.
static SAVED: AtomicBool = AtomicBool::new(false);

/// Installs the handler of Ctrl-C, and of SIGTERM and SIGHUP (what a job
/// scheduler, or mpirun on Ctrl-C, sends before it kills), and returns the
/// flag it sets, [`STOP`]; `None` when the handler cannot be installed. A second Ctrl-C, or the
/// first once everything is saved, ends the process with status 130 at
/// once, except in the middle of writing a file: that write is renamed
/// into place first ([`exit_between_writes`](cnnc::runtime::weights::exit_between_writes)),
/// so that no checkpoint is torn and no temporary file is left behind.
fn stop_on_ctrl_c() -> Option<&'static AtomicBool> {
    let handler = ctrlc::set_handler(|| {
        if SAVED.load(Ordering::SeqCst) {
            eprintln!("\nquitting: everything is saved (--resume evaluates the test set again)");
            cnnc::runtime::weights::exit_between_writes(130);
        }
        if STOP.swap(true, Ordering::SeqCst) {
            eprintln!("\nquitting (once the file being written, if any, is complete)");
            cnnc::runtime::weights::exit_between_writes(130);
        }
        // Under mpirun, Ctrl-C reaches the ranks as mpirun's SIGTERM, and
        // rank 0 speaks for all.
        if super::ranks::launched().is_none_or(|(rank, _)| rank == 0) {
            eprintln!("\nstopping after this step (Ctrl-C again to quit at once)");
        }
    });
    handler.is_ok().then_some(&STOP)
}

/// Makes a write beyond the file-size limit (`ulimit -f`) fail with an
/// error (EFBIG) that training reports, naming the file, instead of killing
/// the process with SIGXFSZ, silently and with the temporary file left
/// behind.
fn report_write_errors_instead_of_dying() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to "ignore" installs no
    // handler code, and no other thread changes SIGXFSZ's disposition.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Draws the learning curves into `path`: the line naming it, or nothing.
/// Everything is saved by then, so a picture that cannot be drawn is worth
/// a warning, not a failed run.
fn draw_curves(history: &[fit::Epoch], path: &Path) -> String {
    match cnnc::viz::curves::render(history, path) {
        Ok(()) => format!("learning curves: {}\n", path.display()),
        Err(e) => {
            eprintln!("warning: {e}");
            String::new()
        }
    }
}

/// Classifies INPUTS with `--weights`, or those training wrote to `--out`,
/// or the model's initializers.
fn classify_inputs(model: &TypedGraph, args: &Args) -> Result<String, String> {
    use cnnc::runtime::weights;
    let trained = args.out.join(format!("{}.safetensors", model.graph.name));
    let store = match &args.weights {
        Some(path) => weights::load_for(model, path),
        None if trained.is_file() => {
            eprintln!("using the weights in `{}`", trained.display());
            weights::load_for(model, &trained)
        }
        None => {
            eprintln!(
                "no weights given and no `{}`: running with the model's initializers",
                trained.display()
            );
            Ok(initializers(model))
        }
    }
    .map_err(|e| e.to_string())?;
    let options = ClassifyArgs {
        resize: args.resize,
        top: args.top,
        threads: threads_or_cores(args.threads),
        // The flag, else the train section's.
        precision: args
            .overrides()
            .apply(model.graph.train.clone().unwrap_or_default())
            .precision,
    };
    classify(model, store, &args.inputs, options)
}
