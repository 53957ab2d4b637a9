//! What `cnnc run --train` prints as it goes: a Keras-like progress bar on
//! standard error, and each epoch's figures on standard output.

use std::io::IsTerminal;

use cnnc::config::TrainConfig;
use cnnc::train::fit::{Epoch, Progress};

use super::shared::top_k_text;

/// Prints training's [`Progress`]. On a terminal the bar redraws itself in
/// place at every step; otherwise (a log file) it prints a line at every
/// tenth of an epoch, so that logs stay short.
pub struct ProgressPrinter {
    /// Whether standard error is a terminal.
    interactive: bool,
    /// The epochs of the whole run, for `epoch 3/10`.
    epochs: u64,
    /// Images per step, for the time left.
    batch: u64,
}

impl ProgressPrinter {
    /// A printer for a run with `config`'s epochs and batch size.
    pub fn new(config: &TrainConfig) -> ProgressPrinter {
        ProgressPrinter {
            interactive: std::io::stderr().is_terminal(),
            epochs: config.epochs,
            batch: config.batch,
        }
    }

    /// Prints one report: a step's bar, running loss and accuracy and
    /// images per second, or an epoch's figures.
    pub fn report(&self, progress: Progress) {
        match progress {
            Progress::Step(epoch, step, steps, loss, accuracy, rate) => {
                if self.interactive || step == steps || step % (steps / 10).max(1) == 0 {
                    let end = if self.interactive { "\r" } else { "\n" };
                    let bar = bar(step, steps);
                    let eta = (steps - step) as f64 * self.batch as f64 / rate.max(1e-9);
                    eprint!(
                        "epoch {epoch}/{} {step:>5}/{steps} [{bar}] ETA {:>4.0}s  loss {loss:.4}  accuracy {accuracy:.4}  {rate:.0} images/s{end}",
                        self.epochs, eta
                    );
                }
            }
            Progress::Validating(epoch, images) => {
                // On a terminal, the bar's line ends here.
                let start = if self.interactive { "\n" } else { "" };
                eprintln!(
                    "{start}epoch {epoch}/{}: validating on {images} images",
                    self.epochs
                );
            }
            Progress::Epoch(figures) => self.epoch(figures),
            Progress::Testing(images) => {
                eprintln!("everything is saved; testing on {images} images");
            }
        }
    }

    /// The epoch's training and validation figures, on one line.
    fn epoch(&self, e: &Epoch) {
        let iou = |pick: fn((f64, f64)) -> f64| {
            e.mean_iou
                .map(|m| format!(" mean IoU {:.4}", pick(m)))
                .unwrap_or_default()
        };
        println!(
            "epoch {}: loss {:.4} accuracy {:.4}{}{} | validation loss {:.4} accuracy {:.4}{}{} | {:.1} s",
            e.epoch,
            e.loss,
            e.accuracy,
            top_k_text(e.top_k.iter().map(|&(k, a, _)| (k, a))),
            iou(|m| m.0),
            e.val_loss,
            e.val_accuracy,
            top_k_text(e.top_k.iter().map(|&(k, _, v)| (k, v))),
            iou(|m| m.1),
            e.seconds
        );
    }
}

/// A Keras-like bar of 30 cells: `=` for the steps done, `>` where the
/// epoch is, `.` for the rest.
fn bar(step: usize, steps: usize) -> String {
    let filled = step * 30 / steps.max(1);
    (0..30)
        .map(|i| {
            if i < filled {
                '='
            } else if i == filled {
                '>'
            } else {
                '.'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::bar;

    #[test]
    fn the_bar_fills_with_the_epoch() {
        assert_eq!(bar(0, 10), format!(">{}", ".".repeat(29)));
        assert_eq!(bar(5, 10), format!("{}>{}", "=".repeat(15), ".".repeat(14)));
        assert_eq!(bar(10, 10), "=".repeat(30));
    }
}
