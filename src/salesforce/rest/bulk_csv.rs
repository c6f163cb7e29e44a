//! One page of Bulk API 2.0 query results ([`ResultsPage`]): the CSV body as Salesforce sent it,
//! its columns, and where each row starts, read row by row without copying values that need no
//! unescaping.
//!
//! Contract (Bulk API 2.0 Developer Guide, "Get Results for a Query Job", "Prepare CSV Files",
//! "Valid CSV Record Rows"; RFC 4180):
//! * The body is UTF-8; its first row names the columns (in the SELECT's order from API 50.0);
//!   each further row is one record. An empty body is a page of no columns and no rows.
//! * Values are separated by the job's column delimiter ([`ColumnDelimiter`], `COMMA` unless the
//!   job says otherwise) and rows end with LF or CRLF (the job's `lineEnding`; both are read, a
//!   last row may lack its line ending).
//! * A value in double quotes may hold the delimiter, line breaks and `""` (one quote); a value
//!   outside quotes may hold none of `"`, CR or LF. After a closing quote comes the delimiter or
//!   the end of the row, nothing else ("a space before or after a double quote generates an
//!   error"). Anything else is [`RestError::Protocol`] naming the row (1 = the first record
//!   after the header) and the column (1-based, with its name).
//! * An empty value, quoted or not, is `None`: Salesforce stores no empty text (a blank field is
//!   null), and its query results write a null as an empty value (a capture:
//!   forcedotcom/SFDX-Data-Move-Utility 5.7.1, "Empty cells returned by Bulk Query" read as
//!   nulls). A value is `Some(text)`, borrowed from the body unless it held `""`.
//! * Every row has as many values as the header has columns, else an error naming the row.
//! * `Sforce-NumberOfRecords`, when sent, must equal the rows read; `Sforce-Locator` is the next
//!   page's locator, and the text `null` (or no header) means this was the last page.
//!
//! Cost: one pass finds the rows (quote-aware, `memchr`), one more per read of the rows splits
//! the values; no allocation per value without `""`.

use std::borrow::Cow;

use bytes::Bytes;
use memchr::{memchr, memchr3};

use super::errors::RestError;

/// The column delimiter of a Bulk API 2.0 job (`columnDelimiter`; Bulk API 2.0 Developer Guide,
/// "Create a Query Job").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnDelimiter {
    Backquote,
    Caret,
    Comma,
    Pipe,
    Semicolon,
    Tab,
}

impl ColumnDelimiter {
    /// Salesforce's name (`COMMA`).
    pub fn name(self) -> &'static str {
        match self {
            ColumnDelimiter::Backquote => "BACKQUOTE",
            ColumnDelimiter::Caret => "CARET",
            ColumnDelimiter::Comma => "COMMA",
            ColumnDelimiter::Pipe => "PIPE",
            ColumnDelimiter::Semicolon => "SEMICOLON",
            ColumnDelimiter::Tab => "TAB",
        }
    }

    /// The character.
    pub fn byte(self) -> u8 {
        match self {
            ColumnDelimiter::Backquote => b'`',
            ColumnDelimiter::Caret => b'^',
            ColumnDelimiter::Comma => b',',
            ColumnDelimiter::Pipe => b'|',
            ColumnDelimiter::Semicolon => b';',
            ColumnDelimiter::Tab => b'\t',
        }
    }

    /// The delimiter Salesforce names `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            ColumnDelimiter::Backquote,
            ColumnDelimiter::Caret,
            ColumnDelimiter::Comma,
            ColumnDelimiter::Pipe,
            ColumnDelimiter::Semicolon,
            ColumnDelimiter::Tab,
        ]
        .into_iter()
        .find(|d| d.name() == name)
    }
}

/// One row's values, in column order: `None` = null.
pub type Row<'a> = Vec<Option<Cow<'a, str>>>;

/// One page of a query job's results.
#[derive(Debug, Clone)]
pub struct ResultsPage {
    /// What the errors name (`job 750…`).
    label: String,
    text: String,
    delimiter: u8,
    columns: Vec<String>,
    /// Each record row's byte range in `text`, line ending excluded.
    rows: Vec<(usize, usize)>,
    /// The next page's locator; `None` when Salesforce said `null` (the last page).
    pub locator: Option<String>,
    /// `Sforce-NumberOfRecords` (the rows of this page).
    pub number_of_records: u64,
}

