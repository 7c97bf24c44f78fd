//! The syntax tree the parser produces: every node keeps its byte span.
//!
//! The tree is always complete: where the source was malformed the parser puts an `Error`
//! node (after reporting a diagnostic), so later phases can still check the rest.

pub use super::name::Name;
use crate::span::Span;

#[derive(Clone, Debug, Default)]
pub struct Module {
    pub items: Vec<Item>,
}

/// Declarations are boxed: they differ a lot in size (a tool is several times an import),
/// and a file's list of items would otherwise reserve the largest for each.
#[derive(Clone, Debug)]
pub enum Item {
    Import(Import),
    Type(Box<TypeDecl>),
    Enum(Box<EnumDecl>),
    Tool(Box<ToolDecl>),
    Workflow(Box<WorkflowDecl>),
    Test(Box<TestDecl>),
    /// `error NotFound(id: String)`: an error a tool or a workflow can raise, by name.
    Error(Box<ErrorDecl>),
    /// `fn name(param: Type) -> Type { … }`: a pure function (no durable point).
    Function(Box<FunctionDecl>),
}

/// `fn pow2(n: Int) -> Int { … }`: a pure helper. Its body is ordinary code, without any
/// durable point (no tool or workflow call, no wait, no audit …), so a call runs to
/// completion between two durable points of the workflow that makes it.
#[derive(Clone, Debug)]
pub struct FunctionDecl {
    pub doc: Option<Box<str>>,
    pub name: Ident,
    pub params: Vec<Field>,
    pub ret: Option<TypeExpr>,
    pub body: Block,
    pub span: Span,
}

/// `error NotFound(id: String)`: a named error and the fields it carries besides those of
/// every error (`kind`, `message`, …).
#[derive(Clone, Debug)]
pub struct ErrorDecl {
    pub doc: Option<Box<str>>,
    pub name: Ident,
    pub fields: Vec<Field>,
    pub span: Span,
}

/// `raises NotFound on 404` on a tool: which named error an answer is.
#[derive(Clone, Debug)]
pub struct RaiseClause {
    pub error: Ident,
    pub on: RaiseOn,
    pub span: Span,
}

