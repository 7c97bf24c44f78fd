//! The editor's view of a program: what the language server asks, answered in byte offsets
//! with no LSP types (the server converts positions at its edge).
//!
//! [`analyze`] checks a set of root files exactly as `flowc check` does (same diagnostics),
//! with the checker also recording [`IdeFacts`]: the type of each name, field access and
//! call, the field each access names, and every local with its uses. From those and the
//! syntax trees it builds, per file, a sorted index of every name that refers to something
//! (a [`Sym`]); hover, go to definition, references and rename all start from "which symbol
//! is under this offset". Completion reads the tokens before the cursor for its context,
//! so it works in code that does not parse yet. [`Analysis::import_problems`] names the
//! imports that bring errors from other files, for an editor to mark.
//!
//! Architecture invariant: pure, like the rest of the compiler — no I/O; files come through
//! the [`SourceLoader`].

use crate::check::{IdeFacts, LocalKind, ParamDef, Resolved, Value};
use crate::diagnostics::{Diagnostic, codes};
use crate::program::{Program, RootError, load_and_check};
use crate::sources::{SourceDb, SourceLoader};
use crate::span::{FileId, Span, floor_char_boundary};
use crate::syntax::ast::{self, ExprKind, PatternKind, StmtKind, TypeExprKind};
use crate::syntax::lexer::{self, Token};
use crate::syntax::name::Name;
use crate::syntax::token::TokenKind as T;
use crate::types::{Type, TypeDefKind, TypeId};
use flow_stdlib as stdlib;
use rustc_hash::FxHashMap as HashMap;
use std::fmt::Write as _;

/// The result of checking a set of files for an editor.
pub struct Analysis {
    program: Program,
    root_error: Option<RootError>,
    ide: IdeFacts,
    /// Per file (same order as the program's files), every symbol reference sorted by start.
    index: Vec<Vec<Ref>>,
}

/// Something a name in the source refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sym {
    Type(TypeId),
    /// A field of a record type: the type and the field's index.
    Field(TypeId, usize),
    Variant(TypeId, usize),
    Tool(usize),
    Workflow(usize),
    /// A `fn` (an index into the checker's functions).
    Function(usize),
    /// An index into the checker's recorded locals.
    Local(usize),
    Builtin(stdlib::Builtin),
    /// The file an `import` names.
    Import(FileId),
    /// An option of `await approval` (`input: false`) or `await input` (`input: true`).
    GateOption {
        name: &'static str,
        input: bool,
    },
    ErrorKind(&'static str),
    /// A signal a workflow accepts: the workflow's index and the signal's.
    Signal(usize, usize),
}

#[derive(Clone, Copy, Debug)]
struct Ref {
    span: Span,
    sym: Sym,
    /// The declaring occurrence (the name in `type T`, `let x`, a parameter, …).
    def: bool,
}

/// What hovering shows: Markdown, and the range of source it describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hover {
    pub range: Span,
    pub markdown: String,
}

/// A place in a file, by path as the program knows it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    pub path: String,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompletionKind {
    Keyword,
    Variable,
    Field,
    Variant,
    Tool,
    Workflow,
    Function,
    Type,
    /// An option key inside `await approval { … }` or `await input … { … }`.
    Option,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    pub label: String,
    pub kind: CompletionKind,
    /// A type or signature.
    pub detail: Option<String>,
    /// Markdown documentation.
    pub documentation: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymbolKind {
    Workflow,
    /// A `fn`.
    Function,
    Tool,
    Record,
    Enum,
    Field,
    Variant,
    Test,
    /// A signal a workflow accepts (a child of the workflow).
    Signal,
    /// A query of a workflow (a child of the workflow).
    Query,
}

/// A declaration in the outline of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentSymbol {
    pub name: String,
    pub kind: SymbolKind,
    pub detail: Option<String>,
    /// The whole declaration.
    pub span: Span,
    /// Its name.
    pub selection: Span,
    pub children: Vec<DocumentSymbol>,
}

/// An `import` that brings errors: the imported file, or a file it imports in turn, has
/// errors. The errors are reported in the files that have them; an editor marks the import
/// too, since a program importing a broken file does not build.
#[derive(Clone, Debug)]
pub struct ImportProblem<'a> {
    /// The imported path as written, with its quotes.
    pub span: Span,
    /// The imported file, by path as the program knows it.
    pub target: String,
    /// The errors in the imported file and in every file it loads, in order.
    pub errors: Vec<&'a Diagnostic>,
}

/// A text edit: replace `span` of the file at `path` with `text`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edit {
    pub path: String,
    pub span: Span,
    pub text: String,
}

/// Loads, parses and checks `roots` and what they import (as [`crate::check_paths`] does,
/// with the same diagnostics), and indexes every file for editor queries.
pub fn analyze(roots: &[String], loader: &dyn SourceLoader) -> Analysis {
    let (mut program, root_error) = match load_and_check(roots, loader, true) {
        Ok(program) => (program, None),
        Err(error) => (empty_program(), Some(error)),
    };
    let ide = program.checked.resolutions.ide.take().unwrap_or_default();
    let index = build_index(&program, &ide);
    Analysis {
        program,
        root_error,
        ide,
        index,
    }
}

fn empty_program() -> Program {
    Program {
        db: SourceDb::default(),
        trees: Vec::new(),
        imports: Vec::new(),
        roots: Vec::new(),
        checked: Default::default(),
        diagnostics: Vec::new(),
    }
}

impl Analysis {
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// A root that could not be read at all (then nothing else is known).
    pub fn root_error(&self) -> Option<&RootError> {
        self.root_error.as_ref()
    }

    pub fn file(&self, path: &str) -> Option<FileId> {
        self.program.db.find(path)
    }

