//! Runtime values, and their conversion from and to JSON (validated against the declared
//! types, with errors that name the JSON path).

use flow_compiler::bytecode::{Module, Refinement, Subject, TypeDesc, TypeRef};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// `none`, and the value of statements.
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// Milliseconds.
    Duration(i64),
    /// Milliseconds since the Unix epoch.
    Time(i64),
    List(Vec<Value>),
    /// Records, maps and JSON objects.
    Record(BTreeMap<String, Value>),
    Variant {
        name: String,
        fields: Vec<(String, Value)>,
    },
    /// A `Secret`: shown as `"[redacted]"` everywhere but in the arguments of a tool call.
    Secret(String),
}

/// What a `Secret` looks like in the history, the audit trail, outputs and text.
pub const REDACTED: &str = "[redacted]";

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "none",
            Value::Bool(_) => "Bool",
            Value::Int(_) => "Int",
            Value::Float(_) => "Float",
            Value::Str(_) => "String",
            Value::Duration(_) => "Duration",
            Value::Time(_) => "Time",
            Value::List(_) => "List",
            Value::Record(_) => "record",
            Value::Variant { .. } => "enum value",
            Value::Secret(_) => "Secret",
        }
    }

    pub fn record(fields: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
        Value::Record(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    pub fn field(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Record(fields) => fields.get(name),
            _ => None,
        }
    }

    /// The value as JSON; enum values become `"Variant"` or `{"Variant": {fields}}`,
    /// durations `"90s"`-style text, times RFC 3339 text, secrets `"[redacted]"`.
    pub fn to_json(&self) -> serde_json::Value {
        self.json(false)
    }

    /// The value as JSON with its secrets in clear: only for the arguments of a tool call.
    pub fn to_json_revealing(&self) -> serde_json::Value {
        self.json(true)
    }

    fn json(&self, reveal: bool) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Secret(clear) if reveal => J::String(clear.clone()),
            Value::Secret(_) => J::String(REDACTED.to_string()),
            Value::None => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or(J::Null),
            Value::Str(s) => J::String(s.clone()),
            Value::Duration(ms) => J::String(format_duration(*ms)),
            Value::Time(ms) => J::String(format_time(*ms)),
            Value::List(items) => J::Array(items.iter().map(|v| v.json(reveal)).collect()),
            Value::Record(fields) => J::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.json(reveal)))
                    .collect(),
            ),
            Value::Variant { name, fields } if fields.is_empty() => J::String(name.clone()),
            Value::Variant { name, fields } => {
                let inner = fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.json(reveal)))
                    .collect();
                J::Object([(name.clone(), J::Object(inner))].into_iter().collect())
            }
        }
    }

    /// Any JSON, as the `Json` type holds it.
    pub fn from_any_json(json: &serde_json::Value) -> Value {
        use serde_json::Value as J;
        match json {
            J::Null => Value::None,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(0.0)),
            },
            J::String(s) => Value::Str(s.clone()),
            J::Array(items) => Value::List(items.iter().map(Value::from_any_json).collect()),
            J::Object(fields) => Value::Record(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from_any_json(v)))
                    .collect(),
            ),
        }
    }

    /// The text form used by string interpolation and `to_string`.
    pub fn to_text(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Secret(_) => REDACTED.to_string(),
            Value::None => "none".to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Duration(ms) => format_duration(*ms),
            Value::Time(ms) => format_time(*ms),
            // `Held` or `Held(reason: no docs)`: the way the source writes it.
            Value::Variant { name, fields } if fields.is_empty() => name.clone(),
            Value::Variant { name, fields } => format!(
                "{name}({})",
                fields
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", v.to_text()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            other => other.to_json().to_string(),
        }
    }
}

/// `90000` → `"1m30s"`; whole units, largest first.
pub fn format_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    let mut rest = ms.unsigned_abs();
    let mut out = String::new();
    if ms < 0 {
        out.push('-');
    }
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

/// Parses `"30s"`, `"1h30m"`, `"500ms"`, `"2d"`.
pub fn parse_duration(text: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let number: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        total = total.checked_add(number.checked_mul(factor)?)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

pub use flow_stdlib::time::{format_time, parse_time};

/// Why JSON does not fit a declared type, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonMismatch {
    /// `$.shipment.docs[2].kind`
    pub path: String,
    pub expected: String,
    pub found: String,
}

