//! Writes one batch to Salesforce and finishes every record of it exactly once: written,
//! recorded as a conflict, or dead-lettered.
//!
//! Contract:
//! * Fields first ([`super::fields`]): every write is checked against its object's describe
//!   (fetched once per object per run) and rewritten with component fields; a refused record is
//!   dead-lettered (stage `sink.field`) before any write call.
//! * Lookups next ([`plan::lookups`]: sObject Collections retrieves of up to 2,000 Ids, SOQL
//!   queries for External Ids), packed five per Composite call; then writes ([`plan::chunks`]),
//!   five collections of up to 200 per Composite call. A full batch of 10,000 updates by Id of
//!   one object, last-write-wins on, costs 1 read call + 10 write calls (≈ 909 records per
//!   call); 1,000 cost 1 + 1.
//! * A retrieve refused with a 4xx (a whole-call 400 included) is read again as `Id IN (…)`
//!   queries of 200 ([`plan::as_queries`]); a query refused that way dead-letters the records it
//!   asked for (stage `sink.lookup`). Retryable failures are retried up to `max_attempts`.
//! * Per-record results: success finishes the record; a delete of a record already deleted
//!   (`ENTITY_IS_DELETED`) is success (repeating a delete is harmless); a retryable error
//!   ([`crate::retry::classify_record_error`]) is retried in a later round with backoff and
//!   jitter, up to `max_attempts`; any other error dead-letters the record with its status code,
//!   message and fields.
//! * A collection refused as a whole (HTTP 400: one bad value rejects every record of it, and
//!   Salesforce's error names no record) does not condemn the others: the collection is split in
//!   halves, round after round, until the culprit stands alone and is dead-lettered with its own
//!   error; the others are written. An error's `fields` never condemn a record by field name.
//!   Cost: at most about 2 × log2(200) extra calls per culprit; every re-sent record is counted in
//!   `retries`.
//! * A whole Composite call refused for its content or size ([`refuses_content`]: 400, 413,
//!   414, 431 and other 4xx but 401/403/404/408/429) is split too: first each of its
//!   collections in a call of its own, then each collection in halves as above, so a record
//!   refused alone is dead-lettered with the reason and the partition moves on. 401 (after the
//!   client's re-login), 403 and 404 are about the connection, not the records; they, transport
//!   and protocol failures (an answer not in Salesforce's JSON error shape that persists through
//!   the client's retries included) end the batch with an error: its unfinished records are never
//!   committed, so the sink repeats them after restarting.
//! * Conflicts go to the conflicts topic with both timestamps and the reason; dead letters carry the original
//!   key, value and headers plus `forcebridge.error.*` and `forcebridge.source.*` headers
//!   ([`super::reporter`]).
//!
//! [`Writer::write_batch`] goes in steps: fields ([`FieldCheck::check`]), lookups ([`Writer::look_up`]), decisions
//! ([`Writer::decide_all`]), writes in rounds ([`Writer::write_rounds`]), and the results of each
//! collection ([`Writer::settle`]).

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::fields::{CheckError, FieldCheck};
use super::message::OpKind;
use super::plan::{self, COMPOSITE_COLLECTIONS, Chunk, Current, Decision, Lookup, Write};
use super::reporter::{Failure, Item, Origin, Reporter};
use crate::kafka::headers::DeadLetterStage;
use crate::kafka::{AckToken, KafkaError};
use crate::retry::{Backoff, Directive, classify_record_error, refuses_content, sleep_or_cancel};
use crate::salesforce::rest::{
    ApiError, RestClient, RestError, SaveResult, SubRequest, SubResponse,
};

/// Why a batch stopped before finishing its records.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
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

impl From<CheckError> for WriteError {
    fn from(e: CheckError) -> Self {
        match e {
            CheckError::Rest(RestError::Cancelled) => WriteError::Cancelled,
            CheckError::Rest(e) => WriteError::Rest(e),
            CheckError::Kafka(e) => WriteError::Kafka(e),
        }
    }
}

