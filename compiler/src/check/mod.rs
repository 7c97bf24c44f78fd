//! Name resolution and declaration checking: syntax trees in, the program's declarations
//! (types, tools, workflows, each file's scope) out, plus diagnostics. Workflow bodies are
//! then checked by [`body`], which also runs the flow-sensitive safety analyses ([`flow`]).
//!
//! Each file sees its own declarations and those of the files it imports directly.

mod body;
mod exhaustive;
mod flow;
mod test_blocks;

use crate::diagnostics::{Diagnostic, codes, did_you_mean};
use crate::sources::SourceDb;
use crate::span::{FileId, Span};
use crate::syntax::name::Name;
use crate::syntax::{SyntaxTree, ast};
use crate::types::{FieldDef, Type, TypeDef, TypeDefKind, TypeDefs, TypeId, VariantDef};
use flow_stdlib as stdlib;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::cell::RefCell;

#[derive(Clone, Debug)]
pub struct ParamDef {
    pub name: Name,
    pub ty: Type,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindingKind {
    Http,
    Exec,
    Llm,
}

#[derive(Clone, Debug)]
pub struct ToolDef {
    pub name: Name,
    pub file: FileId,
    pub span: Span,
    pub params: Vec<ParamDef>,
    pub ret: Type,
    pub sensitive: bool,
    pub binding: Option<BindingKind>,
    pub doc: Option<Box<str>>,
    /// `raises NotFound on 404`: which answers are which named errors (indices into
    /// [`Checked::errors`]).
    pub raises: Vec<(usize, ast::RaiseOn)>,
}

#[derive(Clone, Debug)]
pub struct WorkflowDef {
    pub name: Name,
    pub file: FileId,
    pub span: Span,
    pub params: Vec<ParamDef>,
    pub ret: Type,
    pub ret_span: Option<Span>,
    pub doc: Option<Box<str>>,
    /// The signals its runs accept (`accepts …`), in written order.
    pub signals: Vec<SignalDef>,
    /// Its queries (`query name -> T { … }` at the top level of its body) and their types.
    pub queries: Vec<(Name, Type)>,
    /// The named errors it declares it may fail with (`raises NotFound, …`).
    pub raises: Vec<Name>,
    /// The named errors a run of it may end with — what it `fail`s with, what its tools and
    /// child workflows raise (its `catch`es are not subtracted: this errs on the side of
    /// more) — or `None` when it can end with any (it raises a caught error again).
    pub may_raise: Option<Vec<Name>>,
}

/// A pure function (`fn name(…) -> T { … }`): like a workflow's signature, without signals,
/// queries or named errors. Calling one is not a step: it runs to completion in memory.
#[derive(Clone, Debug)]
pub struct FunctionDef {
    pub name: Name,
    pub file: FileId,
    pub span: Span,
    pub params: Vec<ParamDef>,
    pub ret: Type,
    pub ret_span: Option<Span>,
    pub doc: Option<Box<str>>,
}

impl FunctionDef {
    /// The signature as a workflow's, for the body checker (which checks both alike).
    pub fn as_workflow(&self) -> WorkflowDef {
        WorkflowDef {
            name: self.name.clone(),
            file: self.file,
            span: self.span,
            params: self.params.clone(),
            ret: self.ret.clone(),
            ret_span: self.ret_span,
            doc: self.doc.clone(),
            signals: Vec::new(),
            queries: Vec::new(),
            raises: Vec::new(),
            may_raise: None,
        }
    }
}

/// One signal a workflow accepts: the type of its value and who may send it.
#[derive(Clone, Debug)]
pub struct SignalDef {
    pub name: Name,
    pub span: Span,
    pub ty: Type,
    /// The written type, when there is one (`Unit` is not written).
    pub ty_span: Option<Span>,
    pub senders: Vec<crate::bytecode::Sender>,
}

/// What a name in value position refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    Tool(usize),
    Workflow(usize),
    Variant(TypeId, usize),
    /// A `fn` (an index into [`Checked::functions`]).
    Function(usize),
}

/// The names one file can see, each with the file that declares it.
#[derive(Default, Debug)]
pub struct FileScope {
    pub types: HashMap<Name, (TypeId, FileId)>,
    pub values: HashMap<Name, Vec<(Value, FileId)>>,
    /// The enum variants in `values`, by enum and index, with the file that declares them:
    /// many enums may share a variant name (`Released`, `Held`), and picking the one an
    /// expected type names must not scan all of them.
    variants: HashMap<(TypeId, usize), FileId>,
    used_imports: RefCell<HashSet<FileId>>,
    file: Option<FileId>,
}

impl FileScope {
    /// Whether calling `name` here is a durable step: a tool, a workflow (a child run) or a
    /// durable builtin (`now`). What a query or a test's value may not do.
    pub fn names_a_step(&self, name: &str) -> bool {
        self.lookup_values(name)
            .iter()
            .any(|(v, _)| matches!(v, Value::Tool(_) | Value::Workflow(_)))
            || flow_stdlib::Builtin::from_name(name)
                .is_some_and(|b| b.effect() == flow_stdlib::Effect::Durable)
    }
    pub fn lookup_type(&self, name: &str) -> Option<TypeId> {
        let (id, origin) = self.types.get(name)?;
        self.note_use(*origin);
        Some(*id)
    }

    /// Everything `name` may refer to (several enum variants may share a name). The caller
    /// reports the one it picks with [`FileScope::note_use`].
    pub fn lookup_values(&self, name: &str) -> &[(Value, FileId)] {
        self.values.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The variant `name` of the enum `wanted`, if this file can see it (and records its use).
    pub fn lookup_variant(&self, types: &TypeDefs, wanted: TypeId, name: &str) -> Option<usize> {
        let index = types
            .get(wanted)
            .variants()?
            .iter()
            .position(|v| v.name == name)?;
        let origin = self.variants.get(&(wanted, index))?;
        self.note_use(*origin);
        Some(index)
    }

    fn add_value(&mut self, name: &Name, value: Value, origin: FileId) {
        if let Value::Variant(id, index) = value {
            self.variants.entry((id, index)).or_insert(origin);
        }
        match self.values.get_mut(name.as_str()) {
            Some(entry) => entry.push((value, origin)),
            None => {
                self.values.insert(name.clone(), vec![(value, origin)]);
            }
        }
    }

    /// Records that a declaration from `origin` was used, so its import is not unused.
    pub fn note_use(&self, origin: FileId) {
        if Some(origin) != self.file {
            self.used_imports.borrow_mut().insert(origin);
        }
    }
}

/// What a name, call or pattern refers to, keyed by the file and the span of the name
/// expression, the call expression or the pattern. The lowering to bytecode reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolved {
    Tool(usize),
    Workflow(usize),
    /// An enum variant: a value, a construction (`Held(…)`) or a pattern.
    Variant(TypeId, usize),
    Builtin(stdlib::Builtin),
    /// A named error, as in `fail NotFound(id)` (an index into [`Checked::errors`]).
    Error(usize),
    /// A call of a `fn` (an index into [`Checked::functions`]).
    Function(usize),
}

/// What a `for` loop goes over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IterKind {
    List,
    /// A `Map<T>`: the loop goes over its keys.
    MapKeys,
}

