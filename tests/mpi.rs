//! Data-parallel training under OpenMPI (`cargo test --features mpi --test
//! mpi`; `.ci/run` installs OpenMPI and runs it): `mpirun -np N cnnc run
//! … --train fashion` for N = 1, 2, 3 writes bitwise the weights one
//! process writes, with batchnorm, dropout and augmentation; a checkpoint
//! of 2 ranks resumes on 3; a killed rank ends the job within seconds with
//! its rank named, and the last checkpoint resumes. The same in bf16.
#![cfg(feature = "mpi")]

#[path = "support/idx.rs"]
mod idx;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A small model with batchnorm, dropout and augmentation: 300 training
/// images, 60 of them held out, batches of 30 (8 steps an epoch; 3
/// ranks get 10 images each, 4 would get 7 and 8).
const MODEL: &str = "model small : [28, 28, 1] {
    conv(8, 3, padding: same) -> batchnorm -> relu
    maxpool(2)
    conv(12, 3, padding: same, activation: relu)
    dropout(0.25)
    global_avg_pool
    dense(10, activation: softmax)
}
train small {
    optimizer: adam(lr: 0.01)
    batch: 30
    seed: 3
    validation: 60
    augment: (shift: 2, flip: true, rotation: 10, erase: 0.3)
}
";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cnnc-mpi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    idx::small_fashion(&dir.join("data"), 300, 60);
    std::fs::write(dir.join("small.cnn"), MODEL).expect("model");
    dir
}

/// `cnnc run small.cnn --train fashion` (or the `--train` of `extra`) in
/// `dir`, alone (`ranks` 0) or under `mpirun -np ranks`, into `dir/out`.
fn train(dir: &Path, ranks: usize, out: &str, extra: &[&str]) -> Command {
    let cnnc = env!("CARGO_BIN_EXE_cnnc");
    let mut command = if ranks == 0 {
        Command::new(cnnc)
    } else {
        let mut mpirun = Command::new("mpirun");
        mpirun.args(["--allow-run-as-root", "--oversubscribe", "-np"]);
        mpirun.arg(ranks.to_string()).arg(cnnc);
        mpirun
    };
    command.current_dir(dir).args(["run", "small.cnn"]);
    if !extra.contains(&"--train") {
        command.args(["--train", "fashion", "--data", "data"]);
    }
    command.args(["--out", out]).args(extra);
    if !extra.contains(&"--threads") {
        command.args(["--threads", "1"]);
    }
    command
}

fn finished(mut command: Command) -> Output {
    let out = command
        .output()
        .expect("mpirun (apt-get install openmpi-bin)");
    assert!(
        out.status.success(),
        "{command:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn weights(dir: &Path, out: &str) -> Vec<u8> {
    std::fs::read(dir.join(out).join("small.safetensors")).expect("weights")
}

/// The history without its column of seconds.
fn history(dir: &Path, out: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join(out).join("small.history.csv"))
        .expect("history")
        .lines()
        .map(|line| line.rsplit_once(',').expect("columns").0.to_string())
        .collect()
}

#[test]
fn one_two_and_three_ranks_train_the_weights_of_one_process() {
    let dir = scratch("ranks");
    let epochs = ["--epochs", "3"];
    finished(train(&dir, 0, "alone", &epochs));
    let alone = weights(&dir, "alone");
    for ranks in [1, 2, 3] {
        let out = format!("ranks{ranks}");
        let run = finished(train(&dir, ranks, &out, &epochs));
        assert!(weights(&dir, &out) == alone, "{ranks} ranks: other weights");
        assert_eq!(history(&dir, &out), history(&dir, "alone"), "{ranks} ranks");
        // Rank 0 alone reports.
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert_eq!(stdout.matches("test: loss").count(), 1, "{stdout}");
    }
    // Two threads a rank compute the same bits.
    finished(train(
        &dir,
        2,
        "threads",
        &["--epochs", "3", "--threads", "2"],
    ));
    assert!(weights(&dir, "threads") == alone, "2 ranks of 2 threads");
    std::fs::remove_dir_all(&dir).expect("removed");
}

