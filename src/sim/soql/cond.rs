//! A `WHERE` clause as a tree of field expressions joined by `AND`, `OR` and `NOT`, and the
//! `LIKE` pattern match.
//!
//! Contract (SOQL and SOSL Reference, "Logical Operators", "Condition Expression Syntax (WHERE
//! Clause)", "Comparison Operators"):
//! * [`Cond`] is generic over its leaves: the parser builds it of conditions as written, the
//!   query resolves each leaf against the object ([`Cond::try_map`]) and evaluates the tree
//!   ([`Cond::eval`]). `NOT x` is true when `x` is false (two-valued: a null field makes a
//!   comparison false, so `NOT Name = 'x'` matches a null `Name`).
//! * [`Cond::conjuncts`]: the leaves every matching row must satisfy (the whole tree when it is a
//!   leaf, the leaf children of a top-level `AND`): what an index lookup may answer.
//! * [`like`]: `%` matches any run of characters, `_` exactly one, `\%` and `\_` themselves;
//!   case-insensitive ("The LIKE operator performs a case-insensitive match, unlike the
//!   case-sensitive matching in SQL").

/// A boolean combination of leaves.
#[derive(Debug, Clone)]
pub(super) enum Cond<L> {
    Leaf(L),
    And(Vec<Cond<L>>),
    Or(Vec<Cond<L>>),
    Not(Box<Cond<L>>),
}

impl<L> Cond<L> {
    /// The same tree with each leaf mapped by `f`; the first error stops it.
    pub(super) fn try_map<M, E>(self, f: &mut impl FnMut(L) -> Result<M, E>) -> Result<Cond<M>, E> {
        Ok(match self {
            Cond::Leaf(l) => Cond::Leaf(f(l)?),
            Cond::And(v) => Cond::And(
                v.into_iter()
                    .map(|c| c.try_map(f))
                    .collect::<Result<_, _>>()?,
            ),
            Cond::Or(v) => Cond::Or(
                v.into_iter()
                    .map(|c| c.try_map(f))
                    .collect::<Result<_, _>>()?,
            ),
            Cond::Not(c) => Cond::Not(Box::new(c.try_map(f)?)),
        })
    }

    /// The tree's truth when each leaf's is `leaf(l)`.
    pub(super) fn eval(&self, leaf: &impl Fn(&L) -> bool) -> bool {
        match self {
            Cond::Leaf(l) => leaf(l),
            Cond::And(v) => v.iter().all(|c| c.eval(leaf)),
            Cond::Or(v) => v.iter().any(|c| c.eval(leaf)),
            Cond::Not(c) => !c.eval(leaf),
        }
    }

    /// The leaves that every row the tree matches satisfies.
    pub(super) fn conjuncts(&self) -> Vec<&L> {
        match self {
            Cond::Leaf(l) => vec![l],
            Cond::And(v) => v
                .iter()
                .filter_map(|c| match c {
                    Cond::Leaf(l) => Some(l),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Every leaf, depth first.
    #[cfg(test)]
    pub(super) fn leaves(&self) -> Vec<&L> {
        match self {
            Cond::Leaf(l) => vec![l],
            Cond::And(v) | Cond::Or(v) => v.iter().flat_map(Cond::leaves).collect(),
            Cond::Not(c) => c.leaves(),
        }
    }
}

/// One element of a `LIKE` pattern.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pat {
    Any,
    One,
    Char(char),
}

fn pattern(text: &str) -> Vec<Pat> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(match c {
            '%' => Pat::Any,
            '_' => Pat::One,
            '\\' if matches!(chars.peek(), Some('%' | '_')) => Pat::Char(chars.next().unwrap_or(c)),
            c => Pat::Char(c),
        });
    }
    out
}

/// True when `value` matches the `LIKE` pattern `pat` (case-insensitive).
pub(super) fn like(value: &str, pat: &str) -> bool {
    let v: Vec<char> = value.to_lowercase().chars().collect();
    let p: Vec<Pat> = pattern(&pat.to_lowercase());
    // Two pointers with backtracking to the last `%`: linear in practice, never exponential.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < v.len() {
        match p.get(j) {
            Some(Pat::One) => (i, j) = (i + 1, j + 1),
            Some(Pat::Char(c)) if *c == v[i] => (i, j) = (i + 1, j + 1),
            Some(Pat::Any) => {
                star = Some((j, i));
                j += 1;
            }
            _ => match star {
                Some((sj, si)) => {
                    star = Some((sj, si + 1));
                    (i, j) = (si + 1, sj + 1);
                }
                None => return false,
            },
        }
    }
    p[j..].iter().all(|x| *x == Pat::Any)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_matches_as_soql_does() {
        for (v, p, hit) in [
            ("Tree One", "Tree%", true),
            ("tree one", "TREE%", true),
            ("Tree", "Tree%", true),
            ("A Tree", "Tree%", false),
            ("A Tree", "%tree", true),
            ("Batch One", "B_tch%", true),
            ("Bach One", "B_tch%", false),
            ("50% off", "50\\%%", true),
            ("50 off", "50\\%%", false),
            ("a_b", "a\\_b", true),
            ("axb", "a\\_b", false),
            ("abcabd", "%ab_", true),
            ("", "%", true),
            ("", "_", false),
            ("x", "", false),
        ] {
            assert_eq!(like(v, p), hit, "{v:?} LIKE {p:?}");
        }
    }

    #[test]
    fn not_and_or_evaluate_and_conjuncts_are_only_top_level_ands() {
        let t: Cond<bool> = Cond::And(vec![
            Cond::Leaf(true),
            Cond::Or(vec![
                Cond::Leaf(false),
                Cond::Not(Box::new(Cond::Leaf(false))),
            ]),
        ]);
        assert!(t.eval(&|b| *b));
        assert_eq!(t.conjuncts(), vec![&true]);
        let or: Cond<bool> = Cond::Or(vec![Cond::Leaf(true), Cond::Leaf(false)]);
        assert!(or.conjuncts().is_empty());
        assert!(!Cond::Not(Box::new(or)).eval(&|b| *b));
    }
}
