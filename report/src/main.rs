//! `vmshim`: runs a program under libvmshim.so and explains where its address space came from.
//!
//! The data flows file to screen in module order: [`launch`] runs the target, [`tree`] finds the
//! run's traces and sorts them into processes and images, [`read`] loads a trace, [`replay`]
//! rebuilds the address space from the recorded calls, [`symbolize`] names addresses,
//! [`attribute`] gives every byte a cause, [`analysis`] does that once per process (what a fork
//! child inherited included) and makes the process table, [`render`], [`html`] and [`events`]
//! print. This file only dispatches and maps errors to exit codes: 2 for a bad trace or a target
//! LD_PRELOAD cannot reach, the target's own status for `run`.
// Only the modules that talk to the kernel about other processes may use unsafe, each saying why
// at its top: `launch` (fork, ptrace, waitpid), `watch` (seccomp, SCM_RIGHTS) and `explain::stop`
// (ptrace of a running process).
#![deny(unsafe_code)]

mod analyze;
mod cli;
mod explain;
mod launch;
mod load;
mod render;
mod replay;
mod symbolize;

use clap::Parser;
use load::{read, tree};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A failure with the exit code it maps to.
struct Failure(u8, String);

impl From<read::ReadError> for Failure {
    fn from(e: read::ReadError) -> Failure {
        Failure(2, e.0)
    }
}

fn main() -> ExitCode {
    // The exit watcher's process (`vmshim run` starts it; not a command for users).
    if std::env::args_os().nth(1).is_some_and(|a| a == "__watch") {
        return ExitCode::from(launch::watch::serve());
    }
    let cli = cli::Cli::parse();
    render::text::EXACT_BYTES.store(cli.bytes, std::sync::atomic::Ordering::Relaxed);
    NO_COLOR
        .store(cli.no_color || std::env::var_os("NO_COLOR").is_some(), std::sync::atomic::Ordering::Relaxed);
    let result = match cli.command {
        cli::Command::Run(a) => run(a),
        cli::Command::Report(a) if a.folded => folded(&a.trace).map(|()| 0),
        cli::Command::Report(a) if a.pprof.is_some() => {
            pprof_file(&a.trace, a.pprof.as_deref().unwrap_or(Path::new(""))).map(|()| 0)
        }
        cli::Command::Report(a) => {
            let view = match (a.tree, a.pid) {
                (true, _) => View::Tree,
                (false, Some(pid)) => View::Pid(pid, a.image),
                (false, None) => View::Answer,
            };
            report_view(&a.trace, a.json, a.top, None, a.html.as_deref(), None, view).map(|()| 0)
        }
        cli::Command::Diff(a) => diff(&a).map(|()| 0),
        cli::Command::Events(a) => events(&a.trace, a.json).map(|()| 0),
        cli::Command::Explain(a) => explain::explain(&a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Failure(code, msg)) => {
            eprintln!("vmshim: {msg}");
            ExitCode::from(code)
        }
    }
}

/// The analysis `vmshim report T` answers with: the last image of T's process (the image
/// `vmshim run` reports), with what it inherited in a fork.
fn analyse(trace: &Path) -> Result<analyze::Analysis, Failure> {
    Ok(match tree::find(trace) {
        Some(run) => analyze::answer(&run, run.chosen, None)?,
        None => analyze::of_image_alone(trace, None)?,
    })
}

fn folded(trace: &Path) -> Result<(), Failure> {
    let mut a = analyse(trace)?;
    write_out(Dest::Stdout, render::text::folded(&a.attr, &mut a.sym).as_bytes())
}

fn pprof_file(trace: &Path, dest: &Path) -> Result<(), Failure> {
    let mut a = analyse(trace)?;
    let mut f = std::fs::File::create(dest)
        .map_err(|e| Failure(1, format!("cannot create {}: {e}", dest.display())))?;
    render::pprof::write(&a.attr, &mut a.sym, &mut f)
        .map_err(|e| Failure(1, format!("cannot write {}: {e}", dest.display())))
}

fn diff(args: &cli::DiffArgs) -> Result<(), Failure> {
    // Each trace as it is: two images of one process compare too.
    let mut a = analyze::of_trace(&args.a)?;
    let mut b = analyze::of_trace(&args.b)?;
    let text = render::text::diff((&a.rec, &a.attr, &mut a.sym), (&b.rec, &b.attr, &mut b.sym), args.top);
    write_out(Dest::Stdout, text.as_bytes())
}

