//! A schema-compiled Avro binary decoder that writes JSON text straight from the bytes.
//!
//! Why not `apache_avro::from_avro_datum`: it builds an intermediate `types::Value` (cloning every
//! field name and record name per event), and it reads a truncated string, boolean or union at
//! end of input as `null`, so a truncated payload can decode "successfully". Here the writer
//! schema is compiled once per schema id into a [`Program`] (named references resolved to record
//! indexes), every read is bounds-checked, block counts are checked against the bytes left, and
//! nesting depth is capped, so corrupt input is always an error and never a panic or a huge
//! allocation.

use std::collections::HashMap;

use apache_avro::schema::{Name, Namespace, RecordSchema, ResolvedSchema, Schema};
use base64::Engine as _;
use serde_json::Value;

use super::event::DecodeError;

/// Deepest nesting accepted while decoding (recursive schemas could otherwise exhaust the stack).
const MAX_DEPTH: u32 = 64;

/// A compiled schema node.
#[derive(Debug)]
pub(crate) enum Node {
    Null,
    Boolean,
    /// `int` and the int-based logical types (`date`, `time-millis`).
    Int,
    /// `long` and the long-based logical types (timestamps, `time-micros`).
    Long,
    Float,
    Double,
    /// `bytes`, `decimal` on bytes, `big-decimal`: base64.
    Bytes,
    String,
    /// `uuid` (a string on the wire).
    Uuid,
    /// `fixed`, `decimal` on fixed, `duration`: base64.
    Fixed(usize),
    Enum(Box<[String]>),
    Array(Box<Node>),
    Map(Box<Node>),
    Union(Box<[Node]>),
    /// Index into [`Program::records`].
    Record(usize),
}

