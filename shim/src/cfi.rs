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
//! long as code of that image is on the stack being walked.

use core::ffi::c_void;
use core::sync::atomic::{AtomicU64, Ordering::*};

/// How to step from a frame to its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// CFA = (rbp if `cfa_rbp` else rsp) + `cfa_off`; the return address at CFA - 8; the
    /// caller's rbp saved at CFA - 8 * `rbp_slot`, or unchanged when `rbp_slot` is 0.
    Step { cfa_rbp: bool, cfa_off: u32, rbp_slot: u8 },
    /// The return address is undefined: the outermost frame (`_start`, `clone3`).
    End,
    /// No unwind information covers the address (Go code, JIT code, garbage).
    NoFde,
    /// Unwind information the table does not model.
    Complex,
}

impl Rule {
    fn pack(self) -> u32 {
        match self {
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
}

/// Largest CFA offset a packed rule holds (20 bits); larger frames are `Complex`.
const MAX_CFA_OFF: i64 = (1 << 20) - 1;

/// Open-addressed table of `(address, rule)`: 16 Ki entries, 256 KiB of the shim's .bss. An entry
/// is claimed by a compare-and-swap on its key, then its value is stored; the value carries the
/// key's low 32 bits so that a reader racing with the store sees a miss, never another key's rule.
const SLOTS: usize = 1 << 14;
const PROBES: usize = 16;
static TABLE: crate::pairs::Table<SLOTS> = crate::pairs::Table::new();

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
                return if v >> 32 == addr & 0xffff_ffff { Rule::unpack(v as u32) } else { None };
            }
            _ => {}
        }
    }
    None
}

fn insert(addr: u64, rule: Rule) {
    let h = home(addr);
    for i in 0..PROBES {
        let e = TABLE.slot(h, i);
        match TABLE.claim(e, addr) {
            Ok(_) => {
                e.value.store((addr & 0xffff_ffff) << 32 | rule.pack() as u64, Release);
                return;
            }
            Err(k) if k == addr => return,
            Err(_) => {}
        }
    }
}

/// Bumped by every [`invalidate`]: what was computed from older rules is stale.
static GENERATION: AtomicU64 = AtomicU64::new(1);

pub fn generation() -> usize {
    GENERATION.load(Acquire) as usize
}

/// Forgets every cached rule: an image was loaded, possibly where an unloaded one lay.
pub fn invalidate() {
    GENERATION.fetch_add(1, AcqRel);
    TABLE.clear();
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
    // SAFETY: libgcc returned a pointer to an FDE in a loaded image's .eh_frame (or a frame
    // registered with __register_frame); its length field bounds what is read of it, and its CIE
    // pointer names the CIE in the same section.
    unsafe { from_fde(fde, bases.func as u64, addr) }.unwrap_or(Rule::Complex)
}

/// Reads DWARF call frame information from memory that is known to hold it.
struct Bytes {
    at: *const u8,
    end: *const u8,
}

impl Bytes {
    /// # Safety
    /// `len` bytes from `at` must be readable for as long as the reader is used.
    unsafe fn new(at: *const u8, len: usize) -> Bytes {
        Bytes { at, end: at.wrapping_add(len) }
    }
    fn u8(&mut self) -> Option<u8> {
        if self.at >= self.end {
            return None;
        }
        // SAFETY: `at` is inside [start, end), which the constructor's caller vouched for.
        let b = unsafe { self.at.read() };
        self.at = self.at.wrapping_add(1);
        Some(b)
    }
    fn fixed(&mut self, n: usize) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..n {
            v |= (self.u8()? as u64) << (8 * i);
        }
        Some(v)
    }
    fn uleb(&mut self) -> Option<u64> {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let b = self.u8()?;
            if shift < 64 {
                v |= ((b & 0x7f) as u64) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
    }
    fn sleb(&mut self) -> Option<i64> {
        let (mut v, mut shift) = (0i64, 0);
        loop {
            let b = self.u8()?;
            if shift < 64 {
                v |= ((b & 0x7f) as i64) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                if shift < 64 && b & 0x40 != 0 {
                    v |= -1i64 << shift;
                }
                return Some(v);
            }
        }
    }
    fn skip(&mut self, n: u64) -> Option<()> {
        if n > (self.end as usize - self.at as usize) as u64 {
            return None;
        }
        self.at = self.at.wrapping_add(n as usize);
        Some(())
    }
    /// Skips a pointer in DW_EH_PE encoding `enc` (only its size matters here).
    fn skip_encoded(&mut self, enc: u8) -> Option<()> {
        match enc & 0x0f {
            0x00 => self.skip(8),
            0x01 => self.uleb().map(drop),
            0x09 => self.sleb().map(drop),
            0x02 | 0x0a => self.skip(2),
            0x03 | 0x0b => self.skip(4),
            0x04 | 0x0c => self.skip(8),
            _ => None,
        }
    }
    /// A value in the format of encoding `enc`, without its application (pc_range).
    fn encoded_value(&mut self, enc: u8) -> Option<u64> {
        match enc & 0x0f {
            0x00 | 0x04 | 0x0c => self.fixed(8),
            0x01 => self.uleb(),
            0x09 => self.sleb().map(|v| v as u64),
            0x02 => self.fixed(2),
            0x0a => self.fixed(2).map(|v| v as u16 as i16 as i64 as u64),
            0x03 => self.fixed(4),
            0x0b => self.fixed(4).map(|v| v as u32 as i32 as i64 as u64),
            _ => None,
        }
    }
}

