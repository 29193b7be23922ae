//! Layer 5, what the shim knows of the process it is in: the start-up records (command line,
//! environment, resolver configuration, the initial map: [`startup`]), the loaded images
//! ([`modules`]), glibc's malloc chunk and heap headers ([`arena`]), the kernel's names of
//! anonymous mappings ([`names`]) and the libc symbols another library shadows ([`shadowed`]).
//! It writes what it learns through [`crate::out`] and never records a call: recording is the
//! layer above, which hands down what a record needs (a callback per new image, the fork's
//! [`startup::Origin`]).

pub mod arena;
pub mod modules;
pub mod names;
pub mod shadowed;
pub mod startup;
