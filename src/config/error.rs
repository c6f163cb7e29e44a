//! The errors of loading a config: each names what is wrong and where (the key path, the line).

/// Errors while loading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// YAML did not match the schema, or a `${NAME}` in it could not be interpolated.
    #[error("{location}`{key}`: {message}")]
    Parse {
        key: String,
        location: String,
        message: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("`{key}`: {message}")]
    Invalid { key: String, message: String },
}

pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}