#[derive(Default, Debug)]
pub struct Resolutions {
    pub items: HashMap<(FileId, Span), Resolved>,
    /// Keyed by the span of the iterated expression.
    pub loops: HashMap<(FileId, Span), IterKind>,
    /// Expressions whose value changes shape where it is used (text that becomes a `Secret`,
    /// a record that gets its omitted optional fields), by span: the type it takes there
    /// ([`crate::types::Types::converts`]).
    pub conversions: HashMap<(FileId, Span), Type>,
    /// Record literals of a named record type that leave optional fields out, by span: the
    /// fields the lowering fills with `none`, so an omitted field and `none` are one value.
    pub omitted: HashMap<(FileId, Span), Vec<String>>,
    /// The type of each gate's `context` value, by its span: the lowering describes it in
    /// the artifact, so that the inbox shows the fields in the order written or declared.
    pub contexts: HashMap<(FileId, Span), Type>,
    /// `fail e` with a caught error: raised again as it is, by the value's span.
    pub rethrows: std::collections::HashSet<(FileId, Span)>,
    /// What each `parallel` passes to its branches and gets back, by the expression's span.
    pub parallels: HashMap<(FileId, Span), ParallelFacts>,
    /// Facts for editors, recorded only when asked for (the language server's analysis,
    /// [`crate::analysis`]); `flowc check` and the lowering never pay for them.
    pub ide: Option<IdeFacts>,
}

/// What the branches of one `parallel` take and give: each branch runs as a workflow of
/// its own (a child run), so the lowering needs exact types for what crosses over.
#[derive(Clone, Debug, Default)]
pub struct ParallelFacts {
    /// A `parallel for`: the item's name and type (the branch's first parameter).
    pub item: Option<(Name, Type)>,
    /// The enclosing locals the branches read, in the order first read, with their types
    /// there (narrowed where a condition narrowed them): the branches' other parameters.
    pub captures: Vec<(Name, Type)>,
    /// Each branch's result type: one for a `parallel for`, one per field otherwise.
    pub results: Vec<Type>,
}

/// What the body checker learns that an editor wants to show: the type of expressions, the
/// fields that accesses and record literals name, and every local with its uses.
#[derive(Default, Debug)]
pub struct IdeFacts {
    /// The type of each name, field access, call, index and `await`, by its span.
    pub types: HashMap<(FileId, Span), Type>,
    /// Field names in `value.field` and in record literals of a named record type, by the
    /// span of the field name: the record type and the index of the field in it.
    pub fields: HashMap<(FileId, Span), (TypeId, usize)>,
    /// Every local: parameters, `let`/`var`, loop variables, pattern bindings, caught errors.
    pub locals: Vec<LocalFact>,
    /// Each read or write of a local, by the span of the use: the index in `locals`.
    pub local_uses: HashMap<(FileId, Span), usize>,
}

#[derive(Clone, Debug)]
pub struct LocalFact {
    pub file: FileId,
    pub name: Name,
    /// The span of the name where it is declared.
    pub span: Span,
    pub ty: Type,
    pub mutable: bool,
    pub kind: LocalKind,
    /// Where the name can be used: from its declaration to the end of its scope.
    pub visible: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalKind {
    Param,
    Let,
    Loop,
    /// The item of a `parallel for`: each branch has its own.
    BranchItem,
    Pattern,
    CaughtError,
}

/// The checked program: every declaration with resolved types.
#[derive(Default, Debug)]
pub struct Checked {
    pub types: TypeDefs,
    pub tools: Vec<ToolDef>,
    /// The program's workflows, then the helper workflows of its tests (from
    /// `program_workflows` on; see [`crate::testing`]).
    pub workflows: Vec<WorkflowDef>,
    pub program_workflows: usize,
    /// The program's functions (`fn`), files in order, items in order.
    pub functions: Vec<FunctionDef>,
    pub scopes: Vec<FileScope>,
    pub decision: Option<TypeId>,
    pub error: Option<TypeId>,
    /// The named errors (`error NotFound(id: String)`), in declaration order.
    pub errors: Vec<ErrorDef>,
    pub resolutions: Resolutions,
}

/// A named error: a record type with the fields of every error (`kind`, `message`, …) and
/// its own.
#[derive(Clone, Debug)]
pub struct ErrorDef {
    pub name: Name,
    pub ty: TypeId,
    /// Its own fields, in declaration order (those a `fail Name(…)` gives).
    pub payload: Vec<FieldDef>,
}

impl Checked {
    /// The named error this type is, if it is one.
    pub fn error_of(&self, ty: TypeId) -> Option<usize> {
        self.errors.iter().position(|e| e.ty == ty)
    }
}

pub fn check_program(
    db: &SourceDb,
    trees: &[SyntaxTree],
    imports: &[Vec<(Span, Option<FileId>)>],
    diagnostics: &mut Vec<Diagnostic>,
) -> Checked {
    check_program_with(db, trees, imports, diagnostics, false)
}

/// [`check_program`], also recording [`IdeFacts`] when `ide` is set.
pub fn check_program_with(
    db: &SourceDb,
    trees: &[SyntaxTree],
    imports: &[Vec<(Span, Option<FileId>)>],
    diagnostics: &mut Vec<Diagnostic>,
    ide: bool,
) -> Checked {
    let mut checker = DeclChecker {
        checked: Checked::default(),
        own: Vec::new(),
        diagnostics,
    };
    checker.add_builtin_records();
    checker.collect(trees);
    checker.collect_test_helpers(trees);
    checker.build_scopes(db, imports);
    checker.resolve_declarations(trees);
    let typed_helpers = checker.resolve_test_helpers(trees);
    checker.find_what_workflows_raise(trees);
    // Workflows and functions were numbered in this same order when they were collected.
    let mut workflow_index = 0;
    let mut function_index = 0;
    let mut resolutions = Resolutions {
        ide: ide.then(IdeFacts::default),
        ..Resolutions::default()
    };
    for (index, tree) in trees.iter().enumerate() {
        let file = FileId(index as u32);
        // What the bodies of this file report is counted from here (see `crowded`).
        let file_start = checker.diagnostics.len();
        for item in &tree.module.items {
            if let ast::Item::Workflow(workflow) = item {
                let def = &checker.checked.workflows[workflow_index];
                body::check_workflow(
                    &checker.checked,
                    def,
                    file,
                    workflow,
                    checker.diagnostics,
                    file_start,
                    &mut resolutions,
                );
                workflow_index += 1;
            }
            if let ast::Item::Function(function) = item {
                let def = &checker.checked.functions[function_index];
                body::check_function(
                    &checker.checked,
                    def,
                    file,
                    function,
                    checker.diagnostics,
                    file_start,
                    &mut resolutions,
                );
                function_index += 1;
            }
        }
    }
    test_blocks::check_test_helpers(
        &checker.checked,
        trees,
        &typed_helpers,
        checker.diagnostics,
        &mut resolutions,
    );
    checker.report_unused_imports(imports);
    checker.checked.resolutions = resolutions;
    checker.checked
}

/// Where a value name was first declared, and first declared as something other than an
/// enum variant (variants may share names across enums; nothing else may).
#[derive(Clone, Copy)]
struct FirstValue {
    any: Span,
    non_variant: Option<Span>,
}

/// Declarations one file makes, by name, with the span of the name.
#[derive(Default)]
struct OwnNames {
    types: Vec<(Name, TypeId, Span)>,
    values: Vec<(Name, Value, Span)>,
    /// Where each name was first declared, to find duplicates without a linear search.
    first_type: HashMap<Name, Span>,
    first_values: HashMap<Name, FirstValue>,
    /// Every `type` and `enum` of the file in source order, duplicates included.
    declared_types: Vec<TypeId>,
}

struct DeclChecker<'d> {
    checked: Checked,
    own: Vec<OwnNames>,
    diagnostics: &'d mut Vec<Diagnostic>,
}

