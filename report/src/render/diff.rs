//! `vmshim diff A B`: what changed from one trace to another, by category, threads, arenas and
//! call stack (compared by their symbolized frames: addresses differ between runs).

use crate::analyze::Analysis;
use crate::analyze::attribute::Category;
use crate::load::read::Recording;
use crate::render::Options;
use crate::render::folded::folded_frames;
use crate::render::text::Sizes;
use std::fmt::Write;

/// What changed from trace `a` to trace `b`.
pub fn diff(a: &Analysis, b: &Analysis, opts: &Options) -> String {
    let (ra, aa, rb, ab) = (&a.rec, &a.attr, &b.rec, &b.attr);
    let k = Sizes(opts.exact_bytes);
    let u = k.unit();
    let mut o = String::new();
    let name = |r: &Recording| {
        r.start.as_ref().map_or(String::new(), |s| format!("pid {} {}", s.pid, s.argv.join(" ")))
    };
    let signed = |d: i64| format!("{}{}", if d < 0 { "-" } else { "+" }, k.kib(d.unsigned_abs()));
    let _ = writeln!(o, "a: {}\nb: {}", name(ra), name(rb));
    let (va, vb) = (aa.final_bytes, ab.final_bytes);
    let _ = writeln!(o, "VSZ {} {u} -> {} {u} ({} {u})", k.kib(va), k.kib(vb), signed(vb as i64 - va as i64));
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
        let (x, y) = (a.bytes_of(c).0, b.bytes_of(c).0);
        if x != 0 || y != 0 {
            let _ = writeln!(
                o,
                "  {:<14} {:>13} {:>13} {:>13}",
                c.name(),
                k.kib(x),
                k.kib(y),
                signed(y as i64 - x as i64)
            );
        }
    }
    // Stacks compared by their symbolized frames (addresses differ between runs).
    let by_stack = |x: &Analysis| {
        let mut m: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        for g in &x.top_stacks {
            let key = format!("{} {}() {}", g.category.name(), g.cause, folded_frames(x, &g.stack).join(";"));
            *m.entry(key).or_insert(0) += g.bytes;
        }
        m
    };
    let (ma, mb) = (by_stack(a), by_stack(b));
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
    for (d, k) in changes.into_iter().take(opts.top) {
        let (head, frames) = k.split_once(' ').map_or((k.as_str(), ""), |(h, f)| (h, f));
        let _ = writeln!(o, "  {:>12}  {head} {frames}", signed(d));
    }
    o
}
