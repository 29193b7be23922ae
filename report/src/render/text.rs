//! The text report for people: the heading, categories, Go purposes, threads, arenas, call
//! stacks, the process table, advice, DNS and what stayed unattributed, in that order. It only
//! arranges what the analysis found ([`crate::analyze::Analysis`]).

use crate::analyze::Analysis;
use crate::analyze::Untraced;
use crate::analyze::attribute::{Attributed, Category};
use crate::analyze::processes::Row;
use crate::load::read::Recording;
use crate::render::Options;
use crate::symbolize::Frame;
use std::fmt::Write;

/// Sizes in the text report's unit: KiB, or bytes with `--bytes` (`Options::exact_bytes`).
#[derive(Clone, Copy)]
pub struct Sizes(pub bool);

impl Sizes {
    /// The unit [`Sizes::kib`] prints in.
    pub fn unit(self) -> &'static str {
        if self.0 { "B" } else { "KiB" }
    }

    /// A size in the unit, digits grouped.
    pub fn kib(self, b: u64) -> String {
        let k = if self.0 { b } else { b / 1024 };
        let s = k.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    }
}

pub fn arena_name(id: Option<usize>) -> String {
    id.map_or("main".to_string(), |n| format!("#{n}"))
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 * 100.0 / whole as f64 }
}

/// One frame of a call stack: its function (or module+offset), file and line, module.
fn frame_line(a: &Analysis, f: &Frame) -> String {
    let module = f.module.as_deref().map(|m| m.rsplit('/').next().unwrap_or(m)).unwrap_or("?");
    let mut s = match (&f.function, a.module_base(f.addr)) {
        (Some(name), _) => name.clone(),
        // Unnamed: the address as an offset into its file's address layout (what addr2line takes).
        (None, Some(base)) => format!("{module}+{:#x}", f.addr.wrapping_sub(base)),
        (None, None) => format!("{:#x}", f.addr),
    };
    if let (Some(file), Some(line)) = (&f.file, f.line) {
        let _ = write!(s, " ({}:{line})", file.rsplit('/').next().unwrap_or(file));
    }
    let _ = write!(s, "  [{module}]");
    s
}

pub fn process_line(rec: &Recording) -> (u32, String, String) {
    let s = rec.start.as_ref();
    let pid = s.map_or(0, |s| s.pid);
    let cmd = s
        .map(|s| s.argv.join(" "))
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| s.map(|s| s.exe.clone()).unwrap_or_default());
    let exit = rec.exit.as_ref().map_or("not observed".to_string(), |e| e.how.clone());
    (pid, cmd, exit)
}

