//! Text in pictures: the embedded font, and labels set onto pixel images.

use std::sync::Once;

use ab_glyph::{point, Font, FontRef, PxScale, PxScaleFont, ScaleFont};
use image::{Rgb, RgbImage};
use plotters::style::FontStyle;

/// DejaVu Sans 2.37 (licence in `assets/fonts/LICENSE-DejaVu.txt`).
static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// The font family every picture uses: plotters' default, which
/// [`register_font`] maps to the embedded DejaVu Sans.
pub(super) const FAMILY: &str = "sans-serif";

/// Makes the embedded font plotters' `sans-serif`; cheap after the first call.
pub(super) fn register_font() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        // The embedded bytes are a valid TrueType font (the test below
        // parses them), so this cannot fail; were it to, text would fail
        // to draw with plotters' "font unavailable", reported as a write error.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, DEJAVU_SANS);
    });
}

/// A line of text to set onto a picture, centred on `x`, its top at `y`.
pub(super) struct Label {
    /// The text.
    pub text: String,
    /// The horizontal centre, in pixels.
    pub x: i32,
    /// The top, in pixels.
    pub y: i32,
    /// The font size, in pixels, at most: a text wider than `width` is set smaller to fit.
    pub size: f32,
    /// The width available, in pixels.
    pub width: f32,
    /// Its colour.
    pub color: Rgb<u8>,
}

/// Sets `labels` onto `picture`, over what is there (anti-aliased; what
/// falls outside the picture is cut off).
///
/// Glyphs are placed with ab_glyph directly rather than through plotters,
/// whose ab_glyph text ignores each glyph's side bearing and so spaces
/// letters unevenly.
pub(super) fn set_labels(picture: &mut RgbImage, labels: &[Label]) -> Result<(), String> {
    let font = FontRef::try_from_slice(DEJAVU_SANS)
        .map_err(|e| format!("the embedded font does not load: {e}"))?;
    for label in labels {
        set_label(picture, &font, label);
    }
    Ok(())
}

fn set_label(picture: &mut RgbImage, font: &FontRef, label: &Label) {
    let natural: f32 = advances(&font.as_scaled(PxScale::from(label.size)), &label.text)
        .iter()
        .sum();
    let size = if natural > label.width {
        label.size * label.width / natural
    } else {
        label.size
    };
    let scaled = font.as_scaled(PxScale::from(size));
    let width: f32 = advances(&scaled, &label.text).iter().sum();
    let mut x = label.x as f32 - width / 2.0;
    let baseline = label.y as f32 + scaled.ascent();
    for (c, advance) in label.text.chars().zip(advances(&scaled, &label.text)) {
        let glyph = scaled
            .glyph_id(c)
            .with_scale_and_position(scaled.scale(), point(x, baseline));
        if let Some(outline) = font.outline_glyph(glyph) {
            let bounds = outline.px_bounds();
            outline.draw(|gx, gy, coverage| {
                let px = bounds.min.x as i64 + i64::from(gx);
                let py = bounds.min.y as i64 + i64::from(gy);
                blend(picture, (px, py), label.color, coverage);
            });
        }
        x += advance;
    }
}

/// How far each character moves the pen: its advance, plus the kerning
/// with the next one.
fn advances(font: &PxScaleFont<&FontRef>, text: &str) -> Vec<f32> {
    let ids: Vec<_> = text.chars().map(|c| font.glyph_id(c)).collect();
    ids.iter()
        .enumerate()
        .map(|(i, &id)| {
            let kern = ids.get(i + 1).map_or(0.0, |&next| font.kern(id, next));
            font.h_advance(id) + kern
        })
        .collect()
}

/// Mixes `color` into the pixel at `at` by `coverage` (0 to 1).
fn blend(picture: &mut RgbImage, (x, y): (i64, i64), color: Rgb<u8>, coverage: f32) {
    let inside = (0..i64::from(picture.width())).contains(&x)
        && (0..i64::from(picture.height())).contains(&y);
    if !inside {
        return;
    }
    let pixel = picture.get_pixel_mut(x as u32, y as u32);
    let t = coverage.clamp(0.0, 1.0);
    for (channel, ink) in pixel.0.iter_mut().zip(color.0) {
        *channel = (f32::from(*channel) * (1.0 - t) + f32::from(ink) * t).round() as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_font_parses_and_draws() {
        let mut picture = RgbImage::from_pixel(60, 20, image::Rgb([255, 255, 255]));
        let label = Label {
            text: "Coat".into(),
            x: 30,
            y: 2,
            size: 14.0,
            width: 60.0,
            color: Rgb([0, 0, 0]),
        };
        set_labels(&mut picture, &[label]).expect("draws");
        let dark = picture.pixels().filter(|p| p.0[0] < 128).count();
        assert!(dark > 20, "only {dark} dark pixels");
    }
}