impl Node {
    /// The record this node holds directly or as a union variant (`["null", record]`,
    /// `[string, record]`, `["null", string, record]`).
    pub(crate) fn record_variant(&self) -> Option<usize> {
        match self {
            Node::Record(i) => Some(*i),
            Node::Union(vs) => vs.iter().find_map(|v| match v {
                Node::Record(i) => Some(*i),
                _ => None,
            }),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub(crate) struct RecordNode {
    pub fields: Vec<FieldNode>,
}

#[derive(Debug)]
pub(crate) struct FieldNode {
    pub name: String,
    /// `"name":` as JSON text, written before the field's value.
    pub key: Box<[u8]>,
    pub node: Node,
}

/// All records of a schema (references resolved) and its root node.
#[derive(Debug)]
pub(crate) struct Program {
    pub records: Vec<RecordNode>,
    pub root: Node,
}

impl Program {
    pub(crate) fn compile(schema: &Schema) -> Result<Program, String> {
        let resolved = ResolvedSchema::try_from(schema).map_err(|e| e.to_string())?;
        let mut c = Compiler {
            names: resolved.get_names(),
            records: Vec::new(),
            by_name: HashMap::new(),
        };
        let root = c.node(schema, &None)?;
        Ok(Program {
            records: c.records,
            root,
        })
    }
}

struct Compiler<'a, 's> {
    names: &'a HashMap<Name, &'s Schema>,
    records: Vec<RecordNode>,
    by_name: HashMap<Name, usize>,
}

impl Compiler<'_, '_> {
    fn node(&mut self, s: &Schema, ns: &Namespace) -> Result<Node, String> {
        Ok(match s {
            Schema::Null => Node::Null,
            Schema::Boolean => Node::Boolean,
            Schema::Int | Schema::Date | Schema::TimeMillis => Node::Int,
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => Node::Long,
            Schema::Float => Node::Float,
            Schema::Double => Node::Double,
            Schema::Bytes | Schema::BigDecimal => Node::Bytes,
            Schema::String => Node::String,
            Schema::Uuid => Node::Uuid,
            Schema::Fixed(f) => Node::Fixed(f.size),
            Schema::Duration => Node::Fixed(12),
            Schema::Decimal(d) => self.node(&d.inner, ns)?,
            Schema::Enum(e) => Node::Enum(e.symbols.clone().into_boxed_slice()),
            Schema::Array(a) => Node::Array(Box::new(self.node(&a.items, ns)?)),
            Schema::Map(m) => Node::Map(Box::new(self.node(&m.types, ns)?)),
            Schema::Union(u) => Node::Union(
                u.variants()
                    .iter()
                    .map(|v| self.node(v, ns))
                    .collect::<Result<_, _>>()?,
            ),
            Schema::Record(r) => Node::Record(self.record(r, ns)?),
            Schema::Ref { name } => {
                let full = name.fully_qualified_name(ns);
                if let Some(&i) = self.by_name.get(&full) {
                    return Ok(Node::Record(i));
                }
                let target = *self.names.get(&full).ok_or_else(|| {
                    format!("unresolved type reference `{}`", full.fullname(None))
                })?;
                self.node(target, &full.namespace)?
            }
        })
    }

    fn record(&mut self, r: &RecordSchema, ns: &Namespace) -> Result<usize, String> {
        let full = r.name.fully_qualified_name(ns);
        if let Some(&i) = self.by_name.get(&full) {
            return Ok(i);
        }
        let idx = self.records.len();
        self.records.push(RecordNode { fields: Vec::new() });
        // Registered before the fields so that recursive references terminate.
        self.by_name.insert(full.clone(), idx);
        let fields = r
            .fields
            .iter()
            .map(|f| {
                let mut key = Vec::with_capacity(f.name.len() + 3);
                string(&mut key, &f.name);
                key.push(b':');
                Ok(FieldNode {
                    name: f.name.clone(),
                    key: key.into_boxed_slice(),
                    node: self.node(&f.schema, &full.namespace)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        self.records[idx].fields = fields;
        Ok(idx)
    }
}

/// A bounds-checked cursor over one Avro datum.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn err(&self, reason: impl Into<String>) -> DecodeError {
        DecodeError::Avro {
            offset: self.pos,
            reason: reason.into(),
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Every byte must belong to the datum: leftovers mean the payload does not match the schema.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(self.err(format!(
                "{} trailing bytes after the datum ({} bytes in payload)",
                self.remaining(),
                self.buf.len()
            )))
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "unexpected end of payload reading {what}: need {n} bytes, {} left",
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn long(&mut self) -> Result<i64, DecodeError> {
        // One byte: lengths, union branches, small numbers (most varints of an event).
        if let Some(&b) = self.buf.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            let b = i64::from(b);
            return Ok((b >> 1) ^ -(b & 1));
        }
        let mut acc: u64 = 0;
        let mut shift = 0u32;
        loop {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.err("unexpected end of payload inside a varint"));
            };
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(self.err("varint overflows 64 bits"));
            }
            acc |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(((acc >> 1) as i64) ^ -((acc & 1) as i64));
            }
            shift += 7;
        }
    }

    pub(crate) fn int(&mut self) -> Result<i32, DecodeError> {
        let start = self.pos;
        let v = self.long()?;
        i32::try_from(v).map_err(|_| DecodeError::Avro {
            offset: start,
            reason: format!("int value {v} out of 32-bit range"),
        })
    }

    /// A length prefix for `bytes`/`string`: non-negative and within the payload.
    fn len(&mut self, what: &str) -> Result<usize, DecodeError> {
        let start = self.pos;
        let n = self.long()?;
        if n < 0 {
            return Err(DecodeError::Avro {
                offset: start,
                reason: format!("negative {what} length {n}"),
            });
        }
        Ok(n as usize)
    }

    fn bytes(&mut self, what: &str) -> Result<&'a [u8], DecodeError> {
        let n = self.len(what)?;
        self.take(n, what)
    }

    pub(crate) fn str(&mut self) -> Result<&'a str, DecodeError> {
        let start = self.pos;
        let b = self.bytes("string")?;
        std::str::from_utf8(b).map_err(|e| DecodeError::Avro {
            offset: start,
            reason: format!("string is not UTF-8: {e}"),
        })
    }