impl fmt::Display for JsonMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: expected {}, found {}",
            self.path, self.expected, self.found
        )
    }
}

fn json_kind(json: &serde_json::Value) -> String {
    use serde_json::Value as J;
    match json {
        J::Null => "null".into(),
        J::Bool(_) => "a boolean".into(),
        J::Number(_) => "a number".into(),
        J::String(s) => format!("the string {:?}", truncate(s, 40)),
        J::Array(_) => "an array".into(),
        J::Object(_) => "an object".into(),
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}…")
    }
}

/// Converts JSON to a value of type `ty`, or says where it does not fit.
pub fn from_json(
    module: &Module,
    ty: TypeRef,
    json: &serde_json::Value,
    path: &str,
) -> Result<Value, JsonMismatch> {
    use serde_json::Value as J;
    let mismatch = |expected: String| JsonMismatch {
        path: path.to_string(),
        expected,
        found: json_kind(json),
    };
    let Some(desc) = module.type_desc(ty) else {
        return Err(mismatch("a known type".into()));
    };
    match (desc, json) {
        (TypeDesc::Refined { base, rule, .. }, _) => {
            let value = from_json(module, *base, json, path)?;
            check_refined(module, ty, rule, &value, path)?;
            Ok(value)
        }
        (TypeDesc::Optional(_), J::Null) => Ok(Value::None),
        (TypeDesc::Optional(inner), _) => from_json(module, *inner, json, path),
        (TypeDesc::Json, _) => Ok(Value::from_any_json(json)),
        (TypeDesc::Secret, J::String(s)) => Ok(Value::Secret(s.clone())),
        (TypeDesc::Int, J::Number(n)) => match n.as_i64() {
            Some(i) => Ok(Value::Int(i)),
            None if n.is_u64()
                || n.as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && f.abs() >= 9.2e18) =>
            {
                Err(JsonMismatch {
                    path: path.to_string(),
                    expected:
                        "Int, a whole number from -9223372036854775808 to 9223372036854775807"
                            .into(),
                    found: format!("{n}, which is too large"),
                })
            }
            None => Err(mismatch("Int (a whole number)".into())),
        },
        (TypeDesc::Float, J::Number(n)) => n
            .as_f64()
            .map(Value::Float)
            .ok_or_else(|| mismatch("Float".into())),
        (TypeDesc::Bool, J::Bool(b)) => Ok(Value::Bool(*b)),
        (TypeDesc::String, J::String(s)) => Ok(Value::Str(s.clone())),
        (TypeDesc::Duration, J::String(s)) => parse_duration(s)
            .map(Value::Duration)
            .ok_or_else(|| mismatch("Duration (like \"30s\", \"48h\")".into())),
        // A number is milliseconds; like `"-5s"`, a negative one is no duration.
        (TypeDesc::Duration, J::Number(n)) => n
            .as_i64()
            .filter(|ms| *ms >= 0)
            .map(Value::Duration)
            .ok_or_else(|| {
                mismatch(
                    "Duration (a whole, non-negative number of milliseconds, or like \"30s\")"
                        .into(),
                )
            }),
        (TypeDesc::Time, J::String(s)) => parse_time(s).map(Value::Time).ok_or_else(|| {
            mismatch("Time (RFC 3339 in UTC, like \"2026-11-23T10:00:00Z\")".into())
        }),
        (TypeDesc::Approvers, J::Object(_)) => Ok(Value::from_any_json(json)),
        (TypeDesc::Unit, J::Null) => Ok(Value::None),
        (TypeDesc::List(inner), J::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| from_json(module, *inner, item, &format!("{path}[{i}]")))
            .collect::<Result<_, _>>()
            .map(Value::List),
        (TypeDesc::Map(inner), J::Object(fields)) => fields
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    from_json(module, *inner, v, &field_path(path, k))?,
                ))
            })
            .collect::<Result<_, _>>()
            .map(Value::Record),
        (TypeDesc::Record { fields, .. }, J::Object(given)) => {
            if let Some(extra) = given
                .keys()
                .find(|k| !fields.iter().any(|(name, _)| name == *k))
            {
                return Err(JsonMismatch {
                    path: field_path(path, extra),
                    expected: format!("only the fields {}", field_names(fields)),
                    found: "a field that does not exist".into(),
                });
            }
            let mut out = BTreeMap::new();
            for (name, field_ty) in fields {
                let field_json = given.get(name).unwrap_or(&J::Null);
                let is_optional =
                    matches!(module.type_desc(*field_ty), Some(TypeDesc::Optional(_)));
                if !given.contains_key(name) && !is_optional {
                    return Err(JsonMismatch {
                        path: field_path(path, name),
                        expected: module.type_name(*field_ty),
                        found: "nothing (the field is missing)".into(),
                    });
                }
                out.insert(
                    name.clone(),
                    from_json(module, *field_ty, field_json, &field_path(path, name))?,
                );
            }
            Ok(Value::Record(out))
        }
        (TypeDesc::Enum { variants, name }, J::String(tag)) => {
            match variants.iter().find(|(v, _)| v == tag) {
                Some((v, fields)) if fields.is_empty() => Ok(Value::Variant {
                    name: v.clone(),
                    fields: Vec::new(),
                }),
                Some(_) => Err(mismatch(format!(
                    "{tag} with its fields, as {{\"{tag}\": {{…}}}}"
                ))),
                None => Err(mismatch(format!(
                    "one of the {name} variants ({})",
                    variant_names(variants)
                ))),
            }
        }
        (TypeDesc::Enum { variants, name }, J::Object(given)) if given.len() == 1 => {
            let (tag, inner) = given
                .iter()
                .next()
                .map(|(k, v)| (k.clone(), v))
                .unwrap_or_default();
            let Some((v, fields)) = variants.iter().find(|(v, _)| *v == tag) else {
                return Err(mismatch(format!(
                    "one of the {name} variants ({})",
                    variant_names(variants)
                )));
            };
            let inner_path = field_path(path, &tag);
            let empty = serde_json::Map::new();
            let inner_fields = match inner {
                J::Object(map) => map,
                J::Null if fields.is_empty() => &empty,
                _ => {
                    return Err(JsonMismatch {
                        path: inner_path,
                        expected: "an object with the variant's fields".into(),
                        found: json_kind(inner),
                    });
                }
            };
            let mut out = Vec::new();
            for (field, field_ty) in fields {
                let value = inner_fields.get(field).unwrap_or(&J::Null);
                out.push((
                    field.clone(),
                    from_json(module, *field_ty, value, &field_path(&inner_path, field))?,
                ));
            }
            Ok(Value::Variant {
                name: v.clone(),
                fields: out,
            })
        }
        _ => Err(mismatch(module.type_name(ty))),
    }
}

