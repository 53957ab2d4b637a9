//! Segmentation end to end: the mask folder a user brings (`images/` +
//! `masks/`), the shapes set cnnc generates, the mean IoU against Keras's
//! `MeanIoU` (`tests/tf/iou.py`, recorded in `tests/tf/iou.out`), training a
//! small U-Net-like model with a per-pixel loss, resuming it bit for bit
//! from a checkpoint saved within an epoch, and the errors for labels that
//! do not fit the model.

use std::path::{Path, PathBuf};

use cnnc::config::TrainConfig;
use cnnc::data::folder::{Conversion, FolderError};
use cnnc::data::shapes::{self, ShapesConfig};
use cnnc::data::{masks, Dataset};
use cnnc::train::checkpoint::CheckpointEvery;
use cnnc::train::fit::{self, FitError, FitOptions, Progress};
use image::{GrayImage, RgbImage};

/// A folder of its own under the system's temporary folder.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cnnc-seg-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

fn grey(size: usize) -> Conversion {
    Conversion {
        shape: [size, size, 1],
        convert: false,
    }
}

#[test]
fn a_written_shapes_folder_reads_back_as_its_images_and_masks() {
    let dir = scratch("roundtrip");
    let set = shapes::generate(&ShapesConfig {
        count: 10,
        size: 16,
        seed: 4,
    });
    assert_eq!(shapes::write_folder(&set, &dir).expect("writes"), 10);
    // No test split: a fixed fifth is the test set, and with Some(0) no
    // validation: 8 training images and 2 test images, all of the ten.
    let splits = masks::load(&dir, grey(16), Some(0), 1).expect("loads");
    assert_eq!((splits.train.len(), splits.test.len()), (8, 2));
    assert_eq!(splits.train.label_shape, vec![16, 16]);
    assert_eq!(splits.train.class_names, shapes::CLASS_NAMES);
    let all = set.into_dataset();
    let mut matched = 0;
    for data in [&splits.train, &splits.test] {
        for i in 0..data.len() {
            // Each read image is one of the generated ones, within the
            // rounding of 8-bit PNG, with exactly its mask.
            let original = (0..all.len())
                .find(|&j| all.labels_of(j) == data.labels_of(i))
                .expect("a generated mask");
            let worst = all
                .image(original)
                .iter()
                .zip(data.image(i))
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(worst <= 0.5 / 255.0 + 1e-6, "image {i}: {worst}");
            matched += 1;
        }
    }
    assert_eq!(matched, 10);
}

/// A segmentation folder of `count` 4x4 images with the given masks.
fn mask_folder(name: &str, masks: &[Vec<u8>]) -> PathBuf {
    let dir = scratch(name);
    std::fs::create_dir_all(dir.join("images")).expect("dir");
    std::fs::create_dir_all(dir.join("masks")).expect("dir");
    for (i, mask) in masks.iter().enumerate() {
        let image = GrayImage::from_fn(4, 4, |x, y| image::Luma([(x * 40 + y * 7) as u8]));
        image
            .save(dir.join(format!("images/{i}.png")))
            .expect("saves");
        GrayImage::from_raw(4, 4, mask.clone())
            .expect("4x4")
            .save(dir.join(format!("masks/{i}.png")))
            .expect("saves");
    }
    dir
}

#[test]
fn classes_are_numbered_or_named_and_a_value_beyond_them_is_refused() {
    let masks_of = |top: u8| (0..5).map(|i| vec![i % (top + 1); 16]).collect::<Vec<_>>();
    let dir = mask_folder("numbered", &masks_of(2));
    let splits = masks::load(&dir, grey(4), Some(0), 1).expect("loads");
    assert_eq!(splits.train.class_names, ["0", "1", "2"]);
    std::fs::write(dir.join("classes.txt"), "sky\nroad\n").expect("writes");
    let error = masks::load(&dir, grey(4), Some(0), 1).expect_err("class 2 is unnamed");
    let text = error.to_string();
    assert!(
        matches!(
            error,
            FolderError::MaskClass {
                value: 2,
                x: 0,
                y: 0,
                classes: 2,
                ..
            }
        ),
        "{text}"
    );
    assert!(
        text.contains("masks/2.png") && text.contains("classes.txt"),
        "{text}"
    );
    std::fs::write(dir.join("classes.txt"), "sky\nroad\ncar\nperson\n").expect("writes");
    let named = masks::load(&dir, grey(4), Some(0), 1).expect("loads");
    assert_eq!(named.train.class_names, ["sky", "road", "car", "person"]);
}

