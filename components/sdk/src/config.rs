//! Parsing a policy's config table (JSON text) into a typed struct.

use crate::Error;
use serde::de::DeserializeOwned;

/// Parses the JSON text `init` receives into `T`.
///
/// An empty string or `null` counts as an empty table, so a policy whose
/// fields all have defaults runs without a `config` key. A refused value
/// becomes [`Error::InvalidConfig`] whose `key` is the path to it
/// (`deny[0].status`, or the field's name for an unknown or missing field).
pub fn config<T: DeserializeOwned>(json: &str) -> Result<T, Error> {
    edgegate_policy_core::parse_config(json).map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConfigError;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Config {
        threshold: u32,
    }

    /// The parsing itself is `edgegate_policy_core::parse_config`'s (tested
    /// there); here: its refusal becomes the WIT `invalid-config` error.
    #[test]
    fn refusals_become_invalid_config_errors() {
        match config::<Config>(r#"{"threshold": "x"}"#) {
            Err(Error::InvalidConfig(ConfigError { key, reason })) => {
                assert_eq!(key, "threshold");
                assert_eq!(reason, "invalid type: string \"x\", expected u32");
            }
            other => panic!("expected invalid config, got {other:?}"),
        }
    }
}
