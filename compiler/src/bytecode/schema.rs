//! The JSON Schema of a declared type: what an `llm` tool sends as its response format, so
//! that the model is asked for exactly the shape the runtime will accept.
//!
//! The schema describes the JSON forms that the runtime's validation (`from_json`) accepts:
//!
//! | Flow type | JSON Schema |
//! |---|---|
//! | `Int` / `Float` / `Bool` / `String` | `integer` / `number` / `boolean` / `string` |
//! | `Duration` | a string like `"30s"` or `"48h"` |
//! | `Time` | an RFC 3339 string in UTC |
//! | `T?` | `anyOf: [T, null]` |
//! | `List<T>` | `array` of `T` |
//! | `Map<T>` | `object` with `additionalProperties: T` |
//! | record | `object` with `properties`, the non-optional fields `required`, no others |
//! | enum | `oneOf`: the variants without fields as strings (`"Released"`), each variant with fields as `{"Variant": {fields}}` |
//! | `Json` | `{}` (anything) |
//! | refined `T` | `T`'s schema with `minimum`/`maximum` (`in a..b`), `pattern` (`matching`, anchored: `^(?:…)$`), `minLength`/`maxLength` or `minItems`/`maxItems` (`nonempty`, `length a..b`) |
//!
//! Named types are written inline. A type that contains itself (a recursive record or enum)
//! is written once under `$defs` and referred to with `$ref`.
//!
//! [`form_schema`] writes the same schema with what a form generated from it needs besides
//! (the inbox's forms, and its context tables): a record's `title` (its type's name) and
//! `x-order` (its fields in declaration order, since JSON objects have none), and
//! `format: password` for a `Secret`.

use super::module::{Module, TypeDesc, TypeRef};
use serde_json::{Map, Value, json};

/// The JSON Schema of `ty`.
pub fn json_schema(module: &Module, ty: TypeRef) -> Value {
    write(module, ty, false)
}

/// The JSON Schema of `ty` with the annotations of a form: titles, field order, passwords.
pub fn form_schema(module: &Module, ty: TypeRef) -> Value {
    write(module, ty, true)
}

fn write(module: &Module, ty: TypeRef, form: bool) -> Value {
    let mut writer = Writer {
        module,
        expanding: Vec::new(),
        recursive: Vec::new(),
        form,
    };
    let mut schema = writer.schema(ty);
    // Types that refer to themselves: write each once under `$defs`. Writing one may reveal
    // another, so go on until none is left.
    let mut defs = Map::new();
    let mut done = 0;
    while done < writer.recursive.len() {
        let ty = writer.recursive[done];
        done += 1;
        let name = writer.def_name(ty);
        writer.expanding.push(ty);
        let def = writer.named(ty);
        writer.expanding.pop();
        defs.insert(name, def);
    }
    if !defs.is_empty()
        && let Value::Object(object) = &mut schema
    {
        object.insert("$defs".to_string(), Value::Object(defs));
    }
    schema
}

struct Writer<'m> {
    module: &'m Module,
    /// Named types being written, outermost first (a repeat is a recursion).
    expanding: Vec<TypeRef>,
    /// Named types that refer to themselves, in the order found.
    recursive: Vec<TypeRef>,
    /// Whether to add a form's annotations ([`form_schema`]).
    form: bool,
}

