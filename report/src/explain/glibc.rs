//! glibc malloc read from outside: the `heap_info` at the start of every non-main heap (a
//! HEAP_MAX-aligned reservation), the arena (`malloc_state`) it points to, the arena list from
//! `main_arena` and each thread's `thread_arena`, where libc's debug symbols say where those
//! are; large chunks by their header (IS_MMAPPED). Everything read is checked against the
//! kernel's map before it is believed. Only reads (process_vm_readv through [`Memory`]).

use super::stop::{Memory, ThreadState};
use crate::load::maps::Region;
use crate::replay::HEAP_MAX;
use object::{Object, ObjectSection, ObjectSymbol};
use std::collections::HashMap;

/// One non-main heap found in the map.
#[derive(Clone, Debug)]
pub struct Heap {
    pub base: u64,
    pub ar_ptr: u64,
    pub prev: u64,
    pub size: u64,
    pub mprotect_size: u64,
}

/// What glibc's allocator state says.
#[derive(Default)]
pub struct Malloc {
    pub heaps: Vec<Heap>,
    /// Non-main arenas (malloc_state addresses) in creation order.
    pub arenas: Vec<u64>,
    /// `main_arena`'s address, when libc's debug symbols name it.
    pub main_arena: Option<u64>,
    /// The arena list was walked from main_arena (else the arenas come from the heaps only).
    pub list_read: bool,
    /// tid -> its `thread_arena` (0: none yet).
    pub thread_arena: HashMap<u32, u64>,
    /// Why the debug-symbol part was not done, if it was not.
    pub note: Option<String>,
}

/// libc's symbols that say where malloc keeps its state (module-relative values).
struct LibcSymbols {
    main_arena: (u64, u64),
    /// Offset of `thread_arena` in libc's TLS block.
    thread_arena_tls: u64,
}

fn build_id(elf: &object::File) -> Option<Vec<u8>> {
    elf.build_id().ok().flatten().map(<[u8]>::to_vec)
}

/// `main_arena` and `thread_arena` from libc's separate debug file (Debian's libc6-dbg, found by
/// build id) or libc's own symbol table.
fn libc_symbols(libc_path: &str) -> Result<LibcSymbols, String> {
    let data = std::fs::read(libc_path).map_err(|e| format!("{libc_path}: {e}"))?;
    let elf = object::File::parse(&*data).map_err(|e| format!("{libc_path}: {e}"))?;
    let mut candidates: Vec<Vec<u8>> = vec![];
    if let Some(id) = build_id(&elf).filter(|id| id.len() > 1) {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let p = format!("/usr/lib/debug/.build-id/{}/{}.debug", &hex[..2], &hex[2..]);
        if let Ok(d) = std::fs::read(&p) {
            candidates.push(d);
        }
    }
    candidates.push(data.clone());
    for c in &candidates {
        let Ok(f) = object::File::parse(&**c) else { continue };
        let (mut arena, mut tls) = (None, None);
        for s in f.symbols() {
            match s.name() {
                Ok("main_arena") => arena = Some((s.address(), s.size())),
                Ok("thread_arena") => tls = Some(s.address()),
                _ => {}
            }
        }
        if let (Some(main_arena), Some(thread_arena_tls)) = (arena, tls) {
            return Ok(LibcSymbols { main_arena, thread_arena_tls });
        }
    }
    Err(format!(
        "{libc_path} has no symbols for main_arena/thread_arena (install its debug symbols, Debian's libc6-dbg): \
         arenas come from their heaps, threads' arenas are not known"
    ))
}

/// The GOT slot (module-relative) that the dynamic loader fills with `thread_arena`'s offset from
/// the thread pointer: the R_X86_64_TPOFF64 relocation whose addend is its TLS offset.
fn tpoff_slot(libc_path: &str, tls_offset: u64) -> Option<u64> {
    let data = std::fs::read(libc_path).ok()?;
    let elf = object::File::parse(&*data).ok()?;
    let rela = elf.section_by_name(".rela.dyn")?.data().ok()?;
    rela.chunks_exact(24).find_map(|e| {
        let off = u64::from_le_bytes(e[0..8].try_into().ok()?);
        let info = u64::from_le_bytes(e[8..16].try_into().ok()?);
        let addend = u64::from_le_bytes(e[16..24].try_into().ok()?);
        (info & 0xffff_ffff == 18 /* R_X86_64_TPOFF64 */ && info >> 32 == 0 && addend == tls_offset)
            .then_some(off)
    })
}

