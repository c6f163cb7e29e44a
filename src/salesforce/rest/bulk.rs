//! Bulk API 2.0 query jobs (`/services/data/vXX.X/jobs/query`): create, read, wait for, page
//! through, abort and delete a job; the snapshot and the resync read large objects through them.
//!
//! Contract (Bulk API 2.0 Developer Guide: "Create a Query Job", "Get Information About a Query
//! Job", "Get Results for a Query Job", "Abort a Query Job", "Delete a Query Job", "Job
//! States"):
//! * [`RestClient::create_query_job`] sends `POST …/jobs/query` with `{"operation": "query" |
//!   "queryAll", "query": <SOQL>, "contentType": "CSV", "columnDelimiter": "COMMA",
//!   "lineEnding": "LF"}` and reads the job the answer describes ([`QueryJob`]: `id`,
//!   `operation`, `object`, `state`, `columnDelimiter`, `numberRecordsProcessed`,
//!   `errorMessage`; other keys ignored). A create whose answer was lost is sent again (like
//!   every call): the first job is then left to Salesforce's own clean-up, counted against the
//!   org's daily jobs.
//! * [`RestClient::query_job`] reads `GET …/jobs/query/{id}`; [`RestClient::wait_for_query_job`]
//!   polls it (100 ms doubling up to 10 s by default, [`RestClient::with_job_poll`]) until
//!   `JobComplete`; `Failed` or `Aborted` end the wait with [`RestError::JobFailed`] naming the
//!   job, its state and its `errorMessage`. The client never creates the job again: what to do is
//!   [`crate::retry::classify_query_job`]'s verdict, for the caller.
//! * [`RestClient::query_job_results`] reads one page, `GET …/jobs/query/{id}/results` with
//!   `Accept: text/csv`, `locator` (none: the first page) and `maxRecords` (0: Salesforce's
//!   default), into a [`ResultsPage`] (its CSV rules are [`super::bulk_csv`]'s), with
//!   `Sforce-Locator` (the text `null`: the last page) and `Sforce-NumberOfRecords`. A locator
//!   stays valid as long as the job exists, so a page can be read again after a crash.
//! * [`RestClient::abort_query_job`] sends `PATCH …/jobs/query/{id}` with `{"state":
//!   "Aborted"}`; [`RestClient::delete_query_job`] sends `DELETE …/jobs/query/{id}` (204).
//! * Every call is held by the guard, retried, counted and re-logged-in like every REST call; a
//!   refused call (a malformed SOQL at create: 400; results of a job not complete: 412
//!   `JOB_NOT_COMPLETE`, or 409 from another API version; an unknown job: 404) is
//!   [`RestError::Rejected`] with Salesforce's error array. A job id that is not letters and
//!   digits is [`RestError::Invalid`] before any call.

use std::fmt;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::bulk_csv::{ColumnDelimiter, ResultsPage};
use super::client::{Answer, Call, RestClient};
use super::errors::RestError;
use super::query::percent_encode;
use crate::retry::sleep_or_cancel;

/// `Sforce-Locator`: the next page of results, or the text `null`.
pub const LOCATOR_HEADER: &str = "Sforce-Locator";
/// `Sforce-NumberOfRecords`: the records of this page.
pub const NUMBER_OF_RECORDS_HEADER: &str = "Sforce-NumberOfRecords";

/// Which records a query job reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkOperation {
    /// Records that are not deleted or archived (`query`).
    Query,
    /// Also records deleted by a delete or a merge, and archived tasks and events (`queryAll`).
    QueryAll,
}

impl BulkOperation {
    /// Salesforce's name (`query`, `queryAll`).
    pub fn name(self) -> &'static str {
        match self {
            BulkOperation::Query => "query",
            BulkOperation::QueryAll => "queryAll",
        }
    }
}