impl DeclChecker<'_> {
    fn add_builtin_records(&mut self) {
        for record in stdlib::BUILTIN_RECORDS {
            let fields = record
                .fields
                .iter()
                .map(|f| FieldDef {
                    name: f.name.into(),
                    ty: Type::Unknown,
                    span: Span::default(),
                    doc: Some(f.doc.into()),
                })
                .collect();
            let id = self.checked.types.add(TypeDef {
                name: record.name.into(),
                file: None,
                span: Span::default(),
                doc: Some(record.doc.into()),
                kind: TypeDefKind::Record(fields),
            });
            if record.name == stdlib::DECISION.name {
                self.checked.decision = Some(id);
            } else if record.name == stdlib::ERROR.name {
                self.checked.error = Some(id);
            }
        }
        // Builtin record fields refer only to builtin types, so resolve them now.
        let ids: Vec<TypeId> = self.checked.types.iter().map(|(id, _)| id).collect();
        for (id, record) in ids.into_iter().zip(stdlib::BUILTIN_RECORDS) {
            let fields: Vec<Type> = record
                .fields
                .iter()
                .map(|f| from_stdlib(f.ty, &self.checked, &Type::Unknown))
                .collect();
            if let TypeDefKind::Record(defs) = &mut self.checked.types.get_mut(id).kind {
                for (def, ty) in defs.iter_mut().zip(fields) {
                    def.ty = ty;
                }
            }
        }
    }

    /// Gives every declaration an id, so declarations may refer to each other in any order.
    fn collect(&mut self, trees: &[SyntaxTree]) {
        // The tables are allocated at their length: grown by doubling, a program of 20,000
        // declarations kept room for up to twice as many.
        let (mut types, mut tools, mut workflows, mut functions) = (0, 0, 0, 0);
        for item in trees.iter().flat_map(|tree| &tree.module.items) {
            match item {
                ast::Item::Type(_) | ast::Item::Enum(_) | ast::Item::Error(_) => types += 1,
                ast::Item::Tool(_) => tools += 1,
                ast::Item::Workflow(_) => workflows += 1,
                ast::Item::Function(_) => functions += 1,
                ast::Item::Import(_) | ast::Item::Test(_) => {}
            }
        }
        self.checked.types.reserve_exact(types);
        self.checked.tools.reserve_exact(tools);
        self.checked.workflows.reserve_exact(workflows);
        self.checked.functions.reserve_exact(functions);
        for (index, tree) in trees.iter().enumerate() {
            let file = FileId(index as u32);
            let mut own = OwnNames::default();
            for item in &tree.module.items {
                match item {
                    ast::Item::Type(decl) => {
                        let kind = match decl.refined {
                            Some(_) => TypeDefKind::Refined(Type::Unknown),
                            None => TypeDefKind::Record(Vec::new()),
                        };
                        self.declare_type(file, &mut own, &decl.name, &decl.doc, kind);
                    }
                    ast::Item::Error(decl) => {
                        let kind = TypeDefKind::Record(Vec::new());
                        let ty = self.declare_type(file, &mut own, &decl.name, &decl.doc, kind);
                        self.checked.errors.push(ErrorDef {
                            name: decl.name.name.clone(),
                            ty,
                            payload: Vec::new(),
                        });
                    }
                    ast::Item::Enum(decl) => {
                        let kind = TypeDefKind::Enum(Vec::new());
                        let id = self.declare_type(file, &mut own, &decl.name, &decl.doc, kind);
                        for (i, variant) in decl.variants.iter().enumerate() {
                            self.add_own_value(
                                file,
                                &mut own,
                                &variant.name,
                                Value::Variant(id, i),
                            );
                        }
                    }
                    ast::Item::Tool(decl) => {
                        let index = self.checked.tools.len();
                        self.checked.tools.push(ToolDef {
                            name: decl.name.name.clone(),
                            file,
                            span: decl.name.span,
                            params: Vec::new(),
                            ret: Type::Unknown,
                            sensitive: decl.sensitive.is_some(),
                            binding: None,
                            doc: decl.doc.clone(),
                            raises: Vec::new(),
                        });
                        self.add_own_value(file, &mut own, &decl.name, Value::Tool(index));
                    }
                    ast::Item::Workflow(decl) => {
                        let index = self.checked.workflows.len();
                        self.checked.workflows.push(WorkflowDef {
                            name: decl.name.name.clone(),
                            file,
                            span: decl.name.span,
                            params: Vec::new(),
                            ret: Type::Unit,
                            ret_span: decl.ret.as_ref().map(|r| r.span),
                            doc: decl.doc.clone(),
                            signals: Vec::new(),
                            queries: Vec::new(),
                            raises: decl.raises.iter().map(|r| r.name.clone()).collect(),
                            may_raise: None,
                        });
                        self.add_own_value(file, &mut own, &decl.name, Value::Workflow(index));
                    }
                    ast::Item::Function(decl) => {
                        let index = self.checked.functions.len();
                        self.checked.functions.push(FunctionDef {
                            name: decl.name.name.clone(),
                            file,
                            span: decl.name.span,
                            params: Vec::new(),
                            ret: Type::Unit,
                            ret_span: decl.ret.as_ref().map(|r| r.span),
                            doc: decl.doc.clone(),
                        });
                        self.add_own_value(file, &mut own, &decl.name, Value::Function(index));
                    }
                    ast::Item::Import(_) | ast::Item::Test(_) => {}
                }
            }
            self.own.push(own);
        }
    }

    /// Adds a record or enum (its fields are resolved later) and names it in the file.
    fn declare_type(
        &mut self,
        file: FileId,
        own: &mut OwnNames,
        name: &ast::Ident,
        doc: &Option<Box<str>>,
        kind: TypeDefKind,
    ) -> TypeId {
        let id = self.checked.types.add(TypeDef {
            name: name.name.clone(),
            file: Some(file),
            span: name.span,
            doc: doc.clone(),
            kind,
        });
        own.declared_types.push(id);
        self.add_own_type(file, own, name, id);
        id
    }

    fn add_own_type(&mut self, file: FileId, own: &mut OwnNames, name: &ast::Ident, id: TypeId) {
        let builtin = BUILTIN_TYPE_NAMES.contains(&name.name.as_str())
            || stdlib::BUILTIN_RECORDS.iter().any(|r| r.name == name.name);
        if builtin {
            self.diagnostics.push(
                Diagnostic::error(
                    codes::DUPLICATE_DEFINITION,
                    file,
                    name.span,
                    "this is a builtin type",
                )
                .with_message(format!("`{}` is already defined by Flow", name.name))
                .with_help("choose another name for this type"),
            );
            return;
        }
        if let Some(first) = own.first_type.get(&name.name) {
            self.report_duplicate(file, name, *first);
            return;
        }
        own.first_type.insert(name.name.clone(), name.span);
        own.types.push((name.name.clone(), id, name.span));
    }

    fn add_own_value(&mut self, file: FileId, own: &mut OwnNames, name: &ast::Ident, value: Value) {
        let is_variant = matches!(value, Value::Variant(..));
        let clash = own.first_values.get(&name.name).and_then(|first| {
            if is_variant {
                first.non_variant
            } else {
                Some(first.any)
            }
        });
        if let Some(first) = clash {
            self.report_duplicate(file, name, first);
            return;
        }
        if stdlib::Builtin::from_name(&name.name).is_some() {
            self.diagnostics.push(
                Diagnostic::error(
                    codes::DUPLICATE_DEFINITION,
                    file,
                    name.span,
                    "this is a builtin function",
                )
                .with_message(format!("`{}` is already defined by Flow", name.name))
                .with_help("choose another name"),
            );
            return;
        }
        let first = own
            .first_values
            .entry(name.name.clone())
            .or_insert(FirstValue {
                any: name.span,
                non_variant: None,
            });
        if !is_variant {
            first.non_variant = Some(name.span);
        }
        own.values.push((name.name.clone(), value, name.span));
    }

    fn report_duplicate(&mut self, file: FileId, name: &ast::Ident, first: Span) {
        self.diagnostics.push(
            Diagnostic::error(
                codes::DUPLICATE_DEFINITION,
                file,
                name.span,
                "defined again here",
            )
            .with_message(format!("`{}` is defined more than once", name.name))
            .with_label(file, first, "first defined here")
            .with_help("rename one of them, or remove the duplicate"),
        );
    }

    fn build_scopes(&mut self, db: &SourceDb, imports: &[Vec<(Span, Option<FileId>)>]) {
        for (index, file_imports) in imports.iter().enumerate() {
            let file = FileId(index as u32);
            let mut scope = FileScope {
                file: Some(file),
                ..FileScope::default()
            };
            for (name, id, _) in &self.own[index].types {
                scope.types.insert(name.clone(), (*id, file));
            }
            for (name, value, _) in &self.own[index].values {
                scope.add_value(name, *value, file);
            }
            for &(import_span, target) in file_imports {
                let Some(target) = target else { continue };
                if target == file {
                    continue;
                }
                for (name, id, _) in &self.own[target.0 as usize].types {
                    match scope.types.get(name) {
                        Some((existing, _)) if existing == id => {}
                        Some((_, origin)) => {
                            let origin = *origin;
                            report_import_clash(
                                self.diagnostics,
                                db,
                                file,
                                import_span,
                                name,
                                origin,
                                target,
                            );
                        }
                        None => {
                            scope.types.insert(name.clone(), (*id, target));
                        }
                    }
                }
                for (name, value, _) in &self.own[target.0 as usize].values {
                    let entry = scope.lookup_values(name);
                    let seen = match value {
                        Value::Variant(id, index) => scope.variants.contains_key(&(*id, *index)),
                        _ => entry.iter().any(|(v, _)| v == value),
                    };
                    if seen {
                        continue;
                    }
                    let clash = entry.iter().find(|(v, _)| {
                        !(matches!(v, Value::Variant(..)) && matches!(value, Value::Variant(..)))
                    });
                    if let Some((_, origin)) = clash {
                        let origin = *origin;
                        report_import_clash(
                            self.diagnostics,
                            db,
                            file,
                            import_span,
                            name,
                            origin,
                            target,
                        );
                        continue;
                    }
                    scope.add_value(name, *value, target);
                }
            }
            self.checked.scopes.push(scope);
        }
    }

    /// Resolves the refined types (`type Score = Float in 0.0..1.0`) before anything that
    /// may name them; one that names another resolves that one first, and one that names
    /// itself (through others) is an error.
    fn resolve_refined_types(&mut self, trees: &[SyntaxTree]) {
        let mut refined: HashMap<TypeId, (FileId, &ast::TypeDecl, &ast::TypeExpr)> =
            HashMap::default();
        let mut order = Vec::new();
        for (index, tree) in trees.iter().enumerate() {
            let file = FileId(index as u32);
            let mut declared = self.own[index].declared_types.iter();
            for item in &tree.module.items {
                let (ast::Item::Type(_) | ast::Item::Error(_) | ast::Item::Enum(_)) = item else {
                    continue;
                };
                let Some(&id) = declared.next() else { break };
                if let ast::Item::Type(decl) = item
                    && let Some(ty) = &decl.refined
                {
                    refined.insert(id, (file, decl, ty));
                    order.push(id);
                }
            }
        }
        let mut done: HashSet<TypeId> = HashSet::default();
        let mut visiting: Vec<TypeId> = Vec::new();
        for id in order {
            self.resolve_refined(id, &refined, &mut done, &mut visiting);
        }
    }

    fn resolve_refined(
        &mut self,
        id: TypeId,
        refined: &HashMap<TypeId, (FileId, &ast::TypeDecl, &ast::TypeExpr)>,
        done: &mut HashSet<TypeId>,
        visiting: &mut Vec<TypeId>,
    ) {
        if done.contains(&id) {
            return;
        }
        let Some(&(file, decl, ty)) = refined.get(&id) else {
            return;
        };
        if visiting.contains(&id) {
            // Reported once, at the declaration the circle started from.
            return;
        }
        visiting.push(id);
        let mut names = Vec::new();
        written_names(ty, &mut names);
        let mut circular = false;
        for name in names {
            let Some(dep) = self.checked.scopes[file.0 as usize].lookup_type(name) else {
                continue;
            };
            if visiting.contains(&dep) {
                circular = true;
                continue;
            }
            self.resolve_refined(dep, refined, done, visiting);
        }
        visiting.pop();
        done.insert(id);
        let resolved = if circular {
            self.diagnostics.push(
                Diagnostic::error(
                    codes::INVALID_REFINEMENT,
                    file,
                    decl.name.span,
                    "this type is refined from itself",
                )
                .with_message(format!("`{}` refers to itself", decl.name.name))
                .with_help("refine a base type (`Int`, `Float`, `String`, `List<T>`) or another refined type that does not lead back here"),
            );
            Type::Unknown
        } else {
            match resolve_type(&self.checked, file, ty, self.diagnostics) {
                Type::Refined(mut r) => {
                    r.name = Some(decl.name.name.clone());
                    Type::Refined(r)
                }
                Type::Unknown => Type::Unknown,
                Type::Optional(inner) if matches!(*inner, Type::Refined(_)) => {
                    Type::Optional(inner)
                }
                other => {
                    let shown = other.display(&self.checked.types).to_string();
                    let example = match other {
                        Type::Int => format!("`{shown} in 1..10`"),
                        Type::Float => format!("`{shown} in 0.0..1.0`"),
                        Type::String => format!("`{shown} matching \"…\"`, `{shown} length 1..80`"),
                        Type::List(_) => format!("`{shown} nonempty`"),
                        _ => "`Int in 1..10`, `String matching \"…\"`".to_string(),
                    };
                    self.diagnostics.push(
                        Diagnostic::error(
                            codes::INVALID_REFINEMENT,
                            file,
                            ty.span,
                            "a type with no refinement",
                        )
                        .with_message(format!("`type {}` names a type without refining it", decl.name.name))
                        .with_help(format!("add a refinement ({example}), write `{shown}` where you use `{}`, or declare a record: `type {} = {{ field: Type }}`", decl.name.name, decl.name.name)),
                    );
                    Type::Unknown
                }
            }
        };
        self.checked.types.get_mut(id).kind = TypeDefKind::Refined(resolved);
    }

    /// Resolves the types written in every declaration.
    fn resolve_declarations(&mut self, trees: &[SyntaxTree]) {
        self.resolve_refined_types(trees);
        let mut tool_index = 0;
        let mut workflow_index = 0;
        let mut function_index = 0;
        for (index, tree) in trees.iter().enumerate() {
            let file = FileId(index as u32);
            let mut declared_types =
                std::mem::take(&mut self.own[index].declared_types).into_iter();
            for item in &tree.module.items {
                match item {
                    ast::Item::Type(decl) => {
                        let Some(id) = declared_types.next() else {
                            continue;
                        };
                        if decl.refined.is_some() {
                            continue;
                        }
                        let fields = self.resolve_fields(file, &decl.fields);
                        self.checked.types.get_mut(id).kind = TypeDefKind::Record(fields);
                    }
                    ast::Item::Error(decl) => {
                        let Some(id) = declared_types.next() else {
                            continue;
                        };
                        self.resolve_error(file, decl, id);
                    }
                    ast::Item::Enum(decl) => {
                        let Some(id) = declared_types.next() else {
                            continue;
                        };
                        let mut variants: Vec<VariantDef> = Vec::new();
                        for variant in &decl.variants {
                            if let Some(first) =
                                variants.iter().find(|v| v.name == variant.name.name)
                            {
                                let first = first.span;
                                self.report_duplicate(file, &variant.name, first);
                            }
                            variants.push(VariantDef {
                                name: variant.name.name.clone(),
                                fields: self.resolve_fields(file, &variant.fields),
                                span: variant.name.span,
                                doc: variant.doc.clone(),
                            });
                        }
                        self.checked.types.get_mut(id).kind = TypeDefKind::Enum(variants);
                    }
                    ast::Item::Tool(decl) => {
                        let params = self.resolve_params(file, &decl.params);
                        let ret = resolve_type(&self.checked, file, &decl.ret, self.diagnostics);
                        let binding = self.check_binding(file, &decl.binding);
                        if binding == Some(BindingKind::Llm) {
                            for param in &params {
                                if let Some(path) = self.checked.types.secret_path(&param.ty) {
                                    let at = if path.is_empty() {
                                        String::new()
                                    } else {
                                        format!(" (at `{}`)", path.trim_start_matches('.'))
                                    };
                                    self.diagnostics.push(
                                        Diagnostic::error(codes::SECRET_LEAK, file, param.span, format!("`{}` holds a `Secret`{at}", param.name))
                                            .with_message("A `Secret` would be revealed to the model")
                                            .with_help("an llm tool's arguments go into its prompt; give the model the data it needs, never the secret"),
                                    );
                                }
                            }
                        }
                        let raises = self.resolve_tool_raises(file, decl, binding);
                        let tool = &mut self.checked.tools[tool_index];
                        tool.params = params;
                        tool.ret = ret;
                        tool.binding = binding;
                        tool.raises = raises;
                        tool_index += 1;
                    }
                    ast::Item::Workflow(decl) => {
                        let params = self.resolve_params(file, &decl.params);
                        let ret = match &decl.ret {
                            Some(ret) => resolve_type(&self.checked, file, ret, self.diagnostics),
                            None => Type::Unit,
                        };
                        let signals = self.resolve_signals(file, &decl.accepts);
                        for error in &decl.raises {
                            self.named_error(file, error);
                        }
                        // Their written types are checked (and any mistake reported) with the
                        // body; here only what tests need to type a query's value.
                        let mut quiet = Vec::new();
                        let queries = decl
                            .body
                            .stmts
                            .iter()
                            .filter_map(|stmt| match &stmt.kind {
                                ast::StmtKind::Query { name, ret, .. } => Some((
                                    name.name.clone(),
                                    resolve_type(&self.checked, file, ret, &mut quiet),
                                )),
                                _ => None,
                            })
                            .collect();
                        let workflow = &mut self.checked.workflows[workflow_index];
                        workflow.params = params;
                        workflow.ret = ret;
                        workflow.signals = signals;
                        workflow.queries = queries;
                        workflow_index += 1;
                    }
                    ast::Item::Function(decl) => {
                        let params = self.resolve_params(file, &decl.params);
                        let ret = match &decl.ret {
                            Some(ret) => resolve_type(&self.checked, file, ret, self.diagnostics),
                            None => Type::Unit,
                        };
                        let function = &mut self.checked.functions[function_index];
                        function.params = params;
                        function.ret = ret;
                        function_index += 1;
                    }
                    ast::Item::Import(_) | ast::Item::Test(_) => {}
                }
            }
        }
    }

    /// A workflow's `accepts` clause: each signal's type and senders, names unique.
    fn resolve_signals(&mut self, file: FileId, accepts: &[ast::SignalDecl]) -> Vec<SignalDef> {
        let mut signals: Vec<SignalDef> = Vec::with_capacity(accepts.len());
        for decl in accepts {
            if let Some(first) = signals.iter().find(|s| s.name == decl.name.name) {
                let first = first.span;
                self.report_duplicate(file, &decl.name, first);
                continue;
            }
            let ty = match &decl.ty {
                Some(ty) => resolve_type(&self.checked, file, ty, self.diagnostics),
                None => Type::Unit,
            };
            let senders = decl
                .senders
                .iter()
                .filter_map(|sender| self.resolve_sender(file, sender))
                .collect();
            signals.push(SignalDef {
                name: decl.name.name.clone(),
                span: decl.name.span,
                ty,
                ty_span: decl.ty.as_ref().map(|t| t.span),
                senders,
            });
        }
        signals
    }

    fn resolve_sender(
        &mut self,
        file: FileId,
        sender: &ast::SenderExpr,
    ) -> Option<crate::bytecode::Sender> {
        let Some(kind) = crate::bytecode::SenderKind::from_word(&sender.kind.name) else {
            self.diagnostics.push(
                Diagnostic::error(
                    codes::UNKNOWN_SENDER,
                    file,
                    sender.kind.span,
                    "not a kind of sender",
                )
                .with_message(format!("`{}` cannot send a signal", sender.kind.name))
                .with_help("name who may send it with `role(\"…\")`, `user(\"…\")` or `system(\"…\")` (an API token made with `flowrt token create --system NAME`)"),
            );
            return None;
        };
        if sender.name.value.trim().is_empty() {
            self.diagnostics.push(
                Diagnostic::error(
                    codes::EMPTY_NAME,
                    file,
                    sender.name.span,
                    "this name is empty",
                )
                .with_message(format!("A `{}` sender needs a name", kind.word()))
                .with_help(format!(
                    "write e.g. `{}(\"{}\")`",
                    kind.word(),
                    match kind {
                        crate::bytecode::SenderKind::Role => "support",
                        crate::bytecode::SenderKind::User => "alice",
                        crate::bytecode::SenderKind::System => "billing",
                    }
                )),
            );
            return None;
        }
        Some(crate::bytecode::Sender {
            kind,
            name: sender.name.value.to_string(),
        })
    }

    fn resolve_fields(&mut self, file: FileId, fields: &[ast::Field]) -> Vec<FieldDef> {
        let mut out: Vec<FieldDef> = Vec::with_capacity(fields.len());
        for field in fields {
            if let Some(first) = out.iter().find(|f| f.name == field.name.name) {
                let first = first.span;
                self.report_duplicate_field(file, &field.name, first);
                continue;
            }
            out.push(FieldDef {
                name: field.name.name.clone(),
                ty: resolve_type(&self.checked, file, &field.ty, self.diagnostics),
                span: field.name.span,
                doc: field.doc.clone(),
            });
        }
        out
    }

    /// The named error `name` the file can see, or a diagnostic saying there is none.
    fn named_error(&mut self, file: FileId, name: &ast::Ident) -> Option<usize> {
        let found = self.checked.scopes[file.0 as usize]
            .lookup_type(&name.name)
            .and_then(|ty| self.checked.error_of(ty));
        if found.is_none() {
            let names: Vec<&str> = self
                .checked
                .errors
                .iter()
                .map(|e| e.name.as_str())
                .collect();
            let help = match did_you_mean(&name.name, names.iter().copied()) {
                Some(close) => format!("did you mean `{close}`?"),
                None => format!("declare it: `error {}(field: Type)`", name.name),
            };
            self.diagnostics.push(
                Diagnostic::error(
                    codes::UNKNOWN_ERROR_KIND,
                    file,
                    name.span,
                    "no error has this name",
                )
                .with_message(format!("Unknown error `{}`", name.name))
                .with_help(help),
            );
        }
        found
    }

    /// A tool's `raises`: named errors, on HTTP statuses (400–599) for an `http` tool and
    /// exit statuses (1–255) for an `exec` tool, each answer named once.
    fn resolve_tool_raises(
        &mut self,
        file: FileId,
        decl: &ast::ToolDecl,
        binding: Option<BindingKind>,
    ) -> Vec<(usize, ast::RaiseOn)> {
        let mut raises: Vec<(usize, ast::RaiseOn)> = Vec::new();
        for clause in &decl.raises {
            let Some(error) = self.named_error(file, &clause.error) else {
                continue;
            };
            let problem = match (clause.on, binding) {
                (ast::RaiseOn::Status(code), Some(BindingKind::Http))
                    if !(400..=599).contains(&code) =>
                {
                    Some("an HTTP error status is 400 to 599".to_string())
                }
                (ast::RaiseOn::Exit(code), Some(BindingKind::Exec))
                    if !(1..=255).contains(&code) =>
                {
                    Some("an exit status that is a failure is 1 to 255".to_string())
                }
                (ast::RaiseOn::Status(_), Some(BindingKind::Exec)) => {
                    Some("an `exec` tool fails with an exit status: `on exit 3`".to_string())
                }
                (ast::RaiseOn::Exit(_), Some(BindingKind::Http)) => {
                    Some("an `http` tool fails with a status: `on 404`".to_string())
                }
                (ast::RaiseOn::Refusal, Some(BindingKind::Http | BindingKind::Exec)) => Some(
                    "only an `llm` tool's model refuses; an `http` tool fails with a status (`on 404`), an `exec` tool with an exit status (`on exit 3`)"
                        .to_string(),
                ),
                (ast::RaiseOn::Status(_) | ast::RaiseOn::Exit(_), Some(BindingKind::Llm)) => Some(
                    "an `llm` tool names one answer: its model's refusal (`on refusal`); its other failures are its builtin kinds (`ToolError`, `InvalidOutput`)"
                        .to_string(),
                ),
                _ => None,
            };
            let same = |a: ast::RaiseOn, b: ast::RaiseOn| match (a, b) {
                (ast::RaiseOn::Status(x), ast::RaiseOn::Status(y))
                | (ast::RaiseOn::Exit(x), ast::RaiseOn::Exit(y)) => x == y,
                (ast::RaiseOn::Refusal, ast::RaiseOn::Refusal) => true,
                _ => false,
            };
            let problem = problem.or_else(|| {
                raises
                    .iter()
                    .any(|(_, on)| same(*on, clause.on))
                    .then(|| "this answer is already one error of the tool".to_string())
            });
            if let Some(help) = problem {
                self.diagnostics.push(
                    Diagnostic::error(
                        codes::OUT_OF_RANGE,
                        file,
                        clause.span,
                        "not an answer this tool can give",
                    )
                    .with_message(format!(
                        "Tool `{}` cannot raise `{}` on that",
                        decl.name.name, clause.error.name
                    ))
                    .with_help(help),
                );
                continue;
            }
            raises.push((error, clause.on));
        }
        raises
    }

    /// An error's record: the fields of every error, then its own (which may not be named
    /// like those).
    fn resolve_error(&mut self, file: FileId, decl: &ast::ErrorDecl, id: TypeId) {
        let common: Vec<FieldDef> = self
            .checked
            .error
            .and_then(|e| self.checked.types.get(e).fields())
            .map(<[FieldDef]>::to_vec)
            .unwrap_or_default();
        let mut payload = self.resolve_fields(file, &decl.fields);
        payload.retain(|field| {
            let clash = common.iter().any(|c| c.name == field.name);
            if clash {
                self.diagnostics.push(
                    Diagnostic::error(
                        codes::DUPLICATE_FIELD,
                        file,
                        field.span,
                        "every error has this field",
                    )
                    .with_message(format!("Error `{}` names its own `{}`", decl.name.name, field.name))
                    .with_help("every error has `kind`, `message`, `step`, `tool`, `attempt` and `retryable`; give this field another name"),
                );
            }
            !clash
        });
        let fields = common.into_iter().chain(payload.iter().cloned()).collect();
        self.checked.types.get_mut(id).kind = TypeDefKind::Record(fields);
        if let Some(error) = self.checked.errors.iter_mut().find(|e| e.ty == id) {
            error.payload = payload;
        }
    }

    fn resolve_params(&mut self, file: FileId, params: &[ast::Field]) -> Vec<ParamDef> {
        self.resolve_fields(file, params)
            .into_iter()
            .map(|f| ParamDef {
                name: f.name,
                ty: f.ty,
                span: f.span,
            })
            .collect()
    }

    fn report_duplicate_field(&mut self, file: FileId, name: &ast::Ident, first: Span) {
        self.diagnostics.push(
            Diagnostic::error(
                codes::DUPLICATE_FIELD,
                file,
                name.span,
                "declared again here",
            )
            .with_message(format!("`{}` is declared twice", name.name))
            .with_label(file, first, "first declared here")
            .with_help("remove one of them or give it another name"),
        );
    }

    fn check_binding(&mut self, file: FileId, binding: &ast::ToolBinding) -> Option<BindingKind> {
        let empty = |lit: &ast::StrLit| lit.value.trim().is_empty();
        match binding {
            ast::ToolBinding::Http { method, path } => {
                let lower = method.name.to_ascii_lowercase();
                if !HTTP_METHODS.contains(&lower.as_str()) {
                    let mut diagnostic = Diagnostic::error(
                        codes::INVALID_TOOL_BINDING,
                        file,
                        method.span,
                        "not an HTTP method",
                    )
                    .with_message(format!("Unknown HTTP method `{}`", method.name));
                    diagnostic = match did_you_mean(&lower, HTTP_METHODS.iter().copied()) {
                        Some(s) => diagnostic.with_help(format!("did you mean `{s}`?")),
                        None => diagnostic.with_help("use one of get, post, put, patch, delete"),
                    };
                    self.diagnostics.push(diagnostic);
                }
                if empty(path) {
                    self.empty_binding(
                        file,
                        path.span,
                        "the request path is empty",
                        "give the path or URL the tool calls, e.g. \"/check\"",
                    );
                }
                Some(BindingKind::Http)
            }
            ast::ToolBinding::Exec { command } => {
                if empty(command) {
                    self.empty_binding(
                        file,
                        command.span,
                        "the command is empty",
                        "name the program to run, e.g. \"tools/release.sh\"",
                    );
                }
                Some(BindingKind::Exec)
            }
            ast::ToolBinding::Llm { model, prompt } => {
                if empty(model) {
                    self.empty_binding(
                        file,
                        model.span,
                        "the model name is empty",
                        "name the model, e.g. \"mistral-small\"",
                    );
                }
                if empty(prompt) {
                    self.empty_binding(
                        file,
                        prompt.span,
                        "the prompt is empty",
                        "say what the model must produce",
                    );
                }
                Some(BindingKind::Llm)
            }
            ast::ToolBinding::Error => None,
        }
    }

    fn empty_binding(&mut self, file: FileId, span: Span, label: &str, help: &str) {
        self.diagnostics.push(
            Diagnostic::error(codes::INVALID_TOOL_BINDING, file, span, label).with_help(help),
        );
    }

    fn report_unused_imports(&mut self, imports: &[Vec<(Span, Option<FileId>)>]) {
        for (index, file_imports) in imports.iter().enumerate() {
            let file = FileId(index as u32);
            let used = self.checked.scopes[index].used_imports.borrow();
            for &(span, target) in file_imports {
                let Some(target) = target else { continue };
                let exports_nothing = self.own[target.0 as usize].types.is_empty()
                    && self.own[target.0 as usize].values.is_empty();
                if target != file && !used.contains(&target) && !exports_nothing {
                    self.diagnostics.push(
                        Diagnostic::warning(
                            codes::UNUSED_IMPORT,
                            file,
                            span,
                            "nothing from this file is used",
                        )
                        .with_help("remove the import"),
                    );
                }
            }
        }
    }
}

