//! Schema cache: `schema_id` → parsed Avro writer schema plus the tables the decoder needs.
//!
//! Contract (see `ARCHITECTURE.md`):
//! * Every event is decoded with the schema named by its own `schema_id`, never with a schema
//!   looked up by topic, so a schema change in the middle of a stream needs no restart.
//! * A schema is fetched once ([`SchemaSource`], implemented by the Pub/Sub client with
//!   `GetSchema`). Concurrent callers asking for the same id share one fetch (single flight).
//! * Blank ids (the generic `/data/ChangeEvents` channel sends them) and unknown ids are errors.
//!   Only [`SchemaError::Unavailable`] is worth retrying, and [`SchemaError::Unauthenticated`]
//!   after a new login (the caller's); a schema that does not parse is
//!   remembered as broken, so its events go to the dead-letter topic without refetching.
//! * Parsing precomputes everything per schema that the hot path needs: a compiled decoder, the
//!   `ChangeEventHeader` field roles and the field-name tables for bitmap expansion.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use apache_avro::Schema;
use tokio::sync::OnceCell;

pub use super::layout::EventKind;
use super::layout::Layout;
use crate::retry::Directive;

/// Where schemas come from (the Pub/Sub client implements this with `GetSchema`).
pub trait SchemaSource: Send + Sync {
    /// The Avro schema JSON for `schema_id`.
    fn schema_json(
        &self,
        schema_id: &str,
    ) -> impl std::future::Future<Output = Result<String, SourceError>> + Send;
}