/// A job's `state` (Bulk API 2.0 Developer Guide, "Job States").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Queued, ready to be processed.
    UploadComplete,
    /// Being processed.
    InProgress,
    /// Processed: the results can be read.
    JobComplete,
    /// Could not be processed (`errorMessage` says why).
    Failed,
    /// Cancelled by its creator or an administrator.
    Aborted,
    /// A state this client does not know (`Open` belongs to ingest jobs).
    Other(String),
}

impl JobState {
    fn from_name(name: &str) -> Self {
        match name {
            "UploadComplete" => JobState::UploadComplete,
            "InProgress" => JobState::InProgress,
            "JobComplete" => JobState::JobComplete,
            "Failed" => JobState::Failed,
            "Aborted" => JobState::Aborted,
            other => JobState::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JobState::UploadComplete => "UploadComplete",
            JobState::InProgress => "InProgress",
            JobState::JobComplete => "JobComplete",
            JobState::Failed => "Failed",
            JobState::Aborted => "Aborted",
            JobState::Other(name) => name,
        })
    }
}

/// A query job as Salesforce describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryJob {
    pub id: String,
    pub state: JobState,
    /// The object queried (`Account`).
    pub object: String,
    pub operation: BulkOperation,
    /// `numberRecordsProcessed` (0 until Salesforce says otherwise).
    pub records_processed: u64,
    /// `errorMessage`, for a failed job.
    pub error_message: Option<String>,
    /// `columnDelimiter` (`COMMA` when not said).
    pub column_delimiter: ColumnDelimiter,
}

/// The keys of a job's JSON that forcebridge reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobWire {
    id: String,
    state: String,
    object: String,
    operation: String,
    #[serde(default)]
    number_records_processed: Option<u64>,
    #[serde(default)]
    error_message: Option<String>,
    #[serde(default)]
    column_delimiter: Option<String>,
}

/// Reads a job's JSON (see the module contract).
fn parse_job(body: &[u8]) -> Result<QueryJob, RestError> {
    let wire: JobWire = serde_json::from_slice(body)
        .map_err(|e| RestError::Protocol(format!("query job answer: {e}")))?;
    let operation = match wire.operation.as_str() {
        "query" => BulkOperation::Query,
        "queryAll" => BulkOperation::QueryAll,
        other => {
            return Err(RestError::Protocol(format!(
                "query job {}: operation `{other}` is neither query nor queryAll",
                wire.id
            )));
        }
    };
    let column_delimiter = match wire.column_delimiter.as_deref() {
        None => ColumnDelimiter::Comma,
        Some(name) => ColumnDelimiter::from_name(name).ok_or_else(|| {
            RestError::Protocol(format!(
                "query job {}: unknown columnDelimiter `{name}`",
                wire.id
            ))
        })?,
    };
    Ok(QueryJob {
        state: JobState::from_name(&wire.state),
        object: wire.object,
        operation,
        records_processed: wire.number_records_processed.unwrap_or(0),
        error_message: wire.error_message.filter(|m| !m.is_empty()),
        column_delimiter,
        id: wire.id,
    })
}

/// A job id goes into the path: letters and digits only (a Salesforce Id).
fn check_job_id(id: &str) -> Result<(), RestError> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(RestError::Invalid(format!(
            "query job id `{id}` is not a Salesforce Id"
        )));
    }
    Ok(())
}

impl RestClient {
    fn job_path(&self, id: &str) -> Result<String, RestError> {
        self.check_tag()?;
        check_job_id(id)?;
        Ok(format!("{}/jobs/query/{id}", self.data_path()))
    }

