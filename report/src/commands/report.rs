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

/// A process's section of `--tree`, rendered where it was analysed.
enum Section {
    Text(String),
    Json(Box<render::schema::Report>),
}

/// The analyses of a run's processes: the wanted one's (`here`), and every other one's in
/// process order (the wanted one's slot `None`).
struct Analysed<T, R> {
    run: std::sync::Arc<tree::Run>,
    wanted: usize,
    others: Vec<Option<Result<T, String>>>,
    here: R,
}

/// Analyses every process of a run: the wanted one (`wanted_of` the run; an error ends the
/// report) with `here` on this thread, the others with `work` on
/// [`crate::load::par::threads_for`] threads (this one among them once `here` is done), each
/// taking the next process as it finishes one. A run of a thousand short processes is a thousand
/// independent analyses, and at the end of `vmshim run` the cores are free (issue 12: the end of
/// the 1,000-process loop was 0.25 s on one core).
///
/// `listed` is the run as `vmshim run` listed it. Without it the run of `trace` is listed on the
/// first worker, which then goes on to the analyses while this thread (when `ahead`) reads the
/// DWARF that naming the wanted process's stacks needs: libc's, the longest single piece of the
/// report of a run of short processes, which began only after the listing, as the other
/// analyses did. `Ok(None)` when `trace` has no start record.
fn analyse_run<T: Send, R>(
    trace: &Path,
    listed: Option<Option<tree::Run>>,
    ahead: bool,
    wanted_of: impl Fn(&tree::Run) -> Result<usize, Error> + Sync,
    work: impl Fn(&tree::Run, usize) -> Result<T, String> + Sync,
    here: impl FnOnce(&tree::Run, usize) -> R,
) -> Result<Option<Analysed<T, R>>, Error> {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::sync::{Arc, mpsc};
    // Each worker takes the next process but `skip` until none is left.
    let next = AtomicUsize::new(0);
    let claim_and_work = |run: &tree::Run, skip: usize| {
        let mut mine = Vec::new();
        loop {
            let p = next.fetch_add(1, Relaxed);
            if p >= run.processes.len() {
                return mine;
            }
            if p != skip {
                mine.push((p, work(run, p)));
            }
        }
    };
    let joined =
        |h: std::thread::ScopedJoinHandle<'_, _>| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
    // `vmshim run` read the DWARF ahead while it listed the run.
    let listed_here = listed.is_none();
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel::<Arc<tree::Run>>();
        let (wanted_of, claim_and_work) = (&wanted_of, &claim_and_work);
        let first_worker = s.spawn(move || {
            let run = Arc::new(match listed {
                Some(run) => run?,
                None => tree::find(trace)?,
            });
            let _ = tx.send(run.clone());
            let skip = wanted_of(&run).ok()?;
            // This thread is one worker and this function's caller another, once the wanted
            // process is done; a handful of processes is left to the caller alone.
            let threads = crate::load::par::threads_for(run.processes.len().saturating_sub(1));
            if threads == 1 {
                return Some(Vec::new());
            }
            Some(std::thread::scope(|s| {
                let more: Vec<_> = (2..threads).map(|_| s.spawn(|| claim_and_work(&run, skip))).collect();
                let mut all = claim_and_work(&run, skip);
                for w in more {
                    all.extend(w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
                }
                all
            }))
        });
        if ahead && listed_here {
            analyze::name_ahead(trace);
        }
        let Ok(run) = rx.recv() else {
            joined(first_worker);
            return Ok(None);
        };
        let wanted = match wanted_of(&run) {
            Ok(w) => w,
            Err(e) => {
                joined(first_worker);
                return Err(e);
            }
        };
        let mine = here(&run, wanted);
        let mut results = claim_and_work(&run, wanted);
        results.extend(joined(first_worker).unwrap_or_default());
        let mut others: Vec<Option<Result<T, String>>> = (0..run.processes.len()).map(|_| None).collect();
        for (p, r) in results {
            others[p] = Some(r);
        }
        Ok(Some(Analysed { run, wanted, others, here: mine }))
    })
}

/// What `vmshim run` hands its report: the run, listed once the maps at exit were added to its
/// traces (listed while the report's thread read DWARF ahead), and what the trace's file could
/// not take.
pub struct Ended {
    pub run: Option<tree::Run>,
    pub fin: Option<read::Final>,
}

