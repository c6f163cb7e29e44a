//! `forcebridge capture` and `forcebridge sim --replay`: a capture of a simulated org, replayed,
//! gives forcebridge's source exactly the Kafka records the original org gave it.

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use forcebridge::sim::replay::format::read_capture;
use forcebridge::sim::{SimConfig, SimOrg};
use forcebridge::tools::capture::command::{CaptureArgs, run as capture};
use support::kafka::{ConsumedRecord, read_topic};
use support::source::{MOCK_KAFKA, config_with, fields, mock_kafka, start};

const CHANNEL: &str = "/data/AccountChangeEvent";
const TOPIC: &str = "salesforce.Account";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "forcebridge-capture-replay-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The records forcebridge's source produces from `sim`'s `n` events, as read back from a
/// fresh mock cluster (key, value, headers, in order).
async fn source_records(sim: &SimOrg, n: u64) -> Vec<ConsumedRecord> {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let running = start(config_with(sim, &bootstrap, &[CHANNEL], "", MOCK_KAFKA));
    running.wait_produced(n).await;
    running.stop().await;
    tokio::task::spawn_blocking(move || read_topic(&bootstrap, TOPIC))
        .await
        .unwrap()
}

/// Round trip: changes in a simulated org, captured with `forcebridge capture`, replayed with
/// the org of `sim --replay`: forcebridge produces the same Kafka records (keys, values,
/// headers, replay ids included) from both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_capture_gives_the_same_kafka_records() {
    forcebridge::ops::telemetry::install_crypto_provider();
    let original = SimOrg::start(SimConfig::default()).await.unwrap();
    let a = original
        .create(
            "Account",
            fields(json!({"Name": "Acme", "Phone": "+1 555 0100"})),
        )
        .unwrap();
    original
        .create("Account", fields(json!({"Name": "Globex"})))
        .unwrap();
    original
        .update(
            "Account",
            &a,
            fields(json!({"Phone": null, "Name": "Acme Corp"})),
        )
        .unwrap();
    original.delete("Account", &a).unwrap();

    let dir = scratch("round-trip");
    let config = config_with(&original, "127.0.0.1:1", &[CHANNEL], "", MOCK_KAFKA);
    let args = CaptureArgs {
        config: PathBuf::from("unused.yaml"),
        out: dir.clone(),
        duration: None,
        max_events: Some(4),
    };
    capture(args, &config, CancellationToken::new())
        .await
        .expect("capture");
    let captured = read_capture(&dir).expect("the capture reads back");
    assert_eq!(captured.streams[CHANNEL].len(), 4);
    assert_eq!(captured.manifest.org_id, original.config().org_id);

    let replayed = SimOrg::start(SimConfig {
        replay: Some(Arc::new(captured)),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let from_original = source_records(&original, 4).await;
    let from_replay = source_records(&replayed, 4).await;
    assert_eq!(from_original.len(), 4);
    let strip = |records: Vec<ConsumedRecord>| -> Vec<_> {
        records
            .into_iter()
            .map(|r| (r.key, r.value, r.headers))
            .collect()
    };
    assert_eq!(strip(from_replay), strip(from_original));
    std::fs::remove_dir_all(&dir).unwrap();
    original.shutdown().await;
    replayed.shutdown().await;
}
