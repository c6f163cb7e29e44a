//! The source pipeline: Salesforce Pub/Sub → decode → Kafka, one task group per channel.
//!
//! Contract (at-least-once, per channel, in replay order):
//! * A **reader** task owns the `Subscribe` stream and hands events to the **processor** through a
//!   bounded channel; credits are topped up only as events are handed on, so a slow Kafka stops
//!   the stream instead of filling memory. A failed stream is rebuilt (backoff with jitter,
//!   re-login on auth errors) from the last event handed on, so nothing is skipped or repeated.
//! * The processor decodes each event with the schema its own `schema_id` names, fans it out to
//!   one Kafka record per record Id, and registers the records in the channel's [`AckWindow`].
//!   An event that cannot be decoded goes to the dead-letter topic with the reason and its raw
//!   bytes; it is never dropped.
//! * An event caused by forcebridge's own write-back (see [`crate::source::echo`]) is dropped (it still
//!   moves the checkpoint), marked with the `forcebridge.echo` header, or passed, per
//!   `source.echo.mode`.
//! * A **checkpointer** writes the window's durable replay id (every earlier event acknowledged by
//!   Kafka) to the checkpoint topic every `checkpoint_interval` and once more on shutdown.
//!   Keepalive `latest_replay_id`s pass through the window too, so they are checkpointed in order.
//! * If Kafka fails to deliver a record, the channel restarts from its durable checkpoint: records
//!   after it may be produced twice (each carries its replay id), none are lost.
//! * With `source.delivery: exactly_once` the channel has its own transactional producer
//!   (`transactional.id` = [`Config::transactional_id`]), initialised before the checkpoints are
//!   read, which fences an earlier owner of the channel. There is no separate checkpointer: every
//!   `checkpoint_interval` the processor waits until Kafka acknowledged every record of the open
//!   transaction, adds the checkpoint record to it and commits. A failure aborts the transaction
//!   and restarts from the last committed checkpoint; being fenced stops the channel.
//! * Cancellation stops intake at once, flushes Kafka within `drain_timeout` and writes the
//!   final checkpoints (commits the last transaction, or aborts it if an event was cut short).
//! * A record larger than Kafka accepts (`message.max.bytes`) dead-letters its event (stage
//!   `size`) instead of failing the channel.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::config::{
    ChannelConfig, Config, DeliveryMode, EchoMode, InitialReplay, ReplayRejectedPolicy,
};
use crate::kafka::ack::{AckWindow, EventHandle};
use crate::kafka::{KafkaError, OutgoingRecord, Producer, TopicAdmin, TransactionFailure};
use crate::ops::telemetry::{ChannelStats, PipelineStats};
use crate::retry::{Backoff, Directive, sleep_or_cancel};
use crate::salesforce::auth::{AuthError, Authenticator, SessionHandle};
use crate::salesforce::proto::ConsumerEvent;
use crate::salesforce::pubsub::{Delivery, PubSub, PubSubError, ReplayStart};
use crate::salesforce::tls::{ClientTls, TlsError};
use crate::source::cdc::schema::{EventSchema, SchemaCache, SchemaSource, SourceError};
use crate::source::cdc::{self, EnvelopeOptions, RawEvent};
use crate::source::checkpoint::{CheckpointError, CheckpointStore};
use crate::source::echo::EchoRule;

/// Why the pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Login failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Http(#[source] reqwest::Error),
    /// The TLS settings (`salesforce.ca_file`) cannot be used.
    #[error("salesforce.ca_file: {0}")]
    Tls(#[from] TlsError),
    /// Pub/Sub failed in a way retrying cannot fix.
    #[error(transparent)]
    PubSub(#[from] PubSubError),
    /// A channel cannot be subscribed to.
    #[error("channel {channel}: {message}")]
    Channel { channel: String, message: String },
    /// Kafka could not be set up.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The checkpoint topic could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Exactly-once mode: another producer with this channel's transactional id took over.
    #[error(
        "channel {channel}: fenced: another forcebridge instance now owns transactional id \
         {transactional_id:?} (are two replicas configured with the same channel?); this one stops"
    )]
    Fenced {
        channel: String,
        transactional_id: String,
    },
}

/// How long `init_transactions` may take (it waits for an earlier owner's transaction to end).
const INIT_TRANSACTIONS_TIMEOUT: Duration = Duration::from_secs(60);

/// The shortest `transaction.timeout.ms` of a channel's producer.
const TRANSACTION_TIMEOUT_FLOOR: Duration = Duration::from_secs(300);

/// librdkafka's default `message.max.bytes`.
const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// Kafka's record size limit: `message.max.bytes` from `kafka.properties`, else librdkafka's
/// default.
fn max_record_bytes(config: &Config) -> usize {
    config
        .kafka
        .properties
        .get("message.max.bytes")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES)
}

/// The size librdkafka counts against `message.max.bytes`: key, value and headers (with a
/// generous allowance for the header framing).
fn record_size<'h>(
    key: &[u8],
    value: Option<&[u8]>,
    headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
) -> usize {
    key.len()
        + value.map_or(0, <[u8]>::len)
        + headers
            .into_iter()
            .map(|(k, v)| k.len() + v.len() + 10)
            .sum::<usize>()
}

