//! Layer 6, recording: one intercepted call into one trace record ([`call`]), the start of
//! the recording ([`start`]: `ensure_started`, the stack depth) and what fork does to it
//! ([`fork`]: the forking call's stack, the child's own trace, or its Start record sent to
//! `vmshim run` and its origin kept, [`sent`]). It uses every layer below and
//! is used only by the hooks and by `lib.rs`'s constructor.

pub mod call;
pub mod fork;
pub mod sent;
pub mod start;
pub mod waiting;
