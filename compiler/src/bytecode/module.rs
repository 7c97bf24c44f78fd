//! A compiled program, as stored in a `.flowb` artifact.

use super::ops::Op;
use serde::{Deserialize, Serialize};

/// Index into [`Module::types`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TypeRef(pub u32);

/// The workflow the compiler makes of a workflow's `on cancel` block is named after it with
/// this suffix (`trip#cancel`; no name a user writes has a `#`).
pub const ON_CANCEL_SUFFIX: &str = "#cancel";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Module {
    /// SHA-256 of the source files, in hex (which source this was built from).
    pub source_hash: String,
    /// Source file names, for debug locations.
    pub files: Vec<String>,
    pub constants: Vec<Constant>,
    /// Field-name lists for `MakeRecord`: indices of string constants.
    pub field_lists: Vec<Vec<u32>>,
    /// Error-kind lists for `PushHandler`.
    pub kind_lists: Vec<Vec<String>>,
    pub types: Vec<TypeDesc>,
    pub tools: Vec<ToolInfo>,
    pub gates: Vec<String>,
    pub input_requests: Vec<InputRequest>,
    pub events: Vec<String>,
    pub workflows: Vec<WorkflowCode>,
    /// The `///` docs of record fields, for the forms and cards people read (format 2). Not
    /// part of the postcard encoding of the module itself: the artifact carries them in a
    /// section after it (see `encoding.rs`), so a format 1 payload still decodes as a module.
    #[serde(skip)]
    pub field_docs: Vec<FieldDocs>,
    /// The static type of the `context` of each `await` that has one (format 4), so that the
    /// inbox shows a context's fields in the order the workflow wrote or declared them (a
    /// record value and its JSON have no order of their own). Carried in a section after
    /// `field_docs`, like them, so that older payloads still decode.
    #[serde(skip)]
    pub gate_contexts: Vec<GateContext>,
    /// The signals each workflow accepts (format 5): their value types and who may send them.
    /// Carried in a section after `gate_contexts`, like them.
    #[serde(skip)]
    pub signals: Vec<SignalInfo>,
    /// The arms of each `select` (format 5), by the `select` instruction's operand. Carried
    /// in a section after `signals`.
    #[serde(skip)]
    pub selects: Vec<SelectInfo>,
    /// Each workflow's queries (format 5), in a section after `selects`.
    #[serde(skip)]
    pub queries: Vec<QueryCode>,
    /// Each `parallel` (format 6), by the `parallel` instruction's operand, in a section
    /// after `queries`.
    #[serde(skip)]
    pub parallels: Vec<ParallelInfo>,
    /// The answers of tools that are named errors (format 6: `raises NotFound on 404`), in
    /// a section after `parallels`.
    #[serde(skip)]
    pub tool_raises: Vec<ToolRaise>,
    /// The undo blocks (`let b = step() undo { … }`, format 6): the workflows made of them
    /// (indices into [`Module::workflows`]), in a section after `tool_raises`.
    #[serde(skip)]
    pub undos: Vec<UndoBlock>,
    /// The program's pure functions (`fn`, format 7), called by `CallFunction`, in a
    /// section after `undos`. Their code has no durable instruction.
    #[serde(skip)]
    pub functions: Vec<FunctionCode>,
}

/// A `fn`'s code: laid out like a workflow's (parameters in the first local slots, one
/// debug location per instruction, ending with `Return`), without any durable instruction.
pub type FunctionCode = WorkflowCode;

/// One undo block: the workflow it belongs to and the workflow made of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndoBlock {
    /// Index into [`Module::workflows`]: the workflow whose `let … undo { … }` it is.
    pub workflow: u32,
    /// Index into [`Module::workflows`]: the block's own workflow.
    pub block: u32,
}

/// One answer of a tool that is a named error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolRaise {
    /// Index into [`Module::tools`].
    pub tool: u32,
    /// The named error's record type; its name is the error's `kind`.
    pub error: TypeRef,
    pub on: RaiseCode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaiseCode {
    /// An `http` tool's answer with this status.
    Status(u16),
    /// An `exec` tool's exit status.
    Exit(u8),
    /// An `llm` tool's model declining to answer (format 8).
    Refusal,
}

