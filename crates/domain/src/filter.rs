//! AIP-160 `filter` strings: parsed and type-checked against a field schema
//! into a [`Filter`] tree that storage turns into bound query parameters.
//!
//! Supported: comparisons `= != < <= > >=`, `:` (has) on repeated fields,
//! `AND`, `OR`, `NOT` / `-`, parentheses, juxtaposition as AND, string
//! literals in double or single quotes, numbers, `true`/`false`, bare words,
//! and a trailing `*` in a string compared with `=` for a prefix match.
//! Errors name the 1-based character position.

use chrono::{DateTime, NaiveDate, Utc};

use crate::ApiError;

const MAX_LEN: usize = 4_000;
const MAX_DEPTH: usize = 32;
const MAX_TERMS: usize = 200;

/// The type of a filterable field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Text,
    /// One of the given lower-case values (matched case-insensitively).
    Enum(&'static [&'static str]),
    Bool,
    /// RFC 3339, e.g. "2026-01-31T00:00:00Z".
    Timestamp,
    /// "YYYY-MM-DD".
    Date,
    Integer,
    /// A repeated string field; only `:` applies.
    Tags,
}

/// A filterable field.
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    pub name: &'static str,
    pub ty: FieldType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    /// `= "abc*"`: starts with "abc".
    Prefix(String),
    Bool(bool),
    Timestamp(DateTime<Utc>),
    Date(NaiveDate),
    Integer(i64),
}

