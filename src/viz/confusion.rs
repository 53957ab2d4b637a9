//! The confusion matrix as a heat map: one row per true class, one column
//! per predicted class, each cell shaded by the share of its row (so rare
//! and common classes compare) and marked with its count.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::text::FAMILY;
use super::{plot_error, write_chart, Chart, Format, VizError};

/// Draws `confusion` (`confusion[true][predicted]` counts, square) with
/// `class_names` (indexed by class; missing names show as numbers) into
/// `path`, as PNG or SVG after its extension.
pub fn render(confusion: &[Vec<u64>], class_names: &[String], path: &Path) -> Result<(), VizError> {
    let format = Format::of(path, &[Format::Png, Format::Svg])?;
    let n = confusion.len();
    if n == 0 || confusion.iter().any(|row| row.len() != n) {
        return Err(VizError::Empty(format!(
            "the confusion matrix for `{}` is not a square of counts",
            path.display()
        )));
    }
    let names = (0..n)
        .map(|c| class_names.get(c).cloned().unwrap_or_else(|| c.to_string()))
        .collect();
    let layout = Layout::for_classes(n);
    write_chart(
        &Heatmap {
            confusion,
            names,
            layout,
        },
        path,
        format,
    )
}

/// Where things go, in pixels.
#[derive(Debug, Clone, Copy)]
struct Layout {
    classes: usize,
    /// A cell's side.
    cell: i32,
    /// Room for the row labels, left of the cells.
    left: i32,
    /// Room for the title and the column labels, above the cells.
    top: i32,
}

impl Layout {
    /// Cells as large as fit about 750 pixels, between 8 and 72 pixels.
    fn for_classes(classes: usize) -> Layout {
        let cell = (750 / classes.max(1) as i32).clamp(8, 72);
        Layout {
            classes,
            cell,
            left: 130,
            top: 80,
        }
    }

    /// The font size of labels and counts.
    fn font(&self) -> f64 {
        (f64::from(self.cell) * 0.2).clamp(6.0, 13.0)
    }

    /// The top-left corner of cell (`row`, `column`).
    fn corner(&self, row: usize, column: usize) -> (i32, i32) {
        (
            self.left + column as i32 * self.cell,
            self.top + row as i32 * self.cell,
        )
    }
}

struct Heatmap<'a> {
    confusion: &'a [Vec<u64>],
    names: Vec<String>,
    layout: Layout,
}

impl Chart for Heatmap<'_> {
    fn size(&self) -> (u32, u32) {
        let l = &self.layout;
        let side = l.cell * l.classes as i32;
        ((l.left + side + 20) as u32, (l.top + side + 50) as u32)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        self.draw_titles(root)?;
        for (row, counts) in self.confusion.iter().enumerate() {
            let total = counts.iter().sum::<u64>().max(1) as f64;
            for (column, &count) in counts.iter().enumerate() {
                self.draw_cell(root, (row, column), count, count as f64 / total)?;
            }
        }
        Ok(())
    }
}

impl Heatmap<'_> {
    fn draw_titles<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let l = &self.layout;
        let side = l.cell * l.classes as i32;
        let centre = |size: f64, color: &RGBColor| {
            (FAMILY, size)
                .into_font()
                .color(color)
                .pos(Pos::new(HPos::Center, VPos::Center))
        };
        let title =
            "confusion matrix (rows: true class, columns: predicted; shade: share of the row)";
        root.draw_text(title, &centre(15.0, &BLACK), (l.left + side / 2 - 40, 18))
            .map_err(plot_error)?;
        root.draw_text(
            "predicted",
            &centre(14.0, &BLACK),
            (l.left + side / 2, l.top + side + 30),
        )
        .map_err(plot_error)?;
        for (i, name) in self.names.iter().enumerate() {
            let (x, y) = l.corner(i, i);
            // Column labels alternate between two lines so that long names
            // of neighbouring columns do not run into each other.
            let stagger = if i % 2 == 0 { 0 } else { 16 };
            root.draw_text(
                name,
                &centre(l.font(), &BLACK),
                (x + l.cell / 2, l.top - 30 + stagger),
            )
            .map_err(plot_error)?;
            let right = (FAMILY, l.font())
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Right, VPos::Center));
            root.draw_text(name, &right, (l.left - 8, y + l.cell / 2))
                .map_err(plot_error)?;
        }
        Ok(())
    }

    fn draw_cell<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        (row, column): (usize, usize),
        count: u64,
        share: f64,
    ) -> Result<(), String> {
        let l = &self.layout;
        let (x, y) = l.corner(row, column);
        let shade = blue(share);
        root.draw(&Rectangle::new(
            [(x, y), (x + l.cell, y + l.cell)],
            shade.filled(),
        ))
        .map_err(plot_error)?;
        root.draw(&Rectangle::new(
            [(x, y), (x + l.cell, y + l.cell)],
            WHITE.stroke_width(1),
        ))
        .map_err(plot_error)?;
        if l.cell >= 28 {
            let ink = if share > 0.5 { WHITE } else { BLACK };
            let style = (FAMILY, l.font())
                .into_font()
                .color(&ink)
                .pos(Pos::new(HPos::Center, VPos::Center));
            root.draw_text(&count.to_string(), &style, (x + l.cell / 2, y + l.cell / 2))
                .map_err(plot_error)?;
        }
        Ok(())
    }
}

/// White for 0, through light blue, to dark blue for 1.
fn blue(share: f64) -> RGBColor {
    let t = share.clamp(0.0, 1.0);
    let mix = |from: f64, to: f64| (from + (to - from) * t).round() as u8;
    RGBColor(mix(247.0, 8.0), mix(251.0, 48.0), mix(255.0, 107.0))
}
