//! The command line (clap derive). Each subcommand names one job; `main.rs` dispatches.

use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

const EXAMPLES: &str = "\
Examples:
  vmshim run -- ./server --port 8080      run under the shim, report on stderr at exit
  vmshim run --json --report r.json -- ./ex6
  LD_PRELOAD=/path/to/libvmshim.so ./ex6   record only; then:
  vmshim report vmshim.1234.trace          where the address space came from
  vmshim events vmshim.1234.trace --json   every recorded call, one per line
  vmshim report T --folded | flamegraph.pl > vsz.svg
  vmshim report T --pprof vsz.pb.gz && go tool pprof -top vsz.pb.gz
  vmshim report T --tree                   every process of the run, in tree order
  vmshim report T --pid 1234               one process's section
  vmshim run --html ex6.html -- ./ex6      a page to open in a browser
  vmshim diff a.trace b.trace              e.g. ex6 against MALLOC_ARENA_MAX=2 ex6
  vmshim explain 1234                      a process that is already running";

#[derive(Parser)]
#[command(name = "vmshim", version, about = "Explains where a process's virtual memory came from", after_help = EXAMPLES)]
pub struct Cli {
    /// Exact sizes in bytes instead of KiB in text reports.
    #[arg(long, global = true)]
    pub bytes: bool,
    /// No colour, even on a terminal (also: the NO_COLOR environment variable).
    #[arg(long, global = true)]
    pub no_color: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run CMD under libvmshim.so and report its address space when it exits.
    Run(RunArgs),
    /// Explain a recorded trace: VSZ by category, by thread and by call stack.
    Report(ReportArgs),
    /// Print every recorded event in order, strace-like (or JSON lines).
    Events(EventsArgs),
    /// What changed between two traces: by category, by call stack, threads and arenas.
    Diff(DiffArgs),
    /// Explain a process that is already running, from outside: stops it for a moment (ptrace),
    /// reads its threads, glibc's heaps and the kernel's map; nothing is written into it.
    Explain(ExplainArgs),
}

#[derive(clap::Args)]
pub struct ExplainArgs {
    /// The running process.
    pub pid: u32,
    /// Print the report as JSON (with an `explain` section: the stop's length, the evidence).
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML page of the report to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Also write a gzipped pprof profile to FILE.
    #[arg(long, value_name = "FILE")]
    pub pprof: Option<PathBuf>,
    /// How many call stacks to show.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// After the report, take a snapshot every DURATION (`10s`, `500ms`) and print what grew,
    /// appeared or went.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub watch: Option<std::time::Duration>,
    /// With --watch: stop after N rounds (default: until interrupted).
    #[arg(long, value_name = "N", requires = "watch")]
    pub rounds: Option<usize>,
    /// For tests: keep the threads stopped this long before reading them.
    #[arg(long, hide = true, value_name = "MS")]
    pub hold_stopped_ms: Option<u64>,
}

/// `10s`, `500ms`, `2m`, or a number of seconds.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("not a duration: {s} (say 10s or 500ms)"))?;
    let secs = match unit {
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("not a duration: {s} (say 10s or 500ms)")),
    };
    if !(secs > 0.0 && secs < 86_400.0) {
        return Err(format!("not a duration: {s} (between 1ms and a day)"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Where to write the trace (default: vmshim.PID.trace in the working directory). An
    /// existing file is never replaced: the trace then goes to the first free FILE.N; a
    /// directory, device or FIFO there is refused.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write the report to FILE instead of stderr.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Also write a self-contained HTML page of the report to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// How many call stacks to show.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Exit 2 when vmshim itself could not do its part (no trace, no report written), instead
    /// of the target's status with a warning.
    #[arg(long)]
    pub strict: bool,
    /// Do not trace the target with ptrace, so that a debugger can attach to it (`gdb -p`) and
    /// everything it does with ptrace works as without vmshim. The kernel's map at exit then
    /// comes from the exit watcher (needs root), and is missing when the target is killed by a
    /// signal.
    #[arg(long)]
    pub attachable: bool,
    /// Do not install the exit watcher (a seccomp filter that stops exit_group only): for a
    /// target that installs a seccomp listener of its own (one per process) or uses seccomp
    /// strict mode. Without it vmshim waits for the target only, and sees no other process's
    /// map at exit.
    #[arg(long)]
    pub no_watch: bool,
    /// Record with the syscall recorder (ptrace + seccomp-bpf, from outside the target): what
    /// static and static-pie programs get by themselves (issue 15). On a dynamic target
    /// libvmshim.so records too, each into its own traces: the recorder's are named after the
    /// shim's with `.syscalls` appended (`t.trace.syscalls`), and the report is the shim's.
    #[arg(long, conflicts_with = "attachable")]
    pub syscalls: bool,
    /// With --syscalls: the syscall recorder alone, without libvmshim.so.
    #[arg(long, requires = "syscalls")]
    pub no_shim: bool,
    /// The command and its arguments.
    #[arg(required = true, last = true)]
    pub cmd: Vec<OsString>,
}

#[derive(clap::Args)]
pub struct ReportArgs {
    pub trace: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// How many call stacks to show.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Print folded stacks weighted by reserved bytes (`category;frames...;call bytes`), for
    /// flamegraph.pl, inferno or speedscope.
    #[arg(long, conflicts_with = "json")]
    pub folded: bool,
    /// Also write a self-contained HTML page (map, tables, flame graph, timeline) to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write a gzipped pprof profile (reserved bytes and regions by call stack, labelled by
    /// category and thread) to FILE, for `go tool pprof`.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["json", "folded"])]
    pub pprof: Option<PathBuf>,
    /// The full section of process PID of the trace's run (as its last image ended).
    #[arg(long, value_name = "PID", conflicts_with_all = ["folded", "pprof"])]
    pub pid: Option<u32>,
    /// With --pid: image N of that process (1 = the program it began as; each exec starts the
    /// next).
    #[arg(long, value_name = "N", requires = "pid")]
    pub image: Option<usize>,
    /// Every process of the run: the process table, then each process's section in tree order.
    #[arg(long, conflicts_with_all = ["folded", "pprof", "pid"])]
    pub tree: bool,
}

#[derive(clap::Args)]
pub struct DiffArgs {
    /// The trace to compare from.
    pub a: PathBuf,
    /// The trace to compare to.
    pub b: PathBuf,
    /// How many call stacks to show.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
}

#[derive(clap::Args)]
pub struct EventsArgs {
    pub trace: PathBuf,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}
