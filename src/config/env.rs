//! From text to config types: the YAML parse ([`parse`]), with `${NAME}` interpolated inside
//! the parsed string scalars (`interpolate.rs`), never in the text.
//!
//! Contract: a parse error names the offending key path (`source.channels[1].name`) and, where
//! serde knows it, the line; an error about an interpolated value names the variable, never its
//! value. Nothing here validates values.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::error::ConfigError;
use super::interpolate::Interpolating;

/// The text of a config file.
pub(super) fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Parses `text` as YAML into `T`, interpolating `${NAME}` (`env` resolves it) in its strings.
pub(super) fn parse<T: DeserializeOwned>(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<T, ConfigError> {
    let deserializer = Interpolating::new(serde_yaml::Deserializer::from_str(text), &env);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let key = err.path().to_string();
        let inner = err.into_inner();
        let location = inner
            .location()
            .map(|l| format!("line {}: ", l.line()))
            .unwrap_or_default();
        ConfigError::Parse {
            location,
            message: strip_location(&inner.to_string(), &key),
            key,
        }
    })
}

/// serde_yaml appends "at line L column C", and prefixes the key path to the errors of a
/// visitor (e.g. interpolation's); we print the line and the key ourselves, first.
fn strip_location(message: &str, key: &str) -> String {
    let message = message
        .strip_prefix(key)
        .and_then(|m| m.strip_prefix(": "))
        .unwrap_or(message);
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}
