//! Crash test: `forcebridge run` as a child process over a 100,000-event stream from the
//! simulated org, killed with SIGKILL at random points (some during startup, the rest by progress)
//! and restarted each time; afterwards every event is in Kafka, none missing, and every repeat is
//! an identical copy (same replay id, key, value and headers). Repeats are counted and reported.
//! The same again, smaller, in exactly-once mode.
//!
//! The seed is printed; set `CRASH_SEED` to replay a run's kill points.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::{Map, Value, json};

use forcebridge::sim::{SimConfig, SimOrg};
use forcebridge::source::checkpoint::CheckpointStore;
use support::kafka::{ConsumedRecord, MockKafka, read_topic};
use support::process::Run;
use support::source::{Delivered, MOCK_KAFKA, config_text, delivered, org_replay_ids, replay_id};

const CHANNEL: &str = "/data/AccountChangeEvent";
const ACCOUNTS: &str = "salesforce.Account";
/// The mock cluster keeps at most 5 MB per partition (older records are dropped): 64 partitions
/// hold the run with room to spare, and the test checks that nothing was dropped.
const PARTITIONS: i32 = 64;
const MERGED_WIDTH: usize = 3;

/// What the org emits and how the runs are killed.
struct Workload {
    /// Creates, single-record updates, and merged updates of [`MERGED_WIDTH`] records each.
    creates: usize,
    single_updates: usize,
    merged_updates: usize,
    /// Kills right after a start (landing in login, GetTopic, checkpoint load, first fetches).
    startup_kills: usize,
    /// Kills once Kafka holds about k × `progress_step` records.
    progress_kills: usize,
    progress_step: i64,
    /// YAML lines for the `source` section.
    extra_source: &'static str,
}

impl Workload {
    fn events(&self) -> usize {
        self.creates + self.single_updates + self.merged_updates
    }

    /// Kafka records the events fan out to (one per record Id).
    fn records(&self) -> usize {
        self.creates + self.single_updates + self.merged_updates * MERGED_WIDTH
    }
}
/// How long one run may take to reach its kill point, or the last run to finish.
const WAIT: Duration = Duration::from_secs(120);

fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// Rounds of changes: each creates a tenth of the records, then updates some of them.
const ROUNDS: usize = 10;

/// Makes the org's events in [`ROUNDS`] rounds (it runs while the pipeline is killed and
/// restarted, so changes keep arriving across the crashes).
fn make_events(sim: &SimOrg, work: &Workload) {
    for round in 0..ROUNDS {
        let ids = sim.generate("Account", work.creates / ROUNDS).unwrap();
        let (single, merged) = ids.split_at(work.single_updates / ROUNDS);
        // Single-record updates, 200 per transaction, each with its own value: one event each.
        for (t, chunk) in single.chunks(200).enumerate() {
            let mut tx = sim.transaction();
            for (i, id) in chunk.iter().enumerate() {
                let name = format!("Renamed {round}-{t}-{i}");
                tx.update("Account", id, fields(json!({ "Name": name })))
                    .unwrap();
            }
            tx.commit().unwrap();
        }
        // Merged updates: the same change to three records in one transaction is one event.
        let merged = &merged[..work.merged_updates / ROUNDS * MERGED_WIDTH];
        for (t, chunk) in merged.chunks(MERGED_WIDTH).enumerate() {
            let mut tx = sim.transaction();
            for id in chunk {
                let description = format!("Merged batch {round}-{t}");
                tx.update("Account", id, fields(json!({ "Description": description })))
                    .unwrap();
            }
            tx.commit().unwrap();
        }
    }
}

/// High watermarks of the Account topic's partitions (records written, repeats included).
struct Progress {
    consumer: BaseConsumer,
}

impl Progress {
    fn new(bootstrap: &str) -> Progress {
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("log_level", "3")
            .create()
            .expect("create a watermark reader");
        Progress { consumer }
    }

    fn per_partition(&self) -> Vec<i64> {
        (0..PARTITIONS)
            .map(|p| {
                self.consumer
                    .fetch_watermarks(ACCOUNTS, p, Duration::from_secs(10))
                    .map(|(_, high)| high)
                    .unwrap_or(0)
            })
            .collect()
    }

    fn total(&self) -> i64 {
        self.per_partition().iter().sum()
    }
}

/// The checkpoint of the channel, as a restart would load it.
async fn checkpoint(bootstrap: &str) -> Option<String> {
    let store = CheckpointStore::open(
        &support::kafka::settings(bootstrap),
        "forcebridge.checkpoints",
        "test",
    )
    .await
    .expect("open the checkpoint store");
    store.get(CHANNEL).map(|c| hex::encode(c.replay_id))
}

