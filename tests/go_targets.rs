//! Go targets: the cgo programs of the original investigation under `vmshim run`, and the
//! static one (issue 15: recorded by the syscall recorder).

use crate::common::report::Region;
use crate::common::*;
use crate::under_vmshim::*;

/// The Go heap's address as the program printed it (`ex6 heap 0x...`): Go >= 1.27 randomizes
/// it, so nothing assumes 0xc000000000.
fn go_heap(lines: &[String]) -> u64 {
    let hex = lines.iter().find_map(|l| l.strip_prefix("ex6 heap ")).expect("the heap line");
    parse_hex(hex)
}

#[test]
fn ex6_reconciles_and_explains_go_reservations_and_thread_stacks() {
    let dir = TestDir::new("go_ex6");
    let run = run_handshake_settled(&dir, &build_go("ex6", true, &[]), &[], &[]);
    assert_reconciles(&run);
    let r = &run.report;

    // The Go heap: the runtime reserved it through x_cgo_mmap (sysAlloc), then mapped what it
    // uses over the reservation (sysMap from mheap.grow): the later call wins.
    let object = go_heap(&run.lines);
    let heap = run.maps.iter().find(|m| m.start <= object && object < m.end).expect("the Go heap is mapped");
    assert_eq!(bytes_in(r, heap.start, heap.end, "go_runtime"), heap.len());
    for reg in regions_in(r, heap.start, heap.end) {
        let f = stack_functions(reg);
        assert!(
            f.iter().any(|f| *f == "runtime.(*mheap).sysAlloc" || *f == "runtime.(*mheap).grow"),
            "{f:?}"
        );
    }
    // Every Go reservation's stack reaches the runtime's allocator and its root frame.
    let go: Vec<&Region> = r.regions.iter().filter(|x| x.category == "go_runtime").collect();
    for reg in &go {
        let f = stack_functions(reg);
        assert!(f.contains(&"x_cgo_mmap"), "{f:?}");
        assert!(f.iter().any(|f| f.starts_with("runtime.sys")), "{f:?}");
        let root = f.last().copied();
        assert!(matches!(root, Some("runtime.rt0_go" | "runtime.goexit" | "runtime.mstart")), "{f:?}");
    }
    // The PROT_NONE reservations the kernel shows that are not glibc's (no MAP_NORESERVE arena
    // mark, not a one-page guard) are the runtime's.
    let page = page_size();
    let go_none: u64 = run
        .smaps
        .iter()
        .filter(|(m, f)| {
            m.perms == "---p" && m.path.is_empty() && !f.contains(&"nr".to_string()) && m.len() > page
        })
        .map(|(m, _)| m.len())
        .sum();
    assert!(go_none > 0);
    assert!(category_bytes(r, "go_runtime") >= go_none, "go_runtime covers Go's PROT_NONE reservations");

    // Thread stacks: each MAP_STACK region the kernel marks (nh) belongs to a Go thread whose
    // creator stack reaches runtime.newm.
    assert!(kernel_at_least(6, 7), "VmFlags nh marks stacks from kernel 6.7");
    let stacks: Vec<&MapsRegion> = run
        .smaps
        .iter()
        .filter(|(m, f)| m.path.is_empty() && m.perms == "rw-p" && f.contains(&"nh".to_string()))
        .map(|(m, _)| m)
        .collect();
    assert!(!stacks.is_empty());
    let rows = &r.threads;
    for s in &stacks {
        assert_eq!(bytes_in(r, s.start, s.end, "thread_stack"), s.len(), "{s:?}");
        for reg in regions_in(r, s.start, s.end) {
            let f = stack_functions(reg);
            assert!(f.contains(&"runtime.newm"), "{f:?}");
            assert!(f.contains(&"_cgo_try_pthread_create"), "{f:?}");
            let tid = reg.tid.unwrap_or_else(|| panic!("a thread stack without its thread: {reg:?}"));
            assert!(rows.iter().any(|t| t.tid == tid && t.creator_tid == Some(run.pid)));
        }
        // The guard page below each stack is the same thread's.
        assert_eq!(bytes_in(r, s.start - page, s.start, "thread_stack"), page);
    }
    // Every thread alive at the handshake is in the table.
    for tid in &run.tasks {
        assert!(rows.iter().any(|t| t.tid == *tid), "thread {tid} missing from {rows:?}");
    }
}

#[test]
fn ex1_serves_a_request_under_vmshim_and_reconciles() {
    let dir = TestDir::new("go_ex1");
    let run = run_handshake_settled(&dir, &build_go("ex1", true, &[]), &[], &[]);
    let stdout = String::from_utf8_lossy(&run.out.stdout);
    assert!(stdout.contains("body hello from ex1"), "{stdout}");
    assert_reconciles(&run);
    assert!(category_bytes(&run.report, "go_runtime") > 0);
    assert!(category_bytes(&run.report, "thread_stack") > 0);
}

/// Issue 15: the static ex2 runs under the syscall recorder (tests/static_targets.rs holds its
/// report against /proc); its stdout and exit status pass through.
#[test]
fn a_static_go_binary_runs_under_the_syscall_recorder() {
    let dir = TestDir::new("go_ex2");
    let out = run_with_timeout(&mut vmshim_run_cmd(&dir, &build_go("ex2", false, &[]), &[]), TIMEOUT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ex2 ready "), "the target ran");
}
