//! Issue 11: `vmshim run` never harms the target or the user's files. Each test runs the same
//! program bare and under vmshim and holds the two against each other: output, exit status,
//! signals, stops; and the files at `--out` before and after.

use crate::common::*;
use crate::under_vmshim::{TIMEOUT, category_bytes};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn vmshim_run(dir: &TestDir, args: &[&str], cmd: &[&str]) -> Command {
    let mut c = Command::new(vmshim_bin());
    c.current_dir(dir.path()).arg("run").args(args).arg("--").args(cmd);
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Issue 11, case 1: an existing file at `--out` (data, the program being run) is never
/// removed or truncated: the trace goes to the first free `.N` name. A directory, a FIFO or a
/// device there is refused before anything runs, and left as it was.
#[test]
fn an_existing_path_at_out_is_never_removed_truncated_or_followed() {
    let dir = TestDir::new("harm_out");
    let precious = dir.join("precious.txt");
    std::fs::write(&precious, "data\n").unwrap();
    let out = run_with_timeout(&mut vmshim_run(&dir, &["--out", "precious.txt"], &["/bin/true"]), TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "data\n", "the file is untouched");
    // The name was taken, so the trace is `precious.txt.<pid>`, and vmshim says so.
    let err = text(&out.stderr);
    let said = err
        .lines()
        .find_map(|l| l.split_once("was taken; the trace is ").map(|(_, p)| p.trim().to_owned()))
        .unwrap_or_else(|| panic!("vmshim says where: {err}"));
    let trace = Path::new(&said);
    let pid = trace.file_name().unwrap().to_string_lossy().strip_prefix("precious.txt.").map(str::to_owned);
    assert!(pid.is_some_and(|p| p.parse::<u32>().is_ok()), "{said}: precious.txt.<pid>");
    assert_eq!(trace.parent(), Some(dir.path()), "beside the taken name");
    assert!(vmshim_trace::parse(&std::fs::read(trace).unwrap()).is_ok(), "the trace went to {said}");
    assert!(text(&out.stderr).contains("vmshim accounts for"), "and reports: {}", text(&out.stderr));

    // --out naming the program itself: it is not deleted and runs as it would bare.
    let prog = dir.join("mytrue");
    std::fs::copy("/bin/true", &prog).unwrap();
    let before = std::fs::read(&prog).unwrap();
    let out = run_with_timeout(&mut vmshim_run(&dir, &["--out", "mytrue"], &["./mytrue"]), TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&prog).unwrap(), before, "the program is intact");

    // Not regular files: refused with the kind named, exit 2, nothing run or created.
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    std::fs::create_dir(dir.join("adir")).unwrap();
    let ran = dir.join("ran");
    let touch = format!("touch {}", ran.display());
    for (name, kind) in [("fifo", "a FIFO"), ("adir", "a directory"), ("/dev/null", "a character device")] {
        let out = run_with_timeout(&mut vmshim_run(&dir, &["--out", name], &["sh", "-c", &touch]), TIMEOUT);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(kind), "{name}: {}", text(&out.stderr));
        assert!(!ran.exists(), "{name}: the target did not run");
        let sibling = Path::new(name)
            .is_absolute()
            .then(|| format!("{name}.1"))
            .unwrap_or(format!("{}.1", dir.join(name).display()));
        assert!(!Path::new(&sibling).exists(), "{name}: no {sibling} was made");
    }
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(std::fs::metadata(dir.join("adir")).unwrap().is_dir());
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());
}

/// Issue 11, case 5: vmshim's exit status is always the target's; what vmshim could not do
/// (no trace directory, an unwritable report) is a warning, and `--strict` makes it 2.
#[test]
fn the_exit_status_is_the_targets_when_no_trace_or_report_can_be_written() {
    let dir = TestDir::new("harm_status");
    let target = ["sh", "-c", "echo out; exit 4"];
    let bare = run_with_timeout(Command::new(target[0]).args(&target[1..]), TIMEOUT);
    let code = bare.status.code();
    assert_eq!(code, Some(4));

    let no_dir = run_with_timeout(&mut vmshim_run(&dir, &["--out", "missing/t.trace"], &target), TIMEOUT);
    assert_eq!(no_dir.status.code(), code, "{}", text(&no_dir.stderr));
    assert_eq!(no_dir.stdout, bare.stdout);
    assert!(text(&no_dir.stderr).contains("warning") && text(&no_dir.stderr).contains("missing"));
    assert!(!dir.join("missing").exists());

    let no_report = run_with_timeout(
        &mut vmshim_run(&dir, &["--report", "missing/r.txt", "--out", "t.trace"], &target),
        TIMEOUT,
    );
    assert_eq!(no_report.status.code(), code, "{}", text(&no_report.stderr));
    assert!(text(&no_report.stderr).contains("missing/r.txt"), "{}", text(&no_report.stderr));

    let strict =
        run_with_timeout(&mut vmshim_run(&dir, &["--strict", "--out", "missing/t.trace"], &target), TIMEOUT);
    assert_eq!(strict.status.code(), Some(2), "{}", text(&strict.stderr));
}

