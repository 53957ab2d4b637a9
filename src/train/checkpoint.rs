//! Checkpoints: what one holds (everything a resumed run needs to continue
//! bit for bit), how it is saved and read back, and how often training
//! saves one within an epoch ([`CheckpointEvery`]).

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use super::fit::{history_csv, parse_history, Epoch, FitError, Partial, Tally};
use crate::optimizer::StepState;
use crate::runtime::training::Trainer;
use crate::runtime::weights::{self, TensorStore, WeightsError};
use crate::shapes::TypedGraph;

/// How often training saves a checkpoint within an epoch. One is always
/// saved at the end of every epoch and when training is interrupted
/// (Ctrl-C); this bounds the work that a crash, a kill or a power cut in
/// the middle of an epoch can lose.
///
/// Written (by [`FromStr`], as `cnnc run --checkpoint-every` takes it) as
/// `500steps`, `90s`, `5m`, `1h` or `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointEvery {
    /// After every this many training steps (counted from the previous
    /// checkpoint, or from the start of the run).
    Steps(u64),
    /// After the first step that ends at least this long after the
    /// previous checkpoint (or the start of the run).
    Time(Duration),
    /// Only at the end of each epoch (and on Ctrl-C), as Keras's
    /// `BackupAndRestore` does by default.
    Epoch,
}

impl CheckpointEvery {
    /// Every 5 minutes: a kill loses at most 5 minutes of training,
    /// whatever the model, where a count of steps would mean seconds for a
    /// small model and an hour for a large one. A checkpoint holds the
    /// weights about four times over (with Adam's two moments and the best
    /// epoch's weights): for ResNet-34, some 350 MB, which take a second or
    /// two to write, well under 1% of 5 minutes. A small model whose epoch
    /// takes less than that saves only at the end of each epoch, as before.
    pub const DEFAULT: CheckpointEvery = CheckpointEvery::Time(Duration::from_secs(5 * 60));
}

impl Default for CheckpointEvery {
    fn default() -> CheckpointEvery {
        CheckpointEvery::DEFAULT
    }
}

impl FromStr for CheckpointEvery {
    type Err = String;

    /// Reads `N steps`, `Ns`, `Nm`, `Nh` (spaces allowed before the unit;
    /// N a positive whole number) or `epoch`.
    fn from_str(text: &str) -> Result<CheckpointEvery, String> {
        let text = text.trim();
        if text == "epoch" {
            return Ok(CheckpointEvery::Epoch);
        }
        let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (number, unit) = text.split_at(digits);
        let usage = "give a number and a unit (`500steps`, `90s`, `5m`, `1h`) or `epoch`";
        let count: u64 = match number.parse() {
            Ok(0) => {
                return Err(format!(
                    "`{text}`: checkpoints need an interval above 0; {usage}"
                ))
            }
            Ok(count) => count,
            Err(_) => return Err(format!("`{text}` is not an interval: {usage}")),
        };
        let seconds = |factor: u64| {
            count
                .checked_mul(factor)
                .map(|s| CheckpointEvery::Time(Duration::from_secs(s)))
                .ok_or_else(|| format!("`{text}` is too long an interval"))
        };
        match unit.trim() {
            "steps" | "step" => Ok(CheckpointEvery::Steps(count)),
            "s" => seconds(1),
            "m" | "min" => seconds(60),
            "h" => seconds(3600),
            "" => Err(format!("`{text}` needs a unit: {usage}")),
            other => Err(format!("`{other}` is not a unit of `{text}`: {usage}")),
        }
    }
}

impl fmt::Display for CheckpointEvery {
    /// As [`FromStr`] reads it back: the largest whole unit of a time.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CheckpointEvery::Steps(n) => write!(f, "{n}steps"),
            CheckpointEvery::Time(t) => match t.as_secs() {
                s if s % 3600 == 0 => write!(f, "{}h", s / 3600),
                s if s % 60 == 0 => write!(f, "{}m", s / 60),
                s => write!(f, "{s}s"),
            },
            CheckpointEvery::Epoch => f.write_str("epoch"),
        }
    }
}

