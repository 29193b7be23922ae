//! Remote unwinding of a thread stopped at a system call: `.eh_frame` rules where a module has
//! them (C, C++, Rust and static libc code), frame pointers where it has none (Go code).
//!
//! At a syscall stop `rip` is the instruction after `syscall`, in the wrapper (libc's `mmap`,
//! Go's `runtime.sysMmap`): the first frame. Each frame's rule comes from the FDE of the module
//! mapping its pc, computed by the `vmshim-unwind` crate (the interpreter the shim uses on its
//! own stacks) over that module's `.eh_frame_hdr` and `.eh_frame`, read once from the module's
//! file ([`Unwinder`] caches the sections, and each rule, per module). A return address is
//! looked up at `ret - 1`: the call instruction, which belongs to the caller's code even when
//! the call is the last instruction of a function.
//!
//! Where there is no rule:
//! - in Go code (a module with a Go table) or code outside any module, the walk goes on along
//!   the `rbp` chain, as Go keeps frame pointers on amd64: each caller's return address at
//!   `rbp + 8`, the next frame at `rbp`. A first frame in such code is a leaf that keeps no
//!   frame of its own (Go's syscall wrappers), so the word at `rsp` is its return address.
//! - in C code built without unwind tables and without frame pointers (musl's libc.a), the
//!   stack is scanned upward from the frame's stack pointer for the first word that is a
//!   return address into code with a rule, just after a call instruction; the walk resumes
//!   there by rules. Such frames themselves are left out (their own return addresses cannot be
//!   told from stale words), the frames of code with rules are not.
//!
//! Every step is checked, so garbage ends the walk instead of inventing frames: a frame must lie
//! above the previous one on the same stack (within [`STACK_SPAN`] of `rsp`), and every return
//! address must fall in an executable mapping. Memory is read with `process_vm_readv`, a page at a time
//! ([`super::remote`]): the target is never faulted. Depth is bounded.

use super::image::Module;
use super::remote;
use object::{Object, ObjectSection};
use std::collections::HashMap;
use vmshim_unwind::{Bases, Rule};

/// The deepest stack recorded.
pub const MAX_DEPTH: usize = 64;
/// How far above the stack pointer a frame may be (a Go system stack is 8 MiB at most here; a
/// thread's C stack as large as its mapping, which this bounds too).
const STACK_SPAN: u64 = 256 << 20;
/// How far a scan for a return address goes above a frame without rules: musl's largest frames
/// on the way to a system call (pthread_create's, with its attributes) are a few hundred bytes.
const SCAN_BYTES: u64 = 4096;

/// A module's unwind tables, read from its file.
struct Tables {
    /// `.eh_frame` and `.eh_frame_hdr`: (file vaddr, bytes).
    sections: Vec<(u64, Vec<u8>)>,
    /// The `.eh_frame_hdr` vaddr, when the module has a searchable one.
    hdr: Option<u64>,
    /// Without one (`gcc -static` links none): (pc_begin, pc_end, FDE vaddr), sorted.
    index: Vec<(u64, u64, u64)>,
    /// A Go module: code without rules is Go's, with frame pointers.
    go: bool,
    /// Rules computed so far, by file vaddr.
    rules: HashMap<u64, Rule>,
}

impl Tables {
    fn read(path: &str) -> Option<Tables> {
        let data = std::fs::read(path).ok()?;
        let elf = object::File::parse(&*data).ok()?;
        let go =
            elf.section_by_name(".gopclntab").is_some() || elf.section_by_name(".go.buildinfo").is_some();
        let section =
            |name: &str| elf.section_by_name(name).and_then(|s| Some((s.address(), s.data().ok()?.to_vec())));
        let mut t = Tables { sections: Vec::new(), hdr: None, index: Vec::new(), go, rules: HashMap::new() };
        let Some(eh) = section(".eh_frame") else { return Some(t) };
        let (eh_at, eh_len) = (eh.0, eh.1.len() as u64);
        t.sections.push(eh);
        if let Some(hdr) = section(".eh_frame_hdr") {
            let at = hdr.0;
            t.sections.push(hdr);
            if vmshim_unwind::read_hdr(&mut t.memory(), at).is_some_and(|h| h.searchable()) {
                t.hdr = Some(at);
            }
        }
        if t.hdr.is_none() {
            let mut index: Vec<(u64, u64, u64)> =
                vmshim_unwind::fdes(&mut t.memory(), eh_at, eh_len, Bases::default())
                    .map(|f| (f.pc_begin, f.pc_end, f.fde))
                    .collect();
            index.sort_unstable();
            t.index = index;
        }
        Some(t)
    }