/// Issue 11, case 5: on a full disk the target runs as bare, its status passes through, and
/// the partial trace is reported with the count of what it dropped.
#[test]
fn a_full_disk_gives_the_targets_status_and_a_report_of_the_partial_trace() {
    let dir = TestDir::new("harm_fulldisk");
    let fs = Tmpfs::mount(dir.join("small"), "1m");
    let churn = build_c("churn");
    let bare = run_with_timeout(Command::new(&churn).arg("100000"), TIMEOUT);
    assert!(bare.status.success());
    let out = run_with_timeout(
        vmshim_run(
            &dir,
            &["--json", "--report", "r.json", "--out", "small/t.trace"],
            &[churn.to_str().unwrap(), "100000"],
        )
        .env("VMSHIM_SEGMENT_BYTES", "65536"),
        TIMEOUT,
    );
    assert_eq!(out.status.code(), bare.status.code(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, bare.stdout, "the target's output is as bare");
    let report = read_report(&dir.join("r.json"));
    assert!(report.events.dropped > 0, "the dropped records are counted");
    assert!(report.events.recorded > 0, "the records that fit are reported");
    assert!(report.vsz.kernel_final_bytes.is_some(), "the kernel's map at exit is in the report");
    drop(fs);
}

/// The wait status of `pid` after the next change (exit, signal, stop), within `secs`.
fn wait_change(pid: libc::pid_t, secs: u64) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let mut status = 0;
        // SAFETY: status is a live int; pid is this test's child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED | libc::WNOHANG) };
        if r == pid {
            return status;
        }
        assert!(r == 0 && Instant::now() < deadline, "pid {pid}: no change within {secs} s (waitpid {r})");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts `cmd` with stdout piped and waits for its `ready PID` line; returns the child and the
/// target's pid.
fn start_ready(
    cmd: &mut Command,
) -> (std::process::Child, std::io::BufReader<std::process::ChildStdout>, u32) {
    use std::io::BufRead;
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let pid = parse_ready(line.trim()).unwrap_or_else(|| panic!("no ready line: {line:?}"));
    (child, out, pid)
}

fn rest(mut out: impl std::io::Read) -> String {
    let mut s = String::new();
    out.read_to_string(&mut s).unwrap();
    s
}

/// Issue 11, case 4: SIGTERM (what systemd and `docker stop` send) and the other signals a user
/// sends to vmshim reach the target, whose handler runs; vmshim reports and exits with the
/// target's status.
#[test]
fn signals_sent_to_vmshim_reach_the_target_and_its_status_comes_back() {
    let dir = TestDir::new("harm_signals");
    let harm = build_c("harm");
    let h = harm.to_str().unwrap();
    // Bare first: what the program does with SIGTERM sent to it.
    let (mut bare, out, pid) = start_ready(Command::new(&harm).arg("term"));
    send_signal(pid as i32, libc::SIGTERM);
    let bare_status = bare.wait().unwrap();
    let bare_out = rest(out);
    assert_eq!((bare_status.code(), bare_out.as_str()), (Some(3), "term\n"));

    let mut cmd = vmshim_run(&dir, &["--report", "r.txt", "--out", "t.trace"], &[h, "term"]);
    let (mut child, out, target) = start_ready(&mut cmd);
    assert_ne!(target, child.id(), "the ready pid is the target's, not vmshim's");
    send_signal(child.id() as i32, libc::SIGTERM);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), bare_status.code());
    assert_eq!(rest(out), bare_out, "the handler ran");
    let report = std::fs::read_to_string(dir.join("r.txt")).unwrap();
    assert!(report.contains("exited 3") && report.contains("vmshim accounts for"), "{report}");

    // Each other signal: the program exits with its number, as bare.
    for sig in [libc::SIGINT, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1] {
        // The readers stay open: the program prints before it exits.
        let (mut bare, _bare_out, pid) = start_ready(Command::new(&harm).arg("wait"));
        send_signal(pid as i32, sig);
        let want = bare.wait().unwrap().code();
        assert_eq!(want, Some(sig));
        let out = format!("t{sig}.trace");
        let (mut child, _out, _) =
            start_ready(&mut vmshim_run(&dir, &["--report", "/dev/null", "--out", &out], &[h, "wait"]));
        send_signal(child.id() as i32, sig);
        assert_eq!(child.wait().unwrap().code(), want, "signal {sig} sent to vmshim");
    }
}

