//! Charts drawn with plotters, shared by `cpt plot` and `cpt sweep`: line charts whose series
//! stay distinguishable however many there are, with the legend beside the data and
//! vertical markers (stage boundaries); a trend line without lag. Text uses the bundled
//! DejaVu Sans subset (assets/, see its licence file), registered as "sans-serif", so charts
//! need no system fonts. The format follows the file extension (`.svg` or `.png`).
pub mod line;
pub mod trend;

use std::path::Path;
use std::sync::Once;

use anyhow::{bail, Result};
use plotters::prelude::*;

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans-subset.ttf");
static REGISTER_FONT: Once = Once::new();

/// Registers the bundled font once and checks plotters can lay out text with it.
pub fn ensure_font() -> Result<()> {
    REGISTER_FONT.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
    ("sans-serif", 12.0).into_font().box_size("0").map_err(|e| anyhow::anyhow!("the bundled chart font cannot be used: {e:?}"))?;
    Ok(())
}

/// Whether `path` names an SVG (else a PNG) chart.
pub fn is_svg(path: &Path) -> Result<bool> {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("svg") => Ok(true),
        Some("png") => Ok(false),
        _ => bail!("{}: chart files must end in .svg or .png", path.display()),
    }
}
