//! The SOQL subset the simulated org answers: what a write-back sink issues to read records back
//! (by Id or External Id) before deciding what to write.
//!
//! Contract:
//! * Grammar (keywords case-insensitive, field and object names matched case-insensitively and
//!   reported with their API spelling):
//!   `SELECT f1, f2, … FROM Object [WHERE cond [AND cond]…] [LIMIT n]` where `cond` is
//!   `field = literal` or `field IN (literal, …)`; literals are quoted strings (`\'`, `\\`, `\n`,
//!   `\t`, `\"` escapes), numbers, `true`/`false` and `null`.
//! * Selectable and filterable: every field of the object's describe ([`super::fieldmeta`]):
//!   `Id`, `IsDeleted`, `SystemModstamp`, the schema's fields, compound fields' components
//!   (`BillingCity`, `FirstName`) and the compounds themselves (selectable; an address is not
//!   filterable, as SOQL allows: SOAP API Developer Guide, "Compound Field Considerations and
//!   Limitations"; Contact `Name` filters as text), formula fields. Deleted records are never returned. Rows come in
//!   Id (creation) order; the REST endpoint pages them (`nextRecordsUrl`, see `rest`).
//! * Matching: `Id` and Id-valued fields compare 15- and 18-character Ids alike; text compares
//!   case-insensitively (as SOQL does); a literal must fit the field's type (quoted for text,
//!   unquoted for numbers and booleans); dates, datetimes and compound fields can't be filtered.
//! * Errors are [`QueryError`]s carrying Salesforce's error code and message, the message
//!   located like Salesforce's (`\n<line>\n   ^\nERROR at Row:1:Column:4\n<text>`).

use std::collections::HashSet;

use serde_json::{Map, Value as Json};

use super::catalog::Temporal;
pub use super::error::QueryError;
use super::fieldmeta::{CompoundShape, ObjectMeta, Source};
use super::ids;
use super::org::{Org, Tx};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Num(String),
    Comma,
    Open,
    Close,
    Eq,
    Other(char),
    End,
}

impl Tok {
    fn text(&self) -> String {
        match self {
            Tok::Word(w) | Tok::Num(w) => w.clone(),
            Tok::Str(s) => format!("'{s}'"),
            Tok::Comma => ",".into(),
            Tok::Open => "(".into(),
            Tok::Close => ")".into(),
            Tok::Eq => "=".into(),
            Tok::Other(c) => c.to_string(),
            Tok::End => "<EOF>".into(),
        }
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }
}

