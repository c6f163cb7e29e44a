//! The records each user most recently created or updated through the REST API, per object: the
//! `recentItems` of sObject Basic Information (REST API Developer Guide, "Get Metadata for an
//! Object": `recentItems` lists records as `attributes` + `Id` + `Name`). Salesforce's list is
//! the user's most recently used records, viewed ones included; the simulator tracks writes only,
//! newest first, at most [`RecentItems::MAX`] per object, and drops a record once it is deleted.

use std::collections::{HashMap, VecDeque};

use crate::sim::org::{Change, ChangeType};

/// Recently written records by `(user, object)`, newest first.
#[derive(Debug, Default)]
pub(crate) struct RecentItems {
    by_user: HashMap<(String, String), VecDeque<String>>,
}

impl RecentItems {
    /// Records kept per user and object.
    pub const MAX: usize = 25;

    /// Notes the records a committed transaction of `user` wrote.
    pub(super) fn note(&mut self, user: &str, changes: &[Change]) {
        for change in changes {
            let key = (user.to_owned(), change.entity.clone());
            let list = self.by_user.entry(key).or_default();
            list.retain(|id| *id != change.record_id);
            match change.change_type {
                ChangeType::Create | ChangeType::Update | ChangeType::Undelete => {
                    list.push_front(change.record_id.clone());
                    list.truncate(Self::MAX);
                }
                ChangeType::Delete => {}
            }
        }
    }

    /// The Ids `user` most recently wrote of `object`, newest first.
    pub(super) fn of(&self, user: &str, object: &str) -> Vec<String> {
        self.by_user
            .get(&(user.to_owned(), object.to_owned()))
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }
}
