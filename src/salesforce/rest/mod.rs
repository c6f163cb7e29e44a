//! The Salesforce REST client of the write-back sink, the gap re-reads, the snapshots and the
//! resyncs: Composite calls over sObject Collections and queries, SOQL pages, Bulk API 2.0 query
//! jobs and the replication API, with retries, re-login, and a guard that keeps the org's daily
//! API allowance above a reserve.
//!
//! Contract:
//! * [`RestClient::composite`] sends one `POST /services/data/v{ver}/composite` with
//!   `allOrNone: false` and `collateSubrequests: false` (subrequests run in order; one failing
//!   does not roll back the others). It checks Salesforce's limits first ([`validate`](composite::validate): ≤ 25
//!   subrequests, ≤ 5 of them collections or queries, 1–200 records per collection, 1–2,000 ids
//!   per retrieve) and answers
//!   one [`SubResponse`] per [`SubRequest`], in input order, each collection's `SaveResult`s in
//!   record order. A query whose result is not `done` is followed through `nextRecordsUrl` (one
//!   more API call per page).
//! * [`RestClient::describe`] reads an object's describe (`GET …/sobjects/{Object}/describe`):
//!   the fields, their types, compounds and whether the user may write them.
//! * [`RestClient::query`] / [`RestClient::query_all`] / [`RestClient::query_more`] read a query
//!   one page at a time (the source's gap re-reads and small snapshots stream large results
//!   through them; `queryAll` includes deleted records); [`RestClient::count`] answers a
//!   `SELECT COUNT()`'s `totalSize`; guarded and retried alike.
//! * Bulk API 2.0 query jobs ([`bulk`]): [`RestClient::create_query_job`] (`query` or
//!   `queryAll`, CSV, comma, LF), [`RestClient::query_job`], [`RestClient::wait_for_query_job`]
//!   (polls with a doubling wait until `JobComplete`; `Failed` / `Aborted` is
//!   [`RestError::JobFailed`], never retried by the client: [`crate::retry::classify_query_job`]
//!   says what the caller does), [`RestClient::query_job_results`] (one CSV page by locator and
//!   `maxRecords`, read as a [`ResultsPage`] with [`bulk_csv`]'s rules: nulls, quotes, line
//!   endings, the locator `null`), [`RestClient::abort_query_job`],
//!   [`RestClient::delete_query_job`].
//! * The replication API ([`replication`]): [`RestClient::deleted_records`] and
//!   [`RestClient::updated_records`] over a window given in epoch milliseconds, sent as ISO 8601
//!   UTC to the second, its documented rules checked before the call.
//! * Every request carries `Authorization: Bearer <token>` and `Sforce-Call-Options:
//!   client=<tag>`. The tag is what lands in CDC `changeOrigin` (echo detection). It is set on
//!   the top-level request only, not in the subrequests' `httpHeaders`: Salesforce's docs list
//!   Call Options for sObject Rows, Query and Bulk but not for Composite (open question, see the
//!   connector reference §3.4), and subrequests that carry headers are never collated. If a real
//!   org turns out to need it per subrequest, [`RestClient::with_subrequest_call_options`] adds it.
//! * Retries (whole call, capped exponential backoff with full jitter, until `cancel`):
//!   transport errors, 408/429/5xx, 403 `REQUEST_LIMIT_EXCEEDED` (which also marks the
//!   [`LimitGuard`] exhausted, so the call waits for the allowance), 401 (log in again, replace
//!   the [`SessionHandle`](crate::salesforce::auth::SessionHandle)'s session, retry). Classification is [`crate::retry::classify_http`].
//!   Any other non-2xx answer of the whole call is [`RestError::Rejected`] with Salesforce's error
//!   array. A request already sent is never abandoned on cancel (the HTTP client's timeout bounds
//!   it); cancel ends waits and backoffs with [`RestError::Cancelled`].
//! * Retrying a whole call whose response was lost (a timeout after Salesforce committed) sends
//!   its writes twice: harmless for Update, Upsert and Delete, but a Create can create the record
//!   again. Callers that cannot accept that should write through Upsert on an external id.
//! * [`LimitGuard`] learns the allowance from every response's `Sforce-Limit-Info:
//!   api-usage=USED/MAX` header and from `GET /limits` (`DailyApiRequests`). Before each guarded
//!   call: when `max - used <= reserve` the call waits (the guard is *paused*), polling `/limits`
//!   every `poll_interval` (one poll at a time across all workers sharing the guard; each poll is
//!   itself an API call that Salesforce counts) until the remaining allowance is above the
//!   reserve again. A call costs 1, so the sink never spends the reserve itself.
//!
//! Files: [`client`] (the client: one request, retries, re-login, the hold on the guard; the
//! answer's headers and a non-JSON `Accept` for the calls that need them),
//! [`composite`] (Composite calls over sObject Collections and their results), [`query`] (query
//! pages, `queryAll`, `COUNT()`), [`describe`] (an object's describe), [`bulk`] (Bulk API 2.0
//! query jobs), [`bulk_csv`] (a results page and its CSV reader), [`replication`] (deleted and
//! updated records), [`limits`] (the [`LimitGuard`], `Sforce-Limit-Info`, `/limits`),
//! [`errors`] (the error types and Salesforce's error shapes).

mod bulk;
mod bulk_csv;
mod client;
mod composite;
mod describe;
mod errors;
mod limits;
mod query;
mod replication;

pub use bulk::{BulkOperation, JobState, LOCATOR_HEADER, NUMBER_OF_RECORDS_HEADER, QueryJob};
pub use bulk_csv::{ColumnDelimiter, ResultsPage, Row};
pub use client::RestClient;
pub use composite::SubRequest;
pub(crate) use composite::{MAX_RETRIEVE_IDS, SaveResult, SubResponse, install_call_probe};
pub use describe::{FieldDescribe, SObjectDescribe};
pub(crate) use describe::{ObjectFields, child_name};
pub(crate) use errors::UNREADABLE_RESPONSE;
pub use errors::{ApiError, RestError};
pub use limits::{ApiUsage, LimitGuard, Reserve};
pub use replication::{DeletedRecords, UpdatedRecords};

#[cfg(test)]
mod bulk_tests;
#[cfg(test)]
mod tests;
