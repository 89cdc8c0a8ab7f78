//! The segment expression language (models.md): boolean rules over a
//! customer's attributes, consent, purchases and scores, e.g.
//! `rfm.segment in ("at_risk", "cant_lose_them") and churn.probability > 0.6`.
//!
//! Text is parsed ([`syntax`]) and type-checked against the field catalogue
//! ([`FIELDS`]) into a [`Rule`]; a rule is evaluated against a [`Record`]
//! here, and storage may additionally turn parts of it into bound query
//! parameters to pre-filter rows. It is never run as code or spliced into
//! SQL text. Every error names the line and column it was found at.

mod syntax;

use std::collections::BTreeSet;
use std::fmt;

use chrono::{Datelike, NaiveDate};

use crate::ApiError;
use syntax::{Lit, Node, Operand};

/// A parse or type error, at a 1-based line and column (in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl SegmentError {
    fn at(input: &str, offset: usize, message: impl Into<String>) -> Self {
        let (mut line, mut column) = (1, 1);
        for c in input.chars().take(offset) {
            if c == '\n' {
                line += 1;
                column = 1;
            } else {
                column += 1;
            }
        }
        Self {
            line,
            column,
            message: message.into(),
        }
    }

    /// INVALID_ARGUMENT with a field violation on `field` naming the position.
    pub fn into_api_error(self, field: &str) -> ApiError {
        ApiError::invalid_field(field, self.to_string())
    }
}

impl fmt::Display for SegmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

/// The value types of the language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Bool,
    Number,
    Text,
    Date,
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Type::Bool => "a boolean",
            Type::Number => "a number",
            Type::Text => "a string",
            Type::Date => "a date",
        })
    }
}

/// Every field a rule can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    CustomerId,
    ExternalId,
    Region,
    City,
    Occupation,
    Gender,
    IncomeBand,
    Age,
    BirthDate,
    RelationshipStartDate,
    ConsentEmail,
    ConsentSms,
    ConsentPhone,
    ConsentPush,
    ConsentPost,
    Purchases,
    FirstPurchaseDate,
    LastPurchaseDate,
    DaysSinceLastPurchase,
    DaysSinceFirstPurchase,
    DaysToBirthday,
    DaysToAnniversary,
    RfmSegment,
    RfmR,
    RfmF,
    RfmM,
    RfmRecencyDays,
    RfmFrequency,
    RfmMonetary,
    RfmWeightedScore,
    ClvHistoricalValue,
    ClvSimple,
    ClvPredicted365d,
    ClvExpectedPurchases365d,
    ClvPAlive,
    ChurnProbability,
    ChurnRisk,
    ValueTier,
    ValueQuadrant,
    LifecycleStage,
    LoyaltyIndex,
    ProfitMargin,
    FeedbackNps,
    FeedbackNpsCategory,
    FeedbackCsat,
    FeedbackOpenComplaints,
}

/// A catalogue entry: the name a rule uses, its type, and for text fields
/// with a closed set of values, that set (checked when the rule is parsed).
#[derive(Debug, Clone, Copy)]
pub struct FieldDef {
    pub name: &'static str,
    pub field: Field,
    pub ty: Type,
    pub values: Option<&'static [&'static str]>,
    pub doc: &'static str,
}

const fn def(name: &'static str, field: Field, ty: Type, doc: &'static str) -> FieldDef {
    FieldDef {
        name,
        field,
        ty,
        values: None,
        doc,
    }
}

const fn closed(
    name: &'static str,
    field: Field,
    values: &'static [&'static str],
    doc: &'static str,
) -> FieldDef {
    FieldDef {
        name,
        field,
        ty: Type::Text,
        values: Some(values),
        doc,
    }
}

pub const RFM_SEGMENTS: &[&str] = &[
    "champions",
    "loyal_customers",
    "potential_loyalists",
    "new_customers",
    "promising",
    "need_attention",
    "about_to_sleep",
    "at_risk",
    "cant_lose_them",
    "hibernating",
];
pub const GENDERS: &[&str] = &["", "female", "male", "other", "undisclosed"];
pub const INCOME_BANDS: &[&str] = &["", "low", "lower_middle", "middle", "upper_middle", "high"];
pub const CHURN_RISKS: &[&str] = &["low", "medium", "high"];
pub const VALUE_TIERS: &[&str] = &["low", "medium", "high"];
pub const VALUE_QUADRANTS: &[&str] = &["star", "grow", "maintain", "minimal"];
pub const NPS_CATEGORIES: &[&str] = &["promoter", "passive", "detractor"];
pub const LIFECYCLE_STAGES: &[&str] = &[PROSPECT, "new", "active", "loyal", "at_risk", "churned"];

