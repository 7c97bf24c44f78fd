//! Lowering: a checked [`Program`] in, a bytecode [`Module`] out.
//!
//! What comes in is the syntax trees plus what the checker recorded for them
//! (`program.checked`: the declarations with resolved types, and `resolutions`, which say
//! what every call, variant value, variant pattern and `for` loop refers to). Only a program
//! without errors is lowered. What goes out is a self-contained module: one code vector per
//! workflow (numbered like `program.checked.workflows`), tools numbered like
//! `program.checked.tools`, interned constants, field lists and type descriptions, gate,
//! input and event tables, and a debug location for every instruction. The module is run
//! through [`crate::bytecode::verify`] before it is returned.
//!
//! Conventions the interpreter relies on (`spec/bytecode.md` has the full list):
//! - Every expression pushes exactly one value (a `Unit` one pushes `none`); statements leave
//!   the stack as they found it. `Return` always finds exactly one value on the stack.
//! - Parameters occupy local slots `0..n`; every other binding and every temporary gets a
//!   fresh slot, never reused.
//! - Leaving a loop with `break`/`continue` first pops the values an enclosing expression
//!   had pushed and closes the handler and timeout regions entered inside the loop.

use crate::bytecode::module::{
    Binding, Constant, DebugLoc, FieldDocs, GateContext, InputRequest, Module, ParallelInfo,
    QueryCode, RaiseCode, SelectArmInfo, SelectInfo, SignalInfo, ToolInfo, ToolRaise, TypeDesc,
    TypeRef, UndoBlock, WorkflowCode,
};
use crate::bytecode::{Op, verify};
use crate::check::{self, IterKind, Resolved};
use crate::program::Program;
use crate::span::{FileId, Span};
use crate::syntax::ast::{
    self, BinaryOp, Block, Expr, ExprKind, Pattern, PatternKind, StmtKind, StrPart, UnaryOp,
};
use crate::syntax::name::Name;
use crate::types::{Type, TypeDefKind, TypeId};
use rustc_hash::FxHashMap as HashMap;
use sha2::{Digest, Sha256};
use std::fmt;

/// Why a program could not be lowered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LowerError {
    /// The program has this many errors; only checked, error-free programs are lowered.
    HasErrors(usize),
    /// A construct the bytecode cannot express (yet), or a format limit, at a source location.
    At {
        file: String,
        line: u32,
        column: u32,
        message: String,
    },
    /// The lowering produced code the verifier refuses: a compiler bug.
    Internal(String),
}

impl fmt::Display for LowerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LowerError::HasErrors(n) => write!(
                f,
                "the program has {n} error{}; fix them before building",
                if *n == 1 { "" } else { "s" }
            ),
            LowerError::At {
                file,
                line,
                column,
                message,
            } => write!(f, "{file}:{line}:{column}: {message}"),
            LowerError::Internal(why) => write!(f, "internal compiler error: {why}"),
        }
    }
}

impl std::error::Error for LowerError {}

type Result<T = ()> = std::result::Result<T, LowerError>;

/// Lowers a checked program to bytecode (without its tests).
pub fn lower(program: &Program) -> Result<Module> {
    lower_program(program, false)
}

/// Lowers a checked program with the helper workflows of its tests (see
/// [`crate::testing`]), numbered after the program's own: what `flowc test` runs.
pub fn lower_with_tests(program: &Program) -> Result<Module> {
    lower_program(program, true)
}

fn lower_program(program: &Program, with_tests: bool) -> Result<Module> {
    let errors = program.errors();
    if errors > 0 {
        return Err(LowerError::HasErrors(errors));
    }
    let mut builder = Builder::new(program);
    builder.declare_tools();
    builder.declare_errors();
    builder.declare_workflows(with_tests);
    builder.declare_functions();
    let program_workflows = program.trees.iter().enumerate().flat_map(|(file, tree)| {
        tree.module.items.iter().filter_map(move |item| match item {
            ast::Item::Workflow(decl) => Some((FileId(file as u32), &**decl)),
            _ => None,
        })
    });
    let helpers = program.trees.iter().enumerate().flat_map(|(file, tree)| {
        let file = FileId(file as u32);
        tree.tests.helpers.iter().map(move |h| (file, &h.decl))
    });
    let helpers = helpers.take(if with_tests { usize::MAX } else { 0 });
    for (index, (file, decl)) in program_workflows.chain(helpers).enumerate() {
        let (code, debug, locals) = FnLower::run(&mut builder, file, index, decl)?;
        let workflow = &mut builder.module.workflows[index];
        workflow.code = code;
        workflow.debug = debug;
        workflow.locals = locals;
    }
    let functions = program.trees.iter().enumerate().flat_map(|(file, tree)| {
        tree.module.items.iter().filter_map(move |item| match item {
            ast::Item::Function(decl) => Some((FileId(file as u32), &**decl)),
            _ => None,
        })
    });
    for (index, (file, decl)) in functions.enumerate() {
        let (code, debug, locals) = FnLower::run_function(&mut builder, file, index, decl)?;
        let function = &mut builder.module.functions[index];
        function.code = code;
        function.debug = debug;
        function.locals = locals;
    }
    verify::verify(&builder.module).map_err(LowerError::Internal)?;
    Ok(builder.module)
}

/// SHA-256 (hex) of the program's source texts, concatenated in file order.
pub fn source_hash(program: &Program) -> String {
    let mut hasher = Sha256::new();
    for file in program.db.ids() {
        hasher.update(program.db.text(file).as_bytes());
    }
    flow_stdlib::hex::encode(&hasher.finalize())
}

// ----- the module and its interned tables ---------------------------------------------

#[derive(Clone, PartialEq, Eq, Hash)]
enum ConstKey {
    None,
    Bool(bool),
    Int(i64),
    Float(u64),
    Str(String),
    Duration(i64),
    Time(i64),
}

/// Structural types are interned by value; named ones by their `TypeId`.
#[derive(Clone, PartialEq, Eq, Hash)]
enum TypeKey {
    Leaf(u8),
    List(u32),
    Map(u32),
    Optional(u32),
    Record(Vec<(String, u32)>),
    /// The base, the rule as written, the declared name.
    Refined(u32, String, Option<String>),
}

struct Builder<'p> {
    program: &'p Program,
    module: Module,
    constants: HashMap<ConstKey, u32>,
    field_lists: HashMap<Vec<u32>, u32>,
    kind_lists: HashMap<Vec<String>, u32>,
    named_types: HashMap<TypeId, u32>,
    structural_types: HashMap<TypeKey, u32>,
    gates: HashMap<String, u32>,
    inputs: HashMap<(String, u32), u32>,
    events: HashMap<String, u32>,
}

fn index_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl<'p> Builder<'p> {
    fn new(program: &'p Program) -> Builder<'p> {
        Builder {
            program,
            module: Module {
                field_docs: Vec::new(),
                gate_contexts: Vec::new(),
                signals: Vec::new(),
                selects: Vec::new(),
                queries: Vec::new(),
                parallels: Vec::new(),
                tool_raises: Vec::new(),
                undos: Vec::new(),
                functions: Vec::new(),
                source_hash: source_hash(program),
                files: program
                    .db
                    .ids()
                    .map(|f| program.db.display_name(f).to_string())
                    .collect(),
                constants: Vec::new(),
                field_lists: Vec::new(),
                kind_lists: Vec::new(),
                types: Vec::new(),
                tools: Vec::new(),
                gates: Vec::new(),
                input_requests: Vec::new(),
                events: Vec::new(),
                workflows: Vec::new(),
            },
            constants: HashMap::default(),
            field_lists: HashMap::default(),
            kind_lists: HashMap::default(),
            named_types: HashMap::default(),
            structural_types: HashMap::default(),
            gates: HashMap::default(),
            inputs: HashMap::default(),
            events: HashMap::default(),
        }
    }

    fn constant(&mut self, constant: Constant) -> u32 {
        let key = match &constant {
            Constant::None => ConstKey::None,
            Constant::Bool(b) => ConstKey::Bool(*b),
            Constant::Int(i) => ConstKey::Int(*i),
            Constant::Float(x) => ConstKey::Float(x.to_bits()),
            Constant::Str(s) => ConstKey::Str(s.clone()),
            Constant::Duration(ms) => ConstKey::Duration(*ms),
            Constant::Time(ms) => ConstKey::Time(*ms),
        };
        if let Some(index) = self.constants.get(&key) {
            return *index;
        }
        let index = index_u32(self.module.constants.len());
        self.module.constants.push(constant);
        self.constants.insert(key, index);
        index
    }

    fn string(&mut self, text: &str) -> u32 {
        self.constant(Constant::Str(text.to_string()))
    }

    fn field_list<'n>(&mut self, names: impl IntoIterator<Item = &'n str>) -> u32 {
        let list: Vec<u32> = names.into_iter().map(|n| self.string(n)).collect();
        if let Some(index) = self.field_lists.get(&list) {
            return *index;
        }
        let index = index_u32(self.module.field_lists.len());
        self.module.field_lists.push(list.clone());
        self.field_lists.insert(list, index);
        index
    }

    fn kind_list(&mut self, kinds: Vec<String>) -> u32 {
        if let Some(index) = self.kind_lists.get(&kinds) {
            return *index;
        }
        let index = index_u32(self.module.kind_lists.len());
        self.module.kind_lists.push(kinds.clone());
        self.kind_lists.insert(kinds, index);
        index
    }

    fn gate(&mut self, name: &str) -> u32 {
        if let Some(index) = self.gates.get(name) {
            return *index;
        }
        let index = index_u32(self.module.gates.len());
        self.module.gates.push(name.to_string());
        self.gates.insert(name.to_string(), index);
        index
    }

    fn input_request(&mut self, name: &str, ty: TypeRef) -> u32 {
        let key = (name.to_string(), ty.0);
        if let Some(index) = self.inputs.get(&key) {
            return *index;
        }
        let index = index_u32(self.module.input_requests.len());
        self.module.input_requests.push(InputRequest {
            name: name.to_string(),
            ty,
        });
        self.inputs.insert(key, index);
        index
    }

    fn event(&mut self, name: &str) -> u32 {
        if let Some(index) = self.events.get(name) {
            return *index;
        }
        let index = index_u32(self.module.events.len());
        self.module.events.push(name.to_string());
        self.events.insert(name.to_string(), index);
        index
    }

    fn structural(&mut self, key: TypeKey, desc: TypeDesc) -> TypeRef {
        if let Some(index) = self.structural_types.get(&key) {
            return TypeRef(*index);
        }
        let index = index_u32(self.module.types.len());
        self.module.types.push(desc);
        self.structural_types.insert(key, index);
        TypeRef(index)
    }

    /// The description of `ty` in `module.types`, added on first use. A named type gets its
    /// slot before its fields are described, so recursive types refer to themselves.
    fn type_ref(&mut self, ty: &Type) -> TypeRef {
        let leaf = |tag: u8, desc: TypeDesc| (TypeKey::Leaf(tag), desc);
        let (key, desc) = match ty {
            Type::Int => leaf(0, TypeDesc::Int),
            Type::Float => leaf(1, TypeDesc::Float),
            Type::Bool => leaf(2, TypeDesc::Bool),
            Type::String => leaf(3, TypeDesc::String),
            Type::Duration => leaf(4, TypeDesc::Duration),
            Type::Time => leaf(5, TypeDesc::Time),
            // `Unknown` only follows an error, and erroneous programs are not lowered.
            Type::Json | Type::Unknown => leaf(6, TypeDesc::Json),
            Type::Approvers => leaf(7, TypeDesc::Approvers),
            Type::Unit | Type::Never => leaf(8, TypeDesc::Unit),
            Type::Secret => leaf(9, TypeDesc::Secret),
            Type::List(inner) => {
                let inner = self.type_ref(inner);
                (TypeKey::List(inner.0), TypeDesc::List(inner))
            }
            Type::Map(inner) => {
                let inner = self.type_ref(inner);
                (TypeKey::Map(inner.0), TypeDesc::Map(inner))
            }
            Type::Optional(inner) => {
                let inner = self.type_ref(inner);
                (TypeKey::Optional(inner.0), TypeDesc::Optional(inner))
            }
            Type::Record(fields) => {
                let described: Vec<(String, TypeRef)> = fields
                    .iter()
                    .map(|(name, ty)| (name.to_string(), self.type_ref(ty)))
                    .collect();
                let key = described.iter().map(|(n, t)| (n.clone(), t.0)).collect();
                let name = ty.display(&self.program.checked.types).to_string();
                let desc = TypeDesc::Record {
                    name,
                    fields: described,
                };
                (TypeKey::Record(key), desc)
            }
            Type::Named(id) => return self.named_type(*id),
            Type::Refined(r) => {
                let base = self.type_ref(&r.base);
                let name = r.name.as_ref().map(|n| n.to_string());
                let key = TypeKey::Refined(base.0, r.rule.to_string(), name.clone());
                let desc = TypeDesc::Refined {
                    base,
                    rule: r.rule.clone(),
                    name,
                };
                (key, desc)
            }
        };
        self.structural(key, desc)
    }

    fn named_type(&mut self, id: TypeId) -> TypeRef {
        if let Some(index) = self.named_types.get(&id) {
            return TypeRef(*index);
        }
        let index = index_u32(self.module.types.len());
        self.module.types.push(TypeDesc::Unit);
        self.named_types.insert(id, index);
        let program = self.program;
        let def = program.checked.types.get(id);
        let desc = match &def.kind {
            TypeDefKind::Record(fields) => {
                let documented: Vec<(String, String)> = fields
                    .iter()
                    .filter_map(|f| Some((f.name.to_string(), f.doc.as_deref()?.to_string())))
                    .collect();
                if !documented.is_empty() {
                    self.module.field_docs.push(FieldDocs {
                        ty: TypeRef(index),
                        fields: documented,
                    });
                }
                TypeDesc::Record {
                    name: def.name.to_string(),
                    fields: fields
                        .iter()
                        .map(|f| (f.name.to_string(), self.type_ref(&f.ty)))
                        .collect(),
                }
            }
            TypeDefKind::Enum(variants) => TypeDesc::Enum {
                name: def.name.to_string(),
                variants: variants
                    .iter()
                    .map(|v| {
                        let fields = v
                            .fields
                            .iter()
                            .map(|f| (f.name.to_string(), self.type_ref(&f.ty)))
                            .collect();
                        (v.name.to_string(), fields)
                    })
                    .collect(),
            },
            // Written types resolve a refined type's name to the type itself, so this is
            // only reached if that changes; describe it the same way.
            TypeDefKind::Refined(ty) => {
                let inner = self.type_ref(ty);
                self.module.types[inner.0 as usize].clone()
            }
        };
        self.module.types[index as usize] = desc;
        TypeRef(index)
    }

    fn params(&mut self, params: &[check::ParamDef]) -> Vec<(String, TypeRef)> {
        params
            .iter()
            .map(|p| (p.name.to_string(), self.type_ref(&p.ty)))
            .collect()
    }

    /// Tools in the checker's order: files in order, items in order.
    fn declare_tools(&mut self) {
        let program = self.program;
        let decls = program.trees.iter().flat_map(|tree| {
            tree.module.items.iter().filter_map(|item| match item {
                ast::Item::Tool(decl) => Some(decl),
                _ => None,
            })
        });
        for (def, decl) in program.checked.tools.iter().zip(decls) {
            let binding = match &decl.binding {
                ast::ToolBinding::Http { method, path } => Binding::Http {
                    method: method.name.to_ascii_uppercase(),
                    path: path.value.to_string(),
                },
                ast::ToolBinding::Exec { command } => Binding::Exec {
                    command: command.value.to_string(),
                },
                ast::ToolBinding::Llm { model, prompt } => Binding::Llm {
                    model: model.value.to_string(),
                    prompt: prompt.value.to_string(),
                },
                // A binding that did not parse was reported; such programs are not lowered.
                ast::ToolBinding::Error => Binding::Exec {
                    command: String::new(),
                },
            };
            let params = self.params(&def.params);
            let ret = self.type_ref(&def.ret);
            self.module.tools.push(ToolInfo {
                name: def.name.to_string(),
                params,
                ret,
                binding,
                sensitive: def.sensitive,
            });
        }
    }

    /// `Error` and every named error are described, so that the runtime can read a failed
    /// run's error back as the record it was (a child's error reaches its parent unchanged).
    fn declare_errors(&mut self) {
        let program = self.program;
        for id in program
            .checked
            .error
            .into_iter()
            .chain(program.checked.errors.iter().map(|e| e.ty))
        {
            self.named_type(id);
        }
        for (tool, def) in program.checked.tools.iter().enumerate() {
            for (error, on) in &def.raises {
                let error = self.named_type(program.checked.errors[*error].ty);
                let on = match on {
                    ast::RaiseOn::Status(code) => {
                        RaiseCode::Status(u16::try_from(*code).unwrap_or(0))
                    }
                    ast::RaiseOn::Exit(code) => RaiseCode::Exit(u8::try_from(*code).unwrap_or(0)),
                    ast::RaiseOn::Refusal => RaiseCode::Refusal,
                };
                self.module.tool_raises.push(ToolRaise {
                    tool: index_u32(tool),
                    error,
                    on,
                });
            }
        }
    }

    /// Every workflow's signature, before any code: calls need the callee's arity.
    fn declare_workflows(&mut self, with_tests: bool) {
        let program = self.program;
        let count = if with_tests {
            program.checked.workflows.len()
        } else {
            program.checked.program_workflows
        };
        for (index, def) in program.checked.workflows[..count].iter().enumerate() {
            let params = self.params(&def.params);
            let ret = self.type_ref(&def.ret);
            for signal in &def.signals {
                let ty = self.type_ref(&signal.ty);
                self.module.signals.push(SignalInfo {
                    workflow: index_u32(index),
                    name: signal.name.to_string(),
                    ty,
                    senders: signal.senders.clone(),
                });
            }
            self.module.workflows.push(WorkflowCode {
                name: def.name.to_string(),
                params,
                ret,
                locals: 0,
                code: Vec::new(),
                debug: Vec::new(),
            });
        }
    }
}

