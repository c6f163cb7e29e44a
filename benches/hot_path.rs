//! Criterion micro-benchmarks of forcebridge's hot path (BENCHMARKS.md, "Micro-benchmarks").
//!
//! Inputs are real: change events are committed in the simulated org ([`Org`]) and encoded by it
//! (as `fuzzing::seeds` does), with `Bench_Field_<k>__c` text fields added to Account's schema
//! (as `forcebridge bench source` does); write-back messages follow the README's format and are
//! parsed with the fuzz targets' sink config. Every input is checked once before measuring (field
//! counts, record ids, writes planned), so `cargo test --bench hot_path` — which runs each
//! benchmark once — also checks that the inputs are what the names say.
//!
//! Groups:
//! * `decode`: `cdc::decode` (Avro → `DecodedEvent`, header parsed, bitmaps expanded).
//! * `bitmap`: `cdc::expand_bitmaps` on an event's own `changedFields`.
//! * `to_records`: `cdc::to_records` (decoded event → Kafka records with the JSON envelope).
//! * `encode`: `cdc::encode`, what the pipeline runs per event: decode and envelope in one pass,
//!   straight from the Avro bytes to the records' JSON, with one reused `Scratch`.
//! * `end_to_end`: decode + to_records of one event (the structured path, for comparison).
//! * `writeback_1000`: a batch of 1,000 write-back messages: parse, plan (lookups, indexing the
//!   lookup answers, decisions, collections), the Composite request bodies as sent, and all of it.
//! * `bulk_results_10000`: a Bulk API 2.0 results page of 10,000 rows of 20 quoted columns (one
//!   null, one with `""`, one datetime) read as `rest::ResultsPage`: the row index alone, and
//!   the index with every row's values.
//!
//! Throughput is in elements: events for the CDC groups, records for the write-back batch, rows
//! for the results page.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use apache_avro::types::Value as Avro;

/// The allocator of the `forcebridge` binary, so that the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use secrecy::SecretString;
use serde_json::{Map, Value, json};

use forcebridge::config::{AuthConfig, SalesforceConfig, SinkObjectConfig};
use forcebridge::salesforce::auth::{Authenticator, Session, SessionHandle};
use forcebridge::salesforce::rest::{
    ColumnDelimiter, LimitGuard, Reserve, RestClient, ResultsPage, SubRequest,
};
use forcebridge::sim::org::{BuiltEvent, CommitContext, Op, Org};
use forcebridge::sink::message::{self, ParseOptions, WriteOp};
use forcebridge::sink::plan::{self, COMPOSITE_COLLECTIONS, Decision, Write};
use forcebridge::source::cdc::schema::EventSchema;
use forcebridge::source::cdc::{self, DecodedEvent, EnvelopeOptions, RawEvent};

const USER: &str = "005SIM000000001AAA";
/// Another user: the last modifier of the records the write-back lookups find.
const OTHER_USER: &str = "005SIM000000002AAA";
const NOW: i64 = 1_763_892_900_000;
const CHANNEL: &str = "/data/AccountChangeEvent";
/// `Bench_Field_<k>__c` text fields added to Account's schema.
const BENCH_FIELDS: usize = 8;
/// Records per write-back batch (`sink.batch_records`' default and maximum).
const BATCH: usize = 1_000;

// ---------------------------------------------------------------------------------------------
// CDC inputs
// ---------------------------------------------------------------------------------------------

/// One change event as the pipeline receives it.
struct Event {
    schema: EventSchema,
    event_id: String,
    payload: Vec<u8>,
}

// A replay id as real orgs send it: 8 bytes big-endian and two zero bytes.
const REPLAY_ID: [u8; 10] = [0, 0, 0, 0, 0, 1, 0x86, 0xa0, 0, 0];

impl Event {
    fn raw(&self) -> RawEvent<'_> {
        RawEvent {
            channel: CHANNEL,
            replay_id: &REPLAY_ID,
            event_id: &self.event_id,
            schema_id: &self.schema.id,
            payload: &self.payload,
        }
    }

    fn decode(&self) -> DecodedEvent {
        cdc::decode(&self.schema, &self.payload).expect("a simulator-encoded event decodes")
    }
}

