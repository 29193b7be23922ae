//! `vmshim explain PID`: the report of a process that is already running, built from evidence
//! read outside it, with no restart and no shim: the kernel's map ([`crate::load::maps`]), a bounded
//! stop that reads every thread's registers and current stack ([`stop`]), glibc's heaps, arenas
//! and large chunks ([`glibc`]), the Go runtime's reservations by their layout ([`golang`]),
//! the loader's link map, which tells a loaded library from a file merely mapped ([`linkmap`]),
//! then the same [`crate::analyze::attribute::Attribution`] the trace report renders ([`snapshot`]). It never writes into the target, and every failure (no such process,
//! not permitted, already traced, gone mid-snapshot) is a sentence and exit 2.

mod glibc;
mod golang;
mod goroutines;
mod linkmap;
mod snapshot;
mod stop;

use crate::Error;
use crate::cli::ExplainArgs;
use crate::commands::{Dest, write_out};
use crate::render::Options;
use goroutines::Plan;
use std::collections::BTreeMap;
use std::time::Duration;
use vmshim_trace::decode::{Exit, Start};

/// One snapshot and what it cost the target.
struct Snapshot {
    attr: crate::analyze::attribute::Attribution,
    rec: crate::load::read::Recording,
    sym: crate::symbolize::Symbolizer,
    stop: Duration,
    stopped: usize,
    not_stopped: Vec<(u32, &'static str)>,
    /// VSZ of the map read after the stop minus the one explained (what moved meanwhile).
    map_moved: i64,
    notes: Vec<String>,
    /// A Go program's goroutines (None for any other program).
    goroutines: Option<crate::analyze::Goroutines>,
}

fn gone(pid: u32) -> Error {
    Error(2, format!("process {pid} exited during the snapshot; nothing to explain"))
}

fn uid_of(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().nth(1)?.parse().ok()
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|s| s.trim().to_string()).unwrap_or_default()
}

fn not_permitted(pid: u32, what: &str) -> Error {
    let me = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_else(|| "?".into());
    let owner = uid_of(pid).map_or("?".to_string(), |u| u.to_string());
    let scope = match std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope") {
        Ok(v) if v.trim() != "0" => format!(
            "; kernel.yama.ptrace_scope is {} (1 lets a process trace only its descendants: `sysctl kernel.yama.ptrace_scope=0`, or CAP_SYS_PTRACE)",
            v.trim()
        ),
        Ok(_) => "; kernel.yama.ptrace_scope is 0".into(),
        Err(_) => "; this kernel has no Yama ptrace_scope".into(),
    };
    Error(
        2,
        format!(
            "not permitted to {what} process {pid} ({}, owned by uid {owner}; vmshim runs as uid {me}): run vmshim as \
             that user or as root, or give it CAP_SYS_PTRACE (`sudo`, `setcap cap_sys_ptrace+ep`, or in a container \
             `--cap-add SYS_PTRACE`){scope}",
            comm(pid)
        ),
    )
}

fn already_traced(pid: u32, tracer: u32) -> Error {
    Error(
        2,
        format!(
            "process {pid} ({}) is already traced by process {tracer} ({}): ptrace allows one tracer at a time; \
             detach it (quit strace -p or gdb) and try again",
            comm(pid),
            comm(tracer)
        ),
    )
}

fn read_smaps(pid: u32) -> Result<Vec<crate::load::maps::Region>, Error> {
    match std::fs::read_to_string(format!("/proc/{pid}/smaps")) {
        Ok(t) if t.is_empty() => Err(gone(pid)),
        Ok(t) => {
            let mut r = crate::load::maps::parse(&t);
            // As the trace report counts VSZ: [vsyscall] is the kernel's gate page, outside the
            // process's mm (VmSize leaves it out too).
            r.retain(|r| r.path != "[vsyscall]");
            Ok(r)
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(not_permitted(pid, "read the map of"))
        }
        Err(_) => Err(gone(pid)),
    }
}

fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let v = s.lines().find_map(|l| l.strip_prefix(field))?;
    v.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|k| k * 1024)
}

