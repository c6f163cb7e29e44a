//! Transient is not fatal (issue 19, item 8): `forcebridge run` as a child process (and the sink
//! in-process) against a simulated org whose token endpoint fails (Salesforce's maintenance page
//! with 503, its `unknown_error` with 500, an HTML page with 200), at start and mid-run, whose
//! Pub/Sub API refuses connections at start, and with Kafka down at the sink's start: the
//! process waits (`/readyz` says why, a metric counts the retries) and streams once the service
//! answers. Refused credentials (`invalid_client`, a refused configured access token) end it at
//! once with a message naming the cause.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use forcebridge::ops::sample_value;
use forcebridge::ops::telemetry::TRANSIENT_RETRIES;
use forcebridge::retry::Directive;
use forcebridge::salesforce::auth::{AuthError, Authenticator, http_client};
use forcebridge::salesforce::tls::ClientTls;
use forcebridge::sim::{LoginFault, SimConfig, SimOrg};
use support::source::{MOCK_KAFKA, WAIT, config_text, config_with, mock_kafka};

const CHANNEL: &str = "/data/AccountChangeEvent";
const ACCOUNTS: &str = "salesforce.Account";
const WRITEBACK: &str = "salesforce.writeback";
const SOURCE_LOGIN: &str = "source: salesforce login";
const SINK_LOGIN: &str = "sink: salesforce login";

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A directory of its own for one test's config and log.
fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "forcebridge-transient-{}-{name}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `forcebridge run` as a child process, with its operations server; killed on drop.
struct Daemon {
    child: Child,
    log: PathBuf,
    ops: String,
    http: reqwest::Client,
}

