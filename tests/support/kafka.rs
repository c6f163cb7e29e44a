//! Kafka for tests: the librdkafka mock cluster ([`MockKafka`]), a real `tansu` broker process
//! ([`Tansu`]), and readers that check what landed in a topic ([`read_topic`],
//! [`wait_for_records`]).
//!
//! Readers use `assign()` from the beginning of every partition up to its high watermark, never
//! consumer groups (tansu's group join waits for the rebalance timeout). Neither broker filters
//! aborted transactions, and these readers don't either.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use forcebridge::kafka::{EmbeddedKafka, KafkaSettings};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// How long metadata and watermark requests may take in tests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings for `bootstrap` without passthrough properties.
pub fn settings(bootstrap: &str) -> KafkaSettings {
    KafkaSettings {
        bootstrap_servers: bootstrap.to_owned(),
        properties: BTreeMap::new(),
    }
}

/// A unique-enough name for a topic of one test.
pub fn unique_topic(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

// ---------------------------------------------------------------------------------------------
// Mock cluster
// ---------------------------------------------------------------------------------------------

/// The librdkafka mock cluster, through the crate's [`EmbeddedKafka`].
///
/// `!Send`: keep it in the test body (not in `tokio::spawn`), and drop every producer, consumer
/// and store before it.
pub struct MockKafka {
    kafka: EmbeddedKafka,
}

impl MockKafka {
    /// A cluster of `brokers` brokers.
    pub fn start(brokers: i32) -> MockKafka {
        MockKafka {
            kafka: EmbeddedKafka::start(brokers).expect("start the librdkafka mock cluster"),
        }
    }

    /// `bootstrap.servers` of the cluster.
    pub fn bootstrap(&self) -> String {
        self.kafka.bootstrap_servers()
    }

    /// Settings pointing at this cluster.
    pub fn settings(&self) -> KafkaSettings {
        settings(&self.bootstrap())
    }

    /// Creates `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        self.kafka
            .create_topic(topic, partitions)
            .unwrap_or_else(|e| panic!("create mock topic {topic:?}: {e}"));
    }

    /// The mock cluster itself, for error injection.
    pub fn cluster(&self) -> &MockCluster<'static, DefaultProducerContext> {
        self.kafka.cluster()
    }
}

// ---------------------------------------------------------------------------------------------
// tansu
// ---------------------------------------------------------------------------------------------

/// The in-memory storage engine (`memory://`) is behind tansu's `dynostore` feature.
const TANSU_INSTALL: &str = "cargo install tansu --locked --features dynostore";
const TANSU_INSTALL_HINT: &str = "the `tansu` Kafka broker is not installed: run \
     `cargo install tansu --locked --features dynostore` (or set TANSU_BIN to its path)";

/// A `tansu` broker child process with in-memory storage on a free loopback port; killed on drop.
pub struct Tansu {
    child: Child,
    bootstrap: String,
    log: PathBuf,
}

impl Tansu {
    /// Where the `tansu` binary is: `$TANSU_BIN`, then `PATH`, then `$CARGO_HOME/bin` or
    /// `~/.cargo/bin`.
    pub fn binary() -> Option<PathBuf> {
        if let Some(bin) = std::env::var_os("TANSU_BIN") {
            return Some(PathBuf::from(bin)).filter(|p| p.is_file());
        }
        let on_path = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
            .unwrap_or_default();
        let cargo_bin = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
            .map(|c| c.join("bin"));
        on_path
            .into_iter()
            .chain(cargo_bin)
            .map(|dir| dir.join("tansu"))
            .find(|p| p.is_file())
    }

    /// Starts a broker and waits (bounded) until it answers Kafka metadata requests.
    pub fn start() -> Result<Tansu, String> {
        let bin = Self::binary().ok_or_else(|| TANSU_INSTALL_HINT.to_owned())?;
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!(
            "forcebridge-tansu-{}-{port}.log",
            std::process::id()
        ));
        let log_file = File::create(&log).map_err(|e| format!("create {log:?}: {e}"))?;
        let child = Command::new(&bin)
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("spawn {bin:?}: {e}"))?;
        let mut tansu = Tansu {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
            log,
        };
        tansu.wait_ready(Duration::from_secs(30))?;
        Ok(tansu)
    }

    /// Starts a broker, or returns `None` (with a note on stderr) when `tansu` is not installed
    /// and `CI` is unset. Under `CI`, a missing binary fails the test.
    pub fn start_or_skip() -> Option<Tansu> {
        if Self::binary().is_none() && std::env::var_os("CI").is_none() {
            eprintln!("SKIPPED: {TANSU_INSTALL_HINT}");
            return None;
        }
        Some(Self::start().unwrap_or_else(|e| panic!("{e}")))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("log_level", "0")
            .create()
            .map_err(|e| format!("create a probe client: {e}"))?;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = self.log_tail();
                let hint = if log.contains("FeatureNotEnabled") {
                    format!(
                        "\nthis tansu was built without the in-memory storage engine: run `{TANSU_INSTALL}`"
                    )
                } else {
                    String::new()
                };
                return Err(format!(
                    "tansu exited with {status} before accepting connections{hint}; its log:\n{log}"
                ));
            }
            match consumer.fetch_metadata(None, Duration::from_millis(500)) {
                Ok(md) if !md.brokers().is_empty() => return Ok(()),
                Ok(_) | Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                other => {
                    return Err(format!(
                        "tansu did not answer metadata on {} within {timeout:?} ({:?}); its log:\n{}",
                        self.bootstrap,
                        other.err(),
                        self.log_tail()
                    ));
                }
            }
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The broker's process id (to stop and resume it with signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `bootstrap.servers` of the broker.
    pub fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    /// Settings pointing at this broker.
    pub fn settings(&self) -> KafkaSettings {
        settings(&self.bootstrap)
    }

    /// Creates `topic` with `partitions` partitions through the CreateTopics API (tansu does not
    /// auto-create topics on produce).
    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .expect("create an admin client");
        let results = admin
            .create_topics(
                [&NewTopic::new(
                    topic,
                    partitions,
                    TopicReplication::Fixed(-1),
                )],
                &AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT)),
            )
            .await
            .unwrap_or_else(|e| panic!("create topic {topic:?} on tansu: {e}"));
        for result in results {
            result.unwrap_or_else(|(t, e)| panic!("create topic {t:?} on tansu: {e}"));
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

// ---------------------------------------------------------------------------------------------
// Reading topics
// ---------------------------------------------------------------------------------------------

/// One record read back from a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub partition: i32,
    pub offset: i64,
}

