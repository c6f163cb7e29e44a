//! sObject Tree: `POST /composite/tree/{Object}` creates trees of records, parents with their
//! children, in one all-or-none transaction (REST API Developer Guide, "sObject Tree",
//! "sObject Tree Request Body", "sObject Tree Response Body" and "Create Nested Records").
//!
//! Contract:
//! * Body `{"records": [...]}`: each record has `attributes.type` and `attributes.referenceId`
//!   (letters, digits and underscores) and its fields; a child relationship name of the parent
//!   (`Contacts` under Account, `ChildAccounts` under Account: the relationships the simulator
//!   knows, see [`RELATIONSHIPS`]) holds `{"records": [...]}` of nested children, whose lookup
//!   to the parent (`AccountId`, `ParentId`) is set to the new parent's Id.
//! * Whole-request refusals, 400 with Salesforce's error array, nothing written: a body not of
//!   that shape (`JSON_PARSER_ERROR`); a record without `referenceId` or of another type than
//!   the URI's object (top level) or its relationship's object (nested) (`INVALID_INPUT`); more
//!   than [`MAX_RECORDS`] records in all, more than [`MAX_TYPES`] types or trees deeper than
//!   [`MAX_DEPTH`] levels (`LIMIT_EXCEEDED`, the simulator's code: the guide states the limits,
//!   not the code); an unknown field or relationship name (`INVALID_FIELD`, "No such column 'F'
//!   on sobject of type T", as sObject Collections answer); an unknown object in the URI
//!   (404 `NOT_FOUND`).
//! * A `referenceId` used twice: 400 `{"hasErrors": true, "results": [...]}` with one entry per
//!   occurrence (`INVALID_INPUT`, "Duplicate ReferenceId provided in the request"), as the
//!   response body's description says.
//! * Otherwise the records are created parents first, one level after the other: 201
//!   `{"hasErrors": false, "results": [{"referenceId", "id"}]}` in that order (the guide's
//!   example lists both top-level Accounts before their Contacts). One transaction: the change
//!   events of all records share a `transactionKey`, with this call's `changeOrigin`. Within
//!   a level, children follow their parents' order, a parent's relationships in name order
//!   (the simulator's JSON objects do not keep key order).
//! * Any record failing (required field, validation rule, duplicate External Id, read-only
//!   field…): nothing is saved, 400 `{"hasErrors": true, "results": [{"referenceId", "errors":
//!   [{"statusCode", "message", "fields"}]}]}` listing only the failed records.
//! * Not served as a Composite or Composite Batch subrequest (those resources don't list it).

use std::collections::{HashMap, HashSet};

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::call::{Call, Exec};
use super::collections::{Stored, typed_record};
use super::reply::{RecordError, Reply};
use crate::sim::org::Op;

/// Most records in one request, all trees together.
pub const MAX_RECORDS: usize = 200;
/// Most object types in one request.
pub const MAX_TYPES: usize = 5;
/// Deepest tree (levels).
pub const MAX_DEPTH: usize = 5;

/// Child relationships the simulator knows: (parent, relationship name, child, lookup field on
/// the child), as the Object Reference names them (Account's `Contacts` through
/// `Contact.AccountId`, `ChildAccounts` through `Account.ParentId`).
pub const RELATIONSHIPS: &[(&str, &str, &str, &str)] = &[
    ("Account", "Contacts", "Contact", "AccountId"),
    ("Account", "ChildAccounts", "Account", "ParentId"),
];

/// The parent of a nested record: its index and the lookup field that points to it.
type Parent = Option<(usize, &'static str)>;

/// A record still to read: the record, the type it must have, its parent.
type Pending = (Value, String, Parent);

/// A record's nested children: their object, their lookup field, the records.
type Children = (&'static str, &'static str, Vec<Value>);

/// One record of the request, in creation order (level by level).
struct Node {
    reference_id: String,
    object: String,
    fields: Stored,
    parent: Parent,
}

fn bad(code: &str, message: &str) -> Reply {
    Reply::error(StatusCode::BAD_REQUEST, code, message, &[])
}

/// The `records` array of `{"records": [...]}`.
fn records_of(value: &Value, what: &str) -> Result<Vec<Value>, Reply> {
    match value.get("records") {
        Some(Value::Array(records)) if value.as_object().is_some_and(|m| m.len() == 1) => {
            Ok(records.clone())
        }
        _ => Err(Reply::json_parser_error(&format!(
            "Cannot deserialize {what}: expected an object with a records array"
        ))),
    }
}

/// A known child relationship of `parent` named `name` (any case).
fn relationship(parent: &str, name: &str) -> Option<(&'static str, &'static str)> {
    RELATIONSHIPS
        .iter()
        .find(|(p, r, _, _)| *p == parent && r.eq_ignore_ascii_case(name))
        .map(|(_, _, child, field)| (*child, *field))
}

/// A record's `attributes.referenceId`.
fn reference_id(record: &Map<String, Value>) -> Result<String, Reply> {
    let id = record
        .get("attributes")
        .and_then(|a| a.get("referenceId"))
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| bad("INVALID_INPUT", "Include a reference ID for each record."))?;
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(bad(
            "INVALID_INPUT",
            &format!("Invalid referenceId '{id}': use only letters, digits and underscores"),
        ));
    }
    Ok(id.to_owned())
}