/// Where `addr` is mapped read-write.
fn rw_at(regions: &[Region], addr: u64, len: u64) -> bool {
    regions.iter().any(|r| r.start <= addr && addr + len <= r.end && r.perms.starts_with("rw"))
}

/// Whether `[addr, addr + len)` is anonymous memory mapped by regions that follow one another
/// from `addr`: a heap's read-write part, then the PROT_NONE rest of its reservation.
fn reserved_at(regions: &[Region], addr: u64, len: u64) -> bool {
    let mut at = addr;
    while at < addr + len {
        match regions.iter().find(|r| r.start == at && r.is_anonymous()) {
            Some(r) => at = r.end,
            None => return false,
        }
    }
    true
}

/// Reads and checks the heap_info at `base`; `page` is the page size.
///
/// The map is read before the stop and the heap_info during it: a thread may grow its heap in
/// between (glibc's grow_heap makes more of the reservation read-write, then raises `size`), so
/// the size may reach past the read-write part the map shows, into the rest of the heap's
/// reservation. Such a heap is still that heap (the JVM's threads did it under load, in
/// `explain::jvm_agrees_with_vmshim_run_of_the_same_process`).
fn heap_at(mem: &Memory, regions: &[Region], base: u64, page: u64) -> Option<Heap> {
    let mut b = [0u8; 40];
    if !rw_at(regions, base, 40) || !mem.read(base, &mut b) {
        return None;
    }
    let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    let h = Heap { base, ar_ptr: w(0), prev: w(1), size: w(2), mprotect_size: w(3) };
    let aligned = |v: u64| v.is_multiple_of(page);
    let sizes_ok = h.size > 0
        && h.size <= h.mprotect_size
        && h.mprotect_size <= HEAP_MAX
        && aligned(h.size)
        && aligned(h.mprotect_size)
        && reserved_at(regions, base, h.size);
    // The first heap of an arena holds the arena right after its heap_info (32 bytes before
    // glibc 2.35, 48 since it gained `pagesize`); a later heap names an earlier heap.
    let first = h.prev == 0 && (h.ar_ptr == base + 32 || (h.ar_ptr == base + 48 && w(4) == page));
    let later = h.prev != 0 && h.prev.is_multiple_of(HEAP_MAX) && h.prev != base;
    (sizes_ok && (first || later)).then_some(h)
}

/// Finds every heap and arena it can. `libc` is libc's path and load bias, when it is mapped.
pub fn read(
    mem: &Memory,
    regions: &[Region],
    page: u64,
    libc: Option<(&str, u64)>,
    threads: &[ThreadState],
) -> Malloc {
    let mut m = Malloc::default();
    for r in regions.iter().filter(|r| r.is_anonymous() && r.start.is_multiple_of(HEAP_MAX)) {
        if let Some(h) = heap_at(mem, regions, r.start, page) {
            m.heaps.push(h);
        }
    }
    // A later heap must name a heap found, with the same arena.
    let bases: HashMap<u64, u64> = m.heaps.iter().map(|h| (h.base, h.ar_ptr)).collect();
    m.heaps.retain(|h| h.prev == 0 || bases.get(&h.prev) == Some(&h.ar_ptr));
    let from_heaps: Vec<u64> = {
        let mut v: Vec<u64> = m.heaps.iter().filter(|h| h.prev == 0).map(|h| h.ar_ptr).collect();
        v.sort_unstable();
        v
    };
    m.arenas = from_heaps.clone();
    let Some((path, bias)) = libc else {
        m.note = Some("libc is not mapped: no main_arena to read".into());
        return m;
    };
    let syms = match libc_symbols(path) {
        Ok(s) => s,
        Err(e) => {
            m.note = Some(e);
            return m;
        }
    };
    let main = bias + syms.main_arena.0;
    m.main_arena = Some(main);
    // `next` is the fifth field from the end of malloc_state (next, next_free,
    // attached_threads, system_mem, max_system_mem), and main_arena's size is the struct's.
    let next_off = syms.main_arena.1.saturating_sub(40);
    let mut list = Vec::new();
    let mut at = mem.u64(main + next_off);
    while let Some(a) = at {
        if a == main || list.len() > 4096 {
            break;
        }
        if !from_heaps.contains(&a) {
            list.clear();
            break;
        }
        list.push(a);
        at = mem.u64(a + next_off);
    }
    if at == Some(main) && list.len() == from_heaps.len() {
        // New arenas go in right after main_arena (arena.c, _int_new_arena): the list runs
        // newest first.
        list.reverse();
        m.arenas = list;
        m.list_read = true;
    } else {
        m.note = Some(
            "the arena list from main_arena does not match the heaps found; arenas in address order".into(),
        );
    }
    // libc.so reaches thread_arena through a GOT slot the loader fills with its offset from the
    // thread pointer; a static program's offset is fixed at link time (local-exec).
    let tpoffs: Vec<u64> = match tpoff_slot(path, syms.thread_arena_tls).and_then(|slot| mem.u64(bias + slot))
    {
        Some(t) => vec![t],
        None => static_tpoffs(path, syms.thread_arena_tls),
    };
    let valid = |a: u64| a == 0 || a == main || m.arenas.contains(&a);
    // The offset under which every thread's value is 0 or an arena found (the static
    // candidates differ only in how the TLS block's alignment is rounded).
    let all_valid = |tpoff: u64| {
        threads.iter().filter_map(|t| t.fs_base).all(|fs| mem.u64(fs.wrapping_add(tpoff)).is_some_and(valid))
    };
    let best = match tpoffs.as_slice() {
        [one] => Some(*one),
        many => many.iter().copied().find(|&t| all_valid(t)),
    };
    let mut found = vec![];
    if let Some(tpoff) = best {
        for t in threads {
            if let Some(fs) = t.fs_base
                && let Some(a) = mem.u64(fs.wrapping_add(tpoff)).filter(|&a| valid(a))
            {
                found.push((t.tid, a));
            }
        }
    }
    m.thread_arena.extend(found);
    m
}

