//! The interop tier: clients nobody at forcebridge wrote, against `forcebridge sim --tls-ca` run
//! as a user runs it. `./scripts/test.sh` installs them, pinned: pozil's Node Pub/Sub client
//! (`salesforce-pubsub-api-client`) and jsforce (`tests/interop/node/package.json` and its lock
//! file, `npm ci` into `tests/interop/node/node_modules`), and grpcio-tools, avro and
//! simple-salesforce (`tests/interop/python/requirements.txt`, a venv in
//! `tests/interop/python/.venv`). The scenarios (`tests/interop/node/*.mjs`,
//! `tests/interop/python/scenario.py`) print JSON lines; this file asserts each exactly, and that
//! what each client decoded equals what forcebridge put in Kafka for the same events (the same
//! org, read by forcebridge's source into the embedded mock cluster). Without Node.js, the venv
//! or the installed packages a test says SKIPPED, and fails under `CI=true`.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use forcebridge::config::Config;
use support::kafka::{MockKafka, wait_for_records};
use support::source::{WAIT, start, value};

/// `forcebridge sim` as a child process, killed on drop.
struct Sim {
    child: Child,
    org_id: String,
    login_url: String,
    pubsub: String,
    ca: PathBuf,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sim {
    /// Starts the org over TLS on free ports with 2,500 existing Accounts (more than one query
    /// page), keepalives after 2 s without a response (a client sees its subscription is open),
    /// the demo JWT key in `dir/jwt.pem`, and reads its endpoints from what it prints.
    fn start(dir: &Path) -> Sim {
        let ca = dir.join("ca.pem");
        let mut child = Command::new(env!("CARGO_BIN_EXE_forcebridge"))
            .args(["sim", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .arg("--tls-ca")
            .arg(&ca)
            .arg("--write-jwt-key")
            .arg(dir.join("jwt.pem"))
            .args(["--seed", "Account=2500", "--keepalive-interval", "2s"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("sim.log")).unwrap())
            .spawn()
            .expect("spawn forcebridge sim");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut org_id, mut login_url, mut pubsub) = (None, None, None);
        for line in lines.by_ref() {
            let line = line.unwrap();
            let url = line.split_whitespace().last().unwrap_or("").to_owned();
            if let Some(rest) = line.strip_prefix("simulated Salesforce org ") {
                org_id = rest.split_whitespace().next().map(str::to_owned);
            } else if line.trim_start().starts_with("Pub/Sub API") {
                pubsub = Some(url);
            } else if line.trim_start().starts_with("login/instance URL") {
                login_url = Some(url);
            }
            if org_id.is_some() && login_url.is_some() && pubsub.is_some() {
                break;
            }
        }
        // The org goes on printing (credentials, a config): keep reading, or it dies of EPIPE.
        std::thread::spawn(move || lines.for_each(drop));
        let pubsub = pubsub.expect("the org prints its Pub/Sub endpoint");
        Sim {
            child,
            org_id: org_id.expect("the org prints its id"),
            login_url: login_url.expect("the org prints its instance URL"),
            pubsub,
            ca,
        }
    }
}

/// The Node client's directory when Node.js and the installed packages are there.
fn node_clients() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/node");
    let node = Command::new("node").arg("--version").output();
    let installed = dir
        .join("node_modules/salesforce-pubsub-api-client")
        .is_dir();
    if node.is_ok_and(|o| o.status.success()) && installed {
        return Some(dir);
    }
    let why = "interop tier SKIPPED: run ./scripts/test.sh (it installs Node.js packages in tests/interop/node)";
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("{why}");
    None
}

/// Runs a Node script of `dir` with `args` against `sim`; its JSON lines by step.
fn run_node(dir: &Path, sim: &Sim, script: &[&str]) -> BTreeMap<String, Value> {
    let output = Command::new("node")
        .args(script)
        .current_dir(dir)
        .env("SF_LOGIN_URL", &sim.login_url)
        .env("SF_PUBSUB", sim.pubsub.trim_start_matches("https://"))
        .env("SF_CLIENT_ID", "3MVG9SIM.forcebridge.demo.consumer.key")
        .env("SF_CLIENT_SECRET", "SIM0123456789SECRET")
        .env("SF_USERNAME", "demo@forcebridge.sim")
        .env("SF_PASSWORD", "forcebridge-demoSIMTOKEN42")
        .env("SF_JWT_KEY", sim.ca.with_file_name("jwt.pem"))
        .env("NODE_EXTRA_CA_CERTS", &sim.ca)
        .output()
        .expect("run node");
    parse_steps("Node", &output)
}

/// The Python venv's interpreter when `./scripts/test.sh` installed it.
fn python_clients() -> Option<PathBuf> {
    let python =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/python/.venv/bin/python");
    if python.is_file() {
        return Some(python);
    }
    let why = "interop tier (Python) SKIPPED: run ./scripts/test.sh (it installs tests/interop/python/.venv)";
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("{why}");
    None
}

/// Runs the Python scenario against `sim`; its JSON lines by step.
fn run_python(python: &Path, sim: &Sim, scratch: &Path) -> BTreeMap<String, Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(python)
        .arg(root.join("tests/interop/python/scenario.py"))
        .env("SF_LOGIN_URL", &sim.login_url)
        .env("SF_PUBSUB", sim.pubsub.trim_start_matches("https://"))
        .env("SF_CLIENT_ID", "3MVG9SIM.forcebridge.demo.consumer.key")
        .env("SF_CLIENT_SECRET", "SIM0123456789SECRET")
        .env("SF_CA", &sim.ca)
        .env("PROTO", root.join("proto/pubsub_api.proto"))
        .env("OUT", scratch)
        .output()
        .expect("run python");
    parse_steps("Python", &output)
}

