//! Layer 4, the unwinder: the stack walk ([`walk`]), its bounds-checked reader ([`reader`])
//! and frame-pointer fallback ([`fp`]), the cache of `.eh_frame` rules over the
//! `vmshim-unwind` crate ([`cfi`]), and the spans of the loaded images a walk trusts
//! ([`images`]). It reads memory and interns the stacks it returns ([`crate::out::stacks`]);
//! it never records anything, and it learns of images only from what the process-knowledge
//! layer above hands it.

pub mod cfi;
pub mod fp;
pub mod images;
pub mod reader;
pub mod walk;
