//! The `forcebridge` binary as a user runs it.

mod support;

use std::process::Command;

use forcebridge::sim::{SimConfig, SimOrg};

fn forcebridge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_forcebridge"))
}

/// A misspelt key is rejected before anything starts, with the key, its line and a non-zero exit.
#[test]
fn check_rejects_an_unknown_key_naming_it() {
    let dir = std::env::temp_dir().join(format!("forcebridge-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "salesforce:\n  auth:\n    type: access_token\n    access_token: ${FB_TEST_TOKEN}\n    instance_url: https://acme.my.salesforce.com\nsource:\n  channels:\n    - name: /data/AccountChangeEvent\n  batch_sise: 50\nkafka:\n  bootstrap_servers: localhost:9092\n",
    )
    .unwrap();
    let output = forcebridge()
        .args(["check", "--offline", "--config"])
        .arg(&path)
        .env("FB_TEST_TOKEN", "00Dxx!very-secret-token")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("unknown field `batch_sise`"), "{stderr}");
    assert!(stderr.contains("line 9"), "{stderr}");
    assert!(!stderr.contains("very-secret-token"), "{stderr}");

    std::fs::write(
        &path,
        std::fs::read_to_string(&path)
            .unwrap()
            .replace("batch_sise", "batch_size"),
    )
    .unwrap();
    let output = forcebridge()
        .args(["check", "--offline", "--config"])
        .arg(&path)
        .env("FB_TEST_TOKEN", "00Dxx!very-secret-token")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("configuration is valid"), "{stdout}");
    assert!(!stdout.contains("very-secret-token"));
}

