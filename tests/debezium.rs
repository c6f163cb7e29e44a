//! `source.format: debezium` end to end: simulated org (records existing before forcebridge
//! starts, then creates, updates, deletes and an undelete) → forcebridge (`snapshot: initial`,
//! tombstones) → Kafka (the librdkafka mock cluster). The topic's values are Debezium's envelope
//! field by field, and a reader written here that follows Flink's `debezium-json` rules (`c` and
//! `r` insert `after`, `u` replaces the row with `after`, `d` removes the row of `before`'s key,
//! tombstones skipped) rebuilds exactly the org's records.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};

use forcebridge::config::Config;
use forcebridge::sim::{SimConfig, SimOrg};
use support::kafka::{ConsumedRecord, read_topic};
use support::replica::{assert_converged, merge};
use support::source::{WAIT, key, start, value};

const ACCOUNTS: &str = "salesforce.Account";
const CHANNEL: &str = "/data/AccountChangeEvent";

fn config(sim: &SimOrg, bootstrap: &str) -> Config {
    let text = support::source::config_text(
        sim,
        bootstrap,
        &[CHANNEL],
        "  tombstones: true\n  format: debezium\n",
        support::source::MOCK_KAFKA,
    )
    .replace(
        "      initial_replay: earliest\n",
        "      initial_replay: latest\n      snapshot: initial\n",
    );
    Config::from_yaml(&text, |_| None).expect("test config is valid")
}

/// The rows a Flink `debezium-json` table keyed by `Id` holds after reading `records` in order.
/// `u` replaces the row with `after`, except that an `after` marked `source.partial` (an UPDATE
/// event without `full_record`: the changed fields only) is merged into the row, as the
/// documentation tells a loader to do.
fn flink_rows(records: &[ConsumedRecord]) -> BTreeMap<String, Map<String, Value>> {
    let mut rows: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for record in records {
        if record.value.is_none() {
            continue; // Flink's debezium-json skips tombstones.
        }
        let v = value(record);
        let after = v["after"].as_object().cloned();
        match v["op"].as_str().unwrap() {
            "c" | "r" => {
                let after = after.expect("c and r carry after");
                rows.insert(after["Id"].as_str().unwrap().to_owned(), after);
            }
            "u" => {
                // Flink refuses an update whose before is null (apache/flink#13019).
                let before = v["before"].as_object().expect("u carries before");
                let id = before["Id"].as_str().unwrap().to_owned();
                let after = after.expect("u carries after");
                if v["source"]["partial"] == true {
                    merge(rows.entry(id).or_default(), &after);
                } else {
                    rows.insert(id, after);
                }
            }
            "d" => {
                let before = v["before"].as_object().expect("d carries before");
                assert!(v["after"].is_null());
                rows.remove(before["Id"].as_str().unwrap());
            }
            other => panic!("unexpected op {other}"),
        }
    }
    rows
}

