//! The Pub/Sub client against the simulated org: flow-control credits, keepalives, the watchdog.

use std::time::Duration;

use forcebridge::salesforce::auth::{Session, SessionHandle};
use forcebridge::salesforce::pubsub::{Delivery, PubSub, PubSubError, ReplayStart};
use forcebridge::salesforce::tls::ClientTls;
use forcebridge::sim::{SimConfig, SimOrg};
use secrecy::SecretString;

async fn client(sim: &SimOrg) -> PubSub {
    let session = Session {
        access_token: SecretString::from(sim.issue_access_token()),
        instance_url: sim.instance_url(),
        org_id: sim.config().org_id.clone(),
        user_id: None,
    };
    PubSub::connect(
        &sim.pubsub_endpoint(),
        SessionHandle::new(session),
        &ClientTls::new().allow_plaintext(true),
    )
    .await
    .unwrap()
}

/// Credits never exceed the batch, are topped up as events are taken (no stall waiting for a
/// whole batch), and every event arrives once, in order; then keepalives carry the position.
#[tokio::test]
async fn credits_stay_within_the_batch_and_keepalives_follow() {
    let sim = SimOrg::start(SimConfig {
        keepalive_interval: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    sim.generate("Account", 35).unwrap();
    let pubsub = client(&sim).await;
    let mut sub = pubsub
        .subscribe(
            "/data/AccountChangeEvent",
            ReplayStart::Earliest,
            10,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let mut replay_ids = Vec::new();
    while replay_ids.len() < 35 {
        assert!(
            sub.credits_in_hand() <= 10,
            "{} credits in hand",
            sub.credits_in_hand()
        );
        match sub.next().await.unwrap() {
            Delivery::Event(event) => replay_ids.push(event.replay_id),
            Delivery::Keepalive { .. } => {}
        }
    }
    let mut sorted = replay_ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, replay_ids, "in order, no repeats");
    let Delivery::Keepalive { latest_replay_id } = sub.next().await.unwrap() else {
        panic!("expected a keepalive once the backlog is read");
    };
    assert_eq!(latest_replay_id.as_ref(), &replay_ids.last().unwrap()[..]);
    sim.shutdown().await;
}

/// The client counts its own credits: it never asks for credits the server already owes it (a
/// response's `pending_num_requested` leaves out requests still on their way), so the server
/// never has more than 100 requested and drops nothing. (Taking `pending_num_requested` as the
/// count, the client had 553 credits dropped here.)
#[tokio::test]
async fn credits_are_never_requested_twice() {
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    // Requests spend 5 ms on their way, as over a network.
    sim.set_stream_rtt(Duration::from_millis(5));
    sim.generate("Account", 1600).unwrap();
    // Then events trickle in, so that responses come while requests are on their way.
    let trickle = {
        let sim = sim.clone();
        tokio::spawn(async move {
            for _ in 0..400 {
                sim.generate("Account", 1).unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let pubsub = client(&sim).await;
    let mut sub = pubsub
        .subscribe(
            "/data/AccountChangeEvent",
            ReplayStart::Earliest,
            100,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let mut events = 0;
    while events < 2000 {
        if let Delivery::Event(_) = sub.next().await.unwrap() {
            events += 1;
        }
        assert!(sub.credits_in_hand() <= 100);
    }
    trickle.await.unwrap();
    let counts = sim.stream_fault_counts();
    assert_eq!(counts.credits_over_limit, 0);
    // Topped up a quarter of the batch at a time: 2,000 events take about 80 requests.
    assert!(
        counts.fetch_requests <= 2000 / 25 + 5,
        "{} FetchRequests for 2000 events",
        counts.fetch_requests
    );
    sim.shutdown().await;
}

/// A stream that sends nothing — not even a keepalive — within the idle timeout is reported as
/// silent, so the pipeline rebuilds it.
#[tokio::test]
async fn a_silent_stream_is_detected() {
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let pubsub = client(&sim).await;
    let mut sub = pubsub
        .subscribe(
            "/data/AccountChangeEvent",
            ReplayStart::Latest,
            100,
            Duration::from_millis(300),
        )
        .await
        .unwrap();
    let err = sub.next().await.unwrap_err();
    assert!(matches!(err, PubSubError::Silent { .. }), "{err}");
    sim.shutdown().await;
}
