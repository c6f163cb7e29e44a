//! The acknowledgement window: which replay id (or offset) is durable.
//!
//! # Contract
//!
//! * [`AckWindow`] tracks, per channel (or per partition on the sink side), the ordered window of
//!   events whose Kafka records are in flight. The *durable* replay id is the replay id of the
//!   newest event such that it and every earlier event of the channel are complete: sealed, and
//!   every record registered for it acknowledged by the broker. Events may complete out of order
//!   (their records go to different partitions or topics); the durable id only ever moves forward
//!   in channel order.
//! * The first delivery failure is latched: the durable id never moves past the failed event, so
//!   a restart replays it (at-least-once; the sink side must tolerate duplicates).
//! * An [`EventHandle`] or [`AckToken`] dropped unresolved is a failure, never a silent success.
//!
//! It knows nothing of Kafka clients: the producer resolves tokens from its delivery callback
//! ([`crate::kafka::Producer::send`]), the source's checkpointer reads [`AckWindow::durable`],
//! the sink's offsets use it per partition.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;
// ---------------------------------------------------------------------------------------------
// AckWindow
// ---------------------------------------------------------------------------------------------

/// The ordered window of in-flight events of one channel (see the module docs for the contract).
///
/// Cheap to clone (an `Arc` inside); `Send + Sync`.
#[derive(Clone, Default)]
pub struct AckWindow {
    shared: Arc<WindowShared>,
}

#[derive(Default)]
struct WindowShared {
    state: Mutex<WindowState>,
    /// Woken when the window becomes idle (empty) or the first failure is recorded.
    idle: Notify,
}

#[derive(Default)]
struct WindowState {
    /// Sequence number of `events[0]`.
    front_seq: u64,
    /// Events not yet durable, in channel order; `events[i]` has sequence `front_seq + i`.
    events: VecDeque<PendingEvent>,
    durable: Option<Bytes>,
    /// The newest time noted on a durable event ([`EventHandle::note_time`]).
    durable_at: Option<i64>,
    failure: Option<String>,
}

struct PendingEvent {
    replay_id: Bytes,
    /// The event's time (a change's commit timestamp), epoch ms, when noted.
    at: Option<i64>,
    /// Tokens handed out and not yet resolved.
    outstanding: u32,
    sealed: bool,
    failed: bool,
}

impl PendingEvent {
    fn is_complete(&self) -> bool {
        self.sealed && self.outstanding == 0 && !self.failed
    }
}

impl WindowShared {
    fn lock(&self) -> MutexGuard<'_, WindowState> {
        // A panic while holding the lock cannot leave the state half-updated in a way that breaks
        // the invariants we rely on (each update is a few field writes), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `update` to the event `seq`, then advances the durable cursor.
    fn update(&self, seq: u64, update: impl FnOnce(&mut PendingEvent, &mut Option<String>)) {
        let wake = {
            let mut state = self.lock();
            let WindowState {
                front_seq,
                events,
                failure,
                ..
            } = &mut *state;
            let Some(event) = seq
                .checked_sub(*front_seq)
                .and_then(|i| events.get_mut(i as usize))
            else {
                // Unreachable by construction: an event leaves the window only once complete, and
                // it cannot complete while a handle or token for it exists.
                debug_assert!(false, "ack window: update for an event no longer in flight");
                return;
            };
            let had_failure = failure.is_some();
            update(event, failure);
            let newly_failed = !had_failure && failure.is_some();
            state.advance() || newly_failed
        };
        if wake {
            self.idle.notify_waiters();
        }
    }
}

impl WindowState {
    /// Pops complete events off the front; returns true when the window became empty.
    fn advance(&mut self) -> bool {
        let mut popped = false;
        while self.events.front().is_some_and(PendingEvent::is_complete) {
            let event = self.events.pop_front().expect("front checked above");
            self.durable = Some(event.replay_id);
            if event.at.is_some() {
                self.durable_at = self.durable_at.max(event.at);
            }
            self.front_seq += 1;
            popped = true;
        }
        popped && self.events.is_empty()
    }
}

impl AckWindow {
    /// An empty window.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the next event of the channel (calls must follow channel order).
    ///
    /// Records are added with [`EventHandle::token`]; the event completes once sealed and every
    /// token is acknowledged. An event with no records (filtered, or a keepalive's
    /// `latest_replay_id`) completes on [`EventHandle::seal`].
    pub fn begin(&self, replay_id: Bytes) -> EventHandle {
        let mut state = self.shared.lock();
        let seq = state.front_seq + state.events.len() as u64;
        state.events.push_back(PendingEvent {
            replay_id,
            at: None,
            outstanding: 0,
            sealed: false,
            failed: false,
        });
        EventHandle {
            shared: Some(self.shared.clone()),
            seq,
        }
    }

    /// The newest durable replay id so far (`None` if nothing is durable yet).
    pub fn durable(&self) -> Option<Bytes> {
        self.shared.lock().durable.clone()
    }

    /// The newest time noted on a durable event (epoch ms): every change committed before it
    /// is durable too, as far as the events' order goes (`None` if no time was noted).
    pub fn durable_at(&self) -> Option<i64> {
        self.shared.lock().durable_at
    }

