//! The kernel plans of every stdlib model and example hold the plan's
//! invariants (`KernelPlan::verify`: every argument exists with the length
//! its kernel needs, every buffer is written before it is read, nothing
//! writes what the caller lends read-only): the planning functions verify
//! after lowering and after fusion, so planning each model is the check.
//! The fused plans are verified again here, and their memory is placed.

use std::path::PathBuf;

use cnnc::autodiff::LossSpec;
use cnnc::config::TrainConfig;
use cnnc::TypedGraph;

fn models(dir: &str) -> Vec<(PathBuf, TypedGraph)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cnn"))
        .collect();
    files.sort();
    let mut all = Vec::new();
    for file in files {
        let graphs = cnnc::check_file(&file).unwrap_or_else(|d| panic!("{}:\n{d}", file.display()));
        all.extend(graphs.into_iter().map(|g| (file.clone(), g)));
    }
    assert!(!all.is_empty(), "{dir} has models");
    all
}

/// Plans inference and a training step of every model of `dir` at batch 2
/// (and inference at batch 1), verifying and placing each plan.
fn plans_verify(dir: &str) {
    let loss = LossSpec {
        smoothing: 0.1,
        weights: Vec::new(),
    };
    for (file, model) in models(dir) {
        let at = |what: &str| format!("{} `{}` {what}", file.display(), model.graph.name);
        let mut plans = Vec::new();
        for batch in [1, 2] {
            let plan = cnnc::plan_inference(&model, batch)
                .unwrap_or_else(|e| panic!("{}: {e}", at("inference")));
            plans.push(plan);
        }
        // Models whose outputs are neither class scores nor per-pixel
        // scores cannot be trained.
        if model
            .outputs()
            .iter()
            .all(|(_, shape)| matches!(shape.len(), 1 | 3))
        {
            let train = model.graph.train.clone().unwrap_or_default();
            let plan = cnnc::plan_training(&model, &loss, &train.optimizer, 2)
                .unwrap_or_else(|e| panic!("{}: {e}", at("training")));
            plans.push(plan);
        }
        for plan in plans {
            plan.verify()
                .unwrap_or_else(|e| panic!("{}: {e}", at("plan")));
            cnnc::memory::plan(&plan).unwrap_or_else(|e| panic!("{}: {e}", at("memory")));
        }
    }
}

#[test]
fn stdlib_plans_verify() {
    plans_verify("stdlib");
}

#[test]
fn example_plans_verify() {
    plans_verify("examples");
}

#[test]
fn every_example_has_a_training_plan() {
    // Guards the filter above: the examples are all trainable classifiers
    // or segmentation models, so none may be skipped silently.
    for (file, model) in models("examples") {
        let train = model
            .graph
            .train
            .clone()
            .unwrap_or_else(TrainConfig::default);
        let loss = LossSpec {
            smoothing: 0.0,
            weights: Vec::new(),
        };
        // Class scores, or per-pixel scores (segmentation).
        let trainable = model
            .outputs()
            .iter()
            .all(|(_, shape)| matches!(shape.len(), 1 | 3));
        assert!(
            trainable || file.ends_with("line_filters.cnn"),
            "{} `{}` has an output that is not class scores",
            file.display(),
            model.graph.name
        );
        if trainable {
            cnnc::plan_training(&model, &loss, &train.optimizer, 1)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
    }
}

/// A convolution's activation becomes its epilogue, except on a product of
/// a few rows, which its kernel splits over the output channels (no item
/// finishes a whole row): there it stays a step of its own.
#[test]
fn few_row_products_keep_their_activation_apart() {
    use cnnc::plan::{ContractionPass, KernelDesc};
    let source =
        "model m : [7, 7, 8] { conv(128, 3, padding: same, activation: relu) -> flatten -> dense(10) }";
    let model = cnnc::compile_source("m.cnn", source, None, None).unwrap_or_else(|d| panic!("{d}"));
    // 49 rows at batch 1, 98 at batch 2.
    for (batch, fused) in [(1, false), (2, true)] {
        let plan = cnnc::plan_inference(&model, batch).expect("plans");
        let epilogue = plan.steps.iter().find_map(|step| match &step.kernel {
            KernelDesc::Contraction {
                pass: ContractionPass::Forward { epilogue },
                name,
                ..
            } if name.starts_with("conv") => Some(epilogue.is_some()),
            _ => None,
        });
        assert_eq!(epilogue, Some(fused), "batch {batch}: {:#?}", plan.steps);
        let elementwise = plan
            .steps
            .iter()
            .filter(|s| matches!(s.kernel, KernelDesc::Elementwise { .. }))
            .count();
        assert_eq!(elementwise > 0, !fused, "batch {batch}: {:#?}", plan.steps);
    }
}
