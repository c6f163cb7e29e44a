//! The REST resources a generic client calls beyond rows and queries, through real HTTP: the
//! Identity URL, the resource list, sObject Basic Information, sObject Tree and Composite Batch.

use reqwest::Method;
use serde_json::{Value, json};

use super::tests::{Rest, events, start, token_response};
use crate::sim::tests::{http_client, login};
use crate::sim::util::API_VERSION;
use crate::sim::{SimConfig, SimOrg};

const ALL_CHANGES: &str = "/data/ChangeEvents";

/// GET `url` with an optional bearer token: status, `Sforce-Limit-Info`, body text.
async fn get_text(url: &str, token: Option<&str>) -> (u16, Option<String>, String) {
    let mut req = http_client().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    let limit = resp
        .headers()
        .get("sforce-limit-info")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, limit, resp.text().await.expect("text"))
}

/// The Identity URL the token response names answers the token's user (Mobile SDK Development
/// Guide, "Using Identity URLs"; Salesforce Help, "Identity URLs").
#[tokio::test]
async fn the_identity_url_answers_the_user_and_the_org() {
    let org = SimOrg::start(SimConfig::default()).await.expect("start");
    let cfg = org.config().clone();
    let inst = org.instance_url().to_owned();
    let token = token_response(&org).await;
    let access = token["access_token"].as_str().expect("token").to_owned();
    let id_url = token["id"].as_str().expect("id").to_owned();
    let (org_id, user) = (&cfg.org_id, &cfg.integration_user_id);
    assert_eq!(id_url, format!("{inst}/id/{org_id}/{user}"));

    let (status, limit, text) = get_text(&id_url, Some(&access)).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(limit, None, "not an API call");
    let body: Value = serde_json::from_str(&text).expect("json");
    let data = format!("{inst}/services/data/v{{version}}");
    let expected = json!({
        "id": id_url,
        "asserted_user": true,
        "user_id": user,
        "organization_id": org_id,
        "username": "integration@forcebridge.sim",
        "nick_name": "integration",
        "display_name": "Integration User",
        "email": "integration@forcebridge.sim",
        "email_verified": true,
        "first_name": "Integration",
        "last_name": "User",
        "timezone": "Etc/UTC",
        "photos": {
            "picture": format!("{inst}/profilephoto/005/F"),
            "thumbnail": format!("{inst}/profilephoto/005/T"),
        },
        "addr_street": null,
        "addr_city": null,
        "addr_state": null,
        "addr_country": null,
        "addr_zip": null,
        "mobile_phone": null,
        "mobile_phone_verified": false,
        "is_lightning_login_user": false,
        "status": {"created_date": null, "body": null},
        "urls": {
            "enterprise": format!("{inst}/services/Soap/c/{{version}}/{org_id}"),
            "metadata": format!("{inst}/services/Soap/m/{{version}}/{org_id}"),
            "partner": format!("{inst}/services/Soap/u/{{version}}/{org_id}"),
            "rest": format!("{data}/"),
            "sobjects": format!("{data}/sobjects/"),
            "search": format!("{data}/search/"),
            "query": format!("{data}/query/"),
            "recent": format!("{data}/recent/"),
            "tooling_soap": format!("{inst}/services/Soap/T/{{version}}/{org_id}"),
            "tooling_rest": format!("{data}/tooling/"),
            "profile": format!("{inst}/{user}"),
            "limits": format!("{data}/limits/"),
            "custom_domain": inst,
        },
        "active": true,
        "user_type": "STANDARD",
        "language": "en_US",
        "locale": "en_US",
        "utcOffset": 0,
        "last_modified_date": "2024-01-01T00:00:00.000+0000",
        "is_app_installed": true,
    });
    assert_eq!(body, expected);

    // As jsforce's identity() asks: the token as `oauth_token`, `format=json`; `version` fills
    // in the API URLs (`latest`: the newest).
    let url = format!("{id_url}?format=json&oauth_token={access}&version=61.0");
    let (status, _, text) = get_text(&url, None).await;
    assert_eq!(status, 200, "{text}");
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["urls"]["rest"], format!("{inst}/services/data/v61.0/"));
    assert_eq!(
        body["urls"]["partner"],
        format!("{inst}/services/Soap/u/61.0/{org_id}")
    );
    let (_, _, text) = get_text(&format!("{id_url}?version=latest"), Some(&access)).await;
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        body["urls"]["query"],
        format!("{inst}/services/data/v{API_VERSION}/query/")
    );

    // Another user of the org (15-character Ids match too), read with this token.
    let demo15 = &cfg.user_id[..15];
    let (status, _, text) = get_text(
        &format!("{inst}/id/{}/{demo15}", &org_id[..15]),
        Some(&access),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["user_id"], cfg.user_id.as_str());
    assert_eq!(body["username"], "demo@forcebridge.sim");
    assert_eq!(body["asserted_user"], false);

    let refusals = [
        (id_url.clone(), None, 403, "Missing_OAuth_Token"),
        (id_url.clone(), Some("nope"), 403, "Bad_OAuth_Token"),
        (
            format!("{inst}/id/00D000000000001AAA/{user}"),
            Some(access.as_str()),
            403,
            "Wrong_Org",
        ),
        (
            format!("{inst}/id/{org_id}/005000000000001AAA"),
            Some(access.as_str()),
            404,
            "Bad_Id",
        ),
        (
            format!("{inst}/id/{org_id}/garbage"),
            Some(access.as_str()),
            404,
            "Bad_Id",
        ),
    ];
    for (url, token, want_status, want_text) in refusals {
        let (status, _, text) = get_text(&url, token).await;
        assert_eq!((status, text.as_str()), (want_status, want_text), "{url}");
    }
    org.shutdown().await;
}