    /// Events registered and not yet durable.
    pub fn in_flight(&self) -> usize {
        self.shared.lock().events.len()
    }

    /// The first delivery failure, if any. Once failed, the durable id never moves past the
    /// failed event.
    pub fn failure(&self) -> Option<String> {
        self.shared.lock().failure.clone()
    }

    /// Resolves when no event is in flight or a failure occurred (drain on shutdown).
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.shared.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.shared.lock();
                if state.events.is_empty() || state.failure.is_some() {
                    return;
                }
            }
            notified.await;
        }
    }
}

impl std::fmt::Debug for AckWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("AckWindow")
            .field("in_flight", &state.events.len())
            .field("durable", &state.durable.as_ref().map(hex::encode))
            .field("failure", &state.failure)
            .finish()
    }
}

fn record_failure(event: &mut PendingEvent, failure: &mut Option<String>, reason: &str) {
    event.failed = true;
    if failure.is_none() {
        *failure = Some(format!(
            "event with replay id {}: {reason}",
            hex::encode(&event.replay_id)
        ));
    }
}

/// One registered event; hands out [`AckToken`]s for its records and is sealed once all of its
/// records have been handed to the producer.
///
/// Dropping a handle without sealing it marks the event as failed (it was abandoned half-way).
pub struct EventHandle {
    shared: Option<Arc<WindowShared>>,
    seq: u64,
}

impl EventHandle {
    /// A token for one more record of this event; the event cannot complete until it is acked.
    pub fn token(&self) -> AckToken {
        let shared = self.shared.clone().expect("handle is live until sealed");
        shared.update(self.seq, |event, _| event.outstanding += 1);
        AckToken {
            shared: Some(shared),
            seq: self.seq,
        }
    }

    /// Notes the event's time (a change's commit timestamp, a keepalive's arrival), epoch ms:
    /// [`AckWindow::durable_at`] reports it once the event is durable.
    pub fn note_time(&self, at_ms: i64) {
        if let Some(shared) = &self.shared {
            shared.update(self.seq, |event, _| event.at = Some(at_ms));
        }
    }

    /// Declares that no more records will be added; the event completes once every token is acked.
    pub fn seal(mut self) {
        if let Some(shared) = self.shared.take() {
            shared.update(self.seq, |event, _| event.sealed = true);
        }
    }
}

impl Drop for EventHandle {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.update(self.seq, |event, failure| {
                event.sealed = true;
                record_failure(event, failure, "abandoned before it was sealed");
            });
        }
    }
}

impl std::fmt::Debug for EventHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHandle")
            .field("seq", &self.seq)
            .finish()
    }
}

/// The acknowledgement of one Kafka record. `Send + Sync + 'static`.
///
/// Dropping a token without calling [`AckToken::ack`] counts as a delivery failure.
pub struct AckToken {
    shared: Option<Arc<WindowShared>>,
    seq: u64,
}

impl AckToken {
    /// Resolves the record: `Ok` once the broker acknowledged it, `Err(reason)` if it failed.
    pub fn ack(mut self, result: Result<(), String>) {
        if let Some(shared) = self.shared.take() {
            Self::resolve(&shared, self.seq, result);
        }
    }

    fn resolve(shared: &WindowShared, seq: u64, result: Result<(), String>) {
        shared.update(seq, |event, failure| {
            event.outstanding -= 1;
            if let Err(reason) = result {
                record_failure(event, failure, &reason);
            }
        });
    }
}

impl Drop for AckToken {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            Self::resolve(
                &shared,
                self.seq,
                Err("record dropped without a delivery report".to_owned()),
            );
        }
    }
}