/// When the next checkpoint within an epoch is due.
pub(super) struct Cadence {
    every: CheckpointEvery,
    /// When the previous checkpoint was saved (or the run started).
    since: Instant,
    /// Steps trained since then.
    steps: u64,
}

impl Cadence {
    /// A cadence counted from now.
    pub(super) fn new(every: CheckpointEvery) -> Cadence {
        Cadence {
            every,
            since: Instant::now(),
            steps: 0,
        }
    }

    /// Counts one step; whether a checkpoint is due after it.
    pub(super) fn step(&mut self) -> bool {
        self.steps += 1;
        match self.every {
            CheckpointEvery::Steps(n) => self.steps >= n,
            CheckpointEvery::Time(t) => self.since.elapsed() >= t,
            CheckpointEvery::Epoch => false,
        }
    }

    /// A checkpoint was just saved: counts again from now.
    pub(super) fn saved(&mut self) {
        *self = Cadence::new(self.every);
    }
}

/// Where in training a checkpoint was saved: after `epoch` whole epochs,
/// and `steps` steps into the next one when saved within an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Position {
    pub(super) epoch: u64,
    pub(super) steps: Option<usize>,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.steps {
            None => write!(f, "after epoch {}", self.epoch),
            Some(steps) => write!(f, "after step {steps} of epoch {}", self.epoch + 1),
        }
    }
}

/// What a checkpoint holds: everything a resumed run needs to continue bit
/// for bit. Tensors are stored under `weight:`, `state:` and `best:`
/// prefixes; counters and the history in the file's metadata.
pub(super) struct Checkpoint {
    /// The last epoch completed.
    pub(super) epoch: u64,
    /// Progress into the next epoch, when saved within it.
    pub(super) partial: Option<Partial>,
    pub(super) weights: TensorStore,
    pub(super) states: TensorStore,
    pub(super) step: StepState,
    pub(super) history: Vec<Epoch>,
    pub(super) best: Option<(f64, TensorStore)>,
    pub(super) since_best: u64,
}

/// The part of a run in progress that a checkpoint saves, borrowed.
pub(super) struct RunState<'a> {
    /// Epochs completed.
    pub(super) epoch: u64,
    /// Progress into the next epoch, when saving within it.
    pub(super) partial: Option<&'a Partial>,
    pub(super) trainer: &'a Trainer,
    pub(super) history: &'a [Epoch],
    pub(super) best: Option<&'a (f64, TensorStore)>,
    pub(super) since_best: u64,
}

impl RunState<'_> {
    /// Where in training this state is.
    pub(super) fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            steps: self.partial.map(|p| p.steps),
        }
    }
}

impl Checkpoint {
    /// Writes `state` to `path`, atomically ([`weights::save`]).
    pub(super) fn save(path: &Path, state: &RunState) -> Result<(), WeightsError> {
        let mut store = TensorStore::new();
        let trainer = state.trainer;
        for (prefix, tensors) in [("weight:", &trainer.weights), ("state:", &trainer.states)] {
            for (name, t) in tensors.iter() {
                store.insert(format!("{prefix}{name}"), t.clone());
            }
        }
        if let Some((loss, tensors)) = state.best {
            for (name, t) in tensors.iter() {
                store.insert(format!("best:{name}"), t.clone());
            }
            store
                .metadata
                .insert("best_val_loss".into(), format!("{:e}", loss));
        }
        let meta = &mut store.metadata;
        meta.insert("epoch".into(), state.epoch.to_string());
        meta.insert("iterations".into(), trainer.step.iterations.to_string());
        // Exact bits, so that Nadam's schedule resumes without drift.
        meta.insert(
            "u_product_bits".into(),
            trainer.step.u_product.to_bits().to_string(),
        );
        meta.insert("since_best".into(), state.since_best.to_string());
        meta.insert("history".into(), history_csv(state.history));
        // So that a checkpoint read as weights (`cnnc predict`) names its classes.
        if let Some(names) = trainer.weights.metadata.get(weights::CLASS_NAMES_KEY) {
            meta.insert(weights::CLASS_NAMES_KEY.into(), names.clone());
        }
        if let Some(p) = state.partial {
            let t = &p.tally;
            meta.insert("partial_steps".into(), p.steps.to_string());
            meta.insert("partial_loss_bits".into(), t.loss_sum.to_bits().to_string());
            meta.insert("partial_correct".into(), t.correct.to_string());
            meta.insert("partial_seen".into(), t.seen.to_string());
            let top_k: Vec<String> = t.top_k_correct.iter().map(|c| c.to_string()).collect();
            meta.insert("partial_top_k_correct".into(), top_k.join(","));
            // A segmentation run's confusion matrix, for the epoch's mean IoU.
            if !t.confusion.is_empty() {
                let rows: Vec<String> = t
                    .confusion
                    .iter()
                    .map(|row| row.iter().map(u64::to_string).collect::<Vec<_>>().join(","))
                    .collect();
                meta.insert("partial_confusion".into(), rows.join(";"));
            }
        }
        weights::save(&store, path)
    }

