use proptest::prelude::*;

use super::*;

fn day(s: &str) -> i32 {
    epoch_day(NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap())
}

fn err(text: &str) -> SegmentError {
    Rule::parse(text).expect_err(text)
}

fn customer() -> Record {
    Record {
        customer_id: "c1".into(),
        external_id: "x1".into(),
        region: "East".into(),
        gender: "female".into(),
        birth_day: Some(day("1990-11-25")),
        relationship_start_day: Some(day("2020-11-22")),
        tags: vec!["vip".into()],
        categories: vec!["books".into(), "music".into()],
        consent: [true, false, false, false, false],
        purchases: 7,
        first_purchase_day: Some(day("2020-12-01")),
        last_purchase_day: Some(day("2026-08-01")),
        scores: Some(ScoreFields {
            rfm_segment: "at_risk".into(),
            churn_probability: 0.7,
            churn_risk: "high".into(),
            value_tier: "high".into(),
            monetary: 1200.0,
            ..ScoreFields::default()
        }),
        ..Record::default()
    }
}

#[test]
fn the_models_md_example_parses_and_evaluates() {
    let rule = Rule::parse(
        r#"rfm.segment in ("at_risk", "cant_lose_them") and churn.probability > 0.6 and customer.region = "East""#,
    )
    .unwrap();
    assert_eq!(
        rule.fields,
        ["customer.region", "rfm.segment", "churn.probability"]
    );
    let today = day("2026-11-22");
    assert!(rule.matches(&customer(), today));
    let mut other = customer();
    other.region = "West".into();
    assert!(!rule.matches(&other, today));
}

#[test]
fn operators_functions_and_date_helpers() {
    let today = day("2026-11-22");
    let c = customer();
    let cases = [
        ("days_to_birthday <= 7", true),
        ("days_to_birthday = 3", true),
        ("days_to_anniversary = 0", true),
        ("customer.age = 35", true),
        ("customer.age >= 36", false),
        ("has(customer.tags, \"vip\")", true),
        ("not has(customer.tags, \"gold\")", true),
        (
            "bought_category(\"books\") and not bought_category(\"toys\")",
            true,
        ),
        ("days_since_last_purchase > 90", true),
        ("last_purchase_date >= date(\"2026-08-01\")", true),
        ("date(\"2026-08-01\") < last_purchase_date", false),
        ("consent.email", true),
        ("consent.sms or consent.push", false),
        ("consent.email = false", false),
        ("purchases >= 7 AND purchases < 8", true),
        ("churn.risk not in (\"low\", \"medium\")", true),
        ("1000 < rfm.monetary", true),
        (
            "(value.tier = \"high\" or purchases > 100) and not (customer.region != \"East\")",
            true,
        ),
        ("true", true),
        ("not true or false", false),
        ("clv.p_alive > 0.5", false),
        ("customer.gender == \"female\"", true),
    ];
    for (text, expected) in cases {
        let rule = Rule::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(rule.matches(&c, today), expected, "{text}");
    }
}

#[test]
fn unscored_customers_and_nulls_match_no_comparison() {
    let today = day("2026-11-22");
    let mut c = customer();
    c.scores = None;
    c.birth_day = None;
    for text in [
        "churn.probability > 0",
        "churn.probability != 1",
        "rfm.segment not in (\"champions\")",
        "days_to_birthday <= 400",
        "customer.age != 1",
    ] {
        assert!(!Rule::parse(text).unwrap().matches(&c, today), "{text}");
    }
    assert!(
        Rule::parse("not churn.probability > 0")
            .unwrap()
            .matches(&c, today)
    );
}

#[test]
fn birthdays_on_29_february_fall_on_28_february_in_common_years() {
    let born = day("2000-02-29");
    assert_eq!(days_to_next(born, day("2027-02-27")), Some(1));
    assert_eq!(days_to_next(born, day("2027-02-28")), Some(0));
    assert_eq!(days_to_next(born, day("2028-02-28")), Some(1));
    assert_eq!(days_to_next(day("1990-01-05"), day("2026-12-30")), Some(6));
}