/// The field catalogue. `has(customer.tags, "x")` and `bought_category("x")`
/// are functions, not fields.
pub const FIELDS: &[FieldDef] = &[
    def(
        "customer.id",
        Field::CustomerId,
        Type::Text,
        "Patron's customer id",
    ),
    def(
        "customer.external_id",
        Field::ExternalId,
        Type::Text,
        "id in the source system",
    ),
    def("customer.region", Field::Region, Type::Text, "region"),
    def("customer.city", Field::City, Type::Text, "city"),
    def(
        "customer.occupation",
        Field::Occupation,
        Type::Text,
        "occupation",
    ),
    closed(
        "customer.gender",
        Field::Gender,
        GENDERS,
        "gender (\"\" when unknown)",
    ),
    closed(
        "customer.income_band",
        Field::IncomeBand,
        INCOME_BANDS,
        "household income band (\"\" when unknown)",
    ),
    def(
        "customer.age",
        Field::Age,
        Type::Number,
        "age in whole years today (null without a birth date)",
    ),
    def(
        "customer.birth_date",
        Field::BirthDate,
        Type::Date,
        "date of birth",
    ),
    def(
        "customer.relationship_start_date",
        Field::RelationshipStartDate,
        Type::Date,
        "start of the relationship",
    ),
    def(
        "consent.email",
        Field::ConsentEmail,
        Type::Bool,
        "marketing consent for email",
    ),
    def(
        "consent.sms",
        Field::ConsentSms,
        Type::Bool,
        "marketing consent for SMS",
    ),
    def(
        "consent.phone",
        Field::ConsentPhone,
        Type::Bool,
        "marketing consent for phone calls",
    ),
    def(
        "consent.push",
        Field::ConsentPush,
        Type::Bool,
        "marketing consent for push messages",
    ),
    def(
        "consent.post",
        Field::ConsentPost,
        Type::Bool,
        "marketing consent for post",
    ),
    def(
        "purchases",
        Field::Purchases,
        Type::Number,
        "transactions recorded, ever",
    ),
    def(
        "first_purchase_date",
        Field::FirstPurchaseDate,
        Type::Date,
        "day of the first purchase (null before one)",
    ),
    def(
        "last_purchase_date",
        Field::LastPurchaseDate,
        Type::Date,
        "day of the last purchase (null before one)",
    ),
    def(
        "days_since_last_purchase",
        Field::DaysSinceLastPurchase,
        Type::Number,
        "days from the last purchase to today",
    ),
    def(
        "days_since_first_purchase",
        Field::DaysSinceFirstPurchase,
        Type::Number,
        "days from the first purchase to today",
    ),
    def(
        "days_to_birthday",
        Field::DaysToBirthday,
        Type::Number,
        "days until the next birthday, 0 on the day (29 February counts as 28 February in other years)",
    ),
    def(
        "days_to_anniversary",
        Field::DaysToAnniversary,
        Type::Number,
        "days until the next anniversary of the relationship start, 0 on the day",
    ),
    closed(
        "rfm.segment",
        Field::RfmSegment,
        RFM_SEGMENTS,
        "named RFM segment",
    ),
    def("rfm.r", Field::RfmR, Type::Number, "recency score 1..5"),
    def("rfm.f", Field::RfmF, Type::Number, "frequency score 1..5"),
    def("rfm.m", Field::RfmM, Type::Number, "monetary score 1..5"),
    def(
        "rfm.recency_days",
        Field::RfmRecencyDays,
        Type::Number,
        "days from the last purchase to the scoring date",
    ),
    def(
        "rfm.frequency",
        Field::RfmFrequency,
        Type::Number,
        "transactions in the RFM window",
    ),
    def(
        "rfm.monetary",
        Field::RfmMonetary,
        Type::Number,
        "amount in the RFM window, in currency units",
    ),
    def(
        "rfm.weighted_score",
        Field::RfmWeightedScore,
        Type::Number,
        "weighted RFM score",
    ),
    def(
        "clv.historical_value",
        Field::ClvHistoricalValue,
        Type::Number,
        "revenue to date, in currency units",
    ),
    def(
        "clv.simple",
        Field::ClvSimple,
        Type::Number,
        "simple-formula CLV, in currency units",
    ),
    def(
        "clv.predicted_365d",
        Field::ClvPredicted365d,
        Type::Number,
        "BG/NBD + Gamma-Gamma CLV for the next 365 days",
    ),
    def(
        "clv.expected_purchases_365d",
        Field::ClvExpectedPurchases365d,
        Type::Number,
        "expected purchase occasions in the next 365 days",
    ),
    def(
        "clv.p_alive",
        Field::ClvPAlive,
        Type::Number,
        "probability the customer is still active",
    ),
    def(
        "churn.probability",
        Field::ChurnProbability,
        Type::Number,
        "churn probability 0..1",
    ),
    closed(
        "churn.risk",
        Field::ChurnRisk,
        CHURN_RISKS,
        "churn risk band",
    ),
    closed("value.tier", Field::ValueTier, VALUE_TIERS, "value tier"),
    closed(
        "value.quadrant",
        Field::ValueQuadrant,
        VALUE_QUADRANTS,
        "current vs potential value quadrant",
    ),
    closed(
        "lifecycle.stage",
        Field::LifecycleStage,
        LIFECYCLE_STAGES,
        "lifecycle stage",
    ),
    def(
        "loyalty.index",
        Field::LoyaltyIndex,
        Type::Number,
        "loyalty index 0..1",
    ),
    def(
        "profit.margin",
        Field::ProfitMargin,
        Type::Number,
        "revenue minus cost, in currency units",
    ),
    def(
        "feedback.nps",
        Field::FeedbackNps,
        Type::Number,
        "the latest NPS answer 0..10 (null if never answered)",
    ),
    closed(
        "feedback.nps_category",
        Field::FeedbackNpsCategory,
        NPS_CATEGORIES,
        "category of the latest NPS answer: promoter 9-10, passive 7-8, detractor 0-6",
    ),
    def(
        "feedback.csat",
        Field::FeedbackCsat,
        Type::Number,
        "mean CSAT answer 1..5 (null without CSAT answers)",
    ),
    def(
        "feedback.open_complaints",
        Field::FeedbackOpenComplaints,
        Type::Number,
        "complaints open or in progress",
    ),
];

