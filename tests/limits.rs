//! The memory cap (`cnnc::limits`): programs, data sets, images and input
//! arrays larger than the cap are refused before they are allocated, with
//! their sizes in the error.
//!
//! The library tests here rely on the machine's cap, and so on
//! `CNNC_MAX_MEMORY` being unset (or large) in the environment the tests
//! run in: each asks for far more than any machine has. The command-line
//! tests set the variable themselves, so that the sizes in their snapshots
//! do not depend on the machine.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cnnc::data::{fashion, folder};
use cnnc::limits::{CapSource, MemoryCap};
use cnnc::memory::{self, MemoryError, Need};
use cnnc::predict::{self, NpyOptions, PredictError};
use cnnc::{CompileError, Mode};

const SMALL: &str = "
    model small : [28, 28, 1] {
        conv(8, 3, activation: relu)
        flatten
        dense(10, activation: softmax)
    }";

/// A fresh, empty folder for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cnnc-limits-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the temp dir is writable");
    dir
}

/// `cnnc ARGS` with `CNNC_MAX_MEMORY` set to `cap` (or removed for `None`).
fn cnnc(args: &[&str], cap: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cnnc"));
    command.args(args).env("NO_COLOR", "1");
    match cap {
        Some(cap) => command.env(cnnc::limits::VARIABLE, cap),
        None => command.env_remove(cnnc::limits::VARIABLE),
    };
    command.output().expect("cnnc runs")
}

