//! `vmshim events T`: every recorded event, strace-like (or one JSON object a line), streamed.

use crate::Error;
use crate::load::read;
use crate::symbolize;
use std::io::Write;
use std::path::Path;

pub fn events(trace: &Path, json: bool) -> Result<(), Error> {
    // A first pass for the modules that name addresses, then the events as they stream by.
    let rec = read::load(trace)?;
    let mut sym = symbolize::Symbolizer::new(crate::analyze::attribute::modules(&rec));
    let mut stream = read::open(trace)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut seq = 0;
    while let Some(ev) = read::next(&mut stream, trace)? {
        match crate::render::events::print(seq, &ev, &mut sym, json, &mut out) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(Error(1, format!("cannot write: {e}"))),
            Ok(()) => {}
        }
        seq += 1;
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error(1, format!("cannot write: {e}"))),
        _ => Ok(()),
    }
}