/// Which sections a report shows.
#[derive(Clone, Copy)]
enum View {
    /// The given trace's process, as its last image ended.
    Answer,
    /// The process with this pid (its image N, 1-based, when given).
    Pid(u32, Option<usize>),
    /// Every process, in tree order.
    Tree,
}

/// Builds the report of a trace and writes it to `dest` (stdout when `None`), and the HTML page
/// to `html` when asked.
fn report(
    trace: &Path,
    json: bool,
    top: usize,
    dest: Option<Dest>,
    html: Option<&Path>,
    fin: Option<read::Final>,
) -> Result<(), Failure> {
    report_view(trace, json, top, dest, html, fin, View::Answer)
}

/// [`report`] with the sections `view` asks for. Every process of the run is analysed once:
/// its row of the process table, and its section when one is shown.
fn report_view(
    trace: &Path,
    json: bool,
    top: usize,
    dest: Option<Dest>,
    html: Option<&Path>,
    fin: Option<read::Final>,
    view: View,
) -> Result<(), Failure> {
    let Some(run) = tree::find(trace) else {
        // No start record: loading says why.
        analyze::of_image_alone(trace, fin)?;
        return Err(Failure(2, format!("{}: no start record", trace.display())));
    };
    let wanted = match view {
        View::Answer => run.chosen,
        View::Pid(pid, _) => run.by_pid(pid).ok_or_else(|| {
            let pids: Vec<String> = run.processes.iter().map(|p| p.pid.to_string()).collect();
            Failure(
                2,
                format!(
                    "no process {pid} in the run of {}: its processes are {}",
                    trace.display(),
                    pids.join(", ")
                ),
            )
        })?,
        View::Tree => run.chosen,
    };
    let image = match view {
        View::Pid(_, Some(n)) => Some(n),
        _ => None,
    };
    let mut fin = fin;
    let mut rows = Vec::with_capacity(run.processes.len());
    let mut main: Option<analyze::Analysis> = None;
    // --tree: each section rendered as its process is analysed, then dropped.
    let mut tree_sections: Vec<String> = Vec::new();
    let mut tree_json: Vec<serde_json::Value> = Vec::new();
    for p in 0..run.processes.len() {
        let own_fin = if p == run.chosen { fin.take() } else { None };
        let a = match analyze::answer(&run, p, own_fin) {
            Ok(a) => a,
            Err(e) if p != wanted => {
                eprintln!("vmshim: warning: process {} left out: {e}", run.processes[p].pid);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        rows.push(analyze::row(&run, p, &a));
        if matches!(view, View::Tree) {
            let mut a = a;
            let input = render::text::Input {
                rec: &a.rec,
                attr: &a.attr,
                top,
                context: &a.context,
                processes: &[],
                trace: "",
            };
            if json {
                tree_json.push(render::text::json(&input, &mut a.sym));
            } else {
                tree_sections.push(render::text::text(&input, &mut a.sym));
            }
            if p == wanted && html.is_some() {
                main = Some(a);
            }
        } else if p == wanted {
            main = Some(a);
        }
    }
    let mut main = match (image, main) {
        (Some(n), _) => {
            let count = run.processes[wanted].images.len();
            if n == 0 || n > count + 1 {
                return Err(Failure(
                    2,
                    format!("process {} has images 1 to {count}", run.processes[wanted].pid),
                ));
            }
            if n <= count {
                analyze::of_image(&run, wanted, n - 1, None)?
            } else {
                analyze::answer(&run, wanted, None)?
            }
        }
        (None, Some(a)) => a,
        (None, None) => analyze::answer(&run, wanted, None)?,
    };
    // Every process is listed in the JSON; the text and HTML show the table for more than one
    // (--tree always).
    let rows: &[analyze::Row] = &rows;
    // `vmshim report` of the run's first trace gives every section.
    let shown = run.processes[0].first().trace.display().to_string();
    let input = render::text::Input {
        rec: &main.rec,
        attr: &main.attr,
        top,
        context: &main.context,
        processes: rows,
        trace: &shown,
    };
    if let Some(path) = html {
        let page = render::html::page(&input, &main.series, &mut main.sym);
        std::fs::write(path, page)
            .map_err(|e| Failure(1, format!("cannot write {}: {e}", path.display())))?;
    }
    let text = if json {
        let mut v = render::text::json(&input, &mut main.sym);
        if matches!(view, View::Tree) {
            v["sections"] = serde_json::Value::Array(tree_json);
        }
        let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
        s.push('\n');
        s
    } else {
        use std::io::IsTerminal;
        let tty = match &dest {
            None | Some(Dest::Stdout) => std::io::stdout().is_terminal(),
            Some(Dest::Stderr) => std::io::stderr().is_terminal(),
            Some(Dest::File(_)) => false,
        };
        let mut t = if matches!(view, View::Tree) {
            // The table, then every section in tree order.
            let mut t = String::new();
            let table = render::text::Input { processes: rows, ..input };
            t.push_str(&render::text::table(&table));
            for s in tree_sections {
                t.push('\n');
                t.push_str(&s);
            }
            t
        } else {
            render::text::text(&input, &mut main.sym)
        };
        if t.is_empty() {
            t.push('\n');
        }
        decorate(t, tty)
    };
    write_out(dest.unwrap_or(Dest::Stdout), text.as_bytes())
}

/// `--no-color` or NO_COLOR: plain text even on a terminal.
static NO_COLOR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Section headings in bold, when the text goes to a terminal and colour is not switched off.
fn decorate(text: String, to_terminal: bool) -> String {
    if !to_terminal || NO_COLOR.load(std::sync::atomic::Ordering::Relaxed) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 256);
    let mut prev_blank = true;
    for line in text.lines() {
        if prev_blank && !line.is_empty() && !line.starts_with(' ') {
            out.push_str(&format!("\x1b[1m{line}\x1b[0m\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
        prev_blank = line.is_empty();
    }
    out
}

enum Dest {
    Stdout,
    Stderr,
    File(PathBuf),
}

fn write_out(dest: Dest, bytes: &[u8]) -> Result<(), Failure> {
    let r = match dest {
        Dest::Stdout => std::io::stdout().lock().write_all(bytes),
        Dest::Stderr => std::io::stderr().lock().write_all(bytes),
        Dest::File(p) => {
            return std::fs::write(&p, bytes)
                .map_err(|e| Failure(1, format!("cannot write the report to {}: {e}", p.display())));
        }
    };
    match r {
        // A closed pipe (`| head`) is the reader's choice, not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(|e| Failure(1, format!("cannot write the report: {e}"))),
    }
}

fn events(trace: &Path, json: bool) -> Result<(), Failure> {
    // A first pass for the modules that name addresses, then the events as they stream by.
    let rec = read::load(trace)?;
    let mut sym = symbolize::Symbolizer::new(analyze::attribute::modules(&rec));
    let mut stream = read::open(trace)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut seq = 0;
    while let Some(ev) = read::next(&mut stream, trace)? {
        match render::events::print(seq, &ev, &mut sym, json, &mut out) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(Failure(1, format!("cannot write: {e}"))),
            Ok(()) => {}
        }
        seq += 1;
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure(1, format!("cannot write: {e}"))),
        _ => Ok(()),
    }
}

/// libvmshim.so, built beside this executable.
fn shim_path() -> Result<PathBuf, Failure> {
    let exe = std::env::current_exe().map_err(|e| Failure(2, format!("cannot find my own path: {e}")))?;
    let lib = exe.with_file_name("libvmshim.so");
    if lib.is_file() {
        Ok(lib)
    } else {
        Err(Failure(
            2,
            format!("{} is missing: build the workspace (cargo build --workspace)", lib.display()),
        ))
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
/// found `top`, reused: a second listing of a thousand traces cost ~20 ms).
fn attach_exit_maps(top: &Path, run: &tree::Run, exits: &[launch::watch::Capture], strict: bool, code: &mut u8) {
    if exits.is_empty() {
        return;
    }
    let images: Vec<&tree::Image> = run.processes.iter().flat_map(|p| p.images.iter()).collect();
    for c in exits.iter().filter(|c| !c.smaps.is_empty()) {
        let Some(path) = images
            .iter()
            .filter(|i| i.start.pid == c.pid && i.start.mono_ns <= c.mono_ns && i.trace != top)
            .max_by_key(|i| i.start.mono_ns)
            .map(|i| &i.trace)
        else {
            continue;
        };
        let status = (c.code & 0xff) << 8;
        let fin = read::Final {
            smaps: Some(c.smaps.clone()),
            thread_names: c.thread_names.clone(),
            raw_status: status,
            how: format!("exited {}", c.code & 0xff),
        };
        if let Err(e) = read::append_final(path, &fin) {
            warn(strict, code, &format!("cannot add the kernel's map at exit to {} ({e})", path.display()));
        }
    }
}

/// The trace of the program image that exited: the last image of the process whose first
/// trace is `first` (or, when `first` was taken by an older file, the first free name after
/// it), among its run's traces (`tree` lists them). Only traces whose start record names `pid`
/// and came after `since` (Unix ns) count, so an older trace left under that name by an earlier
/// run with the same pid is never taken. `vmshim report` picks the same image.
fn last_image_trace(first: &Path, pid: u32, since: u64) -> Option<(PathBuf, tree::Run)> {
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
fn check_out(p: &Path) -> Result<Option<String>, Failure> {
    if let Some(kind) = not_a_trace_path(p) {
        return Err(Failure(
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

fn run(a: cli::RunArgs) -> Result<u8, Failure> {
    let program = launch::resolve_target(&a.cmd[0]).map_err(|e| Failure(2, e.to_string()))?;
    let lib = shim_path()?;
    let sanitizer = launch::sanitizer_runtime(&program);
    let cwd = std::env::current_dir().map_err(|e| Failure(2, format!("no working directory: {e}")))?;
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
    let hold = !a.attachable && !sanitizer.as_ref().is_some_and(|r| r.uses_ptrace);
    if let Some(r) = sanitizer.as_ref().filter(|r| r.uses_ptrace && a.no_watch) {
        eprintln!(
            "vmshim: {} links {}, whose leak check stops the world with ptrace at exit: vmshim does \
             not trace it, and --no-watch leaves the exit watcher out, so the report replays the \
             recorded calls without the kernel's map at exit (ASAN_OPTIONS=detect_leaks=0 keeps it)",
            a.cmd[0].to_string_lossy(),
            r.name
        );
    }
    let mut env = Vec::new();
    if early_problem.is_none() {
        env.push(("LD_PRELOAD".into(), preload));
        env.push(("VMSHIM_OUT".into(), template.clone().into_os_string()));
        env.push(("VMSHIM_RUN".into(), format!("{run_id:016x}").into()));
        if hold {
            env.push(("VMSHIM_TRACER".into(), std::process::id().to_string().into()));
        }
    }
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        .saturating_sub(1_000_000_000);
    let me = std::env::current_exe().ok();
    let watch = me.as_deref().filter(|_| !a.no_watch && early_problem.is_none());
    let l = launch::Launch { program: &program, args: &a.cmd[1..], env, hold, watch };
    let outcome = launch::launch(&l).map_err(|e| Failure(2, e.to_string()))?;
    let mut code = outcome.exit_code.clamp(0, 255) as u8;
    if let Some(launch::watch::State::Unavailable(why)) = &outcome.watched {
        eprintln!("vmshim: note: no other process of the tree has the kernel's map at exit: {why}");
    }
    if outcome.left_running {
        eprintln!("vmshim: stopped waiting for the tree; the processes left run on, unwatched from now");
    }
    let first = PathBuf::from(template.to_string_lossy().replace("%p", &outcome.pid.to_string()));
    let Some((trace, run)) = last_image_trace(&first, outcome.pid, since) else {
        if early_problem.is_none() {
            warn(
                a.strict,
                &mut code,
                &format!(
                    "{} {}, but left no trace at {} (the shim did not load, or could not create the file)",
                    a.cmd[0].to_string_lossy(),
                    outcome.how,
                    first.display()
                ),
            );
        } else if a.strict {
            code = 2;
        }
        return Ok(code);
    };
    // last_image_trace only ever answers `first` or a `first.N`; a `.N` of an exec'd image
    // follows a `first` of the same pid, which needs no word.
    if a.out.is_some() && trace != first && read::start_of(&first).is_none_or(|s| s.pid != outcome.pid) {
        eprintln!("vmshim: {} was taken; the trace is {}", first.display(), trace.display());
    }
    attach_exit_maps(&trace, &run, &outcome.exits, a.strict, &mut code);
    let fin = read::Final {
        smaps: outcome.final_smaps,
        thread_names: outcome.thread_names,
        raw_status: outcome.raw_status,
        how: outcome.how.clone(),
    };
    let kept_in_memory = match read::append_final(&trace, &fin) {
        Ok(()) => None,
        Err(e) => {
            warn(
                a.strict,
                &mut code,
                &format!(
                    "cannot add the kernel's map at exit to {} ({e}); the report below has it, the file does not",
                    trace.display()
                ),
            );
            Some(fin)
        }
    };
    let dest = match a.report {
        Some(p) => Dest::File(p),
        None => Dest::Stderr,
    };
    if let Err(Failure(_, msg)) = report(&trace, a.json, a.top, Some(dest), a.html.as_deref(), kept_in_memory)
    {
        warn(a.strict, &mut code, &msg);
    }
    Ok(code)
}