    /// Reads the checkpoint at `path` back, checking its weights against
    /// `model` and its optimizer state against `trainer`'s.
    pub(super) fn load(
        path: &Path,
        model: &TypedGraph,
        trainer: &Trainer,
    ) -> Result<Checkpoint, FitError> {
        Checkpoint::read(weights::load_file(path)?, path, model, trainer)
    }

    /// The checkpoint that `store`, read from `path`, holds, checked as
    /// [`Checkpoint::load`] checks it.
    pub(super) fn read(
        store: TensorStore,
        path: &Path,
        model: &TypedGraph,
        trainer: &Trainer,
    ) -> Result<Checkpoint, FitError> {
        let fail = |message: String| FitError::Resume {
            path: path.to_path_buf(),
            message,
        };
        let number = |key: &str| -> Result<u64, FitError> {
            store
                .metadata
                .get(key)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| fail(format!("it has no `{key}`: it is not a cnnc checkpoint")))
        };
        let weights = part(&store, "weight:", &trainer.weights);
        let problems = weights::mismatches(model, &weights);
        if !problems.is_empty() {
            return Err(fail(format!(
                "its weights do not fit model `{}` ({} problems)",
                model.graph.name,
                problems.len()
            )));
        }
        let states = part(&store, "state:", &trainer.states);
        if sorted_names(&states) != sorted_names(&trainer.states) {
            return Err(fail(
                "its optimizer state is for other trainable weights or another optimizer: \
                 the optimizer, `freeze` or a layer's `trainable` changed since it was saved; \
                 put them back to resume, or start afresh with --overwrite"
                    .into(),
            ));
        }
        let best_tensors = part(&store, "best:", &trainer.weights);
        let best = store
            .metadata
            .get("best_val_loss")
            .and_then(|v| v.parse::<f64>().ok())
            .map(|loss| (loss, best_tensors));
        let history = store
            .metadata
            .get("history")
            .map(|h| parse_history(h).map_err(|m| fail(format!("its history: {m}"))))
            .transpose()?
            .unwrap_or_default();
        let step = StepState {
            iterations: number("iterations")?,
            u_product: f64::from_bits(number("u_product_bits")?),
        };
        let partial = match number("partial_steps") {
            Ok(steps) => Some(Partial {
                steps: steps as usize,
                tally: Tally {
                    loss_sum: f64::from_bits(number("partial_loss_bits")?),
                    correct: number("partial_correct")? as usize,
                    top_k_correct: store
                        .metadata
                        .get("partial_top_k_correct")
                        .map(|list| list.split(',').filter_map(|c| c.parse().ok()).collect())
                        .unwrap_or_default(),
                    seen: number("partial_seen")? as usize,
                    confusion: match store.metadata.get("partial_confusion") {
                        Some(text) => parse_confusion(text).ok_or_else(|| {
                            fail("its partial confusion matrix is not square rows of counts".into())
                        })?,
                        None => Vec::new(),
                    },
                },
            }),
            Err(_) => None,
        };
        Ok(Checkpoint {
            epoch: number("epoch")?,
            partial,
            weights,
            states,
            step,
            history,
            best,
            since_best: number("since_best")?,
        })
    }

    /// Where in training it was saved.
    pub(super) fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            steps: self.partial.as_ref().map(|p| p.steps),
        }
    }
}

