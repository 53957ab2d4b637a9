//! Weights files on the command line: a training checkpoint where weights
//! are expected, another model's weights, weights holding NaN, and the
//! flags that name where `cnnc eval` finds its data.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cnnc::runtime::weights;

/// Two models of one file: `deep` is trained; `wide` is another model.
const MODELS: &str = "model deep : [28, 28, 1] {
    flatten
    dense(8, activation: relu)
    dense(8, activation: relu)
    dense(8, activation: relu)
    dense(8, activation: relu)
    dense(8, activation: relu)
    dense(10, activation: softmax)
}

model wide : [28, 28, 1] {
    flatten
    dense(16, activation: relu) as hidden
    dense(10, activation: softmax) as scores
}

train deep {
    optimizer: adam(lr: 0.001)
    loss: sparse_categorical_crossentropy
    batch: 4
    epochs: 1
    validation: 4
}
";

fn cnnc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("cnnc runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The standard error of a command that failed, with `dir` written `DIR`.
fn failure(out: &Output, dir: &Path) -> String {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    stderr(out).replace(&dir.display().to_string(), "DIR")
}

/// A gzip-compressed IDX file of unsigned bytes.
fn idx_gz(path: &Path, magic: u32, dims: &[u32], data: &[u8]) {
    let mut bytes = magic.to_be_bytes().to_vec();
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&bytes).expect("gzip");
    std::fs::write(path, encoder.finish().expect("gzip")).expect("written");
}

/// A run of `deep` for one epoch on a tiny Fashion-MNIST in `dir/fashion`,
/// written to `dir/out`: the scratch folder, the .cnn file and the data.
struct Trained {
    dir: PathBuf,
    file: PathBuf,
    data: PathBuf,
}

