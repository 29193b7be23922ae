//! Issue 12: every process of a tree gets a trace, created in the fork (before the child can
//! drop its privileges, close its descriptors or be re-parented), and a process that records
//! little leaves little on disk. Plain LD_PRELOAD: none of this needs `vmshim run` (two tests run
//! the same under it, where a fork child's Start record goes to vmshim first). The figures
//! compared are the kernel's (/proc, read while the process lives; `st_blocks`) and the
//! traces'.

use crate::common::*;
use crate::under_vmshim::TIMEOUT;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use vmshim_trace::decode::{Event, Start, Trace};

const RUN_ID: &str = "0123456789abcdef";

fn read_trace(path: &Path) -> Trace {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    vmshim_trace::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn start_of(t: &Trace) -> &Start {
    t.events
        .iter()
        .find_map(|e| if let Event::Start(s) = e { Some(s) } else { None })
        .expect("a Start record")
}

/// The program's own calls of `call` (not the shim's trace mappings), as (args, result).
fn calls(t: &Trace, call: vmshim_trace::CallKind) -> Vec<([u64; 6], u64)> {
    t.events
        .iter()
        .filter_map(|e| match e {
            Event::Call(c) if c.call == call && c.flags & vmshim_trace::CALL_FLAG_OWN == 0 => {
                Some((c.args, c.result))
            }
            _ => None,
        })
        .collect()
}

/// The traces in `dir`, by name.
fn traces_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

/// The one trace in `dir` whose Start names `pid` and came from a fork.
fn fork_trace_of(dir: &Path, pid: u32) -> (PathBuf, Trace) {
    let found: Vec<(PathBuf, Trace)> = traces_in(dir)
        .into_iter()
        .map(|p| {
            let t = read_trace(&p);
            (p, t)
        })
        .filter(|(_, t)| start_of(t).pid == pid && start_of(t).fork.is_some())
        .collect();
    assert_eq!(found.len(), 1, "one fork trace of pid {pid} in {}: {:?}", dir.display(), traces_in(dir));
    found.into_iter().next().unwrap()
}

fn preloaded(prog: &Path, args: &[&str], dir: &Path) -> Command {
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .current_dir(dir)
        .env("LD_PRELOAD", shim_lib())
        .env("VMSHIM_OUT", dir.join("t"))
        .env("VMSHIM_RUN", RUN_ID);
    cmd
}

/// A running program whose stdout is read line by line, killed if it outlives TIMEOUT.
struct Live {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Live {
    fn start(cmd: &mut Command) -> Live {
        let mut child =
            cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let pid = child.id() as i32;
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(TIMEOUT));
            // SAFETY: kill sends a signal to a pid; the test has failed by then anyway.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        });
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Live { child, lines }
    }

    /// The words after `prefix` on the next line, which must start with it.
    fn expect(&mut self, prefix: &str) -> Vec<String> {
        let line = self.lines.next().unwrap_or_else(|| panic!("no line {prefix:?}")).unwrap();
        let rest = line.strip_prefix(prefix).unwrap_or_else(|| panic!("{line:?} is not {prefix:?}"));
        rest.split_whitespace().map(str::to_string).collect()
    }

    /// Waits for the exit; returns stderr.
    fn finish(mut self) -> String {
        for _ in self.lines.by_ref() {}
        let out = self.child.wait_with_output().unwrap();
        assert!(out.status.success(), "{:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

fn ppid_of(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("PPid:")).map(|v| v.trim().parse().unwrap())
}

fn num(s: &str) -> u32 {
    s.parse().unwrap_or_else(|_| panic!("{s:?} is not a number"))
}

/// Issue 12, item 1: a fork child that never makes a recorded call has a trace, created in the
/// fork: origin fork, its parent's pid and forking thread (a thread other than main), the fork's
/// time and the forking call's stack starting in the program, the run id, and the map it
/// inherited, which is the map the kernel shows while it sleeps.
#[test]
fn issue_12_a_fork_child_that_only_sleeps_has_a_trace_from_the_fork() {
    let dir = TestDir::new("fork_sleeper");
    let prog = build_c("forktree");
    let mut live = Live::start(&mut preloaded(&prog, &["sleep", "1500"], dir.path()));
    let parent = live.child.id();
    let w = live.expect("fork ");
    let (child, forking_tid) = (num(&w[0]), num(&w[1]));
    assert_ne!(forking_tid, parent, "the program forks from a second thread");
    // fork returned in the parent; the child may still be writing its start-up records. Its
    // map is read once they are written.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(TIMEOUT);
    let written = |b: Vec<u8>| {
        vmshim_trace::parse(&b).is_ok_and(|t| t.events.iter().any(|e| matches!(e, Event::Module(_))))
    };
    while !std::fs::read(dir.join(format!("t.{child}"))).is_ok_and(written) {
        assert!(std::time::Instant::now() < deadline, "no trace for the child {child}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let kernel_ppid = ppid_of(child).expect("the child sleeps");
    let kernel_maps = read_maps(child);
    assert_eq!(live.expect("waited "), ["0"]);
    let err = live.finish();
    assert!(err.is_empty(), "nothing on stderr: {err}");

    let (path, t) = fork_trace_of(dir.path(), child);
    assert_eq!(path, dir.join(format!("t.{child}")), "a taken name gives way to T.<pid>");
    let s = start_of(&t);
    let fork = s.fork.as_ref().unwrap();
    assert_eq!((s.ppid, fork.parent_tid), (kernel_ppid, forking_tid));
    assert_eq!(s.ppid, parent);
    assert_eq!(s.run_id, u64::from_str_radix(RUN_ID, 16).unwrap());
    assert!(
        fork.mono_ns > 0 && fork.mono_ns <= s.mono_ns,
        "forked {} before the trace began {}",
        fork.mono_ns,
        s.mono_ns
    );
    let exe = t
        .events
        .iter()
        .find_map(|e| match e {
            Event::Module(m) if Path::new(&m.path) == std::fs::canonicalize(&prog).unwrap() => {
                Some((m.lo, m.hi))
            }
            _ => None,
        })
        .expect("the program's Module record, written in the child");
    assert!(
        fork.stack.first().is_some_and(|&ra| (exe.0..exe.1).contains(&ra)),
        "the stack begins at the program's call of fork: {:x?} vs {exe:x?}",
        fork.stack
    );
    // The inherited map, as the child's trace has it, is what the kernel showed while it slept
    // (it made no call since).
    let text: Vec<u8> = t
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Maps(m) if m.source == vmshim_trace::MapsSource::Initial => Some(m.text.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let recorded = parse_maps(&String::from_utf8_lossy(&text));
    let starts = |r: &[MapsRegion]| r.iter().map(|r| (r.start, r.end)).collect::<Vec<_>>();
    assert_eq!(starts(&recorded), starts(&kernel_maps), "the child's map at the fork");
    let parent_trace = read_trace(&dir.join("t"));
    assert_eq!((start_of(&parent_trace).pid, start_of(&parent_trace).fork.is_none()), (parent, true));
}

/// A directory the way a service's is: owned by root, 0755, so that a child that switched to
/// nobody cannot create anything in it.
fn root_owned_0755(name: &str) -> TestDir {
    let dir = TestDir::new(name);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(std::fs::metadata(dir.path()).unwrap().uid(), 0, "the tests run as root");
    dir
}

/// Issue 12, item 1: a child that setuid()s to nobody keeps recording into the trace it got in
/// the fork, also into segments it maps after the drop (64 KiB segments), and prints nothing;
/// the file stays 0600 and root's.
#[test]
fn issue_12_a_child_that_drops_to_nobody_keeps_recording_and_says_nothing() {
    let dir = root_owned_0755("fork_setuid");
    let n = 1000;
    let mut cmd = preloaded(&build_c("forktree"), &["setuid", &n.to_string()], dir.path());
    drops_to_nobody(&dir, n, &mut cmd);
}

/// As above under `vmshim run`, where a fork child sends its Start record to vmshim instead of
/// creating its file in the fork (shim/src/record/fork.rs): the child creates it in setgid,
/// before its first change of credentials, still as root.
#[test]
fn issue_12_under_vmshim_run_a_child_that_drops_to_nobody_creates_its_trace_first() {
    let dir = root_owned_0755("fork_setuid_run");
    let n = 1000;
    let mut cmd = Command::new(vmshim_bin());
    cmd.args(["run", "--report", "/dev/null", "--out"])
        .arg(dir.join("t"))
        .arg("--")
        .arg(build_c("forktree"))
        .args(["setuid", &n.to_string()])
        .current_dir(dir.path());
    drops_to_nobody(&dir, n, &mut cmd);
}

/// Runs `cmd` (forktree setuid `n`, tracing into `dir`) and holds the child's trace against
/// what the child printed.
fn drops_to_nobody(dir: &TestDir, n: usize, cmd: &mut Command) {
    cmd.env("VMSHIM_SEGMENT_BYTES", "65536");
    let mut live = Live::start(cmd);
    let w = live.expect("child ");
    let child = num(&w[0]);
    assert_eq!(w[1..], ["uid", "65534"]);
    let mapped: Vec<u64> = (0..n).map(|_| parse_hex(&live.expect("mapped ")[0])).collect();
    assert_eq!(live.expect("waited "), ["0"]);
    let err = live.finish();
    assert!(err.is_empty(), "nothing on the target's stderr: {err}");

    let (path, t) = fork_trace_of(dir.path(), child);
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o600), "{}", path.display());
    let results: Vec<u64> = calls(&t, vmshim_trace::CallKind::Mmap)
        .into_iter()
        .filter(|(a, _)| a[1] == 64 << 10)
        .map(|(_, r)| r)
        .collect();
    assert_eq!(results, mapped, "every mmap after the drop is in the trace");
    assert_eq!(t.dropped, 0);
    let own_segment = |e: &&Event| {
        matches!(e, Event::Call(c) if c.flags & vmshim_trace::CALL_FLAG_OWN != 0
            && c.call == vmshim_trace::CallKind::Mmap && c.args[1] == 65536)
    };
    let segments = t.events.iter().filter(own_segment).count();
    assert!(segments >= 3, "segments were mapped after the drop: {segments} in {} bytes", t.cursor);
    assert!(
        traces_in(dir.path()).iter().all(|p| std::fs::metadata(p).unwrap().uid() == 0),
        "nothing was created by nobody"
    );
}

/// Issue 12, item 1: a child that drops its privileges and then closes every descriptor (the
/// daemon's loop) can no longer reach its file to grow it: what it cannot write is counted as
/// dropped in the header, never silently lost, and nothing is printed.
#[test]
fn issue_12_what_a_child_cannot_write_after_closing_every_descriptor_is_counted() {
    let dir = root_owned_0755("fork_closeall");
    let n: u64 = 2000;
    let mut cmd = preloaded(&build_c("forktree"), &["closeall", &n.to_string()], dir.path());
    cmd.env("VMSHIM_SEGMENT_BYTES", "65536");
    let mut live = Live::start(&mut cmd);
    let child = num(&live.expect("child ")[0]);
    let first = parse_hex(&live.expect("mapped ")[0]);
    assert_eq!(live.expect("waited "), ["0"]);
    let err = live.finish();
    assert!(err.is_empty(), "nothing on the target's stderr: {err}");

    let (_, t) = fork_trace_of(dir.path(), child);
    let maps: Vec<_> =
        calls(&t, vmshim_trace::CallKind::Mmap).into_iter().filter(|(a, _)| a[1] == 64 << 10).collect();
    let unmaps =
        calls(&t, vmshim_trace::CallKind::Munmap).into_iter().filter(|(a, _)| a[1] == 64 << 10).count();
    assert_eq!(maps.first().map(|m| m.1), Some(first), "recorded before the descriptors went");
    assert!(t.dropped > 0, "the file could not grow: records were dropped and counted");
    assert!(
        maps.len() as u64 + unmaps as u64 + t.dropped >= 2 * n,
        "{} mmaps + {unmaps} munmaps recorded + {} dropped cover the {} calls",
        maps.len(),
        t.dropped,
        2 * n
    );
}

/// Issue 12, item 1: a double-fork daemon's grandchild has a trace whose parent is the
/// intermediate child, as the kernel had it at the fork, although the grandchild has been
/// re-parented by the time anyone looks.
#[test]
fn issue_12_a_double_fork_daemons_grandchild_names_its_real_parent() {
    let dir = TestDir::new("fork_daemon");
    let mut live = Live::start(&mut preloaded(&build_c("forktree"), &["daemon", "1500"], dir.path()));
    let parent = live.child.id();
    let child = num(&live.expect("child ")[0]);
    let grandchild = num(&live.expect("grandchild ")[0]);
    assert_eq!(live.expect("waited "), ["0"]);
    // The intermediate child is gone: the kernel now names another parent.
    let now = ppid_of(grandchild).expect("the grandchild still sleeps");
    assert_ne!(now, child, "re-parented");
    let err = live.finish();
    assert!(err.is_empty(), "{err}");

    let (_, t) = fork_trace_of(dir.path(), grandchild);
    let s = start_of(&t);
    assert_eq!((s.ppid, s.fork.as_ref().unwrap().parent_tid), (child, child));
    let (_, mid) = fork_trace_of(dir.path(), child);
    assert_eq!(start_of(&mid).ppid, parent);
    for p in [parent, child, grandchild] {
        let n = traces_in(dir.path()).iter().filter(|f| start_of(&read_trace(f)).pid == p).count();
        assert_eq!(n, 1, "one trace for pid {p}");
    }
}

/// Under `vmshim run`, a fork child killed by SIGKILL before it recorded anything (its Start
/// record went to vmshim, no file of its own) still has its trace, from the fork, with its
/// parent and the forking call's stack, and the report lists it.
#[test]
fn issue_12_under_vmshim_run_a_child_killed_before_it_recorded_has_its_trace() {
    let dir = TestDir::new("fork_killed_run");
    // The report beside, not among the traces.
    let beside = TestDir::new("fork_killed_run_report");
    let out = run_with_timeout(
        Command::new(vmshim_bin())
            .args(["run", "--json", "--report"])
            .arg(beside.join("r.json"))
            .arg("--out")
            .arg(dir.join("t"))
            .arg("--")
            .arg(build_c("forktree"))
            .args(["killed", "300"])
            .current_dir(dir.path()),
        TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    let child: u32 = stdout.lines().find_map(|l| l.strip_prefix("child ")).map(num).expect("child line");
    assert!(stdout.contains(&format!("killed {}", libc::SIGKILL)), "{stdout}");
    let parent = start_of(&read_trace(&dir.join("t"))).pid;
    let (_, t) = fork_trace_of(dir.path(), child);
    let s = start_of(&t);
    let fork = s.fork.as_ref().expect("a fork child's Start");
    assert_eq!(s.ppid, parent);
    assert!(!fork.stack.is_empty(), "the forking call's stack");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(beside.join("r.json")).unwrap()).unwrap();
    let listed: Vec<u64> =
        report["processes"].as_array().unwrap().iter().map(|p| p["pid"].as_u64().unwrap()).collect();
    assert!(listed.contains(&(child as u64)), "{listed:?}");
}

/// Blocks a file holds on disk: what `du` counts, not its length.
fn allocated(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().blocks() * 512
}

/// Issue 12, item 5: a process that records 100 calls leaves at most 64 KiB of trace on disk,
/// and every call is in it.
#[test]
fn issue_12_a_small_process_leaves_at_most_64_kib_of_trace() {
    let dir = TestDir::new("fork_small");
    let out = run_with_timeout(&mut preloaded(&build_c("forktree"), &["calls", "100"], dir.path()), TIMEOUT);
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let t = read_trace(&dir.join("t"));
    let pages = calls(&t, vmshim_trace::CallKind::Mmap).iter().filter(|(a, _)| a[1] == 4096).count();
    assert_eq!((pages, t.dropped), (50, 0));
    let bytes = allocated(&dir.join("t"));
    assert!(bytes <= 64 << 10, "{bytes} bytes allocated");
    assert!(bytes >= t.cursor, "the records are all on disk: cursor {}", t.cursor);
}

/// Issue 12, item 5: a bash loop of 1,000 `/bin/true`, every process preloaded: each fork
/// child of bash and each exec'd `true` has a trace (2,001 with bash's own), named without a
/// collision, and together they take at most 64 MiB of disk.
#[test]
fn issue_12_a_loop_of_a_thousand_processes_leaves_a_trace_each_within_64_mib() {
    let dir = TestDir::new("fork_loop");
    let out = run_with_timeout(
        Command::new("/bin/bash")
            .args(["-c", LOOP])
            .current_dir(dir.path())
            .env("LD_PRELOAD", shim_lib())
            .env("VMSHIM_OUT", dir.join("vmshim.%p.trace"))
            .env("VMSHIM_RUN", RUN_ID),
        TIMEOUT,
    );
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    a_trace_each(&dir, 1000, u64::from_str_radix(RUN_ID, 16).unwrap());
}

const LOOP: &str = "for ((i = 0; i < 1000; i++)); do /bin/true; done";

/// The same loop under `vmshim run`: each fork child's Start record goes to vmshim, which writes
/// the trace the child would have created (the children exec at once and record nothing); the
/// traces are the same as with the shim alone, 1,000 + 1,000 and bash's.
#[test]
fn issue_12_under_vmshim_run_a_loop_of_a_thousand_processes_leaves_a_trace_each() {
    let dir = TestDir::new("fork_loop_run");
    let out = run_with_timeout(
        Command::new(vmshim_bin())
            .args(["run", "--report", "/dev/null", "--out"])
            .arg(dir.join("t"))
            .args(["--", "/bin/bash", "-c", LOOP])
            .current_dir(dir.path()),
        TIMEOUT,
    );
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let run_id = start_of(&read_trace(&dir.join("t"))).run_id;
    assert_ne!(run_id, 0);
    a_trace_each(&dir, 1000, run_id);
}

/// Issue 12 (cheap start), held or not: under `vmshim run --attachable` too, a shell's exec'd
/// `/bin/true` waits for a first record with no file (vmshim is the parent of the image it
/// launched, and `VMSHIM_TRACER` says so), and vmshim run writes its trace from the watcher's
/// capture: no trace of one holds a mapping of the shim's own, as a trace the image created would
/// (its header and first segment). Before, `--attachable` left the variable out, and every image
/// took itself for the launched one and created its own file, with its whole start-up.
#[test]
fn issue_12_under_vmshim_run_attachable_too_an_exec_d_image_waits_with_no_file() {
    for attachable in [false, true] {
        let dir = TestDir::new(if attachable { "fork_loop_attachable" } else { "fork_loop_held" });
        let mut cmd = Command::new(vmshim_bin());
        cmd.arg("run").args(attachable.then_some("--attachable"));
        let out = run_with_timeout(
            cmd.args(["--report", "/dev/null", "--out"])
                .arg(dir.join("t"))
                .args(["--", "/bin/bash", "-c", "for ((i = 0; i < 50; i++)); do /bin/true; done"])
                .current_dir(dir.path()),
            TIMEOUT,
        );
        assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
        let run_id = start_of(&read_trace(&dir.join("t"))).run_id;
        a_trace_each(&dir, 50, run_id);
        let own = |t: &Trace| {
            t.events.iter().any(|e| matches!(e, Event::Call(c) if c.flags & vmshim_trace::CALL_FLAG_OWN != 0))
        };
        let images: Vec<Trace> = traces_in(dir.path())
            .iter()
            .map(|p| read_trace(p))
            .filter(|t| start_of(t).fork.is_none() && start_of(t).exe.ends_with("/true"))
            .collect();
        assert_eq!(images.len(), 50);
        let created = images.iter().filter(|t| own(t)).count();
        assert_eq!(created, 0, "attachable {attachable}: {created} of 50 images created their own trace");
        assert!(own(&read_trace(&dir.join("t"))), "the launched bash created its own");
    }
}

/// `dir` holds a trace per fork child and per exec'd `/bin/true` of a loop of `n`, every one of
/// run `run_id`, within 64 MiB of disk in all.
fn a_trace_each(dir: &TestDir, n: usize, run_id: u64) {
    let files = traces_in(dir.path());
    let starts: Vec<Start> = files.iter().map(|p| start_of(&read_trace(p)).clone()).collect();
    let forks = starts.iter().filter(|s| s.fork.is_some()).count();
    let execs = starts.iter().filter(|s| s.fork.is_none() && s.exe.ends_with("/true")).count();
    assert_eq!((forks, execs), (n, n), "{} traces", files.len());
    assert!(starts.iter().all(|s| s.run_id == run_id));
    let total: u64 = files.iter().map(|p| allocated(p)).sum();
    assert!(total <= 64 << 20, "{} traces take {total} bytes", files.len());
}

/// Issue 12, item 5 (cheap start): an image that records nothing has mapped only the shim code
/// its start runs, and that code lies in few 64 KiB windows (a fault on a file page maps the
/// window around it, or the page-cache folio it lands in): the one of `.init`, crtbegin's and
/// `.text`'s first functions, the `.text.hot` section where the shim's start-up, fork and
/// malloc-hook functions are placed (shim/src/lib.rs, "Start-up cost"), and std's
/// argument-saving init function. The windows are
/// read from the library's own section and symbol tables; the pages mapped, from the waiting
/// process's `/proc/PID/pagemap`. And `.bss` begins in `.data`'s last page, which the loader
/// writes anyway, not on a page of its own.
#[test]
fn issue_12_an_image_that_records_nothing_maps_only_the_shims_start_up_code() {
    use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};
    const WINDOW: u64 = 64 << 10;
    // The optimised build, which users run and scripts/test.sh builds: unoptimised, the start
    // runs many small functions that the optimiser inlines into the hot ones.
    let lib = target_dir().join("release/libvmshim.so");
    assert!(lib.is_file(), "{} is missing: scripts/test.sh builds it", lib.display());
    let bytes = std::fs::read(&lib).unwrap();
    let elf = object::File::parse(&*bytes).unwrap();
    let section = |name: &str| {
        let s =
            elf.section_by_name(name).unwrap_or_else(|| panic!("{} has no {name} section", lib.display()));
        (s.address(), s.address() + s.size(), s.align())
    };
    let hot = section(".text.hot");
    assert!(hot.1 - hot.0 <= WINDOW, "the hot code, {} bytes, fits in one window", hot.1 - hot.0);
    let symbol = |part: &[&str]| {
        elf.symbols()
            .find(|s| s.name().is_ok_and(|n| part.iter().all(|p| n.contains(p))))
            .map(|s| s.address())
            .unwrap_or_else(|| panic!("no symbol named with {part:?}"))
    };
    let text = elf
        .segments()
        .find(|s| hot.0 >= s.address() && hot.1 <= s.address() + s.size())
        .expect("the executable segment");
    let (text_vaddr, text_offset) = (text.address(), text.file_range().0);
    let page = page_size();
    // What one fault at `a` maps (mm/memory.c, do_fault_around): the 64 KiB window's pages, from
    // the window's start or the mapping's, whichever is later.
    let mapping_start = text_vaddr / page * page;
    let around = |a: u64| {
        let from = (a / WINDOW * WINDOW).max(mapping_start);
        (from, from + WINDOW)
    };
    let mut windows = vec![around(section(".init").0), around(section(".text").0)];
    windows.extend((hot.0 / WINDOW..=(hot.1 - 1) / WINDOW).map(|w| around(w * WINDOW)));
    windows.push(around(symbol(&["ARGV_INIT_ARRAY", "init_wrapper"])));
    let (data, bss) = (section(".data"), section(".bss"));
    assert!(bss.2 < page, ".bss is aligned to {} bytes: it would begin on a page of its own", bss.2);
    assert_eq!((data.1 - 1) / page, bss.0 / page, ".bss begins in .data's last page");

    let dir = TestDir::new("fork_hot_text");
    let mut cmd = preloaded(&build_c("idle"), &[], dir.path());
    // As under `vmshim run`: its exit watcher reads every exit, and this is not the process it
    // launched (whose parent would be VMSHIM_TRACER; no process has this pid).
    cmd.env("LD_PRELOAD", &lib).env("VMSHIM_WATCHED", "1").env("VMSHIM_TRACER", u32::MAX.to_string());
    let h = Handshake::start(&mut cmd, TIMEOUT);
    let pid = h.pid();
    assert!(!dir.join("t").exists(), "the image waits for its first record with no trace");
    let lib_path = std::fs::canonicalize(&lib).unwrap();
    let maps = read_maps(pid);
    let code = maps
        .iter()
        .find(|r| r.perms == "r-xp" && Path::new(&r.path) == lib_path)
        .unwrap_or_else(|| panic!("no code mapping of {} in {maps:?}", lib_path.display()));
    // One 8-byte entry per page; bit 63: present (readable without privileges, unlike the PFN).
    use std::io::{Read, Seek, SeekFrom};
    let mut pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap")).unwrap();
    let mut entries = vec![0u8; ((code.end - code.start) / page * 8) as usize];
    pagemap.seek(SeekFrom::Start(code.start / page * 8)).unwrap();
    pagemap.read_exact(&mut entries).unwrap();
    let mut mapped = Vec::new();
    for (i, e) in entries.chunks_exact(8).enumerate() {
        if u64::from_le_bytes(e.try_into().unwrap()) >> 63 == 1 {
            let vaddr = i as u64 * page + code.offset + text_vaddr - text_offset;
            mapped.push(vaddr);
        }
    }
    let out = h.finish();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!mapped.is_empty(), "the constructor's code is mapped");
    // A fault maps the whole page-cache folio it lands in when the folio is larger than a page,
    // so a run of mapped pages may reach past its window; each run must meet one.
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &a in &mapped {
        match runs.last_mut() {
            Some(run) if run.1 == a => run.1 = a + page,
            _ => runs.push((a, a + page)),
        }
    }
    let outside: Vec<String> = runs
        .iter()
        .filter(|&&(lo, hi)| !windows.iter().any(|&(w_lo, w_hi)| lo < w_hi && w_lo < hi))
        .map(|(lo, hi)| format!("{lo:#x}-{hi:#x}"))
        .collect();
    assert!(
        outside.is_empty(),
        "runs of mapped code pages that no fault at the start-up code made ({} pages mapped, windows \
         {:x?}): {outside:?}",
        mapped.len(),
        windows
    );
}