impl Field {
    pub fn def(self) -> &'static FieldDef {
        FIELDS
            .iter()
            .find(|d| d.field == self)
            .expect("every field is in the catalogue")
    }

    pub fn name(self) -> &'static str {
        self.def().name
    }

    pub fn by_name(name: &str) -> Option<&'static FieldDef> {
        FIELDS.iter().find(|d| d.name == name)
    }
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

impl CmpOp {
    fn parse(op: &str) -> Self {
        match op {
            "=" => CmpOp::Eq,
            "!=" => CmpOp::Ne,
            "<" => CmpOp::Lt,
            "<=" => CmpOp::Le,
            ">" => CmpOp::Gt,
            _ => CmpOp::Ge,
        }
    }

    /// The operator with its operands swapped (`5 < x` is `x > 5`).
    fn flipped(self) -> Self {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            other => other,
        }
    }

    fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        match self {
            CmpOp::Eq => ord == Equal,
            CmpOp::Ne => ord != Equal,
            CmpOp::Lt => ord == Less,
            CmpOp::Le => ord != Greater,
            CmpOp::Gt => ord == Greater,
            CmpOp::Ge => ord != Less,
        }
    }
}

/// A typed literal. Dates are days since 1970-01-01.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Number(f64),
    Text(String),
    Date(i32),
}

/// A type-checked rule. Comparisons always have the field on the left.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Const(bool),
    /// A boolean field used as a condition.
    IsTrue(Field),
    Compare {
        field: Field,
        op: CmpOp,
        value: Value,
    },
    In {
        field: Field,
        values: Vec<Value>,
        negated: bool,
    },
    /// `has(customer.tags, "vip")`
    HasTag(String),
    /// `bought_category("books")`
    BoughtCategory(String),
}