/// Salesforce's located message: the offending line, a caret, row and column, then `msg`.
fn located(text: &str, pos: usize, msg: &str) -> String {
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

fn tokenize(text: &str) -> Result<Vec<(Tok, usize)>, QueryError> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let tok = match c {
            ',' => {
                chars.next();
                Tok::Comma
            }
            '(' => {
                chars.next();
                Tok::Open
            }
            ')' => {
                chars.next();
                Tok::Close
            }
            '=' => {
                chars.next();
                Tok::Eq
            }
            '\'' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\'')) => break,
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
                            None => break,
                        },
                        Some((_, other)) => s.push(other),
                        None => {
                            return Err(QueryError::Malformed(located(
                                text,
                                i,
                                "unexpected token: <EOF>: unterminated string literal",
                            )));
                        }
                    }
                }
                Tok::Str(s)
            }
            c if c.is_ascii_digit() || c == '-' || c == '.' => {
                let mut s = String::new();
                while let Some(&(_, d)) = chars.peek() {
                    if d.is_ascii_digit() || d == '.' || (s.is_empty() && d == '-') {
                        s.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                Tok::Num(s)
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut s = String::new();
                while let Some(&(_, d)) = chars.peek() {
                    if d.is_alphanumeric() || d == '_' || d == '.' {
                        s.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                Tok::Word(s)
            }
            other => {
                chars.next();
                Tok::Other(other)
            }
        };
        out.push((tok, i));
    }
    out.push((Tok::End, text.len()));
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

/// How a field compares in a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Id,
    IdRef,
    Text,
    Number,
    Bool,
    Temporal(Temporal),
    Compound,
}

#[derive(Debug, Clone)]
struct Filter {
    field: String,
    kind: Kind,
    values: Vec<Literal>,
}

/// A parsed query, resolved against the org's current schemas.
#[derive(Debug, Clone)]
pub struct Query {
    /// Object API name.
    pub object: String,
    /// Selected fields (API spelling), in order.
    pub fields: Vec<String>,
    filters: Vec<Filter>,
    /// `LIMIT`.
    pub limit: Option<usize>,
}

/// The field's API name and filter kind, if `object` has it (its describe fields: components
/// such as `BillingCity`, compounds, formula fields).
fn field_kind(meta: &ObjectMeta, name: &str) -> Option<(String, Kind)> {
    let f = meta.field(name)?;
    let kind = match (&f.source, f.temporal, f.ty) {
        (_, Some(t), _) => Kind::Temporal(t),
        // Contact `Name` is text in SOQL (filterable), an address or a location is not.
        (Source::Compound(CompoundShape::PersonName), _, _) => Kind::Text,
        (Source::Compound(_), _, _) => Kind::Compound,
        (_, _, "id") => Kind::Id,
        (_, _, "reference") => Kind::IdRef,
        (_, _, "boolean") => Kind::Bool,
        (_, _, "double" | "int" | "currency" | "percent") => Kind::Number,
        _ => Kind::Text,
    };
    Some((f.name.clone(), kind))
}

struct Parser<'t> {
    text: &'t str,
    toks: Vec<(Tok, usize)>,
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.at.min(self.toks.len() - 1)].0
    }

    fn pos(&self) -> usize {
        self.toks[self.at.min(self.toks.len() - 1)].1
    }

    fn next(&mut self) -> (Tok, usize) {
        let t = self.toks[self.at.min(self.toks.len() - 1)].clone();
        self.at += 1;
        t
    }

    fn unexpected(&self) -> QueryError {
        QueryError::Malformed(located(
            self.text,
            self.pos(),
            &format!("unexpected token: '{}'", self.peek().text()),
        ))
    }

    fn keyword(&mut self, kw: &str) -> Result<(), QueryError> {
        if self.peek().is_kw(kw) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn word(&mut self) -> Result<(String, usize), QueryError> {
        match self.peek() {
            Tok::Word(w) => {
                let w = w.clone();
                let p = self.pos();
                self.at += 1;
                Ok((w, p))
            }
            _ => Err(self.unexpected()),
        }
    }

    fn literal(&mut self) -> Result<(Literal, usize), QueryError> {
        let p = self.pos();
        let lit = match self.peek() {
            Tok::Str(s) => Literal::Str(s.clone()),
            Tok::Num(n) => Literal::Num(n.parse().map_err(|_| self.unexpected())?),
            t if t.is_kw("null") => Literal::Null,
            t if t.is_kw("true") => Literal::Bool(true),
            t if t.is_kw("false") => Literal::Bool(false),
            _ => return Err(self.unexpected()),
        };
        self.at += 1;
        Ok((lit, p))
    }
}

/// A name or literal as written, and its position in the text.
type Located<T> = (T, usize);

/// A query as written, its names not yet resolved: the selected fields, the object and the
/// `WHERE` conditions (field, position, literals), and `LIMIT`.
struct Raw {
    fields: Vec<Located<String>>,
    object: Located<String>,
    filters: Vec<(String, usize, Vec<Located<Literal>>)>,
    limit: Option<usize>,
}