/// The longest `forcebridge.error.reason` header of a dead letter.
const MAX_REASON_BYTES: usize = 8 * 1024;

/// `text` cut to at most `max` bytes at a character boundary.
fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

/// Everything the channel tasks share.
struct Shared {
    config: Arc<Config>,
    pubsub: PubSub,
    session: SessionHandle,
    authenticator: Authenticator,
    /// The producer of each channel, by index: clones of one idempotent producer, or one
    /// transactional producer per channel in exactly-once mode.
    producers: Vec<Producer>,
    checkpoints: CheckpointStore,
    /// Creates missing topics when `kafka.create_topics` is on.
    topics: Option<TopicAdmin>,
    schemas: SchemaCache,
    stats: Arc<PipelineStats>,
    /// Re-reads the records of gap and overflow events over REST.
    gaps: crate::source::gap::Rereader,
}

impl Shared {
    /// The source settings (present: checked by [`run`]).
    fn source(&self) -> &crate::config::SourceConfig {
        self.config
            .source
            .as_ref()
            .expect("run() refuses a config without a source")
    }
}

/// Runs the source pipeline until `cancel` fires (then drains) or a fatal error occurs.
pub async fn run(
    config: impl Into<Arc<Config>>,
    stats: Arc<PipelineStats>,
    cancel: CancellationToken,
) -> Result<(), PipelineError> {
    let config: Arc<Config> = config.into();
    let Some(source) = config.source.as_ref() else {
        return Err(PipelineError::Channel {
            channel: "-".into(),
            message: "no `source` section in the config".into(),
        });
    };
    let tls = ClientTls::from_config(&config.salesforce)?;
    let http = crate::salesforce::auth::http_client(&tls, config.salesforce.http_timeout)
        .map_err(PipelineError::Http)?;
    let authenticator = Authenticator::new(&config.salesforce, http.clone());
    // An org briefly unreachable at startup is waited for, as it is once running.
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let session = loop {
        match authenticator.login().await {
            Ok(session) => break SessionHandle::new(session),
            Err(err) if err.is_retryable() => {
                let delay = backoff.next_delay();
                warn!(error = %crate::ops::telemetry::error_chain(&err), ?delay, "login failed; retrying");
                if !sleep_or_cancel(delay, &cancel).await {
                    return Ok(());
                }
            }
            Err(err) => return Err(err.into()),
        }
    };
    let gaps = crate::source::gap::Rereader::for_source(&config, http, session.clone());
    info!(org_id = %session.current().org_id, instance_url = %session.current().instance_url, "logged in to Salesforce");
    let pubsub = PubSub::connect(&config.salesforce.pubsub_endpoint, session.clone(), &tls).await?;
    for channel in &source.channels {
        let topic = loop {
            match pubsub.get_topic(&channel.name).await {
                Ok(topic) => break topic,
                Err(err) if matches!(err.directive(), Directive::Retry) => {
                    let delay = backoff.next_delay();
                    warn!(error = %err, ?delay, "GetTopic failed; retrying");
                    if !sleep_or_cancel(delay, &cancel).await {
                        return Ok(());
                    }
                }
                Err(err) => return Err(err.into()),
            }
        };
        if !topic.can_subscribe {
            return Err(PipelineError::Channel {
                channel: channel.name.clone(),
                message:
                    "the integration user may not subscribe to it (GetTopic can_subscribe = false)"
                        .into(),
            });
        }
    }
    let settings = config.kafka.settings();
    let producers = match source.delivery {
        DeliveryMode::AtLeastOnce => {
            vec![Producer::new(&settings)?; source.channels.len()]
        }
        // Before the checkpoints are read: initialising fences an earlier owner and aborts its
        // open transaction, so what is read next is final.
        DeliveryMode::ExactlyOnce => {
            let mut producers = Vec::with_capacity(source.channels.len());
            for channel in &source.channels {
                producers.push(transactional_producer(&config, &settings, &channel.name).await?);
            }
            producers
        }
    };
    for producer in &producers {
        stats.register_deliveries(producer.delivery_stats());
    }
    let checkpoints =
        CheckpointStore::open(&settings, &config.kafka.checkpoint_topic, &config.name).await?;
    let topics = if config.kafka.create_topics {
        let admin = TopicAdmin::new(&settings)?;
        admin
            .ensure(
                &config.kafka.dead_letter_topic,
                config.kafka.topic_partitions,
                &[],
            )
            .await?;
        Some(admin)
    } else {
        None
    };
    let shared = Arc::new(Shared {
        config,
        topics,
        pubsub,
        session,
        authenticator,
        producers,
        checkpoints,
        schemas: SchemaCache::new(),
        stats,
        gaps,
    });

    let failed = cancel.child_token();
    let mut tasks = JoinSet::new();
    for index in 0..shared.source().channels.len() {
        let shared = shared.clone();
        let cancel = failed.clone();
        let name = shared.source().channels[index].name.clone();
        tasks.spawn(
            async move { run_channel(&shared, index, cancel).await }
                .instrument(info_span!("channel", channel = %name)),
        );
    }
    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        let outcome = joined.unwrap_or_else(|panic| {
            Err(PipelineError::Channel {
                channel: "?".into(),
                message: format!("task panicked: {panic}"),
            })
        });
        if let Err(err) = outcome {
            error!(error = %err, "channel stopped");
            if result.is_ok() {
                result = Err(err);
            }
            failed.cancel();
        }
    }
    for producer in &shared.producers {
        if let Err(err) = producer.flush(shared.config.drain_timeout).await {
            warn!(error = %err, "Kafka flush at shutdown did not complete");
        }
    }
    result
}

