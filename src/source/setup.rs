//! Setup of the source: login, the channels checked, the producers, the checkpoints read.
//!
//! Contract: [`connect`] returns the state every channel task shares ([`Shared`]) once the org
//! accepted the login, the Pub/Sub API accepted the connection, every channel exists and may be
//! subscribed to (`GetTopic`, after a re-login if the session is refused), each channel has its
//! producer (in exactly-once mode a transactional one, registered before the checkpoints are
//! read, so an earlier owner is fenced and what is read next is final), the checkpoint topic has
//! been read and the dead-letter topic exists (when `kafka.create_topics`). The Salesforce steps
//! (login, Pub/Sub, `GetTopic`) and the Kafka steps run side by side; the first error ends both.
//! What waiting can fix (a login answered 5xx or HTML, a refused connection, Kafka unreachable)
//! is retried with capped exponential backoff and jitter until cancelled, each failure reported to the pipeline's
//! `Retrying` (a `/readyz` reason, [`crate::ops::telemetry::TRANSIENT_RETRIES`]); refused
//! credentials or configuration stop. `Ok(None)`: cancelled while waiting.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::error::PipelineError;
use crate::config::{Config, DeliveryMode, SourceConfig};
use crate::kafka::{KafkaSettings, Producer, TopicAdmin, TransactionFailure};
use crate::ops::telemetry::{PipelineStats, Retrying};
use crate::retry::{Backoff, Directive, sleep_or_cancel};
use crate::salesforce::auth::{Authenticator, SessionHandle, login_until_ready};
use crate::salesforce::pubsub::PubSub;
use crate::salesforce::tls::ClientTls;
use crate::source::cdc::schema::SchemaCache;
use crate::source::checkpoint::CheckpointStore;
use crate::source::gap::Rereader;

/// How long one `init_transactions` may take (it waits for an earlier owner's transaction to
/// end); a timeout is retried with backoff, while `/readyz` reports it.
const INIT_TRANSACTIONS_TIMEOUT: Duration = Duration::from_secs(15);

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

    /// What `channel`'s records say in Debezium's `source` when its format is `debezium`
    /// (`source.channels[].format`, else `source.format`); `None` for `forcebridge`.
    pub(super) fn debezium(&self, channel: &str) -> Option<crate::source::cdc::Debezium> {
        let source = self.source();
        let config = source.channels.iter().find(|c| c.name == channel)?;
        (config.format(source) == crate::config::RecordFormat::Debezium).then(|| {
            crate::source::cdc::Debezium {
                name: self.config.name.clone(),
                db: self.session.current().org_id.clone(),
            }
        })
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
    // The Salesforce steps and the Kafka steps (producers, checkpoint read) need nothing from
    // each other: run side by side, a restart streams after the slower of the two, not their sum.
    // The first error ends both (refused credentials stop at once, even while Kafka is waited for).
    let (org, kafka) = tokio::try_join!(
        salesforce(&config, source, &stats.retrying, cancel),
        kafka(&config, source, &stats, cancel)
    )?;
    let (Some(org), Some((producers, checkpoints, topics))) = (org, kafka) else {
        return Ok(None);
    };
    Ok(Some(Arc::new(Shared {
        config,
        topics,
        pubsub: org.pubsub,
        session: org.session,
        authenticator: org.authenticator,
        producers,
        checkpoints,
        schemas: SchemaCache::new(),
        stats,
        gaps: org.gaps,
    })))
}

/// What the source's Salesforce steps yield.
struct Org {
    pubsub: PubSub,
    session: SessionHandle,
    authenticator: Authenticator,
    gaps: Rereader,
}