/// The README's demo command completes and its summary matches the changes it made.
#[test]
fn demo_summary_matches_the_changes() {
    let output = forcebridge()
        .args([
            "demo",
            "--existing-accounts",
            "1000",
            "--accounts",
            "300",
            "--contacts",
            "20",
            "--platform-events",
            "10",
            "--write-backs",
            "100",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // 1,000 snapshot rows of the Accounts that existed before, then 300 creates + 150 updates
    // + 10 in one transaction + 5 deletes + 2 undeletes, plus the round trip's two changes made
    // by a person (its write-backs' echoes are dropped).
    assert!(
        stdout.contains("salesforce.Account                   1469     1469  ok"),
        "{stdout}"
    );
    assert!(stdout.contains("1000 snapshot rows"), "{stdout}");
    assert!(
        stdout.contains("done: streaming from the position fixed before it"),
        "{stdout}"
    );
    assert!(
        stdout.contains("salesforce.Contact                     20       20  ok"),
        "{stdout}"
    );
    assert!(
        stdout.contains("salesforce.Order_Event__e              10       10  ok"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Kafka bootstrap servers: 127.0.0.1:"),
        "{stdout}"
    );
    assert!(!stdout.contains("MISMATCH"));
    // The round trip: 100 upserts + 99 updates written, one stale update, two malformed.
    assert!(
        stdout.contains("accounts in the org by External Id 100/100  ok"),
        "{stdout}"
    );
    assert!(
        stdout.contains("outcomes (written 199, 1 conflict, 2 dead letters)  ok"),
        "{stdout}"
    );
}

/// `check` logs in, asks GetTopic for every channel and reaches Kafka; a channel the org does not
/// have fails the check with its name, and the secret never appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(
    clippy::too_many_lines,
    reason = "one scenario: each check of `check` against one org and one cluster"
)]
async fn check_connects_and_names_a_missing_channel() {
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let kafka = support::kafka::MockKafka::start(1);
    let c = sim.config();
    let dir = std::env::temp_dir().join(format!("forcebridge-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("check.yaml");
    let write = |channels: &str| {
        std::fs::write(
            &path,
            format!(
                "salesforce:\n  login_url: {}\n  pubsub_endpoint: {}\n  allow_plaintext: true\n  auth:\n    type: client_credentials\n    client_id: {}\n    client_secret: ${{FB_SECRET}}\nsource:\n  channels:\n{channels}sink:\n  topics: [writeback]\n  api_reserve: 100\nkafka:\n  bootstrap_servers: {}\n",
                sim.instance_url(),
                sim.pubsub_endpoint(),
                c.client_id,
                kafka.bootstrap()
            ),
        )
        .unwrap();
    };
    let run = |path: std::path::PathBuf, secret: String| {
        tokio::task::spawn_blocking(move || {
            forcebridge()
                .args(["check", "--config"])
                .arg(path)
                .env("FB_SECRET", secret)
                .output()
                .unwrap()
        })
    };

    write("    - name: /data/AccountChangeEvent\n    - name: /data/Nope__ChangeEvent\n");
    let output = run(path.clone(), c.client_secret.clone()).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("ok      Salesforce login"), "{stdout}");
    assert!(
        stdout.contains("ok      channel /data/AccountChangeEvent"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAILED  channel /data/Nope__ChangeEvent"),
        "{stdout}"
    );
    assert!(stdout.contains("topic.not.found"), "{stdout}");
    assert!(stdout.contains("ok      Kafka"), "{stdout}");
    // The sink's write-back topic does not exist yet.
    assert!(
        stdout.contains("FAILED  write-back topic writeback: does not exist"),
        "{stdout}"
    );
    kafka.create_topic("writeback", 2);

    write("    - name: /data/AccountChangeEvent\n");
    let output = run(path.clone(), c.client_secret.clone()).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("safe to start"), "{stdout}");
    assert!(!stdout.contains("FAILED"), "{stdout}");
    for line in [
        "ok      checkpoint topic forcebridge.checkpoints",
        "ok      write-back topic writeback (2 partition(s))",
        "ok      consumer group forcebridge-sink (reachable, committed offsets for 0 of 2",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }

    // Exactly-once: a transactional producer under a throwaway id.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("source:\n", "source:\n  delivery: exactly_once\n"),
    )
    .unwrap();
    let output = run(path.clone(), c.client_secret.clone()).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains(
            "ok      Kafka transactions (exactly_once) (transactional id forcebridge/check initialised)"
        ),
        "{stdout}"
    );
    std::fs::write(&path, text.clone()).unwrap();

    // Unreachable Kafka: the Kafka line fails and names the reason.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    std::fs::write(
        &path,
        text.replace(&kafka.bootstrap(), &format!("127.0.0.1:{port}")),
    )
    .unwrap();
    let output = run(path.clone(), c.client_secret.clone()).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("FAILED  Kafka: "), "{stdout}");
    assert!(stdout.contains("ok      Salesforce login"), "{stdout}");
    std::fs::write(&path, text.clone()).unwrap();

    // Unreachable Pub/Sub API: the line names the cause, not only "transport error".
    let pubsub = sim.pubsub_endpoint();
    let refused = pubsub.replace(pubsub.rsplit(':').next().unwrap(), &port.to_string());
    std::fs::write(&path, text.replace(&pubsub, &refused)).unwrap();
    let output = run(path.clone(), c.client_secret.clone()).await.unwrap();
    let refused_out = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{refused_out}");
    let line = refused_out
        .lines()
        .find(|l| l.contains("FAILED  Pub/Sub API"))
        .unwrap_or_else(|| panic!("{refused_out}"));
    assert!(line.to_lowercase().contains("refused"), "{line}");
    std::fs::write(&path, text).unwrap();
    assert!(
        stdout.contains("ok      REST API (sink) (")
            && stdout.contains("of 100000 daily API calls left, reserve 100)"),
        "{stdout}"
    );
    assert!(!stdout.contains(&c.client_secret) && !stderr.contains(&c.client_secret));

    // An org whose allowance is down to the reserve: the sink would pause at once.
    sim.set_api_usage(99_950);
    let output = run(path.clone(), c.client_secret.clone()).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("FAILED  REST API (sink)"), "{stdout}");
    assert!(stdout.contains("writing would pause"), "{stdout}");
    sim.set_api_usage(0);

    let output = run(path.clone(), "wrong-secret".into()).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(stdout.contains("FAILED  Salesforce login"), "{stdout}");
    assert!(stdout.contains("invalid_client"), "{stdout}");
    sim.shutdown().await;
}
