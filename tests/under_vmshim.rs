//! C and Rust targets under `vmshim run`: the report against `/proc/PID/maps` read from outside
//! while the target waits at its handshake (after which it exits without mapping anything).

use crate::common::report::{self, Report};
use crate::common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const TIMEOUT: u64 = 120;

/// A finished `vmshim run --json` of a handshake program, with /proc read at the handshake.
pub struct Run {
    pub pid: u32,
    pub lines: Vec<String>,
    pub maps: Vec<MapsRegion>,
    pub smaps: Vec<(MapsRegion, Vec<String>)>,
    pub tasks: Vec<u32>,
    pub out: Output,
    /// The report, read through vmshim-report/1's types.
    pub report: Report,
    pub trace: PathBuf,
}

pub fn vmshim_run_cmd(dir: &TestDir, prog: &Path, args: &[&str]) -> Command {
    vmshim_run_cmd_with(dir, &[], prog, args)
}

/// [`vmshim_run_cmd`] with more of `vmshim run`'s own flags (`--no-watch`, ...).
pub fn vmshim_run_cmd_with(dir: &TestDir, flags: &[&str], prog: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(vmshim_bin());
    c.current_dir(dir.path())
        .args(["run", "--json", "--top", "1000", "--out"])
        .arg(dir.join("t.trace"))
        .arg("--report")
        .arg(dir.join("report.json"))
        .args(flags)
        .arg("--")
        .arg(prog)
        .args(args);
    c
}

/// Runs `prog` under vmshim, reads /proc at its ready line, releases it, loads the report.
pub fn run_handshake(dir: &TestDir, prog: &Path, args: &[&str]) -> Run {
    finish_handshake(dir, Handshake::start(&mut vmshim_run_cmd(dir, prog, args), TIMEOUT))
}

/// Runs `prog ARGS` under `vmshim run --json` to the end in its own test directory (named
/// `name`); checks it succeeded; returns (stdout, report, the directory).
pub fn run_to_end(name: &str, prog: &Path, args: &[&str], env: &[(&str, &str)]) -> (String, Report) {
    let (stdout, report, _) = run_to_end_in(name, prog, args, env);
    (stdout, report)
}

pub fn run_to_end_in(
    name: &str,
    prog: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (String, Report, TestDir) {
    let dir = TestDir::new(name);
    let mut cmd = vmshim_run_cmd(&dir, prog, args);
    cmd.envs(env.iter().copied());
    let out = run_with_timeout(&mut cmd, TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report = read_report(&dir.join("report.json"));
    (stdout, report, dir)
}

/// Reads /proc at a started handshake's ready line, releases the target, loads the report.
pub fn finish_handshake(dir: &TestDir, h: Handshake) -> Run {
    let pid = h.pid();
    let (maps, smaps, tasks) = (read_maps(pid), read_smaps_flags(pid), task_ids(pid));
    let lines = h.lines().to_vec();
    let out = h.finish();
    assert!(
        out.status.success(),
        "vmshim run failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report = read_report(&dir.join("report.json"));
    Run { pid, lines, maps, smaps, tasks, out, report, trace: dir.join("t.trace") }
}

/// The end of a shared object's last PT_LOAD segment (p_vaddr + p_memsz), from `readelf -lW`.
pub fn load_span(path: &str) -> u64 {
    let out = run_with_timeout(Command::new("readelf").args(["-lW", path]), TIMEOUT);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with("LOAD"))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            parse_hex(w[2]) + parse_hex(w[5])
        })
        .max()
        .unwrap()
}

/// The NEEDED entries of an ELF file's dynamic section, as `readelf -d` prints them.
pub fn needed(path: &str) -> Vec<String> {
    let out = run_with_timeout(Command::new("readelf").args(["-d", path]), TIMEOUT);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split('[').nth(1)?.trim_end_matches(']').to_string()))
        .collect()
}

/// For a Go target, which may still start a thread (and its arena) or grow an arena after its
/// ready line: reads /proc once it holds still after the ready line, and runs until the
/// kernel's map at exit has the size and the permissions /proc showed then (at most 5 runs),
/// so that the report is held against /proc read at the same moment.
pub fn run_handshake_settled(dir: &TestDir, prog: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut seen = Vec::new();
    for _ in 0..5 {
        let mut cmd = vmshim_run_cmd(dir, prog, args);
        cmd.envs(env.iter().copied());
        let h = Handshake::start(&mut cmd, TIMEOUT);
        // The Go runtime may still be starting a thread (and its first malloc, an arena) as it
        // prints: wait until two reads of the map 50 ms apart agree (ex6 sleeps a second).
        let mut prev = read_maps(h.pid());
        for _ in 0..8 {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let now = read_maps(h.pid());
            let same = now.len() == prev.len() && vsz_bytes(&now) == vsz_bytes(&prev);
            prev = now;
            if same {
                break;
            }
        }
        let run = finish_handshake(dir, h);
        let (maps, report) = (&run.maps, &run.report);
        let same_layout = maps.iter().filter(|m| m.path != "[vsyscall]").all(|m| {
            regions_in(report, m.start, m.end).iter().all(|r| r.prot == m.perms)
                && regions_in(report, m.start, m.end).first().is_some_and(|r| r.start <= m.start)
        });
        let exit_vsz = report.vsz.kernel_final_bytes;
        if exit_vsz == Some(vsz_bytes(maps)) && same_layout {
            return run;
        }
        seen.push((vsz_bytes(maps), exit_vsz));
    }
    panic!("the target kept changing its address space after its ready line: {seen:?}")
}

