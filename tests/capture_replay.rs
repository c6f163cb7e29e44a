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
    replayed_presets(&replayed, &read_capture(&dir).unwrap()).await;
    std::fs::remove_dir_all(&dir).unwrap();
    original.shutdown().await;
    replayed.shutdown().await;
}

/// On the replayed org, GetTopic and GetSchema answer as captured, and a CUSTOM subscription
/// after the second captured replay id starts at the third, with the captured id.
async fn replayed_presets(org: &SimOrg, capture: &forcebridge::sim::replay::format::Capture) {
    use forcebridge::salesforce::auth::{Authenticator, SessionHandle, http_client};
    use forcebridge::salesforce::pubsub::{Delivery, PubSub, ReplayStart};
    use forcebridge::salesforce::tls::ClientTls;
    use forcebridge::sim::replay::format::Captured;

    let config = config_with(org, "127.0.0.1:1", &[CHANNEL], "", MOCK_KAFKA);
    let tls = ClientTls::from_config(&config.salesforce).unwrap();
    let http = http_client(&tls, std::time::Duration::from_secs(10)).unwrap();
    let session = Authenticator::new(&config.salesforce, http)
        .login()
        .await
        .unwrap();
    let pubsub = PubSub::connect(&org.pubsub_endpoint(), SessionHandle::new(session), &tls)
        .await
        .unwrap();
    let topic = pubsub.get_topic(CHANNEL).await.unwrap();
    assert_eq!(topic.schema_id, capture.topics[CHANNEL].schema_id);
    assert_eq!(
        pubsub.get_schema(&topic.schema_id).await.unwrap(),
        capture.schemas[&topic.schema_id]
    );
    let ids: Vec<Vec<u8>> = capture.streams[CHANNEL]
        .iter()
        .filter_map(|c| match c {
            Captured::Event(e) => Some(e.replay_id.clone()),
            Captured::Keepalive { .. } => None,
        })
        .collect();
    let mut sub = pubsub
        .subscribe(
            CHANNEL,
            ReplayStart::After(ids[1].clone().into()),
            1,
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap();
    match sub.next().await.unwrap() {
        Delivery::Event(e) => assert_eq!(e.replay_id.as_ref(), ids[2].as_slice()),
        Delivery::Keepalive { .. } => panic!("an event was expected"),
    }
}

/// A capture built from the public real-org event of pozil/pub-sub-api-node-client#27
/// (tests/fixtures/real/SOURCES.md): its payload bytes, event id, schema id and 10-byte replay
/// id as the org sent them; the schema is the one `tests/real_captures.rs` reads off the bytes
/// (the issue published none). Served by `sim --replay`, consumed by forcebridge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_of_real_org_payloads_is_served_and_consumed_exactly() {
    forcebridge::ops::telemetry::install_crypto_provider();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/capture/pozil-node-client-27");
    let capture = read_capture(&dir).expect("the fixture reads");
    let org = SimOrg::start(SimConfig {
        replay: Some(Arc::new(capture)),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let channel = "/data/ActionVente__ChangeEvent";
    let running = start(config_with(&org, &bootstrap, &[channel], "", MOCK_KAFKA));
    running.wait_produced(1).await;
    running.stop().await;
    let records =
        tokio::task::spawn_blocking(move || read_topic(&bootstrap, "salesforce.ActionVente__c"))
            .await
            .unwrap();
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.key.as_deref(), Some(&b"a21AU000000FSC5YAO"[..]));
    let value: serde_json::Value =
        serde_json::from_slice(record.value.as_deref().unwrap()).unwrap();
    // The facts of the capture (tests/real_captures.rs decodes the same bytes), with the real
    // org's 10-byte replay id [0,0,0,0,0,7,111,91,0,0] carried through.
    assert_eq!(
        value,
        json!({
            "operation": "UPDATE", "object": "ActionVente__c", "id": "a21AU000000FSC5YAO",
            "record": {"LastModifiedDate": 1_709_303_151_000_i64, "Field13__c": "arstrast"},
            "changed_fields": ["LastModifiedDate", "Field13__c"], "nulled_fields": [],
            "diff_fields": [], "commit_timestamp": 1_709_303_151_000_i64,
            "commit_number": "1709303151782928388", "commit_user": "0055J000001D89MQAS",
            "transaction_key": "00001983-4fdf-b2cf-3f09-22bfd2e31173", "sequence_number": 1,
            "change_origin": "com/salesforce/api/soap/60.0;client=SfdcInternalAPI/",
            "source": {
                "channel": channel, "replay_id": "0000000000076f5b0000",
                "event_id": "594594b7-fd12-4cd8-a77b-030e033bec19",
                "schema_id": "i6_JU3VTbNhRZYbMVlV-xQ"
            }
        })
    );
    let headers: Vec<(&str, &[u8])> = record
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    assert_eq!(
        headers,
        [
            ("forcebridge.replay_id", &b"0000000000076f5b0000"[..]),
            ("forcebridge.schema_id", b"i6_JU3VTbNhRZYbMVlV-xQ"),
            ("forcebridge.change_type", b"UPDATE"),
            (
                "forcebridge.change_origin",
                b"com/salesforce/api/soap/60.0;client=SfdcInternalAPI/"
            ),
            ("forcebridge.channel", channel.as_bytes()),
            (
                "forcebridge.event_id",
                b"594594b7-fd12-4cd8-a77b-030e033bec19"
            ),
        ]
    );
    org.shutdown().await;
}

/// A stream reset while capturing (`UNAVAILABLE`, as an outage does) is survived: the capture
/// resubscribes after the last replay id it received, so no event is lost or recorded twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_survives_a_stream_reset() {
    forcebridge::ops::telemetry::install_crypto_provider();
    let org = SimOrg::start(SimConfig::default()).await.unwrap();
    for name in ["One", "Two"] {
        org.create("Account", fields(json!({ "Name": name })))
            .unwrap();
    }
    let dir = scratch("reset");
    let config = config_with(&org, "127.0.0.1:1", &[CHANNEL], "", MOCK_KAFKA);
    let args = CaptureArgs {
        config: PathBuf::from("unused.yaml"),
        out: dir.clone(),
        duration: None,
        max_events: Some(3),
    };
    let task = tokio::spawn(async move { capture(args, &config, CancellationToken::new()).await });
    let events = dir.join("events/data.AccountChangeEvent.jsonl");
    tokio::time::timeout(support::source::WAIT, async {
        while std::fs::read_to_string(&events).map_or(0, |t| t.lines().count()) < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("two events captured");
    org.reset_streams();
    org.create("Account", fields(json!({ "Name": "Three" })))
        .unwrap();
    task.await.unwrap().expect("the capture survives the reset");
    let captured = read_capture(&dir).unwrap();
    let ids: Vec<Vec<u8>> = captured.streams[CHANNEL]
        .iter()
        .filter_map(|c| match c {
            forcebridge::sim::replay::format::Captured::Event(e) => Some(e.replay_id.clone()),
            forcebridge::sim::replay::format::Captured::Keepalive { .. } => None,
        })
        .collect();
    let expected: Vec<Vec<u8>> = org.replay_ids(CHANNEL).into_iter().collect();
    assert_eq!(ids, expected);
    std::fs::remove_dir_all(&dir).unwrap();
    org.shutdown().await;
}