/// What was done to one run.
#[derive(Debug)]
struct Kill {
    /// `startup +Nms` or `progress ≥ N records`.
    trigger: String,
    /// How long the process lived.
    alive: Duration,
    /// Records in the topic when it died, per partition.
    watermarks: Vec<i64>,
    /// The checkpoint the next run resumes after.
    resumes_after: Option<String>,
}

/// The loss check: replay ids the org emitted that are not in Kafka.
fn missing(emitted: &BTreeSet<String>, seen: &Delivered) -> Vec<String> {
    emitted.difference(&seen.replay_ids).cloned().collect()
}

/// Repeats per run: records a run wrote (by offset range) whose (replay id, key) an earlier run
/// had already written.
fn repeats_per_run(records: &[ConsumedRecord], kills: &[Kill]) -> Vec<usize> {
    let mut by_partition: BTreeMap<i32, Vec<&ConsumedRecord>> = BTreeMap::new();
    for r in records {
        by_partition.entry(r.partition).or_default().push(r);
    }
    let run_of = |r: &ConsumedRecord| {
        kills
            .iter()
            .position(|k| r.offset < k.watermarks[r.partition as usize])
            .unwrap_or(kills.len())
    };
    let mut first_run: BTreeMap<(String, Vec<u8>), usize> = BTreeMap::new();
    let mut repeats = vec![0; kills.len() + 1];
    let mut ordered: Vec<&ConsumedRecord> = records.iter().collect();
    ordered.sort_by_key(|r| (run_of(r), r.partition, r.offset));
    for r in ordered {
        let run = run_of(r);
        let key = (replay_id(r), r.key.clone().unwrap_or_default());
        match first_run.get(&key) {
            Some(&earlier) if earlier < run => repeats[run] += 1,
            Some(_) => {}
            None => {
                first_run.insert(key, run);
            }
        }
    }
    repeats
}

/// At least once (the default): 100,000 events, 13 kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_nothing() {
    crash_scenario(Workload {
        creates: 70_000,
        single_updates: 29_000,
        merged_updates: 1_000,
        startup_kills: 3,
        progress_kills: 10,
        progress_step: 9_000,
        extra_source: "",
    })
    .await;
}

/// Exactly-once mode: killed mid-transaction, a run's uncommitted records stay in the log of a
/// broker that does not filter aborted transactions (the mock), but its checkpoint never passes
/// a record that is not there: nothing is lost. 20,000 events, 6 kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_exactly_once_mode_loses_nothing() {
    crash_scenario(Workload {
        creates: 14_000,
        single_updates: 5_800,
        merged_updates: 200,
        startup_kills: 2,
        progress_kills: 4,
        progress_step: 4_000,
        extra_source: "  delivery: exactly_once\n",
    })
    .await;
}