/// Resources by Version lists `identity`, the token user's Identity URL (REST API Developer
/// Guide, "Resources by Version").
#[tokio::test]
async fn the_resource_list_names_the_identity_url() {
    let (org, api) = start().await;
    let cfg = org.config().clone();
    let r = api.get("/").await;
    assert_eq!(r.status, 200);
    let base = "/services/data/v62.0";
    assert_eq!(
        r.body,
        json!({
            "sobjects": format!("{base}/sobjects"),
            "query": format!("{base}/query"),
            "composite": format!("{base}/composite"),
            "limits": format!("{base}/limits"),
            "identity": format!(
                "{}/id/{}/{}",
                org.instance_url(),
                cfg.org_id,
                cfg.integration_user_id
            ),
        })
    );
    org.shutdown().await;
}

/// sObject Basic Information: the describe global entry and the records the user last wrote
/// (REST API Developer Guide, "sObject Basic Information", "Get Metadata for an Object").
#[tokio::test]
async fn basic_information_has_the_describe_entry_and_recent_items() {
    let (org, api) = start().await;
    let global = api.get("/sobjects").await;
    let entry = global.body["sobjects"]
        .as_array()
        .expect("sobjects")
        .iter()
        .find(|s| s["name"] == "Account")
        .expect("Account")
        .clone();

    let r = api.get("/sobjects/Account").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        json!({"objectDescribe": entry.clone(), "recentItems": []})
    );

    let a = api.post("/sobjects/Account", json!({"Name": "A"})).await;
    let a = a.body["id"].as_str().expect("id").to_owned();
    let b = api.post("/sobjects/Account", json!({"Name": "B"})).await;
    let b = b.body["id"].as_str().expect("id").to_owned();
    let c = api.post("/sobjects/Account", json!({"Name": "C"})).await;
    let c = c.body["id"].as_str().expect("id").to_owned();
    let touched = api
        .send(
            Method::PATCH,
            &format!("/sobjects/Account/{a}"),
            Some(json!({"Name": "A2"})),
        )
        .await;
    assert_eq!(touched.status, 204);
    let gone = api
        .send(Method::DELETE, &format!("/sobjects/Account/{b}"), None)
        .await;
    assert_eq!(gone.status, 204);
    let item = |id: &str, name: &str| {
        json!({
            "attributes": {"type": "Account", "url": format!("/services/data/v62.0/sobjects/Account/{id}")},
            "Id": id,
            "Name": name,
        })
    };
    // Object names match in any case.
    let r = api.get("/sobjects/account").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["objectDescribe"], entry);
    assert_eq!(
        r.body["recentItems"],
        json!([item(&a, "A2"), item(&c, "C")])
    );

    // A Contact's Name is its full name; another user has a list of their own.
    let contact = api
        .post(
            "/sobjects/Contact",
            json!({"FirstName": "Ada", "LastName": "Lovelace"}),
        )
        .await;
    let contact = contact.body["id"].as_str().expect("id").to_owned();
    let r = api.get("/sobjects/Contact").await;
    assert_eq!(r.body["recentItems"][0]["Name"], "Ada Lovelace");
    assert_eq!(r.body["recentItems"][0]["Id"], contact.as_str());
    let other = Rest {
        token: login(&org).await,
        ..Rest::login(&org).await
    };
    assert_eq!(
        other.get("/sobjects/Account").await.body["recentItems"],
        json!([])
    );

    let r = api.get("/sobjects/Lead").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body[0]["errorCode"], "NOT_FOUND");
    let r = api.send(Method::PUT, "/sobjects/Account", None).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.body[0]["errorCode"], "METHOD_NOT_ALLOWED");
    org.shutdown().await;
}