/// The report at `path` as JSON, for a test that compares two reports whole (the types have no
/// `PartialEq`, and JSON equality also sees a field the types would drop); it is read through
/// the format's types as well. Every other reader takes [`read_report`].
pub fn load_report(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("no report at {}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("report is not JSON ({e}): {text}"));
    typed_report(&v);
    v
}

/// A number of `vmshim events --json` (which has no typed format of its own).
pub fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not an unsigned number: {v}"))
}

/// The report's regions overlapping `[start, end)`.
pub fn regions_in(report: &Report, start: u64, end: u64) -> Vec<&report::Region> {
    report.regions.iter().filter(|r| r.start < end && r.end > start).collect()
}

/// Bytes of `[start, end)` the report files under `category`.
pub fn bytes_in(report: &impl AsReport, start: u64, end: u64, category: &str) -> u64 {
    regions_in(&report.report(), start, end)
        .iter()
        .filter(|r| r.category == category)
        .map(|r| r.end.min(end) - r.start.max(start))
        .sum()
}

/// The named functions of a region's stack, innermost first.
pub fn stack_functions(region: &report::Region) -> Vec<&str> {
    region.stack.iter().filter_map(|f| f.function.as_deref()).collect()
}

pub fn category_bytes(report: &impl AsReport, name: &str) -> u64 {
    report.report().categories.iter().filter(|c| c.category == name).map(|c| c.bytes).sum()
}

/// The figures every report must satisfy against /proc read at the same quiet moment.
pub fn assert_reconciles(run: &Run) {
    let r = &run.report;
    let vsz = vsz_bytes(&run.maps);
    assert_eq!(r.vsz.final_bytes, vsz, "report VSZ vs /proc/{}/maps", run.pid);
    assert_eq!(r.vsz.kernel_final_bytes, Some(vsz), "captured kernel VSZ vs /proc/{}/maps", run.pid);
    assert!(r.vsz.peak_bytes >= vsz);
    let cats: u64 = r.categories.iter().map(|c| c.bytes).sum();
    assert_eq!(cats, vsz, "categories add up to VSZ");
    let regs: u64 = r.regions.iter().map(|x| x.end - x.start).sum();
    assert_eq!(regs, vsz, "regions add up to VSZ");
    // Every /proc region is covered by report regions, with the kernel's permissions.
    for m in &run.maps {
        let covering: u64 = regions_in(r, m.start, m.end)
            .iter()
            .inspect(|x| assert_eq!(x.prot, m.perms, "{m:?}"))
            .map(|x| x.end.min(m.end) - x.start.max(m.start))
            .sum();
        if m.path != "[vsyscall]" {
            assert_eq!(covering, m.len(), "{m:?} is covered exactly once");
        }
    }
    assert_eq!(r.process.pid, run.pid);
    assert_eq!(r.process.exit, "exited 0");
    assert_eq!(r.events.dropped, 0);
    // The shim's own cost is measured: every recorded call was timed.
    assert!(r.events.timed > 0 && r.events.recording_ns > 0, "{:?}", r.events);
    // The shim's own trace mapping and image (with its .bss, the anonymous region the loader
    // maps right after the image's last file page) are its own category, and so are libraries
    // loaded only because the shim needs them (no other mapped ELF file lists them as NEEDED).
    let mapped_files: BTreeSet<&str> =
        run.maps.iter().filter(|m| m.path.starts_with('/')).map(|m| m.path.as_str()).collect();
    let shim_path = mapped_files.iter().find(|p| p.ends_with("/libvmshim.so")).copied().unwrap();
    let others_need: BTreeSet<String> =
        mapped_files.iter().filter(|p| **p != shim_path).flat_map(|p| needed(p)).collect();
    let shim_needs = needed(shim_path);
    let shim_only: Vec<&str> = mapped_files
        .iter()
        .copied()
        .filter(|p| shim_needs.iter().any(|n| p.ends_with(&format!("/{n}")) && !others_need.contains(n)))
        .collect();
    let is_own = |m: &MapsRegion| {
        m.path == shim_path || m.path.contains("/t.trace") || shim_only.contains(&m.path.as_str())
    };
    let mut own: u64 = run.maps.iter().filter(|m| is_own(m)).map(|m| m.len()).sum();
    // The .bss: from the image's last file page to the end of its last PT_LOAD segment, one
    // region or several (a process that forked has its caches' pages set wipe-on-fork, which
    // splits the mapping).
    let base = run.maps.iter().filter(|m| m.path == shim_path).map(|m| m.start).min().unwrap();
    let file_end = run.maps.iter().filter(|m| m.path == shim_path).map(|m| m.end).max().unwrap();
    let span_end = base + load_span(shim_path).div_ceil(page_size()) * page_size();
    let mut at = file_end;
    while let Some(bss) = run.maps.iter().find(|m| m.start == at && m.path.is_empty() && m.start < span_end) {
        own += bss.end.min(span_end) - bss.start;
        at = bss.end;
    }
    assert_eq!(
        category_bytes(r, "vmshim"),
        own,
        "vmshim = the shim's image, its own libraries {shim_only:?} (it needs {shim_needs:?}) and its trace"
    );
    for m in run.maps.iter().filter(|m| m.path == "[stack]") {
        assert_eq!(bytes_in(r, m.start, m.end, "main_stack"), m.len());
    }
}

