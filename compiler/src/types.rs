//! Semantic types and the table of declared records and enums.
//!
//! Named types are nominal: two records with the same fields are different types. An
//! anonymous record literal (`{ id: "x" }`) has a structural type that is assignable to a
//! named record with the same fields.

use crate::bytecode::Refinement;
use crate::span::{FileId, Span};
use crate::syntax::name::Name;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TypeId(pub u32);

#[derive(Clone, Debug, PartialEq)]
pub enum Type {
    Int,
    Float,
    Bool,
    String,
    Duration,
    Time,
    Json,
    Approvers,
    /// A value that is never shown: history, audit trail, logs and outputs hold
    /// `"[redacted]"`; only tool calls receive it.
    Secret,
    /// The value of statements and of blocks without a final expression.
    Unit,
    /// The type of `return`, `fail`, `break`: code after it does not run.
    Never,
    /// Not known: after an error (already reported), or the element of `[]` and `none`.
    /// Compatible with everything, so one mistake is reported once.
    Unknown,
    List(Box<Type>),
    Map(Box<Type>),
    Optional(Box<Type>),
    Named(TypeId),
    Record(Vec<(Name, Type)>),
    /// A base type narrowed by a rule: `Float in 0.0..1.0`, `String matching "…"`,
    /// `List<T> nonempty`. For reading it is its base; a value enters it only through a check
    /// (of a constant by the checker, of anything else at run time).
    Refined(Box<Refined>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Refined {
    pub base: Type,
    pub rule: Refinement,
    /// `type Score = Float in 0.0..1.0`: the declared name, shown in messages.
    pub name: Option<Name>,
}

impl Type {
    pub fn optional(inner: Type) -> Type {
        match inner {
            Type::Optional(_) | Type::Unknown => inner,
            other => Type::Optional(Box::new(other)),
        }
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self, Type::Unknown)
    }

    pub fn is_numeric(&self) -> bool {
        matches!(self, Type::Int | Type::Float)
    }

    /// The type with the refinements at its top taken off (also under an optional:
    /// `Score?` is `Float?`): what a value of it is for reading.
    pub fn unrefined(&self) -> std::borrow::Cow<'_, Type> {
        use std::borrow::Cow;
        match self {
            Type::Refined(r) => Cow::Owned(r.base.unrefined().into_owned()),
            Type::Optional(inner) if matches!(**inner, Type::Refined(_)) => {
                Cow::Owned(Type::optional(inner.unrefined().into_owned()))
            }
            _ => Cow::Borrowed(self),
        }
    }

    /// The type as its declaration writes it: a refined type without its declared name
    /// (`Float in 0.0..1.0` for `Score`).
    pub fn unnamed(&self) -> Type {
        match self {
            Type::Refined(r) => Type::Refined(Box::new(Refined {
                name: None,
                ..(**r).clone()
            })),
            Type::Optional(inner) => Type::Optional(Box::new(inner.unnamed())),
            other => other.clone(),
        }
    }

