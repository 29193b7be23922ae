//! The processes of one run. Every process that loads the shim writes its own trace: a fork
//! child, and every program a process execs (LD_PRELOAD is inherited). This module finds which
//! traces belong to the run of a given trace and sorts them into processes and images; it
//! reads start records only, never a whole trace.
//!
//! Which traces: a run's traces are named `T` or `T.*` in T's directory (`vmshim.*.trace*` for
//! the default `vmshim.%p.trace` template), and belong to the run iff their start record has
//! the run's `run_id`. A trace written before run ids existed (run_id 0) falls back to parent
//! pid links from the given trace, among traces that started after it (and the earlier images
//! of its own process: same pid, same parent): an older trace whose pid happens to be reused
//! is never listed.
//!
//! Processes are identified by (pid, image): an exec'd image of a pid is a new image of the
//! same process, and the last image's map is the process's exit map. A fork child's trace
//! (origin fork) always starts a new process, as does a trace of a pid whose earlier image
//! ended for good (an observed exit that was not an exec).

use crate::load::read;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use vmshim_trace::decode::{Exit, Fork, Start};

/// `Exit::raw_status` of an image that exec'd another program.
pub const EXEC_STATUS: i32 = i32::MIN;

/// One program image of a process: one trace.
#[derive(Clone, Debug)]
pub struct Image {
    pub trace: PathBuf,
    pub start: Start,
}

/// One process of the run.
#[derive(Clone, Debug)]
pub struct Process {
    pub pid: u32,
    /// The parent pid its first image recorded (in the fork, for a fork child).
    pub ppid: u32,
    /// Its images in start order; the last one's map is the process's exit map.
    pub images: Vec<Image>,
    /// Its parent's index in [`Run::processes`], when the parent is part of the run.
    pub parent: Option<usize>,
    /// 0 for the run's first process, 1 for its children, ...
    pub depth: usize,
}

impl Process {
    pub fn first(&self) -> &Image {
        &self.images[0]
    }
    pub fn last(&self) -> &Image {
        &self.images[self.images.len() - 1]
    }
    /// Set when the process began in a fork.
    pub fn fork(&self) -> Option<&Fork> {
        self.first().start.fork.as_ref()
    }
    /// The image that was running at monotonic time `t`.
    pub fn image_at(&self, t: u64) -> &Image {
        self.images.iter().rev().find(|i| i.start.mono_ns <= t).unwrap_or(self.first())
    }
}

/// The processes of a run, in tree order (a parent before its children, siblings by start).
#[derive(Clone, Debug)]
pub struct Run {
    pub processes: Vec<Process>,
    /// The process whose image the given trace is.
    pub chosen: usize,
    /// Which of its images the given trace is.
    pub chosen_image: usize,
    /// How each image that another image of its process follows ended, as the listing read it.
    exits: HashMap<PathBuf, Option<Exit>>,
}

impl Run {
    /// How the image of `trace` ended ([`read::exit_of`]), for an image that another image of its
    /// process follows without reading it again: the listing read them all (the report of the
    /// 1,000-process loop read 1,000 of them again).
    pub fn exit_of(&self, trace: &Path) -> Option<Exit> {
        self.exits.get(trace).cloned().unwrap_or_else(|| read::exit_of(trace))
    }

    /// The process with pid `pid` (the first to start, if the run reused the pid).
    pub fn by_pid(&self, pid: u32) -> Option<usize> {
        self.processes.iter().position(|p| p.pid == pid)
    }

    /// The parent process of `i` and the image of it that forked `i`, for a fork child whose
    /// parent is traced in the run.
    pub fn forking_image(&self, i: usize) -> Option<(&Process, &Image)> {
        let p = &self.processes[i];
        let fork = p.fork()?;
        let parent = &self.processes[p.parent?];
        Some((parent, parent.image_at(fork.mono_ns)))
    }
}

