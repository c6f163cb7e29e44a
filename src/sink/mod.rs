//! The write-back sink: Kafka write-back topics → Salesforce, through sObject Collections inside
//! `/composite`, last-write-wins against `SystemModstamp`.
//!
//! Contract (at least once, in order per record):
//! * A consumer in group `sink.group_id` reads `sink.topics`. Each record is parsed
//!   ([`message`]); a record that is not a valid write-back message is dead-lettered with the
//!   reason naming the field, and the sink goes on.
//! * The **batcher** ([`batcher`]) fills a batch up to `sink.batch_records` or `sink.linger`. A
//!   batch holds at most one write per record (Id or External Id): a second write to a record
//!   closes the batch, and waits until no batch in flight holds that record, so writes to one
//!   record reach Salesforce in Kafka order even with `sink.concurrency` batches in flight.
//! * **Writers** ([`writer`]) check each write's fields against its object's describe
//!   ([`fields`], [`describe`]: fetched once per object per run; compounds written as their
//!   components; a field the describe refuses dead-letters the record before any write call),
//!   read the batch's current records once (last-write-wins), write, and finish every record:
//!   written, conflict (conflicts topic) or dead letter ([`reporter`]).
//! * A consumer offset is committed ([`committer`], [`offsets`]) only once its record, and every
//!   earlier record of its partition, is finished; every `sink.commit_interval`, before a
//!   rebalance gives up a partition, and at shutdown.
//! * Every REST call carries `Sforce-Call-Options: client=<client_tag>` so that the source
//!   recognises the changes as echoes. Writing pauses while the daily API allowance is down to
//!   `sink.api_reserve` ([`crate::salesforce::rest::LimitGuard`]).
//! * A failure the batch cannot settle (Salesforce unreachable after retries, an answer not in
//!   Salesforce's error shape that persists through the client's retries, Kafka refusing a dead
//!   letter) restarts the consumer from the committed offsets after a backoff: records may
//!   be written twice, none is lost. Cancellation stops intake, lets in-flight batches finish
//!   within `drain_timeout`, and commits.
//!
//! This module wires the attempt: the consumer, the writer tasks, the committer and the intake,
//! and restarts an attempt that failed ([`tripwire`]).

mod batcher;
mod committer;
mod describe;
mod fields;
mod fit;
pub mod message;
mod offsets;
pub mod plan;
mod reporter;
mod tripwire;
mod writer;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::Consumer;
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
use batcher::{Batch, Intake};
use committer::{Committer, SinkConsumer, SinkContext};
use offsets::Offsets;
use reporter::Reporter;
use tripwire::Tripwire;
use writer::{WriteError, Writer};

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

/// Why one attempt ended: [`crate::retry::Directive::Stop`] (the sink stops with the error) or
/// [`crate::retry::Directive::Restart`] (a new consumer resumes from the committed offsets after a
/// backoff; the reason).
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error(transparent)]
    Stop(SinkError),
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
    let settings = crate::kafka::KafkaSettings::from(&config.kafka);
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
        fields: fields::FieldCheck::new(&sink.objects),
        reporter: Reporter {
            producer: producer.clone(),
            dead_letter_topic: config.sink_dead_letter_topic().to_owned(),
            conflicts_topic: sink.conflicts_topic.clone(),
            stats: stats.clone(),
            max_record_bytes: crate::kafka::max_record_bytes(&config.kafka),
        },
        last_write_wins: sink.last_write_wins,
        same_second: sink.same_second(),
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
            Err(AttemptError::Stop(e)) => break Err(e),
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
pub(crate) fn rest_client(
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

/// The attempt's consumer, subscribed to `sink.topics`; commits through `offsets` on rebalances.
fn subscribe(
    config: &Config,
    sink: &SinkConfig,
    offsets: &Arc<Offsets>,
) -> Result<SinkConsumer, SinkError> {
    let consumer: SinkConsumer = consumer_config(config)
        .create_with_context(SinkContext {
            offsets: offsets.clone(),
        })
        .map_err(SinkError::Consumer)?;
    let topics: Vec<&str> = sink.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).map_err(SinkError::Consumer)?;
    Ok(consumer)
}

/// One consumer lifetime: intake, writers and committer, until cancel or a failure.
async fn run_attempt(shared: &Shared, cancel: &CancellationToken) -> Result<(), AttemptError> {
    let sink = shared.config.sink.as_ref().expect("checked in run");
    let offsets = Arc::new(Offsets::default());
    let consumer = Arc::new(subscribe(&shared.config, sink, &offsets).map_err(AttemptError::Stop)?);
    shared.stats.consumer_running.store(true, Ordering::Relaxed);
    let _not_running = crate::ops::telemetry::ClearOnDrop(&shared.stats.consumer_running);
    info!(topics = ?sink.topics, group = %shared.config.sink_group_id(), "sink consuming");

    // Writers stop at `hard`, which fires only when draining overruns its deadline.
    let hard = CancellationToken::new();
    let trip = Tripwire::default();
    let (batch_tx, batch_rx) = mpsc::channel::<Batch>(sink.concurrency);
    let (done_tx, done_rx) = mpsc::unbounded_channel::<HashSet<String>>();
    let mut workers = spawn_writers(
        &shared.writer,
        sink.concurrency,
        batch_rx,
        done_tx,
        &hard,
        &trip,
    );
    let committer = Committer::start(
        consumer.clone(),
        offsets.clone(),
        sink.commit_interval,
        trip.clone(),
    );
    let intake = Intake {
        consumer: &consumer,
        offsets: &offsets,
        reporter: &shared.writer.reporter,
        stats: &shared.stats,
        sink,
        trip: &trip,
        cancel,
    };
    // Returns once intake stopped, the unsent batch and the batch sender dropped.
    let outcome = intake.run(batch_tx, done_rx).await;

    // Drain: no more batches; let the writers finish within the deadline.
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
    committer.stop().await;
    let _ = shared.writer.reporter.producer.flush(drain).await;
    // Give the last delivery reports a moment to land in the windows, then commit.
    committer::commit_final(&consumer, &offsets).await;
    consumer.unsubscribe();

    match outcome.or(trip.take_reason()) {
        Some(reason) => Err(AttemptError::Restart(reason)),
        None => Ok(()),
    }
}

/// Starts `concurrency` writers. Each takes the next batch, writes it, and sends its keys back
/// on `done`; a batch that fails trips the attempt (its records are repeated after the restart).
fn spawn_writers(
    writer: &Writer,
    concurrency: usize,
    batches: mpsc::Receiver<Batch>,
    done: mpsc::UnboundedSender<HashSet<String>>,
    hard: &CancellationToken,
    trip: &Tripwire,
) -> JoinSet<()> {
    let batch_rx = Arc::new(Mutex::new(batches));
    let mut workers = JoinSet::new();
    for n in 0..concurrency {
        let writer = writer.clone();
        let rx = batch_rx.clone();
        let done = done.clone();
        let hard = hard.clone();
        let trip = trip.clone();
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
                            trip.trip(e.to_string());
                            return;
                        }
                    }
                }
            }
            .instrument(info_span!("sink_writer", writer = n)),
        );
    }
    workers
}
