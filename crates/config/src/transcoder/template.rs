//! `google.api.http` path templates: parsed once at config load into
//! segments, then matched against request paths without allocating until a
//! variable is bound.
//!
//! Grammar (from `google/api/http.proto`):
//! `Template = "/" Segments [ ":" Verb ]`, `Segment = "*" | "**" | LITERAL | Variable`,
//! `Variable = "{" FieldPath [ "=" Segments ] "}"`.

use percent_encoding::percent_decode_str;

/// A compiled path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    segments: Vec<Segment>,
    verb: Option<String>,
    /// The variables in template order.
    pub variables: Vec<Variable>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    Single,
    /// `**`: the rest of the path, zero or more segments.
    Multi,
}

/// A `{field.path=segments}` variable, covering `segments[start..end]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// The dotted field path, such as `book.name`.
    pub field_path: String,
    start: usize,
    end: usize,
}

/// Failure to parse a path template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path template {template:?} is invalid: {reason}")]
pub struct TemplateError {
    pub template: String,
    pub reason: &'static str,
}

impl PathTemplate {
    pub fn parse(template: &str) -> Result<PathTemplate, TemplateError> {
        let fail = |reason| TemplateError { template: template.to_string(), reason };
        let Some(rest) = template.strip_prefix('/') else { return Err(fail("it must start with '/'")) };
        let (path, verb) = split_verb(rest);
        if verb.is_some_and(|verb| verb.is_empty() || verb.contains(['/', '{', '}', '*'])) {
            return Err(fail("the verb after ':' must be a non-empty literal"));
        }

        let mut parsed = PathTemplate { segments: Vec::new(), verb: verb.map(str::to_string), variables: Vec::new() };
        for part in split_top_level(path) {
            if let Some(inner) = part.strip_prefix('{') {
                let inner = inner.strip_suffix('}').ok_or_else(|| fail("a variable must end with '}'"))?;
                let (field_path, pattern) = inner.split_once('=').unwrap_or((inner, "*"));
                if field_path.is_empty() || !field_path.split('.').all(is_identifier) {
                    return Err(fail("a variable must name a field path such as {book.name}"));
                }
                let start = parsed.segments.len();
                for piece in pattern.split('/') {
                    parsed.segments.push(plain_segment(piece).map_err(fail)?);
                }
                parsed.variables.push(Variable { field_path: field_path.to_string(), start, end: parsed.segments.len() });
            } else {
                parsed.segments.push(plain_segment(part).map_err(fail)?);
            }
        }
        let multi = parsed.segments.iter().position(|segment| *segment == Segment::Multi);
        if multi.is_some_and(|index| index + 1 != parsed.segments.len()) {
            return Err(fail("'**' may only be the last segment"));
        }
        Ok(parsed)
    }

    /// Matches a request path (without its query) and returns the bound
    /// variables, percent-decoded, in template order. A variable over one
    /// segment decodes every escape; one over several keeps `%2F` as it is,
    /// so the segments stay distinguishable.
    pub fn matches(&self, path: &str) -> Option<Vec<String>> {
        let rest = path.strip_prefix('/')?;
        let rest = match &self.verb {
            Some(verb) => rest.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => rest,
        };

        // Each request is tried against many templates, so a template that
        // does not match allocates nothing.
        let split = || rest.split('/').filter(|_| !rest.is_empty());
        let count = split().count();
        let has_multi = self.segments.last() == Some(&Segment::Multi);
        let fixed = self.segments.len() - usize::from(has_multi);
        if count < fixed || (!has_multi && count != fixed) {
            return None;
        }

        for (segment, part) in self.segments.iter().zip(split()) {
            let fits = match segment {
                Segment::Literal(literal) => literal == part,
                Segment::Single => !part.is_empty(),
                Segment::Multi => true,
            };
            if !fits {
                return None;
            }
        }

        let parts: Vec<&str> = split().collect();
        let values = self
            .variables
            .iter()
            .map(|variable| {
                let end = if has_multi && variable.end == self.segments.len() { parts.len() } else { variable.end };
                let joined = parts[variable.start..end].join("/");
                if end - variable.start == 1 {
                    percent_decode_str(&joined).decode_utf8_lossy().into_owned()
                } else {
                    decode_except_slash(&joined)
                }
            })
            .collect();
        Some(values)
    }

