//! The interpreter held against gimli's `UnwindTable` (issue 13 item 2, issue 15 item 1): for
//! every FDE of real images on this machine, at every byte address each FDE covers (a superset
//! of its instruction boundaries: the rule of a row holds from its first byte to its last), the
//! crate's rule must equal gimli's row reduced to the same shape, where gimli gives an
//! expression, a value rule or another register the crate must say `Complex`. Lookups go
//! through `.eh_frame_hdr`'s table where the image has one, as the shim and the recorder look up,
//! and through a walk of `.eh_frame` where it has none (static executables).

use gimli::{BaseAddresses, CfaRule, CieOrFde, EhFrame, LittleEndian, Register, RegisterRule, UnwindSection};
use object::{Object, ObjectSection};
use std::path::{Path, PathBuf};
use std::process::Command;
use vmshim_unwind::{Bases, Rule, fdes, read_hdr, rule_for, rule_in_fde};

/// An image's sections, addressed by their virtual addresses.
struct Image {
    sections: Vec<(u64, Vec<u8>)>,
    eh_frame: (u64, u64),
    hdr: Option<u64>,
    text: u64,
}

fn load(path: &Path) -> Image {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = object::File::parse(&*data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let sect = |name: &str| file.section_by_name(name).map(|s| (s.address(), s.data().unwrap().to_vec()));
    let eh = sect(".eh_frame").unwrap_or_else(|| panic!("{} has no .eh_frame", path.display()));
    let hdr = sect(".eh_frame_hdr");
    let text = file.section_by_name(".text").map_or(0, |s| s.address());
    let mut sections = vec![eh.clone()];
    sections.extend(hdr.clone());
    Image { eh_frame: (eh.0, eh.1.len() as u64), hdr: hdr.map(|h| h.0), sections, text }
}

impl Image {
    fn memory(&self) -> impl FnMut(u64, &mut [u8]) -> bool + '_ {
        |addr, buf| {
            for (at, bytes) in &self.sections {
                if let Some(off) = addr.checked_sub(*at)
                    && let Some(src) = bytes.get(off as usize..off as usize + buf.len())
                {
                    buf.copy_from_slice(src);
                    return true;
                }
            }
            false
        }
    }
}

/// gimli's row in the crate's shape.
fn reduce(cie_ok: bool, row: &gimli::UnwindTableRow<usize>) -> Rule {
    if !cie_ok {
        return Rule::Complex;
    }
    let (cfa_rbp, cfa_off) = match *row.cfa() {
        CfaRule::RegisterAndOffset { register: Register(r @ (6 | 7)), offset } => match u32::try_from(offset)
        {
            Ok(off) => (r == 6, off),
            Err(_) => return Rule::Complex,
        },
        _ => return Rule::Complex,
    };
    match row.register(Register(16)) {
        Some(RegisterRule::Undefined) => return Rule::End,
        Some(RegisterRule::Offset(-8)) => {}
        _ => return Rule::Complex,
    }
    let rbp_slot = match row.register(Register(6)) {
        None | Some(RegisterRule::SameValue) => 0,
        Some(RegisterRule::Offset(off)) if (-8 * 255..0).contains(&off) && off % 8 == 0 => (-off / 8) as u8,
        _ => return Rule::Complex,
    };
    Rule::Step { cfa_rbp, cfa_off, rbp_slot }
}

#[derive(Default, Debug)]
struct Counts {
    fdes: u64,
    rows: u64,
    addresses: u64,
    steps: u64,
    ends: u64,
    complex: u64,
    gimli_errors: u64,
}