fn report_import_clash(
    diagnostics: &mut Vec<Diagnostic>,
    db: &SourceDb,
    file: FileId,
    import_span: Span,
    name: &str,
    first: FileId,
    second: FileId,
) {
    diagnostics.push(
        Diagnostic::error(
            codes::DUPLICATE_DEFINITION,
            file,
            import_span,
            format!("this import brings a second `{name}`"),
        )
        .with_message(format!(
            "`{name}` is defined in both {} and {}",
            db.display_name(first),
            db.display_name(second)
        ))
        .with_help("rename one of the declarations so each name has one meaning"),
    );
}

const HTTP_METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

/// Type names Flow defines itself (records such as `Decision` come from the stdlib table).
pub const BUILTIN_TYPE_NAMES: &[&str] = &[
    "Int",
    "Float",
    "Bool",
    "String",
    "Duration",
    "Time",
    "Json",
    "Approvers",
    "Secret",
    "List",
    "Map",
];

/// Resolves a written type in the scope of `file`, reporting unknown names.
pub fn resolve_type(
    checked: &Checked,
    file: FileId,
    ty: &ast::TypeExpr,
    diagnostics: &mut Vec<Diagnostic>,
) -> Type {
    match &ty.kind {
        ast::TypeExprKind::Error => Type::Unknown,
        ast::TypeExprKind::Optional(inner) => {
            Type::optional(resolve_type(checked, file, inner, diagnostics))
        }
        ast::TypeExprKind::Refined(refined) => {
            let base = resolve_type(checked, file, &refined.base, diagnostics);
            refine(checked, file, base, refined, diagnostics)
        }
        ast::TypeExprKind::Named { name, args } => {
            let expected_args = match name.name.as_str() {
                "List" | "Map" => 1,
                _ => 0,
            };
            if args.len() != expected_args {
                let shape = match name.name.as_str() {
                    "List" => "write `List<Element>`",
                    "Map" => "write `Map<Value>`; keys are always strings",
                    _ => "remove the type arguments",
                };
                diagnostics.push(
                    Diagnostic::error(
                        codes::WRONG_TYPE_ARGUMENTS,
                        file,
                        ty.span,
                        format!(
                            "`{}` takes {expected_args} type argument(s), {} given",
                            name.name,
                            args.len()
                        ),
                    )
                    .with_help(shape),
                );
                if expected_args == 1 && args.is_empty() {
                    return Type::Unknown;
                }
            }
            let arg = |diagnostics: &mut Vec<Diagnostic>| {
                args.first()
                    .map(|a| resolve_type(checked, file, a, diagnostics))
                    .unwrap_or(Type::Unknown)
            };
            match name.name.as_str() {
                "Int" => Type::Int,
                "Float" => Type::Float,
                "Bool" => Type::Bool,
                "String" => Type::String,
                "Duration" => Type::Duration,
                "Time" => Type::Time,
                "Json" => Type::Json,
                "Approvers" => Type::Approvers,
                "Secret" => Type::Secret,
                "List" => Type::List(Box::new(arg(diagnostics))),
                "Map" => Type::Map(Box::new(arg(diagnostics))),
                other => {
                    if let Some(id) = builtin_record(checked, other) {
                        return Type::Named(id);
                    }
                    if let Some(id) = checked.scopes[file.0 as usize].lookup_type(other) {
                        if let TypeDefKind::Refined(ty) = &checked.types.get(id).kind {
                            return ty.clone();
                        }
                        return Type::Named(id);
                    }
                    let scope = &checked.scopes[file.0 as usize];
                    let candidates = BUILTIN_TYPE_NAMES
                        .iter()
                        .copied()
                        .chain(stdlib::BUILTIN_RECORDS.iter().map(|r| r.name))
                        .chain(scope.types.keys().map(|k| k.as_str()));
                    let mut diagnostic =
                        Diagnostic::error(codes::UNKNOWN_TYPE, file, name.span, "not a known type")
                            .with_message(format!("Unknown type `{other}`"));
                    diagnostic = match did_you_mean(other, candidates) {
                        Some(s) => diagnostic.with_help(format!("did you mean `{s}`?")),
                        None => diagnostic.with_help(format!(
                            "declare it with `type {other} = {{ … }}` or `enum {other} {{ … }}`, or import the file that declares it"
                        )),
                    };
                    diagnostics.push(diagnostic);
                    Type::Unknown
                }
            }
        }
    }
}

