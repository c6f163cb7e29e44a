use super::*;

fn org() -> Org {
    Org::new().expect("org")
}

#[test]
fn parses_the_sink_subset() {
    let org = org();
    let q = Query::parse(
        "select id, NAME, External_Id__c from account where external_id__c in ('a', 'b\\'c') limit 5",
        &org,
    )
    .expect("parse");
    assert_eq!(q.object, "Account");
    assert_eq!(q.fields, ["Id", "Name", "External_Id__c"]);
    assert_eq!(q.limit, Some(5));
    assert_eq!(
        q.filter.as_ref().expect("where").leaves()[0].values,
        vec![Literal::Str("a".into()), Literal::Str("b'c".into())]
    );
    let q = Query::parse(
        "SELECT Id FROM Contact WHERE Id = '003000000000000' AND Email = null",
        &org,
    )
    .expect("parse");
    assert_eq!(q.filter.as_ref().expect("where").leaves().len(), 2);
}

#[test]
fn errors_carry_salesforce_codes_and_locations() {
    let org = org();
    let err = Query::parse("SELECT Id, Foo__c FROM Account", &org).expect_err("field");
    assert_eq!(err.code(), "INVALID_FIELD");
    assert!(
        err.to_string().starts_with(
            "\nSELECT Id, Foo__c FROM Account\n           ^\nERROR at Row:1:Column:12\nNo such column 'Foo__c' on entity 'Account'."
        ),
        "{err}"
    );
    let err = Query::parse("SELECT Id FROM Lead", &org).expect_err("type");
    assert_eq!(err.code(), "INVALID_TYPE");
    for bad in [
        "SELECT FROM Account",
        "SELECT Id FROM Account WHERE",
        "SELECT Id FROM Account WHERE Name = 'a' AND Name = 'b' OR Name = 'c'",
        "SELECT Id FROM Account WHERE (Name = 'a' OR Name = 'b'",
        "SELECT Id FROM Account WHERE Name NOT LIKE 'a%'",
        "SELECT Id FROM Account WHERE NOT",
        "SELECT Id FROM Account WHERE NOT Name = 'a' AND Name = 'b'",
        "SELECT Id FROM Account WHERE Name = 'a' OR NOT Name = 'b'",
        "SELECT Id FROM Account LIMIT x",
        "SELECT Id, Id FROM Account",
        "DELETE FROM Account",
    ] {
        let err = Query::parse(bad, &org).expect_err(bad);
        assert_eq!(err.code(), "MALFORMED_QUERY", "{bad}: {err}");
    }
    let err = Query::parse("SELECT Id FROM Account WHERE Id = 'nope'", &org).expect_err("id");
    assert_eq!(err.code(), "INVALID_QUERY_FILTER_OPERATOR");
    assert!(err.to_string().ends_with("invalid ID field: nope"));
    let err = Query::parse("SELECT Id FROM Account WHERE NumberOfEmployees = '3'", &org)
        .expect_err("typed");
    assert_eq!(err.code(), "INVALID_FIELD");
    let err = Query::parse("SELECT Id FROM Account WHERE BillingAddress = 'x'", &org)
        .expect_err("compound");
    assert_eq!(err.code(), "INVALID_FIELD");
}

fn names(rows: &[Map<String, Json>], field: &str) -> Vec<Option<String>> {
    rows.iter()
        .map(|r| r.get(field).and_then(Json::as_str).map(str::to_owned))
        .collect()
}

/// An org with Contacts: titles `b`, null, `A`, `c` (in Id order), birthdates on two.
fn contacts() -> Org {
    let mut org = org();
    for (last, title, birth) in [
        ("One", Some("b"), Some("1990-05-01")),
        ("Two", None, None),
        ("Three", Some("A"), Some("1985-01-31")),
        ("Four", Some("c"), None),
    ] {
        let mut fields = serde_json::json!({"Name": {"LastName": last}});
        if let Some(t) = title {
            fields["Title"] = t.into();
        }
        if let Some(b) = birth {
            fields["Birthdate"] = b.into();
        }
        let Json::Object(fields) = fields else {
            unreachable!()
        };
        let id = org.reserve_id("Contact").expect("id");
        org.commit(
            &[crate::sim::org::Op::Create {
                object: "Contact".into(),
                id,
                fields,
            }],
            "005000000000001",
            1_700_000_000_000,
        )
        .expect("commit");
    }
    org
}

fn run(org: &Org, q: &str) -> Vec<Map<String, Json>> {
    Query::parse(q, org).expect(q).run(org, None)
}

#[test]
fn order_by_sorts_case_insensitively_with_nulls_first_by_default() {
    let org = contacts();
    let title = |q: &str| names(&run(&org, q), "Title");
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(
        title("SELECT Title FROM Contact ORDER BY Title"),
        [None, s("A"), s("b"), s("c")]
    );
    assert_eq!(
        title("SELECT Title FROM Contact ORDER BY Title DESC"),
        [None, s("c"), s("b"), s("A")]
    );
    assert_eq!(
        title("SELECT Title FROM Contact ORDER BY Title DESC NULLS LAST"),
        [s("c"), s("b"), s("A"), None]
    );
    assert_eq!(
        title("SELECT Title FROM Contact ORDER BY Title ASC NULLS LAST LIMIT 2 OFFSET 1"),
        [s("b"), s("c")]
    );
}

