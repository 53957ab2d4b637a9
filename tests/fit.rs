//! Training end to end on real data: a small CNN learns Fashion-MNIST from
//! the bundled subset (the 10,000 test images, split 8,000 / 2,000) in CI
//! time, and `cnnc run` reports what it did.

use std::process::Command;

use cnnc::config::{Augment, EarlyStopping, Metric, TrainConfig};
use cnnc::data::fashion::{self, Source};
use cnnc::train::checkpoint::CheckpointEvery;
use cnnc::train::fit::{self, FitOptions, Progress};

#[test]
fn a_small_cnn_learns_the_bundled_fashion_subset() {
    let source = "
        model small : [28, 28, 1] {
            conv(8, 3, padding: same, activation: relu)
            maxpool(2)
            conv(16, 3, padding: same, activation: relu)
            maxpool(2)
            flatten
            dense(10, activation: softmax)
        }";
    let model =
        cnnc::compile_source("small.cnn", source, None, None).unwrap_or_else(|d| panic!("{d}"));
    let splits = fashion::load_from(Source::Bundled, 12_000, 1).expect("bundled subset");
    let config = TrainConfig {
        batch: 64,
        epochs: 2,
        ..TrainConfig::default()
    };
    let out = std::env::temp_dir().join(format!("cnnc-fit-{}", std::process::id()));
    std::fs::create_dir_all(&out).expect("temp dir");
    let mut epochs = 0;
    let mut progress = |p: Progress| {
        if let Progress::Epoch(_) = p {
            epochs += 1;
        }
    };
    let options = FitOptions {
        world: None,
        threads: 2,
        out: out.clone(),
        resume: false,
        overwrite: false,
        stop: None,
        checkpoint_every: CheckpointEvery::Epoch,
        progress: &mut progress,
    };
    let fitted = fit::fit(
        &model,
        &config,
        (&splits.train, &splits.validation, &splits.test),
        options,
    )
    .expect("trains");
    assert_eq!(epochs, 2);
    assert!(
        fitted.history[1].loss < fitted.history[0].loss,
        "{:?}",
        fitted.history
    );
    let (_, accuracy) = fitted.test;
    assert!(
        accuracy > 0.65,
        "test accuracy {accuracy} after two epochs (chance is 0.1)"
    );
    // The checkpoint and the history are on disk.
    assert!(out.join("small.safetensors").is_file());
    let history = std::fs::read_to_string(out.join("small.history.csv")).expect("history");
    assert_eq!(history.lines().count(), 3, "{history}");
}

