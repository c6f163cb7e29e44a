//! Writes one batch to Salesforce and finishes every record of it exactly once: written,
//! recorded as a conflict, or dead-lettered.
//!
//! Contract:
//! * Lookups first ([`plan::lookups`]: sObject Collections retrieves of up to 2,000 Ids, SOQL
//!   queries for External Ids), packed five per Composite call; then writes ([`plan::chunks`]),
//!   five collections of up to 200 per Composite call. A full batch of 10,000 updates by Id of
//!   one object, last-write-wins on, costs 1 read call + 10 write calls (≈ 909 records per
//!   call); 1,000 cost 1 + 1.
//! * A retrieve refused with a 4xx (a whole-call 400 included) is read again as `Id IN (…)`
//!   queries of 200 ([`plan::as_queries`]); a query refused that way dead-letters the records it
//!   asked for (stage `sink.lookup`). Retryable failures are retried up to `max_attempts`.
//! * Per-record results: success finishes the record; a delete of a record already deleted
//!   (`ENTITY_IS_DELETED`) is success (repeating a delete is harmless); a retryable error
//!   ([`crate::retry::record_error_is_retryable`]) is retried in a later round with backoff and
//!   jitter, up to `max_attempts`; any other error dead-letters the record with its status code,
//!   message and fields.
//! * A collection refused as a whole (HTTP 400: a bad field name or value rejects every record of
//!   it) does not condemn the others: records that carry a field the error names are
//!   dead-lettered and the rest retried; when no field is named the collection is split in
//!   halves until the culprit stands alone.
//! * A whole Composite call refused with a 4xx (after the client's own retries) dead-letters the
//!   records it carried. Transport, auth and protocol failures end the batch with an error: its
//!   unfinished records are never committed, so the sink repeats them after restarting.
//! * Conflicts go to the conflicts topic with both timestamps; dead letters carry the original
//!   key, value and headers plus `forcebridge.error.*` and `forcebridge.source.*` headers.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::message::{OpKind, WriteOp};
use super::plan::{self, COMPOSITE_COLLECTIONS, Chunk, Current, Decision, Write};
use crate::kafka::ack::AckToken;
use crate::kafka::{KafkaError, OutgoingRecord, Producer};
use crate::ops::telemetry::SinkStats;
use crate::retry::{Backoff, sleep_or_cancel};
use crate::salesforce::rest::{ApiError, RestClient, RestError, SubRequest, SubResponse};

/// Where a record came from, kept to dead-letter or report it.
#[derive(Debug, Clone)]
pub struct Origin {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// One record of a batch.
#[derive(Debug)]
pub struct Item {
    pub op: WriteOp,
    pub origin: Origin,
    pub token: AckToken,
}

/// Why a batch stopped before finishing its records.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Shutdown.
    #[error("cancelled")]
    Cancelled,
    /// Salesforce could not be reached or answered in a way retrying cannot fix.
    #[error(transparent)]
    Rest(#[from] RestError),
    /// A dead-letter or conflict record could not be enqueued.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// Salesforce's answer does not match the request.
    #[error("unexpected Composite response: {0}")]
    Protocol(String),
}

/// A reason to dead-letter.
#[derive(Debug, Clone)]
pub struct Failure {
    /// `sink.message`, `sink.lookup` or `sink.write`.
    pub stage: &'static str,
    pub code: String,
    pub message: String,
    pub fields: Vec<String>,
    pub attempts: u32,
}

impl Failure {
    fn from_api(stage: &'static str, e: &ApiError, attempts: u32) -> Self {
        Self {
            stage,
            code: e.code.clone(),
            message: e.message.clone(),
            fields: e.fields.clone(),
            attempts,
        }
    }
}

/// Writes dead letters and conflicts.
#[derive(Clone)]
pub struct Reporter {
    pub producer: Producer,
    pub dead_letter_topic: String,
    pub conflicts_topic: String,
    pub stats: Arc<SinkStats>,
}

fn source_headers(origin: &Origin) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "forcebridge.source.topic",
            origin.topic.clone().into_bytes(),
        ),
        (
            "forcebridge.source.partition",
            origin.partition.to_string().into_bytes(),
        ),
        (
            "forcebridge.source.offset",
            origin.offset.to_string().into_bytes(),
        ),
    ]
}

