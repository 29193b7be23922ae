//! Tests of the harness and of the target programs themselves, run directly (no vmshim): each
//! program builds, passes its handshake, and does what its header comment promises, as seen in
//! `/proc` from outside. The vmshim tests rely on exactly these facts.

use crate::common::*;
use std::process::Command;

const TIMEOUT: u64 = 60;

/// Reads maps and the kernel's VmSize at one quiet moment: retries while VmSize moves between
/// the two reads (a Go runtime may still map something while it sleeps).
fn maps_and_vsz(pid: u32) -> (Vec<MapsRegion>, u64) {
    for _ in 0..5 {
        let before = status_vsz_bytes(pid);
        let maps = read_maps(pid);
        if status_vsz_bytes(pid) == before {
            return (maps, before);
        }
    }
    panic!("pid {pid}: VmSize kept changing while maps were read")
}

fn assert_exit_ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_program_builds_with_the_expected_linkage() {
    for c in ["threads", "mapseq", "forker"] {
        let bin = build_c(c);
        assert!(elf_interpreter(&bin).is_some(), "{c} should be dynamically linked");
    }
    let bin = build_c_with("threads", &["-Wl,-z,now", "-fno-plt"]);
    assert!(elf_interpreter(&bin).is_some());
    assert_ne!(bin, build_c("threads"), "each flag set is its own binary");
    assert!(elf_interpreter(&build_rust("rustprog")).is_some(), "rustprog should be dynamic");
    for go in ["ex6", "ex1"] {
        let interp = elf_interpreter(&build_go(go, true, &[])).unwrap_or_default();
        assert!(interp.contains("ld-linux"), "{go} built with cgo should use ld.so, has {interp:?}");
    }
    assert_eq!(elf_interpreter(&build_go("ex2", false, &[])), None, "ex2 (CGO_ENABLED=0) must be static");
    assert_eq!(build_go("ex6", true, &[]), build_go("ex6.go", true, &[]), "a second build reuses the first");
}

#[test]
fn threads_stacks_are_the_requested_sizes_plus_a_guard_page() {
    let dir = TestDir::new("harness_threads_stacks");
    let prog = build_c("threads");
    let page = page_size();
    let stack_limit_kib = 8192; // set below with ulimit: the size glibc gives a thread by default
    let sizes: [u64; 3] = [64 * page, 256 * page, 0];
    let mut cmd = Command::new("sh");
    cmd.current_dir(dir.path())
        .arg("-c")
        .arg(format!("ulimit -s {stack_limit_kib} && exec \"$0\" \"$@\""))
        .arg(&prog)
        .arg(sizes.len().to_string())
        .args(sizes.iter().map(u64::to_string));
    let h = Handshake::start(&mut cmd, TIMEOUT);
    let pid = h.pid();
    assert_eq!(pid, h.child_pid(), "run directly, the ready pid is the spawned process");

    let threads = parse_thread_lines(h.lines());
    assert_eq!(threads.len(), sizes.len(), "one line per thread: {:?}", h.lines());
    let tasks = task_ids(pid);
    assert_eq!(tasks.len(), sizes.len() + 1, "main + K threads alive at the handshake: {tasks:?}");
    let maps = read_maps(pid);
    let smaps = read_smaps_flags(pid);
    for (t, &requested) in threads.iter().zip(&sizes) {
        assert!(tasks.contains(&t.tid), "thread {} tid {} not in /proc/{pid}/task", t.index, t.tid);
        assert_eq!(t.requested, requested);
        let expected = if requested == 0 { stack_limit_kib * 1024 } else { requested };
        assert_eq!(t.hi - t.lo, expected, "thread {} usable stack size", t.index);
        assert_eq!(t.guard, page, "glibc's default guard is one page");

        let usable = maps.iter().find(|r| r.start == t.lo && r.end == t.hi);
        let usable =
            usable.unwrap_or_else(|| panic!("no region [{:#x}, {:#x}) in maps: {maps:#?}", t.lo, t.hi));
        assert_eq!(usable.perms, "rw-p");
        assert_eq!(usable.path, "");
        let guard = maps.iter().find(|r| r.start == t.lo - t.guard && r.end == t.lo);
        let guard = guard.unwrap_or_else(|| panic!("no guard region below {:#x}: {maps:#?}", t.lo));
        assert_eq!(guard.perms, "---p");
        if kernel_at_least(6, 7) {
            // MAP_STACK sets VM_NOHUGEPAGE since Linux 6.7 (FACTS.md): the stack's signature.
            let flags = &smaps.iter().find(|(r, _)| r == usable).expect("stack in smaps").1;
            assert!(flags.iter().any(|f| f == "nh"), "stack VmFlags {flags:?} lack nh");
        }
    }
    let (maps, vsz) = maps_and_vsz(pid);
    assert_eq!(vsz_bytes(&maps), vsz, "maps sum equals the kernel's VmSize");
    assert_exit_ok(&h.finish(), "threads");
}