/// Login (retried while Salesforce cannot answer), the Pub/Sub connection, `GetTopic` of every
/// channel; `Ok(None)` when cancelled first.
async fn salesforce(
    config: &Config,
    source: &SourceConfig,
    retrying: &Retrying,
    cancel: &CancellationToken,
) -> Result<Option<Org>, PipelineError> {
    let tls = ClientTls::from_config(&config.salesforce)?;
    let http = crate::salesforce::auth::http_client(&tls, config.salesforce.http_timeout)
        .map_err(PipelineError::Http)?;
    let authenticator = Authenticator::new(&config.salesforce, http.clone());
    // An org briefly unreachable at startup is waited for, as it is once running.
    let Some(session) = login_until_ready(&authenticator, retrying, LOGIN_STEP, cancel).await?
    else {
        return Ok(None);
    };
    let session = SessionHandle::new(session);
    let gaps = Rereader::for_source(config, http, session.clone());
    info!(org_id = %session.current().org_id, instance_url = %session.current().instance_url, "logged in to Salesforce");
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let Some(pubsub) =
        connect_pubsub(config, &session, &tls, retrying, &mut backoff, cancel).await?
    else {
        return Ok(None);
    };
    let channels = Channels {
        pubsub: &pubsub,
        session: &session,
        authenticator: &authenticator,
        retrying,
    };
    if !channels.check(source, &mut backoff, cancel).await? {
        return Ok(None);
    }
    Ok(Some(Org {
        pubsub,
        session,
        authenticator,
        gaps,
    }))
}

/// The `/readyz` step of the source's login (at start and mid-run).
pub(super) const LOGIN_STEP: &str = "source: salesforce login";
/// The `/readyz` step of the Pub/Sub connection and `GetTopic` at start.
const PUBSUB_STEP: &str = "source: pub/sub api";
/// The `/readyz` step of Kafka at start (producers, checkpoint topic, dead-letter topic).
const KAFKA_STEP: &str = "source: kafka";