/// A channel's transactional producer, registered with the broker.
async fn transactional_producer(
    config: &Config,
    settings: &crate::kafka::KafkaSettings,
    channel: &str,
) -> Result<Producer, PipelineError> {
    let id = config.transactional_id(channel);
    let interval = config
        .source
        .as_ref()
        .map_or(crate::config::MAX_TRANSACTION_INTERVAL, |s| {
            s.checkpoint_interval
        });
    // Long enough for a gap re-sync inside one transaction; a crashed owner's open transaction
    // is aborted by the next owner's registration, not by this timeout.
    let timeout = (2 * interval + config.drain_timeout).max(TRANSACTION_TIMEOUT_FLOOR);
    let producer = Producer::transactional(settings, &id, timeout)?;
    producer
        .init_transactions(INIT_TRANSACTIONS_TIMEOUT)
        .await
        .map_err(|err| PipelineError::Channel {
            channel: channel.to_owned(),
            message: format!(
                "`source.delivery: exactly_once` needs Kafka transactions: registering transactional id {id:?} failed: {}",
                crate::ops::telemetry::error_chain(&err)
            ),
        })?;
    info!(transactional_id = %id, "transactional producer registered");
    Ok(producer)
}

/// One channel: attempts that each run reader + processor + checkpointer from the durable
/// checkpoint, until cancelled or a fatal error.
async fn run_channel(
    shared: &Arc<Shared>,
    index: usize,
    cancel: CancellationToken,
) -> Result<(), PipelineError> {
    let channel = &shared.source().channels[index];
    let stats = shared.stats.channel(&channel.name);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        let start = match shared.checkpoints.get(&channel.name) {
            Some(checkpoint) => ReplayStart::After(checkpoint.replay_id),
            None => match channel.initial_replay {
                InitialReplay::Latest => ReplayStart::Latest,
                InitialReplay::Earliest => ReplayStart::Earliest,
            },
        };
        info!(?start, "starting channel");
        match run_attempt(shared, index, &stats, start, &cancel).await {
            Ok(()) => return Ok(()),
            Err(AttemptError::Fatal(err)) => return Err(err),
            Err(AttemptError::DeliveryFailed(reason)) => {
                let producer = &shared.producers[index];
                if producer.transactional_id().is_some() {
                    warn!(%reason, "aborting the channel's Kafka transaction");
                    if let Err(err) = producer
                        .abort_transaction(shared.config.drain_timeout)
                        .await
                    {
                        return Err(transaction_error(&channel.name, err));
                    }
                }
                let delay = backoff.next_delay();
                warn!(%reason, ?delay, "Kafka did not acknowledge a record; restarting the channel from its checkpoint");
                if !sleep_or_cancel(delay, &cancel).await {
                    return Ok(());
                }
            }
        }
    }
}

enum AttemptError {
    Fatal(PipelineError),
    DeliveryFailed(String),
}

/// A failed transaction step: fenced or fatal stops the channel; anything else aborts and
/// restarts the attempt.
fn transaction_error(channel: &str, err: KafkaError) -> PipelineError {
    match err.transaction_failure() {
        TransactionFailure::Fenced => PipelineError::Fenced {
            channel: channel.to_owned(),
            transactional_id: match &err {
                KafkaError::Transaction {
                    transactional_id, ..
                } => transactional_id.clone(),
                _ => String::new(),
            },
        },
        TransactionFailure::Unsupported => PipelineError::Channel {
            channel: channel.to_owned(),
            message: format!(
                "the Kafka cluster does not support transactions, which `source.delivery: exactly_once` needs; use `at_least_once` ({})",
                crate::ops::telemetry::error_chain(&err)
            ),
        },
        _ => PipelineError::Kafka(err),
    }
}

/// [`transaction_error`] for a step inside an attempt.
fn attempt_transaction_error(channel: &str, err: KafkaError) -> AttemptError {
    match err.transaction_failure() {
        TransactionFailure::Fenced
        | TransactionFailure::Fatal
        | TransactionFailure::Unsupported => AttemptError::Fatal(transaction_error(channel, err)),
        TransactionFailure::Abortable | TransactionFailure::Retriable => {
            AttemptError::DeliveryFailed(crate::ops::telemetry::error_chain(&err))
        }
    }
}