const RBP: u64 = 6;
const RSP: u64 = 7;
const RIP: u64 = 16;

/// A register's rule, for the two registers a walk follows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reg {
    Same,
    Undefined,
    /// Saved at CFA + offset.
    At(i64),
    /// Anything else (another register, an expression).
    Other,
}

#[derive(Clone, Copy)]
struct State {
    cfa_reg: u64,
    cfa_off: i64,
    cfa_expr: bool,
    rbp: Reg,
    rip: Reg,
}

struct Cie {
    code_align: u64,
    data_align: i64,
    ra_reg: u64,
    fde_enc: u8,
    has_aug_len: bool,
    instructions: (*const u8, usize),
}

/// Parses the CIE at `p`.
unsafe fn parse_cie(p: *const u8) -> Option<Cie> {
    // SAFETY: the caller vouched that a CIE starts at `p`: its length word is readable.
    let len = unsafe { (p as *const u32).read_unaligned() };
    if len == 0 || len == u32::MAX {
        return None;
    }
    // SAFETY: the CIE's length counts the bytes that follow its length word.
    let mut b = unsafe { Bytes::new(p.add(4), len as usize) };
    if b.fixed(4)? != 0 {
        return None; // not a CIE
    }
    let version = b.u8()?;
    let mut aug = [0u8; 8];
    let mut n = 0;
    loop {
        let c = b.u8()?;
        if c == 0 {
            break;
        }
        *aug.get_mut(n)? = c;
        n += 1;
    }
    let aug = &aug[..n];
    if version >= 4 {
        b.skip(2)?; // address size, segment selector size
    }
    let code_align = b.uleb()?;
    let data_align = b.sleb()?;
    let ra_reg = if version == 1 { b.u8()? as u64 } else { b.uleb()? };
    let mut cie =
        Cie { code_align, data_align, ra_reg, fde_enc: 0, has_aug_len: false, instructions: (p, 0) };
    if aug.first() == Some(&b'z') {
        cie.has_aug_len = true;
        let aug_len = b.uleb()?;
        let after = b.at.wrapping_add(aug_len as usize);
        for &c in &aug[1..] {
            match c {
                b'R' => cie.fde_enc = b.u8()?,
                b'P' => {
                    let enc = b.u8()?;
                    b.skip_encoded(enc & 0x7f)?;
                }
                b'L' => drop(b.u8()?),
                // A signal trampoline's frame: registers come from the signal context.
                b'S' => return None,
                _ => return None,
            }
        }
        b.at = after;
    } else if !aug.is_empty() {
        return None;
    }
    if b.at > b.end {
        return None;
    }
    cie.instructions = (b.at, b.end as usize - b.at as usize);
    Some(cie)
}

/// Computes the rule at `addr` from the FDE at `fde` of the function starting at `func`.
unsafe fn from_fde(fde: *const u8, func: u64, addr: u64) -> Option<Rule> {
    // SAFETY: the caller vouched that an FDE starts at `fde`: its length word is readable.
    let len = unsafe { (fde as *const u32).read_unaligned() };
    if len == 0 || len == u32::MAX {
        return None;
    }
    // SAFETY: the FDE's length counts the bytes that follow its length word.
    let mut b = unsafe { Bytes::new(fde.add(4), len as usize) };
    let cie_ptr = b.at;
    let cie_off = b.fixed(4)?;
    // SAFETY: an FDE's CIE pointer is the distance back from that field to its CIE, in the same
    // section.
    let cie = unsafe { parse_cie(cie_ptr.wrapping_sub(cie_off as usize)) }?;
    b.skip_encoded(cie.fde_enc)?; // pc_begin: libgcc gave it as `func`
    let _range = b.encoded_value(cie.fde_enc)?;
    if cie.has_aug_len {
        let n = b.uleb()?;
        b.skip(n)?;
    }
    if cie.ra_reg != RIP {
        return None;
    }
    // A return address column the CIE leaves without a rule is not something to guess at.
    let mut st = State { cfa_reg: RSP, cfa_off: 8, cfa_expr: false, rbp: Reg::Same, rip: Reg::Other };
    // SAFETY: parse_cie bounded the instructions by the CIE's own length.
    let mut cie_b = unsafe { Bytes::new(cie.instructions.0, cie.instructions.1) };
    let initial = run(&mut cie_b, &cie, st, None, u64::MAX, func)?;
    st = initial;
    let fde_b = &mut b;
    st = run(fde_b, &cie, st, Some(&initial), addr, func)?;
    if st.cfa_expr || !(st.cfa_reg == RSP || st.cfa_reg == RBP) || !(0..=MAX_CFA_OFF).contains(&st.cfa_off) {
        return None;
    }
    match st.rip {
        Reg::Undefined => return Some(Rule::End),
        Reg::At(-8) => {}
        _ => return None,
    }
    let rbp_slot = match st.rbp {
        Reg::Same => 0,
        Reg::At(off) if off < 0 && off % 8 == 0 && -off / 8 <= 255 => (-off / 8) as u8,
        _ => return None,
    };
    Some(Rule::Step { cfa_rbp: st.cfa_reg == RBP, cfa_off: st.cfa_off as u32, rbp_slot })
}