    /// Orders templates so that a literal segment wins over `*`, and `*`
    /// over `**`, at the first segment where two templates differ.
    pub fn specificity_key(&self) -> Vec<u8> {
        let mut key: Vec<u8> = self
            .segments
            .iter()
            .map(|segment| match segment {
                Segment::Literal(_) => 0,
                Segment::Single => 1,
                Segment::Multi => 2,
            })
            .collect();
        key.push(if self.verb.is_some() { 0 } else { 1 });
        key
    }
}

/// Splits `path:verb` at a ':' outside braces after the last '/'.
fn split_verb(path: &str) -> (&str, Option<&str>) {
    let mut depth = 0;
    let mut last_colon = None;
    for (index, byte) in path.bytes().enumerate() {
        match byte {
            b'{' => depth += 1,
            b'}' => depth -= 1,
            b'/' if depth == 0 => last_colon = None,
            b':' if depth == 0 => last_colon = Some(index),
            _ => {}
        }
    }
    match last_colon {
        Some(index) => (&path[..index], Some(&path[index + 1..])),
        None => (path, None),
    }
}

/// Splits at '/' outside braces.
fn split_top_level(path: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (index, byte) in path.bytes().enumerate() {
        match byte {
            b'{' => depth += 1,
            b'}' => depth -= 1,
            b'/' if depth == 0 => {
                parts.push(&path[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&path[start..]);
    parts
}

fn plain_segment(text: &str) -> Result<Segment, &'static str> {
    match text {
        "*" => Ok(Segment::Single),
        "**" => Ok(Segment::Multi),
        "" => Err("a segment is empty"),
        literal if literal.contains(['{', '}', '*', '=']) => Err("a literal segment contains '{', '}', '*' or '='"),
        literal => Ok(Segment::Literal(literal.to_string())),
    }
}

fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|first| first.is_ascii_alphabetic() || first == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn decode_except_slash(text: &str) -> String {
    text.split("%2F")
        .flat_map(|piece| piece.split("%2f"))
        .map(|piece| percent_decode_str(piece).decode_utf8_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("%2F")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(template: &str, path: &str) -> Option<Vec<String>> {
        PathTemplate::parse(template).unwrap().matches(path)
    }

    #[test]
    fn variables_bind_segments() {
        assert_eq!(bound("/v1/shelves/{shelf}/books/{id}", "/v1/shelves/s%201/books/7"), Some(vec!["s 1".into(), "7".into()]));
        assert_eq!(bound("/v1/shelves/{shelf}/books/{id}", "/v1/shelves/s1/books"), None);
        assert_eq!(bound("/v1/{name=shelves/*/books/*}", "/v1/shelves/a/books/b"), Some(vec!["shelves/a/books/b".into()]));
        assert_eq!(bound("/v1/{name=shelves/*}", "/v1/books/a"), None);
    }

    #[test]
    fn double_star_takes_the_rest() {
        assert_eq!(bound("/v1/files/{path=**}", "/v1/files/a/b%2Fc/d"), Some(vec!["a/b%2Fc/d".into()]));
        assert_eq!(bound("/v1/files/{path=**}", "/v1/files"), Some(vec!["".into()]));
        assert_eq!(bound("/v1/**", "/v1/x/y"), Some(vec![]));
    }

    #[test]
    fn verbs_must_match() {
        assert_eq!(bound("/v1/books/{id}:publish", "/v1/books/3:publish"), Some(vec!["3".into()]));
        assert_eq!(bound("/v1/books/{id}:publish", "/v1/books/3"), None);
    }

    #[test]
    fn invalid_templates_are_rejected() {
        for template in ["v1/books", "/v1/**/books", "/v1/{}", "/v1/{id", "/v1//x", "/v1/{a-b}", "/v1/x:"] {
            assert!(PathTemplate::parse(template).is_err(), "{template}");
        }
    }

    #[test]
    fn literals_sort_before_wildcards() {
        let literal = PathTemplate::parse("/v1/books/special").unwrap();
        let variable = PathTemplate::parse("/v1/books/{id}").unwrap();
        assert!(literal.specificity_key() < variable.specificity_key());
    }
}