/// A parsed, type-checked segment rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub expr: Expr,
    /// The fields the rule reads, in catalogue order (`customer.tags` and
    /// `categories` stand for the functions).
    pub fields: Vec<&'static str>,
}

impl Rule {
    /// Parses and type-checks `text`.
    pub fn parse(text: &str) -> Result<Rule, SegmentError> {
        let (at, node) = syntax::parse(text)?;
        let mut checker = Checker {
            input: text,
            fields: BTreeSet::new(),
            functions: BTreeSet::new(),
        };
        let expr = checker.condition(at, &node)?;
        let mut fields: Vec<&'static str> = checker.fields.iter().map(|f| f.name()).collect();
        fields.extend(checker.functions);
        Ok(Rule { expr, fields })
    }

    /// Whether `record` is selected on day `today` (days since 1970-01-01).
    pub fn matches(&self, record: &Record, today: i32) -> bool {
        eval(&self.expr, record, today)
    }
}

struct Checker<'a> {
    input: &'a str,
    fields: BTreeSet<Field>,
    functions: BTreeSet<&'static str>,
}

impl Checker<'_> {
    fn err(&self, at: usize, message: impl Into<String>) -> SegmentError {
        SegmentError::at(self.input, at, message)
    }

    fn condition(&mut self, at: usize, node: &Node) -> Result<Expr, SegmentError> {
        Ok(match node {
            Node::And(parts) => Expr::And(
                parts
                    .iter()
                    .map(|(at, n)| self.condition(*at, n))
                    .collect::<Result<_, _>>()?,
            ),
            Node::Or(parts) => Expr::Or(
                parts
                    .iter()
                    .map(|(at, n)| self.condition(*at, n))
                    .collect::<Result<_, _>>()?,
            ),
            Node::Not(inner) => Expr::Not(Box::new(self.condition(inner.0, &inner.1)?)),
            Node::Operand(Operand::Lit(Lit::Bool(b))) => Expr::Const(*b),
            Node::Operand(Operand::Field(name)) => {
                let def = self.field(at, name)?;
                if def.ty != Type::Bool {
                    return Err(self.err(
                        at,
                        format!(
                            "`{name}` is {}, not a condition; compare it with a value",
                            def.ty
                        ),
                    ));
                }
                Expr::IsTrue(def.field)
            }
            Node::Operand(Operand::Call { name, args }) => self.call(at, name, args)?,
            Node::Operand(Operand::Lit(_)) => {
                return Err(self.err(at, "a value alone is not a condition"));
            }
            Node::Compare { op, left, right } => {
                let op = CmpOp::parse(op);
                let (field_at, name, op, (lit_at, lit)) = match (&left.1, &right.1) {
                    (Operand::Field(name), Operand::Lit(lit)) => (left.0, name, op, (right.0, lit)),
                    (Operand::Lit(lit), Operand::Field(name)) => {
                        (right.0, name, op.flipped(), (left.0, lit))
                    }
                    (Operand::Field(_), Operand::Field(_)) => {
                        return Err(self.err(
                            right.0,
                            "compare a field with a value; comparing two fields is not supported",
                        ));
                    }
                    (Operand::Call { .. }, _) | (_, Operand::Call { .. }) => {
                        let at = if matches!(left.1, Operand::Call { .. }) {
                            left.0
                        } else {
                            right.0
                        };
                        return Err(self.err(
                            at,
                            "a function result is a condition; it cannot be compared",
                        ));
                    }
                    (Operand::Lit(_), Operand::Lit(_)) => {
                        return Err(
                            self.err(at, "comparison of two values; one side must be a field")
                        );
                    }
                };
                let def = self.field(field_at, name)?;
                let value = self.value(def, lit_at, lit)?;
                if matches!(def.ty, Type::Bool | Type::Text) && !matches!(op, CmpOp::Eq | CmpOp::Ne)
                {
                    return Err(
                        self.err(at, format!("`{name}` is {}; only = and != apply", def.ty))
                    );
                }
                Expr::Compare {
                    field: def.field,
                    op,
                    value,
                }
            }
            Node::In {
                negated,
                left,
                values,
            } => {
                let Operand::Field(name) = &left.1 else {
                    return Err(self.err(left.0, "`in` needs a field on its left"));
                };
                let def = self.field(left.0, name)?;
                let values = values
                    .iter()
                    .map(|(at, lit)| self.value(def, *at, lit))
                    .collect::<Result<Vec<_>, _>>()?;
                Expr::In {
                    field: def.field,
                    values,
                    negated: *negated,
                }
            }
        })
    }

    fn field(&mut self, at: usize, name: &str) -> Result<&'static FieldDef, SegmentError> {
        match Field::by_name(name) {
            Some(def) => {
                self.fields.insert(def.field);
                Ok(def)
            }
            None if name == "customer.tags" => Err(self.err(
                at,
                "`customer.tags` is a list; use has(customer.tags, \"tag\")",
            )),
            None => {
                let hint = closest(name)
                    .map(|n| format!(" (did you mean `{n}`?)"))
                    .unwrap_or_default();
                Err(self.err(at, format!("unknown field `{name}`{hint}")))
            }
        }
    }

    fn value(&self, def: &FieldDef, at: usize, lit: &Lit) -> Result<Value, SegmentError> {
        let mismatch = |found: &str| {
            self.err(
                at,
                format!("`{}` is {}, but this is {found}", def.name, def.ty),
            )
        };
        match (def.ty, lit) {
            (Type::Bool, Lit::Bool(b)) => Ok(Value::Bool(*b)),
            (Type::Number, Lit::Num(n)) => Ok(Value::Number(*n)),
            (Type::Date, Lit::Date(s)) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(|d| Value::Date(epoch_day(d)))
                .map_err(|_| self.err(at, format!("{s:?} is not a date YYYY-MM-DD"))),
            (Type::Text, Lit::Str(s)) => {
                if let Some(allowed) = def.values
                    && !allowed.contains(&s.as_str())
                {
                    let list: Vec<String> = allowed.iter().map(|v| format!("{v:?}")).collect();
                    return Err(self.err(
                        at,
                        format!(
                            "`{}` is never {s:?}; it is one of {}",
                            def.name,
                            list.join(", ")
                        ),
                    ));
                }
                Ok(Value::Text(s.clone()))
            }
            (_, Lit::Bool(_)) => Err(mismatch("a boolean")),
            (_, Lit::Num(_)) => Err(mismatch("a number")),
            (_, Lit::Str(_)) if def.ty == Type::Date => Err(self.err(
                at,
                format!("`{}` is a date; write date(\"YYYY-MM-DD\")", def.name),
            )),
            (_, Lit::Str(_)) => Err(mismatch("a string")),
            (_, Lit::Date(_)) => Err(mismatch("a date")),
        }
    }

    fn call(
        &mut self,
        at: usize,
        name: &str,
        args: &[(usize, Operand)],
    ) -> Result<Expr, SegmentError> {
        let string_arg = |args: &[(usize, Operand)], i: usize, usage: &str| match args.get(i) {
            Some((_, Operand::Lit(Lit::Str(s)))) => Ok(s.clone()),
            Some((a, _)) => Err(self.err(*a, format!("expected a string: {usage}"))),
            None => Err(self.err(at, format!("missing argument: {usage}"))),
        };
        match name {
            "has" => {
                let usage = "has(customer.tags, \"vip\")";
                if args.len() != 2 {
                    return Err(self.err(at, format!("has takes two arguments: {usage}")));
                }
                match &args[0] {
                    (_, Operand::Field(f)) if f == "customer.tags" => {}
                    (a, _) => {
                        return Err(self.err(*a, format!("has works on customer.tags: {usage}")));
                    }
                }
                let tag = string_arg(args, 1, usage)?;
                self.functions.insert("customer.tags");
                Ok(Expr::HasTag(tag))
            }
            "bought_category" => {
                let usage = "bought_category(\"books\")";
                if args.len() != 1 {
                    return Err(
                        self.err(at, format!("bought_category takes one argument: {usage}"))
                    );
                }
                let category = string_arg(args, 0, usage)?;
                self.functions.insert("categories");
                Ok(Expr::BoughtCategory(category))
            }
            other => Err(self.err(
                at,
                format!("unknown function `{other}` (known: has, bought_category, date)"),
            )),
        }
    }
}