impl ConsumedRecord {
    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// The test reader; the end of a partition is not logged as an error (`EndIsNotAnError`).
fn reader(bootstrap: &str) -> BaseConsumer<forcebridge::kafka::EndIsNotAnError> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "forcebridge-test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        // Everything in the log, like the brokers under test (neither filters aborted
        // transactions); never stuck behind an open transaction.
        .set("isolation.level", "read_uncommitted")
        .set("log_level", "3")
        .create_with_context(forcebridge::kafka::EndIsNotAnError)
        .expect("create a test reader")
}

/// (partition, low, high) for every partition of `topic`; empty if the topic does not exist.
fn watermarks(
    consumer: &BaseConsumer<forcebridge::kafka::EndIsNotAnError>,
    topic: &str,
) -> Vec<(i32, i64, i64)> {
    let Ok(md) = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT) else {
        return Vec::new();
    };
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Vec::new();
    };
    if t.error().is_some() {
        return Vec::new();
    }
    t.partitions()
        .iter()
        .filter_map(|p| {
            consumer
                .fetch_watermarks(topic, p.id(), REQUEST_TIMEOUT)
                .ok()
                .map(|(low, high)| (p.id(), low, high))
        })
        .collect()
}

/// Every record of `topic`, reading each partition from the beginning to its high watermark
/// (blocking). Ordered by partition, then offset.
pub fn read_topic(bootstrap: &str, topic: &str) -> Vec<ConsumedRecord> {
    let consumer = reader(bootstrap);
    let marks = watermarks(&consumer, topic);
    // The end of a partition is where librdkafka reports EOF (the fetch responses' high
    // watermark); ListOffsets only tells which partitions are empty (tansu's memory engine
    // answers ListOffsets(latest) with the latest batch, not the high watermark).
    let mut remaining: BTreeSet<i32> = marks
        .iter()
        .filter(|(_, low, high)| high > low)
        .map(|&(p, _, _)| p)
        .collect();
    let mut records = Vec::new();
    if remaining.is_empty() {
        return records;
    }
    let mut tpl = TopicPartitionList::new();
    for p in &remaining {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .expect("add partition");
    }
    consumer.assign(&tpl).expect("assign partitions");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !remaining.is_empty() {
        assert!(
            Instant::now() < deadline,
            "reading {topic:?}: partitions {:?} did not reach their end",
            remaining
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = match message {
            Ok(message) => message,
            Err(KafkaError::PartitionEOF(partition)) => {
                remaining.remove(&partition);
                continue;
            }
            Err(e) => panic!("reading {topic:?}: {e}"),
        };
        let (partition, offset) = (message.partition(), message.offset());
        let headers = message
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        records.push(ConsumedRecord {
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
            partition,
            offset,
        });
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    records
}

/// Polls until `topic` holds at least `n` records or `timeout` passes, then returns what it has
/// (tests assert on the content).
pub async fn wait_for_records(
    bootstrap: &str,
    topic: &str,
    n: usize,
    timeout: Duration,
) -> Vec<ConsumedRecord> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + timeout;
        loop {
            let records = read_topic(&bootstrap, &topic);
            if records.len() >= n || Instant::now() >= deadline {
                return records;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .expect("reader task")
}

/// A record to produce: key, value, headers.
pub type TestRecord = (Option<String>, Vec<u8>, Vec<(String, String)>);

/// Produces `records` (key, value, headers) to `topic` in order through forcebridge's own
/// producer and waits until all are acknowledged.
pub async fn produce(bootstrap: &str, topic: &str, records: &[TestRecord]) {
    let producer = forcebridge::kafka::Producer::new(&settings(bootstrap)).expect("test producer");
    let headers: Vec<Vec<(&str, &[u8])>> = records
        .iter()
        .map(|(_, _, h)| h.iter().map(|(k, v)| (k.as_str(), v.as_bytes())).collect())
        .collect();
    let outgoing = records
        .iter()
        .zip(&headers)
        .map(
            |((key, value, _), headers)| forcebridge::kafka::OutgoingRecord {
                topic,
                key: key.as_deref().map(str::as_bytes),
                value: Some(value.as_slice()),
                headers,
            },
        );
    producer
        .deliver(outgoing)
        .await
        .unwrap_or_else(|e| panic!("produce to {topic:?}: {e}"));
}
