//! The clients of Salesforce: login ([`auth`]), the trust settings of both transports ([`tls`]),
//! the Pub/Sub API over gRPC ([`pubsub`], generated from the verbatim proto in [`proto`]), the
//! REST API ([`rest`]), and the two value formats every part shares: record Ids ([`sfid`]) and
//! datetimes ([`sftime`]).
//!
//! Contract: nothing here knows Kafka, the source or the sink; they call in, never the other way.
//! The checks of the `salesforce` config section that need this knowledge are here ([`checks`]),
//! handed to the config's validation, which imports no stage.

pub mod auth;
pub(crate) mod checks;
pub mod proto;
pub mod pubsub;
pub mod rest;
pub mod sfid;
pub mod sftime;
pub mod tls;