impl Trained {
    fn new(test: &str) -> Trained {
        let dir = std::env::temp_dir().join(format!("cnnc-wfiles-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let data = dir.join("fashion");
        std::fs::create_dir_all(&data).expect("folder");
        let images =
            |count: u32| -> Vec<u8> { (0..count * 784).map(|i| (i * 37 % 251) as u8).collect() };
        let labels = |count: u32| -> Vec<u8> { (0..count).map(|i| (i % 10) as u8).collect() };
        idx_gz(
            &data.join("train-images-idx3-ubyte.gz"),
            0x803,
            &[24, 28, 28],
            &images(24),
        );
        idx_gz(
            &data.join("train-labels-idx1-ubyte.gz"),
            0x801,
            &[24],
            &labels(24),
        );
        idx_gz(
            &data.join("t10k-images-idx3-ubyte.gz"),
            0x803,
            &[10, 28, 28],
            &images(10),
        );
        idx_gz(
            &data.join("t10k-labels-idx1-ubyte.gz"),
            0x801,
            &[10],
            &labels(10),
        );
        let file = dir.join("models.cnn");
        std::fs::write(&file, MODELS).expect("written");
        let trained = Trained { dir, file, data };
        let out = cnnc(&[
            "run",
            trained.file(),
            "--model",
            "deep",
            "--train",
            "fashion",
            "--data",
            trained.data(),
            "--out",
            trained.path("out"),
            "--threads",
            "1",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        trained
    }

    fn file(&self) -> &str {
        self.file.to_str().expect("utf-8")
    }

    fn data(&self) -> &str {
        self.data.to_str().expect("utf-8")
    }

    /// `dir/relative` as a string argument.
    fn path(&self, relative: &str) -> &'static str {
        let path = self.dir.join(relative);
        Box::leak(path.to_str().expect("utf-8").to_string().into_boxed_str())
    }
}

impl Drop for Trained {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Five examples of 28x28x1 as a float32 .npy file.
fn write_input(path: &Path) {
    let values: Vec<f32> = (0..5 * 784).map(|i| (i % 97) as f32 / 97.0).collect();
    let array = ndarray::Array::from_shape_vec((5, 28, 28, 1), values).expect("shape");
    ndarray_npy::write_npy(path, &array).expect("written");
}

#[test]
fn a_training_checkpoint_predicts_as_the_weights_it_holds() {
    let run = Trained::new("checkpoint");
    let input = run.path("x.npy");
    write_input(Path::new(input));
    let predict = |weights: &str, output: &str| {
        let out = cnnc(&[
            "predict",
            run.file(),
            "--model",
            "deep",
            "--weights",
            weights,
            "--input",
            input,
            "--output",
            output,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        std::fs::read(output).expect("written")
    };
    // Training ends with the weights the checkpoint holds (no best-weights
    // restore in this train section), so both give the same bytes.
    let from_weights = predict(run.path("out/deep.safetensors"), run.path("a.npy"));
    let from_checkpoint = predict(
        run.path("out/deep.checkpoint.safetensors"),
        run.path("b.npy"),
    );
    assert_eq!(from_weights, from_checkpoint);
    let out = cnnc(&[
        "eval",
        run.file(),
        "--model",
        "deep",
        "--weights",
        run.path("out/deep.checkpoint.safetensors"),
        "--data",
        run.data(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("(10 images)"));
}

#[test]
fn another_model_s_checkpoint_is_named_and_its_problems_counted() {
    let run = Trained::new("another");
    let out = cnnc(&[
        "predict",
        run.file(),
        "--model",
        "wide",
        "--weights",
        run.path("out/deep.checkpoint.safetensors"),
        "--input",
        run.path("x.npy"),
        "--output",
        run.path("y.npy"),
    ]);
    insta::assert_snapshot!("another_model_s_checkpoint", failure(&out, &run.dir));
    // An image to classify takes the same path through the weights check.
    let image = run.path("shirt.png");
    image::GrayImage::from_pixel(28, 28, image::Luma([90]))
        .save(image)
        .expect("png");
    let args = ["predict", run.file(), "--model", "wide", "--weights"];
    let out = cnnc(&[&args[..], &[run.path("out/deep.safetensors"), image]].concat());
    let text = failure(&out, &run.dir);
    assert!(text.contains("weights file `DIR/out/deep.safetensors` does not fit model `wide` (16 problems: 4 missing, 12 unexpected)"), "{text}");
    assert!(
        text.contains(
            "they are the weights of model `deep`, also in `DIR/models.cnn`: pass --model deep"
        ),
        "{text}"
    );
}

#[test]
fn eval_refuses_weights_holding_nan_naming_the_weight() {
    let run = Trained::new("nan");
    let path = Path::new(run.path("out/deep.safetensors"));
    let mut store = weights::load_file(path).expect("reads");
    store.get_mut("dense3.kernel").expect("dense3").data[13] = f32::NAN;
    weights::save(&store, path).expect("saved");
    let out = cnnc(&[
        "eval",
        run.file(),
        "--model",
        "deep",
        "--weights",
        run.path("out/deep.safetensors"),
        "--data",
        run.data(),
    ]);
    insta::assert_snapshot!("eval_nan_weights", failure(&out, &run.dir));
}

#[test]
fn eval_names_its_data_as_run_does() {
    let run = Trained::new("flags");
    let weights = run.path("out/deep.safetensors");
    let eval = |extra: &[&str]| {
        let args = ["eval", run.file(), "--model", "deep", "--weights", weights];
        cnnc(&[&args[..], extra].concat())
    };
    // `--data` is Fashion-MNIST's folder, as in `cnnc run` and `cnnc show`;
    // `--data-dir`, its old name here, still works; `--test` is the data set.
    let new = eval(&["--test", "fashion", "--data", run.data()]);
    assert!(new.status.success(), "{}", stderr(&new));
    let old = eval(&["--data-dir", run.data()]);
    assert!(old.status.success(), "{}", stderr(&old));
    assert_eq!(new.stdout, old.stdout);
    // `--data` in its old meaning here, the data set, is refused with a note.
    let out = eval(&["--data", "fashion"]);
    insta::assert_snapshot!("eval_data_fashion", failure(&out, &run.dir));
    let classes = run.dir.join("photos");
    for class in ["a", "b"] {
        std::fs::create_dir_all(classes.join(class)).expect("class folder");
    }
    let out = eval(&["--data", run.path("photos")]);
    insta::assert_snapshot!("eval_data_image_folder", failure(&out, &run.dir));
}
