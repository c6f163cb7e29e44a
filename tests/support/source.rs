//! The source side for tests: a config for a simulated org and a Kafka cluster, and the replay
//! ids of what landed in a topic.

use std::collections::{BTreeMap, BTreeSet};

use forcebridge::sim::SimOrg;

use super::kafka::ConsumedRecord;

/// A `forcebridge` YAML config: password login to `sim`, the source reading `channels` from
/// `earliest` into `bootstrap`; `extra_source` and `extra_kafka` are appended (two-space
/// indented lines) to the `source` and `kafka` sections.
pub fn config_text(
    sim: &SimOrg,
    bootstrap: &str,
    channels: &[&str],
    extra_source: &str,
    extra_kafka: &str,
) -> String {
    let c = sim.config();
    let channels: String = channels
        .iter()
        .map(|ch| format!("    - name: {ch}\n      initial_replay: earliest\n"))
        .collect();
    format!(
        "name: test\nsalesforce:\n  login_url: {login}\n  pubsub_endpoint: {pubsub}\n  allow_plaintext: true\n  auth:\n    type: password\n    client_id: {id}\n    client_secret: {secret}\n    username: {user}\n    password: {password}\n    security_token: {token}\nsource:\n  channels:\n{channels}{extra_source}kafka:\n  bootstrap_servers: {bootstrap}\n  create_topics: false\n{extra_kafka}",
        login = sim.instance_url(),
        pubsub = sim.pubsub_endpoint(),
        id = c.client_id,
        secret = c.client_secret,
        user = c.username,
        password = c.password,
        token = c.security_token,
    )
}

/// The `forcebridge.replay_id` header of a record (empty when missing).
pub fn replay_id(record: &ConsumedRecord) -> String {
    String::from_utf8_lossy(record.header("forcebridge.replay_id").unwrap_or_default()).into_owned()
}

/// What a topic holds, seen through replay ids.
#[derive(Debug, Default)]
pub struct Delivered {
    /// Records read (repeats included).
    pub records: usize,
    /// Distinct replay ids (hex).
    pub replay_ids: BTreeSet<String>,
    /// Distinct (replay id, key) pairs: one per record an event fans out to.
    pub distinct_records: usize,
    /// Records beyond the first copy of their (replay id, key).
    pub repeats: usize,
    /// (replay id, key) pairs whose copies differ in value or headers.
    pub inconsistent: Vec<(String, String)>,
}

/// Groups `records` by (replay id, key) and checks that every repeat is identical (value and
/// headers) to the first copy.
pub fn delivered(records: &[ConsumedRecord]) -> Delivered {
    let mut first: BTreeMap<(String, Vec<u8>), &ConsumedRecord> = BTreeMap::new();
    let mut out = Delivered {
        records: records.len(),
        ..Delivered::default()
    };
    for r in records {
        let id = replay_id(r);
        out.replay_ids.insert(id.clone());
        let key = (id, r.key.clone().unwrap_or_default());
        match first.get(&key) {
            None => {
                first.insert(key, r);
            }
            Some(original) => {
                out.repeats += 1;
                if original.value != r.value || original.headers != r.headers {
                    out.inconsistent
                        .push((key.0.clone(), String::from_utf8_lossy(&key.1).into_owned()));
                }
            }
        }
    }
    out.distinct_records = first.len();
    out
}

/// The org's replay ids of `channel` as the hex the records carry.
pub fn org_replay_ids(sim: &SimOrg, channel: &str) -> BTreeSet<String> {
    sim.replay_ids(channel).iter().map(hex::encode).collect()
}
