//! The SOQL tokenizer and Salesforce's located error message.
//!
//! Contract: [`tokenize`] splits a query into words (names and keywords, `a.b` kept whole),
//! quoted strings (`\'`, `\\`, `\n`, `\t`, `\r`, `\"` escapes; `\%`, `\_` kept escaped for
//! `LIKE`), numbers, date and datetime literals (a token starting `YYYY-MM-DD`, e.g.
//! `2024-01-31`, `2024-01-31T12:05:09Z`, `2024-01-31T12:05:09.000+0000`: SOQL and SOSL
//! Reference, "Date Formats and Date Literals"), punctuation and the comparison operators `=`,
//! `!=`, `<>`, `<`, `<=`, `>`, `>=` ("Comparison Operators"); each token with its byte offset,
//! the last one [`Tok::End`]. [`located`] formats a message as Salesforce locates it
//! (`\n<line>\n   ^\nERROR at Row:1:Column:4\n<text>`).

use crate::sim::error::QueryError;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Word(String),
    Str(String),
    Num(String),
    /// A date or datetime literal as written.
    Temporal(String),
    Comma,
    Open,
    Close,
    /// A comparison operator (`=`, `!=`, `<>`, `<`, `<=`, `>`, `>=`).
    Cmp(&'static str),
    Other(char),
    End,
}

impl Tok {
    pub(super) fn text(&self) -> String {
        match self {
            Tok::Word(w) | Tok::Num(w) | Tok::Temporal(w) => w.clone(),
            Tok::Str(s) => format!("'{s}'"),
            Tok::Comma => ",".into(),
            Tok::Open => "(".into(),
            Tok::Close => ")".into(),
            Tok::Cmp(op) => (*op).into(),
            Tok::Other(c) => c.to_string(),
            Tok::End => "<EOF>".into(),
        }
    }

    pub(super) fn is_kw(&self, kw: &str) -> bool {
        matches!(self, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }
}

/// Salesforce's located message: the offending line, a caret, row and column, then `msg`.
pub(super) fn located(text: &str, pos: usize, msg: &str) -> String {
    let pos = pos.min(text.len());
    let before = &text[..pos];
    let row = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = text[line_start..pos].chars().count() + 1;
    let line = text[line_start..].lines().next().unwrap_or("");
    format!(
        "\n{line}\n{}^\nERROR at Row:{row}:Column:{col}\n{msg}",
        " ".repeat(col - 1)
    )
}

/// True when `rest` starts like a date literal: `YYYY-MM-DD`.
fn starts_date(rest: &[u8]) -> bool {
    rest.len() >= 10
        && rest[..4].iter().all(u8::is_ascii_digit)
        && rest[4] == b'-'
        && rest[5..7].iter().all(u8::is_ascii_digit)
        && rest[7] == b'-'
        && rest[8..10].iter().all(u8::is_ascii_digit)
}

/// A quoted string starting after its opening quote at `start` (the quote at `open`).
fn string_literal(text: &str, open: usize, start: usize) -> Result<(String, usize), QueryError> {
    let mut s = String::new();
    let mut chars = text[start..].char_indices().map(|(j, c)| (j + start, c));
    loop {
        match chars.next() {
            Some((j, '\'')) => return Ok((s, j + 1)),
            Some((_, '\\')) => match chars.next() {
                Some((_, 'n')) => s.push('\n'),
                Some((_, 't')) => s.push('\t'),
                Some((_, 'r')) => s.push('\r'),
                Some((_, e @ ('\'' | '\\' | '"' | '%' | '_'))) => {
                    if matches!(e, '%' | '_') {
                        s.push('\\');
                    }
                    s.push(e);
                }
                Some((j, e)) => {
                    return Err(QueryError::Malformed(located(
                        text,
                        j,
                        &format!(
                            "Invalid string literal '\\{e}'. Illegal character sequence '\\{e}' in string literal."
                        ),
                    )));
                }
                None => return Ok((s, text.len())),
            },
            Some((_, other)) => s.push(other),
            None => {
                return Err(QueryError::Malformed(located(
                    text,
                    open,
                    "unexpected token: <EOF>: unterminated string literal",
                )));
            }
        }
    }
}

/// The tokens of `text`, each with its byte offset; the last is [`Tok::End`].
pub(super) fn tokenize(text: &str) -> Result<Vec<(Tok, usize)>, QueryError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = text[i..].chars().next().unwrap_or(' ');
        if c.is_whitespace() {
            i += c.len_utf8();
            continue;
        }
        let start = i;
        let two = text.get(i..i + 2).unwrap_or("");
        let tok = match c {
            ',' | '(' | ')' => {
                i += 1;
                match c {
                    ',' => Tok::Comma,
                    '(' => Tok::Open,
                    _ => Tok::Close,
                }
            }
            _ if matches!(two, "!=" | "<>" | "<=" | ">=") => {
                i += 2;
                Tok::Cmp(match two {
                    "!=" | "<>" => "!=",
                    "<=" => "<=",
                    _ => ">=",
                })
            }
            '=' | '<' | '>' => {
                i += 1;
                Tok::Cmp(match c {
                    '=' => "=",
                    '<' => "<",
                    _ => ">",
                })
            }
            '\'' => {
                let (s, end) = string_literal(text, i, i + 1)?;
                i = end;
                Tok::Str(s)
            }
            _ if starts_date(&bytes[i..]) => {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric()
                        || matches!(bytes[i], b':' | b'.' | b'+' | b'-'))
                {
                    i += 1;
                }
                Tok::Temporal(text[start..i].to_owned())
            }
            c if c.is_ascii_digit() || c == '-' || c == '.' => {
                i += 1;
                while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                    i += 1;
                }
                Tok::Num(text[start..i].to_owned())
            }
            c if c.is_alphabetic() || c == '_' => {
                for ch in text[i..].chars() {
                    if ch.is_alphanumeric() || ch == '_' || ch == '.' {
                        i += ch.len_utf8();
                    } else {
                        break;
                    }
                }
                Tok::Word(text[start..i].to_owned())
            }
            other => {
                i += other.len_utf8();
                Tok::Other(other)
            }
        };
        out.push((tok, start));
    }
    out.push((Tok::End, text.len()));
    Ok(out)
}
