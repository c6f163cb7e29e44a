//! `${NAME}` interpolation as data: a deserializer that wraps the YAML parser and replaces
//! `${NAME}` inside string scalars after parsing (issue 19, item 10).
//!
//! Contract:
//! * The YAML is parsed first; an environment value is only ever the text of the one scalar that
//!   references it. A value cannot end the scalar, start a comment (`#`), add keys (newlines),
//!   or change YAML syntax (leading `"`, `*`, `%`, `[`): it is a plain string.
//! * `${NAME}` is replaced by `env(NAME)`, `$${` is a literal `${`, a lone `$` stays; an unset
//!   variable or an unterminated `${` is an error naming the variable.
//! * A field of a typed value (bool, integer, float) may be written `${NAME}`: after the
//!   substitution the text is parsed as that type (`true`/`false`, decimal numbers), so
//!   `port: ${PORT}` works as it did when the file's text was substituted.
//! * When a value from the environment is refused, the error names the variable and what was
//!   expected, never the value (it may be a secret). The key path and line come from the
//!   caller (`serde_path_to_error`, the YAML parser's position).

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

/// Resolves `${NAME}`.
pub(super) type Lookup<'e> = &'e dyn Fn(&str) -> Option<String>;

/// A scalar after interpolation: its text and the variables it used.
#[derive(Debug, PartialEq)]
pub(super) struct Expanded {
    pub(super) text: String,
    pub(super) names: Vec<String>,
}

/// Replaces `${NAME}` in one scalar; `None` when it has no `${` or `$${` (the scalar is kept
/// as it is, borrowed). The error is the message to report.
pub(super) fn expand(s: &str, env: Lookup<'_>) -> Result<Option<Expanded>, String> {
    if !s.contains("${") {
        return Ok(None);
    }
    let mut text = String::with_capacity(s.len());
    let mut names = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        text.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            text.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail
                .find('}')
                .ok_or("unterminated `${` (write `$${` for a literal `${`)")?;
            let name = &tail[..end];
            let value = env(name).ok_or_else(|| {
                format!("environment variable `{name}` is not set (referenced as ${{{name}}})")
            })?;
            text.push_str(&value);
            names.push(name.to_owned());
            rest = &tail[end + 1..];
        } else {
            text.push('$');
            rest = &after[1..];
        }
    }
    text.push_str(rest);
    Ok(Some(Expanded { text, names }))
}

/// What the deserialized type asked for: a typed scalar is parsed from the substituted text.
#[derive(Clone, Copy)]
enum Kind {
    Any,
    Bool,
    Signed,
    Unsigned,
    Float,
}

/// A deserializer that interpolates every string scalar `de` yields.
pub(super) struct Interpolating<'e, D> {
    de: D,
    env: Lookup<'e>,
}

impl<'e, D> Interpolating<'e, D> {
    pub(super) fn new(de: D, env: Lookup<'e>) -> Self {
        Interpolating { de, env }
    }
}

/// Wraps a visitor (and, through it, every nested deserializer).
struct Visit<'e, V> {
    visitor: V,
    env: Lookup<'e>,
    kind: Kind,
}

