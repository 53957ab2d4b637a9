//! Feature maps: what one layer makes of some input images, one grey panel
//! per channel, as the seed shows its vertical and horizontal line filters
//! on two colour photographs.
//!
//! The model is cut after the chosen layer (only the nodes it depends on
//! are kept, and it becomes the only output), compiled for a batch of the
//! images, and run once.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use petgraph::stable_graph::NodeIndex;

use super::text::{set_labels, Label};
use super::{save_png, Format, VizError};
use crate::data::folder::{self, Conversion};
use crate::runtime::inference::Inference;
use crate::runtime::weights::TensorStore;
use crate::shapes::TypedGraph;

/// Which layer, on which images.
#[derive(Debug, Clone)]
pub struct MapsConfig {
    /// The layer's path, as `cnnc summary` shows it (its output), or a
    /// node's name as `cnnc graph` shows it (`conv1`, `conv1.relu`).
    pub layer: String,
    /// The input images (any format `image` reads; resized to the model's
    /// input when their size differs).
    pub images: Vec<PathBuf>,
    /// Worker threads.
    pub threads: usize,
}

/// The feature maps of one layer for some images.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMaps {
    /// The name of the node whose output they are.
    pub node: String,
    /// Height, width and channels of one image's maps.
    pub shape: [usize; 3],
    /// Per image, its maps `[height, width, channels]` row-major.
    pub maps: Vec<Vec<f32>>,
    /// One line per image that had to be resized to the model's input.
    pub notes: Vec<String>,
}

impl FeatureMaps {
    /// The value at (`row`, `col`) of channel `channel` of image `image`.
    pub fn at(&self, image: usize, (row, col): (usize, usize), channel: usize) -> f32 {
        let [_, width, channels] = self.shape;
        self.maps[image][(row * width + col) * channels + channel]
    }
}

/// Computes the feature maps of `config.layer` for `config.images` with
/// `weights`, and draws them into `path` as PNG: one row of panels per
/// image (wrapping after eight channels), each channel scaled to its own
/// minimum (black) and maximum (white) and labelled with the image, the
/// channel and that range.
pub fn render(
    model: &TypedGraph,
    weights: &TensorStore,
    config: &MapsConfig,
    path: &Path,
) -> Result<FeatureMaps, VizError> {
    Format::of(path, &[Format::Png])?;
    let maps = compute(model, weights, config)?;
    let names: Vec<String> = config
        .images
        .iter()
        .map(|p| {
            p.file_name().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        })
        .collect();
    let (mut picture, labels) = draw(&maps, &names);
    set_labels(&mut picture, &labels).map_err(|e| super::draw_error(path, e))?;
    save_png(&picture, path)?;
    Ok(maps)
}

/// The feature maps of `config.layer` for `config.images`, without drawing them.
pub fn compute(
    model: &TypedGraph,
    weights: &TensorStore,
    config: &MapsConfig,
) -> Result<FeatureMaps, VizError> {
    let target = find_layer(model, &config.layer)?;
    let input = image_shape(model)?;
    let shape = node_shape(model, target)?;
    if config.images.is_empty() {
        return Err(VizError::Empty("no input image was given".into()));
    }
    let mut batch = Vec::new();
    let mut notes = Vec::new();
    for path in &config.images {
        let (pixels, note) = load_image(path, input)?;
        batch.extend(pixels);
        notes.extend(note);
    }
    let count = config.images.len();
    let values = if Some(target) == model.graph.input {
        batch
    } else {
        let truncated = up_to(model, target);
        let compiled = crate::compile_inference(&truncated, count)?;
        let mut program = Inference::new(compiled, weights.clone(), config.threads)?;
        let outputs = program.run(&batch)?;
        outputs
            .into_iter()
            .next()
            .map(|(_, v)| v)
            .unwrap_or_default()
    };
    let per_image = shape.iter().product::<usize>();
    Ok(FeatureMaps {
        node: model.graph.nodes[target].name.clone(),
        shape,
        maps: values
            .chunks(per_image.max(1))
            .map(<[f32]>::to_vec)
            .collect(),
        notes,
    })
}

