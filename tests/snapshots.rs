//! Golden snapshots of every stdlib model and example: the shape-inferred
//! graph (`cnnc compile --emit graph`) and the summary table (`cnnc summary`).
//! A change in elaboration, shapes, parameter counts or FLOPs shows up here.

use std::path::{Path, PathBuf};

fn cnn_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cnn"))
        .collect();
    files.sort();
    files
}

fn snapshot_dir(dir: &str) {
    for file in cnn_files(dir) {
        let models = cnnc::check_file(&file).unwrap_or_else(|d| panic!("{}:\n{d}", file.display()));
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 file name");
        for model in models {
            let name = format!("{dir}__{stem}__{}", model.graph.name);
            insta::assert_snapshot!(format!("{name}__graph"), cnnc::emit::graph_text(&model));
            insta::assert_snapshot!(format!("{name}__summary"), cnnc::emit::summary(&model));
        }
    }
}

#[test]
fn stdlib_models() {
    snapshot_dir("stdlib");
}

#[test]
fn examples() {
    snapshot_dir("examples");
}

#[test]
fn every_stdlib_file_is_built_in() {
    let on_disk: Vec<String> = cnn_files("stdlib")
        .iter()
        .map(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .expect("utf-8")
                .to_string()
        })
        .collect();
    let built_in: Vec<String> = cnnc::stdlib::MODULES
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(
        on_disk, built_in,
        "src/stdlib.rs must list every file of stdlib/"
    );
    for (name, text) in cnnc::stdlib::MODULES {
        let disk = std::fs::read_to_string(Path::new("stdlib").join(format!("{name}.cnn")))
            .expect("readable");
        assert_eq!(
            &disk, text,
            "stdlib/{name}.cnn differs from the built-in copy"
        );
    }
}

/// The training graph (forward, losses, backward) of small models that use
/// every kind of gradient: convolutions, batchnorm, residual sums, an
/// SE-block's broadcast multiply, concatenation, pooling and dropout.
#[test]
fn training_graphs() {
    let source = r#"
        use se
        model m : [8, 8, 3] {
            let stem = conv(8, 3, padding: same, use_bias: false) -> batchnorm -> relu
            let a = stem -> conv(4, 1, activation: relu)
            let b = stem -> maxpool(3, stride: 1, padding: same) -> conv(4, 1, activation: relu)
            let joined = concat(a, b) -> se_block(ratio: 4)
            stem + joined
            global_avg_pool
            dropout(0.5)
            dense(10, activation: softmax)
        }
    "#;
    let model =
        cnnc::compile_source("training.cnn", source, None, None).unwrap_or_else(|d| panic!("{d}"));
    let spec = cnnc::autodiff::LossSpec {
        smoothing: 0.0,
        weights: Vec::new(),
    };
    let training = cnnc::autodiff::differentiate(&model, &spec).expect("differentiates");
    insta::assert_snapshot!(
        "training_graph_blocks",
        cnnc::emit::graph_text(&training.typed)
    );
}

/// The fused kernel plans (`cnnc compile --emit kernels`, batch 32) of the
/// examples: which ops went into which kernel, on which buffers.
#[test]
fn kernel_plans() {
    for file in cnn_files("examples") {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 file name")
            .to_string();
        for model in cnnc::check_file(&file).unwrap_or_else(|d| panic!("{}:\n{d}", file.display()))
        {
            let plan = cnnc::plan_inference(&model, 32).unwrap_or_else(|e| panic!("{stem}: {e}"));
            insta::assert_snapshot!(
                format!("kernels__{stem}__{}", model.graph.name),
                plan.to_string()
            );
        }
    }
}

/// The Cranelift IR (`cnnc compile --emit clif`) of a small model's
/// kernels: a convolution's fused epilogue, a global pooling window and a
/// softmax reduction.
#[test]
fn clif_of_a_small_model() {
    let source = "model m : [4, 4, 3] { conv(4, 3, padding: same, activation: relu) -> global_avg_pool -> softmax }";
    let model =
        cnnc::compile_source("small.cnn", source, None, None).unwrap_or_else(|d| panic!("{d}"));
    let compiled = cnnc::compile_inference(&model, 2).expect("compiles");
    let kernels = compiled.program.clif();
    let text: String = kernels
        .iter()
        .map(|(name, clif)| format!("; kernel {name}\n{clif}\n"))
        .collect();
    assert_eq!(kernels.len(), 3, "{text}");
    insta::assert_snapshot!("clif_small_model", text);
}