/// The catalogue name closest to `name` by edit distance, if close enough.
/// Paths of score values in the `CustomerScore` message that differ from
/// their field names here; people copy them from the API.
const SCORE_PATHS: [(&str, &str); 10] = [
    ("rfm.r_score", "rfm.r"),
    ("rfm.f_score", "rfm.f"),
    ("rfm.m_score", "rfm.m"),
    ("clv.simple_clv", "clv.simple"),
    ("clv.predicted_clv_365d", "clv.predicted_365d"),
    ("value_tier", "value.tier"),
    ("value_quadrant", "value.quadrant"),
    ("lifecycle_stage", "lifecycle.stage"),
    ("loyalty_index", "loyalty.index"),
    ("profitability.margin", "profit.margin"),
];

/// The field a user most likely meant by `name`: the field of a
/// [`SCORE_PATHS`] path or of a `Customer` attribute (`region`), else the
/// nearest field name by spelling.
fn closest(name: &str) -> Option<&'static str> {
    if let Some((_, field)) = SCORE_PATHS.iter().find(|(path, _)| *path == name) {
        return Some(field);
    }
    if let Some(def) = Field::by_name(&format!("customer.{name}")) {
        return Some(def.name);
    }
    closest_spelling(name)
}

fn closest_spelling(name: &str) -> Option<&'static str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for j in 0..b.len() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != b[j]))
                    .min(row[j] + 1)
                    .min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    }
    FIELDS
        .iter()
        .map(|d| (distance(name, d.name), d.name))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, n)| n)
}