struct CdcInputs {
    /// CREATE of an Account carrying 30 body fields (`Name`, 16 more standard fields of all
    /// types incl. a compound address, 8 bench text fields, 5 system fields).
    create_30: Event,
    /// CREATE of an Account carrying 8 body fields (`Name`, `Phone`, `Industry`, 5 system).
    create_8: Event,
    /// UPDATE of that 30-field Account: 24 fields changed (2 set to null, 3 parts of
    /// `BillingAddress`, one of them nulled) plus `LastModifiedDate`: 25 fields carried.
    update_30: Event,
    /// One UPDATE event merged over 10 records (identical changes in one transaction).
    update_10_ids: Event,
    /// `changedFields` of `update_30` without its compound element: one `0x…` element.
    bitmap_simple: Vec<String>,
    /// `changedFields` of `update_30`: `0x…` plus `4-0x…` (BillingAddress's parts).
    bitmap_compound: Vec<String>,
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The 30 body fields of a created Account: 17 set here (one compound), 8 bench fields, and
/// the 5 system fields the org adds (`OwnerId`, `CreatedDate`, `CreatedById`,
/// `LastModifiedDate`, `LastModifiedById`).
fn create_fields(external_id: &str) -> Map<String, Value> {
    let mut f = obj(json!({
        "Name": "Acme Corporation",
        "Type": "Customer - Direct",
        "Phone": "+1 415 555 0100",
        "Website": "https://www.acme.example",
        "Industry": "Manufacturing",
        "AnnualRevenue": 1.25e8,
        "NumberOfEmployees": 4200,
        "BillingAddress": {"Street": "1 Market St", "City": "San Francisco", "State": "CA",
                           "PostalCode": "94105", "Country": "United States",
                           "Latitude": 37.7936, "Longitude": -122.3950},
        "Description": "Key account since 2019; renewals handled by the enterprise team, \
                        escalations through the regional office.",
        "Rating": "Hot",
        "Site": "Headquarters",
        "AccountNumber": "CD451796",
        "AccountSource": "Partner Referral",
        "Ownership": "Public",
        "TickerSymbol": "ACME",
        "Sic": "3541",
        "External_Id__c": external_id,
    }));
    for k in 1..=BENCH_FIELDS {
        f.insert(
            format!("Bench_Field_{k}__c"),
            Value::String(format!("{:016}", 1000 + k)),
        );
    }
    f
}

/// 24 changed fields of the 30: 2 nulled (`Phone`, `Sic`), 3 parts of `BillingAddress`
/// (`Country` nulled).
fn update_fields() -> Map<String, Value> {
    let mut f = obj(json!({
        "Name": "Acme Corp",
        "Type": "Customer - Channel",
        "Phone": null,
        "Website": "https://acme.example",
        "Industry": "Engineering",
        "AnnualRevenue": 1.4e8,
        "NumberOfEmployees": 4350,
        "BillingAddress": {"City": "Oakland", "PostalCode": "94607", "Country": null},
        "Description": "Key account; moved to the channel team.",
        "Rating": "Warm",
        "Site": "HQ",
        "AccountNumber": "CD451797",
        "AccountSource": "Web",
        "Ownership": "Private",
        "TickerSymbol": "ACMC",
        "Sic": null,
    }));
    for k in 1..=BENCH_FIELDS {
        f.insert(
            format!("Bench_Field_{k}__c"),
            Value::String(format!("{:016}", 2000 + k)),
        );
    }
    f
}

fn commit(org: &mut Org, ops: Vec<Op>) -> Vec<BuiltEvent> {
    let changes = org
        .commit(&ops, USER, NOW)
        .expect("the org takes the change");
    let ctx = CommitContext {
        origin: "com/salesforce/api/rest/62.0".to_owned(),
        user: USER.to_owned(),
        timestamp: NOW,
        commit_number: org.next_commit_number(),
        transaction_key: "000046c7-a642-11e2-c29b-229c6786473e".to_owned(),
    };
    org.build_events(changes, &ctx)
        .expect("the org encodes its events")
}

fn one_event(org: &mut Org, ops: Vec<Op>) -> Event {
    let mut built = commit(org, ops);
    assert_eq!(built.len(), 1, "one change event per commit here");
    let built = built.remove(0);
    let version = org
        .schema_by_id(&built.event.schema_id)
        .expect("the event's schema is in the org");
    Event {
        schema: EventSchema::parse(version.id.clone(), &version.json).expect("schema parses"),
        event_id: built.event.id,
        payload: built.event.payload.to_vec(),
    }
}

fn header_strings(event: &Event, name: &str) -> Vec<String> {
    let mut rest = event.payload.as_slice();
    let datum = apache_avro::from_avro_datum(&event.schema.schema, &mut rest, None)
        .expect("apache-avro reads the event");
    let field = |v: &Avro, name: &str| -> Avro {
        let Avro::Record(fields) = v else {
            panic!("not a record: {v:?}");
        };
        let (_, v) = fields.iter().find(|(n, _)| n == name).expect("field");
        match v {
            Avro::Union(_, inner) => (**inner).clone(),
            v => v.clone(),
        }
    };
    let header = field(&datum, "ChangeEventHeader");
    match field(&header, name) {
        Avro::Array(items) => items
            .into_iter()
            .map(|i| match i {
                Avro::String(s) => s,
                other => panic!("{name}: {other:?}"),
            })
            .collect(),
        other => panic!("{name}: {other:?}"),
    }
}

fn cdc_inputs() -> CdcInputs {
    let mut org = Org::new().expect("org");
    for k in 1..=BENCH_FIELDS {
        org.add_field("Account", &format!("Bench_Field_{k}__c"), &json!("string"))
            .expect("add a bench field");
    }
    let create = |id: &str, fields: Map<String, Value>| Op::Create {
        object: "Account".to_owned(),
        id: id.to_owned(),
        fields,
    };
    let update = |id: &str, fields: Map<String, Value>| Op::Update {
        object: "Account".to_owned(),
        id: id.to_owned(),
        fields,
    };

    let a = org.reserve_id("Account").expect("id");
    let create_30 = one_event(&mut org, vec![create(&a, create_fields("ERP-1042"))]);
    let b = org.reserve_id("Account").expect("id");
    let create_8 = one_event(
        &mut org,
        vec![create(
            &b,
            obj(json!({"Name": "Beta", "Phone": "+1 555 0101", "Industry": "Energy"})),
        )],
    );
    let update_30 = one_event(&mut org, vec![update(&a, update_fields())]);

    let ids: Vec<String> = (0..10)
        .map(|i| {
            let id = org.reserve_id("Account").expect("id");
            commit(
                &mut org,
                vec![create(&id, create_fields(&format!("ERP-2{i:03}")))],
            );
            id
        })
        .collect();
    let update_10_ids = one_event(
        &mut org,
        ids.iter().map(|id| update(id, update_fields())).collect(),
    );

    let bitmap_compound = header_strings(&update_30, "changedFields");
    let bitmap_simple: Vec<String> = bitmap_compound
        .iter()
        .filter(|e| !e.contains('-'))
        .cloned()
        .collect();

    // The inputs are what their names say.
    let c30 = create_30.decode();
    assert_eq!(c30.record.len(), 30, "create_30 carries 30 fields");
    assert_eq!(c30.header.as_ref().map(|h| h.record_ids.len()), Some(1));
    assert_eq!(
        create_8.decode().record.len(),
        8,
        "create_8 carries 8 fields"
    );
    let u30 = update_30.decode();
    let h = u30.header.as_ref().expect("header");
    assert_eq!(h.change_type, "UPDATE");
    assert_eq!(u30.record.len(), 25, "24 changed fields + LastModifiedDate");
    assert_eq!(h.nulled_fields.len(), 3, "{:?}", h.nulled_fields);
    assert!(h.changed_fields.iter().any(|f| f == "BillingAddress.City"));
    let u10 = update_10_ids.decode();
    assert_eq!(u10.header.map(|h| h.record_ids.len()), Some(10));
    assert_eq!(bitmap_simple.len(), 1, "{bitmap_compound:?}");
    assert_eq!(bitmap_compound.len(), 2, "{bitmap_compound:?}");
    let simple = cdc::expand_bitmaps(&bitmap_simple, &update_30.schema).expect("expands");
    let compound = cdc::expand_bitmaps(&bitmap_compound, &update_30.schema).expect("expands");
    assert_eq!(simple.len(), 24, "{simple:?}");
    assert_eq!(compound.len(), 27, "{compound:?}");

    CdcInputs {
        create_30,
        create_8,
        update_30,
        update_10_ids,
        bitmap_simple,
        bitmap_compound,
    }
}

// ---------------------------------------------------------------------------------------------
// Write-back inputs
// ---------------------------------------------------------------------------------------------

struct WritebackInputs {
    /// Kafka record values (README, "Write-back message format").
    messages: Vec<Vec<u8>>,
    objects: std::collections::BTreeMap<String, SinkObjectConfig>,
    /// What Salesforce answers to each lookup of the batch, in `plan::lookups` order.
    answers: Vec<Vec<Map<String, Value>>>,
    rest: RestClient,
}

impl WritebackInputs {
    fn opts(&self) -> ParseOptions<'_> {
        ParseOptions {
            objects: &self.objects,
            last_write_wins: true,
        }
    }
}