/// A small model whose activations after batchnorm and dropout feed bf16
/// products, and so are stored in bf16 in a bf16 step.
const BF16_MODEL: &str = "model small : [28, 28, 1] {
    conv(8, 3, padding: same) -> batchnorm -> relu
    conv(16, 3, padding: same) -> batchnorm -> relu
    maxpool(4)
    flatten
    dropout(0.25)
    dense(10, activation: softmax)
}
train small {
    optimizer: adam(lr: 0.01)
    batch: 30
    seed: 3
    validation: 60
    augment: (shift: 2, flip: true)
}
";

/// In bf16 too, 1, 2 and 3 ranks train the weights one process trains:
/// the products' rounding depends on neither the ranks nor the threads,
/// and activations stored in bf16 split at whole examples. On a CPU
/// without bf16 instructions, every run refuses instead, naming them.
#[test]
fn bf16_ranks_train_the_weights_of_one_process() {
    let dir = scratch("bf16");
    std::fs::write(dir.join("small.cnn"), BF16_MODEL).expect("model");
    let plan = Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .current_dir(&dir)
        .args(["compile", "small.cnn", "--emit", "train-kernels"])
        .args(["--batch", "30", "--precision", "bf16"])
        .output()
        .expect("cnnc");
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(plan.contains("] bf16 temporary"), "{plan}");
    let bf16 = ["--epochs", "2", "--precision", "bf16"];
    if cnnc::codegen::contraction::bf16::Backend::best().is_none() {
        for ranks in [0, 2] {
            let out = train(&dir, ranks, &format!("refused{ranks}"), &bf16)
                .output()
                .expect("mpirun");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{ranks} ranks ran bf16");
            assert!(stderr.contains("precision bf16 needs"), "{stderr}");
        }
        std::fs::remove_dir_all(&dir).expect("removed");
        return;
    }
    finished(train(&dir, 0, "alone", &bf16));
    let alone = weights(&dir, "alone");
    finished(train(&dir, 0, "f32", &["--epochs", "2"]));
    assert!(
        weights(&dir, "f32") != alone,
        "bf16 trained the f32 weights"
    );
    for ranks in [1, 2, 3] {
        let out = format!("ranks{ranks}");
        finished(train(&dir, ranks, &out, &bf16));
        assert!(weights(&dir, &out) == alone, "{ranks} ranks: other weights");
        assert_eq!(history(&dir, &out), history(&dir, "alone"), "{ranks} ranks");
    }
    std::fs::remove_dir_all(&dir).expect("removed");
}

#[test]
fn a_checkpoint_of_two_ranks_resumes_on_three() {
    let dir = scratch("resume");
    finished(train(&dir, 0, "alone", &["--epochs", "3"]));
    finished(train(&dir, 2, "moved", &["--epochs", "2"]));
    finished(train(&dir, 3, "moved", &["--epochs", "3", "--resume"]));
    assert!(weights(&dir, "moved") == weights(&dir, "alone"));
    assert_eq!(history(&dir, "moved"), history(&dir, "alone"));
    std::fs::remove_dir_all(&dir).expect("removed");
}

/// The processes whose parent is `parent` and whose MPI rank is `rank`.
fn rank_process(parent: u32, rank: usize) -> Option<u32> {
    let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // The parent's pid is the second field after the command's ")".
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            let has_rank = environ
                .split(|&b| b == 0)
                .any(|var| var == wanted.as_bytes());
            (ppid == parent && has_rank).then_some(pid)
        })
}

