//! The process's memory: mimalloc's purge delay and the peak resident set.

/// mimalloc's `mi_option_purge_delay`: the same index in its v2 and v3 headers,
/// which libmimalloc-sys does not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The purge delay of the long-running commands, in ms.
const DAEMON_PURGE_DELAY_MS: std::ffi::c_long = 100;

/// How long mimalloc keeps freed pages before handing them back to the
/// kernel, in ms. A one-shot command's memory peaks in phases (decode,
/// generate, write), and mimalloc otherwise keeps what one phase freed for up
/// to a second (its v3 default) while the next allocates: generating the
/// largest crafted packet --max-input-spans admits peaked at 489 MiB with
/// the default delay and 263 MiB with none. The daemons free a window's
/// traces as they complete and allocate the next ones at once, so no delay
/// at all costs them a page fault per reuse; a tenth of a second returns
/// what a closed window's training freed before the open traces climb
/// again (BENCHMARKS.md "Samples counted once", the soak: RSS at the budget
/// 542–600 → 507–586 MiB).
fn set_purge_delay(ms: std::ffi::c_long) {
    // SAFETY: sets an integer option, which mimalloc allows at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms) };
}

/// How a command uses memory, which decides the purge delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Serves for long: a tenth of a second (see above).
    Daemon,
    /// Runs once over files: no delay, so phases do not add up.
    OneShot,
    /// Trains a language model: every step allocates and frees activations
    /// and gradients of the same few sizes, bounded by the batch's token
    /// budget, so nothing freed is handed back. Purging them between steps
    /// cost 38 % of the time of 20 `small` steps (45.5 → 28.3 s; kernel time
    /// 19.8 → 3.5 s) for a 9 % higher peak (1.33 → 1.45 GB).
    Training,
}

/// Sets the purge delay for how a command uses memory; an operator's own
/// MIMALLOC_PURGE_DELAY wins.
pub fn set_purge_delay_for(usage: Use) {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        set_purge_delay(match usage {
            Use::Daemon => DAEMON_PURGE_DELAY_MS,
            Use::OneShot => 0,
            Use::Training => -1,
        });
    }
}

/// This process's peak resident set (VmHWM), where the OS reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index is mimalloc's purge delay: it holds that option's default
    /// (1,000 ms in mimalloc v3, 10 ms in v2), and setting it takes.
    #[test]
    fn purge_delay_option_is_the_one_set() {
        // SAFETY: reads an integer option.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert!([1000, 10].contains(&get()), "{}", get());
        }
        set_purge_delay(0);
        assert_eq!(get(), 0);
        set_purge_delay(DAEMON_PURGE_DELAY_MS);
        assert_eq!(get(), DAEMON_PURGE_DELAY_MS);
    }
}
