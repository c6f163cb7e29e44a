//! Events without a schema id: the schema of a `/data/ChangeEvents` event, found from its entity.
//!
//! Real orgs deliver the events of `/data/ChangeEvents` with a blank `schema_id`, and `GetSchema`
//! refuses a blank id (pozil/pub-sub-api-node-client#34, forcedotcom/pub-sub-api#63).
//!
//! Contract: [`entity_of`] reads the entity's name from the payload: the first value of every
//! change event is its `ChangeEventHeader`, whose first field is `entityName` (the real captures
//! of pozil/pub-sub-api-node-client#27 and #36 start so). [`EntitySchemas::schema_id`] finds that
//! entity's schema through `GetTopic` on its own channel (`/data/AccountChangeEvent`,
//! `/data/Foo__ChangeEvent` for `Foo__c`), once per entity, and again when asked to refresh (the
//! entity's schema may have changed since). The processor then decodes the payload with that
//! schema, which must hold `entityName` first in its header and consume the payload exactly:
//! otherwise, or when the entity's channel is unknown, the event is dead-lettered with the reason
//! (stage `schema`), never guessed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::dead_letters::DeadLetter;
use super::reader::renew_session;
use super::setup::Shared;
use crate::config::is_api_name;
use crate::kafka::headers::DeadLetterStage;
use crate::retry::{Backoff, Directive, sleep_or_cancel};
use crate::salesforce::auth::AuthError;
use crate::source::cdc;

/// A dead letter of stage `schema` for an event without a schema id.
fn refused(reason: String) -> Option<DeadLetter> {
    Some(DeadLetter {
        stage: DeadLetterStage::Schema,
        reason: format!("the schema id is blank: {reason}"),
    })
}

/// The entity a change event payload names first, when it is an API name.
pub(super) fn entity_of(payload: &[u8]) -> Result<&str, Option<DeadLetter>> {
    cdc::leading_string(payload)
        .filter(|entity| is_api_name(entity))
        .ok_or_else(|| refused("its payload does not start with an entity name".to_owned()))
}

/// The change event channel of an entity: `Account` → `/data/AccountChangeEvent`, a custom
/// object `Foo__c` → `/data/Foo__ChangeEvent` (Change Data Capture Developer Guide, "Change Event
/// Object Name").
pub(super) fn channel_of(entity: &str) -> String {
    match entity.strip_suffix("__c") {
        Some(base) => format!("/data/{base}__ChangeEvent"),
        None => format!("/data/{entity}ChangeEvent"),
    }
}

/// Entity → the schema id `GetTopic` gave for its channel (a channel's processor owns one).
#[derive(Debug, Default)]
pub(super) struct EntitySchemas {
    ids: HashMap<String, String>,
}

impl EntitySchemas {
    /// The schema id of `entity`'s change events: cached, or (when missing or `refresh`) asked
    /// of the org with `GetTopic`, retried while the org is unavailable, after a re-login
    /// (single flight with the reader's) when it refuses the session. `Err(None)`: cancelled, or
    /// the re-login refused for good (then in `login_refused`).
    pub(super) async fn schema_id(
        &mut self,
        shared: &Shared,
        entity: &str,
        refresh: bool,
        login_refused: &Mutex<Option<AuthError>>,
        cancel: &CancellationToken,
    ) -> Result<String, Option<DeadLetter>> {
        if let Some(id) = self.ids.get(entity).filter(|_| !refresh) {
            return Ok(id.clone());
        }
        let channel = channel_of(entity);
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let topic = loop {
            let used = shared.session.current();
            let err = match shared.pubsub.get_topic(&channel).await {
                Ok(topic) => break topic,
                Err(err) => err,
            };
            match err.directive() {
                Directive::Retry => {}
                Directive::Reauthenticate => {
                    if let Err(login) = renew_session(shared, &used, cancel).await {
                        if let Ok(mut slot) = login_refused.lock() {
                            *slot = Some(login);
                        }
                        return Err(None);
                    }
                }
                _ => {
                    return Err(refused(format!(
                        "its entity {entity}'s channel {channel}: {err}"
                    )));
                }
            }
            let delay = backoff.next_delay();
            warn!(error = %err, ?delay, %channel, "GetTopic failed; retrying");
            if !sleep_or_cancel(delay, cancel).await {
                return Err(None);
            }
        };
        if topic.schema_id.trim().is_empty() {
            return Err(refused(format!(
                "GetTopic gave no schema id for {entity}'s channel {channel}"
            )));
        }
        self.ids.insert(entity.to_owned(), topic.schema_id.clone());
        Ok(topic.schema_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_of_standard_and_custom_objects() {
        assert_eq!(channel_of("Account"), "/data/AccountChangeEvent");
        assert_eq!(channel_of("Invoice__c"), "/data/Invoice__ChangeEvent");
    }

    /// The payload of the custom-channel capture in pozil/pub-sub-api-node-client#27 starts
    /// with its entity, `ActionVente__c`.
    #[test]
    fn the_entity_is_read_from_a_real_payload() {
        let head = [
            28u8, 65, 99, 116, 105, 111, 110, 86, 101, 110, 116, 101, 95, 95, 99, 2, 36, 97,
        ];
        assert_eq!(entity_of(&head).ok(), Some("ActionVente__c"));
        assert!(entity_of(&[]).is_err());
        assert!(
            entity_of(&[6, b'a', b' ', b'b']).is_err(),
            "not an API name"
        );
    }
}
