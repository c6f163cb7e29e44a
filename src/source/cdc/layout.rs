//! Per-schema precomputation: what the decoder needs for one writer schema, built once when the
//! schema is parsed ([`super::schema::EventSchema`]).
//!
//! Contract: [`Layout::compile`] compiles the schema's decoder program, finds the body record,
//! the `ChangeEventHeader` (field 0 of every change event schema) with the role of each of its
//! fields, the top-level `CreatedDate`, and the table the bitmaps are expanded against; a schema
//! whose top level is not a record, or whose `ChangeEventHeader` is not one, is refused.

use apache_avro::Schema;

use super::avro::{Node, Program};
use super::bitmap::FieldTable;

/// What an event schema describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Change Data Capture: field 0 is `ChangeEventHeader`.
    ChangeEvent,
    /// Anything else (Platform Events).
    PlatformEvent,
}

/// The role of a `ChangeEventHeader` field, resolved once per schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    EntityName,
    RecordIds,
    ChangeType,
    ChangeOrigin,
    TransactionKey,
    SequenceNumber,
    CommitTimestamp,
    CommitNumber,
    CommitUser,
    ChangedFields,
    NulledFields,
    DiffFields,
    Other,
}

const ROLES: [(&str, Role); 12] = [
    ("entityName", Role::EntityName),
    ("recordIds", Role::RecordIds),
    ("changeType", Role::ChangeType),
    ("changeOrigin", Role::ChangeOrigin),
    ("transactionKey", Role::TransactionKey),
    ("sequenceNumber", Role::SequenceNumber),
    ("commitTimestamp", Role::CommitTimestamp),
    ("commitNumber", Role::CommitNumber),
    ("commitUser", Role::CommitUser),
    ("changedFields", Role::ChangedFields),
    ("nulledFields", Role::NulledFields),
    ("diffFields", Role::DiffFields),
];

#[derive(Debug)]
pub(super) struct HeaderLayout {
    pub(super) roles: Box<[Role]>,
    pub(super) record: usize,
}

/// Everything the decoder needs for one writer schema, built by [`EventSchema`] at parse time.
#[derive(Debug)]
pub(crate) struct Layout {
    pub(super) program: Program,
    /// Record index of the event body.
    pub(super) body: usize,
    /// `Some` iff field 0 is `ChangeEventHeader`.
    pub(super) header: Option<HeaderLayout>,
    /// Position of the top-level `CreatedDate` field.
    pub(super) created_date: Option<usize>,
    pub(crate) fields: FieldTable,
}

impl Layout {
    pub(crate) fn compile(schema: &Schema) -> Result<Layout, String> {
        let program = Program::compile(schema)?;
        let Node::Record(body) = program.root else {
            return Err("the top-level type is not a record".to_owned());
        };
        let fields = &program.records[body].fields;
        let header = match fields.first() {
            Some(f) if f.name == "ChangeEventHeader" => {
                let Node::Record(record) = f.node else {
                    return Err("field `ChangeEventHeader` is not a record".to_owned());
                };
                let roles = program.records[record]
                    .fields
                    .iter()
                    .map(|hf| {
                        ROLES
                            .iter()
                            .find(|(n, _)| *n == hf.name)
                            .map_or(Role::Other, |(_, r)| *r)
                    })
                    .collect();
                Some(HeaderLayout { roles, record })
            }
            _ => None,
        };
        let created_date = fields.iter().position(|f| f.name == "CreatedDate");
        let table = FieldTable::build(&program, body, header.is_some());
        Ok(Layout {
            program,
            body,
            header,
            created_date,
            fields: table,
        })
    }

    /// Whether the `ChangeEventHeader` begins with `entityName`.
    pub(crate) fn entity_name_first(&self) -> bool {
        self.header
            .as_ref()
            .is_some_and(|h| h.roles.first() == Some(&Role::EntityName))
    }

    pub(crate) fn kind(&self) -> EventKind {
        if self.header.is_some() {
            EventKind::ChangeEvent
        } else {
            EventKind::PlatformEvent
        }
    }
}
