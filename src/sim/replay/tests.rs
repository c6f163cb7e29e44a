//! Unit tests of the replay loader and of the bus serving captured replay ids.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::format::{Capture, Captured, CapturedEvent, FORMAT_VERSION, Manifest};
use super::*;
use crate::sim::bus::{Channel, ReplayIdError};

const ACCOUNTS: &str = "/data/AccountChangeEvent";
const ORDERS: &str = "/event/Order_Event__e";
const ALL: &str = "/data/ChangeEvents";
const SALES: &str = "/data/Sales__chn";

fn event(id: &[u8], n: u8) -> Captured {
    Captured::Event(CapturedEvent {
        replay_id: id.to_vec(),
        schema_id: format!("schema{n}"),
        event_id: format!("event-{n}"),
        payload: vec![n; 3],
        headers: vec![("h".into(), vec![n])],
        at_ms: 0,
        entity: None,
    })
}

/// A change event of `entity` as a channel of several entities records it, with `schema_id`
/// (blank as `/data/ChangeEvents` sends it).
fn change(id: &[u8], n: u8, entity: &str, schema_id: &str) -> Captured {
    let Captured::Event(mut e) = event(id, n) else {
        unreachable!()
    };
    e.entity = Some(entity.to_owned());
    schema_id.clone_into(&mut e.schema_id);
    Captured::Event(e)
}

/// Real-shaped replay ids (10 bytes, pozil/pub-sub-api-node-client #36): 1104717 and on.
fn rid(counter: u64) -> Vec<u8> {
    crate::sim::bus::replay_id(counter)
}

fn capture(streams: Vec<(&str, Vec<Captured>)>) -> Capture {
    Capture {
        manifest: Manifest {
            format: FORMAT_VERSION,
            forcebridge_version: "0".into(),
            org_id: "00D000000000001AAA".into(),
            api_version: "62.0".into(),
            started_at_ms: 0,
            ended_at_ms: 0,
            channels: streams.iter().map(|(c, _)| c.to_string()).collect(),
            entity_channels: Vec::new(),
        },
        schemas: BTreeMap::new(),
        topics: BTreeMap::new(),
        streams: streams
            .into_iter()
            .map(|(c, s)| (c.to_string(), s))
            .collect(),
    }
}

#[test]
fn channels_are_merged_in_replay_id_order_and_served_with_their_ids() {
    let capture = capture(vec![
        (
            ACCOUNTS,
            vec![event(&rid(1_104_717), 1), event(&rid(1_104_900), 3)],
        ),
        (ORDERS, vec![event(&rid(1_104_800), 2)]),
    ]);
    let mut bus = Bus::default();
    assert_eq!(load_into(&mut bus, &capture, SystemTime::now()).unwrap(), 3);
    let accounts = Channel::Entity("Account".into());
    let orders = Channel::PlatformEvent("Order_Event__e".into());
    assert_eq!(
        bus.replay_ids(&accounts),
        vec![rid(1_104_717), rid(1_104_900)]
    );
    assert_eq!(bus.replay_ids(&orders), vec![rid(1_104_800)]);
    let (got, cursor) = bus.fetch(&accounts, bus.earliest_cursor(), 10);
    let ids: Vec<_> = got.iter().map(|e| e.event.id.clone()).collect();
    assert_eq!(ids, ["event-1", "event-3"]);
    assert_eq!(got[1].event.payload.as_ref(), [3, 3, 3]);
    assert_eq!(got[1].event.schema_id, "schema3");
    assert_eq!(got[1].event.headers[0].key, "h");
    assert_eq!(got[1].event.headers[0].value.as_slice(), [3]);
    // The keepalive position at the tip is the newest captured id.
    assert_eq!(bus.id_of(cursor), rid(1_104_900));
    // CUSTOM: strictly after a captured id.
    let after = bus.check_replay_id(&rid(1_104_717)).unwrap();
    let (got, _) = bus.fetch(&accounts, after, 10);
    assert_eq!(got.len(), 1);
    assert_eq!(bus.id_of(got[0].seq), rid(1_104_900));
    // An id the real org did not send here is refused as malformed; the position before the
    // first event is the first id minus one.
    assert_eq!(
        bus.check_replay_id(&rid(1_104_718)),
        Err(ReplayIdError::Malformed)
    );
    let before_first = [0, 0, 0, 0, 0, 0x10, 0xdb, 0x4c, 0xff, 0xff];
    assert_eq!(bus.id_of(0), before_first);
    assert_eq!(bus.check_replay_id(&before_first), Ok(0));
}

