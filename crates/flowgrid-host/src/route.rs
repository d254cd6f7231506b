//! ASP.NET-style route templates as Azure Functions reads them: literal segments, `{name}`,
//! `{name?}`, `{name=default}`, `{name:constraint(...)}` (several constraints may be chained),
//! and a trailing catch-all `{*rest}`. Literals match case-insensitively.

use std::collections::BTreeMap;
use std::fmt;

/// A parsed route template (without the route prefix).
#[derive(Debug, Clone)]
pub struct RouteTemplate {
    raw: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Param(Param),
}

#[derive(Debug, Clone)]
struct Param {
    name: String,
    constraints: Vec<Constraint>,
    optional: bool,
    default: Option<String>,
    catch_all: bool,
}

#[derive(Debug, Clone)]
enum Constraint {
    Int,
    Long,
    Bool,
    Guid,
    Alpha,
    Float,
    DateTime,
    Min(i64),
    Max(i64),
    Range(i64, i64),
    Length(usize, usize),
    MinLength(usize),
    MaxLength(usize),
}

impl fmt::Display for RouteTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl RouteTemplate {
    /// Parses `template` (e.g. `agents/{id:guid}/status`). Errors say what is wrong.
    pub fn parse(template: &str) -> Result<Self, String> {
        let trimmed = template.trim().trim_matches('/');
        let mut segments = Vec::new();
        if trimmed.is_empty() {
            return Ok(Self {
                raw: String::new(),
                segments,
            });
        }
        let parts: Vec<&str> = trimmed.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            if part.is_empty() {
                return Err(format!("empty segment in {template:?}"));
            }
            if let Some(inner) = part.strip_prefix('{') {
                let inner = inner.strip_suffix('}').ok_or_else(|| {
                    format!("segment {part:?} opens '{{' but does not end with '}}'")
                })?;
                let param = parse_param(inner).map_err(|e| format!("segment {part:?}: {e}"))?;
                if param.catch_all && i + 1 != parts.len() {
                    return Err(format!("catch-all {part:?} must be the last segment"));
                }
                segments.push(Segment::Param(param));
            } else if part.contains('{') || part.contains('}') {
                return Err(format!(
                    "segment {part:?} mixes literal text and a parameter; the local host supports one parameter per segment"
                ));
            } else {
                segments.push(Segment::Literal(part.to_ascii_lowercase()));
            }
        }
        // Optional parameters may only be followed by optional parameters.
        let mut seen_optional = false;
        for s in &segments {
            match s {
                Segment::Param(p) if p.optional || p.default.is_some() || p.catch_all => {
                    seen_optional = true
                }
                _ if seen_optional => {
                    return Err(format!(
                        "in {template:?} an optional parameter is followed by a required segment"
                    ));
                }
                _ => {}
            }
        }
        let mut names = std::collections::HashSet::new();
        for s in &segments {
            if let Segment::Param(p) = s
                && !names.insert(p.name.to_ascii_lowercase())
            {
                return Err(format!("parameter {:?} appears twice", p.name));
            }
        }
        Ok(Self {
            raw: trimmed.to_owned(),
            segments,
        })
    }

    /// The route values when `path_segments` (already split, prefix removed) match.
    pub fn matches(&self, path: &[&str]) -> Option<BTreeMap<String, String>> {
        let mut values = BTreeMap::new();
        let mut i = 0;
        for seg in &self.segments {
            match seg {
                Segment::Literal(lit) => {
                    let got = path.get(i)?;
                    if !got.eq_ignore_ascii_case(lit) {
                        return None;
                    }
                    i += 1;
                }
                Segment::Param(p) if p.catch_all => {
                    let rest = path.get(i..).unwrap_or(&[]).join("/");
                    if !rest.is_empty() {
                        values.insert(p.name.clone(), rest);
                    }
                    i = path.len();
                }
                Segment::Param(p) => match path.get(i) {
                    Some(raw) => {
                        let v = percent_decode(raw);
                        if !p.constraints.iter().all(|c| c.accepts(&v)) {
                            return None;
                        }
                        values.insert(p.name.clone(), v);
                        i += 1;
                    }
                    None if p.optional => {}
                    None => {
                        let d = p.default.clone()?;
                        values.insert(p.name.clone(), d);
                    }
                },
            }
        }
        (i == path.len()).then_some(values)
    }

    /// A shape that is equal for two templates that match the same paths, ignoring parameter names.
    pub fn shape(&self) -> String {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => l.clone(),
                Segment::Param(p) if p.catch_all => "{*}".to_owned(),
                Segment::Param(p) => {
                    let c: Vec<String> = p.constraints.iter().map(|c| format!("{c:?}")).collect();
                    format!(
                        "{{{}{}}}",
                        c.join(":"),
                        if p.optional || p.default.is_some() {
                            "?"
                        } else {
                            ""
                        }
                    )
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Precedence key: lower sorts first (literals before constrained parameters before plain
    /// parameters before optional ones before catch-alls), as ASP.NET routing orders templates.
    pub fn precedence(&self) -> Vec<u8> {
        let mut key: Vec<u8> = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(_) => 1,
                Segment::Param(p) if p.catch_all => 5,
                Segment::Param(p) if p.optional || p.default.is_some() => 4,
                Segment::Param(p) if !p.constraints.is_empty() => 2,
                Segment::Param(_) => 3,
            })
            .collect();
        key.push(9);
        key
    }
}

