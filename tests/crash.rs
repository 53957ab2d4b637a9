//! Training survives what can happen to a process while it trains: a
//! SIGKILL at any moment (inside checkpoint writes too), a file-size limit,
//! Ctrl-C during validation, during the test evaluation and during a
//! checkpoint write, and a second run into the same folder. Each test runs
//! the `cnnc` binary on a small model and a slice of the bundled
//! Fashion-MNIST subset, and checks what is on disk afterwards.
//!
//! The kill trials: `CNNC_CRASH_TRIALS` (10 unless set, as CI runs them)
//! and `CNNC_CRASH_SEED` (12 unless set) say how many and at which moments;
//! the full count, as `docs/reliability.md` reports it:
//!
//! ```text
//! CNNC_CRASH_TRIALS=100 cargo test --test crash killed -- --nocapture
//! ```
//!
//! The killed runs slow their writes down (`CNNC_TEST_SLOW_WRITES`, which
//! debug builds alone read), so that many kills land inside a write.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use cnnc::data::fashion;
use cnnc::runtime::weights::{self, TensorStore};
use cnnc::train::fit::parse_history;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[path = "support/idx.rs"]
mod idx;

/// Milliseconds each write of a killed run takes: with a checkpoint every
/// 2 steps, writes fill most of the run's time.
const SLOW_WRITES_MS: &str = "60";

/// The checkpoint writes of a killed run: 2 epochs of 20 steps, one every
/// 2 steps (the last step's comes with the end of the epoch).
const CHECKPOINT_WRITES: usize = 20;

#[test]
fn killed_at_random_moments_training_resumes_to_the_same_weights() {
    let trials: usize = from_env("CNNC_CRASH_TRIALS", 10);
    let seed: u64 = from_env("CNNC_CRASH_SEED", 12);
    let fixture = Fixture::new("kill", (640 + 128, 128, 256));
    let reference = Reference::new(&fixture);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut counts = Counts::default();
    let started = Instant::now();
    // Half the kills fall uniformly over a run's length, as the reference
    // measured it, or as the shortest run that ended before its kill did
    // (the machine's load changes it); the other half inside a checkpoint
    // write, whatever the load.
    let mut length = reference.slow_seconds;
    for trial in 0..trials {
        let moment = if trial % 2 == 0 {
            Moment::After(rng.random_range(0.0..1.0) * length)
        } else {
            Moment::InCheckpointWrite {
                nth: rng.random_range(1..=CHECKPOINT_WRITES),
                after: rng.random_range(0.0..0.06),
            }
        };
        let outcome = kill_and_resume(&fixture, &reference, trial, moment);
        if let (
            Moment::After(_),
            Ok(Outcome {
                finished: Some(seconds),
                ..
            }),
        ) = (moment, &outcome)
        {
            length = length.min(*seconds);
        }
        counts.add(trial, moment, outcome);
    }
    eprintln!(
        "{trials} kill -9 trials (seed {seed}, {:.0} s): {} resumed bit-exact; killed inside a \
         write (a temporary file left): {}, of which {} inside a checkpoint's; before the first \
         checkpoint: {}; after the run ended: {}",
        started.elapsed().as_secs_f64(),
        counts.bit_exact,
        counts.inside_write,
        counts.inside_checkpoint_write,
        counts.before_checkpoint,
        counts.finished
    );
    assert!(counts.failures.is_empty(), "{:#?}", counts.failures);
    assert_eq!(counts.bit_exact, trials);
    if trials >= 10 {
        assert!(
            counts.inside_checkpoint_write > 0,
            "no kill landed inside a checkpoint write"
        );
    }
}