/// Issue 11, case 4: a target that stops (raise(SIGSTOP), or SIGTSTP sent to vmshim) stops
/// vmshim with the same signal, as its parent shell sees it, and SIGCONT to vmshim resumes it.
#[test]
fn stop_signals_stop_vmshim_as_they_stop_the_target_and_sigcont_resumes_both() {
    let dir = TestDir::new("harm_stops");
    let harm = build_c("harm");
    let h = harm.to_str().unwrap();
    let mut seen = Vec::new();
    for under in [false, true] {
        // raise(SIGSTOP) in the target.
        let mut cmd = if under {
            vmshim_run(&dir, &["--report", "/dev/null", "--out", &format!("s{under}.trace")], &[h, "stop"])
        } else {
            let mut c = Command::new(&harm);
            c.arg("stop");
            c
        };
        let (child, out, _) = start_ready(&mut cmd);
        let pid = child.id() as libc::pid_t;
        let stopped = wait_change(pid, 30);
        assert!(libc::WIFSTOPPED(stopped), "under vmshim: {under}: {stopped:#x}");
        let stop_sig = libc::WSTOPSIG(stopped);
        send_signal(pid, libc::SIGCONT);
        let ended = wait_change(pid, 30);
        assert!(libc::WIFEXITED(ended), "{ended:#x}");
        seen.push((stop_sig, libc::WEXITSTATUS(ended), rest(out)));
        drop(child);

        // SIGTSTP sent to the process the shell started.
        let mut cmd = if under {
            vmshim_run(&dir, &["--report", "/dev/null", "--out", &format!("t{under}.trace")], &[h, "term"])
        } else {
            let mut c = Command::new(&harm);
            c.arg("term");
            c
        };
        let (child, out, target) = start_ready(&mut cmd);
        let pid = child.id() as libc::pid_t;
        send_signal(pid, libc::SIGTSTP);
        let stopped = wait_change(pid, 30);
        assert!(libc::WIFSTOPPED(stopped), "under vmshim: {under}: {stopped:#x}");
        let state = std::fs::read_to_string(format!("/proc/{target}/stat")).unwrap();
        assert!(state.rsplit_once(") ").unwrap().1.starts_with(['T', 't']), "the target is stopped: {state}");
        send_signal(pid, libc::SIGCONT);
        send_signal(pid, libc::SIGTERM);
        let ended = wait_change(pid, 30);
        assert!(libc::WIFEXITED(ended), "{ended:#x}");
        seen.push((libc::WSTOPSIG(stopped), libc::WEXITSTATUS(ended), rest(out)));
        drop(child);
    }
    assert_eq!(seen[0], seen[2], "raise(SIGSTOP): bare and under vmshim");
    assert_eq!(seen[1], seen[3], "SIGTSTP: bare and under vmshim");
    assert_eq!((seen[0].0, seen[1].0), (libc::SIGSTOP, libc::SIGTSTP));
}

