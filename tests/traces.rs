//! Trace files: what a SIGKILL leaves, and what the reader says about missing, cut or damaged
//! ones (exit code 2 and a clear message, never a panic).

use crate::common::*;
use crate::under_vmshim::*;
use std::process::Command;

fn report_of(path: &std::path::Path) -> std::process::Output {
    run_with_timeout(Command::new(vmshim_bin()).arg("report").arg(path), TIMEOUT)
}

#[test]
fn a_sigkilled_target_leaves_a_trace_that_reads_up_to_the_kill() {
    let dir = TestDir::new("traces_sigkill");
    let h = Handshake::start(&mut vmshim_run_cmd(&dir, &build_c("mapseq"), &[]), TIMEOUT);
    let calls = parse_call_lines(h.lines());
    let maps = read_maps(h.pid());
    h.signal_target(libc::SIGKILL);
    let out = h.finish();
    assert_eq!(out.status.code(), Some(128 + libc::SIGKILL), "vmshim passes the status through");
    let report = read_report(&dir.join("report.json"));
    assert_eq!(report.process.exit, "killed by SIGKILL");
    assert_eq!(report.vsz.final_bytes, vsz_bytes(&maps));
    assert_eq!(report.events.torn, 0);
    // The events are vmshim events --json, not vmshim-report/1: JSON.
    let events = events_json(&dir.join("t.trace"));
    for c in &calls {
        let kind = if c.func == "mmap64" { "mmap" } else { c.func.as_str() };
        let result =
            if c.result.starts_with("0x") { parse_hex(&c.result) } else { c.result.parse().unwrap() };
        assert!(
            events.iter().any(|e| e["kind"] == kind && u(&e["result"]) == result),
            "{c:?} survived the kill"
        );
    }
    // The same trace read later gives the same reconciliation.
    let again = report_of(&dir.join("t.trace"));
    assert!(again.status.success());
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(text.contains("killed by SIGKILL") && text.contains("kernel VSZ at exit"), "{text}");
}

#[test]
fn missing_cut_and_damaged_traces_are_clear_errors() {
    let dir = TestDir::new("traces_bad");
    let run = run_handshake(&dir, &build_c("threads"), &["1"]);
    let good = std::fs::read(&run.trace).unwrap();

    let missing = report_of(&dir.join("nope.trace"));
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.trace"));

    // Issue 11: a copy cut short is reported up to the cut, and says so.
    let cut = dir.join("cut.trace");
    std::fs::write(&cut, &good[..good.len() / 2]).unwrap();
    let out = report_of(&cut);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("cut short") && err.contains(&format!("{} of the", good.len() / 2)), "{err}");
    let recorded = |text: &str| -> u64 {
        let line = text.lines().find(|l| l.trim_start().starts_with("events:")).unwrap_or_default();
        line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    let whole = report_of(&run.trace);
    let (part, all) =
        (recorded(&String::from_utf8_lossy(&out.stdout)), recorded(&String::from_utf8_lossy(&whole.stdout)));
    assert!(part > 0 && part < all, "the cut copy reads {part} of the {all} records");

    // Damage the second record's body: the error names where that record starts.
    let first_len = u32::from_le_bytes(good[68..72].try_into().unwrap()) as usize;
    let second = 64 + first_len;
    let mut bad = good.clone();
    bad[second + 24] ^= 0xff;
    let damaged = dir.join("damaged.trace");
    std::fs::write(&damaged, &bad).unwrap();
    let out = report_of(&damaged);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("byte offset {second}")), "{err}");

    let foreign = dir.join("foreign.trace");
    std::fs::write(&foreign, b"#!/bin/sh\necho not a trace\n").unwrap();
    let out = report_of(&foreign);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a vmshim trace"));

    // The reader, in process: every cut at every byte offset of the real trace reads or errors.
    for cut_at in 0..good.len().min(1 << 20) {
        let _ = vmshim_trace::parse(&good[..cut_at]);
    }
    // Every cut of the real trace gives a report or a clear error: never a crash.
    for cut_at in (0..good.len()).step_by(good.len() / 50 + 1) {
        std::fs::write(&cut, &good[..cut_at]).unwrap();
        let out = report_of(&cut);
        assert!(matches!(out.status.code(), Some(0 | 2)), "cut at {cut_at}: {:?}", out.status);
    }
}

#[test]
fn events_print_strace_style_lines() {
    let dir = TestDir::new("traces_events");
    let run = run_handshake(&dir, &build_c("mapseq"), &[]);
    let out = run_with_timeout(Command::new(vmshim_bin()).arg("events").arg(&run.trace), TIMEOUT);
    let text = String::from_utf8_lossy(&out.stdout);
    let first = parse_call_lines(&run.lines).into_iter().next().unwrap();
    let want = format!(
        "{}  mmap(NULL, {}, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0x0) = {}",
        run.pid,
        first.arg("length").unwrap(),
        first.result
    );
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == want.split_whitespace().collect::<Vec<_>>()),
        "{want}\n{text}"
    );
}
