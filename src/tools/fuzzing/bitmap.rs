//! Target `bitmap`, and the reference bitmap expansion that it and `cdc_decode` check
//! [`crate::source::cdc::expand_bitmaps`] against.
//!
//! Contract: [`bitmap`] takes `[selector, elements separated by ','...]` (lossy UTF-8); what
//! the decoder expands must equal [`reference_expand`], what it refuses the reference must refuse
//! too, and its error must name the offending element. It panics otherwise (a finding).

use crate::sim::catalog::{FieldKind, HEADER_FIELD, SchemaVersion};
use crate::source::cdc;

use super::fixtures::{Outcome, fixture};

/// The bitmap rules (facts §11.4) implemented a second time, naively, over the simulator's
/// catalog: `0x<hex>` names top-level fields by position (bit 0 = least significant bit of the
/// last digit; position 0 of a change event is `ChangeEventHeader`), `<N>-0x<hex>` names the
/// children of the compound field at position `N` as `Parent.Child`. `None` when any element is
/// malformed or names a field the schema does not have.
pub(crate) fn reference_expand(catalog: &SchemaVersion, bitmaps: &[String]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for element in bitmaps {
        let (position, hex) = match element.split_once('-') {
            Some((pos, hex)) => {
                if pos.is_empty() || !pos.chars().all(|c| c.is_ascii_digit()) {
                    return None;
                }
                (Some(pos.parse::<usize>().ok()?), hex)
            }
            None => (None, element.as_str()),
        };
        let digits = hex.strip_prefix("0x").or_else(|| hex.strip_prefix("0X"))?;
        if digits.is_empty() {
            return None;
        }
        let mut bits = Vec::new();
        for (k, c) in digits.chars().rev().enumerate() {
            let v = c.to_digit(16)?;
            for b in 0..4 {
                if v >> b & 1 == 1 {
                    bits.push(k * 4 + b);
                }
            }
        }
        match position {
            None => {
                for bit in bits {
                    if bit == 0 && catalog.is_change_event {
                        out.push(HEADER_FIELD.to_owned());
                    } else {
                        let f = catalog.fields.iter().find(|f| f.position == bit)?;
                        out.push(f.name.clone());
                    }
                }
            }
            Some(p) => {
                let f = catalog.fields.iter().find(|f| f.position == p)?;
                let FieldKind::Compound(children) = &f.kind else {
                    return None;
                };
                for bit in bits {
                    let (child, _) = children.get(bit)?;
                    out.push(format!("{}.{child}", f.name));
                }
            }
        }
    }
    Some(out)
}

/// Target `bitmap`: `[selector, elements separated by ','...]`; see the module docs.
pub fn bitmap(data: &[u8]) -> Outcome {
    let Some((&selector, text)) = data.split_first() else {
        return Outcome::Rejected;
    };
    let fx = fixture(selector);
    let text = String::from_utf8_lossy(text);
    let elements: Vec<String> = if text.is_empty() {
        Vec::new()
    } else {
        text.split(',').map(str::to_owned).collect()
    };
    let ours = cdc::expand_bitmaps(&elements, &fx.schema);
    let reference = reference_expand(&fx.catalog, &elements);
    match ours {
        Ok(names) => {
            assert_eq!(
                Some(&names),
                reference.as_ref(),
                "{elements:?} expanded differently from the reference"
            );
            Outcome::Accepted
        }
        Err(e) => {
            assert_eq!(
                reference, None,
                "{elements:?} refused ({e}) but the reference expands it"
            );
            let message = e.to_string();
            assert!(
                elements
                    .iter()
                    .any(|el| message.contains(&format!("{el:?}"))),
                "the error does not name the element: {message}"
            );
            Outcome::Rejected
        }
    }
}
