//! The Tooling API's `ManagedEventSubscription` (Beta), under `/services/data/v{ver}/tooling/`
//! (Pub/Sub API Developer Guide, "Step 1: Create ManagedEventSubscription with Tooling API";
//! Tooling API, "ManagedEventSubscription"):
//! * `tooling/sobjects/ManagedEventSubscription` POST `{"FullName", "Metadata": {"label",
//!   "topicName", "defaultReplay", "errorRecoveryReplay", "state"}}` → 201 `{id, success,
//!   errors}`; a missing or wrong field → 400 `[{"errorCode": "FIELD_INTEGRITY_EXCEPTION",
//!   "message", "fields"}]` (the code chosen: the guide shows none).
//! * `tooling/sobjects/ManagedEventSubscription/{Id}` GET (the record) and DELETE (204).
//! * `tooling/query?q=SELECT … FROM ManagedEventSubscription [WHERE Id = '…' | DeveloperName =
//!   '…'] [LIMIT n]` → `{size, totalSize, done, queryLocator, entityTypeName, records}`: the
//!   query the pozil Node client makes before `ManagedSubscribe`. Every record field is returned
//!   whatever the select list names. Another object: 400 `INVALID_TYPE`; another filter: 400
//!   `MALFORMED_QUERY`.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::call::{Call, Exec, query_param};
use super::reply::Reply;
use crate::sim::util::lock;

const OBJECT: &str = "ManagedEventSubscription";

impl Exec<'_> {
    /// Routes `tooling/…` (`segments` after `tooling`).
    pub(super) fn tooling(&mut self, call: &Call, segments: &[&str]) -> Reply {
        let m = call.method;
        match segments {
            ["query"] if *m == Method::GET => self.tooling_query(call),
            ["query"] => Reply::method_not_allowed(m, "GET,HEAD"),
            ["sobjects", object] if object.eq_ignore_ascii_case(OBJECT) => match *m {
                Method::POST => self.create_managed(call),
                _ => Reply::method_not_allowed(m, "GET,POST,HEAD"),
            },
            ["sobjects", object, id] if object.eq_ignore_ascii_case(OBJECT) => match *m {
                Method::GET => {
                    let managed = lock(&self.shared.managed);
                    match managed.find(id) {
                        Some(sub) => Reply::json(StatusCode::OK, sub.record(call.version)),
                        None => Reply::not_found(),
                    }
                }
                Method::DELETE => {
                    if lock(&self.shared.managed).delete(id) {
                        Reply::no_content()
                    } else {
                        Reply::not_found()
                    }
                }
                _ => Reply::method_not_allowed(m, "GET,PATCH,DELETE,HEAD"),
            },
            _ => Reply::not_found(),
        }
    }

    fn create_managed(&mut self, call: &Call) -> Reply {
        let body = match call.body.json() {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        let topic_exists = |topic: &str| self.shared.resolve_channel_in(&self.org, topic).is_some();
        let created = lock(&self.shared.managed).create(&body, topic_exists);
        match created {
            Ok(id) => Reply::json(
                StatusCode::CREATED,
                json!({"id": id, "success": true, "errors": []}),
            ),
            Err(message) => {
                let field = message.split(':').next().unwrap_or("").to_owned();
                Reply::error(
                    StatusCode::BAD_REQUEST,
                    "FIELD_INTEGRITY_EXCEPTION",
                    &message,
                    &[field.as_str()],
                )
            }
        }
    }

    fn tooling_query(&mut self, call: &Call) -> Reply {
        let text = query_param(call.query, "q").unwrap_or_default();
        let (object, filter, limit) = match parse(&text) {
            Ok(parsed) => parsed,
            Err(reply) => return reply,
        };
        if !object.eq_ignore_ascii_case(OBJECT) {
            return Reply::error(
                StatusCode::BAD_REQUEST,
                "INVALID_TYPE",
                &format!("sObject type '{object}' is not supported."),
                &[],
            );
        }
        let managed = lock(&self.shared.managed);
        let mut records: Vec<Value> = match filter {
            Some(value) => managed
                .find(&value)
                .map(|s| s.record(call.version))
                .into_iter()
                .collect(),
            None => managed.all().map(|s| s.record(call.version)).collect(),
        };
        records.truncate(limit);
        Reply::json(
            StatusCode::OK,
            json!({
                "size": records.len(),
                "totalSize": records.len(),
                "done": true,
                "queryLocator": null,
                "entityTypeName": OBJECT,
                "records": records,
            }),
        )
    }
}

/// `SELECT … FROM Object [WHERE Id|DeveloperName = '…'] [LIMIT n]` → (object, filter, limit).
fn parse(text: &str) -> Result<(String, Option<String>, usize), Reply> {
    let malformed = || {
        Reply::error(
            StatusCode::BAD_REQUEST,
            "MALFORMED_QUERY",
            &format!("The Tooling API query isn't supported by the simulated org: {text}"),
            &[],
        )
    };
    let words: Vec<&str> = text.split_whitespace().collect();
    let from = words
        .iter()
        .position(|w| w.eq_ignore_ascii_case("FROM"))
        .ok_or_else(malformed)?;
    let object = words.get(from + 1).ok_or_else(malformed)?.to_string();
    let rest = &words[from + 2..];
    let (filter, rest) = match rest {
        [w, cond @ ..] if w.eq_ignore_ascii_case("WHERE") => {
            let joined = cond
                .iter()
                .take_while(|w| !w.eq_ignore_ascii_case("LIMIT"))
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
            let (field, value) = joined.split_once('=').ok_or_else(malformed)?;
            let field = field.trim();
            if !field.eq_ignore_ascii_case("Id") && !field.eq_ignore_ascii_case("DeveloperName") {
                return Err(malformed());
            }
            let value = value.trim().trim_matches('\'').to_owned();
            let used = cond
                .iter()
                .take_while(|w| !w.eq_ignore_ascii_case("LIMIT"))
                .count();
            (Some(value), &cond[used..])
        }
        _ => (None, rest),
    };
    let limit = match rest {
        [] => usize::MAX,
        [w, n] if w.eq_ignore_ascii_case("LIMIT") => n.parse().map_err(|_| malformed())?,
        _ => return Err(malformed()),
    };
    Ok((object, filter, limit))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn the_pozil_clients_query_parses() {
        let (object, filter, limit) = parse(
            "SELECT Id, DeveloperName, Metadata FROM ManagedEventSubscription WHERE DeveloperName='Orders_Sub' LIMIT 1",
        )
        .ok()
        .unwrap();
        assert_eq!(object, "ManagedEventSubscription");
        assert_eq!(filter.as_deref(), Some("Orders_Sub"));
        assert_eq!(limit, 1);
        let (_, filter, limit) = parse("SELECT Id FROM ManagedEventSubscription")
            .ok()
            .unwrap();
        assert_eq!((filter, limit), (None, usize::MAX));
        assert!(parse("SELECT Id FROM ManagedEventSubscription WHERE Label='x'").is_err());
        assert!(parse("SELECT Id FROM ManagedEventSubscription LIMIT x").is_err());
    }
}