pub fn text(a: &Analysis, opts: &Options) -> String {
    let k = Sizes(opts.exact_bytes);
    let u = k.unit();
    let (rec, attr) = (&a.rec, &a.attr);
    let mut o = String::new();
    let (pid, cmd, exit) = process_line(rec);
    let vsz = attr.final_bytes;
    let _ = writeln!(o, "vmshim: pid {pid}  {cmd}  ({exit})");
    context_lines(&mut o, a, opts);
    let rss = match (attr.rss_bytes, attr.vmshim_rss_bytes) {
        (Some(r), Some(own)) => format!("{} {u} (vmshim's own {} {u})", k.kib(r), k.kib(own)),
        (Some(r), None) if rec.final_statm_rss.is_some() => {
            format!("{} {u} (statm's total: it recorded nothing, so smaps was not read)", k.kib(r))
        }
        (Some(r), None) => format!("{} {u}", k.kib(r)),
        (None, _) => "unknown".to_string(),
    };
    let _ = writeln!(
        o,
        "  VSZ {} {u}   RSS {}   threads {}   peak VSZ {} {u}",
        k.kib(vsz),
        rss,
        attr.threads.len(),
        k.kib(attr.peak_bytes)
    );
    let unattributed = a.unexplained_bytes;
    let when = if a.context.live { "now" } else { "at exit" };
    match attr.kernel_final_bytes {
        Some(kernel) => {
            let _ = writeln!(
                o,
                "  kernel VSZ {when} {} {u}; vmshim accounts for {} {u} ({:.1}%)",
                k.kib(kernel),
                k.kib(kernel.saturating_sub(unattributed)),
                pct(kernel.saturating_sub(unattributed), kernel)
            );
        }
        None => {
            // `vmshim run` writes the exit record; without it the trace was recorded alone.
            let why = if rec.exit.is_some() {
                "vmshim run did not hold the target at its exit"
            } else {
                "run under `vmshim run` for it"
            };
            let _ =
                writeln!(o, "  kernel VSZ at exit not captured ({why}); replayed from the recorded calls");
            // Under the exit watcher a process that records nothing reads no start-up map; one
            // that then leaves unseen (killed by a signal) has no map at all.
            if rec.initial_maps.is_empty() {
                let _ = writeln!(
                    o,
                    "  its map was never read: it made no recorded call (the start-up map waits for \
                     one under the exit watcher) and its exit was not seen; only the shim's own \
                     mappings are known"
                );
            }
        }
    }
    let lost = if rec.unresolved_stacks > 0 {
        format!(", {} calls whose stack record was lost", rec.unresolved_stacks)
    } else {
        String::new()
    };
    if a.context.live {
        let _ = writeln!(
            o,
            "  no calls recorded: each region's category rests on the evidence read from the process"
        );
    } else {
        let _ = writeln!(
            o,
            "  events: {} recorded, {} dropped, {} torn{lost}",
            rec.recorded, rec.dropped, rec.torn
        );
    }
    for (lib, fs) in &a.shadowed {
        let _ = writeln!(
            o,
            "  not seen: calls to {} went to {lib}, which comes before libvmshim.so in the loader's order (put libvmshim.so first in LD_PRELOAD)",
            fs.join(", ")
        );
    }
    // Issue 15: which recorder wrote the trace, and whose cost the line after is.
    let recorder = crate::launch::recorder::name_of(rec);
    if let Some(name) = recorder {
        let _ = writeln!(o, "  recorder: {name}");
    }
    if rec.timed > 0 {
        let _ = writeln!(
            o,
            "  {} cost: {:.2} ms recording {} calls ({} ns each, stacks included)",
            if recorder.is_some() { "recorder" } else { "shim" },
            rec.recording_ns as f64 / 1e6,
            rec.timed,
            rec.recording_ns / rec.timed
        );
    }

    // The columns widen for the long names and the terabytes of a sanitizer's shadow.
    let rows: Vec<_> =
        a.categories.iter().map(|&(c, b, n)| (c, (b, n))).filter(|(_, (_, n))| *n > 0).collect();
    let name_w = rows.iter().map(|(c, _)| c.name().len()).max().unwrap_or(0).max(14);
    let num_w = rows.iter().map(|(_, (b, _))| k.kib(*b).len()).max().unwrap_or(0).max(12);
    let _ = writeln!(o, "\nBy category{:w$}{u}       %  regions", "", w = name_w + num_w - 12);
    for (c, (b, n)) in rows {
        let _ = writeln!(o, "  {:<name_w$} {:>num_w$} {:>6.1}% {:>8}", c.name(), k.kib(b), pct(b, vsz), n);
    }

    let go = &a.go_runtime;
    if !go.is_empty() {
        let w = go.iter().map(|g| g.purpose.len()).max().unwrap_or(0).max(24);
        let rw = format!("read-write {u}");
        let _ =
            writeln!(o, "\n{:<w2$}{u:>12} {rw:>15} {:>8}", "Go runtime by purpose", "regions", w2 = w + 3);
        for g in go {
            let _ = writeln!(
                o,
                "  {:<w$} {:>12} {:>15} {:>8}",
                g.purpose,
                k.kib(g.bytes),
                k.kib(g.rw_bytes),
                g.regions
            );
        }
    }
    if let Some(g) = &a.context.goroutines {
        goroutines(&mut o, a, g, k);
    }

    let _ = writeln!(
        o,
        "\nBy thread      name             creator   stack {u}   arena {u}  reserved {u}  arenas used"
    );
    for t in &attr.threads {
        let _ = writeln!(
            o,
            "  {:<12} {:<16} {:>7} {:>11} {:>11} {:>13}  {}",
            t.tid,
            t.name.as_deref().unwrap_or("-"),
            t.creator_tid.map_or("-".to_string(), |c| c.to_string()),
            k.kib(t.stack_bytes),
            k.kib(t.arena_bytes),
            k.kib(t.reserved_bytes),
            t.arenas.iter().map(|a| arena_name(*a)).collect::<Vec<_>>().join(",")
        );
    }

    if !attr.arenas.is_empty() {
        let _ = writeln!(o, "\nMalloc arenas");
        for a in &attr.arenas {
            let users: Vec<String> = a.tids.iter().map(u32::to_string).collect();
            let size = if a.id.is_some() {
                format!("{} heap(s), {} {u} reserved", a.heaps, k.kib(a.bytes))
            } else {
                "the brk heap (see brk_heap)".to_string()
            };
            let shared = if a.tids.len() > 1 { " (shared)" } else { "" };
            let _ = writeln!(
                o,
                "  {:<6} created by {:<8} used by {}{shared}: {size}",
                arena_name(a.id),
                // 0: not known (`vmshim explain` sees arenas, not who made them).
                if a.creator == 0 { "?".to_string() } else { a.creator.to_string() },
                users.join(",")
            );
        }
    }

    let _ = writeln!(o, "\nTop call stacks by reserved bytes");
    for (n, g) in a.top_stacks.iter().take(opts.top).enumerate() {
        let tids: Vec<String> = g.tids.iter().map(u32::to_string).collect();
        let whose = match g.inherited {
            Some(i) => format!("inherited from pid {}, thread {}", i.pid, tids.join(",")),
            None => format!("thread {}", tids.join(",")),
        };
        let _ = writeln!(
            o,
            "  #{} {} {} {u} ({:.1}%) in {} region(s), {whose}",
            n + 1,
            g.category.name(),
            k.kib(g.bytes),
            pct(g.bytes, vsz),
            g.regions,
        );
        let _ = writeln!(o, "      {}()", g.cause);
        for f in a.frames(&g.stack) {
            let _ = writeln!(o, "      {}", frame_line(a, &f));
        }
    }

    if a.processes.len() > 1 {
        process_table(&mut o, &a.processes, &a.run_trace, k);
    }

    if !a.advice.is_empty() {
        let _ = writeln!(o, "\nWhat would change it");
        for x in &a.advice {
            let _ = writeln!(o, "  - {}\n      how: {}", x.text, x.how);
        }
    }

    let dns = &a.dns;
    let _ = writeln!(o, "\nDNS: {}", dns.verdict);
    for l in &dns.lines {
        let _ = writeln!(o, "  {l}");
    }

    let un: Vec<&Attributed> = attr.regions.iter().filter(|r| r.category == Category::Unattributed).collect();
    if !un.is_empty() {
        let bytes = a.bytes_of(Category::Unattributed).0;
        let _ = writeln!(o, "\nUnattributed regions ({} {u}, {:.2}% of VSZ)", k.kib(bytes), pct(bytes, vsz));
        for r in un {
            let from = r.inherited.map_or(String::new(), |i| format!("  (inherited from pid {})", i.pid));
            let _ = writeln!(
                o,
                "  {:#x}-{:#x} {} {:>10} {u} {}{from}",
                r.start,
                r.end,
                r.perms,
                k.kib(r.size()),
                r.path
            );
        }
    }
    o
}

