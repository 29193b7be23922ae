//! The run's process table: one row per process, in tree order, from the analysis of the image
//! that answers for it (its last, or the final image the shim was not in).

use super::{ForkOf, Image, Untraced};
use crate::load::tree::Run;
use std::path::PathBuf;

/// One row of the run's process table.
#[derive(Clone, Debug)]
pub struct Row {
    pub pid: u32,
    pub ppid: u32,
    pub depth: usize,
    pub command: String,
    pub exe: String,
    /// The trace of the image the row's figures are about, and all the process's traces.
    pub trace: PathBuf,
    pub traces: Vec<PathBuf>,
    pub images: usize,
    pub vsz_bytes: u64,
    /// Whether VSZ is the kernel's map at exit (else the replay's, a lower bound).
    pub vsz_from_kernel: bool,
    pub rss_bytes: Option<u64>,
    pub threads: usize,
    pub ended: String,
    pub inherited_bytes: u64,
    pub own_bytes: u64,
    pub fork_of: Option<ForkOf>,
    pub explained_fraction: f64,
    pub events: u64,
    pub untraced_final: Option<Untraced>,
}

/// The process table's row for process `p`, from the analysis of its answer image.
pub fn row(run: &Run, p: usize, a: &Image) -> Row {
    let proc_ = &run.processes[p];
    let (rec, attr) = (&a.rec, &a.attr);
    let s = rec.start.as_ref();
    let command = s
        .map(|s| s.argv.join(" "))
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| s.map(|s| s.exe.clone()).unwrap_or_default());
    let inherited = attr.inherited_bytes();
    Row {
        pid: proc_.pid,
        ppid: proc_.ppid,
        depth: proc_.depth,
        command,
        exe: s.map(|s| s.exe.clone()).unwrap_or_default(),
        trace: proc_.images.get(a.context.image).unwrap_or(proc_.last()).trace.clone(),
        traces: proc_.images.iter().map(|i| i.trace.clone()).collect(),
        images: a.context.images.len(),
        vsz_bytes: attr.final_bytes,
        vsz_from_kernel: attr.kernel_final_bytes.is_some(),
        rss_bytes: attr.rss_bytes,
        threads: attr.threads.len(),
        // After an exec into an image without the shim and without a map, the exec is the last
        // thing seen.
        ended: {
            let images = &a.context.images;
            let back = match &a.context.untraced_final {
                Some(u) if !u.map_known => 2,
                _ => 1,
            };
            let seen = images.len().checked_sub(back).and_then(|i| images.get(i));
            seen.map_or("not observed".to_string(), |i| i.ended.clone())
        },
        inherited_bytes: inherited,
        own_bytes: attr.final_bytes.saturating_sub(inherited),
        fork_of: a.context.fork_of,
        explained_fraction: attr.attributed_fraction(),
        events: rec.recorded,
        untraced_final: a.context.untraced_final.clone(),
    }
}
