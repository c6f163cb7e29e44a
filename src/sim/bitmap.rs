//! CDC header bitmaps (`changedFields`, `nulledFields`, `diffFields`) as Salesforce encodes them
//! for the Pub/Sub API.
//!
//! Contract: element 0 is `0x` + upper-case hex of the top-level field bitmap (bit i = field i of
//! the writer schema, bit 0 = least-significant bit of the last hex digit; always a whole number
//! of bytes). Each compound field with nested bits set adds an element
//! `{parentPosition}-0x{nestedBitmap}` (same bit order over the compound record's fields), in
//! ascending parent position. An empty set encodes as an empty array; if only nested bits are
//! set, element 0 is still present (`0x00`), so decoders that read element 0 as top-level work.

use std::collections::{BTreeMap, BTreeSet};

/// Set of field positions: top-level and nested per compound parent position.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldSet {
    /// Top-level positions (non-compound fields).
    pub top: BTreeSet<usize>,
    /// Compound parent position → nested positions.
    pub nested: BTreeMap<usize, BTreeSet<usize>>,
}

impl FieldSet {
    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        self.top.is_empty() && self.nested.values().all(BTreeSet::is_empty)
    }

    /// How many fields the set names (top-level and nested; a compound's parent is not counted).
    pub fn len(&self) -> usize {
        self.top.len() + self.nested.values().map(BTreeSet::len).sum::<usize>()
    }

    /// Marks a nested field of the compound at `parent`.
    pub fn insert_nested(&mut self, parent: usize, child: usize) {
        self.nested.entry(parent).or_default().insert(child);
    }

    /// The bitmap strings for this set.
    pub fn encode(&self) -> Vec<String> {
        if self.is_empty() {
            return Vec::new();
        }
        let mut out = vec![encode_hex(&self.top)];
        for (parent, children) in &self.nested {
            if !children.is_empty() {
                out.push(format!("{parent}-{}", encode_hex(children)));
            }
        }
        out
    }
}

/// `0x` + upper-case, byte-aligned hex of the bitmap with the given bit positions set.
pub fn encode_hex(positions: &BTreeSet<usize>) -> String {
    let max = positions.iter().next_back().copied().unwrap_or(0);
    let nbytes = max / 8 + 1;
    let mut bytes = vec![0u8; nbytes];
    for &p in positions {
        bytes[nbytes - 1 - p / 8] |= 1 << (p % 8);
    }
    format!("0x{}", hex::encode_upper(bytes))
}

/// Bit positions set in a `0x…` hex bitmap (case-insensitive, any length). `None` if malformed.
pub fn decode_hex(s: &str) -> Option<BTreeSet<usize>> {
    let digits = s.strip_prefix("0x")?;
    if digits.is_empty() {
        return None;
    }
    let mut out = BTreeSet::new();
    for (k, c) in digits.chars().rev().enumerate() {
        let v = c.to_digit(16)? as usize;
        for b in 0..4 {
            if v & (1 << b) != 0 {
                out.insert(k * 4 + b);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[usize]) -> BTreeSet<usize> {
        v.iter().copied().collect()
    }

    #[test]
    fn documented_vector_round_trips() {
        let positions = set(&[5, 6, 7, 10, 24, 26, 29, 30]);
        assert_eq!(encode_hex(&positions), "0x650004E0");
        assert_eq!(decode_hex("0x650004E0"), Some(positions.clone()));
        assert_eq!(decode_hex("0x650004e0"), Some(positions));
    }

    #[test]
    fn encoding_is_byte_aligned_and_upper_case() {
        assert_eq!(encode_hex(&set(&[22])), "0x400000");
        assert_eq!(encode_hex(&set(&[0])), "0x01");
        assert_eq!(encode_hex(&set(&[8])), "0x0100");
        assert_eq!(encode_hex(&set(&[1, 2])), "0x06");
        assert_eq!(encode_hex(&set(&[4])), "0x10");
        assert_eq!(encode_hex(&set(&[])), "0x00");
    }

    #[test]
    fn compound_fields_use_parent_prefixed_elements() {
        // The Node client README sample: LastModifiedDate (22) + BillingAddress (4) City, State.
        let mut fs = FieldSet::default();
        fs.top.insert(22);
        fs.insert_nested(4, 1);
        fs.insert_nested(4, 2);
        assert_eq!(fs.encode(), vec!["0x400000", "4-0x06"]);
    }

    #[test]
    fn only_nested_keeps_element_zero_and_empty_is_empty() {
        let mut fs = FieldSet::default();
        assert!(fs.encode().is_empty());
        fs.insert_nested(7, 4);
        assert_eq!(fs.encode(), vec!["0x00", "7-0x10"]);
    }

    #[test]
    fn decode_rejects_garbage() {
        assert_eq!(decode_hex("650004E0"), None);
        assert_eq!(decode_hex("0x"), None);
        assert_eq!(decode_hex("0xZZ"), None);
    }
}
