//! Data-parallel training steps (`cnnc::runtime::parallel`): ranks that are
//! threads of this process, each with its own trainer and its share of the
//! batch, give bitwise the same weights, optimizer state and step results
//! as one trainer on the whole batch, for 1 to 4 ranks and any thread
//! count. The MPI runs of `tests/mpi.rs` carry the same promise across
//! processes.

use cnnc::autodiff::LossSpec;
use cnnc::config::{Optimizer, OptimizerKind, TrainConfig};
use cnnc::runtime::parallel::{shares, LocalWorld};
use cnnc::runtime::training::{StepResult, Trainer};
use cnnc::runtime::weights::{self, TensorStore};
use cnnc::TypedGraph;

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// The weights, optimizer state and every step's results of `steps`
/// steps.
type Trained = (TensorStore, TensorStore, Vec<StepResult>);

struct Case<'a> {
    model: &'a TypedGraph,
    batch: usize,
    classes: u32,
    steps: usize,
}

impl Case<'_> {
    fn trainer(&self, threads: usize) -> Trainer {
        let loss = LossSpec {
            smoothing: 0.1,
            weights: Vec::new(),
        };
        let nadam = Optimizer {
            kind: OptimizerKind::Nadam,
            lr: 0.01,
            ..TrainConfig::default().optimizer
        };
        let step = cnnc::compile_training(self.model, &loss, &nadam, self.batch)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut trainer =
            Trainer::new(step, weights::init(self.model, 5), threads).expect("trainer");
        trainer.seed = 77;
        trainer
    }

    fn per_item(&self) -> usize {
        self.model.input_shape().expect("input").elements() as usize
    }

    fn batch_data(&self, step: usize) -> (Vec<f32>, Vec<u32>) {
        let images = data(self.batch * self.per_item(), 1000 + step as u64);
        let labels = (0..self.batch as u32)
            .map(|i| (i * 7 + step as u32) % self.classes)
            .collect();
        (images, labels)
    }

    /// One trainer on the whole batch.
    fn alone(&self, threads: usize) -> Trained {
        let mut trainer = self.trainer(threads);
        let results = (0..self.steps)
            .map(|step| {
                let (images, labels) = self.batch_data(step);
                trainer.train_step(&images, &labels, 0.01).expect("step")
            })
            .collect();
        (trainer.weights, trainer.states, results)
    }

    /// `ranks` trainers on their shares, as threads; rank 0's result,
    /// after checking that every rank's is the same.
    fn shared(&self, ranks: usize, threads: usize) -> Trained {
        let worlds = LocalWorld::new(ranks);
        let all: Vec<Trained> = std::thread::scope(|scope| {
            let handles: Vec<_> = worlds
                .iter()
                .map(|world| {
                    scope.spawn(move || {
                        let mut trainer = self.trainer(threads);
                        let own = shares(self.batch, ranks)[cnnc_rank(world)].clone();
                        let per = self.per_item();
                        let results = (0..self.steps)
                            .map(|step| {
                                let (images, labels) = self.batch_data(step);
                                let mine = &images[own.start * per..own.end * per];
                                trainer
                                    .train_step_shared(mine, &labels, 0.01, world)
                                    .expect("step")
                            })
                            .collect();
                        (trainer.weights, trainer.states, results)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("rank"))
                .collect()
        });
        let mut all = all.into_iter();
        let first = all.next().expect("rank 0");
        for (rank, other) in all.enumerate() {
            same(&first, &other, &format!("rank 0 vs rank {}", rank + 1));
        }
        first
    }
}

fn cnnc_rank(world: &LocalWorld) -> usize {
    use cnnc::runtime::parallel::Collective;
    world.rank()
}

fn same(a: &Trained, b: &Trained, what: &str) {
    for (store_a, store_b) in [(&a.0, &b.0), (&a.1, &b.1)] {
        assert_eq!(store_a.len(), store_b.len(), "{what}");
        for ((name, x), (name_b, y)) in store_a.iter().zip(store_b.iter()) {
            assert_eq!(name, name_b, "{what}");
            let bits = |t: &[f32]| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&x.data), bits(&y.data), "{what}: {name}");
        }
    }
    for (step, (x, y)) in a.2.iter().zip(&b.2).enumerate() {
        assert_eq!(x.losses, y.losses, "{what}: step {step}'s loss");
        for ((name, p), (_, q)) in x.outputs.iter().zip(&y.outputs) {
            let bits = |t: &[f32]| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(p), bits(q), "{what}: step {step}'s output {name}");
        }
    }
}