/// A parsed, type-checked filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Compare {
        field: &'static str,
        op: CmpOp,
        value: Value,
    },
    /// `tags:"vip"`
    Has {
        field: &'static str,
        value: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Op(&'static str),
    LParen,
    RParen,
    Minus,
}

fn error(pos: usize, message: impl std::fmt::Display) -> ApiError {
    ApiError::invalid_field("filter", format!("at position {}: {message}", pos + 1))
}

fn lex(input: &str) -> Result<Vec<(usize, Tok)>, ApiError> {
    let chars: Vec<(usize, char)> = input.char_indices().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (pos, c) = chars[i];
        // Character positions (not bytes) for the caller.
        let cpos = i;
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push((cpos, Tok::LParen));
                i += 1;
            }
            ')' => {
                out.push((cpos, Tok::RParen));
                i += 1;
            }
            '-' if chars.get(i + 1).is_some_and(|(_, n)| n.is_ascii_digit()) => {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].1.is_ascii_digit() || chars[i].1 == '.') {
                    i += 1;
                }
                out.push((
                    cpos,
                    Tok::Num(chars[start..i].iter().map(|c| c.1).collect()),
                ));
            }
            '-' => {
                out.push((cpos, Tok::Minus));
                i += 1;
            }
            '"' | '\'' => {
                let quote = c;
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(error(cpos, "unterminated string")),
                        Some((_, '\\')) => {
                            match chars.get(i + 1) {
                                Some((_, n)) => s.push(*n),
                                None => return Err(error(cpos, "unterminated string")),
                            }
                            i += 2;
                        }
                        Some((_, ch)) if *ch == quote => {
                            i += 1;
                            break;
                        }
                        Some((_, ch)) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push((cpos, Tok::Str(s)));
            }
            '=' => {
                out.push((cpos, Tok::Op("=")));
                i += 1;
            }
            ':' => {
                out.push((cpos, Tok::Op(":")));
                i += 1;
            }
            '!' | '<' | '>' => {
                let next_eq = chars.get(i + 1).is_some_and(|(_, n)| *n == '=');
                let op = match (c, next_eq) {
                    ('!', true) => "!=",
                    ('<', true) => "<=",
                    ('>', true) => ">=",
                    ('<', false) => "<",
                    ('>', false) => ">",
                    _ => return Err(error(cpos, "expected != ")),
                };
                out.push((cpos, Tok::Op(op)));
                i += if next_eq { 2 } else { 1 };
            }
            c if c.is_ascii_digit() => {
                let start = i;
                while i < chars.len() && (chars[i].1.is_ascii_digit() || chars[i].1 == '.') {
                    i += 1;
                }
                out.push((
                    cpos,
                    Tok::Num(chars[start..i].iter().map(|c| c.1).collect()),
                ));
            }
            c if c.is_alphanumeric() || c == '_' || c == '.' || c == '*' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].1.is_alphanumeric() || matches!(chars[i].1, '_' | '.' | '*' | '-'))
                {
                    i += 1;
                }
                out.push((
                    cpos,
                    Tok::Ident(chars[start..i].iter().map(|c| c.1).collect()),
                ));
            }
            _ => {
                let _ = pos;
                return Err(error(cpos, format!("unexpected character {c:?}")));
            }
        }
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<(usize, Tok)>,
    at: usize,
    end: usize,
    schema: &'a [FieldSpec],
    terms: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|(_, t)| t)
    }

    fn pos(&self) -> usize {
        self.toks.get(self.at).map_or(self.end, |(p, _)| *p)
    }

    fn keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s == kw)
    }

    fn or(&mut self, depth: usize) -> Result<Filter, ApiError> {
        if depth > MAX_DEPTH {
            return Err(error(self.pos(), "filter is nested too deeply"));
        }
        let mut parts = vec![self.and(depth)?];
        while self.keyword("OR") {
            self.at += 1;
            parts.push(self.and(depth)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::Or(parts)
        })
    }

    fn and(&mut self, depth: usize) -> Result<Filter, ApiError> {
        let mut parts = vec![self.unary(depth)?];
        loop {
            if self.keyword("AND") {
                self.at += 1;
                parts.push(self.unary(depth)?);
            } else if matches!(self.peek(), None | Some(Tok::RParen)) || self.keyword("OR") {
                break;
            } else {
                // Juxtaposition is AND (AIP-160).
                parts.push(self.unary(depth)?);
            }
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::And(parts)
        })
    }

    fn unary(&mut self, depth: usize) -> Result<Filter, ApiError> {
        if self.keyword("NOT") || matches!(self.peek(), Some(Tok::Minus)) {
            self.at += 1;
            return Ok(Filter::Not(Box::new(self.unary(depth + 1)?)));
        }
        if matches!(self.peek(), Some(Tok::LParen)) {
            let open = self.pos();
            self.at += 1;
            let inner = self.or(depth + 1)?;
            if !matches!(self.peek(), Some(Tok::RParen)) {
                return Err(error(open, "unclosed parenthesis"));
            }
            self.at += 1;
            return Ok(inner);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Filter, ApiError> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(error(
                self.pos(),
                format!("at most {MAX_TERMS} comparisons"),
            ));
        }
        let field_pos = self.pos();
        let name = match self.peek() {
            Some(Tok::Ident(s)) if !matches!(s.as_str(), "AND" | "OR" | "NOT") => s.clone(),
            Some(t) => {
                return Err(error(
                    field_pos,
                    format!("expected a field name, found {}", describe(t)),
                ));
            }
            None => return Err(error(field_pos, "expected a field name, found the end")),
        };
        self.at += 1;
        let spec = self.schema.iter().find(|f| f.name == name).ok_or_else(|| {
            let known: Vec<_> = self.schema.iter().map(|f| f.name).collect();
            error(
                field_pos,
                format!(
                    "unknown field {name:?}; filterable fields: {}",
                    known.join(", ")
                ),
            )
        })?;
        let op_pos = self.pos();
        let op = match self.peek() {
            Some(Tok::Op(op)) => *op,
            Some(t) => {
                return Err(error(
                    op_pos,
                    format!(
                        "expected a comparison operator after {name}, found {}",
                        describe(t)
                    ),
                ));
            }
            None => {
                return Err(error(
                    op_pos,
                    format!("expected a comparison operator after {name}"),
                ));
            }
        };
        self.at += 1;
        let value_pos = self.pos();
        let (raw, quoted) = match self.peek() {
            Some(Tok::Str(s)) => (s.clone(), true),
            Some(Tok::Num(s)) => (s.clone(), false),
            Some(Tok::Ident(s)) => (s.clone(), false),
            Some(t) => {
                return Err(error(
                    value_pos,
                    format!("expected a value, found {}", describe(t)),
                ));
            }
            None => return Err(error(value_pos, "expected a value, found the end")),
        };
        self.at += 1;

        if spec.ty == FieldType::Tags {
            if op != ":" {
                return Err(error(
                    op_pos,
                    format!("{name} is repeated: use {name}:\"value\""),
                ));
            }
            return Ok(Filter::Has {
                field: spec.name,
                value: raw.to_lowercase(),
            });
        }
        let op = match op {
            "=" => CmpOp::Eq,
            "!=" => CmpOp::Ne,
            "<" => CmpOp::Lt,
            "<=" => CmpOp::Le,
            ">" => CmpOp::Gt,
            ">=" => CmpOp::Ge,
            ":" => CmpOp::Eq, // `field:value` on a scalar means equality
            _ => return Err(error(op_pos, "unknown operator")),
        };
        let value = typed_value(spec, op, &raw, quoted).map_err(|m| error(value_pos, m))?;
        Ok(Filter::Compare {
            field: spec.name,
            op,
            value,
        })
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("{s:?}"),
        Tok::Str(s) => format!("string {s:?}"),
        Tok::Num(s) => format!("number {s}"),
        Tok::Op(o) => format!("operator {o}"),
        Tok::LParen => "'('".into(),
        Tok::RParen => "')'".into(),
        Tok::Minus => "'-'".into(),
    }
}

