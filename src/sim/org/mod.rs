//! The in-memory org: sObject records, platform event definitions, schema versions, and the
//! translation of committed changes into Avro-encoded CDC events.
//!
//! Contract:
//! * Records carry an 18-character Id, `CreatedDate`, `CreatedById`, `LastModifiedDate`,
//!   `LastModifiedById`, `SystemModstamp` (epoch ms) and `IsDeleted` (soft delete = recycle bin).
//! * Field values are JSON: scalars, compound fields as nested objects, dates and datetimes as
//!   epoch ms (a date/datetime field also accepts Salesforce/ISO text, stored as epoch ms).
//!   Unknown or read-only fields and ill-typed values are rejected with an error naming object
//!   and field.
//! * Every saved record satisfies the object's rules, checked in Salesforce's order: required
//!   fields (Account `Name`, Contact `Name.LastName`), validation rules
//!   ([`Org::add_validation_rule`]), then unique External Id fields (`External_Id__c`: no two live
//!   records share a value, compared case-insensitively; looked up through an index).
//! * Writes are staged into a [`Tx`] ([`Org::stage`]): each operation is checked and applied on
//!   its own, a failed one leaves the transaction as it was, and nothing is visible outside the
//!   transaction until [`Org::finish`] commits it; dropping a `Tx` rolls it back.
//!   [`Org::commit`] is the all-or-nothing shorthand. `finish` returns one [`Change`] per record;
//!   [`Org::build_events`] turns them into change events following the Pub/Sub API body rules:
//!   CREATE/UNDELETE carry all set fields, UPDATE only changed fields (bitmaps in
//!   `changedFields`/`nulledFields`, `LastModifiedDate` always changed; a Long Text Area's new
//!   value as a unified diff, in `diffFields`, when the CDC guide's conditions allow one:
//!   `text_diff.rs`), DELETE no fields.
//!   Several operations on one record in one transaction give one change with the committed state
//!   (CREATE + UPDATEs → CREATE; UPDATEs → one UPDATE). Identical changes (same type, same values,
//!   same origin) to several records of one object in one transaction become one event listing
//!   all record Ids.

mod cdc;
mod change;
mod event;
mod fields;
mod record;
mod recycle;
mod seed;
mod stage;
mod state;
#[cfg(test)]
mod tests;
mod text_diff;

pub use self::cdc::avro_to_json;
pub(crate) use self::cdc::encode_body;
pub(crate) use self::change::{Applied, StageOptions};
pub use self::change::{BuiltEvent, Change, ChangeType, CommitContext, Op};
pub(crate) use self::fields::{FieldCheck, normalize_fields};
pub use self::state::Org;
pub(crate) use self::state::{Tx, ValidationRule};
