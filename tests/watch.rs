//! The exit watcher (report/src/watch.rs): every process of the tree is seen at its exit_group
//! with its address space whole, `vmshim run` waits for the tree's last process (a daemon
//! included) and passes signals on to it, and `--attachable` leaves the target free for a
//! debugger while the kernel's map at exit is still captured.

use crate::common::report::Report;
use crate::common::*;
use crate::under_vmshim::TIMEOUT;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn vmshim_run(dir: &TestDir, args: &[&str], cmd: &[&str]) -> Command {
    let mut c = Command::new(vmshim_bin());
    c.current_dir(dir.path()).arg("run").args(args).arg("--").args(cmd);
    c
}

/// The JSON report of the trace in `dir` (named `prefix*`) whose process is `pid`.
fn report_of(dir: &Path, prefix: &str, pid: u32) -> (PathBuf, Report) {
    let mut seen = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if !p.file_name().unwrap().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let out = run_with_timeout(Command::new(vmshim_bin()).arg("report").arg("--json").arg(&p), TIMEOUT);
        // A trace that gives no report is passed over; one that does must be vmshim-report/1.
        let Ok(report) = serde_json::from_slice::<Value>(&out.stdout) else { continue };
        let report = typed_report(&report);
        if report.process.pid == pid {
            return (p, report);
        }
        seen.push(format!("{} -> {}", p.display(), report.process.pid));
    }
    panic!("no trace of pid {pid} in {}: {seen:?}", dir.display())
}

fn field(lines: &[String], key: &str) -> u64 {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no '{key}' line in {lines:?}"))
}

/// Issue 12, item 4: `vmshim run` of a program that daemonizes (fork, fork, setsid, the parent
/// exits) waits for the daemon, and the daemon's trace holds the kernel's map at its exit: the
/// VSZ it read from /proc/self/statm just before exit(4).
#[test]
fn vmshim_run_follows_a_daemon_and_captures_its_exit_map() {
    let dir = TestDir::new("watch_daemon");
    let prog = build_c("daemon");
    let mut h = Handshake::start(
        &mut vmshim_run(
            &dir,
            &["--report", "/dev/null", "--out", "t.trace"],
            &[prog.to_str().unwrap(), "timed"],
        ),
        TIMEOUT,
    );
    let top = h.pid();
    let daemon = field(&[h.next_line()], "daemon ") as u32;
    let out = h.finish();
    assert_eq!(
        out.status.code(),
        Some(0),
        "the top process's status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<String> = stdout.lines().map(str::to_owned).collect();
    let vsz = field(&lines, "vsz ");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "process {top} exited; waiting for the 1 process of its tree still running ({daemon})"
        )),
        "{err}"
    );
    let (path, report) = report_of(dir.path(), "t.trace.", daemon);
    assert_eq!(
        report.vsz.kernel_final_bytes,
        Some(vsz),
        "{}: the daemon's map at exit is the VSZ it read just before exit",
        path.display()
    );
    assert!(report.process.exit.contains("exited 4"), "{:?}", report.process);
}