fn compare(name: &str, path: &Path) -> Counts {
    let img = load(path);
    let mut mem = img.memory();
    let eh = EhFrame::new(&img.sections[0].1, LittleEndian);
    let mut bases = BaseAddresses::default().set_eh_frame(img.eh_frame.0).set_text(img.text);
    if let Some(h) = img.hdr {
        bases = bases.set_eh_frame_hdr(h);
    }
    // The crate's own walk of .eh_frame, the index of an image without a header table.
    let mut index: Vec<_> = fdes(&mut mem, img.eh_frame.0, img.eh_frame.1, Bases::default()).collect();
    index.sort_by_key(|f| f.pc_begin);
    let hdr = img.hdr.inspect(|&h| {
        let hdr = read_hdr(&mut mem, h).expect("a readable .eh_frame_hdr");
        assert!(hdr.searchable(), "{name}: .eh_frame_hdr has a table");
        assert_eq!(hdr.eh_frame, Some(img.eh_frame.0), "{name}: the header names .eh_frame");
    });
    let mut lookup = |pc: u64| match hdr {
        Some(h) => rule_for(&mut mem, h, pc),
        None => {
            let i = index.partition_point(|f| f.pc_begin <= pc);
            match i.checked_sub(1).map(|i| index[i]) {
                Some(f) => rule_in_fde(&mut mem, f.fde, pc, &Bases::default()),
                None => Rule::NoFde,
            }
        }
    };
    let mut c = Counts::default();
    let mut ctx = gimli::UnwindContext::new();
    let mut entries = eh.entries(&bases);
    let mut gimli_fdes = 0;
    while let Some(entry) = entries.next().expect("gimli reads the entries") {
        let CieOrFde::Fde(partial) = entry else { continue };
        let fde = partial.parse(|s, b, o| s.cie_from_offset(b, o)).expect("gimli parses the FDE");
        gimli_fdes += 1;
        if fde.len() == 0 {
            continue;
        }
        c.fdes += 1;
        let cie = fde.cie();
        let cie_ok = !cie.is_signal_trampoline() && cie.return_address_register() == Register(16);
        let mut table = fde.rows(&eh, &bases, &mut ctx).expect("an unwind table");
        let mut next = fde.initial_address();
        let mut check = |lo: u64, hi: u64, want: Rule, c: &mut Counts| {
            for pc in lo..hi {
                let got = lookup(pc);
                assert_eq!(got, want, "{name}: pc {pc:#x} in the FDE at {:#x}", fde.initial_address());
                c.addresses += 1;
                match want {
                    Rule::Step { .. } => c.steps += 1,
                    Rule::End => c.ends += 1,
                    _ => c.complex += 1,
                }
            }
        };
        loop {
            match table.next_row() {
                Ok(Some(row)) => {
                    c.rows += 1;
                    let (lo, hi, want) = (row.start_address(), row.end_address(), reduce(cie_ok, row));
                    check(lo, hi, want, &mut c);
                    next = hi;
                }
                Ok(None) => break,
                // What gimli cannot evaluate from here on the crate must not pretend to know.
                Err(_) => {
                    c.gimli_errors += 1;
                    check(next, fde.end_address(), Rule::Complex, &mut c);
                    break;
                }
            }
        }
    }
    assert_eq!(index.len(), gimli_fdes, "{name}: the crate's walk of .eh_frame finds gimli's FDEs");
    println!(
        "{name}: {} FDEs, {} rows, {} addresses ({} step, {} end, {} complex), {} FDEs gimli could not finish; {}",
        c.fdes,
        c.rows,
        c.addresses,
        c.steps,
        c.ends,
        c.complex,
        c.gimli_errors,
        if hdr.is_some() {
            "looked up through .eh_frame_hdr"
        } else {
            "no .eh_frame_hdr: looked up by a walk of .eh_frame"
        },
    );
    assert!(c.rows > 0 && c.steps > 0, "{name}: {c:?}");
    c
}

/// A program that pulls much of libc in: threads, malloc, stdio.
const PROGRAM: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
static void *worker(void *a) { return malloc((size_t)a); }
int main(int argc, char **argv) {
    pthread_t t;
    void *r;
    pthread_create(&t, NULL, worker, (void *)(size_t)(argc << 20));
    pthread_join(t, &r);
    printf("%s %p\n", argv[0], r);
    return 0;
}
"#;

