//! The HTML page's drawings, as inline SVG: the address space to scale ([`map`]), the icicle
//! graph of reserved bytes by call stack ([`flame`]) and VSZ over time ([`timeline`]).

use super::html::{color, esc, size};
use crate::analyze::Analysis;
use std::collections::BTreeMap;
use std::fmt::Write;

/// A gap between two mappings larger than this starts a new row of the map.
const GAP: u64 = 1 << 30;
const WIDTH: f64 = 1100.0;

fn frame_names(a: &Analysis, stack: &[u64]) -> Vec<String> {
    a.frames(stack).into_iter().map(|f| f.function.unwrap_or_else(|| format!("{:#x}", f.addr))).collect()
}

/// The address-space map: one row per run of mappings, to scale within the row.
pub fn map(a: &Analysis) -> String {
    let attr = &a.attr;
    let mut rows: Vec<Vec<usize>> = Vec::new();
    let mut last_end = 0;
    for (i, r) in attr.regions.iter().enumerate() {
        if rows.is_empty() || r.start.saturating_sub(last_end) > GAP {
            rows.push(Vec::new());
        }
        if let Some(row) = rows.last_mut() {
            row.push(i);
        }
        last_end = r.end;
    }
    let row_h = 34.0;
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg class="map" width="{}" height="{}" xmlns="http://www.w3.org/2000/svg">"#,
        WIDTH + 10.0,
        rows.len() as f64 * row_h + 10.0
    );
    for (ri, row) in rows.iter().enumerate() {
        let (lo, hi) = (attr.regions[row[0]].start, attr.regions[row[row.len() - 1]].end);
        let span = (hi - lo).max(1) as f64;
        let y = ri as f64 * row_h;
        let mapped: u64 = row.iter().map(|&i| attr.regions[i].size()).sum();
        let _ = write!(
            o,
            r#"<text x="0" y="{}" class="lbl">{:#x} – {:#x}: {} mapped in {} of address range{}</text>"#,
            y + 11.0,
            lo,
            hi,
            size(mapped),
            size(hi - lo),
            if ri + 1 < rows.len() { " · then a gap (collapsed)" } else { "" }
        );
        for &i in row {
            let r = &attr.regions[i];
            let x = (r.start - lo) as f64 / span * WIDTH;
            let w = ((r.size() as f64 / span) * WIDTH).max(0.5);
            let stack = frame_names(a, &r.stack);
            let tip = format!(
                "{:#x}-{:#x} {} {}\n{} · {}{}{}{}",
                r.start,
                r.end,
                r.perms,
                size(r.size()),
                r.purpose
                    .as_ref()
                    .map_or(r.category.name().to_owned(), |p| format!("{} ({p})", r.category.name())),
                r.cause,
                r.tid.map_or(String::new(), |t| format!(" · thread {t}")),
                if r.path.is_empty() { String::new() } else { format!("\n{}", r.path) },
                stack.iter().take(12).fold(String::new(), |acc, f| acc + "\n  " + f)
            );
            let _ = write!(
                o,
                r#"<rect x="{x:.2}" y="{}" width="{w:.2}" height="18" fill="{}" data-category="{}" data-bytes="{}"><title>{}</title></rect>"#,
                y + 14.0,
                color(r.category),
                r.category.name(),
                r.size(),
                esc(&tip)
            );
        }
    }
    o.push_str("</svg>");
    o
}

/// A node of the flame graph: bytes and children by frame name.
#[derive(Default)]
struct Node {
    bytes: u64,
    children: BTreeMap<String, Node>,
}

