//! Unit tests of the replay loader and of the bus serving captured replay ids.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::format::{Capture, Captured, CapturedEvent, FORMAT_VERSION, Manifest};
use super::*;
use crate::sim::bus::{Channel, ReplayIdError};

const ACCOUNTS: &str = "/data/AccountChangeEvent";
const ORDERS: &str = "/event/Order_Event__e";

fn event(id: &[u8], n: u8) -> Captured {
    Captured::Event(CapturedEvent {
        replay_id: id.to_vec(),
        schema_id: format!("schema{n}"),
        event_id: format!("event-{n}"),
        payload: vec![n; 3],
        headers: vec![("h".into(), vec![n])],
        at_ms: 0,
    })
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
        err(capture(vec![("/data/ChangeEvents", vec![])])),
        "channel /data/ChangeEvents: replay serves /data/<Entity>ChangeEvent and /event/<Name>__e channels only"
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
