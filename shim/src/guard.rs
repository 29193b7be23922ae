//! The reentrancy guard. Anything a hook calls (the unwinder, the writer) may itself map
//! memory; a thread already inside a hook passes straight through to the real call.

use core::cell::Cell;

thread_local! {
    // const-initialised and without Drop: no lazy registration, no allocation, no destructor.
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// Proof that the current thread is inside exactly one hook. Recording functions take `&Guard`.
pub struct Guard(());

impl Guard {
    /// `None` when this thread is already inside a hook (a nested call from the shim's own work,
    /// or a signal handler that interrupted a hook).
    pub fn enter() -> Option<Guard> {
        IN_HOOK.with(|f| if f.replace(true) { None } else { Some(Guard(())) })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        IN_HOOK.with(|f| f.set(false));
    }
}
