//! `--html FILE`: one self-contained page (no network, no script, no external asset) that shows
//! the address space at a glance: the map drawn to scale by address (large gaps collapsed and
//! marked), regions coloured by category with their thread, size, permissions and call stack on
//! hover (SVG `<title>`), the category, thread and arena tables, a flame graph of reserved bytes
//! by call stack, VSZ over time with the peak marked, the DNS verdict and the advice.

use crate::analyze::Analysis;
use crate::analyze::attribute::Category;
use crate::render::Options;
use crate::render::svg;
use std::fmt::Write;

pub fn color(c: Category) -> &'static str {
    match c {
        Category::ThreadStack => "#4e79a7",
        Category::MallocArena => "#f28e2b",
        Category::MallocLarge => "#ffbe7d",
        Category::GoRuntime => "#59a14f",
        Category::AnonMmap => "#8cd17d",
        Category::Library => "#b6992d",
        Category::FileMmap => "#f1ce63",
        Category::BrkHeap => "#e15759",
        Category::MainStack => "#79706e",
        Category::Kernel => "#bab0ac",
        Category::SanitizerShadow => "#9c755f",
        Category::SanitizerAllocator => "#c9a58f",
        Category::Vmshim => "#d37295",
        Category::Inherited => "#76b7b2",
        Category::Unattributed => "#000000",
    }
}

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

pub fn size(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{b} B") } else { format!("{v:.1} {}", U[i]) }
}

/// The run's processes in tree order, one row each.
fn process_table(o: &mut String, rows: &[crate::analyze::processes::Row]) {
    let _ = write!(
        o,
        "<h2>Processes ({})</h2><table id=processes><tr><th>pid</th><th>ppid</th><th>VSZ</th><th>RSS</th><th>threads</th><th>inherited</th><th>own</th><th>explained</th><th>ended</th><th>command</th></tr>",
        rows.len()
    );
    for r in rows {
        let _ = write!(
            o,
            r#"<tr data-pid="{}"><td style="padding-left:{}px">{}</td><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}%</td><td>{}</td><td style="text-align:left">{}</td></tr>"#,
            r.pid,
            10 + 16 * r.depth.min(8),
            r.pid,
            r.ppid,
            size(r.vsz_bytes),
            if r.vsz_from_kernel { "" } else { " (replayed)" },
            r.rss_bytes.map_or("-".to_string(), size),
            r.threads,
            size(r.inherited_bytes),
            size(r.own_bytes),
            r.explained_fraction * 100.0,
            esc(&r.ended),
            esc(&r.command)
        );
    }
    o.push_str("</table>");
}

