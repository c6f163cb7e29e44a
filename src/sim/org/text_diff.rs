//! The data differences Salesforce sends instead of an updated large text value.
//!
//! Contract (Change Data Capture Developer Guide, "Sending Data Differences for Fields of Updated
//! Records" and "Data Differences in Event Fields"): [`diff_value`] gives the value an UPDATE's
//! change event carries for a large text field (listed in `diffFields`), or `None` when the full
//! value is sent. The diff is a unified diff of the value's lines, old → new:
//! `"--- \n+++ <SHA-256 hex of the whole new value>\n"` then one `@@ -a,b +c,d @@` hunk per run
//! of changed lines, without context lines (as the guide's example shows), each line ending in
//! `\n`. Lines are split at the line breaks found in the value (`\n`, with a `\r` before it kept
//! out of the line, as the guide's reconstruction rejoins lines with the value's own newline).
//! The full value is sent when the new value is under 1,000 characters, when the lengths differ
//! by more than 50 %, when more than 25 % of the lines of old and new together changed, or when
//! the diff is longer than the new value (the guide's four conditions). Where a real org only
//! "sometimes" sends a diff, the simulated org always does when these conditions allow it.

/// The guide's lower bound on the value's length, in characters.
const MIN_CHARS: usize = 1_000;

/// Above this many old × new changed lines the middle is not aligned line by line: the full value
/// is sent (a change that large fails the 25 % rule anyway unless the value has thousands of
/// lines; a 32,000-character field has few).
const MAX_ALIGNMENT_CELLS: usize = 4_000_000;

/// The value an UPDATE's change event carries for a large text field changed from `old` to `new`:
/// `Some(diff)` when Salesforce's conditions allow a diff, `None` for the full value.
pub(crate) fn diff_value(old: &str, new: &str) -> Option<String> {
    let (old_chars, new_chars) = (old.chars().count(), new.chars().count());
    if new_chars < MIN_CHARS || old == new {
        return None;
    }
    // "The difference between the old and new values is greater than 50% in length."
    if old_chars.abs_diff(new_chars) * 2 > old_chars {
        return None;
    }
    let (a, b) = (lines(old), lines(new));
    let ops = align(&a, &b)?;
    let changed = ops.iter().filter(|op| !matches!(op, Op::Keep)).count();
    // "More than 25% of the lines of the total number of lines in the old and new values are
    // changed."
    if changed * 4 > a.len() + b.len() {
        return None;
    }
    let diff = render(&a, &b, &ops, &sha256_hex(new));
    // "The diff's length is greater than the length of the new value."
    (diff.chars().count() <= new_chars).then_some(diff)
}

fn lines(text: &str) -> Vec<&str> {
    text.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Keep,
    Delete,
    Insert,
}

/// The edit script from `a` to `b`: common prefix and suffix kept, the middle aligned by a longest
/// common subsequence of lines. `None` when the middle is too large to align.
fn align(a: &[&str], b: &[&str]) -> Option<Vec<Op>> {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (ma, mb) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    if (ma.len() + 1).saturating_mul(mb.len() + 1) > MAX_ALIGNMENT_CELLS {
        return None;
    }
    // lcs[i][j]: the longest common subsequence of ma[i..] and mb[j..].
    let width = mb.len() + 1;
    let mut lcs = vec![0u32; (ma.len() + 1) * width];
    for i in (0..ma.len()).rev() {
        for j in (0..mb.len()).rev() {
            lcs[i * width + j] = if ma[i] == mb[j] {
                lcs[(i + 1) * width + j + 1] + 1
            } else {
                lcs[(i + 1) * width + j].max(lcs[i * width + j + 1])
            };
        }
    }
    let mut ops = vec![Op::Keep; prefix];
    let (mut i, mut j) = (0, 0);
    while i < ma.len() || j < mb.len() {
        if i < ma.len() && j < mb.len() && ma[i] == mb[j] {
            ops.push(Op::Keep);
            (i, j) = (i + 1, j + 1);
        } else if j == mb.len()
            || (i < ma.len() && lcs[(i + 1) * width + j] >= lcs[i * width + j + 1])
        {
            ops.push(Op::Delete);
            i += 1;
        } else {
            ops.push(Op::Insert);
            j += 1;
        }
    }
    ops.extend(std::iter::repeat_n(Op::Keep, suffix));
    Some(ops)
}

