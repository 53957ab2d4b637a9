//! Learning curves: loss and accuracy per epoch, on the training and the
//! validation set, side by side (what the seed plots from Keras' history).

use std::ops::Range;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::text::FAMILY;
use super::{plot_error, write_chart, Chart, Format, VizError};
use crate::train::fit::{parse_history, Epoch};

/// The picture's size in pixels.
pub const SIZE: (u32, u32) = (1000, 420);

/// Draws `history`'s learning curves into `path`, as PNG or SVG after its
/// extension: on the left the training and validation loss, on the right
/// the training and validation accuracy, against the epoch. Values that are
/// not finite (a validation set left empty) are left out.
pub fn render(history: &[Epoch], path: &Path) -> Result<(), VizError> {
    let format = Format::of(path, &[Format::Png, Format::Svg])?;
    if history.is_empty() {
        return Err(VizError::Empty(format!(
            "the history for `{}` has no epoch",
            path.display()
        )));
    }
    write_chart(&Curves { history }, path, format)
}

/// Reads a history as `cnnc run` writes it (`{model}.history.csv`; see
/// [`parse_history`] for the columns).
pub fn read_history(path: &Path) -> Result<Vec<Epoch>, VizError> {
    let fail = |message: String| VizError::History {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    parse_history(&text).map_err(fail)
}

struct Curves<'a> {
    history: &'a [Epoch],
}

/// One line of a panel: its legend, colour and points.
struct Series {
    name: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

const TRAINING: RGBColor = RGBColor(31, 119, 180);
const VALIDATION: RGBColor = RGBColor(255, 127, 14);

impl Chart for Curves<'_> {
    fn size(&self) -> (u32, u32) {
        SIZE
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let (left, right) = root.split_horizontally(SIZE.0 / 2);
        let series = |name, color, value: fn(&Epoch) -> f64| Series {
            name,
            color,
            points: self
                .history
                .iter()
                .map(|e| (e.epoch as f64, value(e)))
                .filter(|(_, v)| v.is_finite())
                .collect(),
        };
        let loss = [
            series("training", TRAINING, |e| e.loss),
            series("validation", VALIDATION, |e| e.val_loss),
        ];
        let highest = loss
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max);
        let title = ("loss", SeriesLabelPosition::UpperRight);
        panel(
            &left,
            title,
            &loss,
            self.epochs(),
            0.0..(highest * 1.1).max(1e-3),
        )?;
        let accuracy = [
            series("training", TRAINING, |e| e.accuracy),
            series("validation", VALIDATION, |e| e.val_accuracy),
        ];
        // Accuracy rises, so its legend goes where the curves are not.
        let title = ("accuracy", SeriesLabelPosition::LowerRight);
        panel(&right, title, &accuracy, self.epochs(), 0.0..1.0)
    }
}

impl Curves<'_> {
    /// The range of epochs on the x axis, half an epoch wider on each side.
    fn epochs(&self) -> Range<f64> {
        let first = self.history.iter().map(|e| e.epoch).min().unwrap_or(1);
        let last = self.history.iter().map(|e| e.epoch).max().unwrap_or(1);
        first as f64 - 0.5..last as f64 + 0.5
    }
}

/// One chart of `series`, titled, with its legend at `legend`.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    (title, legend): (&str, SeriesLabelPosition),
    series: &[Series],
    epochs: Range<f64>,
    values: Range<f64>,
) -> Result<(), String> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FAMILY, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(epochs, values)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_label_formatter(&|x| whole(*x))
        .light_line_style(BLACK.mix(0.04))
        .bold_line_style(BLACK.mix(0.15))
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 15))
        .draw()
        .map_err(plot_error)?;
    for s in series {
        let color = s.color;
        chart
            .draw_series(LineSeries::new(s.points.clone(), color.stroke_width(2)))
            .map_err(plot_error)?
            .label(s.name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(plot_error)?;
    }
    chart
        .configure_series_labels()
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .position(legend)
        .draw()
        .map_err(plot_error)
}

/// An axis label for epoch `x`: only whole epochs are labelled.
fn whole(x: f64) -> String {
    if (x - x.round()).abs() < 1e-6 {
        format!("{}", x.round())
    } else {
        String::new()
    }
}