/// What a final image without the shim means, in words: why the shim is not in it.
pub fn untraced_words(u: &Untraced) -> String {
    let why = match u.statically_linked {
        Some(true) => {
            "is statically linked: the shim cannot load into it (LD_PRELOAD needs the dynamic loader)"
        }
        Some(false) => {
            "has no shim in it although it is dynamically linked: LD_PRELOAD was ignored or removed (a setuid program, or one that cleared its environment)"
        }
        None => {
            "has no shim in it (statically linked, or LD_PRELOAD was ignored; the file cannot be read now)"
        }
    };
    format!("{} {why}, so nothing it did was recorded", u.exe)
}

/// Said after [`untraced_words`] for an image without the shim: the shim's run cannot follow
/// it, the syscall recorder does (it traces every image of the tree from outside).
pub const STATIC_RECORDER_HINT: &str = "the syscall recorder records it (`vmshim run --syscalls`, into traces of its own named *.syscalls: it follows every image of the tree)";

/// The lines under the heading that say where the image stands in its process (each starts
/// with two spaces; the HTML page shows them too).
pub fn context_lines(o: &mut String, a: &Analysis, opts: &Options) {
    let (c, attr) = (&a.context, &a.attr);
    let k = Sizes(opts.exact_bytes);
    let u = k.unit();
    if c.images.len() > 1 {
        let chain: Vec<String> = c
            .images
            .iter()
            .enumerate()
            .map(|(i, im)| format!("{}. {} ({})", i + 1, im.exe, im.ended))
            .collect();
        let _ = writeln!(o, "  image {} of {}: {}", c.image + 1, c.images.len(), chain.join(", "));
    }
    if let Some(f) = &c.fork_of {
        let inherited = a.inherited_bytes;
        let whose = if f.parent_traced {
            format!("fork child of pid {} (thread {})", f.ppid, f.tid)
        } else {
            format!("fork child of pid {}: inherited (parent not traced)", f.ppid)
        };
        let _ = writeln!(
            o,
            "  {whose}: {} {u} ({:.1}%) inherited at the fork, {} {u} its own since",
            k.kib(inherited),
            pct(inherited, attr.final_bytes),
            k.kib(attr.final_bytes.saturating_sub(inherited))
        );
    }
    if let Some(un) = &c.untraced_final {
        let this_one = c.image + 1 == c.images.len();
        let _ = match (this_one, un.map_known) {
            (true, _) => writeln!(
                o,
                "  final image: {}, and only what the kernel's map at exit proves (images, heap, stacks) is explained; {STATIC_RECORDER_HINT}",
                untraced_words(un)
            ),
            (false, true) => writeln!(
                o,
                "  then exec'd: {} (its map at exit is its own section: `--image {}`); this image is replayed from its calls; {STATIC_RECORDER_HINT}",
                untraced_words(un),
                c.images.len()
            ),
            (false, false) => writeln!(
                o,
                "  then exec'd: {}; the map below is this image's, at the exec; {STATIC_RECORDER_HINT}",
                untraced_words(un)
            ),
        };
    }
}

