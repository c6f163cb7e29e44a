//! The processor of a channel: events in replay order → decoded, routed records → Kafka.
//!
//! Contract: each event is decoded with the schema its own `schema_id` names (fetched once per id
//! through `GetSchema`), fanned out to one Kafka record per record Id, and registered in the
//! channel's [`AckWindow`] under its replay id. An event that cannot become records goes to the
//! dead-letter topic ([`super::dead_letters`]); gap and overflow events are re-read over REST
//! ([`crate::source::gap`]); echoes of forcebridge's own writes (see [`crate::source::echo`]) are
//! dropped (they still move the checkpoint), marked with the `forcebridge.echo` header, or passed,
//! per `source.echo.mode`. In exactly-once mode it commits the channel's transaction every
//! `checkpoint_interval` and once more at the end. A record Kafka did not acknowledge ends the
//! attempt (`DeliveryFailed`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::blank_schema::{self, EntitySchemas};
use super::dead_letters::{DeadLetter, DeadLetters, write_gap_marker};
use super::diffs;
use super::error::AttemptError;
use super::reader::{Item, renew_session};
use super::routes::Routes;
use super::setup::Shared;
use super::transactions::{Transaction, commit_due};
use crate::config::{ChannelConfig, EchoMode};
use crate::kafka::headers::{self, DeadLetterStage};
use crate::kafka::{AckWindow, EventHandle, KafkaError, Producer};
use crate::ops::telemetry::ChannelStats;
use crate::retry::{Backoff, Directive, sleep_or_cancel};
use crate::salesforce::auth::AuthError;
use crate::salesforce::pubsub::PubSub;
use crate::source::cdc::schema::{EventSchema, SchemaSource, SourceError};
use crate::source::cdc::{self, EnvelopeOptions, RawEvent};
use crate::source::echo::EchoRule;

/// Decodes and produces events in order.
pub(super) async fn process(
    shared: &Shared,
    channel: &ChannelConfig,
    producer: &Producer,
    stats: &ChannelStats,
    window: &AckWindow,
    mut rx: mpsc::Receiver<Item>,
    cancel: &CancellationToken,
) -> Result<(), AttemptError> {
    let mut transaction = producer.transactional_id().is_some().then(|| Transaction {
        shared,
        channel: &channel.name,
        producer,
        stats,
        window,
        committed: shared.checkpoints.get(&channel.name).map(|c| c.replay_id),
        ticker: {
            let mut ticker = tokio::time::interval_at(
                tokio::time::Instant::now() + shared.source().checkpoint_interval,
                shared.source().checkpoint_interval,
            );
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker
        },
    });
    let result = process_items(
        shared,
        channel,
        producer,
        stats,
        window,
        &mut rx,
        &mut transaction,
        cancel,
    )
    .await;
    match (result, transaction) {
        // The last transaction commits what was processed before the stop.
        (Ok(()), Some(mut transaction)) => transaction.commit(false).await,
        (result, _) => result,
    }
}

/// The processor's loop: items in order, and (exactly-once) a commit every interval.
#[allow(clippy::too_many_arguments)]
async fn process_items(
    shared: &Shared,
    channel: &ChannelConfig,
    producer: &Producer,
    stats: &ChannelStats,
    window: &AckWindow,
    rx: &mut mpsc::Receiver<Item>,
    transaction: &mut Option<Transaction<'_>>,
    cancel: &CancellationToken,
) -> Result<(), AttemptError> {
    let mut processor = Processor {
        shared,
        channel,
        producer,
        stats,
        window,
        options: EnvelopeOptions {
            tombstones: shared.source().tombstones,
        },
        routes: Routes::new(shared, channel, stats),
        dead_letters: DeadLetters::new(shared, producer, stats),
        completer: Default::default(),
        echo: echo_rule(shared),
        scratch: cdc::Scratch::default(),
        last_schema: None,
        entity_schemas: EntitySchemas::default(),
        diff_fields: Vec::new(),
        event_time: None,
        login_refused: std::sync::Mutex::new(None),
        debezium: shared.debezium(&channel.name),
        converted: false,
    };
    // An item a full-record batch took from the channel after its events ([`super::batch`]).
    let mut after: Option<Item> = None;
    loop {
        if let Some(reason) = window.failure() {
            // A topic deleted since it was made sure of (or a wiped broker) fails deliveries:
            // the next attempt checks every topic again and re-creates what is missing
            // (`kafka.create_topics`), instead of producing into the void until each record's
            // `message.timeout.ms` (issue 19, item 5).
            if let Some(admin) = &shared.topics {
                admin.forget_known();
            }
            return Err(AttemptError::Restart(reason));
        }
        let item = if let Some(item) = after.take() {
            item
        } else {
            tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(()),
            _ = commit_due(transaction) => {
                if let Some(transaction) = transaction {
                    transaction.commit(true).await?;
                }
                continue;
            }
            item = rx.recv() => match item {
                Some(item) => item,
                None => return Ok(()),
            },
            }
        };
        match item {
            Item::Gap {
                rejected,
                resumed_from,
                reason,
            } => {
                write_gap_marker(
                    shared,
                    producer,
                    &channel.name,
                    &rejected,
                    resumed_from,
                    &reason,
                )
                .await
                .map_err(AttemptError::Restart)?;
            }
            Item::Keepalive(latest_replay_id) => {
                if !latest_replay_id.is_empty() {
                    // Every event up to the keepalive's position has been delivered by now.
                    let handle = window.begin(latest_replay_id);
                    handle.note_time(crate::ops::telemetry::unix_millis() as i64);
                    handle.seal();
                }
            }
            Item::Event { event, replay_id } => {
                let handled = match channel.full_record {
                    true => processor.handle_batch((event, replay_id), rx, cancel).await,
                    false => (processor.handle(&event, replay_id, cancel).await).map(|()| None),
                };
                match handled {
                    Ok(next) => after = next,
                    Err(HandleError::Cancelled) => return Ok(()),
                    Err(HandleError::Kafka(err)) => {
                        return Err(AttemptError::Restart(err.to_string()));
                    }
                    Err(HandleError::LoginRefused(err)) => {
                        return Err(AttemptError::Stop(err.into()));
                    }
                }
            }
        }
    }
}