/// The type names a written type mentions (`Sku` in `List<Sku>? nonempty`).
fn written_names<'a>(ty: &'a ast::TypeExpr, out: &mut Vec<&'a str>) {
    match &ty.kind {
        ast::TypeExprKind::Named { name, args } => {
            out.push(name.name.as_str());
            for arg in args {
                written_names(arg, out);
            }
        }
        ast::TypeExprKind::Optional(inner) => written_names(inner, out),
        ast::TypeExprKind::Refined(r) => written_names(&r.base, out),
        ast::TypeExprKind::Error => {}
    }
}

/// `base` with the written rule, or `Unknown` after an error (reported here): the rule must
/// fit the base (E0322), a range must hold a value (E0323), a pattern must be valid (E0324).
/// On an optional base the rule is for the value when there is one: `Int? in 1..5`.
fn refine(
    checked: &Checked,
    file: FileId,
    base: Type,
    written: &ast::RefinedTypeExpr,
    diagnostics: &mut Vec<Diagnostic>,
) -> Type {
    use crate::bytecode::Refinement as R;
    use crate::types::Refined;
    if let Type::Optional(inner) = base {
        return Type::optional(refine(checked, file, *inner, written, diagnostics));
    }
    if base.is_unknown() {
        return Type::Unknown;
    }
    let (_, plain) = base.refinements();
    let shown = plain.display(&checked.types).to_string();
    let misplaced = |diagnostics: &mut Vec<Diagnostic>, what: &str, help: &str| {
        diagnostics.push(
            Diagnostic::error(
                codes::INVALID_REFINEMENT,
                file,
                written.rule_span,
                format!("{what} does not apply to `{shown}`"),
            )
            .with_message(format!("`{shown}` cannot be refined like this"))
            .with_help(help.to_string()),
        );
        Type::Unknown
    };
    let int_bound = |b: &Option<ast::Bound>| match b {
        Some(ast::Bound {
            value: ast::BoundValue::Int(v),
            ..
        }) => Ok(Some(*v)),
        Some(bound) => Err(bound.span),
        None => Ok(None),
    };
    let float_bound = |b: &Option<ast::Bound>| match b {
        Some(ast::Bound {
            value: ast::BoundValue::Int(v),
            ..
        }) => Some(*v as f64),
        Some(ast::Bound {
            value: ast::BoundValue::Float(v),
            ..
        }) => Some(*v),
        None => None,
    };
    let empty = |diagnostics: &mut Vec<Diagnostic>, what: &str| {
        diagnostics.push(
            Diagnostic::error(
                codes::EMPTY_REFINEMENT,
                file,
                written.rule_span,
                format!("no {what} is in this range"),
            )
            .with_message("The range is empty")
            .with_help("write the lower bound first: `in 1..10` (both ends are included)"),
        );
        Type::Unknown
    };
    let rule = match (&written.rule, plain) {
        (ast::RuleExpr::Range { min, max }, Type::Int) => match (int_bound(min), int_bound(max)) {
            (Ok(min), Ok(max)) => {
                if let (Some(a), Some(b)) = (min, max)
                    && a > b
                {
                    return empty(diagnostics, "whole number");
                }
                R::IntRange { min, max }
            }
            (Err(span), _) | (_, Err(span)) => {
                diagnostics.push(
                    Diagnostic::error(
                        codes::INVALID_REFINEMENT,
                        file,
                        span,
                        "an `Int`'s bound is a whole number",
                    )
                    .with_message("An `Int` range has a fractional bound")
                    .with_help("write whole numbers (`Int in 1..10`), or refine a `Float`"),
                );
                return Type::Unknown;
            }
        },
        (ast::RuleExpr::Range { min, max }, Type::Float) => {
            let (min, max) = (float_bound(min), float_bound(max));
            if let (Some(a), Some(b)) = (min, max)
                && a > b
            {
                return empty(diagnostics, "number");
            }
            R::FloatRange { min, max }
        }
        (ast::RuleExpr::Range { .. }, _) => {
            return misplaced(
                diagnostics,
                "a range",
                "a range refines an `Int` or a `Float`; a text's or a list's size is `length a..b`",
            );
        }
        (ast::RuleExpr::Matching(pattern), Type::String) => {
            if let Err(why) = crate::bytecode::refine::compile_pattern(&pattern.value) {
                diagnostics.push(
                    Diagnostic::error(
                        codes::INVALID_REGEX,
                        file,
                        pattern.span,
                        why,
                    )
                    .with_message("This is not a valid pattern")
                    .with_help("write a regular expression (Rust `regex` syntax) that the whole text must match, e.g. `\"^[A-Z]{2}[0-9]+$\"`; a backslash is written `\\\\` in a Flow string"),
                );
                return Type::Unknown;
            }
            R::Matching(pattern.value.to_string())
        }
        (ast::RuleExpr::Matching(_), _) => {
            return misplaced(
                diagnostics,
                "`matching`",
                "`matching \"…\"` refines a `String`",
            );
        }
        (ast::RuleExpr::NonEmpty, Type::String | Type::List(_)) => R::NonEmpty,
        (ast::RuleExpr::NonEmpty, _) => {
            return misplaced(
                diagnostics,
                "`nonempty`",
                "`nonempty` refines a `String` or a `List<T>`",
            );
        }
        (ast::RuleExpr::Length { min, max }, Type::String | Type::List(_)) => {
            let (min, max) = match (int_bound(min), int_bound(max)) {
                (Ok(min), Ok(max)) => (min, max),
                (Err(span), _) | (_, Err(span)) => {
                    diagnostics.push(
                        Diagnostic::error(
                            codes::INVALID_REFINEMENT,
                            file,
                            span,
                            "a length is a whole number",
                        )
                        .with_message("A length has a fractional bound")
                        .with_help("write whole numbers: `length 1..80`"),
                    );
                    return Type::Unknown;
                }
            };
            if min.is_some_and(|v| v < 0) || max.is_some_and(|v| v < 0) {
                diagnostics.push(
                    Diagnostic::error(
                        codes::INVALID_REFINEMENT,
                        file,
                        written.rule_span,
                        "a length is never negative",
                    )
                    .with_message("A length has a negative bound")
                    .with_help("write bounds from 0: `length 1..80`, `length ..80`"),
                );
                return Type::Unknown;
            }
            if let (Some(a), Some(b)) = (min, max)
                && a > b
            {
                return empty(diagnostics, "length");
            }
            R::Length {
                min: min.map(|v| v as u64),
                max: max.map(|v| v as u64),
            }
        }
        (ast::RuleExpr::Length { .. }, _) => {
            return misplaced(
                diagnostics,
                "`length`",
                "`length a..b` refines a `String` or a `List<T>`; a number's range is `in a..b`",
            );
        }
    };
    Type::Refined(Box::new(Refined {
        base,
        rule,
        name: None,
    }))
}

