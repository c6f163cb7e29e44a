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
        q.filters[0].values,
        vec![Literal::Str("a".into()), Literal::Str("b'c".into())]
    );
    let q = Query::parse(
        "SELECT Id FROM Contact WHERE Id = '003000000000000' AND Email = null",
        &org,
    )
    .expect("parse");
    assert_eq!(q.filters.len(), 2);
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
        "SELECT Id FROM Account ORDER BY Name",
        "SELECT Id FROM Account WHERE Name LIKE 'A%'",
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
