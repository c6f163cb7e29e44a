//! The operator's scenario (issue 19): one `forcebridge run` process with the source (two
//! channels) and the sink, next to a separate `forcebridge sim` process and a tansu broker, while
//! the org changes and write-backs keep arriving. The run is SIGKILLed at random points at least
//! [`KILLS`] times and restarted; the simulator and the broker are each stopped (SIGSTOP) and
//! resumed; every session is revoked while the token endpoint is down for maintenance.
//!
//! Afterwards:
//! * every change the test made in the org is in Kafka (each created Id on its object's topic,
//!   each update's value on the updated record's Id);
//! * every write-back is applied in the org, or dead-lettered when (and only when) it is invalid,
//!   or in the conflicts topic when it is older than the record in Salesforce;
//! * the process never exited on its own (checked before every kill and at the end);
//! * the time from each restart to the sink's first write is printed (from `/metrics`).
//!
//! Skipped without tansu unless `CI` is set (then a missing tansu fails). `OPERATOR_SEED`
//! replays a run's kill points.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use support::kafka::{ConsumedRecord, Tansu, TestRecord, produce, read_topic};

const KILLS: usize = 15;
const ACCOUNTS: &str = "salesforce.Account";
const CONTACTS: &str = "salesforce.Contact";
const WRITEBACK: &str = "salesforce.writeback";
const DLQ: &str = "forcebridge.dlq";
const CONFLICTS: &str = "forcebridge.conflicts";
const CHECKPOINTS: &str = "forcebridge.checkpoints";
/// Hang guard for the end state (not a timing assertion).
const SETTLE: Duration = Duration::from_secs(180);

/// `forcebridge sim` as a child process, with what it printed about itself.
struct SimProcess {
    child: Child,
    /// `key: value` lines of the config it prints, and `key=value` pairs of its credential lines.
    facts: BTreeMap<String, String>,
}

impl SimProcess {
    fn start() -> SimProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_forcebridge"))
            .args(["sim", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn forcebridge sim");
        let stdout = child.stdout.take().expect("sim stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the banner, then keeps draining so the sim never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut facts = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !facts.contains_key("client_secret") || !facts.contains_key("security_token") {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the simulator prints its URLs and credentials");
            parse_banner_line(&line, &mut facts);
        }
        SimProcess { child, facts }
    }

    fn fact(&self, key: &str) -> &str {
        self.facts
            .get(key)
            .unwrap_or_else(|| panic!("the simulator did not print {key}"))
    }