/// Whether `name` is a trace name that the run of the trace named `given` may have used.
fn same_run_name(given: &str, name: &str) -> bool {
    // The syscall recorder's traces beside the shim's (`vmshim run --syscalls`) are the shim's
    // names with a suffix: a run of their own, never listed with the shim's.
    fn without_numbers(mut s: &str) -> &str {
        while let Some((head, tail)) = s.rsplit_once('.')
            && !tail.is_empty()
            && tail.bytes().all(|b| b.is_ascii_digit())
        {
            s = head;
        }
        s
    }
    let companion = crate::launch::recorder::COMPANION;
    match (without_numbers(given).strip_suffix(companion), without_numbers(name).strip_suffix(companion)) {
        (Some(g), Some(n)) => return n == g || same_run_name(g, n),
        (None, None) => {}
        _ => return false,
    }
    // Strip the `.N` (and `.PID.N`) suffixes a taken name gets.
    let mut base = given;
    while let Some((head, tail)) = base.rsplit_once('.')
        && !tail.is_empty()
        && tail.bytes().all(|b| b.is_ascii_digit())
    {
        base = head;
    }
    let numbers =
        |rest: &str| rest.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let default_template = base
        .strip_prefix("vmshim.")
        .and_then(|r| r.strip_suffix(".trace"))
        .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
    if default_template {
        return name.strip_prefix("vmshim.").and_then(|r| r.split_once(".trace")).is_some_and(
            |(pid, rest)| numbers(pid) && (rest.is_empty() || rest.strip_prefix('.').is_some_and(numbers)),
        );
    }
    name == base || name.strip_prefix(base).and_then(|r| r.strip_prefix('.')).is_some_and(numbers)
}

/// The traces beside `trace` whose names its run may have used, with their start records, in
/// name order; and how those ended whose records all came with the start record.
fn candidates(trace: &Path) -> (Vec<Image>, HashMap<PathBuf, Option<Exit>>) {
    let dir = trace.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Some(given) = trace.file_name().and_then(|n| n.to_str()) else { return Default::default() };
    let Ok(entries) = std::fs::read_dir(dir) else { return Default::default() };
    let mut names: Vec<std::ffi::OsString> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| e.file_name().to_str().is_some_and(|n| n != given && same_run_name(given, n)))
        .map(|e| e.file_name())
        .collect();
    // The order of the paths, all in one directory: a name has no '/', so the bytes compare as
    // the paths' components do (Path's ordering walks the components, 2 ms for 2,000 traces).
    names.sort_unstable();
    // Each start record is its own file's first read: spread over the cores.
    let read = super::par::map(&names, |name| {
        // Named as the given trace is (`T.1` beside `T`, not `./T.1`).
        let p = trace.with_file_name(name);
        read::start_and_exit_of(&p).map(|(start, exit)| (Image { trace: p, start }, exit))
    });
    let mut exits = HashMap::new();
    let mut images = Vec::with_capacity(read.len());
    for (image, exit) in read.into_iter().flatten() {
        if let Some(exit) = exit {
            exits.insert(image.trace.clone(), exit);
        }
        images.push(image);
    }
    (images, exits)
}

/// A run as one listing found it: the given trace, the traces beside it, and the exits read to
/// group them, kept so that `vmshim run` can group it again once it has added exits to its
/// traces, without reading them all again ([`Listing::regroup`]).
pub struct Listing {
    given: Image,
    /// [`candidates`] of `given`.
    all: Vec<Image>,
    /// The exit of each trace the grouping asked about.
    exits: HashMap<PathBuf, Option<Exit>>,
}

/// The run the trace at `trace` is part of. `None` when it has no start record.
pub fn find(trace: &Path) -> Option<Run> {
    list(trace).map(|(run, _)| run)
}