/// One `parallel`: the workflows its branches run as, and how their results come back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParallelInfo {
    /// Index into [`Module::workflows`]: the workflow whose code holds the `parallel`.
    pub workflow: u32,
    /// The branch workflows (indices into [`Module::workflows`]): one for a `parallel for`
    /// (run once per item, the item its first parameter), one per field for a record of
    /// branches. Their remaining parameters are the captured values, in the same order.
    pub branches: Vec<u32>,
    /// A record of branches: its field names (an index into [`Module::field_lists`], one
    /// per branch). `None`: a `parallel for`.
    pub fields: Option<u32>,
    /// `collect`: every branch's `{value, error}` instead of the first error raised.
    pub collect: bool,
    /// How many captured values the instruction pops (and each branch takes).
    pub captures: u32,
}

impl ParallelInfo {
    /// How many values the `parallel` instruction pops.
    pub fn arity(&self) -> usize {
        self.captures as usize + if self.fields.is_none() { 2 } else { 0 }
    }
}

/// A `query name -> T { … }`: code of its own that reads the workflow's local slots and
/// returns a value, evaluated on a copy of a run's state; it has no durable instruction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueryCode {
    /// Index into [`Module::workflows`].
    pub workflow: u32,
    pub name: String,
    pub ret: TypeRef,
    /// The instruction of the workflow's code that comes right after the query: a run whose
    /// checkpoint is at it or later (at the top level, where queries stand) has set every
    /// variable the query reads.
    pub from_pc: u32,
    pub code: Vec<Op>,
    /// One per instruction.
    pub debug: Vec<DebugLoc>,
}

/// One `select`: what each arm waits for and where its code starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelectInfo {
    /// Index into [`Module::workflows`]: the workflow whose code holds the `select`.
    pub workflow: u32,
    pub arms: Vec<SelectArmInfo>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelectArmInfo {
    /// The signal it waits for (an index into [`Module::signals`]).
    pub signal: Option<u32>,
    /// Where the arm's code starts, with the arm's value on the stack.
    pub target: u32,
    /// A gate or a call (format 6): the branch workflow that waits for it (an index into
    /// [`Module::workflows`]), run as a branch of the run when the `select` waits; it takes
    /// captured values the instruction pops, as many as it has parameters. An arm with
    /// neither a signal nor a wait is an `after`, whose deadline the instruction pops.
    pub wait: Option<u32>,
}

impl SelectArmInfo {
    pub fn is_after(&self) -> bool {
        self.signal.is_none() && self.wait.is_none()
    }
}

impl SelectInfo {
    /// How many `after` arms it has: how many deadlines the instruction pops first.
    pub fn afters(&self) -> usize {
        self.arms.iter().filter(|a| a.is_after()).count()
    }

    /// How many values the instruction pops: the deadlines, then each wait arm's captured
    /// values (in arm order). `None` when a wait arm names no workflow.
    pub fn arity(&self, module: &Module) -> Option<usize> {
        let mut count = self.afters();
        for workflow in self.arms.iter().filter_map(|a| a.wait) {
            count += module.workflows.get(workflow as usize)?.params.len();
        }
        Some(count)
    }
}

/// A `select` as format 5 wrote it (no wait arms), read into [`SelectInfo`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelectInfoV5 {
    pub workflow: u32,
    pub arms: Vec<SelectArmInfoV5>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelectArmInfoV5 {
    pub signal: Option<u32>,
    pub target: u32,
}

impl From<SelectInfoV5> for SelectInfo {
    fn from(old: SelectInfoV5) -> SelectInfo {
        SelectInfo {
            workflow: old.workflow,
            arms: old
                .arms
                .into_iter()
                .map(|a| SelectArmInfo {
                    signal: a.signal,
                    target: a.target,
                    wait: None,
                })
                .collect(),
        }
    }
}

/// One signal a workflow accepts (`accepts cancel: String from role("support")`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignalInfo {
    /// Index into [`Module::workflows`].
    pub workflow: u32,
    pub name: String,
    pub ty: TypeRef,
    /// Who may send it: a sender matching any of them may.
    pub senders: Vec<Sender>,
}