#[test]
fn events_appended_after_the_capture_continue_its_ids() {
    let capture = capture(vec![(ACCOUNTS, vec![event(&[0, 0xff], 1)])]);
    let mut bus = Bus::default();
    load_into(&mut bus, &capture, SystemTime::now()).unwrap();
    let seq = bus.append(
        Source::Entity("Account".into()),
        ProducerEvent::default(),
        SystemTime::now(),
    );
    assert_eq!(bus.id_of(seq), [1, 0]);
    assert_eq!(bus.check_replay_id(&[1, 0]), Ok(seq));
    assert_eq!(bus.check_replay_id(&[1, 1]), Err(ReplayIdError::OutOfRange));
    assert_eq!(
        bus.check_replay_id(&[0, 0, 1]),
        Err(ReplayIdError::Malformed)
    );
}

#[test]
fn unusable_captures_are_refused_with_the_reason() {
    let err = |c: Capture| {
        load_into(&mut Bus::default(), &c, SystemTime::now())
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(capture(vec![("/topic/AccountUpdates", vec![])])),
        "channel /topic/AccountUpdates: replay serves /data/<Entity>ChangeEvent, /data/ChangeEvents, /data/<Name>__chn and /event/<Name>__e channels only"
    );
    assert_eq!(
        err(capture(vec![(ALL, vec![event(&rid(5), 1)])])),
        "channel /data/ChangeEvents: an event without its entity"
    );
    assert_eq!(
        err(capture(vec![
            (ACCOUNTS, vec![event(&rid(5), 1)]),
            (ALL, vec![change(&rid(5), 2, "Account", "")]),
        ])),
        "replay id 00000000000000050000 is captured on both /data/AccountChangeEvent and /data/ChangeEvents"
    );
    assert_eq!(
        err(capture(vec![
            (ACCOUNTS, vec![event(&rid(5), 1)]),
            (ORDERS, vec![event(&rid(5), 2)]),
        ])),
        "replay id 00000000000000050000 is captured on both /data/AccountChangeEvent and /event/Order_Event__e"
    );
    assert_eq!(
        err(capture(vec![(
            ACCOUNTS,
            vec![event(&[1], 1), event(&[0, 2], 2)]
        )])),
        "captured replay ids: replay id 01 is not as long as the first one (1 to 16 bytes)"
    );
    assert_eq!(
        err(capture(vec![(ACCOUNTS, vec![event(&[0], 1)])])),
        "captured replay ids: replay id 00 does not follow the one before it (or is zero)"
    );
    let mut bus = Bus::default();
    bus.append(
        Source::Entity("Account".into()),
        ProducerEvent::default(),
        SystemTime::now(),
    );
    let c = capture(vec![(ACCOUNTS, vec![event(&rid(5), 1)])]);
    assert_eq!(
        load_into(&mut bus, &c, SystemTime::now())
            .unwrap_err()
            .to_string(),
        "the simulated org already has 1 events: a replay starts from an empty bus"
    );
}

/// The topics `GetTopic` answered a capture of `/data/ChangeEvents`: none for the channel, and
/// the entities' own channels with their schema ids.
fn entity_topics(capture: &mut Capture) {
    for (topic, schema_id) in [
        (ALL, ""),
        ("/data/AccountChangeEvent", "accountSchema"),
        ("/data/ContactChangeEvent", "contactSchema"),
    ] {
        capture.topics.insert(
            topic.to_owned(),
            TopicRecord {
                topic_name: topic.to_owned(),
                schema_id: schema_id.to_owned(),
                can_subscribe: true,
                can_publish: false,
                tenant_guid: "00D000000000001AAA".to_owned(),
            },
        );
    }
}

fn replayed(topic: &str, live: Channel) -> Channel {
    Channel::Replayed {
        topic: topic.to_owned(),
        live: Box::new(live),
    }
}

