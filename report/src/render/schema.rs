//! `vmshim-report/1`: the JSON report's types, the one definition of the format. `render::json`
//! fills them from an analysis; the tests read reports back through the same types
//! (`tests/common` includes this file with `#[path]`), so this file depends on serde alone.
//!
//! Every object's fields are declared in alphabetical order: the report has always been written
//! with sorted keys (serde_json's map without `preserve_order`), and serde writes a struct's
//! fields in declaration order. Optional values are written as `null`, never left out; the two
//! fields a report may lack (`explain`, `sections`) are left out when absent.

use serde::{Deserialize, Serialize};

/// The `schema` field's value.
pub const SCHEMA: &str = "vmshim-report/1";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub advice: Vec<Advice>,
    pub arenas: Vec<Arena>,
    pub attributed_fraction: f64,
    pub categories: Vec<CategoryBytes>,
    pub dns: Dns,
    pub events: Events,
    /// `vmshim explain` only: what the snapshot cost the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explain: Option<Explain>,
    pub go_runtime: Vec<GoRuntime>,
    /// `vmshim explain` of a Go program only: its goroutines, read from `runtime.allgs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goroutines: Option<Goroutines>,
    pub process: Process,
    /// Every process of the run, in tree order.
    pub processes: Vec<Row>,
    /// Which recorder wrote the trace: "shim", or the syscall recorder's name (issue 15);
    /// "explain" for `vmshim explain`'s snapshot of a running process.
    pub recorder: String,
    pub regions: Vec<Region>,
    pub rss_bytes: Option<u64>,
    pub schema: String,
    /// `--tree` only: every process's report, in tree order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sections: Option<Vec<Report>>,
    pub shadowed: Vec<Shadowed>,
    pub threads: Vec<Thread>,
    pub top_stacks: Vec<Stack>,
    pub vmshim_rss_bytes: Option<u64>,
    pub vsz: Vsz,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Advice {
    pub how: String,
    pub saves_bytes: u64,
    pub text: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Arena {
    pub address: u64,
    /// `main`, or `#N` for the N-th non-main arena to appear.
    pub arena: String,
    pub bytes: u64,
    pub creator_tid: u32,
    pub heaps: usize,
    pub tids: Vec<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CategoryBytes {
    pub bytes: u64,
    pub category: String,
    pub regions: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Dns {
    pub calls: Vec<DnsCall>,
    pub expected: Option<DnsExpected>,
    pub go_build: Option<GoBuild>,
    pub nss_modules_loaded: Vec<String>,
    pub nsswitch_hosts: Option<String>,
    /// `libc` or `none`.
    pub observed: String,
    pub verdict: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DnsCall {
    pub api: String,
    pub duration_ns: u64,
    pub error: Option<String>,
    pub family: String,
    pub flags: String,
    pub name: String,
    pub nss_modules: Vec<String>,
    pub result: Vec<String>,
    pub service: String,
    pub socktype: i32,
    pub stack: Vec<Frame>,
    pub tid: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DnsExpected {
    /// `go` or `libc`.
    pub path: String,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GoBuild {
    pub cgo_enabled: Option<bool>,
    pub tags: Vec<String>,
    pub version: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Events {
    pub dropped: u64,
    pub recorded: u64,
    pub recording_ns: u64,
    pub timed: u64,
    pub torn: u64,
    pub unresolved_stacks: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Explain {
    pub map_moved_bytes: i64,
    pub notes: Vec<String>,
    pub stop_ns: u64,
    pub threads_not_stopped: Vec<NotStopped>,
    pub threads_stopped: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NotStopped {
    pub syscall: String,
    pub tid: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GoRuntime {
    pub bytes: u64,
    pub purpose: String,
    pub read_write_bytes: u64,
    pub regions: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Goroutines {
    pub dead: usize,
    pub dead_stack_bytes: u64,
    pub groups: Vec<GoroutineGroup>,
    /// How `runtime.allgs` and `runtime.g`'s layout were found, or why they were not read.
    pub how: String,
    /// Bytes of `stack_bytes` and `dead_stack_bytes` inside the Go heap's mappings.
    pub in_go_heap_bytes: u64,
    pub live: usize,
    pub read: bool,
    pub stack_bytes: u64,
    pub system: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GoroutineGroup {
    pub count: usize,
    pub goids: Vec<u64>,
    pub stack: Vec<Frame>,
    pub start: String,
    pub status: String,
    pub system: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Process {
    pub argv: Option<Vec<String>>,
    pub exe: Option<String>,
    pub exit: String,
    pub fork_of: Option<ForkOf>,
    /// Which of `images` this report is, 1-based.
    pub image: usize,
    pub images: Vec<Image>,
    pub inherited_bytes: u64,
    pub pid: u32,
    pub run_id: Option<String>,
    pub untraced_final: Option<Untraced>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Image {
    pub ended: String,
    pub exe: String,
    pub trace: Option<String>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct ForkOf {
    pub parent_traced: bool,
    pub ppid: u32,
    pub tid: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Untraced {
    pub exe: String,
    pub map_known: bool,
    pub statically_linked: Option<bool>,
    pub why: String,
}

/// A process table row.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub command: String,
    pub depth: usize,
    pub ended: String,
    pub events: u64,
    pub exe: String,
    pub explained_fraction: f64,
    pub fork_of: Option<ForkOf>,
    pub images: usize,
    pub inherited_bytes: u64,
    pub own_bytes: u64,
    pub pid: u32,
    pub ppid: u32,
    pub rss_bytes: Option<u64>,
    pub threads: usize,
    pub trace: String,
    pub traces: Vec<String>,
    pub untraced_final: Option<Untraced>,
    pub vsz_bytes: u64,
    pub vsz_from_kernel: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Region {
    pub category: String,
    pub cause: String,
    pub creator_tid: Option<u32>,
    pub end: u64,
    pub evidence: Option<String>,
    pub inherited: Option<Inherited>,
    pub path: String,
    pub prot: String,
    pub purpose: Option<String>,
    pub stack: Vec<Frame>,
    pub start: u64,
    pub tid: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inherited {
    pub parent_traced: bool,
    pub pid: u32,
    pub tid: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    pub addr: u64,
    pub file: Option<String>,
    pub function: Option<String>,
    pub line: Option<u32>,
    pub module: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Shadowed {
    pub functions: Vec<String>,
    pub library: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stack {
    pub bytes: u64,
    pub category: String,
    pub cause: String,
    pub inherited: Option<Inherited>,
    pub regions: usize,
    pub stack: Vec<Frame>,
    pub tids: Vec<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Thread {
    pub arena_bytes: u64,
    pub arenas: Vec<String>,
    pub creator_tid: Option<u32>,
    pub name: Option<String>,
    pub reserved_bytes: u64,
    pub stack_bytes: u64,
    pub tid: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Vsz {
    pub final_bytes: u64,
    pub kernel_final_bytes: Option<u64>,
    pub peak_bytes: u64,
}