/// In a static program, the executable's TLS block ends at the thread pointer (x86_64 TLS
/// variant II): a variable's offset is its place in PT_TLS minus the block's size, rounded to
/// the segment's alignment (two roundings glibc has used: plain, and with the first byte's
/// misalignment kept).
fn static_tpoffs(path: &str, tls_offset: u64) -> Vec<u64> {
    let Ok(data) = std::fs::read(path) else { return vec![] };
    let Ok(elf) = object::read::elf::ElfFile64::<object::Endianness>::parse(&*data) else { return vec![] };
    use object::read::elf::ProgramHeader;
    let e = elf.endian();
    let Some(tls) = elf.elf_program_headers().iter().find(|p| p.p_type(e) == object::elf::PT_TLS) else {
        return vec![];
    };
    let (memsz, align, vaddr) = (tls.p_memsz(e), tls.p_align(e).max(1), tls.p_vaddr(e));
    let first = vaddr.wrapping_neg() & (align - 1);
    let plain = memsz.div_ceil(align) * align;
    let kept = memsz.saturating_sub(first).div_ceil(align) * align + first;
    let mut v = vec![tls_offset.wrapping_sub(plain)];
    if kept != plain {
        v.push(tls_offset.wrapping_sub(kept));
    }
    v
}

/// The mmapped chunks that tile `[start, end)` from its start: (start, end) of each, as long as
/// each header says IS_MMAPPED (0x2), not NON_MAIN_ARENA, and a page-multiple size that stays
/// inside the region.
pub fn mmapped_chunks(mem: &Memory, start: u64, end: u64, page: u64) -> Vec<(u64, u64)> {
    let mut out = vec![];
    let mut at = start;
    while at < end && out.len() < 4096 {
        let (Some(prev_size), Some(size)) = (mem.u64(at), mem.u64(at + 8)) else { break };
        let total = (size & !7).saturating_add(prev_size);
        if size & 2 == 0 || size & 4 != 0 || prev_size >= page || total == 0 || !total.is_multiple_of(page) {
            break;
        }
        if at.saturating_add(total) > end {
            break;
        }
        out.push((at, at + total));
        at += total;
    }
    out
}

/// glibc's smallest mmap threshold (DEFAULT_MMAP_THRESHOLD_MIN): an mmapped chunk found away
/// from its mapping's start must be at least this big, which keeps a stray word pair in other
/// memory from passing for a header.
const MMAP_THRESHOLD_MIN: u64 = 128 << 10;

/// The largest mapping searched page by page for mmapped chunks that the kernel merged into a
/// neighbouring anonymous mapping (one 16-byte read per page, 1024 pages a call).
const SEARCHED_MAX: u64 = 64 << 20;

