//! The open cursors of SOQL queries larger than one page (see `query`): `query` and `queryAll`
//! cursors alike, each paged under the resource that opened it.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::{Value, json};

/// Open query cursors: the rendered rows of a query larger than one page, served a page at a
/// time through `nextRecordsUrl` (`/services/data/v{ver}/query/01gSIM…-{offset}`, as Salesforce
/// spells query locators). A cursor is closed once its last page is served; at most
/// [`Cursors::MAX_OPEN`] stay open (the oldest is dropped, as Salesforce expires locators).
#[derive(Debug, Default)]
pub(crate) struct Cursors {
    next: u64,
    /// Locator, the resource (`query` or `queryAll`) and the rows.
    open: VecDeque<(String, &'static str, Arc<Vec<Value>>)>,
}

impl Cursors {
    /// Open cursors kept at most.
    pub const MAX_OPEN: usize = 50;

    /// The first page of `rows`; opens a cursor when they do not fit.
    pub(super) fn first_page(
        &mut self,
        rows: Vec<Value>,
        batch: usize,
        version: &str,
        resource: &'static str,
    ) -> Value {
        if rows.len() <= batch {
            return json!({"totalSize": rows.len(), "done": true, "records": rows});
        }
        self.next += 1;
        let locator = format!("01gSIM{:09}", self.next);
        if self.open.len() == Self::MAX_OPEN {
            self.open.pop_front();
        }
        self.open
            .push_back((locator.clone(), resource, Arc::new(rows)));
        self.page(&format!("{locator}-0"), batch, version)
            .unwrap_or(Value::Null)
    }

    /// The page at `{locator}-{offset}`, or `None` for an unknown (or closed) cursor or offset.
    pub(super) fn page(&mut self, at: &str, batch: usize, version: &str) -> Option<Value> {
        let (locator, offset) = at.rsplit_once('-')?;
        let offset: usize = offset.parse().ok()?;
        let index = self.open.iter().position(|(l, _, _)| l == locator)?;
        let (resource, rows) = (self.open[index].1, self.open[index].2.clone());
        if offset >= rows.len() {
            return None;
        }
        let end = (offset + batch).min(rows.len());
        let mut page = json!({
            "totalSize": rows.len(),
            "done": end == rows.len(),
            "records": rows[offset..end].to_vec(),
        });
        if end == rows.len() {
            self.open.remove(index);
        } else {
            page["nextRecordsUrl"] = Value::String(format!(
                "/services/data/v{version}/{resource}/{locator}-{end}"
            ));
        }
        Some(page)
    }
}
