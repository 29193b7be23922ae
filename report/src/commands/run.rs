//! `vmshim run`: checks where the trace may go, runs the target under the shim ([`launch`]),
//! adds the kernel's maps at exit to the traces, then reports as `vmshim report` does. Its exit
//! status is the target's; what vmshim itself could not do is a warning (exit 2 with --strict).

use super::{Dest, report};
use crate::load::{read, tree};
use crate::render::Options;
use crate::{Error, cli, launch};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use vmshim_trace::decode::Exit;

/// libvmshim.so, built beside this executable.
fn shim_path() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe().map_err(|e| Error(2, format!("cannot find my own path: {e}")))?;
    let lib = exe.with_file_name("libvmshim.so");
    if lib.is_file() {
        Ok(lib)
    } else {
        Err(Error(2, format!("{} is missing: build the workspace (cargo build --workspace)", lib.display())))
    }
}

/// A random id for one `vmshim run`, which the shim writes into every trace of the run.
fn new_run_id() -> u64 {
    use std::io::Read;
    let mut id = [0u8; 8];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut id));
    if random.is_err() {
        // No entropy source: time and pid still tell runs apart.
        let t =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        return (t as u64) ^ ((std::process::id() as u64) << 40);
    }
    u64::from_le_bytes(id).max(1)
}

/// Adds each watched exit's map to the trace of the process image that made it: the trace of
/// that pid begun last before the exit, among the images of `run` (the run's listing that
/// found `top`, reused: a second listing of a thousand traces cost ~20 ms). Each trace's last
/// appended exit, into `appended`; false when an append failed.
fn attach_exit_maps(
    top: &Path,
    run: &tree::Run,
    exits: &[launch::watch::Capture],
    strict: bool,
    code: &mut u8,
    appended: &mut HashMap<PathBuf, Exit>,
) -> bool {
    if exits.is_empty() {
        return true;
    }
    let images: Vec<&tree::Image> = run.processes.iter().flat_map(|p| p.images.iter()).collect();
    let mut by_pid: std::collections::HashMap<u32, Vec<&tree::Image>> = std::collections::HashMap::new();
    for i in images.iter().filter(|i| i.trace != top) {
        by_pid.entry(i.start.pid).or_default().push(i);
    }
    // Each file's exits, in the order they came (a pid reused within the run may send two to one
    // file: those are appended one after the other, by one thread).
    let mut work: Vec<(&Path, Vec<&launch::watch::Capture>)> = Vec::new();
    let mut slot: std::collections::HashMap<&Path, usize> = std::collections::HashMap::new();
    for c in exits.iter().filter(|c| !c.smaps.is_empty()) {
        let Some(of_pid) = by_pid.get(&c.pid) else { continue };
        let Some(image) =
            of_pid.iter().filter(|i| i.start.mono_ns <= c.mono_ns).max_by_key(|i| i.start.mono_ns)
        else {
            continue;
        };
        let path = image.trace.as_path();
        let at = *slot.entry(path).or_insert_with(|| {
            work.push((path, Vec::new()));
            work.len() - 1
        });
        work[at].1.push(c);
    }
    // Each file on its own: spread over the cores, the warnings said in order after.
    let done = crate::load::par::map(&work, |(path, captures)| {
        let (mut failed, mut last) = (Vec::new(), None);
        for c in captures {
            let fin = final_of(c);
            match read::append_final(path, &fin) {
                Ok(()) => last = Some(fin.exit()),
                Err(e) => {
                    failed.push(format!("cannot add the kernel's map at exit to {} ({e})", path.display()))
                }
            }
        }
        (failed, last)
    });
    let mut all = true;
    for ((path, _), (failed, last)) in work.iter().zip(done) {
        all &= failed.is_empty();
        for msg in failed {
            warn(strict, code, &msg);
        }
        if let Some(e) = last {
            appended.insert(path.to_path_buf(), e);
        }
    }
    all
}

/// Whether `c` is the capture of an image that waited with no trace, whose trace
/// [`write_waiting_one`] writes.
fn is_waiting(c: &launch::watch::Capture) -> bool {
    c.waiting.is_some() && !c.smaps.is_empty()
}