#[test]
fn names_copied_from_the_api_point_to_the_field() {
    for (written, meant) in [
        ("rfm.r_score > 3", "rfm.r"),
        ("clv.predicted_clv_365d > 10", "clv.predicted_365d"),
        ("clv.simple_clv > 10", "clv.simple"),
        ("value_tier = \"high\"", "value.tier"),
        ("lifecycle_stage = \"new\"", "lifecycle.stage"),
        ("profitability.margin > 0", "profit.margin"),
        ("region = \"East\"", "customer.region"),
    ] {
        let e = err(written);
        assert!(
            e.message.contains(&format!("did you mean `{meant}`")),
            "{written}: {e}"
        );
    }
    // Every path points to a field, and none is a field itself.
    for (path, field) in SCORE_PATHS {
        assert!(Field::by_name(field).is_some(), "{field}");
        assert!(Field::by_name(path).is_none(), "{path}");
    }
}

#[test]
fn errors_name_line_and_column() {
    let e = err("churn.probablity > 0.6");
    assert_eq!((e.line, e.column), (1, 1));
    assert!(
        e.message.contains("unknown field `churn.probablity`"),
        "{e}"
    );
    assert!(
        e.message.contains("did you mean `churn.probability`"),
        "{e}"
    );

    let e = err("purchases > 3 and\n  customer.region = 5");
    assert_eq!((e.line, e.column), (2, 21));
    assert!(
        e.message.contains("is a string, but this is a number"),
        "{e}"
    );

    let e = err("rfm.segment = \"vips\"");
    assert_eq!((e.line, e.column), (1, 15));
    assert!(e.message.contains("\"champions\""), "{e}");

    let e = err("purchases > 3 and (churn.risk = \"high\"");
    assert_eq!((e.line, e.column), (1, 39));
    assert!(e.message.contains("expected `)`"), "{e}");

    let e = err("customer.region > \"E\"");
    assert!(e.message.contains("only = and != apply"), "{e}");
    let e = err("purchases");
    assert!(e.message.contains("not a condition"), "{e}");
    let e = err("has(customer.region, \"x\")");
    assert_eq!((e.line, e.column), (1, 5));
    let e = err("customer.tags = \"vip\"");
    assert!(e.message.contains("has(customer.tags"), "{e}");
    let e = err("last_purchase_date > \"2026-01-01\"");
    assert!(e.message.contains("date(\"YYYY-MM-DD\")"), "{e}");
    let e = err("last_purchase_date > date(\"2026-02-30\")");
    assert!(e.message.contains("not a date"), "{e}");
    let e = err("frobnicate(\"x\")");
    assert!(e.message.contains("unknown function"), "{e}");
    let e = err("purchases > 3 purchases < 5");
    assert_eq!((e.line, e.column), (1, 15));
    let e = err("");
    assert!(e.message.contains("empty"), "{e}");
    let e = err("customer.region = 'East");
    assert!(e.message.contains("unterminated"), "{e}");
    let e = err("purchases > 1 and purchases > purchases");
    assert!(e.message.contains("two fields"), "{e}");
    let e = err("3 > 2");
    assert!(e.message.contains("one side must be a field"), "{e}");
}

#[test]
fn errors_become_invalid_argument_on_the_named_field() {
    let api = err("x = 1").into_api_error("segment.expression");
    assert_eq!(api.code, crate::ErrorCode::InvalidArgument);
    assert_eq!(api.violations[0].field, "segment.expression");
    assert!(
        api.violations[0]
            .description
            .starts_with("line 1, column 1:")
    );
}

#[test]
fn nesting_is_bounded() {
    let deep = format!("{}purchases > 1{}", "(".repeat(500), ")".repeat(500));
    assert!(err(&deep).message.contains("nested deeper"));
    let nots = format!("{}consent.email", "not ".repeat(500));
    assert!(err(&nots).message.contains("nested deeper"));
    let calls = format!("{}\"x\"{}", "has(".repeat(500), ")".repeat(500));
    assert!(Rule::parse(&calls).is_err());
    assert!(err(&"a".repeat(10_001)).message.contains("longer than"));
}

