//! The write-back sink: Kafka write-back topics → Salesforce, through sObject Collections inside
//! `/composite`, last-write-wins against `SystemModstamp`.
//!
//! Contract (at least once, in order per record):
//! * A consumer in group `sink.group_id` reads `sink.topics`. Each record is parsed
//!   ([`message`]); a record that is not a valid write-back message is dead-lettered with the
//!   reason naming the field, and the sink goes on.
//! * The **batcher** fills a batch up to `sink.batch_records` or `sink.linger`. A batch holds at
//!   most one write per record (Id or External Id): a second write to a record closes the batch,
//!   and waits until no batch in flight holds that record, so writes to one record reach
//!   Salesforce in Kafka order even with `sink.concurrency` batches in flight.
//! * **Writers** ([`writer`]) read the batch's current records once (last-write-wins), write,
//!   and finish every record: written, conflict (conflicts topic) or dead letter.
//! * A consumer offset is committed ([`offsets`]) only once its record, and every earlier record
//!   of its partition, is finished; every `sink.commit_interval`, before a rebalance gives up a
//!   partition, and at shutdown.
//! * Every REST call carries `Sforce-Call-Options: client=<client_tag>` so that the source
//!   recognises the changes as echoes. Writing pauses while the daily API allowance is down to
//!   `sink.api_reserve` ([`crate::salesforce::rest::LimitGuard`]).
//! * A failure the batch cannot settle (Salesforce unreachable after retries, Kafka refusing a
//!   dead letter) restarts the consumer from the committed offsets after a backoff: records may
//!   be written twice, none is lost. Cancellation stops intake, lets in-flight batches finish
//!   within `drain_timeout`, and commits.

pub mod message;
pub mod offsets;
pub mod plan;
mod reporter;
mod writer;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use crate::config::{Config, SinkConfig};
use crate::kafka::{KafkaError, Producer, TopicAdmin};
use crate::ops::telemetry::SinkStats;
use crate::retry::{Backoff, sleep_or_cancel};
use crate::salesforce::auth::{AuthError, Authenticator, SessionHandle};
use crate::salesforce::rest::{LimitGuard, RestClient};
use message::{MessageError, ParseOptions};
use offsets::{Offsets, SinkContext};
use reporter::{Failure, Origin, Reporter};
use writer::{Item, WriteError, Writer};

/// Errors that stop the sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The config has no `sink` section.
    #[error("no `sink` section in the config")]
    NotConfigured,
    /// Login failed in a way retrying cannot fix.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Http(#[source] reqwest::Error),
    /// The TLS settings (`salesforce.ca_file`) cannot be used.
    #[error("salesforce.ca_file: {0}")]
    Tls(#[from] crate::salesforce::tls::TlsError),
    /// Kafka could not be set up.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The consumer could not be created or subscribed.
    #[error("Kafka consumer: {0}")]
    Consumer(#[source] rdkafka::error::KafkaError),
}

/// Why one attempt ended.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error(transparent)]
    Fatal(SinkError),
    #[error("{0}")]
    Restart(String),
}

/// Everything the attempts share.
struct Shared {
    config: Arc<Config>,
    writer: Writer,
    stats: Arc<SinkStats>,
}

/// Runs the sink until `cancel` fires (then drains) or a fatal error occurs.
pub async fn run(
    config: impl Into<Arc<Config>>,
    stats: Arc<SinkStats>,
    cancel: CancellationToken,
) -> Result<(), SinkError> {
    let config: Arc<Config> = config.into();
    let sink = config.sink.as_ref().ok_or(SinkError::NotConfigured)?;
    let tls = crate::salesforce::tls::ClientTls::from_config(&config.salesforce)?;
    let http = crate::salesforce::auth::http_client(&tls, config.salesforce.http_timeout)
        .map_err(SinkError::Http)?;
    let authenticator = Authenticator::new(&config.salesforce, http.clone());
    let session = authenticator.login().await?;
    let own_user = session.user_id.clone();
    info!(org_id = %session.org_id, user_id = ?own_user, "sink logged in to Salesforce");
    let rest = rest_client(&config, sink, http, SessionHandle::new(session), &stats);
    let settings = config.kafka.settings();
    let producer = Producer::new(&settings)?;
    if config.kafka.create_topics {
        let admin = TopicAdmin::new(&settings)?;
        for topic in [
            config.sink_dead_letter_topic(),
            sink.conflicts_topic.as_str(),
        ] {
            admin
                .ensure(topic, config.kafka.topic_partitions, &[])
                .await?;
        }
    }
    let writer = Writer {
        rest,
        reporter: Reporter {
            producer: producer.clone(),
            dead_letter_topic: config.sink_dead_letter_topic().to_owned(),
            conflicts_topic: sink.conflicts_topic.clone(),
            stats: stats.clone(),
        },
        last_write_wins: sink.last_write_wins,
        own_user,
        max_attempts: sink.max_attempts,
        initial_backoff: sink.initial_backoff,
        max_backoff: sink.max_backoff,
    };
    let shared = Shared {
        config: config.clone(),
        writer,
        stats,
    };

    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let result = loop {
        match run_attempt(&shared, &cancel).await {
            Ok(()) => break Ok(()),
            Err(AttemptError::Fatal(e)) => break Err(e),
            Err(AttemptError::Restart(reason)) => {
                let delay = backoff.next_delay();
                warn!(%reason, ?delay, "sink restarting from the committed offsets");
                if !sleep_or_cancel(delay, &cancel).await {
                    break Ok(());
                }
            }
        }
    };
    if let Err(error) = producer.flush(config.drain_timeout).await {
        warn!(%error, "Kafka flush at shutdown did not complete");
    }
    result
}