    fn login_url(&self) -> &str {
        self.fact("login_url")
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        signal(self.child.id(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_banner_line(line: &str, facts: &mut BTreeMap<String, String>) {
    let trimmed = line.trim();
    if let Some((key, value)) = trimmed.split_once(": ")
        && !key.contains(' ')
    {
        facts.insert(key.to_owned(), value.trim().to_owned());
    }
    if trimmed.starts_with("username-password") {
        for pair in trimmed.split_whitespace() {
            if let Some((k, v)) = pair.split_once('=') {
                facts.insert(k.to_owned(), v.to_owned());
            }
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

/// REST calls to the simulator as a user who is not forcebridge's (its changes are not echoes).
struct OrgClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl OrgClient {
    /// Logs in, again and again while the token endpoint is down (a hang guard bounds it).
    async fn login(sim: &SimProcess) -> OrgClient {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match Self::try_login(sim).await {
                Ok(org) => return org,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("test login: {e}; again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => panic!("test login: {e}"),
            }
        }
    }

    async fn try_login(sim: &SimProcess) -> Result<OrgClient, String> {
        let http = reqwest::Client::new();
        let base = sim.login_url().trim_end_matches('/').to_owned();
        let password = format!("{}{}", sim.fact("password"), sim.fact("security_token"));
        let answer: Value = http
            .post(format!("{base}/services/oauth2/token"))
            .form(&[
                ("grant_type", "password"),
                ("client_id", sim.fact("client_id")),
                ("client_secret", sim.fact("client_secret")),
                ("username", sim.fact("username")),
                ("password", &password),
            ])
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| format!("not a token answer: {e}"))?;
        let token = answer["access_token"]
            .as_str()
            .ok_or_else(|| format!("no access token: {answer}"))?
            .to_owned();
        Ok(OrgClient { http, base, token })
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "POST {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn faults(&self, body: Value) {
        self.post("/sim/faults", body).await;
    }

    /// Creates `count` records of `object`; returns their Ids.
    async fn generate(&self, object: &str, count: usize) -> Vec<String> {
        let answer = self
            .post("/sim/generate", json!({"object": object, "count": count}))
            .await;
        answer["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|id| id.as_str().expect("id").to_owned())
            .collect()
    }

    /// Updates each record's `Description` to its own value in one sObject Collections call.
    async fn update_descriptions(&self, updates: &[(String, String)]) {
        let records: Vec<Value> = updates
            .iter()
            .map(|(id, d)| json!({"attributes": {"type": "Account"}, "Id": id, "Description": d}))
            .collect();
        let response = self
            .http
            .patch(format!(
                "{}/services/data/v62.0/composite/sobjects",
                self.base
            ))
            .bearer_auth(&self.token)
            .json(&json!({"allOrNone": false, "records": records}))
            .send()
            .await
            .expect("collections update");
        let results: Value = response.json().await.expect("collections answer");
        for r in results.as_array().expect("results") {
            assert_eq!(r["success"], true, "update refused: {r}");
        }
    }

    /// `External_Id__c` → `Name` of the Accounts with these External Ids.
    async fn accounts_by_ext(&self, ext_ids: &[String]) -> BTreeMap<String, String> {
        let mut found = BTreeMap::new();
        for chunk in ext_ids.chunks(100) {
            let list: Vec<String> = chunk.iter().map(|e| format!("'{e}'")).collect();
            let soql = format!(
                "SELECT Id, Name, External_Id__c FROM Account WHERE External_Id__c IN ({})",
                list.join(",")
            );
            let answer: Value = self
                .http
                .get(
                    reqwest::Url::parse_with_params(
                        &format!("{}/services/data/v62.0/query", self.base),
                        &[("q", soql)],
                    )
                    .expect("query URL"),
                )
                .bearer_auth(&self.token)
                .send()
                .await
                .expect("query")
                .json()
                .await
                .expect("query answer");
            for r in answer["records"].as_array().expect("records") {
                found.insert(
                    r["External_Id__c"].as_str().unwrap_or_default().to_owned(),
                    r["Name"].as_str().unwrap_or_default().to_owned(),
                );
            }
        }
        found
    }
}

/// `forcebridge run` as a child process, restarted after each kill.
struct Forcebridge {
    config: PathBuf,
    metrics_url: String,
    child: Option<Child>,
    starts: usize,
}

impl Forcebridge {
    fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.config.with_extension("log"))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_forcebridge"))
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn forcebridge run");
        self.child = Some(child);
    }

    /// Panics when the process ended without being told to.
    fn assert_alive(&mut self, when: &str) {
        let child = self.child.as_mut().expect("running");
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!(
                "forcebridge run exited on its own ({status}) {when}; its log:\n{}",
                log_tail(&self.config.with_extension("log"))
            );
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The value of a counter on `/metrics`, or `None` while the server is not up.
    async fn metric(&self, name: &str) -> Option<f64> {
        let page = reqwest::get(&self.metrics_url)
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        page.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .reduce(|a, b| a + b)
    }
}

impl Drop for Forcebridge {
    fn drop(&mut self) {
        self.kill();
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

fn config_text(sim: &SimProcess, bootstrap: &str, ops_port: u16) -> String {
    format!(
        "name: operator\n\
         salesforce:\n  login_url: {login}\n  pubsub_endpoint: {pubsub}\n  allow_plaintext: true\n  \
         auth:\n    type: client_credentials\n    client_id: {id}\n    client_secret: {secret}\n\
         source:\n  channels:\n    - name: /data/AccountChangeEvent\n      initial_replay: earliest\n    \
         - name: /data/ContactChangeEvent\n      initial_replay: earliest\n  checkpoint_interval: 200ms\n\
         sink:\n  topics: [{WRITEBACK}]\n  objects:\n    Account:\n      external_id_field: External_Id__c\n  \
         group_instance_id: operator-0\n  linger: 100ms\n  commit_interval: 200ms\n  initial_backoff: 50ms\n  max_backoff: 2s\n  \
         conflicts_topic: {CONFLICTS}\n\
         kafka:\n  bootstrap_servers: {bootstrap}\n  create_topics: false\n  properties:\n    \
         session.timeout.ms: \"45000\"\n\
         ops:\n  listen: 127.0.0.1:{ops_port}\n",
        login = sim.login_url(),
        pubsub = sim.fact("pubsub_endpoint"),
        id = sim.fact("client_id"),
        secret = sim.fact("client_secret"),
    )
}

/// One write-back the test sent, and where it must end.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// Applied: the org holds this External Id with this Name.
    Applied { ext: String, name: String },
    /// Invalid: in the dead-letter topic (and nowhere in the org).
    DeadLetter { ext: String },
}

/// Sends write-back `n`: every tenth names a field the object does not have (invalid).
fn write_back(n: usize) -> (TestRecord, Expect) {
    let ext = format!("OP-{n:05}");
    let name = format!("operator {n}");
    let mut fields = json!({"External_Id__c": ext, "Name": name});
    let expect = if n % 10 == 7 {
        fields["No_Such_Field__c"] = json!("x");
        Expect::DeadLetter { ext: ext.clone() }
    } else {
        Expect::Applied {
            ext: ext.clone(),
            name: name.clone(),
        }
    };
    let value = json!({
        "object": "Account",
        "operation": "upsert",
        "timestamp": chrono_like_now_ms(),
        "fields": fields,
    });
    (
        (Some(ext), value.to_string().into_bytes(), Vec::new()),
        expect,
    )
}

fn chrono_like_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// What the test did to the org and sent to Kafka.
#[derive(Default)]
struct Ledger {
    accounts: BTreeSet<String>,
    contacts: BTreeSet<String>,
    /// (Account Id, Description) of each update.
    updates: Vec<(String, String)>,
    write_backs: Vec<Expect>,
}

/// One step of load: org changes on both channels and a handful of write-backs.
async fn load_step(org: &OrgClient, bootstrap: &str, ledger: &mut Ledger, step: usize) {
    let accounts = org.generate("Account", 20).await;
    let contacts = org.generate("Contact", 10).await;
    let updates: Vec<(String, String)> = accounts
        .iter()
        .take(5)
        .map(|id| (id.clone(), format!("step {step} {id}")))
        .collect();
    org.update_descriptions(&updates).await;
    ledger.accounts.extend(accounts);
    ledger.contacts.extend(contacts);
    ledger.updates.extend(updates);
    let base = ledger.write_backs.len();
    let (records, expects): (Vec<TestRecord>, Vec<Expect>) =
        (base..base + 10).map(write_back).unzip();
    produce(bootstrap, WRITEBACK, &records).await;
    ledger.write_backs.extend(expects);
}

fn value(record: &ConsumedRecord) -> Value {
    serde_json::from_slice(record.value.as_deref().unwrap_or(b"null")).unwrap_or(Value::Null)
}

fn key(record: &ConsumedRecord) -> String {
    String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()).into_owned()
}

/// What is missing from Kafka and the org, empty when the run converged.
async fn missing(org: &OrgClient, bootstrap: &str, ledger: &Ledger) -> Vec<String> {
    let mut missing = Vec::new();
    let accounts = read_topic(bootstrap, ACCOUNTS);
    let contacts = read_topic(bootstrap, CONTACTS);
    let account_keys: BTreeSet<String> = accounts.iter().map(key).collect();
    let contact_keys: BTreeSet<String> = contacts.iter().map(key).collect();
    missing.extend(
        ledger
            .accounts
            .difference(&account_keys)
            .map(|id| format!("Account {id}")),
    );
    missing.extend(
        ledger
            .contacts
            .difference(&contact_keys)
            .map(|id| format!("Contact {id}")),
    );
    let described: BTreeSet<(String, String)> = accounts
        .iter()
        .filter_map(|r| {
            let d = value(r)["record"]["Description"].as_str()?.to_owned();
            Some((key(r), d))
        })
        .collect();
    missing.extend(
        ledger
            .updates
            .iter()
            .filter(|u| !described.contains(*u))
            .map(|(id, d)| format!("update of {id} to {d:?}")),
    );
    missing.extend(missing_write_backs(org, bootstrap, ledger).await);
    missing
}

async fn missing_write_backs(org: &OrgClient, bootstrap: &str, ledger: &Ledger) -> Vec<String> {
    let ext_ids: Vec<String> = ledger
        .write_backs
        .iter()
        .map(|e| match e {
            Expect::Applied { ext, .. } | Expect::DeadLetter { ext } => ext.clone(),
        })
        .collect();
    let in_org = org.accounts_by_ext(&ext_ids).await;
    let dead: BTreeSet<String> = read_topic(bootstrap, DLQ).iter().map(key).collect();
    let conflicts: BTreeSet<String> = read_topic(bootstrap, CONFLICTS).iter().map(key).collect();
    let mut missing = Vec::new();
    for expect in &ledger.write_backs {
        match expect {
            Expect::Applied { ext, name } => {
                let applied = in_org.get(ext) == Some(name);
                if !applied && !conflicts.contains(ext) {
                    missing.push(format!("write-back {ext} neither applied nor a conflict"));
                }
                if dead.contains(ext) {
                    missing.push(format!("valid write-back {ext} was dead-lettered"));
                }
            }
            Expect::DeadLetter { ext } => {
                if !dead.contains(ext) {
                    missing.push(format!("invalid write-back {ext} not dead-lettered"));
                }
                if in_org.contains_key(ext) {
                    missing.push(format!("invalid write-back {ext} reached the org"));
                }
            }
        }
    }
    missing
}

async fn create_topics(tansu: &Tansu) {
    for topic in [ACCOUNTS, CONTACTS, WRITEBACK, DLQ, CONFLICTS, CHECKPOINTS] {
        tansu.create_topic(topic, 3).await;
    }
}

/// Waits until the sink has written something since `before` (its counter restarts at 0 in a
/// new process); returns how long that took, or `None` within the hang guard.
async fn first_write(fb: &Forcebridge, since: Instant) -> Option<Duration> {
    while since.elapsed() < Duration::from_secs(60) {
        if fb
            .metric("forcebridge_sink_records_written_total")
            .await
            .is_some_and(|n| n > 0.0)
        {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// The disturbances of one round besides the kill: round 3 stops the simulator, round 6 the
/// broker, round 9 revokes every session while the token endpoint answers with a maintenance page.
async fn disturb(round: usize, org: &OrgClient, sim: &SimProcess, tansu_pid: u32) {
    match round {
        3 => {
            signal(sim.child.id(), "STOP");
            tokio::time::sleep(Duration::from_secs(5)).await;
            signal(sim.child.id(), "CONT");
        }
        6 => {
            signal(tansu_pid, "STOP");
            tokio::time::sleep(Duration::from_secs(5)).await;
            signal(tansu_pid, "CONT");
        }
        9 => {
            // Every session revoked and the next logins answered with the maintenance page: both
            // sides need a new session and meet the outage (the test's own session too).
            org.faults(json!({
                "revoke_tokens": true,
                "fail_next_logins": {"count": 12, "fault": "maintenance"},
            }))
            .await;
            tokio::time::sleep(Duration::from_secs(8)).await;
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_scenario_loses_nothing_and_never_exits_on_its_own() {
    let Some(tansu) = Tansu::start_or_skip() else {
        return;
    };
    forcebridge::ops::telemetry::install_crypto_provider();
    let bootstrap = tansu.bootstrap();
    create_topics(&tansu).await;
    let sim = SimProcess::start();
    let mut org = OrgClient::login(&sim).await;
    let dir = std::env::temp_dir().join(format!("forcebridge-operator-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ops_port = free_port();
    let config = dir.join("forcebridge.yaml");
    std::fs::write(&config, config_text(&sim, &bootstrap, ops_port)).expect("write config");
    let seed = std::env::var("OPERATOR_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("OPERATOR_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut fb = Forcebridge {
        config,
        metrics_url: format!("http://127.0.0.1:{ops_port}/metrics"),
        child: None,
        starts: 0,
    };
    let mut ledger = Ledger::default();
    let mut restarts = Vec::new();
    for round in 0..KILLS {
        fb.spawn();
        let started = Instant::now();
        load_step(&org, &bootstrap, &mut ledger, round).await;
        restarts.push(first_write(&fb, started).await);
        disturb(round, &org, &sim, tansu.pid()).await;
        if round == 9 {
            org = OrgClient::login(&sim).await;
        }
        load_step(&org, &bootstrap, &mut ledger, round + 1000).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..3000))).await;
        fb.assert_alive(&format!("before kill {}", round + 1));
        fb.kill();
    }
    fb.spawn();
    let deadline = Instant::now() + SETTLE;
    let mut left = missing(&org, &bootstrap, &ledger).await;
    while !left.is_empty() && Instant::now() < deadline {
        fb.assert_alive("while settling");
        tokio::time::sleep(Duration::from_secs(2)).await;
        left = missing(&org, &bootstrap, &ledger).await;
    }
    fb.assert_alive("at the end");
    report(&restarts, &ledger, fb.starts);
    assert!(
        left.is_empty(),
        "{} missing after {KILLS} kills (seed {seed}), e.g. {:?}; log:\n{}",
        left.len(),
        &left[..left.len().min(10)],
        log_tail(&fb.config.with_extension("log"))
    );
}

fn report(restarts: &[Option<Duration>], ledger: &Ledger, starts: usize) {
    let times: Vec<String> = restarts
        .iter()
        .map(|t| {
            t.map_or("none within 60 s".to_owned(), |t| {
                format!("{:.2}s", t.as_secs_f64())
            })
        })
        .collect();
    eprintln!(
        "operator scenario: {starts} starts, {} Accounts + {} Contacts created, {} updates, {} write-backs; start → first sink write: {}",
        ledger.accounts.len(),
        ledger.contacts.len(),
        ledger.updates.len(),
        ledger.write_backs.len(),
        times.join(", ")
    );
}
