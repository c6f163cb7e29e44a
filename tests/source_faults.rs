//! The source pipeline under faults of the org and of Kafka: stream resets every N events, an
//! org refusing every Subscribe for a while, tokens expiring mid-stream, streams going silent, and
//! Kafka brokers going down and coming back. Each test checks that every event the org emitted
//! is in Kafka (exact replay ids and counts) and that the pipeline recovered by itself.

mod support;

use std::time::Duration;

use forcebridge::sim::{SimConfig, SimOrg};
use support::kafka::{MockKafka, read_topic};
use support::source::{Delivered, MOCK_KAFKA, Running, config_with, delivered, org_replay_ids};

const CHANNEL: &str = "/data/AccountChangeEvent";
const ACCOUNTS: &str = "salesforce.Account";
const WAIT: Duration = Duration::from_secs(90);

fn start(sim: &SimOrg, bootstrap: &str, extra_source: &str, extra_kafka: &str) -> Running {
    support::source::start(config_with(
        sim,
        bootstrap,
        &[CHANNEL],
        extra_source,
        &format!("{MOCK_KAFKA}{extra_kafka}"),
    ))
}

fn mock_kafka() -> MockKafka {
    let kafka = support::source::mock_kafka();
    kafka.create_topic(ACCOUNTS, 3);
    kafka
}

/// Reads the Account topic until it holds `n` distinct replay ids (or `WAIT` passes).
async fn wait_for_events(bootstrap: &str, n: usize) -> Delivered {
    let bootstrap = bootstrap.to_owned();
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let seen = delivered(&read_topic(&bootstrap, ACCOUNTS));
            if seen.replay_ids.len() >= n || std::time::Instant::now() >= deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .expect("reader task")
}

/// Every event the org emitted on the channel is in Kafka, once (each event here is a create:
/// one record), and nothing else is.
fn assert_exactly_once(sim: &SimOrg, seen: &Delivered, expected_events: usize) {
    let emitted = org_replay_ids(sim, CHANNEL);
    assert_eq!(emitted.len(), expected_events, "events the org emitted");
    let missing: Vec<&String> = emitted.difference(&seen.replay_ids).collect();
    assert!(
        missing.is_empty(),
        "{} events missing from Kafka, first {:?}",
        missing.len(),
        missing.first()
    );
    assert_eq!(seen.replay_ids, emitted, "no stray replay ids");
    assert_eq!(seen.distinct_records, expected_events);
    assert_eq!(seen.repeats, 0, "nothing repeated");
    assert_eq!(seen.records, expected_events);
}

/// The org ends every stream with `INTERNAL` (`service.unavailable`) after 97 events: the
/// pipeline resubscribes from the last event it handed on each time; nothing lost or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_reset_every_97_events_lose_and_repeat_nothing() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    sim.reset_stream_every(97);
    sim.generate("Account", 2000).unwrap();
    let running = start(&sim, &bootstrap, "", "");
    sim.generate("Account", 1000).unwrap();
    let seen = wait_for_events(&bootstrap, 3000).await;
    assert_exactly_once(&sim, &seen, 3000);
    let resets = sim.stream_fault_counts().streams_reset;
    let channel = running.channel(CHANNEL);
    eprintln!("resets: {resets}, pipeline: {channel:?}");
    // Every stream hands on all 97 events it received before its reset (none fetched twice),
    // so 3000 events take exactly 30 resets and 31 streams.
    assert_eq!(resets, 3000 / 97, "streams reset by the org");
    assert_eq!(channel.streams_opened, resets + 1, "{channel:?}");
    assert_eq!(channel.stream_failures, resets, "{channel:?}");
    running.assert_running();
    running.stop().await;
    sim.shutdown().await;
}

