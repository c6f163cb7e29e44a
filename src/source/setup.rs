//! Setup of the source: login, the channels checked, the producers, the checkpoints read.
//!
//! Contract: [`connect`] returns the state every channel task shares ([`Shared`]) once the org
//! accepted the login (retried with backoff while it is unreachable), every channel exists and may
//! be subscribed to (`GetTopic`), each channel has its producer (in exactly-once mode a
//! transactional one, registered before the checkpoints are read, so an earlier owner is fenced
//! and what is read next is final), the checkpoint topic has been read and the dead-letter topic
//! exists (when `kafka.create_topics`). `Ok(None)`: cancelled while waiting.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::error::PipelineError;
use crate::config::{Config, DeliveryMode, SourceConfig};
use crate::kafka::{KafkaSettings, Producer, TopicAdmin};
use crate::ops::telemetry::PipelineStats;
use crate::retry::{Backoff, Directive, sleep_or_cancel};
use crate::salesforce::auth::{Authenticator, SessionHandle};
use crate::salesforce::pubsub::PubSub;
use crate::salesforce::tls::ClientTls;
use crate::source::cdc::schema::SchemaCache;
use crate::source::checkpoint::CheckpointStore;
use crate::source::gap::Rereader;

/// How long `init_transactions` may take (it waits for an earlier owner's transaction to end).
const INIT_TRANSACTIONS_TIMEOUT: Duration = Duration::from_secs(60);

/// The shortest `transaction.timeout.ms` of a channel's producer.
const TRANSACTION_TIMEOUT_FLOOR: Duration = Duration::from_secs(300);

/// Everything the channel tasks share.
pub(super) struct Shared {
    pub(super) config: Arc<Config>,
    pub(super) pubsub: PubSub,
    pub(super) session: SessionHandle,
    pub(super) authenticator: Authenticator,
    /// The producer of each channel, by index: clones of one idempotent producer, or one
    /// transactional producer per channel in exactly-once mode.
    pub(super) producers: Vec<Producer>,
    pub(super) checkpoints: CheckpointStore,
    /// Creates missing topics when `kafka.create_topics` is on.
    pub(super) topics: Option<TopicAdmin>,
    pub(super) schemas: SchemaCache,
    pub(super) stats: Arc<PipelineStats>,
    /// Re-reads the records of gap and overflow events over REST.
    pub(super) gaps: crate::source::gap::Rereader,
}

impl Shared {
    /// The source settings (present: checked by [`run`]).
    pub(super) fn source(&self) -> &crate::config::SourceConfig {
        self.config
            .source
            .as_ref()
            .expect("run() refuses a config without a source")
    }
}

/// Logs in, checks the channels, makes the producers and reads the checkpoints (see the module
/// docs); `Ok(None)` when cancelled first.
pub(super) async fn connect(
    config: Arc<Config>,
    stats: Arc<PipelineStats>,
    cancel: &CancellationToken,
) -> Result<Option<Arc<Shared>>, PipelineError> {
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
    let Some(session) = login(&authenticator, &mut backoff, cancel).await? else {
        return Ok(None);
    };
    let gaps = Rereader::for_source(&config, http, session.clone());
    info!(org_id = %session.current().org_id, instance_url = %session.current().instance_url, "logged in to Salesforce");
    let pubsub = PubSub::connect(&config.salesforce.pubsub_endpoint, session.clone(), &tls).await?;
    if !check_channels(&pubsub, source, &mut backoff, cancel).await? {
        return Ok(None);
    }
    let settings = crate::kafka::KafkaSettings::from(&config.kafka);
    let producers = producers(&config, source, &settings).await?;
    for producer in &producers {
        stats.register_deliveries(producer.delivery_stats());
    }
    let checkpoints =
        CheckpointStore::open(&settings, &config.kafka.checkpoint_topic, &config.name).await?;
    let topics = topic_admin(&config, &settings).await?;
    Ok(Some(Arc::new(Shared {
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
    })))
}

/// Logs in, retrying while the org is unreachable; `Ok(None)` when cancelled first.
async fn login(
    authenticator: &Authenticator,
    backoff: &mut Backoff,
    cancel: &CancellationToken,
) -> Result<Option<SessionHandle>, PipelineError> {
    loop {
        match authenticator.login().await {
            Ok(session) => return Ok(Some(SessionHandle::new(session))),
            Err(err) if err.directive() == Directive::Retry => {
                let delay = backoff.next_delay();
                warn!(error = %crate::ops::telemetry::error_chain(&err), ?delay, "login failed; retrying");
                if !sleep_or_cancel(delay, cancel).await {
                    return Ok(None);
                }
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// `GetTopic` for every channel (retried while the org is unavailable): each must exist and
/// allow subscribing. `Ok(false)` when cancelled first.
async fn check_channels(
    pubsub: &PubSub,
    source: &SourceConfig,
    backoff: &mut Backoff,
    cancel: &CancellationToken,
) -> Result<bool, PipelineError> {
    for channel in &source.channels {
        let topic = loop {
            match pubsub.get_topic(&channel.name).await {
                Ok(topic) => break topic,
                Err(err) if matches!(err.directive(), Directive::Retry) => {
                    let delay = backoff.next_delay();
                    warn!(error = %err, ?delay, "GetTopic failed; retrying");
                    if !sleep_or_cancel(delay, cancel).await {
                        return Ok(false);
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
    Ok(true)
}

/// The producer of each channel, by index: clones of one idempotent producer, or one
/// transactional producer per channel in exactly-once mode.
async fn producers(
    config: &Config,
    source: &SourceConfig,
    settings: &KafkaSettings,
) -> Result<Vec<Producer>, PipelineError> {
    Ok(match source.delivery {
        DeliveryMode::AtLeastOnce => {
            vec![Producer::new(settings)?; source.channels.len()]
        }
        // Before the checkpoints are read: initialising fences an earlier owner and aborts its
        // open transaction, so what is read next is final.
        DeliveryMode::ExactlyOnce => {
            let mut producers = Vec::with_capacity(source.channels.len());
            for channel in &source.channels {
                producers.push(transactional_producer(config, settings, &channel.name).await?);
            }
            producers
        }
    })
}

/// The topic admin when `kafka.create_topics` is on, with the dead-letter topic made sure of.
async fn topic_admin(
    config: &Config,
    settings: &KafkaSettings,
) -> Result<Option<TopicAdmin>, PipelineError> {
    if !config.kafka.create_topics {
        return Ok(None);
    }
    let admin = TopicAdmin::new(settings)?;
    admin
        .ensure(
            &config.kafka.dead_letter_topic,
            config.kafka.topic_partitions,
            &[],
        )
        .await?;
    Ok(Some(admin))
}

/// A channel's transactional producer, registered with the broker.
async fn transactional_producer(
    config: &Config,
    settings: &KafkaSettings,
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
