//! `forcebridge check`: is it safe to start with this config?
//!
//! Contract: after the config has validated, logs in to Salesforce; with a source, connects to the
//! Pub/Sub API and asks `GetTopic` for every channel (it must exist and allow subscribing); with a
//! sink, reads `/limits` through the REST client (one API call) and reports the daily allowance
//! against the reserve; then Kafka (with `kafka.properties`, so SASL/TLS settings count): metadata,
//! the checkpoint topic readable (source), every write-back topic present and the sink's consumer
//! group's committed offsets readable (sink), and for `source.delivery: exactly_once` a
//! transactional producer initialised under a throwaway id (see [`transactions`]). Every step
//! prints one line, `ok` or `FAILED` with the reason; secrets are never printed. Returns `false`
//! when any step failed.

use std::path::Path;
use std::time::Duration;

use crate::config::{Config, DeliveryMode, SinkConfig};
use crate::ops::telemetry::error_chain;
use crate::salesforce::auth::{Authenticator, SessionHandle};
use crate::salesforce::pubsub::PubSub;
use crate::salesforce::tls::ClientTls;

/// `forcebridge check` found a step that failed (each is reported on its own line).
#[derive(Debug, thiserror::Error)]
#[error("some checks failed: not safe to start")]
pub struct NotSafe;

/// `forcebridge check`: the config at `path` has loaded and validated; says so, then (unless
/// `offline`) runs the checks. Fails when any check failed.
pub async fn command(path: &Path, config: &Config, offline: bool) -> Result<(), NotSafe> {
    println!("{}: configuration is valid", path.display());
    if offline {
        return Ok(());
    }
    if run(config).await {
        println!("safe to start");
        Ok(())
    } else {
        Err(NotSafe)
    }
}

/// The report: one line per step, `ok` or `FAILED` with the reason.
struct Report {
    /// Every step so far passed.
    ok: bool,
}

impl Report {
    fn step(&mut self, step: &str, outcome: Result<String, String>) {
        match &outcome {
            Ok(detail) => println!("  ok      {step}{}", suffix(detail)),
            Err(reason) => println!("  FAILED  {step}: {reason}"),
        }
        self.ok &= outcome.is_ok();
    }
}

/// Runs the checks, printing a report; `true` when all passed.
async fn run(config: &Config) -> bool {
    let mut report = Report { ok: true };
    report.step("config", Ok(String::new()));

    let tls = ClientTls::from_config(&config.salesforce);
    let http = match &tls {
        Ok(tls) => crate::salesforce::auth::http_client(tls, config.salesforce.http_timeout)
            .map_err(|e| e.to_string()),
        Err(e) => Err(error_chain(&e)),
    };
    let session = login(config, &http, &mut report).await;
    if let (Some(session), Some(sink), Ok(http)) = (&session, &config.sink, &http) {
        report.step(
            "REST API (sink)",
            rest_limits(config, sink, http, session).await,
        );
    }
    if let Some(session) = session.filter(|_| config.source.is_some())
        && let Ok(tls) = &tls
    {
        pubsub(config, session, tls, &mut report).await;
    }
    kafka(config, &mut report).await;
    report.ok
}

/// Step "Salesforce login"; the session, when it succeeded.
async fn login(
    config: &Config,
    http: &Result<reqwest::Client, String>,
    report: &mut Report,
) -> Option<SessionHandle> {
    let session = match http {
        Err(err) => Err(err.clone()),
        Ok(http) => Authenticator::new(&config.salesforce, http.clone())
            .login()
            .await
            .map_err(|e| e.to_string()),
    };
    match session {
        Ok(session) => {
            report.step(
                "Salesforce login",
                Ok(format!(
                    "org {} at {}",
                    session.org_id, session.instance_url
                )),
            );
            Some(SessionHandle::new(session))
        }
        Err(reason) => {
            report.step("Salesforce login", Err(reason));
            None
        }
    }
}

