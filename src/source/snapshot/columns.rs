//! What a snapshot selects, and how one row becomes a Kafka record that looks like the object's
//! change records.
//!
//! Contract:
//! * [`Columns::new`]: the select list from the object's change event schema (every body field,
//!   as gap re-reads use, [`crate::source::shape::fields_of`]) and its describe: `Id` and
//!   `SystemModstamp` first, then every schema field the describe lists (a field the integration
//!   user cannot see is not in the describe and is left out of `record`), a compound field
//!   (address, name, geolocation) through its components (`BillingAddress.City` ← `BillingCity`,
//!   Contact `Name.FirstName` ← `FirstName`), since Bulk API 2.0 cannot select compound fields
//!   ("Bulk API 2.0 Query Considerations"; components work for REST too, so both read alike).
//! * [`Columns::encode`]: one row (text values in select order, `None` = null; CSV has no types)
//!   → the envelope `{"operation":"READ","object","id","record":{…},"commit_timestamp":
//!   <SystemModstamp ms>,"snapshot":{"method","read_at"},"source":{"channel","replay_id"}}`,
//!   written straight into the output buffer. `record` holds every selected schema field in
//!   schema order, `null` when unset; values typed by the schema (booleans, numbers, dates and
//!   datetimes as epoch ms, as change events carry them); a compound is an object with every
//!   child (`null` when unset), or `null` when every component is. A value that does not fit is
//!   an error naming the object, Id and field (the row is dead-lettered, stage `snapshot`).

use std::borrow::Cow;
use std::io::Write as _;

use serde_json::{Map, Value};

use crate::salesforce::rest::{ObjectFields, RestError};
use crate::source::shape::{Field, Shape};

/// Index of `Id`, `SystemModstamp` and `IsDeleted` in every select list.
const ID: usize = 0;
const MODSTAMP: usize = 1;
const IS_DELETED: usize = 2;

/// One field of `record`, in schema order.
#[derive(Debug, Clone, PartialEq)]
enum Slot {
    /// A field read from one column.
    Column {
        name: String,
        column: usize,
        shape: Shape,
    },
    /// A compound nested from its components: child name, its column (none: the describe has
    /// no such component, always null), its shape.
    Compound {
        name: String,
        children: Vec<(String, Option<usize>, Shape)>,
    },
}

/// The select list of an object and how its rows become records.
#[derive(Debug, Clone)]
pub(crate) struct Columns {
    object: String,
    /// Column names in select order: `Id`, `SystemModstamp`, then the fields.
    select: Vec<String>,
    slots: Vec<Slot>,
    /// Schema fields the describe does not list (not visible to the integration user).
    left_out: Vec<String>,
}

/// What a row's envelope says beyond its values.
pub(crate) struct RowContext<'a> {
    pub(crate) channel: &'a str,
    /// The stream position fixed before the snapshot (hex).
    pub(crate) replay_hex: &'a str,
    /// `bulk` or `rest`.
    pub(crate) method: &'a str,
    /// When the page was read (epoch ms).
    pub(crate) read_at: u64,
    /// A resync's rows (`"mode":"resync"` in `snapshot`).
    pub(crate) resync: bool,
}

impl Columns {
    /// The columns of `object` from its event schema's `fields` and its describe.
    pub(crate) fn new(object: &str, fields: &[Field], describe: &ObjectFields) -> Self {
        let mut select = vec![
            "Id".to_owned(),
            "SystemModstamp".to_owned(),
            "IsDeleted".to_owned(),
        ];
        let column = |name: &str, select: &mut Vec<String>| {
            if let Some(i) = select.iter().position(|s| s.eq_ignore_ascii_case(name)) {
                return i;
            }
            select.push(name.to_owned());
            select.len() - 1
        };
        let mut slots = Vec::with_capacity(fields.len());
        let mut left_out = Vec::new();
        for field in fields.iter().filter(|f| !f.name.eq_ignore_ascii_case("Id")) {
            match (&field.shape, describe.components(&field.name)) {
                (Shape::Compound(children), Some(_)) => {
                    let children = children
                        .iter()
                        .map(|(child, shape)| {
                            let col = describe
                                .component(&field.name, child)
                                .map(|c| column(&c.name, &mut select));
                            (child.clone(), col, shape.clone())
                        })
                        .collect();
                    slots.push(Slot::Compound {
                        name: field.name.clone(),
                        children,
                    });
                }
                _ => match describe.field(&field.name) {
                    // A compound the describe gives no components for is read whole (as text).
                    Some(f) if !matches!(f.field_type.as_str(), "address" | "location") => {
                        let shape = match &field.shape {
                            Shape::Compound(_) => Shape::Plain,
                            other => other.clone(),
                        };
                        slots.push(Slot::Column {
                            name: field.name.clone(),
                            column: column(&f.name, &mut select),
                            shape,
                        });
                    }
                    _ => left_out.push(field.name.clone()),
                },
            }
        }
        Columns {
            object: if describe.name.is_empty() {
                object.to_owned()
            } else {
                describe.name.clone()
            },
            select,
            slots,
            left_out,
        }
    }

