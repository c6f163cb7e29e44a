//! Target `writeback_message`: the sink's message parser on arbitrary Kafka records.
//!
//! Contract: [`writeback_message`] takes `[flags, (len, headers...)?, value...]` (the layout
//! [`writeback_input`] writes) and runs [`message::parse`] with the sink config of
//! [`SINK_OBJECTS_YAML`]; an accepted message must satisfy the documented contract of
//! [`WriteOp`], a refused one must carry an error that names its field. It panics otherwise
//! (a finding).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::config::{SinkObjectConfig, is_api_name};
use crate::kafka::headers;
use crate::sink::message::{self, OpKind, ParseOptions, Target, WriteOp};

use super::fixtures::Outcome;

/// The `sink.objects` section the write-back target parses with (as in README's example).
pub const SINK_OBJECTS_YAML: &str = "\
Account:
  external_id_field: External_Id__c
  field_map: { customer_name: Name, phone_number: Phone }
  ignore_fields: [Internal__c]
Contact:
  external_id_field: Email_Key__c
  field_map: { last: LastName }
Order__c: {}
";

fn sink_objects() -> &'static BTreeMap<String, SinkObjectConfig> {
    static OBJECTS: OnceLock<BTreeMap<String, SinkObjectConfig>> = OnceLock::new();
    OBJECTS.get_or_init(|| {
        serde_yaml::from_str(SINK_OBJECTS_YAML).expect("the fuzz sink config parses")
    })
}

/// Flag bits of the first byte of a `writeback_message` input.
pub(crate) const WB_NO_VALUE: u8 = 1;
/// Last-write-wins on.
pub(crate) const WB_LAST_WRITE_WINS: u8 = 2;
/// Headers follow: a length byte `n`, then `n` bytes `object-header \n operation-header`.
pub const WB_HEADERS: u8 = 4;

/// Encodes a `writeback_message` input (the inverse of what the target reads).
pub fn writeback_input(
    value: Option<&[u8]>,
    last_write_wins: bool,
    headers: Option<(&[u8], &[u8])>,
) -> Vec<u8> {
    let mut flags = 0;
    if value.is_none() {
        flags |= WB_NO_VALUE;
    }
    if last_write_wins {
        flags |= WB_LAST_WRITE_WINS;
    }
    let mut out = vec![flags];
    if let Some((object, operation)) = headers {
        out[0] |= WB_HEADERS;
        let mut h = object.to_vec();
        h.push(b'\n');
        h.extend_from_slice(operation);
        h.truncate(255);
        out.push(h.len() as u8);
        out.extend_from_slice(&h);
    }
    out.extend_from_slice(value.unwrap_or_default());
    out
}

/// Target `writeback_message`: `[flags, (len, headers...)?, value...]` (see [`writeback_input`]).
pub fn writeback_message(data: &[u8]) -> Outcome {
    let Some((&flags, mut rest)) = data.split_first() else {
        return Outcome::Rejected;
    };
    let mut object_header: &[u8] = &[];
    let mut operation_header: &[u8] = &[];
    let with_headers = flags & WB_HEADERS != 0;
    if with_headers && let Some((&n, tail)) = rest.split_first() {
        let n = usize::from(n).min(tail.len());
        let (h, tail) = tail.split_at(n);
        rest = tail;
        match h.iter().position(|&b| b == b'\n') {
            Some(i) => (object_header, operation_header) = (&h[..i], &h[i + 1..]),
            None => object_header = h,
        }
    }
    let headers: Vec<(&str, &[u8])> = if with_headers {
        vec![
            (headers::OBJECT, object_header),
            (headers::OPERATION, operation_header),
        ]
    } else {
        Vec::new()
    };
    let value = (flags & WB_NO_VALUE == 0).then_some(rest);
    let opts = ParseOptions {
        objects: sink_objects(),
        last_write_wins: flags & WB_LAST_WRITE_WINS != 0,
    };
    match message::parse(value, &headers, opts) {
        Ok(op) => {
            check_write_op(&op, opts);
            Outcome::Accepted
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            // Errors name the field; only an unknown key may itself be empty (`""`).
            if let message::MessageError::Invalid { field, message } = &e {
                assert!(
                    !field.is_empty() || message.starts_with("unknown key"),
                    "an error without a field: {e}"
                );
            }
            Outcome::Rejected
        }
    }
}

/// The `WriteOp` contract of `sink::message`.
fn check_write_op(op: &WriteOp, opts: ParseOptions<'_>) {
    assert!(is_api_name(&op.object), "object `{}`", op.object);
    let settings = opts
        .objects
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(&op.object));
    if let Some((name, _)) = settings {
        assert_eq!(&op.object, name, "the configured spelling of the object");
    }
    match (&op.kind, &op.target) {
        (OpKind::Insert, Target::New) => {}
        (OpKind::Upsert, Target::External { .. }) => {}
        (OpKind::Update | OpKind::Delete, Target::Id(_) | Target::External { .. }) => {}
        (kind, target) => panic!("{kind:?} with target {target:?}"),
    }
    match &op.target {
        Target::Id(id) => assert!(crate::salesforce::sfid::is_well_formed(id), "id `{id}`"),
        Target::External { field, value } => {
            assert!(is_api_name(field), "external id field `{field}`");
            assert!(!value.is_empty(), "empty external id");
        }
        Target::New => {}
    }
    if op.kind == OpKind::Delete {
        assert!(op.fields.is_empty(), "a delete carries no fields");
    } else {
        assert!(!op.fields.is_empty(), "{:?} without fields", op.kind);
    }
    if opts.last_write_wins && op.kind != OpKind::Insert {
        assert!(op.timestamp.is_some(), "last-write-wins needs a timestamp");
    }
    for name in op.fields.keys() {
        assert!(is_api_name(name), "field `{name}`");
        assert!(
            !name.eq_ignore_ascii_case("id") && name != "attributes",
            "writes `{name}`"
        );
        if let Some((_, s)) = settings {
            assert!(!s.ignore_fields.contains(name), "ignored `{name}` written");
        }
    }
    if op.kind == OpKind::Insert {
        assert_eq!(op.order_key().is_some(), op.insert_key.is_some());
    } else {
        assert!(op.order_key().is_some(), "writes to a record are ordered");
        assert!(op.insert_key.is_none());
    }
}
