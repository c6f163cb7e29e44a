//! The demo's setup: its options ([`DemoArgs`]) and errors ([`DemoError`]), its topics, the
//! embedded Kafka that holds them, and the config the demo runs with.
//!
//! Contract: [`start_kafka`] creates every topic the demo uses up front (the mock cluster has no
//! CreateTopics API), the Account topic with enough partitions for `--accounts` (a mock-cluster
//! partition keeps only its last 5 MB); [`demo_config`] is the config a user would write for
//! the org and the cluster: the Account channel with `snapshot: initial`, the other two from
//! `earliest`, the write-back topic.

use crate::kafka::EmbeddedKafka;
use crate::sim::SimOrg;

/// Options of `forcebridge demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Accounts that exist in the org before forcebridge starts: the snapshot loads them.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) existing_accounts: usize,
    /// Accounts to create (half of them are then updated).
    #[arg(long, default_value_t = 2000)]
    pub(crate) accounts: usize,
    /// Contacts to create.
    #[arg(long, default_value_t = 200)]
    pub(crate) contacts: usize,
    /// Platform Events (`/event/Order_Event__e`) to publish.
    #[arg(long, default_value_t = 100)]
    pub(crate) platform_events: usize,
    /// Write-back messages (upserts of new accounts by External Id) for the round trip.
    #[arg(long, default_value_t = 1000)]
    pub(crate) write_backs: usize,
    /// Keep the simulated org and Kafka running after the summary, until Ctrl-C.
    #[arg(long)]
    pub(crate) keep_running: bool,
    /// Give up when the records have not all arrived after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub(crate) timeout_secs: u64,
}

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the simulated org failed: {0}")]
    Sim(String),
    #[error("the embedded Kafka failed: {0}")]
    Kafka(String),
    #[error("the demo config was rejected: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Pipeline(#[from] crate::source::PipelineError),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    #[error("{0}")]
    Mismatch(String),
}

pub(super) const ACCOUNT_TOPIC: &str = "salesforce.Account";
pub(super) const CONTACT_TOPIC: &str = "salesforce.Contact";
pub(super) const ORDER_TOPIC: &str = "salesforce.Order_Event__e";
pub(super) const WRITEBACK_TOPIC: &str = "salesforce.writeback";
pub(super) const CONFLICTS_TOPIC: &str = "forcebridge.conflicts";

/// Partitions for an embedded topic of about `records` records: a mock-cluster partition keeps
/// only its last 5 MB (older records are dropped), so keep each under 4 MB at ~1.5 KB a record.
fn object_topic_partitions(records: usize) -> i32 {
    const RECORD_BYTES: usize = 1536;
    const PARTITION_BYTES: usize = 4 << 20;
    (1 + records * RECORD_BYTES / PARTITION_BYTES).min(1000) as i32
}

/// Starts the embedded Kafka (three mock brokers) with every topic the demo uses.
pub(super) fn start_kafka(args: &DemoArgs) -> Result<EmbeddedKafka, DemoError> {
    let kafka = EmbeddedKafka::start(3).map_err(|e| DemoError::Kafka(e.to_string()))?;
    // The mock cluster has no CreateTopics API: create forcebridge's own topics up front.
    for topic in [
        "forcebridge.checkpoints",
        "forcebridge.dlq",
        ACCOUNT_TOPIC,
        CONTACT_TOPIC,
        ORDER_TOPIC,
        WRITEBACK_TOPIC,
        CONFLICTS_TOPIC,
    ] {
        let partitions = if topic == ACCOUNT_TOPIC {
            object_topic_partitions(args.accounts * 2 + args.existing_accounts)
        } else {
            1
        };
        kafka
            .create_topic(topic, partitions)
            .map_err(|e| DemoError::Kafka(e.to_string()))?;
    }
    Ok(kafka)
}

/// The config a user would write for this org and cluster.
pub(super) fn demo_config(sim: &SimOrg, bootstrap: &str) -> String {
    format!(
        r#"name: forcebridge-demo
{salesforce}source:
  channels:
    - name: /data/AccountChangeEvent
      snapshot: initial
    - name: /data/ContactChangeEvent
      initial_replay: earliest
    - name: /event/Order_Event__e
      initial_replay: earliest
  topic_template: "salesforce.{{object}}"
  checkpoint_interval: 200ms
sink:
  topics: [{WRITEBACK_TOPIC}]
  objects:
    Account:
      external_id_field: External_Id__c
  linger: 100ms
  commit_interval: 200ms
kafka:
  bootstrap_servers: {bootstrap}
"#,
        salesforce = sim.salesforce_yaml(),
    )
}
