//! `forcebridge capture` and `forcebridge sim --replay`: a capture of a simulated org, replayed,
//! gives forcebridge's source exactly the Kafka records the original org gave it.

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use forcebridge::salesforce::pubsub::{Delivery, PubSub, ReplayStart};
use forcebridge::sim::replay::format::{Capture, Captured, read_capture};
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
    let mut topics = records_of(sim, &[CHANNEL], &[TOPIC], n).await;
    topics.pop().unwrap()
}

/// The records forcebridge's source, subscribed to `channels`, produces from `sim`'s `n` events
/// into each of `topics`, as read back from a fresh mock cluster.
async fn records_of(
    sim: &SimOrg,
    channels: &[&str],
    topics: &[&str],
    n: u64,
) -> Vec<Vec<ConsumedRecord>> {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let running = start(config_with(sim, &bootstrap, channels, "", MOCK_KAFKA));
    running.wait_produced(n).await;
    running.stop().await;
    let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    tokio::task::spawn_blocking(move || topics.iter().map(|t| read_topic(&bootstrap, t)).collect())
        .await
        .unwrap()
}

/// The simulated org of `sim --replay`, serving `capture`.
async fn replay_of(capture: &Arc<Capture>) -> SimOrg {
    SimOrg::start(SimConfig {
        replay: Some(capture.clone()),
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

/// The replay ids of the events captured on `channel`, in order.
fn captured_ids(capture: &Capture, channel: &str) -> Vec<Vec<u8>> {
    capture.streams[channel]
        .iter()
        .filter_map(|c| match c {
            Captured::Event(e) => Some(e.replay_id.clone()),
            Captured::Keepalive { .. } => None,
        })
        .collect()
}

/// A record as compared: key, value, headers.
type Compared = (Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, Vec<u8>)>);

/// Key, value and headers of each record.
fn strip(records: Vec<ConsumedRecord>) -> Vec<Compared> {
    records
        .into_iter()
        .map(|r| (r.key, r.value, r.headers))
        .collect()
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

    let replayed = replay_of(&Arc::new(captured)).await;
    let from_original = source_records(&original, 4).await;
    let from_replay = source_records(&replayed, 4).await;
    assert_eq!(from_original.len(), 4);
    assert_eq!(strip(from_replay), strip(from_original));
    replayed_presets(&replayed, &read_capture(&dir).unwrap(), CHANNEL, &[]).await;
    std::fs::remove_dir_all(&dir).unwrap();
    original.shutdown().await;
    replayed.shutdown().await;
}

/// A Pub/Sub client logged in to `org`.
async fn pubsub_of(org: &SimOrg) -> PubSub {
    use forcebridge::salesforce::auth::{Authenticator, SessionHandle, http_client};
    use forcebridge::salesforce::tls::ClientTls;

    let config = config_with(org, "127.0.0.1:1", &[CHANNEL], "", MOCK_KAFKA);
    let tls = ClientTls::from_config(&config.salesforce).unwrap();
    let http = http_client(&tls, std::time::Duration::from_secs(10)).unwrap();
    let session = Authenticator::new(&config.salesforce, http)
        .login()
        .await
        .unwrap();
    PubSub::connect(&org.pubsub_endpoint(), SessionHandle::new(session), &tls)
        .await
        .unwrap()
}

/// The replayed org serves `channel` from `earliest` exactly as captured: replay ids, schema
/// ids (blank where captured blank), event ids, payload bytes.
async fn served_as_captured(org: &SimOrg, capture: &Capture, channel: &str) {
    let wire = |replay_id: &[u8], schema_id: &str, id: &str, payload: &[u8]| {
        (
            replay_id.to_vec(),
            schema_id.to_owned(),
            id.to_owned(),
            payload.to_vec(),
        )
    };
    let expected: Vec<_> = capture.streams[channel]
        .iter()
        .filter_map(|c| match c {
            Captured::Event(e) => Some(wire(&e.replay_id, &e.schema_id, &e.event_id, &e.payload)),
            Captured::Keepalive { .. } => None,
        })
        .collect();
    let pubsub = pubsub_of(org).await;
    let mut sub = pubsub
        .subscribe(
            channel,
            ReplayStart::Earliest,
            100,
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < expected.len() {
        if let Delivery::Event(c) = sub.next().await.unwrap() {
            let e = c.event.unwrap();
            got.push(wire(&c.replay_id, &e.schema_id, &e.id, &e.payload));
        }
    }
    assert_eq!(got, expected);
}

/// On the replayed org, GetTopic answers as captured for `channel` and for `topics` (GetSchema
/// too, where the org gave a schema id), and a CUSTOM subscription to `channel` after the second
/// captured replay id starts at the third, with the captured id and schema id.
async fn replayed_presets(org: &SimOrg, capture: &Capture, channel: &str, topics: &[&str]) {
    let pubsub = pubsub_of(org).await;
    for name in std::iter::once(channel).chain(topics.iter().copied()) {
        let topic = pubsub.get_topic(name).await.unwrap();
        assert_eq!(topic.schema_id, capture.topics[name].schema_id, "{name}");
        if !topic.schema_id.is_empty() {
            assert_eq!(
                pubsub.get_schema(&topic.schema_id).await.unwrap(),
                capture.schemas[&topic.schema_id]
            );
        }
    }
    let third = capture.streams[channel]
        .iter()
        .filter_map(|c| match c {
            Captured::Event(e) => Some(e),
            Captured::Keepalive { .. } => None,
        })
        .nth(2)
        .unwrap();
    let ids = captured_ids(capture, channel);
    let mut sub = pubsub
        .subscribe(
            channel,
            ReplayStart::After(ids[1].clone().into()),
            1,
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap();
    match sub.next().await.unwrap() {
        Delivery::Event(e) => {
            assert_eq!(e.replay_id.as_ref(), third.replay_id.as_slice());
            assert_eq!(e.event.unwrap().schema_id, third.schema_id);
        }
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
    let org = replay_of(&Arc::new(capture)).await;
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
    let ids = captured_ids(&captured, CHANNEL);
    let expected: Vec<Vec<u8>> = org.replay_ids(CHANNEL).into_iter().collect();
    assert_eq!(ids, expected);
    std::fs::remove_dir_all(&dir).unwrap();
    org.shutdown().await;
}

/// Account and Contact changes in a simulated org; the Account it created first.
fn account_and_contact_changes(org: &SimOrg) {
    let a = org
        .create("Account", fields(json!({"Name": "Acme"})))
        .unwrap();
    org.create(
        "Contact",
        fields(json!({"Name": {"LastName": "Doe"}, "AccountId": a})),
    )
    .unwrap();
    org.update("Account", &a, fields(json!({"Name": "Acme Corp"})))
        .unwrap();
    org.create("Contact", fields(json!({"Name": {"LastName": "Roe"}})))
        .unwrap();
}

/// Captures `n` events of `channels` from `org` into `dir`.
async fn capture_channels(
    org: &SimOrg,
    channels: &[&str],
    dir: &std::path::Path,
    n: u64,
) -> Capture {
    let config = config_with(org, "127.0.0.1:1", channels, "", MOCK_KAFKA);
    let args = CaptureArgs {
        config: PathBuf::from("unused.yaml"),
        out: dir.to_path_buf(),
        duration: None,
        max_events: Some(n),
    };
    capture(args, &config, CancellationToken::new())
        .await
        .expect("capture");
    read_capture(dir).expect("the capture reads back")
}

/// `captured` (of `channel`, from `original`'s Account and Contact changes) replayed: the
/// replayed org serves `channel` as captured, and forcebridge's source produces the same records
/// in `salesforce.Account` and `salesforce.Contact` from both orgs.
async fn replay_gives_the_same_records(
    original: SimOrg,
    captured: Capture,
    channel: &str,
    dir: &std::path::Path,
) {
    let captured = Arc::new(captured);
    let replayed = replay_of(&captured).await;
    let topics = [TOPIC, "salesforce.Contact"];
    let from_original = records_of(&original, &[channel], &topics, 4).await;
    served_as_captured(&replayed, &captured, channel).await;
    let from_replay = records_of(&replayed, &[channel], &topics, 4).await;
    assert_eq!(
        from_original.iter().map(Vec::len).collect::<Vec<_>>(),
        [2, 2]
    );
    for (replay, original) in from_replay.into_iter().zip(from_original) {
        assert_eq!(strip(replay), strip(original));
    }
    std::fs::remove_dir_all(dir).unwrap();
    original.shutdown().await;
    replayed.shutdown().await;
}

/// `/data/ChangeEvents`, whose events real orgs send with a blank schema id
/// (forcedotcom/pub-sub-api#63), as the simulated org does: the capture records each event as
/// received (blank schema id), with its entity, and the entities' own channels' `GetTopic`
/// answers and schemas; replayed, forcebridge's source (which finds each event's schema through
/// its entity's channel) produces the same Kafka records in each object's topic as from the
/// original org.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_change_events_capture_gives_the_same_kafka_records() {
    forcebridge::ops::telemetry::install_crypto_provider();
    let original = SimOrg::start(SimConfig::default()).await.unwrap();
    account_and_contact_changes(&original);
    let dir = scratch("change-events");
    let all = "/data/ChangeEvents";
    let captured = capture_channels(&original, &[all], &dir, 4).await;
    let replayed = replay_of(&Arc::new(captured.clone())).await;
    let entity_topics = ["/data/AccountChangeEvent", "/data/ContactChangeEvent"];
    replayed_presets(&replayed, &captured, all, &entity_topics).await;
    replayed.shutdown().await;
    assert_eq!(captured.topics[all].schema_id, "");
    assert_eq!(
        captured.manifest.entity_channels,
        ["/data/AccountChangeEvent", "/data/ContactChangeEvent"]
    );
    let events: Vec<_> = captured.streams[all]
        .iter()
        .filter_map(|c| match c {
            Captured::Event(e) => Some((e.schema_id.as_str(), e.entity.as_deref())),
            Captured::Keepalive { .. } => None,
        })
        .collect();
    assert_eq!(
        events,
        [
            ("", Some("Account")),
            ("", Some("Contact")),
            ("", Some("Account")),
            ("", Some("Contact")),
        ]
    );
    let account_schema = &captured.topics["/data/AccountChangeEvent"].schema_id;
    assert!(captured.schemas.contains_key(account_schema));

    replay_gives_the_same_records(original, captured, all, &dir).await;
}

/// The custom channel `/data/Sales__chn` (Account, Contact), whose events carry their schema
/// ids (pozil/pub-sub-api-node-client#27): captured with each event's entity, replayed, it gives
/// forcebridge's source the same Kafka records as the original org.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_custom_channel_capture_gives_the_same_kafka_records() {
    forcebridge::ops::telemetry::install_crypto_provider();
    let original = SimOrg::start(SimConfig::default()).await.unwrap();
    account_and_contact_changes(&original);
    let dir = scratch("custom-channel");
    let sales = "/data/Sales__chn";
    let captured = capture_channels(&original, &[sales], &dir, 4).await;
    assert!(captured.manifest.entity_channels.is_empty());
    let entities: Vec<_> = captured.streams[sales]
        .iter()
        .filter_map(|c| match c {
            Captured::Event(e) => {
                assert!(captured.schemas.contains_key(&e.schema_id));
                e.entity.clone()
            }
            Captured::Keepalive { .. } => None,
        })
        .collect();
    assert_eq!(entities, ["Account", "Contact", "Account", "Contact"]);

    replay_gives_the_same_records(original, captured, sales, &dir).await;
}

/// `/data/ChangeEvents` and `/data/AccountChangeEvent` captured together: the simulated org
/// numbers an event once for all its channels, so each Account event is captured twice under one
/// replay id (with its schema id on its own channel, blank on `/data/ChangeEvents`), and the
/// Account channel's `GetTopic` answer is recorded once. Replayed, each channel is served as
/// captured, and forcebridge's source subscribed to both produces the same records as from the
/// original org.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_channels_are_each_replayed_as_captured() {
    forcebridge::ops::telemetry::install_crypto_provider();
    let original = SimOrg::start(SimConfig::default()).await.unwrap();
    account_and_contact_changes(&original);
    let dir = scratch("overlapping");
    let channels = ["/data/ChangeEvents", CHANNEL];
    let captured = capture_channels(&original, &channels, &dir, 6).await;
    assert_eq!(
        captured.manifest.entity_channels,
        ["/data/ContactChangeEvent"]
    );
    let topics = std::fs::read_to_string(dir.join("topics.jsonl")).unwrap();
    assert_eq!(topics.lines().count(), 3, "{topics}");
    let all = captured_ids(&captured, channels[0]);
    let accounts = captured_ids(&captured, CHANNEL);
    assert_eq!(all.len(), 4);
    assert_eq!(accounts, [all[0].clone(), all[2].clone()]);

    let captured = Arc::new(captured);
    let replayed = replay_of(&captured).await;
    // One bus event per captured event: a channel that was not captured (`/data/Sales__chn`,
    // Account and Contact) sees each once.
    assert_eq!(replayed.event_count("/data/Sales__chn"), 4);
    for channel in channels {
        served_as_captured(&replayed, &captured, channel).await;
    }
    let topics = [TOPIC, "salesforce.Contact"];
    let sorted = |records: Vec<Vec<ConsumedRecord>>| -> Vec<Vec<Compared>> {
        records
            .into_iter()
            .map(|r| {
                let mut r = strip(r);
                r.sort();
                r
            })
            .collect()
    };
    let from_original = sorted(records_of(&original, &channels, &topics, 6).await);
    let from_replay = sorted(records_of(&replayed, &channels, &topics, 6).await);
    assert_eq!(
        from_original.iter().map(Vec::len).collect::<Vec<_>>(),
        [4, 2]
    );
    assert_eq!(from_replay, from_original);
    std::fs::remove_dir_all(&dir).unwrap();
    original.shutdown().await;
    replayed.shutdown().await;
}

/// A `/data/ChangeEvents` event naming an entity the org has no channel for (`Nope__c`): the
/// capture records it with its entity and without that channel's topic (`GetTopic` found none);
/// replayed, forcebridge's source dead-letters it as it does against the original org, and the
/// events around it flow on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_of_an_entity_without_a_channel_is_replayed_as_captured() {
    forcebridge::ops::telemetry::install_crypto_provider();
    let original = SimOrg::start(SimConfig::default()).await.unwrap();
    original
        .create("Account", fields(json!({"Name": "Acme"})))
        .unwrap();
    // A payload that names `Nope__c` first, as a change event names its entity.
    let mut nope = vec![14];
    nope.extend_from_slice(b"Nope__c");
    nope.extend_from_slice(&[0, 0, 0]);
    original
        .inject_raw_event(CHANNEL, "", nope.clone())
        .unwrap();
    original
        .create("Contact", fields(json!({"Name": {"LastName": "Doe"}})))
        .unwrap();
    let dir = scratch("no-channel");
    let all = "/data/ChangeEvents";
    let captured = capture_channels(&original, &[all], &dir, 3).await;
    assert_eq!(
        captured.manifest.entity_channels,
        ["/data/AccountChangeEvent", "/data/ContactChangeEvent"]
    );
    let entities: Vec<_> = captured.streams[all]
        .iter()
        .filter_map(|c| match c {
            Captured::Event(e) => e.entity.clone(),
            Captured::Keepalive { .. } => None,
        })
        .collect();
    assert_eq!(entities, ["Account", "Nope__c", "Contact"]);

    let captured = Arc::new(captured);
    let replayed = replay_of(&captured).await;
    served_as_captured(&replayed, &captured, all).await;
    let topics = [TOPIC, "salesforce.Contact", "forcebridge.dlq"];
    let from_original = records_of(&original, &[all], &topics, 2).await;
    let from_replay = records_of(&replayed, &[all], &topics, 2).await;
    assert_eq!(
        from_original.iter().map(Vec::len).collect::<Vec<_>>(),
        [1, 1, 1]
    );
    assert_eq!(from_original[2][0].value.as_deref(), Some(nope.as_slice()));
    // The dead letter's reason quotes the org's error, whose rpcId is new on every call.
    let masked = |records: Vec<ConsumedRecord>| -> Vec<Compared> {
        let mut records = strip(records);
        for (_, _, headers) in &mut records {
            for (_, value) in headers.iter_mut() {
                let text = String::from_utf8(value.clone()).unwrap();
                if let Some(at) = text.find("rpcId: ") {
                    let end = (at + "rpcId: ".len() + 36).min(text.len());
                    *value = format!("{}rpcId: _{}", &text[..at], &text[end..]).into_bytes();
                }
            }
        }
        records
    };
    let reason = String::from_utf8(masked(from_original[2].clone())[0].2[1].1.clone()).unwrap();
    assert!(
        reason.contains("Nope__c") && reason.contains("rpcId: _ (error-code"),
        "{reason}"
    );
    for (replay, original) in from_replay.into_iter().zip(from_original) {
        assert_eq!(masked(replay), masked(original));
    }
    std::fs::remove_dir_all(&dir).unwrap();
    original.shutdown().await;
    replayed.shutdown().await;
}
