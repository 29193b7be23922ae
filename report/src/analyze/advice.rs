//! Advice: what each lever would save, computed from the run's own figures, offered only where
//! the run shows the thing it would change.

use crate::analyze::attribute::{Attribution, Category};

/// One what-if.
pub struct Advice {
    pub text: String,
    /// Address space it would save, in bytes.
    pub saves_bytes: u64,
    /// How to apply it.
    pub how: String,
}

const MIB: u64 = 1 << 20;
/// glibc's heap reservation per non-main arena on 64-bit.
const ARENA: u64 = 64 * MIB;

fn mib(b: u64) -> String {
    format!("{} MiB", (b + MIB / 2) / MIB)
}

pub fn advise(attr: &Attribution) -> Vec<Advice> {
    let mut out = Vec::new();
    // Arenas: MALLOC_ARENA_MAX counts the main arena, so 2 leaves one non-main arena.
    let arenas: Vec<_> = attr.arenas.iter().filter(|a| a.id.is_some()).collect();
    let arena_bytes = attr.bytes_of(Category::MallocArena).0;
    if arenas.len() >= 2 && arena_bytes > ARENA {
        let users: std::collections::BTreeSet<u32> =
            arenas.iter().flat_map(|a| a.tids.iter().copied()).collect();
        out.push(Advice {
            text: format!(
                "MALLOC_ARENA_MAX=2 would reserve {} instead of {} of malloc arenas ({} threads would share one arena besides the main one, instead of {} arenas)",
                mib(ARENA),
                mib(arena_bytes),
                users.len(),
                arenas.len()
            ),
            saves_bytes: arena_bytes - ARENA,
            how: "environment variable MALLOC_ARENA_MAX=2, or mallopt(M_ARENA_MAX, 2) before the threads start".into(),
        });
    }
    // Thread stacks: glibc's default is RLIMIT_STACK (8 MiB here); most threads use far less.
    let stacks: Vec<_> =
        attr.threads.iter().filter(|t| t.creator_tid.is_some() && t.stack_bytes >= 4 * MIB).collect();
    if stacks.len() >= 2 {
        let total: u64 = stacks.iter().map(|t| t.stack_bytes).sum();
        let smaller = stacks.len() as u64 * (MIB + 4096);
        out.push(Advice {
            text: format!(
                "pthread stacks of 1 MiB instead of {} would save {} over {} threads",
                mib(total / stacks.len() as u64),
                mib(total.saturating_sub(smaller)),
                stacks.len()
            ),
            saves_bytes: total.saturating_sub(smaller),
            how: "ulimit -s 1024 before starting the program (glibc's default stack size), or pthread_attr_setstacksize".into(),
        });
    }
    // Go's reservations: address space, not memory.
    let go: Vec<_> = attr.regions.iter().filter(|r| r.category == Category::GoRuntime).collect();
    let go_total: u64 = go.iter().map(|r| r.size()).sum();
    if go_total >= 64 * MIB {
        let rw: u64 = go.iter().filter(|r| r.perms.contains('w')).map(|r| r.size()).sum();
        let none: u64 = go.iter().filter(|r| r.perms.starts_with("---")).map(|r| r.size()).sum();
        out.push(Advice {
            text: format!(
                "the Go runtime reserved {}: {} of it is PROT_NONE reservation (address space only, nothing can be stored there until Go commits it) and {} is read-write; reservations cost address space, not memory (RSS)",
                mib(go_total),
                mib(none),
                mib(rw)
            ),
            saves_bytes: 0,
            how: "nothing to change unless VSZ itself is limited (ulimit -v, RLIMIT_AS, some container runtimes); a build without cgo (CGO_ENABLED=0) keeps the reservations but drops glibc's arenas and thread stacks".into(),
        });
    }
    out
}