pub fn page(a: &Analysis, opts: &Options) -> String {
    let (rec, attr, series) = (&a.rec, &a.attr, &a.series[..]);
    let s = rec.start.as_ref();
    let title =
        s.map_or("vmshim report".to_string(), |s| format!("vmshim: pid {} {}", s.pid, s.argv.join(" ")));
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{}</title><style>
body{{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1160px}}
h1{{font-size:20px}} h2{{font-size:16px;margin-top:28px}}
table{{border-collapse:collapse}} td,th{{padding:2px 10px;text-align:right;border-bottom:1px solid #eee}}
td:first-child,th:first-child{{text-align:left}} .sw{{display:inline-block;width:12px;height:12px;margin-right:6px;vertical-align:-1px}}
.lbl{{font:11px monospace;fill:#444}} .fl{{font:11px monospace;fill:#111;pointer-events:none}}
.note{{color:#555}} code{{background:#f4f4f4;padding:1px 4px}} pre{{background:#f8f8f8;padding:8px;overflow:auto}}
</style></head><body>"#,
        esc(&title)
    );
    let exit = rec.exit.as_ref().map_or("unknown".to_string(), |e| e.how.clone());
    let un = a.unexplained_bytes;
    let _ = write!(o, "<h1>{}</h1><p>{} · VSZ <b>{}</b>", esc(&title), esc(&exit), size(attr.final_bytes));
    if let Some(r) = attr.rss_bytes {
        let _ = write!(o, " · RSS {}", size(r));
        if let Some(own) = attr.vmshim_rss_bytes {
            let _ = write!(o, " (vmshim's own {})", size(own));
        }
    }
    let _ = write!(o, " · {} threads · peak VSZ {}", attr.threads.len(), size(attr.peak_bytes));
    match attr.kernel_final_bytes {
        Some(k) => {
            let _ = write!(
                o,
                "<br>The kernel's map {}: {}; vmshim explains {} ({:.1}%).</p>",
                if a.context.live { "now" } else { "at exit" },
                size(k),
                size(k.saturating_sub(un)),
                k.saturating_sub(un) as f64 * 100.0 / k.max(1) as f64
            );
        }
        None => o.push_str("<br>The kernel's map at exit was not captured; the map below is replayed from the recorded calls.</p>"),
    }
    let mut context = String::new();
    crate::render::text::context_lines(&mut context, a, opts);
    for line in context.lines() {
        let _ = write!(o, "<p class=context>{}</p>", esc(line.trim_start()));
    }
    if a.processes.len() > 1 {
        process_table(&mut o, &a.processes);
    }
    o.push_str("<p class=note>Virtual size (VSZ) is address space <i>reserved</i>; most of it is never touched and costs no memory. Each coloured block below is one mapping, drawn to scale; hover for its thread, size, permissions and the call stack that made it.</p>");

    o.push_str("<h2>By category</h2><table id=categories><tr><th>category</th><th>size</th><th>% of VSZ</th><th>regions</th></tr>");
    for &(c, b, n) in &a.categories {
        if n > 0 {
            let _ = write!(
                o,
                r#"<tr data-category="{}" data-bytes="{b}"><td><span class=sw style="background:{}"></span>{}</td><td>{}</td><td>{:.1}%</td><td>{n}</td></tr>"#,
                c.name(),
                color(c),
                c.name(),
                size(b),
                b as f64 * 100.0 / attr.final_bytes.max(1) as f64
            );
        }
    }
    o.push_str("</table>");
    let go = &a.go_runtime;
    if !go.is_empty() {
        o.push_str("<h2>Go runtime by purpose</h2><p class=note>In the Go runtime's own words, from the runtime function that asked for the memory (or the kernel's name for the mapping). Read-write is committed; the rest is PROT_NONE reservation.</p><table id=go_runtime><tr><th>purpose</th><th>reserved</th><th>read-write</th><th>regions</th></tr>");
        for g in go {
            let _ = write!(
                o,
                r#"<tr data-bytes="{}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
                g.bytes,
                esc(&g.purpose),
                size(g.bytes),
                size(g.rw_bytes),
                g.regions
            );
        }
        o.push_str("</table>");
    }

    o.push_str("<h2>The address space</h2>");
    o.push_str(&svg::map(a));

    o.push_str("<h2>Reserved bytes by call stack</h2><p class=note>An icicle graph: each bar is as wide as the bytes reserved through it; below &ldquo;all&rdquo; come the categories, then the call stacks from their outermost frame down to the libc call that reserved the memory.</p>");
    o.push_str(&svg::flame(a));

    o.push_str("<h2>VSZ over time (as the hooks saw it)</h2>");
    o.push_str(&svg::timeline(series, attr.final_bytes.saturating_sub(series.last().map_or(0, |s| s.1))));

    o.push_str("<h2>By thread</h2><table><tr><th>tid</th><th>name</th><th>creator</th><th>stack</th><th>arenas</th><th>reserved</th></tr>");
    for t in &attr.threads {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            t.tid,
            esc(t.name.as_deref().unwrap_or("-")),
            t.creator_tid.map_or("-".into(), |c| c.to_string()),
            size(t.stack_bytes),
            size(t.arena_bytes),
            size(t.reserved_bytes)
        );
    }
    o.push_str("</table>");

    let advice = &a.advice;
    if !advice.is_empty() {
        o.push_str("<h2>What would change it</h2><ul>");
        for x in advice {
            let _ = write!(o, "<li>{}<br><span class=note>how: {}</span></li>", esc(&x.text), esc(&x.how));
        }
        o.push_str("</ul>");
    }
    let dns = &a.dns;
    let _ = write!(o, "<h2>DNS</h2><p>{}</p>", esc(&dns.verdict));
    if !dns.lines.is_empty() {
        let _ = write!(o, "<pre>{}</pre>", esc(&dns.lines.join("\n")));
    }
    if a.bytes_of(Category::Unattributed).1 > 0 {
        o.push_str("<h2>Unattributed</h2><pre>");
        for r in attr.regions.iter().filter(|r| r.category == Category::Unattributed) {
            let _ = writeln!(o, "{:#x}-{:#x} {} {}", r.start, r.end, r.perms, size(r.size()));
        }
        o.push_str("</pre>");
    }
    o.push_str("</body></html>\n");
    o
}