#[test]
fn comparisons_on_text_dates_and_nulls() {
    let org = contacts();
    let count = |q: &str| run(&org, q).len();
    assert_eq!(
        count("SELECT Id FROM Contact WHERE Title != 'b'"),
        3,
        "!= keeps nulls"
    );
    assert_eq!(count("SELECT Id FROM Contact WHERE Title != null"), 3);
    assert_eq!(
        count("SELECT Id FROM Contact WHERE Title > 'a'"),
        2,
        "case-insensitive, no nulls"
    );
    assert_eq!(count("SELECT Id FROM Contact WHERE Title <= 'B'"), 2);
    assert_eq!(
        count("SELECT Id FROM Contact WHERE Birthdate < 1990-05-01"),
        1
    );
    assert_eq!(
        count("SELECT Id FROM Contact WHERE Birthdate >= 1985-01-31"),
        2
    );
    assert_eq!(
        count("SELECT Id FROM Contact WHERE Birthdate <> 1985-01-31"),
        3
    );
    assert_eq!(
        count("SELECT Id FROM Contact WHERE CreatedDate = 2023-11-14T22:13:20Z"),
        4,
        "1_700_000_000_000 ms"
    );
    assert_eq!(
        count("SELECT Id FROM Contact WHERE CreatedDate > 2023-11-14T23:13:19+01:00"),
        4
    );
    assert_eq!(
        count("SELECT Id FROM Contact WHERE CreatedDate > 2023-11-14T22:13:20.000+0000"),
        0
    );
    let ids: Vec<String> = run(&org, "SELECT Id FROM Contact")
        .iter()
        .map(|r| r["Id"].as_str().expect("id").to_owned())
        .collect();
    let above = format!("SELECT Id FROM Contact WHERE Id > '{}'", &ids[1][..15]);
    assert_eq!(
        count(&above),
        2,
        "Ids compare as 18-character Ids, 15 or 18 given"
    );
    let q = Query::parse(
        "SELECT COUNT() FROM Contact WHERE Title IN ('a', 'C')",
        &org,
    )
    .expect("count");
    assert!(q.count && q.fields.is_empty());
    assert_eq!(q.run(&org, None).len(), 2);
}

#[test]
fn refusals_of_the_new_clauses() {
    let org = org();
    for (q, code) in [
        (
            "SELECT Id FROM Contact WHERE Birthdate > 2024-01-01T00:00:00Z",
            "INVALID_FIELD",
        ),
        (
            "SELECT Id FROM Contact WHERE CreatedDate < 2024-01-01",
            "INVALID_FIELD",
        ),
        (
            "SELECT Id FROM Contact WHERE Title < null",
            "INVALID_QUERY_FILTER_OPERATOR",
        ),
        (
            "SELECT Id FROM Contact WHERE CreatedDate < 2024-13-01T00:00:00Z",
            "MALFORMED_QUERY",
        ),
        (
            "SELECT Id FROM Contact OFFSET 2001",
            "NUMBER_OUTSIDE_VALID_RANGE",
        ),
        (
            "SELECT Id FROM Contact LIMIT 1 ORDER BY Id",
            "MALFORMED_QUERY",
        ),
        ("SELECT COUNT(Id) FROM Contact", "MALFORMED_QUERY"),
        (
            "SELECT Id FROM Contact ORDER BY Description",
            "INVALID_FIELD",
        ),
        (
            "SELECT Id FROM Contact ORDER BY MailingAddress",
            "INVALID_FIELD",
        ),
    ] {
        let err = Query::parse(q, &org).expect_err(q);
        assert_eq!(err.code(), code, "{q}: {err}");
    }
    let err = Query::parse("SELECT Id FROM Contact OFFSET 2001", &org).expect_err("offset");
    assert!(
        err.to_string()
            .contains("ERROR at Row:1:Column:31\nMaximum SOQL offset allowed is 2000"),
        "{err}"
    );
    Query::parse("SELECT Id FROM Contact ORDER BY Name OFFSET 2000", &org)
        .expect("2000 is allowed");
}