/// The standard error of a command that failed.
fn failure_text(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

/// [`failure_text`] with `dir` written `DIR`.
fn failure(out: &Output, dir: &Path) -> String {
    failure_text(out).replace(&dir.display().to_string(), "DIR")
}

/// A .npy file (version 1) declaring float32 values of `shape`, followed
/// by `data`, whatever its length.
fn npy(shape: &[u64], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

#[test]
fn a_program_beyond_any_machine_s_memory_is_refused_before_code_generation() {
    // 2^32 examples: an arena of about 85 TiB, more than any machine has.
    let model = cnnc::compile_source("small.cnn", SMALL, None, None).expect("compiles");
    let batch = 1usize << 32;
    let error = match cnnc::compile_inference(&model, batch) {
        Ok(_) => panic!("compiled a program of 2^32 examples"),
        Err(e) => e,
    };
    let CompileError::Memory(MemoryError::OverCap { plan, need, cap }) = &error else {
        panic!("expected OverCap, got {error:?}");
    };
    assert_eq!((plan.as_str(), need.batch), ("small", batch));
    assert!(need.total() > cap.bytes, "{need:?} fits {cap:?}");
    assert_eq!(need.weights, model.param_counts().total * 4);
    let text = error.to_string();
    assert!(
        text.starts_with("model `small` at batch 4294967296 needs "),
        "{text}"
    );
    assert!(text.contains("help: lower the batch size"), "{text}");
}

#[test]
fn need_counts_the_arena_the_weights_the_optimizer_state_and_the_batch() {
    let model = cnnc::compile_source("small.cnn", SMALL, None, None).expect("compiles");
    let loss = cnnc::autodiff::LossSpec {
        smoothing: 0.0,
        weights: Vec::new(),
    };
    let optimizer = cnnc::config::TrainConfig::default().optimizer;
    let plan = cnnc::plan_training(&model, &loss, &optimizer, 32).expect("plans");
    let layout = memory::plan(&plan).expect("places");
    let need = Need::of(&plan, &layout);
    let params = model.param_counts();
    let states = cnnc::optimizer::state_count(&optimizer) as u64;
    assert_eq!(need.batch, 32);
    assert_eq!(need.arena, layout.arena_bytes);
    assert_eq!(need.weights, params.total * 4);
    assert_eq!(need.state, params.trainable * 4 * states);
    // The images, labels, scores and losses of 32 examples, and a few
    // per-step scalars.
    let batch_values = 32 * (28 * 28 + 1 + 10 + 1);
    assert!(
        (batch_values * 4..batch_values * 4 + 1024).contains(&need.lent),
        "{need:?}"
    );
    let exactly = |bytes| MemoryCap {
        bytes,
        source: CapSource::Variable,
    };
    assert_eq!(
        memory::check_cap(&plan, &layout, &exactly(need.total())),
        Ok(())
    );
    let cap = exactly(need.total() - 1);
    assert_eq!(
        memory::check_cap(&plan, &layout, &cap),
        Err(MemoryError::OverCap {
            plan: "small".into(),
            need,
            cap
        })
    );
}

#[test]
fn an_idx_header_claiming_2_to_the_32_images_is_refused_before_reading() {
    let dir = scratch("idx");
    let path = dir.join("train-images-idx3-ubyte");
    let mut bytes = 0x0803u32.to_be_bytes().to_vec();
    for d in [u32::MAX, 28, 28] {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(&[0; 784]);
    std::fs::write(&path, bytes).expect("written");
    let error = fashion::read_idx_images(&path).expect_err("refused");
    let fashion::DataError::OverCap { dims, need, .. } = &error else {
        panic!("expected OverCap, got {error:?}");
    };
    assert_eq!(dims, &[u32::MAX, 28, 28]);
    assert_eq!(*need, u64::from(u32::MAX) * 784 * 8);
    let _ = std::fs::remove_dir_all(dir);
}

/// A grey PNG whose header declares `width` × `height` pixels, followed by
/// the first compressed rows only: what a decode bomb's first bytes look
/// like (its pixel data, all alike, would compress a thousandfold).
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    fn chunk(kind: &[u8], data: &[u8]) -> Vec<u8> {
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
        out
    }
    let mut header = width.to_be_bytes().to_vec();
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend(chunk(b"IHDR", &header));
    let mut rows = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    rows.write_all(&[0; 100]).expect("compressed");
    bytes.extend(chunk(b"IDAT", &rows.finish().expect("compressed")));
    bytes.extend(chunk(b"IEND", &[]));
    bytes
}

/// The CRC-32 that PNG chunks end with.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn an_image_claiming_40000_by_40000_pixels_is_refused_before_decoding() {
    let dir = scratch("bomb");
    let path = dir.join("bomb.png");
    std::fs::write(&path, png_header_only(40_000, 40_000)).expect("written");
    let conversion = folder::Conversion {
        shape: [28, 28, 1],
        convert: true,
    };
    let error = folder::read_image(&path, conversion).expect_err("refused");
    let folder::FolderError::TooLarge {
        width,
        height,
        decoded,
        limit,
        ..
    } = &error
    else {
        panic!("expected TooLarge, got {error:?}");
    };
    assert_eq!((*width, *height, *decoded), (40_000, 40_000, 1_600_000_000));
    assert_eq!(*limit, folder::decode_limit().expect("the cap reads"));
    assert!(*limit <= 512 << 20);
    let text = error.to_string();
    assert!(
        text.contains("is 40000x40000 pixels, 1.49 GiB decoded, more than the"),
        "{text}"
    );
    // Within the limit, the same missing pixel data is a decoding error.
    std::fs::write(&path, png_header_only(28, 28)).expect("written");
    let error = folder::read_image(&path, conversion).expect_err("no pixels");
    assert!(
        matches!(error, folder::FolderError::Decode { .. }),
        "{error:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `model`'s initial weights saved into `dir`; returns the file.
fn saved_weights(model: &cnnc::TypedGraph, dir: &Path) -> PathBuf {
    let path = dir.join("w.safetensors");
    cnnc::runtime::weights::save(&cnnc::runtime::weights::init(model, 1), &path).expect("saved");
    path
}

#[test]
fn a_npy_header_declaring_more_than_the_file_holds_is_refused() {
    let dir = scratch("npy");
    let model = cnnc::load_model(Path::new("examples/lenet5.cnn"), None).expect("lenet5");
    let weights = saved_weights(&model, &dir);
    let input = dir.join("x.npy");
    let options = NpyOptions {
        batch: 32,
        mode: Mode::Inference,
        threads: 1,
        precision: cnnc::Precision::F32,
    };
    let run =
        |input: &Path| predict::predict_npy(&model, &weights, input, &dir.join("y.npy"), options);
    std::fs::write(&input, npy(&[1_000_000_000_000, 28, 28, 1], &[0; 3136])).expect("written");
    match run(&input) {
        Err(PredictError::Truncated {
            shape,
            values,
            bytes,
            holds,
            ..
        }) => {
            assert_eq!(shape, [1_000_000_000_000, 28, 28, 1]);
            assert_eq!(
                (values, bytes, holds),
                (784_000_000_000_000, 3_136_000_000_000_000, 3136)
            );
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    // A version-2 header may declare a dictionary of 4 GiB: refused by its
    // length, before the reader allocates it.
    let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
    v2.extend_from_slice(&u32::MAX.to_le_bytes());
    v2.extend_from_slice(b"{'descr'");
    std::fs::write(&input, v2).expect("written");
    let error = run(&input).expect_err("refused");
    assert!(
        error
            .to_string()
            .contains("its header declares 4294967307 bytes of header, but the file holds only 20"),
        "{error}"
    );
    // The file that holds what it declares runs.
    std::fs::write(&input, npy(&[1, 28, 28, 1], &[0; 3136])).expect("written");
    assert_eq!(run(&input).expect("runs"), [dir.join("y.npy")]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bench_refuses_vgg16_at_batch_4096_with_the_sizes() {
    let out = cnnc(
        &[
            "bench",
            "stdlib/vgg.cnn",
            "--model",
            "vgg16",
            "--batch",
            "4096",
        ],
        Some("64G"),
    );
    insta::assert_snapshot!("bench_vgg16_batch_4096", failure_text(&out));
    let dir = scratch("bench-large-input");
    let file = dir.join("large.cnn");
    std::fs::write(
        &file,
        "model large : [2000, 2000, 3] {\n    conv(32, 3, padding: same, activation: relu)\n    \
         maxpool(2)\n    conv(64, 3, padding: same, activation: relu)\n    global_avg_pool\n    \
         dense(10, activation: softmax)\n}\n",
    )
    .expect("written");
    let out = cnnc(
        &["bench", file.to_str().expect("utf-8"), "--batch", "32"],
        Some("16G"),
    );
    insta::assert_snapshot!("bench_input_2000x2000_batch_32", failure(&out, &dir));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn without_the_variable_the_cap_is_the_machine_s_memory() {
    // 10^6 examples of VGG-16: about 56 TiB, on no machine.
    let out = cnnc(
        &[
            "bench",
            "stdlib/vgg.cnn",
            "--model",
            "vgg16",
            "--batch",
            "1000000",
        ],
        None,
    );
    let text = failure_text(&out);
    assert!(
        text.contains("of physical memory")
            || text.contains("memory limit of this process's cgroup"),
        "{text}"
    );
    let out = cnnc(&["bench", "examples/lenet5.cnn"], Some("lots"));
    let text = failure_text(&out);
    assert!(
        text.contains("CNNC_MAX_MEMORY=`lots` is not a size"),
        "{text}"
    );
}

#[test]
fn predict_refuses_arrays_that_the_file_or_the_cap_cannot_hold() {
    let dir = scratch("predict-npy");
    let model = cnnc::load_model(Path::new("examples/lenet5.cnn"), None).expect("lenet5");
    let weights = saved_weights(&model, &dir);
    let input = dir.join("x.npy");
    std::fs::write(&input, npy(&[1_000_000_000_000, 28, 28, 1], &[0; 3136])).expect("written");
    let args = |input: &Path| {
        [
            "predict",
            "examples/lenet5.cnn",
            "--weights",
            weights.to_str().expect("utf-8"),
            "--input",
            input.to_str().expect("utf-8"),
            "--output",
            "/nonexistent/y.npy",
        ]
        .map(String::from)
    };
    let run = |input: &Path, cap| {
        let args = args(input);
        cnnc(&args.iter().map(String::as_str).collect::<Vec<_>>(), cap)
    };
    insta::assert_snapshot!(
        "predict_npy_header_beyond_the_file",
        failure(&run(&input, None), &dir)
    );
    std::fs::write(&input, npy(&[1, 28, 28, 1], &[0; 3136])).expect("written");
    insta::assert_snapshot!(
        "predict_npy_over_the_cap",
        failure(&run(&input, Some("1K")), &dir)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A gzip-compressed IDX file of unsigned bytes.
fn idx_gz(path: &Path, magic: u32, dims: &[u32], data: &[u8]) {
    let mut bytes = magic.to_be_bytes().to_vec();
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&bytes).expect("gzip");
    std::fs::write(path, encoder.finish().expect("gzip")).expect("written");
}

#[test]
fn run_refuses_data_sets_larger_than_the_cap_before_reading_them() {
    let dir = scratch("run-data");
    // Fashion-MNIST's files declaring 1,000 training images: 6.0 MiB read.
    let data = dir.join("fashion");
    std::fs::create_dir_all(&data).expect("folder");
    let pixels = |count: u32| vec![0u8; count as usize * 28 * 28];
    idx_gz(
        &data.join("train-images-idx3-ubyte.gz"),
        0x803,
        &[1000, 28, 28],
        &pixels(1000),
    );
    idx_gz(
        &data.join("train-labels-idx1-ubyte.gz"),
        0x801,
        &[1000],
        &[0; 1000],
    );
    idx_gz(
        &data.join("t10k-images-idx3-ubyte.gz"),
        0x803,
        &[2, 28, 28],
        &pixels(2),
    );
    idx_gz(
        &data.join("t10k-labels-idx1-ubyte.gz"),
        0x801,
        &[2],
        &[0, 1],
    );
    let run = |data_set: &str, extra: &[&str]| {
        let mut args = vec!["run", "examples/lenet5.cnn", "--train", data_set];
        args.extend_from_slice(extra);
        cnnc(&args, Some("1M"))
    };
    let data_arg = data.to_str().expect("utf-8");
    let out = run("fashion", &["--data", data_arg]);
    insta::assert_snapshot!("run_idx_over_the_cap", failure(&out, &dir));
    // A folder of three classes of two images each, 28x28 grey.
    let images = dir.join("images");
    for class in ["a", "b", "c"] {
        std::fs::create_dir_all(images.join(class)).expect("class folder");
        for i in 0..2u8 {
            image::GrayImage::from_pixel(28, 28, image::Luma([i * 50]))
                .save(images.join(class).join(format!("{i}.png")))
                .expect("png");
        }
    }
    let out = cnnc(
        &[
            "run",
            "examples/lenet5.cnn",
            "--train",
            images.to_str().expect("utf-8"),
        ],
        Some("1K"),
    );
    insta::assert_snapshot!("run_folder_over_the_cap", failure(&out, &dir));
    let _ = std::fs::remove_dir_all(dir);
}