impl Builder<'_> {
    /// Every function's signature, before any code: calls need the callee's arity.
    fn declare_functions(&mut self) {
        let program = self.program;
        for def in &program.checked.functions {
            let params = self.params(&def.params);
            let ret = self.type_ref(&def.ret);
            self.module.functions.push(WorkflowCode {
                name: def.name.to_string(),
                params,
                ret,
                locals: 0,
                code: Vec::new(),
                debug: Vec::new(),
            });
        }
    }
}

// ----- one workflow -------------------------------------------------------------------

/// Whether a construct must push its value or leave the stack as it found it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Value,
    Discard,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Region {
    Handler,
    Timeout,
}

struct Local {
    name: String,
    slot: u16,
    /// The static type, as far as the lowering can tell (for assignments to fields).
    ty: Type,
}

struct LoopCtx {
    /// Stack depth at the loop statement.
    depth: u32,
    /// Regions open at the loop statement.
    regions: usize,
    breaks: Vec<usize>,
    continues: Vec<usize>,
    /// Where `continue` goes, when it is already known (`while`).
    continue_to: Option<u32>,
}

struct FnLower<'b, 'p> {
    b: &'b mut Builder<'p>,
    file: FileId,
    /// The workflow's index in `module.workflows`.
    workflow: u32,
    code: Vec<Op>,
    debug: Vec<DebugLoc>,
    locals: u32,
    scope: Vec<Local>,
    /// The stack depth at the current instruction, on the paths that reach it.
    depth: u32,
    loops: Vec<LoopCtx>,
    regions: Vec<Region>,
    /// How many `parallel`s lowered so far: the next one's number in its branches' names.
    parallels: u32,
    /// The local that holds the undo stack, in a workflow with undo blocks.
    undo_stack: Option<u16>,
    /// In a workflow with `on cancel`: the local that says whether it was reached, and,
    /// once lowered, its workflow and the locals that keep the values it reads.
    on_cancel: Option<OnCancel>,
    loc: DebugLoc,
}

/// Where a workflow keeps its `on cancel` (see `FnLower::on_cancel`).
struct OnCancel {
    reached: u16,
    workflow: u32,
    captures: Vec<u16>,
}

/// One branch of a `parallel`, to be lowered as a workflow of its own.
struct Branch<'a> {
    name: String,
    params: Vec<(Name, Type)>,
    ret: Type,
    body: BranchBody<'a>,
    span: Span,
}

