//! The org's Avro writer: one datum, an `apache_avro` [`Value`] in its schema's binary encoding.
//!
//! Contract: the bytes are exactly those `apache_avro::to_avro_datum` writes for a value that
//! matches its schema (a test holds the two to it), and a value that does not match is an error
//! naming the path of the field (`ChangeEventHeader.recordIds[0]`), as the validation pass of
//! `to_avro_datum` refuses it. The org encodes every event it commits, so unlike
//! `to_avro_datum` this resolves the schema's named types once per schema ([`Writer::new`]), not
//! on every call and twice, and walks a record's fields by position instead of building a lookup
//! map per record; the path of a mismatch is built only when one returns. Only [`Schema::Ref`]
//! needs the named types: `Address` names the type of `BillingAddress` and is referred to by
//! `ShippingAddress`.

use apache_avro::Schema;
use apache_avro::schema::Name;
use apache_avro::types::Value;

/// Writes datums of one schema.
#[derive(Debug, Clone)]
pub struct Writer {
    schema: Schema,
    /// The named types (records, enums, fixed) of the schema, by full name.
    named: Vec<(Name, Schema)>,
}

/// A value that does not match its schema: where, and why.
struct Mismatch {
    /// Built as the error returns through the fields and items it is in.
    path: String,
    reason: String,
}

impl Mismatch {
    fn new(reason: String) -> Mismatch {
        Mismatch {
            path: String::new(),
            reason,
        }
    }

    /// The same mismatch, inside `segment` (`name` or `[index]`).
    fn within(mut self, segment: &str) -> Mismatch {
        if !self.path.is_empty() && !self.path.starts_with('[') {
            self.path.insert(0, '.');
        }
        self.path.insert_str(0, segment);
        self
    }
}

impl Writer {
    /// A writer of `schema`'s datums, its named types collected.
    pub fn new(schema: Schema) -> Writer {
        let mut named = Vec::new();
        collect(&schema, &mut named);
        Writer { schema, named }
    }

    /// The schema it writes.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Appends `value`'s encoding to `out`; on error `out` holds a partial datum.
    pub fn write(&self, value: &Value, out: &mut Vec<u8>) -> Result<(), String> {
        self.value(&self.schema, value, out, 0).map_err(|m| {
            if m.path.is_empty() {
                m.reason
            } else {
                format!("{}: {}", m.path, m.reason)
            }
        })
    }

