//! `WHERE` conditions and `ORDER BY` keys: literals, how each field kind compares, the type
//! checks Salesforce applies to a condition's literal, and the matching and ordering of records.
//!
//! Contract (SOQL and SOSL Reference, "Comparison Operators", "Date Formats and Date Literals",
//! "ORDER BY"):
//! * Operators `=`, `!=` (and `<>`), `<`, `<=`, `>`, `>=`, `IN (…)`, `NOT IN (…)`, `LIKE`
//!   (text and Id fields only, a quoted pattern: "The LIKE operator is supported for string
//!   fields only"; see [`super::cond::like`]). Text compares
//!   case-insensitively; Ids compare as 18-character Ids (15 and 18 characters alike);
//!   numbers numerically; dates and datetimes as instants (a datetime literal in any offset,
//!   `Z` or `+0000`); booleans `false < true`. A literal must fit the field: quoted for text and
//!   Ids, unquoted for numbers, booleans, dates and datetimes (a date field takes a date literal,
//!   a datetime field a datetime literal); compound fields (an address) are not filterable.
//! * `null` only matches with `=`/`!=`/`IN`. `field != 'x'` also matches records whose field is
//!   null (SOQL compares null as a value, unlike SQL; the reference's "Comparison Operators" page
//!   lists `!=` as "not equals" without SQL's three-valued logic; chosen, see ARCHITECTURE.md).
//!   A range comparison never matches a null.
//! * Ordering is case-insensitive for text; nulls sort first unless `NULLS LAST` ("By default,
//!   null values are sorted first", whatever the direction).

use std::cmp::Ordering;

use serde_json::{Map, Value as Json};

use super::cond::like;
use super::lex::located;
use crate::sim::catalog::Temporal;
use crate::sim::error::QueryError;
use crate::sim::fieldmeta::{CompoundShape, ObjectMeta, Source};
use crate::sim::ids;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
    /// A datetime literal, epoch ms.
    DateTime(i64),
    /// A date literal, epoch ms of its midnight UTC.
    Date(i64),
    /// A relative date literal (`TODAY`, `LAST_N_DAYS:7`): `[start, end)` in epoch ms.
    Range(i64, i64),
}

/// How a field compares in a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Id,
    IdRef,
    Text,
    Number,
    Bool,
    Temporal(Temporal),
    Compound,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    Like,
}

impl Op {
    pub(super) fn from_symbol(s: &str) -> Op {
        match s {
            "!=" => Op::Ne,
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            _ => Op::Eq,
        }
    }

    fn is_range(self) -> bool {
        matches!(self, Op::Lt | Op::Le | Op::Gt | Op::Ge)
    }
}

#[derive(Debug, Clone)]
pub(super) struct Filter {
    pub(super) field: String,
    pub(super) kind: Kind,
    pub(super) op: Op,
    pub(super) values: Vec<Literal>,
}

/// One `ORDER BY` key.
#[derive(Debug, Clone)]
pub(super) struct OrderKey {
    pub(super) field: String,
    pub(super) kind: Kind,
    pub(super) descending: bool,
    pub(super) nulls_last: bool,
}