    /// A string, appended to `out` as a JSON string. ASCII text (most of it) is checked for
    /// escapes and copied in one pass; other text is validated as UTF-8 once more.
    pub(crate) fn json_string(&mut self, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let start = self.pos;
        let b = self.bytes("string")?;
        // Without short-circuiting, so that the check runs over whole vectors of bytes.
        let (escape, ascii) = b.iter().fold((false, true), |(escape, ascii), &c| {
            (escape | escaped(c), ascii & c.is_ascii())
        });
        if ascii && !escape {
            quoted(out, b);
            return Ok(());
        }
        let s = std::str::from_utf8(b).map_err(|e| DecodeError::Avro {
            offset: start,
            reason: format!("string is not UTF-8: {e}"),
        })?;
        write_string(out, s, escape);
        Ok(())
    }

    /// An enum value: its symbol.
    pub(crate) fn symbol<'s>(&mut self, symbols: &'s [String]) -> Result<&'s str, DecodeError> {
        let start = self.pos;
        let i = self.int()?;
        branch(symbols, i.into(), start, "enum index", "symbols").map(String::as_str)
    }

    /// The item count of the next array/map block (0 = end). Negative counts carry a byte size.
    pub(crate) fn block(&mut self) -> Result<usize, DecodeError> {
        let start = self.pos;
        let n = self.long()?;
        let count = if n < 0 {
            self.long()?; // block size in bytes; not needed
            n.unsigned_abs()
        } else {
            n as u64
        };
        // Every item of every schema we decode occupies at least one byte, so a count larger
        // than what is left is corrupt (and would otherwise drive a huge reservation).
        if count > self.remaining() as u64 {
            return Err(DecodeError::Avro {
                offset: start,
                reason: format!(
                    "block of {count} items but only {} bytes left",
                    self.remaining()
                ),
            });
        }
        Ok(count as usize)
    }
}

/// Appends `b` as a base64 JSON string.
fn base64(out: &mut Vec<u8>, b: &[u8]) {
    let engine = &base64::engine::general_purpose::STANDARD;
    out.push(b'"');
    let start = out.len();
    out.resize(start + base64::encoded_len(b.len(), true).unwrap_or(0), 0);
    let written = engine
        .encode_slice(b, &mut out[start..])
        .expect("the buffer was sized for the encoding");
    out.truncate(start + written);
    out.push(b'"');
}

