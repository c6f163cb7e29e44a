//! Secrets are never printed: not in logs (any level, text or JSON), errors, `Debug` output or
//! `check` reports.
//!
//! Every secret kind gets a distinctive known value: the OAuth client secret, the password and
//! security token, a given access token, the JWT bearer private key (each PEM body line), a Kafka
//! SASL password in `kafka.properties`, and every access token the simulated org issued. The real
//! binary runs with `RUST_LOG=trace` (and `debug`) in both log formats through `check --offline`,
//! `check`, a failing login, config errors next to a secret and `run` (source and sink doing
//! real work, then SIGTERM); stdout and stderr of each are searched for every secret, also
//! percent-encoded (form bodies) and base64-encoded at any alignment (headers, Basic auth).
//! `scanner_finds_every_encoding` shows the search itself finds what it looks for.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use forcebridge::sim::{SimConfig, SimOrg};
use serde_json::json;
use support::kafka::{MockKafka, TestRecord, produce};

/// Characters that form and percent encoding change (`+`, `/`, `=`, `&`, `%`, space).
const CLIENT_SECRET: &str = "CsEcReT-7f3a9b1e+client/secret=";
const PASSWORD: &str = "PwD-b4c1d9e2&pass word";
const SECURITY_TOKEN: &str = "StOkEn9e8d7c6b5a4f3";
const SASL_PASSWORD: &str = "SaSl-pw-0c1d2e3f%4a5b+x";
const WRITEBACK: &str = "salesforce.writeback";
const WAIT: Duration = Duration::from_secs(60);

/// A named secret and the texts that would reveal it.
struct Secret {
    name: String,
    needles: Vec<String>,
}

impl Secret {
    fn new(name: impl Into<String>, value: &str) -> Secret {
        Secret {
            name: name.into(),
            needles: encodings(value),
        }
    }
}

