//! Layer 1, the operating system: raw system calls, the clock and the TSC, the initial-exec TLS
//! block, the pid and tid caches, the command line, the reentrancy guard, the shim's own stacks, real-symbol
//! resolution and number formatting. Nothing here knows of the trace, the configuration or the
//! target's images: every module in this folder names only `crate::os` paths.

pub mod args;
pub mod fmt;
pub mod guard;
pub mod ownstack;
pub mod real;
pub mod syscall;
pub mod tls;
