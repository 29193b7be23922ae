//! Issue 3: every byte has a cause. glibc's arenas, large malloc chunks, brk growth and
//! run-time loaded libraries, each held against /proc of the same run.

use crate::common::report::{Arena, Region, Report};
use crate::common::*;
use crate::under_vmshim::*;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use vmshim_trace::HEAP_MAX;

/// Arena heaps the kernel shows: MAP_NORESERVE anonymous regions (VmFlags `nr`), grouped by
/// their 64 MiB-aligned heap base: base -> bytes.
fn arena_heaps(run: &Run) -> BTreeMap<u64, u64> {
    let mut heaps = BTreeMap::new();
    for (m, flags) in &run.smaps {
        if m.path.is_empty() && flags.iter().any(|f| f == "nr") {
            *heaps.entry(m.start & !(HEAP_MAX - 1)).or_insert(0) += m.len();
        }
    }
    heaps
}

fn non_main_arenas(report: &Report) -> Vec<&Arena> {
    report.arenas.iter().filter(|a| a.arena != "main").collect()
}

/// Every arena heap in /proc is malloc_arena in the report, owned by one of `owners`.
fn assert_heaps_attributed(run: &Run, owners: &[u32]) {
    for (m, flags) in &run.smaps {
        if !(m.path.is_empty() && flags.iter().any(|f| f == "nr")) {
            continue;
        }
        assert_eq!(bytes_in(&run.report, m.start, m.end, "malloc_arena"), m.len(), "{m:?}");
        for r in regions_in(&run.report, m.start, m.end) {
            let tid = r.tid.expect("an arena heap has its thread");
            assert!(owners.contains(&tid), "heap {m:?} attributed to {tid}, not one of {owners:?}");
        }
    }
    assert_eq!(category_bytes(&run.report, "malloc_arena"), arena_heaps(run).values().sum::<u64>());
}

fn assert_unattributed_at_most_a_thousandth(run: &Run) {
    let (un, vsz) = (category_bytes(&run.report, "unattributed"), vsz_bytes(&run.maps));
    let listed: Vec<&Region> = run.report.regions.iter().filter(|r| r.category == "unattributed").collect();
    assert!(un * 1000 <= vsz, "{un} of {vsz} bytes unattributed: {listed:#?}");
}

fn worker_tids(run: &Run) -> Vec<u32> {
    parse_thread_lines(&run.lines).iter().map(|t| t.tid).collect()
}

#[test]
fn each_thread_that_mallocs_gets_its_own_arena() {
    let dir = TestDir::new("arenas_threads");
    let run = run_handshake(&dir, &build_c("threads"), &["--malloc", "3"]);
    assert_reconciles(&run);
    let workers = worker_tids(&run);
    let heaps = arena_heaps(&run);
    assert_eq!(heaps.len(), workers.len(), "three threads under the 8 x cores limit: one arena each");
    assert_heaps_attributed(&run, &workers);
    assert_eq!(non_main_arenas(&run.report).len(), heaps.len());
    for t in &workers {
        let row = run.report.threads.iter().find(|r| r.tid == *t).unwrap();
        assert_eq!(row.arena_bytes, HEAP_MAX, "thread {t} made one 64 MiB heap: {row:?}");
    }
    assert_unattributed_at_most_a_thousandth(&run);
}

#[test]
fn malloc_arena_max_1_leaves_only_the_main_arena() {
    let dir = TestDir::new("arenas_max1");
    let mut cmd = vmshim_run_cmd(&dir, &build_c("threads"), &["--malloc", "3"]);
    cmd.env("MALLOC_ARENA_MAX", "1");
    let run = finish_handshake(&dir, Handshake::start(&mut cmd, TIMEOUT));
    assert_reconciles(&run);
    assert!(arena_heaps(&run).is_empty(), "the kernel shows no arena heap");
    assert_eq!(category_bytes(&run.report, "malloc_arena"), 0);
    assert!(non_main_arenas(&run.report).is_empty());
    let main = run.report.arenas.iter().find(|a| a.arena == "main").expect("the main arena");
    let users: BTreeSet<u32> = main.tids.iter().copied().collect();
    assert!(
        worker_tids(&run).iter().all(|t| users.contains(t)),
        "every worker shares the main arena: {main:?}"
    );
}

#[test]
fn malloc_arena_max_2_makes_threads_share() {
    let dir = TestDir::new("arenas_max2");
    let mut cmd = vmshim_run_cmd(&dir, &build_c("threads"), &["--malloc", "4"]);
    cmd.env("MALLOC_ARENA_MAX", "2");
    let run = finish_handshake(&dir, Handshake::start(&mut cmd, TIMEOUT));
    assert_reconciles(&run);
    let heaps = arena_heaps(&run);
    assert_eq!(non_main_arenas(&run.report).len(), heaps.len());
    assert_heaps_attributed(&run, &worker_tids(&run));
    // Four workers and main on at most two arenas: the report names who shares.
    let users: usize = run.report.arenas.iter().map(|a| a.tids.len()).sum();
    assert!(users > worker_tids(&run).len());
    assert!(run.report.arenas.iter().any(|a| a.tids.len() > 1), "some arena is shared");
    assert_unattributed_at_most_a_thousandth(&run);
}

