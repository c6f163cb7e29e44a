//! What every fuzz target shares: [`Outcome`], what it made of an input, and the bundled event
//! schemas ([`Fixture`]) that a selector byte picks ([`fixture`]).
//!
//! Contract: [`fixtures`] parses the bundled schemas once (as the pipeline and as the simulator
//! see them) and caps apache-avro's allocations, so that the oracle never allocates for a corrupt
//! length prefix; the selector byte indexes them modulo their number, bit 7 left out.

use std::sync::{Arc, OnceLock};

use crate::sim::catalog::{ACCOUNT_CHANGE_EVENT, CONTACT_CHANGE_EVENT, ORDER_EVENT, SchemaVersion};
use crate::source::cdc::schema::EventSchema;

/// What a target made of one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Decoded / parsed successfully.
    Accepted,
    /// Refused with an error (the dead-letter path).
    Rejected,
}

/// One of the bundled event schemas (`schemas/*.avsc`), as the pipeline and the simulator see it.
#[derive(Debug)]
pub struct Fixture {
    /// The Pub/Sub channel its events arrive on.
    pub(crate) channel: &'static str,
    /// As the pipeline parses it (compiled decoder, field tables).
    pub schema: EventSchema,
    /// As the simulator's catalog parses it (field positions, compound children).
    pub catalog: Arc<SchemaVersion>,
}

/// The bundled schemas; the selector byte of [`cdc_decode`](super::cdc_decode) and [`bitmap`](super::bitmap) indexes this
/// (modulo its length).
pub(crate) fn fixtures() -> &'static [Fixture] {
    static FIXTURES: OnceLock<Vec<Fixture>> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        // Corrupt length prefixes must not make the oracle allocate: no payload here is large.
        apache_avro::util::max_allocation_bytes(1 << 20);
        [
            ("/data/AccountChangeEvent", ACCOUNT_CHANGE_EVENT),
            ("/data/ContactChangeEvent", CONTACT_CHANGE_EVENT),
            ("/event/Order_Event__e", ORDER_EVENT),
        ]
        .into_iter()
        .map(|(channel, json)| {
            let catalog = SchemaVersion::parse(json).expect("bundled schema parses (simulator)");
            let schema =
                EventSchema::parse(catalog.id.clone(), json).expect("bundled schema parses");
            Fixture {
                channel,
                schema,
                catalog,
            }
        })
        .collect()
    })
}

/// The fixture a selector byte names (bit 7 is a flag, not part of the index).
pub fn fixture(selector: u8) -> &'static Fixture {
    let all = fixtures();
    &all[usize::from(selector & 0x7f) % all.len()]
}
