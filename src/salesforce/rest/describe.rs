//! `GET /services/data/vNN.N/sobjects/{Object}/describe` ([`RestClient::describe`]): what an
//! object's fields are and whether the integration user may write them.
//!
//! Contract: the answer is read into [`SObjectDescribe`], the keys forcebridge uses and no
//! other (a real describe has dozens more per field; they are ignored). Shapes: REST API
//! Developer Guide, "sObject Describe"; the keys are those of `DescribeSObjectResult` and
//! `Field` (SOAP API Developer Guide), which the REST answer carries as JSON. `createable` and
//! `updateable` are the running user's permissions (field-level security included), so they
//! say what the sink's own writes may do. The call is held by the [`super::LimitGuard`] and
//! retried like every call ([`crate::retry::classify_http`]); an object the org does not know
//! is [`RestError::Rejected`] with status 404 (`NOT_FOUND`, [`RestError::is_not_found`]); an
//! answer without the documented keys is [`RestError::Protocol`].
//!
//! [`ObjectFields`] indexes a describe: fields found case-insensitively (Salesforce matches API
//! names in any case) with their canonical spelling; a compound field (`BillingAddress`,
//! Contact `Name`, a custom geolocation `Loc__c`) is a field that other fields name in
//! `compoundFieldName`, or one of type `address` or `location`; its components are found by the
//! child names change events and REST reads give them ([`child_name`]). The sink's field checks
//! and the source's snapshot (which reads compounds through their components) share it.

use std::collections::HashMap;

use reqwest::Method;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::client::RestClient;
use super::errors::RestError;
use super::query::percent_encode;

/// An object's describe: the object and its fields.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SObjectDescribe {
    /// The object's API name, in Salesforce's spelling (`Account`).
    pub name: String,
    /// Whether the user may create records of the object.
    pub createable: bool,
    /// Whether the user may update records of the object.
    pub updateable: bool,
    pub fields: Vec<FieldDescribe>,
}

/// One field of a describe (SOAP API Developer Guide, `Field`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldDescribe {
    /// The field's API name, in Salesforce's spelling (`BillingCity`).
    pub name: String,
    /// The field type: `string`, `textarea`, `boolean`, `int`, `double`, `currency`,
    /// `percent`, `date`, `datetime`, `reference`, `id`, `picklist`, `address`, `location`, …
    #[serde(rename = "type")]
    pub field_type: String,
    /// Whether the field may be set to null.
    pub nillable: bool,
    /// Whether the user may set it on insert.
    pub createable: bool,
    /// Whether the user may set it on update.
    pub updateable: bool,
    /// A formula (or roll-up summary) field: computed, never written.
    #[serde(default)]
    pub calculated: bool,
    /// For a component of a compound field (`BillingCity`, `FirstName`, `Loc__Latitude__s`),
    /// the compound (`BillingAddress`, `Name`, `Loc__c`).
    #[serde(default)]
    pub compound_field_name: Option<String>,
    /// An External Id field.
    #[serde(default)]
    pub external_id: bool,
    /// A field that identifies a record (`Id`, External Ids, `Email` on Contact, …).
    #[serde(default)]
    pub id_lookup: bool,
    /// Characters for text fields (0 for the others).
    #[serde(default)]
    pub length: u64,
    /// The SOAP type (`xsd:string`, `xsd:double`, `urn:address`, `tns:ID`, …).
    #[serde(default)]
    pub soap_type: String,
}

impl RestClient {
    /// `GET …/sobjects/{object}/describe` (see the module contract). One API call, held by the
    /// guard and retried like every call.
    pub(crate) async fn describe(
        &self,
        object: &str,
        cancel: &CancellationToken,
    ) -> Result<SObjectDescribe, RestError> {
        self.check_tag()?;
        if object.trim().is_empty() {
            return Err(RestError::Invalid(
                "describe of an empty object name".into(),
            ));
        }
        let path = format!(
            "{}/sobjects/{}/describe",
            self.data_path(),
            percent_encode(object)
        );
        let answer = self.execute(Method::GET, &path, None, true, cancel).await?;
        serde_json::from_slice(&answer)
            .map_err(|e| RestError::Protocol(format!("describe of {object}: {e}")))
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
