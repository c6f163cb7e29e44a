//! Small helpers every part of the simulated org uses: the API version of Rust-API changes and
//! their `changeOrigin`, the clock (and the org's second-precision clock), and mutex locking.
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

/// A datetime as a real org stores it: epoch milliseconds truncated to the whole second.
/// Salesforce's dateTime fields (system ones such as `CreatedDate`, `LastModifiedDate`,
/// `SystemModstamp`, and those clients write) are "full timestamps with a precision of one
/// second" (SOAP API Developer Guide, "Primitive Data Types", dateTime); the change event
/// `commitTimestamp` and `LastModifiedDate` of the public real capture in the pozil Node
/// client's README (tests/fixtures/real/) both end in `000`.
pub(crate) const fn to_second(epoch_ms: i64) -> i64 {
    epoch_ms.div_euclid(1000) * 1000
}

/// The org's clock for what it records (record datetimes, `commitTimestamp`): now, truncated
/// to the second as a real org does ([`to_second`]).
pub(crate) fn org_now() -> i64 {
    to_second(now_ms())
}

/// How long until the org's clock ([`org_now`]) moves to its next second: what a client waits
/// for a timestamp that is newer than every datetime the org has recorded so far.
pub(crate) fn until_next_second() -> std::time::Duration {
    let ms = now_ms();
    std::time::Duration::from_millis((to_second(ms) + 1000 - ms) as u64)
}

/// `changeOrigin` for a REST change with an optional client tag.
pub(crate) fn rest_origin(version: &str, tag: Option<&str>) -> String {
    match tag {
        Some(tag) => format!("com/salesforce/api/rest/{version};client={tag}"),
        None => format!("com/salesforce/api/rest/{version}"),
    }
}
