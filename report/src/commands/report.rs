//! `vmshim report T` (text, `--json`, `--html`, `--tree`, `--pid`, `--folded`, `--pprof`) and
//! `vmshim diff A B`: the run of T is listed, each process analysed once, and the analysis the
//! view asks for is rendered.

use super::{Dest, write_out};
use crate::Error;
use crate::analyze::{self, Analysis};
use crate::cli;
use crate::load::{read, tree};
use crate::render::{self, Options};
use std::path::Path;

/// The analysis `vmshim report T` answers with: the last image of T's process (the image
/// `vmshim run` reports), with what it inherited in a fork.
fn analyse(trace: &Path) -> Result<Analysis, Error> {
    let image = match tree::find(trace) {
        Some(run) => analyze::answer(&run, run.chosen, None)?,
        None => analyze::of_image_alone(trace, None)?,
    };
    Ok(Analysis::new(image, vec![]))
}

pub fn folded(trace: &Path) -> Result<(), Error> {
    let a = analyse(trace)?;
    write_out(Dest::Stdout, render::folded::folded(&a).as_bytes())
}

pub fn pprof_file(trace: &Path, dest: &Path) -> Result<(), Error> {
    let a = analyse(trace)?;
    let mut f = std::fs::File::create(dest)
        .map_err(|e| Error(1, format!("cannot create {}: {e}", dest.display())))?;
    render::pprof::write(&a, &mut f).map_err(|e| Error(1, format!("cannot write {}: {e}", dest.display())))
}

pub fn diff(args: &cli::DiffArgs, opts: &Options) -> Result<(), Error> {
    // Each trace as it is: two images of one process compare too.
    let a = Analysis::new(analyze::of_trace(&args.a)?, vec![]);
    let b = Analysis::new(analyze::of_trace(&args.b)?, vec![]);
    let opts = Options { top: args.top, ..opts.clone() };
    write_out(Dest::Stdout, render::diff::diff(&a, &b, &opts).as_bytes())
}

/// Which sections a report shows.
#[derive(Clone, Copy)]
pub enum View {
    /// The given trace's process, as its last image ended.
    Answer,
    /// The process with this pid (its image N, 1-based, when given).
    Pid(u32, Option<usize>),
    /// Every process, in tree order.
    Tree,
}

/// Builds the report of a trace and writes it to `dest` (stdout when `None`), and the HTML page
/// to `html` when asked.
pub fn report(
    trace: &Path,
    json: bool,
    opts: &Options,
    dest: Option<Dest>,
    html: Option<&Path>,
    fin: Option<read::Final>,
) -> Result<(), Error> {
    report_view(trace, json, opts, dest, html, fin, View::Answer)
}

/// [`report`] with the sections `view` asks for. Every process of the run is analysed once:
/// its row of the process table, and its section when one is shown.
pub fn report_view(
    trace: &Path,
    json: bool,
    opts: &Options,
    dest: Option<Dest>,
    html: Option<&Path>,
    fin: Option<read::Final>,
    view: View,
) -> Result<(), Error> {
    let Some(run) = tree::find(trace) else {
        // No start record: loading says why.
        analyze::of_image_alone(trace, fin)?;
        return Err(Error(2, format!("{}: no start record", trace.display())));
    };
    let wanted = match view {
        View::Answer => run.chosen,
        View::Pid(pid, _) => run.by_pid(pid).ok_or_else(|| {
            let pids: Vec<String> = run.processes.iter().map(|p| p.pid.to_string()).collect();
            Error(
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
    let mut main: Option<Analysis> = None;
    let mut main_image: Option<analyze::Image> = None;
    // --tree: each section rendered as its process is analysed, then dropped.
    let mut tree_sections: Vec<String> = Vec::new();
    let mut tree_json: Vec<render::schema::Report> = Vec::new();
    for p in 0..run.processes.len() {
        let own_fin = if p == run.chosen { fin.take() } else { None };
        let img = match analyze::answer(&run, p, own_fin) {
            Ok(a) => a,
            Err(e) if p != wanted => {
                eprintln!("vmshim: warning: process {} left out: {e}", run.processes[p].pid);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        rows.push(analyze::processes::row(&run, p, &img));
        if matches!(view, View::Tree) {
            let a = Analysis::new(img, vec![]);
            if json {
                tree_json.push(render::json::report(&a, opts.top));
            } else {
                tree_sections.push(render::text::text(&a, opts));
            }
            if p == wanted && html.is_some() {
                main = Some(a);
            }
        } else if p == wanted {
            main_image = Some(img);
        }
    }
    let mut main = match (image, main, main_image) {
        (Some(n), _, _) => {
            let count = run.processes[wanted].images.len();
            if n == 0 || n > count + 1 {
                return Err(Error(
                    2,
                    format!("process {} has images 1 to {count}", run.processes[wanted].pid),
                ));
            }
            let img = if n <= count {
                analyze::of_image(&run, wanted, n - 1, None)?
            } else {
                analyze::answer(&run, wanted, None)?
            };
            Analysis::new(img, vec![])
        }
        (None, Some(a), _) => a,
        (None, None, Some(img)) => Analysis::new(img, vec![]),
        (None, None, None) => Analysis::new(analyze::answer(&run, wanted, None)?, vec![]),
    };
    // Every process is listed in the JSON; the text and HTML show the table for more than one
    // (--tree always). `vmshim report` of the run's first trace gives every section.
    main.processes = rows;
    main.run_trace = run.processes[0].first().trace.display().to_string();
    if let Some(path) = html {
        let page = render::html::page(&main, opts);
        std::fs::write(path, page).map_err(|e| Error(1, format!("cannot write {}: {e}", path.display())))?;
    }
    let text = if json {
        let mut r = render::json::report(&main, opts.top);
        if matches!(view, View::Tree) {
            r.sections = Some(tree_json);
        }
        render::json::to_text(&r)
    } else {
        use std::io::IsTerminal;
        let tty = match &dest {
            None | Some(Dest::Stdout) => std::io::stdout().is_terminal(),
            Some(Dest::Stderr) => std::io::stderr().is_terminal(),
            Some(Dest::File(_)) => false,
        };
        let mut t = if matches!(view, View::Tree) {
            // The table, then every section in tree order.
            let mut t = render::text::table(&main, opts);
            for s in tree_sections {
                t.push('\n');
                t.push_str(&s);
            }
            t
        } else {
            render::text::text(&main, opts)
        };
        if t.is_empty() {
            t.push('\n');
        }
        render::text::decorate(t, tty, opts)
    };
    write_out(dest.unwrap_or(Dest::Stdout), text.as_bytes())
}