/// Forwards `deserialize_*` methods whose visitor only needs wrapping.
macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*) => $kind:ident via $inner:ident;)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            let visit = Visit { visitor, env: self.env, kind: Kind::$kind };
            self.de.$inner($($arg,)* visit)
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Interpolating<'_, D> {
    type Error = D::Error;

    // A typed scalar asks the parser for any value, so `${NAME}` (a string to YAML) reaches
    // `Visit`, which parses the substituted text as the type.
    forward! {
        deserialize_any() => Any via deserialize_any;
        deserialize_bool() => Bool via deserialize_any;
        deserialize_i8() => Signed via deserialize_any;
        deserialize_i16() => Signed via deserialize_any;
        deserialize_i32() => Signed via deserialize_any;
        deserialize_i64() => Signed via deserialize_any;
        deserialize_i128() => Signed via deserialize_any;
        deserialize_u8() => Unsigned via deserialize_any;
        deserialize_u16() => Unsigned via deserialize_any;
        deserialize_u32() => Unsigned via deserialize_any;
        deserialize_u64() => Unsigned via deserialize_any;
        deserialize_u128() => Unsigned via deserialize_any;
        deserialize_f32() => Float via deserialize_any;
        deserialize_f64() => Float via deserialize_any;
        deserialize_char() => Any via deserialize_char;
        deserialize_str() => Any via deserialize_str;
        deserialize_string() => Any via deserialize_string;
        deserialize_bytes() => Any via deserialize_bytes;
        deserialize_byte_buf() => Any via deserialize_byte_buf;
        deserialize_option() => Any via deserialize_option;
        deserialize_unit() => Any via deserialize_unit;
        deserialize_unit_struct(name: &'static str) => Any via deserialize_unit_struct;
        deserialize_newtype_struct(name: &'static str) => Any via deserialize_newtype_struct;
        deserialize_seq() => Any via deserialize_seq;
        deserialize_tuple(len: usize) => Any via deserialize_tuple;
        deserialize_tuple_struct(name: &'static str, len: usize) => Any via deserialize_tuple_struct;
        deserialize_map() => Any via deserialize_map;
        deserialize_struct(name: &'static str, fields: &'static [&'static str]) => Any via deserialize_struct;
        deserialize_enum(name: &'static str, variants: &'static [&'static str]) => Any via deserialize_enum;
        deserialize_identifier() => Any via deserialize_identifier;
        deserialize_ignored_any() => Any via deserialize_ignored_any;
    }

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

/// Forwards `visit_*` methods that carry no string.
macro_rules! pass {
    ($($method:ident($ty:ty);)*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.visitor.$method(v)
        }
    )*};
}

impl<'e, V> Visit<'e, V> {
    fn wrap<D>(&self, de: D) -> Interpolating<'e, D> {
        Interpolating::new(de, self.env)
    }
}

impl<'de, V: Visitor<'de>> Visit<'_, V> {
    /// The substituted text, as the type asked for; a refusal names the variables, not the value.
    fn expanded<E: de::Error>(self, expanded: Expanded) -> Result<V::Value, E> {
        let expected = Expecting(&|f| self.visitor.expecting(f)).to_string();
        let text = expanded.text;
        let typed = match self.kind {
            Kind::Any => self.visitor.visit_string(text),
            Kind::Bool => match text.as_str() {
                "true" | "True" | "TRUE" => self.visitor.visit_bool(true),
                "false" | "False" | "FALSE" => self.visitor.visit_bool(false),
                _ => Err(E::custom("")),
            },
            Kind::Signed => text
                .parse::<i64>()
                .map_err(|_| E::custom(""))
                .and_then(|n| self.visitor.visit_i64(n)),
            Kind::Unsigned => text
                .parse::<u64>()
                .map_err(|_| E::custom(""))
                .and_then(|n| self.visitor.visit_u64(n)),
            Kind::Float => text
                .parse::<f64>()
                .map_err(|_| E::custom(""))
                .and_then(|n| self.visitor.visit_f64(n)),
        };
        typed.map_err(|_| {
            let names: Vec<String> = expanded.names.iter().map(|n| format!("${{{n}}}")).collect();
            let source = match names.as_slice() {
                [] => "the value".to_owned(),
                _ => format!("the value of {}", names.join(", ")),
            };
            E::custom(format!(
                "{source} is not valid here: expected {expected} (the value is not shown)"
            ))
        })
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Visit<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(f)
    }

    pass! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_i128(i128);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_u128(u128);
        visit_f32(f32);
        visit_f64(f64);
        visit_char(char);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        match expand(v, self.env).map_err(E::custom)? {
            None => self.visitor.visit_str(v),
            Some(expanded) => self.expanded(expanded),
        }
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<V::Value, E> {
        match expand(v, self.env).map_err(E::custom)? {
            None => self.visitor.visit_borrowed_str(v),
            Some(expanded) => self.expanded(expanded),
        }
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<V::Value, E> {
        match expand(&v, self.env).map_err(E::custom)? {
            None => self.visitor.visit_string(v),
            Some(expanded) => self.expanded(expanded),
        }
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.visitor.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.visitor.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<V::Value, D::Error> {
        let de = self.wrap(de);
        self.visitor.visit_some(de)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, de: D) -> Result<V::Value, D::Error> {
        let de = self.wrap(de);
        self.visitor.visit_newtype_struct(de)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let seq = self.wrap(seq);
        self.visitor.visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let map = self.wrap(map);
        self.visitor.visit_map(map)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let data = self.wrap(data);
        self.visitor.visit_enum(data)
    }
}

/// A visitor's `expecting`, as `Display`.
struct Expecting<'a>(&'a dyn Fn(&mut fmt::Formatter<'_>) -> fmt::Result);

impl fmt::Display for Expecting<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (self.0)(f)
    }
}

/// A seed whose deserializer interpolates.
struct Seed<'e, S> {
    seed: S,
    env: Lookup<'e>,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(Interpolating::new(de, self.env))
    }
}

impl<'e, D> Interpolating<'e, D> {
    fn seed<S>(&self, seed: S) -> Seed<'e, S> {
        Seed {
            seed,
            env: self.env,
        }
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Interpolating<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        let seed = self.seed(seed);
        self.de.next_element_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.de.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Interpolating<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let seed = self.seed(seed);
        self.de.next_key_seed(seed)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        let seed = self.seed(seed);
        self.de.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.de.size_hint()
    }
}

impl<'de, 'e, A: EnumAccess<'de>> EnumAccess<'de> for Interpolating<'e, A> {
    type Error = A::Error;
    type Variant = Interpolating<'e, A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let env = self.env;
        let seed = self.seed(seed);
        let (value, variant) = self.de.variant_seed(seed)?;
        Ok((value, Interpolating::new(variant, env)))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Interpolating<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.de.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        let seed = self.seed(seed);
        self.de.newtype_variant_seed(seed)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let visit = Visit {
            visitor,
            env: self.env,
            kind: Kind::Any,
        };
        self.de.tuple_variant(len, visit)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let visit = Visit {
            visitor,
            env: self.env,
            kind: Kind::Any,
        };
        self.de.struct_variant(fields, visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_lone_dollar_and_unterminated() {
        let env = |n: &str| (n == "Y").then(|| "y".to_owned());
        let out = expand("$${X} $5 ${Y}", &env).unwrap().unwrap();
        assert_eq!(out.text, "${X} $5 y");
        assert_eq!(out.names, ["Y"]);
        assert_eq!(expand("plain $5", &env), Ok(None));
        assert!(expand("${X", &env).unwrap_err().contains("unterminated"));
        assert!(expand("${Z}", &env).unwrap_err().contains("`Z` is not set"));
    }
}