fn take(pid: u32, hold: Option<Duration>) -> Result<Snapshot, Error> {
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return Err(Error(2, format!("no process {pid}")));
    }
    if let Some(t) = stop::tracer_of(pid).filter(|&t| t != 0) {
        return Err(already_traced(pid, t));
    }
    let regions = read_smaps(pid)?;
    let page = 4096;
    let mem = stop::Memory { pid };
    let mut sym = crate::symbolize::Symbolizer::new(snapshot::modules(&regions));
    let exe_bytes = std::fs::read(format!("/proc/{pid}/exe")).ok();
    let go = exe_bytes.as_deref().and_then(crate::symbolize::gosym::go_version);
    // Where malloc lives: libc, or in a static C program the executable itself.
    let exe =
        std::fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.display().to_string()).unwrap_or_default();
    // A Go program's goroutines: where runtime.allgs is and how a g reads, found before the stop,
    // read during it.
    let plan = match (&go, &exe_bytes) {
        (Some(v), Some(bytes)) => Some(match sym.modules().iter().find(|m| m.path == exe) {
            Some(m) => goroutines::plan(&mem, &regions, bytes, &exe, m.base, v),
            None => Err(format!("the executable {exe} is not in the map")),
        }),
        _ => None,
    };
    let mut read_gs = None;
    let mut during = |threads: &[stop::ThreadState]| {
        if let Some(Ok(p)) = &plan {
            read_gs = Some(goroutines::read(&mem, p.allgs, &p.layout, threads, goroutines::MAX_GOROUTINES));
        }
    };
    let stopped = stop::stop_and_read(pid, &regions, hold, &mut during).map_err(|e| match e {
        stop::StopError::Exited => gone(pid),
        stop::StopError::AlreadyTraced(t) => already_traced(pid, t),
        stop::StopError::NotPermitted => not_permitted(pid, "trace"),
        stop::StopError::Other(m) => Error(2, format!("cannot stop process {pid}: {m}")),
    })?;
    let after = match std::fs::read_to_string(format!("/proc/{pid}/maps")) {
        Ok(t) if !t.is_empty() => {
            let mut r = crate::load::maps::parse(&t);
            r.retain(|r| r.path != "[vsyscall]");
            r
        }
        _ => return Err(gone(pid)),
    };
    let map_moved = crate::load::maps::vsz(&after) as i64 - crate::load::maps::vsz(&regions) as i64;
    // A static Go program has no glibc malloc to read.
    let go_program = go.is_some();
    let libc = sym
        .modules()
        .iter()
        .find(|m| {
            m.path.rsplit('/').next().is_some_and(|f| f.starts_with("libc.so") || f.starts_with("libc-"))
        })
        .or_else(|| sym.modules().iter().find(|m| m.path == exe && !go_program))
        .map(|m| (m.path.clone(), m.base));
    let mut stopped = stopped;
    // A thread read without stopping has no registers: its thread pointer is the TCB at the top
    // of its stack.
    for t in stopped.threads.iter_mut().filter(|t| t.fs_base.is_none()) {
        if let Some(r) = regions.iter().find(|r| r.start <= t.sp && t.sp < r.end) {
            t.fs_base = glibc::tcb_in(&mem, r.start, r.end);
        }
    }
    let malloc =
        glibc::read(&mem, &regions, page, libc.as_ref().map(|(p, b)| (p.as_str(), *b)), &stopped.threads);
    let names: BTreeMap<u32, String> = stopped
        .threads
        .iter()
        .filter_map(|t| {
            let n = std::fs::read_to_string(format!("/proc/{pid}/task/{}/comm", t.tid)).ok()?;
            Some((t.tid, n.trim().to_string()))
        })
        .collect();
    let go_ranges = match &go {
        Some(v) => golang::read(&mem, &regions, &exe, v),
        None => vec![],
    };
    let (goroutines, goroutine_stacks) = match &plan {
        Some(p) => {
            let (g, stacks) = goroutines::summarize(p, read_gs, &mut sym, goroutines::MAX_GOROUTINES);
            (Some(g), stacks)
        }
        None => (None, vec![]),
    };
    let link_map = linkmap::read(
        &mem,
        &regions,
        sym.modules().iter().find(|m| m.path == exe),
        sym.modules().iter().find(|m| linkmap::is_loader(&m.path)),
    );
    let facts = snapshot::Facts {
        pid,
        page,
        threads: &stopped.threads,
        names: &names,
        malloc: &malloc,
        go,
        go_ranges: &go_ranges,
        link_map: link_map.as_ref(),
        peak: status_bytes(pid, "VmPeak:"),
        goroutine_stacks: &goroutine_stacks,
    };
    let attr = snapshot::attribute(&regions, &facts, &mut sym);
    let goroutines = goroutines.map(|mut g| {
        // The stacks' bytes that the attribution put in the Go heap (its heap arenas' mappings).
        g.in_go_heap_bytes = goroutine_stacks
            .iter()
            .map(|(lo, hi, _)| {
                attr.regions
                    .iter()
                    .filter(|r| r.purpose.as_deref() == Some("heap"))
                    .map(|r| r.end.min(*hi).saturating_sub(r.start.max(*lo)))
                    .sum::<u64>()
            })
            .sum();
        g
    });
    let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0);
    let rec = crate::load::read::Recording {
        start: Some(Start {
            pid,
            ppid,
            page_size: page as u32,
            mono_ns: 0,
            real_ns: 0,
            exe,
            trace_path: String::new(),
            argv,
            run_id: 0,
            fork: None,
        }),
        exit: Some(Exit { raw_status: 0, how: "running; explained from outside".into() }),
        final_maps: Some(regions),
        ..Default::default()
    };
    // A Go program without libc has no glibc malloc to miss.
    let mut notes: Vec<String> =
        malloc.note.iter().filter(|_| !(go_program && libc.is_none())).cloned().collect();
    if let Some(Ok(Plan { note: Some(n), .. })) = &plan {
        notes.push(n.clone());
    }
    if map_moved != 0 {
        notes.push(format!("the map changed by {map_moved} bytes of VSZ while it was read"));
    }
    let not_stopped: Vec<(u32, &'static str)> = stopped
        .threads
        .iter()
        .filter(|t| t.not_stopped)
        .map(|t| (t.tid, t.syscall.map_or("?", stop::syscall_name)))
        .collect();
    Ok(Snapshot {
        attr,
        rec,
        sym,
        stop: stopped.stop,
        stopped: stopped.threads.len() - not_stopped.len(),
        not_stopped,
        map_moved,
        notes,
        goroutines,
    })
}

