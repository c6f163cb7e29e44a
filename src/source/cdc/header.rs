//! The `ChangeEventHeader`: its fields read by role (entity, record ids, change type, origin,
//! transaction, commit fields, bitmaps), each checked for presence and type.
//!
//! Contract: a required field that is absent, null or (record ids) empty is
//! [`DecodeError::MissingHeaderField`]; a field of a type we cannot interpret is
//! [`DecodeError::HeaderFieldType`]; both name the field.

use serde_json::Value;

use super::avro::{Node, Program, Reader};
use super::event::{ChangeHeader, DecodeError};
use super::layout::{HeaderLayout, Role};

/// The first string of a payload: a change event's `entityName` where its schema puts that first
/// in its `ChangeEventHeader` (see [`super::schema::EventSchema::entity_name_first`]).
pub fn leading_string(payload: &[u8]) -> Option<&str> {
    Reader::new(payload).str().ok()
}

pub(super) fn read_header(
    p: &Program,
    h: &HeaderLayout,
    r: &mut Reader<'_>,
) -> Result<ChangeHeader, DecodeError> {
    let mut entity_name = None;
    let mut record_ids = None;
    let mut change_type = None;
    let mut change_origin = None;
    let mut transaction_key = None;
    let mut sequence_number = None;
    let mut commit_timestamp = None;
    let mut commit_number = None;
    let mut commit_user = None;
    let mut changed_fields = Vec::new();
    let mut nulled_fields = Vec::new();
    let mut diff_fields = Vec::new();
    for (f, role) in p.records[h.record].fields.iter().zip(h.roles.iter()) {
        let node = &f.node;
        match role {
            Role::EntityName => entity_name = header_string(p, r, node, "entityName")?,
            Role::RecordIds => record_ids = header_strings(p, r, node, "recordIds")?,
            Role::ChangeType => change_type = header_string(p, r, node, "changeType")?,
            Role::ChangeOrigin => change_origin = header_string(p, r, node, "changeOrigin")?,
            Role::TransactionKey => transaction_key = header_string(p, r, node, "transactionKey")?,
            Role::SequenceNumber => {
                sequence_number = header_int(p, r, node, "sequenceNumber")?
                    .map(i32::try_from)
                    .transpose()
                    .map_err(|_| DecodeError::HeaderFieldType {
                        field: "sequenceNumber",
                        expected: "int",
                    })?
            }
            Role::CommitTimestamp => commit_timestamp = header_int(p, r, node, "commitTimestamp")?,
            Role::CommitNumber => commit_number = header_int(p, r, node, "commitNumber")?,
            Role::CommitUser => commit_user = header_string(p, r, node, "commitUser")?,
            Role::ChangedFields => {
                changed_fields = header_strings(p, r, node, "changedFields")?.unwrap_or_default()
            }
            Role::NulledFields => {
                nulled_fields = header_strings(p, r, node, "nulledFields")?.unwrap_or_default()
            }
            Role::DiffFields => {
                diff_fields = header_strings(p, r, node, "diffFields")?.unwrap_or_default()
            }
            Role::Other => p.write(r, node, 2, false, &mut Vec::new())?,
        }
    }
    Ok(ChangeHeader {
        entity_name: required(entity_name, "entityName")?,
        record_ids: required(record_ids.filter(|ids| !ids.is_empty()), "recordIds")?,
        change_type: required(change_type, "changeType")?,
        change_origin: change_origin.filter(|o| !o.is_empty()),
        transaction_key: required(transaction_key, "transactionKey")?,
        sequence_number: required(sequence_number, "sequenceNumber")?,
        commit_timestamp: required(commit_timestamp, "commitTimestamp")?,
        commit_number: required(commit_number, "commitNumber")?,
        commit_user: required(commit_user, "commitUser")?,
        changed_fields,
        nulled_fields,
        diff_fields,
    })
}

fn required<T>(v: Option<T>, field: &'static str) -> Result<T, DecodeError> {
    v.ok_or(DecodeError::MissingHeaderField { field })
}

/// A string (or enum symbol) header field; `null` is `None`. The usual types are read
/// directly, anything else through a JSON value.
fn header_string(
    p: &Program,
    r: &mut Reader<'_>,
    node: &Node,
    field: &'static str,
) -> Result<Option<String>, DecodeError> {
    match p.select(r, node)? {
        None => Ok(None),
        Some(Node::String) => Ok(Some(r.str()?.to_owned())),
        Some(Node::Enum(symbols)) => Ok(Some(r.symbol(symbols)?.to_owned())),
        Some(other) => string(p.value(r, other, 2)?, field),
    }
}

fn header_int(
    p: &Program,
    r: &mut Reader<'_>,
    node: &Node,
    field: &'static str,
) -> Result<Option<i64>, DecodeError> {
    match p.select(r, node)? {
        None => Ok(None),
        Some(Node::Long) => Ok(Some(r.long()?)),
        Some(Node::Int) => Ok(Some(r.int()?.into())),
        Some(other) => int(&p.value(r, other, 2)?, field),
    }
}

fn header_strings(
    p: &Program,
    r: &mut Reader<'_>,
    node: &Node,
    field: &'static str,
) -> Result<Option<Vec<String>>, DecodeError> {
    match p.select(r, node)? {
        None => Ok(None),
        Some(Node::Array(item)) if matches!(**item, Node::String) => {
            let mut out = Vec::new();
            loop {
                let n = r.block()?;
                if n == 0 {
                    break;
                }
                out.reserve(n);
                for _ in 0..n {
                    out.push(r.str()?.to_owned());
                }
            }
            Ok(Some(out))
        }
        Some(other) => strings(p.value(r, other, 2)?, field),
    }
}

/// A string (or enum symbol, already a string) header value; `null` is `None`.
fn string(v: Value, field: &'static str) -> Result<Option<String>, DecodeError> {
    match v {
        Value::String(s) => Ok(Some(s)),
        Value::Null => Ok(None),
        _ => Err(DecodeError::HeaderFieldType {
            field,
            expected: "string",
        }),
    }
}

fn strings(v: Value, field: &'static str) -> Result<Option<Vec<String>>, DecodeError> {
    let wrong = DecodeError::HeaderFieldType {
        field,
        expected: "array of strings",
    };
    match v {
        Value::Null => Ok(None),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) => out.push(s),
                    _ => return Err(wrong),
                }
            }
            Ok(Some(out))
        }
        _ => Err(wrong),
    }
}

fn int(v: &Value, field: &'static str) -> Result<Option<i64>, DecodeError> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_i64().map(Some).ok_or(DecodeError::HeaderFieldType {
            field,
            expected: "int or long",
        }),
        _ => Err(DecodeError::HeaderFieldType {
            field,
            expected: "int or long",
        }),
    }
}