fn check(source: &str, batch: usize, classes: u32) {
    let model =
        cnnc::compile_source("model.cnn", source, None, None).unwrap_or_else(|d| panic!("{d}"));
    let case = Case {
        model: &model,
        batch,
        classes,
        steps: 3,
    };
    let alone = case.alone(2);
    for (ranks, threads) in [(1, 2), (2, 1), (3, 2), (4, 1)] {
        let shared = case.shared(ranks, threads);
        same(
            &alone,
            &shared,
            &format!("one trainer vs {ranks} ranks of {threads} threads"),
        );
    }
}

#[test]
fn ranks_train_residual_units_with_batchnorm_and_dropout_as_one_process() {
    check(
        "
        use resnet
        model m : [10, 10, 1] {
            conv(8, 3, padding: same) -> batchnorm -> relu
            residual_unit(12, stride: 2)
            dropout(0.3)
            flatten
            dense(6, activation: softmax)
        }",
        11,
        6,
    );
}

#[test]
fn ranks_train_every_kind_of_kernel_as_one_process() {
    check(
        "
        use inception
        use se
        model m : [11, 9, 3] {
            conv(8, 3, padding: same, activation: relu)
            lrn(depth_radius: 1)
            inception(4, 4, 6, 2, 3, 3)
            se_block(ratio: 2)
            conv(16, 3, padding: same, groups: 4)
            depthwise_conv(3, padding: same)
            separable_conv(8, 3, padding: same)
            maxpool(2)
            upsample(2, mode: bilinear)
            zero_padding([1, 2, 0, 1])
            cropping([1, 0, 1, 2])
            avgpool(3, stride: 2, padding: same)
            batchnorm
            dropout(0.4)
            global_max_pool
            dense(5, activation: softmax)
        }",
        7,
        5,
    );
}

#[test]
fn ranks_train_winograd_convolutions_as_one_process() {
    // At 20x20 the 3x3 layers' three passes take Winograd's F(4x4,3x3).
    check(
        "
        model m : [20, 20, 1] {
            conv(16, 3, padding: same, activation: relu)
            conv(32, 3, padding: same) -> batchnorm -> relu
            maxpool(2)
            conv(32, 3, padding: same, activation: relu)
            conv(16, 1, activation: relu)
            flatten
            dense(10, activation: softmax)
        }",
        9,
        10,
    );
}

#[test]
fn ranks_without_items_still_agree() {
    // Four ranks on a batch of two: two ranks have no items of their own.
    check(
        "
        model m : [6, 6, 2] {
            conv(4, 3, padding: same) -> batchnorm -> relu
            global_avg_pool
            dense(3, activation: softmax)
        }",
        2,
        3,
    );
}

#[test]
fn a_share_of_the_wrong_size_is_refused() {
    let model = cnnc::compile_source(
        "model.cnn",
        "model m : [4, 4, 1] { flatten \n dense(2, activation: softmax) }",
        None,
        None,
    )
    .unwrap_or_else(|d| panic!("{d}"));
    let case = Case {
        model: &model,
        batch: 4,
        classes: 2,
        steps: 1,
    };
    let mut trainer = case.trainer(1);
    let worlds = LocalWorld::new(1);
    // One rank owns the whole batch of 4 images of 16 values: 3 are given.
    let error = trainer
        .train_step_shared(&[0.0; 48], &[0, 1, 0, 1], 0.01, &worlds[0])
        .expect_err("refused");
    assert_eq!(
        error.to_string(),
        "the images have 48 values, but a batch needs 64"
    );
}

