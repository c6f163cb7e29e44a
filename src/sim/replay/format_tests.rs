//! Unit tests of the capture format: a written capture reads back equal, and every fault names
//! its file and line.

use super::*;
use crate::sim::replay::writer::CaptureWriter;

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("forcebridge-capture-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

const SCHEMA: &str = "{\"type\":\"record\",\"name\":\"AccountChangeEvent\",\"fields\":[]}";
const CHANNEL: &str = "/data/AccountChangeEvent";

fn event(n: u8) -> CapturedEvent {
    CapturedEvent {
        replay_id: vec![0, 0, 0, 0, 0, 16, 219, 77 + n, 0, 0],
        schema_id: "4Xk2ZtZV_ybNtAUVS3CUhg".into(),
        event_id: format!("e-{n}"),
        payload: vec![0, 1, 2, 255, n],
        headers: if n == 0 {
            Vec::new()
        } else {
            vec![("traceparent".into(), vec![n, 0, 255])]
        },
        at_ms: 1_700_000_000_000 + i64::from(n),
        entity: None,
    }
}

fn manifest() -> Manifest {
    Manifest {
        format: FORMAT_VERSION,
        forcebridge_version: "0.0.0".into(),
        org_id: "00D000000000001AAA".into(),
        api_version: "62.0".into(),
        started_at_ms: 1,
        ended_at_ms: 2,
        channels: vec![CHANNEL.into()],
        entity_channels: Vec::new(),
    }
}

fn write_sample(dir: &Path) {
    let mut w = CaptureWriter::create(dir).unwrap();
    w.schema("4Xk2ZtZV_ybNtAUVS3CUhg", SCHEMA).unwrap();
    w.schema("4Xk2ZtZV_ybNtAUVS3CUhg", "ignored: once per id")
        .unwrap();
    w.topic(&TopicRecord {
        topic_name: CHANNEL.into(),
        schema_id: "4Xk2ZtZV_ybNtAUVS3CUhg".into(),
        can_subscribe: true,
        can_publish: false,
        tenant_guid: "core/prod/00D000000000001AAA".into(),
    })
    .unwrap();
    w.event(CHANNEL, &event(0)).unwrap();
    w.keepalive(CHANNEL, &event(0).replay_id, 5).unwrap();
    w.event(CHANNEL, &event(1)).unwrap();
    w.finish(&manifest()).unwrap();
}

#[test]
fn a_written_capture_reads_back_equal() {
    let dir = scratch("roundtrip");
    write_sample(&dir);
    let capture = read_capture(&dir).unwrap();
    assert_eq!(capture.manifest, manifest());
    assert_eq!(capture.schemas["4Xk2ZtZV_ybNtAUVS3CUhg"], SCHEMA);
    assert!(!capture.topics[CHANNEL].can_publish);
    assert_eq!(
        capture.streams[CHANNEL],
        vec![
            Captured::Event(event(0)),
            Captured::Keepalive {
                latest_replay_id: event(0).replay_id,
                at_ms: 5
            },
            Captured::Event(event(1)),
        ]
    );
    let line = fs::read_to_string(dir.join("events/data.AccountChangeEvent.jsonl")).unwrap();
    assert!(
        line.starts_with(r#"{"kind":"event","channel":"/data/AccountChangeEvent","replay_id":"000000000010db4d0000""#),
        "{line}"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_output_directory_must_be_empty() {
    let dir = scratch("nonempty");
    write_sample(&dir);
    let err = CaptureWriter::create(&dir).err().unwrap().to_string();
    assert!(err.contains("not empty"), "{err}");
    fs::remove_dir_all(&dir).unwrap();
}

/// Replaces line `n` (1-based) of `file` with `with`, reads the capture, returns the error.
fn corrupt(name: &str, file: &str, n: usize, with: &str) -> String {
    let dir = scratch(name);
    write_sample(&dir);
    let path = dir.join(file);
    let text = fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines[n - 1] = with.to_string();
    fs::write(&path, lines.join("\n")).unwrap();
    let err = read_capture(&dir).unwrap_err().to_string();
    fs::remove_dir_all(&dir).unwrap();
    err
}

const EVENTS: &str = "events/data.AccountChangeEvent.jsonl";

#[test]
fn bad_stream_lines_name_the_file_and_line() {
    let cases = [
        (
            r#"{"kind":"tick","channel":"/data/AccountChangeEvent","at_ms":1}"#,
            "unknown variant `tick`",
        ),
        (
            r#"{"kind":"keepalive","channel":"/data/AccountChangeEvent","latest_replay_id":"zz","at_ms":1}"#,
            "latest_replay_id \"zz\" is not hex",
        ),
        (
            r#"{"kind":"keepalive","channel":"/data/LeadChangeEvent","latest_replay_id":"00","at_ms":1}"#,
            "a line of channel /data/LeadChangeEvent in the file of /data/AccountChangeEvent",
        ),
        (
            r#"{"kind":"event","channel":"/data/AccountChangeEvent","replay_id":"00","schema_id":"nope","event_id":"x","payload":"","at_ms":1}"#,
            "schema nope has no schemas/nope.json",
        ),
        (
            r#"{"kind":"event","channel":"/data/AccountChangeEvent","replay_id":"00","schema_id":"4Xk2ZtZV_ybNtAUVS3CUhg","event_id":"x","payload":"!!","at_ms":1}"#,
            "payload is not base64",
        ),
        (
            r#"{"kind":"event","channel":"/data/AccountChangeEvent","replay_id":"00","schema_id":"4Xk2ZtZV_ybNtAUVS3CUhg","event_id":"x","payload":"","headers":[{"key":"k","value":"%"}],"at_ms":1}"#,
            "header value is not base64",
        ),
    ];
    for (i, (line, reason)) in cases.into_iter().enumerate() {
        let err = corrupt(&format!("stream{i}"), EVENTS, 2, line);
        assert!(err.contains(&format!("{EVENTS}:2: ")), "{err}");
        assert!(err.contains(reason), "{err}");
    }
}

#[test]
fn bad_topics_and_manifests_name_the_file() {
    let err = corrupt(
        "topic",
        "topics.jsonl",
        1,
        r#"{"topic_name":"/data/LeadChangeEvent","schema_id":"4Xk2ZtZV_ybNtAUVS3CUhg","can_subscribe":true,"can_publish":false,"tenant_guid":"g"}"#,
    );
    assert!(
        err.contains("topics.jsonl:1: topic /data/LeadChangeEvent is not in the manifest"),
        "{err}"
    );
    let err = corrupt("manifest", "manifest.json", 2, r#"  "format": 2,"#);
    assert!(err.contains("manifest.json:0: format 2 is not 1"), "{err}");
    let err = corrupt("manifest2", "manifest.json", 2, r#"  "fromat": 1,"#);
    assert!(
        err.contains("manifest.json:2: unknown field `fromat`"),
        "{err}"
    );
}

#[test]
fn a_schema_that_is_not_json_is_named() {
    let dir = scratch("schema");
    write_sample(&dir);
    fs::write(
        dir.join("schemas/4Xk2ZtZV_ybNtAUVS3CUhg.json"),
        "{\n\"type\":",
    )
    .unwrap();
    let err = read_capture(&dir).unwrap_err().to_string();
    assert!(
        err.contains("schemas/4Xk2ZtZV_ybNtAUVS3CUhg.json:2: not JSON"),
        "{err}"
    );
    fs::remove_dir_all(&dir).unwrap();
}

const ALL: &str = "/data/ChangeEvents";
const CONTACT_SCHEMA: &str = "{\"type\":\"record\",\"name\":\"ContactChangeEvent\",\"fields\":[]}";

/// A capture of `/data/ChangeEvents`: the channel's topic without a schema id, an event with a
/// blank schema id and its entity, and the entity's own channel's topic and schema.
/// `entity_topic`: the schema id `GetTopic` gave for the entity's channel (`None`: not recorded).
fn write_change_events(dir: &Path, event: &CapturedEvent, entity_topic: Option<&str>) {
    let mut w = CaptureWriter::create(dir).unwrap();
    let topic = |name: &str, schema_id: &str| TopicRecord {
        topic_name: name.into(),
        schema_id: schema_id.into(),
        can_subscribe: true,
        can_publish: false,
        tenant_guid: "00D000000000001AAA".into(),
    };
    w.topic(&topic(ALL, "")).unwrap();
    w.event(ALL, event).unwrap();
    if let Some(schema_id) = entity_topic {
        w.schema("contactSchema", CONTACT_SCHEMA).unwrap();
        w.topic(&topic("/data/ContactChangeEvent", schema_id))
            .unwrap();
    }
    let mut m = manifest();
    m.channels = vec![ALL.into()];
    m.entity_channels = vec!["/data/ContactChangeEvent".into()];
    w.finish(&m).unwrap();
}

fn blank_contact_event() -> CapturedEvent {
    CapturedEvent {
        schema_id: String::new(),
        entity: Some("Contact".into()),
        ..event(2)
    }
}

#[test]
fn change_events_with_blank_schema_ids_read_back_equal() {
    let dir = scratch("change-events");
    write_change_events(&dir, &blank_contact_event(), Some("contactSchema"));
    let capture = read_capture(&dir).unwrap();
    assert_eq!(
        capture.manifest.entity_channels,
        ["/data/ContactChangeEvent"]
    );
    assert_eq!(capture.topics[ALL].schema_id, "");
    assert_eq!(
        capture.topics["/data/ContactChangeEvent"].schema_id,
        "contactSchema"
    );
    assert_eq!(capture.schemas["contactSchema"], CONTACT_SCHEMA);
    assert_eq!(
        capture.streams[ALL],
        vec![Captured::Event(blank_contact_event())]
    );
    let line = fs::read_to_string(dir.join("events/data.ChangeEvents.jsonl")).unwrap();
    assert!(line.contains(r#""schema_id":"","#), "{line}");
    assert!(line.ends_with("\"entity\":\"Contact\"}\n"), "{line}");
    fs::remove_dir_all(&dir).unwrap();
}

/// A capture written before entities and blank schema ids: no `entity_channels` in the
/// manifest, no `entity` on the events.
#[test]
fn older_captures_read_as_before() {
    let dir = scratch("older");
    write_sample(&dir);
    let manifest = fs::read_to_string(dir.join("manifest.json")).unwrap();
    assert!(!manifest.contains("entity_channels"), "{manifest}");
    let events = fs::read_to_string(dir.join(EVENTS)).unwrap();
    assert!(!events.contains("entity"), "{events}");
    assert_eq!(
        read_capture(&dir).unwrap().manifest.entity_channels,
        Vec::<String>::new()
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn change_events_without_what_replay_needs_are_named() {
    let cases = [
        (
            CapturedEvent {
                entity: None,
                ..blank_contact_event()
            },
            Some("contactSchema"),
            "events/data.ChangeEvents.jsonl:1: an event of /data/ChangeEvents without its entity",
        ),
        (
            blank_contact_event(),
            Some(""),
            "events/data.ChangeEvents.jsonl:1: the schema id is blank and entity Contact's channel /data/ContactChangeEvent has no schema id",
        ),
    ];
    for (i, (event, entity_topic, reason)) in cases.into_iter().enumerate() {
        let dir = scratch(&format!("change-events-{i}"));
        write_change_events(&dir, &event, entity_topic);
        let err = read_capture(&dir).unwrap_err().to_string();
        assert!(err.ends_with(reason), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
    let err = corrupt(
        "unlisted",
        "topics.jsonl",
        1,
        r#"{"topic_name":"/data/ContactChangeEvent","schema_id":"","can_subscribe":true,"can_publish":false,"tenant_guid":"g"}"#,
    );
    assert!(
        err.contains("topics.jsonl:1: topic /data/ContactChangeEvent is not in the manifest"),
        "{err}"
    );
}

/// An entity whose channel `GetTopic` could not find: its blank-schema events are kept (a
/// replayed org answers that channel as unknown, and the source dead-letters them, as against
/// the real org).
#[test]
fn a_blank_schema_event_of_an_entity_without_a_channel_reads() {
    let dir = scratch("change-events-unknown");
    write_change_events(&dir, &blank_contact_event(), None);
    let capture = read_capture(&dir).unwrap();
    assert!(!capture.topics.contains_key("/data/ContactChangeEvent"));
    assert_eq!(
        capture.streams[ALL],
        vec![Captured::Event(blank_contact_event())]
    );
    fs::remove_dir_all(&dir).unwrap();
}