impl Reporter {
    async fn send(
        &self,
        topic: &str,
        origin: &Origin,
        extra: Vec<(&'static str, Vec<u8>)>,
        token: AckToken,
    ) -> Result<(), KafkaError> {
        let mut headers: Vec<(&str, &[u8])> = origin
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        headers.extend(extra.iter().map(|(k, v)| (*k, v.as_slice())));
        let record = OutgoingRecord {
            topic,
            key: origin.key.as_deref(),
            value: origin.value.as_deref(),
            headers: &headers,
        };
        self.producer.send(record, token).await
    }

    /// Sends the original record to the dead-letter topic with the reason in headers.
    pub async fn dead_letter(
        &self,
        origin: &Origin,
        failure: &Failure,
        token: AckToken,
    ) -> Result<(), KafkaError> {
        warn!(
            topic = %origin.topic,
            partition = origin.partition,
            offset = origin.offset,
            stage = failure.stage,
            code = %failure.code,
            message = %failure.message,
            "write-back record sent to the dead-letter topic"
        );
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        let reason = if failure.fields.is_empty() {
            format!("{}: {}", failure.code, failure.message)
        } else {
            format!(
                "{}: {} (fields: {})",
                failure.code,
                failure.message,
                failure.fields.join(", ")
            )
        };
        let mut extra = vec![
            ("forcebridge.error.stage", failure.stage.as_bytes().to_vec()),
            ("forcebridge.error.reason", reason.into_bytes()),
            (
                "forcebridge.error.status_code",
                failure.code.clone().into_bytes(),
            ),
            (
                "forcebridge.error.message",
                failure.message.clone().into_bytes(),
            ),
            (
                "forcebridge.error.fields",
                failure.fields.join(",").into_bytes(),
            ),
            (
                "forcebridge.error.attempts",
                failure.attempts.to_string().into_bytes(),
            ),
        ];
        extra.extend(source_headers(origin));
        self.send(&self.dead_letter_topic, origin, extra, token)
            .await
    }

    /// Sends the original record to the conflicts topic with both timestamps in headers.
    async fn conflict(
        &self,
        origin: &Origin,
        current: &Current,
        timestamp: i64,
        token: AckToken,
    ) -> Result<(), KafkaError> {
        debug!(record_id = %current.id, "write older than Salesforce's record: conflict");
        self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
        let mut extra = vec![
            (
                "forcebridge.conflict.record_id",
                current.id.clone().into_bytes(),
            ),
            (
                "forcebridge.conflict.salesforce_modstamp",
                current
                    .modstamp
                    .map(crate::salesforce::sftime::format_datetime)
                    .unwrap_or_default()
                    .into_bytes(),
            ),
            (
                "forcebridge.conflict.record_timestamp",
                crate::salesforce::sftime::format_datetime(timestamp).into_bytes(),
            ),
            (
                "forcebridge.conflict.last_modified_by",
                current
                    .last_modified_by
                    .clone()
                    .unwrap_or_default()
                    .into_bytes(),
            ),
        ];
        extra.extend(source_headers(origin));
        self.send(&self.conflicts_topic, origin, extra, token).await
    }
}

/// Settings and clients of the writers.
#[derive(Clone)]
pub struct Writer {
    pub rest: RestClient,
    pub reporter: Reporter,
    pub last_write_wins: bool,
    /// The integration user: its own earlier writes never count as conflicts.
    pub own_user: Option<String>,
    pub max_attempts: u32,
    pub initial_backoff: std::time::Duration,
    pub max_backoff: std::time::Duration,
}

/// A write in progress.
struct Slot {
    origin: Origin,
    token: Option<AckToken>,
    write: Write,
    attempts: u32,
    /// Writes of different groups never share a collection (isolation after a whole-collection
    /// refusal).
    group: u64,
    last_error: Option<ApiError>,
}

impl Writer {
    fn finish_ok(&self, token: AckToken) {
        self.reporter.stats.written.fetch_add(1, Ordering::Relaxed);
        token.ack(Ok(()));
    }

