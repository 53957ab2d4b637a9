//! `cnnc grad` and `cnnc predict --mode`: the files they write against the
//! library's gradient program and training-mode forward, and the errors for
//! arrays and weights that do not fit the model.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cnnc::runtime::gradients::Gradients;
use cnnc::runtime::weights::{self, TensorStore};
use cnnc::{Mode, TypedGraph};
use ndarray::{ArrayD, IxDyn};

/// A model with batchnorm (so that the modes differ) and two outputs.
const TWO_OUTPUTS: &str = "
model m : [4, 4, 2] {
    conv(3, 3, padding: same) -> batchnorm -> relu
    let features = global_avg_pool
    output scores = features -> dense(4, activation: softmax)
    output embedding = features -> dense(2)
}
";

const ONE_OUTPUT: &str = "
model m : [4, 4, 2] {
    conv(3, 3, padding: same) -> batchnorm -> relu
    flatten
    dense(3)
}
";

fn cnnc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("cnnc runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cnnc-grad-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i + seed) * 37 % 101) as f32 / 50.0) - 1.0)
        .collect()
}

fn write(path: &Path, shape: &[usize], data: Vec<f32>) {
    let array = ArrayD::from_shape_vec(IxDyn(shape), data).expect("shape");
    ndarray_npy::write_npy(path, &array).expect("written");
}

