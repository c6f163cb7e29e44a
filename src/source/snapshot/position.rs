//! The stream position a snapshot hands off to, fixed before the snapshot reads anything.
//!
//! Contract: [`fix_position`] opens a `Subscribe` stream of the channel with the `LATEST` preset
//! and one credit, and takes the first answer: an event (its replay id: the event is older than
//! the snapshot, which starts after it arrived and so reads its effect) or an empty keepalive
//! (its `latest_replay_id`). Streaming after that replay id once the snapshot is done misses no
//! change made after the snapshot began. The wait is the org's: Salesforce answers a quiet
//! channel with a keepalive "within 270 seconds" (Pub/Sub API Developer Guide, "Subscribe RPC
//! Method", "Subscribe Keepalive Behavior"), a busy one at its next event. A stream that fails is
//! opened again (backoff; a refused session renewed); what retrying cannot fix stops. An empty
//! replay id (a channel that never carried an event) is kept as empty: the stream then starts
//! from the earliest retained event, which holds only events newer than the probe.

use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::super::error::AttemptError;
use super::super::reader::renew_session;
use super::super::setup::Shared;
use crate::retry::{Backoff, Directive, sleep_or_cancel};
use crate::salesforce::pubsub::{Delivery, ReplayStart};

/// The replay id to stream after once the snapshot is done; `Ok(None)`: cancelled.
pub(super) async fn fix_position(
    shared: &Shared,
    channel: &str,
    cancel: &CancellationToken,
) -> Result<Option<Bytes>, AttemptError> {
    let idle = shared.source().stream_idle_timeout;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
    info!(
        channel,
        "fixing the stream position before the snapshot (Salesforce answers a quiet channel within 270 s)"
    );
    loop {
        let used = shared.session.current();
        let attempt = async {
            let mut subscription = shared
                .pubsub
                .subscribe(channel, ReplayStart::Latest, 1, idle)
                .await?;
            subscription.next().await
        };
        let answer = tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            answer = attempt => answer,
        };
        let error = match answer {
            Ok(Delivery::Event(event)) => return Ok(Some(event.replay_id)),
            Ok(Delivery::Keepalive { latest_replay_id }) => return Ok(Some(latest_replay_id)),
            Err(error) => error,
        };
        match error.directive() {
            Directive::Reauthenticate => {
                warn!(error = %error, "session rejected while fixing the position; logging in again");
                renew_session(shared, &used, cancel)
                    .await
                    .map_err(|e| AttemptError::Stop(e.into()))?;
            }
            Directive::Retry => {}
            _ => return Err(AttemptError::Stop(error.into())),
        }
        let delay = backoff.next_delay();
        warn!(error = %error, ?delay, "fixing the stream position failed; trying again");
        if !sleep_or_cancel(delay, cancel).await {
            return Ok(None);
        }
    }
}
