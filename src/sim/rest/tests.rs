//! The simulated org's REST API through real HTTP (reqwest against `SimOrg::start`): sObject
//! Collections, Composite, query, limits, fault knobs, and the CDC events REST writes emit
//! (decoded from the Pub/Sub API like the other sim tests).

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::salesforce::proto::ReplayPreset;
use crate::salesforce::sftime;
use crate::sim::tests::{ACCOUNTS, Client, fetch, http_client, login, obj};
use crate::sim::{RestFault, SimConfig, SimError, SimOrg};

const ALL_CHANGES: &str = "/data/ChangeEvents";
const ROLLED_BACK: &str = "Record rolled back because not all records were valid and the request was using AllOrNone header";
const HALTED: &str =
    "The transaction was rolled back since another operation in the same transaction failed.";

/// The token response of the client credentials grant (the integration user).
pub(super) async fn token_response(org: &SimOrg) -> Value {
    let cfg = org.config();
    http_client()
        .post(format!("{}/services/oauth2/token", org.instance_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", cfg.client_id.as_str()),
            ("client_secret", cfg.client_secret.as_str()),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token json")
}

/// A REST client of one session.
pub(super) struct Rest {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
    pub tag: Option<String>,
}

/// A response: status, `Sforce-Limit-Info`, JSON body (null when empty).
#[derive(Debug)]
pub(super) struct Resp {
    pub status: u16,
    pub limit_info: Option<String>,
    pub body: Value,
}

impl Rest {
    /// Logs in with the client credentials grant (the integration user).
    pub(super) async fn login(org: &SimOrg) -> Rest {
        let http = http_client();
        let body = token_response(org).await;
        Rest {
            http,
            base: format!("{}/services/data/v62.0", org.instance_url()),
            token: body["access_token"].as_str().expect("token").to_owned(),
            tag: None,
        }
    }

    pub(super) fn tagged(mut self, tag: &str) -> Rest {
        self.tag = Some(tag.to_owned());
        self
    }

    async fn send_raw(&self, method: Method, path: &str, body: Option<String>) -> Resp {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(tag) = &self.tag {
            req = req.header("Sforce-Call-Options", format!("client={tag}"));
        }
        if let Some(body) = body {
            req = req.header("Content-Type", "application/json").body(body);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status().as_u16();
        let limit_info = resp
            .headers()
            .get("sforce-limit-info")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("json body")
        };
        Resp {
            status,
            limit_info,
            body,
        }
    }

    pub(super) async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        self.send_raw(method, path, body.map(|b| b.to_string()))
            .await
    }

    pub(super) async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None).await
    }

    pub(super) async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(Method::POST, path, Some(body)).await
    }

    async fn patch(&self, path: &str, body: Value) -> Resp {
        self.send(Method::PATCH, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> Resp {
        self.send(Method::DELETE, path, None).await
    }

    pub(super) async fn query(&self, soql: &str) -> Resp {
        self.get(&format!("/query?q={}", encode(soql))).await
    }

    async fn composite(&self, all_or_none: bool, subrequests: Vec<Value>) -> Resp {
        self.post(
            "/composite",
            json!({"allOrNone": all_or_none, "compositeRequest": subrequests}),
        )
        .await
    }
}

/// Percent-encodes a query parameter value.
pub(super) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn sub(reference_id: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let mut s = json!({
        "method": method,
        "url": format!("/services/data/v62.0{path}"),
        "referenceId": reference_id,
    });
    if let Some(b) = body {
        s["body"] = b;
    }
    s
}

fn account(fields: Value) -> Value {
    let mut r = json!({"attributes": {"type": "Account"}});
    for (k, v) in obj(fields) {
        r[k] = v;
    }
    r
}

fn contact(fields: Value) -> Value {
    let mut r = json!({"attributes": {"type": "Contact"}});
    for (k, v) in obj(fields) {
        r[k] = v;
    }
    r
}

fn error_item(code: &str, message: &str, fields: &[&str]) -> Value {
    json!({"success": false, "errors": [{"statusCode": code, "message": message, "fields": fields}]})
}

fn id_of(item: &Value) -> String {
    item["id"].as_str().expect("id").to_owned()
}

/// The first `n` change events of `channel`, decoded.
pub(super) async fn events(org: &SimOrg, channel: &str, n: usize) -> Vec<Value> {
    let mut client = Client::connect(org, org.issue_access_token()).await;
    let mut sub = client
        .subscribe(fetch(channel, ReplayPreset::Earliest, Vec::new(), 100))
        .await;
    let mut out = Vec::new();
    for e in sub.take(n, 100).await {
        out.push(client.decode(e.event.as_ref().expect("event")).await);
    }
    out
}

pub(super) async fn start() -> (SimOrg, Rest) {
    let org = SimOrg::start(SimConfig::default()).await.expect("start");
    let api = Rest::login(&org).await;
    (org, api)
}

/// Field names are case-insensitive, as in Salesforce, whose own example of a collections
/// update sends `"id"` (REST API Developer Guide, "Update Records Using sObject Collections");
/// the org keeps the API spelling.
#[tokio::test]
async fn field_names_match_in_any_case_and_keep_their_api_spelling() {
    let (org, api) = start().await;
    let r = api
        .post(
            "/composite/sobjects",
            json!({"records": [account(json!({"name": "Acme", "phone": "1"}))]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body[0]["success"], true, "{:?}", r.body);
    let acme = id_of(&r.body[0]);
    let r = api
        .patch(
            "/composite/sobjects",
            json!({"records": [account(json!({"id": acme, "RATING": "Hot"}))]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body[0]["success"], true, "{:?}", r.body);
    let record = org.record("Account", &acme).expect("acme");
    assert_eq!(record["Name"], "Acme");
    assert_eq!(record["Phone"], "1");
    assert_eq!(record["Rating"], "Hot");
    assert!(!record.contains_key("name") && !record.contains_key("RATING"));
    // `id` in an insert is still an Id in an insert.
    let r = api
        .post(
            "/composite/sobjects",
            json!({"records": [account(json!({"id": acme, "Name": "x"}))]}),
        )
        .await;
    assert_eq!(
        r.body[0]["errors"][0]["statusCode"],
        "INVALID_FIELD_FOR_INSERT_UPDATE"
    );
    org.shutdown().await;
}

/// Object names too match in any case (Salesforce's API names are case-insensitive): in REST
/// paths, in a collection record's `attributes.type`, in SOQL `FROM`; the org answers with the
/// API spelling.
#[tokio::test]
async fn object_names_match_in_any_case() {
    let (org, api) = start().await;
    let r = api.get("/sobjects/account/describe").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["name"], "Account");
    let r = api
        .post("/sobjects/ACCOUNT", json!({"Name": "Upper"}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let upper = r.body["id"].as_str().expect("id").to_owned();
    let r = api.get(&format!("/sobjects/account/{upper}")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["attributes"]["type"], "Account");
    let r = api
        .post(
            "/composite/sobjects",
            json!({"records": [{"attributes": {"type": "contact"}, "LastName": "Lower"}]}),
        )
        .await;
    assert_eq!(r.body[0]["success"], true, "{:?}", r.body);
    let lower = id_of(&r.body[0]);
    assert_eq!(
        org.record("Contact", &lower).expect("contact")["Name"]["LastName"],
        "Lower"
    );
    let r = api
        .post(
            "/composite/sobjects/account",
            json!({"ids": [upper], "fields": ["Name"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body[0]["Name"], "Upper");
    let r = api.get("/sobjects/Nope__c/describe").await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    org.shutdown().await;
}

#[allow(
    clippy::too_many_lines,
    reason = "one scenario through the four operations, each answer checked per record"
)]
#[tokio::test]
async fn collections_create_update_upsert_delete_per_record() {
    let (org, api) = start().await;

    let r = api
        .post(
            "/composite/sobjects",
            json!({"records": [
                account(json!({"Name": "Acme", "External_Id__c": "ACME-1"})),
                contact(json!({"FirstName": "Ada", "LastName": "Lovelace"})),
                account(json!({"Phone": "1"})),
                account(json!({"Id": "001000000000000AAA", "Name": "x"})),
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let items = r.body.as_array().expect("results");
    assert_eq!(items.len(), 4);
    assert_eq!(items[0]["success"], true);
    assert_eq!(items[0]["errors"], json!([]));
    assert!(id_of(&items[0]).starts_with("001"));
    assert!(id_of(&items[1]).starts_with("003"));
    assert_eq!(
        items[2],
        error_item(
            "REQUIRED_FIELD_MISSING",
            "Required fields are missing: [Name]",
            &["Name"]
        )
    );
    assert_eq!(
        items[3],
        error_item(
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            "cannot specify Id in an insert call",
            &["Id"]
        )
    );
    let acme = id_of(&items[0]);
    let ada = id_of(&items[1]);
    assert_eq!(org.records("Account").len(), 1);
    assert_eq!(org.records("Contact").len(), 1);
    assert_eq!(
        org.record("Contact", &ada).expect("ada")["Name"]["LastName"],
        "Lovelace"
    );

    let r = api
        .patch(
            "/composite/sobjects",
            json!({"records": [
                account(json!({"Id": acme, "Rating": "Hot"})),
                account(json!({"Id": "001000000000000AAA", "Rating": "Hot"})),
                account(json!({"Id": "not-an-id", "Rating": "Hot"})),
                account(json!({"Rating": "Hot"})),
                contact(json!({"Id": ada, "LastName": null})),
                account(json!({"Id": ada, "Rating": "Hot"})),
            ]}),
        )
        .await;
    assert_eq!(r.status, 200);
    let items = r.body.as_array().expect("results");
    assert_eq!(items[0], json!({"id": acme, "success": true, "errors": []}));
    assert_eq!(
        items[1],
        error_item(
            "INVALID_CROSS_REFERENCE_KEY",
            "invalid cross reference id",
            &[]
        )
    );
    assert_eq!(
        items[2],
        error_item(
            "MALFORMED_ID",
            "Account ID: id value of incorrect type: not-an-id",
            &["Id"]
        )
    );
    assert_eq!(
        items[3],
        error_item(
            "MISSING_ARGUMENT",
            "Id not specified in an update call",
            &[]
        )
    );
    assert_eq!(
        items[4],
        error_item(
            "REQUIRED_FIELD_MISSING",
            "Required fields are missing: [LastName]",
            &["LastName"]
        )
    );
    assert_eq!(items[5]["errors"][0]["statusCode"], "MALFORMED_ID");
    assert_eq!(org.record("Account", &acme).expect("acme")["Rating"], "Hot");
    assert_eq!(
        org.record("Contact", &ada).expect("ada")["Name"]["LastName"],
        "Lovelace"
    );

    let r = api
        .patch(
            "/composite/sobjects/Account/External_Id__c",
            json!({"allOrNone": false, "records": [
                account(json!({"External_Id__c": "acme-1", "Phone": "+1 555"})),
                account(json!({"External_Id__c": "NEW-2", "Name": "Newco"})),
                account(json!({"Id": acme, "External_Id__c": "X-3", "Name": "x"})),
                account(json!({"Name": "No key"})),
                account(json!({"External_Id__c": "NEW-4"})),
                account(json!({"External_Id__c": "DUP", "Name": "d1"})),
                account(json!({"External_Id__c": "dup", "Name": "d2"})),
            ]}),
        )
        .await;
    assert_eq!(r.status, 200);
    let items = r.body.as_array().expect("results");
    assert_eq!(
        items[0],
        json!({"id": acme, "success": true, "errors": [], "created": false})
    );
    assert_eq!(items[1]["success"], true);
    assert_eq!(items[1]["created"], true);
    let newco = id_of(&items[1]);
    assert_eq!(items[2]["errors"][0]["statusCode"], "INVALID_FIELD");
    assert_eq!(items[2]["errors"][0]["fields"], json!(["Id"]));
    assert_eq!(
        items[3],
        error_item("MISSING_ARGUMENT", "External_Id__c not specified", &[])
    );
    assert_eq!(
        items[4]["errors"][0]["statusCode"],
        "REQUIRED_FIELD_MISSING"
    );
    for item in &items[5..7] {
        assert_eq!(item["errors"][0]["statusCode"], "DUPLICATE_EXTERNAL_ID");
    }
    assert_eq!(
        org.record("Account", &acme).expect("acme")["Phone"],
        "+1 555"
    );
    let found = org
        .find_by_external_id("Account", "External_Id__c", "new-2")
        .expect("newco");
    assert_eq!(found["Id"], newco.as_str());
    assert_eq!(found["Name"], "Newco");
    assert_eq!(org.records("Account").len(), 2);

    let r = api
        .delete(&format!(
            "/composite/sobjects?ids={acme},{newco},001000000000000AAA,bogus&allOrNone=false"
        ))
        .await;
    assert_eq!(r.status, 200);
    let items = r.body.as_array().expect("results");
    assert_eq!(items[0], json!({"id": acme, "success": true, "errors": []}));
    assert_eq!(items[1]["success"], true);
    assert_eq!(
        items[2]["errors"][0]["statusCode"],
        "INVALID_CROSS_REFERENCE_KEY"
    );
    assert_eq!(items[3]["errors"][0]["statusCode"], "MALFORMED_ID");
    assert!(org.records("Account").is_empty());
    assert_eq!(
        org.record("Account", &acme).expect("binned")["IsDeleted"],
        true
    );
    let r = api.delete(&format!("/composite/sobjects?ids={acme}")).await;
    assert_eq!(
        r.body,
        json!([error_item("ENTITY_IS_DELETED", "entity is deleted", &[])])
    );
    org.shutdown().await;
}

#[tokio::test]
async fn all_or_none_commits_nothing_and_reports_rolled_back_records() {
    let (org, api) = start().await;
    let r = api
        .post(
            "/composite/sobjects",
            json!({"allOrNone": true, "records": [
                account(json!({"Name": "Fine"})),
                account(json!({"Phone": "no name"})),
            ]}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        json!([
            error_item("ALL_OR_NONE_OPERATION_ROLLED_BACK", ROLLED_BACK, &[]),
            error_item(
                "REQUIRED_FIELD_MISSING",
                "Required fields are missing: [Name]",
                &["Name"]
            ),
        ])
    );
    assert!(org.records("Account").is_empty());
    assert_eq!(org.event_count(ACCOUNTS), 0);

    let keep = org
        .create("Account", obj(json!({"Name": "Keep"})))
        .expect("keep");
    let records = json!([
        account(json!({"Id": keep, "Rating": "Hot"})),
        account(json!({"Id": "001000000000000AAA", "Rating": "Hot"})),
    ]);
    let r = api
        .patch(
            "/composite/sobjects",
            json!({"allOrNone": true, "records": records}),
        )
        .await;
    assert_eq!(
        r.body[0],
        json!({"id": keep, "success": false, "errors": [{"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK", "message": ROLLED_BACK, "fields": []}]})
    );
    assert!(
        org.record("Account", &keep)
            .expect("keep")
            .get("Rating")
            .is_none()
    );
    assert_eq!(org.event_count(ACCOUNTS), 1);

    // The same request without allOrNone: the valid record commits.
    let r = api
        .patch(
            "/composite/sobjects",
            json!({"allOrNone": false, "records": records}),
        )
        .await;
    assert_eq!(r.body[0]["success"], true);
    assert_eq!(org.record("Account", &keep).expect("keep")["Rating"], "Hot");
    assert_eq!(org.event_count(ACCOUNTS), 2);
    org.shutdown().await;
}

#[tokio::test]
async fn whole_request_errors_and_the_200_record_cap() {
    let (org, api) = start().await;
    let many: Vec<Value> = (0..201)
        .map(|i| account(json!({"Name": format!("A{i}")})))
        .collect();
    let r = api
        .post("/composite/sobjects", json!({"records": many}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        json!([{"message": "record limit reached. cannot submit more than 200 records in a single call", "errorCode": "EXCEEDED_ID_LIMIT", "fields": []}])
    );
    let ok: Vec<Value> = (0..200)
        .map(|i| account(json!({"Name": format!("A{i}")})))
        .collect();
    let r = api
        .post("/composite/sobjects", json!({"records": ok}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(org.records("Account").len(), 200);
    let ids: Vec<String> = org
        .records("Account")
        .iter()
        .map(|r| r["Id"].as_str().expect("id").to_owned())
        .collect();
    let r = api
        .delete(&format!(
            "/composite/sobjects?ids={},{}",
            ids.join(","),
            ids[0]
        ))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body[0]["errorCode"], "EXCEEDED_ID_LIMIT");

    let r = api
        .post(
            "/composite/sobjects",
            json!({"records": [
                account(json!({"Name": "Valid"})),
                account(json!({"Name": "Typo", "Foo__c": 1})),
            ]}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        json!([{"message": "No such column 'Foo__c' on sobject of type Account", "errorCode": "INVALID_FIELD", "fields": ["Foo__c"]}])
    );
    let r = api
        .patch(
            "/composite/sobjects",
            json!({"records": [account(json!({"Id": ids[0], "NumberOfEmployees": "many"}))]}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body[0]["errorCode"], "JSON_PARSER_ERROR");
    let message = r.body[0]["message"].as_str().expect("message");
    assert!(message.contains("NumberOfEmployees"), "{message}");
    let r = api
        .send_raw(
            Method::POST,
            "/composite/sobjects",
            Some("{\"records\": [".into()),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body[0]["errorCode"], "JSON_PARSER_ERROR");
    let r = api
        .post(
            "/composite/sobjects",
            json!({"records": [{"Name": "untyped"}]}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body[0]["errorCode"], "INVALID_TYPE");
    assert_eq!(org.records("Account").len(), 200, "nothing was written");
    org.shutdown().await;
}

#[tokio::test]
async fn required_fields_and_unique_external_ids() {
    let (org, api) = start().await;
    let r = api.post("/sobjects/Account", json!({"Phone": "1"})).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        json!([{"message": "Required fields are missing: [Name]", "errorCode": "REQUIRED_FIELD_MISSING", "fields": ["Name"]}])
    );
    let r = api.post("/sobjects/Account", json!({"Name": "  "})).await;
    assert_eq!(r.body[0]["errorCode"], "REQUIRED_FIELD_MISSING");
    let r = api
        .post("/sobjects/Contact", json!({"FirstName": "Ada"}))
        .await;
    assert_eq!(r.body[0]["fields"], json!(["LastName"]));
    assert!(matches!(
        org.create("Account", obj(json!({"Phone": "1"}))),
        Err(SimError::RequiredFieldMissing { .. })
    ));
    assert!(org.records("Account").is_empty());

    let r = api
        .post(
            "/sobjects/Account",
            json!({"Name": "A", "External_Id__c": "EXT-1"}),
        )
        .await;
    assert_eq!(r.status, 201);
    let a = id_of(&r.body);
    let r = api
        .post(
            "/sobjects/Account",
            json!({"Name": "B", "External_Id__c": "ext-1"}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        json!([{"message": format!("duplicate value found: External_Id__c duplicates value on record with id: {a}"), "errorCode": "DUPLICATE_VALUE", "fields": []}])
    );
    let b = org
        .create(
            "Account",
            obj(json!({"Name": "B", "External_Id__c": "EXT-2"})),
        )
        .expect("b");
    let r = api
        .patch(
            &format!("/sobjects/Account/{b}"),
            json!({"External_Id__c": "EXT-1"}),
        )
        .await;
    assert_eq!(r.body[0]["errorCode"], "DUPLICATE_VALUE");
    assert!(matches!(
        org.update("Account", &b, obj(json!({"External_Id__c": "Ext-1"}))),
        Err(SimError::DuplicateValue { .. })
    ));
    let r = api
        .patch(&format!("/sobjects/Account/{a}"), json!({"Name": null}))
        .await;
    assert_eq!(r.body[0]["errorCode"], "REQUIRED_FIELD_MISSING");
    // Another object may hold the same value; a deleted record holds none.
    let r = api
        .post(
            "/sobjects/Contact",
            json!({"LastName": "C", "External_Id__c": "EXT-1"}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        api.delete(&format!("/sobjects/Account/{a}")).await.status,
        204
    );
    let r = api
        .post(
            "/sobjects/Account",
            json!({"Name": "A2", "External_Id__c": "EXT-1"}),
        )
        .await;
    assert_eq!(r.status, 201);

    // Single-row upsert by External Id.
    let r = api
        .patch(
            "/sobjects/Account/External_Id__c/EXT-9",
            json!({"Name": "Nine"}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["created"], true);
    let nine = id_of(&r.body);
    let r = api
        .patch(
            "/sobjects/Account/External_Id__c/ext-9",
            json!({"Phone": "9"}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        json!({"id": nine, "success": true, "errors": [], "created": false})
    );
    let r = api.get("/sobjects/Account/External_Id__c/EXT-9").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["Phone"], "9");
    assert_eq!(r.body["Id"], nine.as_str());
    let r = api
        .patch("/sobjects/Account/Name/Nine", json!({"Phone": "9"}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body[0]["errorCode"], "INVALID_FIELD");
    let r = api
        .patch("/sobjects/Account/Nope__c/x", json!({"Phone": "9"}))
        .await;
    assert_eq!(r.status, 404);
    org.shutdown().await;
}

#[tokio::test]
async fn query_by_id_15_and_18_and_by_external_id() {
    let (org, api) = start().await;
    let mk = |name: &str, ext: &str| {
        org.create("Account", obj(json!({"Name": name, "External_Id__c": ext})))
            .expect("create")
    };
    let a = mk("Alpha", "EXT-A");
    let b = mk("Beta", "O'Brien");
    let c = mk("Gamma", "EXT-C");
    org.delete("Account", &c).expect("delete");

    let r = api
        .query(&format!(
            "SELECT Id, Name, External_Id__c, SystemModstamp FROM Account WHERE Id IN ('{}', '{b}', '{c}')",
            &a[..15]
        ))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["totalSize"], 2);
    assert_eq!(r.body["done"], true);
    let rows = r.body["records"].as_array().expect("records");
    assert_eq!(rows[0]["Id"], a.as_str());
    assert_eq!(rows[1]["Id"], b.as_str());
    assert_eq!(
        rows[0]["attributes"],
        json!({"type": "Account", "url": format!("/services/data/v62.0/sobjects/Account/{a}")})
    );
    let modstamp = org.record("Account", &a).expect("a")["SystemModstamp"]
        .as_i64()
        .expect("ms");
    assert_eq!(rows[0]["SystemModstamp"], sftime::format_datetime(modstamp));
    assert!(rows[0].get("Phone").is_none(), "only selected fields");

    let r = api
        .query("select id, name from account where External_Id__c = 'ext-a'")
        .await;
    assert_eq!(r.body["totalSize"], 1);
    assert_eq!(r.body["records"][0]["Name"], "Alpha");
    let r = api
        .query("SELECT Id FROM Account WHERE External_Id__c IN ('O\\'Brien', 'EXT-C', 'none')")
        .await;
    assert_eq!(r.body["totalSize"], 1, "deleted records are excluded");
    assert_eq!(r.body["records"][0]["Id"], b.as_str());
    let r = api.query("SELECT Id FROM Account LIMIT 1").await;
    assert_eq!(r.body["totalSize"], 1);

    let r = api.query("SELECT Id, Foo__c FROM Account").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body[0]["errorCode"], "INVALID_FIELD");
    let r = api.query("SELECT Id FROM Account GROUP BY Name").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body[0]["errorCode"], "MALFORMED_QUERY");
    let r = api.get("/query").await;
    assert_eq!(r.body[0]["errorCode"], "MALFORMED_QUERY");

    let rows = org
        .query(&format!(
            "SELECT Name, SystemModstamp FROM Account WHERE Id = '{a}'"
        ))
        .expect("query");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["Name"], "Alpha");
    assert_eq!(
        rows[0]["SystemModstamp"], modstamp,
        "the Rust API keeps epoch ms"
    );
    org.shutdown().await;
}

#[tokio::test]
async fn datetimes_render_as_salesforce_text_and_accept_iso_input() {
    let (org, api) = start().await;
    org.add_field("Account", "Renewal__c", json!("datetime"))
        .expect("add field");
    let r = api
        .post(
            "/sobjects/Account",
            json!({"Name": "T", "Renewal__c": "2024-01-31T13:05:09.042+01:00"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = id_of(&r.body);
    let stored = org.record("Account", &id).expect("record");
    // Stored to the second, as a real org stores datetimes (SOAP API Developer Guide,
    // "Primitive Data Types": dateTime).
    assert_eq!(stored["Renewal__c"], 1_706_702_709_000_i64);
    let r = api.get(&format!("/sobjects/Account/{id}")).await;
    assert_eq!(r.body["Renewal__c"], "2024-01-31T12:05:09.000+0000");
    for field in ["CreatedDate", "LastModifiedDate", "SystemModstamp"] {
        let ms = stored[field].as_i64().expect("epoch ms");
        assert_eq!(r.body[field], sftime::format_datetime(ms), "{field}");
        assert!(
            r.body[field]
                .as_str()
                .is_some_and(|s| s.ends_with(".000+0000"))
        );
    }
    assert_eq!(r.body["Phone"], Value::Null, "unset fields are null");
    assert_eq!(r.body["IsDeleted"], false);

    let r = api
        .post(
            "/composite/sobjects",
            json!({"records": [contact(json!({"LastName": "Born", "Birthdate": "1990-05-17"}))]}),
        )
        .await;
    let born = id_of(&r.body[0]);
    assert_eq!(
        org.record("Contact", &born).expect("born")["Birthdate"],
        sftime::parse_date("1990-05-17").expect("date")
    );
    let r = api
        .query(&format!(
            "SELECT Birthdate, CreatedDate FROM Contact WHERE Id = '{born}'"
        ))
        .await;
    assert_eq!(r.body["records"][0]["Birthdate"], "1990-05-17");
    assert!(
        r.body["records"][0]["CreatedDate"]
            .as_str()
            .is_some_and(|s| s.ends_with("+0000") && s.len() == 28)
    );

    let r = api
        .patch(&format!("/sobjects/Account/{id}"), json!({"Renewal__c": 0}))
        .await;
    assert_eq!(r.status, 204, "epoch ms are still accepted");
    let r = api
        .get(&format!("/sobjects/Account/{id}?fields=Renewal__c,Name"))
        .await;
    assert_eq!(r.body["Renewal__c"], "1970-01-01T00:00:00.000+0000");
    assert!(r.body.get("Phone").is_none());
    let r = api
        .patch(
            &format!("/sobjects/Account/{id}"),
            json!({"Renewal__c": "yesterday"}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body[0]["errorCode"], "JSON_PARSER_ERROR");
    assert_eq!(r.body[0]["fields"], json!(["Renewal__c"]));
    org.shutdown().await;
}

#[tokio::test]
async fn composite_enforces_25_subrequests_and_5_collections_or_queries() {
    let (org, api) = start().await;
    let collection = |i: usize| {
        sub(
            &format!("c{i}"),
            "POST",
            "/composite/sobjects",
            Some(json!({"records": [account(json!({"Name": format!("C{i}")}))]})),
        )
    };
    let query = sub("q", "GET", "/query?q=SELECT+Id+FROM+Account", None);
    let mut six: Vec<Value> = (0..5).map(collection).collect();
    six.push(query.clone());
    let r = api.composite(false, six).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body[0]["errorCode"], "LIMIT_EXCEEDED");
    assert!(org.records("Account").is_empty());

    let mut five: Vec<Value> = (0..4).map(collection).collect();
    five.push(query);
    five.push(sub(
        "row",
        "POST",
        "/sobjects/Account",
        Some(json!({"Name": "Row"})),
    ));
    let r = api.composite(false, five).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(org.records("Account").len(), 5);

    let id = org.records("Account")[0]["Id"]
        .as_str()
        .expect("id")
        .to_owned();
    let gets = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| {
                sub(
                    &format!("g{i}"),
                    "GET",
                    &format!("/sobjects/Account/{id}"),
                    None,
                )
            })
            .collect()
    };
    let r = api.composite(false, gets(26)).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body[0]["errorCode"], "LIMIT_EXCEEDED");
    let r = api.composite(false, gets(25)).await;
    assert_eq!(r.status, 200);
    let responses = r.body["compositeResponse"].as_array().expect("responses");
    assert_eq!(responses.len(), 25);
    assert!(responses.iter().all(|r| r["httpStatusCode"] == 200));
    assert_eq!(responses[24]["referenceId"], "g24");
    assert_eq!(responses[0]["body"]["Id"], id.as_str());
    org.shutdown().await;
}

#[tokio::test]
async fn a_composite_counts_one_call_and_limits_report_usage() {
    let (org, api) = start().await;
    assert_eq!(org.api_usage(), (0, 100_000), "OAuth calls are not counted");
    let r = api
        .composite(
            false,
            vec![
                sub("a", "POST", "/sobjects/Account", Some(json!({"Name": "A"}))),
                sub("b", "POST", "/sobjects/Account", Some(json!({"Name": "B"}))),
                sub("q", "GET", "/query?q=SELECT+Id+FROM+Account", None),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.limit_info.as_deref(), Some("api-usage=1/100000"));
    assert_eq!(org.api_usage(), (1, 100_000));
    let statuses: Vec<&Value> = r.body["compositeResponse"]
        .as_array()
        .expect("responses")
        .iter()
        .map(|r| &r["httpStatusCode"])
        .collect();
    assert_eq!(statuses, [201, 201, 200]);
    assert_eq!(
        r.body["compositeResponse"][2]["body"]["totalSize"], 2,
        "a later subrequest sees the earlier ones' records"
    );

    let r = api.get("/limits").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.limit_info.as_deref(), Some("api-usage=2/100000"));
    assert_eq!(
        r.body["DailyApiRequests"],
        json!({"Max": 100_000, "Remaining": 99_998})
    );
    assert!(r.body["DailyBulkApiBatches"]["Max"].is_u64());
    org.shutdown().await;
}

#[tokio::test]
async fn an_exhausted_allocation_refuses_calls_but_limits_still_answers() {
    let (org, api) = start().await;
    let id = org
        .create("Account", obj(json!({"Name": "A"})))
        .expect("create");
    org.set_api_limit(3);
    org.set_api_usage(3);
    let r = api.get(&format!("/sobjects/Account/{id}")).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.body,
        json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    );
    assert_eq!(r.limit_info.as_deref(), Some("api-usage=3/3"));
    let r = api
        .composite(
            false,
            vec![sub("a", "GET", &format!("/sobjects/Account/{id}"), None)],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(org.api_usage(), (3, 3), "refused calls are not counted");
    let r = api.get("/limits").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body["DailyApiRequests"],
        json!({"Max": 3, "Remaining": 0})
    );

    org.set_api_usage(0);
    let r = api.get(&format!("/sobjects/Account/{id}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.limit_info.as_deref(), Some("api-usage=1/3"));
    org.shutdown().await;
}

#[tokio::test]
async fn fault_knobs_refuse_calls_lock_rows_and_validate() {
    let (org, api) = start().await;
    let id = org
        .create("Account", obj(json!({"Name": "A"})))
        .expect("create");
    let path = format!("/sobjects/Account/{id}");
    org.fail_next_requests(2, RestFault::ServiceUnavailable);
    org.fail_next_requests(1, RestFault::TooManyRequests);
    org.fail_next_requests(1, RestFault::RequestLimitExceeded);
    for expected in [503, 503, 429, 403] {
        let r = api.get(&path).await;
        assert_eq!(r.status, expected, "{:?}", r.body);
        if expected == 503 {
            assert_eq!(r.body[0]["errorCode"], "SERVER_UNAVAILABLE");
        } else {
            assert_eq!(r.body[0]["errorCode"], "REQUEST_LIMIT_EXCEEDED");
        }
    }
    assert_eq!(org.api_usage().0, 0, "refused calls are not counted");
    assert_eq!(api.get(&path).await.status, 200);
    assert_eq!(org.api_usage().0, 1);

    org.lock_rows(1);
    let r = api
        .post(
            "/composite/sobjects",
            json!({"records": [account(json!({"Name": "L1"})), account(json!({"Name": "L2"}))]}),
        )
        .await;
    assert_eq!(r.body[0]["errors"][0]["statusCode"], "UNABLE_TO_LOCK_ROW");
    let message = r.body[0]["errors"][0]["message"].as_str().expect("message");
    assert!(
        message.starts_with("unable to obtain exclusive access to this record or 1 records: 001"),
        "{message}"
    );
    assert_eq!(r.body[1]["success"], true);
    assert_eq!(org.records("Account").len(), 2);

    org.add_validation_rule(
        "Account",
        "Rating",
        json!("Forbidden"),
        "Rating can't be Forbidden",
    )
    .expect("rule");
    let r = api
        .patch(
            "/composite/sobjects",
            json!({"records": [account(json!({"Id": id, "Rating": "Forbidden"}))]}),
        )
        .await;
    assert_eq!(
        r.body,
        json!([error_item(
            "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            "Rating can't be Forbidden",
            &["Rating"]
        )])
    );
    assert!(matches!(
        org.update("Account", &id, obj(json!({"Rating": "Forbidden"}))),
        Err(SimError::ValidationFailed { .. })
    ));

    // Latency only delays.
    org.set_rest_latency(Duration::from_millis(5));
    assert_eq!(api.get(&path).await.status, 200);
    org.set_rest_latency(Duration::ZERO);

    // The same knobs over HTTP, for `forcebridge sim`.
    let http = http_client();
    let faults = format!("{}/sim/faults", org.instance_url());
    let state: Value = http
        .post(&faults)
        .json(&json!({"fail_next": {"count": 1, "fault": "service_unavailable"}, "lock_rows": 0}))
        .send()
        .await
        .expect("faults")
        .json()
        .await
        .expect("json");
    assert_eq!(state["pending_faults"], 1);
    assert_eq!(api.get(&path).await.status, 503);
    assert_eq!(api.get(&path).await.status, 200);
    let bad = http
        .post(&faults)
        .json(&json!({"fail_next": {"count": 1, "fault": "meteor"}}))
        .send()
        .await
        .expect("faults");
    assert!(bad.status().is_client_error());
    org.shutdown().await;
}

#[tokio::test]
async fn composite_writes_emit_one_transaction_tagged_as_the_caller_and_integration_user() {
    let (org, api) = start().await;
    let api = api.tagged("forcebridge");
    let mut other = sub(
        "other",
        "PATCH",
        "/sobjects/Account/External_Id__c/OTHER",
        Some(json!({"Name": "Other"})),
    );
    other["url"] = json!("/services/data/v61.0/sobjects/Account/External_Id__c/OTHER");
    other["httpHeaders"] = json!({"Sforce-Call-Options": "client=other"});
    let r = api
        .composite(
            true,
            vec![
                sub(
                    "acct",
                    "POST",
                    "/sobjects/Account",
                    Some(json!({"Name": "Acme", "External_Id__c": "ACME"})),
                ),
                sub(
                    "contacts",
                    "POST",
                    "/composite/sobjects",
                    Some(json!({"records": [
                        contact(json!({"LastName": "A", "AccountId": "@{acct.id}"})),
                        contact(json!({"LastName": "B", "AccountId": "@{acct.id}"})),
                    ]})),
                ),
                sub(
                    "touch",
                    "PATCH",
                    "/sobjects/Account/@{acct.id}",
                    Some(json!({"Rating": "Hot"})),
                ),
                sub(
                    "found",
                    "GET",
                    "/query?q=SELECT+Id%2C+AccountId+FROM+Contact",
                    None,
                ),
                other,
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let responses = r.body["compositeResponse"].as_array().expect("responses");
    let statuses: Vec<&Value> = responses.iter().map(|r| &r["httpStatusCode"]).collect();
    assert_eq!(statuses, [201, 200, 204, 200, 201], "{responses:?}");
    let acct = id_of(&responses[0]["body"]);
    assert_eq!(
        responses[0]["httpHeaders"]["Location"],
        format!("/services/data/v62.0/sobjects/Account/{acct}")
    );
    assert_eq!(responses[3]["body"]["totalSize"], 2);
    assert_eq!(
        responses[3]["body"]["records"][0]["AccountId"],
        acct.as_str()
    );

    let cfg = org.config().clone();
    let decoded = events(&org, ALL_CHANGES, 4).await;
    assert_eq!(org.event_count(ALL_CHANGES), 4);
    let headers: Vec<&Value> = decoded.iter().map(|e| &e["ChangeEventHeader"]).collect();
    for h in &headers {
        assert_eq!(h["transactionKey"], headers[0]["transactionKey"]);
        assert_eq!(h["commitNumber"], headers[0]["commitNumber"]);
        assert_eq!(h["commitUser"], cfg.integration_user_id.as_str());
        assert_eq!(h["changeType"], "CREATE");
    }
    let origins: Vec<&str> = headers
        .iter()
        .map(|h| h["changeOrigin"].as_str().expect("origin"))
        .collect();
    assert_eq!(
        origins,
        [
            "com/salesforce/api/rest/62.0;client=forcebridge",
            "com/salesforce/api/rest/62.0;client=forcebridge",
            "com/salesforce/api/rest/62.0;client=forcebridge",
            "com/salesforce/api/rest/61.0;client=other",
        ]
    );
    assert_eq!(headers[0]["recordIds"], json!([acct]));
    assert_eq!(
        decoded[0]["Rating"], "Hot",
        "create + update in one transaction: one CREATE"
    );
    assert_eq!(decoded[0]["OwnerId"], cfg.integration_user_id.as_str());
    assert_eq!(decoded[1]["AccountId"], acct.as_str());
    assert_eq!(decoded[3]["Name"], "Other");
    org.shutdown().await;
}

#[tokio::test]
async fn composite_all_or_none_rolls_back_everything_and_halts_the_rest() {
    let (org, api) = start().await;
    let r = api
        .composite(
            true,
            vec![
                sub(
                    "one",
                    "POST",
                    "/sobjects/Account",
                    Some(json!({"Name": "One"})),
                ),
                sub(
                    "two",
                    "POST",
                    "/sobjects/Account",
                    Some(json!({"Phone": "2"})),
                ),
                sub(
                    "three",
                    "POST",
                    "/sobjects/Account",
                    Some(json!({"Name": "Three"})),
                ),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    let responses = r.body["compositeResponse"].as_array().expect("responses");
    assert_eq!(
        responses[0],
        json!({"body": [{"errorCode": "PROCESSING_HALTED", "message": HALTED}], "httpHeaders": {}, "httpStatusCode": 400, "referenceId": "one"})
    );
    assert_eq!(responses[1]["httpStatusCode"], 400);
    assert_eq!(
        responses[1]["body"][0]["errorCode"],
        "REQUIRED_FIELD_MISSING"
    );
    assert_eq!(responses[2]["body"][0]["errorCode"], "PROCESSING_HALTED");
    assert!(org.records("Account").is_empty());
    assert_eq!(org.event_count(ALL_CHANGES), 0);

    // A Collections subrequest with a failed record fails the all-or-none Composite, whatever
    // its own allOrNone says.
    let r = api
        .composite(
            true,
            vec![
                sub(
                    "coll",
                    "POST",
                    "/composite/sobjects",
                    Some(json!({"allOrNone": false, "records": [
                        account(json!({"Name": "Fine"})),
                        account(json!({"Phone": "x"})),
                    ]})),
                ),
                sub(
                    "after",
                    "POST",
                    "/sobjects/Account",
                    Some(json!({"Name": "After"})),
                ),
            ],
        )
        .await;
    let responses = r.body["compositeResponse"].as_array().expect("responses");
    assert_eq!(responses[0]["httpStatusCode"], 200);
    assert_eq!(responses[0]["body"][0]["success"], true);
    assert_eq!(responses[0]["body"][1]["success"], false);
    assert_eq!(responses[1]["body"][0]["errorCode"], "PROCESSING_HALTED");
    assert!(org.records("Account").is_empty());
    assert_eq!(org.event_count(ALL_CHANGES), 0);

    // Without allOrNone every subrequest is its own transaction; a reference to a failed one
    // can't be resolved.
    let r = api
        .composite(
            false,
            vec![
                sub(
                    "one",
                    "POST",
                    "/sobjects/Account",
                    Some(json!({"Name": "One"})),
                ),
                sub(
                    "bad",
                    "POST",
                    "/sobjects/Account",
                    Some(json!({"Phone": "2"})),
                ),
                sub(
                    "dependent",
                    "PATCH",
                    "/sobjects/Account/@{bad.id}",
                    Some(json!({"Rating": "Hot"})),
                ),
                sub(
                    "four",
                    "POST",
                    "/sobjects/Account",
                    Some(json!({"Name": "Four"})),
                ),
            ],
        )
        .await;
    let statuses: Vec<&Value> = r.body["compositeResponse"]
        .as_array()
        .expect("responses")
        .iter()
        .map(|r| &r["httpStatusCode"])
        .collect();
    assert_eq!(statuses, [201, 400, 400, 201]);
    assert_eq!(
        r.body["compositeResponse"][2]["body"][0]["errorCode"],
        "PROCESSING_HALTED"
    );
    assert_eq!(org.records("Account").len(), 2);
    let decoded = events(&org, ACCOUNTS, 2).await;
    assert_ne!(
        decoded[0]["ChangeEventHeader"]["transactionKey"],
        decoded[1]["ChangeEventHeader"]["transactionKey"]
    );
    org.shutdown().await;
}

#[tokio::test]
async fn a_partial_success_commits_the_valid_records_as_one_transaction() {
    let (org, api) = start().await;
    let ids: Vec<String> = ["A", "B", "C"]
        .iter()
        .map(|n| {
            org.create("Account", obj(json!({"Name": n})))
                .expect("create")
        })
        .collect();
    let r = api
        .patch(
            "/composite/sobjects",
            json!({"allOrNone": false, "records": [
                account(json!({"Id": ids[0], "Rating": "Hot"})),
                account(json!({"Id": ids[1], "Rating": "Hot"})),
                account(json!({"Id": "001000000000000AAA", "Rating": "Hot"})),
                account(json!({"Id": ids[2], "Rating": "Hot"})),
            ]}),
        )
        .await;
    let ok: Vec<&Value> = r
        .body
        .as_array()
        .expect("results")
        .iter()
        .map(|i| &i["success"])
        .collect();
    assert_eq!(ok, [true, true, false, true]);
    assert_eq!(org.event_count(ACCOUNTS), 4, "3 creates + 1 merged update");
    let decoded = events(&org, ACCOUNTS, 4).await;
    let update = &decoded[3]["ChangeEventHeader"];
    assert_eq!(update["changeType"], "UPDATE");
    assert_eq!(update["recordIds"], json!(ids));

    let r = api
        .post(
            "/composite/sobjects",
            json!({"records": [
                account(json!({"Name": "X"})),
                account(json!({"Phone": "no name"})),
                account(json!({"Name": "Y"})),
            ]}),
        )
        .await;
    let ok: Vec<&Value> = r
        .body
        .as_array()
        .expect("results")
        .iter()
        .map(|i| &i["success"])
        .collect();
    assert_eq!(ok, [true, false, true]);
    let decoded = events(&org, ACCOUNTS, 6).await;
    let (x, y) = (
        &decoded[4]["ChangeEventHeader"],
        &decoded[5]["ChangeEventHeader"],
    );
    assert_eq!(x["transactionKey"], y["transactionKey"]);
    assert_eq!(x["commitNumber"], y["commitNumber"]);
    assert_eq!(x["sequenceNumber"], 1);
    assert_eq!(y["sequenceNumber"], 2);
    assert_ne!(x["transactionKey"], update["transactionKey"]);
    org.shutdown().await;
}

#[tokio::test]
async fn password_tokens_act_as_the_org_user_and_bad_paths_are_salesforce_errors() {
    let org = SimOrg::start(SimConfig::default()).await.expect("start");
    let api = Rest {
        token: login(&org).await,
        ..Rest::login(&org).await
    };
    let r = api.post("/sobjects/Account", json!({"Name": "P"})).await;
    let id = id_of(&r.body);
    let rec = org.record("Account", &id).expect("record");
    assert_eq!(rec["CreatedById"], org.config().user_id.as_str());

    assert_eq!(api.get("/sobjects/Lead/00Q000000000000").await.status, 404);
    assert_eq!(api.get("/nowhere").await.status, 404);
    let r = api
        .send(
            Method::PUT,
            &format!("/sobjects/Account/{id}"),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.body[0]["errorCode"], "METHOD_NOT_ALLOWED");
    let r = api.get("/sobjects/Account/garbage").await;
    assert_eq!(r.status, 404);
    assert_eq!(
        api.delete(&format!("/sobjects/Account/{id}")).await.status,
        204
    );
    let r = api.get(&format!("/sobjects/Account/{id}")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body[0]["errorCode"], "ENTITY_IS_DELETED");
    let versions: Value = http_client()
        .get(format!("{}/services/data", org.instance_url()))
        .send()
        .await
        .expect("versions")
        .json()
        .await
        .expect("json");
    assert_eq!(versions[0]["version"], "62.0");
    org.shutdown().await;
}

#[tokio::test]
async fn collections_retrieve_by_post_returns_records_in_id_order_with_nulls() {
    let (org, api) = start().await;
    let ids = org.generate("Account", 3).expect("accounts");
    let contact = org
        .create("Contact", obj(json!({"Name": {"LastName": "Other"}})))
        .expect("contact");
    org.delete("Account", &ids[2]).expect("delete");
    let missing = format!("{}000000000ZZZ", &ids[0][..3]);
    let asked = vec![
        ids[1][..15].to_owned(),
        contact.clone(),
        ids[0].clone(),
        ids[2].clone(),
        missing,
        "not-an-id".to_owned(),
    ];
    let body = json!({"ids": asked, "fields": ["id", "SystemModstamp", "lastmodifiedbyid"]});
    let r = api.post("/composite/sobjects/Account", body.clone()).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.limit_info.as_deref(), Some("api-usage=1/100000"));
    let items = r.body.as_array().expect("array");
    assert_eq!(items.len(), 6, "one entry per id");
    assert_eq!(items[0]["Id"], ids[1].as_str(), "18-character Id for a 15");
    assert_eq!(items[2]["Id"], ids[0].as_str());
    assert_eq!(items[0]["attributes"]["type"], "Account");
    let keys: Vec<&String> = items[0].as_object().expect("record").keys().collect();
    assert_eq!(
        keys,
        ["Id", "LastModifiedById", "SystemModstamp", "attributes"],
        "canonical names of the requested fields only"
    );
    let stamp = items[0]["SystemModstamp"].as_str().expect("datetime text");
    assert!(sftime::parse_datetime(stamp).is_ok(), "{stamp}");
    for i in [1, 3, 4, 5] {
        assert!(items[i].is_null(), "{i}: {:?}", items[i]);
    }

    // The documented limits: 2,000 ids; known fields only; both lists required.
    let many: Vec<String> = (0..2_001).map(|_| ids[0].clone()).collect();
    let r = api
        .post(
            "/composite/sobjects/Account",
            json!({"ids": many[..2_000], "fields": ["Id"]}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.as_array().expect("array").len(), 2_000);
    let r = api
        .post(
            "/composite/sobjects/Account",
            json!({"ids": many, "fields": ["Id"]}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body[0]["errorCode"], "EXCEEDED_ID_LIMIT");
    let r = api
        .post(
            "/composite/sobjects/Account",
            json!({"ids": [ids[0]], "fields": ["Id", "Nope__c"]}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body[0]["errorCode"], "INVALID_FIELD");
    assert_eq!(r.body[0]["fields"], json!(["Nope__c"]));
    let r = api
        .post("/composite/sobjects/Account", json!({"ids": [ids[0]]}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body[0]["errorCode"], "MISSING_ARGUMENT");
    let r = api
        .post(
            "/composite/sobjects/Nope__c",
            json!({"ids": [ids[0]], "fields": ["Id"]}),
        )
        .await;
    assert_eq!(r.status, 404);

    // Inside /composite: one of the five collection or query subrequests, one API call.
    let retrieve = |i: usize| {
        sub(
            &format!("r{i}"),
            "POST",
            "/composite/sobjects/Account",
            Some(body.clone()),
        )
    };
    let (used, _) = org.api_usage();
    let r = api.composite(false, (0..5).map(retrieve).collect()).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(org.api_usage().0, used + 1);
    let first = &r.body["compositeResponse"][0];
    assert_eq!(first["httpStatusCode"], 200);
    assert_eq!(first["body"][2]["Id"], ids[0].as_str());
    assert!(first["body"][3].is_null());
    let mut six: Vec<Value> = (0..5).map(retrieve).collect();
    six.push(sub("q", "GET", "/query?q=SELECT+Id+FROM+Account", None));
    let r = api.composite(false, six).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body[0]["errorCode"], "LIMIT_EXCEEDED");
    org.shutdown().await;
}

/// Describe global and sObject Describe (REST API Developer Guide, "Describe Global" and
/// "sObject Describe"; the `Field` keys of the SOAP API Developer Guide's
/// `DescribeSObjectResult`): compounds with their components, formula and system fields typed
/// as Salesforce types them; an unknown object is `NOT_FOUND`; each call counts against
/// `DailyApiRequests`.
#[allow(clippy::too_many_lines, reason = "one describe checked key by key")]
#[tokio::test]
async fn describe_and_describe_global_have_salesforce_shapes() {
    let (org, api) = start().await;
    let before = org.api_usage().0;
    let r = api.get("/sobjects/").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["encoding"], "UTF-8");
    let sobjects = r.body["sobjects"].as_array().expect("sobjects");
    let account = sobjects
        .iter()
        .find(|o| o["name"] == "Account")
        .expect("Account in describe global");
    assert_eq!(account["keyPrefix"], "001");
    assert_eq!(account["queryable"], true);
    assert_eq!(
        account["urls"]["describe"],
        "/services/data/v62.0/sobjects/Account/describe"
    );
    assert!(sobjects.iter().any(|o| o["name"] == "Contact"));

    let r = api.get("/sobjects/Account/describe").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["name"], "Account");
    assert_eq!(r.body["createable"], true);
    assert_eq!(r.body["updateable"], true);
    assert_eq!(
        r.body["urls"]["sobject"],
        "/services/data/v62.0/sobjects/Account"
    );
    let fields = r.body["fields"].as_array().expect("fields");
    let field = |name: &str| {
        fields
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no field {name}"))
            .clone()
    };
    let id = field("Id");
    assert_eq!(
        (id["type"].as_str(), id["soapType"].as_str()),
        (Some("id"), Some("tns:ID"))
    );
    assert_eq!(
        (id["createable"].as_bool(), id["idLookup"].as_bool()),
        (Some(false), Some(true))
    );
    let city = field("BillingCity");
    assert_eq!(city["compoundFieldName"], "BillingAddress");
    assert_eq!(city["type"], "string");
    assert_eq!(
        (city["createable"].as_bool(), city["updateable"].as_bool()),
        (Some(true), Some(true))
    );
    for component in [
        "BillingStreet",
        "BillingState",
        "BillingPostalCode",
        "BillingCountry",
        "BillingStateCode",
        "BillingCountryCode",
        "BillingLatitude",
        "BillingLongitude",
        "BillingGeocodeAccuracy",
        "ShippingCity",
    ] {
        assert_eq!(field(component)["updateable"], true, "{component}");
    }
    assert!(fields.iter().all(|f| f["name"] != "BillingXyz"));
    let address = field("BillingAddress");
    assert_eq!(address["type"], "address");
    assert_eq!(
        (
            address["createable"].as_bool(),
            address["updateable"].as_bool()
        ),
        (Some(false), Some(false))
    );
    assert_eq!(address["compoundFieldName"], Value::Null);
    let description = field("Description");
    assert_eq!(
        (
            &description["type"],
            &description["length"],
            &description["extraTypeInfo"]
        ),
        (&json!("textarea"), &json!(32000), &json!("plaintextarea"))
    );
    assert_eq!(field("Phone")["type"], "phone");
    assert_eq!(field("Website")["type"], "url");
    assert_eq!(field("Industry")["type"], "picklist");
    assert_eq!(field("AnnualRevenue")["type"], "currency");
    assert_eq!(field("NumberOfEmployees")["type"], "int");
    assert_eq!(field("CreatedDate")["type"], "datetime");
    assert_eq!(field("CreatedDate")["updateable"], false);
    assert_eq!(field("SystemModstamp")["type"], "datetime");
    assert_eq!(field("IsDeleted")["type"], "boolean");
    let owner = field("OwnerId");
    assert_eq!(
        (&owner["type"], &owner["referenceTo"]),
        (&json!("reference"), &json!(["User"]))
    );
    let ext = field("External_Id__c");
    assert_eq!(
        (ext["externalId"].as_bool(), ext["idLookup"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(field("Name")["nillable"], false);
    let formula = field("Name_Upper__c");
    assert_eq!(formula["calculated"], true);
    assert_eq!(formula["calculatedFormula"], "UPPER(Name)");
    assert_eq!(
        (
            formula["createable"].as_bool(),
            formula["updateable"].as_bool()
        ),
        (Some(false), Some(false))
    );

    let r = api.get("/sobjects/Contact/describe").await;
    let contact: Vec<Value> = r.body["fields"].as_array().expect("fields").clone();
    let cf = |name: &str| {
        contact
            .iter()
            .find(|f| f["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(cf("FirstName")["compoundFieldName"], "Name");
    assert_eq!(cf("LastName")["nillable"], false);
    assert_eq!(cf("Salutation")["type"], "picklist");
    assert_eq!(
        (
            cf("Name")["type"].as_str(),
            cf("Name")["createable"].as_bool()
        ),
        (Some("string"), Some(false))
    );
    assert_eq!(cf("MailingCity")["compoundFieldName"], "MailingAddress");

    let r = api.get("/sobjects/Lead/describe").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body[0]["errorCode"], "NOT_FOUND");
    let r = api.post("/sobjects/Account/describe", json!({})).await;
    assert_eq!(r.status, 405);
    assert_eq!(
        org.api_usage().0 - before,
        5,
        "every describe call is counted"
    );
    org.shutdown().await;
}

/// Writes name a compound field's components (SOAP API Developer Guide, "Compound Fields" and
/// "Address Compound Fields"; `BillingGeocodeAccuracy` is Create/Update in the Object
/// Reference's "Account"), in any case, on every write path; the org stores them nested, as
/// change events carry them. A write naming the compound is refused with Salesforce's error
/// (restforce/restforce#390 captured it: `INVALID_FIELD_FOR_INSERT_UPDATE`, "Unable to
/// create/update fields: BillingAddress. …"), per record in collections.
#[allow(
    clippy::too_many_lines,
    reason = "every REST write path in one scenario"
)]
#[tokio::test]
async fn components_are_written_and_compounds_refused_on_every_write_path() {
    let (org, api) = start().await;
    let r = api
        .post(
            "/sobjects/Account",
            json!({"Name": "Acme", "BillingCity": "Paris", "billingcountrycode": "FR", "BillingGeocodeAccuracy": "City", "BillingLatitude": 48.85}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let acme = id_of(&r.body);
    let record = org.record("Account", &acme).expect("acme");
    assert_eq!(
        record["BillingAddress"],
        json!({"City": "Paris", "CountryCode": "FR", "GeocodeAccuracy": "City", "Latitude": 48.85})
    );
    let refused = |r: &Resp, field: &str| {
        assert_eq!(r.status, 400, "{:?}", r.body);
        assert_eq!(
            r.body[0]["errorCode"], "INVALID_FIELD_FOR_INSERT_UPDATE",
            "{:?}",
            r.body
        );
        assert_eq!(r.body[0]["fields"], json!([field]));
        assert!(
            r.body[0]["message"].as_str().is_some_and(
                |m| m.starts_with(&format!("Unable to create/update fields: {field}."))
            ),
            "{:?}",
            r.body
        );
    };
    let r = api
        .post(
            "/sobjects/Account",
            json!({"Name": "Nested", "BillingAddress": {"City": "Oslo"}}),
        )
        .await;
    refused(&r, "BillingAddress");
    let r = api
        .patch(
            &format!("/sobjects/Account/{acme}"),
            json!({"billingaddress": {"City": "Oslo"}}),
        )
        .await;
    refused(&r, "BillingAddress");
    let r = api
        .patch(
            &format!("/sobjects/Account/{acme}"),
            json!({"BillingStreet": "1 Rue", "BillingCity": null}),
        )
        .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let record = org.record("Account", &acme).expect("acme");
    assert_eq!(record["BillingAddress"]["Street"], "1 Rue");
    assert!(record["BillingAddress"].get("City").is_none());
    let r = api
        .patch(
            "/sobjects/Account/External_Id__c/EXT-9",
            json!({"Name": "Ext", "ShippingCity": "Rome"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let ext = id_of(&r.body);
    assert_eq!(
        org.record("Account", &ext).expect("ext")["ShippingAddress"]["City"],
        "Rome"
    );

    let r = api
        .post(
            "/sobjects/Contact",
            json!({"FirstName": "Ada", "lastname": "Lovelace", "Salutation": "Ms."}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let ada = id_of(&r.body);
    assert_eq!(
        org.record("Contact", &ada).expect("ada")["Name"],
        json!({"FirstName": "Ada", "LastName": "Lovelace", "Salutation": "Ms."})
    );
    let r = api
        .patch(
            &format!("/sobjects/Contact/{ada}"),
            json!({"Name": "Ada King"}),
        )
        .await;
    refused(&r, "Name");
    let r = api
        .patch(
            &format!("/sobjects/Account/{acme}"),
            json!({"BillingLatitude": "north"}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body[0]["errorCode"], "JSON_PARSER_ERROR");
    assert_eq!(
        r.body[0]["fields"],
        json!(["BillingLatitude"]),
        "{:?}",
        r.body
    );

    let r = api
        .post(
            "/composite/sobjects",
            json!({"records": [
                account(json!({"Name": "One", "BillingAddress": {"City": "Oslo"}})),
                account(json!({"Name": "Two", "BillingCity": "Oslo"})),
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body[0]["success"], false);
    assert_eq!(
        r.body[0]["errors"][0]["statusCode"],
        "INVALID_FIELD_FOR_INSERT_UPDATE"
    );
    assert_eq!(r.body[0]["errors"][0]["fields"], json!(["BillingAddress"]));
    assert_eq!(r.body[1]["success"], true, "{:?}", r.body);
    let two = id_of(&r.body[1]);
    let r = api
        .patch(
            "/composite/sobjects",
            json!({"records": [
                account(json!({"id": two, "BillingPostalCode": "0150"})),
                account(json!({"id": acme, "ShippingAddress": {"City": "x"}})),
            ]}),
        )
        .await;
    assert_eq!(
        (
            r.body[0]["success"].as_bool(),
            r.body[1]["success"].as_bool()
        ),
        (Some(true), Some(false)),
        "{:?}",
        r.body
    );
    assert_eq!(
        org.record("Account", &two).expect("two")["BillingAddress"]["PostalCode"],
        "0150"
    );
    let r = api
        .patch(
            "/composite/sobjects/Account/External_Id__c",
            json!({"records": [
                account(json!({"External_Id__c": "EXT-9", "ShippingState": "Lazio"})),
                account(json!({"External_Id__c": "EXT-10", "Name": "Ten", "ShippingAddress": null})),
            ]}),
        )
        .await;
    assert_eq!(
        (
            r.body[0]["success"].as_bool(),
            r.body[1]["success"].as_bool()
        ),
        (Some(true), Some(false)),
        "{:?}",
        r.body
    );
    assert_eq!(
        org.record("Account", &ext).expect("ext")["ShippingAddress"]["State"],
        "Lazio"
    );

    let r = api
        .composite(
            false,
            vec![
                sub(
                    "c",
                    "PATCH",
                    &format!("/sobjects/Account/{two}"),
                    Some(json!({"BillingState": "Oslo"})),
                ),
                sub(
                    "d",
                    "PATCH",
                    &format!("/sobjects/Account/{two}"),
                    Some(json!({"BillingAddress": {"State": "x"}})),
                ),
            ],
        )
        .await;
    let statuses: Vec<&Value> = r.body["compositeResponse"]
        .as_array()
        .expect("responses")
        .iter()
        .map(|s| &s["httpStatusCode"])
        .collect();
    assert_eq!(statuses, [204, 400], "{:?}", r.body);
    assert_eq!(
        org.record("Account", &two).expect("two")["BillingAddress"]["State"],
        "Oslo"
    );

    // Change events still carry the compound nested (storage is unchanged).
    let decoded = events(&org, ACCOUNTS, 1).await;
    assert_eq!(decoded[0]["BillingAddress"]["City"], "Paris");
    assert_eq!(decoded[0]["BillingAddress"]["CountryCode"], "FR");
    org.shutdown().await;
}

/// Reads return the components and the compound as Salesforce does (SOAP API Developer Guide,
/// "Address Compound Fields": lower-case keys; Object Reference, "Contact": `Name` is text),
/// through sObject GET, SOQL (components selectable and filterable, the compound selectable),
/// Collections retrieve and Composite subrequests.
#[tokio::test]
async fn reads_return_components_and_the_compound() {
    let (org, api) = start().await;
    let acme = org
        .create(
            "Account",
            obj(json!({"Name": "Acme", "BillingAddress": {"City": "Paris", "Country": "France", "Latitude": 48.85}})),
        )
        .expect("acme");
    let ada = org
        .create(
            "Contact",
            obj(json!({"Name": {"FirstName": "Ada", "LastName": "Lovelace"}})),
        )
        .expect("ada");
    let address = json!({
        "city": "Paris", "country": "France", "countryCode": null, "geocodeAccuracy": null,
        "latitude": 48.85, "longitude": null, "postalCode": null, "state": null,
        "stateCode": null, "street": null,
    });
    let r = api.get(&format!("/sobjects/Account/{acme}")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["BillingCity"], "Paris");
    assert_eq!(r.body["BillingLatitude"], 48.85);
    assert_eq!(r.body["BillingAddress"], address);
    assert_eq!(r.body["ShippingAddress"], Value::Null);
    assert!(r.body.get("BillingXyz").is_none());
    let r = api
        .get(&format!(
            "/sobjects/Contact/{ada}?fields=name,FirstName,lastname"
        ))
        .await;
    assert_eq!(
        r.body,
        json!({
            "attributes": {"type": "Contact", "url": format!("/services/data/v62.0/sobjects/Contact/{ada}")},
            "Name": "Ada Lovelace", "FirstName": "Ada", "LastName": "Lovelace",
        })
    );
    let r = api
        .query("SELECT Id, billingcity, BillingAddress FROM Account WHERE BillingCity = 'paris'")
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["totalSize"], 1);
    assert_eq!(r.body["records"][0]["BillingCity"], "Paris");
    assert_eq!(r.body["records"][0]["BillingAddress"], address);
    let r = api
        .query("SELECT Id FROM Account WHERE BillingCity = 'Oslo'")
        .await;
    assert_eq!(r.body["totalSize"], 0);
    let r = api
        .query("SELECT Name, LastName FROM Contact WHERE LastName = 'Lovelace'")
        .await;
    assert_eq!(r.body["records"][0]["Name"], "Ada Lovelace", "{:?}", r.body);
    let r = api
        .query("SELECT Id FROM Contact WHERE Name = 'ada lovelace'")
        .await;
    assert_eq!(r.body["totalSize"], 1, "{:?}", r.body);
    let r = api
        .post(
            "/composite/sobjects/Account",
            json!({"ids": [acme], "fields": ["BillingCountry", "BillingAddress"]}),
        )
        .await;
    assert_eq!(r.body[0]["BillingCountry"], "France", "{:?}", r.body);
    assert_eq!(r.body[0]["BillingAddress"], address);
    let r = api
        .composite(
            false,
            vec![sub(
                "a",
                "GET",
                &format!("/sobjects/Account/{acme}?fields=BillingCity"),
                None,
            )],
        )
        .await;
    assert_eq!(
        r.body["compositeResponse"][0]["body"]["BillingCity"], "Paris",
        "{:?}",
        r.body
    );
    org.shutdown().await;
}

/// A formula field (`Account.Name_Upper__c`, `UPPER(Name)`) is read-only
/// (`INVALID_FIELD_FOR_INSERT_UPDATE`), computed on read, and absent from change events
/// (Change Data Capture Developer Guide, "General Considerations": no formula field support).
#[tokio::test]
async fn a_formula_field_is_computed_read_only_and_absent_from_change_events() {
    let (org, api) = start().await;
    let r = api.post("/sobjects/Account", json!({"Name": "Acme"})).await;
    let acme = id_of(&r.body);
    let r = api.get(&format!("/sobjects/Account/{acme}")).await;
    assert_eq!(r.body["Name_Upper__c"], "ACME", "{:?}", r.body);
    let r = api
        .query("SELECT name_upper__c FROM Account WHERE Name_Upper__c = 'ACME'")
        .await;
    assert_eq!(
        r.body["records"][0]["Name_Upper__c"], "ACME",
        "{:?}",
        r.body
    );
    let r = api
        .patch(
            &format!("/sobjects/Account/{acme}"),
            json!({"Name_Upper__c": "X"}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body[0]["errorCode"], "INVALID_FIELD_FOR_INSERT_UPDATE");
    assert_eq!(r.body[0]["fields"], json!(["Name_Upper__c"]));
    let r = api
        .post(
            "/composite/sobjects",
            json!({"records": [account(json!({"Name": "B", "name_upper__c": "B"}))]}),
        )
        .await;
    assert_eq!(
        r.body[0]["errors"][0]["statusCode"], "INVALID_FIELD_FOR_INSERT_UPDATE",
        "{:?}",
        r.body
    );
    assert_eq!(org.records("Account").len(), 1);
    let decoded = events(&org, ACCOUNTS, 1).await;
    assert_eq!(decoded[0]["Name"], "Acme");
    assert!(
        decoded[0].get("Name_Upper__c").is_none(),
        "{:?}",
        decoded[0]
    );
    assert!(
        org.record("Account", &acme)
            .expect("acme")
            .get("Name_Upper__c")
            .is_none()
    );
    org.shutdown().await;
}
