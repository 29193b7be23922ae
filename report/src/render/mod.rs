//! Rendering: the text report ([`text`]), the JSON report ([`text::json`]), the HTML page
//! ([`html`]), folded stacks, pprof ([`pprof`]), the event listing ([`events`]) and diff.

pub mod events;
pub mod html;
pub mod pprof;
pub mod text;