pub(super) enum HandleError {
    Cancelled,
    Kafka(KafkaError),
    /// A re-login was refused for good (credentials, configuration): the pipeline stops.
    LoginRefused(AuthError),
}

/// One channel's processing state, owned by its processor task.
pub(super) struct Processor<'a> {
    pub(super) shared: &'a Shared,
    pub(super) channel: &'a ChannelConfig,
    /// The channel's producer (transactional in exactly-once mode).
    pub(super) producer: &'a Producer,
    pub(super) stats: &'a ChannelStats,
    pub(super) window: &'a AckWindow,
    options: EnvelopeOptions,
    /// Where each object's records go.
    pub(super) routes: Routes<'a>,
    pub(super) dead_letters: DeadLetters<'a>,
    /// Reads current values (`full_record`, [`super::batch`]).
    pub(super) completer: crate::source::full_record::Completer,
    /// `None` when `source.echo.mode` is `pass`.
    echo: Option<(EchoRule, EchoMode)>,
    /// The decoder's reusable buffers.
    scratch: cdc::Scratch,
    /// The schema of the previous event.
    pub(super) last_schema: Option<Arc<EventSchema>>,
    /// The schema ids of the entities of events that came without one.
    entity_schemas: EntitySchemas,
    /// The `diffFields` (expanded) of the event decoded last.
    diff_fields: Vec<String>,
    /// The commit timestamp (or `CreatedDate`) of the event decoded last.
    pub(super) event_time: Option<i64>,
    /// A re-login refused for good while fetching a schema (then decoding ends with `Err(None)`).
    pub(super) login_refused: std::sync::Mutex<Option<AuthError>>,
    /// `Some` for `format: debezium`: records converted last, unless written so (`converted`).
    pub(super) debezium: Option<cdc::Debezium>,
    pub(super) converted: bool,
}

/// The echo rule of the source: our client tag, plus the configured users and (with
/// `own_user`) the logged-in user.
fn echo_rule(shared: &Shared) -> Option<(EchoRule, EchoMode)> {
    let echo = &shared.source().echo;
    if echo.mode == EchoMode::Pass {
        return None;
    }
    let mut users = echo.commit_users.clone();
    if echo.own_user {
        match shared.session.current().user_id.clone() {
            Some(user) => users.push(user),
            None => warn!("source.echo.own_user is set but the session has no user id"),
        }
    }
    Some((EchoRule::new(shared.config.client_tag(), users), echo.mode))
}