/// One attempt of a channel: the reader in a task of its own, so that it tops credits up and
/// decodes the next response while the processor works (on the other core), and the processor
/// with the checkpointer in this one. Either side ending ends the attempt.
async fn run_attempt(
    shared: &Arc<Shared>,
    index: usize,
    stats: &Arc<ChannelStats>,
    start: ReplayStart,
    cancel: &CancellationToken,
) -> Result<(), AttemptError> {
    let channel = &shared.source().channels[index];
    let producer = &shared.producers[index];
    let transactions = producer.transactional_id().is_some();
    if transactions {
        producer
            .begin_transaction()
            .await
            .map_err(|err| attempt_transaction_error(&channel.name, err))?;
    }
    let window = AckWindow::new();
    let attempt = cancel.child_token();
    // However this attempt ends (even dropped), its reader task stops with it.
    let _stop_reader = attempt.clone().drop_guard();
    let capacity = shared.source().batch_size as usize;
    let (tx, rx) = mpsc::channel::<Item>(capacity);

    let reader = tokio::spawn(
        {
            let shared = shared.clone();
            let stats = stats.clone();
            let attempt = attempt.clone();
            async move {
                let channel = &shared.source().channels[index];
                let read = read_stream(&shared, channel, &stats, start, tx, &attempt).await;
                attempt.cancel();
                read
            }
        }
        .in_current_span(),
    );
    let processor = process(shared, channel, producer, stats, &window, rx, &attempt);
    // In exactly-once mode the processor commits the checkpoints inside its transactions.
    let checkpointer = async {
        if transactions {
            Ok(())
        } else {
            checkpoint_loop(shared, channel, producer, stats, &window, &attempt).await
        }
    };
    let (read, processed, checkpointed) = tokio::join!(
        async {
            reader.await.unwrap_or_else(|panic| {
                attempt.cancel();
                Err(AttemptError::Fatal(PipelineError::Channel {
                    channel: channel.name.clone(),
                    message: format!("the reader task panicked: {panic}"),
                }))
            })
        },
        async {
            let r = processor.await;
            attempt.cancel();
            r
        },
        checkpointer
    );
    read.and(processed).and(checkpointed)
}

/// What the reader hands the processor.
enum Item {
    /// An event, with its replay id (shared with the event's own, not copied).
    Event {
        event: ConsumerEvent,
        replay_id: Bytes,
    },
    /// An empty FetchResponse: the position moved to this replay id.
    Keepalive(Bytes),
    /// The org rejected `rejected`; the stream resumed from `resumed_from`: events may be missing.
    Gap {
        rejected: Bytes,
        resumed_from: ReplayRejectedPolicy,
        reason: String,
    },
}

/// Owns the Subscribe stream; rebuilds it on transient errors, applies the replay-rejected
/// policy once.
async fn read_stream(
    shared: &Shared,
    channel: &ChannelConfig,
    stats: &ChannelStats,
    start: ReplayStart,
    tx: mpsc::Sender<Item>,
    cancel: &CancellationToken,
) -> Result<(), AttemptError> {
    // Where a rebuilt stream resumes: after the last replay id handed to the processor (which
    // will produce it), or the attempt's start.
    let mut position = start;
    let source = shared.source();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
    let mut policy_applied = false;
    let _down = stats.stream_down_on_drop();
    loop {
        let start = position.clone();
        let opened = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            opened = shared.pubsub.subscribe(&channel.name, start.clone(), source.batch_size, source.stream_idle_timeout) => opened,
        };
        let error = match opened {
            Err(err) => err,
            Ok(mut subscription) => {
                stats.streams_opened.fetch_add(1, Ordering::Relaxed);
                stats.stream_up.store(true, Ordering::Relaxed);
                debug!("subscribed");
                loop {
                    let delivery = tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        delivery = subscription.next() => delivery,
                    };
                    let delivery = match delivery {
                        Ok(d) => d,
                        Err(err) => break err,
                    };
                    backoff.reset();
                    let (item, replay_id) = match delivery {
                        Delivery::Event(event) => {
                            stats.events_received.fetch_add(1, Ordering::Relaxed);
                            stats.note_event();
                            let replay_id = event.replay_id.clone();
                            let item = Item::Event {
                                event,
                                replay_id: replay_id.clone(),
                            };
                            (item, replay_id)
                        }
                        Delivery::Keepalive { latest_replay_id } => {
                            stats.keepalives.fetch_add(1, Ordering::Relaxed);
                            (Item::Keepalive(latest_replay_id.clone()), latest_replay_id)
                        }
                    };
                    if tx.send(item).await.is_err() {
                        return Ok(()); // the processor stopped; it reports why
                    }
                    if !replay_id.is_empty() {
                        position = ReplayStart::After(replay_id);
                    }
                }
            }
        };
        stats.stream_failures.fetch_add(1, Ordering::Relaxed);
        stats.stream_up.store(false, Ordering::Relaxed);
        match error.directive() {
            Directive::ReplayRejected
                if source.replay_rejected != ReplayRejectedPolicy::Fail && !policy_applied =>
            {
                // Once per attempt: a preset cannot be rejected, so this never loops.
                policy_applied = true;
                let resumed_from = source.replay_rejected;
                let rejected = match start {
                    ReplayStart::After(id) => id,
                    _ => Bytes::new(),
                };
                error!(error = %error, replay_id = %hex::encode(&rejected), ?resumed_from, "the org rejected the replay id; resuming: events may be missing");
                stats.replay_gaps.fetch_add(1, Ordering::Relaxed);
                let gap = Item::Gap {
                    rejected,
                    resumed_from,
                    reason: error.to_string(),
                };
                if tx.send(gap).await.is_err() {
                    return Ok(());
                }
                position = match resumed_from {
                    ReplayRejectedPolicy::Latest => ReplayStart::Latest,
                    _ => ReplayStart::Earliest,
                };
                continue;
            }
            Directive::Fatal | Directive::ReplayRejected => {
                return Err(AttemptError::Fatal(error.into()));
            }
            Directive::Reauthenticate => {
                warn!(error = %error, "session rejected; logging in again");
                match shared.authenticator.login().await {
                    Ok(session) => shared.session.replace(session),
                    Err(err) if err.is_retryable() => warn!(error = %err, "re-login failed"),
                    Err(err) => return Err(AttemptError::Fatal(err.into())),
                }
            }
            Directive::Retry => {}
        }
        let delay = backoff.next_delay();
        warn!(error = %error, ?delay, attempt = backoff.attempts(), "stream failed; resubscribing");
        if !sleep_or_cancel(delay, cancel).await {
            return Ok(());
        }
    }
}