#[test]
fn threads_stacks_are_attributed_to_each_thread_and_its_creator() {
    let dir = TestDir::new("under_vmshim_threads");
    let page = page_size();
    let sizes = [(16 * page).to_string(), (64 * page).to_string(), "0".to_string()];
    let mut args = vec!["3"];
    args.extend(sizes.iter().map(String::as_str));
    let run = run_handshake(&dir, &build_c("threads"), &args);
    assert_reconciles(&run);
    let threads = parse_thread_lines(&run.lines);
    assert_eq!(threads.len(), 3);
    let rows = &run.report.threads;
    for t in &threads {
        let (lo, hi) = (t.lo - t.guard, t.hi);
        assert_eq!(bytes_in(&run.report, lo, hi, "thread_stack"), hi - lo, "thread {} stack + guard", t.tid);
        for r in regions_in(&run.report, lo, hi) {
            assert_eq!((r.tid, r.creator_tid), (Some(t.tid), Some(run.pid)));
            let f = stack_functions(r);
            assert!(f.first().is_some_and(|f| *f == "main"), "creator stack starts in main: {f:?}");
        }
        let row = rows.iter().find(|x| x.tid == t.tid).unwrap_or_else(|| panic!("no row for {}", t.tid));
        assert_eq!((row.stack_bytes, row.creator_tid), (hi - lo, Some(run.pid)));
    }
    // The threads never malloc, so no arena exists and almost everything is explained: what
    // remains is glibc's own early work (the main thread's static TLS), under 0.1%.
    let vsz = vsz_bytes(&run.maps);
    assert!(
        category_bytes(&run.report, "unattributed") * 1000 <= vsz,
        "{}",
        String::from_utf8_lossy(&run.out.stderr)
    );
}

#[test]
fn every_call_of_mapseq_is_an_event_and_every_live_mapping_its_region() {
    let dir = TestDir::new("under_vmshim_mapseq");
    let run = run_handshake(&dir, &build_c("mapseq"), &[]);
    assert_reconciles(&run);
    let calls = parse_call_lines(&run.lines);
    // `vmshim events --json` is not vmshim-report/1 (no types of its own): read as JSON.
    let events = events_json(&run.trace);
    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| e["tid"] == run.pid && e["own"] == false && e["kind"] != "thread_start")
        .collect();
    // The program's own calls, in its order, appear among the recorded ones with the same
    // arguments and results (stdio and the loader may add calls of their own around them).
    let mut at = 0;
    for c in &calls {
        let kind = if c.func == "mmap64" { "mmap" } else { c.func.as_str() };
        let want_result =
            if c.result.starts_with("0x") { parse_hex(&c.result) } else { c.result.parse::<u64>().unwrap() };
        let found = mine[at..].iter().position(|e| {
            e["kind"] == kind
                && u(&e["result"]) == want_result
                && c.args.iter().all(|(k, v)| {
                    let got = &e["args"][k.as_str()];
                    let want =
                        if v.starts_with("0x") { parse_hex(v) as i64 } else { v.parse::<i64>().unwrap() };
                    got.as_i64() == Some(want) || got.as_u64() == Some(want as u64)
                })
        });
        let i = found.unwrap_or_else(|| panic!("call {c:?} not recorded after event {at}: {mine:#?}"));
        at += i + 1;
    }
    for e in parse_expect_lines(&run.lines) {
        let want = if e.path.is_some() { "file_mmap" } else { "anon_mmap" };
        assert_eq!(bytes_in(&run.report, e.start, e.end, want), e.end - e.start, "{e:?}");
        for r in regions_in(&run.report, e.start, e.end) {
            assert_eq!(r.tid, Some(run.pid));
            assert!(stack_functions(r).contains(&"main"), "{r:?}");
        }
    }
    for (s, e) in parse_hole_lines(&run.lines) {
        assert!(regions_in(&run.report, s, e).is_empty(), "hole {s:#x}-{e:#x} is not in the report");
    }
}