#[allow(
    clippy::too_many_lines,
    reason = "one scenario: snapshot, changes, then every op's envelope and the replica"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debezium_topics_rebuild_the_org_under_flink_rules() {
    let kafka = support::source::mock_kafka();
    kafka.create_topic(ACCOUNTS, 1);
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig {
        keepalive_interval: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let org_id = sim.config().org_id.clone();
    let ids = sim.generate("Account", 200).unwrap();
    let running = start(config(&sim, &bootstrap));
    tokio::time::timeout(WAIT, async {
        while running.channel(CHANNEL).snapshots_completed == 0 {
            running.assert_running();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the snapshot ends");

    let fields = |v: Value| v.as_object().unwrap().clone();
    let created = sim
        .create(
            "Account",
            fields(json!({"Name": "Created", "BillingAddress": {"City": "Lyon"}})),
        )
        .unwrap();
    sim.update(
        "Account",
        &ids[0],
        fields(json!({"Name": "Renamed", "Phone": null})),
    )
    .unwrap();
    sim.update(
        "Account",
        &created,
        fields(json!({"BillingAddress": {"City": "Nice"}})),
    )
    .unwrap();
    sim.delete("Account", &ids[1]).unwrap();
    sim.delete("Account", &ids[2]).unwrap();
    sim.undelete("Account", &ids[2]).unwrap();
    support::source::wait_caught_up(&sim, &bootstrap, CHANNEL).await;
    running.stop().await;

    let records = read_topic(&bootstrap, ACCOUNTS);
    let ops: Vec<(String, String)> = records
        .iter()
        .filter(|r| r.value.is_some())
        .map(|r| (key(r), value(r)["op"].as_str().unwrap().to_owned()))
        .collect();
    assert!(
        ops.iter().filter(|(_, op)| op == "r").count() >= 200,
        "every existing record read"
    );
    for record in records.iter().filter(|r| r.value.is_some()) {
        let v = value(record);
        let s = &v["source"];
        assert_eq!(s["connector"], "salesforce", "{v}");
        assert_eq!(s["name"], "test");
        assert_eq!(s["db"], org_id.as_str());
        assert_eq!(s["table"], "Account");
        assert_eq!(s["channel"], CHANNEL);
        assert!(s["ts_ms"].as_i64().unwrap() > 0, "{v}");
        assert!(v["ts_ms"].as_u64().unwrap() > 0, "{v}");
        assert!(v.get("transaction").is_some());
        // The key stays the plain Id (what compaction and the sink rely on).
        let id = v["after"]["Id"].as_str().or(v["before"]["Id"].as_str());
        assert_eq!(id, Some(key(record).as_str()), "{v}");
        match v["op"].as_str().unwrap() {
            "r" => assert_eq!(s["snapshot"], "true"),
            _ => {
                assert_eq!(s["snapshot"], "false");
                // 64-bit commit numbers as strings.
                assert!(s["commit_number"].is_string(), "{v}");
                assert!(s["transaction_key"].is_string(), "{v}");
                assert!(s["sequence_number"].as_i64().unwrap() >= 1, "{v}");
            }
        }
    }
    let of = |id: &str| -> Vec<Value> {
        records
            .iter()
            .filter(|r| key(r) == id && r.value.is_some() && value(r)["op"] != "r")
            .map(value)
            .collect()
    };
    let created_records = of(&created);
    assert_eq!(created_records[0]["op"], "c");
    assert_eq!(created_records[0]["before"], Value::Null);
    assert_eq!(
        created_records[0]["after"]["BillingAddress"]["City"],
        "Lyon"
    );
    assert_eq!(created_records[1]["op"], "u");
    assert_eq!(created_records[1]["source"]["partial"], true);
    let changed = created_records[1]["source"]["changed_fields"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        changed.contains(&json!("BillingAddress.City")),
        "{changed:?}"
    );
    let renamed = &of(&ids[0])[0];
    assert_eq!(renamed["op"], "u");
    assert_eq!(renamed["before"], json!({"Id": ids[0]}));
    assert_eq!(renamed["after"]["Name"], "Renamed");
    assert_eq!(renamed["source"]["change_type"], "UPDATE");
    let deleted = &of(&ids[1])[0];
    assert_eq!(deleted["op"], "d");
    assert_eq!(deleted["after"], Value::Null);
    // A tombstone follows the delete (source.tombstones).
    let at = records
        .iter()
        .position(|r| key(r) == ids[1] && r.value.is_some() && value(r)["op"] == "d")
        .unwrap();
    assert!(records[at + 1].value.is_none() && key(&records[at + 1]) == ids[1]);
    let undeleted: Vec<String> = of(&ids[2])
        .iter()
        .map(|v| v["op"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(undeleted, ["d", "c"], "UNDELETE is a c");
    assert_eq!(of(&ids[2])[1]["source"]["change_type"], "UNDELETE");

    assert_converged(&sim, &flink_rows(&records));
    python_parses(&records);
}

/// Every value parses with Python's `json` too (another reader than serde_json), when
/// `python3` is installed.
fn python_parses(records: &[ConsumedRecord]) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let script = "import json,sys\nn=0\nfor line in sys.stdin:\n    v=json.loads(line)\n    assert v['op'] in 'cudr', v\n    n+=1\nprint(n)";
    let Ok(mut child) = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    else {
        eprintln!("python3 not found: JSON check by python skipped");
        return;
    };
    let mut lines = Vec::new();
    let values: Vec<&Vec<u8>> = records.iter().filter_map(|r| r.value.as_ref()).collect();
    for v in &values {
        lines.extend_from_slice(v);
        lines.push(b'\n');
    }
    child.stdin.take().unwrap().write_all(&lines).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python's json refused a value");
    let parsed: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(parsed, values.len());
}

/// A Platform Event channel cannot take Debezium's envelope: the config is refused, naming the
/// key.
#[test]
fn debezium_on_a_platform_event_channel_is_refused() {
    let yaml = |source: &str| {
        format!(
            "salesforce:\n  login_url: https://login.example.com\n  auth:\n    type: password\n    client_id: a\n    client_secret: b\n    username: c\n    password: d\nsource:\n  channels:\n    - name: /event/Order_Event__e\n{source}kafka:\n  bootstrap_servers: 127.0.0.1:9\n"
        )
    };
    let err = Config::from_yaml(&yaml("  format: debezium\n"), |_| None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("source.format") && err.contains("Platform Event"),
        "{err}"
    );
    let err = Config::from_yaml(
        &yaml("").replace(
            "/event/Order_Event__e\n",
            "/event/Order_Event__e\n      format: debezium\n",
        ),
        |_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("source.channels[0].format"), "{err}");
    Config::from_yaml(
        &yaml("  format: debezium\n").replace(
            "/event/Order_Event__e\n",
            "/event/Order_Event__e\n      format: forcebridge\n",
        ),
        |_| None,
    )
    .expect("a forcebridge override on the event channel is accepted");
}

/// Gap events and an overflow re-sync under `format: debezium`: the re-read records take the
/// op of their meaning (`GAP_UPDATE` → `u` with the whole re-read row, a `GAP_CREATE` of a
/// record gone since → `d`, `GAP_DELETE` → `d` + tombstone, `GAP_UNDELETE` → `c`, the
/// overflow's rows → `r` marked `incremental`), and the Flink reader still rebuilds the org.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_and_overflow_records_take_debezium_ops() {
    use forcebridge::sim::GapKind;
    let kafka = support::source::mock_kafka();
    kafka.create_topic(ACCOUNTS, 1);
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig {
        overflow_threshold: 20,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let config = support::source::config_with(
        &sim,
        &bootstrap,
        &[CHANNEL],
        "  tombstones: true\n  format: debezium\n",
        support::source::MOCK_KAFKA,
    );
    let running = start(config);
    let fields = |v: Value| v.as_object().unwrap().clone();
    let a = sim
        .create("Account", fields(json!({"Name": "Acme"})))
        .unwrap();
    let b = sim
        .create("Account", fields(json!({"Name": "Beta"})))
        .unwrap();
    let c = sim
        .create("Account", fields(json!({"Name": "Gamma"})))
        .unwrap();
    sim.delete("Account", &c).unwrap();
    sim.emit_gaps_for(std::slice::from_ref(&a));
    sim.update("Account", &a, fields(json!({"Name": "Acme Corp"})))
        .unwrap();
    sim.emit_gaps_for(&[]);
    sim.emit_gap("Account", std::slice::from_ref(&c), GapKind::Create)
        .unwrap();
    sim.emit_gap("Account", std::slice::from_ref(&c), GapKind::Delete)
        .unwrap();
    sim.emit_gap("Account", std::slice::from_ref(&b), GapKind::Undelete)
        .unwrap();
    // One transaction past the overflow threshold: a GAP_OVERFLOW re-sync of the object.
    sim.generate("Account", 25).unwrap();
    let last = sim.replay_ids(CHANNEL).last().cloned().expect("events");
    tokio::time::timeout(WAIT, async {
        loop {
            let store = support::source::checkpoints(&bootstrap).await;
            if store
                .get(CHANNEL)
                .is_some_and(|c| c.replay_id[..] == last[..])
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the stream caught up with the org");
    running.stop().await;

    let records = read_topic(&bootstrap, ACCOUNTS);
    let step = |r: &ConsumedRecord| match &r.value {
        None => (key(r), "tombstone".to_owned(), String::new()),
        Some(_) => {
            let v = value(r);
            (
                key(r),
                v["op"].as_str().unwrap().to_owned(),
                v["source"]["change_type"].as_str().unwrap().to_owned(),
            )
        }
    };
    let steps: Vec<(String, String, String)> = records.iter().take(11).map(step).collect();
    let s = |id: &str, op: &str, ct: &str| (id.to_owned(), op.to_owned(), ct.to_owned());
    assert_eq!(
        steps,
        [
            s(&a, "c", "CREATE"),
            s(&b, "c", "CREATE"),
            s(&c, "c", "CREATE"),
            s(&c, "d", "DELETE"),
            s(&c, "tombstone", ""),
            s(&a, "u", "GAP_UPDATE"),
            s(&c, "d", "GAP_CREATE"),
            s(&c, "d", "GAP_DELETE"),
            s(&c, "tombstone", ""),
            s(&b, "c", "GAP_UNDELETE"),
            steps[10].clone(),
        ]
    );
    let gap_update = value(&records[5]);
    assert_eq!(gap_update["before"], json!({"Id": a}));
    assert_eq!(gap_update["after"]["Name"], "Acme Corp");
    assert_eq!(gap_update["source"]["reread"]["state"], "present");
    assert_eq!(gap_update["source"]["partial"], false);
    let absent = value(&records[6]);
    assert_eq!(absent["source"]["reread"]["state"], "absent");
    let resync: Vec<Value> = records
        .iter()
        .filter(|r| r.value.is_some() && value(r)["source"]["change_type"] == "GAP_OVERFLOW")
        .map(value)
        .collect();
    // The re-sync's rows are reads (`r`, an incremental snapshot); the records it finds
    // deleted since (the replication API) are deletes (`d`, no `after`).
    let reads = resync.iter().filter(|v| v["op"] == "r").count();
    assert!(reads >= 20, "{reads} re-sync rows of {}", resync.len());
    for v in &resync {
        if v["after"].is_null() {
            assert_eq!(v["op"], "d", "{v}");
            assert_eq!(v["source"]["reread"]["state"], "deleted", "{v}");
        } else {
            assert_eq!(v["op"], "r", "{v}");
            assert_eq!(v["source"]["snapshot"], "incremental", "{v}");
        }
    }
    assert_converged(&sim, &flink_rows(&records));
}

/// An update whose long text field Salesforce sends as a diff (`diffFields`; Change Data Capture
/// Developer Guide, "Sending Data Differences for Fields of Updated Records"): the diff stage
/// re-reads the value in forcebridge's envelope, then the record is converted: `after` holds the
/// full current value, `source.diff_fields` names the field, `source.reread` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diff_field_is_reread_then_written_in_debezium() {
    let kafka = support::source::mock_kafka();
    kafka.create_topic(ACCOUNTS, 1);
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let old = (0..20)
        .map(|i| format!("Paragraph {i}: business applications are moving to the cloud."))
        .collect::<Vec<_>>()
        .join("\n");
    let new = old.replace("Paragraph 3: business", "Paragraph 3: commercial");
    let fields = |v: Value| v.as_object().unwrap().clone();
    let id = sim
        .create(
            "Account",
            fields(json!({"Name": "Acme", "Description": old})),
        )
        .unwrap();
    sim.update("Account", &id, fields(json!({"Description": new})))
        .unwrap();
    let config = support::source::config_with(
        &sim,
        &bootstrap,
        &[CHANNEL],
        "  format: debezium\n",
        support::source::MOCK_KAFKA,
    );
    let running = start(config);
    let records = support::kafka::wait_for_records(&bootstrap, ACCOUNTS, 2, WAIT).await;
    running.stop().await;
    let update = value(&records[1]);
    assert_eq!(update["op"], "u", "{update}");
    assert_eq!(update["after"]["Description"], new.as_str());
    assert_eq!(update["source"]["diff_fields"], json!(["Description"]));
    assert_eq!(update["source"]["reread"]["mode"], "diff");
    assert_eq!(update["source"]["partial"], true);
    assert_eq!(value(&records[0])["after"]["Description"], old.as_str());
}
