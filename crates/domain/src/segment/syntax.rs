//! Lexer and parser of the segment language: text to an untyped tree whose
//! nodes carry the character offset they start at, so the type checker can
//! point at the exact spot of an error.

use super::SegmentError;

/// Longest accepted expression, in characters.
const MAX_LEN: usize = 10_000;
/// Deepest accepted nesting: keeps recursion bounded on hostile input.
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
}

/// A literal as written.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Lit {
    Num(f64),
    Str(String),
    Bool(bool),
    /// `date("YYYY-MM-DD")`, still unparsed.
    Date(String),
}

/// An operand of a comparison: a field or a literal.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Operand {
    Field(String),
    Lit(Lit),
    /// A function call other than `date(...)`: `has(...)`, `bought_category(...)`.
    Call {
        name: String,
        args: Vec<(usize, Operand)>,
    },
}

/// The untyped tree.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    And(Vec<(usize, Node)>),
    Or(Vec<(usize, Node)>),
    Not(Box<(usize, Node)>),
    Compare {
        op: &'static str,
        left: (usize, Operand),
        right: (usize, Operand),
    },
    In {
        negated: bool,
        left: (usize, Operand),
        values: Vec<(usize, Lit)>,
    },
    /// A bare operand used as a condition (`consent.email`, `has(...)`, `true`).
    Operand(Operand),
}

fn lex(input: &str) -> Result<Vec<(usize, Tok)>, SegmentError> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push((start, Tok::LParen));
                i += 1;
            }
            ')' => {
                out.push((start, Tok::RParen));
                i += 1;
            }
            ',' => {
                out.push((start, Tok::Comma));
                i += 1;
            }
            '"' | '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(SegmentError::at(input, start, "unterminated string")),
                        Some('\\') => {
                            match chars.get(i + 1) {
                                Some('n') => s.push('\n'),
                                Some('t') => s.push('\t'),
                                Some(&n @ ('\\' | '"' | '\'')) => s.push(n),
                                Some(n) => {
                                    return Err(SegmentError::at(
                                        input,
                                        i,
                                        format!("unknown escape \\{n} in string"),
                                    ));
                                }
                                None => {
                                    return Err(SegmentError::at(
                                        input,
                                        start,
                                        "unterminated string",
                                    ));
                                }
                            }
                            i += 2;
                        }
                        Some(&ch) if ch == c => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                out.push((start, Tok::Str(s)));
            }
            '=' => {
                // `==` is accepted as a courtesy to programmers.
                i += if chars.get(i + 1) == Some(&'=') { 2 } else { 1 };
                out.push((start, Tok::Op("=")));
            }
            '!' | '<' | '>' => {
                let next_eq = chars.get(i + 1) == Some(&'=');
                let op = match (c, next_eq) {
                    ('!', true) => "!=",
                    ('<', true) => "<=",
                    ('>', true) => ">=",
                    ('<', false) => "<",
                    ('>', false) => ">",
                    _ => {
                        return Err(SegmentError::at(
                            input,
                            start,
                            "unexpected '!' (use `not` or `!=`)",
                        ));
                    }
                };
                i += if next_eq { 2 } else { 1 };
                out.push((start, Tok::Op(op)));
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                if i < chars.len() && matches!(chars[i], 'e' | 'E') {
                    let mut j = i + 1;
                    if j < chars.len() && matches!(chars[j], '+' | '-') {
                        j += 1;
                    }
                    if j < chars.len() && chars[j].is_ascii_digit() {
                        i = j;
                        while i < chars.len() && chars[i].is_ascii_digit() {
                            i += 1;
                        }
                    }
                }
                let text: String = chars[start..i].iter().collect();
                let n = text
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite())
                    .ok_or_else(|| SegmentError::at(input, start, format!("bad number {text}")))?;
                if i < chars.len() && (chars[i].is_alphabetic() || chars[i] == '_') {
                    return Err(SegmentError::at(
                        input,
                        i,
                        format!("unexpected {:?} after number", chars[i]),
                    ));
                }
                out.push((start, Tok::Num(n)));
            }
            c if c.is_alphabetic() || c == '_' => {
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.')
                {
                    i += 1;
                }
                out.push((start, Tok::Ident(chars[start..i].iter().collect())));
            }
            _ => {
                return Err(SegmentError::at(
                    input,
                    start,
                    format!("unexpected character {c:?}"),
                ));
            }
        }
    }
    Ok(out)
}

