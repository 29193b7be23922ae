//! Issue 11, item 3: the shim's own footprint is bounded. It maps the trace through a window of
//! at most `WINDOW` segments plus the header page, however long the target runs, and the report
//! says how much of the target's RSS was the shim's own.

use crate::common::*;
use crate::under_vmshim::*;
use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// The shim's `writer::WINDOW`: at most this many trace segments are mapped at once. (The shim
/// is a cdylib the tests do not link; the number is the one its crate doc and README state.)
const WINDOW: u64 = 4;
/// The default `VMSHIM_SEGMENT_BYTES`, as README states it.
const DEFAULT_SEGMENT: u64 = 4 << 20;
/// mprotect calls per run: the bug report's 2M.
const CALLS: u64 = 2_000_000;

/// The stated bound on what the trace window maps: `WINDOW` segments and the header page.
fn window_bound(segment: u64) -> u64 {
    WINDOW * segment + page_size()
}

/// What `footprint` printed: (big mapping outcome, VmRSS, VmSize), both after its calls.
struct Figures {
    big: String,
    rss: u64,
    vsz: u64,
}

/// Runs `footprint CALLS BIG_MIB`, bare or under the shim (with `segment`-byte segments), with
/// an optional RLIMIT_AS; checks it ran as a bare run does and returns its figures.
fn run(dir: &TestDir, shim: Option<u64>, big_mib: u64, rlimit_as: Option<u64>) -> Figures {
    let mut cmd = Command::new(build_c("footprint"));
    cmd.args([CALLS.to_string(), big_mib.to_string()]).current_dir(dir.path());
    if let Some(segment) = shim {
        cmd.env("LD_PRELOAD", shim_lib())
            .env("VMSHIM_OUT", dir.join("t.trace"))
            .env("VMSHIM_SEGMENT_BYTES", segment.to_string());
    }
    if let Some(limit) = rlimit_as {
        // SAFETY: the closure runs in the forked child before exec and only calls setrlimit,
        // which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                let rl = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                if libc::setrlimit(libc::RLIMIT_AS, &rl) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let out = run_with_timeout(&mut cmd, TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{} {stdout} {}", out.status, String::from_utf8_lossy(&out.stderr));
    let w: Vec<&str> = stdout.split_whitespace().collect();
    assert_eq!(w.len(), 8, "{stdout}");
    assert_eq!(w[1], CALLS.to_string(), "every call succeeded: {stdout}");
    let num = |s: &str| s.parse().unwrap_or_else(|_| panic!("no figure (out of address space?): {stdout}"));
    Figures { big: w[3].to_string(), rss: num(w[5]), vsz: num(w[7]) }
}

/// The shared libraries `ldd` resolves for `path`, by path.
fn ldd(path: &Path) -> BTreeSet<String> {
    let out = run_with_timeout(Command::new("ldd").arg(path), TIMEOUT);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| Some(l.split("=>").nth(1)?.split_whitespace().next()?.to_string()))
        .filter(|p| p.starts_with('/'))
        .collect()
}

/// The address space the shim's images bring into `program`: libvmshim.so and the libraries it
/// needs that the program does not, each its load span rounded up to pages (text, data, .bss).
fn shim_images_bytes(program: &Path) -> u64 {
    let page = page_size();
    let theirs = ldd(program);
    let mut images = vec![shim_lib().to_string_lossy().into_owned()];
    images.extend(ldd(&shim_lib()).into_iter().filter(|l| !theirs.contains(l)));
    images.iter().map(|p| load_span(p).div_ceil(page) * page).sum()
}

/// Issue 11: after 2M mprotect calls the target's RSS was 205 MB against 1.4 MB bare, because
/// every trace segment stayed mapped. Now the same program, run bare and under the shim in this
/// test, differs by no more than the shim's images plus the stated window bound, in VmRSS and
/// in VmSize alike; with 64 KiB segments (thousands of them retired) as with the default.
#[test]
fn issue_11_two_million_mprotect_calls_keep_rss_and_vsz_within_the_window_bound() {
    let dir = TestDir::new("footprint_2m_calls");
    let images = shim_images_bytes(&build_c("footprint"));
    let bare = run(&dir, None, 0, None);
    for segment in [DEFAULT_SEGMENT, 64 << 10] {
        let shim = run(&dir, Some(segment), 0, None);
        let allowed = images + window_bound(segment);
        let trace = std::fs::metadata(dir.join("t.trace")).unwrap().len();
        let _ = std::fs::remove_file(dir.join("t.trace"));
        assert!(trace > 8 * window_bound(segment), "the trace ({trace} B) is far larger than the window");
        for (what, b, s) in [("VmRSS", bare.rss, shim.rss), ("VmSize", bare.vsz, shim.vsz)] {
            assert!(
                s <= b + allowed,
                "{segment}-byte segments: {what} {s} B under the shim, {b} B bare: more than the \
                 shim's images ({images} B) and window bound ({} B) apart",
                window_bound(segment)
            );
        }
    }
}

