//! Parsing a policy's config table (JSON text) into a typed struct.

#[cfg(test)]
use crate::ConfigError;
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
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Rule {
        path_prefix: String,
        #[serde(default)]
        status: u16,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Config {
        threshold: u32,
        rules: Vec<Rule>,
    }

    fn refused(json: &str) -> ConfigError {
        match config::<Config>(json) {
            Err(Error::InvalidConfig(e)) => e,
            other => panic!("expected invalid config, got {other:?}"),
        }
    }

    #[test]
    fn empty_and_null_configs_are_empty_tables() {
        assert_eq!(config::<Config>("").expect("empty"), Config::default());
        assert_eq!(config::<Config>(" null ").expect("null"), Config::default());
    }

    #[test]
    fn parses_a_valid_config() {
        let c: Config =
            config(r#"{"threshold": 3, "rules": [{"path_prefix": "/a"}]}"#).expect("valid");
        assert_eq!(c.threshold, 3);
        assert_eq!(c.rules[0].path_prefix, "/a");
    }

    #[test]
    fn wrong_type_names_the_nested_key() {
        let e =
            refused(r#"{"rules": [{"path_prefix": "/a"}, {"path_prefix": "/b", "status": "x"}]}"#);
        assert_eq!(e.key, "rules[1].status");
        assert_eq!(e.reason, "invalid type: string \"x\", expected u16");
    }

    #[test]
    fn unknown_and_missing_fields_name_the_field() {
        let e = refused(r#"{"threshhold": 3}"#);
        assert_eq!(e.key, "threshhold");
        assert!(
            e.reason.starts_with("unknown field `threshhold`"),
            "{}",
            e.reason
        );

        let e = refused(r#"{"rules": [{"path_prefx": "/a"}]}"#);
        assert_eq!(e.key, "rules[0].path_prefx");

        let e = refused(r#"{"rules": [{"status": 1}]}"#);
        assert_eq!(e.key, "rules[0].path_prefix");
        assert_eq!(e.reason, "missing field `path_prefix`");
    }

    #[test]
    fn malformed_json_is_refused_at_the_root() {
        let e = refused(r#"{"threshold": 3"#);
        assert_eq!(e.key, "");
        assert!(e.reason.starts_with("EOF while parsing"), "{}", e.reason);
        let e = refused(r#"{} x"#);
        assert_eq!(e.key, "");
    }
}
