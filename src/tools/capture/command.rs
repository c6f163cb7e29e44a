//! `forcebridge capture --config FILE --out DIR [--duration D] [--max-events N]`: records a real
//! org's Pub/Sub traffic, read-only, into a capture directory
//! ([`crate::sim::replay::format`]).
//!
//! Contract: logs in as the source does (the config's `salesforce` section), asks `GetTopic` for
//! every channel of `source.channels`, then subscribes to each from its `initial_replay` preset
//! (`latest` or `earliest`) and writes every event (raw payload bytes, replay id, schema id,
//! event id) and keepalive in arrival order, and each schema id's `GetSchema` text on its first
//! sighting. It never publishes, never commits a replay id and never connects to Kafka (the
//! config's `kafka` section is ignored). Stops on the cancel token (SIGINT/SIGTERM), after
//! `--duration` or `--max-events` events (over all channels); the files are flushed and
//! `manifest.json` written on every stop, also when a channel failed (its error names it). A
//! channel silent for `source.stream_idle_timeout` (no event, no keepalive) fails the capture.
//!
//! Channels of several entities (`/data/ChangeEvents`, custom `/data/<Name>__chn`): a channel
//! whose `GetTopic` gives no schema id has none recorded; each event is recorded with the entity
//! its payload names first (the `entityName` its `ChangeEventHeader` starts with, as the
//! source's `blank_schema` reads it). An event with a blank schema id (real orgs send
//! `/data/ChangeEvents` events so, forcedotcom/pub-sub-api#63) is recorded as received, and the
//! first time its entity is seen the capture asks `GetTopic` on the entity's own channel
//! (`/data/AccountChangeEvent`) and `GetSchema` for that schema id, and records both (the topic
//! in `topics.jsonl`, the channel in the manifest's `entity_channels`), as the source does to
//! decode it; an entity whose channel the org does not have (`NOT_FOUND`, `PERMISSION_DENIED`)
//! is recorded without it, as the source dead-letters its events. A payload that names no
//! entity fails the capture with the channel and replay id.
//! The entity's channel is asked once per capture (not again when it is a captured channel
//! itself): a schema change during the capture is not seen for blank-schema events (events of
//! channels that carry schema ids record each new id).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, InitialReplay};
use crate::salesforce::auth::{AuthError, Authenticator, SessionHandle};
use crate::salesforce::proto::{ConsumerEvent, TopicInfo};
use crate::salesforce::pubsub::{Delivery, PubSub, PubSubError, ReplayStart};
use crate::salesforce::tls::ClientTls;
use crate::sim::replay::format::{
    CapturedEvent, FORMAT_VERSION, FormatError, Manifest, TopicRecord, entity_channel,
    names_entities,
};
use crate::sim::replay::writer::CaptureWriter;

/// `forcebridge capture`'s arguments.
#[derive(Debug, clap::Args)]
pub struct CaptureArgs {
    /// The YAML config file (its `salesforce` and `source.channels`; `kafka` is ignored).
    #[arg(long, short, env = "FORCEBRIDGE_CONFIG")]
    pub config: PathBuf,
    /// The capture directory (created; must be empty if it exists).
    #[arg(long)]
    pub out: PathBuf,
    /// Stop after this long (`90s`, `10m`, `24h`); default: until interrupted.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many events over all channels.
    #[arg(long)]
    pub max_events: Option<u64>,
}

