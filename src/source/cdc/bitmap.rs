//! Bitmap expansion of `changedFields` / `nulledFields` / `diffFields` (facts §11.4).
//!
//! * `0x<hex>`: top-level fields by position; bit 0 is the least significant bit of the last hex
//!   digit. Any length, either case, odd digit counts fine.
//! * `<N>-0x<hex>`: nested fields of the compound field at position `N` (the record variant of
//!   its union), emitted as `Parent.Child`. A change event's `ChangeEventHeader` (position 0) is
//!   a record but not a compound field.
//!
//! Each element is classified on its own. Names come from a [`FieldTable`] precomputed per
//! schema, so expansion never walks the schema.

use super::avro::Program;
use super::event::BitmapError;

/// A field named by a bitmap bit: top-level position, and nested position within a compound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FieldRef {
    pub top: usize,
    pub nested: Option<usize>,
}

/// Field names of one writer schema, by position; compound children pre-joined as `Parent.Child`.
#[derive(Debug)]
pub(crate) struct FieldTable {
    top: Box<[String]>,
    nested: Box<[Option<Box<[String]>>]>,
}

impl FieldTable {
    /// `change_event`: field 0 is `ChangeEventHeader`, which is a record but not a compound
    /// field, so `0-0x…` is an error rather than a header member named as a changed field.
    pub(crate) fn build(program: &Program, body: usize, change_event: bool) -> FieldTable {
        let fields = &program.records[body].fields;
        let top = fields.iter().map(|f| f.name.clone()).collect();
        let nested = fields
            .iter()
            .enumerate()
            .map(|(position, f)| {
                if change_event && position == 0 {
                    return None;
                }
                f.node.record_variant().map(|i| {
                    program.records[i]
                        .fields
                        .iter()
                        .map(|c| format!("{}.{}", f.name, c.name))
                        .collect()
                })
            })
            .collect();
        FieldTable { top, nested }
    }

    pub(crate) fn top_names(&self) -> impl ExactSizeIterator<Item = &str> {
        self.top.iter().map(String::as_str)
    }

    /// `Parent.Child` for a nested reference, the field name otherwise.
    pub(crate) fn name(&self, f: FieldRef) -> &str {
        match f.nested {
            None => &self.top[f.top],
            Some(j) => self.nested[f.top].as_ref().map_or("", |n| n[j].as_str()),
        }
    }

    /// Calls `f` for each field named by `bitmaps`, in element order then ascending bit.
    pub(crate) fn expand(
        &self,
        bitmaps: &[String],
        mut f: impl FnMut(FieldRef),
    ) -> Result<(), BitmapError> {
        for element in bitmaps {
            if let Some(hex) = strip_hex_prefix(element) {
                for_each_bit(element, hex, self.top.len(), None, |i| {
                    f(FieldRef {
                        top: i,
                        nested: None,
                    })
                })?;
                continue;
            }
            let Some((pos, rest)) = element.split_once('-') else {
                return Err(malformed(element));
            };
            let hex = strip_hex_prefix(rest).ok_or_else(|| malformed(element))?;
            if pos.is_empty() || !pos.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed(element));
            }
            let position = pos.parse::<usize>().unwrap_or(usize::MAX);
            let Some(nested) = self.nested.get(position) else {
                return Err(BitmapError::PositionOutOfRange {
                    element: element.clone(),
                    position,
                    field_count: self.top.len(),
                });
            };
            let Some(children) = nested else {
                return Err(BitmapError::NotCompound {
                    element: element.clone(),
                    position,
                    field: self.top[position].clone(),
                });
            };
            let parent = Some(self.top[position].as_str());
            for_each_bit(element, hex, children.len(), parent, |j| {
                f(FieldRef {
                    top: position,
                    nested: Some(j),
                })
            })?;
        }
        Ok(())
    }

    /// Expands `bitmaps` to field names (`Parent.Child` for nested fields).
    pub(crate) fn names(&self, bitmaps: &[String]) -> Result<Vec<String>, BitmapError> {
        let mut out = Vec::new();
        self.expand(bitmaps, |r| out.push(self.name(r).to_owned()))?;
        Ok(out)
    }
}

fn malformed(element: &str) -> BitmapError {
    BitmapError::Malformed {
        element: element.to_owned(),
    }
}

fn strip_hex_prefix(s: &str) -> Option<&str> {
    s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))
}

/// Validates `hex` then calls `f` for each set bit, ascending; bit 0 = LSB of the last digit.
fn for_each_bit(
    element: &str,
    hex: &str,
    field_count: usize,
    parent: Option<&str>,
    mut f: impl FnMut(usize),
) -> Result<(), BitmapError> {
    if hex.is_empty() {
        return Err(BitmapError::BadHex {
            element: element.to_owned(),
            reason: "no hex digits".to_owned(),
        });
    }
    if let Some(c) = hex.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(BitmapError::BadHex {
            element: element.to_owned(),
            reason: format!("{c:?} is not a hex digit"),
        });
    }
    for (k, b) in hex.bytes().rev().enumerate() {
        let digit = (b as char).to_digit(16).unwrap_or(0);
        if digit == 0 {
            continue;
        }
        for bit in 0..4 {
            if digit >> bit & 1 == 1 {
                let i = k * 4 + bit;
                if i >= field_count {
                    return Err(BitmapError::BitOutOfRange {
                        element: element.to_owned(),
                        bit: i,
                        target: parent
                            .map_or_else(|| "the schema".to_owned(), |p| format!("`{p}`")),
                        field_count,
                    });
                }
                f(i);
            }
        }
    }
    Ok(())
}