    async fn composite(
        &self,
        requests: &[SubRequest],
        cancel: &CancellationToken,
    ) -> Result<Result<Vec<SubResponse>, ApiError>, WriteError> {
        self.reporter
            .stats
            .composite_calls
            .fetch_add(1, Ordering::Relaxed);
        match self.rest.composite(requests, cancel).await {
            Ok(responses) if responses.len() == requests.len() => Ok(Ok(responses)),
            Ok(responses) => Err(WriteError::Protocol(format!(
                "{} responses to {} subrequests",
                responses.len(),
                requests.len()
            ))),
            Err(RestError::Cancelled) => Err(WriteError::Cancelled),
            // A 400 is about the request's content: its records are dead-lettered. Anything else
            // (401 with a token that cannot be renewed, 403 permissions, 404 API version) is
            // about the connection, not the records: the batch fails and is repeated later.
            Err(RestError::Rejected {
                status: 400,
                errors,
            }) => Ok(Err(errors.into_iter().next().unwrap_or(ApiError {
                code: "HTTP_400".into(),
                message: "the Composite request was refused".into(),
                fields: Vec::new(),
            }))),
            Err(other) => Err(other.into()),
        }
    }

    /// Writes `items` (at most one per record, see the batcher) and finishes each of them.
    pub async fn write_batch(
        &self,
        items: Vec<Item>,
        cancel: &CancellationToken,
    ) -> Result<(), WriteError> {
        self.reporter.stats.batches.fetch_add(1, Ordering::Relaxed);
        let lww = self.last_write_wins;

        // 1. Read what the batch needs to know about Salesforce's current records. Retryable
        // query failures are retried; a query Salesforce refuses dead-letters the records whose
        // values it asked for.
        let mut pending: Vec<plan::Lookup> = plan::lookups(items.iter().map(|i| &i.op), lww);
        let mut found: HashMap<String, Current> = HashMap::new();
        let mut failed_keys: HashMap<String, ApiError> = HashMap::new();
        let mut attempts = 0;
        let mut backoff = Backoff::new(self.initial_backoff, self.max_backoff);
        // A lookup refused for its content: a retrieve is read again as queries of 200 Ids (so
        // one bad Id costs one query's records); a query's records are dead-lettered.
        let refused = |lookup: &plan::Lookup,
                       e: &ApiError,
                       fallback: &mut Vec<plan::Lookup>,
                       failed_keys: &mut HashMap<String, ApiError>| {
            let queries = plan::as_queries(lookup);
            if queries.is_empty() {
                for k in &lookup.keys {
                    failed_keys.insert(k.clone(), e.clone());
                }
            } else {
                debug!(code = %e.code, ids = lookup.keys.len(), "retrieve refused; reading its records with queries");
                fallback.extend(queries);
            }
        };
        while !pending.is_empty() {
            let mut again: Vec<plan::Lookup> = Vec::new();
            let mut fallback: Vec<plan::Lookup> = Vec::new();
            for call in pending.chunks(COMPOSITE_COLLECTIONS) {
                let requests: Vec<SubRequest> = call.iter().map(|l| l.request.clone()).collect();
                let responses = match self.composite(&requests, cancel).await? {
                    Ok(r) => r,
                    Err(e) => {
                        for l in call {
                            refused(l, &e, &mut fallback, &mut failed_keys);
                        }
                        continue;
                    }
                };
                for (lookup, response) in call.iter().zip(responses) {
                    match response {
                        SubResponse::Query { records } => {
                            plan::index_results(lookup, &records, &mut found);
                        }
                        SubResponse::Retrieved { records } => {
                            let records: Vec<_> = records.into_iter().flatten().collect();
                            plan::index_results(lookup, &records, &mut found);
                        }
                        SubResponse::Failed {
                            errors,
                            http_status,
                        } => {
                            let e = errors.into_iter().next().unwrap_or(ApiError {
                                code: format!("HTTP_{http_status}"),
                                message: "the lookup failed".into(),
                                fields: Vec::new(),
                            });
                            if http_status < 300 {
                                return Err(WriteError::Protocol(format!(
                                    "unreadable lookup result: {}",
                                    e.message
                                )));
                            }
                            if http_status >= 500
                                || crate::retry::record_error_is_retryable(&e.code)
                            {
                                again.push(lookup.clone());
                            } else {
                                refused(lookup, &e, &mut fallback, &mut failed_keys);
                            }
                        }
                        SubResponse::Saved(_) => {
                            return Err(WriteError::Protocol(
                                "save results in answer to a lookup".into(),
                            ));
                        }
                    }
                }
            }
            if !again.is_empty() {
                attempts += 1;
                if attempts >= self.max_attempts {
                    return Err(WriteError::Protocol(format!(
                        "{} lookups still failing after {attempts} attempts",
                        again.len()
                    )));
                }
                if !sleep_or_cancel(backoff.next_delay(), cancel).await {
                    return Err(WriteError::Cancelled);
                }
            }
            again.extend(fallback);
            pending = again;
        }

        // 2. Decide each record.
        let mut slots: Vec<Slot> = Vec::with_capacity(items.len());
        for item in items {
            if let Some(e) = plan::op_lookup_key(&item.op).and_then(|k| failed_keys.get(&k)) {
                let failure = Failure::from_api("sink.lookup", e, 0);
                self.reporter
                    .dead_letter(&item.origin, &failure, item.token)
                    .await?;
                continue;
            }
            match plan::decide(&item.op, &found, lww, self.own_user.as_deref()) {
                Decision::Write(write) => slots.push(Slot {
                    origin: item.origin,
                    token: Some(item.token),
                    write,
                    attempts: 0,
                    group: 0,
                    last_error: None,
                }),
                Decision::Conflict { current, timestamp } => {
                    self.reporter
                        .conflict(&item.origin, &current, timestamp, item.token)
                        .await?;
                }
                Decision::AlreadyAbsent => self.finish_ok(item.token),
                Decision::NotFound { field, value } => {
                    let failure = Failure {
                        stage: "sink.lookup",
                        code: "NOT_FOUND".into(),
                        message: format!("no {} record has {field} = '{value}'", item.op.object),
                        fields: vec![field],
                        attempts: 0,
                    };
                    self.reporter
                        .dead_letter(&item.origin, &failure, item.token)
                        .await?;
                }
            }
        }

        // 3. Write in rounds until every record is finished.
        let mut pending: Vec<usize> = (0..slots.len()).collect();
        let mut next_group = 1u64;
        let mut backoff = Backoff::new(self.initial_backoff, self.max_backoff);
        while !pending.is_empty() {
            let chunks = plan::chunks(
                pending
                    .iter()
                    .map(|&i| (i, &slots[i].write, slots[i].group)),
            );
            let mut retry: Vec<usize> = Vec::new();
            let mut wait = false;
            for call in chunks.chunks(COMPOSITE_COLLECTIONS) {
                let requests: Vec<SubRequest> = call.iter().map(|c| c.request.clone()).collect();
                let responses = match self.composite(&requests, cancel).await? {
                    Ok(r) => r,
                    Err(e) => {
                        for chunk in call {
                            for &i in &chunk.members {
                                let failure =
                                    Failure::from_api("sink.write", &e, slots[i].attempts + 1);
                                self.dead_letter_slot(&mut slots[i], failure).await?;
                            }
                        }
                        continue;
                    }
                };
                for (chunk, response) in call.iter().zip(responses) {
                    self.settle(
                        chunk,
                        response,
                        &mut slots,
                        &mut retry,
                        &mut wait,
                        &mut next_group,
                    )
                    .await?;
                }
            }
            if !retry.is_empty() && wait {
                let delay = backoff.next_delay();
                self.reporter
                    .stats
                    .retries
                    .fetch_add(retry.len() as u64, Ordering::Relaxed);
                warn!(
                    records = retry.len(),
                    ?delay,
                    "retrying records after retryable Salesforce errors"
                );
                if !sleep_or_cancel(delay, cancel).await {
                    return Err(WriteError::Cancelled);
                }
            }
            pending = retry;
        }
        Ok(())
    }