enum BranchBody<'a> {
    Block(&'a Block),
    Expr(&'a Expr),
}

/// The audit event a `waive approval for …` records.
pub const APPROVAL_WAIVED_EVENT: &str = "approval_waived";

const PLACEHOLDER: u32 = u32::MAX;

impl<'b, 'p> FnLower<'b, 'p> {
    fn run(
        b: &'b mut Builder<'p>,
        file: FileId,
        index: usize,
        decl: &ast::WorkflowDecl,
    ) -> Result<(Vec<Op>, Vec<DebugLoc>, u32)> {
        let program = b.program;
        let def = &program.checked.workflows[index];
        let mut f = FnLower::new(b, file, index);
        f.loc = f.location(decl.span.start as usize);
        for param in &def.params {
            f.bind(&param.name, param.ty.clone(), decl.span)?;
        }
        // A workflow with undo blocks keeps their stack in a local, and a failure nothing
        // caught runs them before the run fails: the body is a handler's region.
        // So does one with `on cancel`, which runs it first when the error is a cancel.
        let mut undoes = false;
        crate::testing::walk_block(
            &decl.body,
            &mut |s| undoes |= matches!(s.kind, StmtKind::LetUndo { .. }),
            &mut |_| {},
        );
        let cancels = decl
            .body
            .stmts
            .iter()
            .any(|s| matches!(s.kind, StmtKind::OnCancel(_)));
        let guard = if undoes || cancels {
            let stack = f.new_slot(decl.span)?;
            f.emit(Op::MakeList(0));
            f.emit(Op::StoreLocal(stack));
            f.undo_stack = Some(stack);
            if cancels {
                let reached = f.new_slot(decl.span)?;
                f.emit_const(Constant::Bool(false));
                f.emit(Op::StoreLocal(reached));
                f.on_cancel = Some(OnCancel {
                    reached,
                    workflow: u32::MAX,
                    captures: Vec::new(),
                });
            }
            let push = f.emit(Op::PushHandler {
                catch: PLACEHOLDER,
                kinds: u32::MAX,
            });
            f.regions.push(Region::Handler);
            Some((push, f.depth, stack))
        } else {
            None
        };
        let unit = def.ret == Type::Unit;
        f.block(&decl.body, if unit { Want::Discard } else { Want::Value })?;
        f.loc = f.location((decl.body.span.end as usize).saturating_sub(1));
        if unit {
            f.emit_const(Constant::None);
        }
        if let Some((push, depth, stack)) = guard {
            f.regions.pop();
            f.emit(Op::PopHandler);
            let to_return = f.emit(Op::Jump(PLACEHOLDER));
            let done = f.depth;
            f.patch(push);
            f.depth = depth + 1;
            let error = f.new_slot(decl.span)?;
            f.emit(Op::StoreLocal(error));
            f.cancel_handler(error)?;
            f.emit(Op::LoadLocal(stack));
            f.emit(Op::Compensate);
            f.emit(Op::Pop);
            f.emit(Op::LoadLocal(error));
            f.emit(Op::Raise);
            f.patch(to_return);
            f.depth = done;
        }
        f.emit(Op::Return);
        Ok((f.code, f.debug, f.locals))
    }

    /// A `fn`'s body as function `index`: its parameters in the first slots, its value
    /// returned. The checker proved it has no durable point (no undo block, no `parallel`).
    fn run_function(
        b: &'b mut Builder<'p>,
        file: FileId,
        index: usize,
        decl: &ast::FunctionDecl,
    ) -> Result<(Vec<Op>, Vec<DebugLoc>, u32)> {
        let program = b.program;
        let def = &program.checked.functions[index];
        let mut f = FnLower::new(b, file, index);
        f.loc = f.location(decl.span.start as usize);
        for param in &def.params {
            f.bind(&param.name, param.ty.clone(), decl.span)?;
        }
        let unit = def.ret == Type::Unit;
        f.block(&decl.body, if unit { Want::Discard } else { Want::Value })?;
        f.loc = f.location((decl.body.span.end as usize).saturating_sub(1));
        if unit {
            f.emit_const(Constant::None);
        }
        f.emit(Op::Return);
        Ok((f.code, f.debug, f.locals))
    }

    fn new(b: &'b mut Builder<'p>, file: FileId, index: usize) -> FnLower<'b, 'p> {
        FnLower {
            b,
            file,
            workflow: index_u32(index),
            code: Vec::new(),
            debug: Vec::new(),
            locals: 0,
            scope: Vec::new(),
            depth: 0,
            loops: Vec::new(),
            regions: Vec::new(),
            parallels: 0,
            undo_stack: None,
            on_cancel: None,
            loc: DebugLoc {
                file: file.0,
                line: 1,
                column: 1,
            },
        }
    }

    /// A branch of a `parallel` as the body of workflow `index`: its parameters bound to
    /// the names the branch reads, its value returned.
    fn run_branch(
        b: &'b mut Builder<'p>,
        file: FileId,
        index: usize,
        branch: &Branch<'_>,
    ) -> Result<(Vec<Op>, Vec<DebugLoc>, u32)> {
        let mut f = FnLower::new(b, file, index);
        f.loc = f.location(branch.span.start as usize);
        for (name, ty) in &branch.params {
            f.bind(name, ty.clone(), branch.span)?;
        }
        let unit = matches!(branch.ret, Type::Unit | Type::Never);
        let want = if unit { Want::Discard } else { Want::Value };
        match branch.body {
            BranchBody::Block(block) => f.block(block, want)?,
            BranchBody::Expr(expr) => f.expr_want(expr, want)?,
        }
        f.loc = f.location((branch.span.end as usize).saturating_sub(1));
        if unit {
            f.emit_const(Constant::None);
        }
        f.emit(Op::Return);
        Ok((f.code, f.debug, f.locals))
    }

    // ----- helpers ------------------------------------------------------------------

    fn location(&self, offset: usize) -> DebugLoc {
        let (line, column) = self.b.program.db.line_col(self.file, offset);
        DebugLoc {
            file: self.file.0,
            line: index_u32(line),
            column: index_u32(column),
        }
    }

    /// Makes `span` the source of the next instructions; returns the previous location.
    fn enter(&mut self, span: Span) -> DebugLoc {
        let loc = self.location(span.start as usize);
        std::mem::replace(&mut self.loc, loc)
    }

    fn error_at(&self, span: Span, message: impl Into<String>) -> LowerError {
        let (line, column) = self.b.program.db.line_col(self.file, span.start as usize);
        LowerError::At {
            file: self.b.program.db.display_name(self.file).to_string(),
            line: index_u32(line),
            column: index_u32(column),
            message: message.into(),
        }
    }

    /// What the checker resolved the node at `span` to.
    fn resolved(&self, span: Span) -> Option<Resolved> {
        self.b
            .program
            .checked
            .resolutions
            .items
            .get(&(self.file, span))
            .copied()
    }

    fn emit(&mut self, op: Op) -> usize {
        let (pops, pushes) = verify::stack_effect(&self.b.module, op).unwrap_or((0, 0));
        self.depth = self.depth.saturating_sub(pops) + pushes;
        self.code.push(op);
        self.debug.push(self.loc);
        self.code.len() - 1
    }

    fn emit_const(&mut self, constant: Constant) {
        let index = self.b.constant(constant);
        self.emit(Op::Const(index));
    }

    fn here(&self) -> u32 {
        index_u32(self.code.len())
    }

    /// Points the jump at `at` to `target`.
    fn patch_to(&mut self, at: usize, target: u32) {
        self.code[at] = match self.code[at] {
            Op::Jump(_) => Op::Jump(target),
            Op::JumpIfFalse(_) => Op::JumpIfFalse(target),
            Op::JumpIfTrue(_) => Op::JumpIfTrue(target),
            Op::JumpIfNotNone(_) => Op::JumpIfNotNone(target),
            Op::PushHandler { kinds, .. } => Op::PushHandler {
                catch: target,
                kinds,
            },
            other => other,
        };
    }

    /// Points the jump at `at` to the next instruction.
    fn patch(&mut self, at: usize) {
        let here = self.here();
        self.patch_to(at, here);
    }

    fn new_slot(&mut self, span: Span) -> Result<u16> {
        let slot = u16::try_from(self.locals).map_err(|_| {
            self.error_at(
                span,
                "this workflow needs more than 65,536 local slots; split it into child workflows",
            )
        })?;
        self.locals += 1;
        Ok(slot)
    }

    fn bind(&mut self, name: &str, ty: Type, span: Span) -> Result<u16> {
        let slot = self.new_slot(span)?;
        self.scope.push(Local {
            name: name.to_string(),
            slot,
            ty,
        });
        Ok(slot)
    }

    fn lookup(&self, name: &str) -> Option<&Local> {
        self.scope.iter().rev().find(|l| l.name == name)
    }

    fn make_variant(&mut self, ty: TypeId, variant: usize) {
        let ty = self.b.named_type(ty);
        self.emit(Op::MakeVariant {
            ty: ty.0,
            variant: index_u32(variant),
        });
    }

    fn variant_name(&self, ty: TypeId, variant: usize) -> String {
        self.b
            .program
            .checked
            .types
            .get(ty)
            .variants()
            .and_then(|v| v.get(variant))
            .map(|v| v.name.clone())
            .unwrap_or_default()
            .to_string()
    }

    /// Pushes the values in order and builds a record with those field names, and `none`
    /// for each of the `omitted` optional fields.
    fn record<'e>(
        &mut self,
        fields: impl IntoIterator<Item = (&'e str, &'e Expr)>,
        omitted: &'e [String],
    ) -> Result {
        let mut names = Vec::new();
        for (name, value) in fields {
            self.expr(value)?;
            names.push(name);
        }
        for name in omitted {
            self.emit_const(Constant::None);
            names.push(name.as_str());
        }
        let list = self.b.field_list(names);
        self.emit(Op::MakeRecord(list));
        Ok(())
    }

    // ----- blocks and statements ----------------------------------------------------

    fn block(&mut self, block: &Block, want: Want) -> Result {
        let mark = self.scope.len();
        let count = block.stmts.len();
        for (index, stmt) in block.stmts.iter().enumerate() {
            let saved = self.enter(stmt.span);
            match &stmt.kind {
                StmtKind::Expr(expr) if index + 1 == count => self.expr_want(expr, want)?,
                _ => self.stmt(stmt)?,
            }
            self.loc = saved;
        }
        let has_tail = matches!(block.stmts.last().map(|s| &s.kind), Some(StmtKind::Expr(_)));
        if want == Want::Value && !has_tail && block_diverges(block) {
            // The block ends in `return`, `fail`, `break` or `continue`: no value is ever
            // pushed here, but the paths that reach the join count one.
            self.depth += 1;
        } else if want == Want::Value && !has_tail {
            let saved = self.enter(Span::new(
                (block.span.end as usize).saturating_sub(1),
                block.span.end as usize,
            ));
            self.emit_const(Constant::None);
            self.loc = saved;
        }
        self.scope.truncate(mark);
        Ok(())
    }

    fn stmt(&mut self, stmt: &ast::Stmt) -> Result {
        match &stmt.kind {
            StmtKind::LetUndo { name, value, undo } => self.let_undo(name, value, undo)?,
            StmtKind::OnCancel(block) => self.on_cancel_stmt(block)?,
            StmtKind::Compensate => {
                if let Some(stack) = self.undo_stack {
                    self.emit(Op::LoadLocal(stack));
                    self.emit(Op::Compensate);
                    self.emit(Op::Pop);
                    self.emit(Op::MakeList(0));
                    self.emit(Op::StoreLocal(stack));
                }
            }
            StmtKind::Let {
                mutable: _,
                name,
                ty,
                value,
            } => {
                let static_type = match ty {
                    Some(ty) => self.resolve_type(ty),
                    None => self.type_of(value),
                };
                self.expr(value)?;
                let slot = self.bind(&name.name, static_type, name.span)?;
                self.emit(Op::StoreLocal(slot));
            }
            StmtKind::Assign { target, value } => self.assign(target, value)?,
            StmtKind::Expr(expr) => self.discard(expr)?,
            StmtKind::While { cond, body } => self.while_loop(cond, body)?,
            StmtKind::For { var, iter, body } => self.for_loop(var, iter, body)?,
            StmtKind::Break | StmtKind::Continue => {
                self.leave_loop(matches!(stmt.kind, StmtKind::Break), stmt.span)?
            }
            StmtKind::Return(value) => {
                let depth = self.depth;
                match value {
                    Some(value) => self.expr(value)?,
                    None => self.emit_const(Constant::None),
                }
                if depth > 0 {
                    // Values an enclosing expression pushed are dead: drop them so that
                    // `return` finds only its result. The result waits in a temporary.
                    let temp = self.new_slot(stmt.span)?;
                    self.emit(Op::StoreLocal(temp));
                    for _ in 0..depth {
                        self.emit(Op::Pop);
                    }
                    self.emit(Op::LoadLocal(temp));
                }
                self.emit(Op::Return);
                self.depth = depth;
            }
            StmtKind::Fail(value) => self.fail(value)?,
            StmtKind::ContinueAs { workflow, args } => {
                let Some(Resolved::Workflow(index)) = self.resolved(workflow.span) else {
                    return Err(self.error_at(workflow.span, "`continue as` was not resolved"));
                };
                for arg in args {
                    self.expr(arg)?;
                }
                self.emit(Op::ContinueAs {
                    workflow: index_u32(index),
                });
            }
            StmtKind::Sleep(duration) => {
                self.expr(duration)?;
                self.emit(Op::Sleep);
            }
            StmtKind::Audit { event, fields } => {
                self.record(fields.iter().map(|f| (f.name.name.as_str(), &f.value)), &[])?;
                let event = self.b.event(&event.value);
                self.emit(Op::Audit { event });
            }
            // An audit record `approval_waived`: `{tools, because, context}`.
            StmtKind::Waive(waiver) => {
                for tool in &waiver.tools {
                    self.emit_const(Constant::Str(tool.name.to_string()));
                }
                self.emit(Op::MakeList(index_u32(waiver.tools.len())));
                self.emit_const(Constant::Str(waiver.because.value.to_string()));
                self.record(
                    waiver
                        .fields
                        .iter()
                        .map(|f| (f.name.name.as_str(), &f.value)),
                    &[],
                )?;
                let fields = self.b.field_list(["tools", "because", "context"]);
                self.emit(Op::MakeRecord(fields));
                let event = self.b.event(APPROVAL_WAIVED_EVENT);
                self.emit(Op::Audit { event });
            }
            StmtKind::Query { name, ret, body } => self.query(name, ret, body)?,
            StmtKind::Error => return Err(self.error_at(stmt.span, "a statement did not parse")),
        }
        Ok(())
    }

    /// `query name -> T { … }`: its body lowered into code of its own, which reads the
    /// workflow's local slots; the workflow's code goes on past it. The query can be
    /// evaluated once a run is past this point (`from_pc`).
    fn query(&mut self, name: &ast::Ident, ret: &ast::TypeExpr, body: &Block) -> Result {
        let from_pc = self.here();
        let code = std::mem::take(&mut self.code);
        let debug = std::mem::take(&mut self.debug);
        let (depth, regions) = (self.depth, std::mem::take(&mut self.regions));
        let loops = std::mem::take(&mut self.loops);
        self.depth = 0;
        let mark = self.scope.len();
        let lowered = self.block(body, Want::Value).map(|_| self.emit(Op::Return));
        self.scope.truncate(mark);
        let query_code = std::mem::replace(&mut self.code, code);
        let query_debug = std::mem::replace(&mut self.debug, debug);
        (self.depth, self.regions, self.loops) = (depth, regions, loops);
        lowered?;
        let ty = self.resolve_type(ret);
        let ret = self.b.type_ref(&ty);
        self.b.module.queries.push(QueryCode {
            workflow: self.workflow,
            name: name.name.to_string(),
            ret,
            from_pc,
            code: query_code,
            debug: query_debug,
        });
        Ok(())
    }

    fn while_loop(&mut self, cond: &Expr, body: &Block) -> Result {
        let start = self.here();
        let exit = if matches!(cond.kind, ExprKind::Bool(true)) {
            None
        } else {
            self.expr(cond)?;
            Some(self.emit(Op::JumpIfFalse(PLACEHOLDER)))
        };
        self.loops.push(LoopCtx {
            depth: self.depth,
            regions: self.regions.len(),
            breaks: Vec::new(),
            continues: Vec::new(),
            continue_to: Some(start),
        });
        self.block(body, Want::Discard)?;
        self.emit(Op::Jump(start));
        let ctx = self.pop_loop();
        for at in exit.into_iter().chain(ctx.breaks) {
            self.patch(at);
        }
        Ok(())
    }

    fn for_loop(&mut self, var: &ast::Ident, iter: &Expr, body: &Block) -> Result {
        let element = match self.type_of(iter) {
            Type::List(element) => *element,
            Type::Map(_) => Type::String,
            Type::Json => Type::Json,
            _ => Type::Unknown,
        };
        self.expr(iter)?;
        let kind = self
            .b
            .program
            .checked
            .resolutions
            .loops
            .get(&(self.file, iter.span))
            .copied();
        if kind == Some(IterKind::MapKeys) {
            self.emit(Op::CallBuiltin {
                id: flow_stdlib::Builtin::Keys.id(),
                args: 1,
            });
        }
        let list = self.new_slot(iter.span)?;
        self.emit(Op::StoreLocal(list));
        let index = self.new_slot(iter.span)?;
        self.emit_const(Constant::Int(0));
        self.emit(Op::StoreLocal(index));
        let start = self.here();
        self.emit(Op::LoadLocal(index));
        self.emit(Op::LoadLocal(list));
        self.emit(Op::CallBuiltin {
            id: flow_stdlib::Builtin::Len.id(),
            args: 1,
        });
        self.emit(Op::Lt);
        let exit = self.emit(Op::JumpIfFalse(PLACEHOLDER));
        self.emit(Op::LoadLocal(list));
        self.emit(Op::LoadLocal(index));
        self.emit(Op::Index);
        let mark = self.scope.len();
        let slot = self.bind(&var.name, element, var.span)?;
        self.emit(Op::StoreLocal(slot));
        self.loops.push(LoopCtx {
            depth: self.depth,
            regions: self.regions.len(),
            breaks: Vec::new(),
            continues: Vec::new(),
            continue_to: None,
        });
        self.block(body, Want::Discard)?;
        let ctx = self.pop_loop();
        for at in ctx.continues {
            self.patch(at);
        }
        self.emit(Op::LoadLocal(index));
        self.emit_const(Constant::Int(1));
        self.emit(Op::Add);
        self.emit(Op::StoreLocal(index));
        self.emit(Op::Jump(start));
        for at in std::iter::once(exit).chain(ctx.breaks) {
            self.patch(at);
        }
        self.scope.truncate(mark);
        Ok(())
    }

    fn pop_loop(&mut self) -> LoopCtx {
        self.loops.pop().unwrap_or(LoopCtx {
            depth: 0,
            regions: 0,
            breaks: Vec::new(),
            continues: Vec::new(),
            continue_to: None,
        })
    }

    /// `break` or `continue`: drop what enclosing expressions pushed, close the regions
    /// entered inside the loop (innermost first), jump.
    fn leave_loop(&mut self, is_break: bool, span: Span) -> Result {
        let Some(ctx) = self.loops.last() else {
            return Err(self.error_at(span, "`break` or `continue` outside a loop"));
        };
        let (loop_depth, loop_regions, continue_to) = (ctx.depth, ctx.regions, ctx.continue_to);
        let depth = self.depth;
        for _ in loop_depth..depth {
            self.emit(Op::Pop);
        }
        let closing: Vec<Region> = self.regions[loop_regions..].iter().rev().copied().collect();
        for region in closing {
            self.emit(match region {
                Region::Handler => Op::PopHandler,
                Region::Timeout => Op::ExitTimeout,
            });
        }
        match (is_break, continue_to) {
            (false, Some(target)) => {
                self.emit(Op::Jump(target));
            }
            _ => {
                let at = self.emit(Op::Jump(PLACEHOLDER));
                if let Some(ctx) = self.loops.last_mut() {
                    if is_break {
                        ctx.breaks.push(at);
                    } else {
                        ctx.continues.push(at);
                    }
                }
            }
        }
        // The code after a jump is unreachable; keep the count as if the statement ran.
        self.depth = depth;
        Ok(())
    }

    /// `x = v` stores; `x.a.b = v` pushes `x` and `x.a`, then sets `b` in `x.a` and `a` in
    /// `x` (`set_field`, from the inside out), and stores the result in `x`.
    fn assign(&mut self, target: &Expr, value: &Expr) -> Result {
        let mut path: Vec<&str> = Vec::new();
        let mut root = target;
        while let ExprKind::Field { base, name, .. } = &root.kind {
            path.push(&name.name);
            root = base;
        }
        path.reverse();
        let ExprKind::Name(name) = &root.kind else {
            return Err(self.error_at(target.span, "cannot assign to this"));
        };
        let Some(local) = self.lookup(name) else {
            return Err(self.error_at(root.span, format!("unknown variable `{name}`")));
        };
        let slot = local.slot;
        self.expr(value)?;
        if path.is_empty() {
            self.emit(Op::StoreLocal(slot));
            return Ok(());
        }
        let temp = self.new_slot(target.span)?;
        self.emit(Op::StoreLocal(temp));
        let saved = self.enter(target.span);
        self.emit(Op::LoadLocal(slot));
        for field in &path[..path.len() - 1] {
            let constant = self.b.string(field);
            self.emit(Op::Dup);
            self.emit(Op::GetField(constant));
        }
        self.emit(Op::LoadLocal(temp));
        for field in path.iter().rev() {
            let constant = self.b.string(field);
            self.emit(Op::SetField(constant));
        }
        self.emit(Op::StoreLocal(slot));
        self.loc = saved;
        Ok(())
    }

    fn record_fields(&self, ty: &Type) -> Option<Vec<(Name, Type)>> {
        match ty {
            Type::Named(id) => match &self.b.program.checked.types.get(*id).kind {
                TypeDefKind::Record(fields) => Some(
                    fields
                        .iter()
                        .map(|f| (f.name.clone(), f.ty.clone()))
                        .collect(),
                ),
                TypeDefKind::Enum(_) | TypeDefKind::Refined(_) => None,
            },
            Type::Record(fields) => Some(fields.clone()),
            _ => None,
        }
    }

    // ----- expressions --------------------------------------------------------------

    fn expr_want(&mut self, expr: &Expr, want: Want) -> Result {
        match want {
            Want::Value => self.expr(expr),
            Want::Discard => self.discard(expr),
        }
    }

    /// Evaluates `expr` for its effects only.
    fn discard(&mut self, expr: &Expr) -> Result {
        let saved = self.enter(expr.span);
        let result = match &expr.kind {
            ExprKind::Block(block) => self.block(block, Want::Discard),
            ExprKind::If {
                cond,
                then_block,
                else_branch,
            } => self.if_expr(cond, then_block, else_branch.as_deref(), Want::Discard),
            ExprKind::Match { scrutinee, arms } => self.match_expr(scrutinee, arms, Want::Discard),
            ExprKind::Select { arms } => self.select_expr(arms, Want::Discard),
            ExprKind::Try { body, catches } => self.try_expr(body, catches, Want::Discard),
            ExprKind::Retry { policies, body, .. } => self.retry(policies, body, Want::Discard),
            ExprKind::Timeout { duration, body } => self.timeout(duration, body, Want::Discard),
            _ => {
                let result = self.expr(expr);
                self.emit(Op::Pop);
                result
            }
        };
        self.loc = saved;
        result
    }

    fn expr(&mut self, expr: &Expr) -> Result {
        let saved = self.enter(expr.span);
        let result = self.expr_kind(expr);
        if result.is_ok() {
            self.conform(expr.span);
        }
        self.loc = saved;
        result
    }

    /// The optional fields the record literal at `span` leaves out.
    fn omitted(&self, span: Span) -> Vec<String> {
        let omitted = &self.b.program.checked.resolutions.omitted;
        omitted.get(&(self.file, span)).cloned().unwrap_or_default()
    }

    /// A value the checker saw take a declared type here that changes its shape (text that
    /// becomes a `Secret`, a record that gets its omitted optional fields) is converted.
    fn conform(&mut self, span: Span) {
        let conversions = &self.b.program.checked.resolutions.conversions;
        if conversions.is_empty() {
            return;
        }
        if let Some(ty) = conversions.get(&(self.file, span)).cloned() {
            let ty = self.b.type_ref(&ty);
            self.emit(Op::Conform(ty.0));
        }
    }

    fn expr_kind(&mut self, expr: &Expr) -> Result {
        match &expr.kind {
            ExprKind::Int(value) => self.emit_const(Constant::Int(*value)),
            ExprKind::Float(value) => self.emit_const(Constant::Float(*value)),
            ExprKind::Bool(value) => self.emit_const(Constant::Bool(*value)),
            ExprKind::None => self.emit_const(Constant::None),
            ExprKind::Time(ms) => self.emit_const(Constant::Time(*ms)),
            ExprKind::Duration(ms) => {
                self.emit_const(Constant::Duration(i64::try_from(*ms).unwrap_or(i64::MAX)))
            }
            ExprKind::Str(parts) => self.string(parts)?,
            ExprKind::Name(name) => {
                if let Some(local) = self.lookup(name) {
                    let slot = local.slot;
                    self.emit(Op::LoadLocal(slot));
                } else if let Some(Resolved::Variant(ty, variant)) = self.resolved(expr.span) {
                    self.make_variant(ty, variant);
                } else {
                    return Err(self.error_at(expr.span, format!("`{name}` was not resolved")));
                }
            }
            ExprKind::List(items) => {
                for item in items {
                    self.expr(item)?;
                }
                self.emit(Op::MakeList(index_u32(items.len())));
            }
            ExprKind::Record(fields) => {
                let omitted = self.omitted(expr.span);
                self.record(
                    fields.iter().map(|f| (f.name.name.as_str(), &f.value)),
                    &omitted,
                )?
            }
            ExprKind::Field {
                base,
                name,
                optional,
            } => {
                if let Some(Resolved::Variant(ty, variant)) = self.resolved(expr.span) {
                    self.make_variant(ty, variant);
                } else {
                    self.expr(base)?;
                    let field = self.b.string(&name.name);
                    self.emit(if *optional {
                        Op::GetFieldOptional(field)
                    } else {
                        Op::GetField(field)
                    });
                }
            }
            ExprKind::Index { base, index } => {
                self.expr(base)?;
                self.expr(index)?;
                self.emit(Op::Index);
            }
            ExprKind::Call { args, .. } => self.call(expr.span, args)?,
            ExprKind::Unary { op, operand } => match (op, &operand.kind) {
                // `-1`, `-2.5`, `-5m`: one constant.
                (UnaryOp::Neg, ExprKind::Int(value)) => {
                    self.emit_const(Constant::Int(value.wrapping_neg()))
                }
                (UnaryOp::Neg, ExprKind::Float(value)) => self.emit_const(Constant::Float(-value)),
                (UnaryOp::Neg, ExprKind::Duration(ms)) => self.emit_const(Constant::Duration(
                    i64::try_from(*ms).map(|ms| -ms).unwrap_or(i64::MIN),
                )),
                _ => {
                    self.expr(operand)?;
                    self.emit(match op {
                        UnaryOp::Not => Op::Not,
                        UnaryOp::Neg => Op::Neg,
                    });
                }
            },
            ExprKind::Binary { op, lhs, rhs } => self.binary(*op, lhs, rhs)?,
            ExprKind::If {
                cond,
                then_block,
                else_branch,
            } => self.if_expr(cond, then_block, else_branch.as_deref(), Want::Value)?,
            ExprKind::Match { scrutinee, arms } => self.match_expr(scrutinee, arms, Want::Value)?,
            ExprKind::Block(block) => self.block(block, Want::Value)?,
            ExprKind::Retry { policies, body, .. } => self.retry(policies, body, Want::Value)?,
            ExprKind::Timeout { duration, body } => self.timeout(duration, body, Want::Value)?,
            ExprKind::Try { body, catches } => self.try_expr(body, catches, Want::Value)?,
            ExprKind::AwaitApproval { gate, options } => {
                self.gate_options(options)?;
                let gate = self.b.gate(&gate.value);
                let at = self.emit(Op::AwaitApproval { gate });
                self.gate_context(options, at);
            }
            ExprKind::AwaitInput { ty, name, options } => {
                self.gate_options(options)?;
                let ty = self.resolve_type(ty);
                let ty = self.b.type_ref(&ty);
                let request = self.b.input_request(&name.value, ty);
                let at = self.emit(Op::AwaitInput { request });
                self.gate_context(options, at);
            }
            ExprKind::AwaitSignal { name } => {
                let Some((signal, _)) = self.b.module.signal(self.workflow, &name.name) else {
                    return Err(self.error_at(name.span, "the workflow accepts no such signal"));
                };
                self.emit(Op::AwaitSignal { signal });
            }
            ExprKind::Select { arms } => self.select_expr(arms, Want::Value)?,
            ExprKind::Parallel(parallel) => self.parallel_expr(parallel, expr.span)?,
            ExprKind::Error => return Err(self.error_at(expr.span, "an expression did not parse")),
        }
        Ok(())
    }

    /// A plain string is one constant; an interpolated one is its pieces, each made text,
    /// then concatenated.
    fn string(&mut self, parts: &[StrPart]) -> Result {
        // Adjacent text parts are joined first.
        let mut pieces: Vec<std::result::Result<String, &Expr>> = Vec::new();
        for part in parts {
            match part {
                StrPart::Text(text) => match pieces.last_mut() {
                    Some(Ok(previous)) => previous.push_str(text),
                    _ => pieces.push(Ok(text.clone())),
                },
                StrPart::Interpolation(expr) => pieces.push(Err(expr)),
            }
        }
        match pieces.as_slice() {
            [] => self.emit_const(Constant::Str(String::new())),
            [Ok(text)] => self.emit_const(Constant::Str(text.clone())),
            _ => {
                let count = pieces.len();
                for piece in pieces {
                    match piece {
                        Ok(text) => self.emit_const(Constant::Str(text)),
                        Err(expr) => {
                            self.expr(expr)?;
                            self.emit(Op::ToText);
                        }
                    }
                }
                if count > 1 {
                    self.emit(Op::Concat(index_u32(count)));
                }
            }
        }
        Ok(())
    }

    fn call(&mut self, span: Span, args: &[Expr]) -> Result {
        let resolved = self.resolved(span);
        if resolved.is_none() {
            return Err(self.error_at(span, "this call was not resolved"));
        }
        for arg in args {
            self.expr(arg)?;
        }
        match resolved {
            Some(Resolved::Tool(tool)) => {
                self.emit(Op::CallTool {
                    tool: index_u32(tool),
                });
            }
            Some(Resolved::Workflow(workflow)) => {
                self.emit(Op::CallWorkflow {
                    workflow: index_u32(workflow),
                });
            }
            Some(Resolved::Function(function)) => {
                self.emit(Op::CallFunction {
                    function: index_u32(function),
                });
            }
            Some(Resolved::Variant(ty, variant)) => self.make_variant(ty, variant),
            Some(Resolved::Error(_)) => {
                return Err(self.error_at(span, "a named error is made only by `fail`"));
            }
            Some(Resolved::Builtin(flow_stdlib::Builtin::Any)) => {
                // `any(a, b)` and `any([a, b])` both pass one list; the runtime flattens a
                // list inside it, so the bytecode call always has the signature's one argument.
                self.emit(Op::MakeList(index_u32(args.len())));
                self.emit(Op::CallBuiltin {
                    id: flow_stdlib::Builtin::Any.id(),
                    args: 1,
                });
            }
            Some(Resolved::Builtin(builtin)) => {
                let args = u8::try_from(args.len())
                    .map_err(|_| self.error_at(span, "too many arguments"))?;
                self.emit(Op::CallBuiltin {
                    id: builtin.id(),
                    args,
                });
            }
            None => {}
        }
        Ok(())
    }

    fn binary(&mut self, op: BinaryOp, lhs: &Expr, rhs: &Expr) -> Result {
        match op {
            BinaryOp::And | BinaryOp::Or => {
                // `a && b`: a; JumpIfFalse F; b; Jump end; F: false; end.
                self.expr(lhs)?;
                let short = self.emit(if op == BinaryOp::And {
                    Op::JumpIfFalse(PLACEHOLDER)
                } else {
                    Op::JumpIfTrue(PLACEHOLDER)
                });
                let depth = self.depth;
                self.expr(rhs)?;
                let end = self.emit(Op::Jump(PLACEHOLDER));
                self.patch(short);
                self.depth = depth;
                self.emit_const(Constant::Bool(op == BinaryOp::Or));
                self.patch(end);
            }
            BinaryOp::Coalesce => {
                self.expr(lhs)?;
                let end = self.emit(Op::JumpIfNotNone(PLACEHOLDER));
                self.expr(rhs)?;
                self.patch(end);
            }
            _ => {
                self.expr(lhs)?;
                self.expr(rhs)?;
                self.emit(match op {
                    BinaryOp::Eq => Op::Eq,
                    BinaryOp::NotEq => Op::NotEq,
                    BinaryOp::Lt => Op::Lt,
                    BinaryOp::LtEq => Op::LtEq,
                    BinaryOp::Gt => Op::Gt,
                    BinaryOp::GtEq => Op::GtEq,
                    BinaryOp::Add => Op::Add,
                    BinaryOp::Sub => Op::Sub,
                    BinaryOp::Mul => Op::Mul,
                    BinaryOp::Div => Op::Div,
                    BinaryOp::Rem => Op::Rem,
                    BinaryOp::And | BinaryOp::Or | BinaryOp::Coalesce => Op::Eq,
                });
            }
        }
        Ok(())
    }

    fn if_expr(
        &mut self,
        cond: &Expr,
        then_block: &Block,
        else_branch: Option<&Expr>,
        want: Want,
    ) -> Result {
        self.expr(cond)?;
        let to_else = self.emit(Op::JumpIfFalse(PLACEHOLDER));
        let depth = self.depth;
        let Some(else_branch) = else_branch else {
            // Without `else` the `if` has no value: `none` on both paths.
            self.block(then_block, Want::Discard)?;
            self.patch(to_else);
            if want == Want::Value {
                self.emit_const(Constant::None);
            }
            return Ok(());
        };
        self.block(then_block, want)?;
        let to_end = (!block_diverges(then_block)).then(|| self.emit(Op::Jump(PLACEHOLDER)));
        self.patch(to_else);
        self.depth = depth;
        self.expr_want(else_branch, want)?;
        if let Some(at) = to_end {
            self.patch(at);
        }
        Ok(())
    }

    fn match_expr(&mut self, scrutinee: &Expr, arms: &[ast::MatchArm], want: Want) -> Result {
        let subject_type = self.type_of(scrutinee);
        self.expr(scrutinee)?;
        let subject = self.new_slot(scrutinee.span)?;
        self.emit(Op::StoreLocal(subject));
        let depth = self.depth;
        let mut to_next: Vec<usize> = Vec::new();
        let mut to_end: Vec<usize> = Vec::new();
        for (index, arm) in arms.iter().enumerate() {
            for at in to_next.drain(..) {
                self.patch(at);
            }
            self.depth = depth;
            let saved = self.enter(arm.span);
            let mark = self.scope.len();
            let load = [Op::LoadLocal(subject)];
            self.pattern(&arm.pattern, &subject_type, &load, &mut to_next)?;
            self.expr_want(&arm.body, want)?;
            self.scope.truncate(mark);
            let last = index + 1 == arms.len() && to_next.is_empty();
            if !last && !expr_diverges(&arm.body) {
                to_end.push(self.emit(Op::Jump(PLACEHOLDER)));
            }
            self.loc = saved;
        }
        if arms.is_empty() || !to_next.is_empty() {
            // Unreachable when the checker proved the match exhaustive.
            for at in to_next.drain(..) {
                self.patch(at);
            }
            self.depth = depth;
            self.emit_const(Constant::Str(
                "no arm of this `match` matches the value".into(),
            ));
            self.emit(Op::Fail);
        }
        for at in to_end {
            self.patch(at);
        }
        self.depth = depth + u32::from(want == Want::Value);
        Ok(())
    }

    /// `select { … }`: the `after` arms' durations, the `select` instruction (which jumps to
    /// the arm that happened with its value pushed), then each arm's code: the value bound
    /// (or dropped), the body, a jump to the end.
    /// `parallel`: its branches become workflows of their own (named after this one,
    /// `order#1` or `order#1.docs`, which no source can name), taking the item and the
    /// locals the checker saw them read; the instruction gets the items, the limit and
    /// those locals' values.
    fn parallel_expr(&mut self, parallel: &ast::Parallel, span: Span) -> Result {
        let facts = self.branch_facts(span)?;
        self.parallels += 1;
        let base = format!(
            "{}#{}",
            self.b.module.workflows[self.workflow as usize].name, self.parallels
        );
        let (branches, fields) = match &parallel.branches {
            ast::ParallelBranches::Each {
                items, max, body, ..
            } => {
                self.expr(items)?;
                let kind = self
                    .b
                    .program
                    .checked
                    .resolutions
                    .loops
                    .get(&(self.file, items.span));
                if kind == Some(&IterKind::MapKeys) {
                    self.emit(Op::CallBuiltin {
                        id: flow_stdlib::Builtin::Keys.id(),
                        args: 1,
                    });
                }
                match max {
                    Some(max) => self.expr(max)?,
                    None => self.emit_const(Constant::Int(0)),
                }
                self.load_captures(&facts.captures, span)?;
                let params: Vec<(Name, Type)> =
                    facts.item.iter().chain(&facts.captures).cloned().collect();
                let ret = facts.results.first().cloned().unwrap_or(Type::Unit);
                let branch = Branch {
                    name: base,
                    params,
                    ret,
                    body: BranchBody::Block(body),
                    span,
                };
                (vec![self.lower_branch(branch)?], None)
            }
            ast::ParallelBranches::Fields(fields) => {
                self.load_captures(&facts.captures, span)?;
                let mut branches = Vec::new();
                for (field, ret) in fields.iter().zip(&facts.results) {
                    let branch = Branch {
                        name: format!("{base}.{}", field.name.name),
                        params: facts.captures.clone(),
                        ret: ret.clone(),
                        body: BranchBody::Expr(&field.value),
                        span: field.value.span,
                    };
                    branches.push(self.lower_branch(branch)?);
                }
                let names = fields.iter().map(|f| f.name.name.as_str());
                (branches, Some(self.b.field_list(names)))
            }
        };
        let index = index_u32(self.b.module.parallels.len());
        self.b.module.parallels.push(ParallelInfo {
            workflow: self.workflow,
            branches,
            fields,
            collect: parallel.collect,
            captures: index_u32(facts.captures.len()),
        });
        self.emit(Op::Parallel(index));
        Ok(())
    }

    /// What the checker recorded of the branches at `span` (a `parallel`, or what a
    /// `select` arm waits for).
    fn branch_facts(&self, span: Span) -> Result<check::ParallelFacts> {
        self.b
            .program
            .checked
            .resolutions
            .parallels
            .get(&(self.file, span))
            .cloned()
            .ok_or_else(|| self.error_at(span, "the checker recorded nothing for these branches"))
    }

    /// `on cancel { … }`: its block lowered as a workflow of its own (`w#cancel`, taking
    /// what it reads), and, when reached, those values kept in locals of their own and the
    /// block marked as reached.
    fn on_cancel_stmt(&mut self, block: &Block) -> Result {
        let facts = self.branch_facts(block.span)?;
        let branch = Branch {
            name: format!(
                "{}{}",
                self.b.module.workflows[self.workflow as usize].name,
                crate::bytecode::ON_CANCEL_SUFFIX
            ),
            params: facts.captures.clone(),
            ret: facts.results.first().cloned().unwrap_or(Type::Unit),
            body: BranchBody::Block(block),
            span: block.span,
        };
        let workflow = self.lower_branch(branch)?;
        let Some(reached) = self.on_cancel.as_ref().map(|c| c.reached) else {
            return Err(self.error_at(block.span, "`on cancel` outside a workflow's own code"));
        };
        let mut captures = Vec::with_capacity(facts.captures.len());
        for capture in &facts.captures {
            self.load_captures(std::slice::from_ref(capture), block.span)?;
            let slot = self.new_slot(block.span)?;
            self.emit(Op::StoreLocal(slot));
            captures.push(slot);
        }
        self.emit_const(Constant::Bool(true));
        self.emit(Op::StoreLocal(reached));
        self.on_cancel = Some(OnCancel {
            reached,
            workflow,
            captures,
        });
        Ok(())
    }

    /// In the guard around a workflow's body, with the error in local `error`: when the
    /// error is a cancel and the `on cancel` was reached, runs its block as a child run. Its
    /// failure is its own (recorded as the child's); the undo blocks run all the same.
    fn cancel_handler(&mut self, error: u16) -> Result {
        let Some(cancel) = self.on_cancel.take() else {
            return Ok(());
        };
        if cancel.workflow == u32::MAX {
            return Ok(());
        }
        let depth = self.depth;
        let kind = self.b.string("kind");
        self.emit(Op::LoadLocal(error));
        self.emit(Op::GetField(kind));
        self.emit_const(Constant::Str("Cancelled".into()));
        self.emit(Op::Eq);
        let not_cancelled = self.emit(Op::JumpIfFalse(PLACEHOLDER));
        self.emit(Op::LoadLocal(cancel.reached));
        let not_reached = self.emit(Op::JumpIfFalse(PLACEHOLDER));
        let push = self.emit(Op::PushHandler {
            catch: PLACEHOLDER,
            kinds: u32::MAX,
        });
        for slot in &cancel.captures {
            self.emit(Op::LoadLocal(*slot));
        }
        self.emit(Op::CallWorkflow {
            workflow: cancel.workflow,
        });
        self.emit(Op::Pop);
        self.emit(Op::PopHandler);
        let done = self.emit(Op::Jump(PLACEHOLDER));
        self.patch(push);
        // Its error, pushed by the interpreter: dropped.
        self.depth = depth + 1;
        self.emit(Op::Pop);
        self.patch(done);
        self.patch(not_cancelled);
        self.patch(not_reached);
        self.depth = depth;
        Ok(())
    }

    /// `let b = step() undo { … }`: the `let`, then its undo block (a workflow of its own,
    /// taking what it reads) pushed on the undo stack with those values.
    fn let_undo(&mut self, name: &ast::Ident, value: &Expr, undo: &Block) -> Result {
        let static_type = self.type_of(value);
        self.expr(value)?;
        let slot = self.bind(&name.name, static_type, name.span)?;
        self.emit(Op::StoreLocal(slot));
        let facts = self.branch_facts(undo.span)?;
        self.parallels += 1;
        let branch = Branch {
            name: format!(
                "{}#{}.undo.{}",
                self.b.module.workflows[self.workflow as usize].name, self.parallels, name.name
            ),
            params: facts.captures.clone(),
            ret: facts.results.first().cloned().unwrap_or(Type::Unit),
            body: BranchBody::Block(undo),
            span: undo.span,
        };
        let workflow = self.lower_branch(branch)?;
        self.b.module.undos.push(UndoBlock {
            workflow: self.workflow,
            block: workflow,
        });
        let Some(stack) = self.undo_stack else {
            return Err(self.error_at(undo.span, "an undo block outside a workflow's own code"));
        };
        self.emit(Op::LoadLocal(stack));
        self.emit_const(Constant::Int(i64::from(workflow)));
        self.load_captures(&facts.captures, undo.span)?;
        self.emit(Op::MakeList(index_u32(facts.captures.len())));
        let fields = self.b.field_list(["workflow", "args"]);
        self.emit(Op::MakeRecord(fields));
        self.emit(Op::MakeList(1));
        self.emit(Op::Add);
        self.emit(Op::StoreLocal(stack));
        Ok(())
    }

    fn load_captures(&mut self, captures: &[(Name, Type)], span: Span) -> Result {
        for (name, _) in captures {
            let Some(local) = self.lookup(name) else {
                return Err(self.error_at(
                    span,
                    format!("a branch reads `{name}`, which is not in scope"),
                ));
            };
            let slot = local.slot;
            self.emit(Op::LoadLocal(slot));
        }
        Ok(())
    }

    /// Lowers one branch as a workflow appended to the module; its index.
    fn lower_branch(&mut self, branch: Branch<'_>) -> Result<u32> {
        let index = self.b.module.workflows.len();
        let params = branch
            .params
            .iter()
            .map(|(name, ty)| (name.to_string(), self.b.type_ref(ty)))
            .collect();
        let ret = self.b.type_ref(&branch.ret);
        self.b.module.workflows.push(WorkflowCode {
            name: branch.name.clone(),
            params,
            ret,
            locals: 0,
            code: Vec::new(),
            debug: Vec::new(),
        });
        let (code, debug, locals) = FnLower::run_branch(self.b, self.file, index, &branch)?;
        let workflow = &mut self.b.module.workflows[index];
        workflow.code = code;
        workflow.debug = debug;
        workflow.locals = locals;
        Ok(index_u32(index))
    }

    fn select_expr(&mut self, arms: &[ast::SelectArm], want: Want) -> Result {
        // Each `after` is a deadline from the time the `select` is reached, read once (a
        // durable clock read), so that a run woken by something else still has it.
        let started = if arms
            .iter()
            .any(|a| matches!(a.kind, ast::SelectArmKind::After { .. }))
        {
            self.emit(Op::CallBuiltin {
                id: flow_stdlib::Builtin::Now.id(),
                args: 0,
            });
            let slot = self.new_slot(arms[0].span)?;
            self.emit(Op::StoreLocal(slot));
            Some(slot)
        } else {
            None
        };
        let mut table = Vec::with_capacity(arms.len());
        for arm in arms {
            match &arm.kind {
                ast::SelectArmKind::Signal { name, .. } => {
                    let Some((signal, _)) = self.b.module.signal(self.workflow, &name.name) else {
                        return Err(self.error_at(name.span, "the workflow accepts no such signal"));
                    };
                    table.push(SelectArmInfo {
                        signal: Some(signal),
                        target: PLACEHOLDER,
                        wait: None,
                    });
                }
                ast::SelectArmKind::After { duration } => {
                    if let Some(started) = started {
                        self.emit(Op::LoadLocal(started));
                    }
                    self.expr(duration)?;
                    self.emit(Op::Add);
                    table.push(SelectArmInfo {
                        signal: None,
                        target: PLACEHOLDER,
                        wait: None,
                    });
                }
                // Its branch is lowered below, once every deadline is on the stack.
                ast::SelectArmKind::Wait { .. } => table.push(SelectArmInfo {
                    signal: None,
                    target: PLACEHOLDER,
                    wait: Some(PLACEHOLDER),
                }),
            }
        }
        let waits = arms
            .iter()
            .enumerate()
            .filter_map(|(i, arm)| match &arm.kind {
                ast::SelectArmKind::Wait { wait, .. } => Some((i, wait)),
                _ => None,
            })
            .collect::<Vec<_>>();
        if !waits.is_empty() {
            self.parallels += 1;
        }
        for (i, wait) in waits {
            let facts = self.branch_facts(wait.span)?;
            self.load_captures(&facts.captures, wait.span)?;
            let branch = Branch {
                name: format!(
                    "{}#{}.{i}",
                    self.b.module.workflows[self.workflow as usize].name, self.parallels
                ),
                params: facts.captures.clone(),
                ret: facts.results.first().cloned().unwrap_or(Type::Unit),
                body: BranchBody::Expr(wait),
                span: wait.span,
            };
            table[i].wait = Some(self.lower_branch(branch)?);
        }
        let index = index_u32(self.b.module.selects.len());
        self.b.module.selects.push(SelectInfo {
            workflow: self.workflow,
            arms: table,
        });
        self.emit(Op::Select(index));
        let depth = self.depth;
        let mut to_end: Vec<usize> = Vec::new();
        for (i, arm) in arms.iter().enumerate() {
            self.depth = depth;
            let target = self.here();
            self.b.module.selects[index as usize].arms[i].target = target;
            let saved = self.enter(arm.span);
            let mark = self.scope.len();
            match &arm.kind {
                ast::SelectArmKind::Signal {
                    name,
                    binding: Some(binding),
                } => {
                    let ty = self.signal_type(&name.name);
                    let slot = self.bind(&binding.name, ty, binding.span)?;
                    self.emit(Op::StoreLocal(slot));
                }
                ast::SelectArmKind::Wait {
                    wait,
                    binding: Some(binding),
                } => {
                    let ty = self.branch_facts(wait.span)?.results.first().cloned();
                    let slot =
                        self.bind(&binding.name, ty.unwrap_or(Type::Unknown), binding.span)?;
                    self.emit(Op::StoreLocal(slot));
                }
                _ => {
                    self.emit(Op::Pop);
                }
            }
            self.expr_want(&arm.body, want)?;
            self.scope.truncate(mark);
            if i + 1 < arms.len() && !expr_diverges(&arm.body) {
                to_end.push(self.emit(Op::Jump(PLACEHOLDER)));
            }
            self.loc = saved;
        }
        for at in to_end {
            self.patch(at);
        }
        self.depth = depth - 1 + u32::from(want == Want::Value);
        Ok(())
    }

    /// Tests the value that `load` pushes against `pattern`: a failed test jumps to one of
    /// `to_next` (patched to the next arm); bindings are stored in fresh slots.
    fn pattern(
        &mut self,
        pattern: &Pattern,
        ty: &Type,
        load: &[Op],
        to_next: &mut Vec<usize>,
    ) -> Result {
        let saved = self.enter(pattern.span);
        match &pattern.kind {
            PatternKind::Wildcard => {}
            PatternKind::Name(name) => match self.resolved(pattern.span) {
                Some(Resolved::Variant(ty, variant)) => {
                    let name = self.variant_name(ty, variant);
                    let name = self.b.string(&name);
                    self.test(load, to_next, &[Op::IsVariant(name)]);
                }
                _ => {
                    for op in load {
                        self.emit(*op);
                    }
                    let slot = self.bind(name, ty.clone(), pattern.span)?;
                    self.emit(Op::StoreLocal(slot));
                }
            },
            PatternKind::Variant { fields, .. } => {
                let Some(Resolved::Variant(ty, variant)) = self.resolved(pattern.span) else {
                    return Err(self.error_at(pattern.span, "this pattern was not resolved"));
                };
                let name = self.variant_name(ty, variant);
                let name = self.b.string(&name);
                self.test(load, to_next, &[Op::IsVariant(name)]);
                let types = self.variant_field_types(pattern.span);
                for (index, field) in fields.iter().enumerate() {
                    let mut inner = load.to_vec();
                    inner.push(Op::VariantField(index_u32(index)));
                    let ty = types.get(index).cloned().unwrap_or(Type::Unknown);
                    self.pattern(field, &ty, &inner, to_next)?;
                }
            }
            PatternKind::Int(value) => {
                let c = self.b.constant(Constant::Int(*value));
                self.test(load, to_next, &[Op::Const(c), Op::Eq]);
            }
            PatternKind::Duration(ms) => {
                let c = self
                    .b
                    .constant(Constant::Duration(i64::try_from(*ms).unwrap_or(i64::MAX)));
                self.test(load, to_next, &[Op::Const(c), Op::Eq]);
            }
            PatternKind::Str(text) => {
                let c = self.b.constant(Constant::Str(text.clone()));
                self.test(load, to_next, &[Op::Const(c), Op::Eq]);
            }
            PatternKind::Bool(value) => {
                let c = self.b.constant(Constant::Bool(*value));
                self.test(load, to_next, &[Op::Const(c), Op::Eq]);
            }
            PatternKind::None => self.test(load, to_next, &[Op::IsNone]),
            PatternKind::Error => {
                return Err(self.error_at(pattern.span, "a pattern did not parse"));
            }
        }
        self.loc = saved;
        Ok(())
    }

    /// Pushes the value, applies `check` (which leaves a Bool) and jumps to the next arm
    /// when it is false.
    fn test(&mut self, load: &[Op], to_next: &mut Vec<usize>, check: &[Op]) {
        for op in load.iter().chain(check) {
            self.emit(*op);
        }
        to_next.push(self.emit(Op::JumpIfFalse(PLACEHOLDER)));
    }

    fn try_expr(&mut self, body: &Block, catches: &[ast::Catch], want: Want) -> Result {
        // A lone `catch e`: the error goes straight into `e`.
        let lone = match catches {
            [only] if only.error.is_none() => Some(only),
            _ => None,
        };
        let kinds = if catches.iter().any(|c| c.error.is_none()) {
            u32::MAX
        } else {
            let names = catches
                .iter()
                .filter_map(|c| c.error.as_ref())
                .map(|e| e.name.to_string())
                .collect();
            self.b.kind_list(names)
        };
        let push = self.emit(Op::PushHandler {
            catch: PLACEHOLDER,
            kinds,
        });
        let depth = self.depth;
        self.regions.push(Region::Handler);
        self.block(body, want)?;
        self.regions.pop();
        self.emit(Op::PopHandler);
        let mut to_end = vec![self.emit(Op::Jump(PLACEHOLDER))];
        self.patch(push);
        // The interpreter unwinds to the handler's depth and pushes the error record.
        self.depth = depth + 1;
        if let Some(catch) = lone {
            let mark = self.scope.len();
            match &catch.binding {
                Some(binding) => {
                    let slot = self.bind(&binding.name, self.error_type(), binding.span)?;
                    self.emit(Op::StoreLocal(slot));
                }
                None => {
                    self.emit(Op::Pop);
                }
            }
            self.block(&catch.handler, want)?;
            self.scope.truncate(mark);
            for at in to_end {
                self.patch(at);
            }
            return Ok(());
        }
        let caught = self.new_slot(body.span)?;
        self.emit(Op::StoreLocal(caught));
        for catch in catches {
            self.depth = depth;
            let saved = self.enter(catch.span);
            let skip = match &catch.error {
                Some(error) => {
                    self.emit(Op::LoadLocal(caught));
                    let kind = self.b.string("kind");
                    self.emit(Op::GetField(kind));
                    self.emit_const(Constant::Str(error.name.to_string()));
                    self.emit(Op::Eq);
                    Some(self.emit(Op::JumpIfFalse(PLACEHOLDER)))
                }
                None => None,
            };
            let mark = self.scope.len();
            if let Some(binding) = &catch.binding {
                let ty = self.caught_type(catch);
                let slot = self.bind(&binding.name, ty, binding.span)?;
                self.emit(Op::LoadLocal(caught));
                self.emit(Op::StoreLocal(slot));
            }
            self.block(&catch.handler, want)?;
            self.scope.truncate(mark);
            if !block_diverges(&catch.handler) {
                to_end.push(self.emit(Op::Jump(PLACEHOLDER)));
            }
            if let Some(skip) = skip {
                self.patch(skip);
            }
            self.loc = saved;
        }
        // No `catch` took it (a kind the handler lets through cannot get here, but the
        // bytecode says what happens anyway): it goes on up.
        self.depth = depth;
        self.emit(Op::LoadLocal(caught));
        self.emit(Op::Raise);
        for at in to_end {
            self.patch(at);
        }
        self.depth = depth + u32::from(want == Want::Value);
        Ok(())
    }

    /// The type a `catch` binds: the named error's record, or `Error`.
    fn caught_type(&self, catch: &ast::Catch) -> Type {
        let checked = &self.b.program.checked;
        let named = catch.error.as_ref().and_then(|error| {
            let scope = checked.scopes.get(self.file.0 as usize)?;
            let ty = scope.lookup_type(&error.name)?;
            checked.error_of(ty).map(|_| Type::Named(ty))
        });
        named.unwrap_or_else(|| self.error_type())
    }

    /// `fail "text"`, `fail NotFound(id)` (a named error's record, raised) or `fail e` (a
    /// caught error, raised again unchanged).
    fn fail(&mut self, value: &Expr) -> Result {
        let checked = &self.b.program.checked;
        if checked
            .resolutions
            .rethrows
            .contains(&(self.file, value.span))
        {
            self.expr(value)?;
            self.emit(Op::Raise);
            return Ok(());
        }
        let Some(Resolved::Error(index)) = self.resolved(value.span) else {
            self.expr(value)?;
            self.emit(Op::Fail);
            return Ok(());
        };
        let ExprKind::Call { args, .. } = &value.kind else {
            return Err(self.error_at(value.span, "a named error without its values"));
        };
        let error = &checked.errors[index];
        let name = error.name.to_string();
        let payload: Vec<String> = error.payload.iter().map(|f| f.name.to_string()).collect();
        let fields: Vec<String> = checked
            .types
            .get(error.ty)
            .fields()
            .map(|f| f.iter().map(|d| d.name.to_string()).collect())
            .unwrap_or_default();
        // Each value once, into a temporary: it is both a field and part of the message.
        let mut slots = Vec::with_capacity(args.len());
        for arg in args {
            self.expr(arg)?;
            let slot = self.new_slot(arg.span)?;
            self.emit(Op::StoreLocal(slot));
            slots.push(slot);
        }
        for field in &fields {
            match field.as_str() {
                "kind" => self.emit_const(Constant::Str(name.clone())),
                "message" => {
                    if slots.is_empty() {
                        self.emit_const(Constant::Str(name.clone()));
                    } else {
                        let mut parts = 0u32;
                        for (i, (field, slot)) in payload.iter().zip(&slots).enumerate() {
                            let lead = if i == 0 {
                                format!("{name}({field}: ")
                            } else {
                                format!(", {field}: ")
                            };
                            self.emit_const(Constant::Str(lead));
                            self.emit(Op::LoadLocal(*slot));
                            parts += 2;
                        }
                        self.emit_const(Constant::Str(")".into()));
                        self.emit(Op::Concat(parts + 1));
                    }
                }
                "step" => self.emit_const(Constant::Str("fail".into())),
                "tool" => self.emit_const(Constant::Str(String::new())),
                "attempt" => self.emit_const(Constant::Int(1)),
                "retryable" => self.emit_const(Constant::Bool(false)),
                "status" => self.emit_const(Constant::None),
                other => match payload.iter().position(|p| p == other) {
                    Some(i) => {
                        self.emit(Op::LoadLocal(slots[i]));
                    }
                    None => self.emit_const(Constant::None),
                },
            }
        }
        let list = self.b.field_list(fields.iter().map(String::as_str));
        self.emit(Op::MakeRecord(list));
        self.emit(Op::Raise);
        Ok(())
    }

    /// `retry N backoff D max M on K { b }`, or `retry { on K: N …, on L(e): M after e.d }
    /// { b }`. Each policy keeps its own attempt count and wait. Without `on`, an error that
    /// is not retryable (its record says `retryable: false`: a 4xx, `fail`, …) is raised at
    /// once; with `on`, exactly the listed kinds are retried, each by its policy. Between
    /// attempts the wait (multiplied each time, capped by `max`, scaled by a jitter that is
    /// deterministic per run; or `after`'s, computed from the error) is a durable sleep.
    fn retry(&mut self, policies: &[ast::RetryPolicy], body: &Block, want: Want) -> Result {
        let Some(first) = policies.first() else {
            return Err(self.error_at(body.span, "a `retry` without a policy"));
        };
        let span = first.span;
        let mut states = Vec::with_capacity(policies.len());
        for policy in policies {
            states.push(self.retry_state(policy)?);
        }
        // Without `on` (one policy), every error is caught and tested for `retryable`.
        let any_retryable = policies.len() == 1 && first.kinds.is_empty();
        let kinds = if any_retryable {
            u32::MAX
        } else {
            let names = policies
                .iter()
                .flat_map(|p| p.kinds.iter().map(|k| k.name.to_string()))
                .collect();
            self.b.kind_list(names)
        };
        let start = self.here();
        let push = self.emit(Op::PushHandler {
            catch: PLACEHOLDER,
            kinds,
        });
        let depth = self.depth;
        self.regions.push(Region::Handler);
        self.block(body, want)?;
        self.regions.pop();
        self.emit(Op::PopHandler);
        let to_end = self.emit(Op::Jump(PLACEHOLDER));
        self.patch(push);
        self.depth = depth + 1;
        let error = self.new_slot(span)?;
        self.emit(Op::StoreLocal(error));
        let mut give_up = Vec::new();
        if any_retryable {
            let field = self.b.string("retryable");
            self.emit(Op::LoadLocal(error));
            self.emit(Op::GetField(field));
            give_up.push(self.emit(Op::JumpIfFalse(PLACEHOLDER)));
        }
        // Several policies: the error's kind says whose it is.
        let mut entries = Vec::new();
        if policies.len() > 1 {
            let kind = self.b.string("kind");
            for (index, policy) in policies.iter().enumerate() {
                for name in &policy.kinds {
                    self.emit(Op::LoadLocal(error));
                    self.emit(Op::GetField(kind));
                    self.emit_const(Constant::Str(name.name.to_string()));
                    self.emit(Op::Eq);
                    entries.push((index, self.emit(Op::JumpIfTrue(PLACEHOLDER))));
                }
            }
            give_up.push(self.emit(Op::Jump(PLACEHOLDER)));
        }
        let mut unmatched = Vec::new();
        if policies.len() > 1 {
            unmatched = std::mem::take(&mut give_up);
        }
        for (index, (policy, state)) in policies.iter().zip(&states).enumerate() {
            for (_, at) in entries.iter().filter(|(i, _)| *i == index) {
                self.patch(*at);
            }
            self.retry_again(policy, state, error, std::mem::take(&mut give_up))?;
            self.emit(Op::Jump(start));
        }
        if !unmatched.is_empty() {
            for jump in unmatched {
                self.patch(jump);
            }
            self.emit(Op::LoadLocal(error));
            self.emit(Op::Raise);
        }
        self.patch(to_end);
        self.depth = depth + u32::from(want == Want::Value);
        Ok(())
    }

    /// A retry policy's state, in locals set before the first attempt: the limit, the attempt
    /// count (1), the next wait, its cap, and the deadline of `within` (from a durable clock
    /// read).
    fn retry_state(&mut self, policy: &ast::RetryPolicy) -> Result<RetryState> {
        let span = policy.span;
        if policy.forever {
            self.emit_const(Constant::Int(i64::MAX));
        } else {
            self.expr(&policy.attempts)?;
        }
        let limit = self.new_slot(span)?;
        self.emit(Op::StoreLocal(limit));
        let attempt = self.new_slot(span)?;
        self.emit_const(Constant::Int(1));
        self.emit(Op::StoreLocal(attempt));
        let stored = |lower: &mut Self, value: &Option<Expr>| -> Result<Option<u16>> {
            let Some(value) = value else {
                return Ok(None);
            };
            lower.expr(value)?;
            let slot = lower.new_slot(value.span)?;
            lower.emit(Op::StoreLocal(slot));
            Ok(Some(slot))
        };
        let delay = stored(self, &policy.backoff)?;
        let max_delay = stored(self, &policy.max)?;
        let until = match &policy.within {
            Some(within) => {
                self.emit(Op::CallBuiltin {
                    id: flow_stdlib::Builtin::Now.id(),
                    args: 0,
                });
                self.expr(within)?;
                self.emit(Op::Add);
                let slot = self.new_slot(within.span)?;
                self.emit(Op::StoreLocal(slot));
                Some(slot)
            }
            None => None,
        };
        Ok(RetryState {
            limit,
            attempt,
            delay,
            max_delay,
            until,
        })
    }

    /// After an attempt failed with an error of this policy (in local `error`): gives up
    /// (raises it; so do the jumps in `give_up`) when the next attempt would start past
    /// `within` or the attempts are spent; else counts the attempt and waits. The caller
    /// jumps back.
    fn retry_again(
        &mut self,
        policy: &ast::RetryPolicy,
        state: &RetryState,
        error: u16,
        mut give_up: Vec<usize>,
    ) -> Result {
        // `after e.retry_after`: the wait, from the error.
        let after = match &policy.after {
            Some(after) => {
                let mark = self.scope.len();
                if let Some(binding) = &policy.binding {
                    let ty = self.named_error_type(&policy.kinds);
                    let slot = self.bind(&binding.name, ty, binding.span)?;
                    self.emit(Op::LoadLocal(error));
                    self.emit(Op::StoreLocal(slot));
                }
                self.expr(after)?;
                self.scope.truncate(mark);
                let slot = self.new_slot(after.span)?;
                self.emit(Op::StoreLocal(slot));
                Some(slot)
            }
            None => None,
        };
        let wait = after.or(state.delay);
        // The next attempt would start at or past the deadline of `within`: no more.
        if let Some(until) = state.until {
            self.emit(Op::CallBuiltin {
                id: flow_stdlib::Builtin::Now.id(),
                args: 0,
            });
            if let Some(wait) = wait {
                self.emit(Op::LoadLocal(wait));
                self.emit(Op::Add);
            }
            self.emit(Op::LoadLocal(until));
            self.emit(Op::GtEq);
            give_up.push(self.emit(Op::JumpIfTrue(PLACEHOLDER)));
        }
        // The last attempt failed: raise the error again.
        self.emit(Op::LoadLocal(state.attempt));
        self.emit(Op::LoadLocal(state.limit));
        self.emit(Op::GtEq);
        let again = self.emit(Op::JumpIfFalse(PLACEHOLDER));
        for jump in give_up {
            self.patch(jump);
        }
        self.emit(Op::LoadLocal(error));
        self.emit(Op::Raise);
        self.patch(again);
        self.emit(Op::LoadLocal(state.attempt));
        self.emit_const(Constant::Int(1));
        self.emit(Op::Add);
        self.emit(Op::StoreLocal(state.attempt));
        if let Some(after) = after {
            self.emit(Op::LoadLocal(after));
            self.emit(Op::Sleep);
        } else if let Some(delay) = state.delay {
            self.emit(Op::LoadLocal(delay));
            if !policy.no_jitter {
                self.emit(Op::Jitter);
            }
            self.emit(Op::Sleep);
            self.emit(Op::LoadLocal(delay));
            match &policy.multiplier {
                Some(multiplier) => self.expr(multiplier)?,
                None => self.emit_const(Constant::Int(2)),
            }
            self.emit(Op::Mul);
            if let Some(max) = state.max_delay {
                // delay = min(delay * multiplier, max)
                self.emit(Op::Dup);
                self.emit(Op::LoadLocal(max));
                self.emit(Op::Gt);
                let keep = self.emit(Op::JumpIfFalse(PLACEHOLDER));
                self.emit(Op::Pop);
                self.emit(Op::LoadLocal(max));
                self.patch(keep);
            }
            self.emit(Op::StoreLocal(delay));
        }
        Ok(())
    }

    /// The type of the error a policy of one named error binds (`on RateLimited(r)`).
    fn named_error_type(&self, kinds: &[ast::Ident]) -> Type {
        let checked = &self.b.program.checked;
        let named = match kinds {
            [kind] => checked
                .scopes
                .get(self.file.0 as usize)
                .and_then(|scope| scope.lookup_type(&kind.name))
                .filter(|ty| checked.error_of(*ty).is_some())
                .map(Type::Named),
            _ => None,
        };
        named.unwrap_or_else(|| self.error_type())
    }

    fn timeout(&mut self, duration: &Expr, body: &Block, want: Want) -> Result {
        self.expr(duration)?;
        self.emit(Op::EnterTimeout);
        self.regions.push(Region::Timeout);
        self.block(body, want)?;
        self.regions.pop();
        self.emit(Op::ExitTimeout);
        Ok(())
    }

    /// The options of `await approval`/`await input` as one record, in source order;
    /// `escalate: X after D` gives the fields `escalate` and `escalate_after`.
    fn gate_options(&mut self, options: &[ast::AwaitOption]) -> Result {
        let mut names: Vec<String> = Vec::new();
        for option in options {
            self.expr(&option.value)?;
            names.push(option.name.name.to_string());
            if let Some(after) = &option.after {
                self.expr(after)?;
                names.push(flow_stdlib::gate_option::after_field(&option.name.name));
            }
        }
        let list = self.b.field_list(names.iter().map(String::as_str));
        self.emit(Op::MakeRecord(list));
        Ok(())
    }

    /// Records the type of the `context` option of the `await` at instruction `at`, if it has
    /// one: the value itself (a record, sorted by field name at run time) keeps no order.
    fn gate_context(&mut self, options: &[ast::AwaitOption], at: usize) {
        let Some(option) = options
            .iter()
            .find(|o| o.name.name == flow_stdlib::gate_option::CONTEXT)
        else {
            return;
        };
        // The checker's type is exact; this lowering's own is a fallback for a context the
        // checker did not record (it records every one it checks).
        let ty = match self
            .b
            .program
            .checked
            .resolutions
            .contexts
            .get(&(self.file, option.value.span))
        {
            Some(ty) => ty.clone(),
            None => self.type_of(&option.value),
        };
        let ty = self.b.type_ref(&ty);
        self.b.module.gate_contexts.push(GateContext {
            workflow: self.workflow,
            pc: index_u32(at),
            ty,
        });
    }

    // ----- static types (only what assignments to fields need) ----------------------

    fn resolve_type(&self, ty: &ast::TypeExpr) -> Type {
        let mut ignored = Vec::new();
        check::resolve_type(&self.b.program.checked, self.file, ty, &mut ignored)
    }

    /// The static type of `expr`, as far as it can be told without the checker's
    /// environment; `Unknown` where in doubt.
    fn type_of(&self, expr: &Expr) -> Type {
        self.type_in(expr, &mut Vec::new())
    }

    /// Like [`Self::type_of`], with `inner`: the names bound inside the expression so far
    /// (by `let`, patterns and `catch`), which shadow the locals in scope.
    /// A refined type is its base here, as for the checker.
    fn type_in(&self, expr: &Expr, inner: &mut Vec<(String, Type)>) -> Type {
        let ty = self.type_as_written(expr, inner);
        match ty {
            Type::Refined(_) | Type::Optional(_) => ty.unrefined().into_owned(),
            ty => ty,
        }
    }

    fn type_as_written(&self, expr: &Expr, inner: &mut Vec<(String, Type)>) -> Type {
        let checked = &self.b.program.checked;
        match &expr.kind {
            ExprKind::Int(_) => Type::Int,
            ExprKind::Float(_) => Type::Float,
            ExprKind::Bool(_) => Type::Bool,
            ExprKind::Duration(_) => Type::Duration,
            ExprKind::Time(_) => Type::Time,
            ExprKind::Str(_) => Type::String,
            ExprKind::None => Type::Optional(Box::new(Type::Unknown)),
            ExprKind::Name(name) => {
                if let Some((_, ty)) = inner.iter().rev().find(|(n, _)| n == name) {
                    return ty.clone();
                }
                match self.lookup(name) {
                    Some(local) => local.ty.clone(),
                    None => match self.resolved(expr.span) {
                        Some(Resolved::Variant(ty, _)) => Type::Named(ty),
                        _ => Type::Unknown,
                    },
                }
            }
            ExprKind::List(items) => Type::List(Box::new(
                items
                    .first()
                    .map(|i| self.type_in(i, inner))
                    .unwrap_or(Type::Unknown),
            )),
            ExprKind::Record(fields) => Type::Record(
                fields
                    .iter()
                    .map(|f| (f.name.name.clone(), self.type_in(&f.value, inner)))
                    .collect(),
            ),
            ExprKind::Field {
                base,
                name,
                optional,
            } => match self.resolved(expr.span) {
                Some(Resolved::Variant(ty, _)) => Type::Named(ty),
                _ => self.field_type(&self.type_in(base, inner), &name.name, *optional),
            },
            ExprKind::Index { base, .. } => match self.type_in(base, inner) {
                Type::List(element) => *element,
                Type::Map(value) => Type::optional(*value),
                Type::Json => Type::Json,
                _ => Type::Unknown,
            },
            ExprKind::Call { .. } => match self.resolved(expr.span) {
                Some(Resolved::Tool(i)) => checked.tools[i].ret.clone(),
                Some(Resolved::Workflow(i)) => checked.workflows[i].ret.clone(),
                Some(Resolved::Function(i)) => checked.functions[i].ret.clone(),
                Some(Resolved::Variant(ty, _)) => Type::Named(ty),
                Some(Resolved::Error(i)) => Type::Named(checked.errors[i].ty),
                Some(Resolved::Builtin(b)) => {
                    check::from_stdlib(b.returns(), checked, &Type::Unknown)
                }
                None => Type::Unknown,
            },
            ExprKind::Unary { op, operand } => match op {
                UnaryOp::Not => Type::Bool,
                UnaryOp::Neg => self.type_in(operand, inner),
            },
            ExprKind::Binary { op, lhs, rhs } => match op {
                BinaryOp::Eq
                | BinaryOp::NotEq
                | BinaryOp::Lt
                | BinaryOp::LtEq
                | BinaryOp::Gt
                | BinaryOp::GtEq
                | BinaryOp::And
                | BinaryOp::Or => Type::Bool,
                BinaryOp::Coalesce => match self.type_in(lhs, inner) {
                    Type::Optional(left) => match self.type_in(rhs, inner) {
                        optional @ Type::Optional(_) => optional,
                        _ => *left,
                    },
                    other => other,
                },
                _ => match (self.type_in(lhs, inner), self.type_in(rhs, inner)) {
                    (Type::Time, Type::Time) => Type::Duration,
                    (Type::Int, Type::Duration) => Type::Duration,
                    (left, _) => left,
                },
            },
            ExprKind::If {
                then_block,
                else_branch,
                ..
            } => match self.block_type(then_block, inner) {
                Type::Unknown => else_branch
                    .as_ref()
                    .map(|e| self.type_in(e, inner))
                    .unwrap_or(Type::Unknown),
                known => known,
            },
            ExprKind::Match { scrutinee, arms } => {
                let subject = self.type_in(scrutinee, inner);
                for arm in arms {
                    let mark = inner.len();
                    self.pattern_types(&arm.pattern, &subject, inner);
                    let ty = self.type_in(&arm.body, inner);
                    inner.truncate(mark);
                    if !ty.is_unknown() {
                        return ty;
                    }
                }
                Type::Unknown
            }
            ExprKind::Block(block) => self.block_type(block, inner),
            ExprKind::Retry { body, .. } => self.block_type(body, inner),
            ExprKind::Timeout { body, .. } => self.block_type(body, inner),
            ExprKind::Try { body, catches } => match self.block_type(body, inner) {
                Type::Unknown => {
                    let Some(catch) = catches.first() else {
                        return Type::Unknown;
                    };
                    let mark = inner.len();
                    if let Some(binding) = &catch.binding {
                        inner.push((binding.name.to_string(), self.caught_type(catch)));
                    }
                    let ty = self.block_type(&catch.handler, inner);
                    inner.truncate(mark);
                    ty
                }
                known => known,
            },
            ExprKind::AwaitApproval { .. } => {
                checked.decision.map(Type::Named).unwrap_or(Type::Unknown)
            }
            ExprKind::AwaitInput { ty, .. } => self.resolve_type(ty),
            ExprKind::Select { .. } => Type::Unknown,
            ExprKind::AwaitSignal { name } => self.signal_type(&name.name),
            ExprKind::Parallel(parallel) => {
                match checked.resolutions.parallels.get(&(self.file, expr.span)) {
                    Some(facts) => {
                        let collected = |ty: &Type| {
                            if parallel.collect {
                                Type::Record(vec![
                                    (Name::from("value"), Type::optional(ty.clone())),
                                    (Name::from("error"), Type::optional(self.error_type())),
                                ])
                            } else {
                                ty.clone()
                            }
                        };
                        match &parallel.branches {
                            ast::ParallelBranches::Each { .. } => Type::List(Box::new(
                                facts
                                    .results
                                    .first()
                                    .map(collected)
                                    .unwrap_or(Type::Unknown),
                            )),
                            ast::ParallelBranches::Fields(fields) => Type::Record(
                                fields
                                    .iter()
                                    .zip(&facts.results)
                                    .map(|(f, ty)| (f.name.name.clone(), collected(ty)))
                                    .collect(),
                            ),
                        }
                    }
                    None => Type::Unknown,
                }
            }
            ExprKind::Error => Type::Unknown,
        }
    }

    /// The type of a block's value; `Unknown` when it has none (the block ends in a
    /// statement: its value is `none`, or it never completes).
    fn block_type(&self, block: &Block, inner: &mut Vec<(String, Type)>) -> Type {
        let mark = inner.len();
        let mut result = Type::Unknown;
        for (index, stmt) in block.stmts.iter().enumerate() {
            match &stmt.kind {
                StmtKind::Let {
                    name, ty, value, ..
                } => {
                    let ty = match ty {
                        Some(ty) => self.resolve_type(ty),
                        None => self.type_in(value, inner),
                    };
                    inner.push((name.name.to_string(), ty));
                }
                StmtKind::Expr(tail) if index + 1 == block.stmts.len() => {
                    result = self.type_in(tail, inner);
                }
                _ => {}
            }
        }
        inner.truncate(mark);
        result
    }

    /// The names `pattern` binds when it matches a value of type `subject`, with their types.
    fn pattern_types(&self, pattern: &Pattern, subject: &Type, inner: &mut Vec<(String, Type)>) {
        match &pattern.kind {
            PatternKind::Name(name)
                if !matches!(self.resolved(pattern.span), Some(Resolved::Variant(..))) =>
            {
                inner.push((name.to_string(), subject.clone()));
            }
            PatternKind::Variant { fields, .. } => {
                let types = self.variant_field_types(pattern.span);
                for (index, field) in fields.iter().enumerate() {
                    let ty = types.get(index).cloned().unwrap_or(Type::Unknown);
                    self.pattern_types(field, &ty, inner);
                }
            }
            _ => {}
        }
    }

    /// The field types of the variant the pattern at `span` was resolved to.
    fn variant_field_types(&self, span: Span) -> Vec<Type> {
        let Some(Resolved::Variant(ty, variant)) = self.resolved(span) else {
            return Vec::new();
        };
        self.b
            .program
            .checked
            .types
            .get(ty)
            .variants()
            .and_then(|v| v.get(variant))
            .map(|v| v.fields.iter().map(|f| f.ty.clone()).collect())
            .unwrap_or_default()
    }

    /// The value type of signal `name` of the workflow being lowered (a branch workflow
    /// accepts none).
    fn signal_type(&self, name: &str) -> Type {
        self.b
            .program
            .checked
            .workflows
            .get(self.workflow as usize)
            .and_then(|w| w.signals.iter().find(|s| s.name == name))
            .map(|s| s.ty.clone())
            .unwrap_or(Type::Unknown)
    }

    fn error_type(&self) -> Type {
        self.b
            .program
            .checked
            .error
            .map(Type::Named)
            .unwrap_or(Type::Unknown)
    }

    fn field_type(&self, base: &Type, name: &str, optional: bool) -> Type {
        match base {
            Type::Optional(inner) if optional => {
                Type::optional(self.field_type(inner, name, false))
            }
            Type::Json => Type::Json,
            _ => self
                .record_fields(base)
                .and_then(|fields| fields.into_iter().find(|(n, _)| n == name))
                .map(|(_, ty)| ty)
                .unwrap_or(Type::Unknown),
        }
    }
}