#[test]
fn a_thread_whose_first_call_is_free_owns_the_arena_free_made() {
    let dir = TestDir::new("arenas_firstfree");
    let run = run_handshake(&dir, &build_c("firstfree"), &[]);
    assert_reconciles(&run);
    let freer: u32 = run.lines.iter().find_map(|l| l.strip_prefix("freer tid ")).unwrap().parse().unwrap();
    assert_eq!(arena_heaps(&run).len(), 1);
    assert_heaps_attributed(&run, &[freer]);
    for (m, _) in run.smaps.iter().filter(|(m, f)| m.path.is_empty() && f.iter().any(|f| f == "nr")) {
        for r in regions_in(&run.report, m.start, m.end) {
            assert_eq!(r.cause, "free");
            assert!(stack_functions(r).contains(&"freer"), "{r:?}");
        }
    }
    assert_unattributed_at_most_a_thousandth(&run);
}

#[test]
fn large_mallocs_are_their_own_regions_until_freed() {
    let dir = TestDir::new("arenas_bigalloc");
    let size = (64 * page_size() + 100).to_string();
    let run = run_handshake(&dir, &build_c("bigalloc"), &["2", "4", &size]);
    assert_reconciles(&run);
    let mut kept = 0;
    for l in &run.lines {
        let w: Vec<&str> = l.split_whitespace().collect();
        let (what, tid, ptr) = match w.as_slice() {
            [what @ ("kept" | "freed"), tid, ptr] => (*what, tid.parse::<u32>().unwrap(), parse_hex(ptr)),
            _ => continue,
        };
        let at = regions_in(&run.report, ptr, ptr + 1);
        let kept_here = run.lines.iter().any(|k| k.starts_with("kept ") && k.ends_with(&format!("{ptr:#x}")));
        if what == "freed" && kept_here {
            continue; // another thread's block took the freed address
        }
        if what == "kept" {
            kept += 1;
            assert_eq!(at.len(), 1);
            assert_eq!((at[0].category.as_str(), at[0].tid), ("malloc_large", Some(tid)), "{l}");
            assert!(stack_functions(at[0]).contains(&"work"), "{:?}", at[0]);
            // The whole kernel mapping around the block is the chunk's.
            let m = region_covering(&run.maps, ptr, ptr + 1).unwrap();
            assert!(bytes_in(&run.report, m.start, m.end, "malloc_large") >= size.parse::<u64>().unwrap());
        } else {
            assert!(at.iter().all(|r| r.category != "malloc_large"), "freed block {ptr:#x} is gone: {at:?}");
        }
    }
    assert_eq!(kept, 2 * 2);
    assert_unattributed_at_most_a_thousandth(&run);
}

#[test]
fn a_dlopened_library_is_library() {
    let dir = TestDir::new("arenas_dlopen");
    let plugin = build_c_with("plugin", &["-shared", "-fPIC"]);
    let run = run_handshake(&dir, &build_c("dlopener"), &[plugin.to_str().unwrap()]);
    assert_reconciles(&run);
    let mapped: Vec<&MapsRegion> = run.maps.iter().filter(|m| m.path == plugin.to_str().unwrap()).collect();
    assert!(!mapped.is_empty());
    for m in &mapped {
        assert_eq!(bytes_in(&run.report, m.start, m.end, "library"), m.len(), "{m:?}");
        for r in regions_in(&run.report, m.start, m.end) {
            assert_eq!((r.cause.as_str(), r.tid), ("dlopen", Some(run.pid)), "{r:?}");
            assert!(stack_functions(r).contains(&"main"), "the loading stack: {r:?}");
        }
    }
    // Its 1 MiB .bss: the anonymous mapping right after its last file page.
    let end = mapped.iter().map(|m| m.end).max().unwrap();
    let bss = run.maps.iter().find(|m| m.start == end && m.path.is_empty()).expect("the plugin's .bss");
    assert_eq!(bytes_in(&run.report, bss.start, bss.end, "library"), bss.len());
    assert_unattributed_at_most_a_thousandth(&run);
}