impl Parser<'_> {
    /// `SELECT f, … FROM Object [WHERE cond [AND cond]…] [LIMIT n]`, up to the end of the text.
    fn query(&mut self) -> Result<Raw, QueryError> {
        self.keyword("SELECT")?;
        let mut raw_fields = vec![self.word()?];
        while *self.peek() == Tok::Comma {
            self.next();
            raw_fields.push(self.word()?);
        }
        self.keyword("FROM")?;
        let (raw_object, object_pos) = self.word()?;
        let mut raw_filters = Vec::new();
        if self.peek().is_kw("WHERE") {
            self.next();
            loop {
                let (field, field_pos) = self.word()?;
                let mut values = Vec::new();
                match self.next() {
                    (Tok::Eq, _) => values.push(self.literal()?),
                    (t, _) if t.is_kw("IN") => {
                        if *self.peek() != Tok::Open {
                            return Err(self.unexpected());
                        }
                        self.next();
                        values.push(self.literal()?);
                        while *self.peek() == Tok::Comma {
                            self.next();
                            values.push(self.literal()?);
                        }
                        if *self.peek() != Tok::Close {
                            return Err(self.unexpected());
                        }
                        self.next();
                    }
                    _ => {
                        self.at -= 1;
                        return Err(self.unexpected());
                    }
                }
                raw_filters.push((field, field_pos, values));
                if self.peek().is_kw("AND") {
                    self.next();
                } else {
                    break;
                }
            }
        }
        let mut limit = None;
        if self.peek().is_kw("LIMIT") {
            self.next();
            match self.peek() {
                Tok::Num(n) => match n.parse::<usize>() {
                    Ok(n) => {
                        limit = Some(n);
                        self.next();
                    }
                    Err(_) => return Err(self.unexpected()),
                },
                _ => return Err(self.unexpected()),
            }
        }
        if *self.peek() != Tok::End {
            return Err(self.unexpected());
        }
        Ok(Raw {
            fields: raw_fields,
            object: (raw_object, object_pos),
            filters: raw_filters,
            limit,
        })
    }
}

/// Checks that each literal of a filter on `api` (of `kind`, at `pos`) fits the field's type.
fn check_filter(
    text: &str,
    api: &str,
    kind: Kind,
    pos: usize,
    values: &[Located<Literal>],
) -> Result<(), QueryError> {
    let invalid = |msg: String| QueryError::InvalidField(located(text, pos, &msg));
    for (lit, lit_pos) in values {
        match (kind, lit) {
            (_, Literal::Null) => {}
            (Kind::Compound, _) => {
                return Err(invalid(format!(
                    "field '{api}' can not be filtered in a query call"
                )));
            }
            (Kind::Temporal(t), _) => {
                let ty = match t {
                    Temporal::DateTime => "dateTime",
                    Temporal::Date => "date",
                };
                return Err(invalid(format!(
                    "value of filter criterion for field '{api}' must be of type {ty} and should not be enclosed in quotes"
                )));
            }
            (Kind::Id, Literal::Str(s)) if ids::normalize(s).is_none() => {
                return Err(QueryError::InvalidFilter(located(
                    text,
                    *lit_pos,
                    &format!("invalid ID field: {s}"),
                )));
            }
            (Kind::Id | Kind::IdRef | Kind::Text, Literal::Str(_))
            | (Kind::Number, Literal::Num(_))
            | (Kind::Bool, Literal::Bool(_)) => {}
            (Kind::Id | Kind::IdRef | Kind::Text, _) => {
                return Err(invalid(format!(
                    "value of filter criterion for field '{api}' must be of type string and should be enclosed in quotes"
                )));
            }
            (Kind::Number, _) => {
                return Err(invalid(format!(
                    "value of filter criterion for field '{api}' must be of type double and should not be enclosed in quotes"
                )));
            }
            (Kind::Bool, _) => {
                return Err(invalid(format!(
                    "value of filter criterion for field '{api}' must be of type boolean and should not be enclosed in quotes"
                )));
            }
        }
    }
    Ok(())
}

impl Query {
    /// Parses `text` and resolves its object and fields against `org`.
    pub fn parse(text: &str, org: &Org) -> Result<Query, QueryError> {
        let mut p = Parser {
            text,
            toks: tokenize(text)?,
            at: 0,
        };
        let Raw {
            fields: raw_fields,
            object: (raw_object, object_pos),
            filters: raw_filters,
            limit,
        } = p.query()?;
        let Some(object) = org.canonical_object(&raw_object).map(str::to_owned) else {
            return Err(QueryError::InvalidType(located(
                text,
                object_pos,
                &Org::unsupported_object(&raw_object),
            )));
        };
        let meta = org
            .meta(&object)
            .ok_or_else(|| QueryError::InvalidType(raw_object.clone()))?;
        let no_such = |name: &str, pos: usize| {
            QueryError::InvalidField(located(
                text,
                pos,
                &format!(
                    "No such column '{name}' on entity '{object}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names."
                ),
            ))
        };
        let mut fields = Vec::new();
        let mut seen = HashSet::new();
        for (name, pos) in raw_fields {
            let (api, _) = field_kind(&meta, &name).ok_or_else(|| no_such(&name, pos))?;
            if !seen.insert(api.clone()) {
                return Err(QueryError::Malformed(located(
                    text,
                    pos,
                    &format!("duplicate field selected: {api}"),
                )));
            }
            fields.push(api);
        }
        let mut filters = Vec::new();
        for (name, pos, values) in raw_filters {
            let (api, kind) = field_kind(&meta, &name).ok_or_else(|| no_such(&name, pos))?;
            check_filter(text, &api, kind, pos, &values)?;
            filters.push(Filter {
                field: api,
                kind,
                values: values.into_iter().map(|(l, _)| l).collect(),
            });
        }
        Ok(Query {
            object,
            fields,
            filters,
            limit,
        })
    }

