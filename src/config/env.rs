//! From text to config types: `${NAME}` interpolation ([`interpolate`]) and the YAML parse
//! ([`parse`]).
//!
//! Contract: `${NAME}` anywhere in the text is replaced by `env(NAME)` before parsing (`$${` is a
//! literal `${`, a lone `$` stays); an unset variable or an unterminated `${` is an error naming
//! its line. A parse error names the offending key path (`source.channels[1].name`) and, where
//! serde knows it, the line. Nothing here validates values.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::error::ConfigError;

/// The text of a config file.
pub(super) fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Interpolates `text` (`env` resolves `${NAME}`) and parses it as YAML into `T`.
pub(super) fn parse<T: DeserializeOwned>(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<T, ConfigError> {
    let text = interpolate(text, env)?;
    let deserializer = serde_yaml::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let key = err.path().to_string();
        let inner = err.into_inner();
        let location = inner
            .location()
            .map(|l| format!("line {}: ", l.line()))
            .unwrap_or_default();
        ConfigError::Parse {
            key,
            location,
            message: strip_location(&inner.to_string()),
        }
    })
}

/// serde_yaml appends "at line L column C"; we print the line ourselves, first.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Replaces `${NAME}` with the value of `env(NAME)`; `$${` is a literal `${`.
fn interpolate(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let line_of = |rest: &str| text[..text.len() - rest.len()].matches('\n').count() + 1;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail.find('}').ok_or(ConfigError::UnterminatedEnv {
                line: line_of(after),
            })?;
            let name = &tail[..end];
            let value = env(name).ok_or_else(|| ConfigError::MissingEnv {
                name: name.to_owned(),
                line: line_of(after),
            })?;
            out.push_str(&value);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_escape_and_lone_dollar() {
        let out = interpolate("a: $${X} $5 ${Y}", |n| (n == "Y").then(|| "y".into())).unwrap();
        assert_eq!(out, "a: ${X} $5 y");
        assert!(matches!(
            interpolate("a: ${X", |_| None),
            Err(ConfigError::UnterminatedEnv { line: 1 })
        ));
    }
}