    fn memory(&self) -> impl FnMut(u64, &mut [u8]) -> bool + '_ {
        |addr, buf| {
            self.sections.iter().any(|(at, bytes)| {
                let src = addr
                    .checked_sub(*at)
                    .and_then(|off| usize::try_from(off).ok())
                    .and_then(|off| bytes.get(off..off.checked_add(buf.len())?));
                src.inspect(|s| buf.copy_from_slice(s)).is_some()
            })
        }
    }

    /// The rule at file vaddr `pc`.
    fn rule(&mut self, pc: u64) -> Rule {
        if let Some(&r) = self.rules.get(&pc) {
            return r;
        }
        let r = match self.hdr {
            Some(h) => vmshim_unwind::rule_for(&mut self.memory(), h, pc),
            None => match self.index.partition_point(|f| f.0 <= pc).checked_sub(1).map(|i| self.index[i]) {
                Some((_, end, fde)) if pc < end => {
                    vmshim_unwind::rule_in_fde(&mut self.memory(), fde, pc, &Bases::default())
                }
                _ => Rule::NoFde,
            },
        };
        self.rules.insert(pc, r);
        r
    }
}

/// The modules' unwind tables, read once per file and build id for the whole recording.
#[derive(Default)]
pub struct Unwinder {
    tables: HashMap<(String, Vec<u8>), Option<Tables>>,
}

/// What the code at an address is, for the walk.
enum Code {
    /// A module with unwind tables or without, and its rule there.
    Module { rule: Rule, go: bool },
    /// No module maps it (the vdso, JIT code).
    Unknown,
}

impl Unwinder {
    fn code(&mut self, modules: &[Module], pc: u64) -> Code {
        let Some(m) = modules.iter().find(|m| (m.lo..m.hi).contains(&pc)) else { return Code::Unknown };
        let t =
            self.tables.entry((m.path.clone(), m.build_id.clone())).or_insert_with(|| Tables::read(&m.path));
        let Some(t) = t else { return Code::Unknown };
        Code::Module { rule: t.rule(pc.wrapping_sub(m.base)), go: t.go }
    }
}

/// Return addresses, innermost first (`[0]` is the syscall wrapper's own pc).
pub fn frames(
    pid: i32,
    regs: &remote::Regs,
    exec: &[(u64, u64)],
    modules: &[Module],
    unwinder: &mut Unwinder,
) -> Vec<u64> {
    let mut walk = Walk {
        mem: remote::Pages::new(pid),
        exec,
        modules,
        unwinder,
        top: regs.rsp,
        out: Vec::with_capacity(16),
    };
    walk.run(regs.rip, regs.rsp, regs.rbp);
    walk.out.truncate(MAX_DEPTH);
    walk.out
}

struct Walk<'a> {
    /// The stopped thread's memory, read a page at a time.
    mem: remote::Pages,
    exec: &'a [(u64, u64)],
    modules: &'a [Module],
    unwinder: &'a mut Unwinder,
    /// The stack pointer at the stop: every frame lies within [`STACK_SPAN`] above it.
    top: u64,
    out: Vec<u64>,
}

