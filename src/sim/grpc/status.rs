//! The errors of the Pub/Sub API as Salesforce sends them: a `tonic::Status` whose message ends
//! in `rpcId: <uuid>` and whose metadata (sent as trailers) carries `error-code`
//! (`sfdc.platform.eventbus.grpc.…`) and `rpc-id`; and the rpc ids themselves.

use tonic::metadata::AsciiMetadataValue;
use tonic::{Code, Status};

/// Prefix of every Salesforce Pub/Sub error code.
pub const ERROR_CODE_PREFIX: &str = "sfdc.platform.eventbus.grpc.";

/// A Salesforce-style error status.
pub fn sf_status(code: Code, error_code: &str, message: &str, rpc_id: &str) -> Status {
    let mut status = Status::new(code, format!("{message} rpcId: {rpc_id}"));
    let md = status.metadata_mut();
    if let Ok(v) = format!("{ERROR_CODE_PREFIX}{error_code}").parse::<AsciiMetadataValue>() {
        md.insert("error-code", v);
    }
    if let Ok(v) = rpc_id.parse::<AsciiMetadataValue>() {
        md.insert("rpc-id", v);
    }
    status
}

pub(super) fn new_rpc_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