fn tree_record(object: &str, reference_id: &str, fields: Value) -> Value {
    let mut r = json!({"attributes": {"type": object, "referenceId": reference_id}});
    for (k, v) in fields.as_object().expect("fields") {
        r[k] = v.clone();
    }
    r
}

/// sObject Tree creates parents then children, sets the lookups, and commits one transaction
/// (REST API Developer Guide, "sObject Tree", "Create Nested Records", "sObject Tree Response
/// Body").
#[tokio::test]
async fn a_tree_creates_parents_then_children_in_one_transaction() {
    let (org, api) = start().await;
    let api = api.tagged("loader");
    let body = json!({"records": [
        tree_record("Account", "acc1", json!({
            "Name": "Parent One",
            "Contacts": {"records": [
                tree_record("Contact", "c1", json!({"LastName": "Smith"})),
                tree_record("Contact", "c2", json!({"LastName": "Jones"})),
            ]},
            "ChildAccounts": {"records": [
                tree_record("Account", "sub1", json!({"Name": "Subsidiary"})),
            ]},
        })),
        tree_record("Account", "acc2", json!({"Name": "Parent Two"})),
    ]});
    let r = api.post("/composite/tree/Account", body).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["hasErrors"], false);
    let results = r.body["results"].as_array().expect("results");
    let refs: Vec<&str> = results
        .iter()
        .map(|x| x["referenceId"].as_str().expect("ref"))
        .collect();
    // Level by level; a record's children by relationship name (`ChildAccounts`, `Contacts`).
    assert_eq!(refs, ["acc1", "acc2", "sub1", "c1", "c2"]);
    let id = |i: usize| results[i]["id"].as_str().expect("id").to_owned();
    assert_eq!(results[0], json!({"referenceId": "acc1", "id": id(0)}));
    let (acc1, acc2, sub1, c1, c2) = (id(0), id(1), id(2), id(3), id(4));
    for (x, prefix) in [(&acc1, "001"), (&acc2, "001"), (&c1, "003"), (&c2, "003")] {
        assert!(x.starts_with(prefix), "{x}");
    }
    let c1_rec = org.record("Contact", &c1).expect("c1");
    assert_eq!(c1_rec["AccountId"], acc1.as_str());
    assert_eq!(
        org.record("Contact", &c2).expect("c2")["AccountId"],
        acc1.as_str()
    );
    assert_eq!(
        org.record("Account", &sub1).expect("sub1")["ParentId"],
        acc1.as_str()
    );
    assert_eq!(
        org.record("Account", &acc2).expect("acc2")["Name"],
        "Parent Two"
    );

    // The relationships a tree takes are those describe lists.
    let describe = api.get("/sobjects/Account/describe").await;
    assert_eq!(
        describe.body["childRelationships"],
        json!([
            {"cascadeDelete": false, "childSObject": "Contact", "deprecatedAndHidden": false,
             "field": "AccountId", "junctionIdListNames": [], "junctionReferenceTo": [],
             "relationshipName": "Contacts", "restrictedDelete": false},
            {"cascadeDelete": false, "childSObject": "Account", "deprecatedAndHidden": false,
             "field": "ParentId", "junctionIdListNames": [], "junctionReferenceTo": [],
             "relationshipName": "ChildAccounts", "restrictedDelete": false},
        ])
    );
    let describe = api.get("/sobjects/Contact/describe").await;
    assert_eq!(describe.body["childRelationships"], json!([]));

    let decoded = events(&org, ALL_CHANGES, 5).await;
    assert_eq!(org.event_count(ALL_CHANGES), 5);
    let headers: Vec<&Value> = decoded.iter().map(|e| &e["ChangeEventHeader"]).collect();
    for h in &headers {
        assert_eq!(h["transactionKey"], headers[0]["transactionKey"]);
        assert_eq!(h["changeType"], "CREATE");
        assert_eq!(
            h["changeOrigin"],
            "com/salesforce/api/rest/62.0;client=loader"
        );
    }
    org.shutdown().await;
}