/// The mmapped chunks anywhere in `[start, end)`: those that tile it from its start
/// ([`mmapped_chunks`]), then, in a mapping of at most [`SEARCHED_MAX`], those at a page start
/// further in: mmap places each new mapping right below the last and the kernel merges
/// anonymous neighbours, so a chunk mapped before another anonymous mapping ends up at the top
/// of their merged mapping. Away from a mapping's start a header must say prev_size 0 and at
/// least [`MMAP_THRESHOLD_MIN`] bytes, and its chunks must reach the mapping's end exactly (a
/// word pair that passes for a header in other memory, the JVM's Metaspace say, rarely does).
pub fn mmapped_chunks_in(mem: &Memory, start: u64, end: u64, page: u64) -> Vec<(u64, u64)> {
    let mut out = mmapped_chunks(mem, start, end, page);
    let at = out.last().map_or(start, |c| c.1);
    if at == end || end - start > SEARCHED_MAX {
        return out;
    }
    let mut p = at.div_ceil(page) * page;
    while p < end && out.len() < 4096 {
        let addrs: Vec<u64> = (0..1024).map(|i| p + i * page).take_while(|&a| a < end).collect();
        let heads = mem.pairs(&addrs);
        let next = addrs.last().map_or(end, |&a| a + page);
        for (&a, h) in addrs.iter().zip(&heads) {
            let Some((prev_size, size)) = *h else { continue };
            let total = size & !7;
            if prev_size != 0
                || size & 2 == 0
                || size & 4 != 0
                || total < MMAP_THRESHOLD_MIN
                || !total.is_multiple_of(page)
                || a.saturating_add(total) > end
            {
                continue;
            }
            let run = mmapped_chunks(mem, a, end, page);
            if run.last().map(|c| c.1) != Some(end) {
                continue;
            }
            out.extend(run);
            return out;
        }
        p = next;
    }
    out
}

/// The thread's TCB (its `struct pthread`, which the thread pointer `fs` points to) for a thread
/// whose registers were not read: glibc puts it at the top of the stack it allocated, and its
/// first word (`header.tcb`) and third (`header.self`) hold its own address. Searched in the
/// last 16 KiB of the stack mapping `[lo, hi)`, at the 64-byte alignment of static TLS.
pub fn tcb_in(mem: &Memory, lo: u64, hi: u64) -> Option<u64> {
    let from = hi.saturating_sub(16 << 10).max(lo);
    let mut buf = vec![0u8; (hi - from) as usize];
    if !mem.read(from, &mut buf) {
        return None;
    }
    let word = |off: usize| buf.get(off..off + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    (0..buf.len()).step_by(64).rev().find_map(|off| {
        let at = from + off as u64;
        (word(off) == Some(at) && word(off + 16) == Some(at)).then_some(at)
    })
}

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;

    /// A heap whose `size` went past the read-write part of an earlier map (it grew between the
    /// map's read and the stop) is still found; one whose size reaches past its reservation is
    /// not.
    #[test]
    fn a_heap_that_grew_after_the_map_was_read_is_still_a_heap() {
        let page = 4096u64;
        // SAFETY: a fresh PROT_NONE reservation, large enough for one HEAP_MAX-aligned heap.
        let m = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * HEAP_MAX as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(m, libc::MAP_FAILED);
        let base = (m as u64).next_multiple_of(HEAP_MAX);
        // SAFETY: the first pages of the aligned heap, inside the reservation, made writable.
        assert_eq!(
            unsafe {
                libc::mprotect(
                    base as *mut libc::c_void,
                    3 * page as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                )
            },
            0
        );
        // glibc >= 2.35's heap_info: ar_ptr (the arena right after it), prev, size, mprotect_size, pagesize.
        let words = [base + 48, 0, 3 * page, 3 * page, page];
        for (i, w) in words.iter().enumerate() {
            // SAFETY: the first 40 bytes of the writable page at `base`.
            unsafe { (base as *mut u64).add(i).write(*w) };
        }
        let region = |start: u64, end: u64, perms: &str| Region {
            start,
            end,
            perms: crate::load::maps::Perms::new(perms).unwrap_or_default(),
            ..Region::default()
        };
        // The map as read before the heap grew: two pages read-write, the rest reserved.
        let before =
            [region(base, base + 2 * page, "rw-p"), region(base + 2 * page, base + HEAP_MAX, "---p")];
        let mem = Memory { pid: std::process::id() };
        let h = heap_at(&mem, &before, base, page).expect("the heap, grown since the map");
        assert_eq!((h.ar_ptr, h.size), (base + 48, 3 * page));
        // Without the reservation after the read-write part, a size past it is not believed.
        assert!(heap_at(&mem, &before[..1], base, page).is_none());
        // SAFETY: unmaps the reservation made above.
        unsafe { libc::munmap(m, 2 * HEAP_MAX as usize) };
    }
}
