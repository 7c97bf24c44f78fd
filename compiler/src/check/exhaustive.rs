//! Exhaustiveness of `match`: the arms' patterns and the matched type in, the cases no arm
//! covers out (as witnesses, for E0304).
//!
//! This is the usefulness algorithm of Maranget ("Warnings for pattern matching", 2007)
//! over the constructors of each type: an enum's variants, `true`/`false`, and for an
//! optional `none` and "a value" (whose one field is the value itself). Nested patterns are
//! understood, so `High(_, true)` and `High(_, false)` together cover `High`, and
//! `none`, `Green` and `Blue` together cover a `Color?`.

use super::Resolved;
use crate::span::{FileId, Span};
use crate::syntax::ast::{self, PatternKind};
use crate::types::{Type, TypeDefs};
use rustc_hash::FxHashMap as HashMap;

/// A pattern as far as coverage goes.
#[derive(Clone, Debug, PartialEq)]
pub enum Pat {
    /// `_` or a binding.
    Any,
    Ctor(Ctor, Vec<Pat>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ctor {
    Variant(usize),
    Bool(bool),
    /// The `none` of an optional.
    None,
    /// The present value of an optional; its one field is the value.
    Some,
    /// A number, text or duration: one of infinitely many values.
    Literal,
}

/// A value (or a family of values) that no arm matches.
#[derive(Clone, Debug, PartialEq)]
pub enum Witness {
    Any,
    Ctor(Ctor, Vec<Witness>),
}

/// `pattern` (already checked against `ty`) as a [`Pat`]; `resolved` says which variant a
/// variant pattern names.
pub fn pat_of(
    pattern: &ast::Pattern,
    ty: &Type,
    types: &TypeDefs,
    file: FileId,
    resolved: &HashMap<(FileId, Span), Resolved>,
) -> Pat {
    let variant = || match resolved.get(&(file, pattern.span)) {
        Some(Resolved::Variant(_, index)) => Some(*index),
        _ => None,
    };
    match (&pattern.kind, ty) {
        (PatternKind::Wildcard | PatternKind::Error, _) => Pat::Any,
        (PatternKind::Name(_), _) if variant().is_none() => Pat::Any,
        (PatternKind::None, _) => Pat::Ctor(Ctor::None, Vec::new()),
        (_, Type::Optional(inner)) => Pat::Ctor(
            Ctor::Some,
            vec![pat_of(pattern, inner, types, file, resolved)],
        ),
        (PatternKind::Name(_), _) => match variant() {
            Some(index) => Pat::Ctor(Ctor::Variant(index), Vec::new()),
            None => Pat::Any,
        },
        (PatternKind::Variant { fields, .. }, Type::Named(id)) => {
            let Some(index) = variant() else {
                return Pat::Any;
            };
            let field_types = field_types(types, *id, index);
            let fields = fields
                .iter()
                .enumerate()
                .map(|(i, field)| {
                    let ty = field_types.get(i).cloned().unwrap_or(Type::Unknown);
                    pat_of(field, &ty, types, file, resolved)
                })
                .collect();
            Pat::Ctor(Ctor::Variant(index), fields)
        }
        (PatternKind::Bool(b), _) => Pat::Ctor(Ctor::Bool(*b), Vec::new()),
        (PatternKind::Int(_) | PatternKind::Str(_) | PatternKind::Duration(_), _) => {
            Pat::Ctor(Ctor::Literal, Vec::new())
        }
        // A variant pattern against a value that is not an enum was reported already.
        (PatternKind::Variant { .. }, _) => Pat::Any,
    }
}

/// The cases of `ty` that none of `arms` matches, one per missing constructor at the top
/// (a missing `Some` is broken down into the cases of the value it holds).
pub fn missing(types: &TypeDefs, arms: &[Pat], ty: &Type) -> Vec<Witness> {
    let rows: Vec<Vec<Pat>> = arms.iter().map(|p| vec![p.clone()]).collect();
    let mut out = Vec::new();
    match constructors(types, ty) {
        Some(all) => {
            for (ctor, fields) in all {
                let spec = specialize(&rows, ctor, fields.len());
                if let (Ctor::Some, [inner]) = (ctor, fields.as_slice()) {
                    let values: Vec<Pat> = spec.into_iter().map(|mut r| r.remove(0)).collect();
                    out.extend(
                        missing(types, &values, inner)
                            .into_iter()
                            .map(|w| Witness::Ctor(Ctor::Some, vec![w])),
                    );
                } else if let Some(w) = witness(types, &spec, &fields) {
                    out.push(Witness::Ctor(ctor, w));
                }
            }
        }
        None => {
            if witness(types, &rows, std::slice::from_ref(ty)).is_some() {
                out.push(Witness::Any);
            }
        }
    }
    out
}

/// A list of values, one per column of `tys`, that no row of `rows` matches, if any.
fn witness(types: &TypeDefs, rows: &[Vec<Pat>], tys: &[Type]) -> Option<Vec<Witness>> {
    let Some((ty, rest)) = tys.split_first() else {
        return rows.is_empty().then(Vec::new);
    };
    // After an error the type is unknown: every pattern counts as matching anything.
    let signature = if ty.is_unknown() {
        None
    } else {
        constructors(types, ty)
    };
    let heads: Vec<Ctor> = rows
        .iter()
        .filter_map(|row| match &row[0] {
            Pat::Ctor(c, _) if !ty.is_unknown() => Some(*c),
            _ => None,
        })
        .collect();
    match signature {
        Some(all) if all.iter().all(|(c, _)| heads.contains(c)) => {
            all.into_iter().find_map(|(ctor, fields)| {
                let spec = specialize(rows, ctor, fields.len());
                let mut sub = fields.clone();
                sub.extend_from_slice(rest);
                let mut found = witness(types, &spec, &sub)?;
                let after = found.split_off(fields.len());
                let mut out = vec![Witness::Ctor(ctor, found)];
                out.extend(after);
                Some(out)
            })
        }
        signature => {
            // Some constructor is in no row (or there are infinitely many): the rows that
            // match anything in this column decide.
            let default: Vec<Vec<Pat>> = rows
                .iter()
                .filter(|row| row[0] == Pat::Any || ty.is_unknown())
                .map(|row| row[1..].to_vec())
                .collect();
            let mut found = witness(types, &default, rest)?;
            let head = signature
                .and_then(|all| all.into_iter().find(|(c, _)| !heads.contains(c)))
                .map(|(c, fields)| Witness::Ctor(c, vec![Witness::Any; fields.len()]))
                .unwrap_or(Witness::Any);
            found.insert(0, head);
            Some(found)
        }
    }
}

/// The rows that match constructor `ctor` in their first column, with that column replaced
/// by the constructor's `arity` fields.
fn specialize(rows: &[Vec<Pat>], ctor: Ctor, arity: usize) -> Vec<Vec<Pat>> {
    rows.iter()
        .filter_map(|row| {
            let mut out = match &row[0] {
                Pat::Any => vec![Pat::Any; arity],
                // A pattern with the wrong number of fields was reported already.
                Pat::Ctor(c, fields) if *c == ctor && fields.len() == arity => fields.clone(),
                Pat::Ctor(c, _) if *c == ctor => vec![Pat::Any; arity],
                Pat::Ctor(..) => return None,
            };
            out.extend_from_slice(&row[1..]);
            Some(out)
        })
        .collect()
}

/// Every constructor of `ty` with the types of its fields, or `None` when there are
/// infinitely many (numbers, text, records, lists…).
fn constructors(types: &TypeDefs, ty: &Type) -> Option<Vec<(Ctor, Vec<Type>)>> {
    match ty {
        Type::Bool => Some(vec![
            (Ctor::Bool(true), Vec::new()),
            (Ctor::Bool(false), Vec::new()),
        ]),
        Type::Optional(inner) => Some(vec![
            (Ctor::None, Vec::new()),
            (Ctor::Some, vec![(**inner).clone()]),
        ]),
        Type::Named(id) => types.get(*id).variants().map(|variants| {
            (0..variants.len())
                .map(|i| (Ctor::Variant(i), field_types(types, *id, i)))
                .collect()
        }),
        _ => None,
    }
}

fn field_types(types: &TypeDefs, id: crate::types::TypeId, index: usize) -> Vec<Type> {
    types
        .get(id)
        .variants()
        .and_then(|v| v.get(index))
        .map(|v| v.fields.iter().map(|f| f.ty.clone()).collect())
        .unwrap_or_default()
}

/// A witness written as the pattern of an arm that would cover it. A variant none of whose
/// fields matter shows its field names (`High(reasons, pep)`), ready to be bound.
pub fn show(types: &TypeDefs, witness: &Witness, ty: &Type) -> String {
    match (witness, ty) {
        (Witness::Any, _) => "_".to_string(),
        (Witness::Ctor(Ctor::None, _), _) => "none".to_string(),
        (Witness::Ctor(Ctor::Bool(b), _), _) => b.to_string(),
        (Witness::Ctor(Ctor::Some, inner), Type::Optional(inner_ty)) => match inner.first() {
            Some(w) => show(types, w, inner_ty),
            None => "_".to_string(),
        },
        (Witness::Ctor(Ctor::Variant(index), fields), Type::Named(id)) => {
            let Some(variant) = types.get(*id).variants().and_then(|v| v.get(*index)) else {
                return "_".to_string();
            };
            if fields.is_empty() {
                return variant.name.to_string();
            }
            let shown: Vec<String> = if fields.iter().all(|f| *f == Witness::Any) {
                variant.fields.iter().map(|f| f.name.to_string()).collect()
            } else {
                // A field that only needs a present value is best bound by its name.
                fields
                    .iter()
                    .zip(&variant.fields)
                    .map(|(w, f)| match w {
                        Witness::Ctor(Ctor::Some, inner) if inner.as_slice() == [Witness::Any] => {
                            f.name.to_string()
                        }
                        _ => show(types, w, &f.ty),
                    })
                    .collect()
            };
            format!("{}({})", variant.name, shown.join(", "))
        }
        _ => "_".to_string(),
    }
}