fn parse_param(inner: &str) -> Result<Param, String> {
    let (catch_all, inner) = match inner.strip_prefix('*') {
        Some(rest) => (true, rest.trim_start_matches('*')),
        None => (false, inner),
    };
    let (inner, default) = match inner.split_once('=') {
        Some((a, d)) => (a, Some(d.to_owned())),
        None => (inner, None),
    };
    let (inner, optional) = match inner.strip_suffix('?') {
        Some(a) => (a, true),
        None => (inner, false),
    };
    let mut parts = split_constraints(inner);
    let name = parts.remove(0);
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("bad parameter name {name:?}"));
    }
    let constraints = parts
        .iter()
        .map(|c| Constraint::parse(c))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Param {
        name,
        constraints,
        optional,
        default,
        catch_all,
    })
}

/// Splits `name:c1:c2(a,b)` at colons outside parentheses.
fn split_constraints(s: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut depth = 0;
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ':' if depth == 0 => {
                out.push(String::new());
                continue;
            }
            _ => {}
        }
        if let Some(last) = out.last_mut() {
            last.push(c);
        }
    }
    out
}

impl Constraint {
    fn parse(c: &str) -> Result<Self, String> {
        let (name, args) = match c.split_once('(') {
            Some((n, rest)) => {
                let args = rest
                    .strip_suffix(')')
                    .ok_or_else(|| format!("constraint {c:?} is missing ')'"))?;
                (n, args.split(',').map(str::trim).collect::<Vec<_>>())
            }
            None => (c, Vec::new()),
        };
        let int = |i: usize| -> Result<i64, String> {
            args.get(i)
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| format!("constraint {c:?} needs integer arguments"))
        };
        let size = |i: usize| -> Result<usize, String> {
            args.get(i)
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| format!("constraint {c:?} needs length arguments"))
        };
        Ok(match (name.to_ascii_lowercase().as_str(), args.len()) {
            ("int", 0) => Constraint::Int,
            ("long", 0) => Constraint::Long,
            ("bool", 0) => Constraint::Bool,
            ("guid", 0) => Constraint::Guid,
            ("alpha", 0) => Constraint::Alpha,
            ("float" | "double" | "decimal", 0) => Constraint::Float,
            ("datetime", 0) => Constraint::DateTime,
            ("min", 1) => Constraint::Min(int(0)?),
            ("max", 1) => Constraint::Max(int(0)?),
            ("range", 2) => Constraint::Range(int(0)?, int(1)?),
            ("length", 1) => Constraint::Length(size(0)?, size(0)?),
            ("length", 2) => Constraint::Length(size(0)?, size(1)?),
            ("minlength", 1) => Constraint::MinLength(size(0)?),
            ("maxlength", 1) => Constraint::MaxLength(size(0)?),
            _ => {
                return Err(format!(
                    "unknown or unsupported constraint {c:?} (supported: int, long, bool, guid, alpha, float, double, decimal, datetime, min, max, range, length, minlength, maxlength)"
                ));
            }
        })
    }

    fn accepts(&self, v: &str) -> bool {
        match self {
            Constraint::Int => v.parse::<i32>().is_ok(),
            Constraint::Long => v.parse::<i64>().is_ok(),
            Constraint::Bool => v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false"),
            Constraint::Guid => uuid::Uuid::parse_str(v).is_ok(),
            Constraint::Alpha => !v.is_empty() && v.chars().all(|c| c.is_ascii_alphabetic()),
            Constraint::Float => v.parse::<f64>().is_ok(),
            Constraint::DateTime => {
                chrono::DateTime::parse_from_rfc3339(v).is_ok()
                    || chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok()
                    || chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S").is_ok()
            }
            Constraint::Min(m) => v.parse::<i64>().is_ok_and(|n| n >= *m),
            Constraint::Max(m) => v.parse::<i64>().is_ok_and(|n| n <= *m),
            Constraint::Range(a, b) => v.parse::<i64>().is_ok_and(|n| n >= *a && n <= *b),
            Constraint::Length(a, b) => (*a..=*b).contains(&v.chars().count()),
            Constraint::MinLength(a) => v.chars().count() >= *a,
            Constraint::MaxLength(b) => v.chars().count() <= *b,
        }
    }
}