pub fn flame(a: &Analysis) -> String {
    let attr = &a.attr;
    let mut root = Node::default();
    for r in &attr.regions {
        let mut path = vec![r.category.name().to_string()];
        if !r.stack.is_empty() {
            let mut frames = frame_names(a, &r.stack);
            frames.reverse();
            path.extend(frames);
            path.push(format!("{}()", r.cause));
        }
        let mut node = &mut root;
        node.bytes += r.size();
        for p in path {
            node = node.children.entry(p).or_default();
            node.bytes += r.size();
        }
    }
    fn depth(n: &Node) -> usize {
        1 + n.children.values().map(depth).max().unwrap_or(0)
    }
    let h = 17.0;
    let levels = depth(&root);
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg class="flame" width="{}" height="{}" xmlns="http://www.w3.org/2000/svg">"#,
        WIDTH + 10.0,
        levels as f64 * h
    );
    #[allow(
        clippy::too_many_arguments,
        reason = "a recursive drawing helper; a struct would only rename them"
    )]
    fn draw(o: &mut String, n: &Node, name: &str, x: f64, level: usize, scale: f64, h: f64, total: u64) {
        let w = n.bytes as f64 * scale;
        if w < 0.5 {
            return;
        }
        let y = level as f64 * h;
        let hue = 20 + (name.bytes().fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(b as u32)) % 40);
        let _ = write!(
            o,
            r#"<g><rect x="{x:.2}" y="{y}" width="{w:.2}" height="{}" fill="hsl({hue},80%,60%)"><title>{} — {} ({:.1}%)</title></rect>"#,
            h - 1.0,
            esc(name),
            size(n.bytes),
            n.bytes as f64 * 100.0 / total.max(1) as f64
        );
        if w > 40.0 {
            let chars = (w / 7.0) as usize;
            let label: String = name.chars().take(chars).collect();
            let _ =
                write!(o, r#"<text x="{:.2}" y="{}" class="fl">{}</text>"#, x + 3.0, y + 12.0, esc(&label));
        }
        o.push_str("</g>");
        let mut cx = x;
        for (child, c) in &n.children {
            draw(o, c, child, cx, level + 1, scale, h, total);
            cx += c.bytes as f64 * scale;
        }
    }
    let scale = WIDTH / root.bytes.max(1) as f64;
    draw(&mut o, &root, "all", 0.0, 0, scale, h, root.bytes);
    o.push_str("</svg>");
    o
}

pub fn timeline(series: &[(u64, u64)], peak_extra: u64) -> String {
    if series.len() < 2 {
        return "<p>Not enough recorded calls to draw VSZ over time.</p>".into();
    }
    let (t0, t1) = (series[0].0, series[series.len() - 1].0.max(series[0].0 + 1));
    let max = series.iter().map(|s| s.1).max().unwrap_or(1).max(1);
    let (w, h) = (WIDTH, 160.0);
    let pts: Vec<String> = series
        .iter()
        .map(|&(t, v)| {
            format!(
                "{:.1},{:.1}",
                (t - t0) as f64 / (t1 - t0) as f64 * w,
                h - v as f64 / max as f64 * (h - 10.0)
            )
        })
        .collect();
    let (pt, pv) = series.iter().copied().max_by_key(|s| s.1).unwrap_or((t0, 0));
    let px = (pt - t0) as f64 / (t1 - t0) as f64 * w;
    format!(
        r##"<svg class="time" width="{}" height="{}" xmlns="http://www.w3.org/2000/svg"><polyline fill="none" stroke="#4e79a7" stroke-width="2" points="{}"/><circle cx="{px:.1}" cy="{:.1}" r="4" fill="#e15759"><title>peak: {} seen by the hooks (+{} made inside glibc at exit)</title></circle><text x="{:.1}" y="12" class="lbl">peak {}</text><text x="0" y="{}" class="lbl">0 ms</text><text x="{}" y="{}" class="lbl" text-anchor="end">{:.1} ms</text></svg>"##,
        w + 10.0,
        h + 16.0,
        pts.join(" "),
        h - pv as f64 / max as f64 * (h - 10.0),
        size(pv),
        size(peak_extra),
        (px + 6.0).min(w - 120.0),
        size(pv),
        h + 14.0,
        w,
        h + 14.0,
        (t1 - t0) as f64 / 1e6
    )
}
