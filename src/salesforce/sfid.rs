//! Salesforce record Ids.
//!
//! Contract: an Id is 15 case-sensitive alphanumeric characters (the first 3 are the object's key
//! prefix, e.g. `001` Account, `003` Contact, `00D` Organization, `005` User) followed by the
//! 3-character case-insensitive checksum suffix Salesforce appends to make the 18-character form.
//! The suffix encodes, for each 5-character chunk, which characters are upper-case letters. The
//! 15-character prefix identifies the record: [`id15`] is how two Ids are compared.

/// Alphabet of the checksum characters, indexed by the 5-bit upper-case mask of a chunk.
const CHECKSUM_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// The 3-character checksum suffix of a 15-character Id, or `None` if `id15` is not 15 ASCII
/// alphanumerics.
pub fn checksum(id15: &str) -> Option<String> {
    let bytes = id15.as_bytes();
    if bytes.len() != 15 || !bytes.iter().all(u8::is_ascii_alphanumeric) {
        return None;
    }
    let suffix = bytes
        .chunks(5)
        .map(|chunk| {
            let mask = chunk
                .iter()
                .enumerate()
                .filter(|(_, c)| c.is_ascii_uppercase())
                .fold(0usize, |acc, (j, _)| acc | (1 << j));
            char::from(CHECKSUM_ALPHABET[mask])
        })
        .collect();
    Some(suffix)
}

/// The 18-character form of a 15-character Id.
pub fn to_18(id15: &str) -> Option<String> {
    checksum(id15).map(|suffix| format!("{id15}{suffix}"))
}

/// Canonical 18-character form of a 15- or 18-character Id; `None` if malformed or the checksum
/// of an 18-character Id does not match (the suffix is compared case-insensitively).
pub fn normalize(id: &str) -> Option<String> {
    match id.len() {
        15 => to_18(id),
        18 => {
            let (body, suffix) = id.split_at(15);
            let expected = checksum(body)?;
            expected
                .eq_ignore_ascii_case(suffix)
                .then(|| format!("{body}{expected}"))
        }
        _ => None,
    }
}

/// The case-sensitive 15-character form that identifies a record (15- and 18-character Ids of one
/// record share it).
pub fn id15(id: &str) -> &str {
    id.get(..15).unwrap_or(id)
}

/// 15 or 18 ASCII alphanumerics: the shape of an Id (the checksum is Salesforce's to check).
pub fn is_well_formed(id: &str) -> bool {
    matches!(id.len(), 15 | 18) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_known_salesforce_ids() {
        // Ids from Salesforce documentation and the Node client README sample.
        assert_eq!(
            to_18("0014H00002LbR7Q").as_deref(),
            Some("0014H00002LbR7QQAV")
        );
        assert_eq!(
            to_18("00558000000yFyD").as_deref(),
            Some("00558000000yFyDAAU")
        );
        assert_eq!(
            to_18("001000000000000").as_deref(),
            Some("001000000000000AAA")
        );
    }

    #[test]
    fn normalize_accepts_15_and_case_insensitive_suffix() {
        assert_eq!(
            normalize("0014H00002LbR7Q").as_deref(),
            Some("0014H00002LbR7QQAV")
        );
        assert_eq!(
            normalize("0014H00002LbR7Qqav").as_deref(),
            Some("0014H00002LbR7QQAV")
        );
        assert_eq!(normalize("0014H00002LbR7QAAA"), None);
        assert_eq!(normalize("short"), None);
        assert_eq!(normalize("0014H00002LbR7-QAV"), None);
    }

    #[test]
    fn id15_compares_both_forms() {
        assert_eq!(id15("0014H00002LbR7QQAV"), id15("0014H00002LbR7Q"));
        assert!(is_well_formed("0014H00002LbR7Q") && is_well_formed("0014H00002LbR7QQAV"));
        assert!(!is_well_formed("001X") && !is_well_formed("0014H00002LbR7-QAV"));
    }
}