/// The sink's REST client: API version, client tag and allowance reserve from the config.
pub fn rest_client(
    config: &Config,
    sink: &SinkConfig,
    http: reqwest::Client,
    session: SessionHandle,
    stats: &SinkStats,
) -> RestClient {
    RestClient::new(
        http.clone(),
        Authenticator::new(&config.salesforce, http),
        session,
        config.salesforce.api_version.clone(),
        config.client_tag().to_owned(),
        LimitGuard::with_gauges(
            sink.api_reserve,
            sink.limits_poll_interval,
            stats.api_limits.clone(),
        ),
    )
    .with_stats(stats.api.clone())
}

/// A batch being filled.
#[derive(Default)]
struct Batch {
    items: Vec<Item>,
    keys: HashSet<String>,
    started: Option<tokio::time::Instant>,
}

/// Converts a consumed record into an owned [`Origin`].
fn origin_of<M: Message>(m: &M) -> Origin {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    Origin {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        headers,
    }
}

fn message_failure(e: &MessageError) -> Failure {
    let field = match e {
        MessageError::NotJson(_) => String::new(),
        MessageError::Missing { field, .. } => (*field).to_owned(),
        MessageError::Invalid { field, .. } => field.clone(),
    };
    Failure {
        stage: "sink.message",
        code: "INVALID_MESSAGE".into(),
        message: e.to_string(),
        fields: if field.is_empty() {
            vec![]
        } else {
            vec![field]
        },
        attempts: 0,
    }
}

fn consumer_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.kafka.bootstrap_servers)
        .set("group.id", config.sink_group_id())
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed");
    for (k, v) in &config.kafka.properties {
        c.set(k, v);
    }
    c
}