/// The process table alone (for `--tree`, ahead of the sections).
pub fn table(a: &Analysis, opts: &Options) -> String {
    let mut o = String::new();
    process_table(&mut o, &a.processes, &a.run_trace, Sizes(opts.exact_bytes));
    o.trim_start().to_string()
}

/// The run's processes, one line each, in tree order.
fn process_table(o: &mut String, rows: &[Row], trace: &str, k: Sizes) {
    let u = k.unit();
    let _ = writeln!(
        o,
        "\nProcesses ({}; `vmshim report {trace} --pid N` for one, `--tree` for all)",
        rows.len()
    );
    let _ = writeln!(
        o,
        "  {:<12} {:>8} {:>13} {:>11} {:>7} {:>13} {:>13} {:>9}  {:<22} command",
        "pid",
        "ppid",
        format!("VSZ {u}"),
        format!("RSS {u}"),
        "threads",
        format!("inherited {u}"),
        format!("own {u}"),
        "explained",
        "ended"
    );
    let mut replayed = false;
    for r in rows {
        let pid = format!("{}{}", "  ".repeat(r.depth.min(4)), r.pid);
        let mark = if r.vsz_from_kernel { "" } else { "*" };
        replayed |= !r.vsz_from_kernel;
        let inherited = match r.fork_of {
            Some(f) if !f.parent_traced => format!("{} ?", k.kib(r.inherited_bytes)),
            _ => k.kib(r.inherited_bytes),
        };
        let _ = writeln!(
            o,
            "  {pid:<12} {:>8} {:>13} {:>11} {:>7} {:>13} {:>13} {:>8.1}%  {:<22} {}",
            r.ppid,
            format!("{}{mark}", k.kib(r.vsz_bytes)),
            r.rss_bytes.map_or("-".to_string(), |b| k.kib(b)),
            r.threads,
            inherited,
            k.kib(r.own_bytes),
            r.explained_fraction * 100.0,
            r.ended,
            r.command
        );
    }
    if replayed {
        let _ = writeln!(
            o,
            "  * replayed from the trace: the kernel's map at exit was not captured (a lower bound)"
        );
    }
    if rows.iter().any(|r| r.fork_of.is_some_and(|f| !f.parent_traced)) {
        let _ = writeln!(
            o,
            "  ? inherited from a parent that left no trace: where it came from is known, not why"
        );
    }
}

/// Section headings in bold, for a terminal (`to_terminal`) when colour is not switched off.
pub fn decorate(text: String, to_terminal: bool, opts: &Options) -> String {
    if !to_terminal || !opts.color {
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

/// `vmshim explain` of a Go program: its goroutines, grouped by what they are doing now.
fn goroutines(o: &mut String, a: &Analysis, g: &crate::analyze::Goroutines, k: Sizes) {
    if !g.read {
        let _ = writeln!(o, "\ngoroutines: not read ({})", g.how);
        return;
    }
    let u = k.unit();
    let _ = writeln!(
        o,
        "\nGoroutines: {} ({} of them the runtime's own) with {} {u} of stacks, {} dead keeping {} {u}; of these {} {u}, {} {u} in the Go heap",
        g.live,
        g.system,
        k.kib(g.stack_bytes),
        g.dead,
        k.kib(g.dead_stack_bytes),
        k.kib(g.stack_bytes + g.dead_stack_bytes),
        k.kib(g.in_go_heap_bytes)
    );
    let _ = writeln!(o, "  ({})", g.how);
    for x in g.groups.iter().take(20) {
        let who = if x.system { ", the runtime's" } else { "" };
        let _ = writeln!(o, "  {:>7}  {}{who}, started at {}", x.count, x.status, x.start);
        for f in a.frames(&x.stack).iter().take(6) {
            let _ = writeln!(o, "             {}", frame_line(a, f));
        }
    }
    if g.groups.len() > 20 {
        let _ = writeln!(o, "  ... {} more groups (--json lists every one)", g.groups.len() - 20);
    }
}