fn typed_value(spec: &FieldSpec, op: CmpOp, raw: &str, quoted: bool) -> Result<Value, String> {
    let name = spec.name;
    let ordered = !matches!(op, CmpOp::Eq | CmpOp::Ne);
    match spec.ty {
        FieldType::Text => {
            if op == CmpOp::Eq && raw.ends_with('*') && raw.len() > 1 {
                Ok(Value::Prefix(raw.trim_end_matches('*').to_owned()))
            } else {
                Ok(Value::Text(raw.to_owned()))
            }
        }
        FieldType::Enum(values) => {
            if ordered {
                return Err(format!("{name} can only be compared with = or !="));
            }
            let lower = raw.to_lowercase();
            values
                .iter()
                .find(|v| **v == lower)
                .map(|v| Value::Text((*v).to_owned()))
                .ok_or_else(|| format!("{name} must be one of {}", values.join(", ")))
        }
        FieldType::Bool => {
            if ordered {
                return Err(format!("{name} can only be compared with = or !="));
            }
            match raw {
                "true" if !quoted => Ok(Value::Bool(true)),
                "false" if !quoted => Ok(Value::Bool(false)),
                _ => Err(format!("{name} is a boolean: use true or false")),
            }
        }
        FieldType::Timestamp => DateTime::parse_from_rfc3339(raw)
            .map(|t| Value::Timestamp(t.with_timezone(&Utc)))
            .map_err(|_| {
                format!("{name} is a timestamp: use RFC 3339, e.g. \"2026-01-31T00:00:00Z\"")
            }),
        FieldType::Date => NaiveDate::parse_from_str(raw, "%Y-%m-%d")
            .map(Value::Date)
            .map_err(|_| format!("{name} is a date: use \"YYYY-MM-DD\"")),
        FieldType::Integer => raw
            .parse()
            .map(Value::Integer)
            .map_err(|_| format!("{name} is an integer")),
        FieldType::Tags => Err(format!("{name} is repeated: use {name}:\"value\"")),
    }
}

