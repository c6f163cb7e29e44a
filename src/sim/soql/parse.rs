//! The SOQL grammar the simulated org reads, before names are resolved:
//! `SELECT (f1, f2, … | COUNT()) FROM Object [WHERE expr]
//! [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], …] [LIMIT n] [OFFSET n]` (clauses in this order,
//! as the SOQL and SOSL Reference's "SOQL SELECT Syntax" gives them), where
//! `expr` is `term [AND term]…` or `term [OR term]…`, `term` is `NOT term`, `( expr )` or a
//! field expression: `field <op> literal` (`=`, `!=`, `<>`, `<`, `<=`, `>`, `>=`, `LIKE`) or
//! `field [NOT] IN (literal, …)`. "Parentheses are required whenever you mix the operators"
//! (SOQL and SOSL Reference, "Logical Operators"): `a AND b OR c` stops at the `OR`, and a bare
//! `NOT` term takes no `AND` or `OR` beside it (`NOT a AND b` stops at the `AND`, `a AND NOT b`
//! at the `NOT`; `a AND (NOT b)` is the reference's own example).
//!
//! Contract: [`Parser::query`] returns the [`Raw`] query or a `MALFORMED_QUERY` located at the
//! first token that does not fit (`unexpected token: '…'`).

use super::cond::Cond;
use super::dates::{self, Arity};
use super::filter::{Literal, Op};
use super::lex::{Tok, located};
use crate::salesforce::sftime;
use crate::sim::error::QueryError;

/// A name or literal as written, and its position in the text.
pub(super) type Located<T> = (T, usize);

/// One `WHERE` condition as written.
pub(super) struct RawFilter {
    pub field: Located<String>,
    pub op: Op,
    pub values: Vec<Located<Literal>>,
}

/// One `ORDER BY` key as written.
pub(super) struct RawOrder {
    pub field: Located<String>,
    pub descending: bool,
    pub nulls_last: bool,
}

/// A query as written, its names not yet resolved.
pub(super) struct Raw {
    /// `None` for `SELECT COUNT()`.
    pub fields: Option<Vec<Located<String>>>,
    pub object: Located<String>,
    pub filter: Option<Cond<RawFilter>>,
    pub order: Vec<RawOrder>,
    pub limit: Option<usize>,
    pub offset: Option<Located<usize>>,
}