/// The JSON lines of a scenario's stdout by step; panics with its output if it failed.
fn parse_steps(what: &str, output: &std::process::Output) -> BTreeMap<String, Value> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the {what} scenario failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| (v["step"].as_str().unwrap().to_owned(), v))
        .collect()
}

/// The hex replay id forcebridge writes for the Node client's number (the first 8 bytes, big
/// endian, of the org's 10-byte replay id).
fn replay_hex(n: &Value) -> String {
    format!("{:016x}0000", n.as_u64().unwrap())
}

/// forcebridge's source against the same org, into the mock cluster: the Account records by
/// replay id.
async fn forcebridge_records(sim: &Sim, count: usize) -> BTreeMap<String, Value> {
    let kafka = MockKafka::start(1);
    let bootstrap = kafka.bootstrap();
    let yaml = format!(
        "name: interop\nsalesforce:\n  login_url: {login}\n  pubsub_endpoint: {pubsub}\n  ca_file: {ca}\n  auth:\n    type: client_credentials\n    client_id: 3MVG9SIM.forcebridge.demo.consumer.key\n    client_secret: SIM0123456789SECRET\nsource:\n  channels:\n    - name: /data/AccountChangeEvent\n      initial_replay: earliest\n  checkpoint_interval: 100ms\nkafka:\n  bootstrap_servers: {bootstrap}\n  create_topics: false\n",
        login = sim.login_url,
        pubsub = sim.pubsub,
        ca = sim.ca.display(),
    );
    let config = Config::from_yaml(&yaml, |_| None).expect("interop config is valid");
    let running = start(config);
    let records = wait_for_records(&bootstrap, "salesforce.Account", count, WAIT).await;
    running.cancel.cancel();
    let _ = running.handle.await;
    records
        .iter()
        .map(|r| {
            let v = value(r);
            (v["source"]["replay_id"].as_str().unwrap().to_owned(), v)
        })
        .collect()
}