/// Whether `value` (of the refined type `ty`'s base) admits `rule`; if not, where and why.
fn check_refined(
    module: &Module,
    ty: TypeRef,
    rule: &Refinement,
    value: &Value,
    path: &str,
) -> Result<(), JsonMismatch> {
    let subject = match value {
        Value::Int(i) => Subject::Int(*i),
        Value::Float(f) => Subject::Float(*f),
        Value::Str(s) => Subject::Text(s),
        Value::List(items) => Subject::Items(items.len()),
        // `none` for an optional refined value, or what the checker let through.
        _ => return Ok(()),
    };
    if rule.admits(subject) {
        return Ok(());
    }
    let expected = match module.type_desc(ty) {
        Some(TypeDesc::Refined {
            name: Some(name),
            base,
            rule,
        }) => format!("a {name} ({} {rule})", module.type_name(*base)),
        _ => module.type_name(ty),
    };
    let found = match value {
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format!("{f:?}"),
        Value::Str(s) if s.is_empty() => "an empty string".to_string(),
        Value::Str(s) => match rule {
            Refinement::Length { .. } => {
                format!("{:?} ({} characters)", truncate(s, 40), s.chars().count())
            }
            _ => format!("the string {:?}", truncate(s, 40)),
        },
        Value::List(items) if items.is_empty() => "an empty list".to_string(),
        Value::List(items) if items.len() == 1 => "a list of 1 item".to_string(),
        Value::List(items) => format!("a list of {} items", items.len()),
        other => other.type_name().to_string(),
    };
    Err(JsonMismatch {
        path: path.to_string(),
        expected,
        found,
    })
}