/// Settings and clients of the writers.
#[derive(Clone)]
pub(crate) struct Writer {
    pub(crate) rest: RestClient,
    pub(crate) reporter: Reporter,
    /// The describes and the field check, shared by every writer.
    pub(crate) fields: FieldCheck,
    pub(crate) last_write_wins: bool,
    /// Who wins a write in the same second as `SystemModstamp` (`sink.same_second_winner`).
    pub(crate) same_second: crate::config::SameSecondWinner,
    /// The integration user: its own earlier writes never count as conflicts.
    pub(crate) own_user: Option<String>,
    pub(crate) max_attempts: u32,
    pub(crate) initial_backoff: std::time::Duration,
    pub(crate) max_backoff: std::time::Duration,
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

/// What a batch's lookups found: Salesforce's current records, and the lookup keys of records
/// whose lookup Salesforce refused (dead-lettered at the decision).
#[derive(Default)]
struct Found {
    current: HashMap<String, Current>,
    refused: HashMap<String, ApiError>,
}

impl Found {
    /// A lookup refused for its content: a retrieve is read again as queries of 200 Ids (so
    /// one bad Id costs one query's records); a query's records are dead-lettered.
    fn refuse(&mut self, lookup: &Lookup, e: &ApiError, fallback: &mut Vec<Lookup>) {
        let queries = plan::as_queries(lookup);
        if queries.is_empty() {
            for k in &lookup.keys {
                self.refused.insert(k.clone(), e.clone());
            }
        } else {
            debug!(code = %e.code, ids = lookup.keys.len(), "retrieve refused; reading its records with queries");
            fallback.extend(queries);
        }
    }
}

/// The writes of a batch, round after round.
struct Rounds {
    slots: Vec<Slot>,
    /// The records to send again in the next round.
    retry: Vec<usize>,
    /// Whether the next round waits first (a retryable error, not only a split).
    wait: bool,
    /// The next unused isolation group.
    next_group: u64,
    /// Each collection in a Composite call of its own (after a whole call was refused).
    solo: bool,
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
            Err(RestError::Rejected { status, errors }) if refuses_content(status) => {
                Ok(Err(ApiError::of_refused_call(status, errors)))
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Writes `items` (at most one per record, see the batcher) and finishes each of them.
    pub(crate) async fn write_batch(
        &self,
        items: Vec<Item>,
        cancel: &CancellationToken,
    ) -> Result<(), WriteError> {
        self.reporter.stats.batches.fetch_add(1, Ordering::Relaxed);
        let items = (self.fields)
            .check(items, &self.rest, &self.reporter, cancel)
            .await?;
        let found = self.look_up(&items, cancel).await?;
        let slots = self.decide_all(items, &found).await?;
        self.write_rounds(slots, cancel).await
    }

    /// Step 1, lookups: reads what the batch needs to know about Salesforce's current records.
    /// Retryable query failures are retried; a query Salesforce refuses dead-letters the records
    /// whose values it asked for.
    async fn look_up(
        &self,
        items: &[Item],
        cancel: &CancellationToken,
    ) -> Result<Found, WriteError> {
        let mut pending: Vec<Lookup> =
            plan::lookups(items.iter().map(|i| &i.op), self.last_write_wins);
        let mut found = Found::default();
        let mut attempts = 0;
        let mut backoff = Backoff::new(self.initial_backoff, self.max_backoff);
        while !pending.is_empty() {
            let mut again: Vec<Lookup> = Vec::new();
            let mut fallback: Vec<Lookup> = Vec::new();
            for call in pending.chunks(COMPOSITE_COLLECTIONS) {
                self.look_up_call(call, &mut found, &mut again, &mut fallback, cancel)
                    .await?;
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
        Ok(found)
    }

    /// One Composite call of lookups: indexes what they found; a retryable failure goes to
    /// `again`, a refused retrieve's queries to `fallback`.
    async fn look_up_call(
        &self,
        call: &[Lookup],
        found: &mut Found,
        again: &mut Vec<Lookup>,
        fallback: &mut Vec<Lookup>,
        cancel: &CancellationToken,
    ) -> Result<(), WriteError> {
        let requests: Vec<SubRequest> = call.iter().map(|l| l.request.clone()).collect();
        let responses = match self.composite(&requests, cancel).await? {
            Ok(r) => r,
            Err(e) => {
                for l in call {
                    found.refuse(l, &e, fallback);
                }
                return Ok(());
            }
        };
        for (lookup, response) in call.iter().zip(responses) {
            match response {
                SubResponse::Query { records } => {
                    plan::index_results(lookup, &records, &mut found.current);
                }
                SubResponse::Retrieved { records } => {
                    let records: Vec<_> = records.into_iter().flatten().collect();
                    plan::index_results(lookup, &records, &mut found.current);
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
                    if http_status >= 500 || (classify_record_error(&e.code) == Directive::Retry) {
                        again.push(lookup.clone());
                    } else {
                        found.refuse(lookup, &e, fallback);
                    }
                }
                SubResponse::Saved(_) => {
                    return Err(WriteError::Protocol(
                        "save results in answer to a lookup".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Step 2, decisions: decides each record ([`plan::decide`]). A write becomes a [`Slot`]; a
    /// conflict, a record already absent or not found, and a record whose lookup was refused
    /// are finished here.
    async fn decide_all(&self, items: Vec<Item>, found: &Found) -> Result<Vec<Slot>, WriteError> {
        let mut slots: Vec<Slot> = Vec::with_capacity(items.len());
        for item in items {
            if let Some(e) = plan::op_lookup_key(&item.op).and_then(|k| found.refused.get(&k)) {
                let failure = Failure::from_api(DeadLetterStage::SinkLookup, e, 0);
                self.reporter
                    .dead_letter(&item.origin, &failure, item.token)
                    .await?;
                continue;
            }
            let decision = plan::decide(
                &item.op,
                &found.current,
                self.last_write_wins.then_some(self.same_second),
                self.own_user.as_deref(),
            );
            match decision {
                Decision::Write(write) => slots.push(Slot {
                    origin: item.origin,
                    token: Some(item.token),
                    write,
                    attempts: 0,
                    group: 0,
                    last_error: None,
                }),
                Decision::Conflict {
                    current,
                    timestamp,
                    reason,
                } => {
                    self.reporter
                        .conflict(&item.origin, &current, (timestamp, reason), item.token)
                        .await?;
                }
                Decision::AlreadyAbsent => self.finish_ok(item.token),
                Decision::NotFound { field, value } => {
                    let failure = Failure {
                        stage: DeadLetterStage::SinkLookup,
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
        Ok(slots)
    }

    /// Step 3, writes: writes in rounds until every record is finished.
    async fn write_rounds(
        &self,
        slots: Vec<Slot>,
        cancel: &CancellationToken,
    ) -> Result<(), WriteError> {
        let mut pending: Vec<usize> = (0..slots.len()).collect();
        let mut rounds = Rounds {
            slots,
            retry: Vec::new(),
            wait: false,
            next_group: 1,
            solo: false,
        };
        let mut backoff = Backoff::new(self.initial_backoff, self.max_backoff);
        while !pending.is_empty() {
            let slots = &rounds.slots;
            let chunks = plan::chunks(
                pending
                    .iter()
                    .map(|&i| (i, &slots[i].write, slots[i].group)),
            );
            rounds.wait = false;
            let per_call = if rounds.solo {
                1
            } else {
                COMPOSITE_COLLECTIONS
            };
            for call in chunks.chunks(per_call) {
                let requests: Vec<SubRequest> = call.iter().map(|c| c.request.clone()).collect();
                match self.composite(&requests, cancel).await? {
                    Ok(responses) => {
                        for (chunk, response) in call.iter().zip(responses) {
                            self.settle(chunk, response, &mut rounds).await?;
                        }
                    }
                    // Refused as a whole: which collection is at fault is unknown, so each is
                    // sent in a call of its own next round (nothing spent, no wait).
                    Err(e) if call.len() > 1 => {
                        debug!(code = %e.code, collections = call.len(), "Composite call refused as a whole; sending its collections one per call");
                        rounds.solo = true;
                        for chunk in call {
                            rounds.retry.extend(chunk.members.iter().copied());
                        }
                    }
                    Err(e) => self.isolate(&call[0], &e, &mut rounds).await?,
                }
            }
            let retry = std::mem::take(&mut rounds.retry);
            self.reporter
                .stats
                .retries
                .fetch_add(retry.len() as u64, Ordering::Relaxed);
            if !retry.is_empty() && rounds.wait {
                let delay = backoff.next_delay();
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

    /// Step 4, results: applies one subrequest's response to its records.
    async fn settle(
        &self,
        chunk: &Chunk,
        response: SubResponse,
        rounds: &mut Rounds,
    ) -> Result<(), WriteError> {
        match response {
            SubResponse::Saved(results) => self.settle_saved(chunk, results, rounds).await,
            SubResponse::Failed {
                http_status,
                errors,
            } => self.settle_failed(chunk, http_status, errors, rounds).await,
            SubResponse::Query { .. } | SubResponse::Retrieved { .. } => {
                Err(WriteError::Protocol("records in answer to a write".into()))
            }
        }
    }

    /// Per-record results: success finishes the record, a retryable error retries it, any
    /// other dead-letters it.
    async fn settle_saved(
        &self,
        chunk: &Chunk,
        results: Vec<SaveResult>,
        rounds: &mut Rounds,
    ) -> Result<(), WriteError> {
        if results.len() != chunk.members.len() {
            return Err(WriteError::Protocol(format!(
                "{} results for {} records",
                results.len(),
                chunk.members.len()
            )));
        }
        for (&i, result) in chunk.members.iter().zip(results) {
            let slot = &mut rounds.slots[i];
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
                rounds.retry.push(i);
                rounds.wait = true;
                continue;
            }
            slot.attempts += 1;
            if (classify_record_error(&error.code) == Directive::Retry)
                && slot.attempts < self.max_attempts
            {
                slot.last_error = Some(error);
                rounds.retry.push(i);
                rounds.wait = true;
            } else {
                let failure = Failure::from_api(DeadLetterStage::SinkWrite, &error, slot.attempts);
                self.dead_letter_slot(slot, failure).await?;
            }
        }
        Ok(())
    }

    /// A collection that failed as a whole: retried when the failure is retryable, else its
    /// culprits isolated ([`Writer::isolate`]).
    async fn settle_failed(
        &self,
        chunk: &Chunk,
        http_status: u16,
        errors: Vec<ApiError>,
        rounds: &mut Rounds,
    ) -> Result<(), WriteError> {
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
                .any(|e| classify_record_error(&e.code) == Directive::Retry);
        if retryable {
            for &i in &chunk.members {
                let slot = &mut rounds.slots[i];
                slot.attempts += 1;
                if slot.attempts < self.max_attempts {
                    slot.last_error = Some(first.clone());
                    rounds.retry.push(i);
                    rounds.wait = true;
                } else {
                    let failure =
                        Failure::from_api(DeadLetterStage::SinkWrite, &first, slot.attempts);
                    self.dead_letter_slot(slot, failure).await?;
                }
            }
            return Ok(());
        }
        self.isolate(chunk, &first, rounds).await
    }

    /// Refused as a whole: a record alone is dead-lettered with the error; a collection of more
    /// is split in halves (each its own isolation group) and sent again, so the culprit ends
    /// alone and the others are written. Field names in the error condemn no record: Salesforce
    /// does not say which record of the collection carried the bad value.
    async fn isolate(
        &self,
        chunk: &Chunk,
        error: &ApiError,
        rounds: &mut Rounds,
    ) -> Result<(), WriteError> {
        if let [only] = chunk.members[..] {
            let slot = &mut rounds.slots[only];
            let failure = Failure::from_api(DeadLetterStage::SinkWrite, error, slot.attempts + 1);
            return self.dead_letter_slot(slot, failure).await;
        }
        let half = chunk.members.len() / 2;
        for (n, &i) in chunk.members.iter().enumerate() {
            rounds.slots[i].group = rounds.next_group + u64::from(n >= half);
        }
        rounds.next_group += 2;
        debug!(
            records = chunk.members.len(),
            code = %error.code,
            "collection refused as a whole; splitting it to isolate the record"
        );
        rounds.retry.extend(chunk.members.iter().copied());
        Ok(())
    }
}
