//! The state of the org's Bulk API 2.0 query jobs ([`BulkJobs`]): each job, its state machine
//! (`UploadComplete` → `InProgress` → `JobComplete` | `Failed` | `Aborted`) and results, the
//! rolling 24-hour allocations of query jobs and results, and the fault knobs. The HTTP
//! resources and the wire format are in `bulk.rs`, whose contract this follows.
//!
//! Contract: [`advance`] completes a job the first time it is looked at once its `InProgress`
//! time is over: the query runs then on the org's committed state (so the results are the org's
//! state when the job completed), rendered once by `bulk_csv`; a job the fault knob marked fails
//! instead (`retries` 15, "Retried more than 15 times": Bulk API 2.0 "Limits", "If you receive a
//! message that the API retried more than 15 times…"), and so does one whose results exceed
//! what is left of the rolling 24-hour results allocation.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::bulk_csv::{self, CsvResults, Dialect};
use crate::salesforce::sftime;
use crate::sim::ids::IdGenerator;
use crate::sim::org::Org;
use crate::sim::soql::Query;
use crate::sim::util::org_now;

/// Query jobs per rolling 24 hours ("Limits": 10,000).
pub(crate) const DAILY_QUERY_JOBS: u64 = 10_000;
/// Query results per rolling 24 hours, MB ("Limits": 1 TB; `DailyBulkV2QueryFileStorageMB`).
pub(crate) const DAILY_RESULTS_MB: u64 = 976_562;
const DAY: Duration = Duration::from_secs(24 * 3600);

/// A query job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    UploadComplete,
    InProgress,
    JobComplete,
    Failed,
    Aborted,
}

impl State {
    pub(super) fn name(self) -> &'static str {
        match self {
            State::UploadComplete => "UploadComplete",
            State::InProgress => "InProgress",
            State::JobComplete => "JobComplete",
            State::Failed => "Failed",
            State::Aborted => "Aborted",
        }
    }

    pub(super) fn finished(self) -> bool {
        matches!(self, State::JobComplete | State::Failed | State::Aborted)
    }
}

#[derive(Debug)]
pub(super) struct Job {
    pub(super) id: String,
    pub(super) operation: &'static str,
    pub(super) query: Query,
    pub(super) created_by: String,
    pub(super) created: i64,
    pub(super) modstamp: i64,
    pub(super) state: State,
    pub(super) version: String,
    pub(super) line_ending: &'static str,
    pub(super) delimiter: String,
    pub(super) dialect: Dialect,
    pub(super) ready_at: Instant,
    pub(super) fail: bool,
    pub(super) retries: u32,
    pub(super) processing_ms: u64,
    pub(super) error: Option<String>,
    pub(super) results: Option<Arc<CsvResults>>,
}

/// The org's Bulk API 2.0 query jobs, their allocations and fault knobs.
#[derive(Debug)]
pub(crate) struct BulkJobs {
    pub(super) jobs: Vec<Job>,
    pub(super) ids: IdGenerator,
    /// How long a new job stays `InProgress`.
    pub in_progress: Duration,
    /// Jobs still to fail (`Failed`, "Retried more than 15 times").
    pub fail_next: usize,
    /// Query jobs allowed per rolling 24 hours.
    pub job_limit: u64,
    /// Results allowed per rolling 24 hours, bytes.
    pub results_limit: u64,
    pub(super) created: VecDeque<Instant>,
    pub(super) produced: VecDeque<(Instant, u64)>,
}

impl Default for BulkJobs {
    fn default() -> Self {
        Self {
            jobs: Vec::new(),
            ids: IdGenerator::new("750"),
            in_progress: Duration::ZERO,
            fail_next: 0,
            job_limit: DAILY_QUERY_JOBS,
            results_limit: DAILY_RESULTS_MB * 1024 * 1024,
            created: VecDeque::new(),
            produced: VecDeque::new(),
        }
    }
}

impl BulkJobs {
    pub(super) fn expire(&mut self) {
        let now = Instant::now();
        while self
            .created
            .front()
            .is_some_and(|t| now.duration_since(*t) >= DAY)
        {
            self.created.pop_front();
        }
        while self
            .produced
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= DAY)
        {
            self.produced.pop_front();
        }
    }

    pub(super) fn produced_bytes(&self) -> u64 {
        self.produced.iter().map(|(_, b)| b).sum()
    }

    /// `DailyBulkV2QueryJobs` and `DailyBulkV2QueryFileStorageMB` of `GET /limits`.
    pub(crate) fn limits(&mut self) -> (Value, Value) {
        self.expire();
        let mb = 1024 * 1024;
        let jobs = json!({"Max": self.job_limit, "Remaining": self.job_limit.saturating_sub(self.created.len() as u64)});
        let storage = json!({"Max": self.results_limit / mb, "Remaining": self.results_limit.saturating_sub(self.produced_bytes()) / mb});
        (jobs, storage)
    }

    pub(super) fn find(&mut self, id: &str) -> Option<&mut Job> {
        self.jobs.iter_mut().find(|j| j.id == id)
    }
}

/// The job as the API describes it (`full`: with the counts of "Get Information About a
/// Query Job").
pub(super) fn job_info(job: &Job, full: bool) -> Value {
    let mut info = json!({
        "id": job.id,
        "operation": job.operation,
        "object": job.query.object,
        "createdById": job.created_by,
        "createdDate": sftime::format_datetime(job.created),
        "systemModstamp": sftime::format_datetime(job.modstamp),
        "state": job.state.name(),
        "concurrencyMode": "Parallel",
        "contentType": "CSV",
        "apiVersion": job.version.parse::<f64>().unwrap_or(0.0),
        "lineEnding": job.line_ending,
        "columnDelimiter": job.delimiter,
    });
    if full {
        info["jobType"] = json!("V2Query");
        info["numberRecordsProcessed"] = json!(job.results.as_ref().map_or(0, |r| r.len()));
        info["retries"] = json!(job.retries);
        info["totalProcessingTime"] = json!(job.processing_ms);
        if let Some(e) = &job.error {
            info["errorMessage"] = json!(e);
        }
    }
    info
}

/// Completes (or fails) a job whose time has come; returns the result bytes it produced.
pub(super) fn advance(job: &mut Job, org: &Org, results_left: u64) -> u64 {
    if job.state.finished() {
        return 0;
    }
    if Instant::now() < job.ready_at {
        job.state = State::InProgress;
        return 0;
    }
    let started = Instant::now();
    job.modstamp = org_now();
    if job.fail {
        job.state = State::Failed;
        job.retries = 15;
        job.error = Some("Retried more than 15 times".to_owned());
        return 0;
    }
    let Some(meta) = org.meta(&job.query.object) else {
        job.state = State::Failed;
        job.error = Some(format!(
            "sObject type '{}' is not supported",
            job.query.object
        ));
        return 0;
    };
    let rows = job.query.run_committed(org);
    let results = bulk_csv::render(&meta, &job.query.fields, &rows, job.dialect);
    let size = results.size() as u64;
    job.processing_ms = started.elapsed().as_millis() as u64;
    if size > results_left {
        job.state = State::Failed;
        job.error = Some(
            "The query results exceed the org's remaining Bulk API 2.0 query results allocation for the last 24 hours (DailyBulkV2QueryFileStorageMB)"
                .to_owned(),
        );
        return 0;
    }
    job.results = Some(Arc::new(results));
    job.state = State::JobComplete;
    size
}