#[test]
fn ex6_arenas_belong_to_the_go_threads_that_freed() {
    let dir = TestDir::new("arenas_ex6");
    let run = run_handshake_settled(&dir, &build_go("ex6", true, &[]), &[], &[]);
    assert_reconciles(&run);
    let go_threads: Vec<u32> = run.tasks.iter().copied().filter(|t| *t != run.pid).collect();
    assert!(!arena_heaps(&run).is_empty());
    assert_heaps_attributed(&run, &go_threads);
    for (m, _) in run.smaps.iter().filter(|(m, f)| m.path.is_empty() && f.iter().any(|f| f == "nr")) {
        for r in regions_in(&run.report, m.start, m.end) {
            let f = stack_functions(r);
            assert!(f.contains(&"threadentry"), "the cgo thread entry made it: {f:?}");
        }
    }
    assert_unattributed_at_most_a_thousandth(&run);

    let dir = TestDir::new("arenas_ex6_max1");
    let one = run_handshake_settled(&dir, &build_go("ex6", true, &[]), &[], &[("MALLOC_ARENA_MAX", "1")]);
    assert_reconciles(&one);
    assert!(arena_heaps(&one).is_empty());
    assert!(non_main_arenas(&one.report).is_empty());
    assert_eq!(category_bytes(&one.report, "malloc_arena"), 0);
    assert_unattributed_at_most_a_thousandth(&one);
}

#[test]
fn python_threads_are_accounted_for() {
    let dir = TestDir::new("arenas_python");
    let script = "import os, sys, threading\n\
        go = threading.Event()\n\
        def work():\n    x = [bytearray(1000) for _ in range(2000)]\n    go.wait()\n\
        ts = [threading.Thread(target=work) for _ in range(3)]\n\
        [t.start() for t in ts]\n\
        import time; time.sleep(0.3)\n\
        print('ready', os.getpid(), flush=True)\n\
        sys.stdin.read(1)\n\
        os._exit(0)\n";
    // Through PATH, as a user would: on a machine with pyenv that is a shell script that execs
    // the interpreter, and vmshim run reports the image that exits.
    let python = which("python3");
    let run = run_handshake(&dir, &python, &["-c", script]);
    assert_reconciles(&run);
    assert_heaps_attributed(&run, &run.tasks);
    assert!(!arena_heaps(&run).is_empty(), "python's threads made arenas");
    assert_unattributed_at_most_a_thousandth(&run);
}

fn which(name: &str) -> std::path::PathBuf {
    let out = run_with_timeout(Command::new("sh").arg("-c").arg(format!("command -v {name}")), TIMEOUT);
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!p.is_empty(), "{name} is not installed (scripts/test.sh installs it)");
    std::fs::canonicalize(p).unwrap()
}

#[test]
fn the_shim_adds_only_its_own_category() {
    // Observer effect: the same deterministic program without vmshim has the VSZ the report
    // shows minus the vmshim category, and the same threads and arena heaps.
    let dir = TestDir::new("arenas_observer");
    let prog = build_c("threads");
    let args = ["--malloc", "3"];
    let bare = Handshake::start(Command::new(&prog).args(args).current_dir(dir.path()), TIMEOUT);
    let (bare_maps, bare_smaps, bare_tasks) =
        (read_maps(bare.pid()), read_smaps_flags(bare.pid()), task_ids(bare.pid()));
    assert!(bare.finish().status.success());
    let run = run_handshake(&dir, &prog, &args);
    // The main [stack] grows with the environment, and vmshim run adds LD_PRELOAD and
    // VMSHIM_OUT to it: compared apart, within a page.
    let stack = |m: &[MapsRegion]| m.iter().filter(|r| r.path == "[stack]").map(MapsRegion::len).sum::<u64>();
    assert!(stack(&run.maps).abs_diff(stack(&bare_maps)) <= page_size());
    // The loader's own anonymous pages (its minimal malloc, the static TLS block) are made
    // before any code of the shim runs, and loading two more images (the shim, libgcc_s) moves
    // them by a page or two; everything else must match exactly.
    let (with, without) = (
        vsz_bytes(&run.maps) - stack(&run.maps) - category_bytes(&run.report, "vmshim"),
        vsz_bytes(&bare_maps) - stack(&bare_maps),
    );
    assert!(with.abs_diff(without) <= 4 * page_size(), "{with} vs {without}");
    // Thread stacks (8 MiB) and arena heap reservations (64 MiB) are the large anonymous regions.
    let stacks_and_arenas = |m: &[MapsRegion]| {
        let mut v: Vec<(u64, String)> = m
            .iter()
            .filter(|r| r.path.is_empty() && r.len() >= 8 << 20)
            .map(|r| (r.len(), r.perms.clone()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        stacks_and_arenas(&run.maps),
        stacks_and_arenas(&bare_maps),
        "the same thread stacks and arena heaps"
    );
    assert_eq!(run.tasks.len(), bare_tasks.len());
    let nr = |s: &[(MapsRegion, Vec<String>)]| s.iter().filter(|(_, f)| f.iter().any(|f| f == "nr")).count();
    assert_eq!(nr(&run.smaps), nr(&bare_smaps));
}