impl std::fmt::Debug for AckToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckToken").field("seq", &self.seq).finish()
    }
}
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn the_durable_time_is_the_newest_time_of_durable_events_only() {
        let w = AckWindow::new();
        let e1 = w.begin(b("1"));
        e1.note_time(100);
        let t1 = e1.token();
        e1.seal();
        let e2 = w.begin(b("2"));
        e2.note_time(300);
        e2.seal();
        let e3 = w.begin(b("3")); // no time noted (a dead letter's event, say)
        assert_eq!(
            w.durable_at(),
            None,
            "nothing durable yet: e2 waits behind e1"
        );
        t1.ack(Ok(()));
        assert_eq!(w.durable(), Some(b("2")));
        assert_eq!(w.durable_at(), Some(300));
        e3.seal();
        assert_eq!(w.durable(), Some(b("3")));
        assert_eq!(
            w.durable_at(),
            Some(300),
            "an event without a time keeps the last one"
        );
        let e4 = w.begin(b("4"));
        e4.note_time(200);
        e4.seal();
        assert_eq!(w.durable_at(), Some(300), "never moves back");
    }

    #[test]
    fn empty_window_has_nothing_durable() {
        let w = AckWindow::new();
        assert_eq!(w.durable(), None);
        assert_eq!(w.in_flight(), 0);
        assert_eq!(w.failure(), None);
    }

    #[test]
    fn zero_record_events_complete_on_seal() {
        let w = AckWindow::new();
        w.begin(b("1")).seal();
        assert_eq!(w.durable(), Some(b("1")));
        let h = w.begin(b("2"));
        assert_eq!(w.in_flight(), 1);
        assert_eq!(w.durable(), Some(b("1")));
        h.seal();
        assert_eq!(w.durable(), Some(b("2")));
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn out_of_order_acks_advance_in_channel_order() {
        let w = AckWindow::new();
        let mut tokens = Vec::new();
        for id in ["1", "2", "3"] {
            let h = w.begin(b(id));
            tokens.push(h.token());
            tokens.push(h.token());
            h.seal();
        }
        let mut it = tokens.into_iter();
        let (a1, a2, b1, b2, c1, c2) = (
            it.next().unwrap(),
            it.next().unwrap(),
            it.next().unwrap(),
            it.next().unwrap(),
            it.next().unwrap(),
            it.next().unwrap(),
        );
        c1.ack(Ok(()));
        c2.ack(Ok(()));
        b1.ack(Ok(()));
        assert_eq!(w.durable(), None, "event 1 is not complete");
        a2.ack(Ok(()));
        assert_eq!(w.durable(), None);
        a1.ack(Ok(()));
        assert_eq!(
            w.durable(),
            Some(b("1")),
            "event 2 still has a record in flight"
        );
        assert_eq!(w.in_flight(), 2);
        b2.ack(Ok(()));
        assert_eq!(w.durable(), Some(b("3")));
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn seal_after_acks_and_before_acks() {
        let w = AckWindow::new();
        // Acks before seal: not complete until sealed.
        let h = w.begin(b("1"));
        h.token().ack(Ok(()));
        assert_eq!(w.durable(), None, "unsealed event must not complete");
        let t = h.token();
        t.ack(Ok(()));
        h.seal();
        assert_eq!(w.durable(), Some(b("1")));
        // Seal before acks: complete on the last ack.
        let h = w.begin(b("2"));
        let t = h.token();
        h.seal();
        assert_eq!(w.durable(), Some(b("1")));
        t.ack(Ok(()));
        assert_eq!(w.durable(), Some(b("2")));
    }

    #[test]
    fn failure_stops_the_cursor() {
        let w = AckWindow::new();
        let h1 = w.begin(b("1"));
        let t1 = h1.token();
        h1.seal();
        let h2 = w.begin(b("2"));
        let t2 = h2.token();
        h2.seal();
        w.begin(b("3")).seal();
        t2.ack(Err("broker said no".into()));
        let failure = w.failure().expect("failure recorded");
        assert!(failure.contains("broker said no"), "{failure}");
        assert!(failure.contains(&hex::encode("2")), "{failure}");
        // Earlier events may still complete...
        t1.ack(Ok(()));
        assert_eq!(w.durable(), Some(b("1")));
        // ...but never past the failed one.
        let h4 = w.begin(b("4"));
        h4.seal();
        assert_eq!(w.durable(), Some(b("1")));
        assert_eq!(w.in_flight(), 3);
    }

    #[test]
    fn first_failure_is_kept() {
        let w = AckWindow::new();
        let h = w.begin(b("1"));
        let (t1, t2) = (h.token(), h.token());
        h.seal();
        t1.ack(Err("first".into()));
        t2.ack(Err("second".into()));
        assert!(w.failure().unwrap().contains("first"));
    }

    #[test]
    fn dropped_token_is_a_failure() {
        let w = AckWindow::new();
        let h = w.begin(b("1"));
        drop(h.token());
        h.seal();
        assert_eq!(w.durable(), None);
        assert!(w.failure().unwrap().contains("dropped"));
    }

    #[test]
    fn dropped_handle_is_a_failure() {
        let w = AckWindow::new();
        w.begin(b("1")).seal();
        drop(w.begin(b("2")));
        w.begin(b("3")).seal();
        assert_eq!(w.durable(), Some(b("1")));
        assert!(w.failure().unwrap().contains("abandoned"));
    }

    #[test]
    fn window_is_send_sync_and_tokens_are_static() {
        fn check<T: Send + Sync + 'static>() {}
        check::<AckWindow>();
        check::<AckToken>();
        check::<EventHandle>();
    }

    #[tokio::test]
    async fn wait_idle_resolves_when_drained_or_failed() {
        let w = AckWindow::new();
        w.wait_idle().await; // empty: immediately
        let h = w.begin(b("1"));
        let t = h.token();
        h.seal();
        let waiter = tokio::spawn({
            let w = w.clone();
            async move { w.wait_idle().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        std::thread::spawn(move || t.ack(Ok(()))).join().unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("idle after last ack")
            .unwrap();

        let h = w.begin(b("2"));
        let t = h.token();
        h.seal();
        let waiter = tokio::spawn({
            let w = w.clone();
            async move { w.wait_idle().await }
        });
        t.ack(Err("boom".into()));
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("wait_idle resolves on failure")
            .unwrap();
        assert_eq!(w.in_flight(), 1);
    }
}
