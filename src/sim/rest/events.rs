//! Publishing a Platform Event over REST: `POST /sobjects/{Event__e}` with the event's fields
//! (Platform Events Developer Guide, "Publish Event Messages with Salesforce APIs": "Publish
//! events by inserting events in the same way that you insert sObjects").
//!
//! Contract: 201 with `{"id", "success": true, "errors": [{"statusCode": "OPERATION_ENQUEUED",
//! "message": <the event's EventUuid>, "fields": []}]}`, the shape the guide shows for
//! high-volume events, which publish asynchronously (every Platform Event of a current org is
//! high-volume). The `id` is a placeholder of the `e01` key prefix ("The Id field value isn't
//! included in the event message delivered to subscribers … and it isn't always unique"). The
//! event reaches Pub/Sub subscribers of `/event/{Event__e}` as one published with the gRPC
//! `Publish`, `CreatedById` the token's user. A field the event doesn't have, or a value of the
//! wrong type, is refused as a record insert is (400 with Salesforce's error array). Other
//! methods on the event: 405.

use axum::http::{Method, StatusCode};
use serde_json::json;

use super::call::{Call, Exec};
use super::reply::{Reply, row_error};

/// The `id` a published event's result carries (the guide's example: `e01xx0000000001AAA`).
const EVENT_RESULT_ID: &str = "e01SIM0000000001AAA";

impl Exec<'_> {
    /// True if `name` is a Platform Event of the org (`Order_Event__e`).
    pub(super) fn is_platform_event(&self, name: &str) -> bool {
        name.ends_with("__e") && self.org.platform_event_schema(name).is_some()
    }

    /// `POST /sobjects/{Event__e}`.
    pub(super) fn publish_event(&mut self, call: &Call, name: &str) -> Reply {
        if *call.method != Method::POST {
            return Reply::method_not_allowed(call.method, "POST");
        }
        let fields = match call.body.fields() {
            Ok(fields) => fields,
            Err(reply) => return reply,
        };
        let event = match self.org.build_platform_event(name, &fields, &self.user) {
            Some(Ok(event)) => event,
            Some(Err(error)) => return row_error(&error),
            None => return Reply::not_found(),
        };
        let uuid = event.id.clone();
        self.shared.append_platform_event(name, event);
        Reply::json(
            StatusCode::CREATED,
            json!({
                "id": EVENT_RESULT_ID,
                "success": true,
                "errors": [{"statusCode": "OPERATION_ENQUEUED", "message": uuid, "fields": []}],
            }),
        )
    }
}