/// Who may send a signal: the holders of a role, one user, or one system identity (an API
/// token made with `flowrt token create --system NAME`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    pub kind: SenderKind,
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SenderKind {
    Role,
    User,
    System,
}

impl SenderKind {
    /// The word a workflow writes (`role("…")`), the inverse of [`SenderKind::word`].
    pub fn from_word(word: &str) -> Option<SenderKind> {
        match word {
            "role" => Some(SenderKind::Role),
            "user" => Some(SenderKind::User),
            "system" => Some(SenderKind::System),
            _ => None,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            SenderKind::Role => "role",
            SenderKind::User => "user",
            SenderKind::System => "system",
        }
    }
}

impl std::fmt::Display for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({:?})", self.kind.word(), self.name)
    }
}

/// The type of one `await`'s `context`, by the instruction: the same gate may be awaited in
/// several places, each with a context of its own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateContext {
    /// Index into [`Module::workflows`].
    pub workflow: u32,
    /// The `await_approval` or `await_input` instruction, an index into the workflow's code.
    pub pc: u32,
    pub ty: TypeRef,
}

/// The documented fields of one record type, in declaration order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldDocs {
    pub ty: TypeRef,
    /// `(field, doc)`, for the fields that have a doc comment.
    pub fields: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Constant {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// Milliseconds.
    Duration(i64),
    /// Milliseconds since the Unix epoch, UTC (format 2; appended, so format 1 still reads).
    Time(i64),
}