/// Decodes and produces events in order.
async fn process(
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

/// One open Kafka transaction of a channel (exactly-once mode).
struct Transaction<'a> {
    shared: &'a Shared,
    channel: &'a str,
    producer: &'a Producer,
    stats: &'a ChannelStats,
    window: &'a AckWindow,
    /// The checkpoint of the last committed transaction.
    committed: Option<Bytes>,
    ticker: tokio::time::Interval,
}

impl Transaction<'_> {
    /// Commits the open transaction with the checkpoint of everything processed so far; with
    /// `reopen`, begins the next one.
    ///
    /// Every record of the transaction is acknowledged before the checkpoint record is sent, so
    /// the checkpoint follows its records in the log: even a broker that does not filter aborted
    /// transactions for `read_committed` readers never shows a checkpoint without its records.
    async fn commit(&mut self, reopen: bool) -> Result<(), AttemptError> {
        let drain = self.shared.config.drain_timeout;
        let since = crate::ops::telemetry::unix_millis();
        let idle = self.window.in_flight() == 0;
        self.producer
            .flush(drain)
            .await
            .map_err(|err| AttemptError::DeliveryFailed(err.to_string()))?;
        // The transaction may hold records past a failed event (also on the last commit: the
        // head of a gap re-sync abandoned by the stop): committing them with a checkpoint before
        // them would repeat them after the restart. Abort; the restart redoes the interval.
        if let Some(reason) = self.window.failure() {
            return Err(AttemptError::DeliveryFailed(reason));
        }
        let durable = self.window.durable();
        let Some(durable) = durable.filter(|d| self.committed.as_ref() != Some(d)) else {
            if idle {
                self.stats.note_caught_up(since, false);
            }
            if !reopen {
                // Nothing new: end the empty transaction.
                self.producer
                    .abort_transaction(drain)
                    .await
                    .map_err(|err| attempt_transaction_error(self.channel, err))?;
            }
            return Ok(());
        };
        let checkpoints = &self.shared.checkpoints;
        let (key, value) = checkpoints.record(self.channel, &durable);
        self.producer
            .deliver([OutgoingRecord {
                topic: checkpoints.topic(),
                key: Some(key.as_bytes()),
                value: Some(&value),
                headers: &[],
            }])
            .await
            .map_err(AttemptError::DeliveryFailed)?;
        let mut attempts = 0;
        loop {
            match self.producer.commit_transaction(drain).await {
                Ok(()) => break,
                Err(err)
                    if err.transaction_failure() == TransactionFailure::Retriable
                        && attempts < 3 =>
                {
                    attempts += 1;
                    warn!(error = %crate::ops::telemetry::error_chain(&err), "committing the transaction again");
                }
                // Still retriable after the retries: the commit may have succeeded. Aborting and
                // restarting from the checkpoint remembered before it could repeat committed
                // records; stop instead, so the next start reads the committed checkpoint.
                Err(err) if err.transaction_failure() == TransactionFailure::Retriable => {
                    return Err(AttemptError::Fatal(PipelineError::Channel {
                        channel: self.channel.to_owned(),
                        message: format!(
                            "the outcome of the Kafka transaction commit is unknown ({}); stopping",
                            crate::ops::telemetry::error_chain(&err)
                        ),
                    }));
                }
                Err(err) => return Err(attempt_transaction_error(self.channel, err)),
            }
        }
        checkpoints.remember(self.channel, &durable);
        self.stats
            .checkpoints_written
            .fetch_add(1, Ordering::Relaxed);
        self.stats.note_caught_up(since, true);
        self.committed = Some(durable);
        if reopen {
            self.producer
                .begin_transaction()
                .await
                .map_err(|err| attempt_transaction_error(self.channel, err))?;
        }
        Ok(())
    }
}