pub(super) struct Parser<'t> {
    pub text: &'t str,
    pub toks: Vec<(Tok, usize)>,
    pub at: usize,
    /// The instant relative date literals (`TODAY`) are resolved at, epoch ms.
    pub now: i64,
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.at.min(self.toks.len() - 1)].0
    }

    fn peek_at(&self, ahead: usize) -> &Tok {
        &self.toks[(self.at + ahead).min(self.toks.len() - 1)].0
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
            // "Date Formats and Date Literals": `YYYY-MM-DD` is a date, `YYYY-MM-DDThh:mm:ss`
            // with `Z` or `+hh:mm`/`-hh:mm` (and optional fraction) a dateTime.
            Tok::Temporal(t) if t.len() == 10 => {
                Literal::Date(sftime::parse_date(t).map_err(|_| self.unexpected())?)
            }
            Tok::Temporal(t) => {
                let has_zone = t.ends_with('Z') || t[10..].contains(['+', '-']);
                if !has_zone {
                    return Err(self.unexpected());
                }
                Literal::DateTime(sftime::parse_datetime(t).map_err(|_| self.unexpected())?)
            }
            Tok::Word(w) if dates::arity(w).is_some() => return self.date_literal(),
            t if t.is_kw("null") => Literal::Null,
            t if t.is_kw("true") => Literal::Bool(true),
            t if t.is_kw("false") => Literal::Bool(false),
            _ => return Err(self.unexpected()),
        };
        self.at += 1;
        Ok((lit, p))
    }

    /// A relative date literal (`TODAY`, `LAST_N_DAYS:30`) as its range at `now`.
    fn date_literal(&mut self) -> Result<(Literal, usize), QueryError> {
        let (word, p) = self.word()?;
        let mut n = 0;
        if dates::arity(&word) == Some(Arity::WithN) {
            if *self.peek() != Tok::Other(':') {
                return Err(self.unexpected());
            }
            self.next();
            n = i64::try_from(self.number()?.0).map_err(|_| self.unexpected())?;
        }
        let (start, end) = dates::range(&word, n, self.now).ok_or_else(|| self.unexpected())?;
        Ok((Literal::Range(start, end), p))
    }

    fn number(&mut self) -> Result<Located<usize>, QueryError> {
        let p = self.pos();
        match self.peek() {
            Tok::Num(n) => match n.parse::<usize>() {
                Ok(n) => {
                    self.next();
                    Ok((n, p))
                }
                Err(_) => Err(self.unexpected()),
            },
            _ => Err(self.unexpected()),
        }
    }

    /// The selected fields, or `None` for `COUNT()`.
    fn select_list(&mut self) -> Result<Option<Vec<Located<String>>>, QueryError> {
        if self.peek().is_kw("COUNT") && *self.peek_at(1) == Tok::Open {
            self.at += 1;
            self.next();
            if *self.peek() != Tok::Close {
                // `COUNT(field)` is an aggregate the simulator does not serve.
                return Err(self.unexpected());
            }
            self.next();
            return Ok(None);
        }
        let mut fields = vec![self.word()?];
        while *self.peek() == Tok::Comma {
            self.next();
            fields.push(self.word()?);
        }
        Ok(Some(fields))
    }

    fn condition(&mut self) -> Result<RawFilter, QueryError> {
        let field = self.word()?;
        let mut values = Vec::new();
        let op = match self.next() {
            (Tok::Cmp(sym), _) => {
                values.push(self.literal()?);
                Op::from_symbol(sym)
            }
            (t, _) if t.is_kw("IN") || (t.is_kw("NOT") && self.peek().is_kw("IN")) => {
                let negated = t.is_kw("NOT");
                if negated {
                    self.next();
                }
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
                if negated { Op::NotIn } else { Op::In }
            }
            (t, _) if t.is_kw("LIKE") => {
                values.push(self.literal()?);
                Op::Like
            }
            _ => {
                self.at -= 1;
                return Err(self.unexpected());
            }
        };
        Ok(RawFilter { field, op, values })
    }

    /// `term [AND term]…` or `term [OR term]…`: one operator per level.
    fn expr(&mut self) -> Result<Cond<RawFilter>, QueryError> {
        let (first, bare_not) = self.term()?;
        let op = if self.peek().is_kw("AND") {
            "AND"
        } else if self.peek().is_kw("OR") {
            "OR"
        } else {
            return Ok(first);
        };
        // A bare `NOT` beside `AND`/`OR` mixes the operators without parentheses.
        if bare_not {
            return Err(self.unexpected());
        }
        let mut terms = vec![first];
        while self.peek().is_kw(op) {
            self.next();
            if self.peek().is_kw("NOT") {
                return Err(self.unexpected());
            }
            terms.push(self.term()?.0);
        }
        // Another logical operator at this level: the query mixes them without parentheses.
        if self.peek().is_kw("AND") || self.peek().is_kw("OR") {
            return Err(self.unexpected());
        }
        Ok(if op == "AND" {
            Cond::And(terms)
        } else {
            Cond::Or(terms)
        })
    }

    /// `NOT term`, `( expr )` or a field expression; true with a bare `NOT` term.
    fn term(&mut self) -> Result<(Cond<RawFilter>, bool), QueryError> {
        if self.peek().is_kw("NOT") {
            self.next();
            return Ok((Cond::Not(Box::new(self.term()?.0)), true));
        }
        if *self.peek() == Tok::Open {
            self.next();
            let inner = self.expr()?;
            if *self.peek() != Tok::Close {
                return Err(self.unexpected());
            }
            self.next();
            return Ok((inner, false));
        }
        Ok((Cond::Leaf(self.condition()?), false))
    }

    fn order_by(&mut self) -> Result<Vec<RawOrder>, QueryError> {
        let mut keys = Vec::new();
        loop {
            let field = self.word()?;
            let mut descending = false;
            if self.peek().is_kw("ASC") {
                self.next();
            } else if self.peek().is_kw("DESC") {
                self.next();
                descending = true;
            }
            let mut nulls_last = false;
            if self.peek().is_kw("NULLS") {
                self.next();
                if self.peek().is_kw("LAST") {
                    nulls_last = true;
                } else if !self.peek().is_kw("FIRST") {
                    return Err(self.unexpected());
                }
                self.next();
            }
            keys.push(RawOrder {
                field,
                descending,
                nulls_last,
            });
            if *self.peek() != Tok::Comma {
                return Ok(keys);
            }
            self.next();
        }
    }

    /// The whole query, up to the end of the text.
    pub(super) fn query(&mut self) -> Result<Raw, QueryError> {
        self.keyword("SELECT")?;
        let fields = self.select_list()?;
        self.keyword("FROM")?;
        let object = self.word()?;
        let mut filter = None;
        if self.peek().is_kw("WHERE") {
            self.next();
            filter = Some(self.expr()?);
        }
        let mut order = Vec::new();
        if self.peek().is_kw("ORDER") {
            self.next();
            self.keyword("BY")?;
            order = self.order_by()?;
        }
        let mut limit = None;
        if self.peek().is_kw("LIMIT") {
            self.next();
            limit = Some(self.number()?.0);
        }
        let mut offset = None;
        if self.peek().is_kw("OFFSET") {
            self.next();
            offset = Some(self.number()?);
        }
        if *self.peek() != Tok::End {
            return Err(self.unexpected());
        }
        Ok(Raw {
            fields,
            object,
            filter,
            order,
            limit,
            offset,
        })
    }
}