    async fn dead_letter_slot(&self, slot: &mut Slot, failure: Failure) -> Result<(), WriteError> {
        if let Some(token) = slot.token.take() {
            self.reporter
                .dead_letter(&slot.origin, &failure, token)
                .await?;
        }
        Ok(())
    }

    /// Applies one subrequest's response to its records.
    async fn settle(
        &self,
        chunk: &Chunk,
        response: SubResponse,
        slots: &mut [Slot],
        retry: &mut Vec<usize>,
        wait: &mut bool,
        next_group: &mut u64,
    ) -> Result<(), WriteError> {
        match response {
            SubResponse::Saved(results) => {
                if results.len() != chunk.members.len() {
                    return Err(WriteError::Protocol(format!(
                        "{} results for {} records",
                        results.len(),
                        chunk.members.len()
                    )));
                }
                for (&i, result) in chunk.members.iter().zip(results) {
                    let slot = &mut slots[i];
                    let error = result.errors.into_iter().next();
                    if result.success {
                        if let Some(token) = slot.token.take() {
                            self.finish_ok(token);
                        }
                        continue;
                    }
                    let error = error.unwrap_or(ApiError {
                        code: "UNKNOWN_EXCEPTION".into(),
                        message: "Salesforce reported a failure without an error".into(),
                        fields: Vec::new(),
                    });
                    if slot.write.kind == OpKind::Delete && error.code == "ENTITY_IS_DELETED" {
                        if let Some(token) = slot.token.take() {
                            self.finish_ok(token);
                        }
                        continue;
                    }
                    if error.code == crate::retry::REQUEST_LIMIT_EXCEEDED {
                        // The org's allowance, not the record: pause on the guard, no attempt
                        // spent.
                        self.rest.guard().mark_exhausted();
                        slot.last_error = Some(error);
                        retry.push(i);
                        *wait = true;
                        continue;
                    }
                    slot.attempts += 1;
                    if crate::retry::record_error_is_retryable(&error.code)
                        && slot.attempts < self.max_attempts
                    {
                        slot.last_error = Some(error);
                        retry.push(i);
                        *wait = true;
                    } else {
                        let failure = Failure::from_api("sink.write", &error, slot.attempts);
                        self.dead_letter_slot(slot, failure).await?;
                    }
                }
            }
            SubResponse::Failed {
                http_status,
                errors,
            } => {
                let first = errors.first().cloned().unwrap_or(ApiError {
                    code: format!("HTTP_{http_status}"),
                    message: "the collection request failed".into(),
                    fields: Vec::new(),
                });
                if http_status < 300 {
                    // Salesforce accepted the request but its answer cannot be read: the outcome
                    // is unknown, so nothing is resent or dead-lettered here; the batch fails
                    // and its records are repeated from the committed offsets.
                    return Err(WriteError::Protocol(format!(
                        "unreadable save results: {}",
                        first.message
                    )));
                }
                let retryable = http_status >= 500
                    || errors
                        .iter()
                        .any(|e| crate::retry::record_error_is_retryable(&e.code));
                if retryable {
                    for &i in &chunk.members {
                        let slot = &mut slots[i];
                        slot.attempts += 1;
                        if slot.attempts < self.max_attempts {
                            slot.last_error = Some(first.clone());
                            retry.push(i);
                            *wait = true;
                        } else {
                            let failure = Failure::from_api("sink.write", &first, slot.attempts);
                            self.dead_letter_slot(slot, failure).await?;
                        }
                    }
                    return Ok(());
                }
                // Refused as a whole: find the records the error names.
                let named: Vec<&str> = errors
                    .iter()
                    .flat_map(|e| e.fields.iter().map(String::as_str))
                    .collect();
                let (culprits, innocent): (Vec<usize>, Vec<usize>) =
                    chunk.members.iter().partition(|&&i| {
                        slots[i]
                            .write
                            .fields
                            .keys()
                            .any(|k| named.iter().any(|n| n.eq_ignore_ascii_case(k)))
                    });
                if !culprits.is_empty() {
                    for i in culprits {
                        let failure =
                            Failure::from_api("sink.write", &first, slots[i].attempts + 1);
                        self.dead_letter_slot(&mut slots[i], failure).await?;
                    }
                    retry.extend(innocent);
                } else if chunk.members.len() == 1 {
                    let i = chunk.members[0];
                    let failure = Failure::from_api("sink.write", &first, slots[i].attempts + 1);
                    self.dead_letter_slot(&mut slots[i], failure).await?;
                } else {
                    let half = chunk.members.len() / 2;
                    for (n, &i) in chunk.members.iter().enumerate() {
                        slots[i].group = *next_group + u64::from(n >= half);
                    }
                    *next_group += 2;
                    debug!(
                        records = chunk.members.len(),
                        code = %first.code,
                        "collection refused as a whole; splitting it to isolate the record"
                    );
                    retry.extend(chunk.members.iter().copied());
                }
            }
            SubResponse::Query { .. } | SubResponse::Retrieved { .. } => {
                return Err(WriteError::Protocol("records in answer to a write".into()));
            }
        }
        Ok(())
    }
}