#[test]
fn a_missing_coloured_or_misfit_mask_is_named() {
    let dir = mask_folder("bad", &[vec![0; 16], vec![1; 16]]);
    std::fs::remove_file(dir.join("masks/1.png")).expect("removes");
    let text = masks::load(&dir, grey(4), Some(0), 1)
        .expect_err("missing")
        .to_string();
    assert!(
        text.contains("images/1.png") && text.contains("has no mask"),
        "{text}"
    );
    RgbImage::new(4, 4)
        .save(dir.join("masks/1.png"))
        .expect("saves");
    let text = masks::load(&dir, grey(4), Some(0), 1)
        .expect_err("colour")
        .to_string();
    assert!(
        text.contains("masks/1.png") && text.contains("greyscale"),
        "{text}"
    );
    GrayImage::new(4, 3)
        .save(dir.join("masks/1.png"))
        .expect("saves");
    let text = masks::load(&dir, grey(4), Some(0), 1)
        .expect_err("size")
        .to_string();
    assert!(text.contains("is 4x3") && text.contains("is 4x4"), "{text}");
}

#[test]
fn resizing_takes_each_mask_pixel_from_the_nearest() {
    // A 4x4 mask of four 2x2 quadrants, read at 2x2 and at 8x8.
    let quadrants: Vec<u8> = (0..16).map(|p| ((p / 8) * 2 + (p % 4) / 2) as u8).collect();
    let dir = mask_folder("resize", &[quadrants.clone(), quadrants]);
    let read = |size: usize| {
        let conversion = Conversion {
            shape: [size, size, 1],
            convert: true,
        };
        let splits = masks::load(&dir, conversion, Some(0), 1).expect("loads");
        splits.train.labels_of(0).to_vec()
    };
    assert_eq!(read(2), [0, 1, 2, 3]);
    let large = read(8);
    let expected: Vec<u32> = (0..64)
        .map(|p| ((p / 32) * 2 + (p % 8) / 4) as u32)
        .collect();
    assert_eq!(large, expected);
}

#[test]
fn mean_iou_is_kerass() {
    // Each line of iou.out: classes C labels … predicted … mean_iou V.
    let recorded = std::fs::read_to_string("tests/tf/iou.out").expect("iou.out");
    let mut cases = 0;
    for line in recorded.lines().filter(|l| !l.starts_with('#')) {
        let field = |name: &str, next: &str| -> Vec<f64> {
            let start = line.find(name).expect(name) + name.len();
            let end = if next.is_empty() {
                line.len()
            } else {
                line.find(next).expect(next)
            };
            line[start..end]
                .split_whitespace()
                .map(|v| v.parse().expect("number"))
                .collect()
        };
        let classes = field("classes", "labels")[0] as usize;
        let labels = field("labels", "predicted");
        let predicted = field("predicted", "mean_iou");
        let keras = field("mean_iou", "")[0];
        let mut confusion = vec![vec![0u64; classes]; classes];
        for (&l, &p) in labels.iter().zip(&predicted) {
            confusion[l as usize][p as usize] += 1;
        }
        let ours = fit::mean_iou(&confusion).expect("some class counts");
        assert!((ours - keras).abs() < 1e-6, "{line}: ours {ours}");
        cases += 1;
    }
    assert_eq!(cases, 3);
}

const SMALL_UNET: &str = "
    model seg : [16, 16, 1] {
        let skip = conv(8, 3, padding: same, activation: relu)
        skip -> maxpool(2) -> conv(16, 3, padding: same, activation: relu)
        conv_transpose(8, 2, stride: 2)
        concat(skip, current)
        conv(8, 3, padding: same, activation: relu)
        conv(4, 1, activation: softmax)
    }";

/// The shapes set at 16x16, cut to `train` training images.
fn small_shapes(train: usize) -> (Dataset, Dataset, Dataset) {
    let splits = shapes::load(&[16, 16, 1], Some(64), 2).expect("generates");
    let first = |d: &Dataset, n: usize| d.select(&(0..n).collect::<Vec<_>>());
    (
        first(&splits.train, train),
        splits.validation,
        first(&splits.test, 64),
    )
}