#[derive(Clone, Copy, Debug)]
pub enum RaiseOn {
    /// An `http` tool's answer with this status.
    Status(i64),
    /// An `exec` tool's exit status (`on exit 3`).
    Exit(i64),
    /// An `llm` tool's model declining to answer (`on refusal`).
    Refusal,
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Import(i) => i.span,
            Item::Type(t) => t.span,
            Item::Enum(e) => e.span,
            Item::Tool(t) => t.span,
            Item::Workflow(w) => w.span,
            Item::Test(t) => t.span,
            Item::Error(e) => e.span,
            Item::Function(f) => f.span,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ident {
    pub name: Name,
    pub span: Span,
}

/// A string literal without interpolation (gate names, tool paths, imports).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StrLit {
    pub value: Box<str>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Import {
    pub path: StrLit,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct TypeDecl {
    pub doc: Option<Box<str>>,
    pub name: Ident,
    /// A record's fields (empty for a refined type).
    pub fields: Vec<Field>,
    /// `type Score = Float in 0.0..1.0`: a name for a refined type, instead of a record.
    pub refined: Option<TypeExpr>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Field {
    pub doc: Option<Box<str>>,
    pub name: Ident,
    pub ty: TypeExpr,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct EnumDecl {
    pub doc: Option<Box<str>>,
    pub name: Ident,
    pub variants: Vec<Variant>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Variant {
    pub doc: Option<Box<str>>,
    pub name: Ident,
    pub fields: Vec<Field>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct ToolDecl {
    pub doc: Option<Box<str>>,
    pub name: Ident,
    pub params: Vec<Field>,
    pub ret: TypeExpr,
    pub binding: ToolBinding,
    /// `raises NotFound on 404, Conflict on 409`.
    pub raises: Vec<RaiseClause>,
    pub sensitive: Option<Span>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum ToolBinding {
    Http {
        method: Ident,
        path: StrLit,
    },
    Exec {
        command: StrLit,
    },
    Llm {
        model: StrLit,
        prompt: StrLit,
    },
    /// The binding did not parse; already reported.
    Error,
}

#[derive(Clone, Debug)]
pub struct WorkflowDecl {
    pub doc: Option<Box<str>>,
    pub name: Ident,
    pub params: Vec<Field>,
    pub ret: Option<TypeExpr>,
    /// `accepts cancel: String from role("support"), …`: the signals its runs accept.
    pub accepts: Vec<SignalDecl>,
    /// `raises OutOfStock, …`: the named errors its body may `fail` with.
    pub raises: Vec<Ident>,
    pub body: Block,
    pub span: Span,
}

/// One signal a workflow's runs accept (spec/statements.md, "Signals"): its name, the type of
/// the value it carries (`Unit` when none is written) and who may send it.
#[derive(Clone, Debug)]
pub struct SignalDecl {
    pub name: Ident,
    pub ty: Option<TypeExpr>,
    /// `from role("support") or system("billing")`: at least one, unless it did not parse.
    pub senders: Vec<SenderExpr>,
    pub span: Span,
}

/// `role("support")`, `user("alice")` or `system("billing")` after `from`.
#[derive(Clone, Debug)]
pub struct SenderExpr {
    /// `role`, `user` or `system` as written (the checker refuses other words).
    pub kind: Ident,
    pub name: StrLit,
    pub span: Span,
}

/// `test "name" { … }`: a scripted run of a workflow (see `spec/testing.md`). The words of
/// its steps (`mock`, `expect`, `approve`, …) are keywords only at the start of a step.
#[derive(Clone, Debug)]
pub struct TestDecl {
    pub name: StrLit,
    pub steps: Vec<TestStep>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct TestStep {
    pub kind: TestStepKind,
    /// `… in r1`: the named run the step is about (`let r1 = start …`); without it, the run
    /// of the last `start`.
    pub run: Option<Ident>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum TestStepKind {
    /// `mock tool returns value`, `mock tool(a, b) returns value`, `mock tool replies "raw"`,
    /// `mock tool fails Kind "message"`; each optionally `times N`.
    Mock {
        tool: Ident,
        /// Names for the arguments, when the answer is computed from them.
        params: Option<Vec<Ident>>,
        behavior: MockBehavior,
        times: Option<(u32, Span)>,
    },
    /// `[let name =] start workflow(arg, …) [as "user"]`, or with the input as JSON text:
    /// `start workflow json "{…}"`, `start workflow json file "input.json"`.
    Start {
        /// `let r1 = start …`: a name later steps give as `in r1`.
        name: Option<Ident>,
        workflow: Ident,
        input: StartInput,
        by: Option<StrLit>,
    },
    /// `expect approval "gate" [with { prompt: …, context: … }]` / `expect input "gate" …`:
    /// the gate is open now (and shows this).
    ExpectGate {
        input: bool,
        gate: StrLit,
        fields: Option<Expr>,
    },
    /// `approve [ "gate" ] as "user" [comment "…"]`, `reject …`; with `expect refused`
    /// before it, the decision must be refused.
    Decide {
        approve: bool,
        gate: Option<StrLit>,
        user: StrLit,
        comment: Option<StrLit>,
        refused: bool,
    },
    /// `provide input "gate" as "user" value <expr>`; with `expect refused` before it, the
    /// answer must be refused.
    Provide {
        gate: StrLit,
        user: StrLit,
        value: Expr,
        refused: bool,
    },
    /// `signal name as "user" [value <expr>]`: sends a signal to the run; with
    /// `expect refused` before it, it must be refused.
    Signal {
        name: Ident,
        user: StrLit,
        value: Option<Expr>,
        refused: bool,
    },
    /// `advance 25h`: the test clock moves on; due timers fire.
    Advance { by: Expr },
    /// `cancel` (or `cancel without undo`): the run is cancelled, as `flowrt cancel` does
    /// (`--no-compensate`).
    Cancel { compensate: bool },
    /// `expect result Pattern` or `expect result == value`.
    ExpectResult(ResultCheck),
    /// `expect query name Pattern` or `expect query name == value`: the run's query, now.
    ExpectQuery { name: Ident, check: ResultCheck },
    /// `expect error Kind ["message"]`: the run failed with this kind of error.
    ExpectError {
        kind: Ident,
        message: Option<StrLit>,
    },
    /// `expect [not] called tool [N times] [with (arg, …)]`.
    ExpectCalled {
        tool: Ident,
        negated: bool,
        times: Option<(u32, Span)>,
        args: Option<Vec<Expr>>,
    },
    /// `expect called in order tool [(arg, …)], …`: calls like these were made in this order
    /// (other calls may come between them).
    ExpectCallOrder { calls: Vec<ExpectedCall> },
    /// `expect audit "event" [with { field: value, … }]`.
    ExpectAudit { event: StrLit, fields: Option<Expr> },
    /// `expect escalated "gate"`.
    ExpectEscalated { gate: StrLit },
    /// `expect notified "gate" [with { field: value, … }]`: the gate was announced to the
    /// notification hooks (recorded, never sent), with these fields in the message.
    ExpectNotified { gate: StrLit, fields: Option<Expr> },
    /// `expect status completed|failed|waiting|cancelled`.
    ExpectStatus(Ident),
    /// A step that did not parse; already reported.
    Error,
}

/// What a `start` gives the workflow.
#[derive(Clone, Debug)]
pub enum StartInput {
    /// One Flow value per parameter.
    Args(Vec<Expr>),
    /// `json "{…}"`: the run's input object as JSON text, as `flowrt run --input` takes it.
    Json(StrLit),
    /// `json file "input.json"`: the same, read from a file beside the test's file.
    JsonFile(StrLit),
}

/// One call of `expect called in order`: the tool, and the arguments when written.
#[derive(Clone, Debug)]
pub struct ExpectedCall {
    pub tool: Ident,
    pub args: Option<Vec<Expr>>,
}

#[derive(Clone, Debug)]
pub enum MockBehavior {
    Returns(Expr),
    /// The raw reply (JSON text), validated like a real tool's answer.
    Replies(StrLit),
    Fails {
        kind: Ident,
        message: Option<StrLit>,
        permanent: bool,
    },
}

#[derive(Clone, Debug)]
pub enum ResultCheck {
    Matches(Pattern),
    Equals(Expr),
}

#[derive(Clone, Debug)]
pub struct TypeExpr {
    pub kind: TypeExprKind,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum TypeExprKind {
    /// The arguments are a boxed slice: most types have none, and a field's type is in every
    /// field.
    Named {
        name: Ident,
        args: Box<[TypeExpr]>,
    },
    Optional(Box<TypeExpr>),
    /// `Float in 0.0..1.0`, `String matching "…"`, `List<T> nonempty`, `String length 1..80`.
    Refined(Box<RefinedTypeExpr>),
    Error,
}

#[derive(Clone, Debug)]
pub struct RefinedTypeExpr {
    pub base: TypeExpr,
    pub rule: RuleExpr,
    /// From the rule's word (`in`, `matching`, …) to its end.
    pub rule_span: Span,
}

#[derive(Clone, Debug)]
pub enum RuleExpr {
    /// `in a..b`; either end may be left out.
    Range {
        min: Option<Bound>,
        max: Option<Bound>,
    },
    Matching(StrLit),
    NonEmpty,
    /// `length a..b`.
    Length {
        min: Option<Bound>,
        max: Option<Bound>,
    },
}

/// A bound of a range: a number literal, maybe negative.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    pub value: BoundValue,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BoundValue {
    Int(i64),
    Float(f64),
}

#[derive(Clone, Debug)]
pub struct Block {
    pub stmts: Vec<Stmt>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Stmt {
    pub kind: StmtKind,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum StmtKind {
    Let {
        mutable: bool,
        name: Ident,
        ty: Option<Box<TypeExpr>>,
        value: Expr,
    },
    /// `let b = book_hotel(t) undo { cancel_hotel(b.id) }`: once the value is there, the
    /// block is what undoes it, run (with the values it reads as they are now) if the
    /// workflow fails or runs `compensate`.
    LetUndo {
        name: Ident,
        value: Expr,
        undo: Box<Block>,
    },
    /// `compensate`: runs the undo blocks registered so far, the latest first, and forgets
    /// them.
    Compensate,
    /// `on cancel { … }`: once reached, the block is what the run does when it is cancelled
    /// (before its undo blocks run), with the values it reads as they are now.
    OnCancel(Box<Block>),
    /// The target is boxed (as `for`'s iterable): a statement is the size of its largest
    /// kind, and these two rare kinds would otherwise make every `let` larger.
    Assign {
        target: Box<Expr>,
        value: Expr,
    },
    Expr(Expr),
    While {
        cond: Expr,
        body: Block,
    },
    For {
        var: Ident,
        iter: Box<Expr>,
        body: Block,
    },
    Break,
    Continue,
    /// `continue as name(args)`: the run ends here and a new run of the same workflow starts
    /// with these arguments and a fresh history, linked to this one.
    ContinueAs {
        workflow: Ident,
        args: Vec<Expr>,
    },
    Return(Option<Expr>),
    Fail(Expr),
    Sleep(Expr),
    Audit {
        event: StrLit,
        fields: Vec<FieldInit>,
    },
    /// `waive approval for release because "no anomaly" { anomalies: n }`: on this path the
    /// named sensitive tools need no approval; who, what and why go to the audit trail.
    Waive(Box<Waiver>),
    /// `query months -> Int { months }`: a read-only view of the run's state, evaluated
    /// from outside (`flowrt query RUN months`) at the run's last durable point once the run
    /// has passed this statement. Only at the top level of a workflow's body.
    Query {
        name: Ident,
        /// Boxed: queries are rare, and a statement is one of the tree's most common nodes.
        ret: Box<TypeExpr>,
        body: Block,
    },
    /// A statement that did not parse; already reported.
    Error,
}

#[derive(Clone, Debug)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Bool(bool),
    None,
    /// Milliseconds.
    Duration(u64),
    /// `time "2026-12-01T09:00:00Z"`: milliseconds since the Unix epoch, UTC.
    Time(i64),
    Str(Vec<StrPart>),
    Name(Name),
    List(Vec<Expr>),
    Record(Vec<FieldInit>),
    Field {
        base: Box<Expr>,
        name: Ident,
        /// `?.`: absent stays absent.
        optional: bool,
    },
    Index {
        base: Box<Expr>,
        index: Box<Expr>,
    },
    Call {
        callee: Box<Expr>,
        args: Vec<Expr>,
    },
    Unary {
        op: UnaryOp,
        operand: Box<Expr>,
    },
    Binary {
        op: BinaryOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    If {
        cond: Box<Expr>,
        then_block: Box<Block>,
        /// Either a `Block` expression or another `If`.
        else_branch: Option<Box<Expr>>,
    },
    Match {
        scrutinee: Box<Expr>,
        arms: Vec<MatchArm>,
    },
    Block(Block),
    /// `retry 3 backoff 1s on ToolError { … }` (one policy) or `retry { on Timeout: 3
    /// backoff 1s, on RateLimited(r): 10 after r.retry_after } { … }` (a policy per kind,
    /// each with its own count and waits).
    Retry {
        policies: Box<[RetryPolicy]>,
        /// Written as `retry { on …: … } { … }`.
        per_kind: bool,
        body: Box<Block>,
    },
    Timeout {
        duration: Box<Expr>,
        body: Block,
    },
    Try {
        body: Box<Block>,
        /// At least one; the first whose error matches handles it.
        catches: Vec<Catch>,
    },
    AwaitApproval {
        gate: StrLit,
        options: Vec<AwaitOption>,
    },
    AwaitInput {
        ty: Box<TypeExpr>,
        name: StrLit,
        options: Vec<AwaitOption>,
    },
    /// `await signal cancel`: the next signal of that name the run received.
    AwaitSignal {
        name: Ident,
    },
    /// `select { signal cancel as why => …, after 30d => … }`: waits for the first of its
    /// arms to happen and evaluates that arm.
    Select {
        arms: Vec<SelectArm>,
    },
    /// `parallel for doc in docs max 4 { … }` or `parallel { a: …, b: … }`: branches that run
    /// at the same time, each as a child run of this one. Boxed: rare, and large.
    Parallel(Box<Parallel>),
    /// An expression that did not parse; already reported.
    Error,
}

#[derive(Clone, Debug)]
pub enum StrPart {
    Text(String),
    Interpolation(Expr),
}

#[derive(Clone, Debug)]
pub struct FieldInit {
    pub name: Ident,
    pub value: Expr,
}

#[derive(Clone, Debug)]
pub struct AwaitOption {
    pub name: Ident,
    pub value: Expr,
    /// `escalate: role("ops") after 24h`.
    pub after: Option<Box<Expr>>,
    pub span: Span,
}

/// When a `retry` tries again, and how long it waits first: `3 backoff 1s multiplier 1.5 max
/// 30s jitter none within 2h on ToolError, Timeout` in the one-policy form, `on
/// RateLimited(r): 10 after r.retry_after` in the per-kind form.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// The error kinds it retries; none: any retryable error (`retry 3 { … }`).
    pub kinds: Vec<Ident>,
    /// `on RateLimited(r)`: the error, for `after`.
    pub binding: Option<Ident>,
    /// How many attempts may end in these errors, the first included (`Int` 0 when
    /// `forever`).
    pub attempts: Expr,
    pub forever: bool,
    pub backoff: Option<Expr>,
    /// What the wait is multiplied by after each failure (`Int` or `Float`; 2 when absent).
    pub multiplier: Option<Expr>,
    /// `backoff 1s max 30s`: the longest wait between attempts.
    pub max: Option<Expr>,
    /// `jitter none`: the waits are exactly the backoff's.
    pub no_jitter: bool,
    /// `within 2h`: no attempt starts once this long has passed since the first.
    pub within: Option<Expr>,
    /// `after r.retry_after`: the wait, computed from the error (instead of a backoff).
    pub after: Option<Expr>,
    pub span: Span,
}

impl RetryPolicy {
    /// Every expression of the policy, in source order.
    pub fn exprs(&self) -> impl Iterator<Item = &Expr> {
        std::iter::once(&self.attempts).chain(
            [
                &self.backoff,
                &self.multiplier,
                &self.max,
                &self.within,
                &self.after,
            ]
            .into_iter()
            .flatten(),
        )
    }
}

/// A `waive approval for … because "…" { … }` statement.
#[derive(Clone, Debug)]
pub struct Waiver {
    /// The sensitive tools whose approval is waived.
    pub tools: Vec<Ident>,
    pub because: StrLit,
    /// What the decision to waive rests on, recorded with it.
    pub fields: Vec<FieldInit>,
}

/// One `catch` of a `try`: `catch e { … }` (any error, bound to `e`), `catch NotFound(e)
/// { … }` (that named error, bound to `e`) or `catch NotFound { … }`. A name that starts
/// with a capital letter is an error's; any other is a binding.
#[derive(Clone, Debug)]
pub struct Catch {
    pub error: Option<Ident>,
    pub binding: Option<Ident>,
    pub handler: Block,
    pub span: Span,
}

/// A `parallel` expression: its branches and what happens when one fails.
#[derive(Clone, Debug)]
pub struct Parallel {
    pub branches: ParallelBranches,
    /// `collect`: every branch's result or error, instead of the first error cancelling the
    /// others and being raised.
    pub collect: bool,
}

#[derive(Clone, Debug)]
pub enum ParallelBranches {
    /// `for var in items [max N] { body }`: one branch per item, their results a list in the
    /// order of the items, at most `max` in flight.
    Each {
        var: Ident,
        items: Expr,
        max: Option<Expr>,
        body: Block,
    },
    /// `{ name: value, … }`: one branch per field, their results a record.
    Fields(Vec<FieldInit>),
}

/// One arm of a `select`: what it waits for, and its result.
#[derive(Clone, Debug)]
pub struct SelectArm {
    pub kind: SelectArmKind,
    pub body: Expr,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum SelectArmKind {
    /// `signal cancel [as why]`: a signal of that name (its value bound to `why`).
    Signal { name: Ident, binding: Option<Ident> },
    /// `after 30d`: that long after the `select` began to wait.
    After { duration: Box<Expr> },
    /// `approval "g" { … } as d`, `input<T> "i" { … } as v` or `review(doc) as r`: a gate or
    /// a call, which runs as a branch of the run (like a `parallel`'s) from the moment the
    /// `select` waits, and is cancelled if another arm happens first.
    Wait {
        wait: Box<Expr>,
        binding: Option<Ident>,
    },
}

#[derive(Clone, Debug)]
pub struct MatchArm {
    pub pattern: Pattern,
    pub body: Expr,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Pattern {
    pub kind: PatternKind,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum PatternKind {
    Wildcard,
    /// A bare name: a unit variant of the matched enum if one has that name, otherwise a
    /// binding that matches anything.
    Name(Name),
    /// `Held(reason)` or `Verdict.Held(reason)`.
    Variant {
        enum_name: Option<Ident>,
        name: Ident,
        fields: Vec<Pattern>,
    },
    Int(i64),
    /// Milliseconds.
    Duration(u64),
    Str(String),
    Bool(bool),
    None,
    Error,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    Not,
    Neg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Or,
    And,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Coalesce,
}

impl BinaryOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Or => "||",
            BinaryOp::And => "&&",
            BinaryOp::Eq => "==",
            BinaryOp::NotEq => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::LtEq => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::GtEq => ">=",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Rem => "%",
            BinaryOp::Coalesce => "??",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// Trees are built and moved a lot, and a large file holds hundreds of thousands of
    /// nodes: these sizes are pinned so that a new field or variant cannot make every node
    /// larger unnoticed (box what is rare instead).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn nodes_stay_small() {
        assert_eq!(size_of::<Ident>(), 24);
        assert_eq!(size_of::<TypeExpr>(), 56);
        assert_eq!(size_of::<Field>(), 104);
        assert_eq!(size_of::<Variant>(), 72);
        assert_eq!(size_of::<Expr>(), 64);
        assert_eq!(size_of::<Stmt>(), 112);
        assert_eq!(size_of::<AwaitOption>(), 104);
        assert_eq!(size_of::<FieldInit>(), 88);
        assert_eq!(size_of::<Block>(), 32);
    }
}
