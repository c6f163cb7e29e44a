//! The reader: a channel's `Subscribe` stream, handed to the processor in replay order.
//!
//! Contract: [`read_stream`] owns the stream and sends each event (and each keepalive's
//! `latest_replay_id`) through a bounded channel; the Pub/Sub client tops credits up only as
//! events are taken, so a slow Kafka stops the stream instead of filling memory. A failed stream
//! is rebuilt (backoff with jitter, re-login on auth errors) from the last replay id handed on,
//! so nothing is skipped or repeated. A rejected replay id applies `source.replay_rejected` once
//! per attempt (an [`Item::Gap`] first, then the preset), or stops the pipeline (`fail`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::error::AttemptError;
use super::setup::{LOGIN_STEP, Shared};
use crate::config::{ChannelConfig, ReplayRejectedPolicy};
use crate::ops::telemetry::ChannelStats;
use crate::retry::{Backoff, Directive, sleep_or_cancel};
use crate::salesforce::proto::ConsumerEvent;
use crate::salesforce::pubsub::{Delivery, ReplayStart};

/// What the reader hands the processor.
pub(super) enum Item {
    /// An event, with its replay id (shared with the event's own, not copied).
    Event {
        event: ConsumerEvent,
        replay_id: Bytes,
    },
    /// An empty FetchResponse: the position moved to this replay id.
    Keepalive(Bytes),
    /// The org rejected `rejected`; the stream resumed from `resumed_from`: events may be missing.
    Gap {
        rejected: Bytes,
        resumed_from: ReplayRejectedPolicy,
        reason: String,
    },
}

/// Owns the Subscribe stream; rebuilds it on transient errors, applies the replay-rejected
/// policy once.
pub(super) async fn read_stream(
    shared: &Shared,
    channel: &ChannelConfig,
    stats: &ChannelStats,
    start: ReplayStart,
    tx: mpsc::Sender<Item>,
    cancel: &CancellationToken,
) -> Result<(), AttemptError> {
    // Where a rebuilt stream resumes: after the last replay id handed to the processor (which
    // will produce it), or the attempt's start.
    let mut position = start;
    let source = shared.source();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
    let mut policy_applied = false;
    let _down = stats.stream_down_on_drop();
    loop {
        let start = position.clone();
        // The session the stream opens with: the one to renew if the org refuses it.
        let used = shared.session.current();
        let opened = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            opened = shared.pubsub.subscribe(&channel.name, start.clone(), source.batch_size, source.stream_idle_timeout) => opened,
        };
        let error = match opened {
            Err(err) => err,
            Ok(mut subscription) => {
                stats.streams_opened.fetch_add(1, Ordering::Relaxed);
                stats.stream_up.store(true, Ordering::Relaxed);
                debug!("subscribed");
                loop {
                    let delivery = tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        delivery = subscription.next() => delivery,
                    };
                    let delivery = match delivery {
                        Ok(d) => d,
                        Err(err) => break err,
                    };
                    backoff.reset();
                    let (item, replay_id) = match delivery {
                        Delivery::Event(event) => {
                            stats.events_received.fetch_add(1, Ordering::Relaxed);
                            stats.note_event();
                            let replay_id = event.replay_id.clone();
                            let item = Item::Event {
                                event,
                                replay_id: replay_id.clone(),
                            };
                            (item, replay_id)
                        }
                        Delivery::Keepalive { latest_replay_id } => {
                            stats.keepalives.fetch_add(1, Ordering::Relaxed);
                            (Item::Keepalive(latest_replay_id.clone()), latest_replay_id)
                        }
                    };
                    if tx.send(item).await.is_err() {
                        return Ok(()); // the processor stopped; it reports why
                    }
                    if !replay_id.is_empty() {
                        position = ReplayStart::After(replay_id);
                    }
                }
            }
        };
        stats.stream_failures.fetch_add(1, Ordering::Relaxed);
        stats.stream_up.store(false, Ordering::Relaxed);
        match error.directive() {
            Directive::ReplayRejected
                if source.replay_rejected != ReplayRejectedPolicy::Fail && !policy_applied =>
            {
                // Once per attempt: a preset cannot be rejected, so this never loops.
                policy_applied = true;
                let rejected = match start {
                    ReplayStart::After(id) => id,
                    _ => Bytes::new(),
                };
                let resumed_from =
                    rejected_policy(source.replay_rejected, channel, &error, &rejected)?;
                error!(error = %error, replay_id = %hex::encode(&rejected), ?resumed_from, "the org rejected the replay id; resuming: events may be missing");
                stats.replay_gaps.fetch_add(1, Ordering::Relaxed);
                let gap = Item::Gap {
                    rejected,
                    resumed_from,
                    reason: error.to_string(),
                };
                if tx.send(gap).await.is_err() {
                    return Ok(());
                }
                position = match resumed_from {
                    ReplayRejectedPolicy::Latest => ReplayStart::Latest,
                    _ => ReplayStart::Earliest,
                };
                continue;
            }
            Directive::Reauthenticate => {
                warn!(error = %error, "session rejected; logging in again");
                if let Err(err) = renew_session(shared, &used, cancel).await {
                    return Err(AttemptError::Stop(err.into()));
                }
            }
            Directive::Retry => {}
            // A rejected replay id past its policy, or what retrying cannot fix
            // (`classify_status` gives nothing else).
            _ => return Err(AttemptError::Stop(error.into())),
        }
        let delay = backoff.next_delay();
        warn!(error = %error, ?delay, attempt = backoff.attempts(), "stream failed; resubscribing");
        if !sleep_or_cancel(delay, cancel).await {
            return Ok(());
        }
    }
}

/// What a rejected replay id leads to under `policy`: `resync` ends the attempt (the supervisor
/// re-reads what changed since the checkpoint) unless the channel's objects cannot be told
/// (Platform Events, `/data/ChangeEvents` without `snapshot_objects`): then `earliest`.
fn rejected_policy(
    policy: ReplayRejectedPolicy,
    channel: &ChannelConfig,
    error: &crate::salesforce::pubsub::PubSubError,
    rejected: &Bytes,
) -> Result<ReplayRejectedPolicy, AttemptError> {
    match policy {
        ReplayRejectedPolicy::Resync if !channel.snapshot_objects().is_empty() => {
            error!(error = %error, replay_id = %hex::encode(rejected), "the org rejected the replay id; resyncing");
            Err(AttemptError::Resync {
                rejected: rejected.clone(),
                reason: error.to_string(),
            })
        }
        ReplayRejectedPolicy::Resync => Ok(ReplayRejectedPolicy::Earliest),
        policy => Ok(policy),
    }
}

/// Logs in again after the org refused `refused` (single flight with the other tasks of the
/// source). A login failure that waiting can fix is reported (`/readyz`) and left to the next
/// try; one it cannot is returned. Cancellation ends the wait quietly.
pub(super) async fn renew_session(
    shared: &Shared,
    refused: &std::sync::Arc<crate::salesforce::auth::Session>,
    cancel: &CancellationToken,
) -> Result<(), crate::salesforce::auth::AuthError> {
    let retrying = &shared.stats.retrying;
    let renewed = tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        renewed = shared.session.renew(&shared.authenticator, refused) => renewed,
    };
    match renewed {
        Ok(_) => {
            retrying.recovered(LOGIN_STEP);
            Ok(())
        }
        Err(err) if err.directive() == Directive::Retry => {
            let reason = crate::ops::telemetry::error_chain(&err);
            warn!(error = %reason, "re-login failed; retrying");
            retrying.failed(LOGIN_STEP, &reason);
            Ok(())
        }
        Err(err) => Err(err),
    }
}
