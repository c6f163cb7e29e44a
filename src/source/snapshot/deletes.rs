//! The records deleted since a resync's start, from the replication API.
//!
//! Contract: [`deleted_since`] asks `GET /sobjects/{Object}/deleted/?start=&end=` for the window
//! from `since` (no older than the 15 days Salesforce keeps: [`DELETED_WINDOW_MS`]) to now. When
//! the org refuses the start as older than what its delete log still holds
//! (`INVALID_REPLICATION_DATE`: the log can be purged sooner, "sObject Get Deleted", REST API
//! Developer Guide), it asks the most recent window for the log's `earliestDateAvailable` and
//! reads from the minute after it (or, when even that window is refused, reads none): deletes
//! before then cannot be known, which is logged (the rows a resync reads through `queryAll`
//! still carry the records left in the recycle bin). Imports
//! only the REST client, so both the snapshot and the gap re-sync use it.

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::salesforce::rest::{RestClient, RestError};

/// How far back the replication API keeps deleted records (REST API Developer Guide, "Get
/// Deleted Records": records in the recycle bin, 15 days), less a margin for the clock.
pub(crate) const DELETED_WINDOW_MS: i64 = 15 * 86_400_000 - 3_600_000;

const MINUTE: i64 = 60_000;

/// `(Id, deletedDate)` of the records of `object` deleted from `since` to `now` (see the module
/// contract).
pub(crate) async fn deleted_since(
    rest: &RestClient,
    object: &str,
    since: i64,
    now: i64,
    cancel: &CancellationToken,
) -> Result<Vec<(String, i64)>, RestError> {
    let start = since.max(now - DELETED_WINDOW_MS);
    if start > since {
        warn!(
            object,
            since,
            "the resync reaches further back than the 15 days of deleted records Salesforce keeps: records deleted and purged before then stay in the replica"
        );
    }
    match rest.deleted_records(object, start, now, cancel).await {
        Ok(deleted) => Ok(deleted.records),
        Err(err) if is_invalid_replication_date(&err) => {
            // The log's earliest date is only in a successful answer: ask the most recent window
            // the API takes (a start in an earlier minute than now).
            let recent = (now.div_euclid(MINUTE) - 1) * MINUTE;
            match rest.deleted_records(object, recent, now, cancel).await {
                Ok(probe) => {
                    let earliest = probe.earliest_date_available_ms.unwrap_or(recent);
                    warn!(
                        object,
                        since,
                        earliest,
                        "the org's delete log no longer reaches the resync's start: records deleted and purged before then stay in the replica"
                    );
                    let start = ((earliest.div_euclid(MINUTE) + 1) * MINUTE).max(start);
                    if start >= recent {
                        return Ok(probe.records);
                    }
                    Ok(rest
                        .deleted_records(object, start, now, cancel)
                        .await?
                        .records)
                }
                Err(err) if is_invalid_replication_date(&err) => {
                    warn!(object, since, error = %err, "the org's delete log was emptied within the last minute: only the deleted rows queryAll still reads are known");
                    Ok(Vec::new())
                }
                Err(err) => Err(err),
            }
        }
        Err(err) => Err(err),
    }
}

fn is_invalid_replication_date(err: &RestError) -> bool {
    matches!(err, RestError::Rejected { errors, .. } if errors.iter().any(|e| e.code == "INVALID_REPLICATION_DATE"))
}