/// Step "REST API (sink)": `/limits` read through the sink's REST client, the daily allowance
/// against the reserve.
async fn rest_limits(
    config: &Config,
    sink: &SinkConfig,
    http: &reqwest::Client,
    session: &SessionHandle,
) -> Result<String, String> {
    let rest = crate::sink::rest_client(
        config,
        sink,
        http.clone(),
        session.clone(),
        &crate::ops::telemetry::SinkStats::default(),
    );
    let cancel = tokio_util::sync::CancellationToken::new();
    let limits = tokio::time::timeout(config.salesforce.http_timeout, rest.limits(&cancel));
    match limits.await {
        Err(_) => Err("no answer in time".to_owned()),
        Ok(Err(err)) => Err(error_chain(&err)),
        Ok(Ok(usage)) => {
            let keep = rest.guard().reserve().calls(usage.max);
            if usage.remaining() <= keep {
                Err(format!(
                    "{} of {} daily API calls left, at or under the reserve of {keep}: writing would pause",
                    usage.remaining(),
                    usage.max
                ))
            } else {
                Ok(format!(
                    "{} of {} daily API calls left, reserve {keep}",
                    usage.remaining(),
                    usage.max
                ))
            }
        }
    }
}

/// Steps "Pub/Sub API" and, once connected, "channel <name>" for every source channel.
async fn pubsub(config: &Config, session: SessionHandle, tls: &ClientTls, report: &mut Report) {
    match PubSub::connect(&config.salesforce.pubsub_endpoint, session, tls).await {
        Err(err) => report.step("Pub/Sub API", Err(error_chain(&err))),
        Ok(pubsub) => {
            report.step("Pub/Sub API", Ok(config.salesforce.pubsub_endpoint.clone()));
            for channel in config.source.iter().flat_map(|s| &s.channels) {
                let outcome = match pubsub.get_topic(&channel.name).await {
                    Err(err) => Err(error_chain(&err)),
                    Ok(topic) if !topic.can_subscribe => {
                        Err("exists, but the user may not subscribe to it".into())
                    }
                    Ok(_) => Ok("can subscribe".into()),
                };
                report.step(&format!("channel {}", channel.name), outcome);
            }
        }
    }
}

/// The Kafka steps ([`kafka_checks`], off the async runtime), then, for `exactly_once` and
/// when Kafka answered, "Kafka transactions".
async fn kafka(config: &Config, report: &mut Report) {
    let settings = crate::kafka::KafkaSettings::from(&config.kafka);
    let probe_config = kafka_probe_config(config);
    let kafka = tokio::task::spawn_blocking(move || kafka_checks(&probe_config))
        .await
        .unwrap_or_else(|err| vec![("Kafka".to_owned(), Err(error_chain(&err)))]);
    let reachable = kafka.first().is_some_and(|(_, outcome)| outcome.is_ok());
    for (step, outcome) in kafka {
        report.step(&step, outcome);
    }
    if reachable
        && config
            .source
            .as_ref()
            .is_some_and(|s| s.delivery == DeliveryMode::ExactlyOnce)
    {
        report.step(
            "Kafka transactions (exactly_once)",
            transactions(&settings, &format!("{}/check", config.name)).await,
        );
    }
}

/// What the blocking Kafka checks need from the config.
struct KafkaProbe {
    settings: crate::kafka::KafkaSettings,
    checkpoint_topic: Option<String>,
    create_topics: bool,
    sink_topics: Vec<String>,
    sink_group: Option<String>,
}

fn kafka_probe_config(config: &Config) -> KafkaProbe {
    KafkaProbe {
        settings: crate::kafka::KafkaSettings::from(&config.kafka),
        checkpoint_topic: config
            .source
            .as_ref()
            .map(|_| config.kafka.checkpoint_topic.clone()),
        create_topics: config.kafka.create_topics,
        sink_topics: config
            .sink
            .as_ref()
            .map(|s| s.topics.clone())
            .unwrap_or_default(),
        sink_group: config.sink.as_ref().map(|_| config.sink_group_id()),
    }
}