    fn resolve<'s>(&'s self, schema: &'s Schema) -> Result<&'s Schema, Mismatch> {
        match schema {
            Schema::Ref { name } => self
                .named
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| s)
                .ok_or_else(|| {
                    Mismatch::new(format!("unknown named type {}", name.fullname(None)))
                }),
            s => Ok(s),
        }
    }

    fn value(
        &self,
        schema: &Schema,
        value: &Value,
        out: &mut Vec<u8>,
        depth: u32,
    ) -> Result<(), Mismatch> {
        if depth > 64 {
            return Err(Mismatch::new("nested more than 64 levels deep".into()));
        }
        let schema = self.resolve(schema)?;
        match (schema, value) {
            (Schema::Null, Value::Null) => {}
            (Schema::Boolean, Value::Boolean(b)) => out.push(u8::from(*b)),
            (Schema::Int, Value::Int(i))
            | (Schema::Date, Value::Date(i))
            | (Schema::TimeMillis, Value::TimeMillis(i)) => long(out, i64::from(*i)),
            (Schema::Long, Value::Long(i))
            | (Schema::TimeMicros, Value::TimeMicros(i))
            | (Schema::TimestampMillis, Value::TimestampMillis(i))
            | (Schema::TimestampMicros, Value::TimestampMicros(i))
            | (Schema::TimestampNanos, Value::TimestampNanos(i))
            | (Schema::LocalTimestampMillis, Value::LocalTimestampMillis(i))
            | (Schema::LocalTimestampMicros, Value::LocalTimestampMicros(i))
            | (Schema::LocalTimestampNanos, Value::LocalTimestampNanos(i)) => long(out, *i),
            (Schema::Float, Value::Float(x)) => out.extend_from_slice(&x.to_le_bytes()),
            (Schema::Double, Value::Double(x)) => out.extend_from_slice(&x.to_le_bytes()),
            (Schema::String, Value::String(s)) => bytes(out, s.as_bytes()),
            (Schema::Bytes, Value::Bytes(b)) => bytes(out, b),
            (Schema::Fixed(f), Value::Fixed(n, b)) if *n == f.size && b.len() == f.size => {
                out.extend_from_slice(b);
            }
            (Schema::Enum(e), Value::Enum(i, symbol)) => match e.symbols.get(*i as usize) {
                Some(s) if s == symbol => long(out, i64::from(*i)),
                _ => {
                    return Err(Mismatch::new(format!(
                        "{symbol:?} (index {i}) is not a symbol of the enum"
                    )));
                }
            },
            (Schema::Union(u), Value::Union(i, inner)) => {
                let Some(variant) = u.variants().get(*i as usize) else {
                    return Err(Mismatch::new(format!("union branch {i} does not exist")));
                };
                long(out, i64::from(*i));
                self.value(variant, inner, out, depth + 1)?;
            }
            // One block of all the items, then the empty block that ends them.
            (Schema::Array(a), Value::Array(items)) => {
                if !items.is_empty() {
                    long(out, items.len() as i64);
                }
                for (k, item) in items.iter().enumerate() {
                    self.value(&a.items, item, out, depth + 1)
                        .map_err(|m| m.within(&format!("[{k}]")))?;
                }
                out.push(0);
            }
            (Schema::Map(m), Value::Map(entries)) => {
                if !entries.is_empty() {
                    long(out, entries.len() as i64);
                }
                for (key, item) in entries {
                    bytes(out, key.as_bytes());
                    self.value(&m.types, item, out, depth + 1)
                        .map_err(|m| m.within(&format!("[{key:?}]")))?;
                }
                out.push(0);
            }
            (Schema::Record(r), Value::Record(fields)) => {
                if fields.len() != r.fields.len() {
                    return Err(Mismatch::new(format!(
                        "record {} has {} fields, the value {}",
                        r.name.name,
                        r.fields.len(),
                        fields.len()
                    )));
                }
                for (k, field) in r.fields.iter().enumerate() {
                    // The value's fields come in schema order; any order is accepted.
                    let item = match fields.get(k) {
                        Some((name, v)) if *name == field.name => v,
                        _ => match fields.iter().find(|(name, _)| *name == field.name) {
                            Some((_, v)) => v,
                            None => {
                                return Err(Mismatch::new(format!(
                                    "field {} is missing",
                                    field.name
                                )));
                            }
                        },
                    };
                    self.value(&field.schema, item, out, depth + 1)
                        .map_err(|m| m.within(&field.name))?;
                }
            }
            (schema, value) => {
                return Err(Mismatch::new(format!(
                    "cannot write {value:?} as {}",
                    kind(schema)
                )));
            }
        }
        Ok(())
    }
}

fn collect(schema: &Schema, named: &mut Vec<(Name, Schema)>) {
    match schema {
        Schema::Record(r) => {
            named.push((r.name.clone(), schema.clone()));
            for f in &r.fields {
                collect(&f.schema, named);
            }
        }
        Schema::Enum(e) => named.push((e.name.clone(), schema.clone())),
        Schema::Fixed(f) => named.push((f.name.clone(), schema.clone())),
        Schema::Array(a) => collect(&a.items, named),
        Schema::Map(m) => collect(&m.types, named),
        Schema::Union(u) => u.variants().iter().for_each(|v| collect(v, named)),
        _ => {}
    }
}

fn kind(schema: &Schema) -> String {
    match schema {
        Schema::Record(r) => format!("record {}", r.name.name),
        Schema::Enum(e) => format!("enum {}", e.name.name),
        Schema::Union(_) => "a union".into(),
        s => format!("{s:?}").to_lowercase(),
    }
}

