//! Bulk API 2.0 query jobs under `/services/data/v{ver}/jobs/query` ([`BulkJobs`] holds them):
//! create, job info, results by locator, abort, delete and list.
//!
//! Contract (Bulk API 2.0 and Bulk API Developer Guide, "Bulk API 2.0 Query": "Create a Query
//! Job", "Get Information About a Query Job", "Get Results for a Query Job", "Abort a Query
//! Job", "Delete a Query Job", "Get Information About All Query Jobs", "Understanding Bulk API
//! 2.0 Query", "Limits"):
//! * `POST jobs/query` with `{"operation": "query"|"queryAll", "query", "contentType": "CSV",
//!   "columnDelimiter", "lineEnding"}` answers 200 with the job (`id` 750…, `operation`,
//!   `object`, `createdById`, `createdDate`, `systemModstamp`, `state` `UploadComplete`,
//!   `concurrencyMode` `Parallel`, `contentType` `CSV`, `apiVersion` (a number), `lineEnding`,
//!   `columnDelimiter`). Refused at create (400), in Salesforce's error array: a body that is not
//!   a job (`INVALIDJOB`: unknown operation, content type, delimiter or line ending, no query —
//!   the code is chosen, the docs are silent), SOQL errors (the REST codes: `MALFORMED_QUERY`,
//!   `INVALID_FIELD`, …), what Bulk 2.0 does not support ("Understanding Bulk API 2.0 Query":
//!   `OFFSET`, aggregate functions such as `COUNT()`, compound address or geolocation fields;
//!   `FUNCTIONALITY_NOT_ENABLED`, the message for compounds being Salesforce's Bulk query
//!   message "Selecting compound data not supported in Bulk Query"), and past the rolling 24-hour
//!   allocation of query jobs (10,000, `DailyBulkV2QueryJobs`; 400 `LIMIT_EXCEEDED`, chosen).
//! * `GET jobs/query/{id}`: the job with `jobType` `V2Query`, `numberRecordsProcessed`,
//!   `retries`, `totalProcessingTime` and, when `Failed`, `errorMessage`. A job stays
//!   `InProgress` for [`BulkJobs::in_progress`] after its creation (a knob; 0 by default), then
//!   completes the first time it is looked at: the query runs then, on the org's committed state
//!   at that moment (the results are the org's state when the job completed, not when it was
//!   created), and the CSV is rendered once (`bulk_csv.rs`). A job the fault knob marked fails
//!   instead: `Failed`, `retries` 15, `errorMessage` "Retried more than 15 times" (the limit
//!   "Limits" documents: "If you receive a message that the API retried more than 15 times…").
//!   Results past the rolling 24-hour results allocation (`DailyBulkV2QueryFileStorageMB`,
//!   1 TB; a knob lowers it) fail the job the same way with a message saying so.
//! * `GET jobs/query/{id}/results[?locator=&maxRecords=]`: `text/csv`, at most `maxRecords`
//!   records (a positive integer, else 400 `INVALIDREQUEST`, chosen; without it, at most
//!   100,000: the docs only say "as many as can be listed"), headers `Sforce-NumberOfRecords`
//!   and `Sforce-Locator` (the next page's locator, the string `null` on the last page).
//!   Locators are opaque: here the base64 of the next record's index (`MTAwMDA=` for 10000, as
//!   public captures show them); a locator that is not one of this job's is 400
//!   `INVALIDREQUEST` (chosen). A locator stays valid as long as the job exists. Results of a
//!   job that is not `JobComplete`: 400 `INVALIDJOBSTATE` (chosen). Another API version than the
//!   job's: 409 (documented), `INVALIDREQUEST`.
//! * `PATCH jobs/query/{id}` `{"state": "Aborted"}` aborts a job not yet finished (the job
//!   info, state `Aborted`); a finished one or another state: 400 `INVALIDJOBSTATE` (chosen).
//!   `DELETE jobs/query/{id}`: 204, the job and its results gone. Unknown job: 404 `NOT_FOUND`.
//!   `GET jobs/query`: `{"done": true, "records": [job, …], "nextRecordsUrl": null}`.
//! * Every call counts against the daily API allocation like any REST call (see `limits`).

use std::time::Instant;

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use serde_json::{Value, json};

use super::bulk_csv::Dialect;
use super::bulk_jobs::{Job, State, advance, job_info};
use super::call::{Call, Exec, query_param};
use super::reply::Reply;
use crate::sim::soql::Query;
use crate::sim::util::{lock, org_now};