/// Renders a rule back to text, for the round-trip property.
fn render(e: &Expr) -> String {
    let value = |v: &Value| match v {
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("{n:?}"),
        Value::Text(s) => format!("{s:?}"),
        Value::Date(d) => format!("date(\"{}\")", from_epoch_day(*d).unwrap()),
    };
    let op = |o: &CmpOp| match o {
        CmpOp::Eq => "=",
        CmpOp::Ne => "!=",
        CmpOp::Lt => "<",
        CmpOp::Le => "<=",
        CmpOp::Gt => ">",
        CmpOp::Ge => ">=",
    };
    match e {
        Expr::And(p) => format!(
            "({})",
            p.iter().map(render).collect::<Vec<_>>().join(" and ")
        ),
        Expr::Or(p) => format!(
            "({})",
            p.iter().map(render).collect::<Vec<_>>().join(" or ")
        ),
        Expr::Not(i) => format!("not {}", render(i)),
        Expr::Const(b) => b.to_string(),
        Expr::IsTrue(f) => f.name().to_owned(),
        Expr::Compare {
            field,
            op: o,
            value: v,
        } => {
            format!("{} {} {}", field.name(), op(o), value(v))
        }
        Expr::In {
            field,
            values,
            negated,
        } => format!(
            "{} {}in ({})",
            field.name(),
            if *negated { "not " } else { "" },
            values.iter().map(value).collect::<Vec<_>>().join(", ")
        ),
        Expr::HasTag(t) => format!("has(customer.tags, {t:?})"),
        Expr::BoughtCategory(c) => format!("bought_category({c:?})"),
    }
}

fn leaf() -> impl Strategy<Value = Expr> {
    let numeric: Vec<Field> = FIELDS
        .iter()
        .filter(|d| d.ty == Type::Number)
        .map(|d| d.field)
        .collect();
    let boolean: Vec<Field> = FIELDS
        .iter()
        .filter(|d| d.ty == Type::Bool)
        .map(|d| d.field)
        .collect();
    let ops = prop::sample::select(vec![
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
    ]);
    prop_oneof![
        (prop::sample::select(numeric), ops.clone(), -1000i32..1000).prop_map(|(field, op, n)| {
            Expr::Compare {
                field,
                op,
                value: Value::Number(f64::from(n) / 4.0),
            }
        }),
        (prop::sample::select(boolean), any::<bool>()).prop_map(|(field, b)| if b {
            Expr::IsTrue(field)
        } else {
            Expr::Not(Box::new(Expr::IsTrue(field)))
        }),
        (prop::sample::select(RFM_SEGMENTS.to_vec()), any::<bool>()).prop_map(|(s, negated)| {
            Expr::In {
                field: Field::RfmSegment,
                values: vec![Value::Text(s.into())],
                negated,
            }
        }),
        "[a-z]{1,6}".prop_map(|r| Expr::Compare {
            field: Field::Region,
            op: CmpOp::Eq,
            value: Value::Text(r),
        }),
        (ops, 0i32..30_000).prop_map(|(op, d)| Expr::Compare {
            field: Field::LastPurchaseDate,
            op,
            value: Value::Date(d),
        }),
        "[a-z]{1,5}".prop_map(Expr::HasTag),
        "[a-z]{1,5}".prop_map(Expr::BoughtCategory),
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    leaf().prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::Or),
            inner.prop_map(|e| Expr::Not(Box::new(e))),
        ]
    })
}