/// The Kafka steps, first "Kafka" (metadata from the cluster, with `kafka.properties` applied:
/// the steps after it are skipped when it fails), then the checkpoint topic (source: its
/// partitions' watermarks are readable, or it is absent and will be created), the write-back
/// topics (sink: each exists) and the sink's consumer group (its committed offsets are
/// readable: the group coordinator answers and the credentials may use the group).
fn kafka_checks(probe: &KafkaProbe) -> Vec<(String, Result<String, String>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let mut steps = Vec::new();
    let client = |group: &str| -> Result<BaseConsumer, String> {
        let mut config = rdkafka::ClientConfig::new();
        config
            .set("bootstrap.servers", &probe.settings.bootstrap_servers)
            .set("group.id", group)
            .set("enable.auto.commit", "false");
        for (k, v) in &probe.settings.properties {
            config.set(k, v);
        }
        config.create().map_err(|e| e.to_string())
    };
    let consumer = match client("forcebridge-check") {
        Ok(c) => c,
        Err(reason) => return vec![("Kafka".into(), Err(reason))],
    };
    let metadata = match consumer.fetch_metadata(None, KAFKA_TIMEOUT) {
        Ok(m) => m,
        Err(err) => return vec![("Kafka".into(), Err(error_chain(&err)))],
    };
    steps.push((
        "Kafka".to_owned(),
        Ok(format!(
            "{}, {} broker(s)",
            probe.settings.bootstrap_servers,
            metadata.brokers().len()
        )),
    ));
    let find = |name: &str| metadata.topics().iter().find(|t| t.name() == name);
    if let Some(topic) = &probe.checkpoint_topic {
        let outcome = match find(topic) {
            None if probe.create_topics => Ok("absent; forcebridge will create it".to_owned()),
            None => Ok("absent; the broker must auto-create it (create_topics: false)".to_owned()),
            Some(t) => t
                .partitions()
                .iter()
                .try_fold(0i64, |sum, p| {
                    consumer
                        .fetch_watermarks(topic, p.id(), KAFKA_TIMEOUT)
                        .map(|(low, high)| sum + (high - low).max(0))
                        .map_err(|e| format!("partition {}: {e}", p.id()))
                })
                .map(|n| {
                    format!(
                        "readable, {} partition(s), {n} record(s)",
                        t.partitions().len()
                    )
                }),
        };
        steps.push((format!("checkpoint topic {topic}"), outcome));
    }
    for topic in &probe.sink_topics {
        let outcome = match find(topic) {
            None => Err("does not exist: the sink would have nothing to read".to_owned()),
            Some(t) => match t.error() {
                Some(err) => Err(format!("{err:?}")),
                None => Ok(format!("{} partition(s)", t.partitions().len())),
            },
        };
        steps.push((format!("write-back topic {topic}"), outcome));
    }
    if let Some(group) = &probe.sink_group {
        let mut partitions = rdkafka::TopicPartitionList::new();
        for t in probe.sink_topics.iter().filter_map(|name| find(name)) {
            for p in t.partitions() {
                partitions.add_partition(t.name(), p.id());
            }
        }
        let outcome = if partitions.count() == 0 {
            Err("no write-back topic to read offsets of".to_owned())
        } else {
            client(group).and_then(|c| {
                c.committed_offsets(partitions, KAFKA_TIMEOUT)
                    .map_err(|e| e.to_string())
                    .map(|offsets| {
                        let committed = offsets
                            .elements()
                            .iter()
                            .filter(|e| e.offset() != rdkafka::Offset::Invalid)
                            .count();
                        format!(
                            "reachable, committed offsets for {committed} of {} partition(s)",
                            offsets.count()
                        )
                    })
            })
        };
        steps.push((format!("consumer group {group}"), outcome));
    }
    steps
}

/// `source.delivery: exactly_once`: registers a transactional producer under the throwaway id
/// `<name>/check` (never a channel's id, so no running producer is fenced) and initialises
/// transactions: the cluster has a transaction coordinator and the credentials may use
/// transactional ids. Nothing is produced, so no topic gets a record; librdkafka does not expose
/// the broker's API versions, so `EndTxn` itself is first exercised by the source's first
/// commit. The id stays registered on the broker until `transactional.id.expiration.ms`.
async fn transactions(settings: &crate::kafka::KafkaSettings, id: &str) -> Result<String, String> {
    let producer = crate::kafka::Producer::transactional(settings, id, KAFKA_TIMEOUT)
        .map_err(|e| error_chain(&e))?;
    producer
        .init_transactions(KAFKA_TIMEOUT)
        .await
        .map_err(|e| error_chain(&e))?;
    Ok(format!("transactional id {id} initialised"))
}

/// How long each Kafka request of the check may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

fn suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}
