//! Large text fields that a change event carries as a diff (`diffFields`) end to end: simulated
//! org → Pub/Sub → forcebridge → Kafka (the librdkafka mock cluster). Salesforce sends an update
//! of a Long Text Area of at least 1,000 characters as a unified diff (Change Data Capture
//! Developer Guide, "Sending Data Differences for Fields of Updated Records"); the source never
//! presents the diff as the value.

mod support;

use apache_avro::types::Value as Avro;
use serde_json::{Value, json};

use forcebridge::config::Config;
use forcebridge::sim::catalog::{ACCOUNT_CHANGE_EVENT, SchemaVersion};
use forcebridge::sim::{RestFault, SimConfig, SimOrg};
use support::kafka::{ConsumedRecord, MockKafka, wait_for_records};
use support::source::{WAIT, fields, header, key, start, value};

const ACCOUNTS: &str = "salesforce.Account";
const CHANNEL: &str = "/data/AccountChangeEvent";

fn config(sim: &SimOrg, bootstrap: &str, extra_source: &str) -> Config {
    support::source::config_with(
        sim,
        bootstrap,
        &[CHANNEL],
        extra_source,
        "  create_topics: false\n",
    )
}

fn mock_kafka() -> MockKafka {
    let kafka = support::source::mock_kafka();
    kafka.create_topic(ACCOUNTS, 1);
    kafka
}

/// A Description of 20 paragraphs (about 2,400 characters), and the same with one word changed.
fn descriptions() -> (String, String) {
    let old = (0..20)
        .map(|i| format!("Paragraph {i}: business applications are moving to the cloud, and the shift has gained momentum over ten years."))
        .collect::<Vec<_>>()
        .join("\n");
    let new = old.replace(
        "Paragraph 3: business applications",
        "Paragraph 3: business apps",
    );
    (old, new)
}

/// Creates an Account with the long Description and updates it with a small change.
fn create_and_update(sim: &SimOrg) -> String {
    let (old, new) = descriptions();
    let id = sim
        .create(
            "Account",
            fields(json!({"Name": "Acme", "Description": old})),
        )
        .unwrap();
    sim.update("Account", &id, fields(json!({"Description": new})))
        .unwrap();
    id
}

fn update_of<'r>(records: &'r [ConsumedRecord], id: &str) -> &'r ConsumedRecord {
    records
        .iter()
        .find(|r| key(r) == id && r.value.is_some() && value(r)["operation"] == "UPDATE")
        .expect("the update's record")
}

/// By default the diff field is re-read over REST: `record.Description` is the full current
/// value. A record deleted before the re-read keeps its diff under `diffs`, marked absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diff_field_arrives_as_the_full_value() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let (_, new) = descriptions();
    let a = create_and_update(&sim);
    let b = create_and_update(&sim);
    sim.delete("Account", &b).unwrap();
    let (used_before, _) = sim.api_usage();
    // Retryable refusals of the re-read (retry.rs): retried, not dead-lettered.
    sim.fail_next_requests(2, RestFault::ServiceUnavailable);
    let running = start(config(&sim, &bootstrap, ""));

    // A created, updated; B created, updated, deleted.
    let records = wait_for_records(&bootstrap, ACCOUNTS, 5, WAIT).await;
    let update = update_of(&records, &a);
    let v = value(update);
    assert_eq!(v["record"]["Description"], json!(new));
    assert_eq!(v["diff_fields"], json!(["Description"]));
    assert_eq!(v["reread"]["mode"], "diff");
    assert_eq!(v["reread"]["state"], "present");
    assert_eq!(v["reread"]["fields"], json!(["Description"]));
    assert_eq!(v.get("diffs"), None);
    assert_eq!(header(update, "forcebridge.reread"), "diff");
    // One query per event with a diff (A's update, B's update), counted in the org's API usage.
    let (used_after, _) = sim.api_usage();
    assert_eq!(used_after - used_before, 2);

    // Deleted before the re-read: not lost, the diff under its own key, never in `record`.
    let v = value(update_of(&records, &b));
    assert_eq!(v["reread"]["state"], "absent");
    assert_eq!(v["record"].get("Description"), None);
    let diff = v["diffs"]["Description"].as_str().expect("the diff");
    assert!(diff.starts_with("--- \n+++ "), "{diff}");
    assert!(diff.contains("\n@@ -4,1 +4,1 @@\n"), "{diff}");

    // The checkpoint moved past every event; nothing was dead-lettered.
    let last = records.last().unwrap();
    let stats = running.stop().await;
    let channel = &stats.snapshot().channels[CHANNEL];
    assert_eq!(channel.events_dead_lettered, 0);
    assert_eq!(
        (
            channel.diff_events,
            channel.diff_records_reread,
            channel.diff_records_absent
        ),
        (2, 1, 1)
    );
    let store = support::source::checkpoints(&bootstrap).await;
    let saved = store.get(CHANNEL).expect("checkpoint saved");
    assert_eq!(
        hex::encode(&saved.replay_id),
        header(last, "forcebridge.replay_id")
    );
}

