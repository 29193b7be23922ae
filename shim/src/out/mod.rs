//! Layer 3, the trace's output: the file and its segments ([`writer`]), the table that writes
//! each call stack once ([`stacks`]) and the lock-free pair table it and the unwinder's rule
//! cache are built on ([`pairs`]). Below it are only [`crate::os`] and [`crate::config`]:
//! the writer records its own mappings itself, it never asks the recording layer to.

pub mod pairs;
pub mod stacks;
pub mod writer;
