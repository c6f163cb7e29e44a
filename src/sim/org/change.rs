//! What goes into a transaction and what comes out of it: the requested operations ([`Op`]),
//! how a batch is staged ([`StageOptions`]) and what each operation did ([`Applied`]); the
//! effect on one record before encoding ([`Change`], with its [`ChangeType`] and the
//! `changedFields`/`nulledFields` positions); the header values of a commit ([`CommitContext`]);
//! and a change event ready for the bus ([`BuiltEvent`]).

use serde_json::{Map, Value as Json};

use crate::salesforce::proto::ProducerEvent;
use crate::sim::bitmap::FieldSet;

/// CDC change types the org emits (the first four symbols of the `ChangeType` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeType {
    /// Record created.
    Create,
    /// Record updated.
    Update,
    /// Record moved to the recycle bin.
    Delete,
    /// Record restored from the recycle bin.
    Undelete,
}

impl ChangeType {
    /// Enum symbol.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Undelete => "UNDELETE",
        }
    }

    pub(super) fn index(self) -> u32 {
        match self {
            Self::Create => 0,
            Self::Update => 1,
            Self::Delete => 2,
            Self::Undelete => 3,
        }
    }
}

/// One requested change.
#[derive(Debug, Clone)]
pub enum Op {
    /// Create a record with a pre-reserved Id.
    Create {
        /// Object API name.
        object: String,
        /// Reserved Id.
        id: String,
        /// Field values.
        fields: Map<String, Json>,
    },
    /// Update fields (null = set to null).
    Update {
        /// Object API name.
        object: String,
        /// Record Id.
        id: String,
        /// Field values.
        fields: Map<String, Json>,
    },
    /// Update the live record whose External Id field `field` equals `value`
    /// (case-insensitively), or create one with that value.
    Upsert {
        /// Object API name.
        object: String,
        /// External Id field.
        field: String,
        /// Its value.
        value: String,
        /// Field values (may repeat `field` with the same value).
        fields: Map<String, Json>,
    },
    /// Soft delete.
    Delete {
        /// Object API name.
        object: String,
        /// Record Id.
        id: String,
    },
    /// Restore from the recycle bin.
    Undelete {
        /// Object API name.
        object: String,
        /// Record Id.
        id: String,
    },
}

impl Op {
    /// The object the operation writes.
    pub fn object(&self) -> &str {
        match self {
            Op::Create { object, .. }
            | Op::Update { object, .. }
            | Op::Upsert { object, .. }
            | Op::Delete { object, .. }
            | Op::Undelete { object, .. } => object,
        }
    }
}

/// The effect of one operation, before encoding.
#[derive(Debug, Clone)]
pub struct Change {
    /// Object API name.
    pub entity: String,
    /// Change type.
    pub change_type: ChangeType,
    /// Record Id.
    pub record_id: String,
    /// Body fields carrying a value (compound fields as partial nested objects).
    pub values: Map<String, Json>,
    /// `changedFields` positions.
    pub changed: FieldSet,
    /// `nulledFields` positions.
    pub nulled: FieldSet,
    /// `diffFields` positions: large text fields whose value in `values` is a unified diff.
    pub diff: FieldSet,
    /// `changeOrigin` of the call that made the change (`None`: the commit's).
    pub origin: Option<String>,
}

impl Change {
    pub(super) fn new(entity: &str, change_type: ChangeType, record_id: &str) -> Self {
        Self {
            entity: entity.to_owned(),
            change_type,
            record_id: record_id.to_owned(),
            values: Map::new(),
            changed: FieldSet::default(),
            nulled: FieldSet::default(),
            diff: FieldSet::default(),
            origin: None,
        }
    }
}

/// Header values shared by all events of one transaction.
#[derive(Debug, Clone)]
pub struct CommitContext {
    /// `changeOrigin` (for changes that carry none of their own).
    pub origin: String,
    /// `commitUser`.
    pub user: String,
    /// `commitTimestamp` (epoch ms).
    pub timestamp: i64,
    /// `commitNumber`.
    pub commit_number: i64,
    /// `transactionKey`.
    pub transaction_key: String,
}

/// A CDC event ready for the bus.
#[derive(Debug, Clone)]
pub struct BuiltEvent {
    /// Entity (object API name).
    pub entity: String,
    /// The event (id, schema id, Avro payload).
    pub event: ProducerEvent,
}

/// What a staged operation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The record's Id (18 characters).
    pub id: String,
    /// True when the operation created the record (create, or an upsert that matched nothing).
    pub created: bool,
}

/// How [`Org::stage`] runs a batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageOptions {
    /// Stop at the first failed operation (the later ones are not tried).
    pub stop_on_error: bool,
    /// Apply the REST fault knobs (`lock_rows`) to these writes.
    pub rest_faults: bool,
}