/// The request's records in creation order: every level's records before the next level's.
fn flatten(exec: &Exec, object: &str, top: Vec<Value>) -> Result<Vec<Node>, Reply> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut level: Vec<Pending> = top
        .into_iter()
        .map(|r| (r, object.to_owned(), None))
        .collect();
    let mut depth = 0;
    while !level.is_empty() {
        depth += 1;
        if depth > MAX_DEPTH {
            return Err(bad(
                "LIMIT_EXCEEDED",
                &format!("An sObject tree can be at most {MAX_DEPTH} levels deep."),
            ));
        }
        let mut next = Vec::new();
        for (record, expected, parent) in level {
            let Value::Object(mut map) = record else {
                return Err(Reply::json_parser_error(
                    "Cannot deserialize instance of sObject from a value that is not a JSON object",
                ));
            };
            let reference_id = reference_id(&map)?;
            let children = take_children(&mut map, &expected)?;
            let (typed, fields) = typed_record(exec, Value::Object(map))?;
            if typed != expected {
                return Err(bad(
                    "INVALID_INPUT",
                    &format!(
                        "The record {reference_id} is of type {typed}; this part of the tree takes {expected} records."
                    ),
                ));
            }
            let index = nodes.len();
            for (child_object, field, records) in children {
                next.extend(
                    records
                        .into_iter()
                        .map(|r| (r, child_object.to_owned(), Some((index, field)))),
                );
            }
            nodes.push(Node {
                reference_id,
                object: typed,
                fields,
                parent,
            });
            if nodes.len() > MAX_RECORDS {
                return Err(bad(
                    "LIMIT_EXCEEDED",
                    &format!("An sObject tree request can create at most {MAX_RECORDS} records."),
                ));
            }
        }
        level = next;
    }
    Ok(nodes)
}

/// Removes the child relationships of a record: (child object, lookup field, records).
fn take_children(map: &mut Map<String, Value>, object: &str) -> Result<Vec<Children>, Reply> {
    let nested: Vec<String> = map
        .iter()
        .filter(|(k, v)| *k != "attributes" && v.get("records").is_some())
        .map(|(k, _)| k.clone())
        .collect();
    let mut out = Vec::new();
    for name in nested {
        let Some((child, field)) = relationship(object, &name) else {
            return Err(Reply::error(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD",
                &format!("No such column '{name}' on sobject of type {object}"),
                &[&name],
            ));
        };
        let value = map.remove(&name).unwrap_or(Value::Null);
        out.push((child, field, records_of(&value, &name)?));
    }
    Ok(out)
}

/// 400 with the tree response's error shape.
fn tree_errors(results: Vec<Value>) -> Reply {
    Reply::json(
        StatusCode::BAD_REQUEST,
        json!({"hasErrors": true, "results": results}),
    )
}

fn failed(reference_id: &str, e: &RecordError) -> Value {
    json!({"referenceId": reference_id, "errors": [e.to_json()]})
}

/// `POST /composite/tree/{Object}`.
pub(super) fn create(exec: &mut Exec, call: &Call, object: &str) -> Reply {
    let top = match call
        .body
        .json()
        .and_then(|b| records_of(&b, "the request body"))
    {
        Ok(t) => t,
        Err(r) => return r,
    };
    let nodes = match flatten(exec, object, top) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let types: HashSet<&str> = nodes.iter().map(|n| n.object.as_str()).collect();
    if types.len() > MAX_TYPES {
        return bad(
            "LIMIT_EXCEEDED",
            &format!("An sObject tree request can create records of at most {MAX_TYPES} types."),
        );
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for n in &nodes {
        *seen.entry(n.reference_id.as_str()).or_default() += 1;
    }
    let duplicate = RecordError::new(
        "INVALID_INPUT",
        "Duplicate ReferenceId provided in the request",
        &[],
    );
    let duplicates: Vec<Value> = nodes
        .iter()
        .filter(|n| seen[n.reference_id.as_str()] > 1)
        .map(|n| failed(&n.reference_id, &duplicate))
        .collect();
    if !duplicates.is_empty() {
        return tree_errors(duplicates);
    }
    write(exec, call, nodes)
}

/// Creates the records as one all-or-none transaction.
fn write(exec: &mut Exec, call: &Call, nodes: Vec<Node>) -> Reply {
    let mut ids = Vec::with_capacity(nodes.len());
    for n in &nodes {
        match exec.org.reserve_id(&n.object) {
            Ok(id) => ids.push(id),
            Err(e) => return RecordError::of(&e).reply(StatusCode::BAD_REQUEST),
        }
    }
    let mut refused = Vec::new();
    let mut ops = Vec::with_capacity(nodes.len());
    // The node of each op.
    let mut op_nodes = Vec::with_capacity(nodes.len());
    for (i, n) in nodes.iter().enumerate() {
        match &n.fields {
            Err(e) => refused.push((i, failed(&n.reference_id, e))),
            Ok(fields) => {
                let mut fields = fields.clone();
                if let Some((parent, lookup)) = n.parent {
                    fields.insert(lookup.to_owned(), Value::String(ids[parent].clone()));
                }
                ops.push(Op::Create {
                    object: n.object.clone(),
                    id: ids[i].clone(),
                    fields,
                });
                op_nodes.push(i);
            }
        }
    }
    let results = exec.write(&ops, &call.origin(), true, !refused.is_empty());
    let mut errors = refused;
    for (result, &i) in results.iter().zip(&op_nodes) {
        if let Err(e) = result {
            errors.push((i, failed(&nodes[i].reference_id, &RecordError::of(e))));
        }
    }
    if !errors.is_empty() {
        errors.sort_by_key(|(i, _)| *i);
        return tree_errors(errors.into_iter().map(|(_, e)| e).collect());
    }
    let results: Vec<Value> = nodes
        .iter()
        .zip(&ids)
        .map(|(n, id)| json!({"referenceId": n.reference_id, "id": id}))
        .collect();
    Reply::json(
        StatusCode::CREATED,
        json!({"hasErrors": false, "results": results}),
    )
}