/// The org refuses every Subscribe with `UNAVAILABLE` (`service.unavailable`) for 3 s after an
/// open stream was reset: the pipeline retries with growing backoff (a handful of attempts, not
/// a hot loop) and catches up when the org recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_refused_for_a_while_is_retried_with_backoff() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let running = start(&sim, &bootstrap, "", "");
    sim.generate("Account", 500).unwrap();
    wait_for_events(&bootstrap, 500).await;
    let before = running.channel(CHANNEL);

    sim.refuse_subscriptions_for(Duration::from_secs(3));
    sim.reset_streams();
    sim.generate("Account", 500).unwrap();
    let seen = wait_for_events(&bootstrap, 1000).await;
    assert_exactly_once(&sim, &seen, 1000);

    let refused = sim.stream_fault_counts().refused_subscriptions;
    let after = running.channel(CHANNEL);
    eprintln!("refused Subscribe calls: {refused}; pipeline before {before:?}, after {after:?}");
    // The first four backoff ceilings add up to 1.5 s: at least that many attempts fit in 3 s.
    assert!(refused >= 3, "the pipeline kept retrying: {refused}");
    // Backoff from 100 ms doubling (full jitter): some 5 attempts fit in 3 s; a hot loop makes
    // thousands.
    assert!(refused <= 15, "retries back off: {refused} attempts in 3 s");
    assert_eq!(
        after.stream_failures - before.stream_failures,
        refused + 1,
        "the reset and every refusal were seen as failures"
    );
    assert_eq!(after.streams_opened, before.streams_opened + 1);
    running.assert_running();
    running.stop().await;
    sim.shutdown().await;
}