    /// Every file the program loaded: the roots and what they import.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.program
            .db
            .ids()
            .map(|id| self.program.db.display_name(id))
    }

    pub fn path(&self, file: FileId) -> &str {
        self.program.db.display_name(file)
    }

    pub fn text(&self, path: &str) -> Option<&str> {
        self.file(path).map(|id| self.program.db.text(id))
    }

    /// The diagnostics whose primary label is in `path`, in order.
    pub fn diagnostics_for(&self, path: &str) -> Vec<&Diagnostic> {
        let Some(file) = self.file(path) else {
            return Vec::new();
        };
        self.program
            .diagnostics
            .iter()
            .filter(|d| d.file() == file)
            .collect()
    }

    /// The imports of `path` whose file, or a file that one imports in turn, has errors.
    pub fn import_problems(&self, path: &str) -> Vec<ImportProblem<'_>> {
        let Some(file) = self.file(path) else {
            return Vec::new();
        };
        let imports = &self.program.imports;
        let mut out = Vec::new();
        for &(span, target) in imports.get(file.0 as usize).map_or(&[][..], Vec::as_slice) {
            let Some(target) = target else { continue };
            // The files this import loads: its target and, transitively, what that imports.
            let mut loaded = vec![false; imports.len()];
            let mut stack = vec![target];
            while let Some(next) = stack.pop() {
                let index = next.0 as usize;
                if next == file || loaded.get(index) != Some(&false) {
                    continue;
                }
                loaded[index] = true;
                let more = imports.get(index).map_or(&[][..], Vec::as_slice);
                stack.extend(more.iter().filter_map(|(_, t)| *t));
            }
            let errors: Vec<&Diagnostic> = self
                .program
                .diagnostics
                .iter()
                .filter(|d| d.is_error() && loaded.get(d.file().0 as usize) == Some(&true))
                .collect();
            if !errors.is_empty() {
                out.push(ImportProblem {
                    span,
                    target: self.path(target).to_string(),
                    errors,
                });
            }
        }
        out
    }

    // ----- symbols under the cursor ---------------------------------------------------

    /// The file and a valid offset in it.
    fn locate(&self, path: &str, offset: usize) -> Option<(FileId, usize)> {
        let file = self.file(path)?;
        let text = self.program.db.text(file);
        Some((file, floor_char_boundary(text, offset.min(text.len()))))
    }

    /// The innermost reference under `offset` (or ending right at it).
    fn ref_at(&self, file: FileId, offset: usize) -> Option<Ref> {
        let refs = self.index.get(file.0 as usize)?;
        let offset = offset as u32;
        let inside = |r: &&Ref| r.span.start <= offset && offset < r.span.end;
        let touching = |r: &&Ref| r.span.start <= offset && offset == r.span.end;
        // Refs are sorted by start; only those starting at or before the offset qualify.
        let candidates = &refs[..refs.partition_point(|r| r.span.start <= offset)];
        let smallest =
            |it: &mut dyn Iterator<Item = &Ref>| it.min_by_key(|r| r.span.len()).copied();
        smallest(&mut candidates.iter().filter(inside))
            .or_else(|| smallest(&mut candidates.iter().filter(touching)))
    }

    /// The symbol under the cursor, if any.
    pub fn symbol_at(&self, path: &str, offset: usize) -> Option<Sym> {
        let (file, offset) = self.locate(path, offset)?;
        self.ref_at(file, offset).map(|r| r.sym)
    }

    /// Where `sym` is declared, if it is declared in a file.
    pub fn declaration(&self, sym: Sym) -> Option<Location> {
        let types = &self.program.checked.types;
        let at = |file: FileId, span: Span| {
            Some(Location {
                path: self.path(file).to_string(),
                span,
            })
        };
        match sym {
            Sym::Type(id) => {
                let def = types.get(id);
                at(def.file?, def.span)
            }
            Sym::Field(id, index) => {
                let def = types.get(id);
                at(def.file?, def.fields()?.get(index)?.span)
            }
            Sym::Variant(id, index) => {
                let def = types.get(id);
                at(def.file?, def.variants()?.get(index)?.span)
            }
            Sym::Tool(index) => {
                let tool = self.program.checked.tools.get(index)?;
                at(tool.file, tool.span)
            }
            Sym::Workflow(index) => {
                let workflow = self.program.checked.workflows.get(index)?;
                at(workflow.file, workflow.span)
            }
            Sym::Function(index) => {
                let function = self.program.checked.functions.get(index)?;
                at(function.file, function.span)
            }
            Sym::Local(index) => {
                let local = self.ide.locals.get(index)?;
                at(local.file, local.span)
            }
            Sym::Import(file) => at(file, Span::default()),
            Sym::Signal(workflow, index) => {
                let workflow = self.program.checked.workflows.get(workflow)?;
                at(workflow.file, workflow.signals.get(index)?.span)
            }
            Sym::Builtin(_) | Sym::GateOption { .. } | Sym::ErrorKind(_) => None,
        }
    }

    /// Go to definition: where the name under the cursor is declared.
    pub fn definition_at(&self, path: &str, offset: usize) -> Option<Location> {
        let sym = self.symbol_at(path, offset)?;
        self.declaration(sym)
    }

    /// Every occurrence of the symbol under the cursor in the loaded files, in file and
    /// position order; with `include_declaration`, its declaration too.
    pub fn references(
        &self,
        path: &str,
        offset: usize,
        include_declaration: bool,
    ) -> Vec<Location> {
        let Some(sym) = self.symbol_at(path, offset) else {
            return Vec::new();
        };
        let mut out: Vec<Location> = Vec::new();
        for (index, refs) in self.index.iter().enumerate() {
            let path = self.path(FileId(index as u32));
            for r in refs {
                if r.sym == sym && (include_declaration || !r.def) {
                    out.push(Location {
                        path: path.to_string(),
                        span: r.span,
                    });
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The edits that rename the symbol under the cursor to `new_name`: locals and every
    /// declaration written in a file (types, fields, variants, tools, workflows).
    pub fn rename(&self, path: &str, offset: usize, new_name: &str) -> Result<Vec<Edit>, String> {
        let sym = self
            .symbol_at(path, offset)
            .ok_or_else(|| "there is nothing to rename here".to_string())?;
        if !is_identifier(new_name) || is_keyword(new_name) {
            return Err(format!("`{new_name}` is not a valid name"));
        }
        match sym {
            Sym::Builtin(_) | Sym::GateOption { .. } | Sym::ErrorKind(_) | Sym::Import(_) => {
                return Err("only names declared in a .flow file can be renamed".to_string());
            }
            // Senders and tests name a signal by its name too (`flowrt signal RUN NAME`).
            Sym::Signal(..) => {
                return Err("a signal's name is part of the workflow's interface (senders, `flowc test` steps and runs waiting for it use it): rename it by hand".to_string());
            }
            _ if self.declaration(sym).is_none() => {
                return Err("builtin declarations cannot be renamed".to_string());
            }
            _ => {}
        }
        let edits = self
            .references(path, offset, true)
            .into_iter()
            .map(|l| Edit {
                path: l.path,
                span: l.span,
                text: new_name.to_string(),
            })
            .collect();
        Ok(edits)
    }

    // ----- hover ----------------------------------------------------------------------

    /// What the cursor is on: a declaration with its docs, or the type of an expression.
    pub fn hover_at(&self, path: &str, offset: usize) -> Option<Hover> {
        let (file, offset) = self.locate(path, offset)?;
        if let Some(r) = self.ref_at(file, offset) {
            return Some(Hover {
                range: r.span,
                markdown: self.describe(r.sym, file, r.span),
            });
        }
        // The innermost expression with a recorded type.
        let offset = offset as u32;
        let (span, ty) = self
            .ide
            .types
            .iter()
            .filter(|((f, span), _)| *f == file && span.start <= offset && offset < span.end)
            .min_by_key(|((_, span), _)| (span.len(), span.start))
            .map(|((_, span), ty)| (*span, ty))
            // An unknown name (already an error): there is nothing true to say about it.
            .filter(|(_, ty)| !ty.is_unknown())?;
        let mut markdown = code(&self.show(ty));
        if let Type::Named(id) = ty
            && let Some(doc) = &self.program.checked.types.get(*id).doc
        {
            markdown.push_str("\n\n");
            markdown.push_str(doc);
        }
        Some(Hover {
            range: span,
            markdown,
        })
    }

    fn show(&self, ty: &Type) -> String {
        ty.display(&self.program.checked.types).to_string()
    }

    fn params(&self, params: &[ParamDef]) -> String {
        params
            .iter()
            .map(|p| format!("{}: {}", p.name, self.show(&p.ty)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A tool's signature as declared: `tool name(p: T) -> R via … [sensitive]`.
    pub fn tool_signature(&self, index: usize) -> String {
        let Some(tool) = self.program.checked.tools.get(index) else {
            return String::new();
        };
        let mut out = format!(
            "tool {}({}) -> {}",
            tool.name,
            self.params(&tool.params),
            self.show(&tool.ret)
        );
        if let Some(binding) = self.tool_binding(index) {
            out.push_str(" via ");
            out.push_str(&binding);
        }
        if tool.sensitive {
            out.push_str(" sensitive");
        }
        out
    }

    fn tool_binding(&self, index: usize) -> Option<String> {
        let tool = self.program.checked.tools.get(index)?;
        let tree = self.program.trees.get(tool.file.0 as usize)?;
        let decl = tree.module.items.iter().find_map(|item| match item {
            ast::Item::Tool(decl) if decl.name.span == tool.span => Some(decl),
            _ => None,
        })?;
        Some(match &decl.binding {
            ast::ToolBinding::Http { method, path } => {
                format!("http {} {:?}", method.name, &*path.value)
            }
            ast::ToolBinding::Exec { command } => format!("exec {:?}", &*command.value),
            ast::ToolBinding::Llm { model, .. } => format!("llm {:?}", &*model.value),
            ast::ToolBinding::Error => return None,
        })
    }

    pub fn workflow_signature(&self, index: usize) -> String {
        let Some(workflow) = self.program.checked.workflows.get(index) else {
            return String::new();
        };
        let mut out = format!(
            "workflow {}({})",
            workflow.name,
            self.params(&workflow.params)
        );
        if workflow.ret != Type::Unit {
            let _ = write!(out, " -> {}", self.show(&workflow.ret));
        }
        out
    }

    pub fn function_signature(&self, index: usize) -> String {
        let Some(function) = self.program.checked.functions.get(index) else {
            return String::new();
        };
        let mut out = format!("fn {}({})", function.name, self.params(&function.params));
        if function.ret != Type::Unit {
            let _ = write!(out, " -> {}", self.show(&function.ret));
        }
        out
    }

    fn variant_signature(&self, id: TypeId, index: usize) -> String {
        let def = self.program.checked.types.get(id);
        let Some(variant) = def.variants().and_then(|v| v.get(index)) else {
            return String::new();
        };
        if variant.fields.is_empty() {
            return format!("{}.{}", def.name, variant.name);
        }
        let fields: Vec<String> = variant
            .fields
            .iter()
            .map(|f| format!("{}: {}", f.name, self.show(&f.ty)))
            .collect();
        format!("{}.{}({})", def.name, variant.name, fields.join(", "))
    }

    fn type_declaration(&self, id: TypeId) -> String {
        let def = self.program.checked.types.get(id);
        let mut out = String::new();
        match &def.kind {
            TypeDefKind::Record(fields) => {
                let _ = writeln!(out, "type {} = {{", def.name);
                for field in fields {
                    let _ = writeln!(out, "  {}: {},", field.name, self.show(&field.ty));
                }
                out.push('}');
            }
            TypeDefKind::Refined(ty) => {
                let _ = write!(
                    out,
                    "type {} = {}",
                    def.name,
                    ty.unnamed().display(&self.program.checked.types)
                );
            }
            TypeDefKind::Enum(variants) => {
                let _ = writeln!(out, "enum {} {{", def.name);
                for (index, _) in variants.iter().enumerate() {
                    let signature = self.variant_signature(id, index);
                    let short = signature
                        .split_once('.')
                        .map(|(_, v)| v)
                        .unwrap_or(&signature);
                    let _ = writeln!(out, "  {short},");
                }
                out.push('}');
            }
        }
        out
    }

    fn describe(&self, sym: Sym, file: FileId, span: Span) -> String {
        let types = &self.program.checked.types;
        let with_doc = |signature: String, doc: Option<&str>| {
            let mut out = code(&signature);
            if let Some(doc) = doc.filter(|d| !d.trim().is_empty()) {
                out.push_str("\n\n");
                out.push_str(doc.trim());
            }
            out
        };
        match sym {
            Sym::Type(id) => {
                let def = types.get(id);
                with_doc(self.type_declaration(id), def.doc.as_deref())
            }
            Sym::Field(id, index) => {
                let def = types.get(id);
                let Some(field) = def.fields().and_then(|f| f.get(index)) else {
                    return String::new();
                };
                with_doc(
                    format!("{}.{}: {}", def.name, field.name, self.show(&field.ty)),
                    field.doc.as_deref(),
                )
            }
            Sym::Variant(id, index) => {
                let doc = types
                    .get(id)
                    .variants()
                    .and_then(|v| v.get(index))
                    .and_then(|v| v.doc.as_deref());
                with_doc(self.variant_signature(id, index), doc)
            }
            Sym::Tool(index) => {
                let tool = &self.program.checked.tools[index];
                let mut doc = tool.doc.as_deref().unwrap_or_default().to_string();
                if tool.sensitive {
                    if !doc.is_empty() {
                        doc.push_str("\n\n");
                    }
                    doc.push_str("*Sensitive*: callable only on paths where an `await approval` returned an approved decision.");
                }
                with_doc(self.tool_signature(index), Some(&doc))
            }
            Sym::Workflow(index) => {
                let workflow = &self.program.checked.workflows[index];
                with_doc(self.workflow_signature(index), workflow.doc.as_deref())
            }
            Sym::Function(index) => {
                let function = &self.program.checked.functions[index];
                with_doc(self.function_signature(index), function.doc.as_deref())
            }
            Sym::Local(index) => {
                let Some(local) = self.ide.locals.get(index) else {
                    return String::new();
                };
                // The type at this use (the same as declared: locals do not change type).
                let ty = self.ide.types.get(&(file, span)).unwrap_or(&local.ty);
                let shown = self.show(ty);
                let signature = match local.kind {
                    LocalKind::Param => format!("{}: {shown}", local.name),
                    LocalKind::Let if local.mutable => format!("var {}: {shown}", local.name),
                    LocalKind::Let => format!("let {}: {shown}", local.name),
                    LocalKind::Loop | LocalKind::BranchItem => {
                        format!("for {}: {shown}", local.name)
                    }
                    LocalKind::Pattern | LocalKind::CaughtError => {
                        format!("{}: {shown}", local.name)
                    }
                };
                let what = match local.kind {
                    LocalKind::Param => Some("parameter"),
                    LocalKind::Loop => Some("loop variable"),
                    LocalKind::BranchItem => Some("the item of this branch of a `parallel for`"),
                    LocalKind::Pattern => Some("bound by a pattern"),
                    LocalKind::CaughtError => Some("the error caught by `catch`"),
                    LocalKind::Let => None,
                };
                let doc = match ty {
                    Type::Named(id) => types.get(*id).doc.as_deref().map(str::to_string),
                    _ => None,
                };
                let text = [what.map(|w| format!("*{w}*")), doc]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("\n\n");
                with_doc(signature, Some(&text))
            }
            Sym::Builtin(builtin) => {
                let mut doc = builtin.doc().to_string();
                if builtin.effect() == stdlib::Effect::Durable {
                    doc.push_str(
                        "\n\n*Durable*: recorded in the run's history and replayed on resume.",
                    );
                }
                with_doc(builtin_signature(builtin), Some(&doc))
            }
            Sym::Import(target) => {
                let names: Vec<String> = self
                    .program
                    .trees
                    .get(target.0 as usize)
                    .map(|tree| {
                        tree.module
                            .items
                            .iter()
                            .filter_map(item_name)
                            .map(|n| format!("`{n}`"))
                            .collect()
                    })
                    .unwrap_or_default();
                let mut out = code(&format!("import {:?}", self.path(target)));
                if !names.is_empty() {
                    let _ = write!(out, "\n\nDeclares {}.", names.join(", "));
                }
                out
            }
            Sym::GateOption { name, input } => {
                let options = if input {
                    stdlib::INPUT_OPTIONS
                } else {
                    stdlib::APPROVAL_OPTIONS
                };
                let Some(option) = options.iter().find(|o| o.name == name) else {
                    return String::new();
                };
                with_doc(
                    gate_option_signature(option),
                    Some(&gate_option_doc(option, input)),
                )
            }
            Sym::ErrorKind(kind) => {
                let doc = stdlib::ERROR_KINDS
                    .iter()
                    .find(|(k, _)| *k == kind)
                    .map(|(_, d)| *d);
                with_doc(format!("error kind {kind}"), doc)
            }
            Sym::Signal(workflow, index) => {
                let workflow = &self.program.checked.workflows[workflow];
                let Some(signal) = workflow.signals.get(index) else {
                    return String::new();
                };
                let doc = format!(
                    "A signal `{}` accepts: `await signal {}` takes the oldest one its run received (and waits for one when none came). Sent with `flowrt signal RUN {} --value JSON` or `POST /api/runs/{{id}}/signals/{}`.",
                    workflow.name, signal.name, signal.name, signal.name
                );
                with_doc(self.signal_signature(signal), Some(&doc))
            }
        }
    }

    /// `signal cancel: String from role("support") or system("billing")`.
    fn signal_signature(&self, signal: &crate::check::SignalDef) -> String {
        let senders: Vec<String> = signal.senders.iter().map(|s| s.to_string()).collect();
        format!(
            "signal {}: {} from {}",
            signal.name,
            self.show(&signal.ty),
            senders.join(" or ")
        )
    }

    // ----- outline --------------------------------------------------------------------

    /// The declarations of a file: workflows, tools, records (with their fields) and enums
    /// (with their variants), in source order.
    pub fn symbols(&self, path: &str) -> Vec<DocumentSymbol> {
        let Some(file) = self.file(path) else {
            return Vec::new();
        };
        let Some(tree) = self.program.trees.get(file.0 as usize) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in &tree.module.items {
            match item {
                ast::Item::Import(_) => {}
                ast::Item::Error(decl) => out.push(DocumentSymbol {
                    name: decl.name.name.to_string(),
                    kind: SymbolKind::Record,
                    detail: Some("error".to_string()),
                    span: decl.span,
                    selection: decl.name.span,
                    children: decl
                        .fields
                        .iter()
                        .map(|f| self.field_symbol(file, f, SymbolKind::Field))
                        .collect(),
                }),
                ast::Item::Type(decl) => out.push(DocumentSymbol {
                    name: decl.name.name.to_string(),
                    kind: SymbolKind::Record,
                    detail: None,
                    span: decl.span,
                    selection: decl.name.span,
                    children: decl
                        .fields
                        .iter()
                        .map(|f| self.field_symbol(file, f, SymbolKind::Field))
                        .collect(),
                }),
                ast::Item::Enum(decl) => out.push(DocumentSymbol {
                    name: decl.name.name.to_string(),
                    kind: SymbolKind::Enum,
                    detail: None,
                    span: decl.span,
                    selection: decl.name.span,
                    children: decl
                        .variants
                        .iter()
                        .map(|v| DocumentSymbol {
                            name: v.name.name.to_string(),
                            kind: SymbolKind::Variant,
                            detail: None,
                            span: v.span,
                            selection: v.name.span,
                            children: Vec::new(),
                        })
                        .collect(),
                }),
                ast::Item::Tool(decl) => {
                    let index = self
                        .program
                        .checked
                        .tools
                        .iter()
                        .position(|t| t.file == file && t.span == decl.name.span);
                    out.push(DocumentSymbol {
                        name: decl.name.name.to_string(),
                        kind: SymbolKind::Tool,
                        detail: index.map(|i| self.tool_signature(i)),
                        span: decl.span,
                        selection: decl.name.span,
                        children: Vec::new(),
                    });
                }
                ast::Item::Workflow(decl) => {
                    let index = self
                        .program
                        .checked
                        .workflows
                        .iter()
                        .position(|w| w.file == file && w.span == decl.name.span);
                    let signals = index
                        .map(|i| &self.program.checked.workflows[i].signals[..])
                        .unwrap_or_default();
                    let mut children: Vec<DocumentSymbol> = decl
                        .accepts
                        .iter()
                        .filter_map(|written| {
                            let signal = signals.iter().find(|s| s.span == written.name.span)?;
                            Some(DocumentSymbol {
                                name: signal.name.to_string(),
                                kind: SymbolKind::Signal,
                                detail: Some(self.signal_signature(signal)),
                                span: written.span,
                                selection: written.name.span,
                                children: Vec::new(),
                            })
                        })
                        .collect();
                    for stmt in &decl.body.stmts {
                        if let ast::StmtKind::Query { name, ret, .. } = &stmt.kind {
                            children.push(DocumentSymbol {
                                name: name.name.to_string(),
                                kind: SymbolKind::Query,
                                detail: Some(format!(
                                    "query {} -> {}",
                                    name.name,
                                    &self.program.db.text(file)[ret.span.range()]
                                )),
                                span: stmt.span,
                                selection: name.span,
                                children: Vec::new(),
                            });
                        }
                    }
                    out.push(DocumentSymbol {
                        name: decl.name.name.to_string(),
                        kind: SymbolKind::Workflow,
                        detail: index.map(|i| self.workflow_signature(i)),
                        span: decl.span,
                        selection: decl.name.span,
                        children,
                    });
                }
                ast::Item::Function(decl) => {
                    let index = self
                        .program
                        .checked
                        .functions
                        .iter()
                        .position(|f| f.file == file && f.span == decl.name.span);
                    out.push(DocumentSymbol {
                        name: decl.name.name.to_string(),
                        kind: SymbolKind::Function,
                        detail: index.map(|i| self.function_signature(i)),
                        span: decl.span,
                        selection: decl.name.span,
                        children: Vec::new(),
                    });
                }
                ast::Item::Test(decl) => out.push(DocumentSymbol {
                    name: decl.name.value.to_string(),
                    kind: SymbolKind::Test,
                    detail: Some("test".into()),
                    span: decl.span,
                    selection: decl.name.span,
                    children: Vec::new(),
                }),
            }
        }
        out
    }

    fn field_symbol(&self, file: FileId, field: &ast::Field, kind: SymbolKind) -> DocumentSymbol {
        let text = self.program.db.text(file);
        DocumentSymbol {
            name: field.name.name.to_string(),
            kind,
            detail: text.get(field.ty.span.range()).map(str::to_string),
            span: field.span,
            selection: field.name.span,
            children: Vec::new(),
        }
    }

    /// Declarations in every loaded file whose name contains `query` (case-insensitive),
    /// flattened: workflows, tools, types, fields and variants.
    pub fn workspace_symbols(&self, query: &str) -> Vec<(String, DocumentSymbol)> {
        let query = query.to_lowercase();
        let mut out = Vec::new();
        for path in self.paths() {
            let mut stack = self.symbols(path);
            while let Some(mut symbol) = stack.pop() {
                stack.append(&mut symbol.children);
                if symbol.name.to_lowercase().contains(&query) {
                    out.push((path.to_string(), symbol));
                }
            }
        }
        out.sort_by(|a, b| (&a.0, a.1.span.start).cmp(&(&b.0, b.1.span.start)));
        out
    }

    // ----- code actions ---------------------------------------------------------------

    /// For an unapproved call of a `sensitive` tool (E0400) at `call`, the edit that inserts
    /// an approval gate before the statement holding the call, ending the rejected path.
    pub fn approval_gate_fix(&self, path: &str, call: Span) -> Option<Edit> {
        let file = self.file(path)?;
        let Some(Resolved::Tool(tool)) = self
            .program
            .checked
            .resolutions
            .items
            .get(&(file, call))
            .copied()
        else {
            return None;
        };
        let tool = &self.program.checked.tools[tool];
        let tree = self.program.trees.get(file.0 as usize)?;
        let body = tree.module.items.iter().find_map(|item| match item {
            ast::Item::Workflow(w) if contains(w.body.span, call) => Some(&w.body),
            _ => None,
        })?;
        let stmt = statement_for_gate(body, call)?;
        let text = self.program.db.text(file);
        let line_start = text[..stmt.start as usize].rfind('\n').map_or(0, |i| i + 1);
        let indent: String = text[line_start..stmt.start as usize]
            .chars()
            .take_while(|c| c.is_whitespace())
            .collect();
        let name = ["decision", "signoff"]
            .into_iter()
            .map(str::to_string)
            .chain((2..).map(|n| format!("decision{n}")))
            .find(|n| !self.local_visible(file, n, stmt.start))?;
        let gate = format!("{}_approval", tool.name);
        let inserted = format!(
            "let {name} = await approval \"{gate}\" {{ approvers: role(\"…\") }}\n{indent}if !{name}.approved {{ fail \"`{}` was not approved\" }}\n{indent}",
            tool.name
        );
        Some(Edit {
            path: path.to_string(),
            span: Span::new(stmt.start as usize, stmt.start as usize),
            text: inserted,
        })
    }

    fn local_visible(&self, file: FileId, name: &str, offset: u32) -> bool {
        self.ide
            .locals
            .iter()
            .any(|l| l.file == file && l.name == name && contains_offset(l.visible, offset))
    }

    // ----- completion -----------------------------------------------------------------

    /// What may be typed at `offset`: fields after `.`, variants in a `match` arm, option
    /// keys inside `await approval { … }`, types after `:` or `->`, else keywords, the
    /// names in scope and the builtin functions.
    pub fn completions_at(&self, path: &str, offset: usize) -> Vec<Completion> {
        let Some((file, offset)) = self.locate(path, offset) else {
            return Vec::new();
        };
        let text = self.program.db.text(file);
        let lexed = lexer::lex(file, text);
        let offset32 = offset as u32;
        let in_comment = lexed
            .comments
            .iter()
            .chain(&lexed.doc_comments)
            .any(|c| c.start < offset32 && offset32 <= c.end);
        if in_comment {
            return Vec::new();
        }
        let tokens = &lexed.tokens;
        // The tokens wholly before the word being typed.
        let mut word_start = offset;
        while let Some(c) = text[..word_start].chars().next_back() {
            if c.is_alphanumeric() || c == '_' {
                word_start -= c.len_utf8();
            } else {
                break;
            }
        }
        let before =
            tokens.partition_point(|t| t.span.end as usize <= word_start && t.kind != T::Eof);
        let tokens_before = &tokens[..before];
        // Inside a string literal (but not in an interpolation): nothing to complete.
        if in_string(tokens_before) {
            return Vec::new();
        }
        let previous = tokens_before.last();
        let line_break_before =
            previous.is_none_or(|p| text[p.span.end as usize..word_start].contains('\n'));

        if let Some(dot) = previous.filter(|t| matches!(t.kind, T::Dot | T::QuestionDot)) {
            return self.member_completions(file, tokens_before, dot.span.start);
        }
        if let Some(brace) = enclosing_brace(tokens_before) {
            let item_start = matches!(previous.map(|p| p.kind), Some(T::LBrace | T::Comma))
                || (line_break_before
                    && !matches!(previous.map(|p| p.kind), Some(k) if continues_expression(k)));
            if item_start {
                if let Some(input) = gate_before(&tokens_before[..brace]) {
                    return self.option_completions(text, &tokens_before[brace..], input);
                }
                if let Some(subject) = self.match_subject(file, &tokens_before[..brace]) {
                    return self.pattern_completions(file, &subject);
                }
            }
        }
        if let [.., await_token, word] = tokens_before
            && await_token.kind == T::Await
            && word.kind == T::Ident
            && &text[word.span.range()] == "signal"
        {
            return self.signal_completions(file, offset32);
        }
        if self.is_type_position(file, tokens_before, offset32) {
            return self.type_completions(file);
        }
        let in_test = self.program.trees.get(file.0 as usize).is_some_and(|tree| {
            tree.module.items.iter().any(|item| match item {
                ast::Item::Test(t) => t.span.start < offset32 && offset32 < t.span.end,
                _ => false,
            })
        });
        if in_test {
            let starts_step = line_break_before || previous.is_some_and(|p| p.kind == T::LBrace);
            let word = previous
                .filter(|p| !line_break_before && matches!(p.kind, T::Ident | T::Audit))
                .map(|p| &text[p.span.range()]);
            if let Some(completions) = self.test_completions(file, starts_step, word) {
                return completions;
            }
        }
        let in_body = self.program.trees.get(file.0 as usize).is_some_and(|tree| {
            tree.module.items.iter().any(|item| match item {
                ast::Item::Workflow(w) => {
                    w.body.span.start < offset32 && offset32 < w.body.span.end
                }
                ast::Item::Function(f) => {
                    f.body.span.start < offset32 && offset32 < f.body.span.end
                }
                _ => false,
            })
        });
        if !in_body {
            if previous.is_some_and(|p| p.kind == T::Via) {
                return ["http", "exec", "llm"]
                    .into_iter()
                    .map(|k| keyword(k, "tool binding"))
                    .collect();
            }
            return ITEM_KEYWORDS
                .iter()
                .map(|k| keyword(k, "declaration"))
                .collect();
        }
        self.scope_completions(file, offset32)
    }

    /// After `await signal`: the signals the enclosing workflow accepts.
    fn signal_completions(&self, file: FileId, offset: u32) -> Vec<Completion> {
        let Some(tree) = self.program.trees.get(file.0 as usize) else {
            return Vec::new();
        };
        let enclosing = tree.module.items.iter().find_map(|item| match item {
            ast::Item::Workflow(w) if w.body.span.start < offset && offset <= w.body.span.end => {
                Some(w)
            }
            _ => None,
        });
        let Some(decl) = enclosing else {
            return Vec::new();
        };
        let checked = &self.program.checked;
        let Some(workflow) = checked
            .workflows
            .iter()
            .find(|w| w.file == file && w.span == decl.name.span)
        else {
            return Vec::new();
        };
        workflow
            .signals
            .iter()
            .map(|signal| Completion {
                label: signal.name.to_string(),
                kind: CompletionKind::Variable,
                detail: Some(self.signal_signature(signal)),
                documentation: None,
            })
            .collect()
    }

    /// Inside a `test` block: the step words at the start of a step, the words an `expect`
    /// takes, and the tools or workflows a step names. `None`: complete a value as usual.
    fn test_completions(
        &self,
        file: FileId,
        starts_step: bool,
        previous_word: Option<&str>,
    ) -> Option<Vec<Completion>> {
        if starts_step {
            return Some(TEST_STEPS.iter().map(|k| keyword(k, "test step")).collect());
        }
        let of_kind = |kind: CompletionKind| {
            self.scope_completions(file, 0)
                .into_iter()
                .filter(|c| c.kind == kind)
                .collect()
        };
        match previous_word? {
            "mock" | "called" => Some(of_kind(CompletionKind::Tool)),
            "start" => Some(of_kind(CompletionKind::Workflow)),
            "expect" => Some(
                TEST_EXPECTATIONS
                    .iter()
                    .map(|k| keyword(k, "expectation"))
                    .collect(),
            ),
            "status" => Some(
                crate::testing::STATUSES
                    .iter()
                    .map(|k| keyword(k, "run status"))
                    .collect(),
            ),
            "fails" => Some(
                crate::testing::MOCK_FAILURES
                    .iter()
                    .map(|k| keyword(k, "error kind"))
                    .collect(),
            ),
            "error" => Some(
                stdlib::ERROR_KINDS
                    .iter()
                    .map(|(k, doc)| Completion {
                        documentation: Some(doc.to_string()),
                        ..keyword(k, "error kind")
                    })
                    .collect(),
            ),
            _ => None,
        }
    }

    fn member_completions(&self, file: FileId, tokens: &[Token], dot: u32) -> Vec<Completion> {
        // The expression before the dot: the widest one with a recorded type ending there.
        let base = self
            .ide
            .types
            .iter()
            .filter(|((f, span), _)| *f == file && span.end == dot)
            .max_by_key(|((_, span), _)| span.len())
            .map(|(_, ty)| ty.clone());
        let base = match base {
            Some(ty) if !ty.is_unknown() => ty,
            _ => {
                // `Verdict.` names an enum: its variants.
                let name_before = tokens
                    .len()
                    .checked_sub(2)
                    .map(|i| tokens[i])
                    .filter(|t| t.kind == T::Ident);
                let text = self.program.db.text(file);
                let scope = self.program.checked.scopes.get(file.0 as usize);
                let enum_id = name_before.and_then(|t| {
                    let name = &text[t.span.range()];
                    scope?.types.get(name).map(|(id, _)| *id)
                });
                return match enum_id {
                    Some(id) => self.variant_completions(id),
                    None => Vec::new(),
                };
            }
        };
        self.fields_of(&base)
    }

    fn fields_of(&self, ty: &Type) -> Vec<Completion> {
        let types = &self.program.checked.types;
        match ty {
            Type::Optional(inner) => self.fields_of(inner),
            Type::Named(id) => match &types.get(*id).kind {
                TypeDefKind::Record(fields) => fields
                    .iter()
                    .map(|f| Completion {
                        label: f.name.to_string(),
                        kind: CompletionKind::Field,
                        detail: Some(self.show(&f.ty)),
                        documentation: f.doc.as_deref().map(str::to_string),
                    })
                    .collect(),
                TypeDefKind::Enum(_) | TypeDefKind::Refined(_) => Vec::new(),
            },
            Type::Record(fields) => fields
                .iter()
                .map(|(name, ty)| Completion {
                    label: name.to_string(),
                    kind: CompletionKind::Field,
                    detail: Some(self.show(ty)),
                    documentation: None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    fn variant_completions(&self, id: TypeId) -> Vec<Completion> {
        let def = self.program.checked.types.get(id);
        def.variants()
            .unwrap_or(&[])
            .iter()
            .enumerate()
            .map(|(index, v)| Completion {
                label: v.name.to_string(),
                kind: CompletionKind::Variant,
                detail: Some(self.variant_signature(id, index)),
                documentation: v.doc.as_deref().map(str::to_string),
            })
            .collect()
    }

    fn option_completions(&self, text: &str, inside: &[Token], input: bool) -> Vec<Completion> {
        // Options already given: a name followed by `:` directly inside the braces.
        let mut given: Vec<&str> = Vec::new();
        let mut depth = 0usize;
        for pair in inside.windows(2) {
            match pair[0].kind {
                T::LParen | T::LBracket | T::LBrace | T::InterpStart => depth += 1,
                T::RParen | T::RBracket | T::RBrace | T::InterpEnd => {
                    depth = depth.saturating_sub(1)
                }
                _ => {}
            }
            if depth == 1 && pair[1].kind == T::Colon {
                given.push(&text[pair[0].span.range()]);
            }
        }
        let options = if input {
            stdlib::INPUT_OPTIONS
        } else {
            stdlib::APPROVAL_OPTIONS
        };
        options
            .iter()
            .filter(|o| !given.contains(&o.name))
            .map(|o| Completion {
                label: o.name.to_string(),
                kind: CompletionKind::Option,
                detail: Some(gate_option_type(o)),
                documentation: Some(gate_option_doc(o, input)),
            })
            .collect()
    }

    /// The type of the value matched by the `match` whose `{` follows `tokens`.
    fn match_subject(&self, file: FileId, tokens: &[Token]) -> Option<Type> {
        let mut depth = 0usize;
        for (index, token) in tokens.iter().enumerate().rev() {
            match token.kind {
                T::RParen | T::RBracket | T::InterpEnd => depth += 1,
                T::LParen | T::LBracket | T::InterpStart => depth = depth.checked_sub(1)?,
                T::Match if depth == 0 => {
                    let first = tokens.get(index + 1)?;
                    let last = tokens.last()?;
                    let span = Span {
                        start: first.span.start,
                        end: last.span.end,
                    };
                    return self.ide.types.get(&(file, span)).cloned().or_else(|| {
                        // Any recorded expression ending at the scrutinee's end.
                        self.ide
                            .types
                            .iter()
                            .filter(|((f, s), _)| {
                                *f == file && s.end == span.end && s.start >= span.start
                            })
                            .max_by_key(|((_, s), _)| s.len())
                            .map(|(_, t)| t.clone())
                    });
                }
                T::LBrace | T::RBrace | T::Semicolon | T::Assign | T::FatArrow | T::Comma
                    if depth == 0 =>
                {
                    return None;
                }
                _ => {}
            }
        }
        None
    }

    fn pattern_completions(&self, _file: FileId, subject: &Type) -> Vec<Completion> {
        let mut out = match subject {
            Type::Named(id) => self.variant_completions(*id),
            Type::Bool => ["true", "false"]
                .into_iter()
                .map(|k| keyword(k, "Bool"))
                .collect(),
            Type::Optional(_) => vec![keyword("none", "no value")],
            _ => Vec::new(),
        };
        out.push(Completion {
            label: "_".to_string(),
            kind: CompletionKind::Keyword,
            detail: Some("matches anything".to_string()),
            documentation: None,
        });
        out
    }

    fn is_type_position(&self, file: FileId, tokens: &[Token], offset: u32) -> bool {
        let n = tokens.len();
        let kind = |back: usize| n.checked_sub(back).map(|i| tokens[i].kind);
        match kind(1) {
            Some(T::Arrow) => true,
            Some(T::Lt) => {
                let text = self.program.db.text(file);
                match n.checked_sub(2).map(|i| tokens[i]) {
                    Some(t) if t.kind == T::Input => true,
                    Some(t) if t.kind == T::Ident => {
                        matches!(&text[t.span.range()], "List" | "Map")
                    }
                    _ => false,
                }
            }
            Some(T::Colon) => {
                // `let x: T` inside a body; everywhere outside bodies (fields, parameters).
                if matches!(kind(3), Some(T::Let | T::Var)) {
                    return true;
                }
                let in_body = self.program.trees.get(file.0 as usize).is_some_and(|tree| {
                    tree.module.items.iter().any(|item| match item {
                        ast::Item::Workflow(w) => contains_offset(w.body.span, offset),
                        ast::Item::Function(f) => contains_offset(f.body.span, offset),
                        _ => false,
                    })
                });
                !in_body
            }
            _ => false,
        }
    }

    fn type_completions(&self, file: FileId) -> Vec<Completion> {
        let mut out: Vec<Completion> = crate::check::BUILTIN_TYPE_NAMES
            .iter()
            .map(|name| Completion {
                label: name.to_string(),
                kind: CompletionKind::Type,
                detail: Some("builtin type".to_string()),
                documentation: None,
            })
            .collect();
        let types = &self.program.checked.types;
        let mut named: Vec<(String, TypeId)> = stdlib::BUILTIN_RECORDS
            .iter()
            .filter_map(|r| {
                types
                    .iter()
                    .find(|(_, d)| d.file.is_none() && d.name == r.name)
                    .map(|(id, _)| (r.name.to_string(), id))
            })
            .collect();
        if let Some(scope) = self.program.checked.scopes.get(file.0 as usize) {
            named.extend(
                scope
                    .types
                    .iter()
                    .map(|(name, (id, _))| (name.to_string(), *id)),
            );
        }
        named.sort();
        for (name, id) in named {
            let def = types.get(id);
            out.push(Completion {
                label: name,
                kind: CompletionKind::Type,
                detail: Some(match def.kind {
                    TypeDefKind::Record(_) => "record".to_string(),
                    TypeDefKind::Enum(_) => "enum".to_string(),
                    TypeDefKind::Refined(ref ty) => ty.unnamed().display(types).to_string(),
                }),
                documentation: def.doc.as_deref().map(str::to_string),
            });
        }
        out
    }

    fn scope_completions(&self, file: FileId, offset: u32) -> Vec<Completion> {
        let mut out: Vec<Completion> = Vec::new();
        // Locals visible here, innermost first (a shadowed name is offered once).
        let mut locals: Vec<&crate::check::LocalFact> = self
            .ide
            .locals
            .iter()
            .filter(|l| l.file == file && contains_offset(l.visible, offset))
            .collect();
        locals.sort_by_key(|l| std::cmp::Reverse(l.visible.start));
        for local in locals {
            if out.iter().any(|c| c.label == local.name) {
                continue;
            }
            out.push(Completion {
                label: local.name.to_string(),
                kind: CompletionKind::Variable,
                detail: Some(self.show(&local.ty)),
                documentation: None,
            });
        }
        let types = &self.program.checked.types;
        if let Some(scope) = self.program.checked.scopes.get(file.0 as usize) {
            let mut values: Vec<(&Name, &Vec<(Value, FileId)>)> = scope.values.iter().collect();
            values.sort_by(|a, b| a.0.cmp(b.0));
            for (name, found) in values {
                for (value, _) in found {
                    let (kind, detail, doc) = match *value {
                        Value::Tool(i) => {
                            let tool = &self.program.checked.tools[i];
                            (
                                CompletionKind::Tool,
                                self.tool_signature(i),
                                tool.doc.clone(),
                            )
                        }
                        Value::Workflow(i) => {
                            let workflow = &self.program.checked.workflows[i];
                            (
                                CompletionKind::Workflow,
                                self.workflow_signature(i),
                                workflow.doc.clone(),
                            )
                        }
                        Value::Function(i) => {
                            let function = &self.program.checked.functions[i];
                            (
                                CompletionKind::Function,
                                self.function_signature(i),
                                function.doc.clone(),
                            )
                        }
                        Value::Variant(id, i) => {
                            let doc = types
                                .get(id)
                                .variants()
                                .and_then(|v| v.get(i))
                                .and_then(|v| v.doc.clone());
                            (CompletionKind::Variant, self.variant_signature(id, i), doc)
                        }
                    };
                    if out.iter().any(|c| {
                        c.label == *name && c.kind == kind && c.detail.as_deref() == Some(&detail)
                    }) {
                        continue;
                    }
                    out.push(Completion {
                        label: name.to_string(),
                        kind,
                        detail: Some(detail),
                        documentation: doc.map(|d| d.to_string()),
                    });
                }
            }
        }
        for builtin in stdlib::Builtin::ALL {
            out.push(Completion {
                label: builtin.name().to_string(),
                kind: CompletionKind::Function,
                detail: Some(builtin_signature(*builtin)),
                documentation: Some(builtin.doc().to_string()),
            });
        }
        out.extend(
            self.type_completions(file)
                .into_iter()
                .filter(|c| c.detail.as_deref() == Some("enum")),
        );
        out.extend(BODY_KEYWORDS.iter().map(|k| keyword(k, "keyword")));
        out
    }
}

// ----- the symbol index ------------------------------------------------------------------

fn build_index(program: &Program, ide: &IdeFacts) -> Vec<Vec<Ref>> {
    let mut type_defs: HashMap<(FileId, Span), TypeId> = HashMap::default();
    for (id, def) in program.checked.types.iter() {
        if let Some(file) = def.file {
            type_defs.insert((file, def.span), id);
        }
    }
    let mut local_defs: HashMap<(FileId, Span), usize> = HashMap::default();
    for (index, local) in ide.locals.iter().enumerate() {
        local_defs.entry((local.file, local.span)).or_insert(index);
    }
    let mut out = Vec::with_capacity(program.trees.len());
    for (index, tree) in program.trees.iter().enumerate() {
        let mut indexer = Indexer {
            workflow: None,
            file: FileId(index as u32),
            program,
            ide,
            type_defs: &type_defs,
            local_defs: &local_defs,
            refs: Vec::new(),
        };
        let imports = program.imports.get(index).map(Vec::as_slice).unwrap_or(&[]);
        for item in &tree.module.items {
            indexer.item(item, imports);
        }
        let mut refs = indexer.refs;
        refs.sort_by_key(|r| (r.span.start, r.span.end));
        out.push(refs);
    }
    out
}

struct Indexer<'a> {
    file: FileId,
    /// The workflow whose body is being walked (its signals are what `await signal` names).
    workflow: Option<usize>,
    program: &'a Program,
    ide: &'a IdeFacts,
    type_defs: &'a HashMap<(FileId, Span), TypeId>,
    local_defs: &'a HashMap<(FileId, Span), usize>,
    refs: Vec<Ref>,
}

impl Indexer<'_> {
    fn add(&mut self, span: Span, sym: Sym) {
        self.refs.push(Ref {
            span,
            sym,
            def: false,
        });
    }

    fn add_def(&mut self, span: Span, sym: Sym) {
        self.refs.push(Ref {
            span,
            sym,
            def: true,
        });
    }

    fn resolved(&self, span: Span) -> Option<Resolved> {
        self.program
            .checked
            .resolutions
            .items
            .get(&(self.file, span))
            .copied()
    }

    fn local_def(&mut self, span: Span) {
        if let Some(index) = self.local_defs.get(&(self.file, span)) {
            self.add_def(span, Sym::Local(*index));
        }
    }

    /// A record's declaration (a `type`, an `error`): its name and its fields' names.
    fn record_decl(&mut self, name: &ast::Ident, fields: &[ast::Field]) {
        let checked = &self.program.checked;
        let id = self.type_defs.get(&(self.file, name.span)).copied();
        if let Some(id) = id {
            self.add_def(name.span, Sym::Type(id));
        }
        for field in fields {
            if let Some(id) = id {
                let index = checked
                    .types
                    .get(id)
                    .fields()
                    .and_then(|f| f.iter().position(|d| d.span == field.name.span));
                if let Some(index) = index {
                    self.add_def(field.name.span, Sym::Field(id, index));
                }
            }
            self.type_expr(&field.ty);
        }
    }

    fn item(&mut self, item: &ast::Item, imports: &[(Span, Option<FileId>)]) {
        let checked = &self.program.checked;
        match item {
            ast::Item::Import(import) => {
                if let Some((_, Some(target))) =
                    imports.iter().find(|(s, _)| *s == import.path.span)
                {
                    self.add(import.path.span, Sym::Import(*target));
                }
            }
            ast::Item::Error(decl) => self.record_decl(&decl.name, &decl.fields),
            ast::Item::Type(decl) => self.record_decl(&decl.name, &decl.fields),
            ast::Item::Enum(decl) => {
                let id = self.type_defs.get(&(self.file, decl.name.span)).copied();
                if let Some(id) = id {
                    self.add_def(decl.name.span, Sym::Type(id));
                }
                for variant in &decl.variants {
                    if let Some(id) = id {
                        let index = checked
                            .types
                            .get(id)
                            .variants()
                            .and_then(|v| v.iter().position(|d| d.span == variant.name.span));
                        if let Some(index) = index {
                            self.add_def(variant.name.span, Sym::Variant(id, index));
                        }
                    }
                    for field in &variant.fields {
                        self.type_expr(&field.ty);
                    }
                }
            }
            ast::Item::Tool(decl) => {
                if let Some(index) = checked
                    .tools
                    .iter()
                    .position(|t| t.file == self.file && t.span == decl.name.span)
                {
                    self.add_def(decl.name.span, Sym::Tool(index));
                }
                for param in &decl.params {
                    self.type_expr(&param.ty);
                }
                self.type_expr(&decl.ret);
            }
            ast::Item::Workflow(decl) => {
                if let Some(index) = checked
                    .workflows
                    .iter()
                    .position(|w| w.file == self.file && w.span == decl.name.span)
                {
                    self.add_def(decl.name.span, Sym::Workflow(index));
                    self.workflow = Some(index);
                    for signal in &decl.accepts {
                        if let Some(i) = checked.workflows[index]
                            .signals
                            .iter()
                            .position(|s| s.span == signal.name.span)
                        {
                            self.add_def(signal.name.span, Sym::Signal(index, i));
                        }
                    }
                }
                for param in &decl.params {
                    self.local_def(param.name.span);
                    self.type_expr(&param.ty);
                }
                if let Some(ret) = &decl.ret {
                    self.type_expr(ret);
                }
                for signal in &decl.accepts {
                    if let Some(ty) = &signal.ty {
                        self.type_expr(ty);
                    }
                }
                self.block(&decl.body);
                self.workflow = None;
            }
            ast::Item::Function(decl) => {
                if let Some(index) = checked
                    .functions
                    .iter()
                    .position(|f| f.file == self.file && f.span == decl.name.span)
                {
                    self.add_def(decl.name.span, Sym::Function(index));
                }
                for param in &decl.params {
                    self.local_def(param.name.span);
                    self.type_expr(&param.ty);
                }
                if let Some(ret) = &decl.ret {
                    self.type_expr(ret);
                }
                self.block(&decl.body);
            }
            ast::Item::Test(decl) => self.test(decl),
        }
    }

    /// A test's names: the tools and workflows its steps name, and what its values refer to
    /// (walked in the helper workflows they were checked as).
    fn test(&mut self, decl: &ast::TestDecl) {
        let program = self.program;
        let Some(tree) = program.trees.get(self.file.0 as usize) else {
            return;
        };
        let inside = |span: Span| decl.span.start <= span.start && span.end <= decl.span.end;
        for reference in tree.tests.references.iter().filter(|r| inside(r.name.span)) {
            let name = &reference.name;
            let scope = &program.checked.scopes[self.file.0 as usize];
            let sym = scope.lookup_values(&name.name).iter().find_map(|(v, _)| {
                match (v, reference.kind) {
                    (Value::Tool(i), crate::testing::RefKind::Tool) => Some(Sym::Tool(*i)),
                    (Value::Workflow(i), crate::testing::RefKind::Workflow) => {
                        Some(Sym::Workflow(*i))
                    }
                    _ => None,
                }
            });
            if let Some(sym) = sym {
                self.add(name.span, sym);
            }
        }
        for helper in tree.tests.helpers.iter().filter(|h| inside(h.decl.span)) {
            for param in &helper.decl.params {
                self.local_def(param.name.span);
            }
            self.block(&helper.decl.body);
        }
    }

    fn type_expr(&mut self, ty: &ast::TypeExpr) {
        match &ty.kind {
            TypeExprKind::Named { name, args } => {
                if let Some(id) = self.named_type(&name.name) {
                    self.add(name.span, Sym::Type(id));
                }
                for arg in args {
                    self.type_expr(arg);
                }
            }
            TypeExprKind::Optional(inner) => self.type_expr(inner),
            TypeExprKind::Refined(refined) => self.type_expr(&refined.base),
            TypeExprKind::Error => {}
        }
    }

    fn named_type(&self, name: &str) -> Option<TypeId> {
        let checked = &self.program.checked;
        if let Some((id, _)) = checked
            .scopes
            .get(self.file.0 as usize)
            .and_then(|s| s.types.get(name))
        {
            return Some(*id);
        }
        [checked.decision, checked.error]
            .into_iter()
            .flatten()
            .find(|id| checked.types.get(*id).name == name)
    }

    fn block(&mut self, block: &ast::Block) {
        for stmt in &block.stmts {
            self.stmt(stmt);
        }
    }

    fn stmt(&mut self, stmt: &ast::Stmt) {
        match &stmt.kind {
            StmtKind::LetUndo { name, value, undo } => {
                self.local_def(name.span);
                self.expr(value);
                self.block(undo);
            }
            StmtKind::Compensate => {}
            StmtKind::OnCancel(block) => self.block(block),
            StmtKind::Let {
                name, ty, value, ..
            } => {
                self.local_def(name.span);
                if let Some(ty) = ty {
                    self.type_expr(ty);
                }
                self.expr(value);
            }
            StmtKind::Assign { target, value } => {
                self.expr(target);
                self.expr(value);
            }
            StmtKind::Expr(expr) | StmtKind::Fail(expr) | StmtKind::Sleep(expr) => self.expr(expr),
            StmtKind::Return(value) => {
                if let Some(value) = value {
                    self.expr(value);
                }
            }
            StmtKind::While { cond, body } => {
                self.expr(cond);
                self.block(body);
            }
            StmtKind::Query { ret, body, .. } => {
                self.type_expr(ret);
                self.block(body);
            }
            StmtKind::For { var, iter, body } => {
                self.local_def(var.span);
                self.expr(iter);
                self.block(body);
            }
            StmtKind::Audit { fields, .. } => {
                for field in fields {
                    self.expr(&field.value);
                }
            }
            StmtKind::Waive(waiver) => {
                for tool in &waiver.tools {
                    if let Some(resolved) = self.resolved(tool.span) {
                        let sym = self.sym_of(resolved);
                        self.add(tool.span, sym);
                    }
                }
                for field in &waiver.fields {
                    self.expr(&field.value);
                }
            }
            StmtKind::ContinueAs { workflow, args } => {
                if let Some(resolved) = self.resolved(workflow.span) {
                    let sym = self.sym_of(resolved);
                    self.add(workflow.span, sym);
                }
                for arg in args {
                    self.expr(arg);
                }
            }
            StmtKind::Break | StmtKind::Continue | StmtKind::Error => {}
        }
    }

    /// A signal named in `await signal NAME` or a `select` arm.
    fn signal_ref(&mut self, name: &ast::Ident) {
        let program = self.program;
        if let Some(workflow) = self.workflow
            && let Some(i) = program.checked.workflows[workflow]
                .signals
                .iter()
                .position(|s| s.name == name.name)
        {
            self.add(name.span, Sym::Signal(workflow, i));
        }
    }

    /// An error named in `catch NotFound(e)`: its declaration, when it is a named error.
    fn error_ref(&mut self, name: &ast::Ident) {
        let checked = &self.program.checked;
        let scope = &checked.scopes[self.file.0 as usize];
        if let Some(id) = scope.lookup_type(&name.name)
            && checked.error_of(id).is_some()
        {
            self.add(name.span, Sym::Type(id));
        }
    }

    fn sym_of(&self, resolved: Resolved) -> Sym {
        match resolved {
            Resolved::Tool(i) => Sym::Tool(i),
            Resolved::Workflow(i) => Sym::Workflow(i),
            Resolved::Function(i) => Sym::Function(i),
            Resolved::Variant(id, i) => Sym::Variant(id, i),
            Resolved::Builtin(b) => Sym::Builtin(b),
            Resolved::Error(i) => Sym::Type(self.program.checked.errors[i].ty),
        }
    }

    fn expr(&mut self, expr: &ast::Expr) {
        match &expr.kind {
            ExprKind::Int(_)
            | ExprKind::Float(_)
            | ExprKind::Bool(_)
            | ExprKind::None
            | ExprKind::Duration(_)
            | ExprKind::Time(_)
            | ExprKind::Error => {}
            ExprKind::AwaitSignal { name } => self.signal_ref(name),
            ExprKind::Str(parts) => {
                for part in parts {
                    if let ast::StrPart::Interpolation(inner) = part {
                        self.expr(inner);
                    }
                }
            }
            ExprKind::Name(_) => {
                if let Some(local) = self.ide.local_uses.get(&(self.file, expr.span)) {
                    self.add(expr.span, Sym::Local(*local));
                } else if let Some(resolved) = self.resolved(expr.span) {
                    let sym = self.sym_of(resolved);
                    self.add(expr.span, sym);
                }
            }
            ExprKind::List(items) => {
                for item in items {
                    self.expr(item);
                }
            }
            ExprKind::Record(fields) => {
                for field in fields {
                    if let Some((id, index)) = self.ide.fields.get(&(self.file, field.name.span)) {
                        self.add(field.name.span, Sym::Field(*id, *index));
                    }
                    self.expr(&field.value);
                }
            }
            ExprKind::Field { base, name, .. } => {
                // `Verdict.Held` as a value: the enum and its variant.
                if let Some(Resolved::Variant(id, index)) = self.resolved(base.span.to(name.span)) {
                    self.add(base.span, Sym::Type(id));
                    self.add(name.span, Sym::Variant(id, index));
                    return;
                }
                if let Some((id, index)) = self.ide.fields.get(&(self.file, name.span)) {
                    self.add(name.span, Sym::Field(*id, *index));
                }
                self.expr(base);
            }
            ExprKind::Index { base, index } => {
                self.expr(base);
                self.expr(index);
            }
            ExprKind::Call { callee, args } => {
                match (&callee.kind, self.resolved(expr.span)) {
                    (ExprKind::Name(_), Some(resolved)) => {
                        let sym = self.sym_of(resolved);
                        self.add(callee.span, sym);
                    }
                    (ExprKind::Field { base, name, .. }, Some(Resolved::Variant(id, index))) => {
                        self.add(base.span, Sym::Type(id));
                        self.add(name.span, Sym::Variant(id, index));
                    }
                    _ => self.expr(callee),
                }
                for arg in args {
                    self.expr(arg);
                }
            }
            ExprKind::Unary { operand, .. } => self.expr(operand),
            ExprKind::Binary { lhs, rhs, .. } => {
                self.expr(lhs);
                self.expr(rhs);
            }
            ExprKind::If {
                cond,
                then_block,
                else_branch,
            } => {
                self.expr(cond);
                self.block(then_block);
                if let Some(else_branch) = else_branch {
                    self.expr(else_branch);
                }
            }
            ExprKind::Match { scrutinee, arms } => {
                self.expr(scrutinee);
                for arm in arms {
                    self.pattern(&arm.pattern);
                    self.expr(&arm.body);
                }
            }
            ExprKind::Select { arms } => {
                for arm in arms {
                    match &arm.kind {
                        ast::SelectArmKind::Signal { name, binding } => {
                            self.signal_ref(name);
                            if let Some(binding) = binding {
                                self.local_def(binding.span);
                            }
                        }
                        ast::SelectArmKind::After { duration } => self.expr(duration),
                        ast::SelectArmKind::Wait { wait, binding } => {
                            self.expr(wait);
                            if let Some(binding) = binding {
                                self.local_def(binding.span);
                            }
                        }
                    }
                    self.expr(&arm.body);
                }
            }
            ExprKind::Parallel(parallel) => match &parallel.branches {
                ast::ParallelBranches::Each {
                    var,
                    items,
                    max,
                    body,
                } => {
                    self.local_def(var.span);
                    self.expr(items);
                    if let Some(max) = max {
                        self.expr(max);
                    }
                    self.block(body);
                }
                ast::ParallelBranches::Fields(fields) => {
                    for field in fields {
                        self.expr(&field.value);
                    }
                }
            },
            ExprKind::Block(block) => self.block(block),
            ExprKind::Retry { policies, body, .. } => {
                for policy in policies.iter() {
                    for kind in &policy.kinds {
                        match stdlib::ERROR_KINDS.iter().find(|(k, _)| *k == kind.name) {
                            Some((k, _)) => self.add(kind.span, Sym::ErrorKind(k)),
                            None => self.error_ref(kind),
                        }
                    }
                    if let Some(binding) = &policy.binding {
                        self.local_def(binding.span);
                    }
                    for e in policy.exprs() {
                        self.expr(e);
                    }
                }
                self.block(body);
            }
            ExprKind::Timeout { duration, body } => {
                self.expr(duration);
                self.block(body);
            }
            ExprKind::Try { body, catches } => {
                self.block(body);
                for catch in catches {
                    if let Some(error) = &catch.error {
                        self.error_ref(error);
                    }
                    if let Some(binding) = &catch.binding {
                        self.local_def(binding.span);
                    }
                    self.block(&catch.handler);
                }
            }
            ExprKind::AwaitApproval { options, .. } => self.options(options, false),
            ExprKind::AwaitInput { ty, options, .. } => {
                self.type_expr(ty);
                self.options(options, true);
            }
        }
    }

    fn options(&mut self, options: &[ast::AwaitOption], input: bool) {
        let known = if input {
            stdlib::INPUT_OPTIONS
        } else {
            stdlib::APPROVAL_OPTIONS
        };
        for option in options {
            if let Some(spec) = known.iter().find(|k| k.name == option.name.name) {
                self.add(
                    option.name.span,
                    Sym::GateOption {
                        name: spec.name,
                        input,
                    },
                );
            }
            self.expr(&option.value);
            if let Some(after) = &option.after {
                self.expr(after);
            }
        }
    }

    fn pattern(&mut self, pattern: &ast::Pattern) {
        match &pattern.kind {
            PatternKind::Name(_) => match self.resolved(pattern.span) {
                Some(resolved) => {
                    let sym = self.sym_of(resolved);
                    self.add(pattern.span, sym);
                }
                None => self.local_def(pattern.span),
            },
            PatternKind::Variant {
                enum_name,
                name,
                fields,
            } => {
                if let Some(Resolved::Variant(id, index)) = self.resolved(pattern.span) {
                    if let Some(enum_name) = enum_name {
                        self.add(enum_name.span, Sym::Type(id));
                    }
                    self.add(name.span, Sym::Variant(id, index));
                }
                for field in fields {
                    self.pattern(field);
                }
            }
            _ => {}
        }
    }
}

// ----- helpers ---------------------------------------------------------------------------

fn code(text: &str) -> String {
    format!("```flow\n{text}\n```")
}

fn contains(outer: Span, inner: Span) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

fn contains_offset(span: Span, offset: u32) -> bool {
    span.start <= offset && offset <= span.end
}

fn item_name(item: &ast::Item) -> Option<&str> {
    match item {
        ast::Item::Import(_) => None,
        ast::Item::Type(d) => Some(&d.name.name),
        ast::Item::Error(d) => Some(&d.name.name),
        ast::Item::Enum(d) => Some(&d.name.name),
        ast::Item::Tool(d) => Some(&d.name.name),
        ast::Item::Workflow(d) => Some(&d.name.name),
        ast::Item::Function(d) => Some(&d.name.name),
        ast::Item::Test(_) => None,
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

fn is_keyword(name: &str) -> bool {
    ITEM_KEYWORDS.contains(&name) || BODY_KEYWORDS.contains(&name) || name == "via"
}

const ITEM_KEYWORDS: &[&str] = &[
    "import",
    "type",
    "enum",
    "tool",
    "workflow",
    "fn",
    "sensitive",
    "test",
];
const TEST_STEPS: &[&str] = &[
    "mock", "start", "expect", "approve", "reject", "provide", "signal", "advance",
];
const TEST_EXPECTATIONS: &[&str] = &[
    "approval",
    "input",
    "result",
    "query",
    "error",
    "called",
    "not",
    "audit",
    "escalated",
    "notified",
    "refused",
    "status",
];

const BODY_KEYWORDS: &[&str] = &[
    "let", "var", "if", "else", "match", "for", "in", "while", "break", "continue", "return",
    "fail", "try", "catch", "retry", "backoff", "on", "timeout", "sleep", "audit", "await",
    "approval", "input", "after", "true", "false", "none", "select", "parallel",
];

fn keyword(name: &str, detail: &str) -> Completion {
    Completion {
        label: name.to_string(),
        kind: CompletionKind::Keyword,
        detail: Some(detail.to_string()),
        documentation: None,
    }
}

fn show_stdlib(ty: stdlib::Ty) -> String {
    use stdlib::Ty;
    match ty {
        Ty::Var => "T".into(),
        Ty::Any => "Any".into(),
        Ty::List(inner) => format!("List<{}>", show_stdlib(*inner)),
        Ty::Map(inner) => format!("Map<{}>", show_stdlib(*inner)),
        Ty::Optional(inner) => format!("{}?", show_stdlib(*inner)),
        Ty::Record(name) => name.into(),
        other => format!("{other:?}"),
    }
}

/// `len(list: List<T>) -> Int`.
pub fn builtin_signature(builtin: stdlib::Builtin) -> String {
    let params: Vec<String> = builtin
        .params()
        .iter()
        .map(|p| format!("{}: {}", p.name, show_stdlib(p.ty)))
        .collect();
    format!(
        "{}({}) -> {}",
        builtin.name(),
        params.join(", "),
        show_stdlib(builtin.returns())
    )
}

fn gate_option_signature(option: &stdlib::GateOption) -> String {
    format!("{}: {}", option.name, gate_option_type(option))
}

fn gate_option_type(option: &stdlib::GateOption) -> String {
    let mut out = show_stdlib(option.ty);
    if option.takes_after {
        out.push_str(if option.after_required {
            " after Duration"
        } else {
            " [after Duration]"
        });
    }
    out
}

fn gate_option_doc(option: &stdlib::GateOption, input: bool) -> String {
    let what = if input {
        "`await input`"
    } else {
        "`await approval`"
    };
    let required = if option.required {
        "required"
    } else {
        "optional"
    };
    format!("{}\n\n*Option of {what} ({required}).*", option.doc)
}

/// Whether the tokens end inside a string literal's text (not in an interpolation).
fn in_string(tokens: &[Token]) -> bool {
    let mut depth = 0usize;
    for token in tokens.iter().rev() {
        match token.kind {
            T::StrEnd => return false,
            T::InterpEnd => depth += 1,
            T::InterpStart if depth > 0 => depth -= 1,
            // The cursor is inside `${…}`: code, not text.
            T::InterpStart => return false,
            T::Quote | T::StrText if depth == 0 => return true,
            _ => {}
        }
        if depth == 0
            && !matches!(
                token.kind,
                T::Quote | T::StrText | T::InterpStart | T::InterpEnd
            )
        {
            // Any other token outside strings ends the search.
            return false;
        }
    }
    false
}

/// The index of the innermost `{` that is still open at the end of `tokens`.
fn enclosing_brace(tokens: &[Token]) -> Option<usize> {
    let mut depth = 0usize;
    for (index, token) in tokens.iter().enumerate().rev() {
        match token.kind {
            T::RBrace | T::RParen | T::RBracket | T::InterpEnd => depth += 1,
            T::LParen | T::LBracket | T::InterpStart => {
                if depth == 0 {
                    // Inside parentheses or brackets, not directly in braces.
                    return None;
                }
                depth -= 1;
            }
            T::LBrace if depth == 0 => return Some(index),
            T::LBrace => depth -= 1,
            _ => {}
        }
    }
    None
}

/// Whether the tokens end with `await approval "gate"` (`Some(false)`) or
/// `await input<T> "name"` (`Some(true)`).
fn gate_before(tokens: &[Token]) -> Option<bool> {
    // The gate's name: `Quote [StrText] StrEnd`.
    let mut i = tokens.len();
    if tokens.get(i.checked_sub(1)?)?.kind != T::StrEnd {
        return None;
    }
    i -= 1;
    while i > 0 && tokens[i - 1].kind != T::Quote {
        i -= 1;
    }
    let quote = i.checked_sub(1)?;
    let before = &tokens[..quote];
    match before.last()?.kind {
        T::Approval => {
            (before.get(before.len().checked_sub(2)?)?.kind == T::Await).then_some(false)
        }
        T::Gt => {
            // `await input<…>`: find `input <` before the closing `>`.
            let mut depth = 0usize;
            for (index, token) in before.iter().enumerate().rev() {
                match token.kind {
                    T::Gt => depth += 1,
                    T::Lt => {
                        depth -= 1;
                        if depth == 0 {
                            let input = before.get(index.checked_sub(1)?)?;
                            let await_ = before.get(index.checked_sub(2)?)?;
                            return (input.kind == T::Input && await_.kind == T::Await)
                                .then_some(true);
                        }
                    }
                    _ => {}
                }
            }
            None
        }
        _ => None,
    }
}

/// Tokens after which a line break does not end the expression.
fn continues_expression(kind: T) -> bool {
    matches!(
        kind,
        T::Colon
            | T::FatArrow
            | T::Assign
            | T::Dot
            | T::QuestionDot
            | T::After
            | T::Arrow
            | T::EqEq
            | T::NotEq
            | T::Lt
            | T::LtEq
            | T::Gt
            | T::GtEq
            | T::Plus
            | T::Minus
            | T::Star
            | T::Slash
            | T::Percent
            | T::AndAnd
            | T::OrOr
            | T::QuestionQuestion
            | T::Bang
    )
}

/// The statement before which an approval gate for the call at `call` goes: the statement
/// holding it in the innermost block, skipping blocks a gate should not be inside (`retry`,
/// `timeout`).
fn statement_for_gate(block: &ast::Block, call: Span) -> Option<Span> {
    let stmt = block.stmts.iter().find(|s| contains(s.span, call))?;
    let inner = inner_blocks(stmt)
        .into_iter()
        .find(|b| contains(b.span, call))
        .and_then(|b| statement_for_gate(b, call));
    Some(inner.unwrap_or(stmt.span))
}

/// Blocks directly inside a statement where a gate may be inserted.
fn inner_blocks(stmt: &ast::Stmt) -> Vec<&ast::Block> {
    fn expr_blocks<'a>(expr: &'a ast::Expr, out: &mut Vec<&'a ast::Block>) {
        match &expr.kind {
            ExprKind::If {
                then_block,
                else_branch,
                ..
            } => {
                out.push(then_block);
                if let Some(else_branch) = else_branch {
                    expr_blocks(else_branch, out);
                }
            }
            ExprKind::Block(block) => out.push(block),
            ExprKind::Match { arms, .. } => {
                for arm in arms {
                    expr_blocks(&arm.body, out);
                }
            }
            ExprKind::Try { body, catches } => {
                out.push(body);
                out.extend(catches.iter().map(|c| &c.handler));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    match &stmt.kind {
        StmtKind::While { body, .. } | StmtKind::For { body, .. } => out.push(body),
        StmtKind::Expr(expr) => expr_blocks(expr, &mut out),
        StmtKind::Let { value, .. } => expr_blocks(value, &mut out),
        StmtKind::Return(Some(value)) => expr_blocks(value, &mut out),
        _ => {}
    }
    out
}

/// Whether `code` is the approval rule's (for front ends that offer the gate fix).
pub fn is_unapproved_call(diagnostic: &Diagnostic) -> bool {
    diagnostic.code == codes::UNAPPROVED_SENSITIVE_CALL
}