/// Runs call frame instructions from `st` until the location passes `addr`.
fn run(
    b: &mut Bytes,
    cie: &Cie,
    mut st: State,
    initial: Option<&State>,
    addr: u64,
    func: u64,
) -> Option<State> {
    let mut loc = func;
    let mut stack = [st; 8];
    let mut depth = 0;
    let set = |st: &mut State, reg: u64, r: Reg| match reg {
        RBP => st.rbp = r,
        RIP => st.rip = r,
        _ => {}
    };
    let restore = |st: &mut State, reg: u64| {
        if let Some(i) = initial {
            match reg {
                RBP => st.rbp = i.rbp,
                RIP => st.rip = i.rip,
                _ => {}
            }
        }
    };
    while b.at < b.end {
        let op = b.u8()?;
        let advance = match op >> 6 {
            1 => Some((op & 0x3f) as u64),
            2 => {
                let off = b.uleb()? as i64 * cie.data_align;
                set(&mut st, (op & 0x3f) as u64, Reg::At(off));
                None
            }
            3 => {
                restore(&mut st, (op & 0x3f) as u64);
                None
            }
            _ => match op {
                0x00 => None,
                0x02 => Some(b.fixed(1)?),
                0x03 => Some(b.fixed(2)?),
                0x04 => Some(b.fixed(4)?),
                0x05 => {
                    let reg = b.uleb()?;
                    let off = b.uleb()? as i64 * cie.data_align;
                    set(&mut st, reg, Reg::At(off));
                    None
                }
                0x06 => {
                    restore(&mut st, b.uleb()?);
                    None
                }
                0x07 => {
                    set(&mut st, b.uleb()?, Reg::Undefined);
                    None
                }
                0x08 => {
                    set(&mut st, b.uleb()?, Reg::Same);
                    None
                }
                0x09 => {
                    let reg = b.uleb()?;
                    b.uleb()?;
                    set(&mut st, reg, Reg::Other);
                    None
                }
                0x0a => {
                    *stack.get_mut(depth)? = st;
                    depth += 1;
                    None
                }
                0x0b => {
                    depth = depth.checked_sub(1)?;
                    // The CFA is part of the remembered state too (as libgcc keeps it).
                    st = stack[depth];
                    None
                }
                0x0c => {
                    st.cfa_reg = b.uleb()?;
                    st.cfa_off = b.uleb()? as i64;
                    st.cfa_expr = false;
                    None
                }
                0x0d => {
                    st.cfa_reg = b.uleb()?;
                    st.cfa_expr = false;
                    None
                }
                0x0e => {
                    st.cfa_off = b.uleb()? as i64;
                    None
                }
                0x0f => {
                    let n = b.uleb()?;
                    b.skip(n)?;
                    st.cfa_expr = true;
                    None
                }
                0x10 | 0x16 => {
                    let reg = b.uleb()?;
                    let n = b.uleb()?;
                    b.skip(n)?;
                    set(&mut st, reg, Reg::Other);
                    None
                }
                0x11 => {
                    let reg = b.uleb()?;
                    let off = b.sleb()? * cie.data_align;
                    set(&mut st, reg, Reg::At(off));
                    None
                }
                0x12 => {
                    st.cfa_reg = b.uleb()?;
                    st.cfa_off = b.sleb()? * cie.data_align;
                    st.cfa_expr = false;
                    None
                }
                0x13 => {
                    st.cfa_off = b.sleb()? * cie.data_align;
                    None
                }
                0x14 | 0x15 => {
                    let reg = b.uleb()?;
                    if op == 0x14 {
                        b.uleb()?;
                    } else {
                        b.sleb()?;
                    }
                    set(&mut st, reg, Reg::Other);
                    None
                }
                0x2e => {
                    b.uleb()?; // GNU_args_size: the CFA rule does not change
                    None
                }
                0x2f => {
                    let reg = b.uleb()?;
                    let off = -(b.uleb()? as i64) * cie.data_align;
                    set(&mut st, reg, Reg::At(off));
                    None
                }
                _ => return None,
            },
        };
        if let Some(delta) = advance {
            loc = loc.checked_add(delta.checked_mul(cie.code_align)?)?;
            if loc > addr {
                break;
            }
        }
    }
    Some(st)
}
