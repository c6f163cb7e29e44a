//! `forcebridge check`: is it safe to start with this config?
//!
//! Contract: after the config has validated, logs in to Salesforce; with a source, connects to the
//! Pub/Sub API and asks `GetTopic` for every channel (it must exist and allow subscribing); with a
//! sink, reads `/limits` through the REST client (one API call) and reports the daily allowance
//! against the reserve; then asks Kafka for metadata. Every step prints one line, `ok` or the reason; secrets are never printed. Returns
//! `false` when any step failed.

use std::time::Duration;

use crate::auth::{Authenticator, SessionHandle};
use crate::config::Config;
use crate::pubsub::PubSub;
use crate::telemetry::error_chain;

/// Runs the checks, printing a report; `true` when all passed.
pub async fn run(config: &Config) -> bool {
    let mut ok = true;
    let mut report = |step: &str, outcome: Result<String, String>| {
        match &outcome {
            Ok(detail) => println!("  ok      {step}{}", suffix(detail)),
            Err(reason) => println!("  FAILED  {step}: {reason}"),
        }
        ok &= outcome.is_ok();
    };
    report("config", Ok(String::new()));

    let tls = crate::tls::ClientTls::from_config(&config.salesforce);
    let http = match &tls {
        Ok(tls) => {
            crate::auth::http_client(tls, config.salesforce.http_timeout).map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    let session = match &http {
        Err(err) => Err(err.to_string()),
        Ok(http) => Authenticator::new(&config.salesforce, http.clone())
            .login()
            .await
            .map_err(|e| e.to_string()),
    };
    let session = match session {
        Ok(session) => {
            report(
                "Salesforce login",
                Ok(format!(
                    "org {} at {}",
                    session.org_id, session.instance_url
                )),
            );
            Some(SessionHandle::new(session))
        }
        Err(reason) => {
            report("Salesforce login", Err(reason));
            None
        }
    };
    if let (Some(session), Some(sink), Ok(http)) = (&session, &config.sink, &http) {
        let rest = crate::sink::rest_client(config, sink, http.clone(), session.clone());
        let cancel = tokio_util::sync::CancellationToken::new();
        let limits = tokio::time::timeout(config.salesforce.http_timeout, rest.limits(&cancel));
        let outcome = match limits.await {
            Err(_) => Err("no answer in time".to_owned()),
            Ok(Err(err)) => Err(err.to_string()),
            Ok(Ok(usage)) => {
                let keep = rest.guard().reserve().calls(usage.max);
                if usage.remaining() <= keep {
                    Err(format!(
                        "{} of {} daily API calls left, at or under the reserve of {keep}: writing would pause",
                        usage.remaining(),
                        usage.max
                    ))
                } else {
                    Ok(format!(
                        "{} of {} daily API calls left, reserve {keep}",
                        usage.remaining(),
                        usage.max
                    ))
                }
            }
        };
        report("REST API (sink)", outcome);
    }
    if let Some(session) = session.filter(|_| config.source.is_some())
        && let Ok(tls) = &tls
    {
        match PubSub::connect(&config.salesforce.pubsub_endpoint, session, tls).await {
            Err(err) => report("Pub/Sub API", Err(err.to_string())),
            Ok(pubsub) => {
                report("Pub/Sub API", Ok(config.salesforce.pubsub_endpoint.clone()));
                for channel in config.source.iter().flat_map(|s| &s.channels) {
                    let outcome = match pubsub.get_topic(&channel.name).await {
                        Err(err) => Err(err.to_string()),
                        Ok(topic) if !topic.can_subscribe => {
                            Err("exists, but the user may not subscribe to it".into())
                        }
                        Ok(_) => Ok("can subscribe".into()),
                    };
                    report(&format!("channel {}", channel.name), outcome);
                }
            }
        }
    }

    let bootstrap = config.kafka.bootstrap_servers.clone();
    let kafka = tokio::task::spawn_blocking(move || {
        crate::kafka::count_records(&bootstrap, "__forcebridge_check", Duration::from_secs(10))
    })
    .await;
    let kafka = match kafka {
        Ok(Ok(_)) => Ok(config.kafka.bootstrap_servers.clone()),
        Ok(Err(err)) => Err(error_chain(&err)),
        Err(err) => Err(err.to_string()),
    };
    report("Kafka", kafka);
    ok
}

fn suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}