/// `value` with the text that type `ty` declares `Secret` turned into secrets, and the
/// optional fields a record leaves out set to `none` (`Op::Conform`); a value put into a
/// refined type is checked against its rule, and one that breaks it is refused with where and
/// why. Only what the checker let through reaches here; anything else is left as it is.
pub fn conform(module: &Module, ty: TypeRef, value: Value) -> Result<Value, JsonMismatch> {
    conform_at(module, ty, value, "$")
}

fn conform_at(
    module: &Module,
    ty: TypeRef,
    value: Value,
    path: &str,
) -> Result<Value, JsonMismatch> {
    Ok(match (module.type_desc(ty), value) {
        (Some(TypeDesc::Refined { base, rule, .. }), value) => {
            let value = conform_at(module, *base, value, path)?;
            check_refined(module, ty, rule, &value, path)?;
            value
        }
        (Some(TypeDesc::Secret), Value::Str(text)) => Value::Secret(text),
        (Some(TypeDesc::Optional(_)), Value::None) => Value::None,
        (Some(TypeDesc::Optional(inner)), value) => conform_at(module, *inner, value, path)?,
        (Some(TypeDesc::List(inner)), Value::List(items)) => Value::List(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| conform_at(module, *inner, item, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        (Some(TypeDesc::Map(inner)), Value::Record(entries)) => Value::Record(
            entries
                .into_iter()
                .map(|(key, item)| {
                    let at = field_path(path, &key);
                    Ok((key, conform_at(module, *inner, item, &at)?))
                })
                .collect::<Result<_, _>>()?,
        ),
        (Some(TypeDesc::Record { fields, .. }), Value::Record(mut values)) => {
            for (name, field_ty) in fields {
                if let Some(field) = values.remove(name) {
                    let at = field_path(path, name);
                    values.insert(name.clone(), conform_at(module, *field_ty, field, &at)?);
                } else if let Some(TypeDesc::Optional(_)) = module.type_desc(*field_ty) {
                    values.insert(name.clone(), Value::None);
                }
            }
            Value::Record(values)
        }
        (_, value) => value,
    })
}

/// JSON text from outside (a run's input, a value a person provides) parsed like
/// `serde_json::from_slice`, except that an object naming a key twice is refused with its path
/// (serde_json would silently keep the last one, and what the person meant is unknowable).
pub fn parse_strict_json(text: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
    use serde::de::DeserializeSeed;
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let value = StrictJson {
        path: "$".to_string(),
    }
    .deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// A JSON value at `path`, deserialized without duplicate keys.
struct StrictJson {
    path: String,
}

impl<'de> serde::de::DeserializeSeed<'de> for StrictJson {
    type Value = serde_json::Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for StrictJson {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictJson {
            path: format!("{}[{}]", self.path, items.len()),
        })? {
            items.push(item);
        }
        Ok(serde_json::Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = field_path(&self.path, &key);
            if fields.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "{path}: the key `{key}` appears twice in the object; give it once"
                )));
            }
            let value = map.next_value_seed(StrictJson { path })?;
            fields.insert(key, value);
        }
        Ok(serde_json::Value::Object(fields))
    }
}

fn field_path(path: &str, field: &str) -> String {
    if field.chars().all(|c| c.is_alphanumeric() || c == '_') && !field.is_empty() {
        format!("{path}.{field}")
    } else {
        format!("{path}[{field:?}]")
    }
}