    /// The matching live records (all fields, epoch-ms values), as `tx` sees the org. A filter
    /// on `Id` or on an External Id field is answered by lookups (the External Id index), not
    /// by a scan.
    pub fn run(&self, org: &Org, tx: Option<&Tx>) -> Vec<Map<String, Json>> {
        let rows = match self.lookup(org, tx) {
            Some(rows) => rows,
            None => org.live_records(tx, &self.object),
        };
        let Some(meta) = org.meta(&self.object) else {
            return Vec::new();
        };
        rows.into_iter()
            .filter(|rec| self.filters.iter().all(|f| f.matches(&meta, rec)))
            .take(self.limit.unwrap_or(usize::MAX))
            .collect()
    }

    /// The candidate rows of the first filter that lookups can answer, in Id order.
    fn lookup(&self, org: &Org, tx: Option<&Tx>) -> Option<Vec<Map<String, Json>>> {
        let filter = self.filters.iter().find(|f| {
            f.values.iter().all(|v| matches!(v, Literal::Str(_)))
                && (f.kind == Kind::Id || org.is_external_id(&self.object, &f.field))
        })?;
        let mut ids: Vec<String> = filter
            .values
            .iter()
            .filter_map(|v| match v {
                Literal::Str(s) if filter.kind == Kind::Id => ids::normalize(s),
                Literal::Str(s) => org.find_by_external_id(tx, &self.object, &filter.field, s),
                _ => None,
            })
            .collect();
        ids.sort();
        ids.dedup();
        Some(
            ids.iter()
                .filter_map(|id| org.view(tx, &self.object, id))
                .filter(|rec| rec.get("IsDeleted") != Some(&Json::Bool(true)))
                .collect(),
        )
    }
}

impl Query {
    /// The selected fields of a record for the Rust API (null when unset): values in the
    /// org's own shape (epoch ms; a compound field as its stored nested record), components
    /// and formula fields as REST reads them.
    pub fn select(&self, org: &Org, rec: &Map<String, Json>) -> Map<String, Json> {
        let meta = org.meta(&self.object);
        self.fields
            .iter()
            .map(|f| {
                let value = match meta.as_ref() {
                    Some(m)
                        if !matches!(m.field(f).map(|x| &x.source), Some(Source::Compound(_))) =>
                    {
                        m.read(rec, f)
                    }
                    _ => rec.get(f).cloned().unwrap_or(Json::Null),
                };
                (f.clone(), value)
            })
            .collect()
    }
}

impl Filter {
    fn matches(&self, meta: &ObjectMeta, rec: &Map<String, Json>) -> bool {
        let read = meta.read(rec, &self.field);
        let value = Some(&read).filter(|v| !v.is_null());
        self.values.iter().any(|lit| match (lit, value) {
            (Literal::Null, v) => v.is_none(),
            (_, None) => false,
            (Literal::Str(s), Some(Json::String(v))) => match self.kind {
                Kind::Id | Kind::IdRef => match (ids::normalize(s), ids::normalize(v)) {
                    (Some(a), Some(b)) => a == b,
                    _ => s.eq_ignore_ascii_case(v),
                },
                _ => s.to_lowercase() == v.to_lowercase(),
            },
            (Literal::Num(n), Some(v)) => v.as_f64() == Some(*n),
            (Literal::Bool(b), Some(v)) => v.as_bool() == Some(*b),
            _ => false,
        })
    }
}

#[cfg(test)]
mod tests {
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
}
