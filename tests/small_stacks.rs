//! Issue 11: the hooks and the shim's start-up run on small stacks — a PTHREAD_STACK_MIN thread,
//! a fork child of a small thread, a SIGSEGV handler on the smallest alternate stack on which
//! the same handler works without vmshim — exactly as without vmshim, and record what they do.
//! Every figure is measured in the test: the smallest working sigaltstack by a binary search of
//! bare runs, each hook's stack use by a bare run and a preloaded run of the same binary.

use crate::common::*;
use crate::under_vmshim::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// How many bytes of the caller's stack a hook may use beyond what the libc function it stands
/// for uses, as stated in the shim's crate doc (Design constraints), which the test checks.
const SYSCALL_HOOK_BUDGET: u64 = 0;
const OTHER_HOOK_BUDGET: u64 = 1024;
const SYSCALL_HOOKS: [&str; 5] = ["mmap", "munmap", "mprotect", "mremap", "pthread_create"];
const MAP_FIXED: u64 = 0x10;
/// The classic SIGSTKSZ (glibc >= 2.34 makes the macro a sysconf call, 14,528 bytes here).
const SIGSTKSZ_CLASSIC: u64 = 8192;

fn smallstack() -> PathBuf {
    build_c("smallstack")
}

/// Runs `smallstack ARGS` in `dir`, preloaded or bare; traces go to `dir/t.PID.trace`.
fn run(dir: &TestDir, args: &[&str], preload: bool) -> Output {
    let mut cmd = Command::new(smallstack());
    cmd.args(args).current_dir(dir.path()).env("VMSHIM_OUT", dir.join("t.%p.trace"));
    if preload {
        cmd.env("LD_PRELOAD", shim_lib());
    } else {
        cmd.env_remove("LD_PRELOAD");
    }
    run_with_timeout(&mut cmd, TIMEOUT)
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn describe(out: &Output) -> String {
    format!("{}: {} / {}", out.status, text(out), String::from_utf8_lossy(&out.stderr))
}

fn trace_of(dir: &TestDir, pid: u32) -> PathBuf {
    dir.join(format!("t.{pid}.trace"))
}

/// The trace's events but the shim's own, as JSON: `vmshim events` has no typed format (it is not
/// vmshim-report/1).
fn program_calls(trace: &Path) -> Vec<Value> {
    events_json(trace).into_iter().filter(|e| e["own"] != true).collect()
}

/// The number after `word` on a line of `out` that starts with it.
fn field(out: &str, word: &str) -> Option<u64> {
    let line = out.lines().find(|l| l.split_whitespace().next() == Some(word))?;
    let v = line.split_whitespace().nth(1)?;
    v.strip_prefix("0x").map_or_else(|| v.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
}

/// "child PID status S" from a fork mode.
fn child(out: &str) -> (u32, i64) {
    let line =
        out.lines().find(|l| l.starts_with("child ")).unwrap_or_else(|| panic!("no child line: {out}"));
    let w: Vec<&str> = line.split_whitespace().collect();
    (w[1].parse().unwrap(), w[3].parse().unwrap())
}

/// Whether the handler maps its page, bare, on a `size`-byte sigaltstack.
fn works_bare(dir: &TestDir, size: u64) -> bool {
    run(dir, &["altstack", &size.to_string()], false).status.success()
}

/// The smallest sigaltstack size on which the SIGSEGV handler works without vmshim, by binary
/// search up to the classic SIGSTKSZ (enough). AT_MINSIGSTKSZ, the kernel's figure for its
/// frame, is only reported: the handler works bare a little below it on this machine.
fn smallest_bare_altstack(dir: &TestDir) -> u64 {
    let out = run(dir, &["minsig"], false);
    let min = field(&text(&out), "minsigstksz").expect("AT_MINSIGSTKSZ");
    let (mut lo, mut hi) = (0, SIGSTKSZ_CLASSIC);
    assert!(works_bare(dir, hi), "the handler works bare on {hi} bytes");
    // Invariant: fails at lo, works at hi.
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if works_bare(dir, mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    eprintln!("smallest sigaltstack that works bare: {hi} bytes (AT_MINSIGSTKSZ {min})");
    hi
}

/// The MAP_FIXED mmaps of the program's own at `addr` in `trace`.
fn fixed_mmaps_at(trace: &Path, addr: u64) -> usize {
    program_calls(trace)
        .iter()
        .filter(|e| {
            e["kind"] == "mmap" && u(&e["args"]["flags"]) & MAP_FIXED != 0 && u(&e["args"]["addr"]) == addr
        })
        .count()
}

/// Issue 11: a PTHREAD_STACK_MIN thread that calls printf (whose first malloc attaches an
/// arena), malloc/free of a small and a mapped chunk, and mmap/munmap, runs as it does bare,
/// and every call is in the trace.
#[test]
fn a_pthread_stack_min_thread_calling_printf_malloc_and_mmap_runs_as_bare_and_is_traced() {
    let dir = TestDir::new("small_stacks_thread");
    let bare = run(&dir, &["thread"], false);
    assert!(bare.status.success(), "bare: {}", describe(&bare));
    let shim = run(&dir, &["thread"], true);
    assert_eq!(shim.status.code(), bare.status.code(), "the same exit status: {}", describe(&shim));
    assert_eq!(text(&shim), text(&bare), "the same output");
    assert!(text(&shim).contains("thread printf 42 words"));

    let trace = trace_of(&dir, shim_pid(&dir));
    let calls = program_calls(&trace);
    let starts: Vec<&Value> = calls.iter().filter(|e| e["kind"] == "thread_start").collect();
    assert_eq!(starts.len(), 1, "the thread's start is recorded");
    let tid = &starts[0]["tid"];
    let mine = |kind: &str, pred: &dyn Fn(&Value) -> bool| {
        calls.iter().filter(|e| e["kind"] == kind && (e["tid"] == *tid || tid.is_null()) && pred(e)).count()
    };
    let len = 5 * page_size();
    assert_eq!(mine("mmap", &|e| u(&e["args"]["length"]) == len), 1, "the thread's mmap: {calls:?}");
    assert_eq!(mine("munmap", &|e| u(&e["args"]["length"]) == len), 1, "its munmap");
    assert_eq!(mine("malloc_large", &|e| u(&e["args"]["request"]) == 1 << 20), 1, "its 1 MiB malloc");
    assert_eq!(mine("free_large", &|_| true), 1, "its free of it");
    assert_eq!(mine("arena_attach", &|_| true), 1, "printf's first malloc attached an arena");
    for e in &calls {
        if ["mmap", "munmap", "malloc_large", "arena_attach"].contains(&e["kind"].as_str().unwrap_or("")) {
            assert!(!e["stack"].as_array().unwrap().is_empty(), "a call stack: {e}");
        }
    }
}

/// The pid of the one process that wrote a trace in `dir`.
fn shim_pid(dir: &TestDir) -> u32 {
    let pids: Vec<u32> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("t.")?.strip_suffix(".trace")?.parse().ok()
        })
        .collect();
    assert_eq!(pids.len(), 1, "one trace: {pids:?}");
    pids[0]
}

/// Issue 11: a thread with a 32 KiB or 64 KiB stack forks; the child's first mmap (which runs
/// the shim's start-up again, for the child's own trace) works, and the child's trace has it.
#[test]
fn a_fork_child_of_a_32k_or_64k_thread_maps_memory_and_its_trace_has_the_mmap() {
    for size in [32u64 << 10, 64 << 10] {
        let dir = TestDir::new(&format!("small_stacks_fork_{size}"));
        let out = run(&dir, &["fork", &size.to_string()], true);
        assert!(out.status.success(), "{size}: {}", describe(&out));
        let (pid, status) = child(&text(&out));
        assert_eq!(status, 0, "{size}: the child exited 0");
        let calls = program_calls(&trace_of(&dir, pid));
        let len = 7 * page_size();
        let mmaps = calls.iter().filter(|e| e["kind"] == "mmap" && u(&e["args"]["length"]) == len).count();
        assert_eq!(mmaps, 1, "{size}: the child's mmap is in its trace: {calls:?}");
    }
}

/// Issue 11: a SIGSEGV handler that maps the faulting page (MAP_FIXED) works under vmshim on
/// a sigaltstack of the classic SIGSTKSZ (8 KiB), of 12 KiB, and of the smallest size on which
/// it works bare (found here, bare): the hooks write nothing to the caller's stack beyond its
/// return address, and the mmap is recorded.
#[test]
fn a_sigsegv_handler_maps_its_page_on_8k_12k_and_the_smallest_bare_altstack() {
    let dir = TestDir::new("small_stacks_altstack");
    let smallest = smallest_bare_altstack(&dir);
    for size in [SIGSTKSZ_CLASSIC, 12 << 10, smallest] {
        for old in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let _ = std::fs::remove_file(old.path());
        }
        let out = run(&dir, &["altstack", &size.to_string()], true);
        assert!(out.status.success(), "{size} bytes (smallest bare {smallest}): {}", describe(&out));
        let page = field(&text(&out), "mapped").expect("mapped ADDR");
        let trace = trace_of(&dir, shim_pid(&dir));
        assert_eq!(fixed_mmaps_at(&trace, page), 1, "{size}: the handler's mmap is recorded");
    }
}

