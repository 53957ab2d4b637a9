//! Data sets of one's own and predictions on image files: a folder with a
//! sub-folder per class is read, converted and split; a model trained on it
//! from the command line keeps its class names; `cnnc predict` and
//! `cnnc run` without `--train` name the classes of new images.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cnnc::data::folder::{self, Conversion, FolderError};
use image::{GrayImage, Luma, Rgb, RgbImage};

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cnnc-images-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A 12x12 grey image of stripes, vertical or horizontal, with a phase and
/// some noise so that no two are alike.
fn stripes(vertical: bool, seed: u32) -> GrayImage {
    GrayImage::from_fn(12, 12, |x, y| {
        let along = if vertical { x } else { y };
        let on = (along + seed) % 4 < 2;
        let noise = (x * 7 + y * 13 + seed * 31) % 40;
        Luma([if on { 200 + noise as u8 } else { noise as u8 }])
    })
}

/// `dir/horizontal/*.png` and `dir/vertical/*.png`, `per_class` each, plus
/// a file that is not an image (skipped).
fn stripes_folder(dir: &Path, per_class: u32) {
    for (class, vertical) in [("horizontal", false), ("vertical", true)] {
        let class_dir = dir.join(class);
        std::fs::create_dir_all(&class_dir).expect("class dir");
        for i in 0..per_class {
            stripes(vertical, i)
                .save(class_dir.join(format!("{i:03}.png")))
                .expect("png");
        }
    }
    std::fs::write(dir.join("horizontal").join("notes.txt"), "not an image").expect("txt");
}

const GREY_12: Conversion = Conversion {
    shape: [12, 12, 1],
    convert: false,
};

#[test]
fn a_class_folder_is_read_labelled_and_split() {
    let dir = temp("split");
    stripes_folder(&dir, 25);
    let splits = folder::load(&dir, GREY_12, None, 7).expect("loads");
    assert_eq!(splits.train.class_names, ["horizontal", "vertical"]);
    // 50 images: a fifth (10) for the test set, a fifth of the other 40 for validation.
    assert_eq!(
        (
            splits.train.len(),
            splits.validation.len(),
            splits.test.len()
        ),
        (32, 8, 10)
    );
    for set in [&splits.train, &splits.validation, &splits.test] {
        assert_eq!(set.shape, [12, 12, 1]);
        assert_eq!(set.images.len(), set.len() * 144);
        assert!(set.images.iter().all(|v| (0.0..=1.0).contains(v)));
    }
    // Each image is its file's pixels over 255, under its class's label.
    let first = stripes(false, 0);
    let position = splits
        .train
        .images
        .chunks(144)
        .chain(splits.validation.images.chunks(144))
        .chain(splits.test.images.chunks(144))
        .position(|image| {
            image
                .iter()
                .zip(first.as_raw())
                .all(|(v, &b)| *v == f32::from(b) / 255.0)
        });
    assert!(position.is_some(), "horizontal/000.png is in a set");
    // The test set does not move with the training seed; validation does.
    let other = folder::load(&dir, GREY_12, None, 8).expect("loads");
    assert_eq!(other.test, splits.test);
    assert_ne!(other.validation.images, splits.validation.images);
    // An explicit validation count is taken as it is.
    let three = folder::load(&dir, GREY_12, Some(3), 7).expect("loads");
    assert_eq!(three.validation.len(), 3);
}

#[test]
fn train_and_test_sub_folders_are_used_as_they_are() {
    let dir = temp("train-test");
    stripes_folder(&dir.join("train"), 6);
    stripes_folder(&dir.join("test"), 2);
    let splits = folder::load(&dir, GREY_12, Some(2), 1).expect("loads");
    assert_eq!(
        (
            splits.train.len(),
            splits.validation.len(),
            splits.test.len()
        ),
        (10, 2, 4)
    );
    // Test classes that differ from the training classes are an error.
    std::fs::create_dir_all(dir.join("test").join("zigzag")).expect("dir");
    stripes(true, 1)
        .save(dir.join("test").join("zigzag").join("a.png"))
        .expect("png");
    let error = folder::load(&dir, GREY_12, None, 1).expect_err("classes differ");
    assert!(matches!(error, FolderError::TestClasses { .. }), "{error}");
    assert!(error.to_string().contains("zigzag"), "{error}");
}

#[test]
fn images_that_do_not_fit_are_errors_unless_converted() {
    let dir = temp("convert");
    let path = dir.join("photo.jpg");
    RgbImage::from_fn(30, 20, |x, y| Rgb([(x * 8) as u8, (y * 12) as u8, 90]))
        .save(&path)
        .expect("jpeg");
    let error = folder::read_image(&path, GREY_12).expect_err("30x20 RGB is not 12x12 grey");
    let message = error.to_string();
    assert!(
        message.contains("photo.jpg")
            && message.contains("30x20 RGB")
            && message.contains("12x12 grey")
            && message.contains("--resize"),
        "{message}"
    );
    let converted = folder::read_image(
        &path,
        Conversion {
            convert: true,
            ..GREY_12
        },
    )
    .expect("converted");
    assert_eq!(converted.len(), 144);
    // The colour gradient survives as a gradient of grey.
    assert!(converted[143] > converted[0]);
    let rgb = folder::read_image(
        &path,
        Conversion {
            shape: [20, 30, 3],
            convert: false,
        },
    )
    .expect("fits as it is");
    assert_eq!(rgb.len(), 20 * 30 * 3);
}