pub fn epoch_day(d: NaiveDate) -> i32 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid")).num_days() as i32
}

pub fn from_epoch_day(day: i32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(1970, 1, 1)?.checked_add_signed(chrono::Duration::days(day.into()))
}

/// What a rule can see of one customer. Score fields are `None` until the
/// customer has been scored; money is in currency units.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    pub customer_id: String,
    pub external_id: String,
    pub region: String,
    pub city: String,
    pub occupation: String,
    pub gender: String,
    pub income_band: String,
    pub birth_day: Option<i32>,
    pub relationship_start_day: Option<i32>,
    pub tags: Vec<String>,
    pub categories: Vec<String>,
    /// email, sms, phone, push, post.
    pub consent: [bool; 5],
    pub purchases: i64,
    pub first_purchase_day: Option<i32>,
    pub last_purchase_day: Option<i32>,
    pub scores: Option<ScoreFields>,
    pub feedback: FeedbackFields,
}

/// The feedback summary a rule can read, as produced by the feedback service.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FeedbackFields {
    pub latest_nps: Option<i32>,
    pub csat_mean: Option<f64>,
    pub open_complaints: i64,
}

/// The scores a rule can read, as produced by the scoring service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoreFields {
    pub rfm_segment: String,
    pub r: f64,
    pub f: f64,
    pub m: f64,
    pub recency_days: f64,
    pub frequency: f64,
    pub monetary: f64,
    pub weighted_score: f64,
    pub historical_value: f64,
    pub simple_clv: f64,
    pub predicted_clv_365d: f64,
    pub expected_purchases_365d: f64,
    pub p_alive: f64,
    pub churn_probability: f64,
    pub churn_risk: String,
    pub value_tier: String,
    pub value_quadrant: String,
    pub lifecycle_stage: String,
    pub loyalty_index: f64,
    pub margin: f64,
}

/// The lifecycle stage of a customer without a purchase, as rules name it.
pub const PROSPECT: &str = "prospect";

/// Consent channels in [`Record::consent`] order.
pub const CHANNELS: [&str; 5] = ["email", "sms", "phone", "push", "post"];

/// Index of `channel` in [`Record::consent`].
pub fn channel_index(channel: &str) -> Option<usize> {
    CHANNELS.iter().position(|c| *c == channel)
}