/// `/data/ChangeEvents` as captured (blank schema ids, forcedotcom/pub-sub-api#63): the replayed
/// channel serves every captured event with its captured blank schema id; an entity's own
/// channel, answered from the captured `GetTopic`, selects that entity's events with the
/// entity's schema id.
#[test]
fn change_events_are_replayed_with_their_blank_schema_ids() {
    let mut c = capture(vec![(
        ALL,
        vec![
            change(&rid(10), 1, "Account", ""),
            change(&rid(12), 2, "Contact", ""),
            change(&rid(15), 3, "Account", ""),
        ],
    )]);
    entity_topics(&mut c);
    let mut bus = Bus::default();
    assert_eq!(load_into(&mut bus, &c, SystemTime::now()).unwrap(), 3);
    let all = replayed(ALL, Channel::AllChanges);
    let (got, _) = bus.fetch(&all, bus.earliest_cursor(), 10);
    let seen: Vec<_> = got
        .iter()
        .map(|e| {
            (
                bus.id_of(e.seq),
                e.event.id.as_str(),
                e.source.captured_schema_id(ALL),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (rid(10), "event-1", Some("")),
            (rid(12), "event-2", Some("")),
            (rid(15), "event-3", Some("")),
        ]
    );
    assert_eq!(got[1].event.payload.as_ref(), [2, 2, 2]);
    let contacts = Channel::Entity("Contact".into());
    let (got, _) = bus.fetch(&contacts, bus.earliest_cursor(), 10);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event.id, "event-2");
    assert_eq!(got[0].event.schema_id, "contactSchema");
    assert_eq!(
        bus.replay_ids(&Channel::Entity("Account".into())),
        [rid(10), rid(15)]
    );

    let config = SimConfig {
        replay: Some(std::sync::Arc::new(c)),
        ..SimConfig::default()
    };
    assert_eq!(replayed_channel(&config, ALL), Some(all));
    assert_eq!(
        replayed_channel(&config, "/data/ContactChangeEvent"),
        Some(contacts)
    );
    assert_eq!(replayed_channel(&config, "/data/LeadChangeEvent"), None);
}

/// One event captured on two channels under one replay id is one event of the bus, served on
/// each with the schema id it carried there; captured under two ids, it is two events, each
/// served only on its channel.
#[test]
fn an_event_captured_on_two_channels_is_served_on_each_as_captured() {
    let mut c = capture(vec![
        (ACCOUNTS, vec![event(&rid(20), 1), event(&rid(30), 4)]),
        (
            ALL,
            vec![
                change(&rid(20), 1, "Account", ""),
                change(&rid(31), 4, "Account", ""),
            ],
        ),
    ]);
    entity_topics(&mut c);
    let mut bus = Bus::default();
    assert_eq!(load_into(&mut bus, &c, SystemTime::now()).unwrap(), 3);
    let accounts = replayed(ACCOUNTS, Channel::Entity("Account".into()));
    let all = replayed(ALL, Channel::AllChanges);
    assert_eq!(bus.replay_ids(&accounts), [rid(20), rid(30)]);
    assert_eq!(bus.replay_ids(&all), [rid(20), rid(31)]);
    let (got, _) = bus.fetch(&all, bus.earliest_cursor(), 1);
    assert_eq!(got[0].source.captured_schema_id(ALL), Some(""));
    assert_eq!(got[0].source.captured_schema_id(ACCOUNTS), Some("schema1"));
    assert_eq!(got[0].event.schema_id, "schema1");
    // Events appended after the capture are served on the replayed channels as their live
    // channel selects them.
    let seq = bus.append(
        Source::Entity("Account".into()),
        ProducerEvent::default(),
        SystemTime::now(),
    );
    assert_eq!(bus.replay_ids(&all).last(), Some(&bus.id_of(seq)));
    assert_eq!(bus.replay_ids(&accounts).len(), 3);
}

/// A custom channel's events carry their schema ids and entities
/// (pozil/pub-sub-api-node-client#27); replayed, the channel resolves to the simulator's members
/// when it has that channel, else to the entities captured on it.
#[test]
fn custom_channels_are_replayed_with_their_members() {
    let c = capture(vec![
        (
            SALES,
            vec![
                change(&rid(40), 1, "Contact", "contactSchema"),
                change(&rid(41), 2, "Account", "accountSchema"),
            ],
        ),
        (
            "/data/Other__chn",
            vec![change(&rid(42), 3, "Lead", "leadSchema")],
        ),
    ]);
    let mut bus = Bus::default();
    assert_eq!(load_into(&mut bus, &c, SystemTime::now()).unwrap(), 3);
    let config = SimConfig {
        replay: Some(std::sync::Arc::new(c)),
        ..SimConfig::default()
    };
    let sales = replayed_channel(&config, SALES).unwrap();
    assert_eq!(
        sales,
        replayed(
            SALES,
            Channel::Custom(vec!["Account".into(), "Contact".into()])
        )
    );
    assert_eq!(
        replayed_channel(&config, "/data/Other__chn"),
        Some(replayed(
            "/data/Other__chn",
            Channel::Custom(vec!["Lead".into()])
        ))
    );
    let (got, _) = bus.fetch(&sales, bus.earliest_cursor(), 10);
    let seen: Vec<_> = got
        .iter()
        .map(|e| (e.event.id.as_str(), e.source.captured_schema_id(SALES)))
        .collect();
    assert_eq!(
        seen,
        [
            ("event-1", Some("contactSchema")),
            ("event-2", Some("accountSchema"))
        ]
    );
    assert_eq!(bus.count(&Channel::Entity("Lead".into())), 1);
}