#[test]
fn mapseq_expectations_hold_in_proc_maps() {
    let dir = TestDir::new("harness_mapseq");
    let mut cmd = Command::new(build_c("mapseq"));
    cmd.current_dir(dir.path());
    let h = Handshake::start(&mut cmd, TIMEOUT);
    let pid = h.pid();
    let maps = read_maps(pid);
    let data = std::fs::canonicalize(dir.join("mapseq.data")).expect("mapseq creates its file in the cwd");

    let calls = parse_call_lines(h.lines());
    let names: Vec<&str> = calls.iter().map(|c| c.func.as_str()).collect();
    assert_eq!(
        names,
        [
            "mmap", "munmap", "mprotect", "mmap64", "mmap", "mprotect", "mremap", "mmap", "mremap", "mmap",
            "munmap"
        ]
    );
    let grow = &calls[6];
    assert_ne!(grow.arg("old_address"), Some(grow.result.as_str()), "the growing mremap moved: {grow:?}");

    let expects = parse_expect_lines(h.lines());
    assert_eq!(expects.len(), 7, "{:?}", h.lines());
    for e in &expects {
        // The kernel may merge an expected range with a neighbour of the same kind, so the
        // expectation is a covering region with the same permissions and file.
        let r = region_covering(&maps, e.start, e.end)
            .unwrap_or_else(|| panic!("{e:?} is not mapped: {maps:#?}"));
        assert_eq!(r.perms, e.perms, "{e:?} in {r:?}");
        match &e.path {
            Some(path) => {
                assert_eq!(path, &data.to_string_lossy(), "{e:?}");
                assert_eq!(&r.path, path);
                assert_eq!(r.offset + (e.start - r.start), page_size(), "mapped at a one-page offset");
            }
            None => assert_eq!(r.path, "", "{e:?} is anonymous, found in {r:?}"),
        }
    }
    let holes = parse_hole_lines(h.lines());
    assert!(!holes.is_empty(), "at least the partial munmap leaves a hole");
    for (start, end) in holes {
        let overlap: Vec<_> = maps.iter().filter(|r| r.start < end && start < r.end).collect();
        assert!(overlap.is_empty(), "hole [{start:#x}, {end:#x}) is mapped: {overlap:?}");
    }
    assert_exit_ok(&h.finish(), "mapseq");
    assert!(!data.exists(), "mapseq unlinks its file at exit");
}

#[test]
fn forker_child_maps_and_exits_before_the_handshake() {
    let dir = TestDir::new("harness_forker");
    let mut cmd = Command::new(build_c("forker"));
    cmd.current_dir(dir.path());
    let h = Handshake::start(&mut cmd, TIMEOUT);
    let pid = h.pid();
    let w: Vec<Vec<&str>> = h.lines().iter().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(w.len(), 4, "{:?}", h.lines());
    assert_eq!((w[0][0], w[0][2]), ("child", "mmap"));
    let child: u32 = w[0][1].parse().unwrap();
    assert_ne!(child, pid);
    assert_eq!(w[1], ["child", w[0][1], "exited", "0"]);
    assert_eq!(parse_hex(w[0][3]) + (1 << 20), parse_hex(w[0][4]), "the child maps 1 MiB");
    assert_eq!(w[2][..2], ["parent", &*pid.to_string()]);
    let (start, end) = (parse_hex(w[2][3]), parse_hex(w[2][4]));
    assert_eq!(end - start, 2 << 20, "the parent maps 2 MiB");
    assert!(!std::path::Path::new(&format!("/proc/{child}")).exists(), "the child is reaped");
    let maps = read_maps(pid);
    let r = region_covering(&maps, start, end).expect("the parent's mapping is live");
    assert_eq!(r.perms, "rw-p");
    assert_eq!(task_ids(pid), [pid]);
    assert_exit_ok(&h.finish(), "forker");
}

#[test]
fn rustprog_has_two_named_worker_threads() {
    let dir = TestDir::new("harness_rustprog");
    let mut cmd = Command::new(build_rust("rustprog"));
    cmd.current_dir(dir.path());
    let h = Handshake::start(&mut cmd, TIMEOUT);
    let pid = h.pid();
    let tasks = task_ids(pid);
    assert_eq!(tasks.len(), 3, "main + 2 workers: {tasks:?}");
    let mut seen = 0;
    for line in h.lines() {
        if let ["thread", i, "tid", tid, "name", name] = line.split_whitespace().collect::<Vec<_>>()[..] {
            let tid: u32 = tid.parse().unwrap();
            assert!(tasks.contains(&tid));
            assert_eq!(name, format!("worker-{i}"));
            assert_eq!(thread_name(pid, tid), name, "std sets the kernel thread name");
            seen += 1;
        }
    }
    assert_eq!(seen, 2, "{:?}", h.lines());
    assert_exit_ok(&h.finish(), "rustprog");
}

