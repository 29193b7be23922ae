//! `vmshim`: runs a program under libvmshim.so and explains where its address space came from.
//!
//! The data flows file to screen in module order: [`launch`] runs the target, [`read`] loads the
//! trace, [`replay`] rebuilds the address space from the recorded calls, [`symbolize`] names
//! addresses, [`attribute`] gives every byte a cause, [`render`] and [`events`] print. This file
//! only dispatches and maps errors to exit codes: 2 for a bad trace or a target LD_PRELOAD cannot
//! reach, the target's own status for `run`.
// Only `launch` (fork, ptrace, waitpid) may use unsafe; it says why at its top.
#![deny(unsafe_code)]

mod advice;
mod attribute;
mod cli;
mod dns;
mod events;
mod html;
mod launch;
mod maps;
mod pprof;
mod read;
mod render;
mod replay;
mod symbolize;
mod tree;

use clap::Parser;
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
    let cli = cli::Cli::parse();
    render::EXACT_BYTES.store(cli.bytes, std::sync::atomic::Ordering::Relaxed);
    NO_COLOR
        .store(cli.no_color || std::env::var_os("NO_COLOR").is_some(), std::sync::atomic::Ordering::Relaxed);
    let result = match cli.command {
        cli::Command::Run(a) => run(a),
        cli::Command::Report(a) if a.folded => folded(&a.trace).map(|()| 0),
        cli::Command::Report(a) if a.pprof.is_some() => {
            pprof_file(&a.trace, a.pprof.as_deref().unwrap_or(Path::new(""))).map(|()| 0)
        }
        cli::Command::Report(a) => report(&a.trace, a.json, a.top, None, a.html.as_deref()).map(|()| 0),
        cli::Command::Diff(a) => diff(&a).map(|()| 0),
        cli::Command::Events(a) => events(&a.trace, a.json).map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Failure(code, msg)) => {
            eprintln!("vmshim: {msg}");
            ExitCode::from(code)
        }
    }
}

/// A trace read, replayed and attributed.
struct Analysis {
    rec: read::Recording,
    attr: attribute::Attribution,
    sym: symbolize::Symbolizer,
    /// VSZ over time as the hooks saw it.
    series: Vec<(u64, u64)>,
}

fn analyse(trace: &Path) -> Result<Analysis, Failure> {
    let mut rec = read::load(trace)?;
    let replay = std::mem::take(&mut rec.replay);
    let mut sym = symbolize::Symbolizer::new(attribute::modules(&rec));
    let attr = attribute::attribute(&rec, &replay, &mut sym);
    Ok(Analysis { rec, attr, sym, series: replay.series })
}

fn folded(trace: &Path) -> Result<(), Failure> {
    let mut a = analyse(trace)?;
    write_out(Dest::Stdout, render::folded(&a.attr, &mut a.sym).as_bytes())
}

fn pprof_file(trace: &Path, dest: &Path) -> Result<(), Failure> {
    let mut a = analyse(trace)?;
    let mut f = std::fs::File::create(dest)
        .map_err(|e| Failure(1, format!("cannot create {}: {e}", dest.display())))?;
    pprof::write(&a.attr, &mut a.sym, &mut f)
        .map_err(|e| Failure(1, format!("cannot write {}: {e}", dest.display())))
}

fn diff(args: &cli::DiffArgs) -> Result<(), Failure> {
    let mut a = analyse(&args.a)?;
    let mut b = analyse(&args.b)?;
    let text = render::diff((&a.rec, &a.attr, &mut a.sym), (&b.rec, &b.attr, &mut b.sym), args.top);
    write_out(Dest::Stdout, text.as_bytes())
}