/// Issue 11: under `ulimit -v` a 100 MiB mmap that succeeds bare failed under the shim with
/// ENOMEM, the address space taken by trace segments. Under an RLIMIT_AS that a bare run fits in
/// with the shim's images and the window bound to spare, it succeeds after 2M calls.
#[test]
fn issue_11_a_100_mib_mmap_after_many_calls_fits_under_the_rlimit_as_a_bare_run_fits_in() {
    let dir = TestDir::new("footprint_rlimit_as");
    let program = build_c("footprint");
    let segment = 64 << 10;
    let bare = run(&dir, None, 100, None);
    assert_eq!(bare.big, "OK");
    // The bare run's peak: its VSZ after the calls plus the big mapping, plus the spare.
    let limit = bare.vsz + (100 << 20) + shim_images_bytes(&program) + window_bound(segment);
    assert_eq!(run(&dir, None, 100, Some(limit)).big, "OK", "a bare run fits under {limit} B");
    let shim = run(&dir, Some(segment), 100, Some(limit));
    assert_eq!(
        shim.big, "OK",
        "under the shim, with RLIMIT_AS {limit} B (VmSize {} B before the mmap)",
        shim.vsz
    );
}

/// Rss per region (start, end, bytes) of smaps text.
fn smaps_rss(text: &str) -> Vec<(u64, u64, u64)> {
    let mut out: Vec<(u64, u64, u64)> = Vec::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((s, e)) = first.split_once('-')
            && let (Ok(s), Ok(e)) = (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16))
        {
            out.push((s, e, 0));
        } else if let Some(v) = line.strip_prefix("Rss:") {
            let kib: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap();
            out.last_mut().unwrap().2 = kib * 1024;
        }
    }
    out
}

/// Issue 11: the report's headline RSS included the shim's own trace pages without saying so.
/// Its `vmshim_rss_bytes` is the sum of Rss, in the kernel's map at exit, over the regions the
/// report files under `vmshim`, and the text headline shows the same figure.
#[test]
fn issue_11_the_reports_vmshim_rss_is_the_rss_of_its_vmshim_regions_at_exit() {
    let dir = TestDir::new("footprint_vmshim_rss");
    let program = build_c("footprint");
    let out = run_with_timeout(&mut vmshim_run_cmd(&dir, &program, &["200000", "0"]), TIMEOUT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = read_report(&dir.join("report.json"));

    let trace = vmshim_trace::parse(&std::fs::read(dir.join("t.trace")).unwrap()).unwrap();
    let mut chunks: Vec<_> = trace
        .events
        .iter()
        .filter_map(|e| match e {
            vmshim_trace::Event::Maps(m) if m.source == vmshim_trace::MapsSource::KernelFinal => {
                Some((m.chunk, m.text.clone()))
            }
            _ => None,
        })
        .collect();
    chunks.sort_by_key(|c| c.0);
    let smaps: Vec<u8> = chunks.into_iter().flat_map(|c| c.1).collect();
    let finals = smaps_rss(&String::from_utf8_lossy(&smaps));
    assert!(!finals.is_empty(), "vmshim run captured the kernel's map at exit");

    let expected: u64 = finals
        .iter()
        .filter(|&&(s, e, _)| {
            let covering = regions_in(&report, s, e);
            !covering.is_empty() && covering.iter().all(|r| r.category == "vmshim")
        })
        .map(|r| r.2)
        .sum();
    let own = report.vmshim_rss_bytes.expect("vmshim_rss_bytes");
    let rss = report.rss_bytes.expect("rss_bytes");
    assert_eq!(own, expected, "vmshim's own RSS against smaps at exit");
    assert!(own > 0 && own < rss, "{own} of {rss}");
    let text = run_with_timeout(Command::new(vmshim_bin()).arg("report").arg(dir.join("t.trace")), TIMEOUT);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    let grouped = kib_grouped(own);
    assert!(text.contains(&format!("(vmshim's own {grouped} KiB)")), "{text}");
}