/// Each change event as the Node client decoded it equals forcebridge's record of it.
fn assert_same_as_forcebridge(events: &[Value], kafka: &BTreeMap<String, Value>) {
    for event in events {
        let hex = replay_hex(&event["replayId"]);
        let record = kafka
            .get(&hex)
            .unwrap_or_else(|| panic!("forcebridge has no record of replay id {hex}"));
        assert_eq!(record["operation"], event["changeType"], "{hex}");
        assert_eq!(json!([record["id"]]), event["recordIds"], "{hex}");
        assert_eq!(record["changed_fields"], event["changedFields"], "{hex}");
        let name = record["record"].get("Name").cloned().unwrap_or(Value::Null);
        assert_eq!(name, event["Name"], "{hex}");
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "one scenario: every step's exact expectations in order"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pozil_node_client_and_jsforce_against_the_simulated_org() {
    forcebridge::ops::telemetry::install_crypto_provider();
    let Some(node_dir) = node_clients() else {
        return;
    };
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("interop-node-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sim = Sim::start(&dir);
    let steps = tokio::task::block_in_place(|| run_node(&node_dir, &sim, &["scenario.mjs"]));
    let step = |name: &str| {
        steps
            .get(name)
            .unwrap_or_else(|| panic!("no step {name}: {steps:?}"))
    };

    // jsforce over REST.
    assert_eq!(step("login")["organizationId"], sim.org_id.as_str());
    let created: Vec<String> = step("create")["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["success"], true);
            r["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(created.len(), 3);
    let upsert = step("upsert");
    assert_eq!(upsert["first"]["created"], true);
    assert_eq!(upsert["second"]["created"], false);
    assert_eq!(upsert["first"]["id"], upsert["second"]["id"]);
    let ext_id = upsert["first"]["id"].as_str().unwrap().to_owned();
    // 2,500 existing + 3 created + 1 upserted, in pages of 2,000 through nextRecordsUrl.
    assert_eq!(step("query")["totalSize"], 2504, "{}", step("query"));
    assert_eq!(step("query")["fetched"], 2504);
    assert_eq!(step("query")["pages"], json!([2000, 504]));
    assert_eq!(
        step("query_one")["records"],
        json!([{"Id": created[0], "Name": "Interop One", "Industry": "Energy"}])
    );
    assert_eq!(
        step("describe"),
        &json!({"step": "describe", "name": "Account", "fields": {
            "Id": {"type": "id", "externalId": false, "calculated": false},
            "Name": {"type": "string", "externalId": false, "calculated": false},
            "BillingCity": {"type": "string", "externalId": false, "calculated": false},
            "External_Id__c": {"type": "string", "externalId": true, "calculated": false},
            "Name_Upper__c": {"type": "string", "externalId": false, "calculated": true},
        }})
    );
    assert_eq!(step("delete")["success"], true);
    assert_eq!(step("delete")["id"], created[2].as_str());

    // pozil's client over gRPC: earliest, from a replay id, latest.
    let earliest = step("earliest")["events"].as_array().unwrap().clone();
    let summary: Vec<(String, String, Value)> = earliest
        .iter()
        .map(|e| {
            (
                e["changeType"].as_str().unwrap().to_owned(),
                e["recordIds"][0].as_str().unwrap().to_owned(),
                e["Name"].clone(),
            )
        })
        .collect();
    let t = |c: &str, id: &str, name: Value| (c.to_owned(), id.to_owned(), name);
    assert_eq!(
        summary,
        vec![
            t("CREATE", &created[0], json!("Interop One")),
            t("CREATE", &created[1], json!("Interop Two")),
            t("CREATE", &created[2], json!("Interop Three")),
            t("CREATE", &ext_id, json!("Interop Ext")),
            t("UPDATE", &ext_id, json!("Interop Ext 2")),
            t("DELETE", &created[2], Value::Null),
        ]
    );
    assert_eq!(
        earliest[4]["changedFields"],
        json!(["Name", "LastModifiedDate"])
    );
    assert_eq!(step("jwt")["events"], json!(earliest[..1]));
    let from_replay = step("from_replay");
    assert_eq!(from_replay["after"], earliest[3]["replayId"]);
    assert_eq!(from_replay["events"], json!(earliest[4..6]));
    let latest = step("latest");
    let fresh = latest["created"].as_str().unwrap();
    assert_eq!(latest["events"].as_array().unwrap().len(), 1);
    assert_eq!(latest["events"][0]["changeType"], "CREATE");
    assert_eq!(latest["events"][0]["recordIds"], json!([fresh]));
    assert_eq!(latest["events"][0]["Name"], "Interop Latest");

    // Publish, publishBatch over PublishStream, and a subscriber receiving all of them.
    let publish = step("publish");
    assert_eq!(publish["correlationKey"], "corr-single");
    assert_eq!(publish["error"], Value::Null);
    let batch = step("publish_batch");
    assert_eq!(batch["count"], 500);
    let keys: Vec<String> = (0..500).map(|i| format!("corr-{i}")).collect();
    assert_eq!(batch["correlationKeys"], json!(keys));
    let received = step("received");
    assert_eq!(received["count"], 501);
    let mut numbers = vec!["SO-SINGLE".to_owned()];
    numbers.extend((0..500).map(|i| format!("SO-{i}")));
    assert_eq!(received["orderNumbers"], json!(numbers));
    let mut replay_ids = vec![publish["replayId"].clone()];
    replay_ids.extend(batch["replayIds"].as_array().unwrap().iter().cloned());
    assert_eq!(received["replayIds"], json!(replay_ids));

    // A managed subscription: created with jsforce's Tooling API, read by name, a commit, the
    // client restarted, read by Id from right after the committed replay id.
    let managed = step("managed");
    assert_eq!(managed["created"]["success"], true);
    assert_eq!(managed["created"]["id"], managed["subscriptionId"]);
    assert!(
        managed["subscriptionId"]
            .as_str()
            .unwrap()
            .starts_with("18x")
    );
    let order_numbers = |events: &Value| -> Vec<String> {
        events
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["Order_Number__c"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        order_numbers(&managed["before"]),
        ["SO-SINGLE", "SO-0", "SO-1"]
    );
    assert_eq!(managed["committed"], managed["before"][1]["replayId"]);
    assert_eq!(order_numbers(&managed["after"]), ["SO-1", "SO-2", "SO-3"]);
    assert_eq!(
        managed["after"][0]["replayId"],
        managed["before"][2]["replayId"]
    );

    // What the Node client decoded is what forcebridge put in Kafka.
    let mut events = earliest.clone();
    events.extend(latest["events"].as_array().unwrap().iter().cloned());
    let kafka = forcebridge_records(&sim, events.len()).await;
    assert_eq!(kafka.len(), events.len());
    assert_same_as_forcebridge(&events, &kafka);
}

/// A Python Pub/Sub client generated from the proto (grpcio-tools, into target/), decoding with
/// Apache's avro package and expanding the header's bitmaps itself, and simple-salesforce over
/// REST: exact results, and each decoded change event equals forcebridge's record of it field by
/// field (README, "Kafka record format": the header's fields, the field lists, `record` as the
/// fields carrying a value plus the nulled ones); refused calls of Subscribe, ManagedSubscribe
/// and PublishStream carry the `error-code` and `rpc-id` trailers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_generated_client_and_simple_salesforce_against_the_simulated_org() {
    forcebridge::ops::telemetry::install_crypto_provider();
    let Some(python) = python_clients() else {
        return;
    };
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("interop-py-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sim = Sim::start(&dir);
    let steps = tokio::task::block_in_place(|| run_python(&python, &sim, &dir));
    let step = |name: &str| {
        steps
            .get(name)
            .unwrap_or_else(|| panic!("no step {name}: {steps:?}"))
    };
    let ids: Vec<String> = step("create")["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(step("create")["success"], json!([true, true]));
    assert_eq!(step("upsert")["statuses"], json!([201, 200]));
    // 2,500 existing + 2 created + 1 upserted, read across pages by query_all.
    assert_eq!(step("query_all")["totalSize"], 2503);
    assert_eq!(step("query_all")["fetched"], 2503);
    assert_eq!(
        step("get"),
        &json!({"step": "get", "Name": "Py One", "NumberOfEmployees": 7, "BillingCity": "Lyon"})
    );
    assert_eq!(step("describe")["externalIds"], json!(["External_Id__c"]));
    assert_eq!(
        step("update"),
        &json!({"step": "update", "status": 204, "NumberOfEmployees": null, "BillingCity": "Paris"})
    );
    assert_eq!(step("delete")["status"], 204);

    let subscribe = step("subscribe");
    let events = subscribe["events"].as_array().unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["changeType"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["CREATE", "CREATE", "CREATE", "UPDATE", "UPDATE", "DELETE"]
    );
    assert_eq!(events[0]["recordIds"], json!([ids[0]]));
    assert_eq!(events[0]["Name"], "Py One");
    assert_eq!(events[0]["NumberOfEmployees"], 7);
    assert_eq!(
        events[0]["record"]["BillingAddress"],
        json!({"City": "Lyon"})
    );
    assert_eq!(events[3]["Name"], "Py Ext 2");
    assert_eq!(events[4]["recordIds"], json!([ids[0]]));
    assert_eq!(
        events[4]["changedFields"],
        json!([
            "NumberOfEmployees",
            "LastModifiedDate",
            "BillingAddress.City"
        ])
    );
    assert_eq!(events[4]["nulledFields"], json!(["NumberOfEmployees"]));
    assert_eq!(events[5]["recordIds"], json!([ids[1]]));
    for event in events {
        assert_eq!(event["schemaId"], subscribe["topicSchemaId"]);
    }

    // Errors as the generated client sees them: the status, and the `error-code` and `rpc-id`
    // trailers (the rpc id also ending the message).
    let refused = |rpc: &str, code: &str, error_code: &str| {
        json!({"rpc": rpc, "code": code, "rpcIdInMessage": true,
               "errorCode": format!("sfdc.platform.eventbus.grpc.{error_code}")})
    };
    assert_eq!(
        step("errors")["calls"],
        json!([
            refused("Subscribe", "NOT_FOUND", "topic.not.found"),
            refused(
                "ManagedSubscribe",
                "NOT_FOUND",
                "subscription.managed.not.found"
            ),
            refused(
                "PublishStream",
                "INVALID_ARGUMENT",
                "publish.event.count.invalid"
            ),
        ])
    );

    let kafka = forcebridge_records(&sim, events.len()).await;
    for event in events {
        let hex = event["replayId"].as_str().unwrap();
        let record = kafka
            .get(hex)
            .unwrap_or_else(|| panic!("forcebridge has no record of replay id {hex}"));
        let pairs = [
            ("operation", "changeType"),
            ("commit_timestamp", "commitTimestamp"),
            ("commit_number", "commitNumber"),
            ("commit_user", "commitUser"),
            ("transaction_key", "transactionKey"),
            ("sequence_number", "sequenceNumber"),
            ("change_origin", "changeOrigin"),
            ("changed_fields", "changedFields"),
            ("nulled_fields", "nulledFields"),
            ("diff_fields", "diffFields"),
            ("record", "record"),
        ];
        for (ours, theirs) in pairs {
            assert_eq!(record[ours], event[theirs], "{hex} {ours}");
        }
        assert_eq!(json!([record["id"]]), event["recordIds"], "{hex}");
        assert_eq!(record["source"]["schema_id"], event["schemaId"], "{hex}");
        assert_eq!(record["source"]["replay_id"], event["replayId"], "{hex}");
    }
}

/// jsforce against the REST resources a loader reads: describe global, SOQL (COUNT(), a datetime
/// literal, comparisons, ORDER BY, LIMIT, OFFSET), queryAll's deleted rows, the replication API,
/// and a Platform Event published over REST that pozil's client then reads.
#[test]
fn jsforce_reads_what_a_loader_reads() {
    let Some(node_dir) = node_clients() else {
        return;
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("interop-served-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sim = Sim::start(&dir);
    let steps = run_node(&node_dir, &sim, &["rest_resources.mjs", "served"]);
    let step = |name: &str| {
        let step = steps
            .get(name)
            .unwrap_or_else(|| panic!("no step {name}: {steps:?}"));
        assert_eq!(step["error"], Value::Null, "{name} failed: {step}");
        step
    };
    assert_eq!(step("login")["organizationId"], sim.org_id.as_str());

    let global = step("describe_global");
    for object in ["Account", "Contact"] {
        assert!(
            global["names"].as_array().unwrap().contains(&json!(object)),
            "{global}"
        );
    }
    assert_eq!(
        global["account"],
        json!({"queryable": true,
               "describe": "/services/data/v62.0/sobjects/Account/describe",
               "sobject": "/services/data/v62.0/sobjects/Account"})
    );

    // 2,500 seeded (created before the last hour) and 3 of the scenario, 10, 20 and 30 employees.
    assert_eq!(
        step("soql"),
        &json!({"step": "soql", "count": 2503, "countRecords": 0, "recent": 3, "relative": 3,
                "page": ["Zeta Interop B", "Zeta Interop C"],
                "below": ["Zeta Interop B", "Zeta Interop C"]})
    );

    let mine: Vec<Value> = step("replication")["mine"].as_array().unwrap().clone();
    assert_eq!(
        step("query_all"),
        &json!({"step": "query_all", "live": 0,
                "all": [{"Id": mine[2], "Name": "Zeta Interop C", "IsDeleted": true}]})
    );
    let replication = step("replication");
    assert_eq!(replication["updated"], json!(mine[..2]));
    assert_eq!(replication["deleted"], json!([mine[2]]));

    // SOAP API Developer Guide, "login()": the session of a 64.0 login works for REST until
    // logout(); 65.0 has no login(); a wrong password is INVALID_LOGIN (src/sim/soap.rs).
    let soap = step("soap_login");
    assert_eq!(soap["organizationId"], sim.org_id.as_str(), "{soap}");
    assert_eq!(soap["userId"], step("login")["userId"], "{soap}");
    assert_eq!(soap["instanceUrl"], sim.login_url.as_str(), "{soap}");
    assert!(soap["accounts"].as_u64().unwrap() > 2000, "{soap}");
    assert_eq!(soap["accounts"], soap["accountsViaOAuth"], "{soap}");
    assert_eq!(soap["afterLogout"], "INVALID_SESSION_ID", "{soap}");
    assert_eq!(
        soap["v65"],
        "INVALID_OPERATION: The SOAP Login operation is not available in the API version specified (65.0). Refer to the documentation for supported versions."
    );
    assert_eq!(
        soap["wrongPassword"],
        "INVALID_LOGIN: Invalid username, password, security token; or user locked out."
    );

    // Platform Events guide, "Publish Event Messages Using REST API": 201 with the record-like
    // result whose OPERATION_ENQUEUED message is the EventUuid; subscribers get the event with
    // that EventUuid as the event's id.
    let event = step("platform_event_rest");
    let uuid = &event["published"]["errors"][0]["message"];
    assert_eq!(event["published"]["success"], true);
    assert_eq!(
        event["published"]["errors"][0]["statusCode"],
        "OPERATION_ENQUEUED"
    );
    assert!(
        event["published"]["id"]
            .as_str()
            .unwrap()
            .starts_with("e01")
    );
    assert_eq!(
        event["received"],
        json!([{"id": uuid, "Order_Number__c": "SO-REST", "Quantity__c": 3}])
    );
}

/// jsforce against the resources a generic client uses beyond a loader's: identity,
/// sObject basic information, SOQL `LIKE` and `OR`, `composite/tree`, `composite/batch`. Each
/// step runs on its own; the failure lists every step that failed with the org's answer.
#[test]
fn jsforce_reads_identity_basic_info_and_writes_trees_and_batches() {
    let Some(node_dir) = node_clients() else {
        return;
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("interop-added-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sim = Sim::start(&dir);
    let steps = run_node(&node_dir, &sim, &["rest_resources.mjs", "added"]);
    let user_id = steps["login"]["userId"].clone();
    let tree_ids = steps["composite_tree"]["ids"].clone();
    let expected = [
        // Identity URLs (REST API Developer Guide, "Identity URLs"), reached as jsforce does:
        // the `id` of the token response.
        json!({"step": "identity", "user_id": user_id, "organization_id": sim.org_id,
               "username": "demo@forcebridge.sim"}),
        // Resources by Version: the list names `identity` among the others.
        json!({"step": "resources", "has_identity": true}),
        // sObject Basic Information: GET /sobjects/Account answers objectDescribe and recentItems.
        json!({"step": "basic_info", "name": "Account",
               "urls": "/services/data/v62.0/sobjects/Account", "recentItems": true}),
        // sObject Tree: referenceIds in order, an Id each, no errors.
        json!({"step": "composite_tree", "hasErrors": false, "referenceIds": ["acc1", "acc2"],
               "ids": tree_ids}),
        // Composite Batch: each subrequest's status and body; a 404 makes hasErrors true.
        json!({"step": "composite_batch", "hasErrors": true, "statusCodes": [201, 200, 404],
               "created": true, "queried": ["Batch One"], "notFound": "NOT_FOUND"}),
        json!({"step": "soql_like_or", "names": ["Batch One", "Tree One", "Tree Two"]}),
    ];
    let mut failed = Vec::new();
    for want in expected {
        let name = want["step"].as_str().unwrap();
        let got = steps.get(name).cloned().unwrap_or(Value::Null);
        let ok = match name {
            "resources" => got["keys"]
                .as_array()
                .is_some_and(|keys| keys.contains(&json!("identity"))),
            "composite_tree" => got == want && tree_ids.as_array().is_some_and(|i| i.len() == 2),
            _ => got == want,
        };
        if !ok {
            failed.push(format!("{name}: expected {want}, got {got}"));
        }
    }
    assert!(failed.is_empty(), "failed steps:\n{}", failed.join("\n"));
}