/// Appends a finite double in shortest round-trip form (as `serde_json` writes it), else `null`.
fn float(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Appends an integer.
pub(crate) fn integer(out: &mut Vec<u8>, v: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Whether serde_json escapes this byte in a string (it escapes these and nothing else).
fn escaped(b: u8) -> bool {
    (b < 0x20) | (b == b'"') | (b == b'\\')
}

/// Appends `s` as a JSON string, escaped exactly as `serde_json` escapes it.
pub(crate) fn string(out: &mut Vec<u8>, s: &str) {
    // Without short-circuiting, so that the check runs over whole vectors of bytes.
    let escape = s.bytes().fold(false, |acc, b| acc | escaped(b));
    write_string(out, s, escape);
}

/// Appends `s` as a JSON string; `escape`: it has a byte that [`escaped`] names.
fn write_string(out: &mut Vec<u8>, s: &str, escape: bool) {
    if escape {
        serde_json::to_writer(&mut *out, s).expect("writing a string to a Vec cannot fail");
    } else {
        quoted(out, s.as_bytes());
    }
}

/// Appends text that needs no escaping as a JSON string.
fn quoted(out: &mut Vec<u8>, text: &[u8]) {
    out.reserve(text.len() + 2);
    out.push(b'"');
    out.extend_from_slice(text);
    out.push(b'"');
}

impl Program {
    /// Writes one value of `node` as JSON text to `out`: unions flattened, longs as integers,
    /// bytes/fixed base64, non-finite floats `null`, enums as their symbol. With `sparse`, a
    /// record directly at this node keeps only the fields that carry a value, recursively (the
    /// envelope rule for the body and for compound fields); records inside arrays and maps keep
    /// every field. On error `out` holds a partial value: the caller discards it.
    pub(crate) fn write(
        &self,
        r: &mut Reader<'_>,
        node: &Node,
        depth: u32,
        sparse: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), DecodeError> {
        match node {
            Node::Null => out.extend_from_slice(b"null"),
            Node::Boolean => match r.take(1, "boolean")?[0] {
                0 => out.extend_from_slice(b"false"),
                1 => out.extend_from_slice(b"true"),
                b => {
                    r.pos -= 1;
                    return Err(r.err(format!("invalid boolean byte {b:#04x}")));
                }
            },
            Node::Int => integer(out, r.int()?),
            Node::Long => integer(out, r.long()?),
            Node::Float => {
                let b = r.take(4, "float")?;
                float(out, f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
            }
            Node::Double => {
                let b = r.take(8, "double")?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                float(out, f64::from_le_bytes(a));
            }
            Node::Bytes => base64(out, r.bytes("bytes")?),
            Node::String => r.json_string(out)?,
            Node::Uuid => {
                let b = r.bytes("uuid")?;
                match std::str::from_utf8(b) {
                    Ok(s) => string(out, s),
                    Err(_) => base64(out, b),
                }
            }
            Node::Fixed(n) => base64(out, r.take(*n, "fixed")?),
            Node::Enum(symbols) => string(out, r.symbol(symbols)?),
            Node::Union(variants) => {
                let start = r.pos;
                let i = r.long()?;
                let variant = branch(variants, i, start, "union branch", "branches")?;
                self.write(r, variant, depth, sparse, out)?;
            }
            Node::Array(item) => {
                let depth = self.deeper(r, depth)?;
                out.push(b'[');
                let mut first = true;
                loop {
                    let n = r.block()?;
                    if n == 0 {
                        break;
                    }
                    for _ in 0..n {
                        if !std::mem::take(&mut first) {
                            out.push(b',');
                        }
                        self.write(r, item, depth, false, out)?;
                    }
                }
                out.push(b']');
            }
            Node::Map(item) => {
                let depth = self.deeper(r, depth)?;
                out.push(b'{');
                let mut first = true;
                loop {
                    let n = r.block()?;
                    if n == 0 {
                        break;
                    }
                    for _ in 0..n {
                        if !std::mem::take(&mut first) {
                            out.push(b',');
                        }
                        string(out, r.str()?);
                        out.push(b':');
                        self.write(r, item, depth, false, out)?;
                    }
                }
                out.push(b'}');
            }
            Node::Record(i) => {
                let depth = self.deeper(r, depth)?;
                out.push(b'{');
                let mut first = true;
                for f in &self.records[*i].fields {
                    let mark = out.len();
                    if !first {
                        out.push(b',');
                    }
                    out.extend_from_slice(&f.key);
                    if sparse {
                        if self.write_present(r, &f.node, depth, out)? {
                            first = false;
                        } else {
                            out.truncate(mark);
                        }
                    } else {
                        self.write(r, &f.node, depth, false, out)?;
                        first = false;
                    }
                }
                out.push(b'}');
            }
        }
        Ok(())
    }

    /// The node a value of `node` takes: the union branch read from the datum; `None` when the
    /// value is null (the field carries no value).
    pub(crate) fn select<'n>(
        &self,
        r: &mut Reader<'_>,
        node: &'n Node,
    ) -> Result<Option<&'n Node>, DecodeError> {
        match node {
            Node::Null => Ok(None),
            Node::Union(variants) => {
                let start = r.pos;
                let i = r.long()?;
                match branch(variants, i, start, "union branch", "branches")? {
                    Node::Null => Ok(None),
                    v => Ok(Some(v)),
                }
            }
            n => Ok(Some(n)),
        }
    }

    /// Writes a field under the envelope rule; `false` (with a partial write the caller
    /// discards) when the field carries no value: its wire value is null, or it is a record none
    /// of whose fields carries one. A value that merely converts to JSON `null` (a non-finite
    /// double) is carried.
    pub(crate) fn write_present(
        &self,
        r: &mut Reader<'_>,
        node: &Node,
        depth: u32,
        out: &mut Vec<u8>,
    ) -> Result<bool, DecodeError> {
        let Some(node) = self.select(r, node)? else {
            return Ok(false);
        };
        let start = out.len();
        self.write(r, node, depth, true, out)?;
        Ok(!(matches!(node, Node::Record(_)) && out.len() == start + 2))
    }

    pub(crate) fn deeper(&self, r: &Reader<'_>, depth: u32) -> Result<u32, DecodeError> {
        if depth >= MAX_DEPTH {
            Err(r.err(format!("nesting deeper than {MAX_DEPTH} levels")))
        } else {
            Ok(depth + 1)
        }
    }

    /// Reads one value as a `serde_json` value (through [`Program::write`]; for the few places
    /// that need a value rather than text).
    pub(crate) fn value(
        &self,
        r: &mut Reader<'_>,
        node: &Node,
        depth: u32,
    ) -> Result<Value, DecodeError> {
        let mut out = Vec::new();
        self.write(r, node, depth, false, &mut out)?;
        Ok(serde_json::from_slice(&out).expect("the writer writes valid JSON"))
    }
}

/// The `i`th of `items` (an enum symbol or a union branch), or an error naming the offset.
fn branch<'a, T>(
    items: &'a [T],
    i: i64,
    offset: usize,
    what: &str,
    unit: &str,
) -> Result<&'a T, DecodeError> {
    usize::try_from(i)
        .ok()
        .and_then(|i| items.get(i))
        .ok_or_else(|| DecodeError::Avro {
            offset,
            reason: format!("{what} {i} out of range ({} {unit})", items.len()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value as Avro;

    fn program(json: &str) -> (Schema, Program) {
        let s = Schema::parse_str(json).unwrap();
        let p = Program::compile(&s).unwrap();
        (s, p)
    }

    fn decode(p: &Program, bytes: &[u8]) -> Result<Value, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = p.value(&mut r, &p.root, 0)?;
        r.finish()?;
        Ok(v)
    }

    #[test]
    fn primitives_and_logical_types() {
        let (s, p) = program(
            r#"{"type":"record","name":"R","fields":[
              {"name":"b","type":"boolean"},{"name":"i","type":"int"},{"name":"l","type":"long"},
              {"name":"f","type":"float"},{"name":"d","type":"double"},{"name":"nan","type":"double"},
              {"name":"by","type":"bytes"},{"name":"fx","type":{"type":"fixed","name":"F","size":3}},
              {"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}},
              {"name":"a","type":{"type":"array","items":"long"}},
              {"name":"m","type":{"type":"map","values":"string"}},
              {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
              {"name":"dt","type":{"type":"int","logicalType":"date"}},
              {"name":"u","type":["null","string"]}]}"#,
        );
        let datum = Avro::Record(vec![
            ("b".into(), Avro::Boolean(true)),
            ("i".into(), Avro::Int(-7)),
            ("l".into(), Avro::Long(1_698_100_138_468_892_700)),
            ("f".into(), Avro::Float(1.5)),
            ("d".into(), Avro::Double(-2.25)),
            ("nan".into(), Avro::Double(f64::NAN)),
            ("by".into(), Avro::Bytes(vec![0, 1, 255])),
            ("fx".into(), Avro::Fixed(3, vec![1, 2, 3])),
            ("e".into(), Avro::Enum(1, "B".into())),
            ("a".into(), Avro::Array(vec![Avro::Long(1), Avro::Long(-1)])),
            (
                "m".into(),
                Avro::Map([("k".to_owned(), Avro::String("v".into()))].into()),
            ),
            ("ts".into(), Avro::TimestampMillis(1_696_444_513_000)),
            ("dt".into(), Avro::Date(19_000)),
            (
                "u".into(),
                Avro::Union(1, Box::new(Avro::String("x".into()))),
            ),
        ]);
        let bytes = apache_avro::to_avro_datum(&s, datum).unwrap();
        let v = decode(&p, &bytes).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"b":true,"i":-7,"l":1_698_100_138_468_892_700_i64,"f":1.5,"d":-2.25,
                "nan":null,"by":"AAH/","fx":"AQID","e":"B","a":[1,-1],"m":{"k":"v"},
                "ts":1_696_444_513_000_i64,"dt":19000,"u":"x"})
        );
        // Exact i64 above 2^53 survives.
        assert_eq!(v["l"].as_i64(), Some(1_698_100_138_468_892_700));
    }

    #[test]
    fn recursive_schema_compiles_and_depth_is_capped() {
        let (_, p) = program(
            r#"{"type":"record","name":"Node","fields":[{"name":"next","type":["null","Node"]}]}"#,
        );
        // Chain of 3 then null.
        assert_eq!(
            decode(&p, &[2, 2, 2, 0]).unwrap(),
            serde_json::json!({"next":{"next":{"next":{"next":null}}}})
        );
        let deep = vec![2u8; 10_000];
        let err = decode(&p, &deep).unwrap_err();
        assert!(err.to_string().contains("nesting deeper than 64"), "{err}");
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them_and_varints_of_any_length_read() {
        let (s, p) = program(
            r#"{"type":"record","name":"R","fields":[{"name":"s","type":"string"},{"name":"l","type":"long"}]}"#,
        );
        let texts = [
            "",
            "plain ASCII",
            "q\"uote",
            "back\\slash",
            "tab\tnew\nline\u{1}",
            "é ü 日本 🚀",
            "\u{7f}del",
        ];
        let longs = [0, -1, 1, 63, -64, 64, -65, 8191, 8192, i64::MAX, i64::MIN];
        for (text, long) in texts
            .iter()
            .zip(longs.iter().cycle())
            .chain(std::iter::repeat(&"x").zip(longs.iter()))
        {
            let datum = Avro::Record(vec![
                ("s".into(), Avro::String((*text).into())),
                ("l".into(), Avro::Long(*long)),
            ]);
            let bytes = apache_avro::to_avro_datum(&s, datum).unwrap();
            let mut r = Reader::new(&bytes);
            let mut out = Vec::new();
            p.write(&mut r, &p.root, 0, false, &mut out).unwrap();
            r.finish().unwrap();
            let want = format!(
                "{{\"s\":{},\"l\":{long}}}",
                serde_json::to_string(text).unwrap()
            );
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
        // Not UTF-8 after a plain-looking start: an error, not bytes passed through.
        let err = decode(&p, &[6, b'a', 0xc3, 0x28, 0]).unwrap_err();
        assert!(err.to_string().contains("string is not UTF-8"), "{err}");
    }

    #[test]
    fn corrupt_input_is_an_error() {
        let (_, p) = program(
            r#"{"type":"record","name":"R","fields":[{"name":"s","type":"string"},
                {"name":"a","type":{"type":"array","items":"string"}},{"name":"o","type":["null","long"]}]}"#,
        );
        let cases: &[(&[u8], &str)] = &[
            (&[], "unexpected end of payload inside a varint"),
            (&[10, b'a'], "need 5 bytes, 1 left"),
            (&[1], "negative string length -1"),
            (&[2, 0xff], "not UTF-8"),
            (&[0, 0x80, 0x80, 0x80, 0x80, 0x01], "block of"),
            (&[0, 0], "unexpected end of payload inside a varint"),
            (&[0, 0, 8], "union branch 4 out of range (2 branches)"),
            (&[0, 0, 0, 0], "1 trailing bytes"),
            (
                &[
                    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ],
                "varint",
            ),
        ];
        for (bytes, want) in cases {
            let err = decode(&p, bytes).unwrap_err();
            assert!(err.to_string().contains(want), "{bytes:?}: {err}");
        }
    }
}
