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

/// `tests/programs/NAME.c` built `-static` by `compiler` (gcc or musl-gcc) into `dir`, checked
/// to be a static program.
fn build_static(dir: &TestDir, compiler: &str, name: &str) -> std::path::PathBuf {
    let prog = dir.join(name);
    let mut cc = Command::new(compiler);
    cc.args(["-std=gnu11", "-O0", "-g", "-static", "-pthread", "-o"])
        .arg(&prog)
        .arg(programs_dir().join(format!("{name}.c")));
    let out = run_with_timeout(&mut cc, 120);
    assert!(
        out.status.success(),
        "{compiler}: {} (scripts/test.sh installs musl-tools)",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(elf_interpreter(&prog), None, "-static gives a static program");
    prog
}

/// A static C program with threads that are alive at exit: every thread's stack is its own,
/// made in pthread_create, seen as the system call it is.
fn static_c(compiler: &str) {
    let dir = TestDir::new(&format!("static_c_{compiler}"));
    let prog = build_static(&dir, compiler, "static_threads");
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
    let prog = build_static(&dir, compiler, "static_callers");
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

/// Runs `launcher ARGS... vmshim run --out T -- static_threads 1`, which must fail before the
/// target runs: exit 2 and no line from the target. Its stderr.
fn refused_before_the_target_runs(name: &str, launcher: &std::path::Path, args: &[&str]) -> String {
    let dir = TestDir::new(name);
    let mut cmd = Command::new(launcher);
    cmd.args(args).arg(vmshim_bin()).args(["run", "--out"]).arg(dir.join("t.trace")).arg("--");
    let out = run_with_timeout(cmd.arg(static_threads()).arg("1"), TIMEOUT);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ready"), "the target did not run");
    err
}

/// Issue 15, failure modes: ptrace not permitted (here a seccomp policy that denies it, as in a
/// container) is a clear error naming the cause, exit 2, and the target never runs.
#[test]
fn ptrace_not_permitted_is_a_clear_error() {
    let err = refused_before_the_target_runs("static_noptrace", &build_c("noptrace"), &[]);
    assert!(err.contains("PTRACE_TRACEME") && err.contains("not permitted"), "{err}");
}

/// Issue 15, failure modes: vmshim itself already traced (here by strace -f, which follows it
/// into the child that would become the target) cannot be the target's tracer: a clear error
/// naming that cause, exit 2, and the target never runs.
#[test]
fn already_traced_is_a_clear_error() {
    let strace = std::path::Path::new("strace");
    let err = refused_before_the_target_runs("static_already_traced", strace, &["-f", "-o", "/dev/null"]);
    assert!(err.contains("PTRACE_TRACEME") && err.contains("already traced"), "{err}");
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

/// The calls of one trace, in the order it holds them.
fn trace_calls(trace: &vmshim_trace::decode::Trace) -> Vec<&vmshim_trace::decode::Call> {
    trace
        .events
        .iter()
        .filter_map(|e| match e {
            vmshim_trace::Event::Call(c) if c.errno == 0 => Some(c),
            _ => None,
        })
        .collect()
}

fn thread_starts(trace: &vmshim_trace::decode::Trace) -> Vec<&vmshim_trace::decode::ThreadStart> {
    trace
        .events
        .iter()
        .filter_map(|e| match e {
            vmshim_trace::Event::ThreadStart(t) => Some(t),
            _ => None,
        })
        .collect()
}

fn read_trace(path: &std::path::Path) -> vmshim_trace::decode::Trace {
    vmshim_trace::parse(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const HEAP_MAX: u64 = 64 << 20;

/// glibc's heaps as the system calls of a trace show them, each thread's calls in its own order
/// (malloc/arena.c new_heap): a PROT_NONE MAP_NORESERVE reservation of 128 or 64 MiB, the same
/// thread's munmaps trimming it, then its mprotect of the HEAP_MAX-aligned rest's first bytes.
/// (heap start, creating thread).
fn heaps_from_syscalls(calls: &[&vmshim_trace::decode::Call]) -> Vec<(u64, u32)> {
    use vmshim_trace::CallKind;
    let noreserve = (libc::MAP_ANONYMOUS | libc::MAP_NORESERVE) as u64;
    let mut open: Vec<(u32, u64, u64)> = Vec::new();
    let mut heaps = Vec::new();
    for c in calls {
        match c.call {
            CallKind::Mmap
                if c.args[2] == 0
                    && c.args[3] & noreserve == noreserve
                    && [HEAP_MAX, 2 * HEAP_MAX].contains(&c.args[1]) =>
            {
                open.push((c.tid, c.result, c.result + c.args[1]))
            }
            CallKind::Munmap => {
                let (a, e) = (c.args[0], c.args[0] + c.args[1]);
                for r in open.iter_mut().filter(|r| r.0 == c.tid && a < r.2 && r.1 < e) {
                    if a <= r.1 {
                        r.1 = e.min(r.2);
                    } else {
                        r.2 = a;
                    }
                }
            }
            CallKind::Mprotect if c.args[2] == (libc::PROT_READ | libc::PROT_WRITE) as u64 => {
                if let Some(i) = open.iter().position(|r| *r == (c.tid, c.args[0], c.args[0] + HEAP_MAX)) {
                    heaps.push((c.args[0], c.tid));
                    open.remove(i);
                }
            }
            _ => {}
        }
    }
    heaps.sort_unstable();
    heaps
}

/// Thread stacks as glibc's allocate_stack makes them (a PROT_NONE MAP_STACK mmap, then the
/// mprotect that leaves the guard at its bottom), each with the thread that started on it (the
/// trace's thread start whose stack pointer lies inside): tid -> (start, size, guard).
fn stacks_from_syscalls(
    calls: &[&vmshim_trace::decode::Call],
    starts: &[&vmshim_trace::decode::ThreadStart],
) -> std::collections::BTreeMap<u32, (u64, u64, u64)> {
    use vmshim_trace::CallKind;
    let mut made: Vec<(u32, u64, u64)> = Vec::new();
    let mut out = std::collections::BTreeMap::new();
    for c in calls {
        match c.call {
            CallKind::Mmap if c.args[2] == 0 && c.args[3] & libc::MAP_STACK as u64 != 0 => {
                made.push((c.tid, c.result, c.args[1]))
            }
            CallKind::Mprotect => {
                let Some(&(_, base, len)) = made
                    .iter()
                    .find(|m| m.0 == c.tid && m.1 < c.args[0] && c.args[0] + c.args[1] == m.1 + m.2)
                else {
                    continue;
                };
                if let Some(t) = starts.iter().find(|t| base <= t.sp && t.sp < base + len) {
                    out.insert(t.tid, (base, len, c.args[0] - base));
                }
            }
            _ => {}
        }
    }
    out
}

/// Issue 15 item 3: `vmshim run --syscalls` of a dynamic target runs both recorders, each into
/// its own trace. glibc's internal mappings, which no interposed function sees, are what the
/// shim infers (arena heaps from malloc's chunks, thread stacks from the new thread's stack
/// pointer, large chunks from their size words) and what the syscall recorder sees as system
/// calls: the two agree byte for byte, and both agree with /proc read while the program waits.
#[test]
fn syscalls_with_the_shim_agree_on_arenas_stacks_and_large_chunks() {
    let dir = TestDir::new("syscalls_both");
    let prog = build_c("syscalls_both");
    let mut cmd = Command::new(vmshim_bin());
    cmd.current_dir(dir.path())
        .args(["run", "--syscalls", "--json", "--top", "1000", "--out"])
        .arg(dir.join("t.trace"))
        .arg("--report")
        .arg(dir.join("report.json"))
        .arg("--")
        .arg(&prog)
        .arg("8");
    let run = finish_handshake(&dir, Handshake::start(&mut cmd, TIMEOUT));
    let pid = run.pid;
    let err = String::from_utf8_lossy(&run.out.stderr);
    let mine = dir.join("t.trace.syscalls");
    assert!(err.contains(&mine.display().to_string()), "vmshim names the recorder's trace: {err}");
    // Two reports of one run, one per recorder, each whole: nothing is counted twice.
    let shim = &run.report;
    let out = run_with_timeout(
        Command::new(vmshim_bin()).args(["report", "--json", "--top", "1000"]).arg(&mine),
        TIMEOUT,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rec = parse_report(&out.stdout);
    assert_eq!(shim.recorder, "shim");
    assert!(rec.recorder.starts_with("syscalls"), "{}", rec.recorder);
    let vsz = vsz_bytes(&run.maps);
    for r in [shim, &rec] {
        assert_eq!(r.process.pid, pid);
        assert_eq!(r.vsz.kernel_final_bytes, Some(vsz), "{}: the kernel's VSZ at exit vs /proc", r.recorder);
        assert_eq!(r.categories.iter().map(|c| c.bytes).sum::<u64>(), vsz, "{}", r.recorder);
        assert_eq!(r.processes.len(), 1, "{}: {:?}", r.recorder, r.processes);
    }
    assert_eq!(shim.processes[0].traces, vec![run.trace.display().to_string()]);
    assert_eq!(rec.processes[0].traces, vec![mine.display().to_string()]);

    let threads = parse_thread_lines(&run.lines);
    let k: usize = run
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("threads "))
        .and_then(|n| n.parse().ok())
        .expect("threads K");
    assert_eq!((threads.len(), k), (8, 8));
    let shim_trace = read_trace(&run.trace);
    let rec_trace = read_trace(&mine);
    let (shim_calls, rec_calls) = (trace_calls(&shim_trace), trace_calls(&rec_trace));

    // Arenas: the shim's (a heap seen under a chunk's NON_MAIN_ARENA bit, HEAP_MAX from its
    // alignment) against the recorder's system calls: one heap per thread, made by that thread.
    let mut shim_heaps: Vec<(u64, u32)> = shim_calls
        .iter()
        .filter(|c| c.call == vmshim_trace::CallKind::ArenaAttach && c.args[0] != 0)
        .map(|c| (c.args[0], c.tid))
        .collect();
    shim_heaps.sort_unstable();
    shim_heaps.dedup_by_key(|h| h.0);
    let rec_heaps = heaps_from_syscalls(&rec_calls);
    assert_eq!(shim_heaps, rec_heaps, "the shim's inferred heaps vs the recorder's system calls");
    assert_eq!(rec_heaps.len(), k, "one arena per thread");
    let mut heap_tids: Vec<u32> = rec_heaps.iter().map(|h| h.1).collect();
    heap_tids.sort_unstable();
    let mut tids: Vec<u32> = threads.iter().map(|t| t.tid).collect();
    tids.sort_unstable();
    assert_eq!(heap_tids, tids, "each thread made its own arena");
    for &(heap, _) in &rec_heaps {
        let covering: Vec<&MapsRegion> =
            run.maps.iter().filter(|m| m.start < heap + HEAP_MAX && heap < m.end).collect();
        assert_eq!(covering.first().map(|m| m.start), Some(heap), "{covering:?}");
        assert_eq!(covering.last().map(|m| m.end), Some(heap + HEAP_MAX), "{covering:?}");
        assert!(covering[0].perms.starts_with("rw"), "{covering:?}");
        for m in covering {
            let flags = &run.smaps.iter().find(|(r, _)| r == m).expect("smaps has it").1;
            assert!(flags.iter().any(|f| f == "nr"), "{m:?}: MAP_NORESERVE");
        }
        // Each report files it whole under malloc_arena.
        for r in [shim, &rec] {
            assert_eq!(
                bytes_in(r, heap, heap + HEAP_MAX, "malloc_arena"),
                HEAP_MAX,
                "{}: {heap:#x}",
                r.recorder
            );
        }
    }

    // Thread stacks: the shim's inference (the stack regions its report gives each thread, from
    // the thread's own stack pointer and guard size) against the recorder's mmap and mprotect.
    let page = page_size();
    let rec_stacks = stacks_from_syscalls(&rec_calls, &thread_starts(&rec_trace));
    let shim_starts = thread_starts(&shim_trace);
    for t in &threads {
        let regions: Vec<&Region> =
            shim.regions.iter().filter(|x| x.category == "thread_stack" && x.tid == Some(t.tid)).collect();
        let start = regions.iter().map(|x| x.start).min().expect("the shim gives the thread its stack");
        let end = regions.iter().map(|x| x.end).max().unwrap_or(0);
        assert_eq!(regions.iter().map(|x| x.end - x.start).sum::<u64>(), end - start, "{regions:?}");
        let guard: u64 = regions.iter().filter(|x| x.prot.starts_with("---")).map(|x| x.end - x.start).sum();
        let s = shim_starts.iter().find(|s| s.tid == t.tid).expect("the shim's thread start");
        assert!(start <= s.sp && s.sp < end, "{s:?}");
        let shim_guard = if s.guard_size == u64::MAX { page } else { s.guard_size };
        assert_eq!(guard, shim_guard, "thread {}", t.tid);
        assert_eq!(
            rec_stacks.get(&t.tid),
            Some(&(start, end - start, guard)),
            "thread {}: shim vs recorder",
            t.tid
        );
        // And the kernel's map and the thread's own pthread_getattr_np.
        assert_eq!((t.lo - t.guard, t.hi, t.guard), (start, end, guard), "thread {}: its own view", t.tid);
        let g = run.maps.iter().find(|m| m.start == start).expect("the guard in /proc");
        assert_eq!((g.end, g.perms.as_str()), (start + guard, "---p"), "{g:?}");
        let rw = run.maps.iter().find(|m| m.start == start + guard).expect("the stack in /proc");
        assert_eq!((rw.end, &rw.perms[..2]), (end, "rw"), "{rw:?}");
    }

    // Large chunks: the shim's (a chunk's IS_MMAPPED size word) against the recorder's mmap.
    let bigs: Vec<(u32, u64, u64)> = run
        .lines
        .iter()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                ["big", tid, ptr, size] => Some((tid.parse().ok()?, parse_hex(ptr), size.parse().ok()?)),
                _ => None,
            }
        })
        .collect();
    assert_eq!(bigs.len(), k + 1);
    for &(tid, ptr, size) in &bigs {
        let shim_chunk: Vec<(u32, u64, u64)> = shim_calls
            .iter()
            .filter(|c| {
                c.call == vmshim_trace::CallKind::MallocLarge
                    && c.args[0] <= ptr
                    && ptr < c.args[0] + c.args[1]
            })
            .map(|c| (c.tid, c.args[0], c.args[1]))
            .collect();
        let rec_chunk: Vec<(u32, u64, u64)> = rec_calls
            .iter()
            .filter(|c| {
                c.call == vmshim_trace::CallKind::Mmap && c.result <= ptr && ptr < c.result + c.args[1]
            })
            // Not the arena reservation that held the address before its trim.
            .filter(|c| c.args[2] == (libc::PROT_READ | libc::PROT_WRITE) as u64)
            .map(|c| (c.tid, c.result, c.args[1]))
            .collect();
        assert_eq!(shim_chunk, rec_chunk, "the block at {ptr:#x}: shim vs recorder");
        let (who, block, len) = rec_chunk[0];
        assert_eq!(who, tid, "made by the thread that asked");
        assert!(block < ptr && ptr + size <= block + len, "{ptr:#x}+{size} in {block:#x}+{len}");
        let m =
            region_covering(&run.maps, block, block + len).unwrap_or_else(|| panic!("{block:#x} in /proc"));
        assert!(m.perms.starts_with("rw") && m.path.is_empty(), "{m:?}");
    }
}

/// Issue 15: in a trace of the syscall recorder alone, glibc's arena heaps are told from the
/// system calls that made them (the 128 MiB MAP_NORESERVE reservation trimmed to a 64 MiB-aligned
/// 64 MiB, then its first bytes made read-write, in the thread that needed the arena) and filed
/// under malloc_arena as the shim files them, each arena with the thread that made it: one per
/// thread of the program, each the kernel's MAP_NORESERVE region, whole.
fn recorder_only_arenas(run: &Run) {
    let r = &run.report;
    assert!(r.recorder.starts_with("syscalls"), "{}", r.recorder);
    let threads = parse_thread_lines(&run.lines);
    assert!(!threads.is_empty());
    let mut tids: Vec<u32> = threads.iter().map(|t| t.tid).collect();
    tids.sort_unstable();
    let arenas = non_main_arenas(r);
    let mut creators: Vec<u32> = arenas.iter().map(|a| a.creator_tid).collect();
    creators.sort_unstable();
    assert_eq!(creators, tids, "one arena per thread of the program, made by it: {arenas:?}");
    for a in &arenas {
        assert_eq!((a.heaps, a.bytes), (1, HEAP_MAX), "{a:?}");
    }
    // The kernel's MAP_NORESERVE regions, by 64 MiB heap: each heap whole under malloc_arena.
    let mut heaps: Vec<u64> = run
        .smaps
        .iter()
        .filter(|(_, f)| f.iter().any(|f| f == "nr"))
        .map(|(m, _)| m.start & !(HEAP_MAX - 1))
        .collect();
    heaps.dedup();
    assert_eq!(heaps.len(), threads.len(), "/proc's arenas: {heaps:x?}");
    for &h in &heaps {
        assert_eq!(bytes_in(r, h, h + HEAP_MAX, "malloc_arena"), HEAP_MAX, "{h:#x}");
        let owner = regions_in(r, h, h + HEAP_MAX).iter().map(|x| x.tid).collect::<Vec<_>>();
        assert!(owner.iter().all(|t| t.is_some_and(|t| tids.contains(&t))), "{h:#x}: {owner:?}");
    }
    assert_eq!(category_bytes(r, "malloc_arena"), heaps.len() as u64 * HEAP_MAX);
    for t in &threads {
        let row = r.threads.iter().find(|x| x.tid == t.tid).expect("a row per thread");
        assert_eq!((row.arenas.len(), row.arena_bytes), (1, HEAP_MAX), "{row:?}");
    }
}

#[test]
fn syscalls_alone_on_a_dynamic_target_files_glibcs_arenas() {
    let dir = TestDir::new("syscalls_alone_arenas");
    let prog = build_c("syscalls_both");
    let mut cmd = Command::new(vmshim_bin());
    cmd.current_dir(dir.path())
        .args(["run", "--syscalls", "--no-shim", "--json", "--top", "1000", "--out"])
        .arg(dir.join("t.trace"))
        .arg("--report")
        .arg(dir.join("report.json"))
        .arg("--")
        .arg(&prog)
        .arg("6");
    let run = finish_handshake(&dir, Handshake::start(&mut cmd, TIMEOUT));
    assert!(!run.maps.iter().any(|m| m.path.ends_with("libvmshim.so")), "no shim in the target");
    assert_eq!(run.lines.iter().find_map(|l| l.strip_prefix("threads ")), Some("6"));
    recorder_only_arenas(&run);
}

#[test]
fn static_glibc_threads_arenas_are_malloc_arenas() {
    let dir = TestDir::new("static_arenas");
    let run = run_handshake(&dir, &static_threads(), &["5"]);
    assert_eq!(parse_thread_lines(&run.lines).len(), 5);
    recorder_only_arenas(&run);
}

/// Issue 15 item 4: a static process that execs a dynamic program goes on under the same
/// recorder (no shim was ever preloaded): one trace per image, both listed by the report, the
/// dynamic image's report held against /proc like any other, its arenas and stacks its own.
#[test]
fn an_exec_from_static_into_dynamic_stays_with_the_recorder() {
    let dir = TestDir::new("static_exec_dynamic");
    let exec = build_c_with("execstatic", &["-static"]);
    let prog = build_c("syscalls_both");
    let run = run_handshake(&dir, &exec, &[prog.to_str().unwrap(), "2"]);
    assert_recorded_reconciles(&run);
    recorder_only_arenas(&run);
    let r = &run.report;
    let images = &r.process.images;
    assert_eq!(images.len(), 2, "{images:?}");
    assert_eq!(std::path::Path::new(&images[0].exe), exec.canonicalize().unwrap(), "{images:?}");
    assert_eq!(std::path::Path::new(&images[1].exe), prog.canonicalize().unwrap(), "{images:?}");
    assert_ne!(images[0].trace, images[1].trace);
    assert_eq!(r.process.image, 2);
    assert!(!run.maps.iter().any(|m| m.path.ends_with("libvmshim.so")), "no shim in the dynamic image");
    for image in images {
        let trace = image.trace.as_deref().expect("each image has its trace");
        let out = run_with_timeout(Command::new(vmshim_bin()).args(["report", "--json", trace]), TIMEOUT);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let rep = parse_report(&out.stdout);
        assert!(rep.recorder.starts_with("syscalls"), "{trace}: {}", rep.recorder);
        assert_eq!(rep.process.pid, run.pid);
    }
}

/// `vmshim run` of the own_seccomp program in `mode`, its trace in `dir`, its report dropped.
fn run_own_seccomp(dir: &TestDir, prog: &std::path::Path, mode: &str) -> std::process::Output {
    let mut cmd = Command::new(vmshim_bin());
    cmd.args(["run", "--out"])
        .arg(dir.join("t.trace"))
        .args(["--report", "/dev/null", "--"])
        .arg(prog)
        .arg(mode);
    run_with_timeout(&mut cmd, TIMEOUT)
}

/// Issue 15 item 5: a target with a seccomp filter of its own. The recorder's filter came first
/// and stays; the target's stacks on it. An allow-all filter changes nothing; one that asks for
/// a tracer (SECCOMP_RET_TRACE, data of its own) gets what it gets without vmshim, where no
/// tracer answers: the call fails with ENOSYS. Both run as bare and are still recorded.
#[test]
fn a_target_with_its_own_seccomp_filter_runs_as_bare() {
    let prog = build_c_with("own_seccomp", &["-static"]);
    for mode in ["allow", "trace"] {
        let dir = TestDir::new(&format!("static_own_seccomp_{mode}"));
        let bare = run_with_timeout(Command::new(&prog).arg(mode), TIMEOUT);
        assert!(bare.status.success(), "{}", String::from_utf8_lossy(&bare.stderr));
        let out = run_own_seccomp(&dir, &prog, mode);
        assert_eq!(
            (out.status.code(), String::from_utf8_lossy(&out.stdout)),
            (bare.status.code(), String::from_utf8_lossy(&bare.stdout)),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if mode == "trace" {
            assert!(String::from_utf8_lossy(&bare.stdout).contains("getppid -1 errno 38"), "bare: ENOSYS");
        }
        // The target's own mapping, after its filter, is recorded.
        let err = String::from_utf8_lossy(&out.stderr);
        let at =
            err.lines().find_map(|l| l.strip_prefix("at ")).map(parse_hex).expect("the program's address");
        let trace = read_trace(&dir.join("t.trace"));
        let mapped = trace_calls(&trace)
            .iter()
            .any(|c| c.call == vmshim_trace::CallKind::Mmap && c.result == at && c.args[1] == 3 << 20);
        assert!(mapped, "{mode}: the 3 MiB mmap at {at:#x} is recorded");
    }
}

/// Issue 15 item 5: a target that enters seccomp strict mode (by prctl and by seccomp(2)) cannot
/// do so over the recorder's filter (the kernel would fail it with EINVAL, and the program would
/// go on otherwise than bare): a clear refusal naming strict mode, exit 2, in bounded time, and
/// the program never got past the request. Bare, it works.
#[test]
fn a_target_that_enters_seccomp_strict_mode_is_refused() {
    let prog = build_c_with("own_seccomp", &["-static"]);
    for mode in ["strict", "strict2"] {
        let dir = TestDir::new(&format!("static_own_seccomp_{mode}"));
        let bare = run_with_timeout(Command::new(&prog).arg(mode), TIMEOUT);
        assert_eq!(String::from_utf8_lossy(&bare.stdout), "strict ok\n", "{mode} bare");
        assert!(bare.status.success(), "{mode} bare: {}", String::from_utf8_lossy(&bare.stderr));
        let out = run_own_seccomp(&dir, &prog, mode);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{mode}: {err}");
        assert!(err.contains("seccomp strict mode"), "{mode}: {err}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("strict ok"), "{mode}: it went no further");
    }
}

/// Issue 15 item 5: a target with a debugger inside (a child that asks to be traced by it with
/// PTRACE_TRACEME) cannot have its own tracer under the recorder, which traces every process:
/// a clear refusal, exit 2, in bounded time, never a hang. Bare, the program works.
#[test]
fn a_target_that_ptraces_its_child_is_refused_not_hung() {
    let dir = TestDir::new("static_own_ptrace");
    let prog = build_c_with("own_ptrace", &["-static"]);
    let bare = run_with_timeout(&mut Command::new(&prog), TIMEOUT);
    let bare_out = String::from_utf8_lossy(&bare.stdout);
    assert!(bare.status.success() && bare_out.contains("child exited 0"), "bare: {bare_out}");
    let started = std::time::Instant::now();
    let mut cmd = Command::new(vmshim_bin());
    cmd.args(["run", "--out"]).arg(dir.join("t.trace")).args(["--report", "/dev/null", "--"]).arg(&prog);
    let out = run_with_timeout(&mut cmd, 30);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("PTRACE_TRACEME") && err.contains("one tracer"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    // What ran until then is recorded.
    assert!(
        read_trace(&dir.join("t.trace")).events.iter().any(|e| matches!(e, vmshim_trace::Event::Start(_)))
    );
}

/// Issue 15 item 3: a setuid target that the user may not trace with its privileges is refused,
/// with the reason, and never run; root, whose ptrace keeps the new ids at exec, records it.
#[test]
fn a_setuid_target_is_refused_for_a_user_and_recorded_for_root() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new("static_setuid");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    // A static program setuid to root, run by nobody.
    let setuid = dir.join("static_threads_setuid");
    std::fs::copy(static_threads(), &setuid).unwrap();
    std::fs::set_permissions(&setuid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let out = run_with_timeout(
        Command::new("setpriv")
            .current_dir(dir.path())
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(vmshim_bin())
            .args(["run", "--out", "t.trace", "--"])
            .arg(&setuid)
            .arg("1"),
        TIMEOUT,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("setuid or setgid") && err.contains("privileges") && err.contains("not run"),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ready"), "the target did not run");
    assert!(!dir.join("t.trace").exists());
    // Root runs a copy of id(1) setuid to nobody: it runs with nobody's effective id, as bare.
    let id = dir.join("id_setuid_nobody");
    std::fs::copy("/usr/bin/id", &id).unwrap();
    std::os::unix::fs::chown(&id, Some(65534), None).unwrap();
    std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let bare = run_with_timeout(Command::new(&id).arg("-u"), TIMEOUT);
    assert_eq!(String::from_utf8_lossy(&bare.stdout).trim(), "65534");
    let out = run_with_timeout(
        Command::new(vmshim_bin())
            .current_dir(dir.path())
            .args(["run", "--json", "--out", "root.trace", "--report", "r.json", "--"])
            .arg(&id)
            .arg("-u"),
        TIMEOUT,
    );
    assert_eq!(
        (out.status.code(), &out.stdout),
        (bare.status.code(), &bare.stdout),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = read_report(&dir.join("r.json"));
    assert!(r.recorder.starts_with("syscalls"), "{}", r.recorder);
    assert_eq!(r.vsz.kernel_final_bytes.map(|b| b > 0), Some(true));
}

/// Issue 15: every JSON report says who saw what it holds: `vmshim explain` of a running process
/// ran no recorder, and its report says "explain" (a trace's says "shim" or the recorder's name).
#[test]
fn explain_says_it_is_the_recorder_of_its_report() {
    let h = Handshake::start(Command::new(static_threads()).arg("2"), TIMEOUT);
    let out = run_with_timeout(
        Command::new(vmshim_bin()).args(["explain", "--json", &h.pid().to_string()]),
        TIMEOUT,
    );
    assert!(h.finish().status.success());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = parse_report(&out.stdout);
    assert_eq!(r.recorder, "explain");
    assert!(r.explain.is_some());
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
