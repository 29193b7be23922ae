//! The check that keeps the shim layered (issue 13, item 2): it reads `shim/src`, gives each
//! file the layer of its folder and fails when a path in it names a higher layer, or when
//! files of one layer name each other in a cycle. Every `crate::`, `$crate::` and `super::`
//! path counts, in code and in doc links alike: a low layer that links a high one in its docs
//! has learned of it. Test code only; nothing here is in the library.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first, by the first component of a file's path under `src/`.
const LAYERS: &[(&str, u8)] = &[
    ("os", 1),
    ("config.rs", 2),
    ("out", 3),
    ("unwind", 4),
    ("know", 5),
    ("record", 6),
    ("hooks", 7),
    // The wiring: the module list and the constructor, and this check.
    ("lib.rs", 8),
    ("layers.rs", 8),
];

fn layer_of(first: &str) -> Option<u8> {
    LAYERS.iter().find(|(name, _)| *name == first).map(|&(_, l)| l)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `os/syscall.rs` -> [os, syscall], `os/mod.rs` -> [os], `lib.rs` -> [].
fn module_of(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel.trim_end_matches(".rs").split('/').map(String::from).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The file that defines module path `path` (or the item it names): the longest prefix that is
/// a file; the crate root (`lib.rs`) when not even the first segment is one.
fn file_of(path: &[String], files: &BTreeSet<String>) -> String {
    let mut best = "lib.rs".to_string();
    for n in 1..=path.len() {
        let dir = path[..n].join("/");
        if files.contains(&format!("{dir}.rs")) {
            return format!("{dir}.rs");
        } else if files.contains(&format!("{dir}/mod.rs")) {
            best = format!("{dir}/mod.rs");
        } else {
            break;
        }
    }
    best
}

/// The paths `text` names from `at` on, after a `crate::` or `super::`: the segments, and for a
/// group `{a, b::c as d, e::{f, g}}` each item's segments after the prefix.
fn paths_at(text: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut segs = prefix;
    let mut rest = text;
    loop {
        let id: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if id.is_empty() {
            if let Some(group) = rest.strip_prefix('{') {
                let mut depth = 1;
                let end = group
                    .char_indices()
                    .find(|&(_, c)| {
                        depth += match c {
                            '{' => 1,
                            '}' => -1,
                            _ => 0,
                        };
                        depth == 0
                    })
                    .map_or(group.len(), |(i, _)| i);
                let mut start = 0;
                let mut d = 0;
                for (i, c) in group[..end].char_indices().chain([(end, ',')]) {
                    match c {
                        '{' => d += 1,
                        '}' => d -= 1,
                        ',' if d == 0 => {
                            let item = group[start..i].trim();
                            if !item.is_empty() && item != "self" {
                                paths_at(item, segs.clone(), out);
                            }
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
                return;
            }
            break;
        }
        segs.push(id.clone());
        rest = &rest[id.len()..];
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    out.push(segs);
}

/// Byte offsets where an inline module (`mod tests {`) starts; inside one, `super::` is the
/// file's own module, not its parent.
fn inline_module_starts(text: &str) -> Vec<usize> {
    let mut at = 0;
    let mut starts = Vec::new();
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        let t = t.strip_prefix("pub(crate) ").or_else(|| t.strip_prefix("pub ")).unwrap_or(t);
        if t.starts_with("mod ") && t.trim_end().ends_with('{') {
            starts.push(at);
        }
        at += line.len();
    }
    starts
}

struct Edge {
    from: String,
    line: usize,
    to: String,
    path: String,
}

fn edges() -> (Vec<Edge>, BTreeSet<String>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    rust_files(&src, &mut found);
    let files: BTreeSet<String> =
        found.iter().map(|p| p.strip_prefix(&src).unwrap().to_str().unwrap().replace('\\', "/")).collect();
    let mut edges = Vec::new();
    for rel in &files {
        let text = std::fs::read_to_string(src.join(rel)).unwrap();
        let own = module_of(rel);
        let inline = inline_module_starts(&text);
        for (i, _) in text.match_indices("::") {
            let before = &text[..i];
            let ident = |b: &str| b.ends_with(|c: char| c.is_alphanumeric() || c == '_');
            let prefix = if let Some(b) = before.strip_suffix("crate") {
                // `crate::` and `$crate::` are ours; `vmshim_crate::` would not be.
                if ident(b) {
                    continue;
                }
                Vec::new()
            } else if let Some(b) = before.strip_suffix("super") {
                // `super::super::` and `x::super` do not occur; a path's first `super` does.
                if ident(b) || b.ends_with(':') {
                    continue;
                }
                // The file's parent module, or the file's own inside an inline `mod tests`.
                let mut base = own.clone();
                if !inline.iter().any(|&s| s < i) {
                    base.pop();
                }
                base
            } else {
                continue;
            };
            let mut paths = Vec::new();
            paths_at(&text[i + 2..], prefix, &mut paths);
            let line = before.matches('\n').count() + 1;
            for p in paths {
                let to = file_of(&p, &files);
                if &to != rel {
                    edges.push(Edge { from: rel.clone(), line, to, path: p.join("::") });
                }
            }
        }
    }
    (edges, files)
}

fn layer(file: &str) -> Option<u8> {
    layer_of(file.split('/').next().unwrap_or(file))
}

#[test]
fn every_file_has_a_layer() {
    let (_, files) = edges();
    let lost: Vec<_> = files.iter().filter(|f| layer(f).is_none()).collect();
    assert!(lost.is_empty(), "files in no layer's folder (see LAYERS): {lost:?}");
}

#[test]
fn no_crate_path_points_up() {
    let (edges, _) = edges();
    let up: Vec<String> = edges
        .iter()
        .filter(|e| layer(&e.to) > layer(&e.from))
        .map(|e| {
            format!(
                "{}:{} (layer {:?}) names {} in {} (layer {:?})",
                e.from,
                e.line,
                layer(&e.from),
                e.path,
                e.to,
                layer(&e.to)
            )
        })
        .collect();
    assert!(up.is_empty(), "paths that point to a higher layer:\n{}", up.join("\n"));
}

#[test]
fn no_cycle_among_the_files_of_a_layer() {
    let (edges, files) = edges();
    let mut next: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in edges.iter().filter(|e| layer(&e.to) == layer(&e.from) && layer(&e.from) < Some(8)) {
        next.entry(&e.from).or_default().insert(&e.to);
    }
    // A depth-first search that reports the first cycle it closes.
    fn visit<'a>(
        f: &'a str,
        next: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        done: &mut BTreeSet<&'a str>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(i) = stack.iter().position(|s| *s == f) {
            return Some(stack[i..].iter().copied().chain([f]).collect());
        }
        if !done.insert(f) {
            return None;
        }
        stack.push(f);
        for &g in next.get(f).into_iter().flatten() {
            if let Some(c) = visit(g, next, done, stack) {
                return Some(c);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    for f in &files {
        if let Some(cycle) = visit(f, &next, &mut done, &mut Vec::new()) {
            let why: Vec<String> = cycle
                .windows(2)
                .map(|w| {
                    let e = edges.iter().find(|e| e.from == w[0] && e.to == w[1]).unwrap();
                    format!("{}:{} names {}", e.from, e.line, e.path)
                })
                .collect();
            panic!("a cycle among one layer's files: {}\n{}", cycle.join(" -> "), why.join("\n"));
        }
    }
}

#[test]
fn the_check_sees_what_it_must() {
    // The parser itself, on the shapes the tree uses: a plain path, a group with a rename and
    // a nested group, `super::` from a file and from its inline test module.
    let mut p = Vec::new();
    paths_at("os::syscall::gettid()", Vec::new(), &mut p);
    paths_at("{os::syscall as sys, out::{writer, stacks}, self}", Vec::new(), &mut p);
    let got: Vec<String> = p.iter().map(|s| s.join("::")).collect();
    assert_eq!(got, ["os::syscall::gettid", "os::syscall", "out::writer", "out::stacks"]);
    let files: BTreeSet<String> =
        ["lib.rs", "os/mod.rs", "os/syscall.rs", "config.rs"].into_iter().map(String::from).collect();
    let path = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    assert_eq!(file_of(&path("os::syscall::gettid"), &files), "os/syscall.rs");
    assert_eq!(file_of(&path("os::nothing"), &files), "os/mod.rs");
    assert_eq!(file_of(&path("config::load"), &files), "config.rs");
    assert_eq!(file_of(&path("depth"), &files), "lib.rs", "a crate-root item is the wiring's");
    assert_eq!(module_of("os/mod.rs"), ["os"]);
    assert_eq!(module_of("os/tls.rs"), ["os", "tls"]);
    // The real tree has edges of every kind, so a parser that found none would fail here.
    let (edges, _) = edges();
    let has = |from: &str, to: &str| edges.iter().any(|e| e.from == from && e.to == to);
    assert!(has("os/guard.rs", "os/tls.rs"), "a `use crate::os::tls::{{...}}`");
    assert!(has("hooks/mmap.rs", "hooks/mod.rs"), "a `super::finish`");
    assert!(has("unwind/fp.rs", "unwind/images.rs"), "a `use super::images`");
    assert!(has("hooks/ptrace.rs", "config.rs"), "a group `use crate::{{config, os::syscall as sys}}`");
    assert!(has("record/call.rs", "out/writer.rs"), "an item of a group, `out::writer`");
    assert!(has("know/startup.rs", "config.rs"), "a `crate::config::getenv`");
    assert!(!has("config.rs", "lib.rs"), "config's tests name super:: inside `mod tests`: config itself");
}