#[test]
fn a_file_size_limit_stops_training_with_a_clear_error_and_the_files_intact() {
    let fixture = Fixture::new("fsize", (640 + 128, 128, 256));
    let first = fixture
        .run("out", &["--epochs", "1"])
        .output()
        .expect("runs");
    assert!(first.status.success(), "{}", text(&first.stderr));
    let out = fixture.dir.join("out");
    let before = files_of(&out);
    // 16 KiB: room for the lock's process id, not for a checkpoint (35 KB).
    let mut limited = fixture.run("out", &["--resume", "--epochs", "2"]);
    limited.args(["--checkpoint-every", "3steps"]);
    // SAFETY: setrlimit is async-signal-safe, as code between fork and exec must be.
    unsafe {
        limited.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 16 * 1024,
                rlim_max: 16 * 1024,
            };
            match libc::setrlimit(libc::RLIMIT_FSIZE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let stopped = limited.output().expect("runs");
    let message = text(&stopped.stderr);
    assert_eq!(
        stopped.status.signal(),
        None,
        "killed by a signal: {message}"
    );
    assert_eq!(stopped.status.code(), Some(1), "{message}");
    let checkpoint = out.join("tiny.checkpoint.safetensors");
    assert!(
        message.contains(&format!(
            "cannot write the checkpoint `{}`: File too large",
            checkpoint.display()
        )) && message.contains("the previous checkpoint (after epoch 1) is intact")
            && message.contains("--resume"),
        "{message}"
    );
    assert_eq!(files_of(&out), before, "the files changed");
    // With the limit gone, the run continues.
    let resumed = fixture
        .run("out", &["--resume", "--epochs", "2"])
        .output()
        .expect("runs");
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
}

#[test]
fn ctrl_c_during_validation_saves_the_epoch_and_resumes_bit_for_bit() {
    // 200 images to train on (6 steps), 7,000 to validate on: validation
    // outlasts the moment it takes to send the signal.
    let fixture = Fixture::new("validation", (7_200, 7_000, 256));
    let reference = fixture.run("straight", &[]).output().expect("runs");
    assert!(reference.status.success(), "{}", text(&reference.stderr));
    let mut run = Watched::start(fixture.run("stopped", &[]));
    run.wait_for("epoch 1/2: validating");
    run.signal(libc::SIGINT);
    let (status, stderr) = run.finish();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted after epoch 1;"), "{stderr}");
    let saved = load_checkpoint(&fixture.dir.join("stopped"));
    let meta = |key: &str| saved.metadata.get(key).map(String::as_str);
    assert_eq!((meta("epoch"), meta("partial_steps")), (Some("1"), None));
    let resumed = fixture
        .run("stopped", &["--resume"])
        .output()
        .expect("runs");
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert_same_weights(&fixture.dir.join("straight"), &fixture.dir.join("stopped"));
    assert_eq!(test_line(&resumed.stdout), test_line(&reference.stdout));
}

#[test]
fn sigterm_stops_training_as_ctrl_c_does_and_the_run_resumes_bit_for_bit() {
    // What a job scheduler (and mpirun, on Ctrl-C) sends before it kills:
    // the run stops after its step and saves, as on Ctrl-C.
    let fixture = Fixture::new("sigterm", (7_200, 200, 64));
    let reference = fixture.run("straight", &[]).output().expect("runs");
    assert!(reference.status.success(), "{}", text(&reference.stderr));
    let mut run = Watched::start(fixture.run("stopped", &[]));
    run.wait_for("epoch 1/2 ");
    run.signal(libc::SIGTERM);
    let (status, stderr) = run.finish();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("stopping after this step") && stderr.contains("interrupted"),
        "{stderr}"
    );
    load_checkpoint(&fixture.dir.join("stopped"));
    let resumed = fixture
        .run("stopped", &["--resume"])
        .output()
        .expect("runs");
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert_same_weights(&fixture.dir.join("straight"), &fixture.dir.join("stopped"));
    assert_eq!(test_line(&resumed.stdout), test_line(&reference.stdout));
}

#[test]
fn ctrl_c_during_the_test_evaluation_quits_with_everything_saved() {
    let fixture = Fixture::new("testing", (640, 64, 9_000));
    let reference = fixture.run("straight", &[]).output().expect("runs");
    assert!(reference.status.success(), "{}", text(&reference.stderr));
    let mut run = Watched::start(fixture.run("stopped", &[]));
    run.wait_for("testing on 9000 images");
    run.signal(libc::SIGINT);
    let (status, stderr) = run.finish();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("quitting: everything is saved"), "{stderr}");
    let (straight, stopped) = (fixture.dir.join("straight"), fixture.dir.join("stopped"));
    load_checkpoint(&stopped);
    assert_same_weights(&straight, &stopped);
    assert_eq!(history(&stopped), history(&straight));
    let resumed = fixture
        .run("stopped", &["--resume"])
        .output()
        .expect("runs");
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert_eq!(test_line(&resumed.stdout), test_line(&reference.stdout));
    assert_same_weights(&straight, &stopped);
}

