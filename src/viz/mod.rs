//! Pictures: what the seed chapter shows rather than tells, drawn by cnnc
//! itself as PNG (and SVG where it fits), with no Python.
//!
//! One module per kind of picture, each with one entry function:
//!
//! - [`diagram::render`]: the architecture as a diagram, through Graphviz's
//!   `dot` (the only picture that needs a program outside cnnc).
//! - [`grid::render`]: a grid of labelled training images (`cnnc show`).
//! - [`maps::render`]: the feature maps of one layer for some input images
//!   (`cnnc maps`).
//! - [`saliency::render`]: a saliency map, what an image's class score
//!   depends on (`cnnc maps --saliency`).
//! - [`curves::render`]: learning curves from a training history.
//! - [`confusion::render`]: a confusion matrix as a heat map with class names.
//!
//! Pixels are composed with `image`, charts drawn with `plotters`, and all
//! text is set in DejaVu Sans, embedded in cnnc so that no system font is
//! needed at run time.

pub mod confusion;
pub mod curves;
pub mod diagram;
pub mod grid;
pub mod maps;
pub mod saliency;
mod text;

use std::path::{Path, PathBuf};

use image::RgbImage;
use plotters::backend::RGBPixel;
use plotters::coord::Shift;
use plotters::prelude::*;
use thiserror::Error;

use crate::runtime::gradients::GradientError;
use crate::runtime::inference::InferenceError;

/// Why a picture could not be made.
#[derive(Debug, Error)]
pub enum VizError {
    /// Graphviz's `dot` is not installed (or not where `CNNC_DOT` points).
    #[error(
        "cannot draw the diagram: Graphviz's `{program}` was not found. Install Graphviz \
         (`apt-get install graphviz` on Debian and Ubuntu, `brew install graphviz` on macOS, \
         or from https://graphviz.org/download/), or write the DOT text with `--format dot`, \
         which needs nothing"
    )]
    GraphvizMissing {
        /// The program looked for.
        program: String,
    },
    /// `dot` ran but failed.
    #[error("Graphviz's `{program}` failed: {message}")]
    Graphviz {
        /// The program run.
        program: String,
        /// What it said, or how it ended.
        message: String,
    },
    /// The output's extension names a format this picture cannot be written as.
    #[error("cannot write `{}`: this picture is written as {}; name the file with that extension", path.display(), allowed.join(" or "))]
    Format {
        /// The output file.
        path: PathBuf,
        /// The extensions this picture can be written with.
        allowed: Vec<&'static str>,
    },
    /// A picture file could not be written.
    #[error("cannot write `{}`: {message}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// An input image could not be read or decoded.
    #[error("cannot read image `{}`: {message}", path.display())]
    ReadImage {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A history file could not be read or parsed.
    #[error("cannot read history `{}`: {message}", path.display())]
    History {
        /// The file.
        path: PathBuf,
        /// Why (with the line, where one is at fault).
        message: String,
    },
    /// No layer of the model has this path.
    #[error("model `{model}` has no layer `{layer}`{}", suggestion(.suggestions))]
    UnknownLayer {
        /// The path asked for.
        layer: String,
        /// The model.
        model: String,
        /// The nearest paths that do exist.
        suggestions: Vec<String>,
    },
    /// The layer's output (or the model's input) is not an image.
    #[error("{what} has shape {shape:?}; feature maps need [height, width, channels]")]
    NotAnImage {
        /// The layer or input.
        what: String,
        /// Its per-example shape.
        shape: Vec<u64>,
    },
    /// There is nothing to draw.
    #[error("nothing to draw: {0}")]
    Empty(String),
    /// The model could not be compiled.
    #[error(transparent)]
    Compile(#[from] crate::CompileError),
    /// The forward pass failed.
    #[error(transparent)]
    Inference(#[from] InferenceError),
    /// The gradient program failed.
    #[error(transparent)]
    Gradient(#[from] GradientError),
    /// The model's first output is not a vector of class scores.
    #[error("output `{output}` has shape {shape:?}, not one score per class: a saliency map differentiates a class score")]
    NotScores {
        /// The output.
        output: String,
        /// Its per-example shape.
        shape: Vec<u64>,
    },
    /// The class asked for is not one of the model's.
    #[error("there is no class {class}: the model has {classes} classes, 0 to {}", .classes.saturating_sub(1))]
    NoSuchClass {
        /// The class asked for.
        class: usize,
        /// How many classes the model has.
        classes: usize,
    },
}

fn suggestion(suggestions: &[String]) -> String {
    match suggestions {
        [] => String::new(),
        [one] => format!("; did you mean `{one}`?"),
        many => format!(
            "; did you mean one of {}?",
            many.iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The file formats a picture can be written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A PNG bitmap.
    Png,
    /// SVG vector graphics.
    Svg,
}

impl Format {
    /// The format `path`'s extension names, when it is one of `allowed`
    /// (case-insensitive), or [`VizError::Format`].
    pub fn of(path: &Path, allowed: &[Format]) -> Result<Format, VizError> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        allowed
            .iter()
            .copied()
            .find(|f| Some(f.extension()) == extension.as_deref())
            .ok_or_else(|| VizError::Format {
                path: path.to_path_buf(),
                allowed: allowed.iter().map(|f| f.extension()).collect(),
            })
    }

    /// The file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Svg => "svg",
        }
    }
}

/// Writes `picture` to `path` as PNG.
fn save_png(picture: &RgbImage, path: &Path) -> Result<(), VizError> {
    picture
        .save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| VizError::Write {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// A plotters drawing error, as the failure to write `path`.
fn draw_error(path: &Path, error: impl std::fmt::Display) -> VizError {
    VizError::Write {
        path: path.to_path_buf(),
        message: format!("drawing failed: {error}"),
    }
}

/// A chart plotters can draw on any backend: as PNG through a pixel buffer,
/// or as SVG.
trait Chart {
    /// The picture's size in pixels.
    fn size(&self) -> (u32, u32);

    /// Draws the chart on `root`, which is [`Chart::size`] large and blank.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>;
}

/// Draws `chart` into `path` as `format`.
fn write_chart(chart: &impl Chart, path: &Path, format: Format) -> Result<(), VizError> {
    text::register_font();
    let (width, height) = chart.size();
    match format {
        Format::Png => {
            let mut picture = RgbImage::new(width, height);
            {
                let backend = BitMapBackend::<RGBPixel>::with_buffer_and_format(
                    picture.as_mut(),
                    (width, height),
                )
                .map_err(|e| draw_error(path, e))?;
                let root = backend.into_drawing_area();
                root.fill(&WHITE).map_err(|e| draw_error(path, e))?;
                chart.draw(&root).map_err(|e| draw_error(path, e))?;
                root.present().map_err(|e| draw_error(path, e))?;
            }
            save_png(&picture, path)
        }
        Format::Svg => {
            let root = SVGBackend::new(path, (width, height)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| draw_error(path, e))?;
            chart.draw(&root).map_err(|e| draw_error(path, e))?;
            root.present().map_err(|e| VizError::Write {
                path: path.to_path_buf(),
                message: e.to_string(),
            })
        }
    }
}

/// A plotters error as text, for `map_err` in [`Chart::draw`].
fn plot_error(error: impl std::fmt::Display) -> String {
    error.to_string()
}
