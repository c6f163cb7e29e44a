//! The fuzz targets (`forcebridge::tools::fuzzing`, also built by `fuzz/` for cargo fuzz) in a short
//! mode: each target runs over its seed corpus and then over deterministic pseudo-random
//! mutations (bit flips, interesting bytes, truncation, splicing, Avro varint length bumps,
//! re-encoded events with random bitmaps, JSON edits of write-back messages) for a fixed short
//! time, at least `MIN_RUNS` and at most `MAX_RUNS` inputs. A panic is a failure (the input is
//! printed and saved under `target/fuzz-short/`). So that a target refusing everything cannot
//! pass, each must accept and refuse a real share of its mutated inputs.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use apache_avro::types::Value as Avro;
use serde_json::{Value, json};

use forcebridge::sim::catalog::FieldKind;
use forcebridge::tools::fuzzing::{self, Fixture, Outcome, Seed};

/// Inputs run per target regardless of the clock (the counts below are about these).
const MIN_RUNS: usize = 1_500;
/// Hard cap on inputs per target.
const MAX_RUNS: usize = 40_000;
/// Time per target once `MIN_RUNS` are done.
const BUDGET: Duration = Duration::from_secs(4);

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn seeds_of(target: &str) -> Vec<Seed> {
    fuzzing::seeds()
        .expect("seed events encode")
        .into_iter()
        .filter(|s| s.target == target)
        .collect()
}

/// Runs `target` on `data`; a panic fails the test with the input, saved for `cargo fuzz run`.
fn run_one(target: &str, data: &[u8]) -> Outcome {
    match catch_unwind(AssertUnwindSafe(|| fuzzing::run(target, data))) {
        Ok(Some(outcome)) => outcome,
        Ok(None) => panic!("unknown target {target}"),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-short");
            let file = dir.join(format!("crash-{target}-{:016x}", fnv(data)));
            let saved = std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(&file, data))
                .map_or_else(
                    |e| format!("not saved: {e}"),
                    |()| file.display().to_string(),
                );
            panic!(
                "target {target} panicked: {message}\ninput ({} bytes, {saved}): {data:?}",
                data.len()
            );
        }
    }
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---------------------------------------------------------------------------------------------
// Byte-level mutations (every target)
// ---------------------------------------------------------------------------------------------

const INTERESTING: [u8; 10] = [0, 1, 2, 0x7f, 0x80, 0xff, 0xfe, b',', b'-', b'0'];

/// Zig-zag varint at `pos` (Avro's `int`/`long`): value and encoded length.
fn read_varint(data: &[u8], pos: usize) -> Option<(i64, usize)> {
    let mut acc: u64 = 0;
    for (i, &b) in data.get(pos..)?.iter().take(10).enumerate() {
        acc |= u64::from(b & 0x7f) << (7 * i as u32);
        if b & 0x80 == 0 {
            return Some((((acc >> 1) as i64) ^ -((acc & 1) as i64), i + 1));
        }
    }
    None
}

