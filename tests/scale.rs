//! The report's memory is bounded by live regions and distinct stacks, not by the number of
//! events: the same program run fifteen times longer leaves a trace fifteen times the size, and
//! the report reads it in about the same memory.

use crate::common::*;
use crate::under_vmshim::*;
use std::process::{Command, Stdio};

/// Runs `churn PAIRS` under the shim; returns its trace, its live mapping count and page size.
fn churn_trace(dir: &TestDir, pairs: u64) -> (std::path::PathBuf, u64, u64) {
    let trace = dir.join(format!("churn-{pairs}.trace"));
    let out = run_with_timeout(
        Command::new(build_c("churn"))
            .arg(pairs.to_string())
            .env("LD_PRELOAD", shim_lib())
            .env("VMSHIM_OUT", &trace),
        TIMEOUT,
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<u64> = text.split_whitespace().skip(1).map(|w| w.parse().unwrap()).collect();
    (trace, f[0], f[1])
}

/// `vmshim report --json TRACE`: the report, and the report process's peak RSS in bytes.
fn report_with_peak_rss(dir: &TestDir, trace: &std::path::Path) -> (report::Report, u64) {
    let json = dir.join("report.json");
    let child = Command::new(vmshim_bin())
        .args(["report", "--json"])
        .arg(trace)
        .stdout(Stdio::from(std::fs::File::create(&json).unwrap()))
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, with valid out-pointers.
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(r, child.id() as i32);
    // Reaped by wait4 above; dropping the handle neither waits nor kills.
    std::mem::forget(child);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "status {status:#x}");
    (read_report(&json), usage.ru_maxrss as u64 * 1024)
}

#[test]
fn report_memory_does_not_grow_with_the_number_of_events() {
    let dir = TestDir::new("scale_churn");
    let (small, live, page) = churn_trace(&dir, 20_000);
    let (large, live_large, _) = churn_trace(&dir, 300_000);
    assert_eq!(live, live_large);
    let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
    assert!(size(&large) > 10 * size(&small), "the longer run's trace is ~15x the size");

    let (r_small, rss_small) = report_with_peak_rss(&dir, &small);
    let (r_large, rss_large) = report_with_peak_rss(&dir, &large);
    for (r, pairs) in [(&r_small, 20_000u64), (&r_large, 300_000)] {
        // Every call is counted (mmap and munmap per pair, less the first LIVE munmaps)...
        assert!(r.events.recorded >= 2 * pairs - live, "{:?}", r.events);
        assert_eq!(r.events.dropped, 0);
        // ... and the replay ends with exactly the program's live mappings as its own mmaps.
        assert_eq!(category_bytes(r, "anon_mmap"), live * page, "{pairs} pairs");
    }
    // The trace grew by 280,000 pairs; the report's peak RSS may grow by far less than what
    // keeping each call would take (it took ~400 bytes a call: +228 MiB here before).
    assert!(
        rss_large < rss_small + (32 << 20),
        "peak RSS {rss_small} B for {} B of trace, {rss_large} B for {} B",
        size(&small),
        size(&large)
    );
}