/// Waits for the next commit time of `transaction`; never, without one.
async fn commit_due(transaction: &mut Option<Transaction<'_>>) {
    match transaction {
        Some(t) => {
            t.ticker.tick().await;
        }
        None => std::future::pending().await,
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
        max_record_bytes: max_record_bytes(&shared.config),
        stats,
        window,
        options: EnvelopeOptions {
            tombstones: shared.source().tombstones,
        },
        template: channel
            .topic
            .as_deref()
            .unwrap_or(&shared.source().topic_template),
        routes: HashMap::new(),
        echo: echo_rule(shared),
        scratch: cdc::Scratch::default(),
        last_schema: None,
    };
    loop {
        if let Some(reason) = window.failure() {
            return Err(AttemptError::DeliveryFailed(reason));
        }
        let item = tokio::select! {
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
                .map_err(AttemptError::DeliveryFailed)?;
            }
            Item::Keepalive(latest_replay_id) => {
                if !latest_replay_id.is_empty() {
                    window.begin(latest_replay_id).seal();
                }
            }
            Item::Event { event, replay_id } => {
                match processor.handle(&event, replay_id, cancel).await {
                    Ok(()) => {}
                    Err(HandleError::Cancelled) => return Ok(()),
                    Err(HandleError::Kafka(err)) => {
                        return Err(AttemptError::DeliveryFailed(err.to_string()));
                    }
                }
            }
        }
    }
}

/// Writes a gap marker to the dead-letter topic and waits until Kafka has it: a record saying
/// which replay id the org rejected and where the channel resumed, so a consumer knows events may
/// be missing.
async fn write_gap_marker(
    shared: &Shared,
    producer: &Producer,
    channel: &str,
    rejected: &[u8],
    resumed_from: ReplayRejectedPolicy,
    reason: &str,
) -> Result<(), String> {
    let rejected_hex = hex::encode(rejected);
    let resumed = match resumed_from {
        ReplayRejectedPolicy::Latest => "latest",
        _ => "earliest",
    };
    let value = serde_json::json!({
        "gap": true,
        "channel": channel,
        "rejected_replay_id": rejected_hex,
        "resumed_from": resumed,
        "reason": reason,
    })
    .to_string();
    let headers: [(&str, &[u8]); 4] = [
        ("forcebridge.error.stage", b"replay"),
        ("forcebridge.error.reason", reason.as_bytes()),
        ("forcebridge.channel", channel.as_bytes()),
        ("forcebridge.replay_id", rejected_hex.as_bytes()),
    ];
    let record = OutgoingRecord {
        topic: &shared.config.kafka.dead_letter_topic,
        key: Some(channel.as_bytes()),
        value: Some(value.as_bytes()),
        headers: &headers,
    };
    // The marker is durable before any event after the gap is processed.
    producer.deliver([record]).await
}

enum HandleError {
    Cancelled,
    Kafka(KafkaError),
}

/// Why an event goes to the dead-letter topic.
struct DeadLetter {
    stage: &'static str,
    reason: String,
}

/// Where the records of one object go: rendered, created and counted once per object.
struct Route {
    topic: String,
    produced: Arc<AtomicU64>,
}

