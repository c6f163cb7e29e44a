//! The operations server scraped while the source pipeline runs against the simulated org and
//! the librdkafka mock cluster: `/healthz`, `/readyz` following the stream and Kafka, and
//! `/metrics` figures moving by exactly the events that flowed.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use forcebridge::ops::telemetry as t;
use forcebridge::ops::{OpsServer, OpsState, ServerLimits, sample_value};
use forcebridge::sim::{SimConfig, SimOrg};
use serde_json::Value;
use support::source::{MOCK_KAFKA, Running, config_with};
use tokio_util::sync::CancellationToken;

const CHANNEL: &str = "/data/AccountChangeEvent";
const ACCOUNTS: &str = "salesforce.Account";
const WAIT: Duration = Duration::from_secs(60);

/// A running pipeline with its ops server.
struct Fixture {
    running: Running,
    addr: SocketAddr,
    http: reqwest::Client,
    stop: CancellationToken,
}

async fn start(sim: &SimOrg, bootstrap: &str) -> Fixture {
    forcebridge::ops::telemetry::install_crypto_provider();
    let running = support::source::start(config_with(sim, bootstrap, &[CHANNEL], "", MOCK_KAFKA));
    let state = OpsState::new(&support::kafka::settings(bootstrap), Duration::from_secs(1))
        .unwrap()
        .with_source(running.stats.clone(), vec![CHANNEL.to_owned()]);
    let server = OpsServer::bind("127.0.0.1:0".parse().unwrap(), state)
        .await
        .unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0, "the bound port is reported");
    let stop = CancellationToken::new();
    tokio::spawn(server.serve(stop.clone()));
    Fixture {
        running,
        addr,
        http: reqwest::Client::new(),
        stop,
    }
}

impl Fixture {
    async fn get(&self, path: &str) -> (u16, String, String) {
        let response = self
            .http
            .get(format!("http://{}{path}", self.addr))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, content_type, response.text().await.unwrap())
    }

    /// Polls `/readyz` until it answers `status`; returns its JSON body.
    async fn wait_ready(&self, status: u16) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (got, _, body) = self.get("/readyz").await;
            if got == status {
                return serde_json::from_str(&body).expect("JSON body");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/readyz did not become {status}; last {got}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn metrics(&self) -> String {
        let (status, content_type, body) = self.get("/metrics").await;
        assert_eq!(status, 200);
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        body
    }

    /// Scrapes until `done(page)`; returns that page.
    async fn scrape_until(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let page = self.metrics().await;
            if done(&page) {
                return page;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what} never showed in /metrics:\n{page}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        self.running.stop().await;
        self.stop.cancel();
    }
}

fn channel_value(page: &str, name: &str) -> f64 {
    sample_value(page, name, &[("channel", CHANNEL)]).unwrap_or(0.0)
}

fn produced(page: &str) -> f64 {
    sample_value(
        page,
        t::RECORDS_PRODUCED,
        &[("channel", CHANNEL), ("topic", ACCOUNTS)],
    )
    .unwrap_or(0.0)
}

fn deliveries(page: &str) -> f64 {
    sample_value(page, &format!("{}_count", t::KAFKA_DELIVERY_LATENCY), &[]).unwrap_or(0.0)
}

/// `/healthz` answers; `/readyz` turns 200 once subscribed; `/metrics` moves by exactly the
/// events generated (received, produced, delivery reports), the checkpoint catches up; a lost
/// stream that cannot be reopened turns `/readyz` 503 naming the channel, and back to 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_events_and_readyz_follows_the_stream() {
    let kafka = support::source::mock_kafka();
    kafka.create_topic(ACCOUNTS, 3);
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let f = start(&sim, &bootstrap).await;

    let (status, _, body) = f.get("/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let ready = f.wait_ready(200).await;
    assert_eq!(ready["ready"], Value::Bool(true), "{ready}");
    assert_eq!(ready["not_ready"], serde_json::json!([]));

    // A first batch, to have every family populated, then a measured one.
    sim.generate("Account", 5).unwrap();
    let before = f
        .scrape_until("the first 5 records", |p| {
            produced(p) == 5.0 && deliveries(p) == 5.0
        })
        .await;
    let opened = channel_value(&before, t::STREAMS_OPENED);
    assert!(opened >= 1.0);
    assert_eq!(channel_value(&before, t::STREAM_UP), 1.0);
    assert_eq!(sample_value(&before, t::KAFKA_REACHABLE, &[]), Some(1.0));

    const N: f64 = 12.0;
    sim.generate("Account", N as usize).unwrap();
    let after = f
        .scrape_until("the next records and their delivery reports", |p| {
            produced(p) >= produced(&before) + N && deliveries(p) >= deliveries(&before) + N
        })
        .await;
    assert_eq!(produced(&after), produced(&before) + N);
    assert_eq!(
        channel_value(&after, t::EVENTS_RECEIVED),
        channel_value(&before, t::EVENTS_RECEIVED) + N
    );
    assert_eq!(deliveries(&after), deliveries(&before) + N);
    assert_eq!(
        sample_value(&after, t::KAFKA_DELIVERIES, &[("result", "ok")]),
        Some(deliveries(&after))
    );
    assert_eq!(channel_value(&after, t::EVENTS_DEAD_LETTERED), 0.0);
    // The checkpoint catches up: a newer one is written and the lag falls back to 0.
    let caught_up = f
        .scrape_until("a checkpoint after the events", |p| {
            channel_value(p, t::CHECKPOINTS_WRITTEN)
                > channel_value(&before, t::CHECKPOINTS_WRITTEN)
                && channel_value(p, t::CHECKPOINT_LAG) == 0.0
        })
        .await;
    assert!(
        channel_value(&caught_up, t::LAST_CHECKPOINT) >= channel_value(&before, t::LAST_CHECKPOINT)
    );

    // The stream is cut and Subscribe refused for 3 s: not ready, naming the channel; then back.
    sim.refuse_subscriptions_for(Duration::from_secs(3));
    sim.reset_streams();
    let not_ready = f.wait_ready(503).await;
    assert_eq!(not_ready["ready"], Value::Bool(false));
    let reasons = not_ready["not_ready"].to_string();
    assert!(reasons.contains(CHANNEL), "{not_ready}");
    assert!(!reasons.contains("kafka"), "{not_ready}");
    let down = f.metrics().await;
    assert_eq!(channel_value(&down, t::STREAM_UP), 0.0);
    assert!(channel_value(&down, t::STREAM_FAILURES) >= 1.0);
    f.wait_ready(200).await;
    let back = f.metrics().await;
    assert_eq!(channel_value(&back, t::STREAMS_OPENED), opened + 1.0);
    assert_eq!(channel_value(&back, t::STREAM_UP), 1.0);

    f.running.assert_running();
    f.stop().await;
    sim.shutdown().await;
}