impl Writer<'_> {
    fn schema(&mut self, ty: TypeRef) -> Value {
        let Some(desc) = self.module.type_desc(ty) else {
            return json!({});
        };
        match desc {
            TypeDesc::Int => json!({ "type": "integer" }),
            TypeDesc::Float => json!({ "type": "number" }),
            TypeDesc::Bool => json!({ "type": "boolean" }),
            TypeDesc::String => json!({ "type": "string" }),
            TypeDesc::Duration => json!({
                "type": "string",
                "description": "a duration: a number with a unit (ms, s, m, h, d), like \"30s\", \"48h\" or \"1h30m\"",
            }),
            TypeDesc::Time => json!({
                "type": "string",
                "description": "a time in UTC, RFC 3339, like \"2026-11-23T10:00:00Z\"",
            }),
            TypeDesc::Json => json!({}),
            TypeDesc::Approvers => json!({ "type": "object" }),
            TypeDesc::Unit => json!({ "type": "null" }),
            TypeDesc::Secret if self.form => {
                json!({ "type": "string", "format": "password", "writeOnly": true })
            }
            TypeDesc::Secret => json!({ "type": "string" }),
            TypeDesc::List(item) => json!({ "type": "array", "items": self.schema(*item) }),
            TypeDesc::Map(value) => {
                json!({ "type": "object", "additionalProperties": self.schema(*value) })
            }
            TypeDesc::Optional(inner) => self.nullable(*inner),
            TypeDesc::Refined { base, rule, .. } => {
                let (base, rule) = (*base, rule.clone());
                self.refined(base, &rule)
            }
            TypeDesc::Record { .. } | TypeDesc::Enum { .. } => {
                if self.expanding.contains(&ty) {
                    if !self.recursive.contains(&ty) {
                        self.recursive.push(ty);
                    }
                    return json!({ "$ref": format!("#/$defs/{}", self.def_name(ty)) });
                }
                self.expanding.push(ty);
                let schema = self.named(ty);
                self.expanding.pop();
                schema
            }
        }
    }

    /// A refined type: its base's schema with the rule's keywords (`minimum`, `pattern`, …);
    /// a second rule of the same keyword (a refinement of a refined type) goes in `allOf`.
    fn refined(&mut self, base: TypeRef, rule: &super::Refinement) -> Value {
        use super::Refinement as R;
        let mut schema = self.schema(base);
        let mut inner = base;
        while let Some(TypeDesc::Refined { base, .. }) = self.module.type_desc(inner) {
            inner = *base;
        }
        let list = matches!(self.module.type_desc(inner), Some(TypeDesc::List(_)));
        let (min_len, max_len) = if list {
            ("minItems", "maxItems")
        } else {
            ("minLength", "maxLength")
        };
        let mut extra = Map::new();
        match rule {
            R::IntRange { min, max } => {
                if let Some(min) = min {
                    extra.insert("minimum".into(), json!(min));
                }
                if let Some(max) = max {
                    extra.insert("maximum".into(), json!(max));
                }
            }
            R::FloatRange { min, max } => {
                if let Some(min) = min {
                    extra.insert("minimum".into(), json!(min));
                }
                if let Some(max) = max {
                    extra.insert("maximum".into(), json!(max));
                }
            }
            R::Matching(pattern) => {
                extra.insert("pattern".into(), json!(format!("^(?:{pattern})$")));
            }
            R::NonEmpty => {
                extra.insert(min_len.into(), json!(1));
            }
            R::Length { min, max } => {
                if let Some(min) = min {
                    extra.insert(min_len.into(), json!(min));
                }
                if let Some(max) = max {
                    extra.insert(max_len.into(), json!(max));
                }
            }
        }
        match &mut schema {
            Value::Object(object) if !extra.keys().any(|k| object.contains_key(k)) => {
                object.extend(extra);
                schema
            }
            _ => json!({ "allOf": [schema, Value::Object(extra)] }),
        }
    }

    /// `T?`: the schema of `T`, or null.
    fn nullable(&mut self, inner: TypeRef) -> Value {
        let inner = self.schema(inner);
        if inner.as_object().is_some_and(Map::is_empty) {
            // `Json?` already admits null.
            return inner;
        }
        json!({ "anyOf": [inner, { "type": "null" }] })
    }

    /// The schema of a record or enum, written out.
    fn named(&mut self, ty: TypeRef) -> Value {
        match self.module.type_desc(ty) {
            Some(TypeDesc::Record { fields, name }) => {
                let (fields, name) = (fields.clone(), name.clone());
                let mut schema = self.object(&fields);
                if self.form {
                    schema["title"] = Value::String(name);
                    self.describe_fields(ty, &fields, &mut schema);
                }
                schema
            }
            Some(TypeDesc::Enum { variants, .. }) => {
                let variants = variants.clone();
                let mut choices = Vec::new();
                let bare: Vec<&str> = variants
                    .iter()
                    .filter(|(_, fields)| fields.is_empty())
                    .map(|(name, _)| name.as_str())
                    .collect();
                if !bare.is_empty() {
                    choices.push(json!({ "type": "string", "enum": bare }));
                }
                for (name, fields) in variants.iter().filter(|(_, f)| !f.is_empty()) {
                    let inner = self.object(fields);
                    choices.push(json!({
                        "type": "object",
                        "properties": { name.clone(): inner },
                        "required": [name],
                        "additionalProperties": false,
                    }));
                }
                match choices.len() {
                    1 => choices.pop().unwrap_or_default(),
                    _ => json!({ "oneOf": choices }),
                }
            }
            _ => self.schema(ty),
        }
    }

    /// Gives each documented field of record type `ty` its `///` doc as its `description`,
    /// before the type's own hint when it has one (a `Duration`'s "like 90s").
    fn describe_fields(&self, ty: TypeRef, fields: &[(String, TypeRef)], schema: &mut Value) {
        for (name, _) in fields {
            let Some(doc) = self.module.field_doc(ty, name) else {
                continue;
            };
            let Some(property) = schema["properties"].get_mut(name) else {
                continue;
            };
            let text = match property.get("description").and_then(Value::as_str) {
                Some(hint) => format!("{doc} ({hint})"),
                None => doc.to_string(),
            };
            property["description"] = Value::String(text);
        }
    }

    /// An object with these fields: the optional ones may be left out (or null).
    fn object(&mut self, fields: &[(String, TypeRef)]) -> Value {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for (name, ty) in fields {
            if !matches!(self.module.type_desc(*ty), Some(TypeDesc::Optional(_))) {
                required.push(Value::String(name.clone()));
            }
            properties.insert(name.clone(), self.schema(*ty));
        }
        let mut schema = json!({
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        });
        if self.form {
            schema["x-order"] = fields.iter().map(|(name, _)| name.clone()).collect();
        }
        schema
    }

    /// The key of a named type under `$defs`: its name, made unique if two types share it.
    fn def_name(&self, ty: TypeRef) -> String {
        let name = match self.module.type_desc(ty) {
            Some(TypeDesc::Record { name, .. } | TypeDesc::Enum { name, .. }) => name.clone(),
            _ => "type".to_string(),
        };
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let shared = self.module.types.iter().enumerate().any(|(i, desc)| {
            i != ty.0 as usize
                && matches!(desc, TypeDesc::Record { name: n, .. } | TypeDesc::Enum { name: n, .. } if *n == name)
        });
        if shared {
            format!("{clean}_{}", ty.0)
        } else {
            clean
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module holding only these types.
    fn module(types: Vec<TypeDesc>) -> Module {
        Module {
            field_docs: Vec::new(),
            gate_contexts: Vec::new(),
            signals: Vec::new(),
            selects: Vec::new(),
            queries: Vec::new(),
            parallels: Vec::new(),
            tool_raises: Vec::new(),
            undos: Vec::new(),
            functions: Vec::new(),
            source_hash: String::new(),
            files: Vec::new(),
            constants: Vec::new(),
            field_lists: Vec::new(),
            kind_lists: Vec::new(),
            types,
            tools: Vec::new(),
            gates: Vec::new(),
            input_requests: Vec::new(),
            events: Vec::new(),
            workflows: Vec::new(),
        }
    }

    fn t(i: u32) -> TypeRef {
        TypeRef(i)
    }

    #[test]
    fn scalars() {
        let m = module(vec![
            TypeDesc::Int,
            TypeDesc::Float,
            TypeDesc::Bool,
            TypeDesc::String,
            TypeDesc::Json,
            TypeDesc::Unit,
        ]);
        assert_eq!(json_schema(&m, t(0)), json!({ "type": "integer" }));
        assert_eq!(json_schema(&m, t(1)), json!({ "type": "number" }));
        assert_eq!(json_schema(&m, t(2)), json!({ "type": "boolean" }));
        assert_eq!(json_schema(&m, t(3)), json!({ "type": "string" }));
        assert_eq!(json_schema(&m, t(4)), json!({}));
        assert_eq!(json_schema(&m, t(5)), json!({ "type": "null" }));
    }

    #[test]
    fn refinements_become_the_keywords_of_their_rules() {
        use crate::bytecode::Refinement as R;
        let refined = |base: u32, rule: R| TypeDesc::Refined {
            base: t(base),
            rule,
            name: None,
        };
        let m = module(vec![
            TypeDesc::Int,
            TypeDesc::Float,
            TypeDesc::String,
            TypeDesc::List(t(2)),
            refined(
                0,
                R::IntRange {
                    min: Some(1),
                    max: Some(1000),
                },
            ),
            refined(
                1,
                R::FloatRange {
                    min: Some(0.0),
                    max: None,
                },
            ),
            refined(2, R::Matching("[A-Z]{2}[0-9]+".into())),
            refined(2, R::NonEmpty),
            refined(3, R::NonEmpty),
            refined(
                3,
                R::Length {
                    min: None,
                    max: Some(5),
                },
            ),
            // A refinement of a refined type, with a keyword of its own and one its base has.
            refined(
                6,
                R::Length {
                    min: Some(1),
                    max: Some(8),
                },
            ),
            refined(
                4,
                R::IntRange {
                    min: Some(10),
                    max: None,
                },
            ),
            TypeDesc::Optional(t(4)),
        ]);
        assert_eq!(
            json_schema(&m, t(4)),
            json!({ "type": "integer", "minimum": 1, "maximum": 1000 })
        );
        assert_eq!(
            json_schema(&m, t(5)),
            json!({ "type": "number", "minimum": 0.0 })
        );
        assert_eq!(
            json_schema(&m, t(6)),
            json!({ "type": "string", "pattern": "^(?:[A-Z]{2}[0-9]+)$" })
        );
        assert_eq!(
            json_schema(&m, t(7)),
            json!({ "type": "string", "minLength": 1 })
        );
        assert_eq!(json_schema(&m, t(8))["minItems"], 1);
        assert_eq!(json_schema(&m, t(9))["maxItems"], 5);
        assert_eq!(
            json_schema(&m, t(10)),
            json!({
                "type": "string",
                "pattern": "^(?:[A-Z]{2}[0-9]+)$",
                "minLength": 1,
                "maxLength": 8,
            })
        );
        assert_eq!(
            json_schema(&m, t(11)),
            json!({ "allOf": [
                { "type": "integer", "minimum": 1, "maximum": 1000 },
                { "minimum": 10 },
            ] })
        );
        assert_eq!(
            json_schema(&m, t(12)),
            json!({ "anyOf": [
                { "type": "integer", "minimum": 1, "maximum": 1000 },
                { "type": "null" },
            ] })
        );
    }

    #[test]
    fn durations_and_times_are_strings() {
        let m = module(vec![TypeDesc::Duration, TypeDesc::Time]);
        for ty in [t(0), t(1)] {
            let schema = json_schema(&m, ty);
            assert_eq!(schema["type"], "string", "{schema}");
            assert!(schema["description"].is_string(), "{schema}");
        }
    }

    #[test]
    fn records_require_their_non_optional_fields() {
        // type Invoice = { number: String, total: Int, note: String?, lines: List<Float> }
        let m = module(vec![
            TypeDesc::String,
            TypeDesc::Int,
            TypeDesc::Optional(t(0)),
            TypeDesc::Float,
            TypeDesc::List(t(3)),
            TypeDesc::Record {
                name: "Invoice".into(),
                fields: vec![
                    ("number".into(), t(0)),
                    ("total".into(), t(1)),
                    ("note".into(), t(2)),
                    ("lines".into(), t(4)),
                ],
            },
        ]);
        assert_eq!(
            json_schema(&m, t(5)),
            json!({
                "type": "object",
                "properties": {
                    "number": { "type": "string" },
                    "total": { "type": "integer" },
                    "note": { "anyOf": [{ "type": "string" }, { "type": "null" }] },
                    "lines": { "type": "array", "items": { "type": "number" } },
                },
                "required": ["number", "total", "lines"],
                "additionalProperties": false,
            })
        );
    }

    #[test]
    fn a_form_schema_keeps_the_field_order_names_records_and_hides_secrets() {
        // type Login = { user: String, password: Secret, after: Int? }
        let m = module(vec![
            TypeDesc::String,
            TypeDesc::Secret,
            TypeDesc::Int,
            TypeDesc::Optional(t(2)),
            TypeDesc::Record {
                name: "Login".into(),
                fields: vec![
                    ("user".into(), t(0)),
                    ("password".into(), t(1)),
                    ("after".into(), t(3)),
                ],
            },
        ]);
        let form = form_schema(&m, t(4));
        assert_eq!(form["x-order"], json!(["user", "password", "after"]));
        assert_eq!(form["title"], "Login");
        assert_eq!(
            form["properties"]["password"],
            json!({ "type": "string", "format": "password", "writeOnly": true })
        );
        // The plain schema (an llm tool's response format) has none of it.
        let plain = json_schema(&m, t(4));
        assert!(plain.get("x-order").is_none() && plain.get("title").is_none());
        assert_eq!(plain["properties"]["password"], json!({ "type": "string" }));
    }

    #[test]
    fn a_form_schema_shows_the_docs_of_fields() {
        // type Leave = { /// First day off.
        //   from: Time, days: Int, /// Who stands in.
        //   deputy: String? }
        let mut m = module(vec![
            TypeDesc::Time,
            TypeDesc::Int,
            TypeDesc::String,
            TypeDesc::Optional(t(2)),
            TypeDesc::Record {
                name: "Leave".into(),
                fields: vec![
                    ("from".into(), t(0)),
                    ("days".into(), t(1)),
                    ("deputy".into(), t(3)),
                ],
            },
        ]);
        m.field_docs = vec![crate::bytecode::module::FieldDocs {
            ty: t(4),
            fields: vec![
                ("from".into(), "First day off.".into()),
                ("deputy".into(), "Who stands in.".into()),
            ],
        }];
        let form = form_schema(&m, t(4));
        let from = form["properties"]["from"]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(from.starts_with("First day off. ("), "{from}");
        assert_eq!(
            form["properties"]["deputy"]["description"],
            "Who stands in."
        );
        assert!(form["properties"]["days"].get("description").is_none());
        assert!(
            json_schema(&m, t(4))["properties"]["deputy"]
                .get("description")
                .is_none()
        );
    }

    #[test]
    fn maps_are_objects_with_additional_properties() {
        let m = module(vec![TypeDesc::Int, TypeDesc::Map(t(0))]);
        assert_eq!(
            json_schema(&m, t(1)),
            json!({ "type": "object", "additionalProperties": { "type": "integer" } })
        );
    }

    #[test]
    fn optional_json_is_anything() {
        let m = module(vec![TypeDesc::Json, TypeDesc::Optional(t(0))]);
        assert_eq!(json_schema(&m, t(1)), json!({}));
    }

    #[test]
    fn enums_are_one_of_their_json_forms() {
        // enum Verdict { Pending, Released(receipt: String), Held(reason: String, until: Time?) }
        let m = module(vec![
            TypeDesc::String,
            TypeDesc::Time,
            TypeDesc::Optional(t(1)),
            TypeDesc::Enum {
                name: "Verdict".into(),
                variants: vec![
                    ("Pending".into(), vec![]),
                    ("Released".into(), vec![("receipt".into(), t(0))]),
                    (
                        "Held".into(),
                        vec![("reason".into(), t(0)), ("until".into(), t(2))],
                    ),
                ],
            },
        ]);
        let schema = json_schema(&m, t(3));
        let choices = schema["oneOf"].as_array().expect("oneOf");
        assert_eq!(choices.len(), 3, "{schema}");
        assert_eq!(choices[0], json!({ "type": "string", "enum": ["Pending"] }));
        assert_eq!(
            choices[1],
            json!({
                "type": "object",
                "properties": { "Released": {
                    "type": "object",
                    "properties": { "receipt": { "type": "string" } },
                    "required": ["receipt"],
                    "additionalProperties": false,
                } },
                "required": ["Released"],
                "additionalProperties": false,
            })
        );
        assert_eq!(
            choices[2]["properties"]["Held"]["required"],
            json!(["reason"])
        );
    }

    #[test]
    fn an_enum_without_payloads_is_a_string_enum() {
        let m = module(vec![TypeDesc::Enum {
            name: "Color".into(),
            variants: vec![("Red".into(), vec![]), ("Green".into(), vec![])],
        }]);
        assert_eq!(
            json_schema(&m, t(0)),
            json!({ "type": "string", "enum": ["Red", "Green"] })
        );
    }

    #[test]
    fn recursive_types_use_defs() {
        // type Node = { label: String, children: List<Node> }
        let m = module(vec![
            TypeDesc::String,
            TypeDesc::List(t(2)),
            TypeDesc::Record {
                name: "Node".into(),
                fields: vec![("label".into(), t(0)), ("children".into(), t(1))],
            },
        ]);
        let schema = json_schema(&m, t(2));
        assert_eq!(
            schema["properties"]["children"]["items"],
            json!({ "$ref": "#/$defs/Node" })
        );
        assert_eq!(
            schema["$defs"]["Node"]["properties"]["children"]["items"],
            json!({ "$ref": "#/$defs/Node" })
        );
        assert_eq!(
            schema["$defs"]["Node"]["required"],
            json!(["label", "children"])
        );
    }

    #[test]
    fn a_missing_type_is_anything() {
        let m = module(vec![]);
        assert_eq!(json_schema(&m, t(7)), json!({}));
    }

    #[test]
    fn the_return_type_of_a_compiled_tool() {
        let program = crate::check_text(
            "t.flow",
            "type Line = { item: String, amount: Float }\n\
             enum Currency { Eur, Usd }\n\
             type Invoice = { number: String, currency: Currency, lines: List<Line>, due: Time?, tags: Map<String> }\n\
             tool extract(doc: String) -> Invoice via llm \"m\" prompt \"Extract\"\n\
             workflow w(d: String) -> Invoice { extract(d) }",
        );
        let module = crate::lower::lower(&program).expect("the program lowers");
        let schema = json_schema(&module, module.tools[0].ret);
        assert_eq!(
            schema["required"],
            json!(["number", "currency", "lines", "tags"])
        );
        assert_eq!(
            schema["properties"]["currency"],
            json!({ "type": "string", "enum": ["Eur", "Usd"] })
        );
        assert_eq!(
            schema["properties"]["lines"]["items"]["properties"]["amount"],
            json!({ "type": "number" })
        );
        assert_eq!(
            schema["properties"]["tags"]["additionalProperties"],
            json!({ "type": "string" })
        );
        assert_eq!(
            schema["properties"]["due"]["anyOf"][1],
            json!({ "type": "null" })
        );
    }
}
