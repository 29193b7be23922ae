//! `--json`: the report as `vmshim-report/1` ([`super::schema`]), filled from the analysis.
//! Every figure comes from [`Analysis`]; this only copies it into the format's types.

use super::schema::{self, Report};
use super::text::{STATIC_RECORDER_HINT, arena_name, process_line, untraced_words};
use crate::analyze::attribute::Inherited;
use crate::analyze::dns::Path;
use crate::analyze::processes::Row;
use crate::analyze::{Analysis, ForkOf, Untraced};
use crate::symbolize::Frame;

fn frame(f: Frame) -> schema::Frame {
    schema::Frame { addr: f.addr, file: f.file, function: f.function, line: f.line, module: f.module }
}

fn frames(a: &Analysis, stack: &[u64]) -> Vec<schema::Frame> {
    a.frames(stack).into_iter().map(frame).collect()
}

fn inherited(i: Inherited) -> schema::Inherited {
    schema::Inherited { parent_traced: i.parent_traced, pid: i.pid, tid: i.tid }
}

fn fork_of(f: ForkOf) -> schema::ForkOf {
    schema::ForkOf { parent_traced: f.parent_traced, ppid: f.ppid, tid: f.tid }
}

fn untraced(u: &Untraced) -> schema::Untraced {
    schema::Untraced {
        exe: u.exe.clone(),
        map_known: u.map_known,
        statically_linked: u.statically_linked,
        why: format!("{}; {STATIC_RECORDER_HINT}", untraced_words(u)),
    }
}

/// A process table row.
pub fn row(r: &Row) -> schema::Row {
    schema::Row {
        command: r.command.clone(),
        depth: r.depth,
        ended: r.ended.clone(),
        events: r.events,
        exe: r.exe.clone(),
        explained_fraction: r.explained_fraction,
        fork_of: r.fork_of.map(fork_of),
        images: r.images,
        inherited_bytes: r.inherited_bytes,
        own_bytes: r.own_bytes,
        pid: r.pid,
        ppid: r.ppid,
        rss_bytes: r.rss_bytes,
        threads: r.threads,
        trace: r.trace.display().to_string(),
        traces: r.traces.iter().map(|t| t.display().to_string()).collect(),
        untraced_final: r.untraced_final.as_ref().map(untraced),
        vsz_bytes: r.vsz_bytes,
        vsz_from_kernel: r.vsz_from_kernel,
    }
}

fn dns(a: &Analysis) -> schema::Dns {
    let d = &a.dns;
    schema::Dns {
        calls: d
            .calls
            .iter()
            .map(|c| schema::DnsCall {
                api: c.api.to_string(),
                duration_ns: c.duration_ns,
                error: (!c.error.is_empty()).then(|| c.error.clone()),
                family: c.family.to_string(),
                flags: c.flags.clone(),
                name: c.name.clone(),
                nss_modules: c.nss_modules.clone(),
                result: c.result.clone(),
                service: c.service.clone(),
                socktype: c.socktype,
                stack: c.stack.iter().cloned().map(frame).collect(),
                tid: c.tid,
            })
            .collect(),
        expected: d.expected.as_ref().map(|(p, why)| schema::DnsExpected {
            path: if *p == Path::Go { "go" } else { "libc" }.to_string(),
            reason: why.clone(),
        }),
        go_build: d.go_build.as_ref().map(|b| schema::GoBuild {
            cgo_enabled: b.cgo_enabled,
            tags: b.tags.clone(),
            version: b.version.clone(),
        }),
        nss_modules_loaded: d.nss_modules_loaded.clone(),
        nsswitch_hosts: d.nsswitch_hosts.clone(),
        observed: if d.observed { "libc" } else { "none" }.to_string(),
        verdict: d.verdict.clone(),
    }
}