impl Daemon {
    /// Writes `yaml` plus an `ops` section to `<dir>/forcebridge.yaml` and starts the run.
    fn start(dir: &Path, yaml: &str) -> Daemon {
        let port = free_port();
        let path = dir.join("forcebridge.yaml");
        std::fs::write(&path, format!("{yaml}ops:\n  listen: 127.0.0.1:{port}\n")).unwrap();
        let log = dir.join("forcebridge.log");
        let child = Command::new(env!("CARGO_BIN_EXE_forcebridge"))
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon {
            child,
            log,
            ops: format!("http://127.0.0.1:{port}"),
            http: http_client(
                &ClientTls::new().allow_plaintext(true),
                Duration::from_secs(5),
            )
            .unwrap(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("the run exited on its own ({status}):\n{}", self.log());
        }
    }

    /// The body of `GET <path>` of the operations server, or empty while it does not answer.
    async fn get(&self, path: &str) -> String {
        match self.http.get(format!("{}{path}", self.ops)).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits (hang guard [`WAIT`]) until `done` holds of `GET <path>`, the run alive meanwhile.
    async fn wait_until(&mut self, path: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            self.assert_alive();
            let body = self.get(path).await;
            if done(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: last {path}: {body}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the step has failed at least `n` times (the retry counter of `/metrics`).
    async fn wait_for_retries(&mut self, step: &str, n: f64) {
        self.wait_until("/metrics", "retries counted", |page| {
            sample_value(page, TRANSIENT_RETRIES, &[("step", step)]).is_some_and(|v| v >= n)
        })
        .await;
    }

    /// Waits until `topic` holds at least `n` records, the run alive meanwhile.
    async fn wait_for_records(&mut self, bootstrap: &str, topic: &str, n: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            self.assert_alive();
            if count(bootstrap, topic).await >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "fewer than {n} records in {topic}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM; the run must exit 0.
    async fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = self.wait_exit().await;
        assert!(
            status.success(),
            "exit after SIGTERM: {status}\n{}",
            self.log()
        );
    }

    /// Waits (hang guard) for the run to exit by itself.
    async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the run did not exit\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Records in `topic` (watermarks).
async fn count(bootstrap: &str, topic: &str) -> usize {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        forcebridge::kafka::count_records(&bootstrap, &topic, Duration::from_secs(10)).unwrap_or(0)
            as usize
    })
    .await
    .unwrap()
}

/// The sink section of the runs that have one.
fn sink_yaml() -> String {
    format!(
        "sink:\n  topics: [{WRITEBACK}]\n  objects:\n    Account:\n      external_id_field: External_Id__c\n"
    )
}

/// The sink alone (`source` removed from the config), running in a task.
struct SinkOnly {
    stats: std::sync::Arc<forcebridge::ops::telemetry::SinkStats>,
    cancel: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), forcebridge::sink::SinkError>>,
}

impl SinkOnly {
    fn start(sim: &SimOrg, bootstrap: &str, extra_kafka: &str) -> SinkOnly {
        let text = config_text(sim, bootstrap, &[CHANNEL], "", extra_kafka) + &sink_yaml();
        let mut config = forcebridge::config::Config::from_yaml(&text, |_| None).unwrap();
        config.source = None;
        let stats = std::sync::Arc::new(forcebridge::ops::telemetry::SinkStats::default());
        let cancel = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(forcebridge::sink::run(
            config,
            stats.clone(),
            cancel.clone(),
        ));
        SinkOnly {
            stats,
            cancel,
            task,
        }
    }

    /// Waits (the sink running all along) until a `/readyz` reason matches `wanted`.
    async fn wait_for_reason(&self, what: &str, wanted: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !self.stats.retrying.not_ready().iter().any(|r| wanted(r)) {
            assert!(!self.task.is_finished(), "the sink stopped");
            assert!(Instant::now() < deadline, "no {what} reason");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (the sink running all along) until `n` records are written.
    async fn wait_written(&self, n: u64) {
        let deadline = Instant::now() + WAIT;
        while self.stats.snapshot().written < n {
            assert!(!self.task.is_finished(), "the sink stopped");
            assert!(Instant::now() < deadline, "{:?}", self.stats.snapshot());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the sink, which ends without error, with no reason left on `/readyz`.
    async fn stop(self) {
        assert!(self.stats.retrying.not_ready().is_empty());
        self.cancel.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// A write-back upserting the Account with External Id `ext`.
fn upsert(ext: &str, name: &str) -> support::kafka::TestRecord {
    let value = serde_json::json!({"object": "Account", "operation": "upsert",
        "timestamp": forcebridge::ops::telemetry::unix_millis(),
        "fields": {"External_Id__c": ext, "Name": name}});
    (
        Some(ext.to_owned()),
        serde_json::to_vec(&value).unwrap(),
        vec![],
    )
}

/// Each token endpoint fault is a login failure to wait out, named by its status; the same
/// endpoint then logs in. Refused credentials are not.
#[tokio::test]
async fn token_endpoint_faults_are_transient_and_refusals_are_not() {
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let kafka = mock_kafka();
    let config = config_with(&sim, &kafka.bootstrap(), &[CHANNEL], "", MOCK_KAFKA);
    let http = http_client(
        &ClientTls::new().allow_plaintext(true),
        Duration::from_secs(10),
    )
    .unwrap();
    let authenticator = Authenticator::new(&config.salesforce, http.clone());
    for (fault, status) in [
        (LoginFault::Maintenance, "HTTP 503"),
        (LoginFault::UnknownError, "HTTP 500"),
        (LoginFault::Html200, "HTTP 200"),
    ] {
        sim.fail_next_logins(1, fault);
        let error = authenticator.login().await.unwrap_err();
        assert_eq!(error.directive(), Directive::Retry, "{fault:?}: {error}");
        assert!(error.to_string().contains(status), "{fault:?}: {error}");
    }
    authenticator.login().await.unwrap();
    assert_eq!(sim.logins(), 1);

    let secret = format!("client_secret: {}\n", sim.config().client_secret);
    let wrong = config_text(&sim, &kafka.bootstrap(), &[CHANNEL], "", MOCK_KAFKA)
        .replace(&secret, "client_secret: not-the-secret\n");
    let wrong = forcebridge::config::Config::from_yaml(&wrong, |_| None).unwrap();
    let error = Authenticator::new(&wrong.salesforce, http)
        .login()
        .await
        .unwrap_err();
    assert_eq!(error.directive(), Directive::Stop, "{error}");
    assert!(matches!(&error, AuthError::Rejected { error, .. } if error == "invalid_client"));
    sim.shutdown().await;
}

/// The token endpoint fails every login at start (source's and sink's): the run waits, says why
/// on `/readyz`, counts the retries, and streams once the endpoint answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_waits_out_a_token_endpoint_outage_at_start() {
    let kafka = mock_kafka();
    kafka.create_topic(WRITEBACK, 1);
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    sim.fail_next_logins(2, LoginFault::Maintenance);
    sim.fail_next_logins(2, LoginFault::UnknownError);
    sim.fail_next_logins(10_000, LoginFault::Html200);
    let dir = test_dir("start");
    let yaml = config_text(&sim, &bootstrap, &[CHANNEL], "", MOCK_KAFKA) + &sink_yaml();
    let mut run = Daemon::start(&dir, &yaml);

    let reasons = run
        .wait_until("/readyz", "both logins reported", |body| {
            body.contains(&format!("{SOURCE_LOGIN}: retrying after"))
                && body.contains(&format!("{SINK_LOGIN}: retrying after"))
        })
        .await;
    assert!(reasons.contains("\"ready\":false"), "{reasons}");
    run.wait_for_retries(SOURCE_LOGIN, 3.0).await;
    run.wait_for_retries(SINK_LOGIN, 3.0).await;
    assert_eq!(sim.logins(), 0, "no login got through yet");

    sim.clear_login_faults();
    sim.generate("Account", 20).unwrap();
    run.wait_for_records(&bootstrap, ACCOUNTS, 20).await;
    run.wait_until("/readyz", "the login reasons cleared", |body| {
        !body.is_empty() && !body.contains("salesforce login")
    })
    .await;
    assert_eq!(
        sim.logins(),
        2,
        "one login per side once the endpoint answered"
    );
    run.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    sim.shutdown().await;
}

/// Mid-run, the org revokes the session and the token endpoint is down: the source's re-login
/// fails for a while, the process stays up, and resumes once the endpoint answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_waits_out_a_token_endpoint_outage_mid_run() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    sim.generate("Account", 20).unwrap();
    let dir = test_dir("mid-run");
    let mut run = Daemon::start(
        &dir,
        &config_text(&sim, &bootstrap, &[CHANNEL], "", MOCK_KAFKA),
    );
    run.wait_for_records(&bootstrap, ACCOUNTS, 20).await;

    sim.fail_next_logins(10_000, LoginFault::Maintenance);
    sim.revoke_tokens();
    sim.reset_streams();
    run.wait_for_retries(SOURCE_LOGIN, 2.0).await;
    let reasons = run
        .wait_until("/readyz", "the re-login reported", |body| {
            body.contains(&format!("{SOURCE_LOGIN}: retrying after"))
        })
        .await;
    assert!(reasons.contains("HTTP 503"), "{reasons}");

    sim.clear_login_faults();
    sim.generate("Account", 20).unwrap();
    run.wait_for_records(&bootstrap, ACCOUNTS, 40).await;
    assert_eq!(sim.logins(), 2, "the first login and one re-login");
    run.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    sim.shutdown().await;
}

/// Refused credentials end the run at once, non-zero, with Salesforce's error and what to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_stops_on_invalid_client_with_a_clear_message() {
    let kafka = mock_kafka();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let dir = test_dir("invalid-client");
    let secret = format!("client_secret: {}\n", sim.config().client_secret);
    let yaml = config_text(&sim, &kafka.bootstrap(), &[CHANNEL], "", MOCK_KAFKA)
        .replace(&secret, "client_secret: not-the-secret\n");
    let mut run = Daemon::start(&dir, &yaml);
    let status = run.wait_exit().await;
    assert!(!status.success(), "{status}");
    let log = run.log();
    let last = log
        .lines()
        .rfind(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert!(
        last.contains("invalid_client") && last.contains("check salesforce.auth.client_id"),
        "{log}"
    );
    assert!(
        !log.contains("retrying"),
        "a refusal is not retried:\n{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    sim.shutdown().await;
}

/// Forwards every connection to `127.0.0.1:<port>` to `target`, from now on.
async fn forward(listener: tokio::net::TcpListener, target: String) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        let target = target.clone();
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// The Pub/Sub API refuses connections at start (nothing listens): the run waits, says why,
/// and streams once the endpoint accepts connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_waits_for_a_refused_pubsub_api_at_start() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    sim.generate("Account", 20).unwrap();
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let yaml = config_text(&sim, &bootstrap, &[CHANNEL], "", MOCK_KAFKA)
        .replace(&sim.pubsub_endpoint(), &endpoint);
    let dir = test_dir("pubsub");
    let mut run = Daemon::start(&dir, &yaml);
    run.wait_for_retries("source: pub/sub api", 2.0).await;
    let reasons = run
        .wait_until("/readyz", "the refused connection reported", |body| {
            body.contains("source: pub/sub api: retrying after")
        })
        .await;
    assert!(reasons.contains("\"ready\":false"), "{reasons}");

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let target = sim
        .pubsub_endpoint()
        .trim_start_matches("http://")
        .to_owned();
    let proxy = tokio::spawn(forward(listener, target));
    run.wait_for_records(&bootstrap, ACCOUNTS, 20).await;
    run.stop().await;
    proxy.abort();
    let _ = std::fs::remove_dir_all(&dir);
    sim.shutdown().await;
}

/// Mid-run, the org revokes the sink's session while the token endpoint is down: the write's
/// re-login fails for a while, reported on `/readyz` (`sink: salesforce login: retrying after
/// …`), the sink stays up, and the write lands once the endpoint answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_waits_out_a_token_endpoint_outage_mid_run() {
    let kafka = mock_kafka();
    kafka.create_topic(WRITEBACK, 1);
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let sink = SinkOnly::start(&sim, &bootstrap, MOCK_KAFKA);
    support::kafka::produce(&bootstrap, WRITEBACK, &[upsert("E-1", "First")]).await;
    sink.wait_written(1).await;

    sim.fail_next_logins(10_000, LoginFault::Maintenance);
    sim.revoke_tokens();
    support::kafka::produce(&bootstrap, WRITEBACK, &[upsert("E-2", "Second")]).await;
    sink.wait_for_reason("re-login", |r| {
        r.starts_with(&format!("{SINK_LOGIN}: retrying after")) && r.contains("HTTP 503")
    })
    .await;
    sim.clear_login_faults();
    sink.wait_written(2).await;
    assert_eq!(sim.logins(), 2, "the first login and one re-login");
    sink.stop().await;
    sim.shutdown().await;
}

/// A configured access token cannot be renewed: when the org refuses it mid-run, the source
/// stops with an error naming the key, instead of resubscribing with the same token forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_configured_access_token_stops_the_source() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    sim.generate("Account", 5).unwrap();
    let password = config_text(&sim, &bootstrap, &[CHANNEL], "", MOCK_KAFKA);
    let auth_start = password.find("  auth:\n").unwrap();
    let auth_end = password.find("source:\n").unwrap();
    let yaml = format!(
        "{}  auth:\n    type: access_token\n    access_token: {}\n    instance_url: {}\n    org_id: {}\n{}",
        &password[..auth_start],
        sim.issue_access_token(),
        sim.instance_url(),
        sim.config().org_id,
        &password[auth_end..],
    );
    let config = forcebridge::config::Config::from_yaml(&yaml, |_| None).unwrap();
    let running = support::source::start(config);
    running.wait_produced(5).await;

    sim.revoke_tokens();
    sim.reset_streams();
    let error = tokio::time::timeout(WAIT, running.handle)
        .await
        .expect("the source stops")
        .unwrap()
        .unwrap_err();
    assert!(
        error.to_string().contains("salesforce.auth.access_token"),
        "{error}"
    );
    sim.shutdown().await;
}

/// Kafka unreachable when the sink starts (`kafka.create_topics: true` has it check its
/// dead-letter and conflicts topics first): the sink waits, reporting `sink: kafka: retrying
/// after …`, and writes once the broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_waits_for_kafka_at_start() {
    let kafka = mock_kafka();
    kafka.create_topic(WRITEBACK, 1);
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    kafka.cluster().broker_down(1).unwrap();
    let sink = SinkOnly::start(&sim, &bootstrap, "  create_topics: true\n");
    sink.wait_for_reason("Kafka", |r| r.starts_with("sink: kafka: retrying after"))
        .await;
    kafka.cluster().broker_up(1).unwrap();
    let message = upsert("K-1", "After the outage");
    support::kafka::produce(&bootstrap, WRITEBACK, &[message]).await;
    sink.wait_written(1).await;
    sink.stop().await;
    sim.shutdown().await;
}