/// Issue 11: the shim's start-up itself on a small stack. A PTHREAD_STACK_MIN thread forks;
/// the child's first hooked call is the SIGSEGV handler's mmap on the smallest sigaltstack that
/// works bare, so the child's start-up (its own trace, the maps, the modules) runs from there.
#[test]
fn start_up_in_a_fork_child_runs_from_a_handler_on_the_smallest_bare_altstack() {
    let dir = TestDir::new("small_stacks_startup");
    let smallest = smallest_bare_altstack(&dir);
    let bare = run(&dir, &["forkaltstack", &smallest.to_string()], false);
    assert!(bare.status.success(), "bare: {}", describe(&bare));
    assert_eq!(child(&text(&bare)).1, 0, "bare, the child's handler works");
    for old in std::fs::read_dir(dir.path()).unwrap().flatten() {
        let _ = std::fs::remove_file(old.path());
    }
    let out = run(&dir, &["forkaltstack", &smallest.to_string()], true);
    assert!(out.status.success(), "{smallest} bytes: {}", describe(&out));
    let (pid, status) = child(&text(&out));
    assert_eq!(status, 0, "the child's handler worked under vmshim ({smallest} bytes)");
    let page = field(&text(&out), "mapped").expect("mapped ADDR");
    let trace = trace_of(&dir, pid);
    assert_eq!(fixed_mmaps_at(&trace, page), 1, "the child's first hooked call is recorded");
    let report = run_with_timeout(Command::new(vmshim_bin()).args(["report", "--json"]).arg(&trace), TIMEOUT);
    assert!(report.status.success(), "{}", String::from_utf8_lossy(&report.stderr));
    let report = parse_report(&report.stdout);
    assert_eq!(u64::from(report.process.pid), pid as u64, "the child's start record");
    assert!(
        report.regions.iter().any(|r| r.category == "library"),
        "the child's start-up map and modules were recorded"
    );
}