#[test]
fn a_second_ctrl_c_during_a_checkpoint_write_waits_for_its_rename() {
    let fixture = Fixture::new("double", (640 + 128, 128, 256));
    let reference = fixture.run("straight", &[]).output().expect("runs");
    assert!(reference.status.success(), "{}", text(&reference.stderr));
    let mut command = fixture.run("stopped", &["--checkpoint-every", "epoch"]);
    // Each write takes 3 s: long enough to be caught in the middle.
    command.env("CNNC_TEST_SLOW_WRITES", "3000");
    let mut run = Watched::start(command);
    run.wait_for("/20 [");
    run.signal(libc::SIGINT);
    let out = fixture.dir.join("stopped");
    let deadline = Instant::now() + Duration::from_secs(60);
    while temporaries(&out).is_empty() {
        assert!(Instant::now() < deadline, "no checkpoint write began");
        std::thread::sleep(Duration::from_millis(2));
    }
    run.signal(libc::SIGINT);
    let (status, stderr) = run.finish();
    // The handler exits once the write is renamed, unless the run, whose
    // last task that write was, reports its interruption first.
    match status.code() {
        Some(130) => {}
        Some(1) => assert!(stderr.contains("interrupted in epoch 1"), "{stderr}"),
        other => panic!("exit status {other:?}: {stderr}"),
    }
    assert_eq!(temporaries(&out), Vec::<String>::new());
    // The checkpoint is the one the first Ctrl-C asked for.
    let saved = load_checkpoint(&out);
    let steps = saved.metadata.get("partial_steps");
    assert!(steps.is_some(), "{:?}", saved.metadata);
    let resumed = fixture
        .run("stopped", &["--resume"])
        .output()
        .expect("runs");
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert_same_weights(&fixture.dir.join("straight"), &out);
    assert_eq!(test_line(&resumed.stdout), test_line(&reference.stdout));
}

