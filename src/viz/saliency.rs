//! Saliency maps (Simonyan, Vedaldi and Zisserman, "Deep Inside
//! Convolutional Networks: Visualising Image Classification Models and
//! Saliency Maps", 2014, section 3.1): how much each pixel of an image
//! moves the score of one class, `max over channels of |d S_c / d x|`, where
//! `S_c` is the class's score before the softmax.
//!
//! The model is cut after its class scores (a final softmax's input), and
//! its gradient program ([`crate::compile_gradients`], in inference mode)
//! runs on the image with an upstream gradient that is one on the class and
//! zero elsewhere: the input gradient it returns is `d S_c / d x`.

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};

use super::maps::{image_shape, load_image, panel_scale, up_to};
use super::text::{set_labels, Label};
use super::{save_png, Format, VizError};
use crate::graph::{Activation, Op};
use crate::runtime::gradients::Gradients;
use crate::runtime::weights::{self, TensorStore};
use crate::shapes::TypedGraph;
use crate::Mode;

/// Which image, and which class's score.
#[derive(Debug, Clone)]
pub struct SaliencyConfig {
    /// The image (any format `image` reads; resized to the model's input
    /// when its size differs).
    pub image: PathBuf,
    /// The class, or `None` for the class the model predicts.
    pub class: Option<usize>,
    /// Worker threads.
    pub threads: usize,
}

/// The saliency map of one image for one class.
#[derive(Debug, Clone, PartialEq)]
pub struct Saliency {
    /// The class whose score was differentiated.
    pub class: usize,
    /// Its name (stored with the weights, else `class K`).
    pub class_name: String,
    /// The class the model predicts (the highest score).
    pub predicted: usize,
    /// Every class's score (before a final softmax).
    pub scores: Vec<f32>,
    /// The image's height, width and channels (the model's input).
    pub shape: [usize; 3],
    /// The image as the model reads it, `[height, width, channels]`, in [0, 1].
    pub image: Vec<f32>,
    /// Per pixel, `max over channels of |d score / d pixel|`, row-major.
    pub map: Vec<f32>,
    /// A line saying the image was resized to the model's input, if it was.
    pub note: Option<String>,
}

/// Computes the saliency map of `config.image` for `config.class` with
/// `weights`, and draws it into `path` as PNG: the image, the map (black
/// where the score does not depend on the pixel, through red and yellow to
/// white at the map's maximum) and the map over the image in grey.
pub fn render(
    model: &TypedGraph,
    weights: &TensorStore,
    config: &SaliencyConfig,
    path: &Path,
) -> Result<Saliency, VizError> {
    Format::of(path, &[Format::Png])?;
    let saliency = compute(model, weights, config)?;
    let (mut picture, labels) = draw(&saliency);
    set_labels(&mut picture, &labels).map_err(|e| super::draw_error(path, e))?;
    save_png(&picture, path)?;
    Ok(saliency)
}

/// The saliency map of `config.image` for `config.class`, without drawing it.
pub fn compute(
    model: &TypedGraph,
    weights: &TensorStore,
    config: &SaliencyConfig,
) -> Result<Saliency, VizError> {
    let shape = image_shape(model)?;
    let (image, note) = load_image(&config.image, shape)?;
    let scores_model = class_scores(model)?;
    let classes = scores_model.outputs()[0].1[0] as usize;
    let compiled = crate::compile_gradients(&scores_model, Mode::Inference, 1)?;
    let mut program = Gradients::new(compiled, weights.clone(), config.threads)?;
    let output = scores_model.graph.outputs[0].0.clone();
    let seed = |class: Option<usize>| {
        let mut upstream = vec![0.0; classes];
        if let Some(c) = class {
            upstream[c] = 1.0;
        }
        vec![(output.clone(), upstream)]
    };
    // A first run with a zero upstream gradient gives the scores alone.
    let scores = program.run(&image, &seed(None))?.outputs.remove(0).1;
    let predicted = argmax(&scores);
    let class = config.class.unwrap_or(predicted);
    if class >= classes {
        return Err(VizError::NoSuchClass { class, classes });
    }
    let gradient = program.run(&image, &seed(Some(class)))?.input;
    Ok(Saliency {
        class,
        class_name: weights::class_names(weights, classes)[class].clone(),
        predicted,
        scores,
        shape,
        map: magnitude(&gradient, shape[2]),
        image,
        note,
    })
}

/// `model` cut after its class scores: the input of a final softmax, or
/// the output itself; the first output must be a vector.
fn class_scores(model: &TypedGraph) -> Result<TypedGraph, VizError> {
    let (name, output) = model.graph.outputs[0].clone();
    let shape = model.info(output).shape.0.clone();
    if shape.len() != 1 {
        return Err(VizError::NotScores {
            output: name,
            shape,
        });
    }
    let logits = match model.graph.nodes[output].op {
        Op::Activation(Activation::Softmax) => model.graph.inputs_of(output)[0],
        _ => output,
    };
    Ok(up_to(model, logits))
}

/// The index of the highest value (the first of equal ones).
fn argmax(values: &[f32]) -> usize {
    (0..values.len())
        .max_by(|&a, &b| values[a].total_cmp(&values[b]).then(b.cmp(&a)))
        .unwrap_or(0)
}

