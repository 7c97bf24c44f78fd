//! Checking workflow bodies: statements and expressions in, types and diagnostics out.
//!
//! Types flow both ways: an expected type (from an annotation, a parameter, the workflow's
//! result) guides record literals, `[]` and `none`. Along the way the checker tracks a
//! [`Flow`] so that it can tell, at each call of a `sensitive` tool, whether every path to
//! it passed an approved decision (E0400), and warn about unreachable code and unused
//! variables.

use super::exhaustive::{self, Ctor, Pat, Witness};
use super::flow::Flow;
use super::{
    Checked, FileScope, FunctionDef, IterKind, LocalFact, LocalKind, ParallelFacts, Resolutions,
    Resolved, Value, WorkflowDef, from_stdlib, resolve_type,
};
use crate::diagnostics::{Diagnostic, codes, did_you_mean};
use crate::span::{FileId, Span};
use crate::syntax::ast::{self, BinaryOp, ExprKind, PatternKind, StmtKind, UnaryOp};
use crate::syntax::name::Name;
use crate::types::{Type, TypeDefKind, TypeId};
use flow_stdlib as stdlib;

pub fn check_workflow(
    checked: &Checked,
    workflow: &WorkflowDef,
    file: FileId,
    decl: &ast::WorkflowDecl,
    diagnostics: &mut Vec<Diagnostic>,
    file_start: usize,
    resolved: &mut Resolutions,
) {
    let mut checker = BodyChecker::new(
        checked,
        workflow,
        file,
        &decl.name,
        &decl.body,
        diagnostics,
        file_start,
        resolved,
    );
    checker.check_signal_types();
    checker.check_body(&decl.name, &decl.body);
}

/// A `fn`'s body: checked like a workflow's, and any durable point in it is E0411.
pub fn check_function(
    checked: &Checked,
    function: &FunctionDef,
    file: FileId,
    decl: &ast::FunctionDecl,
    diagnostics: &mut Vec<Diagnostic>,
    file_start: usize,
    resolved: &mut Resolutions,
) {
    let workflow = function.as_workflow();
    let mut checker = BodyChecker::new(
        checked,
        &workflow,
        file,
        &decl.name,
        &decl.body,
        diagnostics,
        file_start,
        resolved,
    );
    checker.function = true;
    checker.check_body(&decl.name, &decl.body);
}

struct Local {
    name: Name,
    ty: Type,
    span: Span,
    mutable: bool,
    used: bool,
    /// Bound by `let d = await approval …`: `d.approved` narrows the flow.
    decision: bool,
    /// Bound by `let ok = d.approved` (or another condition on a decision): whether every
    /// path is approved when the value is true, and when it is false.
    condition: Option<(bool, bool)>,
    /// Its index in [`super::IdeFacts::locals`], when editor facts are recorded.
    fact: Option<usize>,
    /// A narrowed view of an outer local (`x` after `x != none`): same name and fact, a
    /// plain type; dropping it reports nothing.
    shadow: bool,
    /// Bound by `let r = parallel { legal: await approval …, … }`: the fields that are
    /// decisions, so that `r.legal.approved` narrows the flow like `d.approved`.
    decision_fields: Vec<Name>,
}

struct BodyChecker<'a> {
    checked: &'a Checked,
    scope: &'a FileScope,
    file: FileId,
    diagnostics: &'a mut Vec<Diagnostic>,
    /// Where this file's diagnostics start in `diagnostics`.
    file_start: usize,
    locals: Vec<Local>,
    workflow: &'a WorkflowDef,
    flow: Flow,
    /// For each enclosing loop, the flow facts of its `break`s.
    loops: Vec<Flow>,
    /// What names, calls and patterns resolved to, for the lowering to bytecode.
    resolved: &'a mut Resolutions,
    /// The statements at the top level of the body (where a `query` may stand).
    top_level: Vec<Span>,
    /// The queries declared so far, with their names' spans.
    queries: Vec<(String, Span)>,
    /// Where the workflow's `on cancel` is, once seen.
    on_cancel: Option<Span>,
    /// The enclosing `parallel`s, outermost first.
    branches: Vec<BranchScope>,
    /// Checking a `fn`: `workflow` is its signature, and durable points are E0411.
    function: bool,
    /// The constructs reported as E0411 so far.
    forbidden: Vec<Span>,
}

/// A `parallel` being checked: where its branches' own locals begin, and the enclosing
/// locals they read so far (each branch runs as a workflow of its own, which takes them).
struct BranchScope {
    mark: usize,
    span: Span,
    captures: Vec<(Name, Type)>,
}

/// Optional locals a condition proves present, with their plain types.
type Present = Vec<(Name, Type)>;

/// How much of a matched value one pattern covers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Coverage {
    Everything,
    Variant(usize),
    Bool(bool),
    NoneValue,
    Partial,
    /// The pattern has an error (already reported): assume it covers what was meant, so
    /// neither a missing-arm error nor an unreachable-arm warning follows from it.
    Unknown,
}

