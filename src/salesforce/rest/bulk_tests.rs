//! Bulk API 2.0 query jobs, `queryAll`, `SELECT COUNT()` and the replication API against the
//! scripted stub of [`super::tests`]: answers shaped as Salesforce's documents and public
//! captures show them (each test names its source), and what the client sent.

use std::time::Duration;

use serde_json::{Value, json};

use super::replication::replication_time;
use super::tests::{Canned, DATA, Stub, client, no_guard, progress};
use super::*;
use crate::retry::{Directive, classify_query_job};

const JOB: &str = "750R0000000zxr8IAA";

/// A job as "Get Information About a Query Job" describes it (every documented key).
fn job(state: &str, processed: u64, error: Option<&str>) -> Value {
    let mut job = json!({
        "id": JOB,
        "operation": "query",
        "object": "Account",
        "createdById": "005R0000000GiwjIAC",
        "createdDate": "2018-12-18T16:15:31.000+0000",
        "systemModstamp": "2018-12-18T16:15:32.000+0000",
        "state": state,
        "concurrencyMode": "Parallel",
        "contentType": "CSV",
        "apiVersion": 62.0,
        "jobType": "V2Query",
        "lineEnding": "LF",
        "columnDelimiter": "COMMA",
        "numberRecordsProcessed": processed,
        "retries": 0,
        "totalProcessingTime": 334,
    });
    if let Some(error) = error {
        job["errorMessage"] = json!(error);
    }
    job
}

fn job_path() -> String {
    format!("{DATA}/jobs/query/{JOB}")
}

fn results_path() -> String {
    format!("{DATA}/jobs/query/{JOB}/results")
}

fn fast(client: RestClient) -> RestClient {
    client.with_job_poll(Duration::from_millis(1), Duration::from_millis(4))
}

#[tokio::test]
async fn a_query_job_runs_from_create_to_its_last_page() {
    // "Step 6: Query Jobs" (Bulk API 2.0 Developer Guide): the create answer (no
    // numberRecordsProcessed yet), UploadComplete → InProgress → JobComplete; results paged
    // with maxRecords and Sforce-Locator, the last page's locator the text `null`; a locator as
    // captured in forcedotcom/cli#2968.
    let locator = "MDowR2FIbjAwMDAwNXMyVDRLQUk6MQ";
    let mut created = job("UploadComplete", 0, None);
    created
        .as_object_mut()
        .unwrap()
        .remove("numberRecordsProcessed");
    let stub = Stub::start(vec![
        Canned::new("POST", format!("{DATA}/jobs/query"), 200, created),
        Canned::new("GET", job_path(), 200, job("InProgress", 0, None)),
        Canned::new("GET", job_path(), 200, job("JobComplete", 3, None)),
        Canned::new("GET", results_path(), 200, Value::Null)
            .csv("\"Id\",\"Name\"\n\"005R0000000UyrWIAS\",\"Jane Dunn\"\n\"005R0000000GiwjIAC\",\"\"\n")
            .header("Sforce-Locator", locator)
            .header("Sforce-NumberOfRecords", "2"),
        Canned::new("GET", results_path(), 200, Value::Null)
            .csv("\"Id\",\"Name\"\n\"005R0000000GiwoIAC\",\"Pat \"\"P\"\" Wilson\"\n")
            .header("Sforce-Locator", "null")
            .header("Sforce-NumberOfRecords", "1"),
        Canned::new("DELETE", job_path(), 204, Value::Null).text(""),
    ])
    .await;
    let client = fast(client(&stub, no_guard()));
    let cancel = stub.cancel();
    let soql = "SELECT Id, Name FROM Account";

    let created = client
        .create_query_job(soql, BulkOperation::Query, &cancel)
        .await
        .expect("create");
    assert_eq!(created.state, JobState::UploadComplete);
    assert_eq!(created.records_processed, 0);
    let done = progress(client.wait_for_query_job(&created.id, &cancel))
        .await
        .expect("wait");
    assert_eq!(done.state, JobState::JobComplete);
    assert_eq!(done.records_processed, 3);
    assert_eq!(done.object, "Account");

    let first = client
        .query_job_results(JOB, None, 2, &cancel)
        .await
        .expect("first page");
    assert_eq!(first.columns(), ["Id", "Name"]);
    assert_eq!(first.len(), 2);
    assert_eq!(first.locator.as_deref(), Some(locator));
    let rows: Vec<_> = first.rows().collect::<Result<_, _>>().expect("rows");
    assert_eq!(rows[1][1], None, "an empty value is a null");
    let last = client
        .query_job_results(JOB, first.locator.as_deref(), 2, &cancel)
        .await
        .expect("last page");
    assert_eq!(last.locator, None);
    assert_eq!(
        last.row(0).expect("row")[1].as_deref(),
        Some("Pat \"P\" Wilson")
    );
    client.delete_query_job(JOB, &cancel).await.expect("delete");

    assert_eq!(stub.left(), 0);
    let seen = stub.seen();
    assert_eq!(
        seen[0].body,
        json!({"operation": "query", "query": soql, "contentType": "CSV",
               "columnDelimiter": "COMMA", "lineEnding": "LF"})
    );
    assert_eq!(
        stub.requests()[3..],
        [
            format!("GET {}?maxRecords=2", results_path()),
            format!("GET {}?locator={locator}&maxRecords=2", results_path()),
            format!("DELETE {}", job_path()),
        ]
    );
    assert_eq!(seen[3].accept.as_deref(), Some("text/csv"));
    assert_eq!(seen[1].accept.as_deref(), Some("application/json"));
    assert_eq!(client.calls(), 6);
}