/// The only broker goes down: `/readyz` turns 503 naming Kafka (the streams stay open), the
/// reachability gauge drops; the broker comes back: ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_kafka() {
    let kafka = support::source::mock_kafka();
    kafka.create_topic(ACCOUNTS, 3);
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let f = start(&sim, &bootstrap).await;
    f.wait_ready(200).await;

    kafka.cluster().broker_down(1).unwrap();
    let not_ready = f.wait_ready(503).await;
    let reasons = not_ready["not_ready"].as_array().unwrap();
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str().unwrap().starts_with("kafka: ")),
        "{not_ready}"
    );
    let page = f.metrics().await;
    assert_eq!(sample_value(&page, t::KAFKA_REACHABLE, &[]), Some(0.0));

    kafka.cluster().broker_up(1).unwrap();
    f.wait_ready(200).await;
    let page = f.metrics().await;
    assert_eq!(sample_value(&page, t::KAFKA_REACHABLE, &[]), Some(1.0));

    f.running.assert_running();
    f.stop().await;
    sim.shutdown().await;
}

/// An ops server on loopback with `limits`, reporting on nothing but Kafka (not reachable).
async fn bare_server(limits: ServerLimits) -> (SocketAddr, CancellationToken) {
    forcebridge::ops::telemetry::install_crypto_provider();
    let state = OpsState::new(
        &support::kafka::settings("127.0.0.1:1"),
        Duration::from_secs(1),
    )
    .unwrap();
    let server = OpsServer::bind("127.0.0.1:0".parse().unwrap(), state)
        .await
        .unwrap()
        .with_limits(limits);
    let addr = server.local_addr();
    let stop = CancellationToken::new();
    tokio::spawn(server.serve(stop.clone()));
    (addr, stop)
}

/// A connection that sent part of a request header and nothing more.
async fn half_sent(addr: SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: ops\r\n")
        .await
        .unwrap();
    stream
}

/// Whether the server closed `stream` (end of stream or reset); the timeout is a hang guard.
async fn closed_by_server(mut stream: tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT / 2, stream.read_to_end(&mut rest))
        .await
        .is_ok()
}

async fn healthz(addr: SocketAddr) -> u16 {
    let response = tokio::time::timeout(
        WAIT / 2,
        reqwest::Client::new()
            .get(format!("http://{addr}/healthz"))
            .send(),
    )
    .await
    .expect("/healthz answered (hang guard)")
    .expect("/healthz");
    response.status().as_u16()
}

/// Issue 19, item 12: half-sent connections are closed once the header-read timeout passes,
/// and the server still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_connections_are_closed_after_the_header_timeout() {
    let (addr, stop) = bare_server(ServerLimits {
        header_read_timeout: Duration::from_millis(300),
        ..ServerLimits::default()
    })
    .await;
    let mut streams = Vec::new();
    for _ in 0..5 {
        streams.push(half_sent(addr).await);
    }
    for (i, stream) in streams.into_iter().enumerate() {
        assert!(
            closed_by_server(stream).await,
            "connection {i} was held open"
        );
    }
    assert_eq!(healthz(addr).await, 200);
    stop.cancel();
}

/// Issue 19, item 12: with the limit reached by half-sent connections (a header-read timeout
/// far away), a new connection closes the oldest of them and `/healthz` is answered: a flood
/// holds at most `max_connections` connections and cannot starve the prober.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_cannot_starve_healthz() {
    const LIMIT: usize = 4;
    const FLOOD: usize = 10;
    let (addr, stop) = bare_server(ServerLimits {
        header_read_timeout: Duration::from_secs(60),
        max_connections: LIMIT,
        ..ServerLimits::default()
    })
    .await;
    let mut streams = Vec::new();
    for _ in 0..FLOOD {
        streams.push(half_sent(addr).await);
    }
    assert_eq!(healthz(addr).await, 200, "a new connection is served");
    // FLOOD + 1 connections arrived in order for LIMIT slots: the oldest FLOOD + 1 - LIMIT were
    // closed to make room.
    for (i, stream) in streams.into_iter().take(FLOOD + 1 - LIMIT).enumerate() {
        assert!(
            closed_by_server(stream).await,
            "connection {i} was held open"
        );
    }
    stop.cancel();
}