impl<'a> BodyChecker<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        checked: &'a Checked,
        workflow: &'a WorkflowDef,
        file: FileId,
        name: &ast::Ident,
        body: &ast::Block,
        diagnostics: &'a mut Vec<Diagnostic>,
        file_start: usize,
        resolved: &'a mut Resolutions,
    ) -> BodyChecker<'a> {
        BodyChecker {
            checked,
            scope: &checked.scopes[file.0 as usize],
            file,
            diagnostics,
            file_start,
            locals: Vec::new(),
            workflow,
            flow: Flow::not_approved(
                name.span,
                format!(
                    "no approval is awaited between the start of `{}` and the call",
                    name.name
                ),
            ),
            loops: Vec::new(),
            resolved,
            top_level: body.stmts.iter().map(|s| s.span).collect(),
            queries: Vec::new(),
            on_cancel: None,
            branches: Vec::new(),
            function: false,
            forbidden: Vec::new(),
        }
    }

    /// The parameters, then the body and its result.
    fn check_body(&mut self, name: &ast::Ident, body: &ast::Block) {
        for param in &self.workflow.params {
            let ident = ast::Ident {
                name: param.name.clone(),
                span: param.span,
            };
            self.bind(&ident, param.ty.clone(), false, false, LocalKind::Param);
            if let Some(local) = self.locals.last_mut() {
                local.used = true;
            }
            // Parameters are visible in the whole body (and never popped).
            self.note_visible(body.span.start, body.span.end);
        }
        // A workflow without a result discards its body's value, like a statement.
        let expected = &self.workflow.ret;
        let body_type = self.check_block(body, Some(expected));
        self.check_result(name, body, &body_type);
    }

    /// `workflow` or `fn`, for messages about the declaration being checked.
    fn what(&self) -> &'static str {
        if self.function {
            "function"
        } else {
            "workflow"
        }
    }

    /// Reports `label` (what the construct does: "calls the tool `x`") at `span` when the
    /// body being checked is a `fn`'s, where nothing durable may happen (E0411); true if
    /// it did.
    fn forbid_in_function(&mut self, span: Span, extent: Span, label: &str, help: &str) -> bool {
        if !self.function {
            return false;
        }
        // Inside a construct already reported (a tool call in a `retry`), once is enough.
        if self
            .forbidden
            .iter()
            .any(|outer| outer.start <= extent.start && extent.end <= outer.end)
        {
            return true;
        }
        self.forbidden.push(extent);
        let name = self.workflow.name.clone();
        self.error(
            Diagnostic::error(
                codes::DURABLE_STEP_IN_FUNCTION,
                self.file,
                span,
                label.to_string(),
            )
            .with_message(format!("Function `{name}` would take a durable step"))
            .with_label(self.file, self.workflow.span, "in this function")
            .with_help(help.to_string()),
        );
        true
    }

    /// [`Self::forbid_in_function`] with the help for most constructs.
    fn forbid_durable(&mut self, span: Span, extent: Span, label: &str) -> bool {
        self.forbid_in_function(
            span,
            extent,
            label,
            "a `fn` only computes a value from its arguments; do this in a workflow, and pass what it gives to the function",
        )
    }

    // ----- helpers ------------------------------------------------------------------

    fn show(&self, ty: &Type) -> String {
        format!("`{}`", ty.display(&self.checked.types))
    }

    fn record(&mut self, span: Span, resolved: Resolved) {
        self.resolved.items.insert((self.file, span), resolved);
    }

    fn error(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    /// The innermost local called `name`; `span` is the use, for editor facts.
    fn lookup_local(&mut self, name: &str, span: Span) -> Option<&mut Local> {
        let file = self.file;
        self.note_capture(name);
        let local = self.locals.iter_mut().rev().find(|l| l.name == name)?;
        if let (Some(ide), Some(fact)) = (self.resolved.ide.as_mut(), local.fact) {
            ide.local_uses.insert((file, span), fact);
            ide.types.insert((file, span), local.ty.clone());
        }
        Some(local)
    }

    /// A read of `name` inside `parallel` branches: every enclosing `parallel` whose
    /// branches the variable is declared outside of captures it. A narrowed view of it made
    /// inside a branch reads the variable itself, so that is what is captured.
    fn note_capture(&mut self, name: &str) {
        if self.branches.is_empty() {
            return;
        }
        let Some(found) = self.locals.iter().rposition(|l| l.name == name) else {
            return;
        };
        let origin = self.locals[..=found]
            .iter()
            .rposition(|l| l.name == name && !l.shadow)
            .unwrap_or(found);
        for branch in &mut self.branches {
            if origin >= branch.mark || branch.captures.iter().any(|(n, _)| n == name) {
                continue;
            }
            let seen = if found < branch.mark { found } else { origin };
            let local = &self.locals[seen];
            branch.captures.push((local.name.clone(), local.ty.clone()));
        }
    }

    /// Reports `what` (a `return`, an `await signal`, …) when it stands in a `parallel`
    /// branch, where it has no meaning; true if it did.
    fn forbid_in_branch(&mut self, span: Span, what: &str, help: &str) -> bool {
        let Some(branch) = self.branches.last() else {
            return false;
        };
        let parallel = branch.span;
        self.error(
            Diagnostic::error(
                codes::NOT_IN_BRANCH,
                self.file,
                span,
                format!("{what} inside a branch"),
            )
            .with_message(format!("{what} cannot stand in a `parallel` branch"))
            .with_label(self.file, parallel, "in a branch of this `parallel`")
            .with_help(help),
        );
        true
    }

    fn bind(
        &mut self,
        name: &ast::Ident,
        ty: Type,
        mutable: bool,
        decision: bool,
        kind: LocalKind,
    ) {
        let fact = self.resolved.ide.as_mut().map(|ide| {
            ide.locals.push(LocalFact {
                file: self.file,
                name: name.name.clone(),
                span: name.span,
                ty: ty.clone(),
                mutable,
                kind,
                visible: Span::new(name.span.end as usize, name.span.end as usize),
            });
            ide.locals.len() - 1
        });
        self.locals.push(Local {
            name: name.name.clone(),
            ty,
            span: name.span,
            mutable,
            used: false,
            decision,
            condition: None,
            fact,
            shadow: false,
            decision_fields: Vec::new(),
        });
    }

    /// Makes each name in `present` (a `let`-bound local or parameter of type `T?`, proved
    /// present by a condition) read as a plain `T`, until the locals are truncated to the
    /// mark this returns or its scope ends.
    fn narrow(&mut self, present: &Present) -> usize {
        let mark = self.locals.len();
        for (name, ty) in present {
            let Some(local) = self.locals.iter().rev().find(|l| l.name == *name) else {
                continue;
            };
            let shadow = Local {
                name: name.clone(),
                ty: ty.clone(),
                span: local.span,
                mutable: false,
                used: true,
                decision: local.decision,
                condition: local.condition,
                fact: local.fact,
                shadow: true,
                decision_fields: local.decision_fields.clone(),
            };
            self.locals.push(shadow);
        }
        mark
    }

    /// What to do with an optional operand: test it first, or give a default. A `var` does
    /// not narrow, so its help says so.
    fn optional_operand_help(&self, operand: &ast::Expr) -> String {
        let ExprKind::Name(name) = &operand.kind else {
            return "this value may be `none`: give a default with `value ?? default`".to_string();
        };
        let local = self.locals.iter().rev().find(|l| l.name == *name);
        if local.is_some_and(|l| l.mutable) {
            format!(
                "`{name}` may be `none`, and as a `var` it stays optional after `{name} != none` (it may change); copy it into a `let` and test that, or give a default: `{name} ?? …`"
            )
        } else {
            format!(
                "`{name}` may be `none`: test it first (inside `if {name} != none {{ … }}` it is a plain value) or give a default: `{name} ?? …`"
            )
        }
    }

    /// The optional locals that `cond` proves present when it is true, and when it is
    /// false: `x != none`, `x == none`, and `!`, `&&`, `||` of such tests. Only names that
    /// cannot change in between narrow (a `let`, a parameter, a pattern binding); a `var`
    /// may be reassigned between the test and the use.
    fn presence(&self, cond: &ast::Expr) -> (Present, Present) {
        match &cond.kind {
            ExprKind::Binary {
                op: op @ (BinaryOp::Eq | BinaryOp::NotEq),
                lhs,
                rhs,
            } => {
                let name = match (&lhs.kind, &rhs.kind) {
                    (ExprKind::Name(name), ExprKind::None)
                    | (ExprKind::None, ExprKind::Name(name)) => name,
                    _ => return (Vec::new(), Vec::new()),
                };
                let present = self
                    .locals
                    .iter()
                    .rev()
                    .find(|l| l.name == *name)
                    .filter(|l| !l.mutable)
                    .and_then(|l| match &l.ty {
                        Type::Optional(inner) => Some(vec![(name.clone(), (**inner).clone())]),
                        _ => None,
                    })
                    .unwrap_or_default();
                if *op == BinaryOp::NotEq {
                    (present, Vec::new())
                } else {
                    (Vec::new(), present)
                }
            }
            ExprKind::Unary {
                op: UnaryOp::Not,
                operand,
            } => {
                let (when_true, when_false) = self.presence(operand);
                (when_false, when_true)
            }
            ExprKind::Binary {
                op: BinaryOp::And,
                lhs,
                rhs,
            } => {
                let (mut when_true, _) = self.presence(lhs);
                when_true.extend(self.presence(rhs).0);
                (when_true, Vec::new())
            }
            ExprKind::Binary {
                op: BinaryOp::Or,
                lhs,
                rhs,
            } => {
                let (_, mut when_false) = self.presence(lhs);
                when_false.extend(self.presence(rhs).1);
                (Vec::new(), when_false)
            }
            _ => (Vec::new(), Vec::new()),
        }
    }

    /// Editor facts: the last bound local is visible from `start` to `end` (until its scope
    /// is popped, which sets the end again).
    fn note_visible(&mut self, start: u32, end: u32) {
        let fact = self.locals.last().and_then(|l| l.fact);
        if let (Some(ide), Some(fact)) = (self.resolved.ide.as_mut(), fact) {
            ide.locals[fact].visible = Span {
                start,
                end: end.max(start),
            };
        }
    }

    /// Drops the locals declared since `mark` (their scope ends at byte `end`), warning
    /// about the unused ones.
    fn pop_scope(&mut self, mark: usize, end: u32) {
        let dropped: Vec<Local> = self.locals.drain(mark..).filter(|l| !l.shadow).collect();
        if let Some(ide) = self.resolved.ide.as_mut() {
            for fact in dropped.iter().filter_map(|l| l.fact) {
                let visible = &mut ide.locals[fact].visible;
                visible.end = end.max(visible.start);
            }
        }
        for local in dropped {
            if !local.used && !local.name.starts_with('_') {
                self.error(
                    Diagnostic::warning(
                        codes::UNUSED_VARIABLE,
                        self.file,
                        local.span,
                        "never read",
                    )
                    .with_message(format!("Unused variable `{}`", local.name))
                    .with_help(format!(
                        "remove it, or name it `_{}` if it is meant to be unused",
                        local.name
                    )),
                );
            }
        }
    }

    fn expect_type(&mut self, expr: &ast::Expr, expected: &Type) -> Type {
        let found = self.check_expr(expr, Some(expected));
        if !self.checked.types.assignable(&found, expected) {
            self.mismatch(expr.span, expected, &found, None);
        }
        found
    }

    fn mismatch(
        &mut self,
        span: Span,
        expected: &Type,
        found: &Type,
        because: Option<(FileId, Span, String)>,
    ) {
        let (e, f) = (self.show(expected), self.show(found));
        let help = match (expected, found) {
            (_, Type::Optional(inner)) if self.checked.types.assignable(inner, expected) => {
                "this value may be `none`: give a default with `value ?? default`".to_string()
            }
            // A secret never becomes text (E0321), so `to_string` is no way out.
            (Type::String, Type::Secret) => {
                "a `Secret` never becomes text: pass it only where a `Secret` is expected (declare this parameter or field `Secret`), or pass text here instead".to_string()
            }
            (Type::String, _) => {
                "turn the value into text with `to_string(…)` or `\"${…}\"`".to_string()
            }
            (Type::Float, Type::Int) => {
                "write the number with a decimal point, e.g. `2.0`".to_string()
            }
            (Type::Duration, Type::Int) => {
                "give the number a unit: `30s`, `5m`, `48h`, `2d`".to_string()
            }
            (Type::Approvers, Type::String) => {
                "name a role or a user: `role(\"customs\")`, `user(\"ana\")`".to_string()
            }
            (_, Type::Unit) => {
                "this expression has no value; end the block with the value you want".to_string()
            }
            _ => format!("give a value of type {e} here, or change the declared type"),
        };
        let mut diagnostic = Diagnostic::error(
            codes::TYPE_MISMATCH,
            self.file,
            span,
            format!("expected {e}, found {f}"),
        )
        .with_note(format!("expected type: {e}\n   found type: {f}"))
        .with_help(help);
        if let Some((file, span, message)) = because {
            diagnostic = diagnostic.with_label(file, span, message);
        }
        if e == f {
            // Two declarations with one name (from different files): show both.
            for ty in [expected, found] {
                if let Type::Named(id) = ty {
                    let def = self.checked.types.get(*id);
                    if let Some(file) = def.file {
                        diagnostic = diagnostic.with_label(
                            file,
                            def.span,
                            format!("a `{}` is declared here", def.name),
                        );
                    }
                }
            }
            diagnostic =
                diagnostic.with_note("these are two different types that have the same name");
        }
        self.error(diagnostic);
    }

    fn check_result(&mut self, name: &ast::Ident, body: &ast::Block, body_type: &Type) {
        let ret = &self.workflow.ret;
        if *ret == Type::Unit || matches!(body_type, Type::Never) {
            return;
        }
        let what = self.what();
        let tail = body.stmts.last().and_then(|s| match &s.kind {
            StmtKind::Expr(e) => Some(e),
            _ => None,
        });
        match tail {
            Some(expr) if *body_type != Type::Unit => {
                if !self.checked.types.assignable(body_type, ret) {
                    let because = self.workflow.ret_span.map(|s| {
                        (
                            self.file,
                            s,
                            format!("the {what}'s result type is declared here"),
                        )
                    });
                    self.mismatch(expr.span, ret, body_type, because);
                }
            }
            _ => {
                let end = Span::new(body.span.end as usize - 1, body.span.end as usize);
                let ret_show = self.show(ret);
                let mut diagnostic = Diagnostic::error(
                    codes::MISSING_RETURN,
                    self.file,
                    end,
                    format!("the {what} can reach its end here without a value of type {ret_show}"),
                )
                .with_message(format!("`{}` may end without returning a value", name.name))
                .with_help(format!(
                    "end the {what} with a value of type {ret_show}, or `return` one on every path"
                ));
                if let Some(span) = self.workflow.ret_span {
                    diagnostic = diagnostic.with_label(
                        self.file,
                        span,
                        format!("the {what} promises this result"),
                    );
                }
                self.error(diagnostic);
            }
        }
    }

    // ----- blocks and statements ----------------------------------------------------

    fn check_block(&mut self, block: &ast::Block, expected: Option<&Type>) -> Type {
        let mark = self.locals.len();
        let mut warned = false;
        let mut result = Type::Unit;
        for (index, stmt) in block.stmts.iter().enumerate() {
            if !self.flow.is_reachable() && !warned {
                warned = true;
                let last = block.stmts.last().map(|s| s.span).unwrap_or(stmt.span);
                let mut diagnostic = Diagnostic::warning(
                    codes::UNREACHABLE_CODE,
                    self.file,
                    stmt.span.to(last),
                    "this code never runs",
                )
                .with_help("remove it, or move it before the statement that ends the path");
                if index > 0 {
                    diagnostic = diagnostic.with_label(
                        self.file,
                        block.stmts[index - 1].span,
                        "every path through this ends here",
                    );
                }
                self.error(diagnostic);
            }
            let is_last = index + 1 == block.stmts.len();
            match &stmt.kind {
                StmtKind::Expr(expr) if is_last => result = self.check_expr(expr, expected),
                _ => self.check_stmt(stmt),
            }
            if is_last && !matches!(stmt.kind, StmtKind::Expr(_)) {
                result = Type::Unit;
            }
        }
        self.pop_scope(mark, block.span.end);
        if !self.flow.is_reachable() {
            return Type::Never;
        }
        result
    }

    fn check_stmt(&mut self, stmt: &ast::Stmt) {
        match &stmt.kind {
            StmtKind::Let {
                mutable,
                name,
                ty,
                value,
            } => self.check_let(*mutable, name, ty.as_deref(), value),
            StmtKind::LetUndo { name, value, undo } => {
                // The `undo` between the value and the block (` undo ` as written by fmt).
                let (from, to) = (value.span.end as usize, undo.span.start as usize);
                let word = if to >= from + 6 {
                    Span::new(from + 1, to - 1)
                } else {
                    Span::new(from, to.max(from))
                };
                if self.forbid_durable(word, stmt.span, "this registers an `undo` block") {
                    self.check_let(false, name, None, value);
                } else {
                    self.check_let_undo(name, value, undo)
                }
            }
            StmtKind::Compensate if self.forbid_durable(stmt.span, stmt.span, "this runs the undo blocks") => {}
            StmtKind::Compensate => {
                self.forbid_in_branch(
                    stmt.span,
                    "`compensate`",
                    "compensate in the workflow itself, where the undo blocks were registered",
                );
            }
            StmtKind::Assign { target, value } => self.check_assign(target, value),
            StmtKind::Expr(expr) => {
                self.check_expr(expr, Some(&Type::Unit));
            }
            StmtKind::While { cond, body } => {
                let entry = self.flow.clone();
                let (when_true, mut when_false) = self.check_cond(cond);
                if matches!(cond.kind, ExprKind::Bool(true)) {
                    // `while true` ends only through `break` (or `return`, `fail`).
                    when_false = Flow::Unreachable;
                }
                self.flow = when_true;
                self.loops.push(Flow::Unreachable);
                self.check_block(body, Some(&Type::Unit));
                let breaks = self.loops.pop().unwrap_or(Flow::Unreachable);
                self.flow = explain_join(
                    &entry,
                    breaks,
                    when_false,
                    cond.span,
                    "the loop can end here, when its condition is false, before the approval",
                );
            }
            StmtKind::For { var, iter, body } => {
                let element = self.element_type(iter);
                let entry = self.flow.clone();
                let mark = self.locals.len();
                self.bind(var, element, false, false, LocalKind::Loop);
                self.note_visible(body.span.start, body.span.end);
                self.loops.push(Flow::Unreachable);
                self.check_block(body, Some(&Type::Unit));
                let breaks = self.loops.pop().unwrap_or(Flow::Unreachable);
                self.pop_scope(mark, body.span.end);
                let body_end = std::mem::replace(&mut self.flow, Flow::Unreachable);
                self.flow = explain_join(
                    &entry,
                    body_end.join(breaks),
                    entry.clone(),
                    iter.span,
                    "the loop may run zero times, and then this path skips the approval",
                );
            }
            StmtKind::Break | StmtKind::Continue => {
                let flow = std::mem::replace(&mut self.flow, Flow::Unreachable);
                let is_break = matches!(stmt.kind, StmtKind::Break);
                if let Some(breaks) = self.loops.last_mut() {
                    if is_break {
                        *breaks = std::mem::replace(breaks, Flow::Unreachable).join(flow);
                    }
                } else if !self.forbid_in_branch(
                    stmt.span,
                    if is_break { "`break`" } else { "`continue`" },
                    "a branch cannot leave the loop around its `parallel`; give the branch a value that says what happened and decide after the `parallel`",
                ) {
                    self.error(
                        Diagnostic::error(
                            codes::LOOP_CONTROL_OUTSIDE_LOOP,
                            self.file,
                            stmt.span,
                            "not inside `for` or `while`",
                        )
                        .with_help("use `return` to leave the workflow, or move this into a loop"),
                    );
                }
            }
            StmtKind::Return(_)
                if self.forbid_in_branch(
                    stmt.span,
                    "`return`",
                    "a branch's value is its last expression; return from the workflow after the `parallel`",
                ) =>
            {
                self.flow = Flow::Unreachable;
            }
            StmtKind::Return(value) => {
                let ret = self.workflow.ret.clone();
                match value {
                    Some(value) if ret == Type::Unit => {
                        self.check_expr(value, None);
                        self.error(
                            Diagnostic::error(
                                codes::TYPE_MISMATCH,
                                self.file,
                                value.span,
                                format!("this {} declares no result", self.what()),
                            )
                            .with_help(if self.function {
                                "declare the result type after the parameters: `fn name(…) -> Type`"
                            } else {
                                "declare the result type after the parameters: `workflow name(…) -> Type`"
                            }),
                        );
                    }
                    Some(value) => {
                        let because = self.workflow.ret_span.map(|s| {
                            (self.file, s, "the result type is declared here".to_string())
                        });
                        let found = self.check_expr(value, Some(&ret));
                        if !self.checked.types.assignable(&found, &ret) {
                            self.mismatch(value.span, &ret, &found, because);
                        }
                    }
                    None if ret != Type::Unit => {
                        let show = self.show(&ret);
                        self.error(
                            Diagnostic::error(
                                codes::TYPE_MISMATCH,
                                self.file,
                                stmt.span,
                                format!(
                                    "this `return` has no value, but the {} returns {show}",
                                    self.what()
                                ),
                            )
                            .with_help(format!("return a value of type {show}: `return value`")),
                        );
                    }
                    None => {}
                }
                self.flow = Flow::Unreachable;
            }
            StmtKind::Fail(value) => {
                self.check_fail(value);
                self.flow = Flow::Unreachable;
            }
            StmtKind::ContinueAs { args, .. }
                if self.forbid_durable(stmt.span, stmt.span, "this starts a new run") =>
            {
                self.check_args_loosely(args);
                self.flow = Flow::Unreachable;
            }
            StmtKind::ContinueAs { workflow, args } => {
                if !self.forbid_in_branch(
                    stmt.span,
                    "`continue as`",
                    "continue the workflow as a new run after the `parallel`",
                ) {
                    self.check_continue_as(workflow, args, stmt.span);
                }
                self.flow = Flow::Unreachable;
            }
            StmtKind::Sleep(duration) => {
                self.forbid_durable(stmt.span, stmt.span, "this waits on a durable timer");
                self.expect_type(duration, &Type::Duration);
                if duration_constant(duration).is_some_and(|ms| ms < 0) {
                    self.out_of_range(
                        duration.span,
                        "a negative wait",
                        "give a positive duration: `sleep 2h`",
                    );
                }
            }
            StmtKind::Waive(waiver) => {
                if !self.forbid_durable(stmt.span, stmt.span, "this writes to the run's audit trail")
                {
                    self.check_waiver(stmt.span, waiver);
                }
            }
            StmtKind::Audit { event, fields } => {
                self.forbid_durable(stmt.span, stmt.span, "this writes to the run's audit trail");
                self.check_not_empty(event, "audit event", "audit \"docs_checked\" { … }");
                let types = self.check_record_fields(fields);
                for (field, (_, ty)) in fields.iter().zip(&types) {
                    self.forbid_secret(field.value.span, ty, "in the audit trail");
                }
            }
            StmtKind::Query { name, .. }
                if self.forbid_in_function(
                    name.span,
                    stmt.span,
                    "a query of a function",
                    "a query shows the state of a workflow's run; declare it in the workflow",
                ) => {}
            StmtKind::Query { name, ret, body } => self.check_query(stmt.span, name, ret, body),
            StmtKind::OnCancel(block) => {
                let end = (stmt.span.start as usize + "on cancel".len())
                    .min(block.span.start as usize);
                let keyword = Span::new(stmt.span.start as usize, end);
                if !self.forbid_durable(keyword, stmt.span, "a function is never cancelled") {
                    self.check_on_cancel(stmt.span, block);
                }
            }
            StmtKind::Error => {}
        }
    }

    /// `query name -> T { … }`: at the top level, named once, read-only (no step, no wait,
    /// no assignment to the run's variables), of its declared type. It does not change the
    /// flow of the body around it.
    fn check_query(
        &mut self,
        span: Span,
        name: &ast::Ident,
        ret: &ast::TypeExpr,
        body: &ast::Block,
    ) {
        if !self.top_level.contains(&span) {
            self.error(
                Diagnostic::error(codes::QUERY_NOT_AT_TOP_LEVEL, self.file, name.span, "not at the top level of the workflow")
                    .with_message(format!("Query `{}` is inside a block", name.name))
                    .with_help("declare queries at the top level of the workflow's body, after the variables they read"),
            );
        }
        if let Some((_, first)) = self.queries.iter().find(|(n, _)| *n == name.name) {
            let first = *first;
            self.error(
                Diagnostic::error(
                    codes::DUPLICATE_DEFINITION,
                    self.file,
                    name.span,
                    "defined again here",
                )
                .with_message(format!("Query `{}` is defined more than once", name.name))
                .with_label(self.file, first, "first defined here")
                .with_help("rename one of them, or remove the duplicate"),
            );
        } else {
            self.queries.push((name.name.to_string(), name.span));
        }
        let scope = self.scope;
        let is_step = |callee: &str| scope.names_a_step(callee);
        let outer: Vec<String> = self.locals.iter().map(|l| l.name.to_string()).collect();
        if let Some(at) = crate::testing::first_effect(body, &is_step) {
            self.error(
                Diagnostic::error(codes::QUERY_NOT_READ_ONLY, self.file, at, "this performs a step")
                    .with_message(format!("Query `{}` would change the run", name.name))
                    .with_label(self.file, name.span, "in this query")
                    .with_help("a query only reads the run's variables: call tools, wait and audit in the workflow, and keep what the query shows in a variable"),
            );
        } else if let Some(at) = crate::testing::first_assignment_to(body, &outer) {
            self.error(
                Diagnostic::error(codes::QUERY_NOT_READ_ONLY, self.file, at, "this assigns to a variable of the run")
                    .with_message(format!("Query `{}` would change the run", name.name))
                    .with_label(self.file, name.span, "in this query")
                    .with_help("a query only reads the run's variables; compute into a `let` of the query instead"),
            );
        }
        let expected = resolve_type(self.checked, self.file, ret, self.diagnostics);
        let flow = self.flow.clone();
        let mark = self.locals.len();
        let found = self.check_block(body, Some(&expected));
        self.pop_scope(mark, body.span.end);
        if !self.checked.types.assignable(&found, &expected) {
            let at = body.stmts.last().map_or(body.span, |s| s.span);
            self.mismatch(at, &expected, &found, None);
        }
        self.flow = flow;
    }

    /// `let b = step(…) undo { … }`: the `let`, then its undo block, checked like a
    /// branch (it runs later, as a run of its own, with the values it reads as they are at
    /// the `let`), from the facts after the step.
    fn check_let_undo(&mut self, name: &ast::Ident, value: &ast::Expr, undo: &ast::Block) {
        self.check_let(false, name, None, value);
        self.forbid_in_branch(
            Span::new(undo.span.start as usize, undo.span.start as usize + 1),
            "an `undo` block",
            "register undo blocks in the workflow itself, before or after the `parallel`",
        );
        self.check_run_apart(undo);
    }

    /// A block that runs as a run of its own (an undo block, `on cancel`): checked as a
    /// branch is, what it reads recorded for the lowering; the flow facts around it are
    /// those before it.
    fn check_run_apart(&mut self, block: &ast::Block) {
        let flow = self.flow.clone();
        let at = Span::new(block.span.start as usize, block.span.start as usize);
        let (ty, captures) = self.in_branch(at, |this| {
            let mark = this.locals.len();
            let ty = this.check_block(block, None);
            this.pop_scope(mark, block.span.end);
            ty
        });
        self.flow = flow;
        self.resolved.parallels.insert(
            (self.file, block.span),
            ParallelFacts {
                item: None,
                captures,
                results: vec![branch_value(ty)],
            },
        );
    }

    /// `on cancel { … }`: at the top level of the workflow, once, run apart like an undo
    /// block.
    fn check_on_cancel(&mut self, span: Span, block: &ast::Block) {
        let end = (span.start as usize + "on cancel".len()).min(block.span.start as usize);
        let keyword = Span::new(span.start as usize, end);
        if !self.top_level.contains(&span) {
            self.error(
                Diagnostic::error(
                    codes::ON_CANCEL_NOT_AT_TOP_LEVEL,
                    self.file,
                    keyword,
                    "inside a block",
                )
                .with_message("`on cancel` is inside a block")
                .with_help("write `on cancel { … }` at the top level of the workflow's body, after the variables it reads (near the start: a run cancelled before it is reached does not run it)"),
            );
        } else if let Some(first) = self.on_cancel {
            self.error(
                Diagnostic::error(
                    codes::DUPLICATE_DEFINITION,
                    self.file,
                    keyword,
                    "a second `on cancel`",
                )
                .with_message("The workflow has more than one `on cancel`")
                .with_label(self.file, first, "the first")
                .with_help("put everything the run does when cancelled in one `on cancel` block"),
            );
        } else {
            self.on_cancel = Some(keyword);
        }
        self.check_run_apart(block);
    }

    fn check_let(
        &mut self,
        mutable: bool,
        name: &ast::Ident,
        ty: Option<&ast::TypeExpr>,
        value: &ast::Expr,
    ) {
        let annotated = ty.map(|t| resolve_type(self.checked, self.file, t, self.diagnostics));
        let needs_annotation = match &value.kind {
            ExprKind::None => true,
            ExprKind::List(items) => items.is_empty(),
            _ => false,
        };
        if annotated.is_none() && needs_annotation {
            self.error(
                Diagnostic::error(
                    codes::CANNOT_INFER,
                    self.file,
                    value.span,
                    "the type of this value is not known",
                )
                .with_message(format!("Cannot infer the type of `{}`", name.name))
                .with_help(match value.kind {
                    ExprKind::None => format!(
                        "annotate it with an optional type: `let {}: String? = none`",
                        name.name
                    ),
                    _ => format!(
                        "annotate it with the list's type: `let {}: List<String> = []`",
                        name.name
                    ),
                }),
            );
        }
        let decision = !mutable && self.is_decision(value);
        let decision_fields = if mutable {
            Vec::new()
        } else {
            decision_fields(value)
        };
        let mut condition = None;
        let bool_annotation = annotated.as_ref().is_none_or(|t| *t == Type::Bool);
        let mut found = if !mutable && bool_annotation && is_condition_shaped(value) {
            let entry_approved = self.flow == Flow::Approved;
            let (when_true, when_false) = self.check_cond(value);
            let narrows = (when_true == Flow::Approved, when_false == Flow::Approved);
            if !entry_approved && (narrows.0 || narrows.1) {
                condition = Some(narrows);
            }
            Type::Bool
        } else {
            match &annotated {
                Some(expected) => {
                    let found = self.check_expr(value, Some(expected));
                    if !self.checked.types.assignable(&found, expected) {
                        self.mismatch(value.span, expected, &found, None);
                    }
                    expected.clone()
                }
                // A `var` may take any value of the base later: it keeps no refinement
                // unless it is annotated with one.
                None if mutable => self.check_expr(value, None),
                None => self.check_expr_written(value, None),
            }
        };
        if found == Type::Unit {
            self.error(
                Diagnostic::error(
                    codes::TYPE_MISMATCH,
                    self.file,
                    value.span,
                    "this has no value",
                )
                .with_message(format!("`{}` would have no value", name.name))
                .with_help("bind a value: end the block or branch with the value you want"),
            );
            found = Type::Unknown;
        }
        if decision && matches!(self.flow, Flow::NotApproved(_)) {
            self.flow = Flow::not_approved(
                value.span,
                format!(
                    "the decision `{}` may be a rejection: check `{}.approved` first",
                    name.name, name.name
                ),
            );
        }
        self.bind(name, found, mutable, decision, LocalKind::Let);
        if let Some(local) = self.locals.last_mut() {
            local.decision_fields = decision_fields;
        }
        if let Some(local) = self.locals.last_mut() {
            local.condition = condition;
        }
        // Visible after its value (`let x = x + 1` reads the outer `x`), to the block's end.
        self.note_visible(value.span.end, u32::MAX);
    }

    /// Whether `expr` certainly evaluates to a decision returned by `await approval` (and
    /// not, say, a `var` that may have been reassigned).
    fn is_decision(&self, expr: &ast::Expr) -> bool {
        match &expr.kind {
            ExprKind::AwaitApproval { .. } => true,
            ExprKind::Name(name) => self
                .locals
                .iter()
                .rev()
                .find(|l| l.name == *name)
                .is_some_and(|l| l.decision),
            // `r.legal` of `let r = parallel { legal: await approval …, … }`.
            ExprKind::Field {
                base,
                name: field,
                optional: false,
            } => match &base.kind {
                ExprKind::Name(name) => self
                    .locals
                    .iter()
                    .rev()
                    .find(|l| l.name == *name)
                    .is_some_and(|l| l.decision_fields.contains(&field.name)),
                _ => false,
            },
            ExprKind::Block(block) => self.block_is_decision(block),
            ExprKind::Timeout { body, .. } => self.block_is_decision(body),
            ExprKind::Retry { body, .. } => self.block_is_decision(body),
            ExprKind::Try { body, catches } => {
                self.block_is_decision(body)
                    && catches.iter().all(|c| self.block_is_decision(&c.handler))
            }
            ExprKind::If {
                then_block,
                else_branch: Some(else_branch),
                ..
            } => self.block_is_decision(then_block) && self.is_decision(else_branch),
            _ => false,
        }
    }

    /// A block whose value is a decision, or that never completes (`fail`, `return`).
    fn block_is_decision(&self, block: &ast::Block) -> bool {
        match block.stmts.last().map(|s| &s.kind) {
            Some(StmtKind::Expr(expr)) => self.is_decision(expr),
            Some(StmtKind::Fail(_) | StmtKind::Return(_) | StmtKind::ContinueAs { .. }) => true,
            _ => false,
        }
    }

    fn check_assign(&mut self, target: &ast::Expr, value: &ast::Expr) {
        let root = assignment_root(target);
        if let Some((name, span)) = root
            && matches!(target.kind, ExprKind::Name(_))
        {
            // A plain `x = …` is not checked as an expression: note the use here.
            let _ = self.lookup_local(name, span);
        }
        if let Some((name, _)) = root {
            self.forbid_shared_assignment(name, target.span);
        }
        let target_type = match root {
            Some(root) => match self.locals.iter_mut().rev().find(|l| l.name == root.0) {
                Some(local) if !local.mutable => {
                    // The binding is clearly meant to be used; one error is enough.
                    local.used = true;
                    let declared = local.span;
                    self.error(
                        Diagnostic::error(
                            codes::ASSIGN_TO_IMMUTABLE,
                            self.file,
                            target.span,
                            format!("`{}` cannot be changed", root.0),
                        )
                        .with_label(self.file, declared, "declared with `let` here")
                        .with_help(format!(
                            "declare it with `var {}` to allow assignment",
                            root.0
                        )),
                    );
                    Type::Unknown
                }
                Some(_) => {
                    if let ExprKind::Name(_) = target.kind {
                        self.locals
                            .iter()
                            .rev()
                            .find(|l| l.name == root.0)
                            .map(|l| l.ty.clone())
                            .unwrap_or(Type::Unknown)
                    } else {
                        self.check_expr(target, None)
                    }
                }
                None => self.check_expr(target, None),
            },
            None => Type::Unknown,
        };
        self.expect_type(value, &target_type);
    }

    fn element_type(&mut self, iter: &ast::Expr) -> Type {
        let ty = self.check_expr(iter, None);
        let kind = match ty {
            Type::Map(_) => IterKind::MapKeys,
            _ => IterKind::List,
        };
        self.resolved.loops.insert((self.file, iter.span), kind);
        match ty {
            Type::List(element) => *element,
            Type::Map(_) => Type::String,
            Type::Json => Type::Json,
            Type::Unknown => Type::Unknown,
            other => {
                let show = self.show(&other);
                self.error(
                    Diagnostic::error(
                        codes::NOT_ITERABLE,
                        self.file,
                        iter.span,
                        format!("this is {show}"),
                    )
                    .with_message(format!("Cannot loop over a value of type {show}"))
                    .with_help("`for` loops go over a `List<T>` (items) or a `Map<T>` (keys)"),
                );
                Type::Unknown
            }
        }
    }

    fn check_record_fields(&mut self, fields: &[ast::FieldInit]) -> Vec<(Name, Type)> {
        let mut out: Vec<(Name, Type)> = Vec::new();
        for (index, field) in fields.iter().enumerate() {
            if let Some(first) = fields[..index]
                .iter()
                .find(|f| f.name.name == field.name.name)
            {
                self.duplicate_field(&field.name, first.name.span);
            }
            let ty = self.check_expr(&field.value, None);
            if ty == Type::Unit {
                self.mismatch(field.value.span, &Type::Json, &ty, None);
            }
            out.push((field.name.name.clone(), ty));
        }
        out
    }

    fn duplicate_field(&mut self, name: &ast::Ident, first: Span) {
        self.error(
            Diagnostic::error(
                codes::DUPLICATE_FIELD,
                self.file,
                name.span,
                "given again here",
            )
            .with_message(format!("Field `{}` is given twice", name.name))
            .with_label(self.file, first, "first given here")
            .with_help("remove one of them"),
        );
    }

    // ----- conditions and flow ------------------------------------------------------

    /// Checks a Bool condition; returns the flow facts when it is true and when false.
    fn check_cond(&mut self, cond: &ast::Expr) -> (Flow, Flow) {
        match &cond.kind {
            ExprKind::Field {
                base,
                name,
                optional: false,
            } if name.name == "approved" => {
                if self.is_decision(base) {
                    self.check_expr(base, None);
                    let shown = match &base.kind {
                        ExprKind::Name(local) => format!("`{local}.approved`"),
                        _ => "the decision's `approved`".to_string(),
                    };
                    let flow = self.flow.clone();
                    let message = format!("this path continues when {shown} is false");
                    if self.resolved.ide.is_some()
                        && let Some(id) = self.checked.decision
                    {
                        let index = self
                            .checked
                            .types
                            .get(id)
                            .fields()
                            .and_then(|fields| fields.iter().position(|f| f.name == name.name));
                        if let Some(index) = index {
                            self.note_field(name.span, id, index);
                        }
                    }
                    self.note_type(cond.span, &Type::Bool);
                    return (flow.clone().approve(), flow.reject(cond.span, message));
                }
                self.plain_cond(cond)
            }
            ExprKind::Name(name) => {
                let condition = self.lookup_local(name, cond.span).and_then(|local| {
                    local.used = true;
                    local.condition
                });
                let Some((approved_if_true, approved_if_false)) = condition else {
                    return self.plain_cond(cond);
                };
                let flow = self.flow.clone();
                let narrow = |approved: bool, value: &str| {
                    if approved {
                        flow.clone().approve()
                    } else {
                        let message = format!("this path continues when `{name}` is {value}");
                        flow.clone().reject(cond.span, message)
                    }
                };
                (
                    narrow(approved_if_true, "true"),
                    narrow(approved_if_false, "false"),
                )
            }
            ExprKind::Binary {
                op: op @ (BinaryOp::Eq | BinaryOp::NotEq),
                lhs,
                rhs,
            } if bool_literal(lhs).or(bool_literal(rhs)).is_some() => {
                let (literal, other) = match bool_literal(lhs) {
                    Some(literal) => (literal, rhs),
                    None => (bool_literal(rhs).unwrap_or(true), lhs),
                };
                let (when_true, when_false) = self.check_cond(other);
                if literal == (*op == BinaryOp::Eq) {
                    (when_true, when_false)
                } else {
                    (when_false, when_true)
                }
            }
            ExprKind::Unary {
                op: UnaryOp::Not,
                operand,
            } => {
                let (when_true, when_false) = self.check_cond(operand);
                (when_false, when_true)
            }
            ExprKind::Binary {
                op: op @ (BinaryOp::And | BinaryOp::Or),
                lhs,
                rhs,
            } => {
                let entry = self.flow.clone();
                let (present_true, present_false) = self.presence(lhs);
                let (lhs_true, lhs_false) = self.check_cond(lhs);
                let is_and = *op == BinaryOp::And;
                // `a && b` evaluates `b` only when `a` is true; `a || b` only when it is false.
                self.flow = if is_and {
                    lhs_true.clone()
                } else {
                    lhs_false.clone()
                };
                let mark = self.narrow(if is_and {
                    &present_true
                } else {
                    &present_false
                });
                let (rhs_true, rhs_false) = self.check_cond(rhs);
                self.locals.truncate(mark);
                self.flow = entry;
                if is_and {
                    (rhs_true, lhs_false.join(rhs_false))
                } else {
                    (lhs_true.join(rhs_true), rhs_false)
                }
            }
            _ => self.plain_cond(cond),
        }
    }

    fn plain_cond(&mut self, cond: &ast::Expr) -> (Flow, Flow) {
        self.expect_type(cond, &Type::Bool);
        (self.flow.clone(), self.flow.clone())
    }

    // ----- expressions --------------------------------------------------------------

    fn check_expr(&mut self, expr: &ast::Expr, expected: Option<&Type>) -> Type {
        // A value of a refined type is read as its base.
        let written = self.check_expr_written(expr, expected);
        match written {
            Type::Refined(_) | Type::Optional(_) => written.unrefined().into_owned(),
            other => other,
        }
    }

    /// Like [`Self::check_expr`], but the type as declared, refinements included (a `let`
    /// without an annotation keeps them: `let s = rate(order)` is a `Score`).
    fn check_expr_written(&mut self, expr: &ast::Expr, expected: Option<&Type>) -> Type {
        // A refined type expects its base (a `Score` takes a `Float`, checked on the way in)…
        let base = expected.map(|e| e.unrefined());
        let written = self.check_expr_kind(expr, base.as_deref());
        if let Some(expected) = expected {
            self.check_constant(expr, expected);
        }
        // A value whose type has the expected rule already (a `Score` passed as a `Score`)
        // is not checked again.
        if let Some(expected) = expected
            && self.checked.types.converts(&written, expected)
            && self.checked.types.assignable(&written, expected)
        {
            self.resolved
                .conversions
                .insert((self.file, expr.span), expected.clone());
        }
        let noted = self.resolved.ide.is_some()
            && matches!(
                expr.kind,
                ExprKind::Name(_)
                    | ExprKind::Field { .. }
                    | ExprKind::Call { .. }
                    | ExprKind::Index { .. }
                    | ExprKind::AwaitApproval { .. }
                    | ExprKind::AwaitInput { .. }
                    | ExprKind::AwaitSignal { .. }
            );
        if noted {
            self.note_type(expr.span, &written);
        }
        written
    }

    /// A constant put where a refined type is expected must admit its rules (E0318):
    /// `let s: Score = 1.5`. Anything else is checked when it runs (`Op::Conform`).
    fn check_constant(&mut self, expr: &ast::Expr, expected: &Type) {
        use crate::bytecode::Subject;
        let expected = match expected {
            Type::Optional(_) if matches!(expr.kind, ExprKind::None) => return,
            Type::Optional(inner) => &**inner,
            other => other,
        };
        let (rules, _) = expected.refinements();
        if rules.is_empty() {
            return;
        }
        let negated = |e: &ast::Expr| match &e.kind {
            ExprKind::Unary {
                op: UnaryOp::Neg,
                operand,
            } => Some(match operand.kind {
                ExprKind::Int(v) => Some(ConstantValue::Int(v.checked_neg()?)),
                ExprKind::Float(v) => Some(ConstantValue::Float(-v)),
                _ => None,
            }),
            _ => None,
        };
        let text;
        let value = match &expr.kind {
            ExprKind::Int(v) => ConstantValue::Int(*v),
            ExprKind::Float(v) => ConstantValue::Float(*v),
            ExprKind::Str(parts) if parts.iter().all(|p| matches!(p, ast::StrPart::Text(_))) => {
                text = parts
                    .iter()
                    .map(|p| match p {
                        ast::StrPart::Text(t) => t.as_str(),
                        ast::StrPart::Interpolation(_) => "",
                    })
                    .collect::<String>();
                ConstantValue::Text(&text)
            }
            ExprKind::List(items) => ConstantValue::Items(items.len()),
            _ => match negated(expr) {
                Some(Some(v)) => v,
                _ => return,
            },
        };
        let subject = match value {
            ConstantValue::Int(v) => Subject::Int(v),
            ConstantValue::Float(v) => Subject::Float(v),
            ConstantValue::Text(t) => Subject::Text(t),
            ConstantValue::Items(n) => Subject::Items(n),
        };
        let Some(broken) = rules.iter().find(|r| !r.rule.admits(subject)) else {
            return;
        };
        let shown = self.show(expected);
        let what = match value {
            ConstantValue::Items(0) => "this empty list".to_string(),
            ConstantValue::Items(1) => "this list of 1 item".to_string(),
            ConstantValue::Items(n) => format!("this list of {n} items"),
            _ => "this value".to_string(),
        };
        let help = match &broken.name {
            Some(name) => format!(
                "a `{name}` is a `{} {}`: give a value it admits, or change the declared type",
                broken.base.display(&self.checked.types),
                broken.rule
            ),
            None => format!(
                "give a value `{}`, or change the declared type",
                broken.rule
            ),
        };
        self.error(
            Diagnostic::error(
                codes::OUT_OF_RANGE,
                self.file,
                expr.span,
                format!("{what} is not `{}`", broken.rule),
            )
            .with_message(format!("This value does not fit {shown}"))
            .with_help(help),
        );
    }

    /// Editor facts: the type of the expression at `span`.
    fn note_type(&mut self, span: Span, ty: &Type) {
        if let Some(ide) = self.resolved.ide.as_mut() {
            ide.types.insert((self.file, span), ty.clone());
        }
    }

    /// Editor facts: the field name at `span` is field `index` of record `id`.
    fn note_field(&mut self, span: Span, id: TypeId, index: usize) {
        if let Some(ide) = self.resolved.ide.as_mut() {
            ide.fields.insert((self.file, span), (id, index));
        }
    }

    fn check_expr_kind(&mut self, expr: &ast::Expr, expected: Option<&Type>) -> Type {
        match &expr.kind {
            ExprKind::Int(_) => Type::Int,
            ExprKind::Float(_) => Type::Float,
            ExprKind::Bool(_) => Type::Bool,
            ExprKind::Duration(_) => Type::Duration,
            ExprKind::Time(_) => Type::Time,
            ExprKind::None => match expected {
                Some(Type::Optional(inner)) => Type::Optional(inner.clone()),
                _ => Type::Optional(Box::new(Type::Unknown)),
            },
            ExprKind::Str(parts) => {
                for part in parts {
                    if let ast::StrPart::Interpolation(inner) = part {
                        let ty = self.check_expr(inner, None);
                        if ty == Type::Unit {
                            self.mismatch(inner.span, &Type::String, &ty, None);
                        }
                        self.forbid_secret(inner.span, &ty, "in text");
                    }
                }
                Type::String
            }
            ExprKind::Name(name) => self.check_name(name, expr.span, expected),
            ExprKind::List(items) => self.check_list(items, expected),
            ExprKind::Record(fields) => self.check_record(fields, expected, expr.span),
            ExprKind::Field {
                base,
                name,
                optional,
            } => self.check_field(base, name, *optional),
            ExprKind::Index { base, index } => self.check_index(base, index),
            ExprKind::Call { callee, args } => self.check_call(callee, args, expr.span, expected),
            ExprKind::Unary { op, operand } => self.check_unary(*op, operand, expr.span),
            ExprKind::Binary { op, lhs, rhs } => self.check_binary(*op, lhs, rhs, expr.span),
            ExprKind::If {
                cond,
                then_block,
                else_branch,
            } => self.check_if(cond, then_block, else_branch.as_deref(), expected),
            ExprKind::Match { scrutinee, arms } => self.check_match(scrutinee, arms, expected),
            ExprKind::Block(block) => self.check_block(block, expected),
            ExprKind::Retry {
                policies,
                per_kind,
                body,
            } => {
                self.forbid_durable(
                    keyword(expr.span, "retry"),
                    expr.span,
                    "`retry` waits and runs its block again, durably",
                );
                self.check_retry_policies(policies, *per_kind);
                self.check_block(body, expected)
            }
            ExprKind::Timeout { duration, body } => {
                self.forbid_durable(
                    keyword(expr.span, "timeout"),
                    expr.span,
                    "`timeout` keeps a durable deadline",
                );
                self.expect_type(duration, &Type::Duration);
                if duration_constant(duration).is_some_and(|ms| ms <= 0) {
                    self.out_of_range(
                        duration.span,
                        "this time limit has already passed",
                        "give a positive duration: `timeout 5m { … }`",
                    );
                }
                self.check_block(body, expected)
            }
            ExprKind::Try { body, catches } => self.check_try(body, catches, expected),
            ExprKind::AwaitApproval { gate, options } => {
                self.forbid_durable(
                    Span::new(expr.span.start as usize, gate.span.end as usize),
                    expr.span,
                    "this waits for an approval",
                );
                self.check_not_empty(
                    gate,
                    "approval gate",
                    "await approval \"release_signoff\" { … }",
                );
                self.check_gate_options(options, stdlib::APPROVAL_OPTIONS, expr.span, "approval");
                if matches!(self.flow, Flow::NotApproved(_)) {
                    self.flow = Flow::not_approved(
                        expr.span,
                        "an approval is awaited here, but this path does not check that it was approved",
                    );
                }
                self.checked
                    .decision
                    .map(Type::Named)
                    .unwrap_or(Type::Unknown)
            }
            ExprKind::AwaitInput { ty, name, options } => {
                self.forbid_durable(
                    Span::new(expr.span.start as usize, name.span.end as usize),
                    expr.span,
                    "this waits for a person's input",
                );
                self.check_not_empty(
                    name,
                    "input request",
                    "await input<Review> \"agent_review\" { … }",
                );
                self.check_gate_options(options, stdlib::INPUT_OPTIONS, expr.span, "input");
                let resolved = resolve_type(self.checked, self.file, ty, self.diagnostics);
                self.check_input_type(&resolved, ty.span, None);
                resolved
            }
            ExprKind::AwaitSignal { .. }
                if self.forbid_durable(expr.span, expr.span, "this waits for a signal") =>
            {
                Type::Unknown
            }
            ExprKind::AwaitSignal { name } => {
                self.forbid_signals_in_branch(expr.span, "`await signal`");
                self.await_signal(name)
            }
            ExprKind::Select { arms } => {
                self.forbid_durable(
                    keyword(expr.span, "select"),
                    expr.span,
                    "`select` waits for the first of its arms",
                );
                self.forbid_signals_in_branch(expr.span, "`select`");
                self.check_select(arms, expected)
            }
            ExprKind::Parallel(parallel) => {
                self.forbid_durable(
                    keyword(expr.span, "parallel"),
                    expr.span,
                    "`parallel` runs its branches as child runs",
                );
                self.check_parallel(parallel, expr.span, expected)
            }
            ExprKind::Error => Type::Unknown,
        }
    }

    fn check_name(&mut self, name: &str, span: Span, expected: Option<&Type>) -> Type {
        if let Some(local) = self.lookup_local(name, span) {
            local.used = true;
            return local.ty.clone();
        }
        let scope = self.scope;
        let found = scope.lookup_values(name);
        if let [(_, origin)] = found {
            scope.note_use(*origin);
        }
        match found {
            [] => {
                if let Some(id) = self.scope.lookup_type(name) {
                    self.not_a_value(span, format!("`{name}` is a type, not a value"), format!("build a value of it, e.g. `{{ field: value }}` where a `{name}` is expected"));
                    let _ = id;
                    return Type::Unknown;
                }
                self.unknown_name(name, span);
                Type::Unknown
            }
            [(Value::Variant(enum_id, index), _)] => self.variant_value(*enum_id, *index, span),
            [(Value::Tool(i), _)] => {
                let tool = &self.checked.tools[*i];
                self.not_a_value(
                    span,
                    format!("`{name}` is a tool"),
                    format!("call it: `{name}({})`", param_list(self, &tool.params)),
                );
                Type::Unknown
            }
            [(Value::Function(i), _)] => {
                let function = &self.checked.functions[*i];
                self.not_a_value(
                    span,
                    format!("`{name}` is a function"),
                    format!("call it: `{name}({})`", param_list(self, &function.params)),
                );
                Type::Unknown
            }
            [(Value::Workflow(i), _)] => {
                let workflow = &self.checked.workflows[*i];
                self.not_a_value(
                    span,
                    format!("`{name}` is a workflow"),
                    format!("call it: `{name}({})`", param_list(self, &workflow.params)),
                );
                Type::Unknown
            }
            many => match pick_variant(scope, &self.checked.types, name, expected) {
                Some((id, index)) => self.variant_value(id, index, span),
                None => {
                    self.ambiguous_variant(name, span, many);
                    Type::Unknown
                }
            },
        }
    }

    fn not_a_value(&mut self, span: Span, label: String, help: String) {
        self.error(Diagnostic::error(codes::NOT_A_VALUE, self.file, span, label).with_help(help));
    }

    fn ambiguous_variant(&mut self, name: &str, span: Span, found: &[(Value, FileId)]) {
        let enums: Vec<String> = found
            .iter()
            .filter_map(|(v, _)| match v {
                Value::Variant(id, _) => {
                    Some(format!("`{}.{name}`", self.checked.types.get(*id).name))
                }
                _ => None,
            })
            .collect();
        self.error(
            Diagnostic::error(
                codes::AMBIGUOUS_VARIANT,
                self.file,
                span,
                "more than one enum has this variant",
            )
            .with_message(format!("`{name}` is ambiguous"))
            .with_help(format!("name the enum: {}", join_some(&enums))),
        );
    }

    fn variant_value(&mut self, enum_id: TypeId, index: usize, span: Span) -> Type {
        self.record(span, Resolved::Variant(enum_id, index));
        let def = self.checked.types.get(enum_id);
        if let Some(variant) = def.variants().and_then(|v| v.get(index))
            && !variant.fields.is_empty()
        {
            let fields: Vec<String> = variant
                .fields
                .iter()
                .map(|f| format!("{}: {}", f.name, f.ty.display(&self.checked.types)))
                .collect();
            let help = format!("give its fields: `{}({})`", variant.name, fields.join(", "));
            self.error(
                Diagnostic::error(
                    codes::WRONG_ARGUMENT_COUNT,
                    self.file,
                    span,
                    format!("`{}` has fields", variant.name),
                )
                .with_message(format!(
                    "Variant `{}` needs {} field(s)",
                    variant.name,
                    variant.fields.len()
                ))
                .with_help(help),
            );
        }
        Type::Named(enum_id)
    }

    /// Whether this file has reported more than is shown
    /// ([`crate::diagnostics::MAX_PER_FILE`]): suggestions that cost a search over every name
    /// in scope are not worth computing for diagnostics nobody reads.
    fn crowded(&self) -> bool {
        self.diagnostics.len() - self.file_start >= crate::diagnostics::MAX_PER_FILE
    }

    fn unknown_name(&mut self, name: &str, span: Span) {
        let suggestion = if self.crowded() {
            None
        } else {
            let locals = self.locals.iter().map(|l| l.name.as_str());
            let globals = self.scope.values.keys().map(|k| k.as_str());
            let builtins = stdlib::Builtin::ALL.iter().map(|b| b.name());
            did_you_mean(name, locals.chain(globals).chain(builtins))
        };
        let mut diagnostic = Diagnostic::error(
            codes::UNKNOWN_NAME,
            self.file,
            span,
            "not found in this scope",
        )
        .with_message(format!("Unknown name `{name}`"));
        diagnostic = match suggestion {
            Some(s) => diagnostic.with_help(format!("did you mean `{s}`?")),
            None => diagnostic.with_help(format!(
                "declare it first (`let {name} = …`), or import the file that declares it"
            )),
        };
        self.error(diagnostic);
    }

    /// Gate and event names identify records in the history and the audit trail.
    fn check_not_empty(&mut self, name: &ast::StrLit, what: &str, example: &str) {
        if name.value.trim().is_empty() {
            self.error(
                Diagnostic::error(
                    codes::EMPTY_NAME,
                    self.file,
                    name.span,
                    format!("the {what} has no name"),
                )
                .with_message(format!("An {what} needs a name"))
                .with_help(format!("name it after what happens, e.g. `{example}`")),
            );
        }
    }

    /// E0321 when a value of type `ty` holds a `Secret` and would be revealed `where_to`.
    fn forbid_secret(&mut self, span: Span, ty: &Type, where_to: &str) {
        let Some(path) = self.checked.types.secret_path(ty) else {
            return;
        };
        let what = if path.is_empty() {
            "this value is a `Secret`".to_string()
        } else {
            format!(
                "this value holds a `Secret` at `{}`",
                path.trim_start_matches('.')
            )
        };
        self.error(
            Diagnostic::error(codes::SECRET_LEAK, self.file, span, what)
                .with_message(format!("A `Secret` would be revealed {where_to}"))
                .with_help(
                    "pass secrets only to tools (their parameters may be `Secret`); history, audit trail, prompts and text show them as \"[redacted]\"",
                ),
        );
    }

    fn out_of_range(&mut self, span: Span, label: &str, help: &str) {
        self.error(Diagnostic::error(codes::OUT_OF_RANGE, self.file, span, label).with_help(help));
    }

    fn unknown_callee(&mut self, name: &str, span: Span) {
        let globals = self.scope.values.keys().map(|k| k.as_str());
        let builtins = stdlib::Builtin::ALL.iter().map(|b| b.name());
        let suggestion = did_you_mean(name, globals.chain(builtins));
        let diagnostic = Diagnostic::error(
            codes::UNKNOWN_NAME,
            self.file,
            span,
            "no tool, workflow or function has this name",
        )
        .with_message(format!("Unknown name `{name}`"));
        self.error(match suggestion {
            Some(s) => diagnostic.with_help(format!("did you mean `{s}`?")),
            None => diagnostic.with_help(format!(
                "declare it (`tool {name}(…) -> … via …` or `workflow {name}(…) {{ … }}`), or import the file that declares it"
            )),
        });
    }

    fn check_list(&mut self, items: &[ast::Expr], expected: Option<&Type>) -> Type {
        let expected_element = match expected {
            Some(Type::List(element)) => Some((**element).clone()),
            Some(Type::Optional(inner)) => match &**inner {
                Type::List(element) => Some((**element).clone()),
                _ => None,
            },
            _ => None,
        };
        let mut element = expected_element.clone();
        for item in items {
            match &element {
                Some(ty) if !ty.is_unknown() => {
                    let ty = ty.clone();
                    let found = self.check_expr(item, Some(&ty));
                    if !self.checked.types.assignable(&found, &ty) {
                        self.mismatch(item.span, &ty, &found, None);
                    }
                }
                _ => element = Some(self.check_expr(item, None)),
            }
        }
        Type::List(Box::new(element.unwrap_or(Type::Unknown)))
    }

    fn check_record(
        &mut self,
        fields: &[ast::FieldInit],
        expected: Option<&Type>,
        span: Span,
    ) -> Type {
        let target = match expected {
            Some(Type::Named(id)) => Some(*id),
            Some(Type::Optional(inner)) => match &**inner {
                Type::Named(id) => Some(*id),
                _ => None,
            },
            _ => None,
        };
        let Some(id) = target.filter(|id| self.checked.types.get(*id).fields().is_some()) else {
            return Type::Record(self.check_record_fields(fields));
        };
        let def = self.checked.types.get(id);
        let declared = def.fields().unwrap_or(&[]).to_vec();
        for (index, field) in fields.iter().enumerate() {
            if let Some(first) = fields[..index]
                .iter()
                .find(|f| f.name.name == field.name.name)
            {
                self.duplicate_field(&field.name, first.name.span);
                continue;
            }
            match declared.iter().find(|d| d.name == field.name.name) {
                Some(decl) => {
                    if self.resolved.ide.is_some()
                        && let Some(index) = declared.iter().position(|d| d.name == decl.name)
                    {
                        self.note_field(field.name.span, id, index);
                    }
                    let because = def
                        .file
                        .map(|f| (f, decl.span, format!("`{}` is declared here", decl.name)));
                    let found = self.check_expr(&field.value, Some(&decl.ty));
                    if !self.checked.types.assignable(&found, &decl.ty) {
                        self.mismatch(field.value.span, &decl.ty, &found, because);
                    }
                }
                None => {
                    self.check_expr(&field.value, None);
                    self.unknown_field(id, &field.name);
                }
            }
        }
        let omitted: Vec<String> = declared
            .iter()
            .filter(|d| matches!(d.ty, Type::Optional(_)))
            .filter(|d| !fields.iter().any(|f| f.name.name == d.name))
            .map(|d| d.name.to_string())
            .collect();
        if !omitted.is_empty() {
            self.resolved.omitted.insert((self.file, span), omitted);
        }
        let missing: Vec<&str> = declared
            .iter()
            .filter(|d| !matches!(d.ty, Type::Optional(_)))
            .filter(|d| !fields.iter().any(|f| f.name.name == d.name))
            .map(|d| d.name.as_str())
            .collect();
        if !missing.is_empty() {
            let span = fields
                .first()
                .map(|f| {
                    f.name
                        .span
                        .to(fields.last().map(|l| l.value.span).unwrap_or(f.name.span))
                })
                .unwrap_or_default();
            let list = missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut diagnostic = Diagnostic::error(
                codes::MISSING_FIELD,
                self.file,
                span,
                format!("missing {list}"),
            )
            .with_message(format!("This `{}` lacks {list}", def.name))
            .with_help(format!(
                "add {list}; only optional fields (`T?`) may be left out"
            ));
            if let Some(file) = def.file {
                diagnostic = diagnostic.with_label(
                    file,
                    def.span,
                    format!("`{}` is declared here", def.name),
                );
            }
            self.error(diagnostic);
        }
        Type::Named(id)
    }

    fn unknown_field(&mut self, id: TypeId, name: &ast::Ident) {
        let def = self.checked.types.get(id);
        let names = def.fields().unwrap_or(&[]).iter().map(|f| f.name.as_str());
        let suggestion = did_you_mean(&name.name, names);
        let all: Vec<String> = def
            .fields()
            .unwrap_or(&[])
            .iter()
            .map(|f| format!("`{}`", f.name))
            .collect();
        let mut diagnostic = Diagnostic::error(
            codes::UNKNOWN_FIELD,
            self.file,
            name.span,
            format!("`{}` has no field `{}`", def.name, name.name),
        )
        .with_message(format!("Unknown field `{}`", name.name));
        diagnostic = match suggestion {
            Some(s) => diagnostic.with_help(format!("did you mean `{s}`?")),
            None => {
                diagnostic.with_help(format!("`{}` has the fields {}", def.name, all.join(", ")))
            }
        };
        if let Some(file) = def.file {
            diagnostic =
                diagnostic.with_label(file, def.span, format!("`{}` is declared here", def.name));
        }
        self.error(diagnostic);
    }

    fn check_field(&mut self, base: &ast::Expr, name: &ast::Ident, optional: bool) -> Type {
        if let ExprKind::Name(base_name) = &base.kind {
            let is_local = self.locals.iter().any(|l| &l.name == base_name);
            if !is_local && let Some(id) = self.scope.lookup_type(base_name) {
                if let Some(index) = self.find_variant(id, name) {
                    return self.variant_value(id, index, base.span.to(name.span));
                }
                return Type::Unknown;
            }
        }
        let base_type = self.check_expr(base, None);
        self.field_of(&base_type, name, optional, base.span)
    }

    /// The index of variant `name` in enum `id`, reporting it when unknown.
    fn find_variant(&mut self, id: TypeId, name: &ast::Ident) -> Option<usize> {
        let def = self.checked.types.get(id);
        let Some(variants) = def.variants() else {
            self.error(
                Diagnostic::error(
                    codes::NOT_A_VALUE,
                    self.file,
                    name.span,
                    format!("`{}` is a record type", def.name),
                )
                .with_help("only enums have variants; build a record with `{ field: value }`"),
            );
            return None;
        };
        if let Some(index) = variants.iter().position(|v| v.name == name.name) {
            return Some(index);
        }
        let suggestion = did_you_mean(&name.name, variants.iter().map(|v| v.name.as_str()));
        let all: Vec<String> = variants.iter().map(|v| format!("`{}`", v.name)).collect();
        let mut diagnostic = Diagnostic::error(
            codes::UNKNOWN_VARIANT,
            self.file,
            name.span,
            format!("`{}` has no variant `{}`", def.name, name.name),
        )
        .with_message(format!("Unknown variant `{}`", name.name));
        diagnostic = match suggestion {
            Some(s) => diagnostic.with_help(format!("did you mean `{s}`?")),
            None => diagnostic.with_help(format!(
                "`{}` has the variants {}",
                def.name,
                all.join(", ")
            )),
        };
        if let Some(file) = def.file {
            diagnostic =
                diagnostic.with_label(file, def.span, format!("`{}` is declared here", def.name));
        }
        self.error(diagnostic);
        None
    }

    fn field_of(
        &mut self,
        base: &Type,
        name: &ast::Ident,
        optional: bool,
        base_span: Span,
    ) -> Type {
        match base {
            Type::Unknown => Type::Unknown,
            Type::Json => Type::Json,
            Type::Optional(inner) => {
                let inner_field = self.field_of(inner, name, optional, base_span);
                if !optional {
                    let show = self.show(base);
                    self.error(
                        Diagnostic::error(
                            codes::NO_FIELDS,
                            self.file,
                            base_span,
                            format!("this is {show}: it may be `none`"),
                        )
                        .with_message(format!("Cannot read `.{}` of a value that may be none", name.name))
                        .with_help(format!("use `?.{}` to get `none` when it is absent, or give a default with `??`", name.name)),
                    );
                    return inner_field;
                }
                Type::optional(inner_field)
            }
            Type::Named(id) => {
                let def = self.checked.types.get(*id);
                match &def.kind {
                    TypeDefKind::Record(fields) => {
                        match fields.iter().position(|f| f.name == name.name) {
                            Some(index) => {
                                let ty = fields[index].ty.clone();
                                self.note_field(name.span, *id, index);
                                ty
                            }
                            None => {
                                self.unknown_field(*id, name);
                                Type::Unknown
                            }
                        }
                    }
                    TypeDefKind::Enum(_) | TypeDefKind::Refined(_) => {
                        let show = self.show(base);
                        self.error(
                            Diagnostic::error(codes::NO_FIELDS, self.file, name.span, format!("{show} is an enum"))
                                .with_message(format!("Enum values have no field `{}`", name.name))
                                .with_help("use `match` to look inside a variant: `match value { Variant(field) => … }`"),
                        );
                        Type::Unknown
                    }
                }
            }
            Type::Record(fields) => match fields.iter().find(|(n, _)| *n == name.name) {
                Some((_, ty)) => ty.clone(),
                None => {
                    let names = fields.iter().map(|(n, _)| n.as_str());
                    let mut diagnostic = Diagnostic::error(
                        codes::UNKNOWN_FIELD,
                        self.file,
                        name.span,
                        format!("this record has no field `{}`", name.name),
                    );
                    diagnostic = match did_you_mean(&name.name, names) {
                        Some(s) => diagnostic.with_help(format!("did you mean `{s}`?")),
                        None => diagnostic.with_help("add the field where the record is built"),
                    };
                    self.error(diagnostic);
                    Type::Unknown
                }
            },
            other => {
                let show = self.show(other);
                self.error(
                    Diagnostic::error(
                        codes::NO_FIELDS,
                        self.file,
                        name.span,
                        format!("{show} has no fields"),
                    )
                    .with_message(format!("Cannot read `.{}` of {show}", name.name))
                    .with_help("only records (and `Json`) have fields"),
                );
                Type::Unknown
            }
        }
    }

    fn check_index(&mut self, base: &ast::Expr, index: &ast::Expr) -> Type {
        let base_type = self.check_expr(base, None);
        match base_type {
            Type::List(element) => {
                self.expect_type(index, &Type::Int);
                *element
            }
            Type::Map(value) => {
                self.expect_type(index, &Type::String);
                Type::optional(*value)
            }
            Type::Json | Type::Unknown => {
                self.check_expr(index, None);
                base_type
            }
            other => {
                self.check_expr(index, None);
                let show = self.show(&other);
                self.error(
                    Diagnostic::error(
                        codes::NOT_ITERABLE,
                        self.file,
                        base.span,
                        format!("this is {show}"),
                    )
                    .with_message(format!("Cannot index into {show}"))
                    .with_help("only `List<T>` (by position) and `Map<T>` (by key) can be indexed"),
                );
                Type::Unknown
            }
        }
    }

    /// `continue as name(args)`: `name` must be the workflow being checked (its new run has
    /// the same parameters and result), and the arguments fit its parameters.
    fn check_continue_as(&mut self, workflow: &ast::Ident, args: &[ast::Expr], span: Span) {
        let this = self.workflow;
        if workflow.name != this.name {
            self.check_args_loosely(args);
            self.error(
                Diagnostic::error(
                    codes::CONTINUE_AS_OTHER_WORKFLOW,
                    self.file,
                    workflow.span,
                    format!(
                        "a run of `{}` can only continue as `{}`",
                        this.name, this.name
                    ),
                )
                .with_message(format!("`continue as {}` in workflow `{}`", workflow.name, this.name))
                .with_label(this.file, this.span, "the workflow being continued")
                .with_help(format!(
                    "write `continue as {}(…)` to start this workflow afresh, or call `{}(…)` as a child workflow",
                    this.name, workflow.name
                )),
            );
            return;
        }
        if let [(Value::Workflow(index), origin)] = self.scope.lookup_values(&this.name) {
            self.scope.note_use(*origin);
            self.record(workflow.span, Resolved::Workflow(*index));
        }
        self.check_args(&this.name, &this.params, this.file, this.span, args, span);
    }

    fn check_call(
        &mut self,
        callee: &ast::Expr,
        args: &[ast::Expr],
        span: Span,
        expected: Option<&Type>,
    ) -> Type {
        let name = match &callee.kind {
            ExprKind::Name(name) => name,
            ExprKind::Field {
                base,
                name,
                optional: false,
            } => {
                if let ExprKind::Name(enum_name) = &base.kind
                    && !self.locals.iter().any(|l| &l.name == enum_name)
                    && let Some(id) = self.scope.lookup_type(enum_name)
                {
                    let Some(index) = self.find_variant(id, name) else {
                        self.check_args_loosely(args);
                        return Type::Unknown;
                    };
                    return self.construct_variant(id, index, args, span);
                }
                return self.not_callable(callee, args);
            }
            _ => return self.not_callable(callee, args),
        };
        if self.lookup_local(name, callee.span).is_some()
            && let Some(local) = self.locals.iter().rev().find(|l| &l.name == name)
        {
            let show = self.show(&local.ty.clone());
            let declared = local.span;
            self.check_args_loosely(args);
            self.error(
                Diagnostic::error(
                    codes::NOT_CALLABLE,
                    self.file,
                    callee.span,
                    format!("`{name}` is a variable of type {show}"),
                )
                .with_message(format!("`{name}` cannot be called"))
                .with_label(self.file, declared, "declared here")
                .with_help(
                    "only tools, workflows, builtin functions and enum variants can be called",
                ),
            );
            return Type::Unknown;
        }
        let scope = self.scope;
        let found = scope.lookup_values(name);
        if let [(_, origin)] = found {
            scope.note_use(*origin);
        }
        match found {
            [(Value::Tool(index), _)] => {
                self.record(span, Resolved::Tool(*index));
                let tool = &self.checked.tools[*index];
                let pure =
                    self.forbid_durable(span, span, &format!("this calls the tool `{name}`"));
                self.check_args(&tool.name, &tool.params, tool.file, tool.span, args, span);
                if tool.sensitive && !pure {
                    self.check_sensitive_call(*index, span);
                }
                tool.ret.clone()
            }
            [(Value::Workflow(index), _)] => {
                self.record(span, Resolved::Workflow(*index));
                let workflow = &self.checked.workflows[*index];
                self.forbid_durable(
                    span,
                    span,
                    &format!("this runs the workflow `{name}` as a child run"),
                );
                self.check_args(
                    &workflow.name,
                    &workflow.params,
                    workflow.file,
                    workflow.span,
                    args,
                    span,
                );
                workflow.ret.clone()
            }
            [(Value::Function(index), _)] => {
                self.record(span, Resolved::Function(*index));
                let function = &self.checked.functions[*index];
                self.check_args(
                    &function.name,
                    &function.params,
                    function.file,
                    function.span,
                    args,
                    span,
                );
                function.ret.clone()
            }
            [(Value::Variant(id, index), _)] => self.construct_variant(*id, *index, args, span),
            [] => match stdlib::Builtin::from_name(name) {
                Some(builtin) => {
                    if builtin.effect() == stdlib::Effect::Durable {
                        self.forbid_durable(span, span, "this reads the clock, a durable point");
                    }
                    self.check_builtin(builtin, args, span)
                }
                None => {
                    self.check_args_loosely(args);
                    self.unknown_callee(name, callee.span);
                    Type::Unknown
                }
            },
            many => match pick_variant(scope, &self.checked.types, name, expected) {
                Some((id, index)) => self.construct_variant(id, index, args, span),
                None => {
                    self.check_args_loosely(args);
                    self.ambiguous_variant(name, callee.span, many);
                    Type::Unknown
                }
            },
        }
    }

    fn not_callable(&mut self, callee: &ast::Expr, args: &[ast::Expr]) -> Type {
        if let ExprKind::Field { base, name, .. } = &callee.kind
            && let Some(help) = self.method_help(base, &name.name, args.len())
        {
            // `xs.len()`: a function written as a method. One error, saying how to call it;
            // not a second one about `.len` not being a field.
            self.check_expr(base, None);
            self.check_args_loosely(args);
            self.error(
                Diagnostic::error(
                    codes::NOT_CALLABLE,
                    self.file,
                    callee.span,
                    format!("`{}` is a function, not a method", name.name),
                )
                .with_message(format!("`.{}(…)` cannot be called", name.name))
                .with_help(help),
            );
            return Type::Unknown;
        }
        self.check_expr(callee, None);
        self.check_args_loosely(args);
        self.error(
            Diagnostic::error(
                codes::NOT_CALLABLE,
                self.file,
                callee.span,
                "this cannot be called",
            )
            .with_help(
                "only tools, workflows, builtin functions and enum variants can be called, by name",
            ),
        );
        Type::Unknown
    }

    /// For `value.f(args…)` where `f` is a builtin, tool or workflow: how to call it instead.
    fn method_help(&self, base: &ast::Expr, name: &str, args: usize) -> Option<String> {
        let known = stdlib::Builtin::ALL.iter().any(|b| b.name() == name)
            || self
                .scope
                .lookup_values(name)
                .iter()
                .any(|(v, _)| matches!(v, Value::Tool(_) | Value::Workflow(_)));
        if !known {
            return None;
        }
        let rest = if args == 0 { "" } else { ", …" };
        Some(match &base.kind {
            ExprKind::Name(value) => {
                format!(
                    "Flow has no methods: pass the value as the first argument, `{name}({value}{rest})`"
                )
            }
            _ => format!(
                "Flow has no methods: pass the value as the first argument, `{name}(value{rest})`"
            ),
        })
    }

    fn check_args_loosely(&mut self, args: &[ast::Expr]) {
        for arg in args {
            self.check_expr(arg, None);
        }
    }

    fn check_args(
        &mut self,
        name: &str,
        params: &[super::ParamDef],
        decl_file: FileId,
        decl_span: Span,
        args: &[ast::Expr],
        call_span: Span,
    ) {
        if params.len() != args.len() {
            self.check_args_loosely(args);
            let signature = format!("{name}({})", param_list(self, params));
            self.error(
                Diagnostic::error(
                    codes::WRONG_ARGUMENT_COUNT,
                    self.file,
                    call_span,
                    format!(
                        "expected {} argument(s), found {}",
                        params.len(),
                        args.len()
                    ),
                )
                .with_message(format!("`{name}` takes {} argument(s)", params.len()))
                .with_label(
                    decl_file,
                    decl_span,
                    format!("declared here as `{signature}`"),
                )
                .with_help(format!("call it as `{signature}`")),
            );
            return;
        }
        for (param, arg) in params.iter().zip(args) {
            let found = self.check_expr(arg, Some(&param.ty));
            if !self.checked.types.assignable(&found, &param.ty) {
                let because = (
                    decl_file,
                    param.span,
                    format!("parameter `{}` is declared here", param.name),
                );
                self.mismatch(arg.span, &param.ty, &found, Some(because));
            }
        }
    }

    fn construct_variant(
        &mut self,
        id: TypeId,
        index: usize,
        args: &[ast::Expr],
        span: Span,
    ) -> Type {
        self.record(span, Resolved::Variant(id, index));
        let def = self.checked.types.get(id);
        let Some(variant) = def.variants().and_then(|v| v.get(index)) else {
            return Type::Unknown;
        };
        let params: Vec<super::ParamDef> = variant
            .fields
            .iter()
            .map(|f| super::ParamDef {
                name: f.name.clone(),
                ty: f.ty.clone(),
                span: f.span,
            })
            .collect();
        let name = variant.name.clone();
        let decl_span = variant.span;
        match def.file {
            Some(file) => self.check_args(&name, &params, file, decl_span, args, span),
            None => self.check_args_loosely(args),
        }
        Type::Named(id)
    }

    /// `contains(list, item)` — or `contains(text, part)` for a substring.
    fn check_contains(&mut self, subject: &ast::Expr, item: &ast::Expr) -> Type {
        match self.check_expr(subject, None) {
            Type::String => {
                self.expect_type(item, &Type::String);
            }
            Type::List(element) => {
                let found = self.check_expr(item, Some(&element));
                if !self.checked.types.assignable(&found, &element) {
                    self.mismatch(item.span, &element, &found, None);
                }
            }
            Type::Unknown => {
                self.check_expr(item, None);
            }
            other => {
                let show = self.show(&other);
                self.error(
                    Diagnostic::error(
                        codes::TYPE_MISMATCH,
                        self.file,
                        subject.span,
                        format!("this is {show}"),
                    )
                    .with_message("`contains` looks in a list or a text")
                    .with_help(
                        "give it a `List<T>` and an item, or a `String` and the text to find",
                    ),
                );
                self.check_expr(item, None);
            }
        }
        Type::Bool
    }

    fn check_builtin(&mut self, builtin: stdlib::Builtin, args: &[ast::Expr], span: Span) -> Type {
        self.record(span, Resolved::Builtin(builtin));
        if builtin == stdlib::Builtin::Any {
            return self.check_any(args, span);
        }
        if builtin == stdlib::Builtin::Contains
            && let [subject, item] = args
        {
            return self.check_contains(subject, item);
        }
        let params = builtin.params();
        if params.len() != args.len() {
            self.check_args_loosely(args);
            let signature = builtin_signature(builtin);
            self.error(
                Diagnostic::error(
                    codes::WRONG_ARGUMENT_COUNT,
                    self.file,
                    span,
                    format!(
                        "expected {} argument(s), found {}",
                        params.len(),
                        args.len()
                    ),
                )
                .with_message(format!(
                    "`{}` takes {} argument(s)",
                    builtin.name(),
                    params.len()
                ))
                .with_help(format!("call it as `{signature}`")),
            );
            return from_stdlib(builtin.returns(), self.checked, &Type::Unknown);
        }
        let mut var = Type::Unknown;
        for (param, arg) in params.iter().zip(args) {
            let hint = from_stdlib(param.ty, self.checked, &var);
            let hint = (!hint.is_unknown()).then_some(hint);
            let found = self.check_expr(arg, hint.as_ref());
            if param.ty == stdlib::Ty::Any {
                self.forbid_secret(arg.span, &found, &format!("by `{}`", builtin.name()));
            }
            if !self.fits_builtin_param(param.ty, &found, &mut var) {
                let expected = from_stdlib(param.ty, self.checked, &var);
                self.mismatch(arg.span, &expected, &found, None);
            }
        }
        from_stdlib(builtin.returns(), self.checked, &var)
    }

    /// `any(…)` takes its approvers either as separate arguments, `any(role("a"), user("b"))`,
    /// or as one list, `any([role("a"), user("b")])`; either way at least one.
    fn check_any(&mut self, args: &[ast::Expr], span: Span) -> Type {
        const EXAMPLE: &str = "any(role(\"customs\"), user(\"ana\"))";
        match args {
            [] => self.error(
                Diagnostic::error(
                    codes::WRONG_ARGUMENT_COUNT,
                    self.file,
                    span,
                    "no approvers: nobody could decide",
                )
                .with_message("`any` needs at least one approver")
                .with_help(format!("name who may decide: `{EXAMPLE}`")),
            ),
            [arg] if matches!(arg.kind, ExprKind::List(_)) => {
                let expected = Type::List(Box::new(Type::Approvers));
                self.expect_type(arg, &expected);
                if matches!(&arg.kind, ExprKind::List(items) if items.is_empty()) {
                    self.out_of_range(
                        arg.span,
                        "an empty list of approvers: nobody could decide",
                        &format!("name who may decide: `{EXAMPLE}`"),
                    );
                }
            }
            [arg] => {
                let found = self.check_expr(arg, None);
                let list = Type::List(Box::new(Type::Approvers));
                let types = &self.checked.types;
                if !types.assignable(&found, &Type::Approvers) && !types.assignable(&found, &list) {
                    let found = self.show(&found);
                    self.error(
                        Diagnostic::error(
                            codes::TYPE_MISMATCH,
                            self.file,
                            arg.span,
                            format!("expected `Approvers` or `List<Approvers>`, found {found}"),
                        )
                        .with_note(format!(
                            "expected type: `Approvers` or `List<Approvers>`\n   found type: {found}"
                        ))
                        .with_help(format!(
                            "give approvers, `role(\"…\")` or `user(\"…\")`, or a list of them: `{EXAMPLE}`"
                        )),
                    );
                }
            }
            args => {
                for arg in args {
                    let found = self.check_expr(arg, Some(&Type::Approvers));
                    if self.checked.types.assignable(&found, &Type::Approvers) {
                        continue;
                    }
                    if let Type::List(_) = found {
                        let found = self.show(&found);
                        self.error(
                            Diagnostic::error(
                                codes::TYPE_MISMATCH,
                                self.file,
                                arg.span,
                                format!("expected `Approvers`, found {found}"),
                            )
                            .with_note(format!(
                                "expected type: `Approvers`\n   found type: {found}"
                            ))
                            .with_help(
                                "a list is taken only as the single argument: pass every approver as its own argument, or all of them in one list",
                            ),
                        );
                    } else {
                        self.mismatch(arg.span, &Type::Approvers, &found, None);
                    }
                }
            }
        }
        Type::Approvers
    }

    /// Whether `found` fits the stdlib type `param`, binding the type variable on first use.
    fn fits_builtin_param(&self, param: stdlib::Ty, found: &Type, var: &mut Type) -> bool {
        use stdlib::Ty;
        match (param, found) {
            (_, Type::Unknown | Type::Never) => true,
            (Ty::Any, found) => !matches!(found, Type::Unit),
            (Ty::Var, found) => {
                if var.is_unknown() {
                    *var = found.clone();
                    true
                } else {
                    self.checked.types.assignable(found, var)
                }
            }
            (Ty::List(inner), Type::List(element)) | (Ty::Map(inner), Type::Map(element)) => {
                self.fits_builtin_param(*inner, element, var)
            }
            (param, found) => {
                let expected = from_stdlib(param, self.checked, var);
                self.checked.types.assignable(found, &expected)
            }
        }
    }

    fn check_sensitive_call(&mut self, tool_index: usize, span: Span) {
        let tool = &self.checked.tools[tool_index];
        let Err(witness) = self.flow.allows(&tool.name).map_err(Clone::clone) else {
            return;
        };
        let decision = self
            .locals
            .iter()
            .rev()
            .find(|l| l.decision)
            .map(|l| l.name.clone());
        let decision_var = self
            .locals
            .iter()
            .rev()
            .find(|l| l.mutable && Some(&l.ty) == self.checked.decision.map(Type::Named).as_ref())
            .map(|l| l.name.clone());
        let help = match (decision, decision_var) {
            (None, Some(v)) => format!(
                "declare the decision with `let {v} = await approval …`: a `var` may change between the check and the call, so checking it does not count"
            ),
            (Some(d), _) => format!(
                "call `{}` inside `if {d}.approved {{ … }}`, or end the other paths first with `if !{d}.approved {{ return … }}`",
                tool.name
            ),
            (None, None) if witness.span != self.workflow.span => format!(
                "make every path to `{}` pass an approved decision: await the approval where all paths go through it, and end the rejected path with `if !d.approved {{ return … }}`",
                tool.name
            ),
            (None, None) => format!(
                "await an approval first — `let d = await approval \"gate\" {{ approvers: role(\"…\") }}` — and call `{}` inside `if d.approved {{ … }}`",
                tool.name
            ),
        };
        self.error(
            Diagnostic::error(
                codes::UNAPPROVED_SENSITIVE_CALL,
                self.file,
                span,
                format!(
                    "`{}` is reached here on a path with no approved decision",
                    tool.name
                ),
            )
            .with_message(format!(
                "Sensitive tool `{}` may run without an approval",
                tool.name
            ))
            .with_label(self.file, witness.span, witness.message)
            .with_label(tool.file, tool.span, "declared `sensitive` here")
            .with_help(match &self.flow {
                Flow::Waived { tools, .. } => format!(
                    "{help} (the approval is waived on this path for {} only; a waiver names each tool it covers: `waive approval for {} because …`)",
                    tools.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", "),
                    tool.name
                ),
                _ => help,
            }),
        );
    }

    /// `waive approval for t because "…" { … }`: each tool a sensitive tool in scope, a
    /// reason given, the fields (recorded in the audit trail) free of secrets. On this path
    /// the tools need no approval; the waiver is a note for whoever reviews the code.
    fn check_waiver(&mut self, span: Span, waiver: &ast::Waiver) {
        self.check_not_empty(
            &waiver.because,
            "reason",
            "waive approval for release because \"no anomaly found\"",
        );
        let types = self.check_record_fields(&waiver.fields);
        for (field, (_, ty)) in waiver.fields.iter().zip(&types) {
            self.forbid_secret(field.value.span, ty, "in the audit trail");
        }
        let mut waived = Vec::new();
        for tool in &waiver.tools {
            let scope = self.scope;
            let found = scope.lookup_values(&tool.name);
            if let [(_, origin)] = found {
                scope.note_use(*origin);
            }
            let index = match found {
                [(Value::Tool(index), _)] => *index,
                _ => {
                    self.unknown_name(&tool.name, tool.span);
                    continue;
                }
            };
            self.record(tool.span, Resolved::Tool(index));
            let declared = &self.checked.tools[index];
            if !declared.sensitive {
                self.error(
                    Diagnostic::error(
                        codes::WAIVER_OF_NO_SENSITIVE_TOOL,
                        self.file,
                        tool.span,
                        "needs no approval",
                    )
                    .with_message(format!("`{}` is not a sensitive tool", tool.name))
                    .with_label(declared.file, declared.span, "declared without `sensitive`")
                    .with_help("waive only the approval of a `sensitive` tool; remove the waiver, or mark the tool `sensitive` if it needs an approval"),
                );
                continue;
            }
            waived.push(tool.name.to_string());
        }
        if waived.is_empty() {
            return;
        }
        let names: Vec<String> = waived.iter().map(|t| format!("`{t}`")).collect();
        let already = self.flow == Flow::Approved;
        self.error(
            Diagnostic::note(
                codes::APPROVAL_WAIVED,
                self.file,
                span,
                format!("waived here: {:?}", waiver.because.value),
            )
            .with_message(format!(
                "The approval for {} is waived in `{}`",
                names.join(", "),
                self.workflow.name
            ))
            .with_help(if already {
                "every path here already passed an approval: the waiver is recorded, but needs not be".to_string()
            } else {
                "a reviewer should agree: the run records the waiver, who started it and why in its audit trail instead of an approval".to_string()
            }),
        );
        self.flow = std::mem::replace(&mut self.flow, Flow::Unreachable).waive(&waived);
    }

    fn check_unary(&mut self, op: UnaryOp, operand: &ast::Expr, span: Span) -> Type {
        match op {
            UnaryOp::Not => {
                self.expect_type(operand, &Type::Bool);
                Type::Bool
            }
            UnaryOp::Neg => {
                let ty = self.check_expr(operand, None);
                match ty {
                    Type::Int | Type::Float | Type::Duration | Type::Unknown => ty,
                    other => {
                        let show = self.show(&other);
                        self.error(
                            Diagnostic::error(
                                codes::INVALID_OPERANDS,
                                self.file,
                                span,
                                format!("cannot negate {show}"),
                            )
                            .with_help("only numbers and durations can be negated"),
                        );
                        Type::Unknown
                    }
                }
            }
        }
    }

    fn check_binary(&mut self, op: BinaryOp, lhs: &ast::Expr, rhs: &ast::Expr, span: Span) -> Type {
        match op {
            BinaryOp::And | BinaryOp::Or => {
                let entry = self.flow.clone();
                let (present_true, present_false) = self.presence(lhs);
                let (when_true, when_false) = self.check_cond(lhs);
                let (flow, present) = if op == BinaryOp::And {
                    (when_true, present_true)
                } else {
                    (when_false, present_false)
                };
                self.flow = flow;
                let mark = self.narrow(&present);
                self.expect_type(rhs, &Type::Bool);
                self.locals.truncate(mark);
                self.flow = entry;
                return Type::Bool;
            }
            BinaryOp::Coalesce => {
                let left = self.check_expr(lhs, None);
                return match left {
                    Type::Optional(inner) => {
                        let found = self.check_expr(rhs, Some(&inner));
                        // `a ?? b` with `b: T?` is still a `T?` (spec/types.md).
                        let optional_fits = matches!(&found, Type::Optional(f)
                            if self.checked.types.assignable(f, &inner));
                        if !self.checked.types.assignable(&found, &inner) && !optional_fits {
                            self.mismatch(rhs.span, &inner, &found, None);
                            return *inner;
                        }
                        if matches!(found, Type::Optional(_)) {
                            found
                        } else {
                            *inner
                        }
                    }
                    other => {
                        self.expect_type(rhs, &other);
                        other
                    }
                };
            }
            _ => {}
        }
        let left = self.check_expr(lhs, None);
        let right = self.check_expr(rhs, Some(&left));
        if left.is_unknown() || right.is_unknown() {
            return match op {
                BinaryOp::Eq
                | BinaryOp::NotEq
                | BinaryOp::Lt
                | BinaryOp::LtEq
                | BinaryOp::Gt
                | BinaryOp::GtEq => Type::Bool,
                _ => Type::Unknown,
            };
        }
        let result = match op {
            BinaryOp::Eq | BinaryOp::NotEq => {
                let types = &self.checked.types;
                (types.assignable(&left, &right) || types.assignable(&right, &left))
                    .then_some(Type::Bool)
            }
            BinaryOp::Lt | BinaryOp::LtEq | BinaryOp::Gt | BinaryOp::GtEq => {
                let ordered = matches!(
                    left,
                    Type::Int | Type::Float | Type::String | Type::Duration | Type::Time
                );
                (ordered && left == right).then_some(Type::Bool)
            }
            BinaryOp::Add => match (&left, &right) {
                (Type::Int, Type::Int) => Some(Type::Int),
                (Type::Float, Type::Float) => Some(Type::Float),
                (Type::String, Type::String) => Some(Type::String),
                (Type::Duration, Type::Duration) => Some(Type::Duration),
                (Type::Time, Type::Duration) => Some(Type::Time),
                (Type::List(a), Type::List(b)) if a == b => Some(left.clone()),
                _ => None,
            },
            BinaryOp::Sub => match (&left, &right) {
                (Type::Int, Type::Int) => Some(Type::Int),
                (Type::Float, Type::Float) => Some(Type::Float),
                (Type::Duration, Type::Duration) => Some(Type::Duration),
                (Type::Time, Type::Duration) => Some(Type::Time),
                (Type::Time, Type::Time) => Some(Type::Duration),
                _ => None,
            },
            BinaryOp::Mul | BinaryOp::Div => match (&left, &right) {
                (Type::Int, Type::Int) => Some(Type::Int),
                (Type::Float, Type::Float) => Some(Type::Float),
                (Type::Duration, Type::Int | Type::Float) => Some(Type::Duration),
                (Type::Int | Type::Float, Type::Duration) if op == BinaryOp::Mul => {
                    Some(Type::Duration)
                }
                _ => None,
            },
            BinaryOp::Rem => match (&left, &right) {
                (Type::Int, Type::Int) => Some(Type::Int),
                _ => None,
            },
            BinaryOp::And | BinaryOp::Or | BinaryOp::Coalesce => Some(Type::Bool),
        };
        match result {
            Some(ty) => ty,
            None => {
                let (l, r) = (self.show(&left), self.show(&right));
                let help = match (op, &left, &right) {
                    (BinaryOp::Add, Type::String, _) | (BinaryOp::Add, _, Type::String) => {
                        "build text with interpolation: `\"${a} ${b}\"`".to_string()
                    }
                    (_, Type::Int, Type::Float) | (_, Type::Float, Type::Int) => {
                        "Int and Float do not mix: write the Int as a Float, e.g. `2.0`".to_string()
                    }
                    (_, Type::Optional(_), _) | (_, _, Type::Optional(_)) => {
                        let operand = if matches!(left, Type::Optional(_)) {
                            lhs
                        } else {
                            rhs
                        };
                        self.optional_operand_help(operand)
                    }
                    _ => format!(
                        "`{}` needs operands of matching, supported types",
                        op.symbol()
                    ),
                };
                self.error(
                    Diagnostic::error(
                        codes::INVALID_OPERANDS,
                        self.file,
                        span,
                        format!("`{}` cannot combine {l} and {r}", op.symbol()),
                    )
                    .with_message(format!("Cannot apply `{}` to {l} and {r}", op.symbol()))
                    .with_label(self.file, lhs.span, format!("this is {l}"))
                    .with_label(self.file, rhs.span, format!("this is {r}"))
                    .with_help(help),
                );
                Type::Unknown
            }
        }
    }

    fn check_if(
        &mut self,
        cond: &ast::Expr,
        then_block: &ast::Block,
        else_branch: Option<&ast::Expr>,
        expected: Option<&Type>,
    ) -> Type {
        let entry = self.flow.clone();
        let (present_true, present_false) = self.presence(cond);
        let (when_true, when_false) = self.check_cond(cond);
        self.flow = when_true;
        let mark = self.narrow(&present_true);
        let then_type = self.check_block(then_block, expected);
        self.locals.truncate(mark);
        let then_flow = std::mem::replace(&mut self.flow, when_false);
        let Some(else_branch) = else_branch else {
            // `if x == none { return … }`: what follows runs only when `x` is present.
            if then_flow == Flow::Unreachable {
                self.narrow(&present_false);
            }
            let skipped = std::mem::replace(&mut self.flow, Flow::Unreachable);
            self.flow = explain_join(
                &entry,
                then_flow,
                skipped,
                cond.span,
                "when this condition is false, this path skips the approval",
            );
            return Type::Unit;
        };
        let mark = self.narrow(&present_false);
        let else_type = self.check_expr(else_branch, expected);
        self.locals.truncate(mark);
        let else_flow = std::mem::replace(&mut self.flow, Flow::Unreachable);
        self.flow = if else_flow == Flow::Approved {
            explain_join(
                &entry,
                else_flow,
                then_flow,
                cond.span,
                "when this condition is true, this path skips the approval",
            )
        } else {
            explain_join(
                &entry,
                then_flow,
                else_flow,
                cond.span,
                "when this condition is false, the `else` branch skips the approval",
            )
        };
        self.join_branches(
            &then_type,
            then_block.span,
            &else_type,
            else_branch.span,
            "`if` and `else`",
            expected,
        )
    }

    fn join_branches(
        &mut self,
        a: &Type,
        a_span: Span,
        b: &Type,
        b_span: Span,
        what: &str,
        expected: Option<&Type>,
    ) -> Type {
        if expected == Some(&Type::Unit) {
            // Used as a statement: the branches' values are discarded.
            return Type::Unit;
        }
        if let Some(joined) = self.checked.types.join(a, b) {
            return joined;
        }
        let (sa, sb) = (self.show(a), self.show(b));
        self.error(
            Diagnostic::error(
                codes::TYPE_MISMATCH,
                self.file,
                b_span,
                format!("this is {sb}"),
            )
            .with_message(format!("{what} have different types"))
            .with_label(self.file, a_span, format!("this is {sa}"))
            .with_help("make every branch produce the same type"),
        );
        Type::Unknown
    }

    fn check_try(
        &mut self,
        body: &ast::Block,
        catches: &[ast::Catch],
        expected: Option<&Type>,
    ) -> Type {
        let entry = self.flow.clone();
        let body_type = self.check_block(body, expected);
        let mut flow = std::mem::replace(&mut self.flow, entry.clone());
        let mut result = Some((body_type, body.span));
        let mut caught_all: Option<Span> = None;
        let raised = self.named_errors_raised(body);
        for catch in catches {
            if let (Some(error), Some(raised)) = (&catch.error, &raised)
                && self.named_error(&error.name).is_some()
                && !raised.iter().any(|r| r == &*error.name)
            {
                let help = if raised.is_empty() {
                    "nothing in the `try` block raises a named error; remove this `catch`, or catch a builtin kind (`catch ToolError(e)`)".to_string()
                } else {
                    format!(
                        "its block can raise {}",
                        raised
                            .iter()
                            .map(|r| format!("`{r}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                self.error(
                    Diagnostic::error(
                        codes::UNREACHABLE_CATCH,
                        self.file,
                        error.span,
                        "nothing in the `try` raises this",
                    )
                    .with_message(format!("This `try` cannot raise `{}`", error.name))
                    .with_help(help),
                );
            }
            if let Some(earlier) = caught_all {
                self.error(
                    Diagnostic::warning(
                        codes::UNREACHABLE_CODE,
                        self.file,
                        catch.span,
                        "never runs",
                    )
                    .with_message("This `catch` comes after one that catches every error")
                    .with_label(self.file, earlier, "this one catches every error first")
                    .with_help("put the `catch` of a named error before `catch e { … }`"),
                );
            }
            // The handler starts with the facts before the `try` block: the error may have
            // come from anywhere in it.
            self.flow = entry.clone();
            let mark = self.locals.len();
            let error_type = match &catch.error {
                Some(name) => self.caught_error_type(name),
                None => {
                    caught_all.get_or_insert(catch.span);
                    self.checked.error.map(Type::Named).unwrap_or(Type::Unknown)
                }
            };
            if let Some(binding) = &catch.binding {
                self.bind(binding, error_type, false, false, LocalKind::CaughtError);
            }
            let handler = &catch.handler;
            self.note_visible(handler.span.start, handler.span.end);
            let handler_type = self.check_block(handler, expected);
            self.pop_scope(mark, handler.span.end);
            flow = flow.join(std::mem::replace(&mut self.flow, Flow::Unreachable));
            result = Some(self.join_arm(
                result,
                handler_type,
                handler.span,
                "`try` and `catch`",
                expected,
            ));
        }
        self.flow = flow;
        result.map(|(t, _)| t).unwrap_or(Type::Unit)
    }

    /// The named errors a block can raise — its tools' `raises`, its `fail Name(…)` — or
    /// `None` when it cannot be told (a child workflow's call, whose own calls may raise
    /// theirs; `fail e` of an error caught inside it).
    fn named_errors_raised(&self, block: &ast::Block) -> Option<Vec<String>> {
        let direct = direct_raises(self.scope, self.checked, block);
        let mut raised = direct.named?;
        for child in direct.children {
            let child = self.checked.workflows.get(child)?;
            for name in child.may_raise.as_ref()? {
                if !raised.contains(&name.to_string()) {
                    raised.push(name.to_string());
                }
            }
        }
        Some(raised)
    }

    /// The type of the error a `catch Name(e)` binds: a named error's record, or `Error`
    /// for a builtin kind (`catch ToolError(e)`). Reports an unknown name.
    fn caught_error_type(&mut self, name: &ast::Ident) -> Type {
        if let Some(index) = self.named_error(&name.name) {
            return Type::Named(self.checked.errors[index].ty);
        }
        self.check_error_kind(name);
        self.checked.error.map(Type::Named).unwrap_or(Type::Unknown)
    }

    /// The named error `name` this file can see.
    fn named_error(&self, name: &str) -> Option<usize> {
        let ty = self.scope.lookup_type(name)?;
        self.checked.error_of(ty)
    }

    /// `fail "text"`, `fail NotFound(id)` (a named error the workflow declares it raises)
    /// or `fail e` (a caught error, raised again unchanged).
    fn check_fail(&mut self, value: &ast::Expr) {
        if let ExprKind::Call { callee, args } = &value.kind
            && let ExprKind::Name(name) = &callee.kind
            && self.lookup_local(name, callee.span).is_none()
            && let Some(index) = self.named_error(name)
        {
            self.record(value.span, Resolved::Error(index));
            let payload = self.checked.errors[index].payload.clone();
            if args.len() != payload.len() {
                self.error(
                    Diagnostic::error(
                        codes::WRONG_ARGUMENT_COUNT,
                        self.file,
                        value.span,
                        format!("{} value(s) given, {} expected", args.len(), payload.len()),
                    )
                    .with_message(format!("Error `{name}` takes {} value(s)", payload.len()))
                    .with_help(format!(
                        "give its fields in order: `{name}({})`",
                        payload
                            .iter()
                            .map(|f| f.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                );
            }
            for (arg, field) in args.iter().zip(&payload) {
                self.expect_type(arg, &field.ty);
            }
            for arg in args.iter().skip(payload.len()) {
                self.check_expr(arg, None);
            }
            if self.forbid_in_function(
                value.span,
                value.span,
                &format!("this fails with the named error `{name}`"),
                &format!("a `fn` declares no errors: fail with a message (`fail \"…\"`), or let the workflow that calls it fail with `{name}`"),
            ) {
                return;
            }
            if !self.workflow.raises.iter().any(|r| r == name) {
                let help = format!("declare it after the result type: `-> … raises {name}`");
                self.error(
                    Diagnostic::error(
                        codes::UNDECLARED_ERROR,
                        self.file,
                        callee.span,
                        format!("`{}` does not declare it", self.workflow.name),
                    )
                    .with_message(format!(
                        "`{}` fails with `{name}` without declaring it",
                        self.workflow.name
                    ))
                    .with_label(self.file, self.workflow.span, "the workflow")
                    .with_help(help),
                );
            }
            return;
        }
        let found = self.check_expr(value, Some(&Type::String));
        let is_error = match &found {
            Type::Named(id) => {
                Some(*id) == self.checked.error || self.checked.error_of(*id).is_some()
            }
            _ => false,
        };
        if is_error {
            self.resolved.rethrows.insert((self.file, value.span));
            return;
        }
        if !self.checked.types.assignable(&found, &Type::String) {
            self.mismatch(value.span, &Type::String, &found, None);
        }
    }

    fn check_error_kind(&mut self, kind: &ast::Ident) {
        if stdlib::ERROR_KINDS.iter().any(|(k, _)| *k == kind.name)
            || self.named_error(&kind.name).is_some()
        {
            return;
        }
        let declared: Vec<&str> = self
            .checked
            .errors
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        let names = stdlib::ERROR_KINDS
            .iter()
            .map(|(k, _)| *k)
            .chain(declared.iter().copied());
        let all: Vec<&str> = stdlib::ERROR_KINDS
            .iter()
            .map(|(k, _)| *k)
            .chain(declared.iter().copied())
            .collect();
        let mut diagnostic = Diagnostic::error(
            codes::UNKNOWN_ERROR_KIND,
            self.file,
            kind.span,
            "not an error kind",
        )
        .with_message(format!("Unknown error kind `{}`", kind.name));
        diagnostic = match did_you_mean(&kind.name, names) {
            Some(s) => diagnostic.with_help(format!("did you mean `{s}`?")),
            None => diagnostic.with_help(format!("the error kinds are {}", all.join(", "))),
        };
        self.error(diagnostic);
    }

    fn check_gate_options(
        &mut self,
        options: &[ast::AwaitOption],
        known: &[stdlib::GateOption],
        span: Span,
        what: &str,
    ) {
        for (index, option) in options.iter().enumerate() {
            if let Some(first) = options[..index]
                .iter()
                .find(|o| o.name.name == option.name.name)
            {
                self.duplicate_field(&option.name, first.name.span);
                continue;
            }
            let Some(spec) = known.iter().find(|k| k.name == option.name.name) else {
                self.check_expr(&option.value, None);
                let names: Vec<&str> = known.iter().map(|k| k.name).collect();
                let mut diagnostic = Diagnostic::error(
                    codes::UNKNOWN_OPTION,
                    self.file,
                    option.name.span,
                    format!("not an option of `await {what}`"),
                )
                .with_message(format!("Unknown option `{}`", option.name.name));
                diagnostic = match did_you_mean(&option.name.name, names.iter().copied()) {
                    Some(s) => diagnostic.with_help(format!("did you mean `{s}`?")),
                    None => diagnostic.with_help(format!("the options are {}", names.join(", "))),
                };
                self.error(diagnostic);
                continue;
            };
            let expected = from_stdlib(spec.ty, self.checked, &Type::Unknown);
            if expected.is_unknown() {
                let found = self.check_expr(&option.value, None);
                if found == Type::Unit {
                    self.mismatch(option.value.span, &Type::Json, &found, None);
                }
                self.forbid_secret(option.value.span, &found, "to the person deciding");
                if option.name.name == stdlib::gate_option::CONTEXT {
                    self.resolved
                        .contexts
                        .insert((self.file, option.value.span), found);
                }
            } else {
                self.expect_type(&option.value, &expected);
            }
            match (&option.after, spec.takes_after) {
                (Some(after), true) => {
                    self.expect_type(after, &Type::Duration);
                }
                (None, true) if spec.after_required => self.error(
                    Diagnostic::error(
                        codes::MISSING_OPTION,
                        self.file,
                        option.span,
                        "when should it escalate?",
                    )
                    .with_message(format!("`{}` needs `after <duration>`", spec.name))
                    .with_help(format!("write `{}: role(\"…\") after 24h`", spec.name)),
                ),
                (None, true) => {}
                (Some(after), false) => {
                    self.check_expr(after, None);
                    self.error(
                        Diagnostic::error(
                            codes::UNKNOWN_OPTION,
                            self.file,
                            after.span,
                            format!("`{}` takes no `after`", spec.name),
                        )
                        .with_message("`after` belongs to `escalate` and `remind` only")
                        .with_help("remove `after …`; only `escalate` and `remind` take a delay"),
                    );
                }
                (None, false) => {}
            }
        }
        self.check_gate_constants(options);
        for spec in known.iter().filter(|k| k.required) {
            if !options.iter().any(|o| o.name.name == spec.name) {
                self.error(
                    Diagnostic::error(
                        codes::MISSING_OPTION,
                        self.file,
                        span,
                        format!("`{}` is missing", spec.name),
                    )
                    .with_message(format!("`await {what}` needs `{}`", spec.name))
                    .with_help(format!("add `{}: role(\"…\")` — {}", spec.name, spec.doc)),
                );
            }
        }
    }

    /// Range checks on the options whose values are constants: a gate that could never
    /// be decided, or an escalation that could never happen, is a mistake.
    fn check_gate_constants(&mut self, options: &[ast::AwaitOption]) {
        let find = |name: &str| options.iter().find(|o| o.name.name == name);
        if let Some(quorum) = find(stdlib::gate_option::QUORUM)
            && int_constant(&quorum.value).is_some_and(|n| n < 1)
        {
            self.out_of_range(
                quorum.value.span,
                "the gate would open without a single approval",
                "give the number of distinct approvers needed, 1 or more: `quorum: 2`",
            );
        }
        let timeout = find(stdlib::gate_option::TIMEOUT)
            .and_then(|t| Some((t, duration_constant(&t.value)?)));
        if let Some((option, ms)) = timeout
            && ms <= 0
        {
            self.out_of_range(
                option.value.span,
                "this time limit has already passed when the wait begins",
                "give a positive duration, e.g. `timeout: 48h`, or leave `timeout` out to wait without limit",
            );
        }
        let escalation = find(stdlib::gate_option::ESCALATE)
            .and_then(|e| e.after.as_ref())
            .and_then(|after| Some((after, duration_constant(after)?)));
        let Some((after_expr, after_ms)) = escalation else {
            return;
        };
        if after_ms <= 0 {
            self.out_of_range(
                after_expr.span,
                "this escalation would happen as soon as the gate opens",
                "give a positive delay, e.g. `after 24h`, or name everyone who may decide in `approvers: any(…)`",
            );
        } else if let Some((timeout, timeout_ms)) = timeout
            && timeout_ms > 0
            && after_ms >= timeout_ms
        {
            self.error(
                Diagnostic::error(
                    codes::OUT_OF_RANGE,
                    self.file,
                    after_expr.span,
                    "the gate has timed out by then, so this escalation never happens",
                )
                .with_message("The escalation comes too late")
                .with_label(self.file, timeout.value.span, "the gate times out here")
                .with_help(
                    "escalate earlier than the timeout (e.g. `after 24h` with `timeout: 48h`), or lengthen the timeout",
                ),
            );
        }
    }

    /// `await input<T>` asks a person for a value as JSON: `T` must be plain data. An
    /// `Approvers` names who may decide and a `Decision` is made only by `await approval`,
    /// so neither may be supplied, not even inside a record, list or enum.
    /// `await signal name`: the type of the signal's value, when the workflow accepts it.
    fn await_signal(&mut self, name: &ast::Ident) -> Type {
        let signals = &self.workflow.signals;
        if let Some(signal) = signals.iter().find(|s| s.name == name.name) {
            return signal.ty.clone();
        }
        let names: Vec<&str> = signals.iter().map(|s| s.name.as_str()).collect();
        let help = match did_you_mean(&name.name, names.iter().copied()) {
            Some(close) => format!("did you mean `{close}`?"),
            None if names.is_empty() => format!(
                "declare it after the workflow's result type: `accepts {}: String from role(\"…\")`",
                name.name
            ),
            None => format!(
                "`{}` accepts {}; add `{}` to its `accepts` clause",
                self.workflow.name,
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                name.name
            ),
        };
        self.error(
            Diagnostic::error(
                codes::UNKNOWN_SIGNAL,
                self.file,
                name.span,
                "not a signal of this workflow",
            )
            .with_message(format!(
                "`{}` does not accept a signal `{}`",
                self.workflow.name, name.name
            ))
            .with_help(help),
        );
        Type::Unknown
    }

    /// The signals' value types are supplied from outside like inputs: the same rule.
    fn check_signal_types(&mut self) {
        for signal in &self.workflow.signals {
            if let Some(span) = signal.ty_span {
                self.check_input_type(&signal.ty, span, Some(&signal.name));
            }
        }
    }

    /// The type of an `await input`, or of the value of signal `signal`, holds nothing a
    /// person or system outside cannot send.
    fn check_input_type(&mut self, ty: &Type, span: Span, signal: Option<&str>) {
        // What is supplied from outside is recorded as it came (the decision's value, the
        // signal's), in the history, the audit trail and every export: no secret may be.
        if let Some(path) = self.checked.types.secret_path(ty) {
            let at = if path.is_empty() {
                String::new()
            } else {
                format!(" (at `{}`)", path.trim_start_matches('.'))
            };
            let (message, recorded) = match signal {
                Some(name) => (
                    format!("Signal `{name}` would record a `Secret`"),
                    "a signal's value is recorded in the history and the audit trail when it arrives",
                ),
                None => (
                    "`await input` would record a `Secret`".to_string(),
                    "the value supplied is recorded in the history and the audit trail",
                ),
            };
            self.error(
                Diagnostic::error(codes::SECRET_LEAK, self.file, span, format!("this type holds a `Secret`{at}"))
                    .with_message(message)
                    .with_help(format!("{recorded}: ask for a reference instead (the secret's name in your vault, say) and resolve it in a tool whose parameter is a `Secret`")),
            );
            return;
        }
        let mut seen = Vec::new();
        let Some((culprit, path)) = self.not_input(ty, &mut seen) else {
            return;
        };
        let decision = self.checked.decision.map(Type::Named);
        let is_decision = decision.as_ref() == Some(&culprit);
        let shown = self.show(&culprit);
        let a = if shown
            .trim_start_matches('`')
            .starts_with(['A', 'E', 'I', 'O', 'U'])
        {
            "an"
        } else {
            "a"
        };
        let who = if signal.is_some() {
            "a sender"
        } else {
            "a person"
        };
        let label = match &path {
            None => format!("{who} cannot supply {a} {shown}"),
            Some((inside, _, field)) => {
                format!("`{inside}` holds {a} {shown} (in `{field}`), which {who} cannot supply")
            }
        };
        let help = if let Some(name) = signal {
            format!(
                "let the signal carry a name instead (e.g. `{name}: String`) and build `user(name)` or `role(name)` from it"
            )
        } else if is_decision {
            "use `await approval` for a decision; to ask for a verdict as data, declare a record such as `type Verdict = { approved: Bool, comment: String }`".to_string()
        } else {
            "ask for the name instead (e.g. `await input<String>`) and build `user(name)` or `role(name)` from it".to_string()
        };
        let mut diagnostic = Diagnostic::error(codes::NOT_INPUT_TYPE, self.file, span, label)
            .with_message(match signal {
                Some(name) => format!("signal `{name}` cannot carry {}", self.show(ty)),
                None => format!("`await input` cannot ask for {}", self.show(ty)),
            })
            .with_help(help);
        if let Some((_, Some((file, field_span)), _)) = path {
            diagnostic = diagnostic.with_label(file, field_span, "declared here");
        }
        self.error(diagnostic);
    }

    /// The first type inside `ty` that a person cannot supply as input, with the named type
    /// and field (or variant) that holds it when it is nested.
    #[allow(clippy::type_complexity)]
    fn not_input(
        &self,
        ty: &Type,
        seen: &mut Vec<TypeId>,
    ) -> Option<(Type, Option<(String, Option<(FileId, Span)>, String)>)> {
        match ty {
            Type::Approvers => Some((Type::Approvers, None)),
            Type::Named(id) if Some(*id) == self.checked.decision => Some((ty.clone(), None)),
            Type::List(inner) | Type::Map(inner) | Type::Optional(inner) => {
                self.not_input(inner, seen)
            }
            Type::Refined(r) => self.not_input(&r.base, seen),
            Type::Record(fields) => fields.iter().find_map(|(_, ty)| self.not_input(ty, seen)),
            Type::Named(id) => {
                if seen.contains(id) {
                    return None;
                }
                seen.push(*id);
                let def = self.checked.types.get(*id);
                let members: Vec<(String, &crate::types::FieldDef)> = match &def.kind {
                    TypeDefKind::Record(fields) => {
                        fields.iter().map(|f| (f.name.to_string(), f)).collect()
                    }
                    TypeDefKind::Enum(variants) => variants
                        .iter()
                        .flat_map(|v| {
                            v.fields
                                .iter()
                                .map(move |f| (format!("{}({})", v.name, f.name), f))
                        })
                        .collect(),
                    TypeDefKind::Refined(_) => Vec::new(),
                };
                members.into_iter().find_map(|(member, field)| {
                    // Report the outermost type the author wrote, and the field in it.
                    let (culprit, _) = self.not_input(&field.ty, seen)?;
                    let at = def.file.map(|file| (file, field.span));
                    Some((culprit, Some((def.name.to_string(), at, member))))
                })
            }
            _ => None,
        }
    }

    // ----- match --------------------------------------------------------------------

    fn check_match(
        &mut self,
        scrutinee: &ast::Expr,
        arms: &[ast::MatchArm],
        expected: Option<&Type>,
    ) -> Type {
        // `match d.approved { true => …, false => … }` narrows like `if`.
        let is_condition_local = match &scrutinee.kind {
            ExprKind::Name(name) => self
                .locals
                .iter()
                .rev()
                .find(|l| l.name == *name)
                .is_some_and(|l| l.condition.is_some()),
            _ => false,
        };
        let narrowed = (is_condition_shaped(scrutinee) || is_condition_local)
            .then(|| self.check_cond(scrutinee));
        let subject = match narrowed {
            Some(_) => Type::Bool,
            None => self.check_expr(scrutinee, None),
        };
        let entry = self.flow.clone();
        let mut exit = Flow::Unreachable;
        let mut result: Option<(Type, Span)> = None;
        let mut covered: Vec<Coverage> = Vec::new();
        let mut pats: Vec<Pat> = Vec::new();
        for arm in arms {
            if covered.contains(&Coverage::Everything) {
                self.error(
                    Diagnostic::warning(
                        codes::UNREACHABLE_CODE,
                        self.file,
                        arm.pattern.span,
                        "this arm never matches",
                    )
                    .with_message("Unreachable match arm")
                    .with_help(
                        "an earlier arm already matches every value; remove this one or move it up",
                    ),
                );
            }
            self.flow = match (&narrowed, &arm.pattern.kind) {
                (Some((when_true, _)), PatternKind::Bool(true)) => when_true.clone(),
                (Some((_, when_false)), PatternKind::Bool(false)) => when_false.clone(),
                (Some((when_true, when_false)), _) => {
                    if covered.contains(&Coverage::Bool(true)) {
                        when_false.clone()
                    } else if covered.contains(&Coverage::Bool(false)) {
                        when_true.clone()
                    } else {
                        entry.clone()
                    }
                }
                (None, _) => entry.clone(),
            };
            let mark = self.locals.len();
            // After a `none` arm the value is present: `v => …` binds a plain `T`.
            let arm_subject = match &subject {
                Type::Optional(inner) if covered.contains(&Coverage::NoneValue) => &**inner,
                _ => &subject,
            };
            let coverage = self.check_pattern(&arm.pattern, arm_subject);
            covered.push(coverage);
            pats.push(exhaustive::pat_of(
                &arm.pattern,
                &subject,
                &self.checked.types,
                self.file,
                &self.resolved.items,
            ));
            let arm_type = self.check_expr(&arm.body, expected);
            self.pop_scope(mark, arm.span.end);
            exit = exit.join(std::mem::replace(&mut self.flow, Flow::Unreachable));
            result = Some(self.join_arm(result, arm_type, arm.body.span, "match arms", expected));
        }
        self.flow = if arms.is_empty() { entry } else { exit };
        self.check_exhaustive(&subject, &covered, &pats, scrutinee.span);
        result.map(|(t, _)| t).unwrap_or(Type::Unit)
    }

    /// The type of the arms so far joined with one more arm's (`what`: "match arms").
    fn join_arm(
        &mut self,
        so_far: Option<(Type, Span)>,
        arm_type: Type,
        arm_span: Span,
        what: &str,
        expected: Option<&Type>,
    ) -> (Type, Span) {
        match so_far {
            None => (arm_type, arm_span),
            Some((so_far, so_far_span)) => {
                let joined =
                    self.join_branches(&so_far, so_far_span, &arm_type, arm_span, what, expected);
                (joined, so_far_span)
            }
        }
    }

    /// `select { signal a as x => …, after 1d => … }`: each arm is a path of its own from
    /// the `select` on (like a `match` arm); the arms' values have one type.
    /// What a `select` arm waits for besides a signal or a time: a gate, or a call of a
    /// workflow or tool. It runs as a branch of the run (checked like a `parallel`'s, from
    /// the facts before the `select`), so the lowering gets what it reads. Its type.
    fn check_select_wait(&mut self, wait: &ast::Expr, arm: Span) -> Type {
        if let ExprKind::Call { callee, .. } = &wait.kind {
            let is_step = match &callee.kind {
                ExprKind::Name(name) => self.scope.names_a_step(name),
                _ => false,
            };
            if !is_step {
                self.error(
                    Diagnostic::error(
                        codes::SELECT_ARM_DOES_NOT_WAIT,
                        self.file,
                        wait.span,
                        "this does not wait for anything",
                    )
                    .with_message("A `select` arm calls something that is not a workflow or a tool")
                    .with_help("an arm waits for a signal, a gate, a child workflow or a tool call, or for a time: `signal cancel as why => …`, `review(doc) as r => …`, `after 1h => …`; compute plain values in the arm's body"),
                );
                self.check_expr(wait, None);
                return Type::Unknown;
            }
        }
        let entry = self.flow.clone();
        let at = Span::new(arm.start as usize, arm.start as usize);
        let (ty, captures) = self.in_branch(at, |this| branch_value(this.check_expr(wait, None)));
        self.flow = entry;
        self.resolved.parallels.insert(
            (self.file, wait.span),
            ParallelFacts {
                item: None,
                captures,
                results: vec![ty.clone()],
            },
        );
        ty
    }

    /// The policies of a `retry`: each one's numbers and durations; in the per-kind form,
    /// no kind in two policies and no policy that both waits `after` and backs off.
    fn check_retry_policies(&mut self, policies: &[ast::RetryPolicy], per_kind: bool) {
        let mut seen: Vec<&ast::Ident> = Vec::new();
        for policy in policies {
            self.check_retry_policy(policy, per_kind);
            for kind in &policy.kinds {
                self.check_error_kind(kind);
                if let Some(earlier) = seen.iter().find(|k| k.name == kind.name) {
                    self.error(
                        Diagnostic::error(
                            codes::CONFLICTING_RETRY_POLICY,
                            self.file,
                            kind.span,
                            "a second policy for this kind",
                        )
                        .with_message(format!("`{}` has two retry policies", kind.name))
                        .with_label(self.file, earlier.span, "its first policy")
                        .with_help("give each error kind one policy: merge the two, or remove one"),
                    );
                }
                seen.push(kind);
            }
        }
    }

    /// One policy: how many attempts (1 or more; in the per-kind form 0 too: never retried),
    /// `backoff D`, `max M`, `multiplier M` (an `Int` or a `Float` of at least 1), `within D`
    /// (a positive `Duration`) and `after D` (a `Duration`, which may read the error).
    fn check_retry_policy(&mut self, policy: &ast::RetryPolicy, per_kind: bool) {
        self.expect_type(&policy.attempts, &Type::Int);
        let least = i64::from(!per_kind);
        if let Some(value) = int_constant(&policy.attempts).filter(|_| !policy.forever)
            && value < least
        {
            if per_kind {
                self.out_of_range(
                    policy.attempts.span,
                    "a number of attempts cannot be negative",
                    "give how many attempts may end in this error, or 0 to never retry it: `on NotFound: 0`",
                );
            } else {
                self.out_of_range(
                    policy.attempts.span,
                    "a block runs at least once: `retry 1` means no retry",
                    "give the number of attempts, 1 or more: `retry 3 { … }`",
                );
            }
        }
        for duration in [&policy.backoff, &policy.max].into_iter().flatten() {
            self.expect_type(duration, &Type::Duration);
        }
        if let Some(multiplier) = &policy.multiplier {
            let ty = self.check_expr(multiplier, None);
            if !matches!(ty, Type::Int | Type::Float | Type::Unknown) {
                self.mismatch(multiplier.span, &Type::Float, &ty, None);
            }
            let below_one = match &multiplier.kind {
                ExprKind::Int(n) => *n < 1,
                ExprKind::Float(f) => *f < 1.0,
                _ => false,
            };
            if below_one {
                self.out_of_range(
                    multiplier.span,
                    "the waits would shrink",
                    "give a multiplier of 1 (waits stay the same) or more: `multiplier 1.5`",
                );
            }
        }
        if let Some(within) = &policy.within {
            self.expect_type(within, &Type::Duration);
            if duration_constant(within).is_some_and(|ms| ms <= 0) {
                self.out_of_range(
                    within.span,
                    "no attempt could start",
                    "give how long the retries may go on: `within 2h`",
                );
            }
        }
        if let Some(after) = &policy.after {
            let mark = self.locals.len();
            if let (Some(binding), [kind]) = (&policy.binding, policy.kinds.as_slice()) {
                // The kind itself is checked (and reported) with the others.
                let ty = match self.named_error(&kind.name) {
                    Some(index) => Type::Named(self.checked.errors[index].ty),
                    None => self.checked.error.map(Type::Named).unwrap_or(Type::Unknown),
                };
                self.bind(binding, ty, false, false, LocalKind::CaughtError);
            }
            self.expect_type(after, &Type::Duration);
            self.pop_scope(mark, after.span.end);
            if let Some(backoff) = &policy.backoff {
                self.error(
                    Diagnostic::error(
                        codes::CONFLICTING_RETRY_POLICY,
                        self.file,
                        after.span,
                        "a wait given by the error",
                    )
                    .with_message("This policy waits both `after` a time and by a `backoff`")
                    .with_label(self.file, backoff.span, "a backoff too")
                    .with_help("keep one: `after r.retry_after` waits as the error says, `backoff 1s` waits longer each time"),
                );
            }
        } else if let Some(binding) = &policy.binding {
            self.error(
                Diagnostic::warning(
                    codes::UNUSED_VARIABLE,
                    self.file,
                    binding.span,
                    "never read",
                )
                .with_message(format!("The error `{}` is never read", binding.name))
                .with_help(
                    "read it in `after`, as `after r.retry_after`, or write `on Kind:` without it",
                ),
            );
        }
    }

    /// Signals come to the run, not to its branches (each a child run of its own).
    fn forbid_signals_in_branch(&mut self, span: Span, what: &str) {
        self.forbid_in_branch(
            span,
            what,
            "signals come to the workflow's run, not to its branches: wait for the signal before or after the `parallel`",
        );
    }

    /// An assignment to `name` in a `parallel` branch, when the variable is declared outside
    /// the branch: branches run apart and share no variables.
    fn forbid_shared_assignment(&mut self, name: &str, span: Span) {
        let Some(branch) = self.branches.last() else {
            return;
        };
        let Some(index) = self
            .locals
            .iter()
            .rposition(|l| l.name == name && !l.shadow)
        else {
            return;
        };
        if index >= branch.mark {
            return;
        }
        let (declared, parallel) = (self.locals[index].span, branch.span);
        self.error(
            Diagnostic::error(
                codes::SHARED_VARIABLE,
                self.file,
                span,
                format!("`{name}` is declared outside the branch"),
            )
            .with_message(format!(
                "Branches of a `parallel` cannot change `{name}`: they share no variables"
            ))
            .with_label(self.file, declared, "declared here, outside the `parallel`")
            .with_label(self.file, parallel, "in a branch of this `parallel`")
            .with_help(format!(
                "make what the branch computes its value, and combine the branches' results into `{name}` after the `parallel`"
            )),
        );
    }

    /// `parallel for x in items [max N] [collect] { … }` or `parallel [collect] { a: …, … }`:
    /// each branch is checked from the facts before the `parallel` (an approval in one
    /// branch does not count in another, nor after the `parallel`), with its own locals; the
    /// variables it reads from outside are recorded for the lowering.
    fn check_parallel(
        &mut self,
        parallel: &ast::Parallel,
        span: Span,
        expected: Option<&Type>,
    ) -> Type {
        let entry = self.flow.clone();
        let collect = parallel.collect;
        let mut facts = ParallelFacts::default();
        // Labels point at the word `parallel`, not at the whole expression.
        let keyword = Span::new(span.start as usize, span.start as usize + "parallel".len());
        let result = match &parallel.branches {
            ast::ParallelBranches::Each {
                var,
                items,
                max,
                body,
            } => {
                let element = self.element_type(items);
                if let Some(max) = max {
                    self.expect_type(max, &Type::Int);
                    if int_constant(max).is_some_and(|n| n < 1) {
                        self.out_of_range(
                            max.span,
                            "fewer than one branch at a time",
                            "give the most branches to run at once, 1 or more: `max 4`",
                        );
                    }
                }
                let wanted = match expected {
                    Some(Type::List(inner)) if !collect => Some((**inner).clone()),
                    _ => None,
                };
                let (ty, captures) = self.in_branch(keyword, |this| {
                    let mark = this.locals.len();
                    this.bind(var, element.clone(), false, false, LocalKind::BranchItem);
                    this.note_visible(body.span.start, body.span.end);
                    let ty = this.check_block(body, wanted.as_ref());
                    this.pop_scope(mark, body.span.end);
                    ty
                });
                facts.captures = captures;
                facts.item = Some((var.name.clone(), element));
                let ty = branch_value(ty);
                facts.results.push(ty.clone());
                Type::List(Box::new(self.collected(ty, collect)))
            }
            ast::ParallelBranches::Fields(fields) => {
                let mut seen: Vec<(&str, Span)> = Vec::new();
                let mut results = Vec::new();
                let (record, captures) = self.in_branch(keyword, |this| {
                    let mut record = Vec::new();
                    for field in fields {
                        if let Some((_, first)) = seen.iter().find(|(n, _)| *n == &*field.name.name)
                        {
                            let first = *first;
                            this.error(
                                Diagnostic::error(
                                    codes::DUPLICATE_DEFINITION,
                                    this.file,
                                    field.name.span,
                                    "named again here",
                                )
                                .with_message(format!(
                                    "This `parallel` has two branches named `{}`",
                                    field.name.name
                                ))
                                .with_label(this.file, first, "first here")
                                .with_help(
                                    "give each branch its own name: it is a field of the result",
                                ),
                            );
                        } else {
                            seen.push((&field.name.name, field.name.span));
                        }
                        let wanted = match expected {
                            Some(Type::Record(types)) if !collect => types
                                .iter()
                                .find(|(n, _)| *n == field.name.name)
                                .map(|(_, t)| t.clone()),
                            _ => None,
                        };
                        this.flow = entry.clone();
                        let ty = branch_value(this.check_expr(&field.value, wanted.as_ref()));
                        results.push(ty.clone());
                        record.push((field.name.name.clone(), this.collected(ty, collect)));
                    }
                    record
                });
                facts.results = results;
                facts.captures = captures;
                Type::Record(record)
            }
        };
        self.flow = entry;
        self.resolved.parallels.insert((self.file, span), facts);
        result
    }

    /// Checks what `check` checks as a branch of a `parallel` (or a `select` arm's wait, an
    /// undo block): its own locals, no loop around it, and the enclosing locals it reads
    /// recorded as its captures (returned with what `check` gives).
    fn in_branch<T>(
        &mut self,
        span: Span,
        check: impl FnOnce(&mut Self) -> T,
    ) -> (T, Vec<(Name, Type)>) {
        self.branches.push(BranchScope {
            mark: self.locals.len(),
            span,
            captures: Vec::new(),
        });
        let loops = std::mem::take(&mut self.loops);
        let value = check(self);
        self.loops = loops;
        let captures = self.branches.pop().map(|b| b.captures).unwrap_or_default();
        (value, captures)
    }

    /// What a branch's result is seen as: with `collect`, its value or its error.
    fn collected(&self, ty: Type, collect: bool) -> Type {
        if !collect {
            return ty;
        }
        let error = self.checked.error.map(Type::Named).unwrap_or(Type::Unknown);
        Type::Record(vec![
            (Name::from("value"), Type::optional(ty)),
            (Name::from("error"), Type::optional(error)),
        ])
    }

    fn check_select(&mut self, arms: &[ast::SelectArm], expected: Option<&Type>) -> Type {
        let entry = self.flow.clone();
        let mut exit = Flow::Unreachable;
        let mut result: Option<(Type, Span)> = None;
        let mut seen: Vec<(String, Span)> = Vec::new();
        for arm in arms {
            self.flow = entry.clone();
            let mark = self.locals.len();
            match &arm.kind {
                ast::SelectArmKind::Signal { name, binding } => {
                    if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name.name) {
                        let first = *first;
                        self.error(
                            Diagnostic::error(
                                codes::DUPLICATE_DEFINITION,
                                self.file,
                                name.span,
                                "waited for again here",
                            )
                            .with_message(format!(
                                "This `select` waits for signal `{}` twice",
                                name.name
                            ))
                            .with_label(self.file, first, "first here")
                            .with_help("one arm per signal: the first arm would always take it"),
                        );
                    } else {
                        seen.push((name.name.to_string(), name.span));
                    }
                    let ty = self.await_signal(name);
                    if let Some(binding) = binding {
                        self.bind(binding, ty, false, false, LocalKind::Pattern);
                    }
                }
                ast::SelectArmKind::Wait { wait, binding } => {
                    let ty = self.check_select_wait(wait, arm.span);
                    if let Some(binding) = binding {
                        let decision = matches!(wait.kind, ExprKind::AwaitApproval { .. });
                        self.bind(binding, ty, false, decision, LocalKind::Pattern);
                    }
                }
                ast::SelectArmKind::After { duration } => {
                    self.expect_type(duration, &Type::Duration);
                    if duration_constant(duration).is_some_and(|ms| ms < 0) {
                        self.out_of_range(
                            duration.span,
                            "a negative wait",
                            "give a positive duration: `after 30d => …`",
                        );
                    }
                }
            }
            let arm_type = self.check_expr(&arm.body, expected);
            self.pop_scope(mark, arm.span.end);
            exit = exit.join(std::mem::replace(&mut self.flow, Flow::Unreachable));
            result = Some(self.join_arm(result, arm_type, arm.body.span, "select arms", expected));
        }
        self.flow = if arms.is_empty() { entry } else { exit };
        result.map(|(t, _)| t).unwrap_or(Type::Unit)
    }

    fn check_exhaustive(
        &mut self,
        subject: &Type,
        covered: &[Coverage],
        pats: &[Pat],
        scrutinee_span: Span,
    ) {
        if covered.contains(&Coverage::Everything)
            || covered.contains(&Coverage::Unknown)
            || subject.is_unknown()
        {
            return;
        }
        let types = &self.checked.types;
        let missing = exhaustive::missing(types, pats, subject);
        if missing.is_empty() {
            return;
        }
        let show = self.show(subject);
        // A value of a type with infinitely many values (a number, text, a record) is
        // missing: only a binding or `_` covers it.
        let open = missing.iter().any(|w| match w {
            Witness::Any => true,
            Witness::Ctor(Ctor::Some, inner) => inner.as_slice() == [Witness::Any],
            _ => false,
        });
        let (label, message, help) = if open && matches!(subject, Type::Optional(_)) {
            let none_covered = !missing.contains(&Witness::Ctor(Ctor::None, Vec::new()));
            let (label, help) = if none_covered {
                (
                    format!("this {show} may hold a value no arm matches"),
                    "add an arm that binds the value: `value => …`".to_string(),
                )
            } else {
                (
                    format!("this {show} may be `none` or hold a value"),
                    "add `none => …` and an arm that binds the value, `value => …`".to_string(),
                )
            };
            (
                label,
                "`match` does not cover every case of an optional value".to_string(),
                help,
            )
        } else if open {
            // Ints, strings and the like: literal arms can never cover them all.
            (
                format!("this {show} may have a value no arm matches"),
                "`match` is not exhaustive".to_string(),
                "add a catch-all arm at the end: `_ => …` (or `other => …` to use the value)"
                    .to_string(),
            )
        } else {
            let missing: Vec<String> = missing
                .iter()
                .map(|w| exhaustive::show(types, w, subject))
                .collect();
            let list = missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let arms = missing
                .iter()
                .map(|m| format!("`{m} => …`"))
                .collect::<Vec<_>>()
                .join(" and ");
            (
                format!("this {show} may be {list}"),
                format!("`match` does not cover {list}"),
                format!(
                    "add {} {arms}, or a catch-all `_ => …`",
                    if missing.len() == 1 {
                        "the arm"
                    } else {
                        "the arms"
                    }
                ),
            )
        };
        self.error(
            Diagnostic::error(
                codes::NON_EXHAUSTIVE_MATCH,
                self.file,
                scrutinee_span,
                label,
            )
            .with_message(message)
            .with_help(help),
        );
    }

    fn check_pattern(&mut self, pattern: &ast::Pattern, subject: &Type) -> Coverage {
        // A pattern tests the value of a refined type as a value of its base.
        let unrefined = subject.unrefined();
        let subject = &*unrefined;
        // The enum whose variants the pattern may name: the value's, or the one its
        // optional holds (`match c { none => …, Green => … }` with `c: Color?`).
        let enum_id = match subject {
            Type::Optional(inner) => Some(&**inner),
            other => Some(other),
        }
        .and_then(|ty| match ty {
            Type::Named(id) if self.checked.types.get(*id).variants().is_some() => Some(*id),
            _ => None,
        });
        match &pattern.kind {
            PatternKind::Wildcard | PatternKind::Error => Coverage::Everything,
            PatternKind::Name(name) => {
                if let Some(id) = enum_id {
                    let variants = self.checked.types.get(id).variants().unwrap_or(&[]);
                    if let Some(index) = variants.iter().position(|v| &v.name == name) {
                        let variant = &variants[index];
                        if !variant.fields.is_empty() {
                            let names: Vec<&str> =
                                variant.fields.iter().map(|f| f.name.as_str()).collect();
                            let help = format!(
                                "bind its fields: `{}({})`, or ignore them with `_`",
                                name,
                                names.join(", ")
                            );
                            self.error(
                                Diagnostic::error(
                                    codes::INVALID_PATTERN,
                                    self.file,
                                    pattern.span,
                                    format!("`{name}` has fields"),
                                )
                                .with_help(help),
                            );
                        }
                        self.record(pattern.span, Resolved::Variant(id, index));
                        return Coverage::Variant(index);
                    }
                }
                if name.starts_with(|c: char| c.is_uppercase())
                    && let Some(id) = enum_id
                {
                    let ident = ast::Ident {
                        name: name.clone(),
                        span: pattern.span,
                    };
                    self.find_variant(id, &ident);
                    return Coverage::Unknown;
                }
                let ident = ast::Ident {
                    name: name.clone(),
                    span: pattern.span,
                };
                if let Some(shadowed) = self.shadowed_variant(name)
                    && !subject.is_unknown()
                {
                    self.shadowing_binding(&ident, shadowed, subject);
                    self.bind_unknown(std::slice::from_ref(pattern));
                    return Coverage::Unknown;
                }
                self.bind(&ident, subject.clone(), false, false, LocalKind::Pattern);
                Coverage::Everything
            }
            PatternKind::Variant {
                enum_name,
                name,
                fields,
            } => {
                let Some(id) = enum_id else {
                    for field in fields {
                        self.check_pattern(field, &Type::Unknown);
                    }
                    if !subject.is_unknown() {
                        let show = self.show(subject);
                        self.error(
                            Diagnostic::error(
                                codes::INVALID_PATTERN,
                                self.file,
                                pattern.span,
                                format!("the value is {show}, not an enum"),
                            )
                            .with_help("variant patterns only match enum values"),
                        );
                    }
                    return Coverage::Unknown;
                };
                if let Some(enum_name) = enum_name
                    && enum_name.name != self.checked.types.get(id).name
                {
                    let show = self.show(subject);
                    self.error(
                        Diagnostic::error(
                            codes::INVALID_PATTERN,
                            self.file,
                            enum_name.span,
                            format!("the value is {show}"),
                        )
                        .with_help(format!("match variants of {show}")),
                    );
                    self.bind_unknown(fields);
                    return Coverage::Unknown;
                }
                let Some(index) = self.find_variant(id, name) else {
                    self.bind_unknown(fields);
                    return Coverage::Unknown;
                };
                let variant_fields: Vec<Type> =
                    self.checked.types.get(id).variants().unwrap_or(&[])[index]
                        .fields
                        .iter()
                        .map(|f| f.ty.clone())
                        .collect();
                if variant_fields.len() != fields.len() {
                    self.error(
                        Diagnostic::error(
                            codes::INVALID_PATTERN,
                            self.file,
                            pattern.span,
                            format!(
                                "`{}` has {} field(s), the pattern has {}",
                                name.name,
                                variant_fields.len(),
                                fields.len()
                            ),
                        )
                        .with_help(
                            "give one pattern per field, in declaration order; `_` ignores a field",
                        ),
                    );
                    self.bind_unknown(fields);
                    return Coverage::Unknown;
                }
                self.record(pattern.span, Resolved::Variant(id, index));
                let mut complete = true;
                let mut unknown = false;
                for (field, ty) in fields.iter().zip(&variant_fields) {
                    let coverage = self.check_pattern(field, ty);
                    complete &= coverage == Coverage::Everything;
                    unknown |= coverage == Coverage::Unknown;
                }
                if unknown {
                    Coverage::Unknown
                } else if complete {
                    Coverage::Variant(index)
                } else {
                    Coverage::Partial
                }
            }
            PatternKind::Duration(_) => {
                self.literal_pattern(pattern, subject, Type::Duration, Coverage::Partial)
            }
            PatternKind::Int(_) => {
                self.literal_pattern(pattern, subject, Type::Int, Coverage::Partial)
            }
            PatternKind::Str(_) => {
                self.literal_pattern(pattern, subject, Type::String, Coverage::Partial)
            }
            PatternKind::Bool(b) => {
                self.literal_pattern(pattern, subject, Type::Bool, Coverage::Bool(*b))
            }
            PatternKind::None => {
                if !matches!(subject, Type::Optional(_) | Type::Unknown) {
                    let show = self.show(subject);
                    self.error(
                        Diagnostic::error(
                            codes::INVALID_PATTERN,
                            self.file,
                            pattern.span,
                            format!("the value is {show}, never `none`"),
                        )
                        .with_help("remove this arm"),
                    );
                }
                Coverage::NoneValue
            }
        }
    }

    /// The enum that has a variant called `name`, if one in scope does: a binding with that
    /// name would read like a test for the variant.
    fn shadowed_variant(&self, name: &str) -> Option<TypeId> {
        self.scope
            .lookup_values(name)
            .iter()
            .find_map(|(value, _)| match value {
                Value::Variant(id, _) => Some(*id),
                _ => None,
            })
    }

    /// A binding pattern named like a variant of another type than the matched value's: it
    /// would match everything, silently, where a test for the variant was meant.
    fn shadowing_binding(&mut self, name: &ast::Ident, enum_id: TypeId, subject: &Type) {
        let def = self.checked.types.get(enum_id);
        let show = self.show(subject);
        let mut diagnostic = Diagnostic::error(
            codes::INVALID_PATTERN,
            self.file,
            name.span,
            format!("`{}` is a variant of `{}`, but the value is {show}", name.name, def.name),
        )
        .with_message(format!("`{}` names a variant, not a new variable", name.name))
        .with_help(format!(
            "to bind the value, give it a name that is no variant's (e.g. `{}`); to test for the variant, match a `{}`",
            name.name.to_lowercase(),
            def.name
        ));
        if let Some(file) = def.file {
            diagnostic =
                diagnostic.with_label(file, def.span, format!("`{}` is declared here", def.name));
        }
        self.error(diagnostic);
    }

    /// Binds the names in sub-patterns that could not be checked, so uses of them do not
    /// report unknown names on top of the pattern's error.
    fn bind_unknown(&mut self, fields: &[ast::Pattern]) {
        for field in fields {
            match &field.kind {
                PatternKind::Name(name) => {
                    let ident = ast::Ident {
                        name: name.clone(),
                        span: field.span,
                    };
                    self.bind(&ident, Type::Unknown, false, false, LocalKind::Pattern);
                    if let Some(local) = self.locals.last_mut() {
                        local.used = true;
                    }
                }
                PatternKind::Variant { fields, .. } => self.bind_unknown(fields),
                _ => {}
            }
        }
    }

    fn literal_pattern(
        &mut self,
        pattern: &ast::Pattern,
        subject: &Type,
        ty: Type,
        coverage: Coverage,
    ) -> Coverage {
        if !self.checked.types.assignable(&ty, subject) {
            self.mismatch(pattern.span, subject, &ty, None);
        }
        coverage
    }
}

/// Among several variants with one name, the one of the enum the context expects.
fn pick_variant(
    scope: &FileScope,
    types: &crate::types::TypeDefs,
    name: &str,
    expected: Option<&Type>,
) -> Option<(TypeId, usize)> {
    let wanted = match expected? {
        Type::Named(id) => *id,
        Type::Optional(inner) => match &**inner {
            Type::Named(id) => *id,
            _ => return None,
        },
        _ => return None,
    };
    let index = scope.lookup_variant(types, wanted, name)?;
    Some((wanted, index))
}

/// "a, b or c", keeping long lists short.
fn join_some(items: &[String]) -> String {
    const SHOWN: usize = 3;
    match items.len() {
        0 => String::new(),
        1 => items[0].clone(),
        n if n <= SHOWN => format!("{} or {}", items[..n - 1].join(", "), items[n - 1]),
        n => format!("{}, … ({} in all)", items[..SHOWN].join(", "), n),
    }
}

/// The value of an integer literal, possibly negated.
/// The branches of a `parallel { … }` (without `collect`) whose value is an approval's
/// decision: by the time the `parallel` has a value, each of them was decided.
fn decision_fields(value: &ast::Expr) -> Vec<Name> {
    let ExprKind::Parallel(parallel) = &value.kind else {
        return Vec::new();
    };
    match &parallel.branches {
        ast::ParallelBranches::Fields(fields) if !parallel.collect => fields
            .iter()
            .filter(|f| matches!(f.value.kind, ExprKind::AwaitApproval { .. }))
            .map(|f| f.name.name.clone())
            .collect(),
        _ => Vec::new(),
    }
}

/// A constant's value, as far as a refinement looks at it.
#[derive(Clone, Copy)]
enum ConstantValue<'a> {
    Int(i64),
    Float(f64),
    Text(&'a str),
    Items(usize),
}

/// A branch that never completes (it always fails) still has a result type to describe.
fn branch_value(ty: Type) -> Type {
    match ty {
        Type::Never => Type::Unit,
        other => other,
    }
}

/// The span of the keyword `word` that starts `span` (`retry` of a `retry … { … }`).
fn keyword(span: Span, word: &str) -> Span {
    let start = span.start as usize;
    Span::new(start, (start + word.len()).min(span.end as usize))
}

fn int_constant(expr: &ast::Expr) -> Option<i64> {
    match &expr.kind {
        ExprKind::Int(value) => Some(*value),
        ExprKind::Unary {
            op: UnaryOp::Neg,
            operand,
        } => int_constant(operand).and_then(i64::checked_neg),
        _ => None,
    }
}

/// The milliseconds of a duration literal, possibly negated.
fn duration_constant(expr: &ast::Expr) -> Option<i128> {
    match &expr.kind {
        ExprKind::Duration(ms) => Some(i128::from(*ms)),
        ExprKind::Unary {
            op: UnaryOp::Neg,
            operand,
        } => duration_constant(operand).map(|v| -v),
        _ => None,
    }
}

/// Joins the flow of a branch that went through an approval (`approved_side`) with one
/// that may not have (`other_side`). When the other side merely carries the witness it had
/// before the branch, the branch point itself is the better explanation: it is where the
/// path that skips the approval splits off.
fn explain_join(
    entry: &Flow,
    approved_side: Flow,
    other_side: Flow,
    branch_span: Span,
    message: &str,
) -> Flow {
    let inherited = matches!(&other_side, Flow::NotApproved(_)) && other_side == *entry;
    if approved_side == Flow::Approved && inherited {
        return Flow::not_approved(branch_span, message);
    }
    approved_side.join(other_side)
}

fn bool_literal(expr: &ast::Expr) -> Option<bool> {
    match expr.kind {
        ExprKind::Bool(value) => Some(value),
        _ => None,
    }
}

/// Conditions whose truth the flow analysis can use (`d.approved`, `!ok`, `a && b`, …).
fn is_condition_shaped(expr: &ast::Expr) -> bool {
    match &expr.kind {
        ExprKind::Field { name, .. } => name.name == "approved",
        ExprKind::Unary {
            op: UnaryOp::Not,
            operand,
        } => is_condition_shaped(operand),
        ExprKind::Binary {
            op: BinaryOp::And | BinaryOp::Or,
            lhs,
            rhs,
        } => is_condition_shaped(lhs) || is_condition_shaped(rhs),
        ExprKind::Binary {
            op: BinaryOp::Eq | BinaryOp::NotEq,
            lhs,
            rhs,
        } => {
            (bool_literal(lhs).is_some() && is_condition_shaped(rhs))
                || (bool_literal(rhs).is_some() && is_condition_shaped(lhs))
        }
        _ => false,
    }
}

/// The variable at the root of an assignment target (`x` in `x.a.b = …`).
fn assignment_root(target: &ast::Expr) -> Option<(&str, Span)> {
    match &target.kind {
        ExprKind::Name(name) => Some((name, target.span)),
        ExprKind::Field { base, .. } => assignment_root(base),
        _ => None,
    }
}

fn param_list(checker: &BodyChecker, params: &[super::ParamDef]) -> String {
    params
        .iter()
        .map(|p| format!("{}: {}", p.name, p.ty.display(&checker.checked.types)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn builtin_signature(builtin: stdlib::Builtin) -> String {
    let params: Vec<String> = builtin
        .params()
        .iter()
        .map(|p| format!("{}: {}", p.name, show_stdlib(p.ty)))
        .collect();
    format!("{}({})", builtin.name(), params.join(", "))
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

/// What a block can raise by name, read off its code: the errors it `fail`s with, those its
/// tools declare (`raises … on …`), and the workflows it calls (whose own errors reach it).
/// `named` is `None` when it can raise anything (`fail e` of a caught error).
pub(crate) struct DirectRaises {
    pub named: Option<Vec<String>>,
    pub children: Vec<usize>,
}

pub(crate) fn direct_raises(
    scope: &FileScope,
    checked: &Checked,
    block: &ast::Block,
) -> DirectRaises {
    let raised = std::cell::RefCell::new(Vec::<String>::new());
    let children = std::cell::RefCell::new(Vec::<usize>::new());
    let anything = std::cell::Cell::new(false);
    let add = |name: &str| {
        if !raised.borrow().iter().any(|r| r == name) {
            raised.borrow_mut().push(name.to_string());
        }
    };
    crate::testing::walk_block(
        block,
        &mut |stmt| {
            if let StmtKind::Fail(value) = &stmt.kind {
                match &value.kind {
                    ExprKind::Call { callee, .. } => match &callee.kind {
                        ExprKind::Name(name) => add(name),
                        _ => anything.set(true),
                    },
                    ExprKind::Str(_) => {}
                    _ => anything.set(true),
                }
            }
        },
        &mut |expr| {
            if let ExprKind::Call { callee, .. } = &expr.kind
                && let ExprKind::Name(name) = &callee.kind
            {
                for (value, _) in scope.lookup_values(name) {
                    match value {
                        Value::Tool(i) => {
                            for (error, _) in &checked.tools[*i].raises {
                                add(&checked.errors[*error].name);
                            }
                        }
                        Value::Workflow(w) if !children.borrow().contains(w) => {
                            children.borrow_mut().push(*w);
                        }
                        _ => {}
                    }
                }
            }
        },
    );
    DirectRaises {
        named: (!anything.get()).then(|| raised.into_inner()),
        children: children.into_inner(),
    }
}
