//! Tests of the Bulk API 2.0 results reader: the documented examples, Salesforce's quoting and
//! null rules, every malformed shape named by row and column, and a round trip of random tables
//! through an encoder written here.

use std::borrow::Cow;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn page(body: &str) -> Result<ResultsPage, RestError> {
    ResultsPage::parse(
        "job 750R0000000zxr8IAA",
        Bytes::from(body.to_owned()),
        ColumnDelimiter::Comma,
        None,
        None,
    )
}

fn owned_rows(page: &ResultsPage) -> Vec<Vec<Option<String>>> {
    page.rows()
        .map(|row| {
            row.expect("row")
                .into_iter()
                .map(|v| v.map(Cow::into_owned))
                .collect()
        })
        .collect()
}

fn protocol_message(result: Result<ResultsPage, RestError>) -> String {
    match result {
        Err(RestError::Protocol(message)) => message,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

fn row_message(body: &str, row: usize) -> String {
    let page = page(body).expect("page");
    match page.row(row) {
        Err(RestError::Protocol(message)) => message,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[test]
fn the_documented_example_reads_as_columns_and_rows() {
    // Bulk API 2.0 Developer Guide, "Get Results for a Query Job", response body example.
    let body = "\"Id\",\"Name\"\n\"005R0000000UyrWIAS\",\"Jane Dunn\"\n\"005R0000000GiwjIAC\",\"George Wright\"\n\"005R0000000GiwoIAC\",\"Pat Wilson\"\n";
    let page = ResultsPage::parse(
        "job 750R0000000zxr8IAA",
        Bytes::from(body),
        ColumnDelimiter::Comma,
        Some("MTAwMDA"),
        Some(3),
    )
    .expect("page");
    assert_eq!(page.columns(), ["Id", "Name"]);
    assert_eq!(page.len(), 3);
    assert_eq!(page.number_of_records, 3);
    assert_eq!(page.locator.as_deref(), Some("MTAwMDA"));
    assert_eq!(
        owned_rows(&page)[1],
        [
            Some("005R0000000GiwjIAC".to_owned()),
            Some("George Wright".to_owned())
        ]
    );
}

#[test]
fn the_text_null_locator_ends_the_results() {
    // "Get Results for a Query Job": with no more results the header is the string `null`;
    // a real locator as captured in forcedotcom/cli#2968.
    let parse = |locator| {
        ResultsPage::parse("job x", Bytes::new(), ColumnDelimiter::Comma, locator, None)
            .expect("page")
            .locator
    };
    assert_eq!(parse(Some("null")), None);
    assert_eq!(parse(None), None);
    assert_eq!(parse(Some("")), None);
    assert_eq!(
        parse(Some("MDowR2FIbjAwMDAwNXMyVDRLQUk6MQ")).as_deref(),
        Some("MDowR2FIbjAwMDAwNXMyVDRLQUk6MQ")
    );
}

#[test]
fn empty_values_are_null_and_plain_values_are_borrowed() {
    let body = "\"Id\",\"Phone\",\"Fax\",\"Quote\"\n\"001A\",\"\",,\"say \"\"hi\"\"\"\n";
    let page = page(body).expect("page");
    let row = page.row(0).expect("row");
    assert!(matches!(row[0], Some(Cow::Borrowed("001A"))));
    assert_eq!(row[1], None);
    assert_eq!(row[2], None);
    assert!(matches!(&row[3], Some(Cow::Owned(text)) if text == "say \"hi\""));
}

#[test]
fn quoted_values_hold_delimiters_and_line_breaks_and_crlf_ends_rows() {
    let body = "Id,Description\r\n001A,\"one, two\r\nthree\nfour\"\r\n001B,\"\"\"quoted\"\"\"\r\n001C,last";
    let page = page(body).expect("page");
    assert_eq!(
        owned_rows(&page),
        [
            vec![
                Some("001A".to_owned()),
                Some("one, two\r\nthree\nfour".to_owned())
            ],
            vec![Some("001B".to_owned()), Some("\"quoted\"".to_owned())],
            vec![Some("001C".to_owned()), Some("last".to_owned())],
        ]
    );
}

#[test]
fn every_documented_delimiter_splits_values() {
    // "Create a Query Job": columnDelimiter BACKQUOTE, CARET, COMMA, PIPE, SEMICOLON, TAB.
    for name in ["BACKQUOTE", "CARET", "COMMA", "PIPE", "SEMICOLON", "TAB"] {
        let delimiter = ColumnDelimiter::from_name(name).expect(name);
        let d = delimiter.byte() as char;
        let body = format!("\"Id\"{d}\"Name\"\n\"001A\"{d}\"a{d}b\"\n");
        let page =
            ResultsPage::parse("job x", Bytes::from(body), delimiter, None, Some(1)).expect(name);
        assert_eq!(
            owned_rows(&page),
            [vec![Some("001A".to_owned()), Some(format!("a{d}b"))]],
            "{name}"
        );
    }
    assert_eq!(ColumnDelimiter::from_name("COLON"), None);
}

#[test]
fn an_empty_body_is_an_empty_page() {
    let page = page("").expect("page");
    assert!(page.is_empty());
    assert!(page.columns().is_empty());
    let header_only = page_with_count("\"Id\",\"Name\"\n", Some(0)).expect("page");
    assert_eq!(header_only.columns(), ["Id", "Name"]);
    assert_eq!(header_only.len(), 0);
}

fn page_with_count(body: &str, count: Option<u64>) -> Result<ResultsPage, RestError> {
    ResultsPage::parse(
        "job 750R0000000zxr8IAA",
        Bytes::from(body.to_owned()),
        ColumnDelimiter::Comma,
        None,
        count,
    )
}

#[test]
fn malformed_rows_are_named_by_row_and_column() {
    let message = protocol_message(page("\"Id\",\"Name\"\n\"001A\",\"open\n"));
    assert!(message.contains("job 750R0000000zxr8IAA"), "{message}");
    assert!(
        message.contains("row 1, column 2") && message.contains("not closed"),
        "{message}"
    );
    // A stray quote with no partner: the row cannot end, the value is named.
    let message = protocol_message(page("Id,Name\n001A,\"x\"\n001B,Jo\"hn\n"));
    assert!(
        message.contains("row 2, column 2") && message.contains("outside quotes"),
        "{message}"
    );

    let message = row_message("\"Id\",\"Name\"\n\"001A\",\"ok\"\n\"001B\",\"x\" \n", 1);
    assert!(
        message.contains("row 2, column 2 (Name)") && message.contains("after the closing quote"),
        "{message}"
    );

    let message = row_message("Id,Name\n001A,Jo\"h\"n\n", 0);
    assert!(
        message.contains("row 1, column 2 (Name)") && message.contains("outside quotes"),
        "{message}"
    );

    let message = row_message("Id,Name\n001A,John,extra\n", 0);
    assert!(
        message.contains("row 1, column 3") && message.contains("more values"),
        "{message}"
    );

    let message = row_message("Id,Name\n001A\n", 0);
    assert!(
        message.contains("row 1") && message.contains("1 values for 2 columns"),
        "{message}"
    );

    let message = protocol_message(page("Id,,Name\n"));
    assert!(
        message.contains("header row, column 2") && message.contains("empty column name"),
        "{message}"
    );

    let message = protocol_message(page_with_count("Id\n001A\n001B\n", Some(3)));
    assert!(
        message.contains("Sforce-NumberOfRecords is 3") && message.contains("2 rows"),
        "{message}"
    );

    let message = protocol_message(ResultsPage::parse(
        "job x",
        Bytes::from_static(b"Id\n\xff\n"),
        ColumnDelimiter::Comma,
        None,
        None,
    ));
    assert!(message.contains("not UTF-8 at byte 3"), "{message}");
}

/// A value for the round trip: empty (a null), plain, or with quotes, delimiters, CR, LF and
/// characters outside ASCII.
fn random_value(rng: &mut StdRng, delimiter: char) -> Option<String> {
    const PIECES: [&str; 12] = [
        "a", "Zürich", "\"", "\"\"", "\r\n", "\n", "\r", " ", "東京", "😀", "x y", "0.5",
    ];
    if rng.random_ratio(1, 5) {
        return None;
    }
    let mut value = String::new();
    for _ in 0..rng.random_range(1..6) {
        if rng.random_ratio(1, 6) {
            value.push(delimiter);
        } else {
            value.push_str(PIECES[rng.random_range(0..PIECES.len())]);
        }
    }
    Some(value)
}

/// RFC 4180 with Salesforce's rules: a null is an empty value; a value is quoted when it must
/// be (or, at random, always, as Salesforce's own results are).
fn encode(rows: &[Vec<Option<String>>], delimiter: char, crlf: bool, quote_all: bool) -> String {
    let mut out = String::new();
    for (r, row) in rows.iter().enumerate() {
        for (c, value) in row.iter().enumerate() {
            if c > 0 {
                out.push(delimiter);
            }
            let Some(value) = value else { continue };
            let must = value.contains(['"', '\r', '\n', delimiter]);
            if must || quote_all {
                out.push('"');
                out.push_str(&value.replace('"', "\"\""));
                out.push('"');
            } else {
                out.push_str(value);
            }
        }
        if r + 1 < rows.len() || quote_all {
            out.push_str(if crlf { "\r\n" } else { "\n" });
        }
    }
    out
}

#[test]
fn random_tables_round_trip_through_an_encoder() {
    let delimiters = [
        ColumnDelimiter::Comma,
        ColumnDelimiter::Tab,
        ColumnDelimiter::Semicolon,
        ColumnDelimiter::Pipe,
        ColumnDelimiter::Caret,
        ColumnDelimiter::Backquote,
    ];
    for seed in 0..400u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let delimiter = delimiters[rng.random_range(0..delimiters.len())];
        let d = delimiter.byte() as char;
        let width = rng.random_range(1..8);
        let header: Vec<Option<String>> =
            (0..width).map(|c| Some(format!("Field{c}__c"))).collect();
        let records: Vec<Vec<Option<String>>> = (0..rng.random_range(0..30))
            .map(|_| (0..width).map(|_| random_value(&mut rng, d)).collect())
            // A one-column row whose value is null would be a blank line: no CSV can tell it
            // from nothing, and Salesforce never selects only a nullable column without Id.
            .filter(|row: &Vec<Option<String>>| width > 1 || row[0].is_some())
            .collect();
        let mut table = vec![header.clone()];
        table.extend(records.iter().cloned());
        let (crlf, quote_all) = (rng.random_bool(0.5), rng.random_bool(0.5));
        let body = encode(&table, d, crlf, quote_all);
        let page = ResultsPage::parse(
            "job round-trip",
            Bytes::from(body.clone()),
            delimiter,
            Some("null"),
            Some(records.len() as u64),
        )
        .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{body:?}"));
        let names: Vec<Option<String>> = page.columns().iter().cloned().map(Some).collect();
        assert_eq!(names, header, "seed {seed}");
        assert_eq!(owned_rows(&page), records, "seed {seed}: {body:?}");
    }
}