/// With `source.diff_fields: pass`, the diff goes under `diffs` and not into `record`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_pass_the_diff_is_under_its_own_key() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let a = create_and_update(&sim);
    let (used_before, _) = sim.api_usage();
    let running = start(config(&sim, &bootstrap, "  diff_fields: pass\n"));

    let records = wait_for_records(&bootstrap, ACCOUNTS, 2, WAIT).await;
    let update = update_of(&records, &a);
    let v: Value = value(update);
    assert_eq!(v["record"].get("Description"), None);
    assert_eq!(v["diff_fields"], json!(["Description"]));
    let diff = v["diffs"]["Description"].as_str().expect("the diff");
    assert!(diff.starts_with("--- \n+++ "), "{diff}");
    assert!(
        diff.contains("\n@@ -4,1 +4,1 @@\n-Paragraph 3: business applications"),
        "{diff}"
    );
    assert_eq!(v.get("reread"), None);
    assert_eq!(sim.api_usage().0, used_before, "no REST call");
    // The CREATE carries the full value.
    let create = records
        .iter()
        .find(|r| value(r)["operation"] == "CREATE")
        .unwrap();
    assert_eq!(
        value(create)["record"]["Description"],
        json!(descriptions().0)
    );
    let _ = running.stop().await;
}

/// An Account UPDATE of `id` whose `Description` is the diff `diff`, named in `diffFields`.
fn diff_update(schema: &SchemaVersion, id: &str, diff: &str) -> Vec<u8> {
    let strings =
        |items: &[&str]| Avro::Array(items.iter().map(|s| Avro::String((*s).into())).collect());
    let position = schema.field("Description").unwrap().position;
    let bitmap = forcebridge::sim::bitmap::encode_hex(&[position].into_iter().collect());
    let header = Avro::Record(vec![
        ("entityName".into(), Avro::String("Account".into())),
        ("recordIds".into(), strings(&[id])),
        ("changeType".into(), Avro::Enum(1, "UPDATE".into())),
        ("changeOrigin".into(), Avro::String(String::new())),
        (
            "transactionKey".into(),
            Avro::String("000046c7-a642-11e2-c29b-229c6786473e".into()),
        ),
        ("sequenceNumber".into(), Avro::Int(1)),
        ("commitTimestamp".into(), Avro::Long(1_763_892_900_000)),
        ("commitNumber".into(), Avro::Long(11_657_372_702_432)),
        (
            "commitUser".into(),
            Avro::String("005SIM000000001AAA".into()),
        ),
        ("nulledFields".into(), strings(&[])),
        ("diffFields".into(), strings(&[&bitmap])),
        ("changedFields".into(), strings(&[&bitmap])),
    ]);
    let mut record = vec![("ChangeEventHeader".to_owned(), header)];
    for f in &schema.fields {
        let v = if f.name == "Description" {
            Avro::Union(1, Box::new(Avro::String(diff.into())))
        } else {
            Avro::Union(0, Box::new(Avro::Null))
        };
        record.push((f.name.clone(), v));
    }
    apache_avro::to_avro_datum(schema.schema(), Avro::Record(record)).expect("encodes")
}

/// A diff re-read that Salesforce refuses for good (the Id's checksum is wrong:
/// INVALID_QUERY_FILTER_OPERATOR) dead-letters the event with stage `diff`, its raw payload
/// keeping the diff; the events after it flow and the checkpoint moves past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diff_that_cannot_be_reread_is_dead_lettered() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let account = SchemaVersion::parse(ACCOUNT_CHANGE_EVENT).unwrap();
    let diff = "--- \n+++ 00\n@@ -1,1 +1,1 @@\n-a\n+b\n";
    let payload = diff_update(&account, "001SIM000000001XYZ", diff);
    let dead_replay = hex::encode(
        sim.inject_raw_event(CHANNEL, &account.id, payload.clone())
            .unwrap(),
    );
    let after = sim
        .create("Account", fields(json!({"Name": "After"})))
        .unwrap();
    let running = start(config(&sim, &bootstrap, ""));

    let records = wait_for_records(&bootstrap, ACCOUNTS, 1, WAIT).await;
    assert_eq!(key(&records[0]), after);
    let dead = wait_for_records(&bootstrap, "forcebridge.dlq", 1, WAIT).await;
    assert_eq!(header(&dead[0], "forcebridge.error.stage"), "diff");
    assert_eq!(header(&dead[0], "forcebridge.replay_id"), dead_replay);
    assert_eq!(dead[0].value.as_deref(), Some(&payload[..]));
    let reason = header(&dead[0], "forcebridge.error.reason");
    assert!(
        reason.starts_with("re-reading the diff fields [\"Description\"]")
            && reason.contains("INVALID_QUERY_FILTER_OPERATOR"),
        "{reason}"
    );
    let stats = running.stop().await;
    assert_eq!(stats.snapshot().channels[CHANNEL].events_dead_lettered, 1);
    let store = support::source::checkpoints(&bootstrap).await;
    let saved = store.get(CHANNEL).expect("checkpoint saved");
    assert_eq!(
        hex::encode(&saved.replay_id),
        header(&records[0], "forcebridge.replay_id")
    );
}