/// [`find`], and the listing it made.
fn list(trace: &Path) -> Option<(Run, Listing)> {
    let (start, given_exit) = read::start_and_exit_of(trace)?;
    let given = Image { trace: trace.to_path_buf(), start };
    let (all, mut known) = candidates(trace);
    if let Some(exit) = given_exit {
        known.insert(given.trace.clone(), exit);
    }
    let images = of_run(&given, all.clone());
    // What the grouping will ask: known with the start records, or read at once over the cores.
    let asked = exits_asked(&images);
    let unread: Vec<&PathBuf> = asked.iter().filter(|p| !known.contains_key(*p)).collect();
    let more = super::par::map(&unread, |p| read::exit_of(p));
    let more: HashMap<PathBuf, Option<Exit>> = unread.into_iter().cloned().zip(more).collect();
    let exits: HashMap<PathBuf, Option<Exit>> = asked
        .into_iter()
        .map(|p| {
            let exit = known.get(&p).or_else(|| more.get(&p)).cloned().flatten();
            (p, exit)
        })
        .collect();
    let run = grouped(&given, images, exits.clone())?;
    Some((run, Listing { given, all, exits }))
}

impl Listing {
    /// The run as [`find`] of `trace` (one of its traces) would list it now, when what changed in
    /// the run's traces since this listing is the exits `appended` (the last one appended to
    /// each trace) and nothing else: no trace came or went, none other was written. `None` for a
    /// run without a run id, or a `trace` the listing does not hold.
    pub fn regroup(&self, trace: &Path, appended: &HashMap<PathBuf, Exit>) -> Option<Run> {
        if self.given.start.run_id == 0 {
            return None;
        }
        // What `find(trace)` would see: `trace` given, the others beside it in name order.
        let mut beside: Vec<Image> = self.all.iter().chain([&self.given]).cloned().collect();
        let at = beside.iter().position(|i| i.trace == trace)?;
        let given = beside.remove(at);
        beside.sort_by(|a, b| a.trace.file_name().cmp(&b.trace.file_name()));
        let images = of_run(&given, beside);
        let exits = exits_asked(&images)
            .into_iter()
            .map(|p| {
                let exit = match appended.get(&p) {
                    Some(e) => Some(e.clone()),
                    None => self.exits.get(&p).cloned().unwrap_or_else(|| read::exit_of(&p)),
                };
                (p, exit)
            })
            .collect();
        grouped(&given, images, exits)
    }
}

/// The images of the run of `given` among the traces `all` beside it, `given` among them, in
/// start order.
fn of_run(given: &Image, all: Vec<Image>) -> Vec<Image> {
    let run_id = given.start.run_id;
    // An old trace: an earlier image of its own process has its pid and parent, and only what
    // started after the first of them can descend from it.
    let own_image = |s: &Start| s.run_id == 0 && s.pid == given.start.pid && s.ppid == given.start.ppid;
    let since = all
        .iter()
        .filter(|i| own_image(&i.start))
        .map(|i| i.start.real_ns)
        .fold(given.start.real_ns, u64::min);
    let mut images: Vec<Image> = all
        .into_iter()
        .filter(|i| {
            if run_id != 0 {
                i.start.run_id == run_id
            } else {
                i.start.run_id == 0 && (i.start.real_ns >= since || own_image(&i.start))
            }
        })
        .collect();
    images.push(given.clone());
    // One run is on one boot: its monotonic clock orders it. Old traces may come from another.
    if run_id != 0 {
        images.sort_by_key(|i| (i.start.mono_ns, i.start.real_ns));
    } else {
        images.sort_by_key(|i| (i.start.real_ns, i.start.mono_ns));
    }
    images
}

/// The traces whose exits [`group`] asks about: of each image that is not a fork child's, the
/// image of its pid before it (whatever the grouping, that is the last image of the last
/// process of that pid so far).
fn exits_asked(images: &[Image]) -> Vec<PathBuf> {
    let mut last: HashMap<u32, &Path> = HashMap::new();
    let mut asked = Vec::new();
    for img in images {
        if img.start.fork.is_none()
            && let Some(p) = last.get(&img.start.pid)
        {
            asked.push(p.to_path_buf());
        }
        last.insert(img.start.pid, &img.trace);
    }
    asked
}