fn fit_small(
    config: &TrainConfig,
    sets: (&Dataset, &Dataset, &Dataset),
    out: &Path,
    (resume, every): (bool, CheckpointEvery),
    progress: &mut dyn FnMut(Progress),
) -> Result<fit::Fitted, FitError> {
    let model =
        cnnc::compile_source("seg.cnn", SMALL_UNET, None, None).unwrap_or_else(|d| panic!("{d}"));
    let options = FitOptions {
        world: None,
        threads: 2,
        out: out.to_path_buf(),
        resume,
        overwrite: false,
        stop: None,
        checkpoint_every: every,
        progress,
    };
    fit::fit(&model, config, sets, options)
}

#[test]
fn a_small_unet_learns_the_shapes_and_resumes_within_an_epoch_bit_for_bit() {
    let (train, validation, test) = small_shapes(320);
    let defaults = TrainConfig::default();
    let config = TrainConfig {
        batch: 16,
        epochs: 2,
        optimizer: cnnc::config::Optimizer {
            lr: 0.01,
            ..defaults.optimizer
        },
        ..defaults
    };
    let sets = (&train, &validation, &test);
    let straight = scratch("unet-straight");
    let whole = fit_small(
        &config,
        sets,
        &straight,
        (false, CheckpointEvery::Epoch),
        &mut |_| {},
    )
    .expect("trains");
    let (first, last) = (&whole.history[0], &whole.history[1]);
    assert!(
        last.loss < first.loss && last.val_loss < first.val_loss,
        "{:?}",
        whole.history
    );
    // The epoch's validation IoU is that of the confusion matrix of the
    // weights it ended with, pixel by pixel.
    let model =
        cnnc::compile_source("seg.cnn", SMALL_UNET, None, None).unwrap_or_else(|d| panic!("{d}"));
    let checked =
        fit::evaluate_in_detail(&model, &whole.weights, &validation, (&[], 2)).expect("evaluates");
    let pixels: u64 = checked.confusion.iter().flatten().sum();
    assert_eq!(pixels as usize, validation.len() * 16 * 16);
    assert_eq!(
        last.mean_iou.expect("IoU").1,
        checked.mean_iou().expect("IoU")
    );
    assert_eq!(last.val_accuracy, checked.accuracy);
    let test_iou = whole.test_mean_iou.expect("test IoU");
    assert!(test_iou > 0.0 && test_iou < 1.0);
    let history = std::fs::read_to_string(straight.join("seg.history.csv")).expect("history");
    assert!(
        history
            .lines()
            .next()
            .expect("header")
            .ends_with(",mean_iou,val_mean_iou"),
        "{history}"
    );
    assert_eq!(
        fit::parse_history(&history).expect("parses")[1].mean_iou,
        last.mean_iou
    );

    // Checkpoints every 7 steps; the one saved at step 14 of epoch 2, its
    // confusion matrix included, resumes to the same run.
    let (running, copy) = (scratch("unet-running"), scratch("unet-copy"));
    let checkpoint = |dir: &Path| dir.join("seg.checkpoint.safetensors");
    let mut copied = false;
    let mut progress = |p: Progress| {
        if let Progress::Step(2, 15, ..) = p {
            std::fs::copy(checkpoint(&running), checkpoint(&copy)).expect("copied");
            copied = true;
        }
    };
    fit_small(
        &config,
        sets,
        &running,
        (false, CheckpointEvery::Steps(7)),
        &mut progress,
    )
    .expect("trains");
    assert!(copied);
    let saved = cnnc::runtime::weights::load_file(&checkpoint(&copy)).expect("loads");
    assert_eq!(
        saved.metadata.get("partial_steps").map(String::as_str),
        Some("14")
    );
    assert!(saved.metadata.contains_key("partial_confusion"));
    let resumed = fit_small(
        &config,
        sets,
        &copy,
        (true, CheckpointEvery::Epoch),
        &mut |_| {},
    )
    .expect("resumes");
    for (name, t) in whole.weights.iter() {
        let other = &resumed.weights.get(name).expect("weight").data;
        assert!(
            t.data
                .iter()
                .zip(other)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name}"
        );
    }
    assert_eq!(
        whole
            .history
            .iter()
            .map(|e| (e.loss, e.mean_iou))
            .collect::<Vec<_>>(),
        resumed
            .history
            .iter()
            .map(|e| (e.loss, e.mean_iou))
            .collect::<Vec<_>>()
    );
}

