//! Routes: which topic the records of each object go to.
//!
//! Contract: the first record of an object renders its topic from the channel's template
//! (`topic`, else `source.topic_template`), makes sure the topic exists when `kafka.create_topics`
//! is on, and keeps the route and its counter for the channel's lifetime. A name the template
//! cannot make dead-letters the event (stage `route`); a topic Kafka cannot create fails the
//! attempt.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::dead_letters::DeadLetter;
use super::setup::Shared;
use crate::config::ChannelConfig;
use crate::kafka::KafkaError;
use crate::kafka::headers::DeadLetterStage;
use crate::ops::telemetry::ChannelStats;
use crate::source::cdc;

/// Where the records of one object go: rendered, created and counted once per object.
pub(super) struct Route {
    pub(super) topic: String,
    pub(super) produced: Arc<AtomicU64>,
}

/// The routes of one channel (see the module docs).
pub(super) struct Routes<'a> {
    shared: &'a Shared,
    channel: &'a str,
    template: &'a str,
    stats: &'a ChannelStats,
    /// Object API name → its route.
    routes: HashMap<String, Route>,
}

impl<'a> Routes<'a> {
    pub(super) fn new(
        shared: &'a Shared,
        channel: &'a ChannelConfig,
        stats: &'a ChannelStats,
    ) -> Self {
        Routes {
            shared,
            channel: &channel.name,
            template: channel
                .topic
                .as_deref()
                .unwrap_or(&shared.source().topic_template),
            stats,
            routes: HashMap::new(),
        }
    }

    /// The route of an object that [`Routes::resolve`] has seen.
    pub(super) fn get(&self, object: &str) -> &Route {
        &self.routes[object]
    }

    /// The route of `object`, made on first use (a snapshot's records); the template's refusal
    /// as a dead letter, a topic Kafka cannot create as an error.
    pub(super) async fn resolve_object(
        &mut self,
        object: &str,
    ) -> Result<Result<&Route, DeadLetter>, KafkaError> {
        if !self.routes.contains_key(object) {
            let topic = match crate::kafka::render_topic(self.template, object, self.channel) {
                Ok(topic) => topic,
                Err(err) => {
                    return Ok(Err(DeadLetter {
                        stage: DeadLetterStage::Route,
                        reason: err.to_string(),
                    }));
                }
            };
            if let Some(admin) = &self.shared.topics {
                admin
                    .ensure(&topic, self.shared.config.kafka.topic_partitions, &[])
                    .await?;
            }
            let produced = self.stats.topic_counter(&topic);
            self.routes
                .insert(object.to_owned(), Route { topic, produced });
        }
        Ok(Ok(&self.routes[object]))
    }

    /// Makes sure every object of `records` has a route. A topic name the template cannot make
    /// dead-letters the whole event; a topic Kafka cannot create fails the attempt.
    pub(super) async fn resolve(
        &mut self,
        records: &[cdc::OutRecord],
    ) -> Result<Result<(), DeadLetter>, KafkaError> {
        for record in records {
            if let Err(dead) = self.resolve_object(&record.object).await? {
                return Ok(Err(dead));
            }
        }
        Ok(Ok(()))
    }
}