/// One channel's processing state, owned by its processor task.
struct Processor<'a> {
    shared: &'a Shared,
    channel: &'a ChannelConfig,
    /// The channel's producer (transactional in exactly-once mode).
    producer: &'a Producer,
    /// Kafka's record size limit: larger records dead-letter their event.
    max_record_bytes: usize,
    stats: &'a ChannelStats,
    window: &'a AckWindow,
    options: EnvelopeOptions,
    template: &'a str,
    /// Object API name → its route.
    routes: HashMap<String, Route>,
    /// `None` when `source.echo.mode` is `pass`.
    echo: Option<(EchoRule, EchoMode)>,
    /// The decoder's reusable buffers.
    scratch: cdc::Scratch,
    /// The schema of the previous event.
    last_schema: Option<Arc<EventSchema>>,
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
    /// Decodes one event and produces its records (or dead-letters it), registered in the window
    /// under `replay_id`.
    async fn handle(
        &mut self,
        consumer_event: &ConsumerEvent,
        replay_id: Bytes,
        cancel: &CancellationToken,
    ) -> Result<(), HandleError> {
        let empty = crate::salesforce::proto::ProducerEvent::default();
        let event = consumer_event.event.as_ref().unwrap_or(&empty);
        let raw = RawEvent {
            channel: &self.channel.name,
            replay_id: &consumer_event.replay_id,
            event_id: &event.id,
            schema_id: &event.schema_id,
            payload: &event.payload,
        };
        let handle = self.window.begin(replay_id);
        let records = match self.decode(&raw, cancel).await {
            Err(None) => return Err(HandleError::Cancelled),
            Err(Some(dead)) => Err(dead),
            Ok(records) => self.check_sizes(&records).map(|()| records),
        };
        let records = match records {
            Ok(records) => self.resolve_routes(&records).await?.map(|()| records),
            Err(dead) => Err(dead),
        };
        match records {
            Ok(records) if crate::source::gap::is_gap(&records) => {
                self.handle_gap(&records, &raw, &handle, cancel).await?;
            }
            Ok(records) => {
                for record in &records {
                    let route = &self.routes[&record.object];
                    let headers: Vec<(&str, &[u8])> = record
                        .headers
                        .iter()
                        .map(|(k, v)| (*k, v.as_bytes()))
                        .collect();
                    let outgoing = OutgoingRecord {
                        topic: &route.topic,
                        key: Some(record.key.as_bytes()),
                        value: record.value.as_deref(),
                        headers: &headers,
                    };
                    self.producer
                        .send(outgoing, handle.token())
                        .await
                        .map_err(HandleError::Kafka)?;
                    route.produced.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(dead) => self.dead_letter(&raw, &dead, &handle).await?,
        }
        handle.seal();
        Ok(())
    }

    /// Refuses an event with a record Kafka would refuse as too large, before any of its
    /// records is sent.
    fn check_sizes(&self, records: &[cdc::OutRecord]) -> Result<(), DeadLetter> {
        for record in records {
            let headers = record.headers.iter().map(|(k, v)| (*k, v.as_bytes()));
            let size = record_size(record.key.as_bytes(), record.value.as_deref(), headers);
            if size > self.max_record_bytes {
                return Err(DeadLetter {
                    stage: "size",
                    reason: format!(
                        "the Kafka record of {} {} would be {size} bytes, over the limit of {} (kafka.properties.message.max.bytes)",
                        record.object, record.key, self.max_record_bytes
                    ),
                });
            }
        }
        Ok(())
    }

    /// Makes sure every object of `records` has a route. A topic name the template cannot make
    /// dead-letters the whole event; a topic Kafka cannot create fails the attempt.
    async fn resolve_routes(
        &mut self,
        records: &[cdc::OutRecord],
    ) -> Result<Result<(), DeadLetter>, HandleError> {
        for record in records {
            if self.routes.contains_key(&record.object) {
                continue;
            }
            let topic =
                match crate::kafka::render_topic(self.template, &record.object, &self.channel.name)
                {
                    Ok(topic) => topic,
                    Err(err) => {
                        return Ok(Err(DeadLetter {
                            stage: "route",
                            reason: err.to_string(),
                        }));
                    }
                };
            if let Some(admin) = &self.shared.topics {
                admin
                    .ensure(&topic, self.shared.config.kafka.topic_partitions, &[])
                    .await
                    .map_err(HandleError::Kafka)?;
            }
            let produced = self.stats.topic_counter(&topic);
            self.routes
                .insert(record.object.clone(), Route { topic, produced });
        }
        Ok(Ok(()))
    }

    /// Writes the raw event to the dead-letter topic with the reason in headers.
    async fn dead_letter(
        &self,
        raw: &RawEvent<'_>,
        dead: &DeadLetter,
        handle: &EventHandle,
    ) -> Result<(), HandleError> {
        let replay_hex = hex::encode(raw.replay_id);
        warn!(
            stage = dead.stage,
            reason = %dead.reason,
            replay_id = %replay_hex,
            schema_id = raw.schema_id,
            "event sent to the dead-letter topic"
        );
        self.stats
            .events_dead_lettered
            .fetch_add(1, Ordering::Relaxed);
        let original_len = raw.payload.len().to_string();
        // A reason (e.g. a long REST error body) never makes the dead letter itself too large.
        let reason = truncate_utf8(&dead.reason, MAX_REASON_BYTES);
        let mut headers: Vec<(&str, &[u8])> = vec![
            ("forcebridge.error.stage", dead.stage.as_bytes()),
            ("forcebridge.error.reason", reason.as_bytes()),
            ("forcebridge.channel", raw.channel.as_bytes()),
            ("forcebridge.replay_id", replay_hex.as_bytes()),
            ("forcebridge.schema_id", raw.schema_id.as_bytes()),
            ("forcebridge.event_id", raw.event_id.as_bytes()),
        ];
        // The raw bytes, unless they alone exceed Kafka's limit: then their head, marked.
        let framing = record_size(replay_hex.as_bytes(), None, headers.iter().copied()) + 64;
        let room = self.max_record_bytes.saturating_sub(framing);
        let value = if raw.payload.len() > room {
            headers.push(("forcebridge.error.truncated_from", original_len.as_bytes()));
            &raw.payload[..room]
        } else {
            raw.payload
        };
        let outgoing = OutgoingRecord {
            topic: &self.shared.config.kafka.dead_letter_topic,
            key: Some(replay_hex.as_bytes()),
            value: Some(value),
            headers: &headers,
        };
        self.producer
            .send(outgoing, handle.token())
            .await
            .map_err(HandleError::Kafka)
    }

    /// Decodes one event into Kafka records. `Err(None)`: cancelled while waiting for a schema.
    async fn decode(
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
        let source = CountingSource {
            pubsub: &self.shared.pubsub,
            fetched: &self.shared.stats.schemas_fetched,
        };
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let schema = loop {
            match self.shared.schemas.get(raw.schema_id, &source).await {
                Ok(schema) => break schema,
                Err(err) if err.is_retryable() => {
                    let delay = backoff.next_delay();
                    warn!(error = %err, ?delay, "schema fetch failed; retrying");
                    if !sleep_or_cancel(delay, cancel).await {
                        return Err(None);
                    }
                }
                Err(err) => {
                    return Err(Some(DeadLetter {
                        stage: "schema",
                        reason: err.to_string(),
                    }));
                }
            }
        };
        let records = self.encode(&schema, raw);
        self.last_schema = Some(schema);
        records
    }

    /// Decodes one event with its schema into Kafka records, minus echoes (per `source.echo`).
    fn encode(
        &mut self,
        schema: &EventSchema,
        raw: &RawEvent<'_>,
    ) -> Result<Vec<cdc::OutRecord>, Option<DeadLetter>> {
        let encoded =
            cdc::encode(schema, raw, &self.options, &mut self.scratch).map_err(|err| {
                Some(DeadLetter {
                    stage: err.stage(),
                    reason: err.to_string(),
                })
            })?;
        let mut records = encoded.records;
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
                        .push((cdc::HEADER_ECHO, reason.as_str().to_owned()));
                }
            }
        }
        Ok(records)
    }
}