/// The unified diff text: the header, then a hunk per run of deletions and insertions.
fn render(a: &[&str], b: &[&str], ops: &[Op], hash: &str) -> String {
    use std::fmt::Write as _;
    let mut out = format!("--- \n+++ {hash}\n");
    let (mut i, mut j, mut k) = (0usize, 0usize, 0usize);
    while k < ops.len() {
        if ops[k] == Op::Keep {
            (i, j, k) = (i + 1, j + 1, k + 1);
            continue;
        }
        let run_end = ops[k..]
            .iter()
            .position(|op| *op == Op::Keep)
            .map_or(ops.len(), |n| k + n);
        let deleted = ops[k..run_end]
            .iter()
            .filter(|op| **op == Op::Delete)
            .count();
        let inserted = run_end - k - deleted;
        // A range of no lines names the line before it, as GNU diff writes it.
        let start = |at: usize, n: usize| if n == 0 { at } else { at + 1 };
        let _ = writeln!(
            out,
            "@@ -{},{deleted} +{},{inserted} @@",
            start(i, deleted),
            start(j, inserted)
        );
        for line in &a[i..i + deleted] {
            let _ = writeln!(out, "-{line}");
        }
        for line in &b[j..j + inserted] {
            let _ = writeln!(out, "+{line}");
        }
        (i, j, k) = (i + deleted, j + inserted, run_end);
    }
    out
}

fn sha256_hex(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A paragraph per line, `n` lines of about 120 characters.
    pub(crate) fn long_text(n: usize) -> String {
        (0..n)
            .map(|i| format!("Paragraph {i}: business applications are moving to the cloud, and the shift has gained momentum over ten years."))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Applies a zero-context unified diff to `old` (the reconstruction the guide describes).
    fn apply(old: &str, diff: &str) -> String {
        let old_lines = lines(old);
        let mut out: Vec<String> = Vec::new();
        let mut next = 0usize; // the next old line (0-based) not yet copied
        let mut body = diff.lines().skip(2).peekable();
        while let Some(hunk) = body.next() {
            let ranges: Vec<usize> = hunk
                .trim_matches(|c| c == '@' || c == ' ')
                .split([' ', ','])
                .map(|s| s.trim_start_matches(['-', '+']).parse().unwrap())
                .collect();
            let (start, deleted) = (ranges[0], ranges[1]);
            let first = if deleted == 0 { start } else { start - 1 };
            out.extend(old_lines[next..first].iter().map(|s| (*s).to_owned()));
            next = first + deleted;
            for _ in 0..deleted {
                assert!(body.next().unwrap().starts_with('-'));
            }
            while let Some(line) = body.next_if(|l| l.starts_with('+')) {
                out.push(line[1..].to_owned());
            }
        }
        out.extend(old_lines[next..].iter().map(|s| (*s).to_owned()));
        out.join("\n")
    }

    #[test]
    fn a_small_change_to_a_long_value_is_a_unified_diff_with_the_new_values_hash() {
        // The guide's example: a word replaced in one paragraph, a sentence appended to another.
        let old = long_text(20);
        let new = old
            .replace("Paragraph 1: business applications", "Paragraph 1: business apps")
            .replace("Paragraph 6: business applications are moving to the cloud, and the shift has gained momentum over ten years.",
                "Paragraph 6: business applications are moving to the cloud, and the shift has gained momentum over ten years. Dig deeper.");
        let diff = diff_value(&old, &new).expect("a diff");
        let expected_head = format!(
            "--- \n+++ {}\n@@ -2,1 +2,1 @@\n-Paragraph 1: business applications",
            sha256_hex(&new)
        );
        assert!(diff.starts_with(&expected_head), "{diff}");
        assert!(diff.contains("\n@@ -7,1 +7,1 @@\n-Paragraph 6"), "{diff}");
        assert_eq!(apply(&old, &diff), new);
        // The hash is the SHA-256 of the whole new value (FIPS 180-2's "abc" vector checks it).
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn insertions_and_deletions_reconstruct() {
        let old = long_text(30);
        let mut lines_new: Vec<String> = old.split('\n').map(str::to_owned).collect();
        lines_new.remove(3);
        lines_new.insert(10, "An inserted line.".into());
        lines_new.push("A last line.".into());
        let new = lines_new.join("\n");
        let diff = diff_value(&old, &new).expect("a diff");
        assert!(diff.contains("@@ -4,1 +3,0 @@"), "{diff}");
        assert_eq!(apply(&old, &diff), new);
    }

    #[test]
    fn the_documented_conditions_send_the_full_value() {
        let old = long_text(20);
        // Under 1,000 characters.
        let short = long_text(5);
        assert!(short.len() < 1_000);
        assert_eq!(
            diff_value(&short, &short.replace("Paragraph 1", "Para 1")),
            None
        );
        // Lengths differing by more than 50 %.
        let longer = format!("{old}\n{}", long_text(12));
        assert_eq!(diff_value(&old, &longer), None);
        // More than 25 % of the lines changed (6 of 20 lines: 12 of 40 old + new lines).
        let mut many = old.clone();
        for i in 0..6 {
            many = many.replace(&format!("Paragraph {i}:"), &format!("Section {i}:"));
        }
        assert_eq!(diff_value(&old, &many), None);
        // A single-line value: its one line changed (also, the diff would be longer).
        let one_line = "x".repeat(1_500);
        assert_eq!(diff_value(&one_line, &format!("{one_line}y")), None);
        // Unchanged.
        assert_eq!(diff_value(&old, &old), None);
    }
}
