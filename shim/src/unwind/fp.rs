//! The frame-pointer walk, for code without unwind information (Go's, a cgo wrapper linked
//! without `.eh_frame`): a candidate frame is checked against the images' spans ([`images`])
//! and read through the bounds-checked reader.

use super::images;
use super::reader::SafeReader;

/// Whether `fp` looks like a frame pointer: it points at a stack, not into a loaded image (a
/// register used for data often holds an image address), and its saved return address lies in
/// a loaded image's code.
fn plausible_frame(mem: &mut SafeReader<'_>, fp: usize) -> bool {
    fp != 0
        && fp.is_multiple_of(8)
        && !images::in_image(fp as u64)
        && mem.pair(fp).is_some_and(|(_, ret)| images::in_text(ret as u64))
}

/// A frame without unwind information that used the frame-pointer register for itself (a cgo
/// C wrapper compiled with -O2 and linked without .eh_frame, as Go's internal linker does)
/// leaves no chain to follow; it did save the caller's frame pointer in its own small frame.
/// Looks at the first words above `sp` for a value that is a plausible frame pointer.
fn scan_for_frame_pointer(mem: &mut SafeReader<'_>, sp: usize) -> usize {
    if sp == 0 {
        return 0;
    }
    let mut words = [0usize; 32];
    for i in (0..words.len()).step_by(2) {
        let Some((a, b)) = mem.pair(sp + i * 8) else { break };
        (words[i], words[i + 1]) = (a, b);
    }
    words.into_iter().find(|&v| plausible_frame(mem, v)).unwrap_or(0)
}

/// Continues a walk whose last frame (`frames[n - 1]`, code without unwind information) had
/// frame pointer `fp` and stack pointer `sp`, along the frame-pointer chain.
pub fn follow_frame_pointers(
    frames: &mut [u64],
    mut n: usize,
    fp: usize,
    sp: usize,
    mem: &mut SafeReader<'_>,
) -> usize {
    let mut fp = fp;
    if !plausible_frame(mem, fp) {
        fp = scan_for_frame_pointer(mem, sp);
    }
    let mut backwards = 0;
    while n < frames.len() && fp != 0 && fp.is_multiple_of(8) {
        let Some((next, ret)) = mem.pair(fp) else { break };
        if ret < 4096 {
            break;
        }
        frames[n] = ret as u64;
        n += 1;
        // Stacks grow down, so callers' frames sit higher; a jump down is a stack switch (Go's
        // g0 and goroutine stacks). Allow a few, never a loop.
        if next <= fp {
            backwards += 1;
            if backwards > 4 {
                break;
            }
        }
        fp = next;
    }
    n
}
