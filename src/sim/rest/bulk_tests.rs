//! Bulk API 2.0 query jobs, `queryAll`, `COUNT()` and the replication resources through real
//! HTTP (reqwest against `SimOrg::start`), the CSV read back by an independent reader
//! (Python's `csv` module).

use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::sim::tests::{http_client, login};
use crate::sim::{SimConfig, SimOrg};

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// Status, the headers we look at, and the body as text.
struct Got {
    status: u16,
    locator: Option<String>,
    count: Option<String>,
    content_type: String,
    text: String,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

impl Api {
    async fn new(org: &SimOrg) -> Api {
        Api {
            http: http_client(),
            base: format!("{}/services/data/v62.0", org.instance_url()),
            token: login(org).await,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Got {
        let url = reqwest::Url::parse(&format!("{}{path}", self.base)).expect("url");
        let mut req = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("send");
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (locator, count) = (header("sforce-locator"), header("sforce-numberofrecords"));
        let content_type = header("content-type").unwrap_or_default();
        let status = resp.status().as_u16();
        Got {
            status,
            locator,
            count,
            content_type,
            text: resp.text().await.expect("text"),
        }
    }

    async fn get(&self, path: &str) -> Got {
        self.call(Method::GET, path, None).await
    }

    async fn get_with(&self, path: &str, params: &[(&str, &str)]) -> Got {
        let url =
            reqwest::Url::parse_with_params(&format!("{}{path}", self.base), params).expect("url");
        let tail = &url.as_str()[self.base.len()..];
        self.get(tail).await
    }

    async fn create(&self, body: Value) -> Got {
        self.call(Method::POST, "/jobs/query", Some(body)).await
    }
}

/// Rows of a CSV text as Python's `csv` module reads them (header first).
fn python_csv(text: &str, delimiter: char) -> Vec<Vec<String>> {
    let script = format!(
        "import csv,json,sys\nprint(json.dumps(list(csv.reader(sys.stdin, delimiter={delimiter:?}))))"
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is needed to read the CSV independently");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python3");
    assert!(out.status.success(), "python3 csv failed");
    serde_json::from_slice(&out.stdout).expect("json rows")
}

async fn start() -> (SimOrg, Api) {
    let org = SimOrg::start(SimConfig::default()).await.expect("start");
    let api = Api::new(&org).await;
    (org, api)
}

const FIELDS: &str = "Id, Name, Phone, Description, IsDeleted, CreatedDate, SystemModstamp, NumberOfEmployees, AnnualRevenue, BillingCity";

/// Every page of a job's results, `maxRecords` at a time, following `Sforce-Locator` until
/// `null`, each page read by Python's `csv`: the number of pages and the rows (headers checked).
async fn read_all(api: &Api, id: &str, max: &str) -> (usize, Vec<Vec<String>>) {
    let mut rows = Vec::new();
    let mut locator: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut params = vec![("maxRecords", max)];
        if let Some(l) = &locator {
            params.push(("locator", l.as_str()));
        }
        let page = api
            .get_with(&format!("/jobs/query/{id}/results"), &params)
            .await;
        assert_eq!(page.status, 200, "{}", page.text);
        assert!(
            page.content_type.starts_with("text/csv"),
            "{}",
            page.content_type
        );
        let parsed = python_csv(&page.text, ',');
        assert_eq!(
            parsed[0],
            FIELDS.split(", ").map(str::to_owned).collect::<Vec<_>>()
        );
        assert!(
            page.text.starts_with("\"Id\",\"Name\","),
            "every name quoted"
        );
        let n: usize = page.count.as_deref().expect("count").parse().expect("n");
        assert_eq!(n, parsed.len() - 1);
        rows.extend(parsed.into_iter().skip(1));
        pages += 1;
        match page.locator.as_deref() {
            Some("null") => break,
            Some(l) => locator = Some(l.to_owned()),
            None => panic!("no Sforce-Locator"),
        }
    }
    (pages, rows)
}

#[tokio::test]
async fn a_query_job_completes_and_its_csv_pages_follow_the_locators() {
    let (org, api) = start().await;
    org.seed("Account", 2_500, 7).expect("seed");
    let soql = format!("SELECT {FIELDS} FROM Account");
    let created = api
        .create(json!({"operation": "query", "query": soql, "contentType": "CSV", "columnDelimiter": "COMMA", "lineEnding": "LF"}))
        .await;
    assert_eq!(created.status, 200, "{}", created.text);
    let job = created.json();
    let id = job["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("750") && id.len() == 18, "{id}");
    for (k, v) in [
        ("operation", json!("query")),
        ("object", json!("Account")),
        ("state", json!("UploadComplete")),
        ("concurrencyMode", json!("Parallel")),
        ("contentType", json!("CSV")),
        ("apiVersion", json!(62.0)),
        ("lineEnding", json!("LF")),
        ("columnDelimiter", json!("COMMA")),
    ] {
        assert_eq!(job[k], v, "{k}");
    }
    for k in ["createdById", "createdDate", "systemModstamp"] {
        assert!(job[k].is_string(), "{k}");
    }
    let info = api.get(&format!("/jobs/query/{id}")).await.json();
    assert_eq!(info["state"], "JobComplete");
    assert_eq!(info["numberRecordsProcessed"], 2_500);
    assert_eq!(info["jobType"], "V2Query");
    assert_eq!(info["retries"], 0);

    let (pages, rows) = read_all(&api, &id, "1000").await;
    assert_eq!((pages, rows.len()), (3, 2_500));
    let expected = org
        .query(&format!("SELECT {FIELDS} FROM Account"))
        .expect("query");
    for (row, rec) in rows.iter().zip(&expected) {
        assert_eq!(row[0], rec["Id"].as_str().expect("id"));
        assert_eq!(row[1], rec["Name"].as_str().expect("name"));
        assert_eq!(
            row[2],
            rec["Phone"].as_str().unwrap_or(""),
            "null phone is empty"
        );
        assert_eq!(row[3], rec["Description"].as_str().unwrap_or(""));
        assert_eq!(row[4], "false");
        let created =
            crate::salesforce::sftime::format_datetime(rec["CreatedDate"].as_i64().expect("ms"));
        assert_eq!(row[5], created.replace("+0000", "Z"));
        assert_eq!(row[7], rec["NumberOfEmployees"].to_string());
    }
    assert!(
        rows.iter().any(|r| r[3].contains('\n')),
        "a multi-line Long Text Area"
    );
    assert!(rows.iter().any(|r| r[2].is_empty()), "some nulls");
    // A locator can be read again; a made-up one is refused.
    let again = api
        .get_with(
            &format!("/jobs/query/{id}/results"),
            &[("locator", "MTAwMA=="), ("maxRecords", "1000")],
        )
        .await;
    assert_eq!(again.count.as_deref(), Some("1000"));
    let bad = api
        .get_with(
            &format!("/jobs/query/{id}/results"),
            &[("locator", "bm9wZQ==")],
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()[0]["errorCode"], "INVALIDREQUEST");
    for m in ["0", "-1", "x"] {
        let bad = api
            .get_with(&format!("/jobs/query/{id}/results"), &[("maxRecords", m)])
            .await;
        assert_eq!(bad.status, 400, "maxRecords={m}");
    }
    let other_version = api
        .http
        .get(format!(
            "{}/services/data/v61.0/jobs/query/{id}/results",
            org.instance_url()
        ))
        .bearer_auth(&api.token)
        .send()
        .await
        .expect("send");
    assert_eq!(other_version.status().as_u16(), 409);
    org.shutdown().await;
}

#[tokio::test]
async fn delimiters_line_endings_and_query_all() {
    let (org, api) = start().await;
    org.seed("Account", 30, 1).expect("seed");
    let victim = org.query("SELECT Id FROM Account LIMIT 1").expect("q")[0]["Id"]
        .as_str()
        .expect("id")
        .to_owned();
    org.delete("Account", &victim).expect("delete");
    for (op, n, in_bin) in [("query", 29, 0), ("queryAll", 30, 1)] {
        let job = api
            .create(json!({"operation": op, "query": "SELECT Id, Name, IsDeleted FROM Account", "columnDelimiter": "PIPE", "lineEnding": "CRLF"}))
            .await
            .json();
        let id = job["id"].as_str().expect("id");
        let page = api.get(&format!("/jobs/query/{id}/results")).await;
        assert_eq!(page.status, 200, "{}", page.text);
        assert!(
            page.text.starts_with("\"Id\"|\"Name\"|\"IsDeleted\"\r\n"),
            "{}",
            &page.text[..40]
        );
        let rows = python_csv(&page.text, '|');
        assert_eq!(rows.len() - 1, n, "{op}");
        let deleted: Vec<_> = rows.iter().filter(|r| r[2] == "true").collect();
        assert_eq!(deleted.len(), in_bin, "{op}");
        assert_eq!(page.locator.as_deref(), Some("null"));
    }
    org.shutdown().await;
}

#[tokio::test]
async fn jobs_bulk_2_does_not_support_are_refused_at_create() {
    let (org, api) = start().await;
    let refused = |q: &str, op: &str| json!({"operation": op, "query": q});
    for (body, status, code) in [
        (
            refused("SELECT COUNT() FROM Account", "query"),
            400,
            "FUNCTIONALITY_NOT_ENABLED",
        ),
        (
            refused("SELECT Id FROM Account LIMIT 5 OFFSET 1", "query"),
            400,
            "FUNCTIONALITY_NOT_ENABLED",
        ),
        (
            refused("SELECT Id, BillingAddress FROM Account", "query"),
            400,
            "FUNCTIONALITY_NOT_ENABLED",
        ),
        (
            refused("SELECT Id FROM Account", "insert"),
            400,
            "INVALIDJOB",
        ),
        (json!({"operation": "query"}), 400, "INVALIDJOB"),
        (
            json!({"operation": "query", "query": "SELECT Id FROM Account", "contentType": "JSON"}),
            400,
            "INVALIDJOB",
        ),
        (
            json!({"operation": "query", "query": "SELECT Id FROM Account", "columnDelimiter": "COLON"}),
            400,
            "INVALIDJOB",
        ),
        (
            refused("SELECT Id FROM Account WHERE", "query"),
            400,
            "MALFORMED_QUERY",
        ),
        (
            refused("SELECT Nope FROM Account", "query"),
            400,
            "INVALID_FIELD",
        ),
    ] {
        let got = api.create(body.clone()).await;
        assert_eq!(got.status, status, "{body}: {}", got.text);
        assert_eq!(got.json()[0]["errorCode"], code, "{body}");
    }
    org.shutdown().await;
}

#[tokio::test]
async fn states_aborts_deletes_limits_and_failures() {
    let (org, api) = start().await;
    org.seed("Account", 5, 1).expect("seed");
    let refused = |q: &str, op: &str| json!({"operation": op, "query": q});
    assert_eq!(api.get("/jobs/query/7505S0000000000AAA").await.status, 404);

    // A job in progress: no results yet; it can be aborted once.
    // Through `POST /sim/faults`, as a user's CI sets it.
    let knob = api
        .http
        .post(format!("{}/sim/faults", org.instance_url()))
        .json(&json!({"bulk_job_ms": 3_600_000}))
        .send()
        .await
        .expect("faults");
    assert_eq!(knob.status().as_u16(), 200);
    let id = api
        .create(refused("SELECT Id FROM Account", "query"))
        .await
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        api.get(&format!("/jobs/query/{id}")).await.json()["state"],
        "InProgress"
    );
    let early = api.get(&format!("/jobs/query/{id}/results")).await;
    assert_eq!(
        (early.status, early.json()[0]["errorCode"].clone()),
        (400, json!("INVALIDJOBSTATE"))
    );
    let aborted = api
        .call(
            Method::PATCH,
            &format!("/jobs/query/{id}"),
            Some(json!({"state": "Aborted"})),
        )
        .await;
    assert_eq!(aborted.json()["state"], "Aborted");
    let again = api
        .call(
            Method::PATCH,
            &format!("/jobs/query/{id}"),
            Some(json!({"state": "Aborted"})),
        )
        .await;
    assert_eq!(again.status, 400);
    let listed = api.get("/jobs/query").await.json();
    assert_eq!(listed["done"], true);
    assert!(
        listed["records"]
            .as_array()
            .expect("records")
            .iter()
            .any(|j| j["id"] == id.as_str())
    );
    assert_eq!(
        api.call(Method::DELETE, &format!("/jobs/query/{id}"), None)
            .await
            .status,
        204
    );
    assert_eq!(api.get(&format!("/jobs/query/{id}")).await.status, 404);

    // A job the fault knob marks fails as Salesforce words it.
    org.set_bulk_job_duration(Duration::ZERO);
    org.fail_next_bulk_jobs(1);
    let id = api
        .create(refused("SELECT Id FROM Account", "query"))
        .await
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let info = api.get(&format!("/jobs/query/{id}")).await.json();
    assert_eq!(info["state"], "Failed");
    assert_eq!(info["errorMessage"], "Retried more than 15 times");

    // The daily allocation of query jobs: 2 created so far (refused ones do not count).
    org.set_bulk_query_limits(2, u64::MAX);
    let over = api.create(refused("SELECT Id FROM Account", "query")).await;
    assert_eq!(
        (over.status, over.json()[0]["errorCode"].clone()),
        (400, json!("LIMIT_EXCEEDED"))
    );
    let limits = api.get("/limits").await.json();
    assert_eq!(
        limits["DailyBulkV2QueryJobs"],
        json!({"Max": 2, "Remaining": 0})
    );
    // Results past the results allocation fail the job.
    org.set_bulk_query_limits(100, 10);
    let id = api
        .create(refused("SELECT Id, Name FROM Account", "query"))
        .await
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let info = api.get(&format!("/jobs/query/{id}")).await.json();
    assert_eq!(info["state"], "Failed", "{info}");
    org.shutdown().await;
}

#[tokio::test]
async fn results_are_the_org_state_when_the_job_completes() {
    let (org, api) = start().await;
    org.seed("Account", 3, 1).expect("seed");
    let id = api
        .create(json!({"operation": "query", "query": "SELECT Id FROM Account"}))
        .await
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    org.generate("Account", 2).expect("generate");
    let page = api.get(&format!("/jobs/query/{id}/results")).await;
    assert_eq!(page.count.as_deref(), Some("5"), "{}", page.text);
    org.generate("Account", 1).expect("generate");
    let page = api.get(&format!("/jobs/query/{id}/results")).await;
    assert_eq!(page.count.as_deref(), Some("5"), "stored once completed");
    org.shutdown().await;
}

async fn soql(api: &Api, resource: &str, q: &str) -> Value {
    api.get_with(&format!("/{resource}"), &[("q", q)])
        .await
        .json()
}

#[tokio::test]
async fn count_ranges_order_offset_and_query_all_over_rest() {
    let (org, api) = start().await;
    org.seed("Account", 60, 3).expect("seed");
    let all = org
        .query("SELECT Id, NumberOfEmployees, SystemModstamp FROM Account")
        .expect("all");
    let count = soql(&api, "query", "SELECT COUNT() FROM Account").await;
    assert_eq!(count, json!({"totalSize": 60, "done": true, "records": []}));
    let big = all
        .iter()
        .filter(|r| r["NumberOfEmployees"].as_i64().expect("n") > 25_000)
        .count();
    let count = soql(
        &api,
        "query",
        "SELECT COUNT() FROM Account WHERE NumberOfEmployees > 25000",
    )
    .await;
    assert_eq!(count["totalSize"], big);

    // A datetime range, newest first, then Id; OFFSET and LIMIT after the order.
    let mut stamps: Vec<(i64, String)> = all
        .iter()
        .map(|r| {
            (
                r["SystemModstamp"].as_i64().expect("ms"),
                r["Id"].as_str().expect("id").to_owned(),
            )
        })
        .collect();
    stamps.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let pivot = stamps[40].0;
    let expected: Vec<&str> = stamps
        .iter()
        .filter(|(t, _)| *t >= pivot)
        .skip(5)
        .take(10)
        .map(|(_, id)| id.as_str())
        .collect();
    let literal = crate::salesforce::sftime::format_datetime(pivot);
    let iso_z = literal.replace(".000+0000", "Z");
    let (day, time) = iso_z.trim_end_matches('Z').split_once('T').expect("T");
    let (h, rest) = time.split_once(':').expect("h");
    // The same instant written at UTC-08:00.
    let shifted_hour = (h.parse::<i64>().expect("h") + 24 - 8) % 24;
    for lit in [literal.clone(), iso_z.clone()] {
        let q = format!(
            "SELECT Id FROM Account WHERE SystemModstamp >= {lit} ORDER BY SystemModstamp DESC, Id LIMIT 10 OFFSET 5"
        );
        let got = soql(&api, "query", &q).await;
        let ids: Vec<&str> = got["records"]
            .as_array()
            .expect("records")
            .iter()
            .map(|r| r["Id"].as_str().expect("id"))
            .collect();
        assert_eq!(ids, expected, "{q}");
    }
    if h.parse::<i64>().expect("h") >= 8 {
        let offset = format!("{day}T{shifted_hour:02}:{rest}-08:00");
        let q = format!("SELECT COUNT() FROM Account WHERE SystemModstamp >= {offset}");
        let got = soql(&api, "query", &q).await;
        assert_eq!(
            got["totalSize"],
            stamps.iter().filter(|(t, _)| *t >= pivot).count(),
            "{q}"
        );
    }

    // queryAll returns the recycle bin too, paged under queryAll.
    let victim = stamps[0].1.clone();
    org.delete("Account", &victim).expect("delete");
    let q = format!("SELECT Id, IsDeleted FROM Account WHERE Id = '{victim}'");
    assert_eq!(soql(&api, "query", &q).await["totalSize"], 0);
    let got = soql(&api, "queryAll", &q).await;
    assert_eq!(got["records"][0]["IsDeleted"], true);
    let count = soql(
        &api,
        "queryAll",
        "SELECT COUNT() FROM Account WHERE IsDeleted = true",
    )
    .await;
    assert_eq!(count["totalSize"], 1);
    let many = org.seed("Account", 2_000, 4).expect("seed");
    assert!(many.is_some());
    let page = soql(&api, "queryAll", "SELECT Id FROM Account").await;
    assert_eq!(page["totalSize"], 2_060);
    let next = page["nextRecordsUrl"].as_str().expect("next");
    assert!(next.starts_with("/services/data/v62.0/queryAll/"), "{next}");

    for (q, code) in [
        (
            "SELECT Id FROM Account LIMIT 5 OFFSET 2001",
            "NUMBER_OUTSIDE_VALID_RANGE",
        ),
        (
            "SELECT Id FROM Account ORDER BY Description",
            "INVALID_FIELD",
        ),
        (
            "SELECT Id FROM Account ORDER BY BillingAddress",
            "INVALID_FIELD",
        ),
        (
            "SELECT Id FROM Account WHERE CreatedDate > 2024-01-01",
            "INVALID_FIELD",
        ),
        (
            "SELECT Id FROM Account WHERE CreatedDate > '2024-01-01T00:00:00Z'",
            "INVALID_FIELD",
        ),
        (
            "SELECT Id FROM Account WHERE CreatedDate > 2024-01-01T00:00:00",
            "MALFORMED_QUERY",
        ),
        (
            "SELECT Id FROM Account ORDER BY Name NULLS MIDDLE",
            "MALFORMED_QUERY",
        ),
    ] {
        let got = soql(&api, "query", q).await;
        assert_eq!(got[0]["errorCode"], code, "{q}: {got}");
    }
    org.shutdown().await;
}

#[tokio::test]
async fn deleted_and_updated_replication_windows() {
    let (org, api) = start().await;
    org.seed("Account", 5, 9).expect("seed");
    let ids: Vec<String> = org
        .query("SELECT Id FROM Account")
        .expect("q")
        .iter()
        .map(|r| r["Id"].as_str().expect("id").to_owned())
        .collect();
    org.delete("Account", &ids[0]).expect("delete");
    org.update(
        "Account",
        &ids[1],
        serde_json::Map::from_iter([("Phone".to_owned(), json!("+1 000"))]),
    )
    .expect("update");
    let minute = 60_000;
    let now = crate::sim::util::org_now();
    let at =
        |ms: i64| crate::salesforce::sftime::format_datetime(ms).replace(".000+0000", "+00:00");
    let (start, end) = (at(now - 10 * minute), at(now + 2 * minute));
    let window = [("start", start.as_str()), ("end", end.as_str())];
    let deleted = api.get_with("/sobjects/Account/deleted/", &window).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    let body = deleted.json();
    assert_eq!(body["deletedRecords"].as_array().expect("list").len(), 1);
    assert_eq!(body["deletedRecords"][0]["id"], ids[0].as_str());
    let covered = body["latestDateCovered"].as_str().expect("covered");
    assert!(covered.ends_with(":00.000+0000"), "{covered}");
    assert!(body["earliestDateAvailable"].is_string());
    let updated = api
        .get_with("/sobjects/Account/updated/", &window)
        .await
        .json();
    assert_eq!(updated["ids"], json!([ids[1]]), "{updated}");

    let invalid = (400, json!("INVALID_REPLICATION_DATE"));
    assert_eq!(
        refusal(&api, at(now - 31 * 24 * 60 * minute), at(now)).await,
        invalid,
        "over 30 days"
    );
    assert_eq!(
        refusal(&api, at(now), at(now)).await,
        invalid,
        "start == end"
    );
    assert_eq!(
        refusal(&api, "yesterday".into(), at(now)).await,
        invalid,
        "unreadable"
    );
    assert_eq!(
        refusal(&api, at(now - 16 * 24 * 60 * minute), at(now)).await,
        invalid,
        "before the recycle bin"
    );
    // An administrator empties the recycle bin: earlier windows are gone.
    assert_eq!(org.purge_recycle_bin("Account"), 1);
    assert_eq!(
        refusal(&api, start.clone(), end.clone()).await,
        invalid,
        "purged"
    );
    let later = api
        .get_with(
            "/sobjects/Account/deleted/",
            &[("start", &at(now + minute)), ("end", &end)],
        )
        .await;
    assert_eq!(later.status, 200, "{}", later.text);
    org.shutdown().await;
}

/// Status and error code of a `deleted` call.
async fn refusal(api: &Api, start: String, end: String) -> (u16, Value) {
    let got = api
        .get_with(
            "/sobjects/Account/deleted/",
            &[("start", &start), ("end", &end)],
        )
        .await;
    (got.status, got.json()[0]["errorCode"].clone())
}
