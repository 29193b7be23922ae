//! Unwind rules from `.eh_frame` on x86_64, shared by the shim (which walks its own process's
//! stacks inside a hook) and the syscall recorder (which walks a stopped tracee's).
//!
//! A stack walk needs three things per frame: how to compute the CFA (rsp or rbp plus an
//! offset), where the return address is (CFA - 8) and where the caller's rbp was saved, if
//! anywhere. [`Rule`] is that, computed from the FDE that covers a code address; whatever it does
//! not model (a DWARF expression, a signal frame, a CFA in another register) is
//! [`Rule::Complex`], and the caller decides what to do about it.
//!
//! Layers, lowest first: [`op`] (the DW_CFA opcodes and DW_EH_PE encodings by name), `cursor`
//! (the bounds-checked reader), `cfi` (CIEs, FDEs, the interpreter), `table` (`.eh_frame_hdr`'s
//! binary-search table and a walk over `.eh_frame`).
//!
//! What it must never do: allocate, panic or fault, whatever the bytes say. It has no memory of
//! its own: every byte comes through the caller's [`Memory`] (framehop's `read_stack`), which
//! may refuse a read — the shim reads its own mapped images directly, the recorder reads a
//! module's sections from its file. Every address is in the caller's address space: absolute in
//! the shim, a file's virtual addresses in the recorder.
#![no_std]
#![forbid(unsafe_code)]

mod cfi;
mod cursor;
pub mod op;
mod table;

pub use cfi::rule_in_fde;
pub use cursor::Bases;
pub use table::{FdeEntry, Fdes, Hdr, fdes, read_hdr};

/// Where the bytes come from: `read(addr, buf)` fills `buf` from `addr` and says whether it
/// could. Implemented for every `FnMut(u64, &mut [u8]) -> bool`.
pub trait Memory {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> bool;
}

impl<F: FnMut(u64, &mut [u8]) -> bool> Memory for F {
    #[inline(always)]
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> bool {
        self(addr, buf)
    }
}

/// How to step from a frame to its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// CFA = (rbp if `cfa_rbp` else rsp) + `cfa_off`; the return address at CFA - 8; the
    /// caller's rbp saved at CFA - 8 * `rbp_slot`, or unchanged when `rbp_slot` is 0.
    Step { cfa_rbp: bool, cfa_off: u32, rbp_slot: u8 },
    /// The return address is undefined: the outermost frame (`_start`, `clone3`).
    End,
    /// No unwind information covers the address (Go code, JIT code, garbage).
    NoFde,
    /// Unwind information a [`Rule`] does not model, or that cannot be read.
    Complex,
}

/// The rule at code address `pc` (for a return address, pass the call's address, ret - 1)
/// through the `.eh_frame_hdr` at `hdr`. [`Rule::NoFde`] when its table covers no FDE there;
/// [`Rule::Complex`] when the header or the FDE cannot be read (or the header has no table).
pub fn rule_for<M: Memory + ?Sized>(mem: &mut M, hdr: u64, pc: u64) -> Rule {
    let Some(h) = read_hdr(mem, hdr) else { return Rule::Complex };
    if !h.searchable() {
        return Rule::Complex;
    }
    match h.find(mem, pc) {
        Some(fde) => rule_in_fde(mem, fde, pc, &Bases::default()),
        None => Rule::NoFde,
    }
}