    /// The type with every refinement in it taken off (in lists, maps, optionals and
    /// anonymous records; a named record's fields keep theirs).
    pub fn without_refinements(&self) -> Type {
        match self {
            Type::Refined(r) => r.base.without_refinements(),
            Type::List(t) => Type::List(Box::new(t.without_refinements())),
            Type::Map(t) => Type::Map(Box::new(t.without_refinements())),
            Type::Optional(t) => Type::optional(t.without_refinements()),
            Type::Record(fields) => Type::Record(
                fields
                    .iter()
                    .map(|(n, t)| (n.clone(), t.without_refinements()))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// The refinements at the top of the type (outermost first) and its base.
    pub fn refinements(&self) -> (Vec<&Refined>, &Type) {
        let mut rules = Vec::new();
        let mut ty = self;
        while let Type::Refined(r) = ty {
            rules.push(&**r);
            ty = &r.base;
        }
        (rules, ty)
    }

    pub fn display<'a>(&'a self, defs: &'a TypeDefs) -> TypeDisplay<'a> {
        TypeDisplay { ty: self, defs }
    }
}

pub struct TypeDisplay<'a> {
    ty: &'a Type,
    defs: &'a TypeDefs,
}

impl<'a> fmt::Display for TypeDisplay<'a> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sub = |ty: &'a Type| TypeDisplay {
            ty,
            defs: self.defs,
        };
        match self.ty {
            Type::Int => f.write_str("Int"),
            Type::Float => f.write_str("Float"),
            Type::Bool => f.write_str("Bool"),
            Type::String => f.write_str("String"),
            Type::Duration => f.write_str("Duration"),
            Type::Time => f.write_str("Time"),
            Type::Json => f.write_str("Json"),
            Type::Approvers => f.write_str("Approvers"),
            Type::Secret => f.write_str("Secret"),
            Type::Unit => f.write_str("Unit"),
            Type::Never => f.write_str("Never"),
            Type::Unknown => f.write_str("_"),
            Type::List(t) => write!(f, "List<{}>", sub(t)),
            Type::Map(t) => write!(f, "Map<{}>", sub(t)),
            // `Int? in 1..5`: the rule is written after the optional's mark.
            Type::Optional(t) => match &**t {
                Type::Refined(r) if r.name.is_none() => write!(f, "{}? {}", sub(&r.base), r.rule),
                _ => write!(f, "{}?", sub(t)),
            },
            Type::Named(id) => f.write_str(&self.defs.get(*id).name),
            Type::Refined(r) => match &r.name {
                Some(name) => f.write_str(name),
                None => write!(f, "{} {}", sub(&r.base), r.rule),
            },
            Type::Record(fields) => {
                f.write_str("{ ")?;
                for (i, (name, ty)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{name}: {}", sub(ty))?;
                }
                f.write_str(" }")
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct FieldDef {
    pub name: Name,
    pub ty: Type,
    pub span: Span,
    pub doc: Option<Box<str>>,
}

#[derive(Clone, Debug)]
pub struct VariantDef {
    pub name: Name,
    pub fields: Vec<FieldDef>,
    pub span: Span,
    pub doc: Option<Box<str>>,
}

#[derive(Clone, Debug)]
pub enum TypeDefKind {
    Record(Vec<FieldDef>),
    Enum(Vec<VariantDef>),
    /// `type Score = Float in 0.0..1.0`: a name for a refined type (always a
    /// [`Type::Refined`], or `Unknown` after an error). Written types that name it resolve to
    /// the type itself, so no `Type::Named` ever points here.
    Refined(Type),
}

#[derive(Clone, Debug)]
pub struct TypeDef {
    pub name: Name,
    /// `None` for builtin records such as `Decision`.
    pub file: Option<FileId>,
    pub span: Span,
    pub doc: Option<Box<str>>,
    pub kind: TypeDefKind,
}

impl TypeDef {
    pub fn fields(&self) -> Option<&[FieldDef]> {
        match &self.kind {
            TypeDefKind::Record(fields) => Some(fields),
            TypeDefKind::Enum(_) | TypeDefKind::Refined(_) => None,
        }
    }

    pub fn variants(&self) -> Option<&[VariantDef]> {
        match &self.kind {
            TypeDefKind::Enum(variants) => Some(variants),
            TypeDefKind::Record(_) | TypeDefKind::Refined(_) => None,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct TypeDefs {
    defs: Vec<TypeDef>,
}

impl TypeDefs {
    /// Room for `more` definitions, so a large program's table is not grown by doubling.
    pub fn reserve_exact(&mut self, more: usize) {
        self.defs.reserve_exact(more);
    }

    pub fn add(&mut self, def: TypeDef) -> TypeId {
        self.defs.push(def);
        TypeId(self.defs.len() as u32 - 1)
    }

    pub fn get(&self, id: TypeId) -> &TypeDef {
        &self.defs[id.0 as usize]
    }

    pub fn get_mut(&mut self, id: TypeId) -> &mut TypeDef {
        &mut self.defs[id.0 as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = (TypeId, &TypeDef)> {
        self.defs
            .iter()
            .enumerate()
            .map(|(i, d)| (TypeId(i as u32), d))
    }

    /// Whether a value of type `from` may be used where `to` is expected.
    pub fn assignable(&self, from: &Type, to: &Type) -> bool {
        match (from, to) {
            (Type::Unknown, _) | (_, Type::Unknown) | (Type::Never, _) => true,
            // A refined value is read as its base; a value of the base enters a refined type
            // through a check (`converts`), so statically either way is fine.
            (Type::Refined(a), _) => self.assignable(&a.base, to),
            (_, Type::Refined(b)) => self.assignable(from, &b.base),
            (_, Type::Json) => !matches!(from, Type::Unit | Type::Approvers | Type::Secret),
            // A literal or computed text may become a secret; a secret never becomes text.
            (Type::String, Type::Secret) => true,
            (Type::Optional(a), Type::Optional(b)) => self.assignable(a, b),
            (_, Type::Optional(b)) => self.assignable(from, b),
            (Type::List(a), Type::List(b)) | (Type::Map(a), Type::Map(b)) => self.assignable(a, b),
            (Type::Record(fields), Type::Named(id)) => self.record_fits(fields, *id),
            (Type::Record(a), Type::Record(b)) => {
                a.len() == b.len()
                    && a.iter().all(|(name, ty)| {
                        b.iter().any(|(n, t)| n == name && self.assignable(ty, t))
                    })
            }
            _ => from == to,
        }
    }

    /// Whether a value of type `from`, used where `to` is expected (and assignable), changes
    /// shape there: it holds text that becomes a `Secret` (directly, `let s: Secret = "…"`,
    /// or inside a list, map, optional or record), or a record that leaves out optional
    /// fields of the named record expected (they become `none`). The lowering converts such
    /// a value (`Op::Conform`), so a secret made from text is sealed, redacted and compared like
    /// any other, and a record has one shape whether a field was left out or `none`.
    ///
    /// A value put where a refined type is expected converts too, unless it is known to
    /// have that refinement already (a `List<Score>` passed as a `List<Score>`): the
    /// conversion checks the rule, and raises a `Failed` error when the value breaks it.
    pub fn converts(&self, from: &Type, to: &Type) -> bool {
        match (from, to) {
            (Type::Refined(a), Type::Refined(b)) if a.rule == b.rule => {
                self.converts(&a.base, &b.base)
            }
            (Type::Refined(a), _) => self.converts(&a.base, to),
            (_, Type::Refined(_)) => true,
            (Type::String, Type::Secret) => true,
            (Type::Optional(a), Type::Optional(b)) => self.converts(a, b),
            (_, Type::Optional(b)) => self.converts(from, b),
            (Type::List(a), Type::List(b)) | (Type::Map(a), Type::Map(b)) => self.converts(a, b),
            (Type::Record(fields), Type::Named(id)) => {
                self.get(*id).fields().is_some_and(|declared| {
                    declared
                        .iter()
                        .any(|d| match fields.iter().find(|(name, _)| *name == d.name) {
                            Some((_, ty)) => self.converts(ty, &d.ty),
                            None => matches!(d.ty, Type::Optional(_)),
                        })
                })
            }
            (Type::Record(a), Type::Record(b)) => a
                .iter()
                .any(|(name, ty)| b.iter().any(|(n, t)| n == name && self.converts(ty, t))),
            _ => false,
        }
    }

    fn record_fits(&self, fields: &[(Name, Type)], id: TypeId) -> bool {
        let Some(declared) = self.get(id).fields() else {
            return false;
        };
        let all_known = fields
            .iter()
            .all(|(name, _)| declared.iter().any(|d| &d.name == name));
        let all_given =
            declared
                .iter()
                .all(|d| match fields.iter().find(|(name, _)| *name == d.name) {
                    Some((_, ty)) => self.assignable(ty, &d.ty),
                    None => matches!(d.ty, Type::Optional(_)),
                });
        all_known && all_given
    }

    /// Where a value of type `ty` holds a `Secret`, as a path (`""` for the value itself,
    /// `.token`, `[].key`), if it does.
    pub fn secret_path(&self, ty: &Type) -> Option<String> {
        self.secret_path_in(ty, &mut Vec::new())
    }

    fn secret_path_in(&self, ty: &Type, seen: &mut Vec<TypeId>) -> Option<String> {
        match ty {
            Type::Secret => Some(String::new()),
            Type::Refined(r) => self.secret_path_in(&r.base, seen),
            Type::List(inner) | Type::Map(inner) => {
                self.secret_path_in(inner, seen).map(|p| format!("[]{p}"))
            }
            Type::Optional(inner) => self.secret_path_in(inner, seen),
            Type::Record(fields) => fields
                .iter()
                .find_map(|(name, t)| self.secret_path_in(t, seen).map(|p| format!(".{name}{p}"))),
            Type::Named(id) => {
                if seen.contains(id) {
                    return None;
                }
                seen.push(*id);
                let def = self.get(*id);
                let found = match &def.kind {
                    TypeDefKind::Record(fields) => fields.iter().find_map(|f| {
                        self.secret_path_in(&f.ty, seen)
                            .map(|p| format!(".{}{p}", f.name))
                    }),
                    TypeDefKind::Enum(variants) => variants.iter().find_map(|v| {
                        v.fields.iter().find_map(|f| {
                            self.secret_path_in(&f.ty, seen)
                                .map(|p| format!(" ({}.{}){p}", v.name, f.name))
                        })
                    }),
                    TypeDefKind::Refined(ty) => self.secret_path_in(ty, seen),
                };
                seen.pop();
                found
            }
            _ => None,
        }
    }

    /// The common type of two branches (`if`/`else`, match arms), if they have one.
    pub fn join(&self, a: &Type, b: &Type) -> Option<Type> {
        if matches!(a, Type::Never) {
            return Some(b.clone());
        }
        if matches!(b, Type::Never) {
            return Some(a.clone());
        }
        if self.assignable(a, b) && !matches!(b, Type::Unknown) {
            return Some(b.clone());
        }
        if self.assignable(b, a) {
            return Some(a.clone());
        }
        None
    }
}
