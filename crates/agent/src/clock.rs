//! The daemon's clocks: the boot clock (CLOCK_BOOTTIME, monotonic and counting suspend) as the
//! engine's time, so cooldowns never follow a step of the wall clock; the kernel's boot id; the
//! wall clock, read only to migrate old checkpoints.

use ipam::Time;
use nix::time::{ClockId, clock_gettime};

/// The boot clock as engine time (milliseconds since boot).
pub fn now() -> Time {
    // CLOCK_BOOTTIME exists on every kernel podip runs on (2.6.39+); a failure is a broken host.
    let t = clock_gettime(ClockId::CLOCK_BOOTTIME).expect("CLOCK_BOOTTIME");
    let ms = u64::try_from(t.tv_sec()).unwrap_or(0) * 1000 + u64::try_from(t.tv_nsec()).unwrap_or(0) / 1_000_000;
    Time::from_millis(ms)
}

/// The kernel's boot id (changes at every boot), or empty when unreadable.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// The wall clock, milliseconds since the Unix epoch.
#[allow(clippy::disallowed_methods)] // Read only to migrate wall-clock cooldowns of version 1.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The clocks a checkpoint is read and written against, now.
pub fn clocks(boot_id: &str) -> crate::checkpoint::Clocks {
    crate::checkpoint::Clocks { now: now(), wall_ms: wall_ms(), boot_id: boot_id.to_string() }
}
