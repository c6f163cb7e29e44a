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
//! * At start, the login is retried while Salesforce cannot answer (5xx, 429, an HTML page, no
//!   connection) and the dead-letter and conflicts topics while Kafka cannot, each failure a
//!   `/readyz` reason (`sink: salesforce login: retrying after …`); refused credentials stop.
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
use crate::salesforce::auth::{AuthError, Authenticator, SessionHandle, login_until_ready};
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
    /// Login refused in a way retrying cannot fix (credentials, configuration).
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
    // A login answered 5xx or HTML, or no answer, is waited out (`/readyz` says why).
    let retrying = stats.retrying.clone();
    let Some(session) = login_until_ready(&authenticator, &retrying, LOGIN_STEP, &cancel).await?
    else {
        return Ok(());
    };
    let own_user = session.user_id.clone();
    info!(org_id = %session.org_id, user_id = ?own_user, "sink logged in to Salesforce");
    let rest = rest_client(&config, sink, http, SessionHandle::new(session), &stats);
    let settings = crate::kafka::KafkaSettings::from(&config.kafka);
    let producer = Producer::new(&settings)?;
    if config.kafka.create_topics
        && !ensure_topics(&config, sink, &settings, &retrying, &cancel).await?
    {
        return Ok(());
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

/// The `/readyz` step of the sink's login at start.
const LOGIN_STEP: &str = "sink: salesforce login";
/// The `/readyz` step of the sink's topics at start.
const KAFKA_STEP: &str = "sink: kafka";

/// Makes sure the dead-letter and conflicts topics exist, retrying while Kafka cannot answer
/// (a client the settings cannot create stops); `Ok(false)` when cancelled first.
async fn ensure_topics(
    config: &Config,
    sink: &SinkConfig,
    settings: &crate::kafka::KafkaSettings,
    retrying: &crate::ops::telemetry::Retrying,
    cancel: &CancellationToken,
) -> Result<bool, SinkError> {
    let admin = TopicAdmin::new(settings)?;
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    for topic in [
        config.sink_dead_letter_topic(),
        sink.conflicts_topic.as_str(),
    ] {
        loop {
            let ensured = tokio::select! {
                _ = cancel.cancelled() => return Ok(false),
                ensured = admin.ensure(topic, config.kafka.topic_partitions, &[]) => ensured,
            };
            match ensured {
                Ok(()) => break,
                Err(err) if err.is_unreachable() => {
                    let reason = crate::ops::telemetry::error_chain(&err);
                    retrying.failed(KAFKA_STEP, &reason);
                    let delay = backoff.next_delay();
                    warn!(error = %reason, ?delay, "{KAFKA_STEP} failed; retrying");
                    if !sleep_or_cancel(delay, cancel).await {
                        return Ok(false);
                    }
                }
                Err(err) => return Err(err.into()),
            }
        }
    }
    retrying.recovered(KAFKA_STEP);
    Ok(true)
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
    .with_retrying(stats.retrying.clone(), LOGIN_STEP)
}

/// The sink consumer's librdkafka configuration. With `sink.group_instance_id` the member is
/// static (`group.instance.id`, KIP-345; librdkafka's CONFIGURATION.md): a restart with the same id
/// gets the same partitions back at once, where a dynamic member's restart waits for the dead
/// member's `session.timeout.ms`. The assignment strategy stays librdkafka's default: a group
/// whose members disagree on it refuses the newcomer (`INCONSISTENT_GROUP_PROTOCOL`), so switching
/// to `cooperative-sticky` would break a rolling upgrade, and a static member's restart causes no
/// rebalance for it to soften; `kafka.properties` can still set it.
fn consumer_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.kafka.bootstrap_servers)
        .set("group.id", config.sink_group_id())
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed");
    if let Some(id) = config
        .sink
        .as_ref()
        .and_then(|s| s.group_instance_id.as_ref())
    {
        c.set("group.instance.id", id);
    }
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
        (batch_rx, done_tx),
        &offsets,
        &hard,
        &trip,
    );
    let committer = Committer::start(
        consumer.clone(),
        offsets.clone(),
        sink.commit_interval,
        trip.clone(),
        shared.stats.clone(),
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

/// Starts `concurrency` writers. Each takes the next batch (`batches.0`), drops the records of
/// partitions revoked since they were fetched (a revoked member must not write what the
/// partition's new owner writes: issue 19, item 7; they are not committed here, their new owner
/// reads them again), writes the rest, and sends the batch's keys back on `batches.1`; a batch
/// that fails trips the attempt (its records are repeated after the restart).
fn spawn_writers(
    writer: &Writer,
    concurrency: usize,
    batches: (
        mpsc::Receiver<Batch>,
        mpsc::UnboundedSender<HashSet<String>>,
    ),
    offsets: &Arc<Offsets>,
    hard: &CancellationToken,
    trip: &Tripwire,
) -> JoinSet<()> {
    let (batches, done) = batches;
    let batch_rx = Arc::new(Mutex::new(batches));
    let mut workers = JoinSet::new();
    for n in 0..concurrency {
        let writer = writer.clone();
        let rx = batch_rx.clone();
        let done = done.clone();
        let hard = hard.clone();
        let trip = trip.clone();
        let offsets = offsets.clone();
        workers.spawn(
            async move {
                loop {
                    let Some(mut batch) = rx.lock().await.recv().await else {
                        return;
                    };
                    let fetched = batch.items.len();
                    batch
                        .items
                        .retain(|item| offsets.holds(&item.origin.topic, item.origin.partition));
                    if batch.items.len() < fetched {
                        info!(
                            dropped = fetched - batch.items.len(),
                            "records of revoked partitions left to their new owner"
                        );
                    }
                    let keys = batch.keys;
                    if batch.items.is_empty() {
                        let _ = done.send(keys);
                        continue;
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(sink_extra: &str) -> Result<Config, crate::config::ConfigError> {
        let text = format!(
            "name: acme\nsalesforce:\n  login_url: https://acme.my.salesforce.com\n  auth:\n    type: client_credentials\n    client_id: id\n    client_secret: secret\nsink:\n  topics: [writeback]\n{sink_extra}kafka:\n  bootstrap_servers: localhost:9092\n"
        );
        Config::from_yaml(&text, |name| {
            (name == "POD_NAME").then(|| "sink-0".to_owned())
        })
    }

    #[test]
    fn a_group_instance_id_makes_the_consumer_a_static_member() {
        let static_member = consumer_config(&config("  group_instance_id: ${POD_NAME}\n").unwrap());
        assert_eq!(static_member.get("group.instance.id"), Some("sink-0"));
        assert_eq!(static_member.get("group.id"), Some("acme-sink"));
        let dynamic = consumer_config(&config("").unwrap());
        assert_eq!(dynamic.get("group.instance.id"), None);
        let err = config("  group_instance_id: 'sink 0'\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sink.group_instance_id"), "{err}");
    }
}