/// One consumer lifetime: intake, writers and committer, until cancel or a failure.
async fn run_attempt(shared: &Shared, cancel: &CancellationToken) -> Result<(), AttemptError> {
    let sink = shared.config.sink.as_ref().expect("checked in run");
    let offsets = Arc::new(Offsets::default());
    let consumer: StreamConsumer<SinkContext> = consumer_config(&shared.config)
        .create_with_context(SinkContext {
            offsets: offsets.clone(),
        })
        .map_err(|e| AttemptError::Fatal(SinkError::Consumer(e)))?;
    let topics: Vec<&str> = sink.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|e| AttemptError::Fatal(SinkError::Consumer(e)))?;
    let consumer = Arc::new(consumer);
    shared.stats.consumer_running.store(true, Ordering::Relaxed);
    let _not_running = crate::ops::telemetry::ClearOnDrop(&shared.stats.consumer_running);
    info!(topics = ?sink.topics, group = %shared.config.sink_group_id(), "sink consuming");

    // Writers stop at `hard`, which fires only when draining overruns its deadline.
    let hard = CancellationToken::new();
    let failed = CancellationToken::new();
    let failure: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let (batch_tx, batch_rx) = mpsc::channel::<Batch>(sink.concurrency);
    let batch_rx = Arc::new(Mutex::new(batch_rx));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<HashSet<String>>();
    let mut workers = JoinSet::new();
    for n in 0..sink.concurrency {
        let writer = shared.writer.clone();
        let rx = batch_rx.clone();
        let done = done_tx.clone();
        let hard = hard.clone();
        let failed = failed.clone();
        let failure = failure.clone();
        workers.spawn(
            async move {
                loop {
                    let Some(batch) = rx.lock().await.recv().await else {
                        return;
                    };
                    let keys = batch.keys;
                    let records = batch.items.len();
                    let result = writer
                        .write_batch(batch.items, &hard)
                        .instrument(info_span!("batch", records))
                        .await;
                    let _ = done.send(keys);
                    match result {
                        Ok(()) => {}
                        Err(WriteError::Cancelled) => return,
                        Err(e) => {
                            error!(error = %e, records, "batch failed; its records will be repeated");
                            failure
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .get_or_insert_with(|| e.to_string());
                            failed.cancel();
                            return;
                        }
                    }
                }
            }
            .instrument(info_span!("sink_writer", writer = n)),
        );
    }
    drop(done_tx);

    // Committer.
    let committer = {
        let consumer = consumer.clone();
        let offsets = offsets.clone();
        let failed = failed.clone();
        let failure = failure.clone();
        let interval = sink.commit_interval;
        let stop = CancellationToken::new();
        let stop2 = stop.clone();
        // Aborted if this attempt is dropped (a crash of the task), so the consumer it holds
        // leaves the group instead of lingering as a member that never polls.
        let task = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop2.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                if let Some(reason) = offsets.failure() {
                    failure
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(reason);
                    failed.cancel();
                    return;
                }
                // Synchronous, off the runtime threads: an offset counts as committed only once
                // the broker confirmed it, so a failed commit is retried at the next tick.
                let (consumer, offsets) = (consumer.clone(), offsets.clone());
                let committed =
                    tokio::task::spawn_blocking(move || offsets.commit_sync(consumer.as_ref()))
                        .await;
                if let Ok(Err(error)) = committed {
                    warn!(%error, "offset commit failed; will retry");
                }
            }
        }));
        (task, stop)
    };

    let parse_opts = ParseOptions {
        objects: &sink.objects,
        last_write_wins: sink.last_write_wins,
    };
    let reporter = &shared.writer.reporter;
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut batch = Batch::default();
    let linger = sink.linger;
    let max_records = sink.batch_records;

    // Sends the current batch to the writers (waits while they are all busy). On shutdown or
    // failure an unsent batch is dropped: its records stay uncommitted and are read again.
    macro_rules! flush {
        () => {
            if !batch.items.is_empty() {
                let full = std::mem::take(&mut batch);
                let keys: Vec<String> = full.keys.iter().cloned().collect();
                tokio::select! {
                    sent = batch_tx.send(full) => {
                        if sent.is_err() {
                            break Some("the writers stopped".to_owned());
                        }
                        in_flight.extend(keys);
                    }
                    _ = failed.cancelled() => break None,
                    _ = cancel.cancelled() => break None,
                }
            }
        };
    }

    let outcome: Option<String> = loop {
        let deadline = batch.started.map(|s| s + linger);
        let msg = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                // Hand the partial batch over if a writer can take it now; never wait for one.
                if !batch.items.is_empty() {
                    let full = std::mem::take(&mut batch);
                    let _ = batch_tx.try_send(full);
                }
                break None;
            }
            _ = failed.cancelled() => break None,
            Some(keys) = done_rx.recv() => {
                for k in keys {
                    in_flight.remove(&k);
                }
                continue;
            }
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {
                flush!();
                continue;
            }
            msg = consumer.recv() => msg,
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "Kafka consumer error");
                continue;
            }
        };
        let origin = origin_of(&msg);
        drop(msg);
        shared.stats.received.fetch_add(1, Ordering::Relaxed);
        let token = offsets.track(&origin.topic, origin.partition, origin.offset);
        let headers: Vec<(&str, &[u8])> = origin
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        let parsed = message::parse(origin.value.as_deref(), &headers, parse_opts);
        drop(headers);
        let op = match parsed {
            Ok(op) => op,
            Err(e) => {
                if let Err(e) = reporter
                    .dead_letter(&origin, &message_failure(&e), token)
                    .await
                {
                    break Some(e.to_string());
                }
                continue;
            }
        };
        if let Some(key) = op.order_key() {
            if batch.keys.contains(&key) {
                flush!();
            }
            // Wait until no batch in flight writes this record.
            while in_flight.contains(&key) {
                tokio::select! {
                    _ = failed.cancelled() => break,
                    _ = cancel.cancelled() => break,
                    keys = done_rx.recv() => match keys {
                        Some(keys) => for k in keys { in_flight.remove(&k); },
                        None => break,
                    },
                }
            }
            if failed.is_cancelled() || cancel.is_cancelled() {
                break None;
            }
            batch.keys.insert(key);
        }
        batch.started.get_or_insert_with(tokio::time::Instant::now);
        batch.items.push(Item { op, origin, token });
        if batch.items.len() >= max_records {
            flush!();
        }
    };

    // Drain: no more batches; let the writers finish within the deadline.
    drop(batch);
    drop(batch_tx);
    // In-flight batches abandoned at the deadline are not committed: written again after a
    // restart.
    let drain = shared.config.drain_timeout;
    let drained = tokio::time::timeout(drain, async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!("in-flight batches did not finish within the drain deadline; abandoning them");
        hard.cancel();
        while workers.join_next().await.is_some() {}
    }
    committer.1.cancel();
    let _ = committer.0.await;
    let _ = reporter.producer.flush(drain).await;
    // Give the last delivery reports a moment to land in the windows, then commit.
    let final_commit = {
        let consumer = consumer.clone();
        let offsets = offsets.clone();
        tokio::task::spawn_blocking(move || offsets.commit_sync(consumer.as_ref())).await
    };
    match final_commit {
        Ok(Ok(tpl)) => info!(partitions = tpl.count(), "final offsets committed"),
        Ok(Err(error)) => warn!(%error, "final offset commit failed"),
        Err(error) => warn!(%error, "final offset commit task failed"),
    }
    consumer.unsubscribe();

    let failure = failure.lock().unwrap_or_else(|e| e.into_inner()).take();
    match outcome.or(failure) {
        Some(reason) => Err(AttemptError::Restart(reason)),
        None => Ok(()),
    }
}
