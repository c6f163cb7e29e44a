//! sObject rows: `sobjects/{Object}` POST (201 `{id, success, errors}`, `Location`),
//! `sobjects/{Object}/{Id}` GET (`?fields=` optional) / PATCH (204) / DELETE (204), and rows by
//! External Id: `sobjects/{Object}/{ExtIdField}/{value}` GET / PATCH upsert (201 `created: true`
//! or 200 `created: false`). Each write is a transaction of its own (or part of the enclosing
//! all-or-none Composite); errors as a single-row resource answers them ([`row_error`]).

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::call::{Call, Exec, query_param};
use super::render::{canonical_field, render_record, row_url};
use super::reply::{RecordError, Reply, row_error};
use crate::sim::error::SimError;
use crate::sim::ids;
use crate::sim::org::Op;

impl Exec<'_> {
    pub(super) fn create_row(&mut self, call: &Call, object: &str) -> Reply {
        let fields = match self.rest_fields(call, object) {
            Ok(f) => f,
            Err(r) => return r,
        };
        if let Err(e) = self.org.validate_fields(object, &fields) {
            return row_error(&e);
        }
        let id = match self.org.reserve_id(object) {
            Ok(id) => id,
            Err(e) => return row_error(&e),
        };
        let op = Op::Create {
            object: object.to_owned(),
            id,
            fields,
        };
        match self.write(&[op], &call.origin(), true, false).remove(0) {
            Ok(applied) => {
                let mut reply = Reply::json(
                    StatusCode::CREATED,
                    json!({"id": applied.id, "success": true, "errors": []}),
                );
                reply
                    .headers
                    .push(("location", row_url(call, object, &applied.id)));
                reply
            }
            Err(e) => row_error(&e),
        }
    }

    /// The body of a row write as the org stores it: component fields (`BillingCity`) nested
    /// into their compound; a compound or formula field named is refused as Salesforce refuses
    /// it (400 `INVALID_FIELD_FOR_INSERT_UPDATE`).
    fn rest_fields(&self, call: &Call, object: &str) -> Result<Map<String, Value>, Reply> {
        let fields = call.body.fields()?;
        let Some(meta) = self.org.meta(object) else {
            return Err(Reply::not_found());
        };
        meta.to_stored(object, fields).map_err(|e| row_error(&e))
    }

    pub(super) fn get_row(&mut self, call: &Call, object: &str, id: &str) -> Reply {
        if ids::normalize(id).is_none() {
            return row_error(&SimError::MalformedId {
                object: object.to_owned(),
                id: id.to_owned(),
            });
        }
        let Some(record) = self.org.view(self.outer.as_ref(), object, id) else {
            return Reply::not_found();
        };
        self.render_row(call, object, &record)
    }

    pub(super) fn render_row(
        &self,
        call: &Call,
        object: &str,
        record: &Map<String, Value>,
    ) -> Reply {
        if record.get("IsDeleted") == Some(&Value::Bool(true)) {
            return Reply::error(
                StatusCode::NOT_FOUND,
                "ENTITY_IS_DELETED",
                "entity is deleted",
                &[],
            );
        }
        let Some(meta) = self.org.meta(object) else {
            return Reply::not_found();
        };
        let selected = match query_param(call.query, "fields") {
            Some(list) => {
                let mut out = Vec::new();
                for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    match canonical_field(&meta, name) {
                        Some(f) => out.push(f),
                        None => {
                            return Reply::error(
                                StatusCode::BAD_REQUEST,
                                "INVALID_FIELD",
                                &format!("No such column '{name}' on sobject of type {object}"),
                                &[name],
                            );
                        }
                    }
                }
                Some(out)
            }
            None => None,
        };
        Reply::json(
            StatusCode::OK,
            Value::Object(render_record(
                &meta,
                object,
                call.version,
                record,
                selected.as_deref(),
            )),
        )
    }

    pub(super) fn update_row(&mut self, call: &Call, object: &str, id: &str) -> Reply {
        let fields = match self.rest_fields(call, object) {
            Ok(f) => f,
            Err(r) => return r,
        };
        if let Err(e) = self.org.validate_fields(object, &fields) {
            return row_error(&e);
        }
        let op = Op::Update {
            object: object.to_owned(),
            id: id.to_owned(),
            fields,
        };
        match self.write(&[op], &call.origin(), true, false).remove(0) {
            Ok(_) => Reply::no_content(),
            Err(e) => row_error(&e),
        }
    }

    pub(super) fn delete_row(&mut self, call: &Call, object: &str, id: &str) -> Reply {
        let op = Op::Delete {
            object: object.to_owned(),
            id: id.to_owned(),
        };
        match self.write(&[op], &call.origin(), true, false).remove(0) {
            Ok(_) => Reply::no_content(),
            Err(e) => row_error(&e),
        }
    }

    /// Checks the External Id field of a by-External-Id resource.
    pub fn external_id_field(&self, object: &str, field: &str) -> Result<(), Reply> {
        let exists = self
            .org
            .object_schema(object)
            .is_some_and(|s| s.field(field).is_some());
        if !exists {
            return Err(Reply::error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                &format!("Provided external ID field does not exist or is not accessible: {field}"),
                &[],
            ));
        }
        if !self.org.is_external_id(object, field) {
            return Err(RecordError::of(&SimError::NotExternalId {
                object: object.to_owned(),
                field: field.to_owned(),
            })
            .reply(StatusCode::BAD_REQUEST));
        }
        Ok(())
    }

    pub(super) fn get_by_external_id(
        &mut self,
        call: &Call,
        object: &str,
        field: &str,
        value: &str,
    ) -> Reply {
        if let Err(r) = self.external_id_field(object, field) {
            return r;
        }
        let outer = self.outer.as_ref();
        let found = self
            .org
            .find_by_external_id(outer, object, field, value)
            .and_then(|id| self.org.view(outer, object, &id));
        match found {
            Some(record) => self.render_row(call, object, &record),
            None => Reply::not_found(),
        }
    }

    pub(super) fn upsert_row(
        &mut self,
        call: &Call,
        object: &str,
        field: &str,
        value: &str,
    ) -> Reply {
        if let Err(r) = self.external_id_field(object, field) {
            return r;
        }
        let fields = match self.rest_fields(call, object) {
            Ok(f) => f,
            Err(r) => return r,
        };
        if let Err(e) = self.org.validate_fields(object, &fields) {
            return row_error(&e);
        }
        let op = Op::Upsert {
            object: object.to_owned(),
            field: field.to_owned(),
            value: value.to_owned(),
            fields,
        };
        match self.write(&[op], &call.origin(), true, false).remove(0) {
            Ok(applied) => {
                let status = if applied.created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                let mut reply = Reply::json(
                    status,
                    json!({"id": applied.id, "success": true, "errors": [], "created": applied.created}),
                );
                if applied.created {
                    reply
                        .headers
                        .push(("location", row_url(call, object, &applied.id)));
                }
                reply
            }
            Err(e) => row_error(&e),
        }
    }
}