fn builtin_record(checked: &Checked, name: &str) -> Option<TypeId> {
    [checked.decision, checked.error]
        .into_iter()
        .flatten()
        .find(|id| checked.types.get(*id).name == name)
}

/// Converts a stdlib signature type; `var` stands for the builtin's type variable.
pub fn from_stdlib(ty: stdlib::Ty, checked: &Checked, var: &Type) -> Type {
    use stdlib::Ty;
    match ty {
        Ty::Int => Type::Int,
        Ty::Float => Type::Float,
        Ty::Bool => Type::Bool,
        Ty::String => Type::String,
        Ty::Duration => Type::Duration,
        Ty::Time => Type::Time,
        Ty::Json => Type::Json,
        Ty::Approvers => Type::Approvers,
        Ty::Any => Type::Unknown,
        Ty::Var => var.clone(),
        Ty::List(inner) => Type::List(Box::new(from_stdlib(*inner, checked, var))),
        Ty::Map(inner) => Type::Map(Box::new(from_stdlib(*inner, checked, var))),
        Ty::Optional(inner) => Type::optional(from_stdlib(*inner, checked, var)),
        Ty::Record(name) => builtin_record(checked, name)
            .map(Type::Named)
            .unwrap_or(Type::Unknown),
    }
}

impl DeclChecker<'_> {
    /// Fills in each program workflow's [`WorkflowDef::may_raise`]: what its own code
    /// raises, joined with what the workflows it calls raise, to a fixed point (calls may
    /// form cycles).
    fn find_what_workflows_raise(&mut self, trees: &[SyntaxTree]) {
        let mut direct = Vec::new();
        for (index, tree) in trees.iter().enumerate() {
            let Some(scope) = self.checked.scopes.get(index) else {
                continue;
            };
            for item in &tree.module.items {
                if let ast::Item::Workflow(workflow) = item {
                    direct.push(body::direct_raises(scope, &self.checked, &workflow.body));
                }
            }
        }
        let mut raised: Vec<Option<Vec<Name>>> = direct
            .iter()
            .zip(&self.checked.workflows)
            .map(|(d, def)| {
                d.named.as_ref().map(|named| {
                    let mut all: Vec<Name> = def.raises.clone();
                    for name in named {
                        if !all.iter().any(|n| n.as_str() == name) {
                            all.push(Name::from(name.as_str()));
                        }
                    }
                    all
                })
            })
            .collect();
        loop {
            let mut changed = false;
            for (index, d) in direct.iter().enumerate() {
                for child in &d.children {
                    let from_child = raised.get(*child).cloned().unwrap_or(None);
                    let Some(own) = raised[index].as_mut() else {
                        continue;
                    };
                    match from_child {
                        None => {
                            raised[index] = None;
                            changed = true;
                            break;
                        }
                        Some(names) => {
                            for name in names {
                                if !own.contains(&name) {
                                    own.push(name);
                                    changed = true;
                                }
                            }
                        }
                    }
                }
            }
            if !changed {
                break;
            }
        }
        for (def, may_raise) in self.checked.workflows.iter_mut().zip(raised) {
            def.may_raise = may_raise;
        }
    }
}
