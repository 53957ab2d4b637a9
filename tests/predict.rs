//! `cnnc predict` on NumPy arrays: batches with a partial last one, and the
//! errors for an array or a weights file that does not fit the model; and
//! on the images of a segmentation model: masks of class indices, checked
//! against the library's forward pass, and the errors around writing them.

use std::path::{Path, PathBuf};
use std::process::Command;

use cnnc::runtime::inference::Inference;
use cnnc::runtime::weights;
use ndarray::{ArrayD, IxDyn};

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cnnc-predict-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn predict(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .arg("predict")
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("cnnc runs")
}

#[test]
fn predicts_in_batches_and_matches_the_library() {
    let dir = temp("batches");
    let model = cnnc::load_model(Path::new("examples/lenet5.cnn"), None).expect("lenet5");
    let store = weights::init(&model, 5);
    let weights_path = dir.join("lenet5.safetensors");
    weights::save(&store, &weights_path).expect("saved");
    let values: Vec<f32> = (0..5 * 28 * 28)
        .map(|i| ((i * 37) % 255) as f32 / 255.0)
        .collect();
    let input = ArrayD::from_shape_vec(IxDyn(&[5, 28, 28, 1]), values.clone()).expect("shape");
    let input_path = dir.join("x.npy");
    ndarray_npy::write_npy(&input_path, &input).expect("written");
    let output_path = dir.join("y.npy");
    let args = [
        "examples/lenet5.cnn",
        "--weights",
        weights_path.to_str().unwrap(),
        "--input",
        input_path.to_str().unwrap(),
        "--output",
        output_path.to_str().unwrap(),
        "--batch",
        "2",
    ];
    let out = predict(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let predicted: ArrayD<f32> = ndarray_npy::read_npy(&output_path).expect("output");
    assert_eq!(predicted.shape(), &[5, 10]);
    let compiled = cnnc::compile_inference(&model, 5).expect("compiles");
    let mut whole = Inference::new(compiled, store, 1).expect("starts");
    let expected = whole.run(&values).expect("runs").remove(0).1;
    for (a, e) in predicted.iter().zip(&expected) {
        assert!((a - e).abs() < 1e-5, "{a} vs {e}");
    }
}

#[test]
fn arrays_and_weights_that_do_not_fit_are_errors() {
    let dir = temp("errors");
    let model = cnnc::load_model(Path::new("examples/lenet5.cnn"), None).expect("lenet5");
    let mut store = weights::init(&model, 5);
    let weights_path = dir.join("w.safetensors");
    weights::save(&store, &weights_path).expect("saved");
    let bad_input = ArrayD::<f32>::zeros(IxDyn(&[3, 27, 28, 1]));
    let input_path = dir.join("bad.npy");
    ndarray_npy::write_npy(&input_path, &bad_input).expect("written");
    let output = dir.join("y.npy");
    let out = predict(&[
        "examples/lenet5.cnn",
        "--weights",
        weights_path.to_str().unwrap(),
        "--input",
        input_path.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.npy") && err.contains("[3, 27, 28, 1]") && err.contains("[N, 28, 28, 1]"),
        "{err}"
    );
    assert!(!output.exists(), "no output may be written on error");

    let good = ArrayD::<f32>::zeros(IxDyn(&[28, 28, 1]));
    ndarray_npy::write_npy(&input_path, &good).expect("written");
    store = store.into_iter_without("C1.bias");
    weights::save(&store, &weights_path).expect("saved");
    let out = predict(&[
        "examples/lenet5.cnn",
        "--weights",
        weights_path.to_str().unwrap(),
        "--input",
        input_path.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("C1.bias"), "{err}");
}

/// A store without one tensor.
trait Without {
    fn into_iter_without(self, name: &str) -> Self;
}

impl Without for weights::TensorStore {
    fn into_iter_without(self, name: &str) -> Self {
        self.iter()
            .filter(|(n, _)| *n != name)
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect()
    }
}

/// A segmentation model whose output ([8, 6, 3]: half the input's height
/// and width, not square) differs in size from its input, so that a mask
/// of the input's size, or transposed, is caught.
const SEGMENTER: &str = "
model seg : [16, 12, 1] {
    conv(8, 3, padding: same, activation: tanh)
    maxpool(2)
    conv(3, 1, activation: softmax) as scores
}
";

/// A fresh, empty folder for one test.
fn fresh(name: &str) -> PathBuf {
    let dir = temp(name);
    std::fs::remove_dir_all(&dir).expect("emptied");
    std::fs::create_dir_all(&dir).expect("created");
    dir
}

/// `source` as `dir/NAME.cnn`, its model, and the initializers drawn with
/// `seed` saved beside it with `names` as class names (none when empty).
fn model_with_weights(
    dir: &Path,
    source: &str,
    seed: u64,
    names: &[&str],
) -> (PathBuf, cnnc::TypedGraph, weights::TensorStore, PathBuf) {
    let file = dir.join("model.cnn");
    std::fs::write(&file, source).expect("written");
    let model = cnnc::load_model(&file, None).expect("compiles");
    let mut store = weights::init(&model, seed);
    if !names.is_empty() {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        weights::set_class_names(&mut store, &names);
    }
    let weights_path = dir.join("model.safetensors");
    weights::save(&store, &weights_path).expect("saved");
    (file, model, store, weights_path)
}

/// A grey image with a diagonal ramp and a bright square, so that the
/// model's pixels differ.
fn grey_image(width: u32, height: u32, seed: u32) -> image::GrayImage {
    image::GrayImage::from_fn(width, height, |x, y| {
        let square = (x / 3 + y / 4 + seed).is_multiple_of(3);
        image::Luma([if square {
            250
        } else {
            ((x * 17 + y * 29 + seed * 40) % 200) as u8
        }])
    })
}

/// Each pixel's class as the library computes it: the image read as
/// `predict` reads it, one forward pass, the arg max of each pixel's scores
/// as training's accuracy takes it.
fn expected_labels(
    model: &cnnc::TypedGraph,
    store: &weights::TensorStore,
    image: &Path,
    resize: bool,
) -> Vec<usize> {
    let [h, w, c] = match model.input_shape().map(|s| s.0.as_slice()) {
        Some(&[h, w, c]) => [h as usize, w as usize, c as usize],
        other => panic!("an image input, not {other:?}"),
    };
    let conversion = cnnc::data::folder::Conversion {
        shape: [h, w, c],
        convert: resize,
    };
    let values = cnnc::data::folder::read_image(image, conversion).expect("readable");
    let compiled = cnnc::compile_inference(model, 1).expect("compiles");
    let mut inference = Inference::new(compiled, store.clone(), 1).expect("starts");
    let (_, scores) = inference.run(&values).expect("runs").remove(0);
    let classes = model.outputs()[0].1[2] as usize;
    scores
        .chunks_exact(classes)
        .map(cnnc::train::fit::arg_max)
        .collect()
}

/// The mask PNG at `path` as 8-bit grey: its width, height and values.
fn read_mask(path: &Path) -> (u32, u32, Vec<usize>) {
    let mask = image::open(path).expect("a PNG");
    assert_eq!(mask.color(), image::ColorType::L8, "{}", path.display());
    let mask = mask.into_luma8();
    let values = mask.pixels().map(|p| p.0[0] as usize).collect();
    (mask.width(), mask.height(), values)
}

/// `100 * count / pixels` of each class, as the summary prints them.
fn shares_text(labels: &[usize], names: &[&str]) -> String {
    let mut counts: Vec<(usize, usize)> = (0..names.len())
        .map(|c| (c, labels.iter().filter(|&&l| l == c).count()))
        .filter(|&(_, n)| n > 0)
        .collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    counts
        .iter()
        .map(|&(c, n)| {
            format!(
                "{} {:.2}%",
                names[c],
                100.0 * n as f64 / labels.len() as f64
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `cnnc predict MODEL --weights WEIGHTS IMAGES... --masks MASKS EXTRA...`.
fn predict_masks(
    model: &Path,
    weights: &Path,
    images: &[&Path],
    masks: &Path,
    extra: &[&str],
) -> std::process::Output {
    let text = |path: &Path| path.to_str().expect("a UTF-8 path").to_string();
    let mut args = vec![text(model), "--weights".into(), text(weights)];
    args.extend(images.iter().map(|image| text(image)));
    args.extend(["--masks".into(), text(masks)]);
    args.extend(extra.iter().map(|arg| arg.to_string()));
    predict(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn masks_hold_each_pixels_arg_max_at_the_outputs_size() {
    let dir = fresh("masks");
    let names = ["background", "road", "car"];
    let (file, model, store, weights_path) = model_with_weights(&dir, SEGMENTER, 2, &names);
    let png = dir.join("street.png");
    grey_image(12, 16, 1).save(&png).expect("png");
    // A JPEG's mask is a PNG too; its values are what the decoder gives,
    // which `expected_labels` reads the same way.
    let jpeg = dir.join("field.jpg");
    grey_image(12, 16, 2).save(&jpeg).expect("jpeg");
    let masks = dir.join("out").join("masks");
    let out = predict_masks(&file, &weights_path, &[&png, &jpeg], &masks, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut lines = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (image, stem) in [(&png, "street"), (&jpeg, "field")] {
        let expected = expected_labels(&model, &store, image, false);
        let mask_path = masks.join(format!("{stem}.png"));
        let (width, height, values) = read_mask(&mask_path);
        assert_eq!((width, height), (6, 8), "the output's size");
        assert_eq!(values, expected, "{stem}");
        seen.extend(expected.iter().copied());
        lines.push(format!(
            "wrote {}: {}",
            mask_path.display(),
            shares_text(&expected, &names)
        ));
    }
    assert!(
        seen.len() > 1,
        "the weights make more than one class: {seen:?}"
    );
    assert_eq!(stdout(&out), lines.join("\n") + "\n");
}

#[test]
fn resized_colour_images_give_masks_of_the_outputs_size() {
    let dir = fresh("masks-resize");
    let (file, model, store, weights_path) = model_with_weights(&dir, SEGMENTER, 3, &[]);
    let photo = dir.join("photo.png");
    image::RgbImage::from_fn(30, 20, |x, y| {
        image::Rgb([(x * 8) as u8, (y * 12) as u8, ((x * y) % 256) as u8])
    })
    .save(&photo)
    .expect("png");
    let masks = dir.join("masks");
    let out = predict_masks(&file, &weights_path, &[&photo], &masks, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("photo.png"), "{}", stderr(&out));
    assert!(
        !masks.exists(),
        "nothing written when an image does not fit"
    );
    let out = predict_masks(&file, &weights_path, &[&photo], &masks, &["--resize"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let expected = expected_labels(&model, &store, &photo, true);
    let (width, height, values) = read_mask(&masks.join("photo.png"));
    assert_eq!((width, height), (6, 8));
    assert_eq!(values, expected);
    // Without class names in the weights, classes are numbered.
    let numbered = ["class 0", "class 1", "class 2"];
    assert_eq!(
        stdout(&out),
        format!(
            "wrote {}: {}\n",
            masks.join("photo.png").display(),
            shares_text(&expected, &numbered)
        )
    );
}

#[test]
fn more_than_256_classes_make_16_bit_masks() {
    let dir = fresh("masks-16");
    let source = "model wide : [4, 5, 1] {
        conv(8, 3, padding: same, activation: tanh)
        conv(300, 1, activation: softmax)
    }";
    let (file, model, store, weights_path) = model_with_weights(&dir, source, 0, &[]);
    let image = dir.join("tile.png");
    grey_image(5, 4, 3).save(&image).expect("png");
    let masks = dir.join("masks");
    let out = predict_masks(&file, &weights_path, &[&image], &masks, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mask = image::open(masks.join("tile.png")).expect("a PNG");
    assert_eq!(mask.color(), image::ColorType::L16);
    let mask = mask.into_luma16();
    assert_eq!((mask.width(), mask.height()), (5, 4));
    let values: Vec<usize> = mask.pixels().map(|p| p.0[0] as usize).collect();
    let expected = expected_labels(&model, &store, &image, false);
    assert_eq!(values, expected);
    assert!(
        expected.iter().any(|&c| c > 255),
        "a class beyond a byte's range is checked: {expected:?}"
    );
}

#[test]
fn a_segmentation_model_without_masks_prints_the_shares_alone() {
    let dir = fresh("masks-summary");
    let names = ["sky", "sea", "sand"];
    let (file, model, store, weights_path) = model_with_weights(&dir, SEGMENTER, 2, &names);
    let image = dir.join("beach.png");
    grey_image(12, 16, 1).save(&image).expect("png");
    let out = predict(&[
        file.to_str().unwrap(),
        "--weights",
        weights_path.to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let expected = expected_labels(&model, &store, &image, false);
    assert_eq!(
        stdout(&out),
        format!("{}: {}\n", image.display(), shares_text(&expected, &names))
    );
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("listed")
        .map(|e| e.expect("entry").file_name())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["beach.png", "model.cnn", "model.safetensors"],
        "nothing written"
    );
}

#[test]
fn masks_of_a_classifier_are_an_error() {
    let dir = fresh("masks-classifier");
    let model = cnnc::load_model(Path::new("examples/lenet5.cnn"), None).expect("lenet5");
    let weights_path = dir.join("lenet5.safetensors");
    weights::save(&weights::init(&model, 1), &weights_path).expect("saved");
    let image = dir.join("shoe.png");
    grey_image(28, 28, 0).save(&image).expect("png");
    let masks = dir.join("masks");
    let out = predict_masks(
        Path::new("examples/lenet5.cnn"),
        &weights_path,
        &[&image],
        &masks,
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "output `output` has shape [10], not per-pixel scores [height, width, classes]: \
             --masks needs a segmentation model"
        ),
        "{}",
        stderr(&out)
    );
    assert!(!masks.exists());
}

#[test]
fn an_existing_mask_is_kept_unless_overwrite_is_given() {
    let dir = fresh("masks-existing");
    let (file, model, store, weights_path) = model_with_weights(&dir, SEGMENTER, 2, &[]);
    let (first, second) = (dir.join("one.png"), dir.join("two.png"));
    grey_image(12, 16, 1).save(&first).expect("png");
    grey_image(12, 16, 2).save(&second).expect("png");
    let masks = dir.join("masks");
    std::fs::create_dir_all(&masks).expect("created");
    let users = masks.join("two.png");
    std::fs::write(&users, b"the user's file").expect("written");
    let out = predict_masks(&file, &weights_path, &[&first, &second], &masks, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "`{}` already exists: replace it with --overwrite",
            users.display()
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&users).expect("kept"), b"the user's file");
    assert!(!masks.join("one.png").exists(), "nothing written on error");

    let out = predict_masks(
        &file,
        &weights_path,
        &[&first, &second],
        &masks,
        &["--overwrite"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for image in [&first, &second] {
        let name = image.file_name().expect("a name");
        let (_, _, values) = read_mask(&masks.join(name));
        assert_eq!(values, expected_labels(&model, &store, image, false));
    }
}

#[test]
fn a_mask_never_replaces_its_own_image() {
    let dir = fresh("masks-own");
    let (file, _, _, weights_path) = model_with_weights(&dir, SEGMENTER, 2, &[]);
    let image = dir.join("scan.png");
    grey_image(12, 16, 1).save(&image).expect("png");
    let before = std::fs::read(&image).expect("read");
    let out = predict_masks(&file, &weights_path, &[&image], &dir, &["--overwrite"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "the mask of `{}` would replace the image itself",
            image.display()
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&image).expect("kept"), before);
}

#[test]
fn two_images_of_one_name_are_refused_before_anything_is_written() {
    let dir = fresh("masks-same-stem");
    let (file, _, _, weights_path) = model_with_weights(&dir, SEGMENTER, 2, &[]);
    std::fs::create_dir_all(dir.join("a")).expect("created");
    std::fs::create_dir_all(dir.join("b")).expect("created");
    let (png, jpeg) = (dir.join("a").join("cat.png"), dir.join("b").join("cat.jpg"));
    grey_image(12, 16, 1).save(&png).expect("png");
    grey_image(12, 16, 2).save(&jpeg).expect("jpeg");
    let masks = dir.join("masks");
    let out = predict_masks(&file, &weights_path, &[&png, &jpeg], &masks, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "`{}` and `{}` would both write their mask to `{}`",
            png.display(),
            jpeg.display(),
            masks.join("cat.png").display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(!masks.exists(), "the folder is not even created");
}

#[test]
fn more_classes_than_a_16_bit_mask_holds_are_refused() {
    use cnnc::predict::masks::{self, MaskFiles, PixelOutput};
    let source = "model huge : [2, 2, 1] { conv(65537, 1, activation: softmax) }";
    let model = cnnc::compile_source("huge.cnn", source, None, None).expect("compiles");
    let output = masks::pixel_output(&model).expect("per-pixel");
    assert_eq!(
        output,
        PixelOutput {
            name: "output".into(),
            height: 2,
            width: 2,
            scores: 65537,
            classes: 65537
        }
    );
    let dir = fresh("masks-huge");
    let images = [dir.join("x.png")];
    let error = MaskFiles::plan(&output, &images, &dir.join("masks"), false).expect_err("refused");
    assert_eq!(
        error.to_string(),
        "output `output` scores 65537 classes per pixel, more than the 65536 class indices a \
         16-bit greyscale PNG mask can hold"
    );
    let fits = PixelOutput {
        classes: 65536,
        ..output
    };
    let plan = MaskFiles::plan(&fits, &images, &dir.join("masks"), false).expect("fits");
    assert_eq!(plan.paths(), [dir.join("masks").join("x.png")]);
}

#[test]
fn images_are_segmented_in_inference_mode_only() {
    let dir = fresh("masks-mode");
    let (file, _, _, weights_path) = model_with_weights(&dir, SEGMENTER, 2, &[]);
    let image = dir.join("x.png");
    grey_image(12, 16, 1).save(&image).expect("png");
    let out = predict_masks(
        &file,
        &weights_path,
        &[&image],
        &dir.join("masks"),
        &["--mode", "training"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("images are segmented in inference mode"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.join("masks").exists());
}

#[test]
fn images_beyond_one_batch_keep_their_order() {
    // More images than one batch holds (16), so that the second, smaller
    // batch's masks must follow the first's.
    use cnnc::predict::masks::{self, SegmentOptions};
    let dir = fresh("masks-batches");
    let (_, model, store, _) = model_with_weights(&dir, SEGMENTER, 2, &[]);
    let images: Vec<PathBuf> = (0..18)
        .map(|i| {
            let path = dir.join(format!("{i:02}.png"));
            grey_image(12, 16, i).save(&path).expect("png");
            path
        })
        .collect();
    let options = SegmentOptions {
        conversion: cnnc::data::folder::Conversion {
            shape: [16, 12, 1],
            convert: false,
        },
        threads: 2,
        precision: cnnc::Precision::F32,
    };
    let segmented =
        masks::segment_images(&model, store.clone(), &images, options).expect("segmented");
    assert_eq!(segmented.images.len(), images.len());
    let distinct: std::collections::BTreeSet<&Vec<u32>> =
        segmented.images.iter().map(|s| &s.labels).collect();
    assert!(
        distinct.len() > 1,
        "the images' masks differ, so order shows"
    );
    for (image, segmentation) in images.iter().zip(&segmented.images) {
        assert_eq!(&segmentation.image, image);
        let labels: Vec<usize> = segmentation.labels.iter().map(|&l| l as usize).collect();
        assert_eq!(
            labels,
            expected_labels(&model, &store, image, false),
            "{}",
            image.display()
        );
    }
}

#[test]
fn a_one_channel_sigmoid_mask_is_class_one_above_one_half() {
    // Foreground or not: one sigmoid score per pixel, class 1 where it is
    // above one half, as training's accuracy thresholds it.
    let dir = fresh("masks-binary");
    let source = "model fg : [16, 12, 1] {\n    conv(4, 3, padding: same, activation: tanh)\n    conv(1, 1, activation: sigmoid)\n}\n";
    let names = ["background", "shape"];
    let (file, model, store, weights_path) = model_with_weights(&dir, source, 5, &names);
    let png = dir.join("scene.png");
    grey_image(12, 16, 3).save(&png).expect("png");
    let masks = dir.join("masks");
    let out = predict_masks(&file, &weights_path, &[&png], &masks, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let conversion = cnnc::data::folder::Conversion {
        shape: [16, 12, 1],
        convert: false,
    };
    let values = cnnc::data::folder::read_image(&png, conversion).expect("readable");
    let compiled = cnnc::compile_inference(&model, 1).expect("compiles");
    let mut inference = Inference::new(compiled, store, 1).expect("starts");
    let (_, probabilities) = inference.run(&values).expect("runs").remove(0);
    let expected: Vec<usize> = probabilities
        .iter()
        .map(|&p| usize::from(p > 0.5))
        .collect();
    let (width, height, mask) = read_mask(&masks.join("scene.png"));
    assert_eq!((width, height), (12, 16));
    assert_eq!(mask, expected);
    assert!(
        expected.contains(&0) && expected.contains(&1),
        "both classes appear"
    );
    let path = masks.join("scene.png");
    assert_eq!(
        stdout(&out),
        format!(
            "wrote {}: {}\n",
            path.display(),
            shares_text(&expected, &names)
        )
    );
}