/// The line that says what the stop cost.
fn stop_line(s: &Snapshot) -> String {
    let mut l = format!("stopped {} thread(s) for {:.2} ms", s.stopped, s.stop.as_secs_f64() * 1e3);
    if !s.not_stopped.is_empty() {
        let mut by: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (t, c) in &s.not_stopped {
            by.entry(c).or_default().push(t.to_string());
        }
        let what: Vec<String> = by
            .iter()
            .map(|(c, ts)| {
                let more = if ts.len() > 4 { format!(" and {} more", ts.len() - 4) } else { String::new() };
                format!("{} in {c} ({}{more})", ts.len(), ts[..ts.len().min(4)].join(", "))
            })
            .collect();
        l.push_str(&format!(
            "; {} read without stopping, since their call would return EINTR after a stop: {}",
            s.not_stopped.len(),
            what.join("; ")
        ));
    }
    l
}

pub fn explain(a: &ExplainArgs, opts: &Options) -> Result<u8, Error> {
    let hold = a.hold_stopped_ms.map(Duration::from_millis);
    let mut s = take(a.pid, hold)?;
    let stopped = stop_line(&s);
    let context =
        crate::analyze::Context { live: true, goroutines: s.goroutines.take(), ..Default::default() };
    let notes = std::mem::take(&mut s.notes);
    let (map_moved, stop, not_stopped, threads_stopped) = (s.map_moved, s.stop, s.not_stopped, s.stopped);
    let image = crate::analyze::Image { rec: s.rec, attr: s.attr, sym: s.sym, series: vec![], context };
    let an = crate::analyze::Analysis::new(image, vec![]);
    if let Some(path) = &a.html {
        let page = crate::render::html::page(&an, opts);
        std::fs::write(path, page).map_err(|e| Error(1, format!("cannot write {}: {e}", path.display())))?;
    }
    if let Some(path) = &a.pprof {
        let mut f = std::fs::File::create(path)
            .map_err(|e| Error(1, format!("cannot create {}: {e}", path.display())))?;
        crate::render::pprof::write(&an, &mut f)
            .map_err(|e| Error(1, format!("cannot write {}: {e}", path.display())))?;
    }
    let text = if a.json {
        let mut r = crate::render::json::report(&an, opts.top);
        // Issue 15: no recorder ran; the snapshot is explain's own, read from outside.
        r.recorder = "explain".into();
        r.explain = Some(crate::render::schema::Explain {
            map_moved_bytes: map_moved,
            notes: notes.clone(),
            stop_ns: stop.as_nanos() as u64,
            threads_not_stopped: not_stopped
                .iter()
                .map(|(t, c)| crate::render::schema::NotStopped { syscall: c.to_string(), tid: *t })
                .collect(),
            threads_stopped,
        });
        if a.watch.is_some() {
            // JSON Lines: this report on one line, then one line per round.
            let mut line = serde_json::to_string(&r).unwrap_or_default();
            line.push('\n');
            line
        } else {
            crate::render::json::to_text(&r)
        }
    } else {
        let mut t = crate::render::text::text(&an, opts);
        t.push_str(&format!("\nExplained from outside: {}\n", stopped));
        for n in &notes {
            t.push_str(&format!("  note: {n}\n"));
        }
        t
    };
    write_out(Dest::Stdout, text.as_bytes())?;
    if let Some(every) = a.watch {
        watch(a, every, an.attr, hold)?;
    }
    Ok(0)
}