/// Builds the report of the trace of a run that `vmshim run` just ended and writes it to `dest`
/// (stdout when `None`), and the HTML page to `html` when asked.
pub fn report(
    trace: &Path,
    json: bool,
    opts: &Options,
    dest: Option<Dest>,
    html: Option<&Path>,
    ended: Ended,
) -> Result<(), Error> {
    report_view(trace, json, opts, dest, html, Some(ended), View::Answer)
}

/// [`report`] with the sections `view` asks for, of a run `vmshim run` ended or (`ended` None)
/// of one this lists now. Every process of the run is analysed once: its row of the process
/// table, and its section when one is shown.
pub fn report_view(
    trace: &Path,
    json: bool,
    opts: &Options,
    dest: Option<Dest>,
    html: Option<&Path>,
    ended: Option<Ended>,
    view: View,
) -> Result<(), Error> {
    let (listed, fin) = match ended {
        Some(Ended { run, fin }) => (Some(run), fin),
        None => (None, None),
    };
    let wanted_of = |run: &tree::Run| match view {
        View::Answer | View::Tree => Ok(run.chosen),
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
        }),
    };
    let image = match view {
        View::Pid(_, Some(n)) => Some(n),
        _ => None,
    };
    let tree_view = matches!(view, View::Tree);
    let render_section = |a: &Analysis| {
        if json {
            Section::Json(Box::new(render::json::report(a, opts.top)))
        } else {
            Section::Text(render::text::text(a, opts))
        }
    };
    // What the trace's file could not take is the chosen process's.
    let fin = std::sync::Mutex::new(fin);
    let own_fin = |run: &tree::Run, p: usize| {
        if p == run.chosen { fin.lock().ok().and_then(|mut f| f.take()) } else { None }
    };
    let analysed = analyse_run(
        trace,
        listed,
        // Another process's stacks may need other files than the given trace's.
        !matches!(view, View::Pid(..)),
        wanted_of,
        |run, p| {
            let img = analyze::answer(run, p, own_fin(run, p)).map_err(|e| e.to_string())?;
            let row = analyze::processes::row(run, p, &img);
            let section = tree_view.then(|| render_section(&Analysis::new(img, vec![])));
            Ok((row, section))
        },
        // The wanted process: its section is what the reader waits for, and naming its stacks
        // (libc's DWARF: a third of the report of a short process) overlaps the other analyses.
        |run, wanted| -> Result<_, Error> {
            let img = analyze::answer(run, wanted, own_fin(run, wanted))?;
            let row = analyze::processes::row(run, wanted, &img);
            let a = Analysis::new(img, vec![]);
            for g in a.top_stacks.iter().take(opts.top) {
                a.frames(&g.stack);
            }
            let section = tree_view.then(|| render_section(&a));
            Ok((row, section, a))
        },
    )?;
    let Some(Analysed { run, wanted, others: done, here: wanted_done }) = analysed else {
        // No start record: loading says why.
        analyze::of_image_alone(trace, fin.into_inner().ok().flatten())?;
        return Err(Error(2, format!("{}: no start record", trace.display())));
    };
    let (wanted_row, wanted_section, wanted_analysis) = wanted_done?;
    let mut rows = Vec::with_capacity(run.processes.len());
    // --tree: every section, in tree order.
    let mut tree_sections: Vec<String> = Vec::new();
    let mut tree_json: Vec<render::schema::Report> = Vec::new();
    let mut wanted_parts = Some((wanted_row, wanted_section));
    for (p, result) in done.into_iter().enumerate() {
        let (row, section) = match result {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                eprintln!("vmshim: warning: process {} left out: {e}", run.processes[p].pid);
                continue;
            }
            None => match wanted_parts.take() {
                Some(parts) if p == wanted => parts,
                _ => continue,
            },
        };
        rows.push(row);
        match section {
            Some(Section::Json(r)) => tree_json.push(*r),
            Some(Section::Text(t)) => tree_sections.push(t),
            None => {}
        }
    }
    let mut main = match image {
        Some(n) => {
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
        None => wanted_analysis,
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