struct Parser<'a> {
    input: &'a str,
    toks: Vec<(usize, Tok)>,
    at: usize,
    end: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|t| &t.1)
    }

    fn pos(&self) -> usize {
        self.toks.get(self.at).map_or(self.end, |t| t.0)
    }

    fn err(&self, message: impl Into<String>) -> SegmentError {
        SegmentError::at(self.input, self.pos(), message)
    }

    fn keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn expect(&mut self, tok: &Tok, what: &str) -> Result<(), SegmentError> {
        if self.peek() == Some(tok) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.err(format!("expected {what}, found {}", self.found())))
        }
    }

    fn found(&self) -> String {
        match self.peek() {
            None => "end of expression".into(),
            Some(Tok::Ident(w)) => format!("`{w}`"),
            Some(Tok::Str(s)) => format!("string {s:?}"),
            Some(Tok::Num(n)) => format!("number {n}"),
            Some(Tok::Op(o)) => format!("`{o}`"),
            Some(Tok::LParen) => "`(`".into(),
            Some(Tok::RParen) => "`)`".into(),
            Some(Tok::Comma) => "`,`".into(),
        }
    }

    fn or(&mut self, depth: usize) -> Result<(usize, Node), SegmentError> {
        let start = self.pos();
        let mut parts = vec![self.and(depth)?];
        while self.keyword("or") {
            self.at += 1;
            parts.push(self.and(depth)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            (start, Node::Or(parts))
        })
    }

    fn and(&mut self, depth: usize) -> Result<(usize, Node), SegmentError> {
        let start = self.pos();
        let mut parts = vec![self.not(depth)?];
        while self.keyword("and") {
            self.at += 1;
            parts.push(self.not(depth)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            (start, Node::And(parts))
        })
    }

    fn not(&mut self, depth: usize) -> Result<(usize, Node), SegmentError> {
        if depth > MAX_DEPTH {
            return Err(self.err(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        let start = self.pos();
        if self.keyword("not") {
            self.at += 1;
            let inner = self.not(depth + 1)?;
            return Ok((start, Node::Not(Box::new(inner))));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.at += 1;
            let inner = self.or(depth + 1)?;
            self.expect(&Tok::RParen, "`)`")?;
            return Ok(inner);
        }
        self.comparison(depth)
    }

    fn comparison(&mut self, depth: usize) -> Result<(usize, Node), SegmentError> {
        let start = self.pos();
        let left = self.operand(depth)?;
        if let Some(Tok::Op(op)) = self.peek() {
            let op = *op;
            self.at += 1;
            let right = self.operand(depth)?;
            return Ok((start, Node::Compare { op, left, right }));
        }
        let negated = self.keyword("not");
        if negated {
            self.at += 1;
            if !self.keyword("in") {
                return Err(self.err(format!("expected `in` after `not`, found {}", self.found())));
            }
        }
        if self.keyword("in") {
            self.at += 1;
            self.expect(&Tok::LParen, "`(` after `in`")?;
            let mut values = Vec::new();
            loop {
                let at = self.pos();
                match self.operand(depth)?.1 {
                    Operand::Lit(l) => values.push((at, l)),
                    _ => {
                        return Err(SegmentError::at(
                            self.input,
                            at,
                            "`in` lists hold literals only",
                        ));
                    }
                }
                if self.peek() == Some(&Tok::Comma) {
                    self.at += 1;
                } else {
                    break;
                }
            }
            self.expect(&Tok::RParen, "`,` or `)` in the `in` list")?;
            return Ok((
                start,
                Node::In {
                    negated,
                    left,
                    values,
                },
            ));
        }
        Ok((start, Node::Operand(left.1)))
    }

    fn operand(&mut self, depth: usize) -> Result<(usize, Operand), SegmentError> {
        let start = self.pos();
        let tok = self.peek().cloned();
        let operand = match tok {
            Some(Tok::Str(s)) => {
                self.at += 1;
                Operand::Lit(Lit::Str(s))
            }
            Some(Tok::Num(n)) => {
                self.at += 1;
                Operand::Lit(Lit::Num(n))
            }
            Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("true") => {
                self.at += 1;
                Operand::Lit(Lit::Bool(true))
            }
            Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("false") => {
                self.at += 1;
                Operand::Lit(Lit::Bool(false))
            }
            Some(Tok::Ident(w))
                if ["and", "or", "not", "in"]
                    .iter()
                    .any(|k| w.eq_ignore_ascii_case(k)) =>
            {
                return Err(self.err(format!("expected a field or a value, found `{w}`")));
            }
            Some(Tok::Ident(name)) => {
                self.at += 1;
                if self.peek() == Some(&Tok::LParen) {
                    if depth > MAX_DEPTH {
                        return Err(self.err(format!("nested deeper than {MAX_DEPTH} levels")));
                    }
                    self.at += 1;
                    let mut args = Vec::new();
                    if self.peek() != Some(&Tok::RParen) {
                        loop {
                            args.push(self.operand(depth + 1)?);
                            if self.peek() == Some(&Tok::Comma) {
                                self.at += 1;
                            } else {
                                break;
                            }
                        }
                    }
                    self.expect(&Tok::RParen, "`,` or `)` after the arguments")?;
                    if name == "date" {
                        match args.as_slice() {
                            [(_, Operand::Lit(Lit::Str(s)))] => Operand::Lit(Lit::Date(s.clone())),
                            _ => {
                                return Err(SegmentError::at(
                                    self.input,
                                    start,
                                    "date(...) takes one string, e.g. date(\"2026-01-31\")",
                                ));
                            }
                        }
                    } else {
                        Operand::Call { name, args }
                    }
                } else {
                    Operand::Field(name)
                }
            }
            _ => {
                return Err(self.err(format!(
                    "expected a field or a value, found {}",
                    self.found()
                )));
            }
        };
        Ok((start, operand))
    }
}

/// Parses `input` into an untyped tree.
pub(super) fn parse(input: &str) -> Result<(usize, Node), SegmentError> {
    let len = input.chars().count();
    if len > MAX_LEN {
        return Err(SegmentError::at(
            input,
            MAX_LEN,
            format!("longer than {MAX_LEN} characters"),
        ));
    }
    let toks = lex(input)?;
    if toks.is_empty() {
        return Err(SegmentError::at(input, 0, "the expression is empty"));
    }
    let mut p = Parser {
        input,
        toks,
        at: 0,
        end: len,
    };
    let node = p.or(0)?;
    if p.at < p.toks.len() {
        return Err(p.err(format!(
            "expected `and`, `or` or the end, found {}",
            p.found()
        )));
    }
    Ok(node)
}