/// Connects to the Pub/Sub API, retrying while it refuses connections; `Ok(None)` when
/// cancelled first.
async fn connect_pubsub(
    config: &Config,
    session: &SessionHandle,
    tls: &ClientTls,
    retrying: &Retrying,
    backoff: &mut Backoff,
    cancel: &CancellationToken,
) -> Result<Option<PubSub>, PipelineError> {
    let endpoint = &config.salesforce.pubsub_endpoint;
    loop {
        let connected = tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            connected = PubSub::connect(endpoint, session.clone(), tls) => connected,
        };
        match connected {
            Ok(pubsub) => {
                retrying.recovered(PUBSUB_STEP);
                return Ok(Some(pubsub));
            }
            Err(err) if err.directive() == Directive::Retry => {
                if !wait_after(retrying, PUBSUB_STEP, &err, backoff, cancel).await {
                    return Ok(None);
                }
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// Reports a transient failure of `step`, then waits the backoff; `false` when cancelled.
async fn wait_after(
    retrying: &Retrying,
    step: &'static str,
    err: &(dyn std::error::Error + Sync),
    backoff: &mut Backoff,
    cancel: &CancellationToken,
) -> bool {
    let reason = crate::ops::telemetry::error_chain(err);
    retrying.failed(step, &reason);
    let delay = backoff.next_delay();
    warn!(error = %reason, ?delay, attempt = backoff.attempts(), "{step} failed; retrying");
    sleep_or_cancel(delay, cancel).await
}

/// What checking the channels needs: the client, and the session to renew when refused.
struct Channels<'a> {
    pubsub: &'a PubSub,
    session: &'a SessionHandle,
    authenticator: &'a Authenticator,
    retrying: &'a Retrying,
}

impl Channels<'_> {
    /// `GetTopic` for every channel (retried while the org is unavailable, after a re-login
    /// when the session is refused): each must exist and allow subscribing. `Ok(false)` when
    /// cancelled first.
    async fn check(
        &self,
        source: &SourceConfig,
        backoff: &mut Backoff,
        cancel: &CancellationToken,
    ) -> Result<bool, PipelineError> {
        for channel in &source.channels {
            let topic = loop {
                let used = self.session.current();
                let err = match self.pubsub.get_topic(&channel.name).await {
                    Ok(topic) => break topic,
                    Err(err) => err,
                };
                match err.directive() {
                    Directive::Retry => {}
                    Directive::Reauthenticate => {
                        if let Err(login) = self.session.renew(self.authenticator, &used).await {
                            if login.directive() != Directive::Retry {
                                return Err(login.into());
                            }
                            self.retrying.failed(LOGIN_STEP, &login.to_string());
                        }
                    }
                    _ => return Err(err.into()),
                }
                if !wait_after(self.retrying, PUBSUB_STEP, &err, backoff, cancel).await {
                    return Ok(false);
                }
            };
            self.retrying.recovered(PUBSUB_STEP);
            self.retrying.recovered(LOGIN_STEP);
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
}

/// The source's producers, its checkpoint store and its topic admin.
type KafkaParts = (Vec<Producer>, CheckpointStore, Option<TopicAdmin>);

/// The producers, the checkpoint store and the topic admin, retried while Kafka cannot be
/// reached (a broken configuration or a corrupt checkpoint stops); `Ok(None)` when cancelled.
async fn kafka(
    config: &Config,
    source: &SourceConfig,
    stats: &PipelineStats,
    cancel: &CancellationToken,
) -> Result<Option<KafkaParts>, PipelineError> {
    let settings = crate::kafka::KafkaSettings::from(&config.kafka);
    let Some(producers) = producers(config, source, &settings, &stats.retrying, cancel).await?
    else {
        return Ok(None);
    };
    for producer in &producers {
        stats.register_deliveries(producer.delivery_stats());
    }
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let opened = tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            opened = open_kafka(config, &settings) => opened,
        };
        match opened {
            Ok((checkpoints, topics)) => {
                stats.retrying.recovered(KAFKA_STEP);
                return Ok(Some((producers, checkpoints, topics)));
            }
            Err(err) if kafka_is_transient(&err) => {
                if !wait_after(&stats.retrying, KAFKA_STEP, &err, &mut backoff, cancel).await {
                    return Ok(None);
                }
            }
            Err(err) => return Err(err),
        }
    }
}

/// The checkpoint store (its topic read to the end) and the topic admin.
async fn open_kafka(
    config: &Config,
    settings: &KafkaSettings,
) -> Result<(CheckpointStore, Option<TopicAdmin>), PipelineError> {
    let checkpoints =
        CheckpointStore::open(settings, &config.kafka.checkpoint_topic, &config.name).await?;
    let topics = topic_admin(config, settings).await?;
    Ok((checkpoints, topics))
}

/// Kafka could not answer (metadata, reading or creating a topic): waiting can help. A client
/// the settings cannot create, or a corrupt checkpoint, cannot be waited out.
fn kafka_is_transient(err: &PipelineError) -> bool {
    use crate::source::checkpoint::CheckpointError;
    match err {
        PipelineError::Checkpoint(err) => match err {
            CheckpointError::Read { .. } | CheckpointError::Task(_) => true,
            CheckpointError::CreateTopic { source, .. } => source.is_unreachable(),
            _ => false,
        },
        PipelineError::Kafka(err) => err.is_unreachable(),
        _ => false,
    }
}

/// The producer of each channel, by index: clones of one idempotent producer, or one
/// transactional producer per channel in exactly-once mode.
async fn producers(
    config: &Config,
    source: &SourceConfig,
    settings: &KafkaSettings,
    retrying: &Retrying,
    cancel: &CancellationToken,
) -> Result<Option<Vec<Producer>>, PipelineError> {
    Ok(Some(match source.delivery {
        DeliveryMode::AtLeastOnce => {
            vec![Producer::new(settings)?; source.channels.len()]
        }
        // Before the checkpoints are read: initialising fences an earlier owner and aborts its
        // open transaction, so what is read next is final.
        DeliveryMode::ExactlyOnce => {
            let mut producers = Vec::with_capacity(source.channels.len());
            for channel in &source.channels {
                let registered =
                    transactional_producer(config, settings, &channel.name, retrying, cancel);
                let Some(producer) = registered.await? else {
                    return Ok(None);
                };
                producers.push(producer);
            }
            producers
        }
    }))
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
    retrying: &Retrying,
    cancel: &CancellationToken,
) -> Result<Option<Producer>, PipelineError> {
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
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let init = tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            init = producer.init_transactions(INIT_TRANSACTIONS_TIMEOUT) => init,
        };
        match init {
            Ok(()) => break,
            // Kafka did not answer in time: librdkafka lets a retriable failure of
            // `init_transactions` be called again (rd_kafka_init_transactions, "retriable").
            Err(err) if err.transaction_failure() == TransactionFailure::Retriable => {
                if !wait_after(retrying, KAFKA_STEP, &err, &mut backoff, cancel).await {
                    return Ok(None);
                }
            }
            Err(err) => {
                return Err(PipelineError::Channel {
                    channel: channel.to_owned(),
                    message: format!(
                        "`source.delivery: exactly_once` needs Kafka transactions: registering transactional id {id:?} failed: {}",
                        crate::ops::telemetry::error_chain(&err)
                    ),
                });
            }
        }
    }
    info!(transactional_id = %id, "transactional producer registered");
    Ok(Some(producer))
}
