//! The process's allocator settings. The allocator is mimalloc (the workspace `Cargo.toml` says
//! why); what is set here is how soon it gives freed memory back to the OS.
//!
//! mimalloc 3 keeps freed pages for 1 s before purging them, and purges only when the thread
//! that freed them allocates again. After a reconnect storm — 15,000 sockets authenticated and
//! registered in two or three seconds — the storm's short-lived buffers (upgrades, token checks,
//! registration batches) were freed by threads that then went quiet with the idle sockets, and
//! stayed resident: `just bench`'s idle scenario counted them as about a sixth of an idle
//! socket's memory (5.9 KiB per socket at 1 s against 5.3 KiB at 10 ms, same build, same run).
//! 10 ms is mimalloc 2's default; no cost showed in the flat-out handshake rate.

use std::ffi::c_long;

use libmimalloc_sys::{mi_option_get, mi_option_set, mi_option_t};

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_t` (libmimalloc-sys names only the options
/// whose numbers mimalloc 2 and 3 share).
const PURGE_DELAY: mi_option_t = 15;
/// mimalloc 3's default for it: if the option at [`PURGE_DELAY`] has another value, either the
/// numbering changed or `MIMALLOC_PURGE_DELAY` was set, and it is left alone.
const PURGE_DELAY_DEFAULT_MS: c_long = 1000;
/// How long freed memory stays with the process before it goes back to the OS.
const PURGE_DELAY_MS: c_long = 10;

/// Applies the settings above; call first thing in `main`. Returns the purge delay in force.
pub fn configure() -> c_long {
    // SAFETY: mimalloc's option calls take a plain integer index and value and may be made at
    // any time; an index it does not know is ignored.
    unsafe {
        if mi_option_get(PURGE_DELAY) == PURGE_DELAY_DEFAULT_MS {
            mi_option_set(PURGE_DELAY, PURGE_DELAY_MS);
        }
        mi_option_get(PURGE_DELAY)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn freed_memory_goes_back_to_the_os_after_10_ms() {
        assert_eq!(super::configure(), super::PURGE_DELAY_MS);
    }
}
