//! The reentrancy guard. Anything a hook calls (the unwinder, the writer) may itself map
//! memory; a thread already inside a hook passes straight through to the real call.

use crate::os::tls::{self, Slot};

/// Proof that the current thread is inside exactly one hook. Recording functions take `&Guard`.
pub struct Guard(());

impl Guard {
    /// `None` when this thread is already inside a hook (a nested call from the shim's own work,
    /// or a signal handler that interrupted a hook).
    #[inline(always)]
    pub fn enter() -> Option<Guard> {
        if tls::get(Slot::InHook) != 0 {
            return None;
        }
        tls::set(Slot::InHook, 1);
        Some(Guard(()))
    }
}

impl Drop for Guard {
    #[inline(always)]
    fn drop(&mut self) {
        tls::set(Slot::InHook, 0);
    }
}
