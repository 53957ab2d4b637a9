//! `cnnc import`: PyTorch's ONNX files (tests/fixtures/onnx, made by
//! make.py there) become .cnn files that read like a person's (snapshots,
//! reviewed) and compute what PyTorch did; cnnc's own exports come back as
//! the same model; what the language cannot express is listed, node by
//! node, and nothing is written. `tests/onnx/check.py` runs the round trip
//! of every stdlib and example model.

use std::path::{Path, PathBuf};
use std::process::Command;

use cnnc::onnx::{self, ExportOptions, ImportError, ImportOptions};
use cnnc::runtime::inference::Inference;
use cnnc::runtime::weights::{self, TensorStore};
use cnnc::TypedGraph;
use ndarray::ArrayD;
use onnx_protobuf::{Message, ModelProto};

const FIXTURES: &str = "tests/fixtures/onnx";

fn import(bytes: &[u8], model: &str) -> Result<onnx::Imported, ImportError> {
    onnx::import(
        bytes,
        ImportOptions {
            model,
            source: "fixture.onnx",
        },
    )
}

fn compile(text: &str) -> TypedGraph {
    cnnc::compile_source("imported.cnn", text, None, None).expect("the import compiles")
}

/// The outputs of `model` with `store` on `input` (examples, NHWC).
fn run(model: &TypedGraph, store: TensorStore, input: &[f32], batch: usize) -> Vec<f32> {
    let compiled = cnnc::compile_inference(model, batch).expect("compiles");
    let mut inference = Inference::new(compiled, store, 1).expect("starts");
    inference.run(input).expect("runs").remove(0).1
}

fn relative_error(ours: &[f32], theirs: &[f32]) -> f32 {
    assert_eq!(ours.len(), theirs.len());
    let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    let worst = ours
        .iter()
        .zip(theirs)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    worst / scale
}

/// `x` of shape `[n, c, h, w]` as `[n, h, w, c]`.
fn nchw_to_nhwc(x: &ArrayD<f32>) -> Vec<f32> {
    x.view()
        .permuted_axes(vec![0, 2, 3, 1])
        .iter()
        .copied()
        .collect()
}

#[test]
fn pytorch_models_import_as_readable_files_that_compute_what_pytorch_did() {
    for name in ["lenet", "resnet", "separable"] {
        let bytes = std::fs::read(format!("{FIXTURES}/{name}.onnx")).expect("fixture");
        let imported = import(&bytes, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        insta::assert_snapshot!(format!("import_{name}"), imported.text);
        let model = compile(&imported.text);
        let input: ArrayD<f32> =
            ndarray_npy::read_npy(format!("{FIXTURES}/{name}.input.npy")).expect("input");
        let expected: ArrayD<f32> =
            ndarray_npy::read_npy(format!("{FIXTURES}/{name}.output.npy")).expect("output");
        let ours = run(
            &model,
            imported.weights,
            &nchw_to_nhwc(&input),
            input.shape()[0],
        );
        let error = relative_error(&ours, expected.as_slice().expect("contiguous"));
        assert!(error <= 1e-4, "{name}: relative error {error}");
    }
}

/// `model` of `file` exported with weights of `seed` and imported back.
fn round_trip(
    file: &str,
    model: Option<&str>,
    seed: u64,
) -> (TypedGraph, TensorStore, onnx::Imported) {
    let original = cnnc::load_model(Path::new(file), model).expect("model");
    let mut store = weights::init(&original, seed);
    // Biases and batchnorm statistics that are not zeros and ones, so that a
    // misplaced one shows.
    for (name, tensor) in store.iter_mut() {
        if !name.ends_with(".kernel") && !name.ends_with(".centers") {
            for (i, v) in tensor.data.iter_mut().enumerate() {
                *v = 0.5 + 0.25 * ((i * 7 + name.len()) % 5) as f32 / 4.0;
            }
        }
    }
    let bytes = onnx::export(&original, &store, ExportOptions { source: file }).expect("exports");
    let imported = import(&bytes, "again").expect("imports");
    (original, store, imported)
}

#[test]
fn cnnc_exports_come_back_as_the_same_model() {
    let models = [
        ("examples/fashion_cnn.cnn", None),
        ("examples/lenet5.cnn", None),
        ("tests/onnx/ops.cnn", Some("activations")),
        ("tests/onnx/ops.cnn", Some("convolutions")),
        ("tests/onnx/ops.cnn", Some("pooling")),
        ("tests/onnx/ops.cnn", Some("shapes")),
    ];
    for (file, name) in models {
        let (original, store, imported) = round_trip(file, name, 3);
        let again = compile(&imported.text);
        assert_eq!(
            again.param_counts(),
            original.param_counts(),
            "{file} {name:?}"
        );
        let elements = original.input_shape().unwrap().elements() as usize;
        let input: Vec<f32> = (0..2 * elements)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let before = run(&original, store, &input, 2);
        let after = run(&again, imported.weights, &input, 2);
        assert_eq!(
            before, after,
            "{file} {name:?}: the same computation, bit for bit"
        );
    }
}

/// The ONNX model `cnnc export` writes for the model of `file` with weights
/// drawn with `seed`, parsed.
fn exported(file: &str, seed: u64) -> ModelProto {
    let original = cnnc::load_model(Path::new(file), None).unwrap();
    let store = weights::init(&original, seed);
    let bytes = onnx::export(&original, &store, ExportOptions { source: file }).unwrap();
    ModelProto::parse_from_bytes(&bytes).unwrap()
}

#[test]
fn what_the_language_cannot_express_is_listed_node_by_node() {
    // Two sibling convolutions of an inception module (both read the same
    // tensor), so that neither is downstream of the other.
    let mut model = exported("examples/inception.cnn", 1);
    let graph = model.graph.as_mut().unwrap();
    let first = graph
        .node
        .iter()
        .position(|n| {
            n.op_type == "Conv"
                && graph
                    .node
                    .iter()
                    .filter(|m| m.op_type == "Conv" && m.input[0] == n.input[0])
                    .count()
                    > 1
        })
        .expect("siblings");
    let sibling = (first + 1..graph.node.len())
        .find(|&i| {
            graph.node[i].op_type == "Conv" && graph.node[i].input[0] == graph.node[first].input[0]
        })
        .unwrap();
    let names = [
        graph.node[first].name.clone(),
        graph.node[sibling].name.clone(),
    ];
    graph.node[first].op_type = "LpPool".into();
    graph.node[sibling].op_type = "Einsum".into();
    let err = import(&model.write_to_bytes().unwrap(), "m").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("2 node(s) cannot be written")
            && text.contains(&format!(
                "node `{}` (LpPool): the language has no `LpPool`",
                names[0]
            ))
            && text.contains(&format!(
                "node `{}` (Einsum): the language has no `Einsum`",
                names[1]
            )),
        "{text}"
    );
    // Everything downstream is counted, not listed.
    assert!(
        matches!(err, ImportError::Unsupported { after, .. } if after > 10),
        "{text}"
    );
}

