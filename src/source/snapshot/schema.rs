//! The change event schema of a snapshot's object: what its records must look like.
//!
//! Contract: [`object_schema`] asks `GetTopic` for the object's own change channel
//! (`/data/AccountChangeEvent`, `/data/Foo__ChangeEvent`) and fetches the schema it names through
//! the source's schema cache (so the stream reuses it), retrying while the org is unavailable
//! and logging in again (single flight) when it refuses the session; what cannot be had is a
//! [`SnapshotError::Schema`] naming the object.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::SnapshotError;
use crate::retry::{Backoff, Directive, sleep_or_cancel};
use crate::source::blank_schema::EntitySchemas;
use crate::source::cdc::schema::EventSchema;
use crate::source::processor::CountingSource;
use crate::source::reader::renew_session;
use crate::source::setup::Shared;

/// The writer schema of `object`'s change events (see the module docs).
pub(super) async fn object_schema(
    shared: &Shared,
    object: &str,
    cancel: &CancellationToken,
) -> Result<Arc<EventSchema>, SnapshotError> {
    let failed = |reason: String| SnapshotError::Schema {
        object: object.to_owned(),
        reason,
    };
    let login_refused = Mutex::new(None);
    let id = EntitySchemas::default()
        .schema_id(shared, object, false, &login_refused, cancel)
        .await
        .map_err(|dead| match dead {
            Some(dead) => failed(dead.reason),
            None => match login_refused.lock().ok().and_then(|mut l| l.take()) {
                Some(login) => failed(format!("logging in again failed: {login}")),
                None => SnapshotError::Cancelled,
            },
        })?;
    let source = CountingSource {
        pubsub: &shared.pubsub,
        fetched: &shared.stats.schemas_fetched,
    };
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let used = shared.session.current();
        let err = match shared.schemas.get(&id, &source).await {
            Ok(schema) => return Ok(schema),
            Err(err) => err,
        };
        match err.directive() {
            Directive::Reauthenticate => renew_session(shared, &used, cancel)
                .await
                .map_err(|login| failed(format!("logging in again failed: {login}")))?,
            Directive::Retry => warn!(error = %err, object, "schema fetch failed; retrying"),
            _ => return Err(failed(err.to_string())),
        }
        if !sleep_or_cancel(backoff.next_delay(), cancel).await {
            return Err(SnapshotError::Cancelled);
        }
    }
}
