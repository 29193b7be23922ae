//! The commands: `run` ([`run`]), `report`, `diff` ([`report`]) and `events` ([`events`]); each
//! loads, analyses once and hands the analysis to a renderer. `explain` has a folder of its own
//! ([`crate::explain`]): its loader is a live process, not a trace.

pub mod events;
pub mod report;
pub mod run;

use crate::Error;
use std::io::Write;
use std::path::PathBuf;

/// Where a report goes.
pub enum Dest {
    Stdout,
    Stderr,
    File(PathBuf),
}

pub fn write_out(dest: Dest, bytes: &[u8]) -> Result<(), Error> {
    let r = match dest {
        Dest::Stdout => std::io::stdout().lock().write_all(bytes),
        Dest::Stderr => std::io::stderr().lock().write_all(bytes),
        Dest::File(p) => {
            return std::fs::write(&p, bytes)
                .map_err(|e| Error(1, format!("cannot write the report to {}: {e}", p.display())));
        }
    };
    match r {
        // A closed pipe (`| head`) is the reader's choice, not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(|e| Error(1, format!("cannot write the report: {e}"))),
    }
}
