//! An org seeded with records that existed before anything listened: [`Org::seed`] writes
//! records straight into the org, without change events (they predate every subscription), as
//! a real org holds its existing data.
//!
//! Contract: `count` records of `object` (Account or Contact) with fresh Ids (after every Id
//! issued so far, so in Id order), deterministic from `seed` and their index: plausible names,
//! phones, billing/mailing addresses, numbers, a `Description` (the Long Text Area) on about one
//! record in ten, some fields null, an `External_Id__c` (`seed-{seed}-{n}`, indexed like any
//! other), `CreatedDate` spread over the two years before now in Id order and
//! `LastModifiedDate` = `SystemModstamp` between it and now (whole seconds, as the org stores
//! datetimes), `CreatedById`/`LastModifiedById`/`OwnerId` the given user. The records pass no
//! validation rule check (seeded data predates the rules) but are well-typed for the schema.

use serde_json::{Map, Value as Json, json};

use super::state::{Org, Record, unique_key};
use crate::sim::error::SimError;
use crate::sim::util::{org_now, to_second};

/// SplitMix64: a small deterministic generator (one stream per record).
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const FIRST: &[&str] = &[
    "Ada", "Grace", "Linus", "Margaret", "Alan", "Hedy", "Tim", "Radia", "Ken", "Barbara", "José",
    "Zoë",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Turing",
    "Lamarr",
    "Berners-Lee",
    "Perlman",
    "Thompson",
    "Liskov",
    "Núñez",
    "O'Brien",
];
const WORDS: &[&str] = &[
    "Global",
    "United",
    "Acme",
    "Northern",
    "Blue",
    "Summit",
    "Pioneer",
    "Quantum",
    "Coastal",
    "Evergreen",
];
const SUFFIX: &[&str] = &[
    "Corp", "Inc.", "Ltd", "GmbH", "Partners", "Holdings", "& Co.", "Systems",
];
const INDUSTRIES: &[&str] = &[
    "Technology",
    "Banking",
    "Retail",
    "Energy",
    "Media",
    "Healthcare",
    "Education",
];
const TYPES: &[&str] = &[
    "Customer - Direct",
    "Customer - Channel",
    "Prospect",
    "Partner",
];
const CITIES: &[(&str, &str, &str, &str)] = &[
    ("San Francisco", "CA", "US", "94105"),
    ("Austin", "TX", "US", "78701"),
    ("Paris", "", "FR", "75002"),
    ("Berlin", "", "DE", "10115"),
    ("Tokyo", "", "JP", "100-0005"),
    ("São Paulo", "", "BR", "01310-100"),
];

fn address(r: &mut Mix, n: u64) -> Json {
    let (city, state, country, zip) = CITIES[(r.next() % CITIES.len() as u64) as usize];
    let mut a = json!({
        "Street": format!("{} {} Street", n % 9_000 + 1, r.pick(WORDS)),
        "City": city, "PostalCode": zip, "CountryCode": country,
    });
    if !state.is_empty() {
        a["StateCode"] = state.into();
    }
    a
}

fn description(r: &mut Mix) -> String {
    let lines = 3 + r.next() % 20;
    (0..lines)
        .map(|i| {
            format!(
                "Note {i}: {} \"{}\", {}.",
                r.pick(WORDS),
                r.pick(SUFFIX),
                r.pick(INDUSTRIES)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn fields(object: &str, seed: u64, n: u64) -> Map<String, Json> {
    let mut r = Mix(seed ^ n.wrapping_mul(0xA24B_AED4_963E_E407));
    let phone = format!("+1 415 555 {:04}", r.next() % 10_000);
    let mut out = match object {
        "Account" => json!({
            "Name": format!("{} {} {}", r.pick(WORDS), r.pick(LAST), r.pick(SUFFIX)),
            "Type": r.pick(TYPES),
            "Industry": r.pick(INDUSTRIES),
            "Phone": phone,
            "BillingAddress": address(&mut r, n),
            "NumberOfEmployees": (r.next() % 50_000) as i64 + 1,
            "AnnualRevenue": (r.next() % 100_000_000) as f64 / 4.0,
            "AccountSource": "Web",
            "Website": format!("https://www.example{n}.com"),
        }),
        _ => json!({
            "Name": {"FirstName": r.pick(FIRST), "LastName": r.pick(LAST)},
            "Email": format!("contact{n}@example.com"),
            "Phone": phone,
            "Title": r.pick(&["Buyer", "CTO", "Engineer", "VP Sales"]),
            "MailingAddress": address(&mut r, n),
            "HasOptedOutOfEmail": r.chance(20),
        }),
    };
    // Some nulls: a field or two left unset on some records.
    if r.chance(15) {
        if let Some(m) = out.as_object_mut() {
            m.remove("Phone");
        }
    }
    if r.chance(10) {
        out["Description"] = description(&mut r).into();
    }
    match out {
        Json::Object(m) => m,
        _ => Map::new(),
    }
}

impl Org {
    /// Seeds `count` existing records of `object` (see the module's contract); returns the
    /// first and last Id written (`None` when `count` is 0).
    pub fn seed(
        &mut self,
        object: &str,
        count: usize,
        seed: u64,
        user: &str,
    ) -> Result<Option<(String, String)>, SimError> {
        if !matches!(object, "Account" | "Contact") || !self.has_object(object) {
            return Err(SimError::UnknownObject(object.to_owned()));
        }
        let now = org_now();
        let span: i64 = 2 * 365 * 24 * 3600 * 1000;
        let o = self
            .objects
            .get_mut(object)
            .ok_or_else(|| SimError::UnknownObject(object.to_owned()))?;
        o.records.reserve(count);
        let mut first = None;
        let mut last = None;
        for i in 0..count {
            let n = i as u64;
            let id = o.ids.next_id();
            let mut rec = fields(object, seed, n);
            let created = to_second(now - span + span * i as i64 / count.max(1) as i64);
            let mut r = Mix(seed.wrapping_add(n));
            let modified = to_second(created + ((r.next() % 1000) as i64 * (now - created) / 1000));
            rec.insert("Id".into(), Json::String(id.clone()));
            rec.insert(
                "External_Id__c".into(),
                Json::String(format!("seed-{seed}-{n}")),
            );
            for (k, v) in [
                ("CreatedDate", created),
                ("LastModifiedDate", modified),
                ("SystemModstamp", modified),
            ] {
                rec.insert(k.into(), v.into());
            }
            for k in ["CreatedById", "LastModifiedById", "OwnerId"] {
                rec.insert(k.into(), user.into());
            }
            for f in &o.external_ids {
                if let Some(key) = rec.get(f).and_then(unique_key) {
                    o.index
                        .entry(f.clone())
                        .or_default()
                        .insert(key, id.clone());
                }
            }
            if first.is_none() {
                first = Some(id.clone());
            }
            last = Some(id.clone());
            o.records.insert(
                id,
                Record {
                    fields: rec,
                    deleted: false,
                },
            );
        }
        Ok(first.zip(last))
    }
}