fn record() -> impl Strategy<Value = Record> {
    (
        prop::sample::select(vec!["east", "west", "north"]),
        prop::collection::vec(prop::sample::select(vec!["vip", "gold", "new"]), 0..3),
        prop::collection::vec(prop::sample::select(vec!["books", "toys", "music"]), 0..3),
        any::<[bool; 5]>(),
        prop::option::of(0i32..30_000),
        prop::option::of((
            prop::sample::select(RFM_SEGMENTS.to_vec()),
            0.0f64..1.0,
            0.0f64..5000.0,
        )),
    )
        .prop_map(|(region, tags, categories, consent, last, scores)| Record {
            customer_id: "c".into(),
            region: region.into(),
            tags: tags.into_iter().map(String::from).collect(),
            categories: categories.into_iter().map(String::from).collect(),
            consent,
            purchases: i64::from(last.is_some()),
            first_purchase_day: last,
            last_purchase_day: last,
            scores: scores.map(|(segment, churn, monetary)| ScoreFields {
                rfm_segment: segment.into(),
                churn_probability: churn,
                monetary,
                ..ScoreFields::default()
            }),
            ..Record::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Fuzzing: arbitrary text never panics, it parses or names a position
    /// inside (or just past) the input.
    #[test]
    fn never_panics_on_arbitrary_text(input in "\\PC{0,120}") {
        if let Err(e) = Rule::parse(&input) {
            prop_assert!(e.line >= 1 && e.column >= 1);
            prop_assert!(e.line <= input.lines().count().max(1) + 1);
        }
    }

    #[test]
    fn never_panics_on_rule_like_text(
        input in r#"(not |\(|\)|and |or |in |, |"at_risk" |churn\.probability |rfm\.segment |> |= |0\.5 |has\(|customer\.tags|bought_category\(|date\("2026-01-01"\)|consent\.email |-3 |1e9 |'x' ){0,24}"#
    ) {
        let _ = Rule::parse(&input);
    }

    /// Rendering a rule and parsing it again gives the same rule.
    #[test]
    fn rendered_rules_parse_back_to_themselves(e in expr()) {
        let text = render(&e);
        let parsed = Rule::parse(&text).map_err(|err| TestCaseError::fail(format!("{text}: {err}")))?;
        prop_assert_eq!(parsed.expr, e);
    }

    /// The connectives mean what they say, for every record.
    #[test]
    fn connectives_follow_boolean_logic(a in expr(), b in expr(), r in record(), today in 0i32..30_000) {
        let (ta, tb) = (render(&a), render(&b));
        let va = Rule::parse(&ta).unwrap().matches(&r, today);
        let vb = Rule::parse(&tb).unwrap().matches(&r, today);
        prop_assert_eq!(Rule::parse(&format!("{ta} and {tb}")).unwrap().matches(&r, today), va && vb);
        prop_assert_eq!(Rule::parse(&format!("{ta} or {tb}")).unwrap().matches(&r, today), va || vb);
        prop_assert_eq!(Rule::parse(&format!("not ({ta})")).unwrap().matches(&r, today), !va);
        prop_assert_eq!(
            Rule::parse(&format!("not ({ta} and {tb})")).unwrap().matches(&r, today),
            Rule::parse(&format!("not ({ta}) or not ({tb})")).unwrap().matches(&r, today)
        );
    }
}

/// docs/segments.md documents every field of the catalogue, and every rule
/// it shows in backticks after "Rule" tables parses.
#[test]
fn the_documentation_covers_the_catalogue() {
    let doc = include_str!("../../../../docs/segments.md");
    for def in FIELDS {
        assert!(
            doc.contains(&format!("`{}`", def.name)),
            "{} is not documented",
            def.name
        );
    }
    for rule in [
        r#"value.tier = "high" and churn.risk in ("medium", "high")"#,
        r#"feedback.nps_category = "detractor" or feedback.open_complaints > 0"#,
        r#"rfm.segment in ("at_risk", "cant_lose_them") and days_since_last_purchase > 90"#,
        r#"bought_category("fashion") and not bought_category("beauty") and consent.email"#,
        r#"value.quadrant = "grow" and clv.p_alive > 0.5"#,
        "days_to_birthday <= 7 or days_to_anniversary <= 7",
        r#"lifecycle.stage = "new" and purchases = 1"#,
        r#"has(customer.tags, "vip") and days_since_last_purchase > 60"#,
        r#"customer.age < 30 and value.quadrant in ("star", "grow")"#,
    ] {
        assert!(
            doc.contains(&format!("`{rule}`")),
            "{rule} is not in the doc"
        );
        Rule::parse(rule).unwrap_or_else(|e| panic!("{rule}: {e}"));
    }
}
