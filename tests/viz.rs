//! Pictures: each kind is written, decoded back, and checked for its size
//! and for content (not blank, and what it should show); errors are values.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cnnc::data::fashion::{self, Source};
use cnnc::train::fit::Epoch;
use cnnc::viz::{confusion, curves, diagram, grid, maps, Format, VizError};
use image::{GenericImageView, RgbImage};

/// A fresh folder for one test's files.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cnnc-viz-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn decode(path: &Path) -> RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("`{}` decodes: {e}", path.display()))
        .to_rgb8()
}

fn distinct_colours(picture: &RgbImage) -> usize {
    picture.pixels().map(|p| p.0).collect::<HashSet<_>>().len()
}

/// Pixels within `tolerance` of `colour` in every channel.
fn count_near(picture: &RgbImage, colour: [u8; 3], tolerance: u8) -> usize {
    picture
        .pixels()
        .filter(|p| (0..3).all(|c| p.0[c].abs_diff(colour[c]) <= tolerance))
        .count()
}

fn cnnc(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cnnc"));
    command.args(args).env("NO_COLOR", "1");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("cnnc runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn history(epochs: u64) -> Vec<Epoch> {
    (1..=epochs)
        .map(|e| {
            let t = e as f64;
            Epoch {
                epoch: e,
                loss: 1.2 / t,
                accuracy: 1.0 - 0.5 / t,
                val_loss: 1.3 / t + 0.05,
                val_accuracy: 0.95 - 0.5 / t,
                lr: 0.001,
                seconds: 10.0,
                top_k: vec![(3, 1.0 - 0.1 / t, 0.99 - 0.1 / t)],
                mean_iou: None,
            }
        })
        .collect()
}

#[test]
fn learning_curves_draw_both_series_of_both_panels() {
    let path = temp_dir("curves").join("curves.png");
    curves::render(&history(8), &path).expect("drawn");
    let picture = decode(&path);
    assert_eq!(picture.dimensions(), curves::SIZE);
    assert!(
        distinct_colours(&picture) > 50,
        "{}",
        distinct_colours(&picture)
    );
    // The training line is blue and the validation line orange, in both panels.
    for (colour, name) in [([31, 119, 180], "training"), ([255, 127, 14], "validation")] {
        let left = picture
            .view(0, 0, curves::SIZE.0 / 2, curves::SIZE.1)
            .to_image();
        let right = picture
            .view(curves::SIZE.0 / 2, 0, curves::SIZE.0 / 2, curves::SIZE.1)
            .to_image();
        for (half, side) in [(left, "loss"), (right, "accuracy")] {
            let n = count_near(&half, colour, 10);
            assert!(n > 200, "{name} {side}: {n} pixels of its colour");
        }
    }
}

#[test]
fn learning_curves_can_be_svg_and_redrawn_from_the_csv() {
    let dir = temp_dir("plot");
    let csv = dir.join("m.history.csv");
    let mut text = String::from(
        "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds,top3_accuracy,val_top3_accuracy\n",
    );
    for e in history(3) {
        let (_, top3, val_top3) = e.top_k[0];
        text += &format!(
            "{},{},{},{},{},{},{},{top3},{val_top3}\n",
            e.epoch, e.loss, e.accuracy, e.val_loss, e.val_accuracy, e.lr, e.seconds
        );
    }
    std::fs::write(&csv, &text).expect("csv");
    assert_eq!(curves::read_history(&csv).expect("reads"), history(3));
    let svg = dir.join("curves.svg");
    curves::render(&history(3), &svg).expect("drawn");
    let drawing = std::fs::read_to_string(&svg).expect("svg");
    assert!(drawing.starts_with("<svg"), "{}", &drawing[..80]);
    assert!(drawing.contains("accuracy") && drawing.contains("validation"));
    // The CLI draws the same picture from the file.
    let png = dir.join("curves.png");
    let out = cnnc(
        &[
            "plot",
            csv.to_str().expect("utf-8"),
            "-o",
            png.to_str().expect("utf-8"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(decode(&png).dimensions(), curves::SIZE);
}

#[test]
fn a_bad_history_names_its_line_or_column() {
    let dir = temp_dir("bad-history");
    let csv = dir.join("bad.csv");
    std::fs::write(
        &csv,
        "epoch,loss,accuracy,val_loss,val_accuracy\n1,0.5,0.8,0.6,0.7\n2,0.4,x,0.5,0.8\n",
    )
    .expect("csv");
    let error = curves::read_history(&csv).expect_err("a bad cell");
    assert!(matches!(error, VizError::History { .. }));
    let message = error.to_string();
    assert!(
        message.contains("line 3") && message.contains("`x`"),
        "{message}"
    );
    std::fs::write(&csv, "epoch,loss,accuracy\n1,0.5,0.8\n").expect("csv");
    let message = curves::read_history(&csv)
        .expect_err("a missing column")
        .to_string();
    assert!(message.contains("no column `val_loss`"), "{message}");
    let error = curves::render(&[], &dir.join("empty.png")).expect_err("no epochs");
    assert!(matches!(error, VizError::Empty(_)), "{error}");
    let error = curves::render(&history(2), &dir.join("curves.jpg")).expect_err("jpeg");
    assert!(error.to_string().contains("png or svg"), "{error}");
}

#[test]
fn the_confusion_matrix_shades_each_row_by_its_share() {
    let names: Vec<String> = fashion::CLASS_NAMES.iter().map(|s| s.to_string()).collect();
    // 90% on the diagonal, the rest one class to the right.
    let matrix: Vec<Vec<u64>> = (0..10)
        .map(|r| {
            (0..10)
                .map(|c| {
                    if c == r {
                        90
                    } else if c == (r + 1) % 10 {
                        10
                    } else {
                        0
                    }
                })
                .collect()
        })
        .collect();
    let path = temp_dir("confusion").join("confusion.png");
    confusion::render(&matrix, &names, &path).expect("drawn");
    let picture = decode(&path);
    // 72-pixel cells: 130 + 720 + 20 across, 80 + 720 + 50 down.
    assert_eq!(picture.dimensions(), (870, 850));
    assert!(distinct_colours(&picture) > 20);
    // The middle of a diagonal cell is dark blue (0.9 of its row), of an
    // empty cell white, of a 10% cell light blue.
    let centre = |row: u32, col: u32| picture.get_pixel(130 + col * 72 + 10, 80 + row * 72 + 10).0;
    assert!(centre(3, 3)[0] < 60, "{:?}", centre(3, 3));
    assert_eq!(centre(3, 7), [247, 251, 255]);
    let light = centre(3, 4);
    assert!(light[0] > 200 && light[0] < 247, "{light:?}");
    let error = confusion::render(&[vec![1, 2]], &names, &path).expect_err("not square");
    assert!(matches!(error, VizError::Empty(_)), "{error}");
}

#[test]
fn the_fashion_grid_shows_the_first_images_under_their_names() {
    let splits = fashion::load_from(Source::Bundled, 0, 0).expect("bundled subset");
    let path = temp_dir("grid").join("samples.png");
    let config = grid::GridConfig::default();
    assert_eq!(
        grid::render(&splits.train, &config, &path).expect("drawn"),
        40
    );
    let picture = decode(&path);
    // Cells of 28*3 + 16 by 28*3 + 20 + 8 pixels, 10 across and 4 down.
    assert_eq!(picture.dimensions(), (1000, 448));
    assert!(distinct_colours(&picture) > 100);
    // Every image is where it should be, dark on light, pixel for pixel.
    for (slot, index) in [(0, 0), (13, 13), (39, 39)] {
        let (x0, y0) = ((slot % 10) * 100 + 8, (slot / 10) * 112 + 20);
        let image = splits.train.image(index);
        for (i, &v) in image.iter().enumerate().step_by(37) {
            let (row, col) = ((i / 28) as u32, (i % 28) as u32);
            let ink = 255 - (v * 255.0).round() as u8;
            let got = picture.get_pixel(x0 + col * 3 + 1, y0 + row * 3 + 1).0;
            assert_eq!(got, [ink; 3], "image {index} pixel {i}");
        }
    }
    // The band above each image holds its class name.
    let title = picture.view(0, 0, 100, 20).to_image();
    let inked = title.pixels().filter(|p| p.0[0] < 128).count();
    assert!(inked > 30, "{inked} dark pixels in the first title");
}

#[test]
fn the_grid_is_png_only_and_needs_images() {
    let splits = fashion::load_from(Source::Bundled, 0, 0).expect("bundled subset");
    let dir = temp_dir("grid-errors");
    let error = grid::render(
        &splits.test,
        &grid::GridConfig::default(),
        &dir.join("s.svg"),
    )
    .expect_err("svg");
    assert!(matches!(error, VizError::Format { .. }), "{error}");
    let none = grid::GridConfig {
        rows: 0,
        ..grid::GridConfig::default()
    };
    let error = grid::render(&splits.test, &none, &dir.join("s.png")).expect_err("0 rows");
    assert!(matches!(error, VizError::Empty(_)), "{error}");
}

/// Mean absolute difference between vertically and horizontally adjacent
/// values of one map.
fn roughness(maps: &maps::FeatureMaps, image: usize, channel: usize) -> (f64, f64) {
    let [h, w, _] = maps.shape;
    let (mut down, mut across) = (0.0, 0.0);
    for r in 0..h - 1 {
        for c in 0..w - 1 {
            let v = maps.at(image, (r, c), channel);
            down += f64::from((maps.at(image, (r + 1, c), channel) - v).abs());
            across += f64::from((maps.at(image, (r, c + 1), channel) - v).abs());
        }
    }
    (down, across)
}

#[test]
fn line_filters_show_vertical_and_horizontal_lines_in_the_photographs() {
    let model = cnnc::load_model(Path::new("examples/line_filters.cnn"), None).expect("model");
    let weights = cnnc::runtime::weights::init(&model, 0);
    let config = maps::MapsConfig {
        layer: "conv1".into(),
        images: vec![
            "data/photos/china.jpg".into(),
            "data/photos/flower.jpg".into(),
        ],
        threads: 2,
    };
    let path = temp_dir("maps").join("maps.png");
    let found = maps::render(&model, &weights, &config, &path).expect("drawn");
    assert_eq!(found.shape, [427, 640, 2]);
    assert_eq!(found.maps.len(), 2);
    assert!(found.notes.is_empty(), "{:?}", found.notes);
    for image in 0..2 {
        // The vertical filter sums 7 pixels down a column, so its map is
        // smoother down than across; the horizontal filter's the reverse.
        // (How smooth a photograph is to begin with varies, so the two
        // maps are compared with each other.)
        let (down, across) = roughness(&found, image, 0);
        let vertical = down / across;
        let (down, across) = roughness(&found, image, 1);
        let horizontal = down / across;
        assert!(
            vertical * 1.4 < horizontal,
            "image {image}: down/across {vertical} in the vertical map, {horizontal} in the horizontal"
        );
    }
    // And each value is the seed's sum of 7 pixels (all channels) down the
    // column, or along the row, with zeros beyond the edges.
    let (pixels, _) =
        maps::load_image(Path::new("data/photos/flower.jpg"), [427, 640, 3]).expect("image");
    let at = |r: i64, c: i64| -> f32 {
        if (0..427).contains(&r) && (0..640).contains(&c) {
            let base = (r * 640 + c) as usize * 3;
            pixels[base..base + 3].iter().sum()
        } else {
            0.0
        }
    };
    for (r, c) in [(0, 0), (2, 639), (200, 321), (426, 100), (313, 3)] {
        let down: f32 = (-3..=3).map(|d| at(r + d, c)).sum();
        let across: f32 = (-3..=3).map(|d| at(r, c + d)).sum();
        let (r, c) = (r as usize, c as usize);
        assert!(
            (found.at(1, (r, c), 0) - down).abs() < 1e-4 * down.max(1.0),
            "vertical at {r}, {c}"
        );
        assert!(
            (found.at(1, (r, c), 1) - across).abs() < 1e-4 * across.max(1.0),
            "horizontal at {r}, {c}"
        );
    }
    // One 640x427 panel per image and filter, in a 2x2 grid with captions.
    let picture = decode(&path);
    assert_eq!(
        picture.dimensions(),
        (10 + 2 * 650, 10 + 2 * (427 + 38 + 10))
    );
    let panel = |x: u32, y: u32| picture.view(x, y, 640, 427).to_image();
    let (vertical, horizontal) = (panel(10, 48), panel(660, 48));
    assert!(distinct_colours(&vertical) > 100);
    let differing = vertical
        .pixels()
        .zip(horizontal.pixels())
        .filter(|(a, b)| a.0[0].abs_diff(b.0[0]) > 8)
        .count();
    assert!(
        differing > 10_000,
        "only {differing} pixels differ between the two maps"
    );
}

/// A small model whose first conv copies its input to map 0 and doubles it into map 1.
const COPY_AND_DOUBLE: &str = r#"
model copy : [8, 6, 1] {
    conv(2, 3, padding: same, use_bias: false,
         init: zeros where [1, 1, 0, 0] = 1, [1, 1, 0, 1] = 2)
    maxpool(2)
    flatten
    dense(3)
}
"#;

#[test]
fn maps_cut_the_model_after_the_layer_and_resize_the_image() {
    let model = cnnc::compile_source("copy.cnn", COPY_AND_DOUBLE, None, None).expect("model");
    let weights = cnnc::runtime::weights::init(&model, 0);
    let dir = temp_dir("maps-small");
    // A 12x16 grey gradient: resized to the model's 6x8.
    let input = dir.join("gradient.png");
    image::GrayImage::from_fn(12, 16, |x, y| image::Luma([(x * 20 + y * 3) as u8]))
        .save(&input)
        .expect("png");
    let config = maps::MapsConfig {
        layer: "conv1".into(),
        images: vec![input.clone()],
        threads: 1,
    };
    let found = maps::compute(&model, &weights, &config).expect("maps");
    assert_eq!(found.shape, [8, 6, 2]);
    assert_eq!(found.notes.len(), 1, "{:?}", found.notes);
    assert!(
        found.notes[0].contains("from 12x16 to 6x8"),
        "{}",
        found.notes[0]
    );
    let (pixels, _) = maps::load_image(&input, [8, 6, 1]).expect("image");
    for (i, &p) in pixels.iter().enumerate() {
        let (row, col) = (i / 6, i % 6);
        assert!(
            (found.at(0, (row, col), 0) - p).abs() < 1e-6,
            "map 0 at {i}"
        );
        assert!(
            (found.at(0, (row, col), 1) - 2.0 * p).abs() < 1e-6,
            "map 1 at {i}"
        );
    }
    // Small maps are enlarged: 6x8 at 20x makes 120x160 panels.
    let path = dir.join("maps.png");
    maps::render(&model, &weights, &config, &path).expect("drawn");
    assert_eq!(
        decode(&path).dimensions(),
        (10 + 2 * 130, 10 + 160 + 38 + 10)
    );
}

#[test]
fn maps_errors_name_the_layer_or_the_file() {
    let model = cnnc::compile_source("copy.cnn", COPY_AND_DOUBLE, None, None).expect("model");
    let weights = cnnc::runtime::weights::init(&model, 0);
    let dir = temp_dir("maps-errors");
    let mut config = maps::MapsConfig {
        layer: "conv".into(),
        images: vec!["data/photos/china.jpg".into()],
        threads: 1,
    };
    let error = maps::compute(&model, &weights, &config).expect_err("unknown layer");
    match &error {
        VizError::UnknownLayer { suggestions, .. } => {
            assert!(
                suggestions.contains(&"conv1".to_string()),
                "{suggestions:?}"
            )
        }
        other => panic!("{other}"),
    }
    assert!(error.to_string().contains("did you mean"), "{error}");
    config.layer = "dense1".into();
    let error = maps::compute(&model, &weights, &config).expect_err("a vector");
    assert!(matches!(error, VizError::NotAnImage { .. }), "{error}");
    config.layer = "conv1".into();
    let text = dir.join("not-an-image.png");
    std::fs::write(&text, "hello").expect("file");
    config.images = vec![text];
    let error = maps::compute(&model, &weights, &config).expect_err("not an image");
    assert!(matches!(error, VizError::ReadImage { .. }), "{error}");
    assert!(error.to_string().contains("not-an-image.png"), "{error}");
    config.images = vec![dir.join("missing.jpg")];
    let error = maps::compute(&model, &weights, &config).expect_err("missing");
    assert!(error.to_string().contains("missing.jpg"), "{error}");
}

#[test]
fn a_missing_graphviz_says_how_to_install_it() {
    let path = temp_dir("no-dot").join("m.svg");
    let error = diagram::run_graphviz("/no/such/graphviz/dot", "digraph {}", Format::Svg, &path)
        .expect_err("no such program");
    assert!(matches!(error, VizError::GraphvizMissing { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("apt-get install graphviz"), "{message}");
    assert!(message.contains("--format dot"), "{message}");
    // The CLI says the same, and DOT text needs nothing.
    let path = path.to_str().expect("utf-8");
    let out = cnnc(
        &[
            "graph",
            "examples/lenet5.cnn",
            "--format",
            "svg",
            "-o",
            path,
        ],
        &[(diagram::DOT_VARIABLE, "/no/such/graphviz/dot")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("apt-get install graphviz"),
        "{}",
        stderr(&out)
    );
    let out = cnnc(
        &["graph", "examples/lenet5.cnn", "--format", "dot"],
        &[(diagram::DOT_VARIABLE, "/no/such/graphviz/dot")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.starts_with(b"digraph"));
}

fn graphviz_installed() -> bool {
    Command::new("dot")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn graphviz_draws_the_architecture_when_installed() {
    let dir = temp_dir("dot");
    let model = cnnc::load_model(Path::new("examples/inception.cnn"), None).expect("model");
    let dot = cnnc::emit::dot(&model);
    let svg = dir.join("inception.svg");
    let result = diagram::render(&dot, Format::Svg, &svg);
    if !graphviz_installed() {
        // Without Graphviz the error is the one that says how to get it.
        assert!(
            matches!(result, Err(VizError::GraphvizMissing { .. })),
            "{result:?}"
        );
        return;
    }
    result.expect("drawn");
    let drawing = std::fs::read_to_string(&svg).expect("svg");
    assert!(drawing.contains("<svg"), "{drawing}");
    // The inception module is a cluster holding its four branches and the concatenation.
    assert!(
        drawing.contains("cluster_inception_3a"),
        "no module cluster"
    );
    for node in ["conv_1x1", "conv_3x3", "conv_5x5", "pool_proj", "concat"] {
        assert!(drawing.contains(node), "no {node} in the drawing");
    }
    let png = dir.join("inception.png");
    diagram::render(&dot, Format::Png, &png).expect("drawn");
    let picture = decode(&png);
    assert!(
        picture.width() > 200 && picture.height() > 500,
        "{:?}",
        picture.dimensions()
    );
    assert!(distinct_colours(&picture) > 10);
    // The extension must agree with the format.
    let error = diagram::render(&dot, Format::Png, &svg).expect_err("mismatch");
    assert!(matches!(error, VizError::Format { .. }), "{error}");
}

#[test]
fn cli_show_draws_the_requested_grid() {
    let path = temp_dir("cli-show").join("samples.png");
    let out = cnnc(
        &[
            "show",
            "fashion",
            "-o",
            path.to_str().expect("utf-8"),
            "--rows",
            "2",
            "--cols",
            "3",
            "--seed",
            "7",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("6 training images"));
    let picture = decode(&path);
    assert_eq!(picture.dimensions(), (3 * 100, 2 * 112));
    assert!(distinct_colours(&picture) > 50);
    let out = cnnc(&["show", "mnist", "-o", path.to_str().expect("utf-8")], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unknown data set `mnist`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn cli_maps_uses_the_initializers_and_names_unknown_layers() {
    let path = temp_dir("cli-maps").join("maps.png");
    let path = path.to_str().expect("utf-8");
    let args = [
        "maps",
        "examples/line_filters.cnn",
        "--image",
        "data/photos/china.jpg",
        "-o",
        path,
    ];
    let out = cnnc(&[&args[..], &["--layer", "conv1"]].concat(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("no --weights"), "{}", stderr(&out));
    assert_eq!(
        decode(Path::new(path)).dimensions(),
        (10 + 2 * 650, 10 + 427 + 38 + 10)
    );
    let out = cnnc(&[&args[..], &["--layer", "conv2"]].concat(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("no layer `conv2`") && err.contains("`conv1`"),
        "{err}"
    );
    // Given weights are used, and said nothing about.
    let model = cnnc::load_model(Path::new("examples/line_filters.cnn"), None).expect("model");
    let weights = temp_dir("cli-maps").join("line_filters.safetensors");
    cnnc::runtime::weights::save(&cnnc::runtime::weights::init(&model, 0), &weights)
        .expect("saved");
    let with = [
        "--layer",
        "conv1",
        "--weights",
        weights.to_str().expect("utf-8"),
    ];
    let out = cnnc(&[&args[..], &with].concat(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("no --weights"), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 image x 2 maps of `conv1`"));
}

#[test]
fn the_picture_commands_have_help() {
    for command in ["show", "maps", "plot", "graph", "eval"] {
        let out = cnnc(&[command, "--help"], &[]);
        assert!(out.status.success(), "{command}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{command}"
        );
    }
}

#[test]
fn cli_graph_needs_an_output_file_for_pictures() {
    let out = cnnc(&["graph", "examples/lenet5.cnn", "--format", "png"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("-o FILE.png"), "{}", stderr(&out));
    // DOT can go to a file too; the format follows its extension.
    let path = temp_dir("cli-graph").join("lenet5.dot");
    let out = cnnc(
        &[
            "graph",
            "examples/lenet5.cnn",
            "-o",
            path.to_str().expect("utf-8"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let dot = std::fs::read_to_string(&path).expect("dot");
    assert!(dot.starts_with("digraph"), "{dot}");
}

/// A tiny Fashion-MNIST-shaped data set in `dir`: IDX files, uncompressed.
fn write_tiny_set(dir: &Path, train: u32, test: u32) {
    let idx = |magic: u32, dims: &[u32], data: Vec<u8>| {
        let mut bytes = magic.to_be_bytes().to_vec();
        for d in dims {
            bytes.extend_from_slice(&d.to_be_bytes());
        }
        bytes.extend(data);
        bytes
    };
    // Image i is a bar whose row is its label, so that it can be learnt.
    let images = |n: u32| {
        let data = (0..n)
            .flat_map(|i| (0..28 * 28).map(move |p| if p / 28 / 3 == i % 10 { 255 } else { 0 }))
            .collect();
        idx(0x803, &[n, 28, 28], data)
    };
    let labels = |n: u32| idx(0x801, &[n], (0..n).map(|i| (i % 10) as u8).collect());
    for (name, bytes) in [
        ("train-images-idx3-ubyte", images(train)),
        ("train-labels-idx1-ubyte", labels(train)),
        ("t10k-images-idx3-ubyte", images(test)),
        ("t10k-labels-idx1-ubyte", labels(test)),
    ] {
        std::fs::write(dir.join(name), bytes).expect("idx");
    }
}

#[test]
fn cli_training_draws_learning_curves_and_eval_a_confusion_matrix() {
    let dir = temp_dir("cli-train");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("dir");
    write_tiny_set(&data, 80, 40);
    let model = dir.join("tiny.cnn");
    std::fs::write(
        &model,
        "model tiny : [28, 28, 1] {\n    maxpool(4)\n    flatten\n    dense(10, activation: softmax)\n}\n\
         train {\n    optimizer: adam(lr: 0.01)\n    batch: 8\n    epochs: 3\n    validation: 16\n}\n",
    )
    .expect("model");
    let (model, data, out_dir) = (
        model.to_str().expect("utf-8"),
        data.to_str().expect("utf-8"),
        dir.join("out"),
    );
    let out_dir = out_dir.to_str().expect("utf-8");
    let args = [
        "run",
        model,
        "--train",
        "fashion",
        "--data",
        data,
        "--out",
        out_dir,
        "--threads",
        "1",
    ];
    let out = cnnc(&args, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let curves_png = Path::new(out_dir).join("tiny.learning_curves.png");
    assert!(String::from_utf8_lossy(&out.stdout).contains("learning curves:"));
    let picture = decode(&curves_png);
    assert_eq!(picture.dimensions(), curves::SIZE);
    assert!(
        count_near(&picture, [255, 127, 14], 10) > 200,
        "no validation line"
    );
    let confusion_png = dir.join("confusion.png");
    let weights = Path::new(out_dir).join("tiny.safetensors");
    let out = cnnc(
        &[
            "eval",
            model,
            "--weights",
            weights.to_str().expect("utf-8"),
            "--data",
            data,
            "--confusion",
            confusion_png.to_str().expect("utf-8"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let picture = decode(&confusion_png);
    assert_eq!(picture.dimensions(), (870, 850));
    assert!(distinct_colours(&picture) > 20);
}