/// Writes the trace of an image that waited for its first record with no file and exited
/// without one (shim/src/record/waiting.rs: a shell's `/bin/true` under the watcher), from what
/// the watcher read while it waited: its note (parent, start, run id, the loader's addresses),
/// its command line, and its map at exit, which names its executable (the file mapped where the
/// note says its program headers lie, as /proc/PID/exe would). It is created by the shim's
/// naming rules from the run's `template` and holds what the shim would have written for an
/// image that records nothing. `vmshim run` calls it as each such capture arrives
/// (`on_capture` in [`run`]), which keeps those captures out of the ones [`attach_exit_maps`]
/// is given: the watcher's are the only captures that can be of a waiting image, and it has
/// `on_capture` whenever the shim is given the run's template.
fn write_waiting_one(template: &Path, c: &launch::watch::Capture) -> std::io::Result<()> {
    use crate::launch::recorder::out::{StartInfo, TraceOut};
    let Some(w) = &c.waiting else { return Ok(()) };
    let mut out = TraceOut::create_held(template, c.pid)?;
    let path = out.path.clone();
    let argv: Vec<Vec<u8>> = w.cmdline.split(|&b| b == 0).map(<[u8]>::to_vec).collect();
    // /proc/PID/cmdline ends each argument with a NUL: the last piece is empty.
    let argv = &argv[..argv.len().saturating_sub(usize::from(w.cmdline.last() == Some(&0)))];
    out.start(&StartInfo {
        pid: c.pid,
        ppid: w.note.ppid,
        page_size: w.note.page_size,
        mono_ns: w.note.mono_ns,
        real_ns: w.note.real_ns,
        exe: &mapped_file_at(&c.smaps, w.note.exe_at).unwrap_or_default(),
        trace_path: &path.to_string_lossy(),
        argv,
        run_id: w.note.run_id,
        fork: None,
    });
    out.config(&format!("loader.at={}\n", vmshim_trace::waiting::loader_at_text(&w.note.loader_at)));
    let bytes = out.write_held(&read::final_records(&final_of(c)))?;
    // The run's listing and report read it next.
    read::remember_written(&path, bytes);
    Ok(())
}

/// Writes the trace of a fork child whose Start record came on the run's socket (`sent`,
/// `launch::sent`): that record, as the child would have written it in the fork, in the file
/// the shim's naming rules give from the run's `template`; nothing when the child created its
/// own (a taken name whose Start names the same fork).
fn write_sent_one(template: &Path, sent: &launch::sent::Sent) -> std::io::Result<()> {
    use crate::launch::recorder::out::TraceOut;
    let start = &sent.start;
    let Some(fork) = &start.fork else { return Ok(()) };
    let same = |p: &Path| {
        read::start_of(p)
            .is_some_and(|s| s.pid == start.pid && s.fork.as_ref().is_some_and(|f| f.mono_ns == fork.mono_ns))
    };
    let Some(out) = TraceOut::create_held_unless(template, start.pid, &same)? else { return Ok(()) };
    let path = out.path.clone();
    let bytes = out.write_held(&sent.record)?;
    read::remember_written(&path, bytes);
    Ok(())
}

/// The file a map text (maps or smaps) shows mapped at `addr`.
fn mapped_file_at(map: &[u8], addr: u64) -> Option<String> {
    crate::load::maps::parse(&String::from_utf8_lossy(map))
        .into_iter()
        .find(|r| r.is_file() && (r.start..r.end).contains(&addr))
        .map(|r| r.path)
}

/// The Final record of a watched exit.
fn final_of(c: &launch::watch::Capture) -> read::Final {
    read::Final {
        smaps: Some(c.smaps.clone()),
        statm: Some(c.statm.clone()).filter(|s| !s.is_empty()),
        thread_names: c.thread_names.clone(),
        raw_status: (c.code & 0xff) << 8,
        how: format!("exited {}", c.code & 0xff),
    }
}

/// The trace of the program image that exited: the last image of the process whose first
/// trace is `first` (or, when `first` was taken by an older file, the first free name after
/// it), among its run's traces (`tree` lists them, and keeps the listing for the caller). Only
/// traces whose start record names `pid` and came after `since` (Unix ns) count, so an older
/// trace left under that name by an earlier run with the same pid is never taken. `vmshim
/// report` picks the same image.
fn last_image_trace(first: &Path, pid: u32, since: u64) -> Option<(PathBuf, tree::Run, tree::Listing)> {
    tree::last_image_of(first, pid, since)
}