fn read(path: &Path) -> ArrayD<f32> {
    ndarray_npy::read_npy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A model from `source` in `dir`, with initial weights saved next to it
/// (moving statistics made different from a batch's, so the modes differ).
fn setup(dir: &Path, source: &str) -> (TypedGraph, TensorStore, PathBuf, PathBuf) {
    let file = dir.join("model.cnn");
    std::fs::write(&file, source).expect("written");
    let model = cnnc::load_model(&file, None).unwrap_or_else(|d| panic!("{d}"));
    let mut store = weights::init(&model, 1);
    for (name, tensor) in store.iter_mut() {
        if name.ends_with("moving_mean") {
            tensor.data.iter_mut().for_each(|v| *v = 0.3);
        }
    }
    let weights_path = dir.join("w.safetensors");
    weights::save(&store, &weights_path).expect("saved");
    (model, store, file, weights_path)
}

#[test]
fn grad_writes_the_library_results_for_each_output_and_weight() {
    let dir = temp("two");
    let (model, store, file, weights_path) = setup(&dir, TWO_OUTPUTS);
    let batch = 3;
    let input = values(batch * 32, 1);
    write(&dir.join("x.npy"), &[batch, 4, 4, 2], input.clone());
    let upstream = vec![
        ("scores".to_string(), values(batch * 4, 2)),
        ("embedding".to_string(), values(batch * 2, 3)),
    ];
    write(&dir.join("dscores.npy"), &[batch, 4], upstream[0].1.clone());
    write(&dir.join("demb.npy"), &[batch, 2], upstream[1].1.clone());
    let (out, x) = (dir.join("out"), dir.join("x.npy"));
    let dscores = format!("scores={}", text(&dir.join("dscores.npy")));
    let demb = format!("embedding={}", text(&dir.join("demb.npy")));
    let args = [
        "grad",
        text(&file),
        "--weights",
        text(&weights_path),
        "--input",
        text(&x),
        "--upstream",
        &demb,
        &dscores,
        "--out",
        text(&out),
        "--mode",
        "training",
    ];
    let result = cnnc(&args);
    assert!(result.status.success(), "{}", stderr(&result));
    let program = cnnc::compile_gradients(&model, Mode::Training { dropout: false }, batch)
        .expect("compiles");
    let vjp = Gradients::new(program, store.clone(), 1)
        .expect("runner")
        .run(&input, &upstream)
        .expect("runs");
    for (name, data) in &vjp.outputs {
        let written = read(&out.join(format!("output.{name}.npy")));
        assert_eq!(written.shape()[0], batch, "{name}");
        assert_eq!(written.iter().copied().collect::<Vec<_>>(), *data, "{name}");
    }
    let input_grad = read(&out.join("input.npy"));
    assert_eq!(input_grad.shape(), [batch, 4, 4, 2]);
    assert_eq!(input_grad.iter().copied().collect::<Vec<_>>(), vjp.input);
    // One file per trainable weight, in its own layout; none for the
    // moving statistics.
    for (name, tensor) in store.iter() {
        let path = out.join(format!("{name}.npy"));
        if name.contains("moving") {
            assert!(!path.exists(), "{name}");
            continue;
        }
        let written = read(&path);
        assert_eq!(written.shape(), tensor.shape.as_slice(), "{name}");
        let expected = &vjp.weights.get(name).expect("gradient").data;
        assert_eq!(
            &written.iter().copied().collect::<Vec<_>>(),
            expected,
            "{name}"
        );
    }
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(stdout.contains("dense1.kernel.npy"), "{stdout}");
}

#[test]
fn grad_accepts_one_example_and_names_the_only_output_output() {
    let dir = temp("one");
    let (_, _, file, weights_path) = setup(&dir, ONE_OUTPUT);
    write(&dir.join("x.npy"), &[4, 4, 2], values(32, 4));
    write(&dir.join("dy.npy"), &[3], vec![1.0, 0.0, -1.0]);
    let out = dir.join("out");
    let result = cnnc(&[
        "grad",
        text(&file),
        "--weights",
        text(&weights_path),
        "--input",
        text(&dir.join("x.npy")),
        "--upstream",
        text(&dir.join("dy.npy")),
        "--out",
        text(&out),
    ]);
    assert!(result.status.success(), "{}", stderr(&result));
    assert_eq!(read(&out.join("output.npy")).shape(), [1, 3]);
    assert_eq!(read(&out.join("input.npy")).shape(), [4, 4, 2]);
    assert_eq!(read(&out.join("conv1.kernel.npy")).shape(), [3, 3, 2, 3]);
}

/// Runs `cnnc grad` on the one-output model with arrays of these shapes.
fn grad_with(name: &str, input: &[usize], upstream: &[usize], weights_ok: bool) -> Output {
    let dir = temp(name);
    let (_, mut store, file, weights_path) = setup(&dir, ONE_OUTPUT);
    if !weights_ok {
        store = store
            .iter()
            .filter(|(n, _)| *n != "dense1.bias")
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect();
        weights::save(&store, &weights_path).expect("saved");
    }
    write(&dir.join("x.npy"), input, vec![0.5; input.iter().product()]);
    write(
        &dir.join("dy.npy"),
        upstream,
        vec![1.0; upstream.iter().product()],
    );
    let out = dir.join("out");
    let result = cnnc(&[
        "grad",
        text(&file),
        "--weights",
        text(&weights_path),
        "--input",
        text(&dir.join("x.npy")),
        "--upstream",
        text(&dir.join("dy.npy")),
        "--out",
        text(&out),
    ]);
    assert_eq!(result.status.code(), Some(1), "{name}");
    assert!(!out.exists(), "{name}: nothing may be written on error");
    result
}

#[test]
fn an_upstream_gradient_of_the_wrong_shape_is_named_with_both_shapes() {
    let result = grad_with("upstream", &[2, 4, 4, 2], &[2, 4], true);
    let err = stderr(&result);
    assert!(
        err.contains("dy.npy` has shape [2, 4], but the upstream gradient of output `output` for the input's 2 examples has shape [2, 3]"),
        "{err}"
    );
}

#[test]
fn an_input_of_the_wrong_shape_is_named_with_both_shapes() {
    let result = grad_with("input", &[2, 4, 5, 2], &[2, 3], true);
    let err = stderr(&result);
    assert!(
        err.contains("x.npy` has shape [2, 4, 5, 2], but the model takes [N, 4, 4, 2]"),
        "{err}"
    );
}

#[test]
fn missing_weights_are_named_with_the_file() {
    let result = grad_with("weights", &[2, 4, 4, 2], &[2, 3], false);
    let err = stderr(&result);
    assert!(
        err.contains("w.safetensors") && err.contains("dense1.bias"),
        "{err}"
    );
}

#[test]
fn several_outputs_need_an_upstream_gradient_each() {
    let dir = temp("names");
    let (_, _, file, weights_path) = setup(&dir, TWO_OUTPUTS);
    write(&dir.join("x.npy"), &[2, 4, 4, 2], values(64, 1));
    write(&dir.join("dy.npy"), &[2, 4], values(8, 1));
    let out = dir.join("out");
    let result = cnnc(&[
        "grad",
        text(&file),
        "--weights",
        text(&weights_path),
        "--input",
        text(&dir.join("x.npy")),
        "--upstream",
        text(&dir.join("dy.npy")),
        "--out",
        text(&out),
    ]);
    assert_eq!(result.status.code(), Some(1));
    let err = stderr(&result);
    assert!(
        err.contains(
            "upstream gradients are given for [?], but the model's outputs are [scores, embedding]"
        ),
        "{err}"
    );
}

#[test]
fn predict_in_training_mode_is_the_library_training_forward() {
    let dir = temp("predict");
    let (model, store, file, weights_path) = setup(&dir, ONE_OUTPUT);
    let batch = 4;
    let input = values(batch * 32, 5);
    write(&dir.join("x.npy"), &[batch, 4, 4, 2], input.clone());
    let run = |mode: &str| {
        let output = dir.join(format!("y-{mode}.npy"));
        let result = cnnc(&[
            "predict",
            text(&file),
            "--weights",
            text(&weights_path),
            "--input",
            text(&dir.join("x.npy")),
            "--output",
            text(&output),
            "--mode",
            mode,
        ]);
        assert!(result.status.success(), "{}", stderr(&result));
        read(&output).iter().copied().collect::<Vec<f32>>()
    };
    let (training, inference) = (run("training"), run("inference"));
    let forward = |mode: Mode| {
        let compiled = cnnc::compile_forward(&model, mode, batch).expect("compiles");
        let mut program =
            cnnc::runtime::inference::Inference::new(compiled, store.clone(), 1).expect("runner");
        program.run(&input).expect("runs").remove(0).1
    };
    assert_eq!(training, forward(Mode::Training { dropout: false }));
    assert_eq!(inference, forward(Mode::Inference));
    assert_ne!(training, inference, "the modes normalise differently");
}
