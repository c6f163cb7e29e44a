//! Small helpers every part of the simulated org uses: the API version of Rust-API changes and
//! their `changeOrigin`, the clock, and mutex locking.
//!
//! Contract: leaf of the simulator (imports nothing of it), so that any file may use it.

use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// REST API version the simulator reports in `changeOrigin` for Rust-API changes.
pub const API_VERSION: &str = "62.0";

/// Locks a mutex, ignoring poisoning (the data stays consistent: every mutation is applied
/// under the lock from validated input and cannot panic half-way).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `changeOrigin` for a REST change with an optional client tag.
pub(crate) fn rest_origin(version: &str, tag: Option<&str>) -> String {
    match tag {
        Some(tag) => format!("com/salesforce/api/rest/{version};client={tag}"),
        None => format!("com/salesforce/api/rest/{version}"),
    }
}
