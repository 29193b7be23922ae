//! Rendering an attribution: the text report for people and the JSON report for programs.
//! Nothing here computes a figure; it only arranges what `attribute` found.

use crate::analyze::{Context, Row, Untraced};
use crate::analyze::attribute::{Attributed, Attribution, Category, Inherited};
use crate::load::read::Recording;
use crate::symbolize::{Frame, Symbolizer};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fmt::Write;

/// Everything a renderer needs.
pub struct Input<'a> {
    pub rec: &'a Recording,
    pub attr: &'a Attribution,
    pub top: usize,
    /// Where the image stands in its process (exec'd images, a fork, an untraced final image).
    pub context: &'a Context,
    /// Every process of the run, in tree order (the text shows them for more than one).
    pub processes: &'a [Row],
    /// How to ask for another process's section (`vmshim report T`).
    pub trace: &'a str,
}

/// `--bytes`: exact byte counts instead of KiB in the text report.
pub static EXACT_BYTES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn exact() -> bool {
    EXACT_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}

/// The unit `kib` prints in.
fn unit() -> &'static str {
    if exact() { "B" } else { "KiB" }
}

/// A size in the text report's unit (KiB, or bytes with `--bytes`), digits grouped.
fn kib(b: u64) -> String {
    let k = if exact() { b } else { b / 1024 };
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

fn arena_name(id: Option<usize>) -> String {
    id.map_or("main".to_string(), |n| format!("#{n}"))
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 * 100.0 / whole as f64 }
}

/// A call stack's total: the regions it made.
pub struct StackGroup {
    pub category: Category,
    /// The function the program called there (`mmap`, `pthread_create`, `free`, ...).
    pub cause: &'static str,
    pub stack: Vec<u64>,
    pub bytes: u64,
    pub regions: usize,
    pub tids: Vec<u32>,
    /// Set for what a fork child inherited (the stack is the parent's).
    pub inherited: Option<Inherited>,
}

/// Regions grouped by (category, call stack), largest first.
pub fn top_stacks(attr: &Attribution) -> Vec<StackGroup> {
    // Keyed by what the regions have in common, the pid they were inherited from included.
    type Key<'a> = (Category, &'static str, &'a [u64], Option<u32>);
    let mut groups: HashMap<Key, StackGroup> = HashMap::new();
    for r in attr.regions.iter().filter(|r| !r.stack.is_empty()) {
        let key = (r.category, r.cause, r.stack.as_slice(), r.inherited.map(|i| i.pid));
        let g = groups.entry(key).or_insert_with(|| StackGroup {
            category: r.category,
            cause: r.cause,
            stack: r.stack.clone(),
            bytes: 0,
            regions: 0,
            tids: vec![],
            inherited: r.inherited,
        });
        g.bytes += r.size();
        g.regions += 1;
        if let Some(t) = r.tid
            && !g.tids.contains(&t)
        {
            g.tids.push(t);
        }
    }
    let mut v: Vec<StackGroup> = groups.into_values().collect();
    for g in &mut v {
        g.tids.sort_unstable();
    }
    // Ties broken by what stays the same from run to run (threads, not addresses) first.
    v.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then(a.category.name().cmp(b.category.name()))
            .then(a.tids.cmp(&b.tids))
            .then(a.stack.cmp(&b.stack))
    });
    v
}

/// Symbolized frames of a stack; the innermost frame is a return address too (the hook's caller).
fn frames(sym: &mut Symbolizer, stack: &[u64]) -> Vec<Frame> {
    stack.iter().flat_map(|&a| sym.symbolize(a, true)).collect()
}