/// `vmshim events --json` of a trace, one object per line. Events have no typed format (they
/// are not vmshim-report/1), so they stay JSON values.
pub fn events_json(trace: &Path) -> Vec<Value> {
    let out = run_with_timeout(Command::new(vmshim_bin()).arg("events").arg("--json").arg(trace), TIMEOUT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn a_fork_child_writes_its_own_trace_and_leaves_the_parents_intact() {
    let dir = TestDir::new("under_vmshim_forker");
    let run = run_handshake(&dir, &build_c("forker"), &[]);
    assert_reconciles(&run);
    let child_line = run.lines.iter().find(|l| l.starts_with("child ") && l.contains(" mmap ")).unwrap();
    let w: Vec<&str> = child_line.split_whitespace().collect();
    let (child, start) = (w[1].parse::<u32>().unwrap(), parse_hex(w[3]));
    let parent_events = events_json(&run.trace);
    assert!(parent_events.iter().all(|e| e["tid"] != child), "no record of the child in the parent's trace");
    let child_trace = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p != &run.trace && p.file_name().unwrap().to_string_lossy().starts_with("t.trace"))
        .expect("the child's trace");
    let child_events = events_json(&child_trace);
    assert!(
        child_events.iter().any(|e| e["kind"] == "mmap" && e["tid"] == child && u(&e["result"]) == start),
        "the child's mmap at {start:#x} is in {}",
        child_trace.display()
    );
    let parent_line = run.lines.iter().find(|l| l.starts_with("parent ")).unwrap();
    let p: Vec<&str> = parent_line.split_whitespace().collect();
    let (ps, pe) = (parse_hex(p[3]), parse_hex(p[4]));
    assert_eq!(bytes_in(&run.report, ps, pe, "anon_mmap"), pe - ps);
}

#[test]
fn a_rust_program_threads_are_found() {
    let dir = TestDir::new("under_vmshim_rustprog");
    let run = run_handshake(&dir, &build_rust("rustprog"), &[]);
    assert_reconciles(&run);
    for line in run.lines.iter().filter(|l| l.starts_with("thread ")) {
        let tid: u32 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
        let stacks: Vec<&report::Region> = run
            .report
            .regions
            .iter()
            .filter(|r| r.category == "thread_stack" && r.tid == Some(tid))
            .collect();
        assert!(!stacks.is_empty(), "thread {tid} has its stack attributed");
        let smaps_stack = run.smaps.iter().find(|(m, _)| stacks.iter().any(|s| s.start == m.start)).unwrap();
        assert!(smaps_stack.0.path.is_empty(), "a thread stack is anonymous");
        assert!(
            stacks.iter().any(|s| stack_functions(s).iter().any(|f| f.contains("std::thread"))),
            "{stacks:?}"
        );
    }
}

#[test]
fn errno_and_results_are_the_same_with_and_without_the_shim() {
    // Every hook: the memory calls, pthread_create, the malloc family, the resolver, dlopen.
    let dir = TestDir::new("under_vmshim_errno");
    let prog = build_c("errnos");
    let bare = run_with_timeout(Command::new(&prog).current_dir(dir.path()), TIMEOUT);
    let shimmed = run_with_timeout(
        Command::new(&prog)
            .current_dir(dir.path())
            .env("LD_PRELOAD", shim_lib())
            .env("VMSHIM_OUT", dir.join("e.trace")),
        TIMEOUT,
    );
    assert!(bare.status.success() && shimmed.status.success());
    let (a, b) = (String::from_utf8_lossy(&bare.stdout), String::from_utf8_lossy(&shimmed.stdout));
    assert!(a.lines().count() >= 8, "{a}");
    assert_eq!(a, b);
    let recorded = events_json(&dir.join("e.trace"));
    // Each failing mmap/munmap/mprotect/mremap is recorded with its errno.
    let failed = recorded.iter().filter(|e| e["errno"] != 0).count();
    let syscall_failures = a
        .lines()
        .filter(|l| l.starts_with("fail "))
        .filter(|l| {
            ["mmap", "munmap", "mprotect", "mremap"].contains(&l.split_whitespace().nth(1).unwrap_or(""))
        })
        .count();
    assert_eq!(failed, syscall_failures);
}