fn build_static(dir: &Path, compiler: &str) -> PathBuf {
    let src = dir.join("diff.c");
    std::fs::write(&src, PROGRAM).unwrap();
    let out = dir.join(format!("diff-{compiler}"));
    let st = Command::new(compiler)
        .args(["-O2", "-static", "-pthread", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("{compiler}: {e} (scripts/test.sh installs gcc and musl-tools)"));
    assert!(st.success(), "{compiler} -static failed");
    out
}

/// The shim next to this test binary's profile directory (`cargo build --workspace` makes it).
fn shim() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let lib = exe.parent().and_then(Path::parent).unwrap().join("libvmshim.so");
    assert!(
        lib.exists(),
        "{} is missing: run `cargo build --workspace` first (scripts/test.sh does)",
        lib.display()
    );
    lib
}

#[test]
fn rules_equal_gimlis_on_every_fde_of_real_images() {
    let dir = std::env::temp_dir().join(format!("vmshim-unwind-diff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut images: Vec<(String, PathBuf)> = vec![
        ("libc.so.6".into(), "/lib/x86_64-linux-gnu/libc.so.6".into()),
        ("ld-linux-x86-64.so.2".into(), "/lib64/ld-linux-x86-64.so.2".into()),
    ];
    let stdcxx = PathBuf::from("/usr/lib/x86_64-linux-gnu/libstdc++.so.6");
    if stdcxx.exists() {
        images.push(("libstdc++.so.6".into(), stdcxx));
    }
    images.push(("libvmshim.so".into(), shim()));
    images.push(("gcc -static".into(), build_static(&dir, "gcc")));
    images.push(("musl-gcc -static".into(), build_static(&dir, "musl-gcc")));
    let mut total = Counts::default();
    for (name, path) in &images {
        let c = compare(name, path);
        total.fdes += c.fdes;
        total.rows += c.rows;
        total.addresses += c.addresses;
    }
    println!("total: {} FDEs, {} rows, {} addresses compared", total.fdes, total.rows, total.addresses);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// No input makes the crate panic or loop: libc's `.eh_frame` and `.eh_frame_hdr` with bytes
/// flipped at random, looked up at random addresses, with a memory that also refuses reads at
/// random (a tracee's page going away).
#[test]
fn corrupted_tables_never_panic() {
    let img = load(Path::new("/lib/x86_64-linux-gnu/libc.so.6"));
    let hdr = img.hdr.expect("libc has .eh_frame_hdr");
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (lo, hi) = (img.text, img.text + 0x1c0000);
    let mut outcomes = [0u64; 4];
    for round in 0..40 {
        let mut broken = Image { sections: img.sections.clone(), ..img };
        for _ in 0..(1 << (round % 12)) {
            let s = (rand() as usize) % broken.sections.len();
            let bytes = &mut broken.sections[s].1;
            let i = (rand() as usize) % bytes.len();
            bytes[i] = rand() as u8;
        }
        let refuse = round % 3 == 0;
        let mut inner = broken.memory();
        let mut r2 = rand();
        let mut mem = |addr: u64, buf: &mut [u8]| {
            r2 = r2.rotate_left(7) ^ addr;
            !(refuse && r2 % 97 == 0) && inner(addr, buf)
        };
        for _ in 0..5000 {
            let pc = lo + rand() % (hi - lo);
            let r = rule_for(&mut mem, hdr, pc);
            outcomes[match r {
                Rule::Step { .. } => 0,
                Rule::End => 1,
                Rule::NoFde => 2,
                Rule::Complex => 3,
            }] += 1;
        }
        let n = fdes(&mut mem, img.eh_frame.0, img.eh_frame.1, Bases::default()).count();
        assert!(n <= img.eh_frame.1 as usize / 8);
    }
    println!("corrupted lookups: {outcomes:?} (step, end, no FDE, complex)");
    assert!(outcomes.iter().sum::<u64>() == 200_000);
}