/// The field's API name and filter kind, if `object` has it (its describe fields: components
/// such as `BillingCity`, compounds, formula fields).
pub(super) fn field_kind(meta: &ObjectMeta, name: &str) -> Option<(String, Kind)> {
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

/// Salesforce's message for a literal of the wrong type.
fn type_message(api: &str, kind: Kind) -> String {
    let (ty, quoted) = match kind {
        Kind::Temporal(Temporal::DateTime) => ("dateTime", false),
        Kind::Temporal(Temporal::Date) => ("date", false),
        Kind::Number => ("double", false),
        Kind::Bool => ("boolean", false),
        _ => ("string", true),
    };
    let quotes = if quoted {
        "should be enclosed in quotes"
    } else {
        "should not be enclosed in quotes"
    };
    format!("value of filter criterion for field '{api}' must be of type {ty} and {quotes}")
}

/// Checks that each literal of a filter on `api` (of `kind`, at `pos`) fits the field's type.
pub(super) fn check_filter(
    text: &str,
    api: &str,
    kind: Kind,
    op: Op,
    pos: usize,
    values: &[(Literal, usize)],
) -> Result<(), QueryError> {
    let invalid = |msg: String| QueryError::InvalidField(located(text, pos, &msg));
    for (lit, lit_pos) in values {
        let fits = match (kind, lit) {
            (Kind::Compound, _) => {
                return Err(invalid(format!(
                    "field '{api}' can not be filtered in a query call"
                )));
            }
            (Kind::Id | Kind::IdRef | Kind::Text, Literal::Str(_)) if op == Op::Like => true,
            // A LIKE pattern is a quoted string on a text field; any other pairing is refused
            // with the message of a literal of the wrong type.
            (_, _) if op == Op::Like => false,
            (_, Literal::Null) if op.is_range() => {
                return Err(QueryError::InvalidFilter(located(
                    text,
                    *lit_pos,
                    "invalid operator on null value: only = and != can compare with null",
                )));
            }
            (_, Literal::Null) => true,
            (Kind::Id, Literal::Str(s)) if ids::normalize(s).is_none() && !op.is_range() => {
                return Err(QueryError::InvalidFilter(located(
                    text,
                    *lit_pos,
                    &format!("invalid ID field: {s}"),
                )));
            }
            (Kind::Temporal(_), Literal::Range(..))
            | (Kind::Temporal(Temporal::DateTime), Literal::DateTime(_))
            | (Kind::Temporal(Temporal::Date), Literal::Date(_))
            | (Kind::Id | Kind::IdRef | Kind::Text, Literal::Str(_))
            | (Kind::Number, Literal::Num(_))
            | (Kind::Bool, Literal::Bool(_)) => true,
            _ => false,
        };
        if !fits {
            return Err(invalid(type_message(api, kind)));
        }
    }
    Ok(())
}

/// A record's value of `field`, null when unset; `IsDeleted` from `deleted` when the record
/// does not carry it (a stored record: the flag is kept beside it).
pub(super) fn value_of(
    meta: &ObjectMeta,
    rec: &Map<String, Json>,
    field: &str,
    deleted: bool,
) -> Json {
    if field == "IsDeleted" && !rec.contains_key(field) {
        return Json::Bool(deleted);
    }
    meta.read(rec, field)
}

/// Compares a record's (non-null) value with a (non-null) literal, as `kind` compares.
fn compare(kind: Kind, value: &Json, lit: &Literal) -> Option<Ordering> {
    match (lit, value) {
        (Literal::Str(s), Json::String(v)) => Some(match kind {
            Kind::Id | Kind::IdRef => {
                let a = ids::normalize(v).unwrap_or_else(|| v.clone());
                let b = ids::normalize(s).unwrap_or_else(|| s.clone());
                a.cmp(&b)
            }
            _ => v.to_lowercase().cmp(&s.to_lowercase()),
        }),
        (Literal::Num(n), v) => v.as_f64()?.partial_cmp(n),
        (Literal::Bool(b), Json::Bool(v)) => Some(v.cmp(b)),
        (Literal::DateTime(t) | Literal::Date(t), v) => Some(v.as_i64()?.cmp(t)),
        _ => None,
    }
}

impl Filter {
    pub(super) fn matches(
        &self,
        meta: &ObjectMeta,
        rec: &Map<String, Json>,
        deleted: bool,
    ) -> bool {
        let read = value_of(meta, rec, &self.field, deleted);
        let value = Some(&read).filter(|v| !v.is_null());
        let hit = |lit: &Literal| match (lit, value) {
            (Literal::Null, v) => v.is_none(),
            (_, None) => false,
            (Literal::Range(start, end), Some(v)) => {
                v.as_i64().is_some_and(|x| *start <= x && x < *end)
            }
            (lit, Some(v)) => compare(self.kind, v, lit) == Some(Ordering::Equal),
        };
        match self.op {
            Op::Eq | Op::In => self.values.iter().any(hit),
            Op::Ne | Op::NotIn => !self.values.iter().any(hit),
            Op::Like => match (value, self.values.first()) {
                (Some(Json::String(v)), Some(Literal::Str(p))) => like(v, p),
                _ => false,
            },
            range => {
                let (Some(v), Some(lit)) = (value, self.values.first()) else {
                    return false;
                };
                // A date literal's range: `<` before its start, `<=` before its end, `>` from
                // its end on, `>=` from its start on ("Date Formats and Date Literals in WHERE").
                if let (Literal::Range(start, end), Some(x)) = (lit, v.as_i64()) {
                    return match range {
                        Op::Lt => x < *start,
                        Op::Le => x < *end,
                        Op::Gt => x >= *end,
                        _ => x >= *start,
                    };
                }
                match compare(self.kind, v, lit) {
                    Some(o) => match range {
                        Op::Lt => o == Ordering::Less,
                        Op::Le => o != Ordering::Greater,
                        Op::Gt => o == Ordering::Greater,
                        _ => o != Ordering::Less,
                    },
                    None => false,
                }
            }
        }
    }
}

/// Orders two non-null values of one field as `kind` sorts them.
fn order_values(kind: Kind, a: &Json, b: &Json) -> Ordering {
    match (a, b) {
        (Json::String(x), Json::String(y)) => match kind {
            Kind::Id | Kind::IdRef => x.cmp(y),
            _ => x.to_lowercase().cmp(&y.to_lowercase()),
        },
        (Json::Bool(x), Json::Bool(y)) => x.cmp(y),
        (x, y) => match (x.as_f64(), y.as_f64()) {
            (Some(p), Some(q)) => p.partial_cmp(&q).unwrap_or(Ordering::Equal),
            _ => x.to_string().cmp(&y.to_string()),
        },
    }
}

impl OrderKey {
    /// How `a` and `b` compare under this key.
    pub(super) fn compare(
        &self,
        meta: &ObjectMeta,
        a: (&Map<String, Json>, bool),
        b: (&Map<String, Json>, bool),
    ) -> Ordering {
        let x = value_of(meta, a.0, &self.field, a.1);
        let y = value_of(meta, b.0, &self.field, b.1);
        let nulls = if self.nulls_last {
            Ordering::Greater
        } else {
            Ordering::Less
        };
        match (x.is_null(), y.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => nulls,
            (false, true) => nulls.reverse(),
            (false, false) => {
                let o = order_values(self.kind, &x, &y);
                if self.descending { o.reverse() } else { o }
            }
        }
    }
}
