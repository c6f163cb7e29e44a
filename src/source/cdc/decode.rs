//! Decoding: one raw Avro datum, read with its own writer schema, into the envelope's parts.
//!
//! Contract: [`read_event`] reads the header (its bitmaps expanded to field references) and
//! writes the body as JSON text under the envelope rule (fields that carry a value, plus the
//! nulled fields as `null`); every read is bounds-checked, trailing bytes are an error, and the
//! errors come in the contract's order. [`decode`] is the structured form for tests and tools.

use super::avro::{Node, Program, Reader};
use super::bitmap::FieldRef;
use super::event::BitmapError;
use super::event::{ChangeHeader, DecodeError, DecodedEvent};
use super::header::read_header;
use super::schema::EventSchema;

/// Reusable buffers of the decoder. A channel's processor keeps one, so that encoding
/// allocates nothing per event but the records it returns ([`super::encode`]).
#[derive(Debug, Default)]
pub struct Scratch {
    /// The body as JSON text (the envelope's `record`).
    pub(super) body: Vec<u8>,
    /// The envelope after its leading per-record fields.
    pub(super) tail: Vec<u8>,
    pub(super) changed: Vec<FieldRef>,
    pub(super) nulled: Vec<FieldRef>,
    pub(super) diff: Vec<FieldRef>,
    /// Per top-level body field: [`NULLED`] / [`CHILD_NULLED`].
    pub(super) flags: Vec<u8>,
}

/// The field itself is in `nulledFields`.
const NULLED: u8 = 1;
/// One of the (compound) field's children is in `nulledFields`.
const CHILD_NULLED: u8 = 2;

/// What [`read_event`] returns besides the text it writes into the [`Scratch`].
pub(super) struct Parsed {
    /// The header with its bitmaps as received (expanded into the scratch).
    pub(super) header: Option<ChangeHeader>,
    pub(super) created_date: Option<i64>,
}

/// Reads one datum: the header into [`Parsed`], its bitmaps expanded into `s.changed`,
/// `s.nulled` and `s.diff`, and the body written as JSON text into `s.body` under the envelope
/// rule (fields that carry a value, plus the nulled fields as `null`, in schema order).
///
/// Errors come in the order of the contract: the datum (header, body, trailing bytes), then the
/// `changedFields`, `diffFields` and `nulledFields` bitmaps.
pub(super) fn read_event(
    schema: &EventSchema,
    payload: &[u8],
    s: &mut Scratch,
) -> Result<Parsed, DecodeError> {
    let l = &schema.layout;
    let p = &l.program;
    let t = &l.fields;
    let fields = &p.records[l.body].fields;
    let mut r = Reader::new(payload);
    s.body.clear();
    s.changed.clear();
    s.nulled.clear();
    s.diff.clear();
    s.flags.clear();
    s.flags.resize(fields.len(), 0);
    let mut header = None;
    let mut nulled_error = None;
    let mut created_date = None;
    let out = &mut s.body;
    out.push(b'{');
    let mut first = true;
    for (i, f) in fields.iter().enumerate() {
        if i == 0 {
            if let Some(h) = &l.header {
                let read = read_header(p, h, &mut r)?;
                // The body is written knowing the nulled fields; a bad bitmap is reported after
                // the datum has been read.
                if let Err(err) = t.expand(&read.nulled_fields, |f| s.nulled.push(f)) {
                    nulled_error = Some(err);
                    s.nulled.clear();
                }
                for f in &s.nulled {
                    s.flags[f.top] |= if f.nested.is_none() {
                        NULLED
                    } else {
                        CHILD_NULLED
                    };
                }
                header = Some(read);
                continue;
            }
        }
        let mark = out.len();
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(&f.key);
        let value_at = out.len();
        let mut written = match p.select(&mut r, &f.node)? {
            None => false,
            Some(Node::Record(record)) => {
                write_compound(p, *record, i, &mut r, &s.nulled, s.flags[i], out)?
            }
            Some(node) => {
                p.write(&mut r, node, 1, true, out)?;
                true
            }
        };
        if written && l.created_date == Some(i) {
            created_date = std::str::from_utf8(&out[value_at..])
                .ok()
                .and_then(|v| v.parse::<i64>().ok());
        }
        if !written {
            out.truncate(value_at);
            if s.flags[i] & CHILD_NULLED != 0 {
                // Absent compound field with nulled children: an object of those children.
                write_nulled_children(p, &f.node, i, &s.nulled, out);
                written = true;
            } else if s.flags[i] & NULLED != 0 {
                out.extend_from_slice(b"null");
                written = true;
            }
        }
        if written {
            first = false;
        } else {
            out.truncate(mark);
        }
    }
    out.push(b'}');
    r.finish()?;
    if let Some(h) = &header {
        t.expand(&h.changed_fields, |f| s.changed.push(f))
            .map_err(bitmap("changedFields"))?;
        t.expand(&h.diff_fields, |f| s.diff.push(f))
            .map_err(bitmap("diffFields"))?;
        if let Some(err) = nulled_error {
            return Err(bitmap("nulledFields")(err));
        }
    }
    Ok(Parsed {
        header,
        created_date,
    })
}