/// A capture failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The config has no `source.channels`.
    #[error("the config has no source section: nothing to capture")]
    NoChannels,
    /// TLS settings, HTTP client or login.
    #[error("cannot log in: {0}")]
    Login(String),
    /// Login refused.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A Pub/Sub call failed (the error names the channel or schema id).
    #[error("channel {channel}")]
    Channel {
        /// The channel.
        channel: String,
        /// The cause.
        source: PubSubError,
    },
    /// The channel exists but the user may not subscribe to it.
    #[error("channel {0}: the user may not subscribe to it")]
    NotSubscribable(String),
    /// An event of a channel of several entities, or with a blank schema id, whose payload
    /// names no entity.
    #[error("channel {channel}: the event with replay id {replay_id} names no entity")]
    NoEntity {
        /// The channel.
        channel: String,
        /// Its replay id, hex.
        replay_id: String,
    },
    /// Writing the capture.
    #[error(transparent)]
    Format(#[from] FormatError),
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `forcebridge capture`: records until `cancel`, `--duration` or `--max-events`; prints a
/// summary line.
pub async fn run(
    args: CaptureArgs,
    config: &Config,
    cancel: CancellationToken,
) -> Result<(), CaptureError> {
    let source = config.source.as_ref().ok_or(CaptureError::NoChannels)?;
    let tls = ClientTls::from_config(&config.salesforce)
        .map_err(|e| CaptureError::Login(crate::ops::telemetry::error_chain(&e)))?;
    let http = crate::salesforce::auth::http_client(&tls, config.salesforce.http_timeout)
        .map_err(|e| CaptureError::Login(e.to_string()))?;
    let session = Authenticator::new(&config.salesforce, http).login().await?;
    let org_id = session.org_id.clone();
    let session = SessionHandle::new(session);
    let endpoint = &config.salesforce.pubsub_endpoint;
    let pubsub = PubSub::connect(endpoint, session, &tls)
        .await
        .map_err(|source| CaptureError::Channel {
            channel: endpoint.clone(),
            source,
        })?;
    let writer = CaptureWriter::create(&args.out)?;
    let started_at_ms = now_ms();
    let channels: Vec<String> = source.channels.iter().map(|c| c.name.clone()).collect();
    let mut recorder = Recorder {
        pubsub: pubsub.clone(),
        writer,
        schemas: Default::default(),
        entity_channels: Vec::new(),
        topics: Default::default(),
    };
    for name in &channels {
        let topic = recorder.topic(name).await?;
        if !topic.can_subscribe {
            return Err(CaptureError::NotSubscribable(name.clone()));
        }
    }
    let stop = cancel.child_token();
    let (tx, mut rx) = mpsc::channel(256);
    for channel in &source.channels {
        let start = match channel.initial_replay {
            InitialReplay::Latest => ReplayStart::Latest,
            InitialReplay::Earliest => ReplayStart::Earliest,
        };
        tokio::spawn(subscribe(
            pubsub.clone(),
            channel.name.clone(),
            start,
            tx.clone(),
            stop.clone(),
            source.stream_idle_timeout,
        ));
    }
    drop(tx);
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let outcome = record(&mut rx, &mut recorder, &args, deadline, &stop).await;
    stop.cancel();
    let Recorder {
        writer,
        entity_channels,
        ..
    } = recorder;
    let manifest = Manifest {
        format: FORMAT_VERSION,
        forcebridge_version: env!("CARGO_PKG_VERSION").to_string(),
        org_id,
        api_version: config.salesforce.api_version.clone(),
        started_at_ms,
        ended_at_ms: now_ms(),
        channels,
        entity_channels,
    };
    writer.finish(&manifest)?;
    let events = outcome?;
    println!("captured {events} events into {}", args.out.display());
    Ok(())
}

/// What is written, and what the org was already asked.
struct Recorder {
    pubsub: PubSub,
    writer: CaptureWriter,
    /// Schema ids already recorded.
    schemas: std::collections::BTreeSet<String>,
    /// Entities' channels asked with `GetTopic` for blank-schema events, in order.
    entity_channels: Vec<String>,
    /// Every channel whose `GetTopic` answer is recorded.
    topics: std::collections::BTreeSet<String>,
}

impl Recorder {
    /// Asks `GetTopic` for `channel` and records its answer and its schema (none when blank).
    async fn topic(&mut self, channel: &str) -> Result<TopicInfo, CaptureError> {
        let topic =
            self.pubsub
                .get_topic(channel)
                .await
                .map_err(|source| CaptureError::Channel {
                    channel: channel.to_string(),
                    source,
                })?;
        self.schema(channel, &topic.schema_id).await?;
        self.topics.insert(channel.to_string());
        self.writer.topic(&TopicRecord {
            topic_name: channel.to_string(),
            schema_id: topic.schema_id.clone(),
            can_subscribe: topic.can_subscribe,
            can_publish: topic.can_publish,
            tenant_guid: topic.tenant_guid.clone(),
        })?;
        Ok(topic)
    }

    /// Records the `GetSchema` text of `id` on its first sighting (nothing for a blank id).
    async fn schema(&mut self, channel: &str, id: &str) -> Result<(), CaptureError> {
        if id.is_empty() || self.schemas.contains(id) {
            return Ok(());
        }
        let schema = self
            .pubsub
            .get_schema(id)
            .await
            .map_err(|source| CaptureError::Channel {
                channel: channel.to_string(),
                source,
            })?;
        self.writer.schema(id, &schema)?;
        self.schemas.insert(id.to_string());
        Ok(())
    }

    /// Records the `GetTopic` answer of `entity`'s channel, once. A channel the org does not
    /// have or lets the user see (`NOT_FOUND`, `PERMISSION_DENIED`) is left out, as the source
    /// dead-letters such an event: the replayed org answers `GetTopic` on it as an unknown topic.
    async fn entity_topic(&mut self, entity: &str) -> Result<(), CaptureError> {
        let topic = entity_channel(entity);
        if !self.topics.insert(topic.clone()) {
            return Ok(());
        }
        match self.topic(&topic).await {
            Ok(_) => self.entity_channels.push(topic),
            Err(CaptureError::Channel { source, .. })
                if source.status().is_some_and(|s| {
                    matches!(
                        s.code(),
                        tonic::Code::NotFound | tonic::Code::PermissionDenied
                    )
                }) =>
            {
                tracing::warn!(%entity, %topic, error = %source, "the entity's channel is not recorded");
            }
            Err(err) => return Err(err),
        }
        Ok(())
    }

    /// Records one event of `channel`, with its entity and the schemas it needs (module doc).
    async fn event(&mut self, channel: &str, consumed: ConsumerEvent) -> Result<(), CaptureError> {
        let event = consumed.event.unwrap_or_default();
        let blank = event.schema_id.is_empty();
        let entity = if blank || names_entities(channel) {
            let entity = crate::source::cdc::leading_string(&event.payload)
                .filter(|e| crate::config::is_api_name(e))
                .ok_or_else(|| CaptureError::NoEntity {
                    channel: channel.to_string(),
                    replay_id: hex::encode(&consumed.replay_id),
                })?;
            Some(entity.to_string())
        } else {
            None
        };
        self.schema(channel, &event.schema_id).await?;
        if let Some(entity) = entity.as_deref().filter(|_| blank) {
            self.entity_topic(entity).await?;
        }
        self.writer.event(
            channel,
            &CapturedEvent {
                replay_id: consumed.replay_id.to_vec(),
                schema_id: event.schema_id,
                event_id: event.id,
                payload: event.payload.to_vec(),
                headers: event
                    .headers
                    .into_iter()
                    .map(|h| (h.key, h.value.to_vec()))
                    .collect(),
                at_ms: now_ms(),
                entity,
            },
        )?;
        Ok(())
    }
}

type Item = (String, Result<Delivery, PubSubError>);

/// The writer's loop: every delivery in arrival order, until a stop; the number of events.
async fn record(
    rx: &mut mpsc::Receiver<Item>,
    recorder: &mut Recorder,
    args: &CaptureArgs,
    deadline: Option<tokio::time::Instant>,
    stop: &CancellationToken,
) -> Result<u64, CaptureError> {
    let mut events = 0u64;
    let until = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until);
    while args.max_events.is_none_or(|max| events < max) {
        let (channel, delivery) = tokio::select! {
            () = stop.cancelled() => break,
            () = &mut until => break,
            item = rx.recv() => match item {
                Some(item) => item,
                None => break,
            },
        };
        let delivery = delivery.map_err(|source| CaptureError::Channel {
            channel: channel.clone(),
            source,
        })?;
        match delivery {
            Delivery::Keepalive { latest_replay_id } => {
                recorder
                    .writer
                    .keepalive(&channel, &latest_replay_id, now_ms())?;
            }
            Delivery::Event(consumed) => {
                recorder.event(&channel, consumed).await?;
                events += 1;
            }
        }
    }
    Ok(events)
}