/// Records per results page when the client gives no `maxRecords` (chosen).
pub(crate) const DEFAULT_PAGE_RECORDS: usize = 100_000;

fn bad(status: StatusCode, code: &str, message: &str) -> Reply {
    Reply::json(status, json!([{ "errorCode": code, "message": message }]))
}

/// The next record's index a locator names (the base64 of its decimal text).
fn decode_locator(locator: &str) -> Option<usize> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(locator)
        .ok()?;
    std::str::from_utf8(&bytes).ok()?.parse().ok()
}

fn encode_locator(index: usize) -> String {
    base64::engine::general_purpose::STANDARD.encode(index.to_string())
}

impl Exec<'_> {
    /// Routes `jobs/query…` (`rest` after `jobs/query`).
    pub(super) fn bulk_query(&mut self, call: &Call, rest: &[&str]) -> Reply {
        let m = call.method;
        match rest {
            [] if *m == Method::POST => self.create_job(call),
            [] if *m == Method::GET => self.list_jobs(),
            [] => Reply::method_not_allowed(m, "GET,POST"),
            [id] => match *m {
                Method::GET => {
                    self.with_job(id, |job| Reply::json(StatusCode::OK, job_info(job, true)))
                }
                Method::PATCH => self.abort_job(call, id),
                Method::DELETE => {
                    let mut bulk = lock(&self.shared.bulk);
                    let before = bulk.jobs.len();
                    bulk.jobs.retain(|j| j.id != *id);
                    if bulk.jobs.len() == before {
                        Reply::not_found()
                    } else {
                        Reply::no_content()
                    }
                }
                _ => Reply::method_not_allowed(m, "GET,PATCH,DELETE"),
            },
            [id, "results"] if *m == Method::GET => self.job_results(call, id),
            [_, "results"] => Reply::method_not_allowed(m, "GET"),
            _ => Reply::not_found(),
        }
    }

    fn create_job(&mut self, call: &Call) -> Reply {
        let body = match call.body.json() {
            Ok(b) => b,
            Err(r) => return r,
        };
        let invalid = |msg: &str| bad(StatusCode::BAD_REQUEST, "INVALIDJOB", msg);
        let text = |key: &str| body.get(key).and_then(Value::as_str);
        let operation = match text("operation") {
            Some("query") => "query",
            Some("queryAll") => "queryAll",
            Some(other) => return invalid(&format!("Invalid value for operation: {other}")),
            None => return invalid("operation is required: query or queryAll"),
        };
        let Some(soql) = text("query").filter(|q| !q.trim().is_empty()) else {
            return invalid("query is required");
        };
        match text("contentType") {
            None | Some("CSV") => {}
            Some(other) => return invalid(&format!("Invalid value for contentType: {other}")),
        }
        let delimiter = text("columnDelimiter").unwrap_or("COMMA").to_owned();
        let Some(delim) = Dialect::delimiter_named(&delimiter) else {
            return invalid(&format!("Invalid value for columnDelimiter: {delimiter}"));
        };
        let line_ending = match text("lineEnding") {
            None | Some("LF") => "LF",
            Some("CRLF") => "CRLF",
            Some(other) => return invalid(&format!("Invalid value for lineEnding: {other}")),
        };
        let mut query = match Query::parse(soql, &self.org) {
            Ok(q) => q,
            Err(e) => return bad(StatusCode::BAD_REQUEST, e.code(), &e.to_string()),
        };
        let unsupported =
            |msg: &str| bad(StatusCode::BAD_REQUEST, "FUNCTIONALITY_NOT_ENABLED", msg);
        if query.count {
            return unsupported(
                "Aggregate functions such as COUNT() are not supported in Bulk Query",
            );
        }
        if query.offset.is_some() {
            return unsupported("OFFSET is not supported in Bulk Query");
        }
        if query.compound_selected(&self.org).is_some() {
            return unsupported("Selecting compound data not supported in Bulk Query");
        }
        query.all_rows = operation == "queryAll";
        let mut bulk = lock(&self.shared.bulk);
        bulk.expire();
        if bulk.created.len() as u64 >= bulk.job_limit {
            let limit = bulk.job_limit;
            return bad(
                StatusCode::BAD_REQUEST,
                "LIMIT_EXCEEDED",
                &format!(
                    "You have reached the maximum number of Bulk API 2.0 query jobs ({limit}) in a 24-hour period"
                ),
            );
        }
        bulk.created.push_back(Instant::now());
        let fail = bulk.fail_next > 0;
        bulk.fail_next = bulk.fail_next.saturating_sub(1);
        let now = org_now();
        let job = Job {
            id: bulk.ids.next_id(),
            operation,
            query,
            created_by: self.user.clone(),
            created: now,
            modstamp: now,
            state: State::UploadComplete,
            version: call.version.to_owned(),
            line_ending,
            delimiter,
            dialect: Dialect {
                delimiter: delim,
                crlf: line_ending == "CRLF",
            },
            ready_at: Instant::now() + bulk.in_progress,
            fail,
            retries: 0,
            processing_ms: 0,
            error: None,
            results: None,
        };
        let info = job_info(&job, false);
        bulk.jobs.push(job);
        Reply::json(StatusCode::OK, info)
    }

    /// Moves a job along (completing it when its time has come), then answers with `f`.
    fn with_job(&mut self, id: &str, f: impl FnOnce(&Job) -> Reply) -> Reply {
        let mut bulk = lock(&self.shared.bulk);
        bulk.expire();
        let produced = bulk.produced_bytes();
        let results_limit = bulk.results_limit;
        let Some(job) = bulk.find(id) else {
            return Reply::not_found();
        };
        let added = advance(job, &self.org, results_limit.saturating_sub(produced));
        let reply = f(job);
        if added > 0 {
            bulk.produced.push_back((Instant::now(), added));
        }
        reply
    }

    fn list_jobs(&mut self) -> Reply {
        let ids: Vec<String> = lock(&self.shared.bulk)
            .jobs
            .iter()
            .map(|j| j.id.clone())
            .collect();
        let mut records = Vec::new();
        for id in ids {
            self.with_job(&id, |job| {
                records.push(job_info(job, true));
                Reply::no_content()
            });
        }
        Reply::json(
            StatusCode::OK,
            json!({"done": true, "records": records, "nextRecordsUrl": null}),
        )
    }

    fn abort_job(&mut self, call: &Call, id: &str) -> Reply {
        let body = match call.body.json() {
            Ok(b) => b,
            Err(r) => return r,
        };
        let wanted = body.get("state").and_then(Value::as_str).unwrap_or("");
        let mut bulk = lock(&self.shared.bulk);
        let Some(job) = bulk.find(id) else {
            return Reply::not_found();
        };
        if wanted != "Aborted" {
            return bad(
                StatusCode::BAD_REQUEST,
                "INVALIDJOBSTATE",
                &format!("A query job can only be set to Aborted, not '{wanted}'"),
            );
        }
        if job.state.finished() {
            return bad(
                StatusCode::BAD_REQUEST,
                "INVALIDJOBSTATE",
                &format!(
                    "Job {id} is already {} and can't be aborted",
                    job.state.name()
                ),
            );
        }
        job.state = State::Aborted;
        job.modstamp = org_now();
        Reply::json(StatusCode::OK, job_info(job, true))
    }

    fn job_results(&mut self, call: &Call, id: &str) -> Reply {
        let max = match query_param(call.query, "maxRecords") {
            None => DEFAULT_PAGE_RECORDS,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return bad(
                        StatusCode::BAD_REQUEST,
                        "INVALIDREQUEST",
                        &format!("maxRecords must be a positive integer, not '{v}'"),
                    );
                }
            },
        };
        let locator = query_param(call.query, "locator").filter(|l| !l.is_empty());
        let version = call.version.to_owned();
        self.with_job(id, |job| {
            if job.version != version {
                return bad(
                    StatusCode::CONFLICT,
                    "INVALIDREQUEST",
                    &format!("The job was created with API version {}: get its results with the same version", job.version),
                );
            }
            let Some(results) = job.results.as_ref().filter(|_| job.state == State::JobComplete) else {
                return bad(
                    StatusCode::BAD_REQUEST,
                    "INVALIDJOBSTATE",
                    &format!("Job {} is {}: results are available once it is JobComplete", job.id, job.state.name()),
                );
            };
            let from = match &locator {
                None => 0,
                Some(l) => match decode_locator(l).filter(|i| *i > 0 && *i < results.len()) {
                    Some(i) => i,
                    None => {
                        return bad(StatusCode::BAD_REQUEST, "INVALIDREQUEST", &format!("Invalid locator: {l}"));
                    }
                },
            };
            let to = from.saturating_add(max).min(results.len());
            let mut reply = Reply::raw(StatusCode::OK, "text/csv", results.page(from, to));
            let next = if to < results.len() { encode_locator(to) } else { "null".to_owned() };
            reply.headers.push(("sforce-locator", next));
            reply.headers.push(("sforce-numberofrecords", (to - from).to_string()));
            reply
        })
    }
}
