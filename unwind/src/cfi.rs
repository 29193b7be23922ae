//! CIEs, FDEs and the call frame instruction interpreter, reduced to the [`Rule`] a walk
//! follows on x86_64.

use crate::cursor::{Bases, Cursor};
use crate::op::*;
use crate::{Memory, Rule};

/// A register's rule, for the two registers a walk follows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Reg {
    Same,
    Undefined,
    /// Saved at CFA + offset.
    At(i64),
    /// Anything else (another register, an expression, a value rule).
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

/// Nesting of DW_CFA_remember_state that the interpreter keeps; deeper is [`Rule::Complex`].
const REMEMBER_DEPTH: usize = 8;

pub struct Cie {
    code_align: u64,
    data_align: i64,
    ra_reg: u64,
    /// How the FDEs of this CIE encode their addresses.
    pub fde_enc: u8,
    has_aug_len: bool,
    signal_frame: bool,
    /// The initial instructions: `[at, end)`.
    instructions: (u64, u64),
}

/// The header of one `.eh_frame` entry at `at`: (its length after the length word, the address
/// of its CIE id / CIE pointer field). The 64-bit form (length 0xffffffff) is not used by
/// `.eh_frame` producers and is refused; a zero length is the section's terminator.
pub fn entry<M: Memory + ?Sized>(mem: &mut M, at: u64) -> Option<(u64, u64)> {
    let mut b = Cursor::new(mem, at, 4)?;
    let len = b.u32()?;
    if len == 0 || len == u32::MAX {
        return None;
    }
    Some((len as u64, at.checked_add(4)?))
}

