//! Layer 6, recording: one intercepted call into one trace record ([`call`]), the start of
//! the recording ([`start`]: `ensure_started`, the stack depth) and what fork does to it
//! ([`fork`]: the forking call's stack, the child's own trace). It uses every layer below and
//! is used only by the hooks and by `lib.rs`'s constructor.

pub mod call;
pub mod fork;
pub mod start;
pub mod waiting;