/// Days from `today` to the next occurrence of `day`'s month and day
/// (0 when it is today). 29 February falls on 28 February in other years.
pub fn days_to_next(day: i32, today: i32) -> Option<i32> {
    let date = from_epoch_day(day)?;
    let now = from_epoch_day(today)?;
    let in_year = |year: i32| {
        NaiveDate::from_ymd_opt(year, date.month(), date.day())
            .or_else(|| NaiveDate::from_ymd_opt(year, date.month(), date.day() - 1))
    };
    let this_year = in_year(now.year())?;
    let next = if this_year >= now {
        this_year
    } else {
        in_year(now.year() + 1)?
    };
    Some((next - now).num_days() as i32)
}

/// Whole years from `day` to `today`.
pub fn age(day: i32, today: i32) -> Option<i32> {
    let born = from_epoch_day(day)?;
    let now = from_epoch_day(today)?;
    let mut years = now.year() - born.year();
    if (now.month(), now.day()) < (born.month(), born.day()) {
        years -= 1;
    }
    Some(years)
}

/// A field's value as evaluation sees it, borrowing text from the record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    Bool(bool),
    Number(f64),
    Text(&'a str),
    Date(i32),
}

impl Record {
    /// The value of `field` on day `today`; `None` is null.
    pub fn value(&self, field: Field, today: i32) -> Option<Value> {
        self.cell(field, today).map(|c| match c {
            Cell::Bool(b) => Value::Bool(b),
            Cell::Number(n) => Value::Number(n),
            Cell::Text(t) => Value::Text(t.to_owned()),
            Cell::Date(d) => Value::Date(d),
        })
    }

    /// Like [`Record::value`], borrowing text (evaluation allocates nothing).
    pub fn cell(&self, field: Field, today: i32) -> Option<Cell<'_>> {
        fn text(s: &str) -> Option<Cell<'_>> {
            Some(Cell::Text(s))
        }
        let num = |n: f64| Some(Cell::Number(n));
        // A prospect (no purchase yet) has a lifecycle stage and nothing
        // else a rule could read from a score: its purchase figures are null,
        // so `rfm.recency_days <= 30` does not pick up people who never bought.
        let purchases = self
            .scores
            .as_ref()
            .filter(|s| s.lifecycle_stage != PROSPECT);
        let score = |f: fn(&ScoreFields) -> f64| purchases.map(|s| Cell::Number(f(s)));
        let label = |f: for<'s> fn(&'s ScoreFields) -> &'s str| {
            purchases.map(f).filter(|s| !s.is_empty()).map(Cell::Text)
        };
        match field {
            Field::CustomerId => text(&self.customer_id),
            Field::ExternalId => text(&self.external_id),
            Field::Region => text(&self.region),
            Field::City => text(&self.city),
            Field::Occupation => text(&self.occupation),
            Field::Gender => text(&self.gender),
            Field::IncomeBand => text(&self.income_band),
            Field::Age => self
                .birth_day
                .and_then(|d| age(d, today))
                .map(|a| Cell::Number(a.into())),
            Field::BirthDate => self.birth_day.map(Cell::Date),
            Field::RelationshipStartDate => self.relationship_start_day.map(Cell::Date),
            Field::ConsentEmail => Some(Cell::Bool(self.consent[0])),
            Field::ConsentSms => Some(Cell::Bool(self.consent[1])),
            Field::ConsentPhone => Some(Cell::Bool(self.consent[2])),
            Field::ConsentPush => Some(Cell::Bool(self.consent[3])),
            Field::ConsentPost => Some(Cell::Bool(self.consent[4])),
            Field::Purchases => num(self.purchases as f64),
            Field::FirstPurchaseDate => self.first_purchase_day.map(Cell::Date),
            Field::LastPurchaseDate => self.last_purchase_day.map(Cell::Date),
            Field::DaysSinceLastPurchase => self
                .last_purchase_day
                .map(|d| Cell::Number(f64::from(today - d))),
            Field::DaysSinceFirstPurchase => self
                .first_purchase_day
                .map(|d| Cell::Number(f64::from(today - d))),
            Field::DaysToBirthday => self
                .birth_day
                .and_then(|d| days_to_next(d, today))
                .map(|n| Cell::Number(n.into())),
            Field::DaysToAnniversary => self
                .relationship_start_day
                .filter(|d| *d <= today)
                .and_then(|d| days_to_next(d, today))
                .map(|n| Cell::Number(n.into())),
            Field::RfmSegment => label(|s| &s.rfm_segment),
            Field::RfmR => score(|s| s.r),
            Field::RfmF => score(|s| s.f),
            Field::RfmM => score(|s| s.m),
            Field::RfmRecencyDays => score(|s| s.recency_days),
            Field::RfmFrequency => score(|s| s.frequency),
            Field::RfmMonetary => score(|s| s.monetary),
            Field::RfmWeightedScore => score(|s| s.weighted_score),
            Field::ClvHistoricalValue => score(|s| s.historical_value),
            Field::ClvSimple => score(|s| s.simple_clv),
            Field::ClvPredicted365d => score(|s| s.predicted_clv_365d),
            Field::ClvExpectedPurchases365d => score(|s| s.expected_purchases_365d),
            Field::ClvPAlive => score(|s| s.p_alive),
            Field::ChurnProbability => score(|s| s.churn_probability),
            Field::ChurnRisk => label(|s| &s.churn_risk),
            Field::ValueTier => label(|s| &s.value_tier),
            Field::ValueQuadrant => label(|s| &s.value_quadrant),
            Field::LifecycleStage => self
                .scores
                .as_ref()
                .map(|s| Cell::Text(&s.lifecycle_stage))
                .filter(|c| *c != Cell::Text("")),
            Field::LoyaltyIndex => score(|s| s.loyalty_index),
            Field::ProfitMargin => score(|s| s.margin),
            Field::FeedbackNps => self.feedback.latest_nps.map(|n| Cell::Number(n.into())),
            Field::FeedbackNpsCategory => self.feedback.latest_nps.map(|n| {
                Cell::Text(match n {
                    9.. => "promoter",
                    7..=8 => "passive",
                    _ => "detractor",
                })
            }),
            Field::FeedbackCsat => self.feedback.csat_mean.map(Cell::Number),
            Field::FeedbackOpenComplaints => num(self.feedback.open_complaints as f64),
        }
    }
}

