//! Issue 6, first part: targets that close or overwrite descriptors, change directory or cap
//! file sizes keep running exactly as without vmshim, and lose no record they can keep.

use crate::common::*;
use crate::under_vmshim::*;
use std::process::Command;

/// Runs `hostile MODE N` with 64 KiB trace segments (so that N calls need several, each mapped
/// after the hostile act), relative VMSHIM_OUT; returns (stdout, trace path).
fn run(mode: &str, n: u64) -> (String, std::path::PathBuf) {
    let dir = TestDir::new(&format!("hostile_{mode}"));
    let out = run_with_timeout(
        Command::new(build_c("hostile"))
            .args([mode, &n.to_string()])
            .current_dir(dir.path())
            .env("LD_PRELOAD", shim_lib())
            .env("VMSHIM_OUT", "t.trace")
            .env("VMSHIM_SEGMENT_BYTES", "65536"),
        TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{mode}: {} {stdout} {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.trim(), format!("calls {}", 2 * n), "{mode}: the program ran as without vmshim");
    (stdout, dir.join("t.trace"))
}

fn own_calls(trace: &std::path::Path) -> usize {
    events_json(trace)
        .iter()
        .filter(|e| (e["kind"] == "mmap" || e["kind"] == "munmap") && e["own"] == false)
        .count()
}

#[test]
fn closing_or_overwriting_descriptors_and_chdir_lose_nothing() {
    // 2,000 calls of ~250-byte records need several 64 KiB segments after the hostile act.
    let n = 1000;
    for mode in ["closeall", "dup2", "chdir"] {
        let (_, trace) = run(mode, n);
        let seen = own_calls(&trace);
        assert!(seen >= 2 * n as usize, "{mode}: {seen} of the program's {} calls recorded", 2 * n);
    }
}

#[test]
fn a_low_file_size_limit_drops_records_instead_of_killing_the_target() {
    let (_, trace) = run("fsize", 1000);
    let out = run_with_timeout(Command::new(vmshim_bin()).arg("report").arg("--json").arg(&trace), TIMEOUT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dropped = parse_report(&out.stdout).events.dropped;
    assert!(dropped > 0, "records past the 64 KiB limit are counted as dropped");
    let size = std::fs::metadata(&trace).unwrap().len();
    assert!(size <= 64 << 10, "the trace stayed within RLIMIT_FSIZE: {size} bytes");
}

#[test]
fn a_sigsegv_handler_that_maps_memory_is_recorded_and_never_deadlocks() {
    let n = 200;
    let (_, trace) = run("segv", n);
    let fixed = events_json(&trace)
        .iter()
        .filter(|e| e["kind"] == "mmap" && u(&e["args"]["flags"]) & 0x10 != 0 && e["own"] == false)
        .count();
    assert_eq!(fixed, n as usize, "one MAP_FIXED mmap per fault, each recorded from the handler");
}
