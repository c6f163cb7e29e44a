//! The SOQL subset the simulated org answers: what a write-back sink issues to read records back
//! (by Id or External Id) before deciding what to write, and what a snapshot and a resync issue
//! (ranges on `SystemModstamp`, `ORDER BY`, `LIMIT`/`OFFSET`, `COUNT()`, `queryAll`).
//!
//! Contract:
//! * Grammar (`parse.rs`; keywords case-insensitive, field and object names matched
//!   case-insensitively and reported with their API spelling):
//!   `SELECT (f1, f2, … | COUNT()) FROM Object [WHERE expr]
//!   [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], …] [LIMIT n] [OFFSET n]` where `expr` joins
//!   field expressions with `AND`, `OR`, `NOT` and parentheses (`cond.rs`), a field expression
//!   being `field <op> literal` (`=`, `!=`, `<>`, `<`, `<=`, `>`, `>=`, `LIKE`) or
//!   `field [NOT] IN (literal, …)`; literals are quoted strings (`\'`, `\\`, `\n`, `\t`, `\"` escapes), numbers, `true`/`false`,
//!   `null`, dates (`2024-01-31`) and datetimes (`2024-01-31T12:05:09Z`,
//!   `2024-01-31T12:05:09.000+0000`, `…-08:00`), unquoted as SOQL writes them (SOQL and SOSL
//!   Reference, "Date Formats and Date Literals"; `lex.rs`), and relative date literals
//!   (`TODAY`, `LAST_N_DAYS:30`, `THIS_MONTH`: `dates.rs`).
//! * Selectable and filterable: every field of the object's describe ([`super::fieldmeta`]):
//!   `Id`, `IsDeleted`, `SystemModstamp`, the schema's fields, compound fields' components
//!   (`BillingCity`, `FirstName`) and the compounds themselves (selectable; an address is not
//!   filterable nor sortable, as SOQL allows: SOAP API Developer Guide, "Compound Field
//!   Considerations and Limitations"; Contact `Name` filters as text), formula fields.
//!   How each kind compares and sorts: `filter.rs`.
//! * Rows: the live records (with [`Query::all_rows`], as `queryAll` reads them, also the
//!   deleted ones still in the recycle bin, `IsDeleted = true`: REST API Developer Guide,
//!   "QueryAll"), in Id (creation) order unless `ORDER BY` says otherwise (a stable sort: ties
//!   keep Id order); then `OFFSET` rows skipped (at most 2,000, else `NUMBER_OUTSIDE_VALID_RANGE`
//!   "Maximum SOQL offset allowed is 2000": SOQL and SOSL Reference, "OFFSET"), then at most
//!   `LIMIT` rows. `SELECT COUNT()` counts the matching rows ("COUNT()": the result's `size`
//!   is the count, no records). The REST endpoint pages them (`nextRecordsUrl`, see `rest`).
//! * `ORDER BY` refuses compound fields and Long Text Areas (`INVALID_FIELD` "field 'X' can not
//!   be sorted in a query call": "ORDER BY" lists long text areas among the unsupported types).
//! * Matching: `Id` and Id-valued fields compare 15- and 18-character Ids alike; text compares
//!   case-insensitively (as SOQL does); a literal must fit the field's type (quoted for text,
//!   unquoted for numbers, booleans, dates and datetimes).
//! * Errors are [`QueryError`]s carrying Salesforce's error code and message, the message
//!   located like Salesforce's (`\n<line>\n   ^\nERROR at Row:1:Column:4\n<text>`).

mod cond;
mod dates;
mod filter;
mod lex;
mod parse;
#[cfg(test)]
mod tests;

use std::collections::HashSet;

use serde_json::{Map, Value as Json};

use self::cond::Cond;
use self::filter::{Filter, Kind, Literal, Op, OrderKey, check_filter, field_kind};
use self::lex::{located, tokenize};
use self::parse::{Parser, Raw};
pub use super::error::QueryError;
use super::fieldmeta::{CompoundShape, ObjectMeta, Source};
use super::ids;
use super::org::{Org, Tx};

/// `OFFSET`'s maximum (SOQL and SOSL Reference, "OFFSET").
pub const MAX_OFFSET: usize = 2_000;

/// A parsed query, resolved against the org's current schemas.
#[derive(Debug, Clone)]
pub struct Query {
    /// Object API name.
    pub object: String,
    /// Selected fields (API spelling), in order; empty for `COUNT()`.
    pub fields: Vec<String>,
    /// `SELECT COUNT()`.
    pub count: bool,
    filter: Option<Cond<Filter>>,
    order: Vec<OrderKey>,
    /// `LIMIT`.
    pub limit: Option<usize>,
    /// `OFFSET` (0 when absent).
    pub offset: Option<usize>,
    /// Also the deleted records still in the recycle bin (`queryAll`).
    pub all_rows: bool,
}

/// True for a field `ORDER BY` refuses: a compound, or a Long Text Area.
fn unsortable(meta: &ObjectMeta, api: &str) -> bool {
    meta.field(api).is_some_and(|f| {
        // Contact `Name` sorts as its text; an address or a location does not sort.
        let compound =
            matches!(f.source, Source::Compound(ref shape) if *shape != CompoundShape::PersonName);
        compound || (f.ty == "textarea" && f.length > 255)
    })
}

impl Query {
    /// Parses `text` and resolves its object and fields against `org`; relative date literals
    /// (`TODAY`) are resolved now.
    pub fn parse(text: &str, org: &Org) -> Result<Query, QueryError> {
        Query::parse_at(text, org, super::util::now_ms())
    }