/// The error of fitting `source`'s model on `data` (as all three sets).
fn refused(source: &str, data: &Dataset, out: &Path) -> FitError {
    let config = TrainConfig {
        batch: 16,
        epochs: 1,
        ..TrainConfig::default()
    };
    let model = cnnc::compile_source("m.cnn", source, None, None).unwrap_or_else(|d| panic!("{d}"));
    let options = FitOptions {
        world: None,
        threads: 1,
        out: out.to_path_buf(),
        resume: false,
        overwrite: false,
        stop: None,
        checkpoint_every: CheckpointEvery::Epoch,
        progress: &mut |_| {},
    };
    fit::fit(&model, &config, (data, data, data), options).expect_err("refused")
}

#[test]
fn labels_that_do_not_fit_the_outputs_are_refused_before_training() {
    let (train, _, _) = small_shapes(32);
    let out = scratch("misfit");
    let classifier =
        "model m : [16, 16, 1] { conv(4, 3) global_avg_pool dense(4, activation: softmax) }";
    let text = refused(classifier, &train, &out).to_string();
    assert!(
        text.contains("16x16 masks") && text.contains("per-pixel scores [16, 16, classes]"),
        "{text}"
    );
    // Per-pixel scores of another size, and on one label per image.
    let valid = "model m : [16, 16, 1] { conv(4, 3, padding: valid, activation: softmax) }";
    let text = refused(valid, &train, &out).to_string();
    assert!(
        text.contains("masks are 16x16") && text.contains("[14, 14, 4]"),
        "{text}"
    );
    let two = "model m : [16, 16, 1] { conv(2, 3, padding: same, activation: softmax) }";
    let text = refused(two, &train, &out).to_string();
    assert!(
        text.contains("2 scores per pixel, but the data set has 4 classes")
            && text.contains("`conv(4, 1, activation: softmax)`"),
        "{text}"
    );
    let per_image = Dataset {
        label_shape: Vec::new(),
        labels: (0..train.len() as u32).map(|i| i % 4).collect(),
        ..train.clone()
    };
    let same = "model m : [16, 16, 1] { conv(4, 3, padding: same, activation: softmax) }";
    let error = refused(same, &per_image, &out);
    assert!(
        matches!(error, FitError::LabelShape { .. })
            && error.to_string().contains("one label per image"),
        "{error}"
    );
    assert_eq!(
        std::fs::read_dir(&out).expect("dir").count(),
        0,
        "nothing written"
    );
}