#[test]
fn bad_folders_and_files_are_errors_naming_them() {
    let dir = temp("bad");
    let error = folder::load(&dir, GREY_12, None, 1).expect_err("no classes");
    assert!(matches!(error, FolderError::NoClasses { .. }), "{error}");
    std::fs::create_dir_all(dir.join("empty")).expect("dir");
    let error = folder::load(&dir, GREY_12, None, 1).expect_err("empty class");
    assert!(error.to_string().contains("empty"), "{error}");
    stripes_folder(&dir.join("x"), 1);
    let broken = dir.join("x").join("vertical").join("broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\nnot really").expect("write");
    let error = folder::read_image(&broken, GREY_12).expect_err("corrupt");
    assert!(matches!(error, FolderError::Decode { .. }), "{error}");
    assert!(error.to_string().contains("broken.png"), "{error}");
    let error = folder::load(&dir.join("x"), GREY_12, None, 1).expect_err("corrupt file");
    assert!(error.to_string().contains("broken.png"), "{error}");
    let error = folder::read_image(&dir.join("missing.png"), GREY_12).expect_err("missing");
    assert!(matches!(error, FolderError::Read { .. }), "{error}");
    let four = Conversion {
        shape: [12, 12, 4],
        convert: true,
    };
    let error = folder::read_image(&broken, four).expect_err("4 channels");
    assert!(matches!(error, FolderError::Channels { channels: 4 }));
}

fn cnnc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_model_trained_on_a_folder_names_its_classes_when_predicting() {
    let dir = temp("cli");
    let data = dir.join("stripes");
    stripes_folder(&data, 40);
    let model = dir.join("striped.cnn");
    std::fs::write(
        &model,
        "model striped : [12, 12, 1] {
            conv(4, 3, padding: same, activation: relu)
            maxpool(2)
            flatten
            dense(2, activation: softmax)
        }
        train {
            optimizer: adam(lr: 0.01)
            metrics: [accuracy, top_k(k: 1)]
            batch: 8
            epochs: 4
            augment: (brightness: 0.05, contrast: 0.05)
        }",
    )
    .expect("model");
    let (model, out) = (model.to_str().expect("utf-8"), dir.to_str().expect("utf-8"));
    let trained = cnnc(&[
        "run",
        model,
        "--train",
        data.to_str().expect("utf-8"),
        "--out",
        out,
        "--threads",
        "1",
    ]);
    assert!(trained.status.success(), "{}", text(&trained.stderr));
    let report = text(&trained.stdout);
    assert!(report.contains("top-1 accuracy"), "{report}");
    let history = std::fs::read_to_string(dir.join("striped.history.csv")).expect("history");
    assert!(
        history.starts_with(
            "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds,top1_accuracy,val_top1_accuracy\n"
        ),
        "{history}"
    );
    // Top-1 accuracy is accuracy (there are no ties in trained scores).
    let last: Vec<f64> = history
        .lines()
        .last()
        .expect("a row")
        .split(',')
        .map(|v| v.parse().expect("number"))
        .collect();
    assert_eq!(last[2], last[7]);
    assert_eq!(last[4], last[8]);
    // Training again into the same folder would replace those weights:
    // refused unless asked for, and nothing is touched.
    let weights = dir.join("striped.safetensors");
    let before = std::fs::read(&weights).expect("weights");
    let data_arg = data.to_str().expect("utf-8");
    let again = cnnc(&["run", model, "--train", data_arg, "--out", out]);
    assert_eq!(again.status.code(), Some(1));
    let message = text(&again.stderr);
    assert!(
        message.contains("earlier run")
            && message.contains("--resume")
            && message.contains("--overwrite"),
        "{message}"
    );
    assert_eq!(std::fs::read(&weights).expect("weights"), before);
    // New images, one of each class.
    let (vertical, horizontal) = (dir.join("v.png"), dir.join("h.png"));
    stripes(true, 101).save(&vertical).expect("png");
    stripes(false, 202).save(&horizontal).expect("png");
    let (v, h) = (
        vertical.to_str().expect("utf-8"),
        horizontal.to_str().expect("utf-8"),
    );
    let predicted = cnnc(&[
        "predict",
        model,
        "--weights",
        weights.to_str().expect("utf-8"),
        v,
        h,
        "--top",
        "2",
    ]);
    assert!(predicted.status.success(), "{}", text(&predicted.stderr));
    let lines = text(&predicted.stdout);
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert!(lines[0].ends_with("v.png") && lines[3].ends_with("h.png"));
    assert!(lines[1].starts_with("  1. vertical"), "{lines:?}");
    assert!(lines[4].starts_with("  1. horizontal"), "{lines:?}");
    // The two probabilities of each image add up to one.
    let percent = |line: &str| -> f64 {
        line.trim_end_matches('%')
            .rsplit(' ')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a percentage")
    };
    assert!((percent(lines[1]) + percent(lines[2]) - 100.0).abs() < 0.05);
    // `cnnc run` without --train classifies with the weights training wrote.
    let ran = cnnc(&["run", model, "--out", out, v, "--top", "1"]);
    assert!(ran.status.success(), "{}", text(&ran.stderr));
    assert!(text(&ran.stderr).contains("striped.safetensors"));
    assert_eq!(text(&ran.stdout).lines().nth(1), Some(lines[1]));
    // Starting over is one flag away.
    let args = ["run", model, "--train", data_arg, "--out", out];
    let over = cnnc(&[&args[..], &["--overwrite", "--epochs", "1"]].concat());
    assert!(over.status.success(), "{}", text(&over.stderr));
    assert_ne!(std::fs::read(&weights).expect("weights"), before);
}

