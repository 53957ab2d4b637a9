//! `cnnc export` and `cnnc init`: the ONNX file read back with the same
//! protobuf types, checked for what runtimes and people rely on (opset,
//! metadata, NHWC input and outputs with a symbolic batch, node names that
//! are layer paths, a graph whose every value is defined before it is
//! read, weights in ONNX's layouts) and the errors for weights that do not
//! fit. onnxruntime itself judges the outputs in `tests/onnx/check.py`,
//! which `.ci/run` runs.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cnnc::runtime::weights;
use onnx_protobuf::tensor_shape_proto::dimension::Value as Dim;
use onnx_protobuf::type_proto::Value as Type;
use onnx_protobuf::{Message, ModelProto, ValueInfoProto};

fn cnnc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("cnnc runs")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cnnc-onnx-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Exports `model` of `file` (initial weights) and reads the file back.
fn export(file: &str, model: &str, dir: &Path) -> ModelProto {
    let path = dir.join(format!("{model}.onnx"));
    ok(&cnnc(&[
        "export",
        file,
        "--model",
        model,
        "-o",
        path.to_str().unwrap(),
    ]));
    ModelProto::parse_from_bytes(&std::fs::read(&path).expect("written")).expect("valid protobuf")
}

/// A value's dimensions: the symbolic ones by name, the fixed ones as numbers.
fn dims(value: &ValueInfoProto) -> Vec<String> {
    let Some(Type::TensorType(tensor)) = &value.type_.value else {
        panic!("{} is not a tensor", value.name)
    };
    tensor
        .shape
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(Dim::DimParam(name)) => name.clone(),
            Some(Dim::DimValue(v)) => v.to_string(),
            _ => "?".into(),
        })
        .collect()
}

/// Every node reads only the graph's input, initializers and the outputs
/// of nodes before it, and every graph output is defined.
fn assert_well_ordered(model: &ModelProto) {
    let graph = &model.graph;
    let mut defined: HashSet<&str> = graph.input.iter().map(|v| v.name.as_str()).collect();
    defined.extend(graph.initializer.iter().map(|t| t.name.as_str()));
    defined.insert("");
    for node in &graph.node {
        for input in &node.input {
            assert!(
                defined.contains(input.as_str()),
                "{} reads {input}",
                node.name
            );
        }
        for output in &node.output {
            assert!(defined.insert(output), "{output} is written twice");
        }
    }
    for output in &graph.output {
        assert!(defined.contains(output.name.as_str()), "{}", output.name);
    }
}

#[test]
fn the_file_keeps_the_models_interface_names_and_metadata() {
    let dir = scratch("interface");
    let model = export("examples/fashion_cnn.cnn", "fashion_cnn", &dir);
    assert_eq!(model.opset_import[0].version, 17);
    assert_eq!(model.producer_name, "cnnc");
    assert_eq!(model.producer_version, env!("CARGO_PKG_VERSION"));
    let meta: Vec<(&str, &str)> = model
        .metadata_props
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_str()))
        .collect();
    assert!(
        meta.contains(&("source", "examples/fashion_cnn.cnn")),
        "{meta:?}"
    );
    assert!(
        meta.contains(&("cnnc_version", env!("CARGO_PKG_VERSION"))),
        "{meta:?}"
    );
    let graph = &model.graph;
    assert_eq!(graph.input.len(), 1);
    assert_eq!(graph.input[0].name, "input");
    assert_eq!(dims(&graph.input[0]), ["batch", "28", "28", "1"]);
    assert_eq!(graph.output.len(), 1);
    assert_eq!(dims(&graph.output[0]), ["batch", "10"]);
    // Every layer of the summary is a node of that name (dropout included,
    // as an identity), so profilers and viewers show the model as written.
    let typed = cnnc::load_model(Path::new("examples/fashion_cnn.cnn"), None).unwrap();
    let names: HashSet<&str> = graph.node.iter().map(|n| n.name.as_str()).collect();
    for &id in &typed.order {
        let node = &typed.graph.nodes[id];
        if Some(id) != typed.graph.input {
            assert!(names.contains(node.name.as_str()), "no node {}", node.name);
        }
    }
    assert_well_ordered(&model);
}

#[test]
fn feature_map_outputs_and_several_outputs_keep_their_names_and_nhwc_shapes() {
    let dir = scratch("outputs");
    let model = export("tests/onnx/ops.cnn", "pooling", &dir);
    let outputs: Vec<(String, Vec<String>)> = model
        .graph
        .output
        .iter()
        .map(|v| (v.name.clone(), dims(v)))
        .collect();
    assert_eq!(
        outputs,
        [
            ("flat".to_string(), vec!["batch".to_string(), "5".into()]),
            (
                "maps".to_string(),
                ["batch", "3", "2", "2"].map(String::from).to_vec()
            ),
        ]
    );
    for file in ["activations", "convolutions", "pooling", "shapes"] {
        assert_well_ordered(&export("tests/onnx/ops.cnn", file, &dir));
    }
}

