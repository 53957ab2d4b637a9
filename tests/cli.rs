//! The `cnnc` binary: exit codes, where output goes, and each command's format.

use std::process::{Command, Output};

fn cnnc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("cnnc runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_is_silent_on_success() {
    let out = cnnc(&["check", "examples/fashion_cnn.cnn"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
}

#[test]
fn check_reports_errors_on_stderr_with_a_nonzero_exit() {
    let dir = std::env::temp_dir().join(format!("cnnc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("bad.cnn");
    std::fs::write(
        &file,
        "model m : [28, 28, 1] {\n    conv(8, 3, padding: smae)\n}\n",
    )
    .expect("write");
    let out = cnnc(&["check", file.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(err.contains("bad.cnn:2:25"), "{err}");
    assert!(err.contains("did you mean `same`?"), "{err}");
}

#[test]
fn summary_prints_totals() {
    let out = cnnc(&["summary", "examples/fashion_cnn.cnn"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Total params: 1,413,834"), "{text}");
    assert!(
        text.contains("Forward FLOPs per example: 178.9 M"),
        "{text}"
    );
}

#[test]
fn graph_dot_has_a_cluster_per_block() {
    let out = cnnc(&["graph", "examples/resnet34.cnn", "--format", "dot"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dot = stdout(&out);
    assert!(dot.starts_with("digraph"), "{dot}");
    assert!(dot.contains("subgraph \"cluster_"), "{dot}");
    assert_eq!(dot.matches('{').count(), dot.matches('}').count());
}

#[test]
fn compile_emit_graph_is_the_library_dump() {
    let out = cnnc(&["compile", "examples/lenet5.cnn", "--emit", "graph"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let model = cnnc::load_model(std::path::Path::new("examples/lenet5.cnn"), None)
        .expect("lenet5 compiles");
    assert_eq!(stdout(&out), cnnc::emit::graph_text(&model));
}

#[test]
fn several_models_need_a_choice() {
    let out = cnnc(&["summary", "stdlib/resnet.cnn"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--model"), "{}", stderr(&out));
    let out = cnnc(&["summary", "stdlib/resnet.cnn", "--model", "resnet50"]);
    assert!(
        stdout(&out).contains("Total params: 25,636,712"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn every_command_has_help() {
    for command in [
        "check", "summary", "graph", "compile", "bench", "predict", "grad", "run", "init",
        "import", "export",
    ] {
        let out = cnnc(&[command, "--help"]);
        assert!(out.status.success());
        assert!(stdout(&out).contains("Usage"), "{command}");
    }
}

#[test]
fn a_missing_file_is_an_error_not_a_panic() {
    let out = cnnc(&["check", "no/such/file.cnn"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));
}

#[test]
fn compile_emits_the_kernel_plans() {
    let out = cnnc(&[
        "compile",
        "examples/lenet5.cnn",
        "--emit",
        "kernels",
        "--batch",
        "4",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan = stdout(&out);
    assert!(plan.starts_with("plan lenet5 (batch 4)"), "{plan}");
    assert!(plan.contains("contraction forward"), "{plan}");
    let out = cnnc(&[
        "compile",
        "examples/lenet5.cnn",
        "--emit",
        "train-kernels",
        "--batch",
        "4",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan = stdout(&out);
    for kind in [
        "backward-data",
        "backward-filter",
        "CrossEntropy",
        "update:C1.kernel",
    ] {
        assert!(plan.contains(kind), "no {kind} in\n{plan}");
    }
    assert!(!plan.contains("bf16"), "{plan}");
    // The plan in bf16 (a plan needs no bf16 instructions): weights
    // packed, products in bf16, an activation stored in bf16.
    let out = cnnc(&[
        "compile",
        "examples/resnet34.cnn",
        "--emit",
        "train-kernels",
        "--batch",
        "2",
        "--precision",
        "bf16",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan = stdout(&out);
    for kind in ["pack bf16", "contraction forward bf16", "] bf16 temporary"] {
        assert!(plan.contains(kind), "no {kind} in\n{plan}");
    }
}

#[test]
fn bench_reports_every_figure() {
    let out = cnnc(&[
        "bench",
        "examples/lenet5.cnn",
        "--batch",
        "8",
        "--inference-batch",
        "16",
        "--steps",
        "2",
        "--threads",
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stdout(&out);
    for field in [
        "compile: training step",
        "training, batch 8:",
        "inference, batch 16:",
        "batch-1 latency",
        "arena: training",
    ] {
        assert!(report.contains(field), "no {field} in\n{report}");
    }
}

#[test]
fn a_model_that_cannot_be_trained_is_reported_at_its_output() {
    // Training scores outputs with a cross-entropy, of class scores or of
    // per-pixel scores: an output of rank 2 is neither, an error that
    // points at the layer making it, like a front-end error.
    let dir = std::env::temp_dir().join(format!("cnnc-cli-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("maps.cnn");
    std::fs::write(
        &file,
        "model maps : [8, 8, 1] {\n    conv(2, 3, padding: same)\n    reshape([16, 8])\n}\n",
    )
    .expect("write");
    let path = file.to_str().expect("utf-8");
    let commands = [
        ["compile", path, "--emit", "train-graph"],
        ["compile", path, "--emit", "train-kernels"],
        ["bench", path, "--steps", "1"],
    ];
    for command in commands {
        let emit = command.join(" ");
        let out = cnnc(&command);
        assert_eq!(out.status.code(), Some(1), "{emit}");
        let err = stderr(&out);
        assert!(
            err.contains("training needs class scores, but output `output` has shape [16, 8]"),
            "{emit}: {err}"
        );
        assert!(err.contains("maps.cnn:3:5"), "{emit}: {err}");
        assert!(err.contains("reshape([16, 8])"), "{emit}: {err}");
    }
}

#[test]
fn every_help_text_is_pinned() {
    // The help is the doc comments of each command's flags: a change to one
    // shows up here as a snapshot to review.
    let commands = [
        "check", "summary", "graph", "compile", "run", "eval", "predict", "grad", "init", "export",
        "import", "show", "shapes", "maps", "plot", "bench",
    ];
    let top = cnnc(&["--help"]);
    assert!(top.status.success());
    insta::assert_snapshot!("help", stdout(&top));
    for command in commands {
        let out = cnnc(&[command, "--help"]);
        assert!(out.status.success(), "{command}: {}", stderr(&out));
        insta::assert_snapshot!(format!("help_{command}"), stdout(&out));
    }
}

/// A fresh scratch folder for one test.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cnnc-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// `stderr` of a failed command with `dir` written as `DIR`, for snapshots.
fn failure_text(out: &Output, dir: &std::path::Path) -> String {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    stderr(out).replace(&dir.display().to_string(), "DIR")
}

#[test]
fn run_refuses_a_second_output_smaller_than_the_folders_classes() {
    // Keras's fit fails on the first batch with "Received a label value of 3
    // which is outside the valid range of [0, 2)" (tests/tf/labels.py);
    // cnnc refuses before training, naming the output.
    let dir = scratch("second-output");
    for class in ["a", "b", "c", "d"] {
        std::fs::create_dir_all(dir.join("data").join(class)).expect("class dir");
        for i in 0..5u8 {
            let image = image::GrayImage::from_pixel(8, 8, image::Luma([i * 40]));
            image
                .save(dir.join("data").join(class).join(format!("{i}.png")))
                .expect("png");
        }
    }
    let file = dir.join("two.cnn");
    std::fs::write(
        &file,
        "model two : [8, 8, 1] {\n    flatten\n    output main = dense(4, activation: softmax)\n    output aux = dense(2, activation: softmax)\n}\n",
    )
    .expect("write");
    let out = cnnc(&[
        "run",
        file.to_str().expect("utf-8"),
        "--train",
        dir.join("data").to_str().expect("utf-8"),
        "--out",
        dir.join("out").to_str().expect("utf-8"),
    ]);
    let text = failure_text(&out, &dir);
    assert!(!dir.join("out").join("two.safetensors").exists());
    insta::assert_snapshot!("run_second_output_too_small", text);
    std::fs::remove_dir_all(&dir).expect("removed");
}

/// A gzip-compressed IDX file of unsigned bytes.
fn idx_gz(path: &std::path::Path, magic: u32, dims: &[u32], data: &[u8]) {
    use std::io::Write;
    let mut bytes = magic.to_be_bytes().to_vec();
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&bytes).expect("gzip");
    std::fs::write(path, encoder.finish().expect("gzip")).expect("write");
}

#[test]
fn run_names_an_idx_label_out_of_range() {
    // Six training images whose fifth label is 12: Fashion-MNIST has 10 classes.
    let dir = scratch("idx-label");
    let pixels = |count: u32| vec![0u8; count as usize * 28 * 28];
    idx_gz(
        &dir.join("train-images-idx3-ubyte.gz"),
        0x803,
        &[6, 28, 28],
        &pixels(6),
    );
    idx_gz(
        &dir.join("train-labels-idx1-ubyte.gz"),
        0x801,
        &[6],
        &[0, 1, 2, 3, 12, 5],
    );
    idx_gz(
        &dir.join("t10k-images-idx3-ubyte.gz"),
        0x803,
        &[2, 28, 28],
        &pixels(2),
    );
    idx_gz(&dir.join("t10k-labels-idx1-ubyte.gz"), 0x801, &[2], &[0, 1]);
    let out = cnnc(&[
        "run",
        "examples/lenet5.cnn",
        "--train",
        "fashion",
        "--data",
        dir.to_str().expect("utf-8"),
        "--out",
        dir.join("out").to_str().expect("utf-8"),
    ]);
    let text = failure_text(&out, &dir);
    insta::assert_snapshot!("run_idx_label_out_of_range", text);
    std::fs::remove_dir_all(&dir).expect("removed");
}

#[test]
fn bench_draws_labels_that_every_output_scores() {
    // bench trains on made-up labels; with a second output of 2 scores they
    // must stay below 2, or the step refuses them.
    let dir = scratch("bench-outputs");
    let file = dir.join("two.cnn");
    std::fs::write(
        &file,
        "model two : [4, 4, 1] {\n    flatten\n    output main = dense(10, activation: softmax)\n    output aux = dense(2, activation: softmax)\n}\n",
    )
    .expect("write");
    let path = file.to_str().expect("utf-8");
    let out = cnnc(&[
        "bench",
        path,
        "--steps",
        "1",
        "--batch",
        "4",
        "--threads",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("training, batch 4:"),
        "{}",
        stdout(&out)
    );
    std::fs::remove_dir_all(&dir).expect("removed");
}

/// A folder of four classes of ten 8x8 grey images each.
fn four_class_folder(dir: &std::path::Path) -> std::path::PathBuf {
    let data = dir.join("data");
    for (c, class) in ["a", "b", "c", "d"].iter().enumerate() {
        std::fs::create_dir_all(data.join(class)).expect("class dir");
        for i in 0..10u8 {
            let value = (c as u8) * 60 + i * 3;
            let image = image::GrayImage::from_pixel(8, 8, image::Luma([value]));
            image
                .save(data.join(class).join(format!("{i}.png")))
                .expect("png");
        }
    }
    data
}

#[test]
fn init_weights_start_training_from_a_file_and_keep_new_layers_initializers() {
    // Train a model, then a second one that shares its convolution and has
    // a new head (another name): the convolution starts from the file (with
    // a learning rate of 0 it ends as it started), the head from its
    // initializers, the file's old head is left out.
    let dir = scratch("init-weights");
    let data = four_class_folder(&dir);
    let write = |name: &str, head: &str| {
        let file = dir.join(format!("{name}.cnn"));
        let source = format!(
            "model {name} : [8, 8, 1] {{\n    conv(4, 3) -> relu\n    flatten\n    {head}\n}}\n"
        );
        std::fs::write(&file, source).expect("write");
        file
    };
    let path = |p: &std::path::Path| p.to_str().expect("utf-8").to_string();
    let base = write("base", "dense(4, activation: softmax)");
    let train = |file: &std::path::Path, out: &str, extra: &[&str]| {
        let mut args = vec![
            "run".to_string(),
            path(file),
            "--train".into(),
            path(&data),
            "--epochs".into(),
            "1".into(),
            "--batch".into(),
            "4".into(),
            "--out".into(),
            path(&dir.join(out)),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cnnc(&args)
    };
    let out = train(&base, "base-out", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let trained = dir.join("base-out").join("base.safetensors");

    let tuned = write("tuned", "dense(4, activation: softmax) as head");
    let out = train(
        &tuned,
        "tuned-out",
        &["--lr", "0", "--init-weights", &path(&trained)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("(2 of the model's 4 weights)"),
        "{}",
        stdout(&out)
    );
    let report = stderr(&out);
    assert!(
        report.contains("2 weights loaded; 2 keep their initializers (not in the file): `head.kernel`, `head.bias`"),
        "{report}"
    );
    assert!(
        report.contains("`dense1.bias`, `dense1.kernel`"),
        "{report}"
    );
    let load = |p: std::path::PathBuf| cnnc::runtime::weights::load_file(&p).expect("weights");
    let (before, after) = (
        load(trained.clone()),
        load(dir.join("tuned-out").join("tuned.safetensors")),
    );
    for weight in ["conv1.kernel", "conv1.bias"] {
        assert_eq!(
            before.get(weight).expect("in the file").data,
            after.get(weight).expect("trained").data,
            "{weight} must start from the file"
        );
    }

    // A head of another size under the old name: an error that lists it
    // and says how to start it afresh; nothing is written.
    let changed = write("changed", "dense(3, activation: softmax)");
    let out = train(
        &changed,
        "changed-out",
        &["--init-weights", &path(&trained)],
    );
    let text = failure_text(&out, &dir);
    assert!(
        text.contains("`dense1.kernel` has shape [144, 4] but the model needs [144, 3]"),
        "{text}"
    );
    assert!(text.contains("starts afresh under another name"), "{text}");
    assert!(!dir.join("changed-out").join("changed.safetensors").exists());
    std::fs::remove_dir_all(&dir).expect("removed");
}

#[test]
fn the_fine_tuning_recipe_freezes_the_base_then_trains_everything() {
    // examples/fine_tune.cnn's three runs on a small model: a base trained
    // with one head; a new head on the frozen base (its weights, batchnorm's
    // moving statistics included, end as the first run left them); then
    // everything, the base moving again.
    let dir = scratch("fine-tune");
    let data = four_class_folder(&dir);
    let file = dir.join("recipe.cnn");
    let models: String = [("pretrain", "old_head", ""), ("new_head", "head", "freeze: [\"base\"]"), ("fine_tune", "head", "")]
        .iter()
        .map(|(model, head, freeze)| {
            format!("model {model} : [8, 8, 1] {{\n    base_cnn as base\n    dense(4, activation: softmax) as {head}\n}}\ntrain {model} {{\n    optimizer: adam(lr: 0.01)\n    {freeze}\n}}\n")
        })
        .collect();
    let source = format!(
        "block base_cnn {{\n    conv(4, 3) -> batchnorm -> relu\n    flatten\n}}\n{models}"
    );
    std::fs::write(&file, source).expect("write");
    let path = |p: &std::path::Path| p.to_str().expect("utf-8").to_string();
    let run = |model: &str, init: Option<&str>| {
        let mut args = vec![
            "run".to_string(),
            path(&file),
            "--model".into(),
            model.into(),
            "--train".into(),
            path(&data),
            "--epochs".into(),
            "2".into(),
            "--batch".into(),
            "4".into(),
            "--out".into(),
            path(&dir.join("runs")),
        ];
        if let Some(init) = init {
            args.extend([
                "--init-weights".to_string(),
                path(&dir.join("runs").join(init)),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = cnnc(&args);
        assert!(out.status.success(), "{model}: {}", stderr(&out));
        cnnc::runtime::weights::load_file(&dir.join("runs").join(format!("{model}.safetensors")))
            .expect("weights")
    };
    let pretrained = run("pretrain", None);
    let head = run("new_head", Some("pretrain.safetensors"));
    let tuned = run("fine_tune", Some("new_head.safetensors"));
    let base = [
        "base.conv1.kernel",
        "base.conv1.bias",
        "base.batchnorm1.gamma",
        "base.batchnorm1.beta",
        "base.batchnorm1.moving_mean",
        "base.batchnorm1.moving_variance",
    ];
    let get = |store: &cnnc::runtime::weights::TensorStore, w: &str| {
        store.get(w).unwrap_or_else(|| panic!("{w}")).data.clone()
    };
    for weight in base {
        assert_eq!(
            get(&pretrained, weight),
            get(&head, weight),
            "{weight} trained while frozen"
        );
        assert_ne!(
            get(&head, weight),
            get(&tuned, weight),
            "{weight} did not train"
        );
    }
    assert_ne!(get(&head, "head.kernel"), get(&tuned, "head.kernel"));
    assert!(head.get("old_head.kernel").is_none());
    std::fs::remove_dir_all(&dir).expect("removed");
}

/// A cnnc built without MPI that an MPI launcher starts as one of several
/// ranks says how to build it with MPI instead of training copies.
#[cfg(not(feature = "mpi"))]
#[test]
fn run_under_mpirun_without_mpi_says_how_to_build_it() {
    let dir = scratch("no-mpi");
    let out = Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(["run", "examples/lenet5.cnn", "--train", "fashion", "--out"])
        .arg(dir.join("out"))
        .env("NO_COLOR", "1")
        // What OpenMPI's mpirun sets for the second of three ranks.
        .env("OMPI_COMM_WORLD_RANK", "1")
        .env("OMPI_COMM_WORLD_SIZE", "3")
        .output()
        .expect("cnnc runs");
    let text = failure_text(&out, &dir);
    assert!(!dir.join("out").exists(), "nothing is written");
    insta::assert_snapshot!("run_under_mpirun_without_mpi", text);
    std::fs::remove_dir_all(&dir).expect("removed");
}

const UNFORMATTED: &str = "model m:[8,8,1]{conv(4,3)   # a\nrelu;flatten}\n";
const FORMATTED: &str = "model m : [8, 8, 1] {\n    conv(4, 3)  # a\n    relu\n    flatten\n}\n";

#[test]
fn fmt_check_names_the_first_line_to_change_and_changes_nothing() {
    let dir = scratch("fmt-check");
    let file = dir.join("m.cnn");
    std::fs::write(&file, UNFORMATTED).expect("write");
    let out = cnnc(&["fmt", "--check", dir.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("this file is not formatted"), "{err}");
    assert!(err.contains("m.cnn:1:1"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).expect("read"), UNFORMATTED);
}

#[test]
fn fmt_rewrites_files_in_place_and_then_checks_clean() {
    let dir = scratch("fmt-write");
    let file = dir.join("m.cnn");
    std::fs::write(&file, UNFORMATTED).expect("write");
    let path = file.to_str().expect("utf-8");
    let out = cnnc(&["fmt", path]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read_to_string(&file).expect("read"), FORMATTED);
    let again = cnnc(&["fmt", "--check", path]);
    assert!(again.status.success(), "{}", stderr(&again));
}

#[test]
fn fmt_formats_standard_input_to_standard_output() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .arg("fmt")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cnnc runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(UNFORMATTED.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("cnnc finishes");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), FORMATTED);
}

#[test]
fn fmt_leaves_a_file_with_a_syntax_error_as_it_is() {
    let dir = scratch("fmt-error");
    let file = dir.join("bad.cnn");
    let text = "model m : [8, 8, 1] {\n    conv(4, 3\n}\n";
    std::fs::write(&file, text).expect("write");
    let out = cnnc(&["fmt", file.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("bad.cnn:"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).expect("read"), text);
}