/// The run of `given` from its images in start order, with the `exits` of those
/// [`exits_asked`] names.
fn grouped(given: &Image, images: Vec<Image>, exits: HashMap<PathBuf, Option<Exit>>) -> Option<Run> {
    let run_id = given.start.run_id;
    let mut procs = group(images, &|p| exits.get(p).cloned().unwrap_or_else(|| read::exit_of(p)));
    let chosen_at = |procs: &[Process]| {
        procs
            .iter()
            .enumerate()
            .find_map(|(pi, p)| p.images.iter().position(|i| i.trace == given.trace).map(|ii| (pi, ii)))
    };
    if run_id == 0 {
        // Without a run id, the run is the given trace's process and its descendants by pid.
        let (root, _) = chosen_at(&procs)?;
        let mut keep = vec![root];
        let mut at = 0;
        while at < keep.len() {
            let parent = &procs[keep[at]];
            let (pid, since) = (parent.pid, parent.first().start.mono_ns);
            for (i, c) in procs.iter().enumerate() {
                if c.ppid == pid && c.first().start.mono_ns >= since && !keep.contains(&i) {
                    keep.push(i);
                }
            }
            at += 1;
        }
        keep.sort_unstable();
        procs = keep.into_iter().map(|i| procs[i].clone()).collect();
    }
    let procs = tree_order(procs);
    let (chosen, chosen_image) = chosen_at(&procs)?;
    Some(Run { processes: procs, chosen, chosen_image, exits })
}

/// Sorts images (in start order) into processes, `exit_of` telling how a trace's image ended.
fn group(images: Vec<Image>, exit_of: &dyn Fn(&Path) -> Option<Exit>) -> Vec<Process> {
    let mut procs: Vec<Process> = Vec::new();
    // The last process of each pid so far.
    let mut last_of: HashMap<u32, usize> = HashMap::new();
    for img in images {
        let continues = last_of.get(&img.start.pid).copied().filter(|&i| {
            // A fork child is a new process; so is an image after one that ended for good (the
            // pid was reused).
            img.start.fork.is_none()
                && exit_of(&procs[i].last().trace).is_none_or(|e| e.raw_status == EXEC_STATUS)
        });
        match continues {
            Some(i) => procs[i].images.push(img),
            None => {
                last_of.insert(img.start.pid, procs.len());
                procs.push(Process {
                    pid: img.start.pid,
                    ppid: img.start.ppid,
                    images: vec![img],
                    parent: None,
                    depth: 0,
                })
            }
        }
    }
    procs
}

