//! [`ConfigError`]: every problem found in a configuration, each with its key path.

use std::fmt;

/// One problem in a configuration: where (a dotted key path) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key path, e.g. `dependencies.payments.timeout` (empty for whole-file problems).
    pub path: String,
    /// What is wrong, lowercase, naming the offending value.
    pub message: String,
}

impl Problem {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A configuration that cannot be used, with every problem found in it.
///
/// `Display` prints one line per problem, each prefixed by the source (a file name, or
/// `<config>` for text given directly), so an operator can fix them all in one pass:
///
/// ```text
/// healthgate.toml: dependencies.payments: timeout (5s) must be less than interval (5s)
/// healthgate.toml: services.readiness.dependencies.paymnts: no dependency named "paymnts"
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    source_name: String,
    problems: Vec<Problem>,
}

impl ConfigError {
    pub(crate) fn new(source_name: impl Into<String>, problems: Vec<Problem>) -> ConfigError {
        debug_assert!(
            !problems.is_empty(),
            "a config error has at least one problem"
        );
        ConfigError {
            source_name: source_name.into(),
            problems,
        }
    }

    /// Where the configuration came from (a file path, or `<config>`).
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// Every problem found, in key order.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {problem}", self.source_name)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A TOML key segment as it must be written in a path: bare when it can be, quoted otherwise
/// (`services.""`, `dependencies."my dep"`).
pub(crate) fn key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare {
        name.to_owned()
    } else {
        format!("{name:?}")
    }
}