/// A failing record saves nothing and is reported by its referenceId; malformed trees are
/// refused whole ("sObject Tree Response Body": duplicate reference Ids, one item each).
#[tokio::test]
async fn a_tree_with_an_error_saves_nothing() {
    let (org, api) = start().await;
    let r = api
        .post(
            "/composite/tree/Account",
            json!({"records": [
                tree_record("Account", "ok", json!({"Name": "Fine",
                    "Contacts": {"records": [tree_record("Contact", "bad", json!({"FirstName": "No"}))]}})),
                tree_record("Account", "bad2", json!({"Rating": "Hot"})),
            ]}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        json!({"hasErrors": true, "results": [
            {"referenceId": "bad2", "errors": [{"statusCode": "REQUIRED_FIELD_MISSING",
                "message": "Required fields are missing: [Name]", "fields": ["Name"]}]},
            {"referenceId": "bad", "errors": [{"statusCode": "REQUIRED_FIELD_MISSING",
                "message": "Required fields are missing: [LastName]", "fields": ["LastName"]}]},
        ]})
    );
    assert_eq!(org.event_count(ALL_CHANGES), 0);
    assert_eq!(
        api.query("SELECT COUNT() FROM Account").await.body["totalSize"],
        0
    );

    let r = api
        .post(
            "/composite/tree/Account",
            json!({"records": [
                tree_record("Account", "dup", json!({"Name": "X"})),
                tree_record("Account", "dup", json!({"Name": "Y"})),
            ]}),
        )
        .await;
    let dup = json!({"referenceId": "dup", "errors": [{"statusCode": "INVALID_INPUT",
        "message": "Duplicate ReferenceId provided in the request", "fields": []}]});
    assert_eq!(
        (r.status, r.body),
        (
            400,
            json!({"hasErrors": true, "results": [dup.clone(), dup]})
        )
    );

    let whole = [
        (
            json!({"records": [tree_record("Account", "a", json!({"Name": "A",
                "Opportunities": {"records": []}}))]}),
            "INVALID_FIELD",
            "No such column 'Opportunities' on sobject of type Account",
        ),
        (
            json!({"records": [tree_record("Contact", "a", json!({"LastName": "A"}))]}),
            "INVALID_INPUT",
            "The record a is of type Contact; this part of the tree takes Account records.",
        ),
        (
            json!({"records": [{"attributes": {"type": "Account"}, "Name": "A"}]}),
            "INVALID_INPUT",
            "Include a reference ID for each record.",
        ),
        (
            json!({"records": (0..201)
                .map(|i| tree_record("Account", &format!("r{i}"), json!({"Name": "N"})))
                .collect::<Vec<_>>()}),
            "LIMIT_EXCEEDED",
            "An sObject tree request can create at most 200 records.",
        ),
        (
            json!({"records": [tree_record("Account", "a", json!({"Nope__c": 1}))]}),
            "INVALID_FIELD",
            "No such column 'Nope__c' on sobject of type Account",
        ),
    ];
    for (body, code, message) in whole {
        let r = api.post("/composite/tree/Account", body).await;
        assert_eq!(r.status, 400, "{:?}", r.body);
        assert_eq!(r.body[0]["errorCode"], code, "{:?}", r.body);
        assert_eq!(r.body[0]["message"], message);
    }
    let r = api.post("/composite/tree/Account", json!([])).await;
    assert_eq!(r.body[0]["errorCode"], "JSON_PARSER_ERROR");
    assert_eq!(org.event_count(ALL_CHANGES), 0);

    let r = api
        .post("/composite/tree/Lead", json!({"records": []}))
        .await;
    assert_eq!(
        (r.status, &r.body[0]["errorCode"]),
        (404, &json!("NOT_FOUND"))
    );
    let r = api.get("/composite/tree/Account").await;
    assert_eq!(r.status, 405);
    org.shutdown().await;
}

/// Composite Batch runs each subrequest on its own and reports each status and body; with
/// haltOnError the rest answer 412 (REST API Developer Guide, "Composite Batch", "Batch Request
/// Body", "Batch Response Body").
#[tokio::test]
async fn a_batch_runs_subrequests_independently_and_can_halt() {
    let (org, api) = start().await;
    let (used_before, _) = org.api_usage();
    let r = api
        .post(
            "/composite/batch",
            json!({"batchRequests": [
                {"method": "POST", "url": "v62.0/sobjects/Account", "richInput": {"Name": "Batch One"}},
                {"method": "GET", "url": "v62.0/query?q=SELECT+Name+FROM+Account+WHERE+Name+%3D+%27Batch+One%27"},
                {"method": "POST", "url": "v62.0/sobjects/Account", "richInput": {"Rating": "Hot"}},
                {"method": "GET", "url": "/v62.0/limits"},
                {"method": "DELETE", "url": "v62.0/sobjects/Account/001000000000000AAA"},
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["hasErrors"], true);
    let results = r.body["results"].as_array().expect("results");
    let statuses: Vec<&Value> = results.iter().map(|x| &x["statusCode"]).collect();
    assert_eq!(statuses, [201, 200, 400, 200, 404]);
    let id = results[0]["result"]["id"].as_str().expect("id").to_owned();
    assert_eq!(
        results[0]["result"],
        json!({"id": id, "success": true, "errors": []})
    );
    assert_eq!(results[1]["result"]["records"][0]["Name"], "Batch One");
    assert_eq!(
        results[2]["result"],
        json!([{"message": "Required fields are missing: [Name]",
            "errorCode": "REQUIRED_FIELD_MISSING", "fields": ["Name"]}])
    );
    assert!(results[3]["result"]["DailyApiRequests"]["Max"].is_u64());
    assert_eq!(results[4]["result"][0]["errorCode"], "NOT_FOUND");
    // Each subrequest counts against the allocation.
    assert_eq!(org.api_usage().0, used_before + 5);
    // The valid write committed on its own.
    assert_eq!(org.event_count(ALL_CHANGES), 1);

    let r = api
        .post(
            "/composite/batch",
            json!({"haltOnError": true, "batchRequests": [
                {"method": "PATCH", "url": format!("v62.0/sobjects/Account/{id}"), "richInput": {"Name": "Renamed"}},
                {"method": "GET", "url": "v62.0/sobjects/Account/001000000000000AAA"},
                {"method": "DELETE", "url": format!("v62.0/sobjects/Account/{id}")},
            ]}),
        )
        .await;
    assert_eq!(r.status, 200);
    let halted = json!({"statusCode": 412, "result": [{"errorCode": "BATCH_PROCESSING_HALTED",
        "message": "Batch processing halted per request"}]});
    assert_eq!(r.body["hasErrors"], true);
    assert_eq!(
        r.body["results"][0],
        json!({"statusCode": 204, "result": null})
    );
    assert_eq!(r.body["results"][1]["statusCode"], 404);
    assert_eq!(r.body["results"][2], halted);
    assert_eq!(org.record("Account", &id).expect("kept")["Name"], "Renamed");

    let refused = [
        (
            json!({"batchRequests": [{"method": "GET"}]}),
            "JSON_PARSER_ERROR",
        ),
        (
            json!({"batchRequests": [{"method": "GET", "url": "sobjects/Account"}]}),
            "INVALID_INPUT",
        ),
        (
            json!({"batchRequests": (0..26)
                .map(|_| json!({"method": "GET", "url": "v62.0/limits"}))
                .collect::<Vec<_>>()}),
            "LIMIT_EXCEEDED",
        ),
        (
            json!({"haltOnError": "yes", "batchRequests": []}),
            "JSON_PARSER_ERROR",
        ),
    ];
    for (body, code) in refused {
        let r = api.post("/composite/batch", body).await;
        assert_eq!(r.status, 400, "{:?}", r.body);
        assert_eq!(r.body[0]["errorCode"], code);
    }
    // Neither Composite nor Batch nests in a batch.
    let r = api
        .post(
            "/composite/batch",
            json!({"batchRequests": [
                {"method": "POST", "url": "v62.0/composite/batch", "richInput": {"batchRequests": []}},
                {"method": "POST", "url": "v62.0/composite/tree/Account", "richInput": {"records": []}},
            ]}),
        )
        .await;
    assert_eq!(r.body["hasErrors"], true);
    for x in r.body["results"].as_array().expect("results") {
        assert_eq!(x["statusCode"], 400);
        assert_eq!(x["result"][0]["errorCode"], "INVALID_INPUT");
    }
    org.shutdown().await;
}
