//! Config errors: each names the resource, the field path and the problem.

use std::borrow::Cow;
use std::fmt;

/// What is wrong with a config field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The text is not valid YAML/JSON or does not match the proto schema.
    Syntax,
    /// A field, extension or enum value that Legate does not implement.
    Unsupported,
    /// A required field is missing.
    Missing,
    /// A value is out of range or malformed.
    Invalid,
    /// A name refers to a resource that does not exist.
    UnknownReference,
    /// Two resources share a name or an address.
    Duplicate,
}

/// One problem in a config, located by resource and field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub kind: ErrorKind,
    /// Resource the problem is in, for example `Cluster "backend"`; empty for
    /// problems outside any resource.
    pub resource: String,
    /// Field path inside the resource, in proto field names, for example
    /// `load_assignment.endpoints[0].lb_endpoints[1]`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let location = match (self.resource.is_empty(), self.path.is_empty()) {
            (true, true) => String::new(),
            (false, true) => format!("{}: ", self.resource),
            (true, false) => format!("{}: ", self.path),
            (false, false) => format!("{} at {}: ", self.resource, self.path),
        };
        write!(f, "{location}{}", self.message)
    }
}

/// Every problem found in one config, so a user sees them all at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }
}

/// Collects errors and ignored fields while one resource is decoded.
///
/// The path is a stack of proto field names, pushed and popped as the decoder
/// walks into nested messages.
#[derive(Debug, Default)]
pub struct Collector {
    resource: String,
    /// Field names are mostly literals, borrowed so that decoding a valid
    /// resource allocates no path.
    path: Vec<Cow<'static, str>>,
    errors: Vec<ConfigError>,
    ignored: Vec<String>,
}

impl Collector {
    pub fn new(resource: impl Into<String>) -> Self {
        Collector { resource: resource.into(), ..Default::default() }
    }

    /// Runs `decode` with `segment` appended to the field path.
    pub fn at<T>(&mut self, segment: impl Into<Cow<'static, str>>, decode: impl FnOnce(&mut Self) -> T) -> T {
        self.path.push(segment.into());
        let result = decode(self);
        self.path.pop();
        result
    }

    pub fn error(&mut self, kind: ErrorKind, message: impl Into<String>) {
        self.errors.push(ConfigError {
            kind,
            resource: self.resource.clone(),
            path: self.current_path(),
            message: message.into(),
        });
    }

    pub fn unsupported(&mut self, message: impl Into<String>) {
        self.error(ErrorKind::Unsupported, message);
    }

    pub fn invalid(&mut self, message: impl Into<String>) {
        self.error(ErrorKind::Invalid, message);
    }

    pub fn missing(&mut self, field: &str) {
        self.error(ErrorKind::Missing, format!("{field} is required"));
    }

    /// Records a field that was accepted but changes nothing about traffic.
    pub fn ignored(&mut self, field: &str) {
        let path = self.current_path();
        let full = if path.is_empty() { field.to_string() } else { format!("{path}.{field}") };
        self.ignored.push(format!("{}: {full}", self.resource));
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Returns `value` if no error was recorded, otherwise every error.
    pub fn finish<T>(self, value: T) -> Result<Decoded<T>, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(Decoded { value, ignored: self.ignored })
        } else {
            Err(ConfigErrors(self.errors))
        }
    }

    /// Returns every error recorded so far.
    pub fn into_errors(self) -> ConfigErrors {
        ConfigErrors(self.errors)
    }

    fn current_path(&self) -> String {
        let mut path = String::new();
        for segment in &self.path {
            if !path.is_empty() && !segment.starts_with('[') {
                path.push('.');
            }
            path.push_str(segment);
        }
        path
    }
}

/// A decoded value and the fields that were accepted but ignored.
#[derive(Debug, Clone)]
pub struct Decoded<T> {
    pub value: T,
    pub ignored: Vec<String>,
}