/// Tokens live 2 s: each open stream ends with `UNAUTHENTICATED` (`service.auth.error`) when
/// its token expires; the pipeline logs in again and resubscribes; nothing lost or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expiring_mid_stream_are_renewed_without_loss_or_repeats() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig {
        token_ttl: Duration::from_secs(2),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let running = start(&sim, &bootstrap, "", "");
    // Changes keep coming for ~5 s: past at least two expiries.
    for _ in 0..10 {
        sim.generate("Account", 200).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let seen = wait_for_events(&bootstrap, 2000).await;
    assert_exactly_once(&sim, &seen, 2000);
    // A token may expire just now: the pipeline gets a moment (re-login, backoff) to resubscribe.
    let deadline = tokio::time::Instant::now() + WAIT;
    let (expired, channel) = loop {
        let expired = sim.stream_fault_counts().streams_expired;
        let channel = running.channel(CHANNEL);
        if channel.streams_opened > expired || tokio::time::Instant::now() > deadline {
            break (expired, channel);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("streams ended by token expiry: {expired}; pipeline: {channel:?}");
    assert!(expired >= 2, "tokens expired mid-stream: {expired}");
    assert!(channel.streams_opened > expired, "{channel:?}");
    running.assert_running();
    running.stop().await;
    sim.shutdown().await;
}

/// The open stream goes silent (no events, no keepalives, not closed): the pipeline's watchdog
/// (`stream_idle_timeout`) gives up on it, resubscribes and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stream_is_rebuilt_by_the_watchdog() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig {
        keepalive_interval: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let running = start(&sim, &bootstrap, "  stream_idle_timeout: 2s\n", "");
    sim.generate("Account", 500).unwrap();
    wait_for_events(&bootstrap, 500).await;
    let before = running.channel(CHANNEL);

    sim.silence_streams();
    sim.generate("Account", 500).unwrap();
    let seen = wait_for_events(&bootstrap, 1000).await;
    assert_exactly_once(&sim, &seen, 1000);
    let after = running.channel(CHANNEL);
    let silenced = sim.stream_fault_counts().streams_silenced;
    eprintln!("silenced streams: {silenced}; pipeline before {before:?}, after {after:?}");
    assert_eq!(silenced, 1);
    assert!(after.streams_opened > before.streams_opened, "{after:?}");
    assert!(after.stream_failures > before.stream_failures, "{after:?}");
    running.assert_running();
    running.stop().await;
    sim.shutdown().await;
}

/// The Kafka broker goes down while events flow: the pipeline stops taking events once
/// librdkafka's queue (500 messages) and its own hand-off (one batch) are full — memory stays
/// bounded — and when the broker is back everything lands, nothing lost or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_brokers_down_and_back_lose_nothing_and_bound_memory() {
    const QUEUE: u64 = 500;
    const BATCH: u64 = 50;
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let running = start(
        &sim,
        &bootstrap,
        &format!("  batch_size: {BATCH}\n"),
        &format!("  properties:\n    queue.buffering.max.messages: \"{QUEUE}\"\n"),
    );
    sim.generate("Account", 1000).unwrap();
    wait_for_events(&bootstrap, 1000).await;
    let acked = running.channel(CHANNEL).events_received;
    assert_eq!(acked, 1000);

    kafka.cluster().broker_down(1).unwrap();
    sim.generate("Account", 5000).unwrap();
    // Intake fills librdkafka's queue, then stops.
    let deadline = tokio::time::Instant::now() + WAIT;
    while running.channel(CHANNEL).events_received < acked + QUEUE {
        assert!(
            tokio::time::Instant::now() < deadline,
            "intake stalled before the queue filled: {:?}",
            running.channel(CHANNEL)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Bound: the queue, the reader → processor channel (one batch), the event in the reader's
    // hand and the one in the processor's.
    let bound = acked + QUEUE + BATCH + 2;
    let mut peak = 0;
    for _ in 0..20 {
        peak = peak.max(running.channel(CHANNEL).events_received);
        assert!(
            peak <= bound,
            "intake went past the bound: {peak} > {bound}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.assert_running();
    eprintln!("broker down: {peak} events taken in (bound {bound}) of 6000");

    kafka.cluster().broker_up(1).unwrap();
    sim.generate("Account", 500).unwrap();
    let seen = wait_for_events(&bootstrap, 6500).await;
    assert_exactly_once(&sim, &seen, 6500);
    running.assert_running();
    running.stop().await;
    sim.shutdown().await;
}

/// Issue 19, item 4: the org revokes the session while the next event of a second channel needs
/// a schema not cached yet. The stream that carries it stays open (revocation does not end a
/// stream in the simulated org, nor is the reader asked to notice), so only the schema fetch
/// sees the refusal: it logs in again (single flight) and fetches again, and the event arrives,
/// with exactly one login more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_fetch_refused_for_auth_logs_in_again() {
    const CONTACT_CHANNEL: &str = "/data/ContactChangeEvent";
    const CONTACTS: &str = "salesforce.Contact";
    let kafka = mock_kafka();
    kafka.create_topic(CONTACTS, 1);
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    sim.generate("Account", 5).unwrap();
    let running = support::source::start(config_with(
        &sim,
        &bootstrap,
        &[CHANNEL, CONTACT_CHANNEL],
        "",
        MOCK_KAFKA,
    ));
    wait_for_events(&bootstrap, 5).await;
    let deadline = std::time::Instant::now() + WAIT;
    while !running.channel(CONTACT_CHANNEL).stream_up {
        assert!(std::time::Instant::now() < deadline, "no Contact stream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sim.logins(), 1);

    sim.revoke_tokens();
    sim.generate("Contact", 1).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        running.assert_running();
        let b = bootstrap.clone();
        let n = tokio::task::spawn_blocking(move || {
            forcebridge::kafka::count_records(&b, CONTACTS, Duration::from_secs(10)).unwrap_or(0)
        })
        .await
        .unwrap();
        if n >= 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the Contact event never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sim.logins(), 2, "one re-login, shared by whoever noticed");
    running.stop().await;
    sim.shutdown().await;
}

/// Issue 19, item 8: Kafka unreachable at start (the broker down before the source starts): the
/// source waits, reporting why (`source: kafka: retrying after …`, the reason `/readyz` lists),
/// and streams every event once the broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_unreachable_at_start_is_waited_for() {
    kafka_unreachable_at_start("").await;
}

/// The same in exactly-once mode: registering the channel's transactional producer times out
/// while the broker is down, and is tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_unreachable_at_start_is_waited_for_in_exactly_once_mode() {
    kafka_unreachable_at_start("  delivery: exactly_once\n").await;
}

async fn kafka_unreachable_at_start(extra_source: &str) {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    sim.generate("Account", 20).unwrap();
    kafka.cluster().broker_down(1).unwrap();
    let running = start(&sim, &bootstrap, extra_source, "");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        running.assert_running();
        let reasons = running.stats.retrying.not_ready();
        if reasons
            .iter()
            .any(|r| r.starts_with("source: kafka: retrying after"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no Kafka reason: {reasons:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    kafka.cluster().broker_up(1).unwrap();
    let seen = wait_for_events(&bootstrap, 20).await;
    assert_exactly_once(&sim, &seen, 20);
    assert!(running.stats.retrying.not_ready().is_empty());
    running.stop().await;
    sim.shutdown().await;
}
