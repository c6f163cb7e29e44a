//! Convergence (issue 20): an org holding many records with changes going on throughout;
//! `forcebridge run` (a child process, `snapshot: initial`) is killed with SIGKILL during the
//! snapshot and during the stream, and once stopped for longer than the org keeps events (they
//! are purged, so its checkpoint is rejected and it resyncs) while records are created, updated
//! and deleted. Afterwards a loader written here applies the topic and must hold exactly the
//! org's records, field by field: nothing missing, nothing stale, nothing deleted left.
//!
//! The seed is printed; `CONVERGENCE_SEED` replays a run's kill points.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

use forcebridge::sim::{SimConfig, SimOrg};
use support::kafka::{MockKafka, Tansu, read_topic};
use support::process::Run;
use support::replica::{assert_converged, load, load_debezium};
use support::source::{MOCK_KAFKA, checkpoints, config_text};

const CHANNEL: &str = "/data/AccountChangeEvent";
const ACCOUNTS: &str = "salesforce.Account";
/// The mock cluster keeps at most 5 MB per partition: enough partitions for every record.
const PARTITIONS: i32 = 64;
/// Hang guard (not a timing assertion).
const WAIT: Duration = Duration::from_secs(180);

fn fields(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

/// Changes the org until `stop`: each round updates two records, creates one, deletes one, and
/// now and then undeletes the one deleted last.
fn churn(
    sim: SimOrg,
    mut live: Vec<String>,
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        let mut rng = StdRng::seed_from_u64(7);
        let mut n = 0usize;
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..2 {
                let id = &live[rng.random_range(0..live.len())];
                let change = json!({
                    "Name": format!("changed {n}"),
                    "BillingAddress": {"City": format!("City {n}")},
                    "NumberOfEmployees": n,
                    "Phone": if n % 3 == 0 { Value::Null } else { json!(format!("555-{n}")) },
                });
                sim.update("Account", id, fields(change)).unwrap();
            }
            let created = sim
                .create("Account", fields(json!({"Name": format!("new {n}")})))
                .unwrap();
            live.push(created);
            let gone = live.swap_remove(rng.random_range(0..live.len()));
            sim.delete("Account", &gone).unwrap();
            if n % 10 == 0 {
                sim.undelete("Account", &gone).unwrap();
                live.push(gone);
            }
            n += 1;
            rounds.store(n, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

/// The channel's checkpoint: (rows of a snapshot under way, or `None` once streaming).
async fn snapshot_rows(bootstrap: &str) -> Option<Option<u64>> {
    let checkpoint = checkpoints(bootstrap).await.get(CHANNEL)?;
    Some(checkpoint.snapshot.map(|s| s.rows()))
}

/// Waits until `ready` holds for the channel's checkpoint, while `run` stays alive.
async fn wait_for(
    run: &mut Run,
    bootstrap: &str,
    what: &str,
    ready: impl Fn(Option<Option<u64>>) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    while !ready(snapshot_rows(bootstrap).await) {
        run.assert_alive();
        assert!(
            Instant::now() < deadline,
            "{what}: not reached; log tail:\n{}",
            run.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// On the librdkafka mock cluster: 50,000 records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replica_converges_through_kills_and_a_resync() {
    let kafka = MockKafka::start(1);
    kafka.create_topic("forcebridge.checkpoints", 1);
    kafka.create_topic("forcebridge.dlq", 1);
    kafka.create_topic(ACCOUNTS, PARTITIONS);
    converge(&kafka.bootstrap(), MOCK_KAFKA, 50_000, Format::Forcebridge).await;
}

/// The same in `format: debezium`, read back by a Debezium loader: 20,000 records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debezium_replica_converges_through_kills_and_a_resync() {
    let kafka = MockKafka::start(1);
    kafka.create_topic("forcebridge.checkpoints", 1);
    kafka.create_topic("forcebridge.dlq", 1);
    kafka.create_topic(ACCOUNTS, PARTITIONS);
    converge(&kafka.bootstrap(), MOCK_KAFKA, 20_000, Format::Debezium).await;
}

/// The record format the run writes and the loader reads.
#[derive(Clone, Copy, PartialEq)]
enum Format {
    Forcebridge,
    Debezium,
}

/// On a real broker process (tansu, topics created by forcebridge): 10,000 records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replica_converges_on_tansu() {
    let Some(tansu) = Tansu::start_or_skip() else {
        return;
    };
    converge(&tansu.bootstrap(), "", 10_000, Format::Forcebridge).await;
}

#[allow(
    clippy::too_many_lines,
    reason = "one scenario: snapshot kills, stream kills, an outage past retention, the check"
)]
async fn converge(bootstrap: &str, extra_kafka: &str, existing: usize, format: Format) {
    let bootstrap = bootstrap.to_owned();
    let seed = std::env::var("CONVERGENCE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random::<u64>());
    eprintln!("convergence seed: {seed} (CONVERGENCE_SEED={seed} replays it)");
    let mut rng = StdRng::seed_from_u64(seed);

    let sim = SimOrg::start(SimConfig {
        keepalive_interval: Duration::from_secs(1),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    // Slow answers: each results page takes a while, so kills land inside the snapshot.
    sim.set_rest_latency(Duration::from_millis(100));
    let ids = sim.generate("Account", existing).unwrap();
    // Those records existed before: their events are past the retention window.
    sim.purge_events_before(std::time::SystemTime::now());

    let dir = std::env::temp_dir().join(format!(
        "forcebridge-convergence-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("source.yaml");
    let text = config_text(
        &sim,
        &bootstrap,
        &[CHANNEL],
        &format!(
            "  snapshot:\n    rest_below: 1000\n    page_records: 1000\n    resync_margin: 2s\n{}",
            if format == Format::Debezium {
                "  format: debezium\n"
            } else {
                ""
            }
        ),
        extra_kafka,
    )
    .replace(
        "      initial_replay: earliest\n",
        "      snapshot: initial\n",
    );
    std::fs::write(&config, text).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let churning = churn(sim.clone(), ids, stop.clone(), rounds.clone());
    let mut index = 0;
    let next_run = |index: &mut usize| {
        *index += 1;
        Run::start(&config, &dir, *index)
    };

    // Two kills inside the snapshot, at random points of its progress.
    let n = existing as i64;
    for target in [
        rng.random_range(n / 10..n * 4 / 10),
        rng.random_range(n / 2..n * 9 / 10),
    ] {
        let mut run = next_run(&mut index);
        let deadline = Instant::now() + WAIT;
        // Rows in the topic (its watermarks), a cheaper read than the checkpoint's progress.
        while forcebridge::kafka::count_records(&bootstrap, ACCOUNTS, Duration::from_secs(5))
            .map_or(0, |c| c as i64)
            < target
        {
            run.assert_alive();
            assert!(
                Instant::now() < deadline,
                "no snapshot progress; log tail:\n{}",
                run.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        run.sigkill();
        let during = snapshot_rows(&bootstrap).await.is_some_and(|s| s.is_some());
        eprintln!("killed at >= {target} records in the topic (snapshot under way: {during})");
    }
    // Two kills while streaming.
    for _ in 0..2 {
        let mut run = next_run(&mut index);
        wait_for(&mut run, &bootstrap, "streaming", |c| {
            matches!(c, Some(None))
        })
        .await;
        let settle = rng.random_range(200..1500);
        tokio::time::sleep(Duration::from_millis(settle)).await;
        run.sigkill();
        eprintln!("killed while streaming, {settle} ms after the handoff");
    }
    // Stopped past the retention window: the org purges what happened meanwhile.
    let mut run = next_run(&mut index);
    wait_for(&mut run, &bootstrap, "streaming", |c| {
        matches!(c, Some(None))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    run.terminate();
    let before = rounds.load(Ordering::Relaxed);
    while rounds.load(Ordering::Relaxed) < before + 50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sim.purge_events_before(std::time::SystemTime::now());
    eprintln!(
        "stopped; events purged after {} more rounds of changes",
        rounds.load(Ordering::Relaxed) - before
    );

    // The last run resyncs, streams, then the changes stop and it catches up.
    let mut run = next_run(&mut index);
    wait_for(&mut run, &bootstrap, "resync done", |c| {
        matches!(c, Some(None))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    churning.await.unwrap();
    let last = sim.replay_ids(CHANNEL).last().cloned().expect("events");
    let deadline = Instant::now() + WAIT;
    while checkpoints(&bootstrap)
        .await
        .get(CHANNEL)
        .is_none_or(|c| c.replay_id[..] != last[..])
    {
        run.assert_alive();
        assert!(
            Instant::now() < deadline,
            "no catch-up; log tail:\n{}",
            run.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run.terminate();

    let records = read_topic(&bootstrap, ACCOUNTS);
    let markers = read_topic(&bootstrap, "forcebridge.dlq");
    assert!(
        markers
            .iter()
            .any(|m| m.value.as_deref().is_some_and(
                |v| String::from_utf8_lossy(v).contains("\"resumed_from\":\"resync\"")
            )),
        "the outage ended in a resync"
    );
    eprintln!(
        "{} records in the topic, {} rounds of changes, {} live records in the org",
        records.len(),
        rounds.load(Ordering::Relaxed),
        sim.records("Account").len()
    );
    let rows = match format {
        Format::Forcebridge => load(&records),
        Format::Debezium => load_debezium(&records),
    };
    assert_converged(&sim, &rows);
    let _ = std::fs::remove_dir_all(&dir);
}