/// Issue 11, case 4: `ptrace(PTRACE_TRACEME)` succeeds under vmshim as it does bare (it got
/// EPERM), and vmshim still captures the kernel's map at the target's exit.
#[test]
fn ptrace_traceme_succeeds_and_the_exit_map_is_still_captured() {
    let dir = TestDir::new("harm_traceme");
    let harm = build_c("harm");
    let bare = run_with_timeout(Command::new(&harm).arg("traceme"), TIMEOUT);
    assert_eq!(text(&bare.stdout), "traceme 0 0\n");
    let out: Output = run_with_timeout(
        &mut vmshim_run(
            &dir,
            &["--json", "--report", "r.json", "--out", "t.trace"],
            &[harm.to_str().unwrap(), "traceme"],
        ),
        TIMEOUT,
    );
    assert_eq!(out.status.code(), bare.status.code(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, bare.stdout);
    let report = read_report(&dir.join("r.json"));
    assert!(
        report.vsz.kernel_final_bytes.is_some_and(|b| b > 0),
        "the exit map was captured: {:?}",
        report.vsz
    );
}

/// Issue 11, case 6: ASan and TSan programs run under vmshim with the output and status they
/// have bare (ASan refused to start with the shim ahead of it; LeakSanitizer died under
/// vmshim's ptrace), the trace goes where VMSHIM_OUT says (the shim starts from the
/// sanitizer's first mmap, before `environ`), and the shadow memory has its own category.
#[test]
fn asan_and_tsan_programs_run_as_bare_and_their_shadow_is_named() {
    for (flag, held) in [("-fsanitize=address", false), ("-fsanitize=thread", true)] {
        let dir = TestDir::new(&format!("harm_{}", &flag[11..]));
        let prog = build_c_with("sanitized", &[flag]);
        let bare = run_with_timeout(&mut Command::new(&prog), TIMEOUT);
        assert_eq!(bare.status.code(), Some(5), "{flag} bare: {}", text(&bare.stderr));
        let out = run_with_timeout(
            &mut vmshim_run(
                &dir,
                &["--json", "--report", "r.json", "--out", "t.trace"],
                &[prog.to_str().unwrap()],
            ),
            TIMEOUT,
        );
        assert_eq!(out.status.code(), bare.status.code(), "{flag}: {}", text(&out.stderr));
        assert_eq!(out.stdout, bare.stdout, "{flag}");
        let err = text(&out.stderr);
        assert!(
            !err.contains("ERROR") && !err.contains("does not come first"),
            "{flag}: a sanitizer complained: {err}"
        );
        assert!(dir.join("t.trace").exists(), "{flag}: the trace is where VMSHIM_OUT says");
        let report = read_report(&dir.join("r.json"));
        let shadow = category_bytes(&report, "sanitizer_shadow");
        assert!(shadow >= 1 << 40, "{flag}: {shadow} bytes of shadow");
        // ASan's leak check rules out ptrace; the exit watcher still sees its exit.
        assert!(report.vsz.kernel_final_bytes.is_some(), "{flag} (held with ptrace: {held}): the exit map");
    }
}

/// Issue 11, case 6: a library that exports `mmap` ahead of the shim in LD_PRELOAD (tcmalloc)
/// takes the program's calls; the report says which calls it cannot see and why, never
/// silently. With the shim first, nothing is said and the calls are recorded.
#[test]
fn a_library_that_takes_mmap_ahead_of_the_shim_is_named_in_the_report() {
    let dir = TestDir::new("harm_tcmalloc");
    let tcmalloc = Path::new("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4");
    assert!(tcmalloc.exists(), "scripts/test.sh installs libtcmalloc-minimal4");
    let prog = build_c("mapseq");
    for (name, order) in [("first", [tcmalloc, &shim_lib()]), ("second", [&shim_lib(), tcmalloc])] {
        let preload = format!("{}:{}", order[0].display(), order[1].display());
        let trace = dir.join(format!("{name}.trace"));
        let out = run_with_timeout(
            Command::new(&prog).current_dir(dir.path()).env("LD_PRELOAD", &preload).env("VMSHIM_OUT", &trace),
            TIMEOUT,
        );
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        let rep =
            run_with_timeout(Command::new(vmshim_bin()).args(["report", "--json"]).arg(&trace), TIMEOUT);
        let report = parse_report(&rep.stdout);
        let shadowed = &report.shadowed;
        if name == "first" {
            assert_eq!(shadowed.len(), 1, "{shadowed:?}");
            assert!(shadowed[0].library.contains("libtcmalloc_minimal"));
            let fs: Vec<&str> = shadowed[0].functions.iter().map(String::as_str).collect();
            assert!(fs.contains(&"mmap") && fs.contains(&"munmap"), "{fs:?}");
            let txt = run_with_timeout(Command::new(vmshim_bin()).arg("report").arg(&trace), TIMEOUT);
            assert!(text(&txt.stdout).contains("not seen: calls to mmap"), "{}", text(&txt.stdout));
        } else {
            assert!(shadowed.is_empty(), "{shadowed:?}");
        }
    }
}
