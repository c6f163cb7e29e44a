//! Describe: `sobjects/` GET (describe global), `sobjects/{Object}` GET (sObject Basic
//! Information) and `sobjects/{Object}/describe` GET, with
//! Salesforce's JSON shapes (REST API Developer Guide, "Describe Global" and "sObject Describe";
//! the keys are those of `DescribeGlobalSObjectResult`, `DescribeSObjectResult` and `Field` in
//! the SOAP API Developer Guide). The fields come from the org's field metadata
//! ([`crate::sim::fieldmeta`]): compound fields with their components (`compoundFieldName`),
//! formula fields (`calculated`, `calculatedFormula`), read-only system fields.
//!
//! Contract: all are GET only (405 otherwise; `sobjects/{Object}` also takes POST, a create);
//! an unknown object is 404 `NOT_FOUND` (routed by `rest`); all count against
//! `DailyApiRequests` like every other REST call. Basic Information (REST API Developer Guide,
//! "sObject Basic Information" and "Get Metadata for an Object") answers `{"objectDescribe":
//! <the object's describe global entry>, "recentItems": [...]}`, the recent items being the
//! records the token's user last created or updated through REST (see `recent`), newest first,
//! each as `attributes` (`type`, `url`), `Id` and `Name`. An object's describe lists as
//! `childRelationships` the relationships sObject Tree knows (`tree::RELATIONSHIPS`).

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::call::{Call, Exec};
use super::render::render_record;
use super::reply::Reply;
use super::tree::RELATIONSHIPS;
use crate::sim::fieldmeta::{FieldMeta, Source};
use crate::sim::util::lock;

/// The object's plural label.
fn plural(label: &str) -> String {
    format!("{label}s")
}

/// The `urls` of an object (as `DescribeGlobalSObjectResult` and `DescribeSObjectResult` list
/// them).
fn urls(call: &Call, object: &str) -> Value {
    let base = format!("/services/data/v{}/sobjects/{object}", call.version);
    json!({
        "sobject": base,
        "describe": format!("{base}/describe"),
        "rowTemplate": format!("{base}/{{ID}}"),
    })
}