    async fn job_call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        cancel: &CancellationToken,
    ) -> Result<Answer, RestError> {
        self.execute_for(&Call::json(method, path, body), cancel)
            .await
    }

    /// `POST …/jobs/query`: a new query job reading `soql` (CSV, comma, LF).
    pub async fn create_query_job(
        &self,
        soql: &str,
        operation: BulkOperation,
        cancel: &CancellationToken,
    ) -> Result<QueryJob, RestError> {
        self.check_tag()?;
        if soql.trim().is_empty() {
            return Err(RestError::Invalid(
                "query job: the SOQL `query` is empty".into(),
            ));
        }
        let path = format!("{}/jobs/query", self.data_path());
        let body = json!({
            "operation": operation.name(),
            "query": soql,
            "contentType": "CSV",
            "columnDelimiter": ColumnDelimiter::Comma.name(),
            "lineEnding": "LF",
        });
        let answer = self
            .job_call(Method::POST, &path, Some(&body), cancel)
            .await?;
        parse_job(&answer.body)
    }

    /// `GET …/jobs/query/{id}`: the job's state.
    pub async fn query_job(
        &self,
        id: &str,
        cancel: &CancellationToken,
    ) -> Result<QueryJob, RestError> {
        let path = self.job_path(id)?;
        let answer = self.job_call(Method::GET, &path, None, cancel).await?;
        parse_job(&answer.body)
    }

    /// Polls the job until `JobComplete` (see the module contract).
    pub async fn wait_for_query_job(
        &self,
        id: &str,
        cancel: &CancellationToken,
    ) -> Result<QueryJob, RestError> {
        let (mut delay, cap) = self.job_poll();
        loop {
            let job = self.query_job(id, cancel).await?;
            match job.state {
                JobState::JobComplete => return Ok(job),
                JobState::Failed | JobState::Aborted => {
                    return Err(RestError::JobFailed {
                        id: job.id,
                        state: job.state.to_string(),
                        message: job.error_message,
                    });
                }
                _ => {}
            }
            if !sleep_or_cancel(delay, cancel).await {
                return Err(RestError::Cancelled);
            }
            delay = (delay * 2).min(cap);
        }
    }

    /// One page of the job's results (see the module contract).
    pub async fn query_job_results(
        &self,
        id: &str,
        locator: Option<&str>,
        max_records: u32,
        cancel: &CancellationToken,
    ) -> Result<ResultsPage, RestError> {
        let mut path = format!("{}/results", self.job_path(id)?);
        let mut separator = '?';
        if let Some(locator) = locator {
            if locator.is_empty() || locator == "null" {
                return Err(RestError::Invalid(format!(
                    "query job {id}: `{locator}` is not a locator (the last page has none)"
                )));
            }
            path.push_str(&format!("?locator={}", percent_encode(locator)));
            separator = '&';
        }
        if max_records > 0 {
            path.push_str(&format!("{separator}maxRecords={max_records}"));
        }
        let call = Call {
            accept: "text/csv",
            ..Call::json(Method::GET, &path, None)
        };
        let answer = self.execute_for(&call, cancel).await?;
        let count = answer
            .header(NUMBER_OF_RECORDS_HEADER)
            .map(|n| {
                n.trim().parse::<u64>().map_err(|_| {
                    RestError::Protocol(format!(
                        "results of job {id}: {NUMBER_OF_RECORDS_HEADER} `{n}` is not a count"
                    ))
                })
            })
            .transpose()?;
        let locator = answer.header(LOCATOR_HEADER).map(str::to_owned);
        ResultsPage::parse(
            format!("job {id}"),
            answer.body,
            ColumnDelimiter::Comma,
            locator.as_deref(),
            count,
        )
    }

    /// `PATCH …/jobs/query/{id}` with `{"state": "Aborted"}`: the job as Salesforce then
    /// describes it.
    pub async fn abort_query_job(
        &self,
        id: &str,
        cancel: &CancellationToken,
    ) -> Result<QueryJob, RestError> {
        let path = self.job_path(id)?;
        let body = json!({"state": "Aborted"});
        let answer = self
            .job_call(Method::PATCH, &path, Some(&body), cancel)
            .await?;
        parse_job(&answer.body)
    }

    /// `DELETE …/jobs/query/{id}`: the job and its results are gone.
    pub async fn delete_query_job(
        &self,
        id: &str,
        cancel: &CancellationToken,
    ) -> Result<(), RestError> {
        let path = self.job_path(id)?;
        self.job_call(Method::DELETE, &path, None, cancel).await?;
        Ok(())
    }
}