/// The report of `a`, showing its `top` largest call stacks.
pub fn report(a: &Analysis, top: usize) -> Report {
    let (rec, attr) = (&a.rec, &a.attr);
    let (pid, _, exit) = process_line(rec);
    let s = rec.start.as_ref();
    Report {
        advice: a
            .advice
            .iter()
            .map(|x| schema::Advice { how: x.how.clone(), saves_bytes: x.saves_bytes, text: x.text.clone() })
            .collect(),
        arenas: attr
            .arenas
            .iter()
            .map(|x| schema::Arena {
                address: x.address,
                arena: arena_name(x.id),
                bytes: x.bytes,
                creator_tid: x.creator,
                heaps: x.heaps,
                tids: x.tids.clone(),
            })
            .collect(),
        attributed_fraction: a.attributed_fraction,
        categories: a
            .categories
            .iter()
            .filter(|&&(_, _, n)| n > 0)
            .map(|&(c, bytes, regions)| schema::CategoryBytes {
                bytes,
                category: c.name().to_string(),
                regions,
            })
            .collect(),
        dns: dns(a),
        events: schema::Events {
            dropped: rec.dropped,
            recorded: rec.recorded,
            recording_ns: rec.recording_ns,
            timed: rec.timed,
            torn: rec.torn,
            unresolved_stacks: rec.unresolved_stacks,
        },
        explain: None,
        go_runtime: a
            .go_runtime
            .iter()
            .map(|g| schema::GoRuntime {
                bytes: g.bytes,
                purpose: g.purpose.clone(),
                read_write_bytes: g.rw_bytes,
                regions: g.regions,
            })
            .collect(),
        goroutines: a.context.goroutines.as_ref().map(|g| schema::Goroutines {
            dead: g.dead,
            dead_stack_bytes: g.dead_stack_bytes,
            groups: g
                .groups
                .iter()
                .map(|x| schema::GoroutineGroup {
                    count: x.count,
                    goids: x.goids.clone(),
                    stack: frames(a, &x.stack),
                    start: x.start.clone(),
                    status: x.status.to_string(),
                    system: x.system,
                })
                .collect(),
            how: g.how.clone(),
            in_go_heap_bytes: g.in_go_heap_bytes,
            live: g.live,
            read: g.read,
            stack_bytes: g.stack_bytes,
            system: g.system,
        }),
        process: schema::Process {
            argv: s.map(|s| s.argv.clone()),
            exe: s.map(|s| s.exe.clone()),
            exit,
            fork_of: a.context.fork_of.map(fork_of),
            image: a.context.image + 1,
            images: a
                .context
                .images
                .iter()
                .map(|i| schema::Image {
                    ended: i.ended.clone(),
                    exe: i.exe.clone(),
                    trace: i.trace.as_ref().map(|t| t.display().to_string()),
                })
                .collect(),
            inherited_bytes: a.inherited_bytes,
            pid,
            run_id: s.map(|s| format!("{:016x}", s.run_id)),
            untraced_final: a.context.untraced_final.as_ref().map(untraced),
        },
        processes: a.processes.iter().map(row).collect(),
        recorder: crate::launch::recorder::name_of(rec).unwrap_or("shim").to_string(),
        regions: attr
            .regions
            .iter()
            .map(|r| schema::Region {
                category: r.category.name().to_string(),
                cause: r.cause.to_string(),
                creator_tid: r.creator_tid,
                end: r.end,
                evidence: r.evidence.clone(),
                inherited: r.inherited.map(inherited),
                path: r.path.clone(),
                prot: r.perms.to_string(),
                purpose: r.purpose.clone(),
                stack: frames(a, &r.stack),
                start: r.start,
                tid: r.tid,
            })
            .collect(),
        rss_bytes: attr.rss_bytes,
        schema: schema::SCHEMA.to_string(),
        sections: None,
        shadowed: a
            .shadowed
            .iter()
            .map(|(library, functions)| schema::Shadowed {
                functions: functions.clone(),
                library: library.clone(),
            })
            .collect(),
        threads: attr
            .threads
            .iter()
            .map(|t| schema::Thread {
                arena_bytes: t.arena_bytes,
                arenas: t.arenas.iter().map(|x| arena_name(*x)).collect(),
                creator_tid: t.creator_tid,
                name: t.name.clone(),
                reserved_bytes: t.reserved_bytes,
                stack_bytes: t.stack_bytes,
                tid: t.tid,
            })
            .collect(),
        top_stacks: a
            .top_stacks
            .iter()
            .take(top)
            .map(|g| schema::Stack {
                bytes: g.bytes,
                category: g.category.name().to_string(),
                cause: g.cause.to_string(),
                inherited: g.inherited.map(inherited),
                regions: g.regions,
                stack: frames(a, &g.stack),
                tids: g.tids.clone(),
            })
            .collect(),
        vmshim_rss_bytes: attr.vmshim_rss_bytes,
        vsz: schema::Vsz {
            final_bytes: attr.final_bytes,
            kernel_final_bytes: attr.kernel_final_bytes,
            peak_bytes: attr.peak_bytes,
        },
    }
}

/// The report as the file holds it: pretty-printed, one newline at the end.
pub fn to_text(r: &Report) -> String {
    let mut s = serde_json::to_string_pretty(r).unwrap_or_default();
    s.push('\n');
    s
}
