//! `vmshim events`: the raw log, one recorded event per line in recording order — strace-like
//! text for people, JSON lines for programs and tests that count.

use crate::symbolize::Symbolizer;
use serde_json::{Map, Value, json};
use std::io::Write;
use vmshim_trace::decode::Call;
use vmshim_trace::{CallKind, Event};

const PROT: &[(u64, &str)] = &[(1, "PROT_READ"), (2, "PROT_WRITE"), (4, "PROT_EXEC")];
/// mmap's sharing type: a 2-bit field, not independent bits.
const MAP_SHARING: &[(u64, &str)] = &[(1, "MAP_SHARED"), (2, "MAP_PRIVATE"), (3, "MAP_SHARED_VALIDATE")];
const MAP: &[(u64, &str)] = &[
    (0x10, "MAP_FIXED"),
    (0x20, "MAP_ANONYMOUS"),
    (0x40, "MAP_32BIT"),
    (0x100, "MAP_GROWSDOWN"),
    (0x800, "MAP_DENYWRITE"),
    (0x1000, "MAP_EXECUTABLE"),
    (0x2000, "MAP_LOCKED"),
    (0x4000, "MAP_NORESERVE"),
    (0x8000, "MAP_POPULATE"),
    (0x10000, "MAP_NONBLOCK"),
    (0x20000, "MAP_STACK"),
    (0x40000, "MAP_HUGETLB"),
    (0x80000, "MAP_SYNC"),
    (0x100000, "MAP_FIXED_NOREPLACE"),
];
const MREMAP: &[(u64, &str)] = &[(1, "MREMAP_MAYMOVE"), (2, "MREMAP_FIXED"), (4, "MREMAP_DONTUNMAP")];

/// Names of the set bits, `|`-joined; unknown bits in hex; `zero` when none is set.
fn flag_names(v: u64, table: &[(u64, &str)], zero: &str) -> String {
    if v == 0 {
        return zero.to_string();
    }
    let mut parts: Vec<String> =
        table.iter().filter(|(b, _)| v & b == *b).map(|(_, n)| n.to_string()).collect();
    let rest = table.iter().fold(v, |r, (b, _)| r & !b);
    if rest != 0 {
        parts.push(format!("{rest:#x}"));
    }
    parts.join("|")
}

/// mmap flags: the sharing type, then the flag bits.
fn map_flags(v: u64) -> String {
    let sharing = MAP_SHARING.iter().find(|(t, _)| v & 3 == *t).map(|(_, n)| *n);
    let bits = flag_names(v & !3, MAP, "");
    match (sharing, bits.is_empty()) {
        (Some(s), true) => s.to_string(),
        (Some(s), false) => format!("{s}|{bits}"),
        (None, true) => "0".to_string(),
        (None, false) => bits,
    }
}

fn ptr(v: u64) -> String {
    if v == 0 { "NULL".into() } else { format!("{v:#x}") }
}

fn errno_name(e: i32) -> String {
    let name = match e {
        1 => "EPERM",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        19 => "ENODEV",
        22 => "EINVAL",
        23 => "ENFILE",
        24 => "EMFILE",
        75 => "EOVERFLOW",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

/// The call's arguments as strace prints them.
fn args_text(c: &Call) -> String {
    let a = &c.args;
    match c.call {
        CallKind::Mmap => format!(
            "{}, {}, {}, {}, {}, {:#x}",
            ptr(a[0]),
            a[1],
            flag_names(a[2], PROT, "PROT_NONE"),
            map_flags(a[3]),
            a[4] as i32,
            a[5]
        ),
        CallKind::Munmap => format!("{}, {}", ptr(a[0]), a[1]),
        CallKind::Mremap => {
            let mut s = format!("{}, {}, {}, {}", ptr(a[0]), a[1], a[2], flag_names(a[3], MREMAP, "0"));
            if a[3] & 2 != 0 {
                s += &format!(", {}", ptr(a[4]));
            }
            s
        }
        CallKind::Mprotect => format!("{}, {}, {}", ptr(a[0]), a[1], flag_names(a[2], PROT, "PROT_NONE")),
        CallKind::PthreadCreate => format!("{}, {}, {}, {}", ptr(a[0]), ptr(a[1]), ptr(a[2]), ptr(a[3])),
        // Inferred from malloc's chunks, not real calls: named arguments, the function last.
        _ => {
            let params = c.call.params();
            let mut parts: Vec<String> =
                params[..params.len() - 1].iter().zip(a).map(|(n, v)| format!("{n}={v:#x}")).collect();
            let names = if c.call == CallKind::ModuleLoad {
                vmshim_trace::LOADING_FUNCTIONS
            } else {
                vmshim_trace::MALLOC_FUNCTIONS
            };
            let via = names.get(a[params.len() - 1] as usize).unwrap_or(&"?");
            parts.push(format!("via={via}"));
            parts.join(", ")
        }
    }
}

fn result_text(c: &Call) -> String {
    match c.call {
        _ if c.errno != 0 => format!("-1 {}", errno_name(c.errno)),
        CallKind::ArenaAttach
        | CallKind::MallocLarge
        | CallKind::FreeLarge
        | CallKind::BrkGrow
        | CallKind::ModuleLoad => "0".into(),
        CallKind::Mmap | CallKind::Mremap => format!("{:#x}", c.result),
        _ => (c.result as i64).to_string(),
    }
}

fn args_json(c: &Call) -> Value {
    let mut m = Map::new();
    for (name, &v) in c.call.params().iter().zip(&c.args) {
        let v = if *name == "fd" { json!(v as i32) } else { json!(v) };
        m.insert(name.to_string(), v);
    }
    Value::Object(m)
}

/// Prints event number `seq` of the trace.
pub fn print(
    seq: usize,
    ev: &Event,
    sym: &mut Symbolizer,
    as_json: bool,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    {
        match ev {
            Event::Call(c) => {
                if as_json {
                    let stack: Vec<Value> = c
                        .stack
                        .iter()
                        .flat_map(|&a| sym.symbolize(a, true))
                        .map(|f| serde_json::to_value(f).unwrap_or(Value::Null))
                        .collect();
                    let result = if c.errno != 0 { json!(-1) } else { json!(c.result) };
                    let v = json!({"seq": seq, "kind": c.call.name(), "tid": c.tid, "time_ns": c.time_ns,
                        "args": args_json(c), "result": result, "errno": c.errno,
                        "own": c.flags & vmshim_trace::CALL_FLAG_OWN != 0, "stack": stack});
                    writeln!(out, "{v}")?;
                } else {
                    let own =
                        if c.flags & vmshim_trace::CALL_FLAG_OWN != 0 { "  (vmshim's own)" } else { "" };
                    writeln!(
                        out,
                        "{:<7} {}({}) = {}{own}",
                        c.tid,
                        c.call.name(),
                        args_text(c),
                        result_text(c)
                    )?;
                }
            }
            Event::ThreadStart(t) => {
                if as_json {
                    let v = json!({"seq": seq, "kind": "thread_start", "tid": t.tid, "time_ns": t.time_ns,
                        "args": {"creator_tid": t.creator_tid, "sp": t.sp, "stack_size": t.stack_size,
                                 "guard_size": if t.guard_size == u64::MAX { Value::Null } else { json!(t.guard_size) },
                                 "start_routine": t.start_routine},
                        "result": Value::Null, "errno": 0, "stack": []});
                    writeln!(out, "{v}")?;
                } else {
                    writeln!(
                        out,
                        "{:<7} +++ thread started by {} (sp {:#x}) +++",
                        t.tid, t.creator_tid, t.sp
                    )?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}