/// What kind of thing is at `p`, if it is not something a trace may be written beside or
/// numbered after (a regular file, a symlink, nothing).
fn not_a_trace_path(p: &Path) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let t = std::fs::symlink_metadata(p).ok()?.file_type();
    Some(match () {
        _ if t.is_file() || t.is_symlink() => return None,
        _ if t.is_dir() => "a directory",
        _ if t.is_char_device() => "a character device",
        _ if t.is_block_device() => "a block device",
        _ if t.is_fifo() => "a FIFO",
        _ if t.is_socket() => "a socket",
        _ => "not a regular file",
    })
}

/// Checks `--out` before anything runs. The rule, the shim's too: a trace never replaces,
/// truncates or follows what is there. A name taken by a file (or a symlink) makes the trace
/// go to the first free `NAME.N`; a name taken by anything else is refused; a directory that
/// is missing or not writable is said now (the target then runs untraced).
fn check_out(p: &Path) -> Result<Option<String>, Error> {
    if let Some(kind) = not_a_trace_path(p) {
        return Err(Error(
            2,
            format!("--out {} is {kind}, not a trace file: name a new file (nothing was run)", p.display()),
        ));
    }
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Ok(dir_problem(dir))
}

/// Why no trace can be created in `dir`, if that is known before trying.
fn dir_problem(dir: &Path) -> Option<String> {
    match std::fs::metadata(dir) {
        Err(e) => Some(format!("{}: {e}", dir.display())),
        Ok(m) if !m.is_dir() => Some(format!("{} is not a directory", dir.display())),
        Ok(_) => (!launch::writable_dir(dir)).then(|| format!("{}: not writable", dir.display())),
    }
}

/// A problem on vmshim's side, after the target ran: a warning, and the target's status stands
/// unless `--strict` asks for 2.
fn warn(strict: bool, code: &mut u8, msg: &str) {
    eprintln!("vmshim: warning: {msg}");
    if strict {
        *code = 2;
    }
}

/// This process's effective user id (`Uid:` of /proc/self/status: real, effective, ...).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// What the run's traces learn once the target is gone: the run's traces are listed, each
/// watched exit's map is added to the trace of its image, and the target's own exit to its last
/// image's (and, with the syscall recorder alongside, to the recorder's traces). The trace to
/// report, with what the report must add itself when the file could not take it, and the run as
/// the report lists it; None when the run left no trace (said here).
fn complete_traces(
    a: &cli::RunArgs,
    outcome: launch::Outcome,
    first: &Path,
    since: u64,
    early_problem: bool,
    companion: Option<&Path>,
    code: &mut u8,
) -> Option<(PathBuf, Option<read::Final>, Option<tree::Run>)> {
    // The tree is done (the watcher saw its last process go): no trace of the run comes or
    // changes after the listing below but for the exits added here.
    let settled = outcome.watched == Some(launch::watch::State::Watching) && !outcome.left_running;
    let Some((trace, run, listing)) = last_image_trace(first, outcome.pid, since) else {
        if !early_problem {
            warn(
                a.strict,
                code,
                &format!(
                    "{} {}, but left no trace at {} (the shim did not load, or could not create the file)",
                    a.cmd[0].to_string_lossy(),
                    outcome.how,
                    first.display()
                ),
            );
        } else if a.strict {
            *code = 2;
        }
        return None;
    };
    // last_image_trace only ever answers `first` or a `first.N`; a `.N` of an exec'd image
    // follows a `first` of the same pid, which needs no word.
    if a.out.is_some() && trace != first && read::start_of(first).is_none_or(|s| s.pid != outcome.pid) {
        eprintln!("vmshim: {} was taken; the trace is {}", first.display(), trace.display());
    }
    let mut appended = HashMap::new();
    let all_added = attach_exit_maps(&trace, &run, &outcome.exits, a.strict, code, &mut appended);
    let fin = read::Final {
        smaps: outcome.final_smaps,
        statm: outcome.final_statm,
        thread_names: outcome.thread_names,
        raw_status: outcome.raw_status,
        how: outcome.how.clone(),
    };
    if let Some(template) = companion {
        // The recorder's own traces get the same maps at exit; its run is reported apart.
        let first = PathBuf::from(template.to_string_lossy().replace("%p", &outcome.pid.to_string()));
        match last_image_trace(&first, outcome.pid, since) {
            Some((mine, mine_run, _)) => {
                attach_exit_maps(&mine, &mine_run, &outcome.exits, a.strict, code, &mut HashMap::new());
                if let Err(e) = read::append_final(&mine, &fin) {
                    warn(
                        a.strict,
                        code,
                        &format!("cannot add the kernel's map at exit to {} ({e})", mine.display()),
                    );
                }
                eprintln!(
                    "vmshim: the syscall recorder's trace of the same run is {} (vmshim report it); the report is the shim's",
                    mine.display()
                );
            }
            None => {
                warn(a.strict, code, &format!("the syscall recorder left no trace at {}", first.display()))
            }
        }
    }
    let kept_in_memory = match read::append_final(&trace, &fin) {
        Ok(()) => {
            appended.insert(trace.clone(), fin.exit());
            None
        }
        Err(e) => {
            warn(
                a.strict,
                code,
                &format!(
                    "cannot add the kernel's map at exit to {} ({e}); the report below has it, the file does not",
                    trace.display()
                ),
            );
            Some(fin)
        }
    };
    // The report's listing, of the traces as they are now: a map at exit added to an image that
    // a later image of its pid follows makes that one a process of its own. When the exits
    // added are all that changed, the listing above, grouped again with them, is that listing
    // (a second reading of a thousand traces cost 12-14 ms).
    let regrouped = (settled && all_added && kept_in_memory.is_none())
        .then(|| listing.regroup(&trace, &appended))
        .flatten();
    let listed = regrouped.or_else(|| tree::find(&trace));
    Some((trace, kept_in_memory, listed))
}

