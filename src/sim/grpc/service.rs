//! What every RPC of the Pub/Sub service checks first: authentication from the `accesstoken`,
//! `instanceurl` and `tenantid` metadata (`UNAUTHENTICATED` for a missing header or a token that
//! is unknown, expired or for another instance/org), and the topic's channel (`NOT_FOUND` for a
//! topic the org doesn't have).

use std::sync::Arc;

use tonic::{Code, Request, Status};

use super::status::sf_status;
use crate::sim::bus::Channel;
use crate::sim::ids;
use crate::sim::shared::{Session, Shared};
use crate::sim::util::lock;

/// The `eventbus.v1.PubSub` service of one org (its RPCs in `grpc`, Subscribe streams in
/// `subscribe`).
pub(super) struct PubSubService {
    pub(super) shared: Arc<Shared>,
}

impl PubSubService {
    pub(super) fn authenticate<T>(
        &self,
        req: &Request<T>,
        rpc_id: &str,
    ) -> Result<Session, Status> {
        let md = req.metadata();
        let get = |k: &str| {
            md.get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        let (Some(token), Some(url), Some(tenant)) =
            (get("accesstoken"), get("instanceurl"), get("tenantid"))
        else {
            return Err(sf_status(
                Code::Unauthenticated,
                "service.auth.headers.invalid",
                "Authentication headers are missing or invalid: accesstoken, instanceurl and tenantid are required.",
                rpc_id,
            ));
        };
        let auth_error = || {
            sf_status(
                Code::Unauthenticated,
                "service.auth.error",
                "An authentication exception occurred. Ensure that the access token, instance URL and tenant ID are valid and the token hasn't expired.",
                rpc_id,
            )
        };
        let session = self.shared.session(token).ok_or_else(auth_error)?;
        let url_ok = url.trim_end_matches('/') == self.shared.instance_url;
        let org_ok = ids::normalize(tenant).as_deref() == Some(self.shared.config.org_id.as_str());
        if !url_ok || !org_ok || !token.starts_with(&self.shared.config.org_id) {
            return Err(auth_error());
        }
        Ok(session)
    }

    pub(super) fn channel(&self, topic: &str, rpc_id: &str) -> Result<Channel, Status> {
        if topic.trim().is_empty() {
            return Err(sf_status(
                Code::InvalidArgument,
                "topic.validation.empty",
                "The topic name can't be blank.",
                rpc_id,
            ));
        }
        self.shared.resolve_channel(topic).ok_or_else(|| {
            sf_status(
                Code::NotFound,
                "topic.not.found",
                &format!(
                    "The topic information for org {} and topic {topic} not found.",
                    self.shared.config.org_id
                ),
                rpc_id,
            )
        })
    }

    /// The topic's current schema id ("" for channels spanning several entities).
    pub(super) fn topic_schema_id(&self, channel: &Channel) -> String {
        let org = lock(&self.shared.org);
        let schema = match channel.live() {
            Channel::Entity(e) => org.object_schema(e),
            Channel::Custom(members) if members.len() == 1 => org.object_schema(&members[0]),
            Channel::PlatformEvent(p) => org.platform_event_schema(p),
            Channel::AllChanges | Channel::Custom(_) | Channel::Replayed { .. } => None,
        };
        schema.map(|s| s.id.clone()).unwrap_or_default()
    }
}