/// 1,000 messages: 40 % Account updates by Id (a mapped field), 30 % Account upserts by
/// External Id (ISO timestamps), 20 % Contact inserts, 10 % Account deletes by Id; every record
/// distinct (the batcher keeps one write per record).
fn writeback_messages(org: &mut Org) -> Vec<Vec<u8>> {
    (0..BATCH)
        .map(|i| {
            let ts = NOW + i as i64;
            let value = match i % 10 {
                0..=3 => json!({"object": "Account", "operation": "update",
                    "id": org.reserve_id("Account").expect("id"), "timestamp": ts,
                    "fields": {"Rating": "Hot", "phone_number": format!("+1 555 {i:04}"),
                               "customer_name": format!("Customer {i}")}}),
                4..=6 => json!({"object": "Account", "operation": "upsert",
                    "timestamp": "2025-11-23T10:15:00.000Z",
                    "fields": {"External_Id__c": format!("ERP-{i:05}"), "Name": format!("Acme {i}"),
                               "Phone": null, "AnnualRevenue": 1.5e6 + i as f64}}),
                7..=8 => json!({"object": "Contact", "operation": "insert",
                    "fields": {"last": format!("Lovelace {i}"), "FirstName": "Ada",
                               "Email": format!("ada.{i}@example.com")}}),
                _ => json!({"object": "Account", "operation": "delete",
                    "id": org.reserve_id("Account").expect("id"), "timestamp": ts}),
            };
            serde_json::to_vec(&value).expect("JSON")
        })
        .collect()
}

