//! Issue 13, item 4: golden snapshots of the text and HTML report of a deterministic C target
//! (tests/programs/golden.c), so that a change in what a user reads shows in the diff. What a
//! run cannot repeat is normalised first: the pid and thread ids (named PID, TID1, TID2 in the
//! order the threads were made), addresses, the shim's own RSS and timing, the trace's path, and
//! the HTML map's coordinates (drawn to scale, so they move with the address layout).
//!
//! After an intended change: `VMSHIM_BLESS=1 cargo nextest run -E 'test(golden)'` rewrites the
//! snapshots in tests/golden/; review them in the diff.

use crate::common::*;
use crate::under_vmshim::{TIMEOUT, load_report, u};
use std::process::Command;

/// `text` with every hexadecimal address `0x…`, and every decimal number in `ids` replaced by its
/// name (whole numbers only: 4513 in 45130 is left alone).
fn replace_numbers(text: &str, ids: &[(u64, String)]) -> String {
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
        if boundary && b[i].is_ascii_digit() {
            let mut j = i;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let whole = j == b.len()
                || !(b[j].is_ascii_alphanumeric()
                    || (b[j] == b'.' && b.get(j + 1).is_some_and(u8::is_ascii_digit)));
            let n: Option<u64> = text[i..j].parse().ok();
            if whole && let Some((_, name)) = ids.iter().find(|(id, _)| Some(*id) == n) {
                out.push_str(name);
                i = j;
                continue;
            }
            out.push_str(&text[i..j]);
            i = j;
            continue;
        }
        let ch = text[i..].chars().next().unwrap();
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

fn normalise(text: &str, ids: &[(u64, String)], trace: &str) -> String {
    let mut t = blank_drawings(&text.replace(trace, "TRACE"));
    t = blank_after(&t, "shim cost: ", "\n");
    t = blank_after(&t, "RSS ", "   threads");
    t = blank_after(&t, "RSS ", " · 3 threads");
    t = blank_after(&t, " mapped in ", " of address range");
    for attr in ["x", "width", "points", "d", "x1", "x2", "cx"] {
        t = blank_attribute(&t, attr);
    }
    replace_numbers(&t, ids)
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
    let report = load_report(&dir.join("r.json"));
    let pid = u(&report["process"]["pid"]);
    let mut ids = vec![(pid, "PID".to_owned())];
    let mut tids: Vec<u64> =
        report["threads"].as_array().unwrap().iter().map(|t| u(&t["tid"])).filter(|&t| t != pid).collect();
    tids.sort_unstable();
    assert_eq!(tids.len(), 2, "two threads: {}", report["threads"]);
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