fn field_names(fields: &[(String, TypeRef)]) -> String {
    fields
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn variant_names(variants: &[(String, Vec<(String, TypeRef)>)]) -> String {
    variants
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_json_refuses_a_key_given_twice_with_its_path() {
        let parsed =
            parse_strict_json(br#"{"a": [1, {"b": 2.5, "c": null}], "d": "x", "e": true}"#);
        assert_eq!(
            parsed.expect("valid JSON"),
            serde_json::json!({"a": [1, {"b": 2.5, "c": null}], "d": "x", "e": true})
        );
        let twice = parse_strict_json(br#"{"request": {"amount": 1, "amount": 90}}"#)
            .expect_err("a key twice")
            .to_string();
        assert!(
            twice.contains("$.request.amount: the key `amount` appears twice"),
            "{twice}"
        );
        let deep = parse_strict_json(br#"[{"x": 1}, {"odd key": 1, "odd key": 2}]"#)
            .expect_err("a key twice")
            .to_string();
        assert!(deep.contains(r#"$[1]["odd key"]"#), "{deep}");
        assert!(parse_strict_json(b"{} {}").is_err(), "trailing text");
        assert_eq!(
            parse_strict_json(b"18446744073709551615").expect("u64"),
            serde_json::json!(u64::MAX)
        );
    }

    #[test]
    fn durations_round_trip_through_text() {
        for ms in [0, 500, 30_000, 90_000, 3_600_000 * 48, 86_400_000 * 2 + 1] {
            assert_eq!(parse_duration(&format_duration(ms)), Some(ms), "{ms}");
        }
        assert_eq!(parse_duration("2days"), None);
        assert_eq!(parse_duration(""), None);
    }

    /// A module from source, for its type descriptions.
    fn module(source: &str) -> Module {
        let program = flow_compiler::program::check_text("t.flow", source);
        assert_eq!(program.errors(), 0, "{:#?}", program.diagnostics);
        flow_compiler::lower::lower(&program).expect("lowers")
    }

    #[test]
    fn refinements_are_checked_in_json_and_in_conform_with_the_path() {
        let module = module(
            "type Score = Float in 0.0..1.0\n\
             type Rated = { scores: List<Score>, tag: String? length 1..3 }\n\
             workflow w(r: Rated) -> Int { 0 }\n",
        );
        let ty = module.workflows[0].params[0].1;
        let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).expect("JSON");
        let fits = from_json(
            &module,
            ty,
            &json(r#"{"scores": [0.0, 1.0], "tag": null}"#),
            "$",
        );
        assert!(fits.is_ok(), "{fits:?}");
        let broken = from_json(&module, ty, &json(r#"{"scores": [0.5, 1.5]}"#), "$")
            .expect_err("1.5 is out of range");
        assert_eq!(
            broken.to_string(),
            "$.scores[1]: expected a Score (Float in 0.0..1.0), found 1.5"
        );
        let long = from_json(&module, ty, &json(r#"{"scores": [], "tag": "abcd"}"#), "$")
            .expect_err("too long");
        assert_eq!(
            long.to_string(),
            "$.tag: expected String length 1..3, found \"abcd\" (4 characters)"
        );
        // `conform`: the same rules, on a value the workflow built.
        let value = Value::record([
            (
                "scores",
                Value::List(vec![Value::Float(0.5), Value::Float(-0.5)]),
            ),
            ("tag", Value::None),
        ]);
        let refused = conform(&module, ty, value).expect_err("-0.5 is out of range");
        assert_eq!(refused.path, "$.scores[1]");
        assert_eq!(refused.found, "-0.5");
        let value = Value::record([("scores", Value::List(vec![Value::Float(0.5)]))]);
        let conformed = conform(&module, ty, value).expect("fits");
        assert_eq!(conformed.field("tag"), Some(&Value::None));
    }

    #[test]
    fn enum_values_read_as_the_source_writes_them() {
        let unit = Value::Variant {
            name: "High".into(),
            fields: Vec::new(),
        };
        assert_eq!(unit.to_text(), "High");
        let with = Value::Variant {
            name: "Held".into(),
            fields: vec![("reason".into(), Value::Str("no docs".into()))],
        };
        assert_eq!(with.to_text(), "Held(reason: no docs)");
    }

    #[test]
    fn times_round_trip_through_rfc3339() {
        let t = parse_time("2026-11-23T23:12:32.250Z").expect("parses");
        assert_eq!(format_time(t), "2026-11-23T23:12:32.250Z");
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time("2026-13-01T00:00:00Z"), None);
    }
}