#[allow(
    clippy::too_many_lines,
    reason = "one scenario: kills at startup and in progress, then every check of what Kafka holds"
)]
async fn crash_scenario(work: Workload) {
    let (events, records_expected) = (work.events(), work.records());
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random::<u64>());
    eprintln!("crash test seed: {seed} (CRASH_SEED={seed} replays these kill points)");
    let mut rng = StdRng::seed_from_u64(seed);
    let test_started = Instant::now();

    let kafka = MockKafka::start(1);
    let bootstrap = kafka.bootstrap();
    kafka.create_topic("forcebridge.checkpoints", 1);
    kafka.create_topic("forcebridge.dlq", 1);
    kafka.create_topic(ACCOUNTS, PARTITIONS);
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();

    // The org makes its changes while the pipeline runs, crashes and restarts.
    let work = std::sync::Arc::new(work);
    let generator = {
        let sim = sim.clone();
        let work = work.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            make_events(&sim, &work);
            started.elapsed()
        })
    };

    let dir = std::env::temp_dir().join(format!(
        "forcebridge-crash-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("source.yaml");
    std::fs::write(
        &config,
        config_text(&sim, &bootstrap, &[CHANNEL], work.extra_source, MOCK_KAFKA),
    )
    .unwrap();
    let progress = Progress::new(&bootstrap);

    // The kill schedule: startup kills at random places among the progress kills.
    let runs = work.startup_kills + work.progress_kills;
    let mut startup_runs = BTreeSet::new();
    while startup_runs.len() < work.startup_kills {
        startup_runs.insert(rng.random_range(0..runs));
    }
    let mut kills: Vec<Kill> = Vec::new();
    let mut milestone = 0;
    for index in 0..runs {
        let mut run = Run::start(&config, &dir, index);
        let trigger = if startup_runs.contains(&index) {
            let delay = rng.random_range(0..1500);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            format!("startup +{delay}ms")
        } else {
            milestone += 1;
            let target = milestone * work.progress_step + rng.random_range(0..1000);
            let deadline = Instant::now() + WAIT;
            while progress.total() < target {
                run.assert_alive();
                assert!(
                    Instant::now() < deadline,
                    "run {index} did not reach {target} records; log tail:\n{}",
                    run.log_tail()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // A little further, so the kill does not always follow a watermark poll.
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..50))).await;
            format!("progress >= {target} records")
        };
        let alive = run.sigkill();
        // Let requests the broker already received land before reading its watermarks.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let watermarks = progress.per_partition();
        let resumes_after = checkpoint(&bootstrap).await;
        kills.push(Kill {
            trigger,
            alive,
            watermarks,
            resumes_after,
        });
    }

    let generated_in = generator.await.expect("the org made its changes");
    let emitted = org_replay_ids(&sim, CHANNEL);
    assert_eq!(emitted.len(), events, "events the org emitted");
    let last_event = emitted.last().cloned().expect("events");
    eprintln!("org: {events} events ({records_expected} records) made in {generated_in:.1?}");

    // The last run goes to the end: its checkpoint reaches the last event, then it stops cleanly.
    let last = Run::start(&config, &dir, runs);
    let deadline = Instant::now() + WAIT;
    while checkpoint(&bootstrap).await.as_deref() != Some(last_event.as_str()) {
        assert!(
            Instant::now() < deadline,
            "the last run did not checkpoint the last event {last_event}; log tail:\n{}",
            last.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    last.terminate();
    let final_checkpoint = checkpoint(&bootstrap).await;
    assert_eq!(
        final_checkpoint.as_deref(),
        Some(last_event.as_str()),
        "the final checkpoint is the last event's replay id"
    );

    let records = {
        let bootstrap = bootstrap.clone();
        tokio::task::spawn_blocking(move || read_topic(&bootstrap, ACCOUNTS))
            .await
            .unwrap()
    };
    let pruned: Vec<(i32, i64)> = (0..PARTITIONS)
        .filter_map(|p| {
            let (low, _) = progress
                .consumer
                .fetch_watermarks(ACCOUNTS, p, Duration::from_secs(10))
                .expect("watermarks");
            (low > 0).then_some((p, low))
        })
        .collect();
    assert!(
        pruned.is_empty(),
        "the mock cluster dropped old records (partition, low watermark): {pruned:?}"
    );
    let seen = delivered(&records);
    let per_run = repeats_per_run(&records, &kills);

    for (i, kill) in kills.iter().enumerate() {
        eprintln!(
            "kill {:>2}: {:<26} alive {:>7.2?}, re-wrote {:>4} records, {:>6} records in Kafka, next run resumes after {}",
            i + 1,
            kill.trigger,
            kill.alive,
            per_run[i],
            kill.watermarks.iter().sum::<i64>(),
            kill.resumes_after.as_deref().unwrap_or("(no checkpoint)"),
        );
    }
    eprintln!(
        "crash test [{}]: {events} events, {records_expected} distinct records, {} kills, {} records in Kafka, {} repeats ({:.1}%), last run repeated {}, {:.1?} in all",
        match work.extra_source.trim() {
            "" => "delivery: at_least_once",
            mode => mode,
        },
        kills.len(),
        seen.records,
        seen.repeats,
        100.0 * seen.repeats as f64 / records_expected as f64,
        per_run[kills.len()],
        test_started.elapsed()
    );

    let lost = missing(&emitted, &seen);
    assert!(
        lost.is_empty(),
        "{} events missing from Kafka, first {:?}",
        lost.len(),
        lost.first()
    );
    assert_eq!(seen.replay_ids, emitted, "no stray replay ids");
    assert_eq!(
        seen.distinct_records, records_expected,
        "every record of every event"
    );
    assert_eq!(seen.records, records_expected + seen.repeats);
    assert!(
        seen.inconsistent.is_empty(),
        "repeats that differ from the first copy: {:?}",
        &seen.inconsistent[..seen.inconsistent.len().min(5)]
    );
    assert_eq!(per_run.iter().sum::<usize>(), seen.repeats);
    assert_eq!(kills.len(), runs, "every planned kill happened");

    // The checker is not vacuous: one record taken out is reported missing, and a repeat that
    // differs from its first copy is reported inconsistent.
    let victim = rng.random_range(0..records.len());
    let victim_id = replay_id(&records[victim]);
    let without: Vec<ConsumedRecord> = records
        .iter()
        .filter(|r| replay_id(r) != victim_id)
        .cloned()
        .collect();
    assert_eq!(missing(&emitted, &delivered(&without)), vec![victim_id]);
    let mut tampered = records.clone();
    let mut copy = records[victim].clone();
    copy.value = Some(b"{}".to_vec());
    tampered.push(copy);
    assert_eq!(delivered(&tampered).inconsistent.len(), 1);

    let _ = std::fs::remove_dir_all(&dir);
    drop(progress);
    sim.shutdown().await;
}