/// `max over channels of |g|` for each pixel of `gradient` (`channels` per pixel).
fn magnitude(gradient: &[f32], channels: usize) -> Vec<f32> {
    gradient
        .chunks(channels.max(1))
        .map(|pixel| pixel.iter().fold(0.0f32, |m, g| m.max(g.abs())))
        .collect()
}

/// The colour of a panel's pixel, by the pixel's index in the image.
type Colouring<'a> = dyn Fn(usize) -> Rgb<u8> + 'a;

/// Height of the band above each panel that holds its caption.
const CAPTION: u32 = 40;
/// Space around and between panels.
const GAP: u32 = 10;

/// The three panels of `saliency` (image, map, map over the image) and
/// their captions.
fn draw(saliency: &Saliency) -> (RgbImage, Vec<Label>) {
    let [height, width, _] = saliency.shape;
    let scale = panel_scale(height, width);
    let panel = (
        (width as f64 * scale).round().max(1.0) as u32,
        (height as f64 * scale).round().max(1.0) as u32,
    );
    let size = (GAP + 3 * (panel.0 + GAP), 2 * GAP + CAPTION + panel.1);
    let mut picture = RgbImage::from_pixel(size.0, size.1, Rgb([255, 255, 255]));
    let peak = saliency.map.iter().fold(0.0f32, |m, &v| m.max(v));
    // Each pixel's share of the peak: what the heat colours show.
    let heat = |i: usize| {
        if peak > 0.0 {
            saliency.map[i] / peak
        } else {
            0.0
        }
    };
    let panels: [(String, &Colouring); 3] = [
        ("image".to_string(), &|i| pixel(saliency, i)),
        (
            format!("saliency of {} ({})", saliency.class_name, saliency.class),
            &|i| hot(heat(i)),
        ),
        (format!("over the image (peak {peak:.3})"), &|i| {
            over(grey(pixel(saliency, i)), hot(heat(i)), heat(i))
        }),
    ];
    let mut labels = Vec::new();
    for (k, (caption, colour)) in panels.into_iter().enumerate() {
        let x = GAP + k as u32 * (panel.0 + GAP);
        for (py, px) in (0..panel.1).flat_map(|y| (0..panel.0).map(move |x| (y, x))) {
            let row = ((f64::from(py) / scale) as usize).min(height - 1);
            let col = ((f64::from(px) / scale) as usize).min(width - 1);
            picture.put_pixel(x + px, GAP + CAPTION + py, colour(row * width + col));
        }
        labels.push(Label {
            text: caption,
            x: (x + panel.0 / 2) as i32,
            y: (GAP + 8) as i32,
            size: 14.0,
            width: panel.0 as f32,
            color: Rgb([0, 0, 0]),
        });
    }
    (picture, labels)
}

/// Pixel `i` of the image, grey or RGB.
fn pixel(saliency: &Saliency, i: usize) -> Rgb<u8> {
    let channels = saliency.shape[2];
    let byte = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    let values = &saliency.image[i * channels..(i + 1) * channels];
    match values {
        [r, g, b] => Rgb([byte(*r), byte(*g), byte(*b)]),
        _ => {
            let v = byte(values[0]);
            Rgb([v, v, v])
        }
    }
}

/// The colour's luminance as grey, dimmed so that the heat stands out.
fn grey(colour: Rgb<u8>) -> Rgb<u8> {
    let [r, g, b] = colour.0.map(f32::from);
    let v = ((0.299 * r + 0.587 * g + 0.114 * b) * 0.6).round() as u8;
    Rgb([v, v, v])
}

/// The "hot" colour map: black, red, yellow, white as `t` goes from 0 to 1.
fn hot(t: f32) -> Rgb<u8> {
    let channel = |start: f32| (((t - start) * 3.0).clamp(0.0, 1.0) * 255.0).round() as u8;
    Rgb([channel(0.0), channel(1.0 / 3.0), channel(2.0 / 3.0)])
}

/// `top` over `bottom` with opacity `alpha`.
fn over(bottom: Rgb<u8>, top: Rgb<u8>, alpha: f32) -> Rgb<u8> {
    let a = alpha.clamp(0.0, 1.0);
    let mix = |b: u8, t: u8| (f32::from(b) * (1.0 - a) + f32::from(t) * a).round() as u8;
    Rgb([
        mix(bottom[0], top[0]),
        mix(bottom[1], top[1]),
        mix(bottom[2], top[2]),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_magnitude_is_the_largest_absolute_channel() {
        let gradient = [0.5, -2.0, 1.0, 0.0, 0.25, -0.1];
        assert_eq!(magnitude(&gradient, 3), vec![2.0, 0.25]);
        assert_eq!(magnitude(&[-3.0, 1.0], 1), vec![3.0, 1.0]);
    }

    #[test]
    fn the_hot_map_runs_from_black_through_red_and_yellow_to_white() {
        assert_eq!(hot(0.0), Rgb([0, 0, 0]));
        assert_eq!(hot(1.0 / 3.0), Rgb([255, 0, 0]));
        assert_eq!(hot(2.0 / 3.0), Rgb([255, 255, 0]));
        assert_eq!(hot(1.0), Rgb([255, 255, 255]));
    }

    #[test]
    fn the_first_highest_score_is_predicted() {
        assert_eq!(argmax(&[0.1, 0.7, 0.7, -1.0]), 1);
        assert_eq!(argmax(&[2.0]), 0);
    }
}
