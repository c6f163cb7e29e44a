//! The sink's describe cache: each object's describe (`GET …/sobjects/{Object}/describe`),
//! fetched once per object per run and shared by the writers, indexed for the field checks of
//! [`super::fields`].
//!
//! Contract:
//! * [`DescribeCache::get`] fetches an object's describe the first time a batch needs it (lazily:
//!   a write-back message may name any object, configured in `sink.objects` or not, and an object
//!   never written costs nothing), one fetch per object however many writers ask at once (single
//!   flight). The fetch is one REST call of the sink's client, so it is held by the limit guard,
//!   retried like every call, and counted with the sink's API calls (`bench sink`, `/metrics`;
//!   also on its own, `forcebridge_sink_describe_calls_total`).
//! * An object the org does not know (404 `NOT_FOUND`) is remembered as [`Described::Unknown`]
//!   for the run: its records are refused without asking again. Any other failure is not
//!   remembered: it fails the batch (the records are repeated), and the next batch asks again.
//! * The index of a describe, [`ObjectFields`], is the REST client's
//!   ([`crate::salesforce::rest::ObjectFields`]), shared with the source's snapshot.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::ops::telemetry::SinkStats;
use crate::salesforce::rest::{ApiError, RestClient, RestError};
pub(crate) use crate::salesforce::rest::{ObjectFields, child_name};

/// What the org said about an object.
#[derive(Debug, Clone)]
pub(crate) enum Described {
    /// Its describe.
    Known(Arc<ObjectFields>),
    /// The org does not know the object (the describe's refusal).
    Unknown(ApiError),
}

/// The describes of a run, by object (lower-cased). Cheap to clone; clones share the cache.
#[derive(Clone, Default)]
pub(crate) struct DescribeCache {
    objects: Arc<Mutex<HashMap<String, Arc<OnceCell<Described>>>>>,
}

impl DescribeCache {
    /// `object`'s describe, fetched with `rest` on first use (see the module contract).
    pub(crate) async fn get(
        &self,
        object: &str,
        rest: &RestClient,
        stats: &SinkStats,
        cancel: &CancellationToken,
    ) -> Result<Described, RestError> {
        let cell = self
            .objects
            .lock()
            .expect("describe cache lock")
            .entry(object.to_ascii_lowercase())
            .or_default()
            .clone();
        cell.get_or_try_init(|| async {
            stats.describe_calls.fetch_add(1, Ordering::Relaxed);
            match rest.describe(object, cancel).await {
                Ok(describe) => Ok(Described::Known(Arc::new(ObjectFields::new(describe)))),
                Err(e) if e.is_not_found() => Ok(Described::Unknown(match e {
                    RestError::Rejected { errors, .. } if !errors.is_empty() => errors[0].clone(),
                    _ => ApiError {
                        code: "NOT_FOUND".into(),
                        message: format!("the org has no object {object}"),
                        fields: Vec::new(),
                    },
                })),
                Err(e) => Err(e),
            }
        })
        .await
        .cloned()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const ACCOUNT: &str = include_str!("../../tests/fixtures/describe/Account.json");
    pub(crate) const CONTACT: &str = include_str!("../../tests/fixtures/describe/Contact.json");

    pub(crate) fn fields_of(json: &str) -> ObjectFields {
        ObjectFields::new(serde_json::from_str(json).expect("describe fixture"))
    }

    #[test]
    fn child_names_follow_salesforce_naming_of_components() {
        assert_eq!(child_name("BillingAddress", "BillingCity"), "City");
        assert_eq!(
            child_name("MailingAddress", "MailingPostalCode"),
            "PostalCode"
        );
        assert_eq!(child_name("Address", "Street"), "Street");
        assert_eq!(child_name("Loc__c", "Loc__Latitude__s"), "Latitude");
        assert_eq!(
            child_name("ns__Loc__c", "ns__Loc__Longitude__s"),
            "Longitude"
        );
        assert_eq!(child_name("Name", "FirstName"), "FirstName");
        // Neither rule: the component keeps its name.
        assert_eq!(child_name("BillingAddress", "Other"), "Other");
        assert_eq!(child_name("Loc__c", "Loc__Latitude__c"), "Loc__Latitude__c");
    }

    #[test]
    fn compounds_and_components_come_from_the_describe() {
        let account = fields_of(ACCOUNT);
        assert_eq!(account.name, "Account");
        assert_eq!(account.field("billingcity").unwrap().name, "BillingCity");
        let billing: Vec<&str> = account
            .components("billingAddress")
            .unwrap()
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(
            billing,
            [
                "BillingStreet",
                "BillingCity",
                "BillingState",
                "BillingPostalCode",
                "BillingCountry",
                "BillingLatitude",
                "BillingLongitude",
                "BillingGeocodeAccuracy"
            ]
        );
        assert_eq!(
            account.component("BillingAddress", "city").unwrap().name,
            "BillingCity"
        );
        assert_eq!(
            account
                .component("BillingAddress", "BillingCity")
                .unwrap()
                .name,
            "BillingCity"
        );
        assert!(account.component("BillingAddress", "Xyz").is_none());
        assert_eq!(
            account.component("loc__c", "latitude").unwrap().name,
            "Loc__Latitude__s"
        );
        // Account `Name` is a plain text field; Contact `Name` is a compound.
        assert!(account.components("Name").is_none());
        let contact = fields_of(CONTACT);
        assert_eq!(
            contact.component("Name", "firstname").unwrap().name,
            "FirstName"
        );
        assert!(contact.components("Name").unwrap().len() == 5);
    }
}