#[tokio::test]
async fn a_failed_job_ends_the_wait_naming_its_id_state_and_message() {
    // The message of a job failed on its SOQL, as captured in ForceCLI/force#531.
    let message = "InvalidBatch : Failed to process query: INVALID_FIELD: SELECT Id, BadField FROM Account ^ ERROR at Row:1:Column:12 No such column 'BadField' on entity 'Account'.";
    let stub = Stub::start(vec![
        Canned::new("GET", job_path(), 200, job("InProgress", 0, None)),
        Canned::new("GET", job_path(), 200, job("Failed", 0, Some(message))),
    ])
    .await;
    let client = fast(client(&stub, no_guard()));
    let error = progress(client.wait_for_query_job(JOB, &stub.cancel()))
        .await
        .expect_err("a failed job");
    let text = error.to_string();
    assert!(
        text.contains(JOB) && text.contains("Failed") && text.contains("BadField"),
        "{text}"
    );
    let RestError::JobFailed { state, message, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(
        classify_query_job(state, message.as_deref()),
        Directive::Stop
    );
    // The client does not create the job again, nor poll a finished job.
    assert_eq!(stub.left(), 0);
    assert_eq!(stub.requests().len(), 2);
}

#[tokio::test]
async fn an_aborted_job_is_read_back_and_ends_a_wait() {
    // "Abort a Query Job": PATCH {"state": "Aborted"}, the answer the job in state Aborted.
    let stub = Stub::start(vec![
        Canned::new("PATCH", job_path(), 200, job("Aborted", 0, None)),
        Canned::new("GET", job_path(), 200, job("Aborted", 0, None)),
    ])
    .await;
    let client = fast(client(&stub, no_guard()));
    let cancel = stub.cancel();
    let aborted = client.abort_query_job(JOB, &cancel).await.expect("abort");
    assert_eq!(aborted.state, JobState::Aborted);
    assert_eq!(stub.seen()[0].body, json!({"state": "Aborted"}));
    let error = client
        .wait_for_query_job(JOB, &cancel)
        .await
        .expect_err("aborted");
    assert!(
        matches!(&error, RestError::JobFailed { state, message: None, .. } if state == "Aborted"),
        "{error:?}"
    );
}

#[tokio::test]
async fn results_of_an_unfinished_job_are_refused_without_retrying() {
    // "Get Results for a Query Job" (API 45.0 guide): 412 JOB_NOT_COMPLETE.
    let stub = Stub::start(vec![Canned::new(
        "GET",
        results_path(),
        412,
        json!([{"errorCode": "JOB_NOT_COMPLETE", "message": "can only download query results of successfully completed bulk job with status: JOB_COMPLETE. Current status: IN_PROGRESS"}]),
    )])
    .await;
    let client = client(&stub, no_guard());
    let error = client
        .query_job_results(JOB, None, 0, &stub.cancel())
        .await
        .expect_err("refused");
    assert!(
        matches!(&error, RestError::Rejected { status: 412, errors } if errors[0].code == "JOB_NOT_COMPLETE"),
        "{error:?}"
    );
    assert_eq!(stub.requests(), [format!("GET {}", results_path())]);
}

#[tokio::test]
async fn a_results_page_is_retried_and_relogged_in_like_every_call() {
    let stub = Stub::start(vec![
        Canned::new(
            "GET",
            results_path(),
            503,
            json!([{"errorCode": "SERVER_UNAVAILABLE", "message": "busy"}]),
        ),
        Canned::new(
            "GET",
            results_path(),
            401,
            json!([{"errorCode": "INVALID_SESSION_ID", "message": "Session expired or invalid"}]),
        ),
        Canned::new("GET", results_path(), 200, Value::Null)
            .csv("\"Id\"\n\"001A\"\n")
            .header("Sforce-Locator", "null")
            .header("Sforce-NumberOfRecords", "1"),
    ])
    .await;
    let client = client(&stub, no_guard());
    let page = client
        .query_job_results(JOB, None, 0, &stub.cancel())
        .await
        .expect("page");
    assert_eq!(page.len(), 1);
    assert_eq!(client.calls(), 3);
    assert_eq!(
        client
            .stats()
            .relogins
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn a_page_whose_count_disagrees_is_a_protocol_error() {
    let stub = Stub::start(vec![
        Canned::new("GET", results_path(), 200, Value::Null)
            .csv("\"Id\"\n\"001A\"\n")
            .header("Sforce-NumberOfRecords", "2"),
    ])
    .await;
    let client = client(&stub, no_guard());
    let error = client
        .query_job_results(JOB, None, 0, &stub.cancel())
        .await
        .expect_err("mismatch");
    assert!(
        matches!(&error, RestError::Protocol(m) if m.contains(JOB) && m.contains("Sforce-NumberOfRecords")),
        "{error:?}"
    );
}

#[tokio::test]
async fn bad_arguments_are_refused_before_any_call() {
    let stub = Stub::start(vec![]).await;
    let client = client(&stub, no_guard());
    let cancel = stub.cancel();
    for id in ["", "750/../../limits", "750 x"] {
        let error = client.query_job(id, &cancel).await.expect_err(id);
        assert!(
            matches!(&error, RestError::Invalid(m) if m.contains("job id")),
            "{error:?}"
        );
    }
    let error = client
        .query_job_results(JOB, Some("null"), 0, &cancel)
        .await
        .expect_err("null locator");
    assert!(matches!(error, RestError::Invalid(_)), "{error:?}");
    let error = client
        .create_query_job(" ", BulkOperation::QueryAll, &cancel)
        .await
        .expect_err("empty SOQL");
    assert!(matches!(error, RestError::Invalid(_)), "{error:?}");
    let error = client
        .count("SELECT Id FROM Account", &cancel)
        .await
        .expect_err("not a count");
    assert!(
        matches!(&error, RestError::Invalid(m) if m.contains("COUNT()")),
        "{error:?}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let error = client
        .deleted_records("Account", now - 16 * 86_400_000 - 86_400_000, now, &cancel)
        .await
        .expect_err("too old");
    assert!(
        matches!(&error, RestError::Invalid(m) if m.contains("`start`")),
        "{error:?}"
    );
    let error = client
        .updated_records("Account; DROP", now - 3_600_000, now, &cancel)
        .await
        .expect_err("bad object");
    assert!(
        matches!(&error, RestError::Invalid(m) if m.contains("`object`")),
        "{error:?}"
    );
    assert!(stub.requests().is_empty());
}

#[tokio::test]
async fn cancel_ends_the_wait_for_a_job() {
    let stub = Stub::start(vec![Canned::new(
        "GET",
        job_path(),
        200,
        job("InProgress", 0, None),
    )])
    .await;
    let client = client(&stub, no_guard())
        .with_job_poll(Duration::from_secs(3600), Duration::from_secs(3600));
    let cancel = tokio_util::sync::CancellationToken::new();
    let wait = tokio::spawn({
        let (client, cancel) = (client.clone(), cancel.clone());
        async move { client.wait_for_query_job(JOB, &cancel).await }
    });
    progress(async {
        while stub.left() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    cancel.cancel();
    let result = progress(wait).await.expect("join");
    assert!(matches!(result, Err(RestError::Cancelled)), "{result:?}");
}

#[tokio::test]
async fn query_all_pages_through_deleted_records_and_count_reads_total_size() {
    // "Execute a SOQL Query that Includes Deleted Items" / "QueryAll": a deleted record, a
    // nextRecordsUrl that says `query` and still pages the queryAll. "COUNT() and
    // COUNT(fieldName)": the count in totalSize, no records.
    let next = format!("{DATA}/query/01gD0000002HU6KIAW-2000");
    let stub = Stub::start(vec![
        Canned::new(
            "GET",
            format!("{DATA}/queryAll"),
            200,
            json!({"totalSize": 2, "done": false, "nextRecordsUrl": next, "records": [
                {"attributes": {"type": "Account", "url": format!("{DATA}/sobjects/Account/001A")},
                 "Id": "001A", "IsDeleted": true},
            ]}),
        ),
        Canned::new(
            "GET",
            next.clone(),
            200,
            json!({"totalSize": 2, "done": true, "records": [
                {"attributes": {"type": "Account"}, "Id": "001B", "IsDeleted": false},
            ]}),
        ),
        Canned::new(
            "GET",
            format!("{DATA}/query"),
            200,
            json!({"totalSize": 50000, "done": true, "records": []}),
        ),
    ])
    .await;
    let client = client(&stub, no_guard());
    let cancel = stub.cancel();
    let first = client
        .query_all("SELECT Id, IsDeleted FROM Account", &cancel)
        .await
        .expect("queryAll");
    assert_eq!(first.records[0]["IsDeleted"], json!(true));
    assert!(first.records[0].get("attributes").is_none());
    let second = client
        .query_more(first.next.as_deref().expect("next"), &cancel)
        .await
        .expect("more");
    assert_eq!(second.next, None);
    let count = client
        .count(
            "select count() from Account WHERE IsDeleted = false",
            &cancel,
        )
        .await
        .expect("count");
    assert_eq!(count, 50_000);
    assert_eq!(
        stub.requests(),
        [
            format!("GET {DATA}/queryAll?q=SELECT%20Id%2C%20IsDeleted%20FROM%20Account"),
            format!("GET {next}"),
            format!(
                "GET {DATA}/query?q=select%20count%28%29%20from%20Account%20WHERE%20IsDeleted%20%3D%20false"
            ),
        ]
    );
}

#[tokio::test]
async fn replication_windows_go_out_as_documented_and_answers_come_back_in_ms() {
    // "Get a List of Deleted/Updated Records Within a Given Timeframe": the JSON answers.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (start, end) = (now - 2 * 86_400_000 + 15_999, now - 3_600_000);
    let stub = Stub::start(vec![
        Canned::new(
            "GET",
            format!("{DATA}/sobjects/Merchandise__c/deleted/"),
            200,
            json!({
                "deletedRecords": [{"id": "a00D0000008pQRAIA2", "deletedDate": "2013-05-07T22:07:19.000+0000"}],
                "earliestDateAvailable": "2013-05-03T15:57:00.000+0000",
                "latestDateCovered": "2013-05-08T21:20:00.000+0000",
            }),
        ),
        Canned::new(
            "GET",
            format!("{DATA}/sobjects/Merchandise__c/updated/"),
            200,
            json!({
                "ids": ["a00D0000008pQR5IAM", "a00D0000008pQRGIA2", "a00D0000008pQRFIA2"],
                "latestDateCovered": "2013-05-08T21:20:00.000+0000",
            }),
        ),
    ])
    .await;
    let client = client(&stub, no_guard());
    let cancel = stub.cancel();
    let ms = |t| crate::salesforce::sftime::parse_datetime(t).unwrap();
    let deleted = client
        .deleted_records("Merchandise__c", start, end, &cancel)
        .await
        .expect("deleted");
    assert_eq!(
        deleted,
        DeletedRecords {
            records: vec![(
                "a00D0000008pQRAIA2".to_owned(),
                ms("2013-05-07T22:07:19.000+0000")
            )],
            earliest_date_available_ms: Some(ms("2013-05-03T15:57:00.000+0000")),
            latest_date_covered_ms: ms("2013-05-08T21:20:00.000+0000"),
        }
    );
    let updated = client
        .updated_records("Merchandise__c", start, end, &cancel)
        .await
        .expect("updated");
    assert_eq!(updated.ids.len(), 3);
    assert_eq!(
        updated.latest_date_covered_ms,
        ms("2013-05-08T21:20:00.000+0000")
    );
    let window = |t| super::query::percent_encode(&replication_time(t));
    let query = format!("?start={}&end={}", window(start), window(end));
    assert!(
        query.contains("%3A") && query.contains("%2B00%3A00"),
        "{query}"
    );
    assert_eq!(
        stub.requests(),
        [
            format!("GET {DATA}/sobjects/Merchandise__c/deleted/{query}"),
            format!("GET {DATA}/sobjects/Merchandise__c/updated/{query}"),
        ]
    );
}
