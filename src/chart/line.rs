//! A line chart: series that differ in colour and dash pattern, the legend in its own panel
//! to the right of the data (never on the curves), and labelled vertical markers.
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

/// Tableau 10, the matplotlib default cycle.
pub const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// A light blue for the raw series under its trend.
pub const RAW_COLOR: RGBColor = RGBColor(160, 190, 225);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dash {
    Solid,
    Dashed,
    Dotted,
}

const DASHES: [Dash; 3] = [Dash::Solid, Dash::Dashed, Dash::Dotted];

/// How one series is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Look {
    pub color: RGBColor,
    pub dash: Dash,
    pub width: u32,
}

/// The look of the `i`-th of several series. Colour and dash pattern advance together
/// (10 colours, 3 patterns, coprime), so no two of the first 30 series share both: the
/// 11th series is blue like the first, but dashed.
pub fn distinct_look(i: usize) -> Look {
    Look { color: COLORS[i % COLORS.len()], dash: DASHES[i % DASHES.len()], width: 2 }
}

/// How many series `distinct_look` keeps apart.
pub const DISTINCT_LOOKS: usize = 30;

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub look: Look,
    /// Dots on the points (for measured data; a derived line such as a trend has none).
    pub dots: bool,
}

/// A vertical line across the data at `x` (a stage boundary), its label written beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    pub x: f64,
    pub label: String,
}

pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub markers: Vec<Marker>,
    /// What the markers are, for the legend (e.g. "stage boundary").
    pub marker_name: String,
}

/// Black, thin and dashed: unlike any series (whose colours are the palette's, 2 px wide).
const MARKER_COLOR: RGBColor = RGBColor(0, 0, 0);
const HEIGHT: u32 = 540;
const PLOT_WIDTH: u32 = 900;
const LEGEND_FONT: u32 = 15;
const LEGEND_ROW: i32 = 22;
const SAMPLE: i32 = 40;

impl LineChart {
    /// Draws into `path` (`.svg` or `.png`).
    pub fn draw(&self, path: &Path) -> Result<()> {
        super::ensure_font()?;
        let size = (PLOT_WIDTH + self.legend_width(), HEIGHT);
        if super::is_svg(path)? {
            self.draw_on(SVGBackend::new(path, size).into_drawing_area())
        } else {
            self.draw_on(BitMapBackend::new(path, size).into_drawing_area())
        }
        .with_context(|| format!("drawing {}", path.display()))
    }

    fn legend_entries(&self) -> Vec<(String, Look)> {
        let mut entries: Vec<(String, Look)> = self.series.iter().map(|s| (s.name.clone(), s.look)).collect();
        if !self.markers.is_empty() {
            entries.push((self.marker_name.clone(), Look { color: MARKER_COLOR, dash: Dash::Dashed, width: 1 }));
        }
        entries
    }

    /// Room for the longest legend entry: sample line, gap, text, margins.
    fn legend_width(&self) -> u32 {
        let font = ("sans-serif", LEGEND_FONT).into_font();
        let text = self.legend_entries().iter().map(|(name, _)| font.box_size(name).map(|(w, _)| w).unwrap_or(8 * name.len() as u32)).max().unwrap_or(0);
        SAMPLE as u32 + 10 + text + 24
    }

    fn draw_on<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<()> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing `{}`: {e:?}", self.title);
        root.fill(&WHITE).map_err(err)?;
        let (plot_area, legend_area) = root.split_horizontally(PLOT_WIDTH);
        let all = self.series.iter().flat_map(|s| s.points.iter());
        let (x0, x1) = padded_range(all.clone().map(|p| p.0).chain(self.markers.iter().map(|m| m.x)));
        let (y0, y1) = padded_range(all.map(|p| p.1));
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(&self.title, ("sans-serif", 26))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style(("sans-serif", 16))
            .axis_desc_style(("sans-serif", 18))
            .y_label_formatter(&|v| format_tick(*v))
            .x_label_formatter(&|v| x_tick(*v))
            .draw()
            .map_err(err)?;
        let marker_style = ShapeStyle::from(&MARKER_COLOR).stroke_width(1);
        for m in &self.markers {
            chart.draw_series(DashedLineSeries::new(vec![(m.x, y0), (m.x, y1)], 6, 4, marker_style)).map_err(err)?;
            // The label beside the line's top, on the side where it fits inside the data area.
            let top = chart.backend_coord(&(m.x, y1));
            let right_edge = chart.backend_coord(&(x1, y1)).0;
            let font = ("sans-serif", 14).into_font();
            let (w, h) = font.box_size(&m.label).map(|(w, h)| (w as i32, h as i32)).unwrap_or((7 * m.label.len() as i32, 14));
            let left = if top.0 + 6 + w <= right_edge { top.0 + 5 } else { top.0 - 5 - w };
            let corner = (left, top.1 + 6);
            plot_area.draw(&Rectangle::new([(corner.0 - 2, corner.1 - 1), (corner.0 + w + 2, corner.1 + h + 1)], WHITE.filled())).map_err(err)?;
            plot_area.draw(&Text::new(m.label.clone(), corner, font.color(&MARKER_COLOR))).map_err(err)?;
        }
        for s in &self.series {
            let style = ShapeStyle::from(&s.look.color).stroke_width(s.look.width);
            match dash_pattern(s.look.dash) {
                None => chart.draw_series(LineSeries::new(s.points.iter().copied(), style)).map_err(err)?,
                Some((on, off)) => chart.draw_series(DashedLineSeries::new(s.points.iter().copied(), on, off, style)).map_err(err)?,
            };
            // Few points (validation every N steps): mark them, so sparse series read as data.
            if s.dots && s.points.len() <= 60 {
                chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 2, s.look.color.filled()))).map_err(err)?;
            }
        }
        self.draw_legend(&legend_area).map_err(err)?;
        root.present().map_err(err)?;
        Ok(())
    }

    fn draw_legend<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let font = ("sans-serif", LEGEND_FONT).into_font();
        let top = 60;
        for (k, (name, look)) in self.legend_entries().iter().enumerate() {
            let y = top + k as i32 * LEGEND_ROW;
            let style = ShapeStyle::from(&look.color).stroke_width(look.width.max(2));
            let ends = vec![(4, y), (4 + SAMPLE, y)];
            match dash_pattern(look.dash) {
                None => area.draw(&PathElement::new(ends, style))?,
                Some((on, off)) => area.draw(&DashedPathElement::new(ends, on, off, style))?,
            }
            area.draw(&Text::new(name.clone(), (SAMPLE + 12, y - LEGEND_FONT as i32 / 2 - 1), font.clone()))?;
        }
        Ok(())
    }
}

/// Dash length and gap in pixels (None: a solid line).
fn dash_pattern(dash: Dash) -> Option<(i32, i32)> {
    match dash {
        Dash::Solid => None,
        Dash::Dashed => Some((10, 5)),
        Dash::Dotted => Some((2, 4)),
    }
}

fn padded_range(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let lo = values.clone().fold(f64::INFINITY, f64::min);
    let hi = values.fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let span = if hi > lo { hi - lo } else { lo.abs().max(1e-12) };
    (lo - 0.05 * span, hi + 0.05 * span)
}

/// Value-axis numbers: plain with a precision that suits their size, scientific for very
/// small or large ones.
pub fn format_tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-2..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Step or token axis numbers: whole numbers, scientific from 100,000 on.
fn x_tick(v: f64) -> String {
    if v.abs() >= 1e5 {
        format!("{v:.1e}")
    } else {
        format!("{v:.0}")
    }
}