/// A zig-zag varint.
fn long(out: &mut Vec<u8>, v: i64) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    long(out, b.len() as i64);
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(schema: &str, value: Value) -> (Vec<u8>, Vec<u8>) {
        let schema = Schema::parse_str(schema).unwrap();
        let mut ours = Vec::new();
        Writer::new(schema.clone())
            .write(&value, &mut ours)
            .unwrap();
        (ours, apache_avro::to_avro_datum(&schema, value).unwrap())
    }

    #[test]
    fn writes_what_apache_avro_writes() {
        let schema = r#"{"type":"record","name":"R","namespace":"n","fields":[
            {"name":"a","type":"long"},{"name":"b","type":["null","string"]},
            {"name":"c","type":{"type":"array","items":"string"}},
            {"name":"d","type":{"type":"enum","name":"E","symbols":["X","Y"]}},
            {"name":"e","type":{"type":"record","name":"Addr","fields":[{"name":"s","type":["null","double"]}]}},
            {"name":"f","type":["null","Addr"]},{"name":"g","type":"boolean"},{"name":"h","type":"float"},
            {"name":"i","type":"int"},{"name":"j","type":{"type":"map","values":"long"}},
            {"name":"k","type":"bytes"}]}"#;
        let addr = |v: Option<f64>| {
            Value::Record(vec![(
                "s".into(),
                match v {
                    Some(v) => Value::Union(1, Box::new(Value::Double(v))),
                    None => Value::Union(0, Box::new(Value::Null)),
                },
            )])
        };
        for (a, strings) in [(0i64, vec![]), (-1, vec!["x"]), (i64::MAX, vec!["é", ""])] {
            let value = Value::Record(vec![
                ("a".into(), Value::Long(a)),
                (
                    "b".into(),
                    Value::Union(1, Box::new(Value::String("hi".into()))),
                ),
                (
                    "c".into(),
                    Value::Array(strings.iter().map(|s| Value::String((*s).into())).collect()),
                ),
                ("d".into(), Value::Enum(1, "Y".into())),
                ("e".into(), addr(Some(1.5))),
                ("f".into(), Value::Union(1, Box::new(addr(None)))),
                ("g".into(), Value::Boolean(true)),
                ("h".into(), Value::Float(-0.25)),
                ("i".into(), Value::Int(i32::MIN)),
                (
                    "j".into(),
                    Value::Map([("k".to_owned(), Value::Long(300))].into_iter().collect()),
                ),
                ("k".into(), Value::Bytes(vec![0, 255])),
            ]);
            let (ours, theirs) = both(schema, value);
            assert_eq!(ours, theirs, "a = {a}");
        }
    }

    #[test]
    fn a_mismatch_names_the_field() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[{"name":"h","type":{"type":"record","name":"H","fields":[
                {"name":"ids","type":{"type":"array","items":"string"}}]}}]}"#,
        )
        .unwrap();
        let value = Value::Record(vec![(
            "h".into(),
            Value::Record(vec![(
                "ids".into(),
                Value::Array(vec![Value::String("a".into()), Value::Long(1)]),
            )]),
        )]);
        let err = Writer::new(schema.clone())
            .write(&value, &mut Vec::new())
            .unwrap_err();
        assert!(
            err.starts_with("h.ids[1]: cannot write Long(1) as string"),
            "{err}"
        );
        assert!(
            !value.validate(&schema),
            "apache-avro refuses it too, so both writers refuse the same values"
        );
        let missing = Value::Record(vec![]);
        let err = Writer::new(schema.clone())
            .write(&missing, &mut Vec::new())
            .unwrap_err();
        assert!(err.contains("record R has 1 fields, the value 0"), "{err}");
        let bad_enum = Schema::parse_str(r#"{"type":"enum","name":"E","symbols":["A"]}"#).unwrap();
        let err = Writer::new(bad_enum.clone())
            .write(&Value::Enum(0, "B".into()), &mut Vec::new())
            .unwrap_err();
        assert!(err.contains("\"B\" (index 0) is not a symbol"), "{err}");
    }
}
