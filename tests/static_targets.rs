//! Issue 15: static targets under `vmshim run`, recorded by the syscall recorder (ptrace +
//! seccomp-bpf) since LD_PRELOAD cannot reach them. Each report is held against /proc read at the
//! target's handshake, the same moment the kernel's map at exit shows (the targets map nothing
//! after it).

use crate::common::report::Region;
use crate::common::*;
use crate::under_vmshim::*;
use std::process::Command;

/// What every recorded static target's report must satisfy against /proc read at its handshake.
fn assert_recorded_reconciles(run: &Run) {
    let r = &run.report;
    let vsz = vsz_bytes(&run.maps);
    assert!(r.recorder.starts_with("syscalls"), "recorder: {}", r.recorder);
    assert_eq!(r.vsz.final_bytes, vsz, "report VSZ vs /proc/{}/maps", run.pid);
    assert_eq!(r.vsz.kernel_final_bytes, Some(vsz), "kernel VSZ at exit vs /proc/{}/maps", run.pid);
    let cats: u64 = r.categories.iter().map(|c| c.bytes).sum();
    assert_eq!(cats, vsz, "categories add up to VSZ");
    for m in run.maps.iter().filter(|m| m.path != "[vsyscall]") {
        let covering: u64 = regions_in(r, m.start, m.end)
            .iter()
            .inspect(|x| assert_eq!(x.prot, m.perms, "{m:?}"))
            .map(|x| x.end.min(m.end) - x.start.max(m.start))
            .sum();
        assert_eq!(covering, m.len(), "{m:?} is covered exactly once");
    }
    // >= 99.9% attributed.
    let unattributed = category_bytes(r, "unattributed");
    assert!(unattributed * 1000 <= vsz, "{unattributed} of {vsz} bytes unattributed");
    assert_eq!(r.process.pid, run.pid);
    assert_eq!(r.process.exit, "exited 0");
    assert_eq!(r.events.dropped, 0);
    assert!(r.events.timed > 0 && r.events.recording_ns > 0, "{:?}", r.events);
    for m in run.maps.iter().filter(|m| m.path == "[stack]") {
        assert_eq!(bytes_in(r, m.start, m.end, "main_stack"), m.len());
    }
    // Every thread /proc listed has its row, made by a thread of the process.
    for tid in &run.tasks {
        let row =
            r.threads.iter().find(|t| t.tid == *tid).unwrap_or_else(|| panic!("no row for thread {tid}"));
        if *tid != run.pid {
            let creator = row.creator_tid.unwrap_or_else(|| panic!("thread {tid} has no creator"));
            assert!(run.tasks.contains(&creator), "thread {tid}'s creator {creator}");
        }
    }
}

