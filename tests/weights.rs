//! Weights of real models: initialisation, safetensors round trips, atomic
//! saves, and every way a weights file can be wrong.

use std::fs;
use std::path::{Path, PathBuf};

use cnnc::runtime::weights::{self, Problem, Tensor, TensorStore, WeightsError};
use cnnc::TypedGraph;
use safetensors::{Dtype, SafeTensorError};

fn example(name: &str) -> TypedGraph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    cnnc::load_model(&path, None).unwrap_or_else(|e| panic!("{name} compiles: {e:?}"))
}

/// A fresh, empty folder for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cnnc-weights-{}-{test}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("the temp dir is writable");
    dir
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("the scratch folder exists")
        .map(|e| {
            e.expect("a readable entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Every tensor's name, shape and bit pattern, in order.
fn bits(store: &TensorStore) -> Vec<(String, Vec<usize>, Vec<u32>)> {
    store
        .iter()
        .map(|(name, t)| {
            let bits = t.data.iter().map(|v| v.to_bits()).collect();
            (name.to_string(), t.shape.clone(), bits)
        })
        .collect()
}

#[test]
fn init_covers_every_weight_in_graph_order() {
    let model = example("fashion_cnn.cnn");
    let store = weights::init(&model, 1);
    let names: Vec<&str> = store.names().collect();
    assert_eq!(
        names[..4],
        ["conv1.kernel", "conv1.bias", "conv2.kernel", "conv2.bias"]
    );
    assert_eq!(names.last(), Some(&"dense3.bias"));
    assert_eq!(
        store.get("conv1.kernel").map(|t| t.shape.clone()),
        Some(vec![7, 7, 1, 64])
    );
    assert_eq!(
        store.get("dense1.kernel").map(|t| t.shape.clone()),
        Some(vec![2304, 128])
    );
    let total: usize = store.iter().map(|(_, t)| t.data.len()).sum();
    assert_eq!(total as u64, model.param_counts().total);
    assert!(store
        .get("conv1.bias")
        .is_some_and(|t| t.data.iter().all(|&v| v == 0.0)));
}

#[test]
fn he_normal_kernels_of_a_real_model_have_keras_statistics() {
    let store = weights::init(&example("fashion_cnn.cnn"), 3);
    let kernel = &store
        .get("conv3.kernel")
        .expect("fashion_cnn has conv3")
        .data;
    let fan_in = 3.0 * 3.0 * 128.0;
    let stddev = (2.0f64 / fan_in).sqrt();
    let n = kernel.len() as f64;
    let mean = kernel.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let std = (kernel
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    assert!(mean.abs() < 6.0 * stddev / n.sqrt(), "mean {mean}");
    assert!(
        (std / stddev - 1.0).abs() < 0.015,
        "std {std}, Keras {stddev}"
    );
    let bound = (2.0 * stddev / 0.879_625_661_034_239_8) as f32;
    assert!(kernel.iter().all(|v| v.abs() <= bound));
}

#[test]
fn init_is_deterministic_and_seeded() {
    let model = example("fashion_cnn.cnn");
    let first = weights::init(&model, 42);
    let again = weights::init(&model, 42);
    assert_eq!(bits(&first), bits(&again));
    let other = weights::init(&model, 43);
    assert_ne!(
        bits(&first)
            .into_iter()
            .map(|(_, _, b)| b)
            .collect::<Vec<_>>(),
        bits(&other)
            .into_iter()
            .map(|(_, _, b)| b)
            .collect::<Vec<_>>()
    );
    // A single-threaded run gives the same bits as rayon's default pool.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a pool");
    let serial = pool.install(|| weights::init(&model, 42));
    assert_eq!(bits(&first), bits(&serial));
}

#[test]
fn line_filters_are_the_seeds() {
    // filters = np.zeros((7, 7, 3, 2)); filters[:, 3, :, 0] = 1; filters[3, :, :, 1] = 1
    let store = weights::init(&example("line_filters.cnn"), 0);
    assert_eq!(store.names().collect::<Vec<_>>(), ["conv1.kernel"]);
    let kernel = store.get("conv1.kernel").expect("the model's only weight");
    assert_eq!(kernel.shape, [7, 7, 3, 2]);
    let mut expected = Vec::new();
    for row in 0..7 {
        for column in 0..7 {
            for _channel in 0..3 {
                expected.push(if column == 3 { 1.0 } else { 0.0 });
                expected.push(if row == 3 { 1.0 } else { 0.0 });
            }
        }
    }
    assert_eq!(kernel.data, expected);
}

#[test]
fn save_then_load_is_bitwise() {
    let dir = scratch("round-trip");
    let path = dir.join("fashion.safetensors");
    let model = example("fashion_cnn.cnn");
    let mut store = weights::init(&model, 9);
    store.metadata.insert("model".into(), "fashion_cnn".into());
    store.metadata.insert("epoch".into(), "4".into());
    weights::save(&store, &path).expect("saved");
    let loaded = weights::load_for(&model, &path).expect("loads against its model");
    assert_eq!(bits(&loaded), bits(&store));
    assert_eq!(loaded.metadata, store.metadata);
    let any = weights::load_file(&path).expect("loads as a plain file");
    assert_eq!(any.len(), store.len());
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn save_is_atomic_and_leaves_no_temporary_file() {
    let dir = scratch("atomic");
    let path = dir.join("w.safetensors");
    let model = example("line_filters.cnn");
    weights::save(&weights::init(&model, 0), &path).expect("first save");
    let mut changed = weights::init(&model, 0);
    changed.get_mut("conv1.kernel").expect("present").data[0] = 0.5;
    weights::save(&changed, &path).expect("second save replaces the first");
    assert_eq!(files_in(&dir), ["w.safetensors"]);
    let loaded = weights::load_for(&model, &path).expect("the new file");
    assert_eq!(loaded.get("conv1.kernel").map(|t| t.data[0]), Some(0.5));

    // A store that cannot be encoded leaves the previous file whole.
    let mut broken = changed.clone();
    broken.insert(
        "bad",
        Tensor {
            shape: vec![3],
            data: vec![1.0],
        },
    );
    let error = weights::save(&broken, &path).expect_err("an inconsistent tensor");
    assert!(matches!(&error, WeightsError::Inconsistent { tensor, len: 1, .. } if tensor == "bad"));
    assert!(error.to_string().contains("`bad`"), "{error}");
    assert_eq!(files_in(&dir), ["w.safetensors"]);
    assert!(weights::load_for(&model, &path).is_ok());
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn saving_into_a_missing_folder_names_the_file() {
    let dir = scratch("missing-folder");
    let path = dir.join("no").join("such").join("w.safetensors");
    let error = weights::save(&TensorStore::new(), &path).expect_err("no folder");
    assert!(matches!(&error, WeightsError::Write { path: p, .. } if *p == path));
    assert!(error.to_string().contains("w.safetensors"), "{error}");
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn unreadable_files_are_read_errors() {
    let dir = scratch("unreadable");
    let path = dir.join("absent.safetensors");
    let error = weights::load_file(&path).expect_err("no such file");
    assert!(matches!(error, WeightsError::Read { .. }));
    assert!(error.to_string().contains("absent.safetensors"), "{error}");
    let _ = fs::remove_dir_all(dir);
}

/// Writes `bytes` to a file of the scratch folder and loads it.
fn load_bytes(dir: &Path, name: &str, bytes: &[u8]) -> WeightsError {
    let path = dir.join(name);
    fs::write(&path, bytes).expect("the scratch folder is writable");
    let error = weights::load_file(&path).expect_err("corrupt on purpose");
    assert!(
        error.to_string().contains(name),
        "the message names the file: {error}"
    );
    error
}

#[test]
fn corrupt_files_are_format_errors() {
    let dir = scratch("corrupt");
    let empty = load_bytes(&dir, "empty.safetensors", b"");
    assert!(matches!(
        empty,
        WeightsError::Format {
            source: SafeTensorError::HeaderTooSmall,
            ..
        }
    ));

    let noise: Vec<u8> = (0u32..4096)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let random = load_bytes(&dir, "random.safetensors", &noise);
    assert!(matches!(random, WeightsError::Format { .. }), "{random:?}");

    // The header promises 4 floats (16 bytes); only 8 bytes follow.
    let header = r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    let mut short = (header.len() as u64).to_le_bytes().to_vec();
    short.extend(header.as_bytes());
    short.extend([0u8; 8]);
    let truncated = load_bytes(&dir, "truncated.safetensors", &short);
    assert!(matches!(
        truncated,
        WeightsError::Format {
            source: SafeTensorError::MetadataIncompleteBuffer,
            ..
        }
    ));

    // A header length larger than the file.
    let mut long = 1000u64.to_le_bytes().to_vec();
    long.extend(b"{}");
    let overlong = load_bytes(&dir, "overlong.safetensors", &long);
    assert!(matches!(
        overlong,
        WeightsError::Format {
            source: SafeTensorError::InvalidHeaderLength,
            ..
        }
    ));

    let mut not_json = 4u64.to_le_bytes().to_vec();
    not_json.extend(b"{{{{");
    let garbled = load_bytes(&dir, "garbled.safetensors", &not_json);
    assert!(matches!(garbled, WeightsError::Format { .. }));
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn other_dtypes_are_refused_by_name() {
    let dir = scratch("dtype");
    let data: Vec<u8> = [1.0f64, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(Dtype::F64, vec![2], &data).expect("16 bytes");
    let bytes = safetensors::serialize([("conv1.bias", view)], None).expect("serializable");
    let error = load_bytes(&dir, "f64.safetensors", &bytes);
    assert!(matches!(
        &error,
        WeightsError::Dtype { tensor, dtype: Dtype::F64, .. } if tensor == "conv1.bias"
    ));
    assert!(error.to_string().contains("`conv1.bias`"), "{error}");
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn load_for_reports_every_mismatch_at_once() {
    let dir = scratch("mismatch");
    let path = dir.join("wrong.safetensors");
    let model = example("fashion_cnn.cnn");
    let init = weights::init(&model, 5);
    let mut store: TensorStore = init
        .iter()
        .filter(|(name, _)| !["conv1.kernel", "conv2.bias"].contains(name))
        .map(|(name, t)| (name.to_string(), t.clone()))
        .collect();
    store.insert("conv2.bais", Tensor::zeros(vec![128]));
    store.insert("foo.bar", Tensor::zeros(vec![1]));
    store.insert("dense1.kernel", Tensor::zeros(vec![10, 5]));
    weights::save(&store, &path).expect("saved");

    let error = weights::load_for(&model, &path).expect_err("does not fit");
    let WeightsError::Mismatch {
        problems,
        model: name,
        ..
    } = &error
    else {
        panic!("expected a mismatch, got {error:?}");
    };
    assert_eq!(name, "fashion_cnn");
    assert_eq!(
        problems,
        &[
            Problem::Missing {
                name: "conv1.kernel".into(),
                shape: vec![7, 7, 1, 64]
            },
            Problem::Missing {
                name: "conv2.bias".into(),
                shape: vec![128]
            },
            Problem::WrongShape {
                name: "dense1.kernel".into(),
                found: vec![10, 5],
                expected: vec![2304, 128],
            },
            // The file's order: safetensors sorts tensors by name.
            Problem::Unexpected {
                name: "conv2.bais".into(),
                did_you_mean: Some("conv2.bias".into()),
            },
            Problem::Unexpected {
                name: "foo.bar".into(),
                did_you_mean: None
            },
        ]
    );
    let message = error.to_string();
    for expected in [
        "wrong.safetensors",
        "5 problems",
        "missing `conv1.kernel` [7, 7, 1, 64]",
        "unexpected `foo.bar`",
        "unexpected `conv2.bais` (did you mean `conv2.bias`?)",
        "`dense1.kernel` has shape [10, 5] but the model needs [2304, 128]",
    ] {
        assert!(
            message.contains(expected),
            "`{expected}` not in:\n{message}"
        );
    }
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn load_for_returns_the_models_order() {
    let dir = scratch("order");
    let path = dir.join("w.safetensors");
    let model = example("fashion_cnn.cnn");
    let store = weights::init(&model, 2);
    weights::save(&store, &path).expect("saved");
    let loaded = weights::load_for(&model, &path).expect("fits");
    assert_eq!(
        loaded.names().collect::<Vec<_>>(),
        store.names().collect::<Vec<_>>()
    );
    assert!(weights::mismatches(&model, &loaded).is_empty());
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn a_failed_rename_removes_the_temporary_file() {
    let dir = scratch("rename-fails");
    // The target is a folder: the temporary file is written, the rename fails.
    let path = dir.join("taken");
    fs::create_dir(&path).expect("the scratch folder is writable");
    let store = weights::init(&example("line_filters.cnn"), 0);
    let error = weights::save(&store, &path).expect_err("cannot replace a folder");
    assert!(matches!(error, WeightsError::Write { .. }), "{error:?}");
    assert_eq!(files_in(&dir), ["taken"]);
    let _ = fs::remove_dir_all(dir);
}

/// `init`'s weights stored as `cnnc run` stores a checkpoint: each weight
/// under `weight:`, one optimizer state tensor per weight under `state:`,
/// the counters in the metadata.
fn as_checkpoint(weights: &TensorStore) -> TensorStore {
    let mut checkpoint = TensorStore::new();
    for (name, t) in weights.iter() {
        checkpoint.insert(format!("weight:{name}"), t.clone());
        checkpoint.insert(
            format!("state:{name}.state0"),
            Tensor::zeros(t.shape.clone()),
        );
    }
    checkpoint.metadata.insert("epoch".into(), "3".into());
    checkpoint
}

#[test]
fn a_training_checkpoint_is_read_for_its_weights() {
    let dir = scratch("checkpoint");
    let path = dir.join("m.checkpoint.safetensors");
    let model = example("fashion_cnn.cnn");
    let init = weights::init(&model, 7);
    weights::save(&as_checkpoint(&init), &path).expect("saved");
    let loaded = weights::load_for(&model, &path).expect("a checkpoint holds the weights");
    assert_eq!(bits(&loaded), bits(&init));
    assert_eq!(loaded.metadata.get("epoch").map(String::as_str), Some("3"));
    assert!(weights::is_checkpoint(
        &weights::load_file(&path).expect("reads")
    ));
    assert!(!weights::is_checkpoint(&init));
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn another_model_s_weights_list_a_few_problems_and_count_the_rest() {
    // lenet5's 14 tensors against fashion_cnn's 16 weights: 30 problems, of
    // which the message shows 10, some of each side.
    let dir = scratch("another-model");
    let path = dir.join("lenet5.checkpoint.safetensors");
    let lenet = example("lenet5.cnn");
    weights::save(&as_checkpoint(&weights::init(&lenet, 1)), &path).expect("saved");
    let error = weights::load_for(&example("fashion_cnn.cnn"), &path).expect_err("another's");
    let WeightsError::Mismatch {
        problems,
        tensors,
        checkpoint,
        ..
    } = &error
    else {
        panic!("expected a mismatch, got {error:?}");
    };
    assert_eq!((problems.len(), *tensors, *checkpoint), (30, 14, true));
    let text = error.to_string().replace(&dir.display().to_string(), "DIR");
    assert_eq!(
        text.lines().count(),
        1 + weights::LISTED_PROBLEMS + 2,
        "{text}"
    );
    insta::assert_snapshot!("mismatch_of_another_model", text);
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn a_few_problems_are_all_listed() {
    let problems: Vec<Problem> = (0..weights::LISTED_PROBLEMS)
        .map(|i| Problem::Unexpected {
            name: format!("extra{i}"),
            did_you_mean: None,
        })
        .collect();
    let error = WeightsError::Mismatch {
        path: "w.safetensors".into(),
        model: "m".into(),
        problems,
        tensors: 12,
        checkpoint: false,
    };
    let text = error.to_string();
    assert!(
        text.contains("`extra9`") && !text.contains("more"),
        "{text}"
    );
    // Two of the file's twelve tensors are the model's weights.
    assert!(!text.contains("none of"), "{text}");
}

#[test]
fn weights_holding_nan_or_infinity_are_refused_naming_the_first() {
    let dir = scratch("non-finite");
    let path = dir.join("diverged.safetensors");
    let model = example("fashion_cnn.cnn");
    let mut store = weights::init(&model, 3);
    // conv2.kernel is [3, 3, 64, 128]: flat index 128 * 64 + 5 is [0, 1, 0, 5].
    let kernel = store.get_mut("conv2.kernel").expect("conv2.kernel");
    kernel.data[128 * 64 + 5] = f32::NAN;
    kernel.data[128 * 64 + 6] = f32::NEG_INFINITY;
    store.get_mut("dense2.bias").expect("dense2.bias").data[3] = f32::INFINITY;
    weights::save(&store, &path).expect("saved");
    let error = weights::load_for(&model, &path).expect_err("refused");
    let WeightsError::NonFinite {
        tensor,
        index,
        value,
        count,
        len,
        tensors,
        ..
    } = &error
    else {
        panic!("expected NonFinite, got {error:?}");
    };
    assert_eq!(tensor, "conv2.kernel");
    assert_eq!(index, &[0, 1, 0, 5]);
    assert!(value.is_nan());
    assert_eq!((*count, *len, *tensors), (2, 3 * 3 * 64 * 128, 2));
    insta::assert_snapshot!(
        "non_finite_weights",
        error.to_string().replace(&dir.display().to_string(), "DIR")
    );
    // The file itself still reads, for inspection.
    let raw = weights::load_file(&path).expect("load_file reads it");
    assert!(raw.get("conv2.kernel").expect("there").data[128 * 64 + 5].is_nan());
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn initial_weights_take_what_the_file_holds_and_refuse_another_models() {
    // LeNet-5's weights as the start of the Fashion CNN: no name in common,
    // another model's file, an error; the Fashion CNN's own file with one
    // weight removed and one added: that weight keeps its initializer, the
    // extra tensor is left out; a NaN is refused by name.
    let dir = scratch("initial");
    let (fashion, lenet) = (example("fashion_cnn.cnn"), example("lenet5.cnn"));
    let lenet_file = dir.join("lenet.safetensors");
    weights::save(&weights::init(&lenet, 1), &lenet_file).expect("saved");
    let err = weights::load_initial(&fashion, &lenet_file, weights::init(&fashion, 2))
        .expect_err("another model's weights");
    assert!(err.to_string().contains("is it another model's?"), "{err}");

    let trained = weights::init(&fashion, 3);
    let mut partial: TensorStore = trained
        .iter()
        .filter(|(name, _)| *name != "dense3.bias")
        .map(|(name, t)| (name.to_string(), t.clone()))
        .collect();
    partial.insert(
        "old_head.kernel",
        Tensor {
            shape: vec![2],
            data: vec![1.0, 2.0],
        },
    );
    let file = dir.join("partial.safetensors");
    weights::save(&partial, &file).expect("saved");
    let initial = weights::init(&fashion, 2);
    let (store, report) =
        weights::load_initial(&fashion, &file, initial.clone()).expect("fits but for one");
    assert_eq!(report.kept, ["dense3.bias"]);
    assert_eq!(report.unused, ["old_head.kernel"]);
    assert_eq!(report.loaded.len(), trained.len() - 1);
    assert_eq!(
        store.get("conv1.kernel").expect("weight").data,
        trained.get("conv1.kernel").expect("weight").data
    );
    assert_eq!(
        store.get("dense3.bias").expect("weight").data,
        initial.get("dense3.bias").expect("weight").data
    );
    assert!(store.get("old_head.kernel").is_none());

    partial.get_mut("conv2.bias").expect("weight").data[3] = f32::NAN;
    weights::save(&partial, &file).expect("saved");
    let err = weights::load_initial(&fashion, &file, initial).expect_err("NaN");
    assert!(
        matches!(err, WeightsError::NonFinite { ref tensor, .. } if tensor == "conv2.bias"),
        "{err}"
    );
    fs::remove_dir_all(&dir).expect("removed");
}
