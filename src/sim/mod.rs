//! The simulated Salesforce org: a product feature for demos, local development and users' CI.
//!
//! Contract: [`SimOrg::start`] binds two servers on loopback — the Pub/Sub API (gRPC, the real
//! `eventbus.v1` proto, HTTP/2) and the org's instance/login URL (HTTP/1.1: OAuth token
//! and userinfo endpoints, the REST API a write-back sink uses — sObject rows and rows by
//! External Id, sObject Collections, Composite, SOQL query, limits, describe and describe
//! global, with compound fields written as components and read as Salesforce reads them — and
//! `/sim/*` endpoints).
//! Record changes made through the Rust API or REST emit Change Data Capture events exactly as
//! the Pub/Sub API delivers them (Avro body, bitmap-encoded header fields, transactions, merged
//! multi-record events; REST changes carry `changeOrigin`
//! `com/salesforce/api/rest/{ver};client=<tag>` and the token's user as `commitUser`); platform
//! events can be published through the API or the `Publish` RPC. Events live in a log with a
//! retention window and are served with the documented flow control, replay, keepalive and error
//! semantics (error codes in the `error-code` trailer).
//!
//! Transport: plaintext (`http://`) by default; with [`SimConfig::tls`] both servers speak TLS
//! (`https://`) with that identity, e.g. one of a generated [`tls::TestCa`].
//!
//! Users: tokens of the `password` grant act as [`SimConfig::user_id`], those of the
//! `client_credentials` grant as [`SimConfig::integration_user_id`] (the connected app's "Run As"
//! user); Rust-API changes are made as `user_id`.
//!
//! Fault knobs (Rust API, and `POST /sim/faults` for `forcebridge sim`):
//! [`SimOrg::set_rest_latency`], [`SimOrg::fail_next_requests`], [`SimOrg::lock_rows`],
//! [`SimOrg::add_validation_rule`], [`SimOrg::set_api_usage`]/[`SimOrg::set_api_limit`]; for the
//! streams [`SimOrg::reset_streams`], [`SimOrg::revoke_tokens`], [`SimOrg::inject_raw_event`],
//! [`SimOrg::reset_stream_every`], [`SimOrg::refuse_subscriptions_for`],
//! [`SimOrg::silence_streams`] (and a stream ends when its token expires); gap and overflow
//! events ([`gap`]) [`SimOrg::emit_gap`], [`SimOrg::emit_overflow`], [`SimOrg::emit_gaps_for`]
//! and [`SimConfig::overflow_threshold`]; the token endpoint [`SimOrg::fail_next_logins`]
//! ([`LoginFault`]), [`SimOrg::clear_login_faults`], and the count [`SimOrg::logins`].
//!
//! Files: `handle` (the [`SimOrg`] Rust API, [`Transaction`]), `start` (binding the listeners,
//! spawning the servers), `faults` (the fault knobs, for the Rust API and `POST /sim/faults`),
//! `login_faults` (the token endpoint's faults),
//! `shared` (state of the handle and both servers; publishing events, channels, tokens), `config`
//! ([`SimConfig`]), `error` ([`SimError`], SOQL errors), `util` (clock, locks, `changeOrigin`),
//! `cli` (`forcebridge sim`); `catalog` (schemas and ids), `avro_out` (Avro writer), `ids`
//! (record Ids), `bitmap` (header bitmaps); `org/` (records and rules in `state`, changes in
//! `change`, field checks in `fields`, transactions in `stage` and `record`, the CDC encoding of
//! changes into events in `cdc`); `gap` (gap and overflow events), `bus` (log, channels, replay,
//! retention); `grpc/` (Pub/Sub service: RPCs in `mod`, auth and topics in `service`, Subscribe
//! streams and flow control in `subscribe`, stream fault knobs in `stream_faults`, error statuses
//! in `status`); `http` (server, OAuth, `/sim/*`), `jwt` and `jwt_demo` (JWT bearer grant, demo
//! key); `rest/` (routing in `mod`, sObject rows and rows by External Id in `rows`, query in
//! `query` and `cursors` (also `queryAll`, `COUNT()`), Bulk API 2.0 query jobs in `bulk`,
//! `bulk_jobs` and `bulk_csv`, the `deleted`/`updated` replication resources in `replication`,
//! sObject Collections in `collections`, Composite in `composite`, describe in `describe`, API
//! usage, refusals and limits in `limits`; their shared pieces in `call`, `reply`, `render`);
//! `soql` (the query subset), `fieldmeta` (the fields as REST and describe see them: types,
//! compound components, formula fields), `tls` (test CA, TLS listener).
//!
//! Known differences from a real org: the table in `README.md` ("Known differences from a real
//! org"), kept current: behaviour, what Salesforce does with its
//! source, what the simulated org does, and why it cannot matter to forcebridge (a difference
//! that could is a bug to fix). Among them: only the SOQL subset of `soql` is understood; a
//! Bulk API 2.0 query job completes when it is looked at after its knob's duration;
//! Composite subrequests always run in order (`collateSubrequests` is ignored); describe serves
//! the keys clients decide by, with fixed values for the rest.

pub(crate) mod avro_out;
pub mod bitmap;
pub(crate) mod bus;
pub mod catalog;
mod cli;
mod config;
mod error;
mod faults;
pub(crate) mod fieldmeta;
pub mod gap;
mod grpc;
mod handle;
mod http;
pub mod ids;
pub mod jwt;
mod jwt_demo;
mod login_faults;
mod managed;
pub mod org;
pub mod replay;
mod rest;
mod shared;
mod soap;
pub(crate) mod soql;
mod start;
#[cfg(test)]
mod tests;
pub mod tls;
mod util;

pub use self::cli::{SimArgs, run_cli};
pub use self::config::SimConfig;
pub use self::error::SimError;
pub use self::gap::GapKind;
pub use self::grpc::StreamFaultCounts;
pub use self::handle::{SimOrg, Transaction};
pub use self::login_faults::LoginFault;
pub use self::rest::limits::RestFault;
pub(crate) use self::util::{now_ms, until_next_second};
