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
