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
//! * [`ObjectFields`] finds fields case-insensitively (Salesforce matches API names in any case)
//!   and gives their canonical spelling; a compound field (`BillingAddress`, Contact `Name`, a
//!   custom geolocation `Loc__c`) is a field that other fields name in `compoundFieldName`, or
//!   one of type `address` or `location`; its components are found by the child names change
//!   events and REST reads give them (see [`child_name`]).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::ops::telemetry::SinkStats;
use crate::salesforce::rest::{ApiError, FieldDescribe, RestClient, RestError, SObjectDescribe};

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

/// One component of a compound field: the child name change events give it, and the field.
#[derive(Debug, Clone)]
struct Component {
    child: String,
    field: usize,
}

/// An object's describe, indexed.
#[derive(Debug)]
pub(crate) struct ObjectFields {
    /// The object's API name, in Salesforce's spelling.
    pub(crate) name: String,
    pub(crate) createable: bool,
    pub(crate) updateable: bool,
    fields: Vec<FieldDescribe>,
    /// Lower-cased field name → index in `fields`.
    by_name: HashMap<String, usize>,
    /// Index of a compound field → its components, in describe order.
    components: HashMap<usize, Vec<Component>>,
}

impl ObjectFields {
    pub(crate) fn new(describe: SObjectDescribe) -> Self {
        let by_name: HashMap<String, usize> = describe
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.to_ascii_lowercase(), i))
            .collect();
        let mut components: HashMap<usize, Vec<Component>> = HashMap::new();
        for (i, f) in describe.fields.iter().enumerate() {
            if matches!(f.field_type.as_str(), "address" | "location") {
                components.entry(i).or_default();
            }
            let Some(compound) = f.compound_field_name.as_deref() else {
                continue;
            };
            if let Some(&c) = by_name.get(&compound.to_ascii_lowercase()) {
                components.entry(c).or_default().push(Component {
                    child: child_name(&describe.fields[c].name, &f.name),
                    field: i,
                });
            }
        }
        ObjectFields {
            name: describe.name,
            createable: describe.createable,
            updateable: describe.updateable,
            fields: describe.fields,
            by_name,
            components,
        }
    }

    /// The field named `name` in any case.
    pub(crate) fn field(&self, name: &str) -> Option<&FieldDescribe> {
        self.index(name).map(|i| &self.fields[i])
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.by_name.get(&name.to_ascii_lowercase()).copied()
    }

    /// The components of `compound`, or `None` when it is not a compound field.
    pub(crate) fn components(&self, compound: &str) -> Option<Vec<&FieldDescribe>> {
        let list = self.components.get(&self.index(compound)?)?;
        Some(list.iter().map(|c| &self.fields[c.field]).collect())
    }

    /// The component of `compound` that the nested child `child` stands for, in any case: by
    /// its child name (`City` → `BillingCity`, `Latitude` → `Loc__Latitude__s`, `FirstName` →
    /// `FirstName`) or by the component's own name.
    pub(crate) fn component(&self, compound: &str, child: &str) -> Option<&FieldDescribe> {
        let list = self.components.get(&self.index(compound)?)?;
        list.iter()
            .find(|c| {
                c.child.eq_ignore_ascii_case(child)
                    || self.fields[c.field].name.eq_ignore_ascii_case(child)
            })
            .map(|c| &self.fields[c.field])
    }
}

/// The name a change event (and a REST read, in lower case) gives the component `component` of
/// the compound `compound`, by Salesforce's naming of compound fields ("Compound Fields",
/// "Address Compound Fields", "Geolocation Compound Field", SOAP API Developer Guide):
/// * an address `XAddress` has the components `X` + child: `BillingAddress` → `BillingCity`
///   is `City` (`Address` on Lead and custom objects: `City` is `City`);
/// * a custom geolocation `Loc__c` has `Loc__Latitude__s` and `Loc__Longitude__s`: `Latitude`,
///   `Longitude`;
/// * a name (`Name` on Contact, Lead, person accounts) has the child names as its components:
///   `FirstName` is `FirstName`.
///
/// A component that follows none of these keeps its own name.
pub(crate) fn child_name(compound: &str, component: &str) -> String {
    let strip_prefix = |prefix: &str| {
        (component.len() > prefix.len() && component[..prefix.len()].eq_ignore_ascii_case(prefix))
            .then(|| &component[prefix.len()..])
    };
    let lower = compound.to_ascii_lowercase();
    if lower.ends_with("address") {
        let prefix = &compound[..compound.len() - "address".len()];
        if let Some(child) = strip_prefix(prefix) {
            return child.to_owned();
        }
    } else if lower.ends_with("__c") {
        let prefix = format!("{}__", &compound[..compound.len() - "__c".len()]);
        if let Some(child) = strip_prefix(&prefix)
            && child.len() > 3
            && child.to_ascii_lowercase().ends_with("__s")
        {
            return child[..child.len() - 3].to_owned();
        }
    }
    component.to_owned()
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
