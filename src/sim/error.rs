//! The errors of the simulated org: [`SimError`] for every operation of the org, and
//! [`QueryError`] for a refused SOQL query (see `soql`), each carrying the message and (through
//! the REST layer) the error code Salesforce answers with.

use std::net::SocketAddr;

use super::tls::SimTlsError;

/// Errors of the simulated org.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A capture the org cannot serve (`--replay`).
    #[error("cannot serve the capture (--replay)")]
    Replay(#[from] crate::sim::replay::ReplayError),
    /// The object is not a CDC-enabled sObject (or platform event) of this org.
    #[error("unknown object {0}")]
    UnknownObject(String),
    /// The field does not exist on the object's current schema.
    #[error("no such field {field} on {object}")]
    UnknownField {
        /// Object API name.
        object: String,
        /// Field name (`Parent.Child` for nested fields).
        field: String,
    },
    /// The field is maintained by the org.
    #[error("field {field} on {object} is not writable")]
    ReadOnlyField {
        /// Object API name.
        object: String,
        /// Field name.
        field: String,
    },
    /// The value does not fit the field's type.
    #[error("invalid value for {object}.{field}: {reason}")]
    InvalidValue {
        /// Object API name.
        object: String,
        /// Field name.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// No record with that Id.
    #[error("{object} record {id} not found")]
    RecordNotFound {
        /// Object API name.
        object: String,
        /// Record Id as given.
        id: String,
    },
    /// The record is in the recycle bin.
    #[error("record {0} is deleted")]
    EntityIsDeleted(String),
    /// Undelete of a record that is not deleted.
    #[error("record {0} is not in the recycle bin")]
    NotDeleted(String),
    /// A create reused an existing Id.
    #[error("duplicate record id {0}")]
    DuplicateId(String),
    /// Not a well-formed Id of a record of the object (`MALFORMED_ID`).
    #[error("{object} ID: id value of incorrect type: {id}")]
    MalformedId {
        /// Object API name.
        object: String,
        /// The Id as given.
        id: String,
    },
    /// A required field is missing or blank (`REQUIRED_FIELD_MISSING`).
    #[error("Required fields are missing: [{}]", fields.join(", "))]
    RequiredFieldMissing {
        /// Object API name.
        object: String,
        /// The missing fields as Salesforce names them (`Name`, `LastName`).
        fields: Vec<String>,
    },
    /// A unique field's value is held by another live record (`DUPLICATE_VALUE`).
    #[error("duplicate value found: {field} duplicates value on record with id: {existing}")]
    DuplicateValue {
        /// Object API name.
        object: String,
        /// The unique field.
        field: String,
        /// Id of the record holding the value.
        existing: String,
    },
    /// A validation rule refused the record (`FIELD_CUSTOM_VALIDATION_EXCEPTION`).
    #[error("{message}")]
    ValidationFailed {
        /// Object API name.
        object: String,
        /// The rule's field.
        field: String,
        /// The rule's message.
        message: String,
    },
    /// Injected by [`SimOrg::lock_rows`](super::SimOrg::lock_rows) (`UNABLE_TO_LOCK_ROW`).
    #[error("unable to obtain exclusive access to this record or 1 records: {0}")]
    UnableToLockRow(String),
    /// An upsert named a field that is not an External Id field.
    #[error("{field} is not an External Id field of {object}")]
    NotExternalId {
        /// Object API name.
        object: String,
        /// Field name.
        field: String,
    },
    /// A SOQL query was refused.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// Not a channel/topic of this org.
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    /// A bundled or derived schema is unusable.
    #[error("schema error: {0}")]
    Schema(String),
    /// `add_field` refused.
    #[error("invalid schema change: {0}")]
    InvalidSchemaChange(String),
    /// Avro encoding failed.
    #[error("avro encoding failed: {0}")]
    Encode(String),
    /// A listener could not be bound.
    #[error("cannot bind {addr}")]
    Bind {
        /// Address asked for.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `forcebridge sim --write-jwt-key` could not write the key file.
    #[error("cannot write the JWT private key to {path}")]
    WriteJwtKey {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// [`SimConfig::jwt_certificate_pem`](super::SimConfig::jwt_certificate_pem) is not a PEM X.509 certificate.
    #[error("SimConfig::jwt_certificate_pem: {0}")]
    JwtCertificate(String),
    /// [`SimConfig::tls`](super::SimConfig::tls) is unusable, or a test CA could not be generated.
    #[error(transparent)]
    Tls(#[from] SimTlsError),
    /// The test CA certificate could not be written (`forcebridge sim --tls-ca`).
    #[error("cannot write the test CA certificate to {path}: {source}")]
    WriteCa {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// A refused query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// `MALFORMED_QUERY`: not in the grammar.
    #[error("{0}")]
    Malformed(String),
    /// `INVALID_FIELD`: no such field, or it can't be used that way.
    #[error("{0}")]
    InvalidField(String),
    /// `INVALID_TYPE`: no such object.
    #[error("{0}")]
    InvalidType(String),
    /// `INVALID_QUERY_FILTER_OPERATOR`: a filter value that can't be an Id.
    #[error("{0}")]
    InvalidFilter(String),
    /// `NUMBER_OUTSIDE_VALID_RANGE`: an `OFFSET` above its maximum.
    #[error("{0}")]
    OutOfRange(String),
}

impl QueryError {
    /// Salesforce's `errorCode`.
    pub fn code(&self) -> &'static str {
        match self {
            QueryError::Malformed(_) => "MALFORMED_QUERY",
            QueryError::InvalidField(_) => "INVALID_FIELD",
            QueryError::InvalidType(_) => "INVALID_TYPE",
            QueryError::InvalidFilter(_) => "INVALID_QUERY_FILTER_OPERATOR",
            QueryError::OutOfRange(_) => "NUMBER_OUTSIDE_VALID_RANGE",
        }
    }
}
