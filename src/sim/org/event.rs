//! Platform Events built from field values, as a publisher over REST or the Rust API sends them:
//! the fields checked against the event's schema (unknown fields refused, types checked, as a
//! record insert is), `CreatedDate` (with its milliseconds) and `CreatedById` set when absent,
//! and the body encoded with the event's current schema. Publishing it on the bus is the
//! caller's (`Shared::append_platform_event`), so that the org lock is not held for it.

use serde_json::{Map, Value};

use super::state::Org;
use super::{FieldCheck, encode_body, normalize_fields};
use crate::salesforce::proto::ProducerEvent;
use crate::sim::error::SimError;
use crate::sim::util::now_ms;

impl Org {
    /// The event `name` (`Order_Event__e`) with these fields, published by `user`; `None` if
    /// the org has no such Platform Event.
    pub(crate) fn build_platform_event(
        &self,
        name: &str,
        fields: &Map<String, Value>,
        user: &str,
    ) -> Option<Result<ProducerEvent, SimError>> {
        let schema = self.platform_event_schema(name)?;
        Some((|| {
            let mut values = normalize_fields(&schema, name, fields, FieldCheck::Event)?;
            values
                .entry("CreatedDate")
                // A platform event's CreatedDate keeps its milliseconds, unlike record datetimes
                // (the platform event sample in salesforce/lwc#3488: `…T18:31:40.517Z`).
                .or_insert_with(|| now_ms().into());
            values
                .entry("CreatedById")
                .or_insert_with(|| user.to_owned().into());
            let payload = encode_body(&schema, None, &values)?;
            Ok(ProducerEvent {
                id: uuid::Uuid::new_v4().to_string(),
                schema_id: schema.id.clone(),
                payload: payload.into(),
                headers: Vec::new(),
            })
        })())
    }
}