    /// [`Query::parse`] with relative date literals resolved at `now` (epoch ms).
    pub(crate) fn parse_at(text: &str, org: &Org, now: i64) -> Result<Query, QueryError> {
        let mut p = Parser {
            text,
            toks: tokenize(text)?,
            at: 0,
            now,
        };
        let Raw {
            fields: raw_fields,
            object: (raw_object, object_pos),
            filter: raw_filter,
            order: raw_order,
            limit,
            offset,
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
        let count = raw_fields.is_none();
        let mut fields = Vec::new();
        let mut seen = HashSet::new();
        for (name, pos) in raw_fields.unwrap_or_default() {
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
        let filter = raw_filter
            .map(|cond| {
                cond.try_map(&mut |raw| {
                    let (name, pos) = raw.field;
                    let (api, kind) =
                        field_kind(&meta, &name).ok_or_else(|| no_such(&name, pos))?;
                    check_filter(text, &api, kind, raw.op, pos, &raw.values)?;
                    Ok(Filter {
                        field: api,
                        kind,
                        op: raw.op,
                        values: raw.values.into_iter().map(|(l, _)| l).collect(),
                    })
                })
            })
            .transpose()?;
        let mut order = Vec::new();
        for raw in raw_order {
            let (name, pos) = raw.field;
            let (api, kind) = field_kind(&meta, &name).ok_or_else(|| no_such(&name, pos))?;
            if unsortable(&meta, &api) {
                return Err(QueryError::InvalidField(located(
                    text,
                    pos,
                    &format!("field '{api}' can not be sorted in a query call"),
                )));
            }
            order.push(OrderKey {
                field: api,
                kind,
                descending: raw.descending,
                nulls_last: raw.nulls_last,
            });
        }
        if let Some((n, pos)) = offset {
            if n > MAX_OFFSET {
                return Err(QueryError::OutOfRange(located(
                    text,
                    pos,
                    &format!("Maximum SOQL offset allowed is {MAX_OFFSET}"),
                )));
            }
        }
        Ok(Query {
            object,
            fields,
            count,
            filter,
            order,
            limit,
            offset: offset.map(|(n, _)| n),
            all_rows: false,
        })
    }

    /// The first selected compound field (`BillingAddress`), if any.
    pub(crate) fn compound_selected(&self, org: &Org) -> Option<String> {
        let meta = org.meta(&self.object)?;
        self.fields
            .iter()
            .find(|f| {
                meta.field(f)
                    .is_some_and(|m| matches!(m.source, Source::Compound(_)))
                    && field_kind(&meta, f).is_some_and(|(_, k)| k == Kind::Compound)
            })
            .cloned()
    }

    /// The matching records (all fields, epoch-ms values), as `tx` sees the org: ordered,
    /// `OFFSET` skipped, `LIMIT` applied. A filter on `Id` or on an External Id field is answered
    /// by lookups (the External Id index), not by a scan.
    pub fn run(&self, org: &Org, tx: Option<&Tx>) -> Vec<Map<String, Json>> {
        let rows = match self.lookup(org, tx) {
            Some(rows) => rows,
            None => org.records(tx, &self.object, self.all_rows),
        };
        let Some(meta) = org.meta(&self.object) else {
            return Vec::new();
        };
        let flagged: Vec<(&Map<String, Json>, bool)> = rows.iter().map(|r| (r, false)).collect();
        self.select_rows(&meta, flagged)
            .into_iter()
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// The matching committed records by reference (each with its deleted flag), ordered,
    /// `OFFSET` skipped, `LIMIT` applied: what a Bulk API query job reads, without copies.
    pub(crate) fn run_committed<'o>(&self, org: &'o Org) -> Vec<(&'o Map<String, Json>, bool)> {
        let Some(meta) = org.meta(&self.object) else {
            return Vec::new();
        };
        self.select_rows(&meta, org.committed_records(&self.object, self.all_rows))
    }

    /// Filters, orders (a stable sort: ties keep Id order), skips and limits `rows`.
    fn select_rows<'r>(
        &self,
        meta: &ObjectMeta,
        rows: Vec<(&'r Map<String, Json>, bool)>,
    ) -> Vec<(&'r Map<String, Json>, bool)> {
        let mut rows: Vec<(&Map<String, Json>, bool)> = rows
            .into_iter()
            .filter(|(rec, d)| {
                self.filter
                    .as_ref()
                    .is_none_or(|c| c.eval(&|f: &Filter| f.matches(meta, rec, *d)))
            })
            .collect();
        if !self.order.is_empty() {
            rows.sort_by(|a, b| {
                self.order
                    .iter()
                    .map(|k| k.compare(meta, *a, *b))
                    .find(|o| o.is_ne())
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
        }
        rows.into_iter()
            .skip(self.offset.unwrap_or(0))
            .take(self.limit.unwrap_or(usize::MAX))
            .collect()
    }

    /// The candidate rows of the first filter that lookups can answer (one every matching row
    /// satisfies: a top-level conjunct), in Id order.
    fn lookup(&self, org: &Org, tx: Option<&Tx>) -> Option<Vec<Map<String, Json>>> {
        let filter = self.filter.as_ref()?.conjuncts().into_iter().find(|f| {
            matches!(f.op, Op::Eq | Op::In)
                && f.values.iter().all(|v| matches!(v, Literal::Str(_)))
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
                .filter(|rec| self.all_rows || rec.get("IsDeleted") != Some(&Json::Bool(true)))
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
