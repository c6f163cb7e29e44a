//! Log setup: tracing to stderr, as text lines or JSON objects, one line per event.
//!
//! Contract: a log line cannot be forged. Values in log events come from outside (write-back
//! keys, record Ids, External Id values, Salesforce's error messages); in text format a newline
//! or carriage return inside one would start what looks like a line of its own. The JSON format
//! escapes them already; for text, [`OneLine`] writes every `\n` and `\r` of an event but its final
//! newline as the two characters `\n` / `\r` (and `\` before them as `\\`, so the escape cannot
//! be faked either), so one event is always exactly one line.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Sets up tracing to stderr; `RUST_LOG` filters (default `default_level`).
pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // A second init (tests, demo inside run) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.with_writer(OneLine(io::stderr)).try_init(),
        LogFormat::Json => builder.json().with_writer(io::stderr).try_init(),
    };
}

/// A [`MakeWriter`] whose writers escape line breaks inside an event (see the module doc). The
/// fmt layer formats each event into one buffer and writes it with one `write_all`, so each
/// writer sees exactly one event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OneLine<M>(pub(crate) M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for OneLine<M> {
    type Writer = OneLineWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        OneLineWriter(self.0.make_writer())
    }
}

/// The writer of [`OneLine`].
#[derive(Debug)]
pub(crate) struct OneLineWriter<W>(W);

impl<W: Write> Write for OneLineWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(&escape_line(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// `text` with `\`, `\n` and `\r` escaped, except one final newline.
fn escape_line(text: &[u8]) -> Vec<u8> {
    let (body, end) = match text.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (text, &b""[..]),
    };
    if !body.iter().any(|b| matches!(b, b'\n' | b'\r')) {
        return text.to_vec();
    }
    let mut out = Vec::with_capacity(text.len() + 8);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\\' => out.extend_from_slice(b"\\\\"),
            _ => out.push(b),
        }
    }
    out.extend_from_slice(end);
    out
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn line_breaks_inside_an_event_are_escaped() {
        assert_eq!(escape_line(b"plain line\n"), b"plain line\n");
        assert_eq!(
            escape_line(b"a\\b\n"),
            b"a\\b\n",
            "untouched without breaks"
        );
        assert_eq!(
            escape_line(b"key=a\nERROR forged\r\\n\n"),
            b"key=a\\nERROR forged\\r\\\\n\n"
        );
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A write-back key with a newline cannot forge a log line (issue 19, item 9): it failed
    /// before, when text logs went to stderr unescaped.
    #[test]
    fn a_value_with_a_newline_stays_on_its_event_line() {
        let capture = Capture::default();
        let sink = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(OneLine(move || sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let key = "001\n2026-12-04T00:00:00Z ERROR forcebridge: forged";
            tracing::warn!(key = %key, "write-back refused");
            tracing::info!("next");
        });
        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains("key=001\\n2026-12-04T00:00:00Z ERROR"),
            "{text}"
        );
        assert!(lines[1].contains("next"), "{text}");
    }
}