#[test]
fn a_layers_input_is_gathered_early_for_its_kernel_gradient() {
    // conv2 reads conv1's output in the forward pass; its kernel gradient
    // reads it again in the backward pass: its gather starts in between.
    let model = cnnc::compile_source(
        "model.cnn",
        "model m : [8, 8, 1] {
            conv(4, 3, padding: same, activation: relu)
            conv(4, 3, padding: same, activation: relu)
            flatten
            dense(3, activation: softmax)
        }",
        None,
        None,
    )
    .unwrap_or_else(|d| panic!("{d}"));
    let case = Case {
        model: &model,
        batch: 6,
        classes: 3,
        steps: 1,
    };
    let worlds = LocalWorld::new(2);
    let exchanged: Vec<_> = std::thread::scope(|scope| {
        let case = &case;
        let handles: Vec<_> = worlds
            .iter()
            .map(|world| {
                scope.spawn(move || {
                    let mut trainer = case.trainer(1);
                    let (images, labels) = case.batch_data(0);
                    let own = shares(case.batch, 2)[cnnc_rank(world)].clone();
                    let per = case.per_item();
                    let mine = &images[own.start * per..own.end * per];
                    trainer
                        .train_step_shared(mine, &labels, 0.01, world)
                        .expect("step");
                    trainer.exchanged()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rank"))
            .collect()
    });
    for e in exchanged {
        assert!(e.early >= 1 && e.early < e.calls, "{e:?}");
        assert!(e.early_values > 0 && e.early_values < e.values, "{e:?}");
    }
}

#[test]
fn ranks_fit_validate_and_test_as_one_process() {
    use cnnc::config::TrainConfig;
    use cnnc::data::fashion::{self, Source};
    use cnnc::train::checkpoint::CheckpointEvery;
    use cnnc::train::fit::{self, FitOptions, Fitted};
    let model = cnnc::compile_source(
        "small.cnn",
        "model small : [28, 28, 1] {
            conv(4, 3, padding: same) -> batchnorm -> relu
            maxpool(2)
            dropout(0.2)
            flatten
            dense(10, activation: softmax)
        }",
        None,
        None,
    )
    .unwrap_or_else(|d| panic!("{d}"));
    let splits = fashion::load_from(Source::Bundled, 600, 1).expect("bundled subset");
    let first = |n: usize| (0..n).collect::<Vec<_>>();
    // 600 validation and 700 test images: three batches of evaluation
    // each, which three ranks share.
    let sets = (
        splits.train.select(&first(240)),
        splits.validation,
        splits.test.select(&first(700)),
    );
    let config = TrainConfig {
        batch: 30,
        epochs: 2,
        seed: 4,
        ..TrainConfig::default()
    };
    // A fresh output folder, made before any rank starts: every rank of a
    // run is given the same one, which only rank 0 writes.
    let folder = |name: &str| {
        let out = std::env::temp_dir().join(format!("cnnc-dp-fit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).expect("out");
        out
    };
    let fit_as = |world: Option<&LocalWorld>, out: std::path::PathBuf| -> Fitted {
        let options = FitOptions {
            world: world.map(|w| w as &dyn cnnc::runtime::parallel::Collective),
            threads: 1,
            out,
            resume: false,
            overwrite: false,
            stop: None,
            checkpoint_every: CheckpointEvery::Epoch,
            progress: &mut |_| {},
        };
        fit::fit(&model, &config, (&sets.0, &sets.1, &sets.2), options).expect("trains")
    };
    let alone = fit_as(None, folder("alone"));
    let out = folder("ranks");
    let ranks: Vec<Fitted> = std::thread::scope(|scope| {
        // Each rank owns its handle, so that a rank that fails leaves the
        // world (the others fail too, rather than wait for it).
        let handles: Vec<_> = LocalWorld::new(3)
            .into_iter()
            .map(|w| {
                let (fit_as, out) = (&fit_as, out.clone());
                scope.spawn(move || fit_as(Some(&w), out))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rank"))
            .collect()
    });
    let figures = |f: &Fitted| {
        let epochs: Vec<_> = f
            .history
            .iter()
            .map(|e| (e.loss, e.accuracy, e.val_loss, e.val_accuracy))
            .collect();
        (epochs, f.test)
    };
    for (rank, fitted) in ranks.iter().enumerate() {
        assert_eq!(figures(fitted), figures(&alone), "rank {rank}");
        for ((name, a), (_, b)) in fitted.weights.iter().zip(alone.weights.iter()) {
            assert_eq!(a.data, b.data, "rank {rank}: {name}");
        }
    }
}
