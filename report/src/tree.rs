//! The process tree around a trace. Every process that loads the shim writes its own trace: a
//! fork child, and every program a child execs (LD_PRELOAD is inherited), beside the parent's
//! (`vmshim.<pid>.trace`, or `TRACE.<n>` when the path is fixed). This module finds, in the
//! trace's directory, the traces of the processes descended from the traced one.

use crate::read;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One traced process of the tree.
#[derive(Clone, Debug)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    pub exe: String,
    pub trace: PathBuf,
    /// Its address space as its own trace replays it (without the kernel's final map, which
    /// only the process `vmshim run` started gets): a lower bound.
    pub vsz_bytes: u64,
    pub events: u64,
}

/// The descendants of `pid` that left traces next to `trace`, parents before children. An
/// exec'd image of the same pid is the same process: its last trace is listed.
pub fn descendants(trace: &Path, pid: u32) -> Vec<Process> {
    let dir = trace.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Ok(entries) = std::fs::read_dir(dir) else { return vec![] };
    let mut by_pid: HashMap<u32, Process> = HashMap::new();
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains(".trace")))
        .filter(|p| p != trace)
        .collect();
    paths.sort();
    // Start records only: the directory may hold large traces of unrelated processes.
    for p in paths {
        let Some(s) = read::start_of(&p) else { continue };
        // Later images of one pid (exec) replace earlier ones: a later file name sorts later
        // for TRACE.<n>; for vmshim.<pid>.trace there is only one per pid and image.
        by_pid.insert(
            s.pid,
            Process { pid: s.pid, ppid: s.ppid, exe: s.exe, trace: p, vsz_bytes: 0, events: 0 },
        );
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        let mut children: Vec<&Process> =
            by_pid.values().filter(|c| c.ppid == parent && c.pid != pid).collect();
        children.sort_by_key(|c| c.pid);
        for c in children {
            frontier.push(c.pid);
            out.push(c.clone());
        }
    }
    // Then each descendant's own trace, replayed.
    for c in &mut out {
        if let Ok(rec) = read::load(&c.trace) {
            (c.vsz_bytes, c.events) = (rec.replay.space.total(), rec.recorded);
        }
    }
    out
}
