//! Rendering an [`crate::analyze::Analysis`]: the text report ([`text`]), the JSON report
//! ([`json`], in the types of [`schema`], `vmshim-report/1`), the HTML page ([`html`], its drawings in [`svg`]),
//! folded stacks ([`folded`]), pprof ([`pprof`]), `vmshim diff` ([`diff`]) and the event
//! listing ([`events`]). A renderer takes the analysis and [`Options`] and computes nothing.

pub mod diff;
pub mod events;
pub mod folded;
pub mod html;
pub mod json;
pub mod pprof;
pub mod schema;
pub mod svg;
pub mod text;

/// What the user asked of the output.
#[derive(Clone, Debug)]
pub struct Options {
    /// How many call stacks the text and JSON reports list.
    pub top: usize,
    /// `--bytes`: exact byte counts instead of KiB in the text.
    pub exact_bytes: bool,
    /// Bold headings on a terminal: off with `--no-color` or NO_COLOR.
    pub color: bool,
}
