//! Issue 13, item 4: golden snapshots of the text and HTML report of a deterministic C target
//! (tests/programs/golden.c), so that a change in what a user reads shows in the diff. What a
//! run cannot repeat is normalised first: the pid and thread ids (named PID, TID1, TID2 in the
//! order the threads were made; runs of spaces as two, since columns pad to them), addresses, the shim's own RSS and timing, the trace's path, and
//! the HTML map's coordinates (drawn to scale, so they move with the address layout).
//!
//! After an intended change: `VMSHIM_BLESS=1 cargo nextest run -E 'test(golden)'` rewrites the
//! snapshots in tests/golden/; review them in the diff.

use crate::common::*;
use crate::under_vmshim::TIMEOUT;
use std::process::Command;

/// `text` with every hexadecimal address `0x…`, and every pid or tid in `ids` replaced by its
/// name. An id is replaced only where it stands alone: a whole token between spaces, tags,
/// quotes or parentheses, or a comma list of ids (`thread 3820,3821`). A long run of the suite
/// wraps pids around to small numbers, so a digit group (`20,748`) or a line number
/// (`fileops.c:744`) may equal one; those are never tokens of ids.
fn replace_numbers(text: &str, ids: &[(u64, String)]) -> String {
    let hexed = replace_hex(text);
    let name_of =
        |t: &str| ids.iter().find(|(id, _)| t.parse::<u64>().ok() == Some(*id)).map(|(_, n)| n.as_str());
    let is_delim = |c: char| c.is_whitespace() || "<>()\"".contains(c);
    let mut out = String::with_capacity(hexed.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        // A list may end a clause: `used by 3820:`, `thread 3820,`.
        let core = token.trim_end_matches([':', ',', ';', '.']);
        let names: Vec<Option<&str>> = core.split(',').map(name_of).collect();
        if !core.is_empty() && names.iter().all(Option::is_some) {
            out.push_str(&names.iter().map(|n| n.unwrap_or_default()).collect::<Vec<_>>().join(","));
            out.push_str(&token[core.len()..]);
        } else {
            out.push_str(token);
        }
        token.clear();
    };
    for c in hexed.chars() {
        if is_delim(c) {
            flush(&mut token, &mut out);
            out.push(c);
        } else {
            token.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

/// Every hexadecimal number `0x…`.
fn replace_hex(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let boundary = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        if boundary && b[i] == b'0' && b.get(i + 1) == Some(&b'x') {
            let mut j = i + 2;
            while j < b.len() && b[j].is_ascii_hexdigit() {
                j += 1;
            }
            if j > i + 2 {
                out.push_str("0x…");
                i = j;
                continue;
            }
        }
        let ch = text[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The value of every `name="…"` attribute replaced by `…`.
fn blank_attribute(text: &str, name: &str) -> String {
    let key = format!(" {name}=\"");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(&key) {
        out.push_str(&rest[..at + key.len()]);
        rest = &rest[at + key.len()..];
        let end = rest.find('"').unwrap_or(rest.len());
        out.push('…');
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Each line of `text` where `until` follows `marker`: what stands between them replaced by `…`.
fn blank_after(text: &str, marker: &str, until: &str) -> String {
    text.split_inclusive('\n')
        .map(|line| {
            let Some(at) = line.find(marker) else { return line.to_owned() };
            let tail = &line[at + marker.len()..];
            match tail.find(until) {
                Some(end) => format!("{}{marker}…{}", &line[..at], &tail[end..]),
                None => line.to_owned(),
            }
        })
        .collect()
}

/// Every `<svg …>…</svg>` drawing replaced by `<svg>…</svg>`: the map is drawn in address order,
/// which the address layout (random from run to run) decides; the tables around it are what the
/// snapshot holds.
fn blank_drawings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("<svg") {
        out.push_str(&rest[..at]);
        out.push_str("<svg>…</svg>");
        rest = rest[at..].find("</svg>").map_or("", |end| &rest[at + end + "</svg>".len()..]);
    }
    out.push_str(rest);
    out
}

/// The number of `library` regions, which the kernel's merging of neighbouring mappings makes
/// depend on where the loader put them: the text row's last column, the HTML row's last cell.
fn blank_library_regions(text: &str) -> String {
    let lines = text.split_inclusive('\n').map(|line| {
        let Some(rest) = line.strip_prefix("  library ") else { return line.to_owned() };
        let body = rest.trim_end();
        match body.rfind(' ') {
            Some(at) => format!("  library {} …{}", &body[..at], &rest[body.len()..]),
            None => line.to_owned(),
        }
    });
    let t: String = lines.collect();
    let row = "data-category=\"library\"";
    let Some(at) = t.find(row) else { return t };
    let Some(end) = t[at..].find("</td></tr>").map(|e| at + e) else { return t };
    let Some(cell) = t[..end].rfind("<td>") else { return t };
    format!("{}<td>…{}", &t[..cell], &t[end..])
}

/// What the shim's own size moves: every change to the shim that crosses a page boundary moves
/// its mappings' size, so the VSZ totals, the `vmshim` row and every share of the total; the
/// target's own rows keep their bytes and region counts.
fn blank_shim_size(text: &str) -> String {
    let mut t = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        match line.strip_prefix("  vmshim ") {
            // The text row: `  vmshim  KiB  %  regions`.
            Some(rest) => {
                let regions = rest.split_whitespace().last().unwrap_or("");
                t.push_str(&format!("  vmshim  …  …  {regions}\n"));
            }
            None => t.push_str(line),
        }
    }
    // The text report's lines hold no `<`; the HTML page's do (it is a few long lines).
    let text_markers =
        [("  VSZ ", " KiB"), ("peak VSZ ", " KiB"), ("at exit ", " KiB"), ("accounts for ", " KiB")];
    let html_markers = [
        ("VSZ <b>", "</b>"),
        ("peak VSZ ", "<br>"),
        ("map at exit: ", ";"),
        ("explains ", " ("),
        ("data-category=\"vmshim\" data-bytes=\"", "\""),
    ];
    t = t
        .split_inclusive('\n')
        .map(|line| {
            let markers: &[(&str, &str)] = if line.contains('<') { &html_markers } else { &text_markers };
            markers.iter().fold(line.to_owned(), |l, (marker, until)| blank_every(&l, marker, until))
        })
        .collect();
    // The vmshim row's size cell, and every share of the total (`9.1%`).
    if let Some(at) = t.find("data-category=\"vmshim\"")
        && let Some(cell) =
            t[at..].find("<td>").and_then(|c| t[at + c + 4..].find("<td>").map(|d| at + c + 4 + d + 4))
        && let Some(end) = t[cell..].find("</td>")
    {
        t.replace_range(cell..cell + end, "…");
    }
    blank_percentages(&t)
}

/// Like [`blank_after`], for every occurrence on a line.
fn blank_every(text: &str, marker: &str, until: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(marker) {
        let from = at + marker.len();
        out.push_str(&rest[..from]);
        rest = &rest[from..];
        let line_end = rest.find('\n').unwrap_or(rest.len());
        if let Some(end) = rest[..line_end].find(until) {
            out.push('…');
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// Every `D.D%` (one decimal) as `…%`.
fn blank_percentages(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i >= 3
            && b[i - 1].is_ascii_digit()
            && b[i - 2] == b'.'
            && b[i - 3].is_ascii_digit()
        {
            let mut start = i - 3;
            while start > copied && b[start - 1].is_ascii_digit() {
                start -= 1;
            }
            out.push_str(&text[copied..start]);
            out.push('…');
            copied = i;
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    out
}

fn normalise(text: &str, ids: &[(u64, String)], trace: &str) -> String {
    let mut t = blank_shim_size(&blank_library_regions(&blank_drawings(&text.replace(trace, "TRACE"))));
    t = blank_after(&t, "shim cost: ", "\n");
    t = blank_after(&t, "RSS ", "   threads");
    t = blank_after(&t, "RSS ", " · 3 threads");
    t = blank_after(&t, " mapped in ", " of address range");
    for attr in ["x", "width", "points", "d", "x1", "x2", "cx"] {
        t = blank_attribute(&t, attr);
    }
    // Columns are padded to the width of what is in them, and a pid has 3 to 5 digits.
    collapse_spaces(&replace_numbers(&t, ids))
}

/// Every run of two or more spaces as two.
fn collapse_spaces(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut spaces = 0;
    for c in text.chars() {
        if c == ' ' {
            spaces += 1;
            continue;
        }
        out.push_str(&" "[..spaces.min(1)]);
        if spaces >= 2 {
            out.push(' ');
        }
        spaces = 0;
        out.push(c);
    }
    out.push_str(&"  "[..spaces.min(2)]);
    out
}

fn check(name: &str, got: &str) {
    let path = programs_dir().join("../golden").join(name);
    if std::env::var_os("VMSHIM_BLESS").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (VMSHIM_BLESS=1 writes it)", path.display()));
    if want != got {
        let first = want.lines().zip(got.lines()).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "{name} differs from its snapshot from line {} on (VMSHIM_BLESS=1 rewrites it after an intended change):\n--- snapshot\n{}\n--- now\n{}",
            first + 1,
            want.lines().skip(first).take(6).collect::<Vec<_>>().join("\n"),
            got.lines().skip(first).take(6).collect::<Vec<_>>().join("\n")
        );
    }
}

#[test]
fn golden_text_and_html_reports_of_a_deterministic_target() {
    let dir = TestDir::new("golden");
    let prog = build_c("golden");
    let mut cmd = Command::new(vmshim_bin());
    cmd.current_dir(dir.path())
        .args(["run", "--report", "r.txt", "--html", "r.html", "--out", "t.trace", "--"])
        .arg(&prog);
    let h = Handshake::start(&mut cmd, TIMEOUT);
    let out = h.finish();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json = run_with_timeout(
        Command::new(vmshim_bin()).arg("report").arg("--json").arg(dir.join("t.trace")),
        TIMEOUT,
    );
    std::fs::write(dir.join("r.json"), &json.stdout).unwrap();
    let report = read_report(&dir.join("r.json"));
    let pid = u64::from(report.process.pid);
    let mut ids = vec![(pid, "PID".to_owned())];
    let mut tids: Vec<u64> = report.threads.iter().map(|t| u64::from(t.tid)).filter(|&t| t != pid).collect();
    tids.sort_unstable();
    assert_eq!(tids.len(), 2, "two threads: {:?}", report.threads);
    ids.extend(tids.iter().enumerate().map(|(i, &t)| (t, format!("TID{}", i + 1))));
    let trace = dir.join("t.trace").display().to_string();
    // The program's path and file name carry its build's hash; its thread name is the first 15
    // bytes of the file name.
    let prog_path = prog.display().to_string();
    let file = prog.file_name().unwrap().to_string_lossy().into_owned();
    let comm: String = file.chars().take(15).collect();
    let named =
        |t: String| t.replace(&prog_path, "PROGRAM").replace(&file, "golden").replace(&comm, "golden");
    let text = named(std::fs::read_to_string(dir.join("r.txt")).unwrap());
    let html = named(std::fs::read_to_string(dir.join("r.html")).unwrap());
    check("report.txt", &normalise(&text, &ids, &trace));
    check("report.html", &normalise(&html, &ids, &trace));
}

/// After a long suite pids wrap around to small numbers: an id equal to a digit group or a
/// line number stays where it is not the id.
#[test]
fn golden_normalising_replaces_ids_only_where_they_stand_alone() {
    let ids = vec![(748, "PID".to_owned()), (744, "TID1".to_owned()), (342, "TID2".to_owned())];
    let text = "pid 748 VSZ 20,748 KiB\n  _IO (fileops.c:744)  thread 744,342 used by 744: x\n<td>748</td> (748) \"342\"";
    assert_eq!(
        replace_numbers(text, &ids),
        "pid PID VSZ 20,748 KiB\n  _IO (fileops.c:744)  thread TID1,TID2 used by TID1: x\n<td>PID</td> (PID) \"TID2\""
    );
}