/// Parses and type-checks `input`; an empty filter is `None`.
pub fn parse(input: &str, schema: &[FieldSpec]) -> Result<Option<Filter>, ApiError> {
    if input.len() > MAX_LEN {
        return Err(ApiError::invalid_field(
            "filter",
            format!("must be at most {MAX_LEN} bytes"),
        ));
    }
    let toks = lex(input)?;
    if toks.is_empty() {
        return Ok(None);
    }
    let mut parser = Parser {
        toks,
        at: 0,
        end: input.chars().count(),
        schema,
        terms: 0,
    };
    let filter = parser.or(0)?;
    if parser.at < parser.toks.len() {
        let pos = parser.pos();
        let found = describe(&parser.toks[parser.at].1);
        return Err(error(pos, format!("unexpected {found}")));
    }
    Ok(Some(filter))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SCHEMA: &[FieldSpec] = &[
        FieldSpec {
            name: "region",
            ty: FieldType::Text,
        },
        FieldSpec {
            name: "gender",
            ty: FieldType::Enum(&["female", "male", "other", "undisclosed"]),
        },
        FieldSpec {
            name: "tags",
            ty: FieldType::Tags,
        },
        FieldSpec {
            name: "create_time",
            ty: FieldType::Timestamp,
        },
        FieldSpec {
            name: "marketing_consent.email",
            ty: FieldType::Bool,
        },
        FieldSpec {
            name: "birth_date",
            ty: FieldType::Date,
        },
    ];

    fn cmp(field: &'static str, op: CmpOp, value: Value) -> Filter {
        Filter::Compare { field, op, value }
    }

    #[test]
    fn parses_the_documented_forms() {
        let f = parse(
            r#"region = "East" AND tags:"VIP" OR NOT (gender = FEMALE) marketing_consent.email = true"#,
            SCHEMA,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            f,
            Filter::Or(vec![
                Filter::And(vec![
                    cmp("region", CmpOp::Eq, Value::Text("East".into())),
                    Filter::Has {
                        field: "tags",
                        value: "vip".into()
                    },
                ]),
                Filter::And(vec![
                    Filter::Not(Box::new(cmp(
                        "gender",
                        CmpOp::Eq,
                        Value::Text("female".into())
                    ))),
                    cmp("marketing_consent.email", CmpOp::Eq, Value::Bool(true)),
                ]),
            ])
        );
        assert_eq!(parse("  ", SCHEMA).unwrap(), None);
        assert!(matches!(
            parse(r#"create_time >= "2026-01-01T00:00:00Z""#, SCHEMA).unwrap(),
            Some(Filter::Compare {
                op: CmpOp::Ge,
                value: Value::Timestamp(_),
                ..
            })
        ));
        assert_eq!(
            parse("region = Ea*", SCHEMA).unwrap(),
            Some(cmp("region", CmpOp::Eq, Value::Prefix("Ea".into())))
        );
    }

    #[test]
    fn errors_name_the_position() {
        let cases = [
            ("regoin = \"x\"", "position 1", "unknown field"),
            ("region = ", "position 10", "expected a value"),
            (
                "region \"x\"",
                "position 8",
                "expected a comparison operator",
            ),
            ("(region = x", "position 1", "unclosed parenthesis"),
            ("gender = robot", "position 10", "must be one of"),
            ("birth_date = \"1990-13-01\"", "position 14", "is a date"),
            ("tags = vip", "position 6", "use tags:"),
            ("region = \"x", "position 10", "unterminated string"),
            ("region = x )", "position 12", "unexpected ')'"),
            ("create_time > yesterday", "position 15", "RFC 3339"),
        ];
        for (input, pos, what) in cases {
            let err = parse(input, SCHEMA).unwrap_err();
            let msg = &err.violations[0].description;
            assert_eq!(err.violations[0].field, "filter");
            assert!(msg.contains(pos) && msg.contains(what), "{input:?}: {msg}");
        }
    }

    #[test]
    fn nesting_and_size_are_bounded() {
        let deep = format!("{}region = x{}", "(".repeat(100), ")".repeat(100));
        assert!(parse(&deep, SCHEMA).is_err());
        let long = vec!["region = x"; 300].join(" AND ");
        assert!(parse(&long, SCHEMA).is_err());
    }

    proptest! {
        #[test]
        fn never_panics(input in "\\PC{0,80}") {
            let _ = parse(&input, SCHEMA);
        }

        #[test]
        fn never_panics_on_filter_like_input(
            input in r#"[a-z_.() "'=!<>:*0-9-]{0,60}|(NOT |AND |OR ){0,3}"#
        ) {
            let _ = parse(&input, SCHEMA);
        }
    }
}
