//! TLS end to end: the simulated org serves gRPC and HTTP over TLS with a certificate of a
//! generated test CA; forcebridge trusts it through `salesforce.ca_file` (no plaintext allowed),
//! for the source (Pub/Sub, OAuth, the gap re-reader's REST queries) and the sink (REST writes).
//! Without the CA the connection fails at once with a certificate error; plaintext to a host
//! that is not loopback is refused by config validation.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use forcebridge::config::Config;
use forcebridge::ops::telemetry::{SinkStats, error_chain};
use forcebridge::retry::Directive;
use forcebridge::salesforce::auth::{Session, SessionHandle, http_client};
use forcebridge::salesforce::pubsub::{PubSub, PubSubError};
use forcebridge::salesforce::tls::ClientTls;
use forcebridge::sim::gap::GapKind;
use forcebridge::sim::tls::TestCa;
use forcebridge::sim::{SimConfig, SimOrg};
use secrecy::SecretString;
use support::kafka::{MockKafka, produce, wait_for_records};
use support::source::{MOCK_KAFKA, WAIT, config_text, fields, key, mock_kafka, start, value};

const ACCOUNTS: &str = "salesforce.Account";

/// A file in a fresh directory under the target dir, removed with the directory when dropped.
struct TempFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        let dir = std::env::temp_dir().join(format!(
            "forcebridge-tls-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        TempFile { dir, path }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A simulated org serving TLS with a fresh test CA, and that CA's certificate in a file.
async fn tls_org() -> (SimOrg, TestCa, TempFile) {
    let ca = TestCa::generate().expect("test CA");
    let sim = SimOrg::start(SimConfig {
        tls: Some(ca.server.clone()),
        ..SimConfig::default()
    })
    .await
    .expect("org starts with TLS");
    let file = TempFile::new("ca.pem", &ca.ca_certificate_pem);
    (sim, ca, file)
}

/// The source config of `support::source`, with `ca_file` instead of `allow_plaintext`.
fn source_config(sim: &SimOrg, bootstrap: &str, ca_file: Option<&Path>) -> Config {
    let text = config_text(
        sim,
        bootstrap,
        &["/data/AccountChangeEvent"],
        "",
        MOCK_KAFKA,
    );
    let trust = ca_file
        .map(|p| format!("  ca_file: {}\n", p.display()))
        .unwrap_or_default();
    let text = text.replace("  allow_plaintext: true\n", &trust);
    assert!(!text.contains("allow_plaintext"));
    Config::from_yaml(&text, |_| None).expect("TLS config is valid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_runs_over_tls_with_the_test_ca() {
    let (sim, _ca, ca_file) = tls_org().await;
    assert!(sim.pubsub_endpoint().starts_with("https://127.0.0.1:"));
    assert!(sim.instance_url().starts_with("https://127.0.0.1:"));
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let running = start(source_config(&sim, &bootstrap, Some(&ca_file.path)));

    let a = sim
        .create("Account", fields(json!({"Name": "Acme"})))
        .unwrap();
    let b = sim
        .create("Account", fields(json!({"Name": "Beta"})))
        .unwrap();
    // Re-read over REST (HTTPS) by the source's gap re-reader.
    sim.emit_gap("Account", std::slice::from_ref(&b), GapKind::Update)
        .unwrap();

    let records = wait_for_records(&bootstrap, ACCOUNTS, 3, WAIT).await;
    let seen: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            let v = value(r);
            (
                key(r),
                v["operation"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (a.clone(), "CREATE".to_owned()),
            (b.clone(), "CREATE".to_owned()),
            (b.clone(), "GAP_UPDATE".to_owned()),
        ]
    );
    let reread = value(&records[2]);
    assert_eq!(reread["reread"]["state"], "present", "{reread}");
    assert_eq!(reread["record"]["Name"], "Beta", "{reread}");
    running.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_writes_over_tls_with_the_test_ca() {
    const WRITEBACK: &str = "salesforce.writeback";
    let (sim, _ca, ca_file) = tls_org().await;
    let kafka = MockKafka::start(1);
    for topic in [WRITEBACK, "forcebridge.dlq", "forcebridge.conflicts"] {
        kafka.create_topic(topic, 1);
    }
    let bootstrap = kafka.bootstrap();
    let c = sim.config();
    let text = format!(
        "name: test\nsalesforce:\n  login_url: {login}\n  pubsub_endpoint: {pubsub}\n  ca_file: {ca}\n  auth:\n    type: client_credentials\n    client_id: {id}\n    client_secret: {secret}\nsink:\n  topics: [{WRITEBACK}]\n  objects:\n    Account:\n      external_id_field: External_Id__c\n  linger: 50ms\n  commit_interval: 100ms\nkafka:\n  bootstrap_servers: {bootstrap}\n  create_topics: false\n  properties:\n    session.timeout.ms: \"6000\"\n",
        login = sim.instance_url(),
        pubsub = sim.pubsub_endpoint(),
        ca = ca_file.path.display(),
        id = c.client_id,
        secret = c.client_secret,
    );
    let config = Config::from_yaml(&text, |_| None).expect("sink TLS config is valid");
    let cancel = CancellationToken::new();
    let stats = Arc::new(SinkStats::default());
    let handle = tokio::spawn(forcebridge::sink::run(
        config,
        stats.clone(),
        cancel.clone(),
    ));

    let message = json!({"object": "Account", "operation": "upsert", "timestamp": 1,
        "fields": {"External_Id__c": "TLS-1", "Name": "Written over TLS"}});
    produce(
        &bootstrap,
        WRITEBACK,
        &[(
            Some("TLS-1".to_owned()),
            serde_json::to_vec(&message).unwrap(),
            vec![],
        )],
    )
    .await;
    let written = tokio::time::timeout(WAIT, async {
        loop {
            let found = sim
                .records("Account")
                .into_iter()
                .find(|r| r.get("External_Id__c") == Some(&json!("TLS-1")));
            if let Some(record) = found {
                return record;
            }
            assert!(!handle.is_finished(), "the sink stopped early");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the sink wrote the record in time");
    assert_eq!(written["Name"], "Written over TLS");
    cancel.cancel();
    tokio::time::timeout(WAIT, handle)
        .await
        .expect("sink drains in time")
        .expect("sink task")
        .expect("sink ends without error");
    sim.shutdown().await;
}

/// Without the test CA (the platform's roots only) the login fails at once with a certificate
/// error naming `salesforce.ca_file`, and the pipeline ends instead of retrying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ca_the_source_fails_with_a_certificate_error() {
    let (sim, _ca, _ca_file) = tls_org().await;
    // Another CA's certificate is no better than none.
    let other = TestCa::generate().unwrap();
    let other_file = TempFile::new("other.pem", &other.ca_certificate_pem);
    for ca_file in [None, Some(other_file.path.as_path())] {
        let running = start(source_config(&sim, "127.0.0.1:1", ca_file));
        let outcome = tokio::time::timeout(Duration::from_secs(20), running.handle)
            .await
            .expect("the pipeline gives up at once instead of retrying")
            .expect("pipeline task");
        let err = outcome.expect_err("an untrusted certificate is an error");
        let text = error_chain(&err);
        assert!(text.contains("certificate"), "{text}");
        assert!(text.contains("salesforce.ca_file"), "{text}");
    }
    sim.shutdown().await;
}

/// The Pub/Sub client on its own: an untrusted certificate is `PubSubError::Certificate`
/// (fatal), the test CA makes the same endpoint work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_connect_checks_the_certificate() {
    let (sim, ca, _ca_file) = tls_org().await;
    let session = || {
        SessionHandle::new(Session {
            access_token: SecretString::from(sim.issue_access_token()),
            instance_url: sim.instance_url(),
            org_id: sim.config().org_id.clone(),
            user_id: None,
        })
    };
    let refused = tokio::time::timeout(
        Duration::from_secs(20),
        PubSub::connect(&sim.pubsub_endpoint(), session(), &ClientTls::new()),
    )
    .await
    .expect("no hang");
    let err = match refused {
        Err(err) => err,
        Ok(_) => panic!("connected without trusting the test CA"),
    };
    assert!(
        matches!(err, PubSubError::Certificate { .. }),
        "{}",
        error_chain(&err)
    );
    assert!(matches!(err.directive(), Directive::Stop));
    assert!(err.to_string().contains("salesforce.ca_file"), "{err}");

    let trusted = ClientTls::new()
        .with_ca_pem(ca.ca_certificate_pem.as_bytes())
        .unwrap();
    let pubsub = PubSub::connect(&sim.pubsub_endpoint(), session(), &trusted)
        .await
        .expect("connects with the test CA");
    let topic = pubsub
        .get_topic("/data/AccountChangeEvent")
        .await
        .expect("GetTopic over TLS");
    assert!(topic.can_subscribe);
    sim.shutdown().await;
}

/// A `check`-style REST call through the one HTTP client: trusted with the CA, refused
/// without; a client that does not allow plaintext refuses `http://` even to loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_client_trusts_the_ca_file_and_refuses_plaintext() {
    let (sim, _ca, ca_file) = tls_org().await;
    let url = format!("{}/services/data", sim.instance_url());
    let trusted = ClientTls::new().with_ca_file(&ca_file.path).unwrap();
    let http = http_client(&trusted, Duration::from_secs(10)).unwrap();
    let versions: serde_json::Value = http
        .get(&url)
        .send()
        .await
        .expect("HTTPS with the test CA")
        .json()
        .await
        .unwrap();
    assert!(
        versions.as_array().is_some_and(|v| !v.is_empty()),
        "{versions}"
    );

    let untrusted = http_client(&ClientTls::new(), Duration::from_secs(10)).unwrap();
    let err = untrusted.get(&url).send().await.expect_err("untrusted CA");
    let reason =
        forcebridge::salesforce::tls::certificate_error(&err).expect("a certificate error");
    assert!(reason.contains("certificate"), "{reason}");

    let plain = SimOrg::start(SimConfig::default()).await.unwrap();
    let err = untrusted
        .get(format!("{}/services/data", plain.instance_url()))
        .send()
        .await
        .expect_err("plaintext refused without allow_plaintext");
    assert!(err.is_builder(), "{}", error_chain(&err));
    let allowed = http_client(
        &ClientTls::new().allow_plaintext(true),
        Duration::from_secs(10),
    )
    .unwrap();
    allowed
        .get(format!("{}/services/data", plain.instance_url()))
        .send()
        .await
        .expect("plaintext to loopback when allowed");
    plain.shutdown().await;
    sim.shutdown().await;
}

fn validation_error(yaml: &str) -> String {
    match Config::from_yaml(yaml, |_| None) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(err) => err.to_string(),
    }
}

fn salesforce_yaml(lines: &str) -> String {
    format!(
        "name: test\nsalesforce:\n{lines}  auth:\n    type: client_credentials\n    client_id: x\n    client_secret: y\nsource:\n  channels:\n    - name: /data/AccountChangeEvent\nkafka:\n  bootstrap_servers: 127.0.0.1:9092\n"
    )
}

#[test]
fn plaintext_and_ca_file_are_validated_naming_the_key() {
    let err = validation_error(&salesforce_yaml(
        "  login_url: http://example.com\n  allow_plaintext: true\n",
    ));
    assert!(err.contains("salesforce.login_url"), "{err}");
    assert!(err.contains("not loopback"), "{err}");

    let err = validation_error(&salesforce_yaml(
        "  login_url: http://127.0.0.1:8443\n  pubsub_endpoint: http://10.1.2.3:7443\n  allow_plaintext: true\n",
    ));
    assert!(err.contains("salesforce.pubsub_endpoint"), "{err}");

    let err = validation_error(&salesforce_yaml(
        "  login_url: http://127.0.0.1:8443\n  pubsub_endpoint: https://api.pubsub.salesforce.com:7443\n",
    ));
    assert!(err.contains("salesforce.login_url"), "{err}");
    assert!(err.contains("allow_plaintext"), "{err}");

    let ok = salesforce_yaml(
        "  login_url: http://localhost:8443\n  pubsub_endpoint: http://[::1]:7443\n  allow_plaintext: true\n",
    );
    Config::from_yaml(&ok, |_| None).expect("plaintext to loopback with allow_plaintext");

    let missing = std::env::temp_dir().join("forcebridge-no-such-ca.pem");
    let err = validation_error(&salesforce_yaml(&format!(
        "  ca_file: {}\n",
        missing.display()
    )));
    assert!(err.contains("salesforce.ca_file"), "{err}");

    let garbage = TempFile::new("garbage.pem", "not a certificate\n");
    let err = validation_error(&salesforce_yaml(&format!(
        "  ca_file: {}\n",
        garbage.path.display()
    )));
    assert!(err.contains("salesforce.ca_file"), "{err}");
    assert!(err.contains("BEGIN CERTIFICATE"), "{err}");
}
