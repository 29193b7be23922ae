//! Unwind rules per code address, from the images' `.eh_frame`, computed once and cached.
//!
//! libgcc's `_Unwind_Backtrace` finds and interprets the FDE of every frame on every walk:
//! 1-3 us per stack here. A stack walk needs only three things per frame on x86_64: how to
//! compute the CFA (a register, rsp or rbp, plus an offset), where the return address is
//! (CFA - 8) and where the caller's rbp was saved, if anywhere. [`rule_for`] computes that from
//! the FDE once per address and keeps it in a lock-free table; anything it does not model
//! (a DWARF expression, a signal frame, a CFA in another register) is cached as
//! [`Rule::Complex`], and the walker hands that stack to libgcc.
//!
//! FDEs are found with libgcc's `_Unwind_Find_FDE` (via `_dl_find_object`: no lock, no malloc)
//! and read in place: `.eh_frame` lies in a loaded image's read-only segment, mapped for as
//! long as code of that image is on the stack being walked. The rule itself comes from the
//! `vmshim-unwind` crate, the interpreter the syscall recorder uses on a tracee's modules too
//! (no allocation, no panic, no lock: fit for the hook path).

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};

pub use vmshim_unwind::Rule;

/// A rule in the table's 32-bit form.
fn pack(rule: Rule) -> u32 {
    match rule {
        Rule::Step { cfa_rbp, cfa_off, rbp_slot } => {
            1 | (cfa_rbp as u32) << 3 | (rbp_slot as u32) << 4 | cfa_off << 12
        }
        Rule::End => 2,
        Rule::NoFde => 3,
        Rule::Complex => 4,
    }
}

#[inline(always)]
fn unpack(v: u32) -> Option<Rule> {
    Some(match v & 7 {
        1 => Rule::Step { cfa_rbp: v & 8 != 0, rbp_slot: (v >> 4) as u8, cfa_off: v >> 12 },
        2 => Rule::End,
        3 => Rule::NoFde,
        4 => Rule::Complex,
        _ => return None,
    })
}

/// Largest CFA offset a packed rule holds (20 bits); larger frames are `Complex`.
const MAX_CFA_OFF: u32 = (1 << 20) - 1;

/// Open-addressed table of `(address, rule)`: 16 Ki entries, 256 KiB of the shim's .bss. An entry
/// is claimed by a compare-and-swap on its key, then its value is stored; the value carries the
/// key's low 32 bits so that a reader racing with the store sees a miss, never another key's rule.
const SLOTS: usize = 1 << 14;
const PROBES: usize = 16;
#[unsafe(link_section = ".sbss.vmshim")]
static TABLE: crate::out::pairs::Table<SLOTS> = crate::out::pairs::Table::new();

fn home(addr: u64) -> usize {
    (addr.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) as usize & (SLOTS - 1)
}

#[inline(always)]
fn cached(addr: u64) -> Option<Rule> {
    let h = home(addr);
    for i in 0..PROBES {
        let e = TABLE.slot(h, i);
        match e.key.load(Acquire) {
            0 => return None,
            k if k == addr => {
                let v = e.value.load(Acquire);
                return if v >> 32 == addr & 0xffff_ffff { unpack(v as u32) } else { None };
            }
            _ => {}
        }
    }
    None
}

fn insert(addr: u64, rule: Rule) {
    if !CACHED.load(Relaxed) {
        CACHED.store(true, Release);
    }
    let h = home(addr);
    for i in 0..PROBES {
        let e = TABLE.slot(h, i);
        match TABLE.claim(e, addr) {
            Ok(_) => {
                e.value.store((addr & 0xffff_ffff) << 32 | pack(rule) as u64, Release);
                return;
            }
            Err(k) if k == addr => return,
            Err(_) => {}
        }
    }
}

/// Bumped by every [`invalidate`]: what was computed from older rules is stale.
#[unsafe(link_section = ".data.vmshim_hot")]
static GENERATION: AtomicU64 = AtomicU64::new(1);

pub fn generation() -> usize {
    GENERATION.load(Acquire) as usize
}

/// Set by the first rule ever cached (in this image; a fork child has its parent's): until
/// then [`invalidate`] has nothing to clear and leaves the table's pages untouched (the
/// start-up's scan of the images invalidated at every start, a page fault for nothing).
#[unsafe(link_section = ".data.vmshim_hot")]
static CACHED: AtomicBool = AtomicBool::new(false);

/// Forgets every cached rule: an image was loaded, possibly where an unloaded one lay.
pub fn invalidate() {
    GENERATION.fetch_add(1, AcqRel);
    if CACHED.load(Acquire) {
        TABLE.clear();
    }
}

/// Fork children start with an empty table instead of a copy of this one (see
/// [`crate::out::pairs::Table::wipe_on_fork`]): they compute again the rules they need, the
/// price of sparing every fork the table's pages.
pub fn wipe_on_fork() {
    TABLE.wipe_on_fork();
}

/// The rule for code address `addr` (for a return address, pass the call's address: ret - 1).
#[inline(always)]
pub fn rule_for(addr: u64) -> Rule {
    match cached(addr) {
        Some(r) => r,
        None => compute_and_cache(addr),
    }
}

#[cold]
#[inline(never)]
fn compute_and_cache(addr: u64) -> Rule {
    let r = compute(addr);
    insert(addr, r);
    r
}

unsafe extern "C" {
    fn _Unwind_Find_FDE(pc: *mut c_void, bases: *mut DwarfBases) -> *const u8;
}

/// libgcc's `struct dwarf_eh_bases`, filled by _Unwind_Find_FDE.
#[repr(C)]
struct DwarfBases {
    tbase: *mut c_void,
    dbase: *mut c_void,
    func: *mut c_void,
}

fn compute(addr: u64) -> Rule {
    let mut bases = DwarfBases {
        tbase: core::ptr::null_mut(),
        dbase: core::ptr::null_mut(),
        func: core::ptr::null_mut(),
    };
    // SAFETY: _Unwind_Find_FDE only looks the address up; `bases` is a valid out-parameter.
    let fde = unsafe { _Unwind_Find_FDE(addr as *mut c_void, &mut bases) };
    if fde.is_null() {
        return Rule::NoFde;
    }
    let mut own_memory = |at: u64, buf: &mut [u8]| {
        // SAFETY: the crate reads only the FDE libgcc returned and the CIE its CIE pointer
        // names, each bounded by its own length word: libgcc found this FDE in a loaded image's
        // .eh_frame (or a frame registered with __register_frame), which stays mapped while
        // code of that image runs on this stack, and its CIE lies in the same section.
        unsafe { core::ptr::copy_nonoverlapping(at as *const u8, buf.as_mut_ptr(), buf.len()) };
        true
    };
    let eh_bases = vmshim_unwind::Bases {
        text: Some(bases.tbase as u64).filter(|&b| b != 0),
        data: Some(bases.dbase as u64).filter(|&b| b != 0),
    };
    match vmshim_unwind::rule_in_fde(&mut own_memory, fde as u64, addr, &eh_bases) {
        // The table packs 20 bits of offset; a larger frame goes to libgcc, as before.
        Rule::Step { cfa_off, .. } if cfa_off > MAX_CFA_OFF => Rule::Complex,
        // libgcc chose this FDE for `addr`: one that says otherwise is not to be trusted.
        Rule::NoFde => Rule::Complex,
        r => r,
    }
}