/// Builds the report of a trace and writes it to `dest` (stdout when `None`), and the HTML page
/// to `html` when asked.
fn report(
    trace: &Path,
    json: bool,
    top: usize,
    dest: Option<Dest>,
    html: Option<&Path>,
) -> Result<(), Failure> {
    let Analysis { rec, attr, mut sym, series } = analyse(trace)?;
    let pid = rec.start.as_ref().map_or(0, |s| s.pid);
    let processes = tree::descendants(trace, pid);
    let input = render::Input { rec: &rec, attr: &attr, top, processes: &processes };
    if let Some(path) = html {
        let page = html::page(&input, &series, &mut sym);
        std::fs::write(path, page)
            .map_err(|e| Failure(1, format!("cannot write {}: {e}", path.display())))?;
    }
    let text = if json {
        let mut s = serde_json::to_string_pretty(&render::json(&input, &mut sym)).unwrap_or_default();
        s.push('\n');
        s
    } else {
        use std::io::IsTerminal;
        let tty = match &dest {
            None | Some(Dest::Stdout) => std::io::stdout().is_terminal(),
            Some(Dest::Stderr) => std::io::stderr().is_terminal(),
            Some(Dest::File(_)) => false,
        };
        decorate(render::text(&input, &mut sym), tty)
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
        Dest::File(p) => std::fs::write(&p, bytes),
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
    let mut sym = symbolize::Symbolizer::new(attribute::modules(&rec));
    let mut stream = read::open(trace)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut seq = 0;
    while let Some(ev) = read::next(&mut stream, trace)? {
        match events::print(seq, &ev, &mut sym, json, &mut out) {
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

/// The trace of the program image that exited. A target that execs (a wrapper script, say)
/// loads the shim again, and the new image writes `TRACE.1`, `TRACE.2`, ... beside the first
/// (the shim never overwrites a file); fork children write such files too, under their own pid.
fn last_image_trace(first: &Path, pid: u32) -> PathBuf {
    let mut last = first.to_path_buf();
    for n in 1.. {
        let next = PathBuf::from(format!("{}.{n}", first.display()));
        if !next.exists() {
            break;
        }
        if read::start_of(&next).is_some_and(|s| s.pid == pid) {
            last = next;
        }
    }
    last
}

fn run(a: cli::RunArgs) -> Result<u8, Failure> {
    let program = launch::resolve_target(&a.cmd[0]).map_err(|e| Failure(2, e.to_string()))?;
    let lib = shim_path()?;
    let cwd = std::env::current_dir().map_err(|e| Failure(2, format!("no working directory: {e}")))?;
    let template = match &a.out {
        Some(p) => {
            // The user named this file: a stale one from an earlier run must not shadow the new trace.
            let _ = std::fs::remove_file(p);
            cwd.join(p)
        }
        None => cwd.join("vmshim.%p.trace"),
    };
    let mut preload = lib.into_os_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    let env = vec![("LD_PRELOAD".into(), preload), ("VMSHIM_OUT".into(), template.clone().into_os_string())];
    let l = launch::Launch { program: &program, args: &a.cmd[1..], env };
    let outcome = launch::launch(&l).map_err(|e| Failure(2, e.to_string()))?;
    let first = PathBuf::from(template.to_string_lossy().replace("%p", &outcome.pid.to_string()));
    let trace = last_image_trace(&first, outcome.pid);
    if !trace.exists() {
        return Err(Failure(
            2,
            format!(
                "{} {}, but left no trace at {} (the shim did not load, or could not create the file)",
                a.cmd[0].to_string_lossy(),
                outcome.how,
                trace.display()
            ),
        ));
    }
    read::append_final(
        &trace,
        outcome.final_smaps.as_deref(),
        &outcome.thread_names,
        outcome.raw_status,
        &outcome.how,
    )
    .map_err(|e| Failure(2, format!("cannot complete the trace {}: {e}", trace.display())))?;
    let dest = match a.report {
        Some(p) => Dest::File(p),
        None => Dest::Stderr,
    };
    report(&trace, a.json, a.top, Some(dest), a.html.as_deref())?;
    Ok(outcome.exit_code.clamp(0, 255) as u8)
}