/// Starts `command` with its stderr piped, and waits until `file` exists.
fn started_until(mut command: Command, file: &Path) -> Child {
    let job = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpirun");
    let waited = Instant::now();
    while !file.exists() {
        assert!(waited.elapsed() < Duration::from_secs(120), "no {file:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    job
}

/// Sends `signal` to `pid`, then waits for `job` to end, at most 10 s;
/// returns whether it succeeded, and its stderr.
fn ended_by(signal: &str, pid: u32, mut job: Child) -> (bool, String) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let sent = Instant::now();
    let end = loop {
        if let Some(status) = job.try_wait().expect("wait") {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "mpirun still runs 10 s after kill {signal}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut job.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    (end.success(), stderr)
}

#[test]
fn a_killed_rank_ends_the_job_within_seconds_and_the_checkpoint_resumes() {
    let dir = scratch("killed");
    let command = train(
        &dir,
        2,
        "out",
        &["--epochs", "1000", "--checkpoint-every", "2steps"],
    );
    let checkpoint = dir.join("out").join("small.checkpoint.safetensors");
    let job = started_until(command, &checkpoint);
    let victim = rank_process(job.id(), 1).expect("rank 1's process");
    let (success, stderr) = ended_by("-9", victim, job);
    assert!(!success);
    assert!(stderr.contains("rank 1"), "{stderr}");
    // The last checkpoint is whole: one process continues from it, to the
    // end of the epoch it was saved in (the history, if any yet, lists
    // those before it, after its header).
    let done = dir.join("out").join("small.history.csv");
    let epochs = std::fs::read_to_string(done).map_or(1, |h| h.lines().count());
    let epochs = epochs.to_string();
    finished(train(&dir, 0, "out", &["--epochs", &epochs, "--resume"]));
    std::fs::remove_dir_all(&dir).expect("removed");
}

#[test]
fn ctrl_c_on_mpirun_stops_every_rank_after_a_step_and_the_run_resumes_exactly() {
    let dir = scratch("ctrl-c");
    let epochs = ["--epochs", "40"];
    let first_epoch = dir.join("stopped").join("small.history.csv");
    // mpirun kills the ranks 1 s after it passes the signal on: the step
    // and the checkpoint must fit in that (.ci/run runs these tests one at
    // a time, so that a loaded machine does not stretch them).
    let job = started_until(train(&dir, 2, "stopped", &epochs), &first_epoch);
    // What a terminal's Ctrl-C sends mpirun (the ranks have process
    // groups of their own); mpirun passes it on as SIGTERM.
    let mpirun = job.id();
    let (success, stderr) = ended_by("-INT", mpirun, job);
    assert!(!success, "{stderr}");
    assert!(
        stderr.contains("; saved `stopped/small.checkpoint.safetensors`: continue with --resume"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("stopping after this step").count(),
        1,
        "{stderr}"
    );
    // Three ranks continue where two stopped, to the weights of one
    // process that never stopped.
    finished(train(&dir, 3, "stopped", &["--epochs", "40", "--resume"]));
    finished(train(&dir, 0, "alone", &epochs));
    assert!(weights(&dir, "stopped") == weights(&dir, "alone"));
    assert_eq!(history(&dir, "stopped"), history(&dir, "alone"));
    std::fs::remove_dir_all(&dir).expect("removed");
}

#[test]
fn ranks_train_on_an_image_folder_as_one_process() {
    let dir = scratch("folder");
    // Four classes of 28x28 grey images, 30 each (60 held out), told
    // apart by where a bright square sits.
    for class in 0..4u32 {
        let folder = dir.join("images").join(format!("class{class}"));
        std::fs::create_dir_all(&folder).expect("class folder");
        for i in 0..30u32 {
            let image = image::GrayImage::from_fn(28, 28, |x, y| {
                let inside = (x / 14 == class % 2) && (y / 14 == class / 2);
                let value = if inside { 200 + i } else { (x * y + i) % 40 };
                image::Luma([value as u8])
            });
            image.save(folder.join(format!("{i}.png"))).expect("png");
        }
    }
    let run = |ranks: usize, out: &str| {
        let args = ["--train", "images", "--epochs", "2", "--batch", "6"];
        finished(train(&dir, ranks, out, &args));
        weights(&dir, out)
    };
    let alone = run(0, "alone");
    assert!(run(2, "two") == alone, "2 ranks: other weights");
    assert!(run(3, "three") == alone, "3 ranks: other weights");
    std::fs::remove_dir_all(&dir).expect("removed");
}
