//! Debezium's envelope written straight from a decoded change event, for the pipeline's hot path
//! (`source.format: debezium`).
//!
//! Contract: [`write_shared`] writes the part of the value shared by an event's record ids
//! (`,"source":{…},"op":…,"ts_ms":…,"transaction":null}`) once, [`value`] prefixes it per record
//! with `{"before":…,"after":…`; the result is the value [`super::Debezium::convert`] makes of
//! the forcebridge envelope of the same event (same keys, same order; see `ARCHITECTURE.md`,
//! "Debezium format"), without writing and parsing that envelope first. Only for change events
//! whose records need no later rewrite: not gap events (`GAP_*`, re-read by the gap stage), not
//! events with `diffFields` (rewritten by the diff stage); those are converted afterwards.

use super::avro::{integer, string as text};
use super::debezium::{CONNECTOR, Debezium, op_of};
use super::event::ChangeHeader;

/// Where an event came from: forcebridge's `source` keys.
pub(super) struct Origin<'a> {
    pub(super) channel: &'a str,
    pub(super) replay_id: &'a str,
    pub(super) event_id: &'a str,
    pub(super) schema_id: &'a str,
}

/// True when an event with this header (and `has_diffs`) can be written directly.
pub(super) fn direct(header: &ChangeHeader, has_diffs: bool) -> bool {
    !has_diffs && !header.change_type.starts_with("GAP_")
}

/// Writes `,"source":{…},"op":…,"ts_ms":now,"transaction":null}` into `out` (cleared first);
/// returns the event's `op`, or `None` for a change type Debezium has no op for.
pub(super) fn write_shared<'a>(
    out: &mut Vec<u8>,
    d: &Debezium,
    h: &ChangeHeader,
    changed: &mut dyn Iterator<Item = &'a str>,
    nulled: &mut dyn Iterator<Item = &'a str>,
    origin: &Origin<'_>,
    now: u64,
) -> Option<&'static str> {
    fn names(out: &mut Vec<u8>, key: &[u8], names: &mut dyn Iterator<Item = &str>) {
        out.extend_from_slice(key);
        out.push(b'[');
        for (i, name) in names.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            text(out, name);
        }
        out.push(b']');
    }
    let op = op_of(&h.change_type, true).ok()?;
    out.clear();
    out.extend_from_slice(b",\"source\":{\"version\":");
    text(out, env!("CARGO_PKG_VERSION"));
    out.extend_from_slice(b",\"connector\":");
    text(out, CONNECTOR);
    out.extend_from_slice(b",\"name\":");
    text(out, &d.name);
    out.extend_from_slice(b",\"ts_ms\":");
    integer(out, h.commit_timestamp);
    out.extend_from_slice(b",\"snapshot\":\"false\",\"db\":");
    text(out, &d.db);
    out.extend_from_slice(b",\"table\":");
    text(out, &h.entity_name);
    out.extend_from_slice(b",\"channel\":");
    text(out, origin.channel);
    out.extend_from_slice(b",\"replay_id\":");
    text(out, origin.replay_id);
    out.extend_from_slice(b",\"event_id\":");
    text(out, origin.event_id);
    out.extend_from_slice(b",\"schema_id\":");
    text(out, origin.schema_id);
    out.extend_from_slice(b",\"change_type\":");
    text(out, &h.change_type);
    out.extend_from_slice(b",\"transaction_key\":");
    text(out, &h.transaction_key);
    out.extend_from_slice(b",\"sequence_number\":");
    integer(out, h.sequence_number);
    // A string: commit numbers exceed 2^53 (see envelope.rs).
    out.extend_from_slice(b",\"commit_number\":\"");
    integer(out, h.commit_number);
    out.extend_from_slice(b"\",\"commit_user\":");
    text(out, &h.commit_user);
    out.extend_from_slice(b",\"change_origin\":");
    match &h.change_origin {
        Some(o) => text(out, o),
        None => out.extend_from_slice(b"null"),
    }
    names(out, b",\"changed_fields\":", changed);
    names(out, b",\"nulled_fields\":", nulled);
    out.extend_from_slice(b",\"diff_fields\":[],\"partial\":");
    let partial = h.change_type == "UPDATE";
    out.extend_from_slice(if partial { b"true" } else { b"false" });
    out.extend_from_slice(b"},\"op\":");
    text(out, op);
    out.extend_from_slice(b",\"ts_ms\":");
    integer(out, now);
    out.extend_from_slice(b",\"transaction\":null}");
    Some(op)
}

/// One record's value: `{"before":…,"after":…` then `shared`. `body` is the event's `record`
/// object (`{…}`).
pub(super) fn value(op: &str, id: &str, body: &[u8], shared: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + shared.len() + 2 * id.len() + 40);
    out.extend_from_slice(b"{\"before\":");
    if matches!(op, "u" | "d") {
        out.extend_from_slice(b"{\"Id\":");
        text(&mut out, id);
        out.push(b'}');
    } else {
        out.extend_from_slice(b"null");
    }
    out.extend_from_slice(b",\"after\":");
    if op == "d" {
        out.extend_from_slice(b"null");
    } else {
        out.extend_from_slice(b"{\"Id\":");
        text(&mut out, id);
        match body.get(1..) {
            // `{}`: no field besides the Id.
            Some(rest) if rest.first() != Some(&b'}') => {
                out.push(b',');
                out.extend_from_slice(rest);
            }
            _ => out.push(b'}'),
        }
    }
    out.extend_from_slice(shared);
    out
}