impl fmt::Display for Cell<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cell::Bool(b) => write!(f, "{b}"),
            Cell::Number(n) => write!(f, "{n}"),
            Cell::Text(s) => f.write_str(s),
            Cell::Date(d) => match from_epoch_day(*d) {
                Some(date) => write!(f, "{date}"),
                None => write!(f, "{d}"),
            },
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => Cell::Bool(*b).fmt(f),
            Value::Number(n) => Cell::Number(*n).fmt(f),
            Value::Text(s) => Cell::Text(s).fmt(f),
            Value::Date(d) => Cell::Date(*d).fmt(f),
        }
    }
}

/// Compares a field's value with a literal of the same type; null never
/// compares (so `x != 1` is false when `x` is null, as in SQL).
fn compare(actual: Option<Cell<'_>>, op: CmpOp, expected: &Value) -> bool {
    let ord = match (actual, expected) {
        (Some(Cell::Number(a)), Value::Number(b)) => a.partial_cmp(b),
        (Some(Cell::Date(a)), Value::Date(b)) => Some(a.cmp(b)),
        (Some(Cell::Text(a)), Value::Text(b)) => Some(a.cmp(b.as_str())),
        (Some(Cell::Bool(a)), Value::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    };
    ord.is_some_and(|o| op.holds(o))
}

fn eval(expr: &Expr, r: &Record, today: i32) -> bool {
    match expr {
        Expr::And(parts) => parts.iter().all(|p| eval(p, r, today)),
        Expr::Or(parts) => parts.iter().any(|p| eval(p, r, today)),
        Expr::Not(inner) => !eval(inner, r, today),
        Expr::Const(b) => *b,
        Expr::IsTrue(field) => r.cell(*field, today) == Some(Cell::Bool(true)),
        Expr::Compare { field, op, value } => compare(r.cell(*field, today), *op, value),
        Expr::In {
            field,
            values,
            negated,
        } => match r.cell(*field, today) {
            // Null is in no list and, like a comparison, not "not in" one either.
            None => false,
            Some(v) => values.iter().any(|x| compare(Some(v), CmpOp::Eq, x)) != *negated,
        },
        Expr::HasTag(tag) => r.tags.iter().any(|t| t == tag),
        Expr::BoughtCategory(c) => r.categories.iter().any(|x| x == c),
    }
}

#[cfg(test)]
mod tests;