#[test]
fn ex6_prints_through_c_stdio_and_maps_the_go_heap() {
    let dir = TestDir::new("harness_ex6");
    let mut cmd = Command::new(build_go("ex6", true, &[]));
    cmd.current_dir(dir.path());
    let h = Handshake::start(&mut cmd, TIMEOUT);
    let pid = h.pid();
    assert_eq!(h.lines().last().map(String::as_str), Some(&*format!("ex6 ready {pid}")));
    let (maps, vsz) = maps_and_vsz(pid);
    assert_eq!(vsz_bytes(&maps), vsz);
    assert!(maps.iter().any(|r| r.path.ends_with("/libc.so.6")), "cgo links libc");
    // Where the Go heap is, as ex6 printed it (Go >= 1.27 randomizes the arena hints).
    let object =
        h.lines().iter().find_map(|l| l.strip_prefix("ex6 heap ")).map(parse_hex).expect("heap line");
    let arena = region_covering(&maps, object, object + 1).expect("Go heap arena mapped");
    assert_eq!(arena.path, "");
    assert!(task_ids(pid).len() >= 3, "a Go program runs several threads");
    assert_exit_ok(&h.finish(), "ex6");
}

#[test]
fn ex1_serves_one_request_to_itself() {
    let dir = TestDir::new("harness_ex1");
    let mut cmd = Command::new(build_go("ex1", true, &[]));
    cmd.current_dir(dir.path());
    let h = Handshake::start(&mut cmd, TIMEOUT);
    let pid = h.pid();
    let lines = h.lines();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let port: u16 = lines[0].strip_prefix("port ").expect("port line").parse().unwrap();
    assert_ne!(port, 0);
    assert_eq!(lines[1], "body hello from ex1");
    let maps = read_maps(pid);
    assert!(maps.iter().any(|r| r.path.ends_with("/libc.so.6")), "cgo links libc");
    assert_exit_ok(&h.finish(), "ex1");
}

#[test]
fn ex2_is_static_and_runs() {
    let dir = TestDir::new("harness_ex2");
    let bin = build_go("ex2", false, &[]);
    let mut cmd = Command::new(&bin);
    cmd.current_dir(dir.path());
    let h = Handshake::start(&mut cmd, TIMEOUT);
    let maps = read_maps(h.pid());
    assert!(!maps.iter().any(|r| r.path.contains("ld-linux") || r.path.contains("libc.so")), "{maps:#?}");
    assert!(maps.iter().any(|r| r.path == bin.to_string_lossy()));
    assert_exit_ok(&h.finish(), "ex2");
}

#[test]
fn run_with_timeout_captures_output_and_status() {
    let out = run_with_timeout(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]), TIMEOUT);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
}

#[test]
#[should_panic(expected = "timed out after 1 s")]
fn run_with_timeout_kills_a_hung_command() {
    run_with_timeout(Command::new("sh").args(["-c", "sleep 30"]), 1);
}

#[test]
#[should_panic(expected = "stdout closed before the ready line")]
fn handshake_fails_when_the_program_exits_first() {
    Handshake::start(Command::new("sh").args(["-c", "echo not ready"]), TIMEOUT);
}

#[test]
fn proc_parsers_read_paths_with_spaces_and_smaps_flags() {
    let text = "7f00-7f10 r--s 00001000 fe:00 42                         /tmp/a b (deleted)\n\
                ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]\n";
    let maps = parse_maps(text);
    assert_eq!(maps.len(), 2);
    assert_eq!(
        maps[0],
        MapsRegion {
            start: 0x7f00,
            end: 0x7f10,
            perms: "r--s".into(),
            offset: 0x1000,
            path: "/tmp/a b (deleted)".into()
        }
    );
    assert_eq!(vsz_bytes(&maps), 0x10, "[vsyscall] is not in the process's VSZ");
    let me = std::process::id();
    let smaps = read_smaps_flags(me);
    assert!(smaps.len() > 5, "{smaps:?}");
    for (r, flags) in &smaps {
        assert!(!flags.is_empty(), "{r:?} has no VmFlags");
    }
    assert!(parse_ready("ex6 ready 42") == Some(42) && parse_ready("ready 7") == Some(7));
    assert_eq!(parse_ready("already 7"), None);
}
