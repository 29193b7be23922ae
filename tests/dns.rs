//! Issue 4: which DNS resolver path ran, for Go built four ways and for C. Nothing here needs
//! a DNS server: "localhost" is answered from /etc/hosts.

use crate::common::report::{DnsCall, Report};
use crate::common::*;
use crate::under_vmshim::*;
use std::process::Command;

/// `vmshim run` to the end, its report read through the format's types.
fn run_typed(name: &str, prog: &std::path::Path, env: &[(&str, &str)]) -> (String, Report) {
    run_to_end(name, prog, &[], env)
}

fn verdict(report: &Report) -> String {
    report.dns.verdict.clone()
}

fn calls(report: &Report) -> Vec<&DnsCall> {
    report.dns.calls.iter().collect()
}

/// A cgo lookup: getaddrinfo of "localhost", answered, with a stack through Go's net package.
fn assert_cgo_lookup(report: &Report, stdout: &str) {
    let v = verdict(report);
    assert!(v.starts_with("libc resolver (cgo) ran"), "{v}");
    assert!(!v.contains("disagree"), "{v}");
    let gai: Vec<&DnsCall> =
        calls(report).into_iter().filter(|c| c.api == "getaddrinfo" && c.name == "localhost").collect();
    assert!(!gai.is_empty(), "{:#?}", calls(report));
    let printed = stdout.lines().find_map(|l| l.strip_prefix("addrs ")).expect("the program's addresses");
    for c in gai {
        let frames: Vec<&str> = c.stack.iter().filter_map(|f| f.function.as_deref()).collect();
        assert!(frames.iter().any(|f| f.starts_with("net.")), "Go frames of the lookup: {frames:?}");
        for a in &c.result {
            assert!(printed.contains(a.as_str()), "{a} is among what Go printed: {printed}");
        }
    }
    assert_eq!(report.dns.go_build.as_ref().and_then(|b| b.cgo_enabled), Some(true));
}

fn assert_go_resolver(report: &Report, why: &str) {
    let v = verdict(report);
    assert!(v.starts_with("no libc resolver call: Go's built-in resolver") && v.contains(why), "{v}");
    assert!(calls(report).is_empty());
}

#[test]
fn netcgo_resolves_with_libc() {
    let (out, r) = run_typed("dns_netcgo", &build_go("lookup", true, &["netcgo"]), &[]);
    assert_cgo_lookup(&r, &out);
    assert!(verdict(&r).contains("built with netcgo"), "{}", verdict(&r));
    assert!(r.dns.go_build.as_ref().is_some_and(|b| b.tags.iter().any(|t| t == "netcgo")));
}

#[test]
fn netgo_with_a_c_import_resolves_with_go() {
    let prog = build_go("lookup_c", true, &["netgo", "cgo"]);
    assert!(elf_interpreter(&prog).is_some(), "dynamically linked, yet Go's resolver");
    let (_, r) = run_typed("dns_netgo_cgo", &prog, &[]);
    assert_go_resolver(&r, "netgo");
}

#[test]
fn godebug_netdns_selects_the_resolver() {
    let prog = build_go("lookup_c", true, &[]);
    let (_, r) = run_typed("dns_godebug_go", &prog, &[("GODEBUG", "netdns=go")]);
    assert_go_resolver(&r, "GODEBUG=netdns=go");
    let (out, r) = run_typed("dns_godebug_cgo", &prog, &[("GODEBUG", "netdns=cgo")]);
    assert_cgo_lookup(&r, &out);
    assert!(verdict(&r).contains("GODEBUG=netdns=cgo"), "{}", verdict(&r));
}

#[test]
fn a_c_program_s_lookups_from_two_threads() {
    let (out, r) = run_typed("dns_c", &build_c("resolver"), &[]);
    let made: Vec<(String, String, u32)> = out
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                ["call", api, name, "tid", tid, "=", "0"] => {
                    Some((api.to_string(), name.to_string(), tid.parse().ok()?))
                }
                _ => None,
            }
        })
        .collect();
    let total: usize = out.lines().find_map(|l| l.strip_prefix("calls ")).unwrap().parse().unwrap();
    assert_eq!(made.len(), total, "every call succeeded: {out}");
    let recorded = calls(&r);
    assert_eq!(recorded.len(), total, "{recorded:#?}");
    assert!(
        verdict(&r).starts_with(&format!("libc resolver (cgo) ran: {total} lookup(s)")),
        "{}",
        verdict(&r)
    );
    for (api, name, tid) in &made {
        let c = recorded
            .iter()
            .find(|c| c.api == *api && c.tid == *tid && (c.name == *name || api == "getnameinfo"))
            .unwrap_or_else(|| panic!("{api} {name} from {tid} in {recorded:#?}"));
        assert!(c.error.is_none(), "{c:?}");
        if api != "getnameinfo" {
            assert!(c.result.iter().any(|a| a == "127.0.0.1"), "{c:?}");
        }
        assert!(c.stack.iter().any(|f| f.function.as_deref() == Some("lookups")), "{c:?}");
    }
    let tids: std::collections::BTreeSet<u32> = made.iter().map(|m| m.2).collect();
    assert_eq!(tids.len(), 2);
    assert!(r.dns.go_build.is_none(), "not a Go program");
}

/// Issue 15: a static Go program is no longer refused; the syscall recorder runs it, and the
/// report says no libc resolver call was seen (Go's own resolver, with no libc in the program).
#[test]
fn a_static_go_lookup_runs_under_the_syscall_recorder() {
    let dir = TestDir::new("dns_static");
    let out = run_with_timeout(&mut vmshim_run_cmd(&dir, &build_go("lookup", false, &[]), &[]), TIMEOUT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let r = read_report(&dir.join("report.json"));
    assert!(r.recorder.starts_with("syscalls"), "{}", r.recorder);
    let _ = Command::new("true");
}
