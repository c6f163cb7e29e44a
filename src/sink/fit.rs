//! Makes a dead letter or a conflict record fit Kafka's record limit, whatever arrived.
//!
//! Contract: [`fit`] takes the original record (key, value, headers), our own `forcebridge.*`
//! headers and the limit (`message.max.bytes`, [`crate::kafka::max_record_bytes`]) and returns
//! what to send, sized (as librdkafka counts it: key + value + every header's name and value,
//! with a margin for framing) under the limit. Our headers are always kept (the caller caps their
//! texts, [`cap_text`]). When the whole does not fit: a key over a quarter of the room is cut; the
//! original headers are kept in order while they fit in the room left beside at least half the
//! value, the others dropped; then the value is cut to the room left. What was cut is said in
//! `forcebridge.error.truncated` (`key`, `value`, `headers`), with the value's original size in
//! `forcebridge.error.truncated_from` and `forcebridge.error.headers_dropped` = `N of M (B
//! bytes)`. A record that fits goes unchanged. So a dead letter never makes Kafka refuse it
//! (`MsgSizeTooLarge`), and the partition behind it moves on.

use crate::kafka::headers;

/// Counted per header on top of its name and value (varint lengths and count).
const HEADER_FRAMING: usize = 10;
/// Kept free for the record's own framing and for the headers saying what was cut.
const SLACK: usize = 1_024;
/// The longest text of one of our own headers (a reason, an error message).
pub(crate) const MAX_TEXT_BYTES: usize = headers::MAX_HEADER_TEXT;

/// What to send.
#[derive(Debug)]
pub(crate) struct Cut<'a> {
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: Option<&'a [u8]>,
    /// The original headers kept, in order.
    pub(crate) headers: Vec<(&'a str, &'a [u8])>,
    /// Headers saying what was cut; empty when nothing was.
    pub(crate) notes: Vec<(&'static str, Vec<u8>)>,
}

fn header_size(name: &str, value: &[u8]) -> usize {
    name.len() + value.len() + HEADER_FRAMING
}

/// `text` cut to at most [`MAX_TEXT_BYTES`] at a character boundary, marked with `…`.
pub(crate) fn cap_text(text: &str) -> String {
    if text.len() <= MAX_TEXT_BYTES {
        return text.to_owned();
    }
    format!("{}…", headers::cut_text(text, MAX_TEXT_BYTES - 3))
}