fn static_go(version: &str) {
    let dir = TestDir::new(&format!("static_ex2_{version}"));
    let prog = build_go_with("ex2", &go_toolchain(version), false, &[]);
    assert_eq!(elf_interpreter(&prog), None, "ex2 built CGO_ENABLED=0 is static");
    let run = run_handshake_settled(&dir, &prog, &[], &[]);
    assert_recorded_reconciles(&run);
    let r = &run.report;
    // The Go runtime's reservations are Go's, each with its purpose and the runtime's stack.
    let go: Vec<&Region> = r.regions.iter().filter(|x| x.category == "go_runtime").collect();
    let go_bytes: u64 = go.iter().map(|x| x.end - x.start).sum();
    // Every anonymous mapping but the binary's .bss (right after its last file page) is the
    // runtime's.
    let image_ends: Vec<u64> = run.maps.iter().filter(|m| m.path.starts_with('/')).map(|m| m.end).collect();
    let anon: u64 = run
        .maps
        .iter()
        .filter(|m| m.path.is_empty() && !image_ends.contains(&m.start))
        .map(|m| m.len())
        .sum();
    assert_eq!(go_bytes, anon, "every anonymous mapping of a static Go program is the runtime's");
    for reg in &go {
        assert!(reg.purpose.as_ref().is_some_and(|p| !p.is_empty()), "{reg:?}");
        let f = stack_functions(reg);
        assert!(f.iter().any(|f| f.starts_with("runtime.sys")), "{f:?}");
    }
    let purposes: Vec<&str> = r.go_runtime.iter().map(|g| g.purpose.as_str()).collect();
    assert!(purposes.contains(&"heap reservation") || purposes.contains(&"heap"), "{purposes:?}");
    // Go's threads come from runtime.newosproc's clone: each has its start record, with the
    // creating thread and a stack that the recorder unwound through Go's frame pointers.
    let trace = vmshim_trace::parse(&std::fs::read(&run.trace).unwrap()).expect("a readable trace");
    let starts: Vec<&vmshim_trace::decode::ThreadStart> = trace
        .events
        .iter()
        .filter_map(|e| match e {
            vmshim_trace::Event::ThreadStart(t) => Some(t),
            _ => None,
        })
        .collect();
    let others: Vec<&u32> = run.tasks.iter().filter(|t| **t != run.pid).collect();
    assert!(!others.is_empty(), "Go starts threads of its own");
    for tid in others {
        let s = starts.iter().find(|s| s.tid == *tid).unwrap_or_else(|| panic!("no thread start for {tid}"));
        assert!(run.tasks.contains(&s.creator_tid), "thread {tid}: creator {}", s.creator_tid);
        assert!(s.creator_stack.len() >= 4, "thread {tid}: creator stack {:x?}", s.creator_stack);
        assert_ne!(s.sp, 0, "thread {tid}: its stack pointer from clone's arguments");
    }
}

#[test]
fn static_go_ex2_current_go_is_recorded_and_reconciles() {
    static_go("1.27.3");
}

#[test]
fn static_go_ex2_go_1_19_is_recorded_and_reconciles() {
    static_go("1.19");
}