fn rest_client() -> RestClient {
    forcebridge::ops::telemetry::install_crypto_provider();
    let http = reqwest::Client::new();
    let config = SalesforceConfig {
        login_url: "https://login.salesforce.com".into(),
        pubsub_endpoint: "https://api.pubsub.salesforce.com:7443".into(),
        api_version: "62.0".into(),
        allow_plaintext: false,
        ca_file: None,
        http_timeout: Duration::from_secs(30),
        client_tag: None,
        auth: AuthConfig::ClientCredentials {
            client_id: "id".into(),
            client_secret: SecretString::from("secret".to_owned()),
        },
    };
    let session = SessionHandle::new(Session {
        access_token: SecretString::from("token".to_owned()),
        instance_url: "https://acme.my.salesforce.com".into(),
        org_id: "00D000000000001AAA".into(),
        user_id: Some(USER.into()),
    });
    RestClient::new(
        http.clone(),
        Authenticator::new(&config, http),
        session,
        "62.0".into(),
        "forcebridge".into(),
        LimitGuard::new(Reserve::Calls(0), Duration::from_secs(60)),
    )
}

fn writeback_inputs() -> WritebackInputs {
    let mut org = Org::new().expect("org");
    let messages = writeback_messages(&mut org);
    let objects =
        serde_yaml::from_str(forcebridge::tools::fuzzing::SINK_OBJECTS_YAML).expect("config");
    let mut inputs = WritebackInputs {
        messages,
        objects,
        answers: Vec::new(),
        rest: rest_client(),
    };
    // Salesforce's answers: every record by Id exists, every other upserted External Id too,
    // each last changed by another user before the messages' timestamps (so all are written).
    let ops = parse_all(&inputs);
    let mut existing: HashMap<String, Map<String, Value>> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        let Some(key) = plan::op_lookup_key(op) else {
            continue;
        };
        let mut record = obj(json!({
            "attributes": {"type": op.object},
            "Id": org.reserve_id(&op.object).expect("id"),
            "SystemModstamp": "2025-11-23T09:00:00.000+0000",
            "LastModifiedById": OTHER_USER,
        }));
        match &op.target {
            message::Target::Id(id) => {
                record.insert("Id".into(), Value::String(id.clone()));
            }
            message::Target::External { field, value } => {
                if i % 2 == 1 {
                    continue;
                }
                record.insert(field.clone(), Value::String(value.clone()));
            }
            message::Target::New => continue,
        }
        existing.insert(key, record);
    }
    let lookups = plan::lookups(&ops, true);
    inputs.answers = lookups
        .iter()
        .map(|l| {
            l.keys
                .iter()
                .filter_map(|k| existing.get(k).cloned())
                .collect()
        })
        .collect();

    // The batch is what the doc says: every message parses, 3 lookups (one Composite call:
    // retrieves by Id, up to 2,000 Ids each, and the External Id query), every record written,
    // 6 collections (two Composite calls).
    assert_eq!(ops.len(), BATCH);
    assert_eq!(lookups.len(), 3, "lookups");
    let (_, writes) = plan_batch(&inputs, &ops);
    assert_eq!(writes.len(), BATCH, "every record is written");
    assert_eq!(chunk_batch(&writes).len(), 6, "collections");
    inputs
}