/// The record to send for `key`, `value` and `original` headers beside `ours`, under `max` bytes.
pub(crate) fn fit<'a>(
    max: usize,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    original: &'a [(String, Vec<u8>)],
    ours: &[(&'static str, Vec<u8>)],
) -> Cut<'a> {
    let ours_size: usize = ours.iter().map(|(k, v)| header_size(k, v)).sum();
    let mut room = max.saturating_sub(SLACK + ours_size);
    let headers_size: usize = original.iter().map(|(k, v)| header_size(k, v)).sum();
    let key_len = key.map_or(0, <[u8]>::len);
    let value_len = value.map_or(0, <[u8]>::len);
    let all: Vec<(&str, &[u8])> = original
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    if key_len + headers_size + value_len <= room {
        return Cut {
            key,
            value,
            headers: all,
            notes: Vec::new(),
        };
    }
    let mut cut_parts: Vec<&str> = Vec::new();
    let mut notes: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let key = key.map(|k| {
        if k.len() > room / 4 {
            cut_parts.push("key");
            &k[..room / 4]
        } else {
            k
        }
    });
    room -= key.map_or(0, <[u8]>::len);
    let header_room = room - value_len.min(room / 2);
    let mut kept = Vec::new();
    let mut used = 0;
    let mut dropped = (0usize, 0usize);
    for (k, v) in all {
        let size = header_size(k, v);
        if used + size <= header_room {
            used += size;
            kept.push((k, v));
        } else {
            dropped = (dropped.0 + 1, dropped.1 + size);
        }
    }
    room -= used;
    if dropped.0 > 0 {
        cut_parts.push("headers");
        let text = format!("{} of {} ({} bytes)", dropped.0, original.len(), dropped.1);
        notes.push((headers::ERROR_HEADERS_DROPPED, text.into_bytes()));
    }
    let value = value.map(|v| {
        if v.len() > room {
            cut_parts.push("value");
            notes.push((
                headers::ERROR_TRUNCATED_FROM,
                v.len().to_string().into_bytes(),
            ));
            &v[..room]
        } else {
            v
        }
    });
    notes.push((headers::ERROR_TRUNCATED, cut_parts.join(",").into_bytes()));
    Cut {
        key,
        value,
        headers: kept,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1_000_000;

    fn size(cut: &Cut<'_>, ours: &[(&'static str, Vec<u8>)]) -> usize {
        cut.key.map_or(0, <[u8]>::len)
            + cut.value.map_or(0, <[u8]>::len)
            + cut
                .headers
                .iter()
                .map(|(k, v)| header_size(k, v))
                .sum::<usize>()
            + ours
                .iter()
                .chain(cut.notes.iter())
                .map(|(k, v)| header_size(k, v))
                .sum::<usize>()
    }

    fn note<'c>(cut: &'c Cut<'_>, name: &str) -> Option<&'c str> {
        cut.notes
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| std::str::from_utf8(v).unwrap())
    }

    fn ours() -> Vec<(&'static str, Vec<u8>)> {
        vec![(headers::ERROR_REASON, vec![b'r'; 2_000])]
    }

    #[test]
    fn a_record_that_fits_goes_unchanged() {
        let original = vec![("trace".to_owned(), b"abc".to_vec())];
        let cut = fit(MAX, Some(b"k"), Some(b"{}"), &original, &ours());
        assert_eq!(cut.value, Some(&b"{}"[..]));
        assert_eq!(cut.headers, vec![("trace", &b"abc"[..])]);
        assert!(cut.notes.is_empty());
    }

    #[test]
    fn a_value_over_the_limit_is_cut_and_said() {
        let value = vec![b'x'; MAX + 10];
        let original = vec![("trace".to_owned(), b"abc".to_vec())];
        let cut = fit(MAX, Some(b"k"), Some(&value), &original, &ours());
        assert!(size(&cut, &ours()) < MAX, "{}", size(&cut, &ours()));
        assert_eq!(note(&cut, headers::ERROR_TRUNCATED), Some("value"));
        assert_eq!(
            note(&cut, headers::ERROR_TRUNCATED_FROM),
            Some((MAX + 10).to_string().as_str())
        );
        assert_eq!(cut.headers.len(), 1, "small headers stay");
    }

    #[test]
    fn a_megabyte_of_headers_is_dropped_and_said_and_the_value_kept() {
        let original: Vec<(String, Vec<u8>)> = (0..10)
            .map(|i| (format!("h{i}"), vec![b'h'; 100_000]))
            .collect();
        let cut = fit(MAX, Some(b"k"), Some(b"{\"a\":1}"), &original, &ours());
        assert!(size(&cut, &ours()) < MAX);
        assert_eq!(cut.value, Some(&b"{\"a\":1}"[..]));
        assert_eq!(note(&cut, headers::ERROR_TRUNCATED), Some("headers"));
        let dropped = note(&cut, headers::ERROR_HEADERS_DROPPED).unwrap();
        assert!(dropped.contains(" of 10 ("), "{dropped}");
        assert!(cut.headers.len() < 10 && !cut.headers.is_empty());
    }

    #[test]
    fn key_value_and_headers_all_oversize_still_fit() {
        let key = vec![b'k'; MAX];
        let value = vec![b'v'; MAX];
        let original = vec![("big".to_owned(), vec![b'h'; MAX])];
        let cut = fit(MAX, Some(&key), Some(&value), &original, &ours());
        assert!(size(&cut, &ours()) < MAX);
        assert_eq!(
            note(&cut, headers::ERROR_TRUNCATED),
            Some("key,headers,value")
        );
    }

    #[test]
    fn long_texts_are_capped_at_a_character_boundary() {
        let text = "é".repeat(MAX_TEXT_BYTES);
        let capped = cap_text(&text);
        assert!(capped.len() <= MAX_TEXT_BYTES);
        assert!(capped.ends_with('…'));
    }
}