#[test]
fn a_second_run_into_the_same_folder_is_refused_while_the_first_runs() {
    let fixture = Fixture::new("lock", (640 + 128, 128, 256));
    let mut command = fixture.run("out", &["--checkpoint-every", "2steps"]);
    command.env("CNNC_TEST_SLOW_WRITES", "200");
    let mut first = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let out = fixture.dir.join("out");
    let lock = out.join(".tiny.lock");
    let checkpoint = out.join("tiny.checkpoint.safetensors");
    let deadline = Instant::now() + Duration::from_secs(60);
    let holder = first.id().to_string();
    while !(checkpoint.exists()
        && std::fs::read_to_string(&lock).unwrap_or_default().trim() == holder)
    {
        assert!(Instant::now() < deadline, "the first run took no lock");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Even --overwrite, which starts over in a folder holding a run, waits its turn.
    let second = fixture.run("out", &["--overwrite"]).output().expect("runs");
    let message = text(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{message}");
    assert!(
        message.contains(&format!(
            "another `cnnc run` (process {holder}) is training model `tiny` into `{}`",
            out.display()
        )) && message.contains(".tiny.lock"),
        "{message}"
    );
    // A run killed with its lock held leaves no lock behind.
    first.kill().expect("killed");
    first.wait().expect("waited");
    let resumed = fixture.run("out", &["--resume"]).output().expect("runs");
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
}

/// A folder holding a small model's file and a Fashion-MNIST folder cut
/// from the bundled subset.
struct Fixture {
    dir: PathBuf,
    model: PathBuf,
    data: PathBuf,
}

impl Fixture {
    /// A fixture for test `name`: `train` training images, of which the
    /// train section holds `validation` out, and `test` test images, all
    /// from the bundled subset. The model trains 2 epochs of batches of 32,
    /// with dropout, batchnorm, augmentation and a top-k metric: every
    /// kind of state a resumed run must restore.
    fn new(name: &str, (train, validation, test): (usize, usize, usize)) -> Fixture {
        let dir = std::env::temp_dir().join(format!("cnnc-crash-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let data = dir.join("data");
        idx::small_fashion(&data, train, test);
        let model = dir.join("tiny.cnn");
        let source = format!(
            "model tiny : [28, 28, 1] {{
                 conv(4, 3, stride: 2, padding: same) -> batchnorm -> relu
                 maxpool(2)
                 flatten
                 dropout(0.3)
                 dense(10, activation: softmax)
             }}
             train {{
                 metrics: [accuracy, top_k(k: 3)]
                 batch: 32
                 epochs: 2
                 validation: {validation}
                 augment: (shift: 2, flip: true)
             }}"
        );
        std::fs::write(&model, source).expect("model");
        Fixture { dir, model, data }
    }

    /// `cnnc run` training the model on one thread into `out` (a folder of
    /// the fixture), with `extra` flags.
    fn run(&self, out: &str, extra: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cnnc"));
        command
            .arg("run")
            .arg(&self.model)
            .args(["--train", "fashion", "--threads", "1", "--data"])
            .arg(&self.data)
            .arg("--out")
            .arg(self.dir.join(out))
            .args(extra)
            .env("NO_COLOR", "1")
            .env_remove("CNNC_TEST_SLOW_WRITES");
        command
    }
}

impl Drop for Fixture {
    /// Removes the fixture's folder, unless a test failed: then it is
    /// left for a look.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// What an uninterrupted run of the kill trials' fixture wrote.
struct Reference {
    /// The weights after each epoch, by their bits.
    epochs: Vec<Vec<(String, Vec<u32>)>>,
    /// The history, without the seconds each epoch took.
    history: Vec<HistoryRow>,
    /// The line giving the test loss and accuracy.
    test: String,
    /// How long the run took with slow writes and a checkpoint every 2 steps.
    slow_seconds: f64,
}

impl Reference {
    fn new(fixture: &Fixture) -> Reference {
        let one = fixture
            .run("reference-1", &["--epochs", "1"])
            .output()
            .expect("runs");
        assert!(one.status.success(), "{}", text(&one.stderr));
        let started = Instant::now();
        let mut command = fixture.run("reference-2", &["--checkpoint-every", "2steps"]);
        command.env("CNNC_TEST_SLOW_WRITES", SLOW_WRITES_MS);
        let two = command.output().expect("runs");
        let slow_seconds = started.elapsed().as_secs_f64();
        assert!(two.status.success(), "{}", text(&two.stderr));
        let (one_dir, two_dir) = (
            fixture.dir.join("reference-1"),
            fixture.dir.join("reference-2"),
        );
        Reference {
            epochs: vec![weight_bits(&one_dir), weight_bits(&two_dir)],
            history: history(&two_dir),
            test: test_line(&two.stdout),
            slow_seconds,
        }
    }
}

/// What one kill trial found.
struct Outcome {
    /// The kill left a temporary file: it landed inside a write.
    inside_write: bool,
    /// That temporary file was a checkpoint's.
    inside_checkpoint_write: bool,
    /// There was no checkpoint yet.
    before_checkpoint: bool,
    /// The run had ended before the kill, after this many seconds.
    finished: Option<f64>,
}

/// The kill trials' tally.
#[derive(Default)]
struct Counts {
    bit_exact: usize,
    inside_write: usize,
    inside_checkpoint_write: usize,
    before_checkpoint: usize,
    finished: usize,
    failures: Vec<String>,
}

impl Counts {
    fn add(&mut self, trial: usize, moment: Moment, outcome: Result<Outcome, String>) {
        match outcome {
            Ok(o) => {
                self.bit_exact += 1;
                self.inside_write += usize::from(o.inside_write);
                self.inside_checkpoint_write += usize::from(o.inside_checkpoint_write);
                self.before_checkpoint += usize::from(o.before_checkpoint);
                self.finished += usize::from(o.finished.is_some());
            }
            Err(why) => self
                .failures
                .push(format!("trial {trial}, killed {moment:?}: {why}")),
        }
    }
}

/// When a trial kills its run.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// This many seconds after it starts.
    After(f64),
    /// This many seconds after its `nth` checkpoint write (from 1) begins,
    /// as its temporary file appears.
    InCheckpointWrite { nth: usize, after: f64 },
}

/// Starts a run with slow writes, kills it with SIGKILL at `moment`, checks that every file it left is whole (the checkpoint loads,
/// the weights are an epoch's, the history is a prefix of the reference's),
/// then resumes it (or starts it again when no checkpoint was saved yet)
/// and checks that it ends as the reference did, bit for bit.
fn kill_and_resume(
    fixture: &Fixture,
    reference: &Reference,
    trial: usize,
    moment: Moment,
) -> Result<Outcome, String> {
    let name = format!("trial-{trial}");
    let out = fixture.dir.join(&name);
    let mut command = fixture.run(&name, &["--checkpoint-every", "2steps"]);
    command.env("CNNC_TEST_SLOW_WRITES", SLOW_WRITES_MS);
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let finished = match moment {
        Moment::After(seconds) => wait_up_to(&mut child, Duration::from_secs_f64(seconds)),
        Moment::InCheckpointWrite { nth, after } => {
            wait_for_checkpoint_write(&mut child, &out, nth, Duration::from_secs_f64(after))
        }
    };
    if finished.is_none() {
        child.kill().map_err(|e| e.to_string())?;
        child.wait().map_err(|e| e.to_string())?;
    }
    let left = temporaries(&out);
    let inside_checkpoint_write = left
        .iter()
        .any(|name| name.starts_with(".tiny.checkpoint.safetensors."));
    let checkpoint = out.join("tiny.checkpoint.safetensors");
    let before_checkpoint = !checkpoint.exists();
    check_left_whole(&out, reference)?;
    let resumed = fixture
        .run(&name, &["--resume"])
        .output()
        .map_err(|e| e.to_string())?;
    let resumed = if before_checkpoint {
        let said = text(&resumed.stderr);
        if !said.contains("no checkpoint yet: start without --resume") {
            return Err(format!("--resume without a checkpoint said: {said}"));
        }
        fixture
            .run(&name, &[])
            .output()
            .map_err(|e| e.to_string())?
    } else {
        resumed
    };
    if !resumed.status.success() {
        return Err(format!("the resumed run failed: {}", text(&resumed.stderr)));
    }
    if weight_bits(&out) != reference.epochs[1] {
        return Err("the final weights differ from the uninterrupted run's".into());
    }
    if history(&out) != reference.history || test_line(&resumed.stdout) != reference.test {
        return Err("the figures differ from the uninterrupted run's".into());
    }
    if !temporaries(&out).is_empty() {
        return Err(format!("temporary files left: {:?}", temporaries(&out)));
    }
    Ok(Outcome {
        inside_write: !left.is_empty(),
        inside_checkpoint_write,
        before_checkpoint,
        finished,
    })
}

/// Checks what a killed run left in `out`: the checkpoint (if any) loads,
/// the weights (if any) are the reference's after some epoch, and the
/// history (if any) is the reference's first epochs.
fn check_left_whole(out: &Path, reference: &Reference) -> Result<(), String> {
    let checkpoint = out.join("tiny.checkpoint.safetensors");
    if checkpoint.exists() {
        let store = weights::load_file(&checkpoint).map_err(|e| e.to_string())?;
        if !store.metadata.contains_key("epoch") {
            return Err("the checkpoint has no epoch".into());
        }
    }
    if out.join("tiny.safetensors").exists() && !reference.epochs.contains(&weight_bits(out)) {
        return Err("the weights file is no epoch's weights".into());
    }
    if out.join("tiny.history.csv").exists() {
        let rows = history(out);
        if rows.is_empty() || !reference.history.starts_with(&rows) {
            return Err(format!(
                "the history is not the reference's first epochs: {rows:?}"
            ));
        }
    }
    Ok(())
}

/// Waits for `child` to end, for at most `limit`; how many seconds it
/// took, if it ended.
fn wait_up_to(child: &mut Child, limit: Duration) -> Option<f64> {
    let start = Instant::now();
    let deadline = start + limit;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return Some(start.elapsed().as_secs_f64());
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(1)));
    }
}

