//! `vmshim`: runs a program under libvmshim.so and explains where its address space came from.
//!
//! The report is a pipeline of stages, one folder each, in the order the data flows: [`launch`]
//! runs the target (with its exit watcher), [`load`] finds the run's traces and reads one,
//! [`replay`] rebuilds the address space from the recorded calls, [`symbolize`] names
//! addresses, [`analyze`] gives every byte a cause and computes every figure and verdict once
//! (an [`analyze::Analysis`]), and [`render`] prints it as text, JSON, HTML, folded stacks or
//! pprof. [`commands`] strings the stages together for `run`, `report`, `diff` and `events`;
//! [`explain`] loads a live process instead of a trace and renders the same way. This file
//! only dispatches and maps errors to exit codes ([`Error::exit_code`]): 2 for a bad trace or a
//! target LD_PRELOAD cannot reach, the target's own status for `run`.
// Only the modules that talk to the kernel about other processes may use unsafe, each saying why
// at its top: `launch` (fork, ptrace, waitpid), `launch::watch` (seccomp, SCM_RIGHTS),
// `launch::recorder` (the syscall recorder: ptrace, seccomp, execve) and `explain::stop` (ptrace
// of a running process).
#![deny(unsafe_code)]

mod analyze;
mod cli;
mod commands;
mod explain;
mod launch;
mod load;
mod render;
mod replay;
mod symbolize;

use clap::Parser;
use commands::report::{self, View};
use std::path::Path;
use std::process::ExitCode;

/// A failure: the exit code it maps to, and the sentence that says why.
pub struct Error(pub u8, pub String);

impl Error {
    pub fn exit_code(&self) -> u8 {
        self.0
    }
}

impl From<load::read::ReadError> for Error {
    fn from(e: load::read::ReadError) -> Error {
        Error(2, e.0)
    }
}

fn main() -> ExitCode {
    // The exit watcher's process (`vmshim run` starts it; not a command for users).
    if std::env::args_os().nth(1).is_some_and(|a| a == "__watch") {
        return ExitCode::from(launch::watch::serve());
    }
    let cli = cli::Cli::parse();
    let (exact_bytes, color) = (cli.bytes, !cli.no_color && std::env::var_os("NO_COLOR").is_none());
    let opts = |top: usize| render::Options { top, exact_bytes, color };
    let result = match cli.command {
        cli::Command::Run(a) => {
            let o = opts(a.top);
            commands::run::run(a, &o)
        }
        cli::Command::Report(a) if a.folded => report::folded(&a.trace).map(|()| 0),
        cli::Command::Report(a) if a.pprof.is_some() => {
            report::pprof_file(&a.trace, a.pprof.as_deref().unwrap_or(Path::new(""))).map(|()| 0)
        }
        cli::Command::Report(a) => {
            let view = match (a.tree, a.pid) {
                (true, _) => View::Tree,
                (false, Some(pid)) => View::Pid(pid, a.image),
                (false, None) => View::Answer,
            };
            report::report_view(&a.trace, a.json, &opts(a.top), None, a.html.as_deref(), None, view)
                .map(|()| 0)
        }
        cli::Command::Diff(a) => report::diff(&a, &opts(a.top)).map(|()| 0),
        cli::Command::Events(a) => commands::events::events(&a.trace, a.json).map(|()| 0),
        cli::Command::Explain(a) => explain::explain(&a, &opts(a.top)),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("vmshim: {}", e.1);
            ExitCode::from(e.exit_code())
        }
    }
}
