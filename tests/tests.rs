//! The integration tests of vmshim: one test binary (`autotests = false`), one module per topic.
//! Each module runs real programs from `tests/programs/`, built by the tests, and checks what
//! they report against `/proc` read at the same moment. `common` is the harness.

mod common;

mod arenas;
mod dns;
mod explain;
mod footprint;
mod forged;
mod fork_traces;
mod go_matrix;
mod go_targets;
mod golden;
mod harm;
mod harness;
mod hostile;
mod out_path;
mod real_trees;
mod robust;
mod scale;
mod small_stacks;
mod static_targets;
mod traces;
mod tree_report;
mod trees;
mod under_vmshim;
mod views;
mod watch;