/// Issue 12, item 4: while vmshim waits for a daemon, a SIGTERM sent to vmshim reaches the
/// daemon (whose handler makes it exit 5), and vmshim then exits with the top process's status.
#[test]
fn a_signal_to_vmshim_while_it_waits_reaches_the_daemon() {
    let dir = TestDir::new("watch_daemon_term");
    let prog = build_c("daemon");
    let mut h = Handshake::start(
        &mut vmshim_run(
            &dir,
            &["--report", "/dev/null", "--out", "t.trace"],
            &[prog.to_str().unwrap(), "signal"],
        ),
        TIMEOUT,
    );
    let daemon = field(&[h.next_line()], "daemon ") as u32;
    // The top process has exited once vmshim waits for the tree (it says so at 0.5 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(TIMEOUT);
    while std::fs::metadata(format!("/proc/{}", h.pid())).is_ok() {
        assert!(std::time::Instant::now() < deadline, "the top process did not exit");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    h.signal_child(libc::SIGTERM);
    let out = h.finish();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    let vsz = field(&lines, "vsz ");
    let (_, report) = report_of(dir.path(), "t.trace.", daemon);
    assert_eq!(report.vsz.kernel_final_bytes, Some(vsz));
    assert!(report.process.exit.contains("exited 5"), "{:?}", report.process);
}

/// Issue 11, case 4: under `vmshim run --attachable` a debugger attaches to the target
/// (`gdb -p`), which then runs on and ends as it would bare; the kernel's map at its exit still
/// comes with the report (from the exit watcher). Without the flag vmshim traces the target and
/// the kernel lets no second tracer in.
#[test]
fn a_debugger_attaches_to_a_target_run_attachable() {
    let dir = TestDir::new("watch_gdb");
    let harm = build_c("harm");
    for attachable in [true, false] {
        let mut args = vec!["--json", "--report", "r.json", "--out", "t.trace"];
        if attachable {
            args.insert(0, "--attachable");
        }
        let _ = std::fs::remove_file(dir.join("t.trace"));
        let h = Handshake::start(&mut vmshim_run(&dir, &args, &[harm.to_str().unwrap(), "term"]), TIMEOUT);
        let pid = h.pid().to_string();
        let gdb = run_with_timeout(
            Command::new("gdb").args(["-nx", "-batch", "-p", &pid, "-ex", "info inferiors"]),
            TIMEOUT,
        );
        let said =
            format!("{}{}", String::from_utf8_lossy(&gdb.stdout), String::from_utf8_lossy(&gdb.stderr));
        if attachable {
            assert!(said.contains(&format!("process {pid}")) && !said.contains("not permitted"), "{said}");
        } else {
            assert!(said.contains("not permitted"), "held with ptrace, a second tracer is refused: {said}");
        }
        h.signal_child(libc::SIGTERM);
        let out = h.finish();
        assert_eq!(out.status.code(), Some(3), "the handler ran: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("term"));
        let report = read_report(&dir.join("r.json"));
        assert!(
            report.vsz.kernel_final_bytes.is_some_and(|b| b > 0),
            "attachable {attachable}: {:?}",
            report.vsz
        );
        std::fs::remove_dir_all(dir.path()).ok();
        std::fs::create_dir_all(dir.path()).unwrap();
    }
}

/// Issue 12, item 3: a program whose non-main thread execs /bin/sh is reported as sh, against
/// sh's own map at exit (the old leader's exit stop showed the old image's map: 16,284 KiB
/// with the exec'd-from thread's 8 MiB stack, where sh had 8,200 KiB).
#[test]
fn an_exec_from_a_thread_is_reconciled_against_the_new_images_map() {
    let dir = TestDir::new("watch_threadexec");
    let prog = build_c("threadexec");
    let out = run_with_timeout(
        &mut vmshim_run(
            &dir,
            &["--json", "--report", "r.json", "--out", "t.trace"],
            &[prog.to_str().unwrap()],
        ),
        TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    let vsz = field(&lines, "pages ") * page_size();
    let report = read_report(&dir.join("r.json"));
    assert!(report.process.exe.as_deref().unwrap_or_default().ends_with("sh"), "{:?}", report.process);
    assert_eq!(report.vsz.kernel_final_bytes, Some(vsz), "sh's own VSZ, read by sh before it exited");
}

/// Without CAP_SYS_ADMIN (vmshim run by nobody) the watcher cannot be installed, and vmshim
/// never sets no_new_privs to get it: the target runs and ends as bare, vmshim says why the
/// tree's other exits are not captured, and the target's own map at exit still comes (ptrace).
#[test]
fn without_the_capability_the_target_runs_as_bare_and_vmshim_says_why() {
    let dir = TestDir::new("watch_nobody");
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let harm = build_c("harm");
    let bare = run_with_timeout(Command::new(&harm).arg("traceme"), TIMEOUT);
    let out = run_with_timeout(
        Command::new("setpriv")
            .current_dir(dir.path())
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(vmshim_bin())
            .args(["run", "--json", "--report", "r.json", "--out", "t.trace", "--"])
            .arg(&harm)
            .arg("traceme"),
        TIMEOUT,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!((out.status.code(), &out.stdout), (bare.status.code(), &bare.stdout), "{err}");
    assert!(err.contains("the exit watcher needs CAP_SYS_ADMIN"), "{err}");
    let report = read_report(&dir.join("r.json"));
    assert!(report.vsz.kernel_final_bytes.is_some_and(|b| b > 0), "{:?}", report.vsz);
}

/// Issue 12: a process of the shim that recorded nothing keeps maps and statm at its exit, not
/// smaps (which cost the exiting process four times as long): its report's RSS is the resident
/// size the kernel gave while it waited, both as smaps' Rss summed and as statm, and vmshim's own
/// share of it is not claimed; its VSZ is the kernel's. A process that recorded (the shell) keeps
/// smaps and its share. The program is an image the shell exec'd that records nothing, so it
/// waits for a first record with no trace file at all (shim/src/record/waiting.rs): nothing of
/// the trace directory is in its map, and vmshim run writes its trace after, whose Start names
/// what /proc named while it waited (executable, command line, parent).
#[test]
fn a_process_that_recorded_nothing_has_its_rss_at_exit_from_statm() {
    let dir = TestDir::new("watch_statm");
    let prog = build_c("idle");
    let h = Handshake::start(
        &mut vmshim_run(
            &dir,
            &["--report", "/dev/null", "--out", "t.trace"],
            &["bash", "-c", "\"$0\"; true", prog.to_str().unwrap()],
        ),
        TIMEOUT,
    );
    let pid = h.pid();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let smaps_rss: u64 = smaps
        .lines()
        .filter_map(|l| l.strip_prefix("Rss:"))
        .map(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() * 1024)
        .sum();
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap();
    let resident: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    let vsz = status_vsz_bytes(pid);
    // A waiting image has no trace: nothing of the trace directory is mapped.
    let real_dir = std::fs::canonicalize(dir.path()).unwrap();
    let trace_maps: Vec<MapsRegion> =
        read_maps(pid).into_iter().filter(|r| Path::new(&r.path).parent() == Some(&real_dir)).collect();
    assert_eq!(trace_maps, vec![], "no trace of its own while it waits");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid: u32 = stat[stat.rfind(')').unwrap() + 1..].split_whitespace().nth(1).unwrap().parse().unwrap();
    let out = h.finish();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(resident * page_size(), smaps_rss, "statm and smaps agree while it waits");
    let report = |args: &[&str]| {
        let out = run_with_timeout(
            Command::new(vmshim_bin()).arg("report").arg("--json").args(args).arg(dir.join("t.trace")),
            TIMEOUT,
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        parse_report(&out.stdout)
    };
    let idle = report(&["--pid", &pid.to_string()]);
    assert_eq!(idle.process.pid, pid);
    assert_eq!(idle.vsz.kernel_final_bytes, Some(vsz), "the kernel's VSZ at exit is the one it waited with");
    assert_eq!(idle.rss_bytes, Some(smaps_rss), "its RSS at exit is the one it waited with");
    assert_eq!(idle.vmshim_rss_bytes, None, "no Rss by region, so no share of it is claimed");
    assert_eq!(idle.process.exe.as_deref(), Some(exe.to_str().unwrap()), "the executable /proc named");
    let argv: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into())
        .collect();
    assert_eq!(idle.process.argv.as_ref(), Some(&argv), "the command line /proc gave");
    let row = idle.processes.iter().find(|r| r.pid == pid).expect("it is listed");
    assert_eq!(row.ppid, ppid, "its parent as /proc named it");
    assert!(row.explained_fraction >= 0.999, "{row:?}");
    let shell = report(&[]);
    assert!(shell.process.pid != pid && shell.vmshim_rss_bytes.is_some(), "{:?}", shell.process);
}