/// The tensors of `store` whose names start with `prefix`, without it, in
/// the order of `like` (then any others), so that a resumed run lists its
/// tensors as a fresh one does (files keep them sorted by name).
fn part(store: &TensorStore, prefix: &str, like: &TensorStore) -> TensorStore {
    let found: TensorStore = store
        .iter()
        .filter_map(|(n, t)| n.strip_prefix(prefix).map(|n| (n.to_string(), t.clone())))
        .collect();
    let mut ordered: TensorStore = like
        .names()
        .filter_map(|n| found.get(n).map(|t| (n.to_string(), t.clone())))
        .collect();
    for (n, t) in found.iter() {
        if ordered.get(n).is_none() {
            ordered.insert(n.to_string(), t.clone());
        }
    }
    ordered
}

fn sorted_names(store: &TensorStore) -> Vec<String> {
    let mut names: Vec<String> = store.names().map(|n| n.to_string()).collect();
    names.sort();
    names
}

/// A confusion matrix as a checkpoint saves it: rows separated by `;`,
/// counts by `,`. `None` unless it is square.
fn parse_confusion(text: &str) -> Option<Vec<Vec<u64>>> {
    let rows: Vec<Vec<u64>> = text
        .split(';')
        .map(|row| {
            row.split(',')
                .map(|c| c.parse().ok())
                .collect::<Option<_>>()
        })
        .collect::<Option<_>>()?;
    rows.iter().all(|r| r.len() == rows.len()).then_some(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_read_with_their_units() {
        let read = |text: &str| text.parse::<CheckpointEvery>();
        assert_eq!(read("500steps"), Ok(CheckpointEvery::Steps(500)));
        assert_eq!(read("1 step"), Ok(CheckpointEvery::Steps(1)));
        assert_eq!(
            read("90s"),
            Ok(CheckpointEvery::Time(Duration::from_secs(90)))
        );
        assert_eq!(read("5m"), Ok(CheckpointEvery::DEFAULT));
        assert_eq!(
            read("2h"),
            Ok(CheckpointEvery::Time(Duration::from_secs(7200)))
        );
        assert_eq!(read("epoch"), Ok(CheckpointEvery::Epoch));
        for interval in ["500steps", "90s", "5m", "2h", "epoch"] {
            assert_eq!(
                read(interval).map(|e| e.to_string()).as_deref(),
                Ok(interval)
            );
        }
    }

    #[test]
    fn intervals_without_a_unit_or_above_zero_are_refused() {
        let error = |text: &str| text.parse::<CheckpointEvery>().expect_err(text);
        assert!(error("500").contains("needs a unit"), "{}", error("500"));
        assert!(error("0steps").contains("above 0"), "{}", error("0steps"));
        assert!(error("5 days").contains("`days` is not a unit"));
        assert!(error("often").contains("is not an interval"));
        assert!(error("-5m").contains("is not an interval"));
        assert!(error("99999999999999999999h").contains("is not an interval"));
        assert!(error(&format!("{}h", u64::MAX)).contains("too long"));
    }

    #[test]
    fn a_cadence_of_steps_is_due_after_that_many_steps_since_the_last_save() {
        let mut cadence = Cadence::new(CheckpointEvery::Steps(3));
        let due: Vec<bool> = (0..4).map(|_| cadence.step()).collect();
        assert_eq!(due, [false, false, true, true]);
        cadence.saved();
        assert!(!cadence.step());
        let mut never = Cadence::new(CheckpointEvery::Epoch);
        assert!((0..100).all(|_| !never.step()));
        let mut always = Cadence::new(CheckpointEvery::Time(Duration::ZERO));
        assert!(always.step());
    }

    #[test]
    fn positions_say_where_training_was() {
        let epoch = Position {
            epoch: 2,
            steps: None,
        };
        assert_eq!(epoch.to_string(), "after epoch 2");
        let within = Position {
            epoch: 2,
            steps: Some(40),
        };
        assert_eq!(within.to_string(), "after step 40 of epoch 3");
    }
}
