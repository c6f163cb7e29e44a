//! The org's recycle bin and replication reads: which records were deleted or updated in a time
//! window, and the physical purge of deleted records.
//!
//! Contract:
//! * A deleted record stays in the org (`IsDeleted` true, its `SystemModstamp` the time of the
//!   delete) until purged: `getDeleted()`'s `deletedDate` "is obtained using the SystemModstamp
//!   system field" (SOAP API Developer Guide, "GetDeletedResult").
//! * [`Org::purge_recycle_bin`] physically removes the deleted records of an object deleted
//!   before a time (the recycle bin keeps them 15 days, or less once an administrator empties
//!   it: REST API Developer Guide, "sObject Get Deleted") and remembers the newest deletion it
//!   removed, the object's `earliestDateAvailable` ("the timestamp of the last physically
//!   deleted object", "GetDeletedResult").
//! * Windows are `[start, end)` in epoch ms over `SystemModstamp`; results in Id order.

use serde_json::Value as Json;

use super::state::Org;

impl Org {
    fn modstamp(fields: &serde_json::Map<String, Json>) -> i64 {
        fields
            .get("SystemModstamp")
            .and_then(Json::as_i64)
            .unwrap_or(0)
    }

    /// Physically removes the records of `object` deleted before `before` (epoch ms); returns
    /// how many. The object's [`Org::earliest_date_available`] moves to the newest one removed.
    pub fn purge_recycle_bin(&mut self, object: &str, before: i64) -> usize {
        let Some(o) = self.objects.get_mut(object) else {
            return 0;
        };
        let mut newest = None::<i64>;
        let count = o.records.len();
        o.records.retain(|_, r| {
            let at = Self::modstamp(&r.fields);
            let purge = r.deleted && at < before;
            if purge {
                newest = Some(newest.map_or(at, |n| n.max(at)));
            }
            !purge
        });
        if let Some(n) = newest {
            o.last_purged = Some(o.last_purged.map_or(n, |p| p.max(n)));
        }
        count - o.records.len()
    }

    /// The deletion time of the newest record of `object` physically purged, if any.
    pub fn earliest_date_available(&self, object: &str) -> Option<i64> {
        self.objects.get(object)?.last_purged
    }

    /// The records of `object` deleted (still in the recycle bin) in `[start, end)`, with their
    /// deletion times, in Id order.
    pub fn deleted_between(&self, object: &str, start: i64, end: i64) -> Vec<(String, i64)> {
        let Some(o) = self.objects.get(object) else {
            return Vec::new();
        };
        let mut out: Vec<(String, i64)> = o
            .records
            .iter()
            .filter(|(_, r)| r.deleted)
            .map(|(id, r)| (id.clone(), Self::modstamp(&r.fields)))
            .filter(|(_, at)| (start..end).contains(at))
            .collect();
        out.sort();
        out
    }

    /// The Ids of the live records of `object` created or updated in `[start, end)`
    /// (`SystemModstamp`), in Id order.
    pub fn updated_between(&self, object: &str, start: i64, end: i64) -> Vec<String> {
        let Some(o) = self.objects.get(object) else {
            return Vec::new();
        };
        let mut out: Vec<String> = o
            .records
            .iter()
            .filter(|(_, r)| !r.deleted && (start..end).contains(&Self::modstamp(&r.fields)))
            .map(|(id, _)| id.clone())
            .collect();
        out.sort();
        out
    }
}