/// Why a row's values could not be read: the 0-based column and what was wrong.
#[derive(Debug)]
struct FieldError {
    column: usize,
    what: &'static str,
}

impl ResultsPage {
    /// Reads `body` (see the module contract). `label` names the page in errors (`job 750…`);
    /// `locator` is the `Sforce-Locator` header as sent, `number_of_records`
    /// `Sforce-NumberOfRecords` (checked against the rows when present).
    pub fn parse(
        label: impl Into<String>,
        body: Bytes,
        delimiter: ColumnDelimiter,
        locator: Option<&str>,
        number_of_records: Option<u64>,
    ) -> Result<Self, RestError> {
        let label = label.into();
        let text = String::from_utf8(Vec::from(body)).map_err(|e| {
            RestError::Protocol(format!(
                "results of {label}: not UTF-8 at byte {}",
                e.utf8_error().valid_up_to()
            ))
        })?;
        let delimiter = delimiter.byte();
        let mut spans = row_spans(&text).map_err(|(row, start)| {
            // The rest of the body read as one row says which value broke it.
            let mut values = Vec::new();
            let error = split_row(&text[start..], delimiter, usize::MAX, &mut values)
                .err()
                .unwrap_or(FieldError {
                    column: values.len().saturating_sub(1),
                    what: "a quoted value is not closed",
                });
            RestError::Protocol(format!(
                "results of {label}: {}, column {}: {}",
                row_name(row),
                error.column + 1,
                error.what
            ))
        })?;
        let columns = match spans.first() {
            None => Vec::new(),
            Some(&(start, end)) => {
                let mut header = Vec::new();
                split_row(&text[start..end], delimiter, usize::MAX, &mut header).map_err(|e| {
                    RestError::Protocol(format!(
                        "results of {label}: the header row, column {}: {}",
                        e.column + 1,
                        e.what
                    ))
                })?;
                header
                    .into_iter()
                    .enumerate()
                    .map(|(i, name)| match name {
                        Some(name) => Ok(name.into_owned()),
                        None => Err(RestError::Protocol(format!(
                            "results of {label}: the header row, column {}: an empty column name",
                            i + 1
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        if !spans.is_empty() {
            spans.remove(0);
        }
        let rows = spans.len() as u64;
        if number_of_records.is_some_and(|n| n != rows) {
            return Err(RestError::Protocol(format!(
                "results of {label}: Sforce-NumberOfRecords is {} but the page holds {rows} rows",
                number_of_records.unwrap_or_default()
            )));
        }
        let locator = locator
            .map(str::trim)
            .filter(|l| !l.is_empty() && *l != "null")
            .map(str::to_owned);
        Ok(ResultsPage {
            label,
            text,
            delimiter,
            columns,
            rows: spans,
            locator,
            number_of_records: rows,
        })
    }

    /// The header's column names, in order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The record rows of the page.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the page holds no record.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Row `index` (0-based)'s values in column order (see the module contract).
    pub fn row(&self, index: usize) -> Result<Row<'_>, RestError> {
        let &(start, end) = self.rows.get(index).ok_or_else(|| {
            RestError::Invalid(format!(
                "row {} of a page of {} rows",
                index + 1,
                self.len()
            ))
        })?;
        let mut values = Vec::with_capacity(self.columns.len());
        split_row(
            &self.text[start..end],
            self.delimiter,
            self.columns.len(),
            &mut values,
        )
        .map_err(|e| self.row_error(index, &e))?;
        if values.len() != self.columns.len() {
            return Err(RestError::Protocol(format!(
                "results of {}: {}: {} values for {} columns",
                self.label,
                row_name(index + 1),
                values.len(),
                self.columns.len()
            )));
        }
        Ok(values)
    }

    /// Each row's values in column order, `None` = null, `Some(text)` unescaped (borrowed from
    /// the body unless it held `""`).
    pub fn rows(&self) -> impl Iterator<Item = Result<Row<'_>, RestError>> + '_ {
        (0..self.rows.len()).map(|index| self.row(index))
    }

    fn row_error(&self, index: usize, error: &FieldError) -> RestError {
        let name = self
            .columns
            .get(error.column)
            .map_or_else(String::new, |c| format!(" ({c})"));
        RestError::Protocol(format!(
            "results of {}: {}, column {}{name}: {}",
            self.label,
            row_name(index + 1),
            error.column + 1,
            error.what
        ))
    }
}

/// `row 3` (record rows count from 1, after the header) or `the header row`.
fn row_name(row: usize) -> String {
    if row == 0 {
        "the header row".to_owned()
    } else {
        format!("row {row}")
    }
}

/// The byte range of every row (header first), line endings excluded: a row ends at the first
/// LF outside quotes, a CR right before it is part of the line ending. `Err((row, start))`: a
/// quote opened in that row (0 = the header), which starts at byte `start`, is never closed.
fn row_spans(text: &str) -> Result<Vec<(usize, usize)>, (usize, usize)> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut start = 0;
    while start < bytes.len() {
        // A LF ends the row when the quotes before it, from the row's start, are even: `""`
        // inside a quoted value counts two. Counting is a vectorised pass, finding LF `memchr`.
        let mut quotes = 0usize;
        let mut at = start;
        let end = loop {
            let Some(k) = memchr(b'\n', &bytes[at..]) else {
                quotes += count_quotes(&bytes[at..]);
                if quotes % 2 == 1 {
                    return Err((spans.len(), start));
                }
                break bytes.len();
            };
            quotes += count_quotes(&bytes[at..at + k]);
            if quotes % 2 == 0 {
                break at + k;
            }
            at += k + 1;
        };
        let content_end = if end > start && bytes[end - 1] == b'\r' {
            end - 1
        } else {
            end
        };
        spans.push((start, content_end));
        start = end + 1;
    }
    Ok(spans)
}

/// The double quotes in `bytes` (a loop the compiler vectorises).
fn count_quotes(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'"').count()
}

/// Splits one row (line ending excluded) into `values`; stops with an error past `width`
/// values.
fn split_row<'a>(
    line: &'a str,
    delimiter: u8,
    width: usize,
    values: &mut Row<'a>,
) -> Result<(), FieldError> {
    let bytes = line.as_bytes();
    let n = bytes.len();
    let mut i = 0;
    loop {
        let column = values.len();
        if column >= width {
            return Err(FieldError {
                column,
                what: "more values than the header has columns",
            });
        }
        let (value, next) = if bytes.get(i) == Some(&b'"') {
            quoted(line, i + 1).ok_or(FieldError {
                column,
                what: "a quoted value is not closed",
            })?
        } else {
            let end = memchr(delimiter, &bytes[i..]).map_or(n, |k| i + k);
            if memchr3(b'"', b'\r', b'\n', &bytes[i..end]).is_some() {
                return Err(FieldError {
                    column,
                    what: "a quote or a line break in a value outside quotes",
                });
            }
            (Cow::Borrowed(&line[i..end]), end)
        };
        values.push((!value.is_empty()).then_some(value));
        if next == n {
            return Ok(());
        }
        if bytes[next] != delimiter {
            return Err(FieldError {
                column,
                what: "a character after the closing quote",
            });
        }
        i = next + 1;
    }
}

/// The quoted value whose text starts at `start` (after the opening quote), unescaped, and the
/// index after its closing quote; `None` when it is not closed.
fn quoted(line: &str, start: usize) -> Option<(Cow<'_, str>, usize)> {
    let bytes = line.as_bytes();
    let mut owned: Option<String> = None;
    let (mut segment, mut at) = (start, start);
    loop {
        let quote = at + memchr(b'"', &bytes[at..])?;
        if bytes.get(quote + 1) == Some(&b'"') {
            // `""`: one quote, kept with the text before it.
            owned
                .get_or_insert_with(String::new)
                .push_str(&line[segment..=quote]);
            at = quote + 2;
            segment = at;
            continue;
        }
        let value = match owned {
            Some(mut text) => {
                text.push_str(&line[segment..quote]);
                Cow::Owned(text)
            }
            None => Cow::Borrowed(&line[start..quote]),
        };
        return Some((value, quote + 1));
    }
}

#[cfg(test)]
#[path = "bulk_csv_tests.rs"]
mod tests;