#[test]
fn run_rejects_unknown_data_and_missing_files() {
    let cnnc = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cnnc"))
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .expect("runs")
    };
    let out = cnnc(&["run", "examples/fashion_cnn.cnn", "--train", "mnist"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown data set `mnist`"));
    let out = cnnc(&[
        "run",
        "examples/fashion_cnn.cnn",
        "--train",
        "fashion",
        "--data",
        "/no/such/folder",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/no/such/folder"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn resuming_from_a_checkpoint_continues_bit_for_bit() {
    // Dropout, batchnorm and Nadam: every kind of state a run carries.
    let TinyRun {
        model,
        train,
        validation,
        test,
    } = TinyRun::new();
    let run = |epochs: u64, out: &std::path::Path, resume: bool| {
        let config = TrainConfig {
            epochs,
            ..resumable()
        };
        let mut progress = |_: Progress| {};
        let options = FitOptions {
            world: None,
            threads: 2,
            out: out.to_path_buf(),
            resume,
            overwrite: false,
            stop: None,
            checkpoint_every: CheckpointEvery::Epoch,
            progress: &mut progress,
        };
        fit::fit(&model, &config, (&train, &validation, &test), options).expect("trains")
    };
    let base = std::env::temp_dir().join(format!("cnnc-resume-{}", std::process::id()));
    // An earlier run with this process id may have left its folders and
    // their run locks, which name this id: start afresh.
    let _ = std::fs::remove_dir_all(&base);
    let (straight, stopped) = (base.join("straight"), base.join("stopped"));
    std::fs::create_dir_all(&straight).expect("dir");
    std::fs::create_dir_all(&stopped).expect("dir");
    let whole = run(3, &straight, false);
    run(1, &stopped, false);
    // Interrupt the resumed run in the middle of its second epoch, as Ctrl-C
    // does, then resume again.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let interrupted = {
        let config = TrainConfig {
            epochs: 3,
            ..resumable()
        };
        let mut progress = |p: Progress| {
            if let Progress::Step(2, 7, ..) = p {
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        };
        let options = FitOptions {
            world: None,
            threads: 2,
            out: stopped.clone(),
            resume: true,
            overwrite: false,
            stop: Some(&stop),
            checkpoint_every: CheckpointEvery::Epoch,
            progress: &mut progress,
        };
        fit::fit(&model, &config, (&train, &validation, &test), options)
    };
    let message = interrupted.expect_err("interrupted").to_string();
    assert!(
        message.contains("interrupted in epoch 2 after step 7") && message.contains("--resume"),
        "{message}"
    );
    let resumed = run(3, &stopped, true);
    assert_eq!(
        resumed.history.len(),
        3,
        "the resumed run keeps the first epoch's history"
    );
    assert_eq!(whole.weights.len(), resumed.weights.len());
    for (name, a) in whole.weights.iter() {
        let b = resumed
            .weights
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing after resuming"));
        assert_eq!(a.data, b.data, "{name} differs after resuming");
    }
    assert_eq!(whole.test, resumed.test);
    let figures = |h: &[fit::Epoch]| -> Vec<_> {
        h.iter()
            .map(|e| (e.loss, e.accuracy, e.val_loss, e.top_k.clone()))
            .collect()
    };
    assert_eq!(figures(&whole.history), figures(&resumed.history));
    assert_eq!(whole.history[2].top_k.len(), 1);
}

/// A configuration with every kind of randomness and every running sum a
/// resumed run must restore: augmentation and a top-k metric.
fn resumable() -> TrainConfig {
    TrainConfig {
        batch: 32,
        metrics: vec![Metric::Accuracy, Metric::TopK(3)],
        augment: Some(Augment {
            shift: 2,
            flip: true,
            rotation: 10.0,
            brightness: 0.1,
            contrast: 0.1,
            erase: 0.5,
        }),
        ..TrainConfig::default()
    }
}

#[test]
fn eval_reports_per_class_accuracy_and_the_confusion_matrix() {
    let model =
        cnnc::load_model(std::path::Path::new("examples/lenet5.cnn"), None).expect("lenet5");
    let dir = std::env::temp_dir().join(format!("cnnc-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let weights = dir.join("lenet5.safetensors");
    cnnc::runtime::weights::save(&cnnc::runtime::weights::init(&model, 1), &weights)
        .expect("saved");
    let out = Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args([
            "eval",
            "examples/lenet5.cnn",
            "--weights",
            weights.to_str().expect("utf-8"),
        ])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.starts_with("test: loss"), "{report}");
    for name in fashion::CLASS_NAMES {
        assert_eq!(
            report.matches(name).count(),
            2,
            "{name} should head a per-class row and a confusion row:\n{report}"
        );
    }
    // The confusion matrix's counts add up to the test images.
    let images: u64 = report
        .split("images)")
        .next()
        .and_then(|l| l.rsplit('(').next())
        .and_then(|n| n.trim().parse().ok())
        .expect("count");
    let counted: u64 = report
        .lines()
        .skip_while(|l| !l.starts_with("confusion"))
        .skip(1)
        .flat_map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum();
    assert_eq!(counted, images);
    // Its diagonal holds the correct predictions.
    let splits = fashion::load_from(Source::Bundled, 0, 0).expect("bundled subset");
    let store = cnnc::runtime::weights::init(&model, 1);
    let evaluation =
        fit::evaluate_in_detail(&model, &store, &splits.test, (&[], 2)).expect("evaluates");
    let diagonal: u64 = (0..10).map(|c| evaluation.confusion[c][c]).sum();
    assert_eq!(
        diagonal as f64 / splits.test.len() as f64,
        evaluation.accuracy
    );
    assert!(evaluation.accuracy > 0.0 && evaluation.accuracy < 1.0);
}

/// A hand-built set of `labels.len()` 2×2×3 images in `classes` classes.
fn tiny_set(labels: &[u32], classes: usize) -> fashion::Dataset {
    fashion::Dataset {
        images: (0..labels.len() * 12)
            .map(|i| (i * 37 % 101) as f32 / 100.0)
            .collect(),
        labels: labels.to_vec(),
        shape: [2, 2, 3],
        label_shape: Vec::new(),
        class_names: (0..classes).map(|c| format!("c{c}")).collect(),
    }
}

/// Fits `source`'s model for one epoch of batches of 4 on `train` (also
/// its validation and test set), into a fresh folder; returns the result
/// and whether anything was written there.
fn fit_tiny(
    source: &str,
    train: &fashion::Dataset,
    name: &str,
) -> (Result<fit::Fitted, fit::FitError>, bool) {
    let model =
        cnnc::compile_source("tiny.cnn", source, None, None).unwrap_or_else(|d| panic!("{d}"));
    let out = std::env::temp_dir().join(format!("cnnc-fit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).expect("dir");
    let config = TrainConfig {
        batch: 4,
        epochs: 1,
        ..TrainConfig::default()
    };
    let mut progress = |_: Progress| {};
    let options = FitOptions {
        world: None,
        threads: 1,
        out: out.clone(),
        resume: false,
        overwrite: false,
        stop: None,
        checkpoint_every: CheckpointEvery::Epoch,
        progress: &mut progress,
    };
    let result = fit::fit(&model, &config, (train, train, train), options);
    let written = std::fs::read_dir(&out).expect("dir").next().is_some();
    std::fs::remove_dir_all(&out).expect("removed");
    (result, written)
}

#[test]
fn a_second_output_with_fewer_scores_than_classes_is_refused_before_training() {
    // Keras: "Received a label value of 3 which is outside the valid range
    // of [0, 2)" (tests/tf/labels.py); cnnc refuses before the first step.
    let source = "
        model two : [2, 2, 3] {
            flatten
            output main = dense(4, activation: softmax)
            output aux = dense(2, activation: softmax)
        }";
    let train = tiny_set(&[0, 1, 2, 3, 3, 2, 1, 0], 4);
    let (result, written) = fit_tiny(source, &train, "second-output");
    let error = result.expect_err("refused");
    assert!(
        matches!(
            &error,
            fit::FitError::Classes { output, scores: 2, classes: 4, per_pixel: false } if output == "aux"
        ),
        "{error:?}"
    );
    assert!(!written, "training wrote files before refusing");
    insta::assert_snapshot!("second_output_too_small", error.to_string());
}

#[test]
fn an_output_with_more_scores_than_classes_trains_as_in_keras() {
    // Keras trains a 5-score output on labels 0..3 (tests/tf/labels.py).
    // The confusion matrix then has a row and a column per score: the
    // fifth row is empty, as no label names it.
    let source = "
        model wide : [2, 2, 3] {
            flatten
            dense(5, activation: softmax)
        }";
    let train = tiny_set(&[0, 1, 2, 3, 3, 2, 1, 0], 4);
    let (result, _) = fit_tiny(source, &train, "more-scores");
    let fitted = result.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fitted.history.len(), 1);
    let model =
        cnnc::compile_source("tiny.cnn", source, None, None).unwrap_or_else(|d| panic!("{d}"));
    let evaluation =
        fit::evaluate_in_detail(&model, &fitted.weights, &train, (&[], 1)).expect("evaluates");
    assert_eq!(evaluation.confusion.len(), 5);
    assert!(evaluation.confusion.iter().all(|row| row.len() == 5));
    assert_eq!(evaluation.confusion[4], [0; 5]);
    let counted: u64 = evaluation.confusion.iter().flatten().sum();
    assert_eq!(counted, 8);
}

#[test]
fn a_hand_built_set_with_a_label_beyond_its_classes_is_an_error() {
    let source = "
        model m : [2, 2, 3] {
            flatten
            dense(3, activation: softmax)
        }";
    let model =
        cnnc::compile_source("tiny.cnn", source, None, None).unwrap_or_else(|d| panic!("{d}"));
    let store = cnnc::runtime::weights::init(&model, 1);
    let bad = tiny_set(&[0, 1, 2, 7, 1], 3);
    let error = fit::evaluate_in_detail(&model, &store, &bad, (&[2], 1)).unwrap_err();
    assert!(
        matches!(
            error,
            fit::FitError::Label {
                set: "evaluated",
                index: 3,
                label: 7,
                classes: 3
            }
        ),
        "{error:?}"
    );
    insta::assert_snapshot!("evaluated_label_out_of_range", error.to_string());
    let (result, written) = fit_tiny(source, &bad, "label-beyond");
    let error = result.expect_err("refused");
    assert!(
        matches!(
            error,
            fit::FitError::Label {
                set: "training",
                index: 3,
                label: 7,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!written);
    // Pixels that are not one image per label.
    let mut short = tiny_set(&[0, 1, 2], 3);
    short.images.pop();
    let error = fit::evaluate_in_detail(&model, &store, &short, (&[], 1)).unwrap_err();
    assert!(
        matches!(
            error,
            fit::FitError::Images {
                values: 35,
                images: 3,
                expected: 36,
                ..
            }
        ),
        "{error:?}"
    );
    insta::assert_snapshot!("evaluated_images_short", error.to_string());
}

/// The tiny model of the checkpoint tests (dropout and batchnorm: with
/// Nadam, every kind of state a run carries) and small parts of the bundled
/// subset (640 training images: 20 steps of 32 an epoch).
struct TinyRun {
    model: cnnc::TypedGraph,
    train: fashion::Dataset,
    validation: fashion::Dataset,
    test: fashion::Dataset,
}

impl TinyRun {
    fn new() -> TinyRun {
        let source = "
            model tiny : [28, 28, 1] {
                conv(4, 3, stride: 2, padding: same) -> batchnorm -> relu
                maxpool(2)
                flatten
                dropout(0.3)
                dense(10, activation: softmax)
            }";
        let model =
            cnnc::compile_source("tiny.cnn", source, None, None).unwrap_or_else(|d| panic!("{d}"));
        let splits = fashion::load_from(Source::Bundled, 12_000, 3).expect("bundled subset");
        let part = |d: &fashion::Dataset, n: usize| fashion::Dataset {
            images: d.images[..n * d.image_len()].to_vec(),
            labels: d.labels[..n].to_vec(),
            shape: d.shape,
            label_shape: Vec::new(),
            class_names: d.class_names.clone(),
        };
        TinyRun {
            model,
            train: part(&splits.train, 640),
            validation: part(&splits.validation, 128),
            test: part(&splits.test, 128),
        }
    }

    /// Fits `config` into `out` (created afresh unless resuming), calling
    /// `progress` as it goes.
    fn fit(
        &self,
        config: &TrainConfig,
        out: &std::path::Path,
        (resume, checkpoint_every): (bool, CheckpointEvery),
        progress: &mut dyn FnMut(Progress),
    ) -> Result<fit::Fitted, fit::FitError> {
        if !resume {
            let _ = std::fs::remove_dir_all(out);
            std::fs::create_dir_all(out).expect("dir");
        }
        let options = FitOptions {
            world: None,
            threads: 2,
            out: out.to_path_buf(),
            resume,
            overwrite: false,
            stop: None,
            checkpoint_every,
            progress,
        };
        let sets = (&self.train, &self.validation, &self.test);
        fit::fit(&self.model, config, sets, options)
    }
}

/// A folder of its own under the system's temporary folder, for test `name`.
fn scratch(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("cnnc-fit-{name}-{}", std::process::id()))
}

/// Asserts that two runs ended with the same weights, bit for bit, and the
/// same figures.
fn assert_same_run(a: &fit::Fitted, b: &fit::Fitted) {
    assert_eq!(a.weights.len(), b.weights.len());
    for (name, t) in a.weights.iter() {
        let other = b
            .weights
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing"));
        let bits = |data: &[f32]| data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&t.data), bits(&other.data), "{name} differs");
    }
    assert_eq!(a.test, b.test);
    let figures = |h: &[fit::Epoch]| -> Vec<_> {
        h.iter()
            .map(|e| {
                (
                    e.epoch,
                    e.loss,
                    e.accuracy,
                    e.val_loss,
                    e.lr,
                    e.top_k.clone(),
                )
            })
            .collect()
    };
    assert_eq!(figures(&a.history), figures(&b.history));
}

#[test]
fn a_checkpoint_saved_within_an_epoch_resumes_bit_for_bit() {
    let tiny = TinyRun::new();
    let config = TrainConfig {
        epochs: 2,
        ..resumable()
    };
    let (straight, running, copy) = (
        scratch("within-straight"),
        scratch("within-running"),
        scratch("within-copy"),
    );
    let whole = tiny
        .fit(
            &config,
            &straight,
            (false, CheckpointEvery::Epoch),
            &mut |_| {},
        )
        .expect("trains");
    // Every 5 steps: at step 7 of epoch 2, the checkpoint on disk is the one
    // saved after step 5. Copy it away, as a kill at that moment would
    // leave it, and resume from the copy.
    std::fs::create_dir_all(&copy).expect("dir");
    let checkpoint = |dir: &std::path::Path| dir.join("tiny.checkpoint.safetensors");
    let mut copied = false;
    let mut progress = |p: Progress| {
        if let Progress::Step(2, 7, ..) = p {
            std::fs::copy(checkpoint(&running), checkpoint(&copy)).expect("copied");
            copied = true;
        }
    };
    let every_5 = (false, CheckpointEvery::Steps(5));
    tiny.fit(&config, &running, every_5, &mut progress)
        .expect("trains");
    assert!(copied);
    let saved = cnnc::runtime::weights::load_file(&checkpoint(&copy)).expect("loads");
    let meta = |key: &str| saved.metadata.get(key).map(String::as_str);
    assert_eq!(
        (meta("epoch"), meta("partial_steps")),
        (Some("1"), Some("5"))
    );
    let resumed = tiny
        .fit(&config, &copy, (true, CheckpointEvery::Epoch), &mut |_| {})
        .expect("resumes");
    assert_same_run(&whole, &resumed);
}

#[test]
fn resuming_without_a_checkpoint_says_there_is_none_yet() {
    let tiny = TinyRun::new();
    let config = TrainConfig {
        epochs: 1,
        ..resumable()
    };
    let out = scratch("no-checkpoint");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).expect("dir");
    let resume = (true, CheckpointEvery::Epoch);
    let error = tiny.fit(&config, &out, resume, &mut |_| {}).unwrap_err();
    let expected = out.join("tiny.checkpoint.safetensors");
    assert!(
        matches!(&error, fit::FitError::NoCheckpoint { path, weights: None } if *path == expected),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .starts_with("no checkpoint yet: start without --resume"),
        "{error}"
    );
    // A weights file alone has no optimizer state to continue from.
    let weights = out.join("tiny.safetensors");
    cnnc::runtime::weights::save(&cnnc::runtime::weights::init(&tiny.model, 1), &weights)
        .expect("saved");
    let error = tiny.fit(&config, &out, resume, &mut |_| {}).unwrap_err();
    assert!(
        matches!(&error, fit::FitError::NoCheckpoint { weights: Some(w), .. } if *w == weights),
        "{error:?}"
    );
    assert!(error.to_string().contains("--overwrite"), "{error}");
}

#[test]
fn resuming_after_freezing_other_layers_says_what_changed() {
    // A run's checkpoint holds optimizer state for each trainable weight;
    // the same model with its convolution frozen has other trainable
    // weights, so it cannot continue that run.
    let tiny = TinyRun::new();
    let config = TrainConfig {
        epochs: 1,
        ..resumable()
    };
    let out = scratch("freeze-resume");
    tiny.fit(&config, &out, (false, CheckpointEvery::Epoch), &mut |_| {})
        .expect("trains");
    let source = "
        model tiny : [28, 28, 1] {
            conv(4, 3, stride: 2, padding: same) -> batchnorm -> relu
            maxpool(2)
            flatten
            dropout(0.3)
            dense(10, activation: softmax)
        }
        train { freeze: [\"conv1\"] }";
    let frozen = TinyRun {
        model: cnnc::compile_source("tiny.cnn", source, None, None)
            .unwrap_or_else(|d| panic!("{d}")),
        ..tiny
    };
    let config = TrainConfig {
        epochs: 2,
        ..resumable()
    };
    let resume = (true, CheckpointEvery::Epoch);
    let error = frozen.fit(&config, &out, resume, &mut |_| {}).unwrap_err();
    assert!(matches!(error, fit::FitError::Resume { .. }), "{error:?}");
    assert!(error.to_string().contains("`freeze`"), "{error}");
    std::fs::remove_dir_all(&out).expect("removed");
}

#[test]
fn resuming_a_finished_run_keeps_the_class_names() {
    // The best epoch's weights, restored at the end, come back from the
    // checkpoint without metadata: the class names must still be saved.
    let tiny = TinyRun::new();
    let config = TrainConfig {
        epochs: 2,
        early_stopping: Some(EarlyStopping {
            patience: 5,
            restore_best: true,
        }),
        ..resumable()
    };
    let out = scratch("class-names");
    let first = tiny
        .fit(&config, &out, (false, CheckpointEvery::Epoch), &mut |_| {})
        .expect("trains");
    let again = tiny
        .fit(&config, &out, (true, CheckpointEvery::Epoch), &mut |_| {})
        .expect("resumes the finished run");
    assert_same_run(&first, &again);
    let on_disk = cnnc::runtime::weights::load_file(&out.join("tiny.safetensors")).expect("loads");
    // The checkpoint names them too, for a command that reads its weights.
    let checkpoint =
        cnnc::runtime::weights::load_file(&out.join("tiny.checkpoint.safetensors")).expect("loads");
    for store in [&again.weights, &on_disk, &checkpoint] {
        assert_eq!(
            cnnc::runtime::weights::class_names(store, 10),
            fashion::CLASS_NAMES
        );
    }
}

#[test]
fn a_weights_file_that_cannot_be_written_stops_training_and_names_the_checkpoint() {
    let tiny = TinyRun::new();
    let config = TrainConfig {
        epochs: 2,
        ..resumable()
    };
    let out = scratch("unwritable");
    let _ = std::fs::remove_dir_all(&out);
    // A folder where the weights file should be: no file can be renamed over it.
    std::fs::create_dir_all(out.join("tiny.safetensors").join("in-the-way")).expect("dir");
    let options = FitOptions {
        world: None,
        threads: 2,
        out: out.clone(),
        resume: false,
        overwrite: true,
        stop: None,
        checkpoint_every: CheckpointEvery::Epoch,
        progress: &mut |_| {},
    };
    let sets = (&tiny.train, &tiny.validation, &tiny.test);
    let error = fit::fit(&tiny.model, &config, sets, options).unwrap_err();
    assert!(
        matches!(&error, fit::FitError::Save { what: "weights", path, .. } if *path == out.join("tiny.safetensors")),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("the previous weights file is intact")
            && message.contains("tiny.checkpoint.safetensors` (after epoch 1) holds this run")
            && message.contains("--resume"),
        "{message}"
    );
    // Training stopped there, and its temporary file is gone.
    let saved = cnnc::runtime::weights::load_file(&out.join("tiny.checkpoint.safetensors"))
        .expect("the checkpoint loads");
    assert_eq!(saved.metadata.get("epoch").map(String::as_str), Some("1"));
    let left: Vec<_> = std::fs::read_dir(&out)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
