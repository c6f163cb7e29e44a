//! Salesforce record Ids as the simulated org issues them.
//!
//! Contract: an Id is 15 case-sensitive alphanumeric characters (the first 3 are the object's key
//! prefix, e.g. `001` Account, `003` Contact, `00D` Organization, `005` User) followed by the
//! 3-character case-insensitive checksum suffix Salesforce appends to make the 18-character form.
//! The suffix encodes, for each 5-character chunk, which characters are upper-case letters.

/// Alphabet of the checksum characters, indexed by the 5-bit upper-case mask of a chunk.
const CHECKSUM_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// Alphabet of the simulated Id body (base 62, ascending ASCII order).
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

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

/// Issues increasing, unique Ids for one key prefix: `prefix` + `5S` + a 10-digit base-62
/// counter + checksum.
#[derive(Debug, Clone)]
pub struct IdGenerator {
    prefix: String,
    next: u64,
}

impl IdGenerator {
    /// A generator for a 3-character key prefix.
    pub fn new(prefix: &str) -> Self {
        debug_assert_eq!(prefix.len(), 3);
        Self {
            prefix: prefix.to_owned(),
            next: 1,
        }
    }

    /// The next Id (18 characters).
    pub fn next_id(&mut self) -> String {
        let mut n = self.next;
        self.next += 1;
        let mut digits = [b'0'; 10];
        for d in digits.iter_mut().rev() {
            *d = BASE62[(n % 62) as usize];
            n /= 62;
        }
        let body = format!(
            "{}5S{}",
            self.prefix,
            std::str::from_utf8(&digits).unwrap_or("0000000000")
        );
        to_18(&body).unwrap_or(body)
    }
}

/// Builds a valid 18-character Id from a 15-character literal (used for config defaults).
pub(crate) fn fixed(id15: &str) -> String {
    to_18(id15).unwrap_or_else(|| id15.to_owned())
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
    fn generator_issues_unique_valid_ids() {
        let mut ids = IdGenerator::new("001");
        let a = ids.next_id();
        let b = ids.next_id();
        assert_ne!(a, b);
        for id in [&a, &b] {
            assert_eq!(id.len(), 18);
            assert!(id.starts_with("001"));
            assert_eq!(normalize(id).as_deref(), Some(id.as_str()));
        }
    }
}