#[test]
fn cnnc_trains_on_shapes_and_on_a_mask_folder_and_eval_reports_the_iou() {
    let dir = scratch("cli");
    let file = dir.join("seg.cnn");
    std::fs::write(
        &file,
        format!("{SMALL_UNET}\ntrain {{\n    batch: 32\n    epochs: 1\n}}\n"),
    )
    .expect("writes");
    let cnnc = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cnnc"))
            .args(args)
            .output()
            .expect("runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (file, runs) = (file.to_str().expect("utf-8"), dir.join("runs"));
    let runs = runs.to_str().expect("utf-8");
    let (ok, text) = cnnc(&["run", file, "--train", "shapes", "--out", runs]);
    assert!(ok, "{text}");
    assert!(
        text.contains("validation loss") && text.contains("mean IoU"),
        "{text}"
    );
    assert!(text.contains("(400 images)"), "{text}");
    let weights = format!("{runs}/seg.safetensors");
    let (ok, text) = cnnc(&["eval", file, "--weights", &weights, "--test", "shapes"]);
    assert!(ok, "{text}");
    for needle in [
        "mean IoU",
        "intersection over union",
        "triangle",
        "; pixels",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    // A folder of images and masks (`cnnc shapes` writes one) trains the
    // same way; writing into it again is refused.
    let folder = dir.join("folder");
    let folder = folder.to_str().expect("utf-8");
    let write = [
        "shapes", folder, "--count", "100", "--size", "16", "--seed", "9",
    ];
    let (ok, text) = cnnc(&write);
    assert!(ok && text.contains("wrote 100 images of 16x16"), "{text}");
    let (ok, text) = cnnc(&write);
    assert!(!ok && text.contains("already holds files"), "{text}");
    let tiny = dir.join("tiny");
    let (ok, text) = cnnc(&["shapes", tiny.to_str().expect("utf-8"), "--size", "4"]);
    assert!(
        !ok && text.contains("--size 8 or more") && !tiny.exists(),
        "{text}"
    );
    let set = shapes::generate(&ShapesConfig {
        count: 100,
        size: 16,
        seed: 9,
    });
    let written = masks::load(Path::new(folder), grey(16), Some(0), 1).expect("loads");
    let mask_of = |d: &Dataset, i: usize| d.labels_of(i).to_vec();
    let generated = set.into_dataset();
    assert!(
        (0..written.train.len())
            .all(|i| (0..generated.len())
                .any(|j| mask_of(&written.train, i) == mask_of(&generated, j)))
    );
    let (ok, text) = cnnc(&["run", file, "--train", folder, "--out", runs, "--overwrite"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("mean IoU") && text.contains("(20 images)"),
        "{text}"
    );
    // `cnnc show` draws the images with their masks in colour, and names
    // the shapes each holds.
    let picture = dir.join("grid.png");
    let picture = picture.to_str().expect("utf-8");
    let (ok, text) = cnnc(&["show", folder, "-o", picture, "--rows", "2", "--cols", "3"]);
    assert!(ok && text.contains("6 training images"), "{text}");
    let drawn = image::open(picture).expect("a PNG").into_rgb8();
    let tinted = drawn
        .pixels()
        .filter(|p| p.0[0] != p.0[1] || p.0[1] != p.0[2])
        .count();
    let text_pixels = drawn.pixels().filter(|p| p.0 == [0, 0, 0]).count();
    assert!(tinted > 100 && text_pixels > 0, "{tinted} coloured pixels");
    // A classifier's data set for a segmentation model is refused.
    let (ok, text) = cnnc(&[
        "run",
        file,
        "--train",
        "fashion",
        "--out",
        runs,
        "--overwrite",
    ]);
    assert!(!ok && text.contains("one label per image"), "{text}");
}

#[test]
fn a_sigmoid_mask_of_one_channel_trains_with_the_binary_cross_entropy() {
    // Foreground or not: the shapes' masks folded to two classes, scored by
    // one sigmoid channel (class 1 where it is above one half).
    let (train, validation, test) = small_shapes(64);
    let binary = |d: &Dataset| Dataset {
        labels: d.labels.iter().map(|&l| u32::from(l > 0)).collect(),
        class_names: vec!["background".into(), "shape".into()],
        ..d.clone()
    };
    let (train, validation, test) = (binary(&train), binary(&validation), binary(&test));
    let source = "
        model fg : [16, 16, 1] {
            conv(8, 3, padding: same, activation: relu)
            conv(1, 1, activation: sigmoid)
        }";
    let model =
        cnnc::compile_source("fg.cnn", source, None, None).unwrap_or_else(|d| panic!("{d}"));
    let out = scratch("binary");
    let config = TrainConfig {
        batch: 16,
        epochs: 2,
        ..TrainConfig::default()
    };
    let options = FitOptions {
        world: None,
        threads: 2,
        out: out.clone(),
        resume: false,
        overwrite: false,
        stop: None,
        checkpoint_every: CheckpointEvery::Epoch,
        progress: &mut |_| {},
    };
    let fitted = fit::fit(&model, &config, (&train, &validation, &test), options).expect("trains");
    assert!(
        fitted.history[1].loss < fitted.history[0].loss,
        "{:?}",
        fitted.history
    );
    let checked =
        fit::evaluate_in_detail(&model, &fitted.weights, &test, (&[], 2)).expect("evaluates");
    assert_eq!(checked.confusion.len(), 2);
    let pixels: u64 = checked.confusion.iter().flatten().sum();
    assert_eq!(pixels as usize, test.labels.len());
    let diagonal = checked.confusion[0][0] + checked.confusion[1][1];
    assert_eq!(diagonal as f64 / pixels as f64, checked.accuracy);
    // The loss is the mean binary cross-entropy of the probabilities.
    let mut probabilities = Vec::new();
    let batches = cnnc::predict::Batches {
        count: test.len(),
        batch: 64,
        threads: 2,
        precision: cnnc::Precision::F32,
    };
    cnnc::predict::run_in_batches::<FitError>(
        &model,
        &fitted.weights,
        batches,
        |start, size| test.images[start * 256..(start + size) * 256].to_vec(),
        |_, outputs| probabilities.extend_from_slice(&outputs[0].1),
    )
    .expect("predicts");
    let expected: f64 = probabilities
        .iter()
        .zip(&test.labels)
        .map(|(&p, &l)| {
            let p = f64::from(p).clamp(1e-7, 1.0 - 1e-7);
            -if l == 1 { p.ln() } else { (1.0 - p).ln() }
        })
        .sum::<f64>()
        / pixels as f64;
    assert!(
        (checked.loss - expected).abs() < 1e-9,
        "{} vs {expected}",
        checked.loss
    );
}
