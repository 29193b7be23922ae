//! Issue 12, the report's side: the whole run in one report. The process table lists exactly
//! the processes the program made (never a stale trace with a reused-looking pid), a fork
//! child's inherited regions keep the parent's category, thread and stack, and `--pid` and
//! `--tree` give the sections. Until `vmshim run` captures every process's map at exit, the
//! children's figures are held against their own traces' replay.

use crate::common::report::{Region, Report, Row};
use crate::common::*;
use crate::under_vmshim::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use vmshim_trace::decode::{Fork, Start};
use vmshim_trace::record::{call, exit, start};
use vmshim_trace::{Event, HEADER_SIZE, Kind, RECORD_HEADER, Record};

/// What proctree printed: the pids, the parent's 8 MiB reservation and the fork times.
struct Tree {
    parent: u32,
    child1: u32,
    child2: u32,
    grandchild: u32,
    reserve: (u64, u64),
    child1_mmap: (u64, u64),
    /// (child pid, CLOCK_MONOTONIC just before its fork)
    forks: Vec<(u32, u64)>,
}

fn parse_tree(stdout: &str) -> Tree {
    let words = |tag: &str| -> Vec<String> {
        let l = stdout
            .lines()
            .find(|l| l.split(' ').next() == Some(tag))
            .unwrap_or_else(|| panic!("{tag}: {stdout}"));
        l.split(' ').map(str::to_string).collect()
    };
    let (p, c1) = (words("parent"), words("child1"));
    Tree {
        parent: p[1].parse().unwrap(),
        child1: c1[1].parse().unwrap(),
        child2: words("child2")[1].parse().unwrap(),
        grandchild: words("grandchild")[1].parse().unwrap(),
        reserve: (parse_hex(&p[3]), parse_hex(&p[4])),
        child1_mmap: (parse_hex(&c1[3]), parse_hex(&c1[4])),
        forks: stdout
            .lines()
            .filter_map(|l| l.strip_prefix("fork "))
            .map(|l| {
                let (pid, t) = l.split_once(" at ").unwrap();
                (pid.parse().unwrap(), t.parse().unwrap())
            })
            .collect(),
    }
}

fn report(args: &[&str], trace: &Path) -> Output {
    run_with_timeout(Command::new(vmshim_bin()).arg("report").arg(trace).args(args), TIMEOUT)
}

fn report_json(args: &[&str], trace: &Path) -> Report {
    let out = report(&[&["--json", "--top", "1000"], args].concat(), trace);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // --tree's sections and --pid's sections are vmshim-report/1 too.
    let r = parse_report(&out.stdout);
    assert_eq!(r.sections.is_some(), args.contains(&"--tree"), "sections only with --tree");
    r
}