/// How many times in a row a channel's stream is reopened after a transient error before the
/// capture fails with it.
const MAX_RETRIES: u32 = 5;

/// One channel's subscription: every delivery to the writer until `stop` or an error (sent
/// as the last item). A stream that ends with a transient error (`Directive::Retry`: closed by
/// the org, `UNAVAILABLE`, silent) is reopened after the last replay id received, after 1 s, up
/// to [`MAX_RETRIES`] times in a row, so a long capture survives resets.
async fn subscribe(
    pubsub: PubSub,
    channel: String,
    mut start: ReplayStart,
    tx: mpsc::Sender<Item>,
    stop: CancellationToken,
    idle_timeout: Duration,
) {
    let mut retries = 0;
    loop {
        let opened = tokio::select! {
            () = stop.cancelled() => return,
            opened = pubsub.subscribe(&channel, start.clone(), 100, idle_timeout) => opened,
        };
        let err = match opened {
            Ok(mut subscription) => loop {
                let delivery = tokio::select! {
                    () = stop.cancelled() => return,
                    d = subscription.next() => match d {
                        Ok(delivery) => delivery,
                        Err(err) => break err,
                    },
                };
                match &delivery {
                    Delivery::Event(e) => start = ReplayStart::After(e.replay_id.clone()),
                    Delivery::Keepalive { latest_replay_id } if !latest_replay_id.is_empty() => {
                        start = ReplayStart::After(latest_replay_id.clone());
                    }
                    Delivery::Keepalive { .. } => {}
                }
                retries = 0;
                if tx.send((channel.clone(), Ok(delivery))).await.is_err() {
                    return;
                }
            },
            Err(err) => err,
        };
        retries += 1;
        if err.directive() != crate::retry::Directive::Retry || retries > MAX_RETRIES {
            let _ = tx.send((channel, Err(err))).await;
            return;
        }
        tracing::warn!(channel, error = %err, "stream ended; resubscribing after the last replay id");
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