/// Whether a block certainly ends in `return`, `fail`, `break` or `continue`, so that the
/// code after it is unreachable.
fn block_diverges(block: &Block) -> bool {
    match block.stmts.last().map(|s| &s.kind) {
        Some(
            StmtKind::Return(_)
            | StmtKind::Fail(_)
            | StmtKind::Break
            | StmtKind::Continue
            | StmtKind::ContinueAs { .. },
        ) => true,
        Some(StmtKind::Expr(tail)) => expr_diverges(tail),
        _ => false,
    }
}

fn expr_diverges(expr: &Expr) -> bool {
    match &expr.kind {
        ExprKind::Block(block) => block_diverges(block),
        _ => false,
    }
}

/// Where a retry policy keeps its state (see `retry_state`).
struct RetryState {
    limit: u16,
    attempt: u16,
    delay: Option<u16>,
    max_delay: Option<u16>,
    until: Option<u16>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytecode::TypeDesc;
    use crate::sources::MemoryLoader;

    #[test]
    fn sensitive_marks_the_tool_it_stands_before_or_after_on_the_binding_line() {
        let module = lowered(
            "tool look(id: String) -> Bool via exec \"look\"\n\
             sensitive tool pay(id: String) -> Bool via exec \"pay\"\n\
             tool refund(id: String) -> Bool via exec \"refund\" sensitive\n\
             workflow w(id: String) -> Bool { look(id) }\n",
        );
        let flags: Vec<(&str, bool)> = module
            .tools
            .iter()
            .map(|t| (t.name.as_str(), t.sensitive))
            .collect();
        assert_eq!(flags, [("look", false), ("pay", true), ("refund", true)]);
    }