impl Processor<'_> {
    /// Decodes one event into Kafka records. `Err(None)`: cancelled while waiting for a schema,
    /// or a re-login refused for good (kept in `login_refused`).
    pub(super) async fn decode(
        &mut self,
        raw: &RawEvent<'_>,
        cancel: &CancellationToken,
    ) -> Result<Vec<cdc::OutRecord>, Option<DeadLetter>> {
        // Events of a channel nearly always share one schema: skip the cache's lock and lookup.
        if let Some(schema) = self.last_schema.take().filter(|s| s.id == raw.schema_id) {
            let records = self.encode(&schema, raw);
            self.last_schema = Some(schema);
            return records;
        }
        // Only change events name their entity first; a blank id elsewhere is refused below.
        if raw.schema_id.trim().is_empty() && raw.channel.starts_with("/data/") {
            return self.decode_without_schema_id(raw, cancel).await;
        }
        let schema = self.schema(raw.schema_id, cancel).await?;
        let records = self.encode(&schema, raw);
        self.last_schema = Some(schema);
        records
    }

    /// The schema `id` names, through the cache (fetched once per id, retried while the org is
    /// unavailable). `Err(None)`: cancelled while waiting.
    async fn schema(
        &self,
        id: &str,
        cancel: &CancellationToken,
    ) -> Result<Arc<EventSchema>, Option<DeadLetter>> {
        let source = CountingSource {
            pubsub: &self.shared.pubsub,
            fetched: &self.shared.stats.schemas_fetched,
        };
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            let used = self.shared.session.current();
            match self.shared.schemas.get(id, &source).await {
                Ok(schema) => return Ok(schema),
                // The same single-flight re-login as the stream's, then the fetch again: the
                // reader may be waiting behind this event and not notice the refusal itself.
                Err(err) if err.directive() == Directive::Reauthenticate => {
                    warn!(error = %err, "schema fetch refused the session; logging in again");
                    if let Err(login) = renew_session(self.shared, &used, cancel).await {
                        if let Ok(mut slot) = self.login_refused.lock() {
                            *slot = Some(login);
                        }
                        return Err(None);
                    }
                    if !sleep_or_cancel(backoff.next_delay(), cancel).await {
                        return Err(None);
                    }
                }
                Err(err) if err.directive() == Directive::Retry => {
                    let delay = backoff.next_delay();
                    warn!(error = %err, ?delay, "schema fetch failed; retrying");
                    if !sleep_or_cancel(delay, cancel).await {
                        return Err(None);
                    }
                }
                Err(err) => {
                    return Err(Some(DeadLetter {
                        stage: DeadLetterStage::Schema,
                        reason: err.to_string(),
                    }));
                }
            }
        }
    }

    /// An event without a schema id (`/data/ChangeEvents` on a real org): decoded with the
    /// schema of the entity its payload names ([`super::blank_schema`]). A payload that the
    /// entity's current schema cannot decode is tried once more after asking the org again (the
    /// schema may have changed since it was cached); then it is dead-lettered.
    async fn decode_without_schema_id(
        &mut self,
        raw: &RawEvent<'_>,
        cancel: &CancellationToken,
    ) -> Result<Vec<cdc::OutRecord>, Option<DeadLetter>> {
        let entity = blank_schema::entity_of(raw.payload)?;
        let mut refresh = false;
        loop {
            let id = self
                .entity_schemas
                .schema_id(self.shared, entity, refresh, &self.login_refused, cancel)
                .await?;
            let schema = self.schema(&id, cancel).await?;
            if !schema.entity_name_first() {
                return Err(Some(DeadLetter {
                    stage: DeadLetterStage::Schema,
                    reason: format!(
                        "the schema id is blank, and {entity}'s schema {id} is not a change event \
                         schema whose ChangeEventHeader begins with entityName"
                    ),
                }));
            }
            // The records say which schema decoded them.
            let resolved = RawEvent {
                schema_id: &schema.id,
                ..*raw
            };
            match self.encode(&schema, &resolved) {
                Ok(records) if records.iter().all(|r| r.object == entity) => {
                    self.last_schema = Some(schema);
                    return Ok(records);
                }
                Ok(_) => {
                    return Err(Some(DeadLetter {
                        stage: DeadLetterStage::Schema,
                        reason: format!(
                            "the schema id is blank; decoded with {entity}'s schema {id}, its \
                             header names another entity"
                        ),
                    }));
                }
                Err(_) if !refresh => refresh = true,
                Err(dead) => return Err(dead),
            }
        }
    }

    /// Decodes one event with its schema into Kafka records, minus echoes (per `source.echo`).
    fn encode(
        &mut self,
        schema: &EventSchema,
        raw: &RawEvent<'_>,
    ) -> Result<Vec<cdc::OutRecord>, Option<DeadLetter>> {
        let encoded = cdc::encode_as(
            schema,
            raw,
            &self.options,
            // A `full_record` channel completes its records in our envelope first, converted after.
            self.debezium.as_ref().filter(|_| !self.channel.full_record),
            &mut self.scratch,
        )
        .map_err(|err| {
            Some(DeadLetter {
                stage: err.stage(),
                reason: err.to_string(),
            })
        })?;
        let mut records = encoded.records;
        self.diff_fields = encoded.diff_fields;
        self.converted = encoded.debezium;
        self.event_time = encoded.at;
        let echo = match (&self.echo, &encoded.commit) {
            (Some((rule, mode)), Some(commit)) => rule.check(commit).map(|r| (r, *mode)),
            _ => None,
        };
        match echo {
            None => {}
            Some((_, EchoMode::Drop)) => {
                self.stats.echoes.fetch_add(1, Ordering::Relaxed);
                records.clear();
            }
            Some((reason, _)) => {
                self.stats.echoes.fetch_add(1, Ordering::Relaxed);
                for record in &mut records {
                    record
                        .headers
                        .push((headers::ECHO, reason.as_str().to_owned()));
                }
            }
        }
        Ok(records)
    }

    /// The records of an event with `diffFields`, rewritten so that no diff is presented as a
    /// value ([`super::diffs`]); others as they are. `Err(None)`: cancelled.
    pub(super) async fn resolve_diffs(
        &self,
        mut records: Vec<cdc::OutRecord>,
        cancel: &CancellationToken,
    ) -> Result<Vec<cdc::OutRecord>, Option<DeadLetter>> {
        // (No records: an echo dropped, nothing to re-read.)
        if self.diff_fields.is_empty() || records.is_empty() || crate::source::gap::is_gap(&records)
        {
            return Ok(records);
        }
        // A full record reads the diff fields' values with the rest: no query of its own.
        let mode = match self.channel.full_record {
            true => crate::config::DiffFieldsMode::Pass,
            false => self.shared.source().diff_fields,
        };
        match diffs::resolve(
            &mut records,
            &self.diff_fields,
            mode,
            &self.shared.gaps,
            self.stats,
            cancel,
        )
        .await
        {
            Ok(()) => Ok(records),
            Err(diffs::DiffError::Cancelled) => Err(None),
            Err(err) => Err(Some(DeadLetter {
                stage: DeadLetterStage::Diff,
                reason: err.to_string(),
            })),
        }
    }

    /// A gap or overflow event: re-read its records over REST ([`crate::source::gap`]) under the event's
    /// own handle; what cannot be re-read goes to the dead-letter topic (stage `gap`).
    pub(super) async fn handle_gap(
        &self,
        records: &[cdc::OutRecord],
        raw: &RawEvent<'_>,
        handle: &EventHandle,
        cancel: &CancellationToken,
    ) -> Result<(), HandleError> {
        let source = CountingSource {
            pubsub: &self.shared.pubsub,
            fetched: &self.shared.stats.schemas_fetched,
        };
        let failed = |stage, reason: String| DeadLetter { stage, reason };
        // Cached: decoding the event just fetched it.
        let schema = match self.shared.schemas.get(raw.schema_id, &source).await {
            Ok(schema) => schema,
            Err(err) => {
                return self
                    .dead_letters
                    .write(
                        raw,
                        &failed(DeadLetterStage::Schema, err.to_string()),
                        handle,
                    )
                    .await
                    .map_err(HandleError::Kafka);
            }
        };
        let route = self.routes.get(&records[0].object);
        let target = crate::source::gap::Target {
            producer: self.producer,
            topic: &route.topic,
            handle,
            produced: &route.produced,
            stats: self.stats,
            tombstones: self.options.tombstones,
            debezium: self.debezium.as_ref(),
        };
        match self
            .shared
            .gaps
            .handle(records, &schema, &target, cancel)
            .await
        {
            Ok(()) => Ok(()),
            Err(crate::source::gap::GapError::Cancelled) => Err(HandleError::Cancelled),
            Err(crate::source::gap::GapError::Kafka(err)) => Err(HandleError::Kafka(err)),
            Err(err) => self
                .dead_letters
                .write(raw, &failed(DeadLetterStage::Gap, err.to_string()), handle)
                .await
                .map_err(HandleError::Kafka),
        }
    }
}

/// GetSchema through the Pub/Sub client, counted: the one place a schema fetch happens.
pub(super) struct CountingSource<'a> {
    pub(super) pubsub: &'a PubSub,
    pub(super) fetched: &'a AtomicU64,
}

impl SchemaSource for CountingSource<'_> {
    async fn schema_json(&self, schema_id: &str) -> Result<String, SourceError> {
        self.fetched.fetch_add(1, Ordering::Relaxed);
        match self.pubsub.get_schema(schema_id).await {
            Ok(json) => Ok(json),
            // An id the org does not know, or a blank one, is permanent for that id.
            Err(err) if err.is_not_found() => Err(SourceError::NotFound {
                schema_id: schema_id.to_owned(),
                message: err.to_string(),
            }),
            // A revoked or expired session: the caller logs in again (issue 19, item 4).
            Err(err) if err.directive() == Directive::Reauthenticate => {
                Err(SourceError::Unauthenticated(Box::new(err)))
            }
            Err(err) => Err(SourceError::Unavailable(Box::new(err))),
        }
    }
}