/// Decodes `%XX` escapes (invalid escapes are kept as they are).
pub fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(h) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(h);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(t: &str, path: &str) -> Option<BTreeMap<String, String>> {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        RouteTemplate::parse(t).unwrap().matches(&segs)
    }

    #[test]
    fn literals_match_case_insensitively_and_parameters_capture_values() {
        assert_eq!(m("agents/{id}", "Agents/42").unwrap()["id"], "42");
        assert!(m("agents/{id}", "agents").is_none());
        assert!(m("agents/{id}", "agents/1/2").is_none());
    }

    #[test]
    fn constraints_reject_values_that_do_not_fit() {
        assert!(m("orders/{id:int}", "orders/x").is_none());
        assert!(m("orders/{id:int}", "orders/12").is_some());
        assert!(m("a/{id:guid}", "a/6f9619ff-8b86-d011-b42d-00cf4fc964ff").is_some());
        assert!(m("a/{n:int:range(1,5)}", "a/9").is_none());
        assert!(m("a/{n:length(2,3)}", "a/abcd").is_none());
    }

    #[test]
    fn optional_default_and_catch_all_segments_match_when_absent() {
        assert!(m("orders/{id:int?}", "orders").is_some());
        assert_eq!(m("orders/{id:int?}", "orders/3").unwrap()["id"], "3");
        assert_eq!(m("p/{page=1}", "p").unwrap()["page"], "1");
        assert_eq!(m("files/{*rest}", "files/a/b/c").unwrap()["rest"], "a/b/c");
        assert!(m("files/{*rest}", "files").is_some());
    }

    #[test]
    fn malformed_templates_are_refused_with_a_reason() {
        assert!(RouteTemplate::parse("a/{id").unwrap_err().contains("'}'"));
        assert!(
            RouteTemplate::parse("a/{id:regex(x)}")
                .unwrap_err()
                .contains("constraint")
        );
        assert!(
            RouteTemplate::parse("a/{*r}/b")
                .unwrap_err()
                .contains("last")
        );
        assert!(RouteTemplate::parse("a/{x?}/b").is_err());
        assert!(RouteTemplate::parse("a/{x}/{x}").is_err());
    }

    #[test]
    fn literal_routes_take_precedence_over_parameters() {
        let lit = RouteTemplate::parse("agents/search").unwrap();
        let par = RouteTemplate::parse("agents/{id}").unwrap();
        assert!(lit.precedence() < par.precedence());
    }
}
