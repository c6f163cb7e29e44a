//! Loading a config: what every entry point calls before anything starts (`main`, the tools, the
//! tests). Config parses the file and makes its own checks; the checks of the `salesforce` section
//! that need the Salesforce clients' knowledge are theirs
//! ([`crate::salesforce::checks::ConfigChecks`]), and so are those of topic names
//! ([`crate::kafka::TopicTemplates`]): handed in here, so `config` imports no stage.
//!
//! Contract: [`Config::load`] and [`Config::from_yaml`] refuse a config that any check refuses,
//! with the first failing check's error (naming its key), in the order of
//! [`Config::validate_with`]; what they return has passed every check.

use std::path::Path;

use crate::config::{Config, ConfigError};
use crate::kafka::TopicTemplates;
use crate::salesforce::checks::ConfigChecks;

impl Config {
    /// Reads, interpolates, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let config = Config::parse_file(path)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates config text; `env` resolves `${NAME}`.
    pub fn from_yaml(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let config = Config::parse(text, env)?;
        config.validate()?;
        Ok(config)
    }

    /// Cross-field and range checks, the Salesforce clients' included; each error names its key.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.validate_with(&ConfigChecks, &TopicTemplates)
    }
}