impl Processor<'_> {
    /// A gap or overflow event: re-read its records over REST ([`crate::source::gap`]) under the event's
    /// own handle; what cannot be re-read goes to the dead-letter topic (stage `gap`).
    async fn handle_gap(
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
                    .dead_letter(raw, &failed("schema", err.to_string()), handle)
                    .await;
            }
        };
        let route = &self.routes[&records[0].object];
        let target = crate::source::gap::Target {
            producer: self.producer,
            topic: &route.topic,
            handle,
            produced: &route.produced,
            stats: self.stats,
            tombstones: self.options.tombstones,
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
            Err(err) => {
                self.dead_letter(raw, &failed("gap", err.to_string()), handle)
                    .await
            }
        }
    }
}

/// GetSchema through the Pub/Sub client, counted: the one place a schema fetch happens.
struct CountingSource<'a> {
    pubsub: &'a PubSub,
    fetched: &'a AtomicU64,
}

impl SchemaSource for CountingSource<'_> {
    async fn schema_json(&self, schema_id: &str) -> Result<String, SourceError> {
        self.fetched.fetch_add(1, Ordering::Relaxed);
        self.pubsub.schema_json(schema_id).await
    }
}

/// Writes the durable replay id every `checkpoint_interval`, and once more when the attempt ends.
async fn checkpoint_loop(
    shared: &Shared,
    channel: &ChannelConfig,
    producer: &Producer,
    stats: &ChannelStats,
    window: &AckWindow,
    cancel: &CancellationToken,
) -> Result<(), AttemptError> {
    let mut last_saved: Option<Bytes> = shared.checkpoints.get(&channel.name).map(|c| c.replay_id);
    let mut ticker = tokio::time::interval(shared.source().checkpoint_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = cancel.cancelled() => true,
            _ = ticker.tick() => false,
        };
        if stopping {
            // Drain: let in-flight records land (bounded), then write the final position.
            let drain = shared.config.drain_timeout;
            let _ = tokio::time::timeout(drain, async {
                let _ = producer.flush(drain).await;
                window.wait_idle().await;
            })
            .await;
        }
        let since = crate::ops::telemetry::unix_millis();
        let idle = window.in_flight() == 0;
        if let Some(durable) = window.durable()
            && last_saved.as_ref() != Some(&durable)
        {
            shared
                .checkpoints
                .save(&channel.name, &durable)
                .await
                // Kafka unreachable for longer than a delivery may wait: restart the channel from
                // the last saved checkpoint (after a backoff) rather than stop.
                .map_err(|err| {
                    AttemptError::DeliveryFailed(crate::ops::telemetry::error_chain(&err))
                })?;
            stats.checkpoints_written.fetch_add(1, Ordering::Relaxed);
            stats.note_caught_up(since, true);
            last_saved = Some(durable);
        } else if idle {
            stats.note_caught_up(since, false);
        }
        if stopping {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_cut_at_a_character_boundary() {
        assert_eq!(truncate_utf8("short", 10), "short");
        assert_eq!(truncate_utf8("abcdef", 3), "abc");
        // 'é' is two bytes: a cut inside it backs off to before it.
        assert_eq!(truncate_utf8("aé", 2), "a");
        assert!(truncate_utf8(&"x".repeat(20_000), MAX_REASON_BYTES).len() == MAX_REASON_BYTES);
    }

    #[test]
    fn record_size_counts_key_value_and_headers() {
        let headers: [(&str, &[u8]); 2] = [("a", b"12"), ("bc", b"")];
        assert_eq!(
            record_size(b"key", Some(b"value"), headers.iter().copied()),
            3 + 5 + (1 + 2 + 10) + (2 + 10)
        );
        assert_eq!(record_size(b"", None, std::iter::empty()), 0);
    }
}
