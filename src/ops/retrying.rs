//! What the process is waiting out now: transient failures (a Salesforce login, the Pub/Sub
//! connection, Kafka at start, a re-login mid-run) retried with backoff instead of ending the
//! process, for `/readyz` and `/metrics`.
//!
//! Contract: a step (e.g. `source: salesforce login`) that failed transiently calls
//! [`Retrying::failed`] with its reason before it backs off, and [`Retrying::recovered`] once it
//! succeeds. [`Retrying::not_ready`] lists every step failing now as
//! `"<step>: retrying after <reason>"` (one line each, at most [`MAX_REASON`] characters of the
//! reason); [`render`] writes [`TRANSIENT_RETRIES`], the failures counted per step since start.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Transient failures retried (each followed by a backoff), labelled `step`.
pub const TRANSIENT_RETRIES: &str = "forcebridge_transient_retries_total";

/// The longest reason `/readyz` repeats (an HTML page is cut).
pub const MAX_REASON: usize = 300;

/// The steps retrying now and the failures counted per step (shared by a side's tasks).
#[derive(Debug, Default)]
pub struct Retrying {
    steps: Mutex<BTreeMap<&'static str, Step>>,
}

#[derive(Debug, Default)]
struct Step {
    retries: u64,
    /// The last failure's reason, while the step has not succeeded since.
    failing: Option<String>,
}

impl Retrying {
    /// `step` failed transiently with `reason`; it will be tried again after a backoff.
    pub fn failed(&self, step: &'static str, reason: &str) {
        let mut steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        let entry = steps.entry(step).or_default();
        entry.retries += 1;
        entry.failing = Some(one_line(reason));
    }

    /// `step` succeeded: it is no longer a reason not to be ready.
    pub fn recovered(&self, step: &'static str) {
        let mut steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = steps.get_mut(step) {
            entry.failing = None;
        }
    }

    /// The `/readyz` reasons of the steps failing now.
    pub fn not_ready(&self) -> Vec<String> {
        let steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        steps
            .iter()
            .filter_map(|(step, s)| {
                let reason = s.failing.as_ref()?;
                Some(format!("{step}: retrying after {reason}"))
            })
            .collect()
    }

    /// Failures counted per step.
    pub fn retries(&self) -> Vec<(&'static str, u64)> {
        let steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        steps.iter().map(|(step, s)| (*step, s.retries)).collect()
    }
}

/// `reason` on one line (line breaks escaped, as in text logs) and cut to [`MAX_REASON`].
fn one_line(reason: &str) -> String {
    let mut out = String::new();
    for (count, c) in reason.chars().enumerate() {
        if count >= MAX_REASON {
            out.push('…');
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The [`TRANSIENT_RETRIES`] family (Prometheus text 0.0.4) of every step of `sides`; empty
/// when nothing was retried yet.
pub fn render(sides: &[&Retrying]) -> String {
    let samples: Vec<(&'static str, u64)> = sides.iter().flat_map(|r| r.retries()).collect();
    if samples.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "# HELP {TRANSIENT_RETRIES} Transient failures retried after a backoff (login, Pub/Sub connection, Kafka at start), per step.\n# TYPE {TRANSIENT_RETRIES} counter\n"
    );
    for (step, n) in samples {
        let label = step.replace('\\', "\\\\").replace('"', "\\\"");
        out.push_str(&format!("{TRANSIENT_RETRIES}{{step=\"{label}\"}} {n}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_step_is_a_reason_until_it_recovers() {
        let r = Retrying::default();
        assert!(r.not_ready().is_empty());
        assert_eq!(render(&[&r]), "");
        r.failed(
            "source: salesforce login",
            "HTTP 503\n<html>Down for maintenance</html>",
        );
        r.failed(
            "source: salesforce login",
            "HTTP 503\n<html>Down for maintenance</html>",
        );
        assert_eq!(
            r.not_ready(),
            [
                "source: salesforce login: retrying after HTTP 503\\n<html>Down for maintenance</html>"
            ]
        );
        r.recovered("source: salesforce login");
        assert!(r.not_ready().is_empty());
        let page = render(&[&r, &Retrying::default()]);
        assert!(
            page.contains(
                "forcebridge_transient_retries_total{step=\"source: salesforce login\"} 2\n"
            ),
            "{page}"
        );
    }

    #[test]
    fn long_reasons_are_cut() {
        let r = Retrying::default();
        r.failed("kafka", &"x".repeat(5000));
        let reason = &r.not_ready()[0];
        assert!(reason.chars().count() < MAX_REASON + 40, "{reason}");
    }
}