/// A compound field's record (sparse), with its nulled children as `null` unless they carry a
/// value; `false` (and a partial write) when nothing is left.
fn write_compound(
    p: &Program,
    record: usize,
    top: usize,
    r: &mut Reader<'_>,
    nulled: &[FieldRef],
    flags: u8,
    out: &mut Vec<u8>,
) -> Result<bool, DecodeError> {
    let depth = p.deeper(r, 1)?;
    out.push(b'{');
    let mut first = true;
    for (j, child) in p.records[record].fields.iter().enumerate() {
        let mark = out.len();
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(&child.key);
        let value_at = out.len();
        if p.write_present(r, &child.node, depth, out)? {
            first = false;
        } else if flags & CHILD_NULLED != 0 && is_nulled_child(nulled, top, j) {
            out.truncate(value_at);
            out.extend_from_slice(b"null");
            first = false;
        } else {
            out.truncate(mark);
        }
    }
    out.push(b'}');
    Ok(!first)
}

fn is_nulled_child(nulled: &[FieldRef], top: usize, child: usize) -> bool {
    nulled
        .iter()
        .any(|f| f.top == top && f.nested == Some(child))
}

/// `{"Child":null,…}` for the nulled children of an absent compound field, in schema order.
fn write_nulled_children(
    p: &Program,
    node: &Node,
    top: usize,
    nulled: &[FieldRef],
    out: &mut Vec<u8>,
) {
    out.push(b'{');
    if let Some(record) = node.record_variant() {
        let mut first = true;
        for (j, child) in p.records[record].fields.iter().enumerate() {
            if is_nulled_child(nulled, top, j) {
                if !std::mem::take(&mut first) {
                    out.push(b',');
                }
                out.extend_from_slice(&child.key);
                out.extend_from_slice(b"null");
            }
        }
    }
    out.push(b'}');
}

/// Decodes one raw Avro datum with its writer schema, parsing the header and expanding bitmaps
/// (the structured form, for tests and tools; the pipeline uses [`super::encode`]).
pub fn decode(schema: &EventSchema, payload: &[u8]) -> Result<DecodedEvent, DecodeError> {
    let mut s = Scratch::default();
    let parsed = read_event(schema, payload, &mut s)?;
    let record = serde_json::from_slice(&s.body).expect("the decoder writes a JSON object");
    let t = &schema.layout.fields;
    let names = |refs: &[FieldRef]| refs.iter().map(|&f| t.name(f).to_owned()).collect();
    let header = parsed.header.map(|mut h| {
        h.changed_fields = names(&s.changed);
        h.nulled_fields = names(&s.nulled);
        h.diff_fields = names(&s.diff);
        h
    });
    Ok(DecodedEvent {
        header,
        record,
        created_date: parsed.created_date,
    })
}

/// Expands Pub/Sub bitmap strings to field names against the event's writer schema.
pub fn expand_bitmaps(
    bitmaps: &[String],
    schema: &EventSchema,
) -> Result<Vec<String>, BitmapError> {
    schema.layout.fields.names(bitmaps)
}

fn bitmap(field: &'static str) -> impl FnOnce(BitmapError) -> DecodeError {
    move |source| DecodeError::Bitmap { field, source }
}
