//! Graceful shutdown of the real binary: `forcebridge run` as a child process gets SIGTERM
//! mid-stream, exits 0 within `drain_timeout`, and leaves a checkpoint that covers every record
//! it produced, so the next run repeats nothing and misses nothing.

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use forcebridge::sim::{SimConfig, SimOrg};
use support::kafka::read_topic;
use support::source::{MOCK_KAFKA, WAIT, checkpoints, config_text, key, mock_kafka, replay_ids};

const CHANNEL: &str = "/data/AccountChangeEvent";
const ACCOUNTS: &str = "salesforce.Account";
/// Enough that SIGTERM lands mid-stream.
const TOTAL: usize = 30_000;

/// Starts `forcebridge run --config <path>`; its log goes to `<path>.log`.
fn spawn(path: &std::path::Path) -> std::process::Child {
    let log = std::fs::File::create(path.with_extension("log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_forcebridge"))
        .args(["run", "--config"])
        .arg(path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Kills the child if the test fails before it exits.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Records in `topic` (watermarks; no reading).
async fn count(bootstrap: &str) -> usize {
    let bootstrap = bootstrap.to_owned();
    tokio::task::spawn_blocking(move || {
        forcebridge::kafka::count_records(&bootstrap, ACCOUNTS, Duration::from_secs(10))
            .unwrap_or(0) as usize
    })
    .await
    .unwrap()
}

fn sigterm(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits (bounded) for the child to exit; its exit status.
async fn wait_exit(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the process did not exit within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_checkpoints_everything_produced() {
    let kafka = mock_kafka();
    // A mock partition keeps only its last 5 MB: enough partitions to keep every record.
    kafka.create_topic(ACCOUNTS, 16);
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let ids: BTreeSet<String> = sim
        .generate("Account", TOTAL)
        .unwrap()
        .into_iter()
        .collect();

    let dir = std::env::temp_dir().join(format!("forcebridge-shutdown-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("forcebridge.yaml");
    // A long checkpoint interval: only the shutdown's final checkpoint can cover the records.
    let text = config_text(&sim, &bootstrap, &[CHANNEL], "", MOCK_KAFKA)
        .replace("checkpoint_interval: 100ms", "checkpoint_interval: 1h")
        .replace("name: test\n", "name: test\ndrain_timeout: 10s\n");
    std::fs::write(&path, text).unwrap();

    let mut child = KillOnDrop(spawn(&path));
    let deadline = Instant::now() + WAIT;
    loop {
        if count(&bootstrap).await >= 500 {
            break;
        }
        assert!(Instant::now() < deadline, "the run made no progress");
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the run stopped early"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sigterm(&child.0);
    let status = wait_exit(&mut child.0, Duration::from_secs(15)).await;
    assert!(status.success(), "exit status after SIGTERM: {status}");

    let first = read_topic(&bootstrap, ACCOUNTS);
    let (distinct, all) = replay_ids(&first);
    assert_eq!(all.len(), distinct.len(), "no repeats within one run");
    let store = checkpoints(&bootstrap).await;
    let checkpoint = hex::encode(store.get(CHANNEL).expect("final checkpoint").replay_id);
    assert_eq!(
        &checkpoint,
        distinct.iter().max().unwrap(),
        "the final checkpoint covers every record produced"
    );
    eprintln!(
        "SIGTERM after {} of {TOTAL} records; checkpoint {checkpoint}",
        first.len()
    );
    assert!(first.len() < TOTAL, "SIGTERM should land mid-stream");

    // The next run starts after the checkpoint: the rest, nothing twice.
    let mut child = spawn(&path);
    let deadline = Instant::now() + WAIT;
    while read_topic(&bootstrap, ACCOUNTS).len() < TOTAL {
        assert!(Instant::now() < deadline, "the second run did not finish");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the second run stopped early"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sigterm(&child);
    assert!(
        wait_exit(&mut child, Duration::from_secs(15))
            .await
            .success()
    );
    let records = read_topic(&bootstrap, ACCOUNTS);
    let (distinct, all) = replay_ids(&records);
    assert_eq!(all.len(), TOTAL, "nothing repeated");
    assert_eq!(distinct.len(), TOTAL);
    assert_eq!(records.iter().map(key).collect::<BTreeSet<_>>(), ids);
    let _ = std::fs::remove_dir_all(&dir);
    sim.shutdown().await;
}

/// Issue 19, item 13: `forcebridge sim` ends promptly on SIGTERM with status 0 while it is
/// busy growing its store (a `/sim/generate` of 2,000,000 Accounts in flight, each an event
/// too): the servers stop, the request in flight is dropped after a short grace, and the
/// org's memory is left to the exit instead of being freed record by record. Before, the
/// process waited for the whole request and then for the drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_exits_promptly_on_sigterm_while_holding_many_events() {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_forcebridge"))
        .args(["sim", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut child = KillOnDrop(child);
    // Its stdout is read to the end on a thread of its own: a closed pipe would fail its prints.
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("login/instance URL") {
                let _ = url_tx.send(line.split_whitespace().last().unwrap().to_owned());
            }
        }
    });
    let url = url_rx.recv().expect("the sim printed its URL");
    forcebridge::ops::telemetry::install_crypto_provider();
    let http = reqwest::Client::new();
    let generate = tokio::spawn({
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.post(format!("{url}/sim/generate"))
                .json(&serde_json::json!({"object": "Account", "count": 2_000_000}))
                .send()
                .await
        }
    });
    // The generation is under way once the org holds Accounts.
    let config = SimConfig::default();
    let token: serde_json::Value = http
        .post(format!("{url}/services/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", config.client_id.as_str()),
            ("client_secret", config.client_secret.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + WAIT;
    loop {
        let page: serde_json::Value = http
            .get(format!(
                "{url}/services/data/v62.0/query?q=SELECT+Id+FROM+Account+LIMIT+1"
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if page["records"].as_array().is_some_and(|r| !r.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "no Account was generated");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sigterm(&child.0);
    // Hang guard: far above the stop's 2 s grace and the runtime's 1 s; generating the 2M
    // Accounts alone takes minutes.
    let status = wait_exit(&mut child.0, Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    generate.abort();
}