#[test]
fn weights_are_written_in_onnx_layouts() {
    let dir = scratch("layouts");
    let file = "examples/fashion_cnn.cnn";
    let typed = cnnc::load_model(Path::new(file), None).unwrap();
    let store = weights::init(&typed, 7);
    let path = dir.join("w.safetensors");
    weights::save(&store, &path).unwrap();
    let onnx = dir.join("m.onnx");
    ok(&cnnc(&[
        "export",
        file,
        "--weights",
        path.to_str().unwrap(),
        "-o",
        onnx.to_str().unwrap(),
    ]));
    let model = ModelProto::parse_from_bytes(&std::fs::read(&onnx).unwrap()).unwrap();
    let tensor = |name: &str| {
        let t = model
            .graph
            .initializer
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no initializer {name}"));
        let values: Vec<f32> = t
            .raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (t.dims.clone(), values)
    };
    // A convolution's [kh, kw, in, out] kernel becomes [out, in, kh, kw].
    let kernel = store.get("conv1.kernel").expect("conv1.kernel");
    let [kh, kw, cin, cout] = kernel.shape[..] else {
        panic!("rank 4")
    };
    let (shape, values) = tensor("conv1.kernel");
    assert_eq!(shape, [cout, cin, kh, kw].map(|d| d as i64));
    for (o, i, y, x) in [
        (0, 0, 0, 0),
        (cout - 1, cin - 1, kh - 1, kw - 1),
        (3, 0, 2, 1),
    ] {
        let ours = kernel.data[((y * kw + x) * cin + i) * cout + o];
        let theirs = values[((o * cin + i) * kh + y) * kw + x];
        assert_eq!(ours, theirs, "kernel[{o}, {i}, {y}, {x}]");
    }
    // A dense kernel is Gemm's B as it is.
    let dense = typed
        .order
        .iter()
        .map(|&id| &typed.graph.nodes[id])
        .find(|n| n.layer_kind == "dense")
        .expect("a dense layer");
    let name = format!("{}.kernel", dense.name);
    let (shape, values) = tensor(&name);
    let original = store.get(&name).unwrap();
    assert_eq!(
        shape,
        original.shape.iter().map(|&d| d as i64).collect::<Vec<_>>()
    );
    assert_eq!(values, original.data);
}

#[test]
fn init_writes_the_weights_training_starts_from() {
    let dir = scratch("init");
    let file = "examples/lenet5.cnn";
    let [a, b, c] = ["a", "b", "c"].map(|n| dir.join(format!("{n}.safetensors")));
    let text = ok(&cnnc(&["init", file, "-o", a.to_str().unwrap()]));
    assert!(text.starts_with("wrote "), "{text}");
    ok(&cnnc(&["init", file, "-o", b.to_str().unwrap()]));
    ok(&cnnc(&[
        "init",
        file,
        "--seed",
        "3",
        "-o",
        c.to_str().unwrap(),
    ]));
    let read = |p: &Path| weights::load_file(p).expect("a weights file");
    assert_eq!(read(&a), read(&b), "the same seed, the same weights");
    assert_ne!(read(&a), read(&c), "another seed, other weights");
    // The train section's seed, as `cnnc run --train` draws them.
    let typed = cnnc::load_model(Path::new(file), None).unwrap();
    let seed = typed.graph.train.clone().unwrap_or_default().seed;
    let drawn = weights::init(&typed, seed);
    let written = read(&a);
    assert_eq!(written.len(), drawn.len());
    for (name, tensor) in drawn.iter() {
        assert!(written.get(name) == Some(tensor), "{name} differs");
    }
}

#[test]
fn weights_that_do_not_fit_are_refused_and_nothing_is_written() {
    let dir = scratch("refused");
    let other = dir.join("lenet.safetensors");
    ok(&cnnc(&[
        "init",
        "examples/lenet5.cnn",
        "-o",
        other.to_str().unwrap(),
    ]));
    let corrupt = dir.join("corrupt.safetensors");
    std::fs::write(&corrupt, b"not a safetensors file").unwrap();
    let target = dir.join("m.onnx");
    for (weights, expected) in [
        (other.to_str().unwrap(), "conv1.kernel"),
        (corrupt.to_str().unwrap(), "corrupt.safetensors"),
        ("missing.safetensors", "missing.safetensors"),
    ] {
        let out = cnnc(&[
            "export",
            "examples/fashion_cnn.cnn",
            "--weights",
            weights,
            "-o",
            target.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!target.exists(), "nothing is written");
    }
}