/// Parses the CIE at `at`.
pub fn parse_cie<M: Memory + ?Sized>(mem: &mut M, at: u64) -> Option<Cie> {
    let (len, body) = entry(mem, at)?;
    let mut b = Cursor::new(mem, body, len)?;
    if b.u32()? != 0 {
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
    let aug = aug.get(..n)?;
    if version >= 4 {
        b.skip(2)?; // address size, segment selector size
    }
    let code_align = b.uleb()?;
    let data_align = b.sleb()?;
    let ra_reg = if version == 1 { b.u8()? as u64 } else { b.uleb()? };
    let mut cie = Cie {
        code_align,
        data_align,
        ra_reg,
        fde_enc: DW_EH_PE_ABSPTR,
        has_aug_len: false,
        signal_frame: false,
        instructions: (0, 0),
    };
    if aug.first() == Some(&b'z') {
        cie.has_aug_len = true;
        let aug_len = b.uleb()?;
        let after = b.at.checked_add(aug_len)?;
        for &c in aug.get(1..)? {
            match c {
                b'R' => cie.fde_enc = b.u8()?,
                b'P' => {
                    let enc = b.u8()?;
                    b.skip_pointer(enc & 0x7f)?;
                }
                b'L' => drop(b.u8()?),
                // A signal trampoline's frame: registers come from the signal context.
                b'S' => cie.signal_frame = true,
                _ => return None,
            }
        }
        if after > b.end {
            return None;
        }
        b.at = after;
    } else if !aug.is_empty() {
        return None;
    }
    cie.instructions = (b.at, b.end);
    Some(cie)
}

/// One FDE, parsed: where its instructions are and what code it covers.
pub struct Fde {
    pub cie: Cie,
    pub pc_begin: u64,
    pub pc_end: u64,
    instructions: (u64, u64),
}

/// Parses the FDE at `at` and its CIE.
pub fn parse_fde<M: Memory + ?Sized>(mem: &mut M, at: u64, bases: &Bases) -> Option<Fde> {
    let (len, body) = entry(mem, at)?;
    let mut b = Cursor::new(mem, body, len)?;
    let cie_off = b.u32()?;
    if cie_off == 0 {
        return None; // a CIE
    }
    // An FDE's CIE pointer is the distance back from that field to its CIE.
    let cie_at = body.checked_sub(cie_off as u64)?;
    let (at, end) = (b.at, b.end);
    let cie = parse_cie(mem, cie_at)?;
    let mut b = Cursor { mem, at, end };
    let pc_begin = b.pointer(cie.fde_enc, bases)?;
    let range = b.value(cie.fde_enc)?;
    if cie.has_aug_len {
        let n = b.uleb()?;
        b.skip(n)?;
    }
    Some(Fde { pc_end: pc_begin.checked_add(range)?, pc_begin, instructions: (b.at, b.end), cie })
}

/// The rule at code address `pc` from the FDE at `fde`: [`Rule::NoFde`] if the FDE does not
/// cover `pc`, [`Rule::Complex`] if it cannot be read or says what a [`Rule`] cannot.
pub fn rule_in_fde<M: Memory + ?Sized>(mem: &mut M, fde: u64, pc: u64, bases: &Bases) -> Rule {
    let Some(f) = parse_fde(mem, fde, bases) else { return Rule::Complex };
    if !(f.pc_begin..f.pc_end).contains(&pc) {
        return Rule::NoFde;
    }
    rule_at(mem, &f, pc).unwrap_or(Rule::Complex)
}

/// The rule at `pc` (inside the FDE's range).
pub fn rule_at<M: Memory + ?Sized>(mem: &mut M, f: &Fde, pc: u64) -> Option<Rule> {
    let cie = &f.cie;
    if cie.ra_reg != REG_RIP || cie.signal_frame {
        return None;
    }
    // A return address column the CIE leaves without a rule is not something to guess at.
    let st = State { cfa_reg: REG_RSP, cfa_off: 8, cfa_expr: false, rbp: Reg::Same, rip: Reg::Other };
    let mut b = Cursor::new(mem, cie.instructions.0, cie.instructions.1.checked_sub(cie.instructions.0)?)?;
    let initial = run(&mut b, cie, st, None, u64::MAX, f.pc_begin)?;
    let mut b = Cursor::new(mem, f.instructions.0, f.instructions.1.checked_sub(f.instructions.0)?)?;
    let st = run(&mut b, cie, initial, Some(&initial), pc, f.pc_begin)?;
    if st.cfa_expr || !(st.cfa_reg == REG_RSP || st.cfa_reg == REG_RBP) {
        return None;
    }
    let cfa_off = u32::try_from(st.cfa_off).ok()?;
    match st.rip {
        Reg::Undefined => return Some(Rule::End),
        Reg::At(-8) => {}
        _ => return None,
    }
    let rbp_slot = match st.rbp {
        Reg::Same => 0,
        Reg::At(off) if (-8 * 255..0).contains(&off) && off % 8 == 0 => (-off / 8) as u8,
        _ => return None,
    };
    Some(Rule::Step { cfa_rbp: st.cfa_reg == REG_RBP, cfa_off, rbp_slot })
}

/// Runs call frame instructions from `st` until the location passes `pc`.
fn run<M: Memory + ?Sized>(
    b: &mut Cursor<'_, M>,
    cie: &Cie,
    mut st: State,
    initial: Option<&State>,
    pc: u64,
    pc_begin: u64,
) -> Option<State> {
    let mut loc = pc_begin;
    let mut stack = [st; REMEMBER_DEPTH];
    let mut depth = 0;
    let set = |st: &mut State, reg: u64, r: Reg| match reg {
        REG_RBP => st.rbp = r,
        REG_RIP => st.rip = r,
        _ => {}
    };
    let restore = |st: &mut State, reg: u64| {
        if let Some(i) = initial {
            match reg {
                REG_RBP => st.rbp = i.rbp,
                REG_RIP => st.rip = i.rip,
                _ => {}
            }
        }
    };
    // A factored offset: an operand times the CIE's data alignment.
    let factored = |v: i64| v.checked_mul(cie.data_align);
    let unsigned = |v: u64| i64::try_from(v).ok().and_then(factored);
    while b.remaining() > 0 {
        let op = b.u8()?;
        let low = (op & 0x3f) as u64;
        let advance = match op & 0xc0 {
            DW_CFA_ADVANCE_LOC => Some(low),
            DW_CFA_OFFSET => {
                let off = unsigned(b.uleb()?)?;
                set(&mut st, low, Reg::At(off));
                None
            }
            DW_CFA_RESTORE => {
                restore(&mut st, low);
                None
            }
            _ => match op {
                DW_CFA_NOP => None,
                DW_CFA_ADVANCE_LOC1 => Some(b.u8()? as u64),
                DW_CFA_ADVANCE_LOC2 => Some(b.u16()? as u64),
                DW_CFA_ADVANCE_LOC4 => Some(b.u32()? as u64),
                DW_CFA_OFFSET_EXTENDED => {
                    let reg = b.uleb()?;
                    let off = unsigned(b.uleb()?)?;
                    set(&mut st, reg, Reg::At(off));
                    None
                }
                DW_CFA_RESTORE_EXTENDED => {
                    restore(&mut st, b.uleb()?);
                    None
                }
                DW_CFA_UNDEFINED => {
                    set(&mut st, b.uleb()?, Reg::Undefined);
                    None
                }
                DW_CFA_SAME_VALUE => {
                    set(&mut st, b.uleb()?, Reg::Same);
                    None
                }
                DW_CFA_REGISTER => {
                    let reg = b.uleb()?;
                    b.uleb()?;
                    set(&mut st, reg, Reg::Other);
                    None
                }
                DW_CFA_REMEMBER_STATE => {
                    *stack.get_mut(depth)? = st;
                    depth += 1;
                    None
                }
                DW_CFA_RESTORE_STATE => {
                    depth = depth.checked_sub(1)?;
                    // The CFA is part of the remembered state too (as libgcc keeps it).
                    st = *stack.get(depth)?;
                    None
                }
                DW_CFA_DEF_CFA => {
                    st.cfa_reg = b.uleb()?;
                    st.cfa_off = i64::try_from(b.uleb()?).ok()?;
                    st.cfa_expr = false;
                    None
                }
                DW_CFA_DEF_CFA_REGISTER => {
                    st.cfa_reg = b.uleb()?;
                    st.cfa_expr = false;
                    None
                }
                DW_CFA_DEF_CFA_OFFSET => {
                    st.cfa_off = i64::try_from(b.uleb()?).ok()?;
                    None
                }
                DW_CFA_DEF_CFA_EXPRESSION => {
                    let n = b.uleb()?;
                    b.skip(n)?;
                    st.cfa_expr = true;
                    None
                }
                DW_CFA_EXPRESSION | DW_CFA_VAL_EXPRESSION => {
                    let reg = b.uleb()?;
                    let n = b.uleb()?;
                    b.skip(n)?;
                    set(&mut st, reg, Reg::Other);
                    None
                }
                DW_CFA_OFFSET_EXTENDED_SF => {
                    let reg = b.uleb()?;
                    let off = factored(b.sleb()?)?;
                    set(&mut st, reg, Reg::At(off));
                    None
                }
                DW_CFA_DEF_CFA_SF => {
                    st.cfa_reg = b.uleb()?;
                    st.cfa_off = factored(b.sleb()?)?;
                    st.cfa_expr = false;
                    None
                }
                DW_CFA_DEF_CFA_OFFSET_SF => {
                    st.cfa_off = factored(b.sleb()?)?;
                    None
                }
                DW_CFA_VAL_OFFSET | DW_CFA_VAL_OFFSET_SF => {
                    let reg = b.uleb()?;
                    if op == DW_CFA_VAL_OFFSET {
                        b.uleb()?;
                    } else {
                        b.sleb()?;
                    }
                    set(&mut st, reg, Reg::Other);
                    None
                }
                DW_CFA_GNU_ARGS_SIZE => {
                    b.uleb()?; // the CFA rule does not change
                    None
                }
                DW_CFA_GNU_NEGATIVE_OFFSET_EXTENDED => {
                    let reg = b.uleb()?;
                    let off = unsigned(b.uleb()?)?.checked_neg()?;
                    set(&mut st, reg, Reg::At(off));
                    None
                }
                // DW_CFA_set_loc (which gcc and clang never emit) and anything unknown: not
                // modelled.
                _ => return None,
            },
        };
        if let Some(delta) = advance {
            loc = loc.checked_add(delta.checked_mul(cie.code_align)?)?;
            if loc > pc {
                break;
            }
        }
    }
    Some(st)
}