fn frame_line(sym: &Symbolizer, f: &Frame) -> String {
    let module = f.module.as_deref().map(|m| m.rsplit('/').next().unwrap_or(m)).unwrap_or("?");
    let mut s = match (&f.function, sym.module_of(f.addr)) {
        (Some(name), _) => name.clone(),
        // Unnamed: the address as an offset into its file's address layout (what addr2line takes).
        (None, Some(m)) => format!("{module}+{:#x}", f.addr.wrapping_sub(m.base)),
        (None, None) => format!("{:#x}", f.addr),
    };
    if let (Some(file), Some(line)) = (&f.file, f.line) {
        let _ = write!(s, " ({}:{line})", file.rsplit('/').next().unwrap_or(file));
    }
    let _ = write!(s, "  [{module}]");
    s
}

fn process_line(rec: &Recording) -> (u32, String, String) {
    let s = rec.start.as_ref();
    let pid = s.map_or(0, |s| s.pid);
    let cmd = s
        .map(|s| s.argv.join(" "))
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| s.map(|s| s.exe.clone()).unwrap_or_default());
    let exit = rec.exit.as_ref().map_or("not observed".to_string(), |e| e.how.clone());
    (pid, cmd, exit)
}

pub fn text(inp: &Input, sym: &mut Symbolizer) -> String {
    let u = unit();
    let (rec, attr) = (inp.rec, inp.attr);
    let mut o = String::new();
    let (pid, cmd, exit) = process_line(rec);
    let vsz = attr.final_bytes;
    let _ = writeln!(o, "vmshim: pid {pid}  {cmd}  ({exit})");
    context_lines(&mut o, inp.context, attr);
    let rss = match (attr.rss_bytes, attr.vmshim_rss_bytes) {
        (Some(r), Some(own)) => format!("{} {u} (vmshim's own {} {u})", kib(r), kib(own)),
        (Some(r), None) => format!("{} {u}", kib(r)),
        (None, _) => "unknown".to_string(),
    };
    let _ = writeln!(
        o,
        "  VSZ {} {u}   RSS {}   threads {}   peak VSZ {} {u}",
        kib(vsz),
        rss,
        attr.threads.len(),
        kib(attr.peak_bytes)
    );
    let unattributed = attr.unexplained_bytes();
    let when = if inp.context.live { "now" } else { "at exit" };
    match attr.kernel_final_bytes {
        Some(k) => {
            let _ = writeln!(
                o,
                "  kernel VSZ {when} {} {u}; vmshim accounts for {} {u} ({:.1}%)",
                kib(k),
                kib(k.saturating_sub(unattributed)),
                pct(k.saturating_sub(unattributed), k)
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
        }
    }
    let lost = if rec.unresolved_stacks > 0 {
        format!(", {} calls whose stack record was lost", rec.unresolved_stacks)
    } else {
        String::new()
    };
    if inp.context.live {
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
    for (lib, fs) in rec.shadowed() {
        let _ = writeln!(
            o,
            "  not seen: calls to {} went to {lib}, which comes before libvmshim.so in the loader's order (put libvmshim.so first in LD_PRELOAD)",
            fs.join(", ")
        );
    }
    if rec.timed > 0 {
        let _ = writeln!(
            o,
            "  shim cost: {:.2} ms recording {} calls ({} ns each, stacks included)",
            rec.recording_ns as f64 / 1e6,
            rec.timed,
            rec.recording_ns / rec.timed
        );
    }

    // The columns widen for the long names and the terabytes of a sanitizer's shadow.
    let rows: Vec<_> =
        Category::ALL.iter().map(|&c| (c, attr.bytes_of(c))).filter(|(_, (_, n))| *n > 0).collect();
    let name_w = rows.iter().map(|(c, _)| c.name().len()).max().unwrap_or(0).max(14);
    let num_w = rows.iter().map(|(_, (b, _))| kib(*b).len()).max().unwrap_or(0).max(12);
    let _ = writeln!(o, "\nBy category{:w$}{u}       %  regions", "", w = name_w + num_w - 12);
    for (c, (b, n)) in rows {
        let _ = writeln!(o, "  {:<name_w$} {:>num_w$} {:>6.1}% {:>8}", c.name(), kib(b), pct(b, vsz), n);
    }

    let go = attr.go_purposes();
    if !go.is_empty() {
        let w = go.iter().map(|g| g.purpose.len()).max().unwrap_or(0).max(24);
        let rw = format!("read-write {u}");
        let _ =
            writeln!(o, "\n{:<w2$}{u:>12} {rw:>15} {:>8}", "Go runtime by purpose", "regions", w2 = w + 3);
        for g in &go {
            let _ = writeln!(
                o,
                "  {:<w$} {:>12} {:>15} {:>8}",
                g.purpose,
                kib(g.bytes),
                kib(g.rw_bytes),
                g.regions
            );
        }
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
            kib(t.stack_bytes),
            kib(t.arena_bytes),
            kib(t.reserved_bytes),
            t.arenas.iter().map(|a| arena_name(*a)).collect::<Vec<_>>().join(",")
        );
    }

    if !attr.arenas.is_empty() {
        let _ = writeln!(o, "\nMalloc arenas");
        for a in &attr.arenas {
            let users: Vec<String> = a.tids.iter().map(u32::to_string).collect();
            let size = if a.id.is_some() {
                format!("{} heap(s), {} {u} reserved", a.heaps, kib(a.bytes))
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
    for (n, g) in top_stacks(attr).iter().take(inp.top).enumerate() {
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
            kib(g.bytes),
            pct(g.bytes, vsz),
            g.regions,
        );
        let _ = writeln!(o, "      {}()", g.cause);
        for f in frames(sym, &g.stack) {
            let _ = writeln!(o, "      {}", frame_line(sym, &f));
        }
    }

    if inp.processes.len() > 1 {
        process_table(&mut o, inp.processes, inp.trace);
    }

    let advice = crate::analyze::advice::advise(attr);
    if !advice.is_empty() {
        let _ = writeln!(o, "\nWhat would change it");
        for a in &advice {
            let _ = writeln!(o, "  - {}\n      how: {}", a.text, a.how);
        }
    }

    let dns = crate::analyze::dns::analyse(rec, sym);
    let _ = writeln!(o, "\nDNS: {}", dns.verdict);
    for l in &dns.lines {
        let _ = writeln!(o, "  {l}");
    }

    let un: Vec<&Attributed> = attr.regions.iter().filter(|r| r.category == Category::Unattributed).collect();
    if !un.is_empty() {
        let bytes = attr.bytes_of(Category::Unattributed).0;
        let _ = writeln!(o, "\nUnattributed regions ({} {u}, {:.2}% of VSZ)", kib(bytes), pct(bytes, vsz));
        for r in un {
            let from = r.inherited.map_or(String::new(), |i| format!("  (inherited from pid {})", i.pid));
            let _ = writeln!(
                o,
                "  {:#x}-{:#x} {} {:>10} {u} {}{from}",
                r.start,
                r.end,
                r.perms,
                kib(r.size()),
                r.path
            );
        }
    }
    o
}

/// What a final image without the shim means, in words: why the shim is not in it.
fn untraced_words(u: &Untraced) -> String {
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

/// Said after [`untraced_words`] for a static image.
const NO_STATIC_RECORDER: &str = "a recorder for static programs (issue 15) does not exist yet";

/// The lines under the heading that say where the image stands in its process (each starts
/// with two spaces; the HTML page shows them too).
pub fn context_lines(o: &mut String, c: &Context, attr: &Attribution) {
    let u = unit();
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
        let inherited = attr.inherited_bytes();
        let whose = if f.parent_traced {
            format!("fork child of pid {} (thread {})", f.ppid, f.tid)
        } else {
            format!("fork child of pid {}: inherited (parent not traced)", f.ppid)
        };
        let _ = writeln!(
            o,
            "  {whose}: {} {u} ({:.1}%) inherited at the fork, {} {u} its own since",
            kib(inherited),
            pct(inherited, attr.final_bytes),
            kib(attr.final_bytes.saturating_sub(inherited))
        );
    }
    if let Some(un) = &c.untraced_final {
        let this_one = c.image + 1 == c.images.len();
        let _ = match (this_one, un.map_known) {
            (true, _) => writeln!(
                o,
                "  final image: {}, and only what the kernel's map at exit proves (images, heap, stacks) is explained; {NO_STATIC_RECORDER}",
                untraced_words(un)
            ),
            (false, true) => writeln!(
                o,
                "  then exec'd: {} (its map at exit is its own section: `--image {}`); this image is replayed from its calls; {NO_STATIC_RECORDER}",
                untraced_words(un),
                c.images.len()
            ),
            (false, false) => writeln!(
                o,
                "  then exec'd: {}; the map below is this image's, at the exec; {NO_STATIC_RECORDER}",
                untraced_words(un)
            ),
        };
    }
}

/// The process table alone (for `--tree`, ahead of the sections).
pub fn table(inp: &Input) -> String {
    let mut o = String::new();
    process_table(&mut o, inp.processes, inp.trace);
    o.trim_start().to_string()
}

/// The run's processes, one line each, in tree order.
fn process_table(o: &mut String, rows: &[Row], trace: &str) {
    let u = unit();
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
            Some(f) if !f.parent_traced => format!("{} ?", kib(r.inherited_bytes)),
            _ => kib(r.inherited_bytes),
        };
        let _ = writeln!(
            o,
            "  {pid:<12} {:>8} {:>13} {:>11} {:>7} {:>13} {:>13} {:>8.1}%  {:<22} {}",
            r.ppid,
            format!("{}{mark}", kib(r.vsz_bytes)),
            r.rss_bytes.map_or("-".to_string(), kib),
            r.threads,
            inherited,
            kib(r.own_bytes),
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

fn frames_json(sym: &mut Symbolizer, stack: &[u64]) -> Value {
    Value::Array(
        frames(sym, stack).into_iter().map(|f| serde_json::to_value(f).unwrap_or(Value::Null)).collect(),
    )
}

pub fn json(inp: &Input, sym: &mut Symbolizer) -> Value {
    let (rec, attr) = (inp.rec, inp.attr);
    let (pid, _, exit) = process_line(rec);
    let s = rec.start.as_ref();
    let categories: Vec<Value> = Category::ALL
        .iter()
        .map(|&c| (c, attr.bytes_of(c)))
        .filter(|(_, (_, n))| *n > 0)
        .map(|(c, (b, n))| json!({"category": c.name(), "bytes": b, "regions": n}))
        .collect();
    let threads: Vec<Value> = attr
        .threads
        .iter()
        .map(|t| {
            json!({"tid": t.tid, "name": t.name, "creator_tid": t.creator_tid, "stack_bytes": t.stack_bytes,
                   "arena_bytes": t.arena_bytes, "reserved_bytes": t.reserved_bytes,
                   "arenas": t.arenas.iter().map(|a| arena_name(*a)).collect::<Vec<_>>()})
        })
        .collect();
    let regions: Vec<Value> = attr
        .regions
        .iter()
        .map(|r| {
            json!({"start": r.start, "end": r.end, "prot": r.perms, "path": r.path, "category": r.category.name(), "purpose": r.purpose,
                   "tid": r.tid, "creator_tid": r.creator_tid, "cause": r.cause, "stack": frames_json(sym, &r.stack),
                   "inherited": r.inherited.map(inherited_json), "evidence": r.evidence})
        })
        .collect();
    let stacks: Vec<Value> = top_stacks(attr)
        .iter()
        .take(inp.top)
        .map(|g| {
            json!({"category": g.category.name(), "cause": g.cause, "bytes": g.bytes, "regions": g.regions, "tids": g.tids,
                   "stack": frames_json(sym, &g.stack), "inherited": g.inherited.map(inherited_json)})
        })
        .collect();
    json!({
        "schema": "vmshim-report/1",
        "process": {"pid": pid, "exe": s.map(|s| s.exe.clone()), "argv": s.map(|s| s.argv.clone()), "exit": exit,
                    "run_id": s.map(|s| format!("{:016x}", s.run_id)),
                    "image": inp.context.image + 1,
                    "images": inp.context.images.iter().map(|i| json!({"exe": i.exe,
                        "trace": i.trace.as_ref().map(|t| t.display().to_string()), "ended": i.ended})).collect::<Vec<_>>(),
                    "fork_of": inp.context.fork_of.map(|f| json!({"ppid": f.ppid, "tid": f.tid, "parent_traced": f.parent_traced})),
                    "untraced_final": inp.context.untraced_final.as_ref().map(untraced_json),
                    "inherited_bytes": attr.inherited_bytes()},
        "vsz": {"final_bytes": attr.final_bytes, "peak_bytes": attr.peak_bytes, "kernel_final_bytes": attr.kernel_final_bytes},
        "rss_bytes": attr.rss_bytes,
        "vmshim_rss_bytes": attr.vmshim_rss_bytes,
        "attributed_fraction": attr.attributed_fraction(),
        "categories": categories,
        "go_runtime": attr.go_purposes().iter().map(|g| json!({"purpose": g.purpose, "bytes": g.bytes,
            "read_write_bytes": g.rw_bytes, "regions": g.regions})).collect::<Vec<_>>(),
        "threads": threads,
        "arenas": attr.arenas.iter().map(|a| json!({"arena": arena_name(a.id), "address": a.address,
            "creator_tid": a.creator, "tids": a.tids, "heaps": a.heaps, "bytes": a.bytes})).collect::<Vec<_>>(),
        "regions": regions,
        "top_stacks": stacks,
        "events": {"recorded": rec.recorded, "dropped": rec.dropped, "torn": rec.torn,
                   "unresolved_stacks": rec.unresolved_stacks,
                   "recording_ns": rec.recording_ns, "timed": rec.timed},
        "shadowed": rec.shadowed().iter().map(|(lib, fs)| json!({"library": lib, "functions": fs})).collect::<Vec<_>>(),
        "dns": crate::analyze::dns::analyse(rec, sym).json,
        "advice": crate::analyze::advice::advise(attr).iter().map(|a| json!({"text": a.text, "saves_bytes": a.saves_bytes, "how": a.how})).collect::<Vec<_>>(),
        "processes": inp.processes.iter().map(row_json).collect::<Vec<_>>(),
    })
}

fn inherited_json(i: Inherited) -> Value {
    json!({"pid": i.pid, "tid": i.tid, "parent_traced": i.parent_traced})
}

fn untraced_json(u: &Untraced) -> Value {
    json!({"exe": u.exe, "statically_linked": u.statically_linked, "map_known": u.map_known,
           "why": format!("{}; {NO_STATIC_RECORDER}", untraced_words(u))})
}

/// A process table row (the first six fields are those of earlier reports).
pub fn row_json(r: &Row) -> Value {
    json!({"pid": r.pid, "ppid": r.ppid, "exe": r.exe, "trace": r.trace.display().to_string(),
           "vsz_bytes": r.vsz_bytes, "events": r.events,
           "command": r.command, "depth": r.depth,
           "traces": r.traces.iter().map(|t| t.display().to_string()).collect::<Vec<_>>(),
           "images": r.images, "vsz_from_kernel": r.vsz_from_kernel, "rss_bytes": r.rss_bytes,
           "threads": r.threads, "ended": r.ended, "inherited_bytes": r.inherited_bytes,
           "own_bytes": r.own_bytes,
           "fork_of": r.fork_of.map(|f| json!({"ppid": f.ppid, "tid": f.tid, "parent_traced": f.parent_traced})),
           "explained_fraction": r.explained_fraction,
           "untraced_final": r.untraced_final.as_ref().map(untraced_json)})
}

/// The frames of a stack as folded-stack text: outermost first, `;`-separated, without the
/// separators the format reserves.
fn folded_frames(sym: &mut Symbolizer, stack: &[u64]) -> Vec<String> {
    let mut names: Vec<String> = frames(sym, stack)
        .iter()
        .map(|f| match &f.function {
            Some(n) => n.replace([';', ' '], "_"),
            None => format!("{:#x}", f.addr),
        })
        .collect();
    names.reverse();
    names
}

/// Folded stacks weighted by reserved bytes: `category;outer;...;inner;call bytes`. Regions
/// with no stack count under their category alone, so the total is the VSZ.
pub fn folded(attr: &Attribution, sym: &mut Symbolizer) -> String {
    let mut weights: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for r in &attr.regions {
        let mut key = vec![r.category.name().to_string()];
        if !r.stack.is_empty() {
            key.extend(folded_frames(sym, &r.stack));
            key.push(format!("{}()", r.cause));
        }
        *weights.entry(key.join(";")).or_insert(0) += r.size();
    }
    weights.into_iter().map(|(k, v)| format!("{k} {v}\n")).collect()
}

/// What changed from trace `a` to trace `b`.
pub fn diff(
    (ra, aa, sa): (&Recording, &Attribution, &mut Symbolizer),
    (rb, ab, sb): (&Recording, &Attribution, &mut Symbolizer),
    top: usize,
) -> String {
    let u = unit();
    let mut o = String::new();
    let name = |r: &Recording| {
        r.start.as_ref().map_or(String::new(), |s| format!("pid {} {}", s.pid, s.argv.join(" ")))
    };
    let signed = |d: i64| format!("{}{}", if d < 0 { "-" } else { "+" }, kib(d.unsigned_abs()));
    let _ = writeln!(o, "a: {}\nb: {}", name(ra), name(rb));
    let (va, vb) = (aa.final_bytes, ab.final_bytes);
    let _ = writeln!(o, "VSZ {} {u} -> {} {u} ({} {u})", kib(va), kib(vb), signed(vb as i64 - va as i64));
    let _ = writeln!(
        o,
        "threads {} -> {}, malloc arenas {} -> {}",
        aa.threads.len(),
        ab.threads.len(),
        aa.arenas.iter().filter(|x| x.id.is_some()).count(),
        ab.arenas.iter().filter(|x| x.id.is_some()).count()
    );
    let _ = writeln!(o, "\nBy category                 a {u}         b {u}        change");
    for c in Category::ALL {
        let (x, y) = (aa.bytes_of(c).0, ab.bytes_of(c).0);
        if x != 0 || y != 0 {
            let _ = writeln!(
                o,
                "  {:<14} {:>13} {:>13} {:>13}",
                c.name(),
                kib(x),
                kib(y),
                signed(y as i64 - x as i64)
            );
        }
    }
    // Stacks compared by their symbolized frames (addresses differ between runs).
    let by_stack = |attr: &Attribution, sym: &mut Symbolizer| {
        let mut m: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        for g in top_stacks(attr) {
            let key =
                format!("{} {}() {}", g.category.name(), g.cause, folded_frames(sym, &g.stack).join(";"));
            *m.entry(key).or_insert(0) += g.bytes;
        }
        m
    };
    let (ma, mb) = (by_stack(aa, sa), by_stack(ab, sb));
    let mut changes: Vec<(i64, &String)> = ma
        .keys()
        .chain(mb.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|k| (*mb.get(k).unwrap_or(&0) as i64 - *ma.get(k).unwrap_or(&0) as i64, k))
        .filter(|(d, _)| *d != 0)
        .collect();
    changes.sort_by_key(|(d, k)| (std::cmp::Reverse(d.unsigned_abs()), (*k).clone()));
    let _ = writeln!(o, "\nCall stacks that changed most ({u})");
    for (d, k) in changes.into_iter().take(top) {
        let (head, frames) = k.split_once(' ').map_or((k.as_str(), ""), |(h, f)| (h, f));
        let _ = writeln!(o, "  {:>12}  {head} {frames}", signed(d));
    }
    o
}