    #[test]
    fn a_parallel_lowers_its_branches_to_workflows_that_take_what_they_read() {
        let module = lowered(
            "tool size(d: String) -> Int via exec \"size\"\n\
             workflow w(docs: List<String>, owner: String) -> Int {\n\
               let bonus = 2\n\
               let unused = 5\n\
               let sizes = parallel for d in docs max 3 { size(d) + bonus }\n\
               let r = parallel collect { a: size(owner), b: { let x = len(sizes)\n x } }\n\
               len(sizes) + unused + (r.b.value ?? 0)\n\
             }\n",
        );
        let names: Vec<&str> = module.workflows.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["w", "w#1", "w#2.a", "w#2.b"]);
        let each = &module.parallels[0];
        assert_eq!((each.fields, each.collect, each.captures), (None, false, 1));
        let params: Vec<&str> = module.workflows[1]
            .params
            .iter()
            .map(|p| p.0.as_str())
            .collect();
        // The item, then only the locals the branch reads (`bonus`, not `unused`).
        assert_eq!(params, ["d", "bonus"]);
        let record = &module.parallels[1];
        assert!(record.collect && record.fields.is_some());
        assert_eq!(record.branches, [2, 3]);
        let params: Vec<&str> = module.workflows[2]
            .params
            .iter()
            .map(|p| p.0.as_str())
            .collect();
        assert_eq!(params, ["owner", "sizes"]);
        assert!(module.is_branch(1) && !module.is_branch(0));
        assert_eq!(module.entry_workflows().count(), 1);
        let main = code(&module, "w");
        assert!(main.contains(&Op::Parallel(0)) && main.contains(&Op::Parallel(1)));
    }

    #[test]
    fn functions_lower_to_their_own_section_and_are_called_by_index() {
        let module = lowered(
            "fn is_even(n: Int) -> Bool { if n == 0 { true } else { is_odd(n - 1) } }\n\
             fn is_odd(n: Int) -> Bool { if n == 0 { false } else { is_even(n - 1) } }\n\
             fn shout(s: String) { if s == \"\" { fail \"empty\" } }\n\
             workflow w(n: Int) -> Bool { shout(\"x\")\n is_even(n) }\n",
        );
        let names: Vec<&str> = module.functions.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["is_even", "is_odd", "shout"]);
        assert_eq!(module.workflows.len(), 1, "a function is not a workflow");
        assert!(code(&module, "w").contains(&Op::CallFunction { function: 0 }));
        assert!(code(&module, "w").contains(&Op::CallFunction { function: 2 }));
        let (_, even) = module.function("is_even").expect("is_even");
        assert!(even.code.contains(&Op::CallFunction { function: 1 }));
        assert_eq!((even.params.len(), even.locals), (1, 1));
        for function in &module.functions {
            assert!(!function.code.iter().any(|op| op.is_durable()));
        }
    }

    #[test]
    fn a_durable_step_in_a_function_is_e0411_and_the_rest_is_still_checked() {
        let program = crate::check_text(
            "t.flow",
            "tool t(x: Int) -> Int via exec \"t\"\n\
             workflow child() -> Int { 1 }\n\
             fn f(x: Int) -> Int {\n\
               sleep 1s\n\
               let a = t(x) + child()\n\
               let b = timeout 1m { t(1) }\n\
               a + b + \"no\"\n\
             }\n\
             workflow w() -> Int { f(1) }\n",
        );
        let codes: Vec<&str> = program.diagnostics.iter().map(|d| d.code.id).collect();
        // `sleep`, the tool call, the child workflow and the `timeout` (its call once), and
        // the type error the rest of the body still has.
        assert_eq!(
            codes,
            ["E0411", "E0411", "E0411", "E0411", "E0308"],
            "{:#?}",
            program.diagnostics
        );
    }

    #[test]
    fn refined_types_are_described_and_checked_where_a_value_enters_one() {
        let module = lowered(
            "type Score = Float in 0.0..1.0\n\
             type Words = {\n\
               text: String\n\
               nonempty: Bool\n\
               length: Int in 0..\n\
             }\n\
             tool rate(w: Words) -> Score via exec \"rate\"\n\
             tool keep(s: Score, all: List<Score>) -> Bool via exec \"keep\"\n\
             workflow w(words: Words, all: List<Score>, x: Float) -> Score {\n\
               let s = rate(words)\n\
               keep(s, all)\n\
               let t: Score = x * 0.5\n\
               keep(t, [x])\n\
               t\n\
             }\n",
        );
        // A word on the next line is the next field, not a refinement of the one before.
        let Some(TypeDesc::Record { fields, .. }) = module
            .types
            .iter()
            .find(|t| matches!(t, TypeDesc::Record { name, .. } if name == "Words"))
        else {
            panic!("Words is described: {:?}", module.types)
        };
        let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["text", "nonempty", "length"]);
        assert_eq!(module.type_name(fields[0].1), "String");
        assert_eq!(module.type_name(fields[2].1), "Int in 0..");
        let score = module
            .types
            .iter()
            .position(|t| matches!(t, TypeDesc::Refined { name: Some(n), .. } if n == "Score"))
            .expect("Score is described") as u32;
        let conforms: Vec<u32> = code(&module, "w")
            .iter()
            .filter_map(|op| match op {
                Op::Conform(ty) => Some(*ty),
                _ => None,
            })
            .collect();
        // `rate(words)` is a `Score` already, and so are `s`, `t` and `all`: only the computed
        // `x * 0.5` and the item `x` of the list `[x]` are checked.
        assert_eq!(conforms, [score, score]);
    }

    fn lowered(source: &str) -> Module {
        let program = crate::check_text("t.flow", source);
        assert_eq!(program.errors(), 0, "{:#?}", program.diagnostics);
        lower(&program).expect("lowers")
    }

    fn code<'m>(module: &'m Module, workflow: &str) -> &'m [Op] {
        &module
            .workflow(workflow)
            .expect("the workflow exists")
            .1
            .code
    }

    fn string(module: &Module, text: &str) -> u32 {
        module
            .constants
            .iter()
            .position(|c| *c == Constant::Str(text.into()))
            .map(index_u32)
            .unwrap_or_else(|| panic!("no string constant {text:?}"))
    }

    #[test]
    fn refuses_a_program_with_errors() {
        let program = crate::check_text("t.flow", "workflow w() -> Int { \"no\" }");
        assert_eq!(lower(&program), Err(LowerError::HasErrors(1)));
    }

    #[test]
    fn unit_workflows_discard_their_value_and_return_none() {
        let module = lowered("workflow w(x: Int) { x + 1 }");
        assert_eq!(
            code(&module, "w"),
            [
                Op::LoadLocal(0),
                Op::Const(0),
                Op::Add,
                Op::Pop,
                Op::Const(1),
                Op::Return
            ]
        );
        assert_eq!(module.constants[1], Constant::None);
    }

    #[test]
    fn if_as_a_statement_leaves_the_stack_as_it_found_it() {
        let module = lowered("workflow w(c: Bool) {\n  if c { audit \"x\" {} }\n}");
        assert_eq!(
            code(&module, "w"),
            [
                Op::LoadLocal(0),
                Op::JumpIfFalse(4),
                Op::MakeRecord(0),
                Op::Audit { event: 0 },
                Op::Const(0),
                Op::Return
            ]
        );
    }

    #[test]
    fn break_and_continue_close_the_regions_they_leave() {
        let module = lowered(
            "tool poll() -> Int via http get \"/p\"\n\
             workflow w() {\n\
               while true {\n\
                 try {\n\
                   timeout 5s {\n\
                     if poll() > 1 { break }\n\
                     if poll() > 2 { continue }\n\
                   }\n\
                 } catch _e { }\n\
               }\n\
             }",
        );
        let ops = code(&module, "w");
        let jumps: Vec<usize> = ops
            .iter()
            .enumerate()
            .filter(|(at, op)| matches!(op, Op::Jump(_)) && ops[at - 1] == Op::PopHandler)
            .map(|(at, _)| at)
            .collect();
        assert_eq!(
            jumps.len(),
            3,
            "break, continue and the end of the try: {ops:?}"
        );
        for at in &jumps[..2] {
            assert_eq!(ops[at - 2], Op::ExitTimeout, "{ops:?}");
        }
        // `continue` goes back to the loop's start, `break` past its end.
        assert_eq!(ops[jumps[1]], Op::Jump(0));
        let Op::Jump(after) = ops[jumps[0]] else {
            unreachable!()
        };
        assert_eq!(after as usize, ops.len() - 2, "{ops:?}");
    }

    #[test]
    fn leaving_an_expression_early_drops_its_pending_values() {
        let module = lowered(
            "workflow w(xs: List<Int>, c: Bool) -> Int {\n\
               var total = 0\n\
               for x in xs { total = total + (if x > 3 { break } else { x }) }\n\
               1 + (if c { return total } else { 2 })\n\
             }",
        );
        let ops = code(&module, "w");
        let brk = ops
            .windows(2)
            .position(|w| w[0] == Op::Pop && matches!(w[1], Op::Jump(_)));
        assert!(brk.is_some(), "break pops `total` before jumping: {ops:?}");
        let ret = ops.windows(4).position(
            |w| matches!(w, [Op::StoreLocal(t), Op::Pop, Op::LoadLocal(u), Op::Return] if t == u),
        );
        assert!(ret.is_some(), "return drops the pending `1`: {ops:?}");
    }

    #[test]
    fn omitted_optional_fields_are_built_as_none() {
        let module = lowered(
            "type P = { x: Int, y: Int?, z: String? }\n\
             workflow w() -> P { { x: 1, z: \"z\" } }\n\
             workflow later() -> List<P> {\n\
               let rs = [{ x: 1 }]\n\
               rs\n\
             }",
        );
        let ops = code(&module, "w");
        assert!(
            matches!(ops[1], Op::Const(_)) && matches!(ops[2], Op::Const(_)),
            "{ops:?}"
        );
        let Op::MakeRecord(list) = ops[3] else {
            panic!("a record: {ops:?}");
        };
        let names: Vec<&Constant> = module.field_lists[list as usize]
            .iter()
            .map(|n| &module.constants[*n as usize])
            .collect();
        let text = |t: &str| Constant::Str(t.to_string());
        assert_eq!(
            names,
            [&text("x"), &text("z"), &text("y")],
            "the omitted `y` last"
        );
        let Op::Const(last) = ops[2] else {
            panic!("a constant: {ops:?}");
        };
        assert_eq!(module.constants[last as usize], Constant::None);
        // A record built without its type gets its optional fields where it becomes a `P`.
        let later = code(&module, "later");
        assert!(
            later.iter().any(|op| matches!(op, Op::Conform(_))),
            "{later:?}"
        );
    }

    #[test]
    fn text_used_as_a_secret_is_sealed_and_nothing_else_is() {
        let module = lowered(
            "type Creds = { user: String, token: Secret }\n\
             tool sign_in(c: Creds, extra: Secret) -> Int via exec \"sh t.sh\"\n\
             workflow w(name: String, s: Secret) -> Int {\n\
               let mine: Secret = \"${name}!\"\n\
               let plain = name\n\
               sign_in({ user: plain, token: plain }, s)\n\
             }",
        );
        let ops = code(&module, "w");
        let seals: Vec<u32> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Conform(ty) => Some(*ty),
                _ => None,
            })
            .collect();
        // The `let` with its annotation and the record's `token`; not `user`, not `s`.
        assert_eq!(seals.len(), 2, "{ops:?}");
        for ty in seals {
            assert_eq!(
                module.type_desc(crate::bytecode::TypeRef(ty)),
                Some(&crate::bytecode::TypeDesc::Secret)
            );
        }
        let none = lowered("workflow w(s: Secret, t: String) -> String { t }");
        assert!(
            !code(&none, "w")
                .iter()
                .any(|op| matches!(op, Op::Conform(_)))
        );
    }

    #[test]
    fn retry_counts_attempts_and_doubles_the_backoff() {
        let module = lowered(
            "tool poll() -> Int via http get \"/p\"\n\
             workflow w() -> Int { retry 3 backoff 2s on ToolError, Timeout { poll() } }",
        );
        assert_eq!(
            module.kind_lists,
            [vec!["ToolError".to_string(), "Timeout".into()]]
        );
        let ops = code(&module, "w");
        assert!(
            ops.contains(&Op::PushHandler {
                catch: 10,
                kinds: 0
            }),
            "{ops:?}"
        );
        assert!(ops.contains(&Op::Raise));
        assert!(
            ops.windows(3)
                .any(|w| w == [Op::LoadLocal(2), Op::Jitter, Op::Sleep]),
            "{ops:?}"
        );
        assert!(ops.contains(&Op::Mul));
        assert!(ops.contains(&Op::GtEq));
        // With `on`, the listed kinds are retried whether or not they are retryable.
        assert!(
            !module
                .constants
                .contains(&Constant::Str("retryable".into()))
        );
    }

    #[test]
    fn retry_without_on_raises_errors_that_are_not_retryable_and_caps_the_backoff() {
        let module = lowered(
            "tool poll() -> Int via http get \"/p\"\n\
             workflow w() -> Int { retry 5 backoff 1s max 4s { poll() } }",
        );
        let ops = code(&module, "w");
        let retryable = string(&module, "retryable");
        assert!(
            ops.windows(2)
                .any(|w| w[0] == Op::GetField(retryable) && matches!(w[1], Op::JumpIfFalse(_))),
            "{ops:?}"
        );
        // delay * 2, then min with the maximum
        assert!(
            ops.windows(3)
                .any(|w| w == [Op::Mul, Op::Dup, Op::LoadLocal(3)]),
            "{ops:?}"
        );
    }

    #[test]
    fn match_tests_nested_literals_and_binds_fields() {
        let module = lowered(
            "enum Kind { Small, Large(weight: Int) }\n\
             workflow w(k: Kind) -> Int {\n\
               match k { Large(5) => 0, Large(w) => w, Small => 1 }\n\
             }",
        );
        let large = string(&module, "Large");
        let ops = code(&module, "w").to_vec();
        let five = module
            .constants
            .iter()
            .position(|c| *c == Constant::Int(5))
            .map(index_u32)
            .expect("5 is a constant");
        let expected_first_arm = [
            Op::LoadLocal(1),
            Op::IsVariant(large),
            Op::JumpIfFalse(12),
            Op::LoadLocal(1),
            Op::VariantField(0),
            Op::Const(five),
            Op::Eq,
            Op::JumpIfFalse(12),
        ];
        assert_eq!(ops[2..10], expected_first_arm, "{ops:?}");
        assert!(
            ops.contains(&Op::Fail),
            "a non-binding last arm can fall through"
        );
    }

    #[test]
    fn assigning_a_field_sets_it_from_the_inside_out() {
        let module = lowered(
            "type Inner = { count: Int, label: String? }\n\
             type Outer = { inner: Inner, name: String }\n\
             workflow w(o: Outer) -> Outer {\n\
               var s = o\n\
               s.inner.count = 2\n\
               s\n\
             }",
        );
        let inner = string(&module, "inner");
        let count = string(&module, "count");
        let ops = code(&module, "w");
        assert_eq!(
            ops[2..13],
            [
                Op::Const(0),
                Op::StoreLocal(2),
                Op::LoadLocal(1),
                Op::Dup,
                Op::GetField(inner),
                Op::LoadLocal(2),
                Op::SetField(count),
                Op::SetField(inner),
                Op::StoreLocal(1),
                Op::LoadLocal(1),
                Op::Return,
            ]
        );
    }

    #[test]
    fn assigning_a_field_of_json_works_like_any_record() {
        let program = crate::check_text(
            "t.flow",
            "workflow w(j: Json) -> Json {\n  var v = j\n  v.a = 1\n  v\n}",
        );
        assert_eq!(program.errors(), 0);
        let module = lower(&program).expect("lowers");
        assert!(
            module.workflows[0]
                .code
                .contains(&Op::SetField(string(&module, "a")))
        );
    }

    #[test]
    fn tables_are_interned_and_gate_options_include_the_escalation_delay() {
        let module = lowered(
            "workflow w() -> Bool {\n\
               let a = await approval \"g\" { approvers: role(\"x\"), escalate: role(\"y\") after 1h }\n\
               let b = await approval \"g\" { approvers: role(\"x\"), escalate: role(\"y\") after 1h }\n\
               audit \"e\" { x: 1 }\n\
               audit \"e\" { x: 2 }\n\
               a.approved && b.approved\n\
             }",
        );
        assert_eq!(module.gates, ["g"]);
        assert_eq!(module.events, ["e"]);
        let names: Vec<u32> = ["approvers", "escalate", "escalate_after"]
            .iter()
            .map(|n| string(&module, n))
            .collect();
        assert!(
            module.field_lists.contains(&names),
            "{:?}",
            module.field_lists
        );
        let mut seen = std::collections::HashSet::new();
        for constant in &module.constants {
            assert!(seen.insert(format!("{constant:?}")), "{constant:?} twice");
        }
    }

    /// Each `await` with a `context` records the context's type at its instruction: fields
    /// in the order written (a literal) or declared (a named record), nested ones too.
    #[test]
    fn gate_contexts_keep_the_order_written_and_declared() {
        let module = lowered(
            "type Claim = { claimant: String, amount: Int }\n\
             workflow w(cs: List<Claim>) -> Bool {\n\
               var ok = true\n\
               for c in cs {\n\
                 let d = await approval \"g\" { approvers: role(\"x\"), context: { zeta: c.amount, alpha: c.claimant, mid: { b: 1, a: [c] } } }\n\
                 let n = await input<Int> \"n\" { from: role(\"x\"), context: c }\n\
                 ok = ok && d.approved && n > 0\n\
               }\n\
               let e = await approval \"g\" { approvers: role(\"x\") }\n\
               ok && e.approved\n\
             }",
        );
        let ops = code(&module, "w");
        assert_eq!(module.gate_contexts.len(), 2, "{:?}", module.gate_contexts);
        let [first, second] = &module.gate_contexts[..] else {
            unreachable!()
        };
        assert!(matches!(ops[first.pc as usize], Op::AwaitApproval { .. }));
        assert!(matches!(ops[second.pc as usize], Op::AwaitInput { .. }));
        assert_eq!((first.workflow, second.workflow), (0, 0));
        let schema = crate::bytecode::schema::form_schema(&module, first.ty);
        assert_eq!(
            schema["x-order"],
            serde_json::json!(["zeta", "alpha", "mid"])
        );
        let mid = &schema["properties"]["mid"];
        assert_eq!(mid["x-order"], serde_json::json!(["b", "a"]));
        let claim = &mid["properties"]["a"]["items"];
        assert_eq!(claim["x-order"], serde_json::json!(["claimant", "amount"]));
        assert_eq!(claim["title"], "Claim");
        assert_eq!(module.type_name(second.ty), "Claim");
        // The last `await` has no context, and no entry.
        let last = ops
            .iter()
            .rposition(|op| matches!(op, Op::AwaitApproval { .. }))
            .expect("an await");
        assert_eq!(module.gate_context(0, index_u32(last)), None);
    }

    #[test]
    fn recursive_types_refer_to_their_own_slot() {
        let module = lowered(
            "enum Tree { Leaf, Node(children: List<Tree>) }\n\
             workflow w(t: Tree) -> Tree { t }",
        );
        let (_, workflow) = module.workflow("w").expect("w");
        let TypeDesc::Enum { variants, .. } = &module.types[workflow.ret.0 as usize] else {
            panic!("Tree is an enum: {:?}", module.types);
        };
        let list = variants[1].1[0].1;
        assert_eq!(module.types[list.0 as usize], TypeDesc::List(workflow.ret));
        assert_eq!(module.type_name(workflow.params[0].1), "Tree");
    }

    #[test]
    fn indices_follow_the_checker_across_files() {
        let loader = MemoryLoader::default()
            .with(
                "main.flow",
                "import \"lib.flow\"\ntool a() -> Int via http get \"/a\"\n\
                 workflow main() -> Int { a() + helper() }",
            )
            .with(
                "lib.flow",
                "tool b() -> Int via http get \"/b\"\nworkflow helper() -> Int { b() }",
            );
        let program = crate::check_paths(&["main.flow".to_string()], &loader).expect("loads");
        assert_eq!(program.errors(), 0, "{:#?}", program.diagnostics);
        let module = lower(&program).expect("lowers");
        assert_eq!(module.files, ["main.flow", "lib.flow"]);
        let names: Vec<&str> = module.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let (helper, _) = module.workflow("helper").expect("helper");
        assert!(code(&module, "main").contains(&Op::CallWorkflow {
            workflow: index_u32(helper)
        }));
        assert_eq!(module.workflows[1].debug[0].file, 1);
        let mut hasher = Sha256::new();
        hasher.update(program.db.text(FileId(0)));
        hasher.update(program.db.text(FileId(1)));
        assert_eq!(
            module.source_hash,
            flow_stdlib::hex::encode(&hasher.finalize())
        );
    }

    #[test]
    fn debug_columns_count_characters() {
        let module = lowered("workflow w() -> String {\n  let é = \"ü\"; é\n}");
        let (_, workflow) = module.workflow("w").expect("w");
        let last_load = workflow
            .code
            .iter()
            .rposition(|op| matches!(op, Op::LoadLocal(_)))
            .expect("a load");
        let loc = workflow.debug[last_load];
        assert_eq!((loc.line, loc.column), (2, 16));
    }

    #[test]
    fn interpolation_makes_each_part_text_and_concatenates() {
        let module = lowered("workflow w(n: Int) -> String { \"a ${n} b\" }");
        assert_eq!(
            code(&module, "w"),
            [
                Op::Const(0),
                Op::LoadLocal(0),
                Op::ToText,
                Op::Const(1),
                Op::Concat(3),
                Op::Return
            ]
        );
        let plain = lowered("workflow w() -> String { \"plain\" }");
        assert_eq!(code(&plain, "w"), [Op::Const(0), Op::Return]);
    }
}