/// `value` as it may travel: verbatim, form-encoded (`+` for space), percent-encoded (`%20`), and
/// base64 (standard and URL-safe) at each of the three alignments inside a longer encoded text
/// (`client_id:secret` in Basic auth): the encoding of `value[k..]` for k in 0..3, cut to whole
/// 3-byte groups.
fn encodings(value: &str) -> Vec<String> {
    let mut out = vec![value.to_owned()];
    let form = form_encode(value);
    out.push(form.clone());
    out.push(form.replace('+', "%20"));
    let bytes = value.as_bytes();
    for k in 0..3.min(bytes.len()) {
        let rest = &bytes[k..];
        let whole = &rest[..rest.len() / 3 * 3];
        if whole.len() >= 9 {
            out.push(base64::engine::general_purpose::STANDARD_NO_PAD.encode(whole));
            out.push(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(whole));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// `application/x-www-form-urlencoded`, as reqwest's `form` writes it.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The secrets whose needles occur in `text`, with the needle found.
fn leaks(text: &str, secrets: &[Secret]) -> Vec<String> {
    secrets
        .iter()
        .flat_map(|s| {
            s.needles
                .iter()
                .filter(|n| text.contains(n.as_str()))
                .map(move |n| format!("{} (as {n:?})", s.name))
        })
        .collect()
}

/// Fails naming the leaked secrets and the output they leaked into.
fn assert_clean(what: &str, text: &str, secrets: &[Secret]) {
    let found = leaks(text, secrets);
    assert!(
        found.is_empty(),
        "{what} printed secrets: {found:?}\n--- output ---\n{}",
        tail(text)
    );
}

fn tail(text: &str) -> &str {
    let start = text.len().saturating_sub(20_000);
    let start = (start..=text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap();
    &text[start..]
}

/// The secrets of the fixed configuration values plus every token `sim` has issued (and the
/// `<org id>!AQ` prefix they all share, which no output has a reason to print).
fn all_secrets(sim: &SimOrg, extra: &[Secret]) -> Vec<Secret> {
    let mut secrets = vec![
        Secret::new("client secret", CLIENT_SECRET),
        Secret::new("password", PASSWORD),
        Secret::new("security token", SECURITY_TOKEN),
        Secret::new("SASL password", SASL_PASSWORD),
        Secret::new("token prefix", &format!("{}!AQ", sim.config().org_id)),
    ];
    for (i, token) in sim.issued_tokens().into_iter().enumerate() {
        secrets.push(Secret::new(format!("issued token #{i}"), &token));
    }
    for line in jwt_key_lines(sim) {
        secrets.push(Secret::new("JWT private key line", &line));
    }
    secrets.extend(extra.iter().map(|s| Secret {
        name: s.name.clone(),
        needles: s.needles.clone(),
    }));
    secrets
}

/// The base64 body lines of the sim's JWT private key (the demo key: the sim runs with the demo
/// certificate).
fn jwt_key_lines(sim: &SimOrg) -> Vec<String> {
    sim.jwt_private_key_pem()
        .expect("the sim runs with the demo certificate")
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_owned)
        .collect()
}

fn sim_config() -> SimConfig {
    SimConfig {
        client_secret: CLIENT_SECRET.into(),
        password: PASSWORD.into(),
        security_token: SECURITY_TOKEN.into(),
        ..SimConfig::default()
    }
}

/// SASL credentials in `kafka.properties`, with librdkafka's configuration, security and
/// protocol debug logs on. The mock cluster has no SASL handshake, so `security.protocol` stays
/// plaintext: the password goes through forcebridge's config, every client's configuration and
/// librdkafka's configuration dump (`debug: conf`), not over the wire.
fn kafka_properties() -> String {
    "  create_topics: false\n  properties:\n    sasl.mechanism: PLAIN\n    sasl.username: forcebridge\n    sasl.password: ${FB_SASL_PASSWORD}\n    debug: conf,security,broker,protocol\n    session.timeout.ms: \"6000\"\n    heartbeat.interval.ms: \"500\"\n".to_owned()
}

/// The environment every run gets: the secrets the config references.
fn secret_env() -> Vec<(&'static str, String)> {
    vec![
        ("FB_CLIENT_SECRET", CLIENT_SECRET.to_owned()),
        ("FB_PASSWORD", PASSWORD.to_owned()),
        ("FB_SECURITY_TOKEN", SECURITY_TOKEN.to_owned()),
        ("FB_SASL_PASSWORD", SASL_PASSWORD.to_owned()),
    ]
}

/// A config with the given `auth` block (indented four spaces), a source on Account changes, a
/// write-back sink and SASL Kafka properties.
fn config_text(sim: &SimOrg, bootstrap: &str, auth: &str) -> String {
    format!(
        "name: secrets\nsalesforce:\n  login_url: {login}\n  pubsub_endpoint: {pubsub}\n  allow_plaintext: true\n  auth:\n{auth}source:\n  channels:\n    - name: /data/AccountChangeEvent\n      initial_replay: earliest\n  checkpoint_interval: 100ms\nsink:\n  topics: [{WRITEBACK}]\n  objects:\n    Account:\n      external_id_field: External_Id__c\n  commit_interval: 100ms\nkafka:\n  bootstrap_servers: {bootstrap}\n{kafka}",
        login = sim.instance_url(),
        pubsub = sim.pubsub_endpoint(),
        kafka = kafka_properties(),
    )
}

fn password_auth(sim: &SimOrg) -> String {
    format!(
        "    type: password\n    client_id: {}\n    client_secret: \"${{FB_CLIENT_SECRET}}\"\n    username: {}\n    password: \"${{FB_PASSWORD}}\"\n    security_token: \"${{FB_SECURITY_TOKEN}}\"\n",
        sim.config().client_id,
        sim.config().username
    )
}

fn client_credentials_auth(sim: &SimOrg) -> String {
    format!(
        "    type: client_credentials\n    client_id: {}\n    client_secret: \"${{FB_CLIENT_SECRET}}\"\n",
        sim.config().client_id
    )
}

/// The JWT key inline, from the environment (`FB_JWT_KEY`, see [`jwt_env`]).
fn jwt_auth(sim: &SimOrg) -> String {
    format!(
        "    type: jwt_bearer\n    client_id: {}\n    username: {}\n    private_key: \"${{FB_JWT_KEY}}\"\n",
        sim.config().client_id,
        sim.config().username,
    )
}

/// The PEM as one line with `\n` escapes, for a double-quoted YAML string.
fn jwt_env(sim: &SimOrg) -> String {
    sim.jwt_private_key_pem().unwrap().replace('\n', "\\n")
}

fn given_token_auth(sim: &SimOrg, token: &str) -> String {
    format!(
        "    type: access_token\n    access_token: {token}\n    instance_url: {}\n    org_id: {}\n",
        sim.instance_url(),
        sim.config().org_id
    )
}

/// A directory of its own for one test.
fn test_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("forcebridge-secrets-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One invocation of the binary: its arguments, log settings and environment.
struct Invocation<'a> {
    args: Vec<String>,
    rust_log: &'a str,
    log_format: &'a str,
    env: Vec<(&'static str, String)>,
}

/// Starts the binary with stdout and stderr going to files (trace logs would fill a pipe).
fn spawn(dir: &Path, tag: &str, inv: &Invocation) -> (std::process::Child, PathBuf, PathBuf) {
    let out = dir.join(format!("{tag}.stdout"));
    let err = dir.join(format!("{tag}.stderr"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_forcebridge"));
    command
        .args(["--log-format", inv.log_format])
        .args(&inv.args)
        .env("RUST_LOG", inv.rust_log)
        .env_remove("FORCEBRIDGE_CONFIG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    for (k, v) in &inv.env {
        command.env(k, v);
    }
    (command.spawn().unwrap(), out, err)
}

/// What a finished invocation printed.
struct Printed {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Printed {
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

fn collect(status: std::process::ExitStatus, out: &Path, err: &Path) -> Printed {
    Printed {
        success: status.success(),
        stdout: String::from_utf8_lossy(&std::fs::read(out).unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&std::fs::read(err).unwrap()).into_owned(),
    }
}

/// Runs the binary to completion (off the async runtime, so the in-process sim keeps serving).
async fn run_to_end(dir: &Path, tag: &str, inv: Invocation<'_>) -> Printed {
    let dir = dir.to_owned();
    let tag = tag.to_owned();
    let args = inv.args.clone();
    let (rust_log, log_format) = (inv.rust_log.to_owned(), inv.log_format.to_owned());
    let env = inv.env.clone();
    tokio::task::spawn_blocking(move || {
        let inv = Invocation {
            args,
            rust_log: &rust_log,
            log_format: &log_format,
            env,
        };
        let (mut child, out, err) = spawn(&dir, &tag, &inv);
        let status = child.wait().unwrap();
        collect(status, &out, &err)
    })
    .await
    .unwrap()
}

fn check_args(path: &Path, offline: bool) -> Vec<String> {
    let mut args = vec!["check".to_owned(), "--config".to_owned()];
    args.push(path.display().to_string());
    if offline {
        args.push("--offline".to_owned());
    }
    args
}

/// The search finds a secret in every form it looks for, and nothing in unrelated text.
#[test]
fn scanner_finds_every_encoding() {
    let secrets = vec![Secret::new("s", PASSWORD), Secret::new("t", CLIENT_SECRET)];
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("someid:{CLIENT_SECRET}"));
    for k in 0..3 {
        let padded = format!("{}{PASSWORD}tail", "x".repeat(k));
        let shifted = base64::engine::general_purpose::STANDARD.encode(padded);
        assert_eq!(leaks(&shifted, &secrets).len(), 1, "alignment {k}");
    }
    for text in [
        format!(
            "body: grant_type=password&password={}",
            form_encode(PASSWORD)
        ),
        format!("Authorization: Basic {basic}"),
        format!("{{\"password\":\"{PASSWORD}\"}}"),
        format!("?p={}", form_encode(PASSWORD).replace('+', "%20")),
    ] {
        assert!(!leaks(&text, &secrets).is_empty(), "not found in {text}");
    }
    assert!(leaks("ok      Salesforce login (org 00D...)", &secrets).is_empty());
}

/// `check --offline` and config errors next to a secret, at trace level, text and JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_check_and_config_errors_print_no_secret() {
    let sim = SimOrg::start(sim_config()).await.unwrap();
    let dir = test_dir("offline");
    let good = config_text(&sim, "127.0.0.1:1", &password_auth(&sim));
    let cases = [
        ("valid", good.clone(), true),
        (
            "unknown key next to a secret",
            good.replace("    password: ", "    passwrd: "),
            false,
        ),
        (
            "secret of the wrong type",
            good.replace(
                "security_token: \"${FB_SECURITY_TOKEN}\"",
                "security_token: [\"${FB_SECURITY_TOKEN}\"]",
            ),
            false,
        ),
        (
            "invalid value after the secrets",
            good.replace("commit_interval: 100ms", "commit_interval: 0ms"),
            false,
        ),
        (
            "managed Kafka property next to the SASL password",
            good.replace(
                "    debug: ",
                "    enable.idempotence: \"${FB_SASL_PASSWORD}\"\n    debug: ",
            ),
            false,
        ),
    ];
    let secrets = all_secrets(&sim, &[]);
    for (i, (what, text, ok)) in cases.into_iter().enumerate() {
        let path = dir.join(format!("case{i}.yaml"));
        std::fs::write(&path, text).unwrap();
        for format in ["text", "json"] {
            let printed = run_to_end(
                &dir,
                &format!("offline{i}-{format}"),
                Invocation {
                    args: check_args(&path, true),
                    rust_log: "trace",
                    log_format: format,
                    env: secret_env(),
                },
            )
            .await;
            assert_eq!(printed.success, ok, "{what}: {}", printed.all());
            if !ok {
                assert!(printed.stderr.contains("invalid config"), "{what}");
            }
            assert_clean(
                &format!("check --offline, {what}, {format}"),
                &printed.all(),
                &secrets,
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    sim.shutdown().await;
}

/// `check` against the sim and mock Kafka with every login flow, and a refused login; the
/// report's own login line shows the captured output is the real one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_check_prints_no_secret() {
    let sim = SimOrg::start(sim_config()).await.unwrap();
    let kafka = MockKafka::start(1);
    kafka.create_topic(WRITEBACK, 1);
    let bootstrap = kafka.bootstrap();
    let dir = test_dir("online");
    let given = sim.issue_access_token();
    let key = jwt_env(&sim);
    let flows = [
        ("password", password_auth(&sim), true),
        ("client credentials", client_credentials_auth(&sim), true),
        ("jwt bearer", jwt_auth(&sim), true),
        ("given token", given_token_auth(&sim, &given), true),
        (
            "refused password",
            password_auth(&sim).replace("${FB_PASSWORD}", "${FB_PASSWORD}x"),
            false,
        ),
        (
            "refused client secret",
            client_credentials_auth(&sim).replace("${FB_CLIENT_SECRET}", "${FB_CLIENT_SECRET}x"),
            false,
        ),
    ];
    for (i, (flow, auth, ok)) in flows.into_iter().enumerate() {
        let path = dir.join(format!("flow{i}.yaml"));
        std::fs::write(&path, config_text(&sim, &bootstrap, &auth)).unwrap();
        for (format, level) in [("text", "trace"), ("json", "trace"), ("text", "debug")] {
            let mut env = secret_env();
            env.push(("FB_JWT_KEY", key.clone()));
            let printed = run_to_end(
                &dir,
                &format!("flow{i}-{format}-{level}"),
                Invocation {
                    args: check_args(&path, false),
                    rust_log: level,
                    log_format: format,
                    env,
                },
            )
            .await;
            assert_eq!(printed.success, ok, "{flow}: {}", printed.all());
            let login = if ok {
                "ok      Salesforce login"
            } else {
                "FAILED  Salesforce login"
            };
            assert!(printed.stdout.contains(login), "{flow}: {}", printed.stdout);
            if ok {
                // The report names the org: the scanner finds it in this very output.
                let org = [Secret::new("org id", &sim.config().org_id)];
                assert!(!leaks(&printed.stdout, &org).is_empty());
            }
            let secrets = all_secrets(&sim, &[]);
            assert_clean(
                &format!("check, {flow}, {format}, RUST_LOG={level}"),
                &printed.all(),
                &secrets,
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    sim.shutdown().await;
}

/// `run` with the source streaming changes into Kafka and the sink writing back over REST, at
/// trace level in both formats, until SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_source_and_sink_prints_no_secret() {
    let sim = SimOrg::start(sim_config()).await.unwrap();
    let kafka = MockKafka::start(1);
    let bootstrap = kafka.bootstrap();
    let dir = test_dir("run");
    sim.generate("Account", 50).unwrap();
    for (round, format) in ["text", "json"].into_iter().enumerate() {
        let ext = format!("SECRETS-{round}");
        let record: TestRecord = (
            Some(ext.clone()),
            serde_json::to_vec(&json!({"object": "Account", "operation": "upsert",
                "timestamp": 1_700_000_000_000u64 + round as u64,
                "fields": {"External_Id__c": ext, "Name": format!("Written back {round}")}}))
            .unwrap(),
            vec![],
        );
        produce(&bootstrap, WRITEBACK, &[record]).await;
        let path = dir.join(format!("run-{format}.yaml"));
        std::fs::write(&path, config_text(&sim, &bootstrap, &password_auth(&sim))).unwrap();
        let inv = Invocation {
            args: vec!["run".into(), "--config".into(), path.display().to_string()],
            rust_log: "trace",
            log_format: format,
            env: secret_env(),
        };
        let (mut child, out, err) = spawn(&dir, &format!("run-{format}"), &inv);
        let deadline = Instant::now() + WAIT;
        loop {
            let b = bootstrap.clone();
            let produced = tokio::task::spawn_blocking(move || {
                forcebridge::kafka::count_records(&b, "salesforce.Account", Duration::from_secs(5))
                    .unwrap_or(0)
            })
            .await
            .unwrap();
            let written = sim
                .find_by_external_id("Account", "External_Id__c", &ext)
                .is_some();
            if produced >= 50 && written {
                break;
            }
            if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                let status = child.wait().unwrap();
                let printed = collect(status, &out, &err);
                panic!(
                    "run made no progress ({produced} records, written back: {written}): {}",
                    tail(&printed.stderr)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        let printed = collect(status, &out, &err);
        assert!(
            printed.success,
            "exit after SIGTERM: {}",
            tail(&printed.stderr)
        );
        // The trace log is the real one: it shows the stream's activity.
        assert!(
            printed.stderr.contains("SIGTERM received"),
            "{}",
            tail(&printed.stderr)
        );
        let secrets = all_secrets(&sim, &[]);
        assert!(secrets.iter().any(|s| s.name.starts_with("issued token")));
        assert_clean(&format!("run, {format}, trace"), &printed.all(), &secrets);
    }
    let _ = std::fs::remove_dir_all(&dir);
    sim.shutdown().await;
}

/// In process: `Debug` of a config holding every secret kind (and of the Kafka settings derived
/// from it), and `Display`/`Debug` of a refused login's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_and_error_output_print_no_secret() {
    let sim = SimOrg::start(sim_config()).await.unwrap();
    let given = sim.issue_access_token();
    let key = jwt_env(&sim);
    let env = |name: &str| {
        secret_env()
            .into_iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
            .or_else(|| (name == "FB_JWT_KEY").then(|| key.clone()))
    };
    let secrets = all_secrets(&sim, &[]);
    for auth in [
        password_auth(&sim),
        client_credentials_auth(&sim),
        jwt_auth(&sim),
        given_token_auth(&sim, &given),
    ] {
        let config =
            forcebridge::config::Config::from_yaml(&config_text(&sim, "127.0.0.1:1", &auth), env)
                .unwrap();
        assert_clean("config Debug", &format!("{config:?} {config:#?}"), &secrets);
        let settings = forcebridge::kafka::KafkaSettings::from(&config.kafka);
        assert_clean("Kafka settings Debug", &format!("{settings:?}"), &secrets);
        assert!(format!("{settings:?}").contains("sasl.username"));
    }

    let wrong = password_auth(&sim).replace("${FB_PASSWORD}", "${FB_PASSWORD}x");
    let config =
        forcebridge::config::Config::from_yaml(&config_text(&sim, "127.0.0.1:1", &wrong), env)
            .unwrap();
    let tls = forcebridge::salesforce::tls::ClientTls::from_config(&config.salesforce).unwrap();
    let http = forcebridge::salesforce::auth::http_client(&tls, Duration::from_secs(10)).unwrap();
    let err = forcebridge::salesforce::auth::Authenticator::new(&config.salesforce, http)
        .login()
        .await
        .unwrap_err();
    let printed = format!(
        "{err} {err:?} {}",
        forcebridge::ops::telemetry::error_chain(&err)
    );
    assert!(printed.contains("invalid_grant"), "{printed}");
    assert_clean("refused login error", &printed, &secrets);
    sim.shutdown().await;
}
