//! Exactly-once mode (`source.delivery: exactly_once`): each channel's records and its
//! checkpoint are committed in one Kafka transaction, and a second owner of a channel fences the
//! first.
//!
//! The mock cluster and tansu do not filter aborted transactions for `read_committed` readers,
//! so these tests check what a transaction commits and who may commit, not read isolation.

mod support;

use std::collections::BTreeSet;

use forcebridge::sim::{SimConfig, SimOrg};
use forcebridge::source::PipelineError;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use support::kafka::{Tansu, read_topic, wait_for_records};
use support::source::{
    MOCK_KAFKA, WAIT, checkpoints, config_with, key, mock_kafka, replay_ids, start,
};

const CHANNEL: &str = "/data/AccountChangeEvent";
const ACCOUNTS: &str = "salesforce.Account";
const EXACTLY_ONCE: &str = "  delivery: exactly_once\n";

/// Every event once, and the committed checkpoint is the last event's replay id.
async fn transactions_scenario(bootstrap: &str, extra_kafka: &str) {
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let config = || config_with(&sim, bootstrap, &[CHANNEL], EXACTLY_ONCE, extra_kafka);

    let ids: BTreeSet<String> = sim.generate("Account", 600).unwrap().into_iter().collect();
    let running = start(config());
    let records = wait_for_records(bootstrap, ACCOUNTS, 600, WAIT).await;
    running.stop().await;

    let (distinct, all) = replay_ids(&records);
    assert_eq!(all.len(), 600, "each event once");
    assert_eq!(distinct.len(), 600);
    assert_eq!(records.iter().map(key).collect::<BTreeSet<_>>(), ids);
    let last = distinct.iter().max().unwrap().clone();
    let store = checkpoints(bootstrap).await;
    assert_eq!(
        hex::encode(
            store
                .get(CHANNEL)
                .expect("a committed checkpoint")
                .replay_id
        ),
        last
    );

    // A restart resumes after the committed checkpoint: the new events only.
    let more: BTreeSet<String> = sim.generate("Account", 100).unwrap().into_iter().collect();
    let running = start(config());
    let records = wait_for_records(bootstrap, ACCOUNTS, 700, WAIT).await;
    running.stop().await;
    assert_eq!(records.len(), 700, "nothing repeated after a graceful stop");
    let new_keys: BTreeSet<String> = records[..]
        .iter()
        .map(key)
        .filter(|k| more.contains(k))
        .collect();
    assert_eq!(new_keys, more);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_and_checkpoints_commit_together_on_the_mock_cluster() {
    let kafka = mock_kafka();
    kafka.create_topic(ACCOUNTS, 3);
    transactions_scenario(&kafka.bootstrap(), MOCK_KAFKA).await;
}

/// tansu registers transactional ids but has no `EndTxn`: exactly-once stops at its first commit
/// with an error saying so, and an at-least-once run then delivers every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_without_transactions_is_a_clear_error() {
    let Some(tansu) = tokio::task::spawn_blocking(Tansu::start_or_skip)
        .await
        .unwrap()
    else {
        return;
    };
    let bootstrap = tansu.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let ids: BTreeSet<String> = sim.generate("Account", 300).unwrap().into_iter().collect();

    let running = start(config_with(&sim, &bootstrap, &[CHANNEL], EXACTLY_ONCE, ""));
    let outcome = tokio::time::timeout(WAIT, running.handle)
        .await
        .expect("exactly-once stops")
        .unwrap();
    let text = outcome
        .expect_err("no transactions on this broker")
        .to_string();
    assert!(text.contains("does not support transactions"), "{text}");
    assert!(text.contains("at_least_once"), "{text}");

    let running = start(config_with(&sim, &bootstrap, &[CHANNEL], "", ""));
    let records = wait_for_records(&bootstrap, ACCOUNTS, 300, WAIT).await;
    let (distinct, _) = replay_ids(&records);
    while running.stats.snapshot().records_produced() < 300 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    running.stop().await;
    assert_eq!(distinct.len(), 300, "every event once at least");
    assert_eq!(records.iter().map(key).collect::<BTreeSet<_>>(), ids);
    sim.shutdown().await;
}

/// The broker answers a commit with `PRODUCER_FENCED` (what Kafka answers once another producer
/// registered the same transactional id): the instance stops with an error naming the channel
/// and the transactional id, and a new owner delivers every event from the committed
/// checkpoint. (The mock cluster hands a second registration a new producer id instead of
/// fencing, so the broker's answer is injected.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_instance_stops_and_the_next_owner_loses_nothing() {
    let kafka = mock_kafka();
    kafka.create_topic(ACCOUNTS, 3);
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let config = || config_with(&sim, &bootstrap, &[CHANNEL], EXACTLY_ONCE, MOCK_KAFKA);

    sim.generate("Account", 200).unwrap();
    let first = start(config());
    first.wait_produced(200).await;
    kafka.cluster().request_errors(
        RDKafkaApiKey::EndTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
    );
    sim.generate("Account", 50).unwrap();
    let outcome = tokio::time::timeout(WAIT, first.handle)
        .await
        .expect("the fenced instance stops")
        .unwrap();
    match outcome {
        Err(err @ PipelineError::Fenced { .. }) => {
            let text = err.to_string();
            assert!(text.contains(CHANNEL), "{text}");
            assert!(text.contains("\"test/data/AccountChangeEvent\""), "{text}");
        }
        other => panic!("expected a fenced error, got {other:?}"),
    }

    sim.generate("Account", 50).unwrap();
    let second = start(config());
    let total = sim.event_count(CHANNEL);
    assert_eq!(total, 300);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (distinct, _) = replay_ids(&read_topic(&bootstrap, ACCOUNTS));
        if distinct.len() >= total || tokio::time::Instant::now() > deadline {
            assert_eq!(distinct.len(), total, "every event is in Kafka");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    second.stop().await;
    let store = checkpoints(&bootstrap).await;
    let (distinct, _) = replay_ids(&read_topic(&bootstrap, ACCOUNTS));
    assert_eq!(
        hex::encode(store.get(CHANNEL).unwrap().replay_id),
        *distinct.iter().max().unwrap()
    );
    sim.shutdown().await;
}