/// The object-level keys shared by describe global's entries and an object's describe.
fn object_summary(
    call: &Call,
    object: &str,
    prefix: Option<&str>,
) -> serde_json::Map<String, Value> {
    let value = json!({
        "activateable": false,
        "createable": true,
        "custom": object.ends_with("__c"),
        "customSetting": false,
        "deletable": true,
        "deprecatedAndHidden": false,
        "feedEnabled": false,
        "hasSubtypes": false,
        "isSubtype": false,
        "keyPrefix": prefix,
        "label": object,
        "labelPlural": plural(object),
        "layoutable": true,
        "mergeable": true,
        "mruEnabled": true,
        "name": object,
        "queryable": true,
        "replicateable": true,
        "retrieveable": true,
        "searchable": true,
        "triggerable": true,
        "undeletable": true,
        "updateable": true,
        "urls": urls(call, object),
    });
    match value {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// `Owner` for `OwnerId`, `Parent` for `ParentId`: a reference field's relationship name.
fn relationship_name(f: &FieldMeta) -> Option<String> {
    (f.ty == "reference").then(|| {
        f.name
            .strip_suffix("Id")
            .unwrap_or(&f.name)
            .trim_end_matches("__c")
            .to_owned()
    })
}

/// One `Field` of a describe.
fn field_json(f: &FieldMeta) -> Value {
    let calculated = matches!(f.source, Source::Formula(_));
    let compound = matches!(f.source, Source::Compound(_));
    let text = matches!(
        f.ty,
        "string" | "textarea" | "picklist" | "phone" | "url" | "email" | "id" | "reference"
    );
    json!({
        "aggregatable": f.ty != "textarea" && !compound,
        "autoNumber": false,
        "byteLength": if text { f.length * 3 } else { 0 },
        "calculated": calculated,
        "calculatedFormula": f.formula,
        "cascadeDelete": false,
        "caseSensitive": false,
        "compoundFieldName": f.compound_field_name,
        "createable": f.createable,
        "custom": f.custom,
        "defaultValue": null,
        "defaultedOnCreate": f.defaulted_on_create,
        "dependentPicklist": false,
        "deprecatedAndHidden": false,
        "digits": f.digits,
        "externalId": f.external_id,
        "extraTypeInfo": f.extra_type_info,
        "filterable": f.ty != "textarea" || f.length <= 255,
        "groupable": matches!(f.ty, "string" | "picklist" | "reference" | "id" | "boolean" | "phone" | "url" | "email"),
        "htmlFormatted": false,
        "idLookup": f.id_lookup,
        "inlineHelpText": null,
        "label": f.label,
        "length": f.length,
        "name": f.name,
        "nameField": f.name_field,
        "nillable": f.nillable,
        "permissionable": f.nillable && f.createable,
        "picklistValues": [],
        "polymorphicForeignKey": f.reference_to.len() > 1,
        "precision": f.precision,
        "queryByDistance": false,
        "referenceTo": f.reference_to,
        "relationshipName": relationship_name(f),
        "restrictedPicklist": f.ty == "picklist" && f.name.ends_with("GeocodeAccuracy"),
        "scale": f.scale,
        "soapType": f.soap_type,
        "sortable": f.ty != "textarea" || f.length <= 255,
        "type": f.ty,
        "unique": f.external_id,
        "updateable": f.updateable,
    })
}

/// The `ChildRelationship`s of an object (SOAP API Developer Guide, "describeSObjectResult"):
/// those the simulator knows (see `tree`), e.g. Account's `Contacts` through `Contact.AccountId`.
fn child_relationships(object: &str) -> Value {
    let items: Vec<Value> = RELATIONSHIPS
        .iter()
        .filter(|(parent, ..)| *parent == object)
        .map(|(_, name, child, field)| {
            json!({
                "cascadeDelete": false,
                "childSObject": child,
                "deprecatedAndHidden": false,
                "field": field,
                "junctionIdListNames": [],
                "junctionReferenceTo": [],
                "relationshipName": name,
                "restrictedDelete": false,
            })
        })
        .collect();
    Value::Array(items)
}

impl Exec<'_> {
    /// `GET sobjects/`: describe global.
    pub(super) fn describe_global(&self, call: &Call) -> Reply {
        let sobjects: Vec<Value> = self
            .org
            .object_names()
            .map(|o| Value::Object(object_summary(call, o, self.org.key_prefix(o))))
            .collect();
        Reply::json(
            StatusCode::OK,
            json!({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": sobjects}),
        )
    }

    /// `GET sobjects/{Object}`: sObject Basic Information.
    pub(super) fn basic_info(&self, call: &Call, object: &str) -> Reply {
        let Some(meta) = self.org.meta(object) else {
            return Reply::not_found();
        };
        let ids = lock(&self.shared.recent).of(&self.user, object);
        let fields = ["Id".to_owned(), "Name".to_owned()];
        let recent: Vec<Value> = ids
            .iter()
            .filter_map(|id| self.org.view(self.outer.as_ref(), object, id))
            .filter(|r| r.get("IsDeleted") != Some(&Value::Bool(true)))
            .map(|r| {
                Value::Object(render_record(
                    &meta,
                    object,
                    call.version,
                    &r,
                    Some(&fields),
                ))
            })
            .collect();
        let describe = object_summary(call, object, self.org.key_prefix(object));
        Reply::json(
            StatusCode::OK,
            json!({"objectDescribe": describe, "recentItems": recent}),
        )
    }

    /// `GET sobjects/{Object}/describe` of an object of the org.
    pub(super) fn describe(&self, call: &Call, object: &str) -> Reply {
        let Some(meta) = self.org.meta(object) else {
            return Reply::not_found();
        };
        let mut body = object_summary(call, object, self.org.key_prefix(object));
        body.insert(
            "fields".into(),
            Value::Array(meta.fields.iter().map(field_json).collect()),
        );
        body.insert("childRelationships".into(), child_relationships(object));
        body.insert("recordTypeInfos".into(), json!([]));
        body.insert("supportedScopes".into(), json!([]));
        body.insert("namedLayoutInfos".into(), json!([]));
        body.insert("actionOverrides".into(), json!([]));
        body.insert("networkScopeFieldName".into(), Value::Null);
        Reply::json(StatusCode::OK, Value::Object(body))
    }
}