fn parse_all(inputs: &WritebackInputs) -> Vec<WriteOp> {
    inputs
        .messages
        .iter()
        .map(|m| message::parse(Some(m), &[], inputs.opts()).expect("message parses"))
        .collect()
}

/// The lookups, their answers indexed, the decisions: the batch's queries and writes.
fn plan_batch(inputs: &WritebackInputs, ops: &[WriteOp]) -> (Vec<plan::Lookup>, Vec<Write>) {
    let lookups = plan::lookups(ops, true);
    let mut found = HashMap::new();
    for (lookup, answer) in lookups.iter().zip(&inputs.answers) {
        plan::index_results(lookup, answer, &mut found);
    }
    let writes = ops
        .iter()
        .filter_map(
            |op| match plan::decide(op, &found, Some(Default::default()), Some(USER)) {
                Decision::Write(w) => Some(w),
                _ => None,
            },
        )
        .collect();
    (lookups, writes)
}

/// The writes packed into collections (one isolation group, as in a first round).
fn chunk_batch(writes: &[Write]) -> Vec<plan::Chunk> {
    plan::chunks(writes.iter().enumerate().map(|(i, w)| (i, w, 0)))
}

/// The Composite bodies of the batch's calls, serialized as the HTTP client sends them (lookups
/// five per call, then collections five per call, as `sink::writer` packs them). Returns bytes.
fn bodies(rest: &RestClient, lookups: &[plan::Lookup], chunks: &[plan::Chunk]) -> usize {
    let mut bytes = 0;
    for call in lookups.chunks(COMPOSITE_COLLECTIONS) {
        let requests: Vec<SubRequest> = call.iter().map(|l| l.request.clone()).collect();
        bytes += serde_json::to_vec(&rest.composite_body(&requests))
            .expect("JSON")
            .len();
    }
    for call in chunks.chunks(COMPOSITE_COLLECTIONS) {
        let requests: Vec<SubRequest> = call.iter().map(|c| c.request.clone()).collect();
        bytes += serde_json::to_vec(&rest.composite_body(&requests))
            .expect("JSON")
            .len();
    }
    bytes
}

// ---------------------------------------------------------------------------------------------
// Benchmarks
// ---------------------------------------------------------------------------------------------

