//! Issue 6: process trees. Every child that loads the shim writes its own trace, and the
//! report of the parent lists them with their parent links.

use crate::common::report::{Report, Row};
use crate::common::*;
use crate::under_vmshim::*;

fn true_path() -> String {
    let p = std::fs::canonicalize("/usr/bin/true").expect("coreutils' true");
    assert!(elf_interpreter(&p).is_some(), "a dynamically linked true");
    p.to_string_lossy().into_owned()
}

fn processes(report: &Report) -> &Vec<Row> {
    &report.processes
}

#[test]
fn fork_vfork_posix_spawn_and_system_children_are_traced_and_linked() {
    let t = true_path();
    let (stdout, report) = run_to_end("trees_spawner", &build_c("spawner"), &[&t], &[]);
    assert!(stdout.contains("done"), "{stdout}");
    let me = report.process.pid;
    let kids = processes(&report);
    for how in ["fork", "vfork", "posix_spawn"] {
        let pid: u32 =
            stdout.lines().find_map(|l| l.strip_prefix(&format!("{how} "))).unwrap().parse().unwrap();
        let p = kids.iter().find(|p| p.pid == pid).unwrap_or_else(|| panic!("{how} child {pid}: {kids:#?}"));
        assert_eq!(p.ppid, me, "{how}");
        assert!(p.vsz_bytes > 0 && p.events > 0, "{how}: its own trace replays: {p:?}");
        let exe = p.exe.as_str();
        if how == "fork" {
            assert!(exe.contains("spawner"), "a fork child is the same program: {exe}");
        } else {
            assert_eq!(exe, t, "{how}");
        }
    }
    // system() runs /bin/sh, which runs true: both in the tree under the program.
    assert!(kids.iter().any(|p| p.exe.ends_with("sh") || p.exe == t));
    assert!(kids.len() >= 4, "{kids:#?}");
}

#[test]
fn a_go_program_running_a_child_with_os_exec() {
    let t = true_path();
    let (stdout, report) = run_to_end("trees_go", &build_go("runchild", true, &[]), &[&t], &[]);
    let child: u32 = stdout.lines().find_map(|l| l.strip_prefix("child ")).unwrap().parse().unwrap();
    let p = processes(&report).iter().find(|p| p.pid == child).expect("the os/exec child");
    assert_eq!((p.ppid, p.exe.as_str()), (report.process.pid, t.as_str()));
}