/// `--watch`: a snapshot every `every`, printing what grew, appeared or went since the last.
fn watch(
    a: &ExplainArgs,
    every: Duration,
    first: crate::analyze::attribute::Attribution,
    hold: Option<Duration>,
) -> Result<(), Error> {
    let mut prev = first;
    let mut round = 0;
    while a.rounds.is_none_or(|n| round < n) {
        round += 1;
        std::thread::sleep(every);
        let s = take(a.pid, hold)?;
        let c = changes(&prev, &s.attr);
        let text = if a.json {
            changes_json(&c, round, s.stop.as_nanos() as u64)
        } else {
            changes_text(&c, round, &stop_line(&s))
        };
        write_out(Dest::Stdout, text.as_bytes())?;
        prev = s.attr;
    }
    Ok(())
}

/// What changed between two snapshots: VSZ by category, and regions that appeared or went.
struct Changes<'a> {
    vsz_bytes: u64,
    vsz_change_bytes: i64,
    /// Categories whose bytes changed, with the change.
    categories: Vec<(crate::analyze::attribute::Category, i64)>,
    appeared: Vec<&'a crate::analyze::attribute::Attributed>,
    went: Vec<&'a crate::analyze::attribute::Attributed>,
}

fn changes<'a>(
    a: &'a crate::analyze::attribute::Attribution,
    b: &'a crate::analyze::attribute::Attribution,
) -> Changes<'a> {
    use crate::analyze::attribute::Category;
    let categories = Category::ALL
        .iter()
        .map(|&c| (c, b.bytes_of(c).0 as i64 - a.bytes_of(c).0 as i64))
        .filter(|&(_, d)| d != 0)
        .collect();
    let key = |r: &crate::analyze::attribute::Attributed| (r.start, r.end, r.category);
    let old: std::collections::HashSet<_> = a.regions.iter().map(key).collect();
    let new: std::collections::HashSet<_> = b.regions.iter().map(key).collect();
    Changes {
        vsz_bytes: b.final_bytes,
        vsz_change_bytes: b.final_bytes as i64 - a.final_bytes as i64,
        categories,
        appeared: b.regions.iter().filter(|r| !old.contains(&key(r))).collect(),
        went: a.regions.iter().filter(|r| !new.contains(&key(r))).collect(),
    }
}

fn changes_text(c: &Changes<'_>, round: usize, stop: &str) -> String {
    let mut o = format!(
        "\nRound {round}: VSZ {} KiB ({:+} KiB); {stop}\n",
        c.vsz_bytes / 1024,
        c.vsz_change_bytes / 1024
    );
    for (cat, d) in &c.categories {
        o.push_str(&format!("  {:<16} {:>+12} KiB\n", cat.name(), d / 1024));
    }
    for r in &c.appeared {
        o.push_str(&format!(
            "  + {:#x}-{:#x} {:>10} KiB {}  {}\n",
            r.start,
            r.end,
            r.size() / 1024,
            r.category.name(),
            r.evidence.as_deref().unwrap_or("")
        ));
    }
    for r in &c.went {
        o.push_str(&format!(
            "  - {:#x}-{:#x} {:>10} KiB {}\n",
            r.start,
            r.end,
            r.size() / 1024,
            r.category.name()
        ));
    }
    o
}

/// One round as one line of JSON (`--watch --json` prints JSON Lines: the first snapshot's
/// report, then a line per round).
fn changes_json(c: &Changes<'_>, round: usize, stop_ns: u64) -> String {
    let region = |r: &&crate::analyze::attribute::Attributed| serde_json::json!({"start": r.start, "end": r.end, "category": r.category.name(), "evidence": r.evidence});
    let v = serde_json::json!({
        "round": round,
        "stop_ns": stop_ns,
        "vsz_bytes": c.vsz_bytes,
        "vsz_change_bytes": c.vsz_change_bytes,
        "categories": c.categories.iter().map(|(cat, d)| serde_json::json!({"category": cat.name(), "change_bytes": d})).collect::<Vec<_>>(),
        "appeared": c.appeared.iter().map(region).collect::<Vec<_>>(),
        "went": c.went.iter().map(region).collect::<Vec<_>>(),
    });
    let mut line = v.to_string();
    line.push('\n');
    line
}