/// Waits for the `nth` checkpoint write of `child` (training into `out`)
/// to begin, then for `after`; how many seconds it took if it ended first.
fn wait_for_checkpoint_write(
    child: &mut Child,
    out: &Path,
    nth: usize,
    after: Duration,
) -> Option<f64> {
    let start = Instant::now();
    // Each write's temporary file has a name of its own (a counter).
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < nth {
        if let Ok(Some(_)) = child.try_wait() {
            return Some(start.elapsed().as_secs_f64());
        }
        let writes = temporaries(out).into_iter();
        seen.extend(writes.filter(|name| name.starts_with(".tiny.checkpoint.safetensors.")));
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(after);
    None
}

/// A running `cnnc run` whose standard error is read line by line.
struct Watched {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Watched {
    fn start(mut command: Command) -> Watched {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts");
        let stderr = child.stderr.take().expect("piped");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Watched {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one contains `wanted`.
    fn wait_for(&mut self, wanted: &str) {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    let found = line.contains(wanted);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!("no line with `{wanted}`:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill() takes plain integers; the child has not been
        // waited for, so its process id is still its own.
        let sent = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(sent, 0, "{}", std::io::Error::last_os_error());
    }

    /// Waits for the run to end: its status and all it wrote to standard error.
    fn finish(mut self) -> (ExitStatus, String) {
        let status = self.child.wait().expect("waited");
        self.seen.extend(self.lines.iter());
        (status, self.seen.join("\n"))
    }
}

/// A history row without its `seconds`, which no two runs share.
type HistoryRow = (u64, f64, f64, f64, f64, f64, Vec<(u64, f64, f64)>);

fn history(out: &Path) -> Vec<HistoryRow> {
    let text = std::fs::read_to_string(out.join("tiny.history.csv")).unwrap_or_default();
    parse_history(&text)
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            (
                e.epoch,
                e.loss,
                e.accuracy,
                e.val_loss,
                e.val_accuracy,
                e.lr,
                e.top_k,
            )
        })
        .collect()
}

/// The weights file's tensors, by their bits (empty when it cannot be read).
fn weight_bits(out: &Path) -> Vec<(String, Vec<u32>)> {
    let store = weights::load_file(&out.join("tiny.safetensors")).unwrap_or_default();
    store
        .iter()
        .map(|(name, t)| {
            (
                name.to_string(),
                t.data.iter().map(|v| v.to_bits()).collect(),
            )
        })
        .collect()
}

fn assert_same_weights(a: &Path, b: &Path) {
    let bits = weight_bits(a);
    assert!(!bits.is_empty(), "no weights in {}", a.display());
    assert!(
        bits == weight_bits(b),
        "{} and {} differ",
        a.display(),
        b.display()
    );
    let store = weights::load_file(&b.join("tiny.safetensors")).expect("loads");
    assert_eq!(weights::class_names(&store, 10), fashion::CLASS_NAMES);
}

fn load_checkpoint(out: &Path) -> TensorStore {
    weights::load_file(&out.join("tiny.checkpoint.safetensors")).expect("the checkpoint loads")
}

/// The temporary files of interrupted writes in `out`.
fn temporaries(out: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map_while(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    names.sort();
    names
}

/// Every file of `out` but the lock (which holds the last run's process
/// id), with its bytes.
fn files_of(out: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(out)
        .expect("dir")
        .map(|e| e.expect("entry"))
        .filter(|e| e.file_name() != ".tiny.lock")
        .map(|e| {
            let bytes = std::fs::read(e.path()).expect("file");
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    files.sort();
    files
}

/// The line of `cnnc run`'s output that gives the test loss and accuracy.
fn test_line(stdout: &[u8]) -> String {
    text(stdout)
        .lines()
        .find(|l| l.starts_with("test: "))
        .unwrap_or_default()
        .to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn from_env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