#[test]
fn running_without_data_or_inputs_says_what_to_give() {
    let out = cnnc(&["run", "examples/lenet5.cnn"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--train DATA"),
        "{}",
        text(&out.stderr)
    );
    // A model whose output is not a vector of scores cannot classify images.
    let photo = "data/photos/china.jpg";
    let out = cnnc(&["run", "examples/line_filters.cnn", photo]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not one score per class"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn without_weights_run_classifies_with_the_initializers_training_starts_from() {
    let dir = temp("initial");
    let source = "model tiny : [12, 12, 1] {
            conv(3, 3, activation: relu)
            flatten
            dense(4, activation: softmax)
        }
        train { seed: 7 }";
    let path = dir.join("tiny.cnn");
    std::fs::write(&path, source).expect("model");
    let model =
        cnnc::compile_source("tiny.cnn", source, None, None).unwrap_or_else(|d| panic!("{d}"));
    let weights = |seed: u64| {
        let file = dir.join(format!("seed{seed}.safetensors"));
        cnnc::runtime::weights::save(&cnnc::runtime::weights::init(&model, seed), &file)
            .expect("saved");
        file
    };
    let image = dir.join("v.png");
    stripes(true, 5).save(&image).expect("png");
    let (model_arg, image_arg) = (
        path.to_str().expect("utf-8"),
        image.to_str().expect("utf-8"),
    );
    let out = dir.join("no-run-here");
    let ran = cnnc(&[
        "run",
        model_arg,
        "--out",
        out.to_str().expect("utf-8"),
        image_arg,
        "--top",
        "4",
    ]);
    assert!(ran.status.success(), "{}", text(&ran.stderr));
    assert!(
        text(&ran.stderr).contains("initializers"),
        "{}",
        text(&ran.stderr)
    );
    let predict = |seed: u64| {
        let w = weights(seed);
        let out = cnnc(&[
            "predict",
            model_arg,
            "--weights",
            w.to_str().expect("utf-8"),
            image_arg,
            "--top",
            "4",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    // The train section's seed, not another one.
    assert_eq!(text(&ran.stdout), predict(7));
    assert_ne!(text(&ran.stdout), predict(8));
}

#[test]
fn show_draws_a_folder_at_the_size_of_its_first_image() {
    let dir = temp("show");
    let data = dir.join("stripes");
    stripes_folder(&data, 5);
    // A larger image among them is drawn at the first one's size.
    image::imageops::resize(
        &stripes(true, 9),
        24,
        24,
        image::imageops::FilterType::Nearest,
    )
    .save(data.join("vertical").join("large.png"))
    .expect("png");
    let picture = dir.join("grid.png");
    let args = [
        "show",
        data.to_str().expect("utf-8"),
        "-o",
        picture.to_str().expect("utf-8"),
        "--rows",
        "2",
        "--cols",
        "3",
    ];
    let out = cnnc(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // 11 images, two of them held out as the test set.
    assert!(
        text(&out.stdout).contains("6 training images"),
        "{}",
        text(&out.stdout)
    );
    let grid = image::open(&picture).expect("png").to_rgb8();
    // Each cell: the 12x12 image at 3x, 8 pixels around it, 20 above for the name.
    assert_eq!(grid.dimensions(), (3 * 52, 2 * 64));
    // The first image's stripes: dark ink and light paper both.
    let cell: Vec<u8> = (20..56)
        .flat_map(|y| (8..44).map(move |x| (x, y)))
        .map(|(x, y)| grid.get_pixel(x, y)[0])
        .collect();
    assert!(cell.iter().any(|&v| v < 100) && cell.iter().any(|&v| v > 200));
    let missing = dir.join("nowhere");
    let out = cnnc(&["show", missing.to_str().expect("utf-8"), "-o", "x.png"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("a folder of images"),
        "{}",
        text(&out.stderr)
    );
}
