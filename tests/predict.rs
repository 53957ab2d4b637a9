//! `cnnc predict` on NumPy arrays: batches with a partial last one, and the
//! errors for an array or a weights file that does not fit the model.

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