/// A static C program with threads that are alive at exit: every thread's stack is its own,
/// made in pthread_create, seen as the system call it is.
fn static_c(compiler: &str) {
    let dir = TestDir::new(&format!("static_c_{compiler}"));
    let prog = dir.join("static_threads");
    let src = programs_dir().join("static_threads.c");
    let mut cc = Command::new(compiler);
    cc.args(["-std=gnu11", "-O0", "-g", "-static", "-pthread", "-o"]).arg(&prog).arg(&src);
    let out = run_with_timeout(&mut cc, 120);
    assert!(
        out.status.success(),
        "{compiler}: {} (scripts/test.sh installs musl-tools)",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(elf_interpreter(&prog), None, "-static gives a static program");
    let run = run_handshake(&dir, &prog, &["3"]);
    assert_recorded_reconciles(&run);
    let r = &run.report;
    let threads = parse_thread_lines(&run.lines);
    assert_eq!(threads.len(), 3);
    for t in &threads {
        assert_eq!(bytes_in(r, t.lo, t.hi, "thread_stack"), t.hi - t.lo, "thread {}'s stack", t.tid);
        for reg in regions_in(r, t.lo, t.hi) {
            assert_eq!(reg.tid, Some(t.tid), "{reg:?}");
            assert_eq!(reg.creator_tid, Some(run.pid), "{reg:?}");
            // The stack starts in libc, at the call that made or started the thread (how far
            // it goes on is static_c_stacks's matter).
            let f = stack_functions(reg);
            assert!(
                f.iter().any(|f| ["mmap", "__mmap", "clone", "clone3", "__clone_internal"].contains(f)),
                "{f:?}"
            );
        }
    }
    if compiler == "gcc" {
        // glibc's arenas (one per thread that called malloc) are its own mmaps, seen with their
        // caller; the kernel's MAP_NORESERVE mark says which regions they are.
        let arenas: Vec<&MapsRegion> =
            run.smaps.iter().filter(|(_, f)| f.iter().any(|f| f == "nr")).map(|(m, _)| m).collect();
        assert!(!arenas.is_empty(), "glibc made arenas");
        for m in arenas {
            for reg in regions_in(r, m.start, m.end) {
                let f = stack_functions(reg);
                assert!(f.iter().any(|f| *f == "alloc_new_heap" || *f == "new_heap"), "{m:?}: {f:?}");
            }
        }
    }
}

#[test]
fn static_glibc_threads_are_recorded_and_reconcile() {
    static_c("gcc");
}

#[test]
fn static_musl_threads_are_recorded_and_reconcile() {
    static_c("musl-gcc");
}

/// Issue 15: the recorder unwinds static libc code by its `.eh_frame` rules (glibc's libc.a has
/// them) or, where it has none (musl's libc.a is built without unwind tables or frame
/// pointers), by a scan for the next return address into code that has rules; either way a
/// stack made in libc reaches the program's function that called into it, and main.
fn static_c_stacks(compiler: &str) {
    let dir = TestDir::new(&format!("static_callers_{compiler}"));
    let prog = dir.join("static_callers");
    let mut cc = Command::new(compiler);
    cc.args(["-std=gnu11", "-O0", "-g", "-static", "-pthread", "-o"])
        .arg(&prog)
        .arg(programs_dir().join("static_callers.c"));
    let out = run_with_timeout(&mut cc, 120);
    assert!(out.status.success(), "{compiler}: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(elf_interpreter(&prog), None, "-static gives a static program");
    let run = run_handshake(&dir, &prog, &[]);
    assert_recorded_reconciles(&run);
    let r = &run.report;
    let reaches = |f: &[&str], caller: &str| {
        let at = f.iter().position(|f| *f == caller);
        at.is_some() && f.iter().skip(at.unwrap_or(0)).any(|f| *f == "main")
    };
    // Each thread's stack, with the call stack that created the thread.
    let others: Vec<&u32> = run.tasks.iter().filter(|t| **t != run.pid).collect();
    assert_eq!(others.len(), 2, "the program's two threads");
    for tid in others {
        let stacks: Vec<&Region> =
            r.regions.iter().filter(|x| x.category == "thread_stack" && x.tid == Some(*tid)).collect();
        assert!(!stacks.is_empty(), "thread {tid} has its stack");
        for reg in stacks {
            let f = stack_functions(reg);
            assert!(reaches(&f, "start_worker_threads"), "thread {tid}'s stack was made by {f:?}");
        }
    }
    // The 8 MiB malloc: libc maps its chunk, with the program's caller on the stack.
    let big = run
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("big 0x"))
        .and_then(|a| u64::from_str_radix(a, 16).ok())
        .expect("the program prints its block's address");
    let chunk = regions_in(r, big, big + 1);
    assert_eq!(chunk.len(), 1, "one region holds the block: {chunk:?}");
    let f = stack_functions(chunk[0]);
    assert!(reaches(&f, "reserve_big_block"), "the block's mapping was made by {f:?}");
    assert_ne!(f[0], "reserve_big_block", "the first frame is libc's system call: {f:?}");
}

#[test]
fn static_glibc_stacks_reach_the_programs_callers() {
    static_c_stacks("gcc");
}

#[test]
fn static_musl_stacks_reach_the_programs_callers() {
    static_c_stacks("musl-gcc");
}

/// The static C target of the failure-mode tests.
fn static_threads() -> std::path::PathBuf {
    build_c_with("static_threads", &["-static"])
}

/// Issue 15, failure modes: ptrace not permitted (here a seccomp policy that denies it, as in a
/// container) is a clear error naming the cause, exit 2, and the target never runs.
#[test]
fn ptrace_not_permitted_is_a_clear_error() {
    let dir = TestDir::new("static_noptrace");
    let wrapper = build_c("noptrace");
    let mut cmd = Command::new(&wrapper);
    cmd.arg(vmshim_bin())
        .args(["run", "--out"])
        .arg(dir.join("t.trace"))
        .arg("--")
        .arg(static_threads())
        .arg("1");
    let out = run_with_timeout(&mut cmd, TIMEOUT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("PTRACE_TRACEME") && err.contains("not permitted"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ready"), "the target did not run");
}

/// Issue 15, failure modes: the target killed by SIGKILL mid-run leaves a trace that reads up to
/// the kill, and vmshim passes the status on (128 + 9).
#[test]
fn a_killed_target_leaves_a_readable_trace() {
    let dir = TestDir::new("static_sigkill");
    let h = Handshake::start(&mut vmshim_run_cmd(&dir, &static_threads(), &["2"]), TIMEOUT);
    h.signal_target(libc::SIGKILL);
    let out = h.finish();
    assert_eq!(out.status.code(), Some(128 + libc::SIGKILL), "{}", String::from_utf8_lossy(&out.stderr));
    let trace = vmshim_trace::parse(&std::fs::read(dir.join("t.trace")).unwrap()).expect("a readable trace");
    let starts = trace.events.iter().filter(|e| matches!(e, vmshim_trace::Event::ThreadStart(_))).count();
    assert_eq!(starts, 2, "both threads' starts were recorded before the kill");
    let report = run_with_timeout(Command::new(vmshim_bin()).arg("report").arg(dir.join("t.trace")), TIMEOUT);
    assert!(report.status.success(), "{}", String::from_utf8_lossy(&report.stderr));
}

/// Issue 15, failure modes: vmshim itself killed leaves no target stopped forever
/// (PTRACE_O_EXITKILL kills the traced tree with it).
#[test]
fn the_tracer_killed_takes_the_target_with_it() {
    let dir = TestDir::new("static_tracer_killed");
    let h = Handshake::start(&mut vmshim_run_cmd(&dir, &static_threads(), &["2"]), TIMEOUT);
    let pid = h.pid();
    h.signal_child(libc::SIGKILL);
    let _ = h.finish();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // Gone, or a zombie whose parent (vmshim) is dead until init reaps it.
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
    };
    while alive() {
        assert!(std::time::Instant::now() < deadline, "the target {pid} outlived its tracer");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Issue 15: signals reach a recorded static program as sent. Two threads trade SIGURG (Go's
/// preemption signal, passed on by the recorder without asking the kernel whether it is a
/// group-stop) and SIGUSR1, one at a time; under `vmshim run` each handler counts what the same
/// program counts bare, the exit status is the same, and the one trace of the process has the
/// second thread's start, made by the main thread (a thread announced by its creator's clone
/// flags joins its creator's process).
#[test]
fn static_signals_arrive_as_sent() {
    let dir = TestDir::new("static_signals");
    let prog = build_c_with("static_signals", &["-static"]);
    let bare = run_with_timeout(Command::new(&prog).arg("300"), TIMEOUT);
    let mut cmd = Command::new(vmshim_bin());
    cmd.args(["run", "--report"]).arg(dir.join("report.txt")).arg("--out").arg(dir.join("t.trace"));
    let under = run_with_timeout(cmd.arg("--").arg(&prog).arg("300"), TIMEOUT);
    assert_eq!(bare.status.code(), Some(3), "{}", String::from_utf8_lossy(&bare.stderr));
    assert_eq!(under.status.code(), bare.status.code(), "{}", String::from_utf8_lossy(&under.stderr));
    assert_eq!(String::from_utf8_lossy(&under.stdout), String::from_utf8_lossy(&bare.stdout));
    let traces: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with("t.trace"))
        .collect();
    assert_eq!(traces, ["t.trace"], "one process, one trace");
    let trace = vmshim_trace::parse(&std::fs::read(dir.join("t.trace")).unwrap()).expect("a readable trace");
    let pid = trace
        .events
        .iter()
        .find_map(|e| match e {
            vmshim_trace::Event::Start(s) => Some(s.pid),
            _ => None,
        })
        .expect("a start record");
    let starts: Vec<_> = trace
        .events
        .iter()
        .filter_map(|e| match e {
            vmshim_trace::Event::ThreadStart(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(starts.len(), 1, "{starts:?}");
    assert_eq!(starts[0].creator_tid, pid);
    assert_ne!(starts[0].tid, pid);
}
