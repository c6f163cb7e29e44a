//! How an object of a snapshot is read, and its Bulk API 2.0 query job.
//!
//! Contract: [`choose`] keeps a Bulk API 2.0 job a crash left under way (the org still has it and
//! it did not fail), else counts the object's rows (`SELECT COUNT()`, with the resync's
//! `SystemModstamp` filter) and reads it with REST `query` pages below
//! `source.snapshot.rest_below`, with a new Bulk job otherwise (`query`, or `queryAll` for a
//! resync, so deleted rows come too). [`start_job`] creates the job and records it in the
//! progress, which the caller saves before waiting for it, so a crash finds the job again.
//! [`wait_for_job`] waits until the job completes; a job the org failed for a reason retrying can
//! fix (`retry::classify_query_job`) is replaced by a new one, up to [`JOB_ATTEMPTS`] times; one
//! failed by the query itself is a [`SnapshotError::Rest`].

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::SnapshotError;
use super::progress::{ObjectProgress, ReadMethod};
use crate::retry::{Directive, classify_query_job};
use crate::salesforce::rest::{BulkOperation, JobState, RestClient, RestError};

/// Jobs created for one object before a failure is final.
pub(super) const JOB_ATTEMPTS: u32 = 3;

/// A REST refusal about `object` as a snapshot error (cancellation as such).
pub(super) fn rest_error(object: &str, source: RestError) -> SnapshotError {
    match source {
        RestError::Cancelled => SnapshotError::Cancelled,
        source => SnapshotError::Rest {
            object: object.to_owned(),
            source,
        },
    }
}

/// How `entry`'s object is read (see the module contract); a kept Bulk job stays in `entry`.
pub(super) async fn choose(
    rest: &RestClient,
    entry: &mut ObjectProgress,
    count_soql: &str,
    rest_below: u64,
    cancel: &CancellationToken,
) -> Result<ReadMethod, SnapshotError> {
    if let (Some(ReadMethod::Bulk), Some(job)) = (entry.method, entry.job_id.clone()) {
        match rest.query_job(&job, cancel).await {
            Ok(found) if !matches!(found.state, JobState::Failed | JobState::Aborted) => {
                info!(object = entry.object, job, rows = entry.rows, locator = ?entry.locator, "resuming the Bulk API 2.0 job");
                return Ok(ReadMethod::Bulk);
            }
            Ok(found) => {
                warn!(object = entry.object, job, state = %found.state, "the snapshot's job ended; reading with a new one");
            }
            Err(err) if err.is_not_found() => {
                warn!(
                    object = entry.object,
                    job, "the org no longer has the snapshot's job; reading with a new one"
                );
            }
            Err(err) => return Err(rest_error(&entry.object, err)),
        }
    }
    entry.job_id = None;
    entry.locator = None;
    entry.rows = 0;
    let count = rest
        .count(count_soql, cancel)
        .await
        .map_err(|e| rest_error(&entry.object, e))?;
    let method = if count < rest_below {
        ReadMethod::Rest
    } else {
        ReadMethod::Bulk
    };
    info!(
        object = entry.object,
        count,
        method = method.as_str(),
        "reading"
    );
    entry.method = Some(method);
    Ok(method)
}

/// Creates the Bulk job reading `soql` and records it in `entry` (rows from the first page).
pub(super) async fn start_job(
    rest: &RestClient,
    entry: &mut ObjectProgress,
    soql: &str,
    resync: bool,
    cancel: &CancellationToken,
) -> Result<(), SnapshotError> {
    let operation = if resync {
        BulkOperation::QueryAll
    } else {
        BulkOperation::Query
    };
    let job = rest
        .create_query_job(soql, operation, cancel)
        .await
        .map_err(|e| rest_error(&entry.object, e))?;
    info!(
        object = entry.object,
        job = job.id,
        "Bulk API 2.0 query job created"
    );
    entry.job_id = Some(job.id);
    entry.locator = None;
    entry.rows = 0;
    Ok(())
}

/// Waits for `entry`'s job to complete; `Ok(false)`: the org failed it for a reason a new job
/// may not meet (the caller starts one, up to [`JOB_ATTEMPTS`]).
pub(super) async fn wait_for_job(
    rest: &RestClient,
    entry: &ObjectProgress,
    cancel: &CancellationToken,
) -> Result<bool, SnapshotError> {
    let job = entry.job_id.as_deref().unwrap_or_default();
    match rest.wait_for_query_job(job, cancel).await {
        Ok(done) => {
            info!(
                object = entry.object,
                job,
                rows = done.records_processed,
                "Bulk API 2.0 query job complete"
            );
            Ok(true)
        }
        Err(RestError::JobFailed { state, message, .. })
            if classify_query_job(&state, message.as_deref()) == Directive::Restart =>
        {
            warn!(object = entry.object, job, state, message = ?message, "the org failed the query job; starting a new one");
            Ok(false)
        }
        Err(err) => Err(rest_error(&entry.object, err)),
    }
}