/// The node `path` names: a node's name, or else a layer's path (its last
/// node, the layer's output). Unknown paths fail with the nearest ones.
pub fn find_layer(model: &TypedGraph, path: &str) -> Result<NodeIndex, VizError> {
    let g = &model.graph;
    let by_name = model.order.iter().find(|&&id| g.nodes[id].name == path);
    let by_layer = model
        .order
        .iter()
        .rev()
        .find(|&&id| g.nodes[id].layer == path);
    if let Some(&id) = by_name.or(by_layer) {
        return Ok(id);
    }
    let mut candidates: Vec<(f64, &str)> = model
        .order
        .iter()
        .flat_map(|&id| [g.nodes[id].name.as_str(), g.nodes[id].layer.as_str()])
        .collect::<HashSet<&str>>()
        .into_iter()
        .map(|c| (strsim::jaro_winkler(path, c), c))
        .filter(|&(score, _)| score >= 0.8)
        .collect();
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    Err(VizError::UnknownLayer {
        layer: path.to_string(),
        model: g.name.clone(),
        suggestions: candidates
            .iter()
            .take(5)
            .map(|(_, c)| c.to_string())
            .collect(),
    })
}

/// Reads the image at `path` as the model's input of shape `[height, width,
/// channels]` (1: grey, 3: RGB), pixels scaled to [0, 1] as the seed does
/// ([`folder::read_image`]); resized first when its size differs, which the
/// second value says.
pub fn load_image(path: &Path, shape: [usize; 3]) -> Result<(Vec<f32>, Option<String>), VizError> {
    let unreadable = |message: String| VizError::ReadImage {
        path: path.to_path_buf(),
        message,
    };
    let (w, h) = image::image_dimensions(path).map_err(|e| unreadable(e.to_string()))?;
    let note = ((h as usize, w as usize) != (shape[0], shape[1])).then(|| {
        format!(
            "resized `{}` from {w}x{h} to {}x{} pixels (width x height), the model's input",
            path.display(),
            shape[1],
            shape[0]
        )
    });
    let conversion = Conversion {
        shape,
        convert: true,
    };
    let pixels = folder::read_image(path, conversion).map_err(|e| unreadable(e.to_string()))?;
    Ok((pixels, note))
}

/// The model's input shape, when it is an image of 1 or 3 channels.
pub(super) fn image_shape(model: &TypedGraph) -> Result<[usize; 3], VizError> {
    let shape = model.input_shape().map(|s| s.0.clone()).unwrap_or_default();
    match shape[..] {
        [h, w, c @ (1 | 3)] => Ok([h as usize, w as usize, c as usize]),
        _ => Err(VizError::NotAnImage {
            what: format!(
                "the input of model `{}` (feature maps read grey or RGB images)",
                model.graph.name
            ),
            shape,
        }),
    }
}

/// The output shape of `node`, when it is an image.
fn node_shape(model: &TypedGraph, node: NodeIndex) -> Result<[usize; 3], VizError> {
    let info = model.info(node);
    match info.shape.0[..] {
        [h, w, c] if info.batched => Ok([h as usize, w as usize, c as usize]),
        _ => Err(VizError::NotAnImage {
            what: format!("layer `{}`", model.graph.nodes[node].name),
            shape: info.shape.0.clone(),
        }),
    }
}

/// `model` cut after `target`: only the nodes `target` depends on, with
/// `target` as the only output.
pub(super) fn up_to(model: &TypedGraph, target: NodeIndex) -> TypedGraph {
    let mut keep = HashSet::new();
    let mut pending = vec![target];
    while let Some(id) = pending.pop() {
        if keep.insert(id) {
            pending.extend(model.graph.inputs_of(id));
        }
    }
    let mut cut = model.clone();
    let dropped: Vec<NodeIndex> = cut
        .graph
        .nodes
        .node_indices()
        .filter(|id| !keep.contains(id))
        .collect();
    for id in dropped {
        cut.graph.nodes.remove_node(id);
        cut.info[id.index()] = None;
    }
    cut.order.retain(|id| keep.contains(id));
    cut.graph.outputs = vec![(model.graph.nodes[target].name.clone(), target)];
    cut
}