/// Why a [`SchemaSource`] could not deliver a schema.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The server does not know the id (permanent for this id).
    #[error("schema {schema_id} not found: {message}")]
    NotFound { schema_id: String, message: String },
    /// Transport or server trouble; worth retrying.
    #[error("schema source unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The server refused the session; worth retrying after a new login.
    #[error("schema source refused the session: {0}")]
    Unauthenticated(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Why [`SchemaCache::get`] failed. Cheap to clone (sources are shared).
#[derive(Debug, Clone, thiserror::Error)]
pub enum SchemaError {
    /// The event carried an empty `schema_id`.
    #[error("blank schema id")]
    Blank,
    #[error("schema {schema_id} not found: {message}")]
    NotFound { schema_id: String, message: String },
    #[error("schema {schema_id} unavailable: {source}")]
    Unavailable {
        schema_id: String,
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The server refused the session: log in again, then retry.
    #[error("schema {schema_id}: the session was refused: {source}")]
    Unauthenticated {
        schema_id: String,
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The schema JSON is not a valid Avro schema.
    #[error("schema {schema_id} does not parse: {source}")]
    Parse {
        schema_id: String,
        #[source]
        source: Arc<apache_avro::Error>,
    },
    /// Valid Avro, but not an event schema we can decode (e.g. the top level is not a record).
    #[error("schema {schema_id} is not a usable event schema: {reason}")]
    Unsupported { schema_id: String, reason: String },
}

impl SchemaError {
    /// A transient source failure is worth retrying ([`Directive::Retry`]), a refused session
    /// after a new login ([`Directive::Reauthenticate`]); everything else is permanent for the
    /// id, so its events are dead-lettered ([`Directive::DeadLetter`]).
    pub fn directive(&self) -> Directive {
        match self {
            SchemaError::Unavailable { .. } => Directive::Retry,
            SchemaError::Unauthenticated { .. } => Directive::Reauthenticate,
            _ => Directive::DeadLetter,
        }
    }
}

/// A parsed writer schema with its precomputed decode tables.
#[derive(Debug)]
pub struct EventSchema {
    pub id: String,
    pub schema: Schema,
    pub kind: EventKind,
    /// Compiled decoder and field tables, built once per schema.
    pub(crate) layout: Layout,
}

impl EventSchema {
    /// Whether this is a change event schema whose `ChangeEventHeader` begins with
    /// `entityName`, so that a payload of it names its entity first.
    pub(crate) fn entity_name_first(&self) -> bool {
        self.layout.entity_name_first()
    }

    /// Parses `json` and precomputes the decode tables.
    pub fn parse(id: impl Into<String>, json: &str) -> Result<Self, SchemaError> {
        let id = id.into();
        match Schema::parse_str(json) {
            Ok(schema) => Self::from_schema(id, schema),
            Err(e) => Err(SchemaError::Parse {
                schema_id: id,
                source: Arc::new(e),
            }),
        }
    }

    /// Precomputes the decode tables for an already parsed schema.
    pub fn from_schema(id: impl Into<String>, schema: Schema) -> Result<Self, SchemaError> {
        let id = id.into();
        match Layout::compile(&schema) {
            Ok(layout) => Ok(EventSchema {
                kind: layout.kind(),
                id,
                schema,
                layout,
            }),
            Err(reason) => Err(SchemaError::Unsupported {
                schema_id: id,
                reason,
            }),
        }
    }

    /// Top-level field names in schema order (position = bitmap bit index).
    pub fn field_names(&self) -> impl ExactSizeIterator<Item = &str> {
        self.layout.fields.top_names()
    }
}

/// A slot per schema id; the `OnceCell` gives single flight. Permanent failures (`Parse`,
/// `Unsupported`) are stored so that broken schemas are not refetched for every event;
/// `NotFound`/`Unavailable` leave the slot empty so the next caller fetches again.
type Slot = Arc<OnceCell<Result<Arc<EventSchema>, SchemaError>>>;

/// `schema_id` → [`EventSchema`], shared by all channels (`Send + Sync`).
#[derive(Default)]
pub struct SchemaCache {
    slots: RwLock<HashMap<String, Slot>>,
}

impl std::fmt::Debug for SchemaCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaCache")
            .field("len", &self.len())
            .finish()
    }
}

impl SchemaCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the schema for `schema_id`, fetching it once (single flight: concurrent callers
    /// for the same id share one fetch). A blank id is [`SchemaError::Blank`].
    pub async fn get<S: SchemaSource>(
        &self,
        schema_id: &str,
        source: &S,
    ) -> Result<Arc<EventSchema>, SchemaError> {
        if schema_id.trim().is_empty() {
            return Err(SchemaError::Blank);
        }
        let slot = self.slot(schema_id);
        if let Some(done) = slot.get() {
            return done.clone();
        }
        let outcome = slot
            .get_or_try_init(|| async {
                tracing::debug!(schema_id, "fetching schema");
                match source.schema_json(schema_id).await {
                    Ok(json) => {
                        let parsed = EventSchema::parse(schema_id, &json).map(Arc::new);
                        match &parsed {
                            Ok(s) => tracing::info!(schema_id, kind = ?s.kind, "schema cached"),
                            Err(e) => tracing::warn!(schema_id, error = %e, "schema unusable"),
                        }
                        Ok(parsed)
                    }
                    Err(SourceError::NotFound { schema_id, message }) => {
                        Err(SchemaError::NotFound { schema_id, message })
                    }
                    Err(SourceError::Unavailable(source)) => Err(SchemaError::Unavailable {
                        schema_id: schema_id.to_owned(),
                        source: Arc::from(source),
                    }),
                    Err(SourceError::Unauthenticated(source)) => {
                        Err(SchemaError::Unauthenticated {
                            schema_id: schema_id.to_owned(),
                            source: Arc::from(source),
                        })
                    }
                }
            })
            .await;
        match outcome {
            Ok(done) => done.clone(),
            Err(e) => Err(e),
        }
    }

    /// Number of schemas held (successfully parsed ones).
    pub fn len(&self) -> usize {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        slots
            .values()
            .filter(|s| matches!(s.get(), Some(Ok(_))))
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slot(&self, schema_id: &str) -> Slot {
        {
            let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
            if let Some(slot) = slots.get(schema_id) {
                return Arc::clone(slot);
            }
        }
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        Arc::clone(slots.entry(schema_id.to_owned()).or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    const PE_SCHEMA: &str = r#"{"type":"record","name":"Order_Event__e","namespace":"com.sforce.eventbus",
        "fields":[{"name":"CreatedDate","type":"long"},{"name":"CreatedById","type":"string"},
                  {"name":"Amount__c","type":["null","double"],"default":null}]}"#;

    /// A fake `GetSchema`: counts calls, answers after a delay so concurrent callers overlap.
    struct Fake {
        calls: AtomicUsize,
        mode: &'static str,
    }

    impl SchemaSource for Fake {
        async fn schema_json(&self, schema_id: &str) -> Result<String, SourceError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            match self.mode {
                "ok" => Ok(PE_SCHEMA.to_owned()),
                "garbage" => Ok("{not json".to_owned()),
                "notfound" => Err(SourceError::NotFound {
                    schema_id: schema_id.to_owned(),
                    message: "INVALID_ARGUMENT: unknown schema".to_owned(),
                }),
                _ => Err(SourceError::Unavailable("connection reset".into())),
            }
        }
    }

    fn fake(mode: &'static str) -> Fake {
        Fake {
            calls: AtomicUsize::new(0),
            mode,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn single_flight_shares_one_fetch() {
        let cache = Arc::new(SchemaCache::new());
        let source = Arc::new(fake("ok"));
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (cache, source) = (Arc::clone(&cache), Arc::clone(&source));
            tasks.push(tokio::spawn(async move {
                cache.get("schema-A", &*source).await.map(|s| s.kind)
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), EventKind::PlatformEvent);
        }
        assert_eq!(source.calls.load(Ordering::SeqCst), 1);
        assert_eq!(cache.len(), 1);
        // Cached: no further fetch, same Arc.
        let a = cache.get("schema-A", &*source).await.unwrap();
        let b = cache.get("schema-A", &*source).await.unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(source.calls.load(Ordering::SeqCst), 1);
        // Another id is another fetch.
        cache.get("schema-B", &*source).await.unwrap();
        assert_eq!(source.calls.load(Ordering::SeqCst), 2);
        assert_eq!(cache.len(), 2);
    }

    #[tokio::test]
    async fn blank_id_is_an_error_without_fetch() {
        let cache = SchemaCache::new();
        let source = fake("ok");
        for id in ["", "  "] {
            let err = cache.get(id, &source).await.unwrap_err();
            assert!(matches!(err, SchemaError::Blank));
            assert_eq!(err.directive(), Directive::DeadLetter);
        }
        assert_eq!(source.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn not_found_vs_unavailable() {
        let cache = SchemaCache::new();
        let nf = fake("notfound");
        let err = cache.get("x", &nf).await.unwrap_err();
        assert!(matches!(&err, SchemaError::NotFound { schema_id, .. } if schema_id == "x"));
        assert_eq!(err.directive(), Directive::DeadLetter);
        assert_eq!(
            err.to_string(),
            "schema x not found: INVALID_ARGUMENT: unknown schema"
        );

        let down = fake("down");
        let err = cache.get("y", &down).await.unwrap_err();
        assert!(matches!(err, SchemaError::Unavailable { .. }));
        assert_eq!(err.directive(), Directive::Retry);
        assert_eq!(err.to_string(), "schema y unavailable: connection reset");
        // Transient failures are not cached: the next call fetches again and can succeed.
        cache.get("y", &down).await.unwrap_err();
        assert_eq!(down.calls.load(Ordering::SeqCst), 2);
        let ok = fake("ok");
        cache.get("y", &ok).await.unwrap();
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn parse_failure_is_permanent_and_remembered() {
        let cache = SchemaCache::new();
        let source = fake("garbage");
        let err = cache.get("bad", &source).await.unwrap_err();
        assert!(matches!(&err, SchemaError::Parse { schema_id, .. } if schema_id == "bad"));
        assert_eq!(err.directive(), Directive::DeadLetter);
        cache.get("bad", &source).await.unwrap_err();
        assert_eq!(source.calls.load(Ordering::SeqCst), 1);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn kind_and_unsupported_schemas() {
        let pe = EventSchema::parse("pe", PE_SCHEMA).unwrap();
        assert_eq!(pe.kind, EventKind::PlatformEvent);
        assert_eq!(
            pe.field_names().collect::<Vec<_>>(),
            ["CreatedDate", "CreatedById", "Amount__c"]
        );
        let err = EventSchema::parse("s", r#""string""#).unwrap_err();
        assert!(matches!(err, SchemaError::Unsupported { .. }), "{err}");
    }
}