#[test]
fn or_not_like_and_not_in_combine_as_soql_does() {
    let org = contacts();
    let last = |q: &str| {
        let query = Query::parse(q, &org).expect(q);
        let rows: Vec<_> = query
            .run(&org, None)
            .iter()
            .map(|r| query.select(&org, r))
            .collect();
        names(&rows, "LastName")
    };
    let s = |v: &str| Some(v.to_owned());
    // Titles in Id order: One `b`, Two null, Three `A`, Four `c`.
    assert_eq!(
        last("SELECT LastName FROM Contact WHERE Title = 'a' OR Title = 'C'"),
        [s("Three"), s("Four")]
    );
    assert_eq!(
        last(
            "SELECT LastName FROM Contact WHERE LastName LIKE 't%' OR (Title = 'b' AND Birthdate > 1989-01-01) ORDER BY LastName"
        ),
        [s("One"), s("Three"), s("Two")]
    );
    assert_eq!(
        last("SELECT LastName FROM Contact WHERE LastName LIKE '_o%'"),
        [s("Four")]
    );
    assert_eq!(
        last("SELECT LastName FROM Contact WHERE NOT Title = 'b'"),
        [s("Two"), s("Three"), s("Four")],
        "NOT of a false comparison on a null field is true"
    );
    assert_eq!(
        last("SELECT LastName FROM Contact WHERE Title NOT IN ('b', 'C')"),
        [s("Two"), s("Three")]
    );
    assert_eq!(
        last(
            "SELECT LastName FROM Contact WHERE (NOT (Title = 'b' OR Title = null)) AND Birthdate != null"
        ),
        [s("Three")]
    );
    assert_eq!(
        last(
            "SELECT LastName FROM Contact WHERE Title LIKE 'b' OR Title LIKE 'B' OR Title LIKE '%'"
        ),
        [s("One"), s("Three"), s("Four")],
        "LIKE never matches a null"
    );
    // An Id conjunct inside an OR must not narrow the rows to that Id.
    let first = run(&org, "SELECT Id FROM Contact ORDER BY Id LIMIT 1");
    let id = first[0]["Id"].as_str().expect("id").to_owned();
    assert_eq!(
        last(&format!(
            "SELECT LastName FROM Contact WHERE Id = '{id}' OR Title = 'c'"
        )),
        [s("One"), s("Four")]
    );
    assert_eq!(
        last(&format!(
            "SELECT LastName FROM Contact WHERE Id = '{id}' AND Title = 'c'"
        )),
        Vec::<Option<String>>::new()
    );
}

#[test]
fn like_takes_a_quoted_pattern_on_text_fields_only() {
    let org = contacts();
    for (q, code) in [
        (
            "SELECT Id FROM Contact WHERE Birthdate LIKE '1990%'",
            "INVALID_FIELD",
        ),
        (
            "SELECT Id FROM Contact WHERE Title LIKE null",
            "INVALID_FIELD",
        ),
        ("SELECT Id FROM Contact WHERE Title LIKE 3", "INVALID_FIELD"),
    ] {
        let err = Query::parse(q, &org).expect_err(q);
        assert_eq!(err.code(), code, "{q}: {err}");
    }
    let err = Query::parse(
        "SELECT Id FROM Contact WHERE Title = 'a' AND Title = 'b' OR Title = 'c'",
        &org,
    )
    .expect_err("mixed");
    assert!(
        err.to_string()
            .ends_with("Column:58\nunexpected token: 'OR'"),
        "{err}"
    );
}

#[test]
fn relative_date_literals_compare_as_ranges() {
    let org = contacts();
    let at = |now: &str| crate::salesforce::sftime::parse_datetime(now).expect("now");
    let count = |q: &str, now: i64| {
        Query::parse_at(q, &org, now)
            .expect(q)
            .run(&org, None)
            .len()
    };
    // The four Contacts were created at 2023-11-14T22:13:20Z: "yesterday" on the 15th.
    let next_day = at("2023-11-15T10:00:00Z");
    for (cond, n) in [
        ("CreatedDate = YESTERDAY", 4),
        ("CreatedDate = TODAY", 0),
        ("CreatedDate = LAST_N_DAYS:1", 4),
        ("CreatedDate = last_n_days:0", 0),
        ("CreatedDate > YESTERDAY", 0),
        ("CreatedDate >= YESTERDAY", 4),
        ("CreatedDate < YESTERDAY", 0),
        ("CreatedDate <= YESTERDAY", 4),
        ("CreatedDate < TODAY", 4),
        ("CreatedDate IN (TODAY, THIS_WEEK)", 4),
    ] {
        let q = format!("SELECT Id FROM Contact WHERE {cond}");
        assert_eq!(count(&q, next_day), n, "{cond}");
    }
    // Birthdates: One 1990-05-01, Three 1985-01-31, the others none.
    let may = at("1990-05-03T00:00:00Z");
    for (cond, n) in [
        ("Birthdate = N_DAYS_AGO:2", 1),
        ("Birthdate = THIS_MONTH", 1),
        ("Birthdate < THIS_YEAR", 1),
        ("Birthdate = LAST_N_YEARS:5", 1),
        ("Birthdate != THIS_YEAR", 3),
    ] {
        let q = format!("SELECT Id FROM Contact WHERE {cond}");
        assert_eq!(count(&q, may), n, "{cond}");
    }
    for (q, code) in [
        (
            "SELECT Id FROM Contact WHERE Title = TODAY",
            "INVALID_FIELD",
        ),
        (
            "SELECT Id FROM Contact WHERE CreatedDate = LAST_N_DAYS",
            "MALFORMED_QUERY",
        ),
        (
            "SELECT Id FROM Contact WHERE CreatedDate = THIS_FISCAL_YEAR",
            "MALFORMED_QUERY",
        ),
    ] {
        let err = Query::parse_at(q, &org, may).expect_err(q);
        assert_eq!(err.code(), code, "{q}: {err}");
    }
}