/// Channels per row of panels.
const COLUMNS: usize = 8;
/// Height of the band above each panel that holds its label: the image and
/// channel, then the range of values.
const CAPTION: u32 = 38;
/// Space between panels.
const GAP: u32 = 10;

/// The panels of `maps` and their labels (set later, over the pixels).
fn draw(maps: &FeatureMaps, names: &[String]) -> (RgbImage, Vec<Label>) {
    let [height, width, channels] = maps.shape;
    let scale = panel_scale(height, width);
    let panel = (
        (width as f64 * scale).round().max(1.0) as u32,
        (height as f64 * scale).round().max(1.0) as u32,
    );
    let columns = channels.clamp(1, COLUMNS);
    let rows_per_image = channels.div_ceil(columns).max(1);
    let cell = (panel.0 + GAP, panel.1 + CAPTION + GAP);
    let size = (
        GAP + cell.0 * columns as u32,
        GAP + cell.1 * (rows_per_image * maps.maps.len()) as u32,
    );
    let mut picture = RgbImage::from_pixel(size.0, size.1, Rgb([255, 255, 255]));
    let mut labels = Vec::new();
    for (image, name) in (0..maps.maps.len()).zip(names) {
        for channel in 0..channels {
            let row = image * rows_per_image + channel / columns;
            let x = GAP + (channel % columns) as u32 * cell.0;
            let y = GAP + row as u32 * cell.1;
            let (low, high) = paint_panel(
                &mut picture,
                maps,
                (image, channel),
                (x, y + CAPTION),
                scale,
            );
            let lines = [
                format!("{name}: map {channel}"),
                format!("{low:.3} to {high:.3}"),
            ];
            for (line, text) in lines.into_iter().enumerate() {
                labels.push(Label {
                    text,
                    x: (x + panel.0 / 2) as i32,
                    y: y as i32 + 2 + 17 * line as i32,
                    size: 14.0,
                    width: panel.0 as f32,
                    color: Rgb([0, 0, 0]),
                });
            }
        }
    }
    (picture, labels)
}

/// Screen pixels per map pixel: small maps are enlarged to about 160
/// pixels, large ones shrunk to at most 640.
pub(super) fn panel_scale(height: usize, width: usize) -> f64 {
    let side = height.max(width).max(1) as f64;
    if side < 160.0 {
        (160.0 / side).ceil()
    } else {
        (640.0 / side).min(1.0)
    }
}

/// Paints channel `channel` of image `image` with its top-left corner at
/// `at`, from black at its minimum to white at its maximum; returns them.
fn paint_panel(
    picture: &mut RgbImage,
    maps: &FeatureMaps,
    (image, channel): (usize, usize),
    at: (u32, u32),
    scale: f64,
) -> (f32, f32) {
    let [height, width, _] = maps.shape;
    let values = (0..height * width).map(|i| maps.at(image, (i / width, i % width), channel));
    let (low, high) = values.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let range = if high > low { high - low } else { 1.0 };
    let panel = (
        (width as f64 * scale).round() as u32,
        (height as f64 * scale).round() as u32,
    );
    for y in 0..panel.1 {
        for x in 0..panel.0 {
            let row = ((f64::from(y) / scale) as usize).min(height - 1);
            let col = ((f64::from(x) / scale) as usize).min(width - 1);
            let v = (maps.at(image, (row, col), channel) - low) / range;
            let grey = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            picture.put_pixel(at.0 + x, at.1 + y, Rgb([grey, grey, grey]));
        }
    }
    (low, high)
}