/// [`report_json`]'s report as JSON, for comparing two reports whole: the schema's types have no
/// `PartialEq`, and JSON equality is stricter (it sees a field the types would drop).
fn report_json_value(args: &[&str], trace: &Path) -> Value {
    let out = report(&[&["--json", "--top", "1000"], args].concat(), trace);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    parse_report(&out.stdout);
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn report_text(args: &[&str], trace: &Path) -> String {
    let out = report(args, trace);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Offsets, kinds and lengths of a trace's records, in file order.
fn records(bytes: &[u8]) -> Vec<(usize, u16, usize)> {
    let cursor = u64::from_le_bytes(bytes[24..32].try_into().unwrap()) as usize;
    let mut out = Vec::new();
    let mut at = HEADER_SIZE;
    while at + 8 <= cursor.min(bytes.len()) {
        let w0 = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let len = (w0 >> 32) as usize;
        if w0 as u16 != vmshim_trace::RECORD_MAGIC || len < 8 {
            break;
        }
        out.push((at, (w0 >> 16) as u16, len));
        at += len;
    }
    out
}

/// Rewrites the Start record of the trace at `path` through `edit` (its fork: parent tid and
/// time). The records after it move by the size difference, and call records' stack
/// references move with them.
fn rewrite_start(path: &Path, edit: impl FnOnce(&mut Start, &mut Option<(u32, u64)>)) {
    let bytes = std::fs::read(path).unwrap();
    let trace = vmshim_trace::parse(&bytes).unwrap();
    let mut start = trace
        .events
        .iter()
        .find_map(|e| if let Event::Start(s) = e { Some(s.clone()) } else { None })
        .unwrap();
    let mut fork = start.fork.as_ref().map(|f| (f.parent_tid, f.mono_ns));
    edit(&mut start, &mut fork);
    start.fork = fork.map(|(parent_tid, mono_ns)| Fork { parent_tid, mono_ns, stack: Vec::new() });
    let mut buf = vec![0u8; 64 << 10];
    let n = start::encode(&mut buf, &start.record()).unwrap();
    let recs = records(&bytes);
    let &(at, _, len) = recs.iter().find(|r| r.1 == Kind::Start as u16).unwrap();
    let delta = n as i64 - len as i64;
    let cursor = u64::from_le_bytes(bytes[24..32].try_into().unwrap()) as usize;
    let mut out = bytes[..at].to_vec();
    out.extend_from_slice(&buf[..n]);
    for &(r, kind, rlen) in recs.iter().filter(|r| r.0 > at) {
        let mut rec = bytes[r..r + rlen].to_vec();
        if kind == Kind::Call as u16
            && let Ok(Record::Call(mut c)) = Record::decode(Kind::Call, &rec[RECORD_HEADER..], 0)
            && c.flags & vmshim_trace::CALL_FLAG_STACK_REF != 0
        {
            c.stack_ref = (c.stack_ref as i64 + delta) as u64;
            let n = call::encode(&mut rec, &c.record()).unwrap();
            assert_eq!(n, rlen, "a moved reference keeps the record's length");
        }
        out.extend_from_slice(&rec);
    }
    assert_eq!(out.len() as i64, cursor as i64 + delta);
    let end = out.len() as u64;
    out[24..32].copy_from_slice(&end.to_le_bytes());
    std::fs::write(path, out).unwrap();
}

/// Runs proctree under `vmshim run` in `dir`; returns what it printed and the report.
fn run_proctree(dir: &TestDir) -> (Tree, Report) {
    run_proctree_with(dir, &[])
}

/// [`run_proctree`] with the program's arguments (`quiet`, `clearenv`).
fn run_proctree_with(dir: &TestDir, args: &[&str]) -> (Tree, Report) {
    let mut cmd = vmshim_run_cmd(dir, &build_c("proctree"), args);
    let out = run_with_timeout(&mut cmd, TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    (parse_tree(&stdout), read_report(&dir.join("report.json")))
}

fn row(report: &Report, pid: u32) -> &Row {
    let ps = &report.processes;
    ps.iter().find(|p| p.pid == pid).unwrap_or_else(|| panic!("no process {pid}: {ps:#?}"))
}

fn pids(report: &Report) -> Vec<u32> {
    let mut v: Vec<u32> = report.processes.iter().map(|p| p.pid).collect();
    v.sort_unstable();
    v
}

fn trace_of(report: &Report, pid: u32) -> PathBuf {
    PathBuf::from(&row(report, pid).trace)
}

/// The region of a section's report that covers `[start, end)`.
fn covering(section: &Report, (start, end): (u64, u64)) -> &Region {
    section
        .regions
        .iter()
        .find(|r| r.start <= start && end <= r.end)
        .unwrap_or_else(|| panic!("nothing covers {start:#x}-{end:#x}"))
}

fn functions(region: &Region) -> Vec<&str> {
    frame_functions(&region.stack)
}

#[test]
fn the_process_table_lists_the_processes_the_program_made_with_their_parents() {
    let dir = TestDir::new("tree_table");
    let (t, report) = run_proctree(&dir);
    let mut made = vec![t.parent, t.child1, t.child2, t.grandchild];
    made.sort_unstable();
    assert_eq!(pids(&report), made);
    for (pid, ppid, depth) in [
        (t.parent, None, 0),
        (t.child1, Some(t.parent), 1),
        (t.child2, Some(t.parent), 1),
        (t.grandchild, Some(t.child2), 2),
    ] {
        let r = row(&report, pid);
        if let Some(ppid) = ppid {
            assert_eq!(r.ppid, ppid, "{r:?}");
        }
        assert_eq!(r.depth, depth, "{r:?}");
        // Each row is its own trace's figures: the trace reported alone has that address
        // space, and the process's section in the run has the row's figures.
        let own = report_json(&[], &trace_of(&report, pid));
        assert_eq!(own.process.pid, pid);
        assert_eq!(r.vsz_bytes, own.vsz.final_bytes, "{r:?}");
        let section = report_json(&["--pid", &pid.to_string()], &dir.join("t.trace"));
        assert_eq!(r.explained_fraction, section.attributed_fraction, "{r:?}");
        assert_eq!(r.inherited_bytes, section.process.inherited_bytes, "{r:?}");
    }
    // The top's figures are the kernel's; a child's exit is observed or said not to be.
    let top = row(&report, t.parent);
    assert_eq!((top.ended.as_str(), top.vsz_from_kernel), ("exited 0", true));
    for (pid, code) in [(t.child1, 0), (t.child2, 0), (t.grandchild, 3)] {
        let ended = &row(&report, pid).ended;
        assert!(*ended == "not observed" || *ended == format!("exited {code}"), "{pid}: {ended}");
    }
    // child1's own mmap is its own, on its own thread.
    let c1 = report_json(&[], &trace_of(&report, t.child1));
    let own = covering(&c1, t.child1_mmap);
    assert_eq!((own.tid, own.inherited), (Some(t.child1), None), "{own:?}");
}

/// The fork's parent thread and time, in a child trace that does not carry them yet (the shim
/// writes them when it creates the child's trace in the fork; until then the test adds what
/// the program printed).
fn note_fork(report: &Report, t: &Tree, pid: u32, forker: u32) {
    let path = trace_of(report, pid);
    let at = t.forks.iter().find(|f| f.0 == pid).unwrap().1;
    rewrite_start(&path, |_, fork| {
        if fork.is_none() {
            *fork = Some((forker, at));
        }
    });
}

#[test]
fn a_fork_child_keeps_the_parents_category_thread_and_stack_for_what_it_inherited() {
    let dir = TestDir::new("tree_inherit");
    let (t, report) = run_proctree(&dir);
    note_fork(&report, &t, t.child1, t.parent);
    note_fork(&report, &t, t.child2, t.parent);
    note_fork(&report, &t, t.grandchild, t.child2);
    let top = dir.join("t.trace");
    // The parent's own section: the reservation is its mmap from parent_reserve.
    let parent = report_json(&[], &top);
    let theirs = covering(&parent, t.reserve);
    assert_eq!(theirs.category, "anon_mmap");
    assert!(functions(theirs).contains(&"parent_reserve"), "{theirs:?}");
    // A child's and the grandchild's: the same region, inherited from the parent, with the
    // parent's category, thread and stack (through child2 for the grandchild).
    for pid in [t.child1, t.grandchild] {
        let section = report_json(&["--pid", &pid.to_string()], &top);
        assert_eq!(section.process.pid, pid);
        let r = covering(&section, t.reserve);
        assert_eq!(r.category, theirs.category, "{pid}: {r:?}");
        let inherited = r.inherited.unwrap_or_else(|| panic!("{pid}: {r:?}"));
        assert_eq!((inherited.pid, inherited.tid), (t.parent, Some(t.parent)), "{pid}: {r:?}");
        assert_eq!(r.tid, Some(t.parent), "{pid}: {r:?}");
        assert!(functions(r).contains(&"parent_reserve"), "{pid}: {r:?}");
        assert!(section.process.inherited_bytes >= t.reserve.1 - t.reserve.0);
        // What is inherited is filed as the parent files it: the images (code, data, .bss) as
        // libraries in both, nothing else, and nothing left unexplained.
        let bytes = |v: &Report, cat: &str, inherited: bool| -> u64 {
            v.regions
                .iter()
                .filter(|r| r.category == cat && (!inherited || r.inherited.is_some()))
                .map(|r| r.end - r.start)
                .sum()
        };
        assert_eq!(bytes(&section, "library", true), bytes(&parent, "library", false), "{pid}");
        assert_eq!(bytes(&section, "unattributed", true) + bytes(&section, "inherited", true), 0, "{pid}");
        let text = report_text(&["--pid", &pid.to_string(), "--top", "1000"], &top);
        assert!(text.contains(&format!("inherited from pid {}, thread {}", t.parent, t.parent)), "{text}");
        assert!(text.contains(&format!("fork child of pid {}", row(&report, pid).ppid)), "{text}");
    }
    // Without the parent's trace: said so, never `library`.
    std::fs::rename(trace_of(&report, t.child2), dir.join("elsewhere")).unwrap();
    let grandchild = trace_of(&report, t.grandchild);
    let orphan = report_json(&[], &grandchild);
    let r = covering(&orphan, t.reserve);
    assert_eq!(
        (r.category.as_str(), r.inherited.map(|i| i.parent_traced)),
        ("inherited", Some(false)),
        "{r:?}"
    );
    let text = report_text(&[], &grandchild);
    assert!(text.contains("inherited (parent not traced)"), "{text}");
}

#[test]
fn a_stale_trace_with_a_reused_pid_from_an_earlier_run_is_never_listed() {
    let earlier = TestDir::new("tree_stale_earlier");
    let (old, old_report) = run_proctree(&earlier);
    let dir = TestDir::new("tree_stale");
    let (t, _) = run_proctree(&dir);
    // The earlier run's child1 trace, beside this run's, named as this run's children are,
    // claiming this run's child1 pid and parent.
    let stale = dir.join(format!("t.trace.{}", old.child1 + 100_000));
    std::fs::copy(trace_of(&old_report, old.child1), &stale).unwrap();
    rewrite_start(&stale, |s, _| {
        s.pid = t.child1;
        s.ppid = t.parent;
    });
    let report = report_json(&[], &dir.join("t.trace"));
    let mut made = vec![t.parent, t.child1, t.child2, t.grandchild];
    made.sort_unstable();
    assert_eq!(pids(&report), made);
    let listed: Vec<&str> = report.processes.iter().map(|p| p.trace.as_str()).collect();
    assert!(!listed.iter().any(|p| Path::new(p) == stale), "{listed:?}");
}

#[test]
fn issue_12_a_shell_loops_run_report_is_the_report_of_its_traces_afterwards() {
    // `vmshim run` lists the run once, adds the maps at exit, and groups that listing again with
    // the exits it added; `vmshim report` afterwards lists the traces as they are then. Both
    // answers, every process of the loop in them, must be the same.
    let loops = 40;
    let dir = TestDir::new("tree_loop_same");
    let script =
        format!("for ((i=0;i<{loops};i++)); do /bin/true; done; /bin/sh -c 'exec /bin/true'; exit 0");
    let mut cmd = vmshim_run_cmd(&dir, Path::new("/bin/bash"), &["-c", &script]);
    let out = run_with_timeout(&mut cmd, TIMEOUT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = load_report(&dir.join("report.json"));
    let later = report_json_value(&[], &dir.join("t.trace"));
    assert_eq!(later, printed, "vmshim report T gives the answer vmshim run gave");
    let later = typed_report(&later);
    // bash, a process per /bin/true of the loop, and the sh that exec'd /bin/true.
    assert_eq!(later.processes.len(), 1 + loops + 1, "{:#?}", later.processes);
    let execd = later.processes.iter().filter(|p| p.images == 2).count();
    assert_eq!(execd, loops, "each fork child of the loop exec'd /bin/true: {:#?}", later.processes);
    let last = later.processes.iter().find(|p| p.images == 3).expect("bash's child: sh, then /bin/true");
    assert!(last.ended.starts_with("exited 0"), "{last:?}");
    // Every fork child's map at exit was added to its last image's trace.
    assert!(later.processes.iter().all(|p| p.vsz_from_kernel), "{:#?}", later.processes);
}

#[test]
fn pid_gives_one_section_and_tree_gives_the_table_then_every_section_in_tree_order() {
    let dir = TestDir::new("tree_views");
    let (t, _) = run_proctree(&dir);
    let top = dir.join("t.trace");
    let one = report_text(&["--pid", &t.child2.to_string()], &top);
    assert!(one.starts_with(&format!("vmshim: pid {}  ", t.child2)), "{one}");
    assert!(one.contains("\nProcesses (4;"), "{one}");
    let tree = report_text(&["--tree"], &top);
    assert!(tree.starts_with("Processes (4;"), "{tree}");
    let heads: Vec<u32> = tree
        .lines()
        .filter_map(|l| l.strip_prefix("vmshim: pid "))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    // Tree order: the parent, then each child followed by its own children (siblings in the
    // order they started, which between the two children may go either way).
    let c2 = heads.iter().position(|&p| p == t.child2).unwrap();
    assert!(heads[0] == t.parent && heads.get(c2 + 1) == Some(&t.grandchild), "{heads:?}\n{tree}");
    let mut sorted = heads.clone();
    sorted.sort_unstable();
    let mut made = vec![t.parent, t.child1, t.child2, t.grandchild];
    made.sort_unstable();
    assert_eq!(sorted, made);
    // The table's lines are in the same order, children indented under their parents.
    let depth = |pid: u32| {
        if pid == t.parent {
            0
        } else if pid == t.grandchild {
            2
        } else {
            1
        }
    };
    let table: Vec<&str> = tree.lines().skip(2).take(4).collect();
    for (line, pid) in table.iter().zip(&heads) {
        assert!(line.starts_with(&format!("  {}{pid} ", "  ".repeat(depth(*pid)))), "{line}");
    }
    let json = report_json(&["--tree"], &top);
    let sections: Vec<u32> =
        json.sections.as_ref().expect("--tree's sections").iter().map(|s| s.process.pid).collect();
    assert_eq!(sections, heads);
    // The page has the table too, a row per process.
    let page = dir.join("tree.html");
    report_text(&["--html", page.to_str().unwrap()], &top);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<table id=processes>"), "{html}");
    for pid in &heads {
        assert_eq!(html.matches(&format!("<tr data-pid=\"{pid}\">")).count(), 1, "{pid}");
    }
    // A pid that is not in the run: a clear error naming the run's processes.
    let out = report(&["--pid", "1"], &top);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no process 1") && err.contains(&t.grandchild.to_string()), "{err}");
}

/// `vmshim run --out T -- execstatic PROG` and then `vmshim report T`: (stdout, the run's JSON
/// report, the later report's JSON, the later text report, the directory). The two reports come
/// as JSON, to be compared whole (see [`report_json_value`]); read them through [`typed_report`].
fn run_exec(name: &str, prog: &Path) -> (String, Value, Value, String, TestDir) {
    let dir = TestDir::new(name);
    let mut cmd = vmshim_run_cmd(&dir, &build_c("execstatic"), &[prog.to_str().unwrap()]);
    let out = run_with_timeout(&mut cmd, TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let printed = load_report(&dir.join("report.json"));
    let later = report_json_value(&[], &dir.join("t.trace"));
    let text = report_text(&[], &dir.join("t.trace"));
    (stdout, printed, later, text, dir)
}

/// execstatic's "static <pid> vsz <KiB>" line: (pid, VSZ in bytes).
fn static_line(stdout: &str) -> (u32, u64) {
    let w: Vec<&str> = stdout.lines().find(|l| l.starts_with("static ")).expect(stdout).split(' ').collect();
    (w[1].parse().unwrap(), w[3].parse::<u64>().unwrap() * 1024)
}

#[test]
fn report_of_an_exec_chain_answers_with_the_last_image_as_run_did() {
    // A dynamic program that execs another dynamic one (what a wrapper script does).
    let (stdout, printed, later, _, dir) = run_exec("tree_exec_dynamic", &build_c("execstatic"));
    let (pid, vsz) = static_line(&stdout);
    assert_eq!(later, printed, "vmshim report T gives the answer vmshim run gave");
    let later = typed_report(&later);
    let p = &later.process;
    assert_eq!((p.pid, p.image, p.images.len()), (pid, 2, 2), "{p:?}");
    assert!(p.images[0].ended.starts_with("exec'd "), "{p:?}");
    // Reconciled against the last image's own map at exit, as VmSize gave it then.
    assert_eq!(later.vsz.kernel_final_bytes, Some(vsz));
    assert!(later.attributed_fraction > 0.999, "{}", later.attributed_fraction);
    // The first image is there on demand, replayed from its own calls.
    let first = report_json(&["--pid", &pid.to_string(), "--image", "1"], &dir.join("t.trace"));
    assert_eq!((first.process.image, first.vsz.kernel_final_bytes), (1, None));
}

#[test]
fn an_exec_into_a_static_program_is_unattributed_under_the_shim_and_recorded_with_syscalls() {
    let stat = build_c_with("execstatic", &["-static"]);
    assert!(elf_interpreter(&stat).is_none(), "a static build");
    let (stdout, printed, later, text, _) = run_exec("tree_exec_static", &stat);
    let (pid, vsz) = static_line(&stdout);
    assert_eq!(later, printed, "vmshim report T gives the answer vmshim run gave");
    let later = typed_report(&later);
    let p = &later.process;
    assert_eq!((p.pid, p.image), (pid, 2), "{p:?}");
    assert_eq!(p.untraced_final.as_ref().and_then(|u| u.statically_linked), Some(true), "{p:?}");
    assert_eq!(later.vsz.kernel_final_bytes, Some(vsz));
    // Its 4 MiB reservation: nothing recorded it.
    let cat = |c: &str| later.categories.iter().find(|x| x.category == c).map(|x| x.bytes);
    assert!(cat("unattributed").unwrap() >= 4 << 20, "{:?}", later.categories);
    assert!(text.contains(&format!("final image: {} is statically linked", stat.display())), "{text}");
    assert!(text.contains("vmshim run --syscalls"), "{text}");
    // What the hint says: with --syscalls the syscall recorder follows the exec into the static
    // image, and its own trace of the same run explains the image the shim could not.
    let dir = TestDir::new("tree_exec_static_syscalls");
    let mut cmd = vmshim_run_cmd(&dir, &build_c("execstatic"), &[stat.to_str().unwrap()]);
    cmd.arg("--syscalls");
    let mut args: Vec<std::ffi::OsString> = cmd.get_args().map(|a| a.to_os_string()).collect();
    // `--syscalls` belongs before the `--` that ends vmshim's options.
    let dashes = args.iter().position(|a| a == "--").unwrap();
    let flag = args.pop().unwrap();
    args.insert(dashes, flag);
    let mut cmd = Command::new(vmshim_bin());
    cmd.current_dir(dir.path()).args(&args);
    let out = run_with_timeout(&mut cmd, TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let (pid, vsz) = static_line(&stdout);
    let recorded = report_json(&[], &dir.join("t.trace.syscalls"));
    assert_eq!((recorded.process.pid, recorded.process.image), (pid, 2), "{:?}", recorded.process);
    assert!(recorded.recorder.starts_with("syscalls"), "{}", recorded.recorder);
    assert_eq!(recorded.vsz.kernel_final_bytes, Some(vsz));
    assert!(recorded.attributed_fraction > 0.999, "{}", recorded.attributed_fraction);
    let anon = recorded.categories.iter().find(|x| x.category == "anon_mmap").map_or(0, |x| x.bytes);
    assert!(anon >= 4 << 20, "the 4 MiB reservation is the recorder's mmap: {:?}", recorded.categories);
}

/// Appends an Exit record to a finished trace, as `vmshim run` does for an image it saw exec.
fn append_exit(path: &Path, raw_status: i32, how: &str) {
    let mut bytes = std::fs::read(path).unwrap();
    let cursor = u64::from_le_bytes(bytes[24..32].try_into().unwrap()) as usize;
    bytes.truncate(cursor);
    let mut buf = vec![0u8; how.len() + 64];
    let n = exit::encode(&mut buf, raw_status, how.as_bytes()).unwrap();
    bytes.extend_from_slice(&buf[..n]);
    let end = bytes.len() as u64;
    bytes[24..32].copy_from_slice(&end.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn an_image_that_exec_d_a_static_program_says_so_and_keeps_its_own_map() {
    let stat = build_c_with("execstatic", &["-static"]);
    let dir = TestDir::new("tree_exec_away");
    let trace = dir.join("t.trace");
    let out = run_with_timeout(
        Command::new(build_c("execstatic"))
            .arg(&stat)
            .env("LD_PRELOAD", shim_lib())
            .env("VMSHIM_OUT", &trace),
        TIMEOUT,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (pid, _) = static_line(&String::from_utf8_lossy(&out.stdout));
    // What `vmshim run` adds to an image it saw exec (its map at the exec is left out here: the
    // report then replays the image's calls).
    append_exit(&trace, i32::MIN, &format!("exec'd {}", stat.display()));
    let report = report_json(&[], &trace);
    let p = &report.process;
    assert_eq!((p.pid, p.image), (pid, 1), "the traced image is the last one with a map: {p:?}");
    assert_eq!(p.images.len(), 2, "{p:?}");
    assert_eq!(p.images[1].trace, None, "{p:?}");
    let u_ = p.untraced_final.as_ref().unwrap_or_else(|| panic!("{p:?}"));
    assert_eq!((u_.statically_linked, u_.map_known), (Some(true), false), "{p:?}");
    assert_eq!(row(&report, pid).ended, format!("exec'd {}", stat.display()));
    let text = report_text(&[], &trace);
    assert!(text.contains(&format!("then exec'd: {} is statically linked", stat.display())), "{text}");
}

/// Whether a trace holds a start-up map (`Maps` records from the shim's start).
fn has_start_up_map(trace: &Path) -> bool {
    let t = vmshim_trace::parse(&std::fs::read(trace).unwrap()).unwrap();
    t.events.iter().any(|e| matches!(e, Event::Maps(m) if m.source == vmshim_trace::MapsSource::Initial))
}

/// Under the exit watcher, a fork child that makes no recorded call never reads its start-up map
/// (issue 12: cheap start): its map at exit, which the watcher read from the kernel, is all
/// explained, what it shares with the parent's address space at the fork as inherited, with the
/// parent's category, thread and stack. A child that records reads its map as before.
#[test]
fn a_fork_child_that_records_nothing_is_explained_by_its_map_at_exit_and_what_it_inherited() {
    let dir = TestDir::new("tree_quiet");
    let (t, report) = run_proctree_with(&dir, &["quiet"]);
    let top = dir.join("t.trace");
    assert!(has_start_up_map(&trace_of(&report, t.child1)), "child1 records: its start-up map is read");
    let parent = report_json(&[], &top);
    let theirs = covering(&parent, t.reserve);
    for pid in [t.child2, t.grandchild] {
        assert!(!has_start_up_map(&trace_of(&report, pid)), "{pid} recorded nothing and read no map");
        let section = report_json(&["--pid", &pid.to_string()], &top);
        let kernel = section.vsz.kernel_final_bytes.unwrap_or_else(|| panic!("{pid}: the map at exit"));
        assert_eq!(section.vsz.final_bytes, kernel, "{pid}");
        let unexplained: u64 = section
            .regions
            .iter()
            .filter(|r| matches!(r.category.as_str(), "unattributed" | "inherited"))
            .map(|r| r.end - r.start)
            .sum();
        assert_eq!(unexplained, 0, "{pid}: every byte of the map at exit is explained");
        let r = covering(&section, t.reserve);
        assert_eq!(r.category, theirs.category, "{pid}: {r:?}");
        let inherited = r.inherited.unwrap_or_else(|| panic!("{pid}: {r:?}"));
        let forker = if pid == t.grandchild { t.child2 } else { t.parent };
        assert_eq!(inherited.pid, t.parent, "{pid} (forked by {forker}): {r:?}");
        assert!(functions(r).contains(&"parent_reserve"), "{pid}: {r:?}");
        assert!(section.process.inherited_bytes >= t.reserve.1 - t.reserve.0, "{pid}");
    }
}

/// Under the exit watcher, an exec'd program that makes no recorded call (`/bin/true`) writes
/// only its Start record and the loader's addresses: the report explains all of its map at exit,
/// the loader's anonymous regions by what they hold. Without the watcher (`--no-watch`) the
/// start-up map is read at start as before; both runs find the same loader regions.
#[test]
fn an_exec_d_program_that_records_nothing_names_the_loaders_regions_by_what_they_hold() {
    let truth = std::fs::canonicalize("/bin/true").unwrap();
    let loader_regions = |extra: &[&str], deferred: bool| -> Vec<(u64, String)> {
        let dir = TestDir::new(if deferred { "tree_true_watched" } else { "tree_true_eager" });
        let out = run_with_timeout(&mut vmshim_run_cmd_with(&dir, extra, &truth, &[]), TIMEOUT);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(has_start_up_map(&dir.join("t.trace")), !deferred, "{extra:?}");
        let r = read_report(&dir.join("report.json"));
        let kernel = r.vsz.kernel_final_bytes.expect("the map at exit");
        let explained: u64 =
            r.regions.iter().filter(|x| x.category != "unattributed").map(|x| x.end - x.start).sum();
        assert_eq!((r.vsz.final_bytes, explained), (kernel, kernel), "{extra:?}: {:#?}", r.regions);
        let loader: Vec<&Region> = r.regions.iter().filter(|x| x.cause == "loader").collect();
        assert!(!loader.is_empty(), "{extra:?}: the loader's static TLS block at least");
        if deferred {
            for x in &loader {
                let why = x.evidence.as_deref().unwrap_or_default();
                assert!(why.contains("TCB") || why.contains("DTV") || why.contains("link map"), "{x:?}");
            }
        }
        let mut v: Vec<(u64, String)> = loader.iter().map(|x| (x.end - x.start, x.prot.clone())).collect();
        v.sort();
        v
    };
    assert_eq!(loader_regions(&[], true), loader_regions(&["--no-watch"], false));
}

/// A parent that replaces its environment before it forks (as daemons do) keeps its children in
/// the run: a fork child writes its trace where the parent's went, with the run's id, from the
/// configuration the parent's start-up read, not from the environment it inherits.
#[test]
fn children_of_a_parent_that_cleared_its_environment_stay_in_the_run() {
    let dir = TestDir::new("tree_clearenv");
    let (t, report) = run_proctree_with(&dir, &["clearenv"]);
    let mut made = vec![t.parent, t.child1, t.child2, t.grandchild];
    made.sort_unstable();
    assert_eq!(pids(&report), made);
    let run_id = report.process.run_id.clone().expect("the run's id");
    for pid in [t.child1, t.child2, t.grandchild] {
        let trace = trace_of(&report, pid);
        assert_eq!(trace.parent(), Some(dir.path()), "{pid}: {}", trace.display());
        assert!(trace.file_name().unwrap().to_string_lossy().starts_with("t.trace."), "{}", trace.display());
        let section = report_json(&["--pid", &pid.to_string()], &dir.join("t.trace"));
        assert_eq!(section.process.run_id.as_deref(), Some(run_id.as_str()), "{pid}");
    }
    let strays: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("vmshim."))
        .collect();
    assert!(strays.is_empty(), "no trace under the default name: {strays:?}");
}

/// The arguments `/proc/PID/cmdline` gives, as a Start record keeps them: the strings its NULs
/// end.
fn proc_argv(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let argc = raw.iter().filter(|&&b| b == 0).count();
    raw.split(|&b| b == 0).take(argc).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

/// Issue 12: the shim reads a process's command line from its argument area, not from
/// `/proc/self/cmdline` (a system call instead of three, one of them the process's first
/// access to /proc); what it records is what the file says, also for a child forked after its
/// parent wrote a longer title over its arguments (setproctitle, as nginx does), which the
/// file reads up to the title's end.
#[test]
fn each_process_records_the_command_line_proc_gives_also_after_a_retitle() {
    let dir = TestDir::new("tree_title");
    let prog = build_c("title");
    let args = ["first", "second arg", "x"];
    let mut h = Handshake::start(&mut vmshim_run_cmd(&dir, &prog, &args), TIMEOUT);
    let parent = h.pid();
    let child = |lines: &[String], which: &str| -> Option<u32> {
        lines.iter().find_map(|l| l.strip_prefix(which)?.trim().parse().ok())
    };
    while child(h.lines(), "before ").is_none() || child(h.lines(), "after ").is_none() {
        h.next_line();
    }
    let children = [child(h.lines(), "before ").unwrap(), child(h.lines(), "after ").unwrap()];
    let seen: Vec<Vec<String>> = children.iter().map(|&c| proc_argv(c)).collect();
    let out = h.finish();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let top = dir.join("t.trace");
    let argv_of =
        |pid: u32| report_json(&["--pid", &pid.to_string(), "--image", "1"], &top).process.argv.unwrap();
    let mut started = vec![prog.to_string_lossy().into_owned()];
    started.extend(args.iter().map(|a| a.to_string()));
    assert_eq!(argv_of(parent), started, "the parent, as exec started it");
    assert_eq!(seen[0], started, "the first child's /proc/PID/cmdline");
    assert_eq!(seen[1].len(), 1, "the retitled child's /proc/PID/cmdline ends at the title: {:?}", seen[1]);
    assert!(seen[1][0].starts_with("title: "), "{:?}", seen[1]);
    for (&child, proc) in children.iter().zip(&seen) {
        assert_eq!(&argv_of(child), proc, "child {child}");
    }
}
