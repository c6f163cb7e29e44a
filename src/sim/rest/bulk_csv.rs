//! The CSV of a Bulk API 2.0 query job's results, rendered once when the job completes and
//! stored compactly ([`CsvResults`]: the CSV bytes and where each row starts), then served a
//! page at a time by slicing.
//!
//! Contract (Bulk API 2.0 and Bulk API Developer Guide, "Get Results for a Query Job" — its
//! example body is `"Id","Name"` then `"005R0000000UyrWIAS","Jane Dunn"`; "Create a Query
//! Job" for `columnDelimiter` and `lineEnding`):
//! * A header row of the selected field names, then one row per record, fields separated by the
//!   job's delimiter (`COMMA` `,`, `TAB`, `PIPE` `|`, `SEMICOLON` `;`, `CARET` `^`,
//!   `BACKQUOTE` `` ` ``), every row ended by the job's line ending (`LF` or `CRLF`).
//! * Every header name and every non-null value is enclosed in double quotes, a quote inside a
//!   value doubled (RFC 4180, as the example shows). A null value is an empty, unquoted field
//!   (the docs are silent; chosen so a reader can tell null from text, while a reader that
//!   treats both as the empty string, as most CSV readers do, reads the same thing).
//! * Values as the Bulk API renders them: text as stored (newlines kept inside the quotes),
//!   booleans `true`/`false`, numbers as the org holds them (`5000`, `1250000.5`), datetimes
//!   `2024-01-31T12:05:09.000Z` (UTC, milliseconds, `Z`: the Bulk API's dateTime format, "Valid
//!   Date Format in Records"), dates `2024-01-31`; compound name fields (Contact `Name`) as their
//!   text. `IsDeleted` from the record's flag.

use bytes::Bytes;
use serde_json::{Map, Value as Json};

use crate::salesforce::sftime;
use crate::sim::catalog::Temporal;
use crate::sim::fieldmeta::ObjectMeta;

/// The CSV dialect of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dialect {
    pub delimiter: u8,
    pub crlf: bool,
}

impl Dialect {
    /// The delimiter named as the API names it (`COMMA`, `TAB`, …).
    pub(crate) fn delimiter_named(name: &str) -> Option<u8> {
        Some(match name {
            "COMMA" => b',',
            "TAB" => b'\t',
            "PIPE" => b'|',
            "SEMICOLON" => b';',
            "CARET" => b'^',
            "BACKQUOTE" => b'`',
            _ => return None,
        })
    }

    fn end_row(self, out: &mut Vec<u8>) {
        if self.crlf {
            out.extend_from_slice(b"\r\n");
        } else {
            out.push(b'\n');
        }
    }
}

/// A job's rendered results: the header row, the rows' bytes and each row's start.
#[derive(Debug)]
pub(crate) struct CsvResults {
    pub header: Bytes,
    pub rows: Bytes,
    /// Start of each row in `rows`, then the end of the last.
    pub starts: Vec<usize>,
}

impl CsvResults {
    /// Number of records.
    pub(crate) fn len(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }

    /// The bytes held.
    pub(crate) fn size(&self) -> usize {
        self.header.len() + self.rows.len() + self.starts.len() * std::mem::size_of::<usize>()
    }

    /// The CSV of records `from..to` (header included).
    pub(crate) fn page(&self, from: usize, to: usize) -> Vec<u8> {
        let body = &self.rows[self.starts[from]..self.starts[to]];
        let mut out = Vec::with_capacity(self.header.len() + body.len());
        out.extend_from_slice(&self.header);
        out.extend_from_slice(body);
        out
    }
}

fn quoted(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    for b in text.bytes() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// `2024-01-31T12:05:09.000Z`.
fn bulk_datetime(ms: i64) -> String {
    let mut s = sftime::format_datetime(ms);
    s.truncate(s.len() - "+0000".len());
    s.push('Z');
    s
}

/// Appends one value (nothing for null).
fn value(out: &mut Vec<u8>, temporal: Option<Temporal>, v: &Json) {
    match (temporal, v) {
        (_, Json::Null) => {}
        (Some(Temporal::DateTime), Json::Number(n)) if n.as_i64().is_some() => {
            quoted(out, &bulk_datetime(n.as_i64().unwrap_or_default()));
        }
        (Some(Temporal::Date), Json::Number(n)) if n.as_i64().is_some() => {
            quoted(out, &sftime::format_date(n.as_i64().unwrap_or_default()));
        }
        (_, Json::String(s)) => quoted(out, s),
        (_, Json::Bool(b)) => quoted(out, if *b { "true" } else { "false" }),
        (_, Json::Number(n)) => quoted(out, &n.to_string()),
        (_, other) => quoted(out, &other.to_string()),
    }
}

/// Renders `rows` (records with their deleted flags) with the `fields` of `meta`.
pub(crate) fn render(
    meta: &ObjectMeta,
    fields: &[String],
    rows: &[(&Map<String, Json>, bool)],
    dialect: Dialect,
) -> CsvResults {
    let mut header = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            header.push(dialect.delimiter);
        }
        quoted(&mut header, f);
    }
    dialect.end_row(&mut header);
    let metas: Vec<_> = fields.iter().map(|f| meta.field(f)).collect();
    let mut out = Vec::with_capacity(rows.len() * 64 * fields.len().max(1) / 4);
    let mut starts = Vec::with_capacity(rows.len() + 1);
    for (rec, deleted) in rows {
        starts.push(out.len());
        for (i, (name, m)) in fields.iter().zip(&metas).enumerate() {
            if i > 0 {
                out.push(dialect.delimiter);
            }
            let v = match m {
                _ if name == "IsDeleted" => Json::Bool(*deleted),
                Some(m) => meta.read_field(rec, m),
                None => Json::Null,
            };
            value(&mut out, m.and_then(|m| m.temporal), &v);
        }
        dialect.end_row(&mut out);
    }
    starts.push(out.len());
    out.shrink_to_fit();
    CsvResults {
        header: Bytes::from(header),
        rows: Bytes::from(out),
        starts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_nulls_empty_dates_in_bulk_format() {
        let mut out = Vec::new();
        value(&mut out, None, &Json::from("say \"hi\"\nthere"));
        out.push(b',');
        value(&mut out, None, &Json::Null);
        out.push(b',');
        value(&mut out, None, &Json::Bool(true));
        out.push(b',');
        value(
            &mut out,
            Some(Temporal::DateTime),
            &Json::from(1_706_702_709_000i64),
        );
        out.push(b',');
        value(
            &mut out,
            Some(Temporal::Date),
            &Json::from(1_706_659_200_000i64),
        );
        out.push(b',');
        value(&mut out, None, &Json::from(1250000.5));
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "\"say \"\"hi\"\"\nthere\",,\"true\",\"2024-01-31T12:05:09.000Z\",\"2024-01-31\",\"1250000.5\""
        );
    }
}