fn write_varint(v: i64) -> Vec<u8> {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// One random byte-level mutation of `data`; byte 0 (selector / flags) is kept mostly.
fn mutate_bytes(rng: &mut Rng, data: &[u8], others: &[Seed]) -> Vec<u8> {
    let mut d = data.to_vec();
    let body = |rng: &mut Rng, d: &[u8]| 1 + rng.below(d.len().max(2) - 1);
    match rng.below(9) {
        0 => {
            for _ in 0..=rng.below(4) {
                if d.len() > 1 {
                    let i = body(rng, &d).min(d.len() - 1);
                    d[i] ^= 1 << rng.below(8);
                }
            }
        }
        1 => {
            if d.len() > 1 {
                let i = body(rng, &d).min(d.len() - 1);
                d[i] = *rng.pick(&INTERESTING);
            }
        }
        2 => {
            // Truncation.
            let keep = rng.below(d.len().max(1));
            d.truncate(keep.max(1));
        }
        3 => {
            // Splice with another seed (same selector byte kept).
            let other = &rng.pick(others).data;
            let cut = rng.below(d.len().max(1));
            let from = rng.below(other.len().max(1));
            d.truncate(cut.max(1));
            d.extend_from_slice(&other[from.max(1).min(other.len())..]);
        }
        4 => {
            // Delete a range.
            if d.len() > 2 {
                let a = body(rng, &d).min(d.len() - 1);
                let b = (a + 1 + rng.below(8)).min(d.len());
                d.drain(a..b);
            }
        }
        5 => {
            // Grow: duplicate a chunk (an event larger than expected) or insert random bytes.
            let at = body(rng, &d).min(d.len());
            let chunk: Vec<u8> = if rng.chance(50) && d.len() > 1 {
                let a = body(rng, &d).min(d.len() - 1);
                d[a..(a + 1 + rng.below(64)).min(d.len())].to_vec()
            } else {
                (0..=rng.below(8)).map(|_| rng.next() as u8).collect()
            };
            d.splice(at..at, chunk);
        }
        6 | 7 => {
            // Bump a varint (an Avro length, count, union branch or number).
            for _ in 0..8 {
                let p = body(rng, &d);
                let Some((v, n)) = read_varint(&d, p) else {
                    continue;
                };
                let nv = match rng.below(9) {
                    0 => v.wrapping_add(1),
                    1 => v.wrapping_sub(1),
                    2 => v.wrapping_mul(2),
                    3 => v.wrapping_neg(),
                    4 => v.wrapping_add(1 + rng.below(16) as i64),
                    5 => 1 << 20,
                    6 => i64::from(i32::MAX) + 1,
                    7 => i64::MIN,
                    _ => -1,
                };
                d.splice(p..p + n, write_varint(nv));
                break;
            }
        }
        _ => {
            // Mutate the selector / flags byte.
            if let Some(b) = d.first_mut() {
                *b = rng.next() as u8;
            }
        }
    }
    d
}

// ---------------------------------------------------------------------------------------------
// Bitmaps
// ---------------------------------------------------------------------------------------------

fn hex_of(rng: &mut Rng, bits: &[usize]) -> String {
    let width = bits.iter().max().map_or(1, |m| m / 4 + 1) + rng.below(3);
    let mut digits = vec![0u32; width];
    for &b in bits {
        digits[width - 1 - b / 4] |= 1 << (b % 4);
    }
    let upper = rng.chance(50);
    let s: String = digits
        .iter()
        .map(|&d| {
            let c = char::from_digit(d, 16).unwrap_or('0');
            if upper { c.to_ascii_uppercase() } else { c }
        })
        .collect();
    format!("{}{s}", if rng.chance(90) { "0x" } else { "0X" })
}

/// A random subset of `0..n` (`n > 0`), sometimes with one bit past the end.
fn bits(rng: &mut Rng, n: usize, past_end: bool) -> Vec<usize> {
    let mut out: Vec<usize> = (0..=rng.below(4)).map(|_| rng.below(n)).collect();
    if past_end {
        out.push(n + rng.below(6));
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// One bitmap element: mostly valid for `fx`, otherwise out of range, truncated or malformed.
fn bitmap_element(rng: &mut Rng, fx: &Fixture) -> String {
    let top = fx.catalog.fields.len() + usize::from(fx.catalog.is_change_event);
    let compounds: Vec<(usize, usize)> = fx
        .catalog
        .fields
        .iter()
        .filter_map(|f| match &f.kind {
            FieldKind::Compound(children) => Some((f.position, children.len())),
            FieldKind::Scalar(_) => None,
        })
        .collect();
    let valid_top = |rng: &mut Rng| {
        let b = bits(rng, top, false);
        hex_of(rng, &b)
    };
    match rng.below(12) {
        0..=3 => valid_top(rng),
        4..=6 if !compounds.is_empty() => {
            let &(p, n) = rng.pick(&compounds);
            let b = bits(rng, n, false);
            format!("{p}-{}", hex_of(rng, &b))
        }
        7 => {
            let b = bits(rng, top, true);
            hex_of(rng, &b)
        }
        8 => {
            // A nested bitmap on a wrong or missing position, or past the compound's children.
            let p = rng.below(top + 3);
            let n = compounds.iter().find(|c| c.0 == p).map_or(3, |c| c.1);
            let past = rng.chance(50);
            let b = bits(rng, n, past);
            format!("{p}-{}", hex_of(rng, &b))
        }
        9 => {
            // Truncated.
            let s = valid_top(rng);
            s[..rng.below(s.len())].to_owned()
        }
        _ => rng
            .pick(&[
                "",
                "0x",
                "x1",
                "1-",
                "-0x1",
                "0xZZ",
                "0x1 ",
                " 0x1",
                "+4-0x1",
                "4--0x1",
                "\u{0664}-0x1",
                "99999999999999999999999-0x1",
                "0x00000000000000000000000000000000000000000001",
                "0x0-0x1",
                "0-0x1",
                "0xé",
            ])
            .to_string(),
    }
}

fn bitmap_strings(rng: &mut Rng, fx: &Fixture) -> Vec<String> {
    (0..rng.below(4)).map(|_| bitmap_element(rng, fx)).collect()
}

// ---------------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------------

/// Replaces a header bitmap (or the record ids) of a real event and re-encodes it, so that the
/// decoder sees well-formed Avro with bad (or good) header content.
fn reencode_event(rng: &mut Rng, data: &[u8]) -> Option<Vec<u8>> {
    let (&selector, payload) = data.split_first()?;
    let fx = fuzzing::fixture(selector);
    let mut r = payload;
    let Avro::Record(mut fields) =
        apache_avro::from_avro_datum(&fx.schema.schema, &mut r, None).ok()?
    else {
        return None;
    };
    if fx.catalog.is_change_event {
        let Avro::Record(header) = &mut fields[0].1 else {
            return None;
        };
        let which = *rng.pick(&[
            "changedFields",
            "nulledFields",
            "diffFields",
            "recordIds",
            "changeOrigin",
        ]);
        let slot = &mut header.iter_mut().find(|(n, _)| n == which)?.1;
        *slot = match which {
            "recordIds" => Avro::Array(
                (0..rng.below(4))
                    .map(|i| Avro::String(format!("001SIM00000000{i}AAA")))
                    .collect(),
            ),
            "changeOrigin" => Avro::String(rng.pick(&["", "client=forcebridge"]).to_string()),
            _ => Avro::Array(
                bitmap_strings(rng, fx)
                    .into_iter()
                    .map(Avro::String)
                    .collect(),
            ),
        };
    } else {
        // A platform event: flip an optional field to null or back.
        let i = rng.below(fields.len());
        if let Avro::Union(0, _) = fields[i].1 {
            fields[i].1 = Avro::Union(1, Box::new(Avro::String("x".into())));
        } else if let Avro::Union(1, _) = fields[i].1 {
            fields[i].1 = Avro::Union(0, Box::new(Avro::Null));
        }
    }
    let mut out = vec![selector];
    out.extend(apache_avro::to_avro_datum(&fx.schema.schema, Avro::Record(fields)).ok()?);
    Some(out)
}

fn random_json(rng: &mut Rng) -> Value {
    match rng.below(14) {
        0 => Value::Null,
        1 => json!(rng.chance(50)),
        2 => json!(rng.next() as i64),
        3 => json!(-1.5),
        4 => json!(1e300),
        5 => json!([1, "a"]),
        6 => json!({"nested": {"x": 1}}),
        7 => json!(""),
        8 => json!("  "),
        9 => json!("001SIM000000001AAA"),
        10 => json!("001SIM000000001"),
        11 => json!("2024-02-30T25:61:61.000+9999"),
        12 => json!("1970-01-01T00:00:00Z"),
        _ => json!("ünïcødé ☃"),
    }
}

const KEYS: [&str; 8] = [
    "object",
    "operation",
    "id",
    "external_id_field",
    "fields",
    "timestamp",
    "extra",
    "Object",
];
const FIELD_NAMES: [&str; 10] = [
    "Name",
    "Id",
    "attributes",
    "Internal__c",
    "customer_name",
    "External_Id__c",
    "Email_Key__c",
    "bad name",
    "",
    "last",
];
const STRINGS: [&str; 14] = [
    "Account",
    "account",
    "Contact",
    "Order__c",
    "1Bad",
    "",
    "insert",
    "UPDATE",
    "Upsert",
    "delete",
    "merge",
    "External_Id__c",
    "Email_Key__c",
    "ERP-1",
];

/// A JSON edit of a write-back seed, or byte-level damage, with random flags and headers.
fn mutate_message(rng: &mut Rng, data: &[u8], others: &[Seed]) -> Vec<u8> {
    if rng.chance(30) {
        return mutate_bytes(rng, data, others);
    }
    // The seed's value is what follows its header section.
    let start = if data[0] & fuzzing::WB_HEADERS != 0 {
        2 + usize::from(data.get(1).copied().unwrap_or(0))
    } else {
        1
    };
    let mut v: Value =
        serde_json::from_slice(data.get(start..).unwrap_or_default()).unwrap_or_else(|_| json!({}));
    for _ in 0..=rng.below(3) {
        let Some(m) = v.as_object_mut() else { break };
        let key = *rng.pick(&KEYS);
        match rng.below(6) {
            0 => {
                m.remove(key);
            }
            1 => {
                m.insert(key.to_owned(), random_json(rng));
            }
            2 => {
                m.insert(key.to_owned(), json!(rng.pick(&STRINGS)));
            }
            3 => {
                let fields = m.entry("fields").or_insert_with(|| json!({}));
                if let Some(f) = fields.as_object_mut() {
                    let value = if rng.chance(50) {
                        json!(rng.pick(&STRINGS))
                    } else {
                        random_json(rng)
                    };
                    f.insert(rng.pick(&FIELD_NAMES).to_string(), value);
                }
            }
            4 => {
                if let Some(f) = m.get_mut("fields").and_then(Value::as_object_mut) {
                    let name = rng.pick(&FIELD_NAMES).to_string();
                    f.remove(&name);
                }
            }
            _ => {
                m.insert("timestamp".to_owned(), json!(rng.next() as i64 % 10_000));
            }
        }
    }
    let value = serde_json::to_vec(&v).unwrap_or_default();
    let headers = rng
        .chance(30)
        .then(|| (rng.pick(&STRINGS).as_bytes(), rng.pick(&STRINGS).as_bytes()));
    fuzzing::writeback_input(
        (!rng.chance(3)).then_some(value.as_slice()),
        rng.chance(60),
        headers,
    )
}

fn mutate(target: &str, rng: &mut Rng, seeds: &[Seed]) -> Vec<u8> {
    let data = &rng.pick(seeds).data;
    match target {
        "cdc_decode" => {
            if rng.chance(35)
                && let Some(d) = reencode_event(rng, data)
            {
                return d;
            }
            let mut d = mutate_bytes(rng, data, seeds);
            if rng.chance(20) {
                d = mutate_bytes(rng, &d, seeds);
            }
            d
        }
        "bitmap" => {
            if rng.chance(50) {
                let fx = fuzzing::fixture(data[0]);
                let mut d = vec![data[0]];
                d.extend_from_slice(bitmap_strings(rng, fx).join(",").as_bytes());
                d
            } else {
                mutate_bytes(rng, data, seeds)
            }
        }
        _ => mutate_message(rng, data, seeds),
    }
}

#[derive(Debug, Default)]
struct Counts {
    runs: usize,
    accepted: usize,
    rejected: usize,
}

/// Seeds, then mutations: at least `MIN_RUNS`, then until `BUDGET` or `MAX_RUNS`.
fn short_run(target: &str, rng_seed: u64) -> Counts {
    let seeds = seeds_of(target);
    assert!(!seeds.is_empty(), "{target} has seeds");
    for s in &seeds {
        run_one(target, &s.data);
    }
    let mut rng = Rng(rng_seed);
    let mut counts = Counts::default();
    let started = Instant::now();
    while counts.runs < MAX_RUNS && (counts.runs < MIN_RUNS || started.elapsed() < BUDGET) {
        let input = mutate(target, &mut rng, &seeds);
        match run_one(target, &input) {
            Outcome::Accepted => counts.accepted += 1,
            Outcome::Rejected => counts.rejected += 1,
        }
        counts.runs += 1;
    }
    eprintln!(
        "{target}: {} mutated inputs in {:.1?}: {} accepted, {} rejected",
        counts.runs,
        started.elapsed(),
        counts.accepted,
        counts.rejected
    );
    // A target that returns early on everything (or accepts everything) does not exercise the
    // code: each outcome must be a real share of the runs.
    let share = |n: usize| n * 100 / counts.runs;
    assert!(share(counts.accepted) >= 10, "{target}: {counts:?}");
    assert!(share(counts.rejected) >= 10, "{target}: {counts:?}");
    counts
}

#[test]
fn cdc_decode_short_fuzz() {
    short_run("cdc_decode", 0x9e37_79b9_7f4a_7c15);
}

#[test]
fn bitmap_short_fuzz() {
    short_run("bitmap", 0xd1b5_4a32_d192_ed03);
}

#[test]
fn writeback_message_short_fuzz() {
    short_run("writeback_message", 0x94d0_49bb_1331_11eb);
}

/// Every seed is what it claims: real events and their bitmaps decode, and each committed
/// corpus file (seeds and any regression input added later) runs without a panic.
/// `FORCEBRIDGE_WRITE_FUZZ_SEEDS=1` (re)writes the seeds into `fuzz/corpus/<target>/`.
#[test]
fn seeds_are_valid_and_committed() {
    let seeds = fuzzing::seeds().expect("seed events encode");
    let write = std::env::var_os("FORCEBRIDGE_WRITE_FUZZ_SEEDS").is_some();
    let mut per_target: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &seeds {
        let outcome = run_one(s.target, &s.data);
        let expect_ok = s.target != "writeback_message" || s.name != "tombstone";
        assert_eq!(
            outcome == Outcome::Accepted,
            expect_ok,
            "seed {}/{}",
            s.target,
            s.name
        );
        *per_target.entry(s.target).or_default() += 1;
        let path = corpus_dir(s.target).join(&s.name);
        if write {
            std::fs::create_dir_all(corpus_dir(s.target)).unwrap();
            std::fs::write(&path, &s.data).unwrap();
        }
        assert!(
            path.is_file(),
            "{} is not committed: run FORCEBRIDGE_WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_short",
            path.display()
        );
    }
    assert_eq!(
        per_target.keys().copied().collect::<Vec<_>>(),
        ["bitmap", "cdc_decode", "writeback_message"]
    );
    for target in fuzzing::TARGETS {
        let mut files = 0;
        for entry in std::fs::read_dir(corpus_dir(target)).unwrap() {
            let path = entry.unwrap().path();
            run_one(target, &std::fs::read(&path).unwrap());
            files += 1;
        }
        assert!(files >= per_target[target], "{target}: {files} files");
    }
}