fn cdc_benches(c: &mut Criterion) {
    let inputs = cdc_inputs();
    let opts = EnvelopeOptions::default();

    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    for (name, event) in [
        ("create_30_fields", &inputs.create_30),
        ("create_8_fields", &inputs.create_8),
        ("update_30_fields", &inputs.update_30),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| cdc::decode(black_box(&event.schema), black_box(&event.payload)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("bitmap");
    g.throughput(Throughput::Elements(1));
    let schema = &inputs.update_30.schema;
    for (name, bitmaps) in [
        ("simple", &inputs.bitmap_simple),
        ("compound", &inputs.bitmap_compound),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| cdc::expand_bitmaps(black_box(bitmaps), schema))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("to_records");
    g.throughput(Throughput::Elements(1));
    for (name, event) in [
        ("create_30_fields_1_id", &inputs.create_30),
        ("update_30_fields_10_ids", &inputs.update_10_ids),
    ] {
        let decoded = event.decode();
        let raw = event.raw();
        g.bench_function(name, |b| {
            b.iter(|| cdc::to_records(black_box(&raw), black_box(&decoded), &opts))
        });
    }
    g.finish();

    // The pipeline's path: decode and envelope in one pass, buffers reused across events.
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    let mut scratch = cdc::Scratch::default();
    for (name, event) in [
        ("create_30_fields", &inputs.create_30),
        ("create_8_fields", &inputs.create_8),
        ("update_30_fields", &inputs.update_30),
        ("update_30_fields_10_ids", &inputs.update_10_ids),
    ] {
        let raw = event.raw();
        g.bench_function(name, |b| {
            b.iter(|| {
                cdc::encode(&event.schema, black_box(&raw), &opts, &mut scratch).expect("encodes")
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("end_to_end");
    g.throughput(Throughput::Elements(1));
    for (name, event) in [
        ("create_30_fields", &inputs.create_30),
        ("update_30_fields", &inputs.update_30),
    ] {
        let raw = event.raw();
        g.bench_function(name, |b| {
            b.iter(|| {
                let raw = black_box(&raw);
                let decoded = cdc::decode(&event.schema, raw.payload).expect("decodes");
                cdc::to_records(raw, &decoded, &opts)
            })
        });
    }
    g.finish();
}

fn writeback_benches(c: &mut Criterion) {
    let inputs = writeback_inputs();
    let ops = parse_all(&inputs);
    let (lookups, writes) = plan_batch(&inputs, &ops);
    let chunks = chunk_batch(&writes);

    let mut g = c.benchmark_group("writeback_1000");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("parse", |b| b.iter(|| parse_all(black_box(&inputs))));
    g.bench_function("plan", |b| {
        b.iter(|| {
            let (lookups, writes) = plan_batch(&inputs, black_box(&ops));
            (lookups, chunk_batch(&writes))
        })
    });
    g.bench_function("composite_bodies", |b| {
        b.iter(|| bodies(&inputs.rest, black_box(&lookups), black_box(&chunks)))
    });
    g.bench_function("batch", |b| {
        b.iter(|| {
            let ops = parse_all(black_box(&inputs));
            let (lookups, writes) = plan_batch(&inputs, &ops);
            let chunks = chunk_batch(&writes);
            bodies(&inputs.rest, &lookups, &chunks)
        })
    });
    g.finish();
}

const RESULT_ROWS: usize = 10_000;
const RESULT_COLUMNS: usize = 20;

/// A results page as Salesforce writes it: every value quoted, a null as `""`.
fn results_body() -> bytes::Bytes {
    let mut body = (0..RESULT_COLUMNS)
        .map(|c| format!("\"Field{c}__c\""))
        .collect::<Vec<_>>()
        .join(",");
    body.push('\n');
    for r in 0..RESULT_ROWS {
        let row: Vec<String> = (0..RESULT_COLUMNS)
            .map(|c| match c {
                0 => format!("\"001{r:015}\""),
                3 => "\"\"".to_owned(),
                5 => "\"Acme, \"\"Inc\"\"\"".to_owned(),
                7 => "\"2024-01-31T12:05:09.000+0000\"".to_owned(),
                _ => format!("\"value {c} of row {r}\""),
            })
            .collect();
        body.push_str(&row.join(","));
        body.push('\n');
    }
    bytes::Bytes::from(body)
}

fn read_page(body: &bytes::Bytes) -> ResultsPage {
    ResultsPage::parse(
        "bench",
        body.clone(),
        ColumnDelimiter::Comma,
        Some("null"),
        Some(RESULT_ROWS as u64),
    )
    .expect("results page")
}

fn bulk_results_benches(c: &mut Criterion) {
    let body = results_body();
    let page = read_page(&body);
    let row = page.row(RESULT_ROWS - 1).expect("last row");
    assert_eq!((page.len(), row.len()), (RESULT_ROWS, RESULT_COLUMNS));
    assert_eq!(row[3], None);
    assert_eq!(row[5].as_deref(), Some("Acme, \"Inc\""));

    let mut g = c.benchmark_group("bulk_results_10000");
    g.throughput(Throughput::Elements(RESULT_ROWS as u64));
    g.bench_function("index", |b| b.iter(|| read_page(black_box(&body)).len()));
    g.bench_function("index_and_rows", |b| {
        b.iter(|| {
            let page = read_page(black_box(&body));
            page.rows()
                .map(|row| row.expect("row").len())
                .sum::<usize>()
        })
    });
    g.finish();
}

criterion_group! {
    name = hot_path;
    // Modest: the whole run stays around a minute on 2 shared cores. Flags still override it
    // (`cargo bench --bench hot_path -- --measurement-time 10`).
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = cdc_benches, writeback_benches, bulk_results_benches
}
criterion_main!(hot_path);