impl Walk<'_> {
    fn is_code(&self, a: u64) -> bool {
        let i = self.exec.partition_point(|r| r.1 <= a);
        self.exec.get(i).is_some_and(|r| r.0 <= a)
    }

    fn on_stack(&self, a: u64) -> bool {
        a >= self.top && a - self.top <= STACK_SPAN && a.is_multiple_of(8)
    }

    fn run(&mut self, rip: u64, mut sp: u64, mut fp: u64) {
        let mut pc = rip;
        self.out.push(pc);
        // The first pc is the current instruction; every later one a return address, whose call
        // (and so its rule) lies just before it.
        let mut key = pc;
        while self.out.len() < MAX_DEPTH {
            match self.unwinder.code(self.modules, key) {
                Code::Module { rule: Rule::Step { cfa_rbp, cfa_off, rbp_slot }, .. } => {
                    let base = if cfa_rbp && !self.frame_base_plausible(fp, cfa_off, sp) {
                        // rbp was clobbered by code without rules on the way here: the frame's
                        // CFA is just above the next return address on the stack.
                        match self.scan(sp) {
                            Some((slot, _)) => (slot + 8).wrapping_sub(cfa_off as u64),
                            None => return,
                        }
                    } else if cfa_rbp {
                        fp
                    } else {
                        sp
                    };
                    let Some(cfa) = base.checked_add(cfa_off as u64) else { return };
                    if cfa <= sp || !self.on_stack(cfa) {
                        return;
                    }
                    let Some(ret) = self.mem.word(cfa - 8) else { return };
                    if rbp_slot != 0 {
                        let Some(v) = cfa.checked_sub(8 * rbp_slot as u64).and_then(|a| self.mem.word(a))
                        else {
                            return;
                        };
                        fp = v;
                    }
                    if !self.is_code(ret) {
                        return;
                    }
                    (pc, sp) = (ret, cfa);
                    self.out.push(pc);
                    key = pc - 1;
                }
                Code::Module { rule: Rule::End, .. } => return,
                // C code without rules (musl's): on from the next return address into code with
                // rules.
                Code::Module { go: false, .. } => {
                    let Some((slot, ret)) = self.scan(sp) else { return };
                    (pc, sp) = (ret, slot + 8);
                    self.out.push(pc);
                    key = pc - 1;
                }
                // Go code, or code of no module: frame pointers from here.
                Code::Module { go: true, .. } | Code::Unknown => {
                    self.frame_pointers(sp, fp, self.out.len() == 1);
                    return;
                }
            }
        }
    }

    /// Whether `fp` can be the base of an rbp-based CFA: the CFA above `sp`, on the stack, and
    /// the word below it a return address.
    fn frame_base_plausible(&mut self, fp: u64, cfa_off: u32, sp: u64) -> bool {
        fp.checked_add(cfa_off as u64).is_some_and(|cfa| {
            cfa > sp && self.on_stack(cfa) && self.mem.word(cfa - 8).is_some_and(|r| self.is_code(r))
        })
    }

    /// The first word above `sp` (within [`SCAN_BYTES`]) that is a return address into code with
    /// a rule, just after a call: (its address, the return address).
    fn scan(&mut self, sp: u64) -> Option<(u64, u64)> {
        let mut buf = [0u8; 512];
        let mut at = sp.checked_add(7)? & !7;
        while at < sp.saturating_add(SCAN_BYTES) {
            if !self.mem.read(at, &mut buf) {
                // Near the top of a stack: the words up to its end, one by one.
                let w = self.mem.word(at)?;
                if self.return_address(w) {
                    return Some((at, w));
                }
                at += 8;
                continue;
            }
            for (i, w) in buf.chunks_exact(8).enumerate() {
                let w = u64::from_le_bytes(w.try_into().unwrap_or_default());
                if self.return_address(w) {
                    return Some((at + 8 * i as u64, w));
                }
            }
            at += buf.len() as u64;
        }
        None
    }

    /// Whether `w` is a return address into code with a rule: executable, and just after a
    /// call instruction (`call rel32`, or `call` through a register or memory: opcode 0xff with
    /// /2 in its ModRM byte, 2 to 7 bytes long).
    fn return_address(&mut self, w: u64) -> bool {
        if w < 4096 || !self.is_code(w) {
            return false;
        }
        match self.unwinder.code(self.modules, w - 1) {
            Code::Module { rule: Rule::Step { .. } | Rule::End, .. } => {}
            _ => return false,
        }
        let mut code = [0u8; 8];
        if !self.mem.read(w - 8, &mut code) {
            return false;
        }
        code[3] == 0xe8 || (2..=7).any(|k| code[8 - k] == 0xff && (code[9 - k] >> 3) & 7 == 2)
    }

    /// Continues along the rbp chain from a frame without rules at stack pointer `sp`; `leaf`
    /// when that frame is the first (a syscall wrapper that may keep no frame of its own).
    fn frame_pointers(&mut self, sp: u64, mut fp: u64, leaf: bool) {
        // The leaf's return address, when the leaf pushed nothing.
        let leaf_ret = if leaf { self.mem.word(sp).filter(|&a| self.is_code(a)) } else { None };
        let mut chain = Vec::with_capacity(16);
        let mut prev = sp;
        while chain.len() < MAX_DEPTH {
            if fp < prev || !self.on_stack(fp) {
                break;
            }
            let (Some(next), Some(ret)) = (self.mem.word(fp), self.mem.word(fp + 8)) else {
                break;
            };
            if !self.is_code(ret) {
                break;
            }
            chain.push(ret);
            prev = fp + 16;
            if next == 0 {
                break;
            }
            fp = next;
        }
        match leaf_ret {
            // A leaf that did push rbp: its return address is the chain's first.
            Some(r) if chain.first() != Some(&r) => self.out.push(r),
            _ => {}
        }
        self.out.extend(chain);
    }
}