/// A type, described well enough to validate JSON against it and to show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TypeDesc {
    Int,
    Float,
    Bool,
    String,
    Duration,
    Time,
    Json,
    Approvers,
    Unit,
    List(TypeRef),
    Map(TypeRef),
    Optional(TypeRef),
    Record {
        name: String,
        fields: Vec<(String, TypeRef)>,
    },
    Enum {
        name: String,
        variants: Vec<(String, Vec<(String, TypeRef)>)>,
    },
    /// Appended: descriptions are persisted in artifacts, so variants are append-only.
    Secret,
    /// Format 8: a value of `base` that also admits `rule` (`Float in 0.0..1.0`). `name` is the
    /// refined type's declared name (`type Score = …`), for messages; `None` when the
    /// refinement is written in place (`qty: Int in 1..1000`).
    Refined {
        base: TypeRef,
        rule: super::Refinement,
        name: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Binding {
    Http { method: String, path: String },
    Exec { command: String },
    Llm { model: String, prompt: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolInfo {
    pub name: String,
    pub params: Vec<(String, TypeRef)>,
    pub ret: TypeRef,
    pub binding: Binding,
    pub sensitive: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputRequest {
    pub name: String,
    pub ty: TypeRef,
}

/// Where an instruction came from: indices into [`Module::files`], 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugLoc {
    pub file: u32,
    pub line: u32,
    pub column: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkflowCode {
    pub name: String,
    pub params: Vec<(String, TypeRef)>,
    pub ret: TypeRef,
    /// Local slots; parameters occupy the first ones, in order.
    pub locals: u32,
    pub code: Vec<Op>,
    /// One per instruction.
    pub debug: Vec<DebugLoc>,
}

impl Module {
    /// Whether workflow `index` is a branch of a `parallel` or the wait of a `select` arm: a
    /// workflow the compiler made of that code, started only by its run (`order#1`).
    pub fn is_branch(&self, index: usize) -> bool {
        let index = index as u32;
        self.undos.iter().any(|u| u.block == index)
            || self
                .workflows
                .get(index as usize)
                .is_some_and(|w| w.name.ends_with(ON_CANCEL_SUFFIX))
            || self.parallels.iter().any(|p| p.branches.contains(&index))
            || self
                .selects
                .iter()
                .any(|s| s.arms.iter().any(|a| a.wait == Some(index)))
    }

    /// The workflows people and programs may start: the program's own, not its branches.
    pub fn entry_workflows(&self) -> impl Iterator<Item = &WorkflowCode> {
        self.workflows
            .iter()
            .enumerate()
            .filter(|(index, _)| !self.is_branch(*index))
            .map(|(_, w)| w)
    }

    /// Function `name` (a `fn`), if the module has one.
    pub fn function(&self, name: &str) -> Option<(usize, &FunctionCode)> {
        self.functions
            .iter()
            .enumerate()
            .find(|(_, f)| f.name == name)
    }

    pub fn workflow(&self, name: &str) -> Option<(usize, &WorkflowCode)> {
        self.workflows
            .iter()
            .enumerate()
            .find(|(_, w)| w.name == name)
    }

    /// The type of the `context` of the `await` at instruction `pc` of workflow `workflow`,
    /// when it has one (and the artifact says: format 4).
    pub fn gate_context(&self, workflow: u32, pc: u32) -> Option<TypeRef> {
        self.gate_contexts
            .iter()
            .find(|c| c.workflow == workflow && c.pc == pc)
            .map(|c| c.ty)
    }

    /// Signal `name` of workflow `workflow`, when it accepts one of that name.
    pub fn signal(&self, workflow: u32, name: &str) -> Option<(u32, &SignalInfo)> {
        self.signals
            .iter()
            .enumerate()
            .find(|(_, s)| s.workflow == workflow && s.name == name)
            .map(|(index, s)| (index as u32, s))
    }

    /// The signals workflow `workflow` accepts, in written order.
    pub fn signals_of(&self, workflow: u32) -> impl Iterator<Item = &SignalInfo> {
        self.signals.iter().filter(move |s| s.workflow == workflow)
    }

    /// The `///` doc of a record type's field, if it has one.
    pub fn field_doc(&self, ty: TypeRef, field: &str) -> Option<&str> {
        self.field_docs
            .iter()
            .find(|d| d.ty == ty)?
            .fields
            .iter()
            .find(|(name, _)| name == field)
            .map(|(_, doc)| doc.as_str())
    }

    /// The record type named `name` (a named error's, `Error`), if the module describes it.
    pub fn record_named(&self, name: &str) -> Option<TypeRef> {
        self.types
            .iter()
            .position(|t| matches!(t, TypeDesc::Record { name: n, .. } if n == name))
            .map(|i| TypeRef(i as u32))
    }

    pub fn type_desc(&self, ty: TypeRef) -> Option<&TypeDesc> {
        self.types.get(ty.0 as usize)
    }

    pub fn string(&self, constant: u32) -> Option<&str> {
        match self.constants.get(constant as usize) {
            Some(Constant::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// Shows a type as the source writes it: `List<Doc>`, `String?`.
    pub fn type_name(&self, ty: TypeRef) -> String {
        match self.type_desc(ty) {
            None => "?".to_string(),
            Some(desc) => match desc {
                TypeDesc::Int => "Int".into(),
                TypeDesc::Float => "Float".into(),
                TypeDesc::Bool => "Bool".into(),
                TypeDesc::String => "String".into(),
                TypeDesc::Duration => "Duration".into(),
                TypeDesc::Time => "Time".into(),
                TypeDesc::Json => "Json".into(),
                TypeDesc::Approvers => "Approvers".into(),
                TypeDesc::Unit => "Unit".into(),
                TypeDesc::Secret => "Secret".into(),
                TypeDesc::List(t) => format!("List<{}>", self.type_name(*t)),
                TypeDesc::Map(t) => format!("Map<{}>", self.type_name(*t)),
                // `Int? in 1..5`: the rule is written after the optional's mark.
                TypeDesc::Optional(t) => match self.type_desc(*t) {
                    Some(TypeDesc::Refined {
                        base,
                        rule,
                        name: None,
                    }) => format!("{}? {rule}", self.type_name(*base)),
                    _ => format!("{}?", self.type_name(*t)),
                },
                TypeDesc::Record { name, .. } | TypeDesc::Enum { name, .. } => name.clone(),
                TypeDesc::Refined {
                    name: Some(name), ..
                } => name.clone(),
                TypeDesc::Refined { base, rule, .. } => {
                    format!("{} {rule}", self.type_name(*base))
                }
            },
        }
    }
}