    /// The object's API name.
    pub(crate) fn object(&self) -> &str {
        &self.object
    }

    /// The column names, in select order.
    pub(crate) fn select(&self) -> &[String] {
        &self.select
    }

    /// Schema fields left out of `record` (not in the describe).
    pub(crate) fn left_out(&self) -> &[String] {
        &self.left_out
    }

    /// `SELECT <columns> FROM <object>`, with `WHERE SystemModstamp >= <since>` for a resync
    /// (a datetime literal as SOQL writes them: "Date Formats and Date Literals", SOQL and SOSL
    /// Reference).
    pub(crate) fn soql(&self, since: Option<i64>) -> String {
        let mut soql = format!("SELECT {} FROM {}", self.select.join(", "), self.object);
        if let Some(since) = since {
            soql.push_str(" WHERE SystemModstamp >= ");
            soql.push_str(&crate::salesforce::sftime::format_datetime_utc(since));
        }
        soql
    }

    /// The Id of a row (its first column).
    pub(crate) fn id<'r>(&self, row: &'r [Option<Cow<'_, str>>]) -> Option<&'r str> {
        row.get(ID).and_then(|v| v.as_deref())
    }

    /// `SELECT COUNT() FROM <object>` with the resync's filter: how many rows [`Columns::soql`]
    /// reads (deleted ones aside).
    pub(crate) fn count_soql(&self, since: Option<i64>) -> String {
        let mut soql = format!("SELECT COUNT() FROM {}", self.object);
        if let Some(since) = since {
            soql.push_str(" WHERE SystemModstamp >= ");
            soql.push_str(&crate::salesforce::sftime::format_datetime_utc(since));
        }
        soql
    }

    /// True when the row is of a deleted record (`IsDeleted`, read by `queryAll`).
    pub(crate) fn is_deleted(&self, row: &[Option<Cow<'_, str>>]) -> bool {
        row.get(IS_DELETED).and_then(|v| v.as_deref()) == Some("true")
    }

    /// Writes the envelope of a deleted record: `operation` `DELETE`, `record` null,
    /// `commit_timestamp` = `at` (its `SystemModstamp`, or the replication API's `deletedDate`).
    pub(crate) fn encode_delete(
        &self,
        id: &str,
        at: Option<i64>,
        context: &RowContext<'_>,
        out: &mut Vec<u8>,
    ) {
        out.clear();
        out.extend_from_slice(br#"{"operation":"DELETE","object":"#);
        write_str(out, &self.object);
        out.extend_from_slice(br#","id":"#);
        write_str(out, id);
        out.extend_from_slice(br#","record":null,"commit_timestamp":"#);
        match at {
            Some(at) => {
                let _ = write!(out, "{at}");
            }
            None => out.extend_from_slice(b"null"),
        }
        write_trailer(out, context);
    }

    /// The `SystemModstamp` of a row, epoch ms.
    pub(crate) fn modstamp(&self, row: &[Option<Cow<'_, str>>]) -> Option<i64> {
        let text = row.get(MODSTAMP)?.as_deref()?;
        crate::salesforce::sftime::parse_datetime(text).ok()
    }

    /// Writes the `record` object of `row` (of record `id`) into `out`.
    fn write_record(
        &self,
        row: &[Option<Cow<'_, str>>],
        id: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let value = |i: usize| row[i].as_deref();
        let bad = |field: &str, reason: String| format!("{} {id}: {field}: {reason}", self.object);
        out.push(b'{');
        for (n, slot) in self.slots.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            match slot {
                Slot::Column {
                    name,
                    column,
                    shape,
                } => {
                    write_str(out, name);
                    out.push(b':');
                    write_value(out, shape, value(*column)).map_err(|r| bad(name, r))?;
                }
                Slot::Compound { name, children } => {
                    write_str(out, name);
                    out.push(b':');
                    if children
                        .iter()
                        .all(|(_, c, _)| c.is_none_or(|c| row[c].is_none()))
                    {
                        out.extend_from_slice(b"null");
                        continue;
                    }
                    out.push(b'{');
                    for (m, (child, col, shape)) in children.iter().enumerate() {
                        if m > 0 {
                            out.push(b',');
                        }
                        write_str(out, child);
                        out.push(b':');
                        write_value(out, shape, col.and_then(value))
                            .map_err(|r| bad(&format!("{name}.{child}"), r))?;
                    }
                    out.push(b'}');
                }
            }
        }
        out.push(b'}');
        Ok(())
    }

    /// The `record` of `row` as a JSON object (a gap re-sync's record), or why it does not fit.
    pub(crate) fn record(
        &self,
        row: &[Option<Cow<'_, str>>],
    ) -> Result<Map<String, Value>, String> {
        if row.len() != self.select.len() {
            return Err(format!(
                "{}: a row of {} values for {} columns",
                self.object,
                row.len(),
                self.select.len()
            ));
        }
        let id = self.id(row).unwrap_or_default();
        let mut out = Vec::with_capacity(1024);
        self.write_record(row, id, &mut out)?;
        serde_json::from_slice(&out).map_err(|e| format!("{}: {e}", self.object))
    }

    /// For each select column, its index among a results page's `columns` (names in any case);
    /// an answer without one of them is refused, naming it.
    pub(crate) fn order_of(&self, columns: &[String]) -> Result<Vec<usize>, RestError> {
        self.select
            .iter()
            .map(|name| {
                columns
                    .iter()
                    .position(|c| c.eq_ignore_ascii_case(name))
                    .ok_or_else(|| {
                        RestError::Protocol(format!(
                            "the query job's results have no column {name}"
                        ))
                    })
            })
            .collect()
    }

    /// A REST query row in select order (names matched in any case; values as the text a CSV
    /// would carry).
    pub(crate) fn rest_row(&self, mut record: Map<String, Value>) -> Vec<Option<String>> {
        self.select
            .iter()
            .map(|name| take(&mut record, name).and_then(as_text))
            .collect()
    }

    /// Writes the envelope of `row` (values in select order) into `out` (cleared first).
    pub(crate) fn encode(
        &self,
        row: &[Option<Cow<'_, str>>],
        context: &RowContext<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        out.clear();
        if row.len() != self.select.len() {
            return Err(format!(
                "{}: a row of {} values for {} columns",
                self.object,
                row.len(),
                self.select.len()
            ));
        }
        let value = |i: usize| row[i].as_deref();
        let id = value(ID).ok_or_else(|| format!("{}: a row without an Id", self.object))?;
        let bad = |field: &str, reason: String| format!("{} {id}: {field}: {reason}", self.object);
        out.extend_from_slice(br#"{"operation":"READ","object":"#);
        write_str(out, &self.object);
        out.extend_from_slice(br#","id":"#);
        write_str(out, id);
        out.extend_from_slice(br#","record":"#);
        self.write_record(row, id, out)?;
        out.extend_from_slice(br#","commit_timestamp":"#);
        write_value(out, &Shape::Long, value(MODSTAMP)).map_err(|r| bad("SystemModstamp", r))?;
        write_trailer(out, context);
        Ok(())
    }
}

/// `,"snapshot":{"method","mode"?,"read_at"},"source":{"channel","replay_id"}}`.
fn write_trailer(out: &mut Vec<u8>, context: &RowContext<'_>) {
    out.extend_from_slice(br#","snapshot":{"method":"#);
    write_str(out, context.method);
    if context.resync {
        out.extend_from_slice(br#","mode":"resync""#);
    }
    let _ = write!(
        out,
        r#","read_at":{}}},"source":{{"channel":"#,
        context.read_at
    );
    write_str(out, context.channel);
    out.extend_from_slice(br#","replay_id":"#);
    write_str(out, context.replay_hex);
    out.extend_from_slice(b"}}");
}

/// A CSV row's values in select order (`order` from [`Columns::order_of`]).
pub(crate) fn reorder<'r>(
    mut row: Vec<Option<Cow<'r, str>>>,
    order: &[usize],
) -> Vec<Option<Cow<'r, str>>> {
    if row.len() == order.len() && order.iter().enumerate().all(|(i, &o)| i == o) {
        return row;
    }
    order
        .iter()
        .map(|&o| row.get_mut(o).and_then(Option::take))
        .collect()
}

fn take(record: &mut Map<String, Value>, name: &str) -> Option<Value> {
    if let Some(v) = record.remove(name) {
        return Some(v);
    }
    let key = record
        .keys()
        .find(|k| k.eq_ignore_ascii_case(name))?
        .clone();
    record.remove(&key)
}

/// A REST value as the text a CSV would carry.
fn as_text(value: Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

/// Where a resync reads from: `since` rounded down to its minute, and a minute earlier still
/// when that is the current minute. The replication API ignores the seconds of its `start` and
/// needs it in an earlier minute than `end` (REST API Developer Guide, "Get Deleted Records"), so
/// the rows are read from the same minute as the deletes: a record deleted and restored within
/// the window comes back as a row after its delete.
pub(crate) fn resync_start(since: i64, now: i64) -> i64 {
    const MINUTE: i64 = 60_000;
    let start = since.div_euclid(MINUTE) * MINUTE;
    if start >= now.div_euclid(MINUTE) * MINUTE {
        start - MINUTE
    } else {
        start
    }
}

/// A JSON string.
fn write_str(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(&mut *out, text).expect("writing to a Vec cannot fail");
}

/// One text value typed by `shape` (`None`: null).
fn write_value(out: &mut Vec<u8>, shape: &Shape, text: Option<&str>) -> Result<(), String> {
    let Some(text) = text else {
        out.extend_from_slice(b"null");
        return Ok(());
    };
    match shape {
        Shape::Plain | Shape::Compound(_) => write_str(out, text),
        Shape::Bool => match text {
            "true" | "false" => out.extend_from_slice(text.as_bytes()),
            _ => return Err(format!("`{text}` is not a boolean")),
        },
        Shape::Int => {
            let n: i64 = text
                .parse()
                .map_err(|_| format!("`{text}` is not an integer"))?;
            let _ = write!(out, "{n}");
        }
        Shape::Double => {
            let n: f64 = text
                .parse()
                .ok()
                .filter(|n: &f64| n.is_finite())
                .ok_or_else(|| format!("`{text}` is not a number"))?;
            serde_json::to_writer(&mut *out, &n).expect("writing to a Vec cannot fail");
        }
        Shape::Long => {
            let ms = crate::salesforce::sftime::parse_datetime(text)
                .or_else(|_| crate::salesforce::sftime::parse_date(text))
                .or_else(|_| text.parse::<i64>())
                .map_err(|_| format!("`{text}` is not a Salesforce date or datetime"))?;
            let _ = write!(out, "{ms}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::cdc::schema::EventSchema;
    use crate::source::shape::fields_of;
    use serde_json::{Value, json};

    fn account() -> Columns {
        let schema = EventSchema::parse(
            "s1",
            include_str!("../../../schemas/AccountChangeEvent.avsc"),
        )
        .expect("schema");
        let describe = ObjectFields::new(
            serde_json::from_str(include_str!(
                "../../../tests/fixtures/describe/Account.json"
            ))
            .expect("describe"),
        );
        Columns::new("Account", &fields_of(&schema.schema), &describe)
    }

    fn row<'a>(columns: &Columns, values: &[(&str, &'a str)]) -> Vec<Option<Cow<'a, str>>> {
        let mut row = vec![None; columns.select().len()];
        for (name, value) in values {
            let i = columns
                .select()
                .iter()
                .position(|c| c == name)
                .unwrap_or_else(|| panic!("no column {name}"));
            row[i] = Some(Cow::Borrowed(*value));
        }
        row
    }

    const CONTEXT: RowContext<'static> = RowContext {
        channel: "/data/AccountChangeEvent",
        replay_hex: "00ff",
        method: "bulk",
        read_at: 7,
        resync: false,
    };

    #[test]
    fn compounds_are_selected_through_their_components() {
        let columns = account();
        let select = columns.select();
        assert_eq!(&select[..4], ["Id", "SystemModstamp", "IsDeleted", "Name"]);
        assert!(select.iter().any(|c| c == "BillingCity"));
        assert!(!select.iter().any(|c| c == "BillingAddress"));
        let soql = columns.soql(None);
        assert!(soql.starts_with("SELECT Id, SystemModstamp, IsDeleted, Name, "));
        assert!(soql.ends_with(" FROM Account"));
        let resync = columns.soql(Some(1_706_702_709_042));
        assert!(
            resync.ends_with(" FROM Account WHERE SystemModstamp >= 2024-01-31T12:05:09Z"),
            "{resync}"
        );
    }

    #[test]
    fn a_row_becomes_a_record_shaped_like_a_change_record() {
        let columns = account();
        let values = row(
            &columns,
            &[
                ("Id", "001000000000001AAA"),
                ("SystemModstamp", "2024-01-31T12:05:09.000Z"),
                ("Name", "Acme \"Q\"\nLtd"),
                ("BillingCity", "Paris"),
                ("NumberOfEmployees", "12"),
                ("AnnualRevenue", "1.5E7"),
                ("CreatedDate", "2024-01-31T12:05:09.042+0000"),
            ],
        );
        let mut out = Vec::new();
        columns.encode(&values, &CONTEXT, &mut out).expect("encode");
        let envelope: Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(envelope["operation"], "READ");
        assert_eq!(envelope["id"], "001000000000001AAA");
        assert_eq!(envelope["commit_timestamp"], json!(1_706_702_709_000_i64));
        assert_eq!(
            envelope["snapshot"],
            json!({"method": "bulk", "read_at": 7})
        );
        assert_eq!(
            envelope["source"],
            json!({"channel": "/data/AccountChangeEvent", "replay_id": "00ff"})
        );
        let record = &envelope["record"];
        assert_eq!(record["Name"], "Acme \"Q\"\nLtd");
        assert_eq!(record["NumberOfEmployees"], 12);
        assert_eq!(record["AnnualRevenue"], 15_000_000.0);
        assert_eq!(record["CreatedDate"], json!(1_706_702_709_042_i64));
        assert_eq!(record["Phone"], Value::Null);
        assert_eq!(record["ShippingAddress"], Value::Null);
        assert_eq!(record["BillingAddress"]["City"], "Paris");
        assert_eq!(record["BillingAddress"]["Street"], Value::Null);
        assert!(record.get("Id").is_none());
    }

    #[test]
    fn a_resync_starts_at_a_whole_minute_before_the_current_one() {
        let minute = 60_000;
        let now = 100 * minute + 5_000;
        assert_eq!(resync_start(50 * minute + 59_999, now), 50 * minute);
        assert_eq!(resync_start(99 * minute + 1, now), 99 * minute);
        assert_eq!(resync_start(100 * minute + 1_000, now), 99 * minute);
    }

    #[test]
    fn a_deleted_row_becomes_a_delete_record() {
        let columns = account();
        let values = row(
            &columns,
            &[
                ("Id", "001000000000001AAA"),
                ("SystemModstamp", "2024-01-31T12:05:09.000Z"),
                ("IsDeleted", "true"),
            ],
        );
        assert!(columns.is_deleted(&values));
        let context = RowContext {
            resync: true,
            ..CONTEXT
        };
        let mut out = Vec::new();
        columns.encode_delete(
            "001000000000001AAA",
            columns.modstamp(&values),
            &context,
            &mut out,
        );
        let envelope: Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(
            envelope,
            json!({"operation": "DELETE", "object": "Account", "id": "001000000000001AAA",
                "record": null, "commit_timestamp": 1_706_702_709_000_i64,
                "snapshot": {"method": "bulk", "mode": "resync", "read_at": 7},
                "source": {"channel": "/data/AccountChangeEvent", "replay_id": "00ff"}})
        );
    }

    #[test]
    fn a_value_that_does_not_fit_names_the_record_and_field() {
        let columns = account();
        let values = row(
            &columns,
            &[
                ("Id", "001000000000001AAA"),
                ("SystemModstamp", "2024-01-31T12:05:09.000Z"),
                ("NumberOfEmployees", "twelve"),
            ],
        );
        let err = columns
            .encode(&values, &CONTEXT, &mut Vec::new())
            .expect_err("not a number");
        assert_eq!(
            err,
            "Account 001000000000001AAA: NumberOfEmployees: `twelve` is not an integer"
        );
        let short = vec![Some(Cow::Borrowed("001000000000001AAA"))];
        assert!(columns.encode(&short, &CONTEXT, &mut Vec::new()).is_err());
    }
}