/// Links each process to its parent (the process of its parent pid that started last before
/// it) and orders them depth first from the first process; processes whose parent is not in
/// the run (re-parented, or a child of an untraced process) follow under the first one.
fn tree_order(mut procs: Vec<Process>) -> Vec<Process> {
    if procs.is_empty() {
        return procs;
    }
    // A fork child came to be at the fork (its first record may come later).
    let t0 = |p: &Process| p.fork().map_or(p.first().start.mono_ns, |f| f.mono_ns);
    // Each pid's processes, and each process's children, in process order (a thousand children
    // of one shell were each compared with every process).
    let mut of_pid: HashMap<u32, Vec<usize>> = HashMap::new();
    for (j, p) in procs.iter().enumerate() {
        of_pid.entry(p.pid).or_default().push(j);
    }
    let parents: Vec<Option<usize>> = (0..procs.len())
        .map(|i| {
            of_pid
                .get(&procs[i].ppid)?
                .iter()
                .copied()
                .filter(|&j| j != i && t0(&procs[j]) <= t0(&procs[i]))
                .max_by_key(|&j| t0(&procs[j]))
        })
        .collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); procs.len()];
    for (c, parent) in parents.iter().enumerate() {
        if let Some(i) = parent {
            children[*i].push(c);
        }
    }
    // The root: the first process to start (roots of their own come after it).
    let root = (0..procs.len()).min_by_key(|&i| t0(&procs[i])).unwrap_or(0);
    let mut order: Vec<(usize, usize)> = Vec::new();
    let mut visit = vec![(root, 0)];
    let mut seen = vec![false; procs.len()];
    loop {
        while let Some((i, depth)) = visit.pop() {
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            order.push((i, depth));
            let mut kids: Vec<usize> = children[i].iter().copied().filter(|&c| !seen[c]).collect();
            kids.sort_by_key(|&c| std::cmp::Reverse(t0(&procs[c])));
            visit.extend(kids.into_iter().map(|c| (c, depth + 1)));
        }
        // The next process no link reaches, oldest first, under the root.
        match (0..procs.len()).filter(|&i| !seen[i]).min_by_key(|&i| t0(&procs[i])) {
            Some(i) => visit.push((i, 1)),
            None => break,
        }
    }
    let new_index: std::collections::HashMap<usize, usize> =
        order.iter().enumerate().map(|(n, &(i, _))| (i, n)).collect();
    let mut out = Vec::with_capacity(procs.len());
    for &(i, depth) in &order {
        let mut p = std::mem::replace(
            &mut procs[i],
            Process { pid: 0, ppid: 0, images: vec![], parent: None, depth: 0 },
        );
        p.parent = parents[i].and_then(|j| new_index.get(&j).copied());
        p.depth = depth;
        out.push(p);
    }
    out
}

/// The trace of the last image of the process that `first` (a run's top trace) is, among the
/// traces its run wrote; only traces whose start record names `pid` and came after `since`
/// (Unix ns) count, so an older trace left under a name by an earlier run is never taken. With
/// it, the run's listing, for the caller to reuse.
pub fn last_image_of(first: &Path, pid: u32, since: u64) -> Option<(PathBuf, Run, Listing)> {
    let ours = |s: &Start| s.pid == pid && s.real_ns >= since;
    let top = match read::start_of(first).filter(ours) {
        Some(start) => Image { trace: first.to_path_buf(), start },
        // `first` was taken (a stale file): the top process wrote the first free name after it.
        None => candidates(first).0.into_iter().filter(|i| ours(&i.start)).min_by_key(|i| i.start.mono_ns)?,
    };
    let (run, listing) = list(&top.trace)?;
    let last = run.processes[run.chosen].last().trace.clone();
    Some((last, run, listing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names_are_the_template_and_its_numbered_siblings() {
        for (given, name, same) in [
            ("t.trace", "t.trace", true),
            ("t.trace", "t.trace.1234", true),
            ("t.trace", "t.trace.1234.7", true),
            ("t.trace.1234", "t.trace", true),
            ("t.trace", "t.trace.json", false),
            ("t.trace", "t.trace2", false),
            ("t.trace", "t.trace.", false),
            ("vmshim.99.trace", "vmshim.123.trace", true),
            ("vmshim.99.trace", "vmshim.123.trace.2", true),
            ("vmshim.99.trace.1", "vmshim.5.trace", true),
            ("vmshim.99.trace", "vmshim.x.trace", false),
            ("vmshim.99.trace", "other.trace", false),
            // The syscall recorder's traces beside the shim's: their own run (issue 15).
            ("t.trace", "t.trace.syscalls", false),
            ("t.trace.syscalls", "t.trace", false),
            ("t.trace.syscalls", "t.trace.syscalls.1234", true),
            ("t.trace.syscalls.1234", "t.trace.syscalls", true),
            ("vmshim.99.trace", "vmshim.123.trace.syscalls", false),
            ("vmshim.99.trace.syscalls", "vmshim.123.trace.syscalls", true),
            ("vmshim.99.trace.syscalls", "vmshim.123.trace.syscalls.2", true),
            ("vmshim.99.trace.syscalls", "vmshim.123.trace", false),
        ] {
            assert_eq!(same_run_name(given, name), same, "{given} {name}");
        }
    }
}