pub fn run(a: cli::RunArgs, opts: &Options) -> Result<u8, Error> {
    // Issue 15: what LD_PRELOAD cannot reach (static, static-pie) and `--syscalls` go to the
    // syscall recorder; on a dynamic target `--syscalls` keeps the shim too (not `--no-shim`).
    let (program, recorded, shim) = match launch::resolve_target(&a.cmd[0]) {
        Ok(p) => (p, a.syscalls, !a.no_shim),
        Err(launch::LaunchError::NotDynamic { .. }) => {
            (crate::launch::recorder::program_path(&a.cmd[0]), true, false)
        }
        // The loader ignores LD_PRELOAD in secure-execution mode; a tracer with CAP_SYS_PTRACE
        // (root) keeps the new ids at exec (ptrace(2)), so root records it from outside.
        Err(launch::LaunchError::SetId { .. }) if effective_uid() == Some(0) => {
            (crate::launch::recorder::program_path(&a.cmd[0]), true, false)
        }
        // Anyone else: a tracer without privilege over the new ids makes the kernel run it
        // without them.
        Err(launch::LaunchError::SetId { path }) => {
            return Err(Error(
                2,
                format!(
                    "{} is setuid or setgid to another user: vmshim cannot trace it with this user's \
                     privileges (the dynamic loader ignores LD_PRELOAD for it, ld.so(8), and under \
                     ptrace the kernel would run it without its setuid/setgid privileges, \
                     ptrace(2)), so it was not run. Run vmshim as root, or trace a copy without the \
                     setuid/setgid bit.",
                    path.display()
                ),
            ));
        }
        Err(e) => return Err(Error(2, e.to_string())),
    };
    let lib = if shim { shim_path()? } else { PathBuf::new() };
    let sanitizer = launch::sanitizer_runtime(&program);
    let cwd = std::env::current_dir().map_err(|e| Error(2, format!("no working directory: {e}")))?;
    let (template, early_problem) = match &a.out {
        Some(p) => (cwd.join(p), check_out(p)?),
        None => (cwd.join("vmshim.%p.trace"), dir_problem(&cwd)),
    };
    if let Some(why) = &early_problem {
        eprintln!("vmshim: warning: no trace can be written ({why}); the program runs untraced");
    }
    // A sanitizer runtime insists on coming first in the loader's list (ASan refuses to start
    // otherwise): put the one the target links before the shim.
    let mut preload = std::ffi::OsString::new();
    if let Some(first) = sanitizer.as_ref().and_then(|r| r.library.as_ref()) {
        preload.push(first);
        preload.push(":");
    }
    preload.push(lib);
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    // Nothing can be recorded: the target runs as it would bare.
    let run_id = new_run_id();
    // LeakSanitizer stops the world at exit with ptrace on every thread, which fails on a thread
    // vmshim traces: such a target is not traced; the exit watcher sees its exit.
    // The syscall recorder is the target's tracer when it runs.
    let hold = !recorded && !a.attachable && !sanitizer.as_ref().is_some_and(|r| r.uses_ptrace);
    if let Some(r) = sanitizer.as_ref().filter(|r| r.uses_ptrace && a.no_watch) {
        eprintln!(
            "vmshim: {} links {}, whose leak check stops the world with ptrace at exit: vmshim does \
             not trace it, and --no-watch leaves the exit watcher out, so the report replays the \
             recorded calls without the kernel's map at exit (ASAN_OPTIONS=detect_leaks=0 keeps it)",
            a.cmd[0].to_string_lossy(),
            r.name
        );
    }
    let me = std::env::current_exe().ok();
    let watch = me.as_deref().filter(|_| !a.no_watch && early_problem.is_none());
    let mut env = Vec::new();
    let mut sink: Option<std::sync::Arc<launch::sent::Sink>> = None;
    if early_problem.is_none() && shim {
        env.push(("LD_PRELOAD".into(), preload));
        env.push(("VMSHIM_OUT".into(), template.clone().into_os_string()));
        env.push(("VMSHIM_RUN".into(), format!("{run_id:016x}").into()));
        // vmshim's pid: the parent of the image it launches, which an image of the tree tells
        // itself from (the others may wait for their first record with no trace, for the
        // watcher's captures to write: record/waiting.rs), and the tracer its ptrace hook asks
        // to let go. Held or not (--attachable), vmshim is that parent; the syscall recorder
        // writes no waiting image's trace, so under it every image keeps its own.
        if !recorded {
            env.push(("VMSHIM_TRACER".into(), std::process::id().to_string().into()));
        }
        // Every exit of the tree will be read: a process's start-up records may wait for its
        // first recorded call (issue 12: most of a short process's start-up cost).
        if watch.is_some() && launch::watch::can_install() {
            env.push(("VMSHIM_WATCHED".into(), "1".into()));
            // And a fork child's Start record may come here instead of into a file of its own.
            sink = launch::sent::Sink::bind(run_id)
                .map(std::sync::Arc::new)
                .filter(|k| k.drain_while_the_tree_runs().is_ok());
            if sink.is_some() {
                env.push(("VMSHIM_SINK".into(), "1".into()));
            }
        }
    }
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        .saturating_sub(1_000_000_000);
    let spawned = std::sync::atomic::AtomicU32::new(0);
    let gone = std::sync::atomic::AtomicBool::new(false);
    let traces = (early_problem.is_none() && shim).then_some(template.as_path());
    // Each waiting image's trace is written as its capture arrives, while the tree runs (the
    // end of a 1,000-process loop wrote a thousand of them after it); what could not be written
    // is said at the end, in the order it came.
    let unwritten = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let on_capture: Option<launch::watch::OnCapture> = traces.map(|t| {
        let (template, unwritten, sink) = (t.to_path_buf(), unwritten.clone(), sink.clone());
        std::sync::Arc::new(move |c: &launch::watch::Capture| {
            // The fork child whose image this is, or that exec'd it, is done with its Start
            // record: its trace comes first (the shim's naming order).
            for sent in sink.iter().flat_map(|k| k.take_before(c.pid, c.mono_ns)) {
                if let Err(e) = write_sent_one(&template, &sent)
                    && let Ok(mut u) = unwritten.lock()
                {
                    u.push(e.to_string());
                }
            }
            if !is_waiting(c) {
                return false;
            }
            if let Err(e) = write_waiting_one(&template, c)
                && let Ok(mut u) = unwritten.lock()
            {
                u.push(e.to_string());
            }
            true
        }) as launch::watch::OnCapture
    });
    let l = launch::Launch {
        program: &program,
        args: &a.cmd[1..],
        env,
        hold,
        watch,
        traces,
        spawned: Some(&spawned),
        on_capture,
    };
    // With the shim alongside, the recorder's traces go beside the shim's, a run of their own.
    let companion = (recorded && shim).then(|| crate::launch::recorder::companion_template(&template));
    let dest = match &a.report {
        Some(p) => Dest::File(p.clone()),
        None => Dest::Stderr,
    };
    std::thread::scope(|s| {
        let (hand_over, handed) = std::sync::mpsc::channel::<(PathBuf, report::Ended)>();
        // The report's thread. The report names its stacks from libc's DWARF, the longest single
        // piece of the end of a run of short processes (issue 12): this thread reads it ahead,
        // from the run's first trace, as soon as the target has recorded stacks (while it runs),
        // else once it is gone (while this thread lists the run and adds the maps at exit to
        // its traces). Its symbolizers keep what it read for the report it then writes.
        let (template, spawned, gone_flag, json, html) =
            (&template, &spawned, &gone, a.json, a.html.as_deref());
        let reporter = launch::spawn_blocked(s, "vmshim-report", move || {
            read_ahead(template, run_id, spawned, gone_flag);
            let (trace, ended) = handed.recv().ok()?;
            // vmshim exits once the report is out: what this thread parsed is not freed first.
            let _keep = KeepParsed;
            Some(report::report(&trace, json, opts, Some(dest), html, ended))
        })
        .map_err(|e| Error(2, format!("cannot start the report's thread: {e}")))?;
        let outcome = if recorded {
            let req = crate::launch::recorder::Request {
                program: &program,
                args: &a.cmd[1..],
                template: companion.as_deref().unwrap_or(template),
                run_id,
                env: if shim { &l.env } else { &[] },
            };
            crate::launch::recorder::run(&req)
        } else {
            launch::launch(&l)
        };
        gone.store(true, std::sync::atomic::Ordering::Release);
        let outcome = outcome.map_err(|e| Error(2, e.to_string()))?;
        let mut code = outcome.exit_code.clamp(0, 255) as u8;
        if let Some(launch::watch::State::Unavailable(why)) = &outcome.watched {
            eprintln!("vmshim: note: no other process of the tree has the kernel's map at exit: {why}");
        }
        if outcome.left_running {
            eprintln!("vmshim: stopped waiting for the tree; the processes left run on, unwatched from now");
        }
        let first = PathBuf::from(template.to_string_lossy().replace("%p", &outcome.pid.to_string()));
        // The fork children no capture was of (killed, or still running when vmshim stopped
        // waiting) get their traces now, before the listing.
        for sent in sink.iter().flat_map(|k| k.take_all()) {
            if let Err(e) = write_sent_one(template, &sent)
                && let Ok(mut u) = unwritten.lock()
            {
                u.push(e.to_string());
            }
        }
        // The images that waited with no trace got theirs as their captures came: the run's
        // listing finds them.
        for e in unwritten.lock().map(|mut u| std::mem::take(&mut *u)).unwrap_or_default() {
            warn(
                a.strict,
                &mut code,
                &format!("cannot write the trace of a process that recorded nothing ({e})"),
            );
        }
        let done = complete_traces(
            &a,
            outcome,
            &first,
            since,
            early_problem.is_some(),
            companion.as_deref(),
            &mut code,
        );
        if let Some((trace, fin, run)) = done {
            let _ = hand_over.send((trace, report::Ended { run, fin }));
        }
        drop(hand_over);
        if let Some(Err(Error(_, msg))) = reporter.join().unwrap_or_else(|e| std::panic::resume_unwind(e)) {
            warn(a.strict, &mut code, &msg);
        }
        Ok(code)
    })
}

/// Leaves the debug information the report's thread parsed unfreed when the thread ends
/// ([`crate::symbolize::keep_parsed_until_exit`]), however it ends.
struct KeepParsed;

impl Drop for KeepParsed {
    fn drop(&mut self) {
        crate::symbolize::keep_parsed_until_exit();
    }
}

/// On the report's thread: reads ahead the debug information the run's first trace's stacks
/// will need ([`crate::analyze::name_ahead`]), once that trace (of the target `spawned`, with
/// this run's id) holds stacks, looking every 20 ms while the target runs, and once more when it
/// is `gone`.
fn read_ahead(
    template: &Path,
    run_id: u64,
    spawned: &std::sync::atomic::AtomicU32,
    gone: &std::sync::atomic::AtomicBool,
) {
    use std::sync::atomic::Ordering::Acquire;
    loop {
        let last = gone.load(Acquire);
        let pid = spawned.load(Acquire);
        if pid != 0 {
            let first = PathBuf::from(template.to_string_lossy().replace("%p", &pid.to_string()));
            let ours = read::start_of(&first).is_some_and(|s| s.pid == pid && s.run_id == run_id);
            if ours && crate::analyze::name_ahead(&first) {
                return;
            }
        }
        if last {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