#[test]
fn bytes_that_are_no_model_are_an_error_not_a_panic() {
    for bytes in [
        &b""[..],
        b"not a model",
        &[0xff; 64],
        &[0x42, 0x05, 0x01, 0x02],
    ] {
        let result = import(bytes, "m");
        assert!(result.is_err(), "{bytes:?}");
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cnnc-import-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_command_writes_both_files_and_never_replaces_a_file_unasked() {
    let dir = scratch("cli");
    let target = dir.join("lenet.cnn");
    let cnnc = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cnnc"))
            .args([
                "import",
                &format!("{FIXTURES}/lenet.onnx"),
                "-o",
                target.to_str().unwrap(),
            ])
            .args(extra)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    let first = cnnc(&[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let weights_file = dir.join("lenet.safetensors");
    let model = cnnc::load_model(&target, None).expect("the written file compiles");
    weights::load_for(&model, &weights_file).expect("the weights fit it");
    std::fs::write(&target, "# my own work\n").unwrap();
    let second = cnnc(&[]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success() && stderr.contains("--overwrite"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "# my own work\n");
    assert!(cnnc(&["--overwrite"]).status.success());
    assert!(std::fs::read_to_string(&target)
        .unwrap()
        .starts_with("# Imported from lenet.onnx"));
}

#[path = "support/idx.rs"]
mod idx;

#[test]
fn an_imported_model_fine_tunes_from_its_weights_and_exports_from_its_checkpoint() {
    let dir = scratch("fine-tune");
    let data = dir.join("data");
    idx::small_fashion(&data, 256, 64);
    let model = dir.join("lenet.cnn");
    let cnnc = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_cnnc"))
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let model_path = model.to_str().unwrap();
    cnnc(&[
        "import",
        &format!("{FIXTURES}/lenet.onnx"),
        "-o",
        model_path,
    ]);
    // What a user adds to fine-tune: a train section (here for a small set).
    let mut text = std::fs::read_to_string(&model).unwrap();
    text += "\ntrain {\n    validation: 64\n}\n";
    std::fs::write(&model, text).unwrap();
    let start = dir.join("lenet.safetensors");
    let out = dir.join("run");
    cnnc(&[
        "run",
        model_path,
        "--train",
        "fashion",
        "--data",
        data.to_str().unwrap(),
        "--epochs",
        "1",
        "--threads",
        "1",
        "--init-weights",
        start.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    // The run's checkpoint is accepted as weights to export.
    let checkpoint = out.join("lenet.checkpoint.safetensors");
    let exported = dir.join("tuned.onnx");
    let said = cnnc(&[
        "export",
        model_path,
        "--weights",
        checkpoint.to_str().unwrap(),
        "-o",
        exported.to_str().unwrap(),
    ]);
    assert!(
        said.contains("[batch, 28, 28, 1]") && exported.exists(),
        "{said}"
    );
    let before = weights::load_file(&start).unwrap();
    let after = weights::load_file(&out.join("lenet.safetensors")).unwrap();
    assert_eq!(before.len(), after.len());
    for (name, tensor) in before.iter() {
        let trained = after.get(name).unwrap_or_else(|| panic!("{name} kept"));
        assert_ne!(trained, tensor, "{name} trained from PyTorch's values");
    }
}

#[test]
fn a_weight_whose_data_does_not_fill_its_shape_is_named_with_its_node() {
    let mut model = exported("examples/fashion_cnn.cnn", 1);
    let graph = model.graph.as_mut().unwrap();
    let kernel = graph
        .initializer
        .iter_mut()
        .find(|t| t.name == "conv2.kernel")
        .unwrap();
    kernel.raw_data.truncate(kernel.raw_data.len() - 4);
    kernel.dims[0] = i64::MAX;
    let text = import(&model.write_to_bytes().unwrap(), "m")
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("node `conv2` (Conv): its constant `conv2.kernel` cannot be read: more than 2^30 elements"),
        "{text}"
    );
    kernel_with_short_data(&mut model);
    let text = import(&model.write_to_bytes().unwrap(), "m")
        .unwrap_err()
        .to_string();
    assert!(text.contains("bytes of data for"), "{text}");
}

/// `conv2.kernel` of its real shape with four bytes of data missing.
fn kernel_with_short_data(model: &mut ModelProto) {
    let graph = model.graph.as_mut().unwrap();
    let kernel = graph
        .initializer
        .iter_mut()
        .find(|t| t.name == "conv2.kernel")
        .unwrap();
    kernel.dims = vec![128, 64, 3, 3];
}

#[test]
fn files_the_fuzzer_found_are_refused_as_unsupported() {
    // A separable convolution whose `group` lost a bit: its kernel no
    // longer fits its input, which the reader must say (the compile check
    // after it would call it a fault of cnnc's).
    let bytes = std::fs::read("tests/fuzzed/onnx_import-group-changed.onnx").unwrap();
    let err = import(&bytes, "m").unwrap_err();
    assert!(matches!(err, ImportError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("groups"), "{err}");
}

#[test]
fn a_model_named_like_a_layer_and_a_file_name_with_a_newline_still_compile() {
    let bytes = std::fs::read(format!("{FIXTURES}/lenet.onnx")).unwrap();
    let options = ImportOptions {
        model: "conv",
        source: "odd\nname.onnx",
    };
    let imported = onnx::import(&bytes, options).expect("imports");
    assert_eq!(imported.model, "conv_");
    assert!(imported
        .text
        .starts_with("# Imported from odd?name.onnx by cnnc import.\n"));
    compile(&imported.text);
}

#[test]
fn a_matmul_then_an_add_is_one_dense_layer_with_its_bias() {
    // PyTorch writes some linear layers as `MatMul` then `Add`: rewrite the
    // export's `Gemm`s that way and import it.
    let (original, store, _) = round_trip("examples/fashion_cnn.cnn", None, 5);
    let bytes = onnx::export(&original, &store, ExportOptions { source: "f" }).unwrap();
    let mut model = ModelProto::parse_from_bytes(&bytes).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let mut nodes = Vec::new();
    for mut node in std::mem::take(&mut graph.node) {
        if node.op_type != "Gemm" {
            nodes.push(node);
            continue;
        }
        let bias = node.input.pop().expect("a bias");
        let output = std::mem::replace(&mut node.output[0], format!("{}/product", node.name));
        node.op_type = "MatMul".into();
        let mut add = node.clone();
        add.op_type = "Add".into();
        add.name = format!("{}/bias", node.name);
        add.input = vec![node.output[0].clone(), bias];
        add.output = vec![output];
        nodes.extend([node, add]);
    }
    graph.node = nodes;
    let imported = import(&model.write_to_bytes().unwrap(), "m").expect("imports");
    assert_eq!(
        imported.text.matches("dense(").count(),
        3,
        "{}",
        imported.text
    );
    assert!(
        !imported.text.contains("use_bias: false"),
        "{}",
        imported.text
    );
    let again = compile(&imported.text);
    assert_eq!(again.param_counts(), original.param_counts());
    let input: Vec<f32> = (0..2 * 28 * 28).map(|i| (i % 13) as f32 / 13.0).collect();
    let ours = run(&again, imported.weights, &input, 2);
    let theirs = run(&original, store, &input, 2);
    assert_eq!(ours, theirs);
}
