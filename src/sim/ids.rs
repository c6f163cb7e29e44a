//! Salesforce record Ids as the simulated org issues them (the Id format itself is
//! [`crate::salesforce::sfid`]).

/// Alphabet of the simulated Id body (base 62, ascending ASCII order).
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

pub use crate::salesforce::sfid::{checksum, normalize, to_18};

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