/// Issue 11: each hook's use of its caller's stack, measured by painting a thread's stack and
/// finding the lowest byte a call changed, bare and preloaded (the same binary, linked with
/// `-z now` so that no lazy binding runs in the measured call), stays within the budget the
/// crate doc states.
#[test]
fn each_hook_stays_within_the_caller_stack_budget_of_the_crate_doc() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../shim/src/lib.rs")).unwrap();
    for stated in [
        format!("{SYSCALL_HOOK_BUDGET} bytes of the caller's stack"),
        format!("at most {OTHER_HOOK_BUDGET} bytes"),
    ] {
        assert!(doc.contains(&stated), "the crate doc states the budget: {stated:?}");
    }
    let bin = build_c_with("smallstack", &["-Wl,-z,now"]);
    let dir = TestDir::new("small_stacks_depth");
    let depths = |preload: bool| {
        let mut cmd = Command::new(&bin);
        cmd.arg("depth").current_dir(dir.path()).env("VMSHIM_OUT", dir.join("t.%p.trace"));
        if preload {
            cmd.env("LD_PRELOAD", shim_lib());
        }
        let out = run_with_timeout(&mut cmd, TIMEOUT);
        assert!(out.status.success(), "{}", describe(&out));
        text(&out)
            .lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (w.first() == Some(&"depth")).then(|| (w[1].to_string(), w[2].parse::<u64>().unwrap()))
            })
            .collect::<Vec<_>>()
    };
    let (bare, shim) = (depths(false), depths(true));
    assert_eq!(bare.len(), 11, "{bare:?}");
    let mut over = vec![];
    for ((call, b), (call2, s)) in bare.iter().zip(&shim) {
        assert_eq!(call, call2);
        let budget =
            if SYSCALL_HOOKS.contains(&call.as_str()) { SYSCALL_HOOK_BUDGET } else { OTHER_HOOK_BUDGET };
        eprintln!("{call}: bare {b}, preloaded {s} bytes below the measuring frame");
        if s.saturating_sub(*b) > budget {
            over.push(format!("{call}: {} bytes more than bare (budget {budget})", s - b));
        }
    }
    assert!(over.is_empty(), "{over:?}");
}
