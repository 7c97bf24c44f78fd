//! Workflow tests: `test "name" { … }` blocks in, the plan a test runner follows and the
//! helper workflows their expressions compile to out.
//!
//! Every expression in a test (a mock's answer, a workflow's argument, an expected result)
//! becomes a small helper workflow with no name in any scope, type-checked like any other
//! workflow against the type its place calls for (the tool's result, the parameter's type, …)
//! and lowered into the test build of the program. The runner evaluates them on the same
//! interpreter that runs the workflows, so a test means what the language means. Production
//! builds leave the helpers out: they are numbered after every real workflow.

use crate::diagnostics::{Diagnostic, codes};
use crate::span::{FileId, Span};
use crate::syntax::ast::{self, Expr, ExprKind, Stmt, StmtKind, TestStepKind};

/// One `test` block, as the runner follows it.
#[derive(Clone, Debug)]
pub struct TestCase {
    pub name: String,
    pub file: FileId,
    /// The test's name in quotes.
    pub span: Span,
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug)]
pub struct Step {
    pub span: Span,
    pub action: Action,
    /// `… in r1`: the named run the step is about; `None`: the run of the last `start`.
    pub run: Option<String>,
}

/// What a step does. `helper` names a helper workflow of the test build.
#[derive(Clone, Debug)]
pub enum Action {
    Mock {
        tool: String,
        answer: MockAnswer,
        /// How many calls this answer serves; `None`: every call from now on.
        times: Option<u32>,
    },
    /// Starts the workflow as `by` (default `test`), naming the run `name` when given.
    Start {
        name: Option<String>,
        workflow: String,
        input: StartInput,
        by: Option<String>,
    },
    /// With `fields`: a helper computing a record whose fields the gate's view must hold.
    ExpectGate {
        input: bool,
        gate: String,
        fields: Option<String>,
    },
    Decide {
        approve: bool,
        gate: Option<String>,
        user: String,
        comment: Option<String>,
        refused: bool,
    },
    Provide {
        gate: String,
        user: String,
        value: String,
        refused: bool,
    },
    /// Sends signal `name` as `user`, with the value a helper computes (none: no value).
    Signal {
        name: String,
        user: String,
        value: Option<String>,
        refused: bool,
    },
    Advance {
        ms: u64,
    },
    /// Cancels the run, running its undo blocks and `on cancel` first when `compensate`.
    Cancel {
        compensate: bool,
    },
    /// `helper(result) -> Bool`; `expected` is the check as written.
    ExpectResult {
        helper: String,
        expected: String,
    },
    /// `helper(value) -> Bool` on the value of query `query` of the run.
    ExpectQuery {
        query: String,
        helper: String,
        expected: String,
    },
    ExpectError {
        kind: String,
        message: Option<String>,
    },
    ExpectCalled {
        tool: String,
        negated: bool,
        times: Option<u32>,
        /// One helper per argument.
        args: Option<Vec<String>>,
    },
    /// Calls made in this order, other calls allowed between them.
    ExpectCallOrder {
        calls: Vec<ExpectedCall>,
    },
    /// With `fields`: a helper computing a record whose fields the event must hold.
    ExpectAudit {
        event: String,
        fields: Option<String>,
    },
    ExpectEscalated {
        gate: String,
    },
    /// With `fields`: a helper computing a record whose fields the gate's message must hold.
    ExpectNotified {
        gate: String,
        fields: Option<String>,
    },
    ExpectStatus {
        status: String,
    },
}

/// A run's input.
#[derive(Clone, Debug)]
pub enum StartInput {
    /// One helper per argument.
    Args(Vec<String>),
    /// JSON text, checked against the parameters when the run starts (as `flowrt run` does).
    Json(String),
    /// A JSON file: the path as written, relative to the test's file.
    JsonFile(String),
}

/// A call of `expect called in order`: the tool, and one helper per argument when written.
#[derive(Clone, Debug)]
pub struct ExpectedCall {
    pub tool: String,
    pub args: Option<Vec<String>>,
}

#[derive(Clone, Debug)]
pub enum MockAnswer {
    /// The helper computes the answer; from the call's arguments when `with_args`.
    Returns { helper: String, with_args: bool },
    /// Raw JSON text, validated like a real tool's answer.
    Replies(String),
    Fails {
        kind: String,
        /// What the service said (an HTTP body, a command's standard error), if written.
        message: Option<String>,
        retryable: bool,
    },
}

/// What type a helper workflow's parameters and result take, found by the checker once the
/// names of tools and workflows are resolved.
#[derive(Clone, Debug)]
pub enum HelperRole {
    /// The tool's result (a mock's answer); with `params`, from the tool's arguments.
    ToolResult {
        tool: ast::Ident,
        params: Option<Vec<ast::Ident>>,
    },
    ToolArg {
        tool: ast::Ident,
        index: usize,
    },
    WorkflowArg {
        workflow: ast::Ident,
        index: usize,
    },
    /// `(result: <the workflow's result>) -> Bool`.
    ResultCheck {
        workflow: ast::Ident,
    },
    /// `(result: <the query's type>) -> Bool`.
    QueryCheck {
        workflow: ast::Ident,
        query: ast::Ident,
    },
    /// Fields an audit event or a notification must hold: whatever record the test writes.
    AuditFields,
    /// The type `T` of `await input<T> "gate"`.
    InputValue {
        gate: String,
        span: Span,
        /// `expect refused provide input …`: the value may break the type's refinements (that
        /// is what is refused), so it is typed without them.
        refused: bool,
    },
    /// The type of signal `signal` of the workflow the step's run runs.
    SignalValue {
        workflow: ast::Ident,
        signal: ast::Ident,
        /// `expect refused signal …`: typed without refinements, like a refused input.
        refused: bool,
    },
}

/// A tool or workflow a step names.
#[derive(Clone, Debug)]
pub struct NameRef {
    pub name: ast::Ident,
    pub kind: RefKind,
    /// How many arguments the step gives it, and where they are.
    pub args: Option<(usize, Span)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefKind {
    Tool,
    Workflow,
    /// A named error (`expect error OutOfStock`).
    Error,
}

/// A helper workflow: a name no one can write, its role and its body.
#[derive(Clone, Debug)]
pub struct Helper {
    pub role: HelperRole,
    pub decl: ast::WorkflowDecl,
}

pub const STATUSES: [&str; 4] = ["completed", "failed", "waiting", "cancelled"];
pub const MOCK_FAILURES: [&str; 3] = ["ToolError", "InvalidOutput", "Timeout"];

/// The tests of one file, their helpers, and what is wrong with their structure (names and
/// types are checked later, with the rest of the program).
#[derive(Default)]
pub struct Desugared {
    pub tests: Vec<TestCase>,
    pub helpers: Vec<Helper>,
    pub references: Vec<NameRef>,
    pub diagnostics: Vec<Diagnostic>,
}

pub fn desugar(file: FileId, module: &ast::Module, src: &str) -> Desugared {
    let mut out = Desugared::default();
    let mut seen: Vec<(&str, Span)> = Vec::new();
    for item in &module.items {
        let ast::Item::Test(test) = item else {
            continue;
        };
        if let Some((_, first)) = seen.iter().find(|(n, _)| *n == &*test.name.value) {
            out.diagnostics.push(
                invalid(file, test.name.span, "a second test with this name")
                    .with_message(format!("Two tests are named \"{}\"", test.name.value))
                    .with_label(file, *first, "the first one")
                    .with_help(
                        "give each test a name of its own: the runner reports tests by name",
                    ),
            );
        }
        seen.push((&test.name.value, test.name.span));
        let case = Desugarer {
            file,
            src,
            out: &mut out,
            started: None,
            named: Vec::new(),
        }
        .test(test);
        out.tests.push(case);
    }
    out
}

fn invalid(file: FileId, span: Span, label: impl Into<String>) -> Diagnostic {
    Diagnostic::error(codes::INVALID_TEST_STEP, file, span, label)
}

struct Desugarer<'a> {
    file: FileId,
    src: &'a str,
    out: &'a mut Desugared,
    /// The workflow of the last `start`.
    started: Option<ast::Ident>,
    /// The runs named with `let r = start …`: name, workflow, where it was named.
    named: Vec<(String, ast::Ident, Span)>,
}

impl Desugarer<'_> {
    fn test(&mut self, test: &ast::TestDecl) -> TestCase {
        let steps = test
            .steps
            .iter()
            .filter_map(|step| {
                let run = self.run_selector(step)?;
                let action = self.step(step, run.as_ref())?;
                Some(Step {
                    span: step.span,
                    action,
                    run: run.map(|(name, _)| name),
                })
            })
            .collect();
        TestCase {
            name: test.name.value.to_string(),
            file: self.file,
            span: test.name.span,
            steps,
        }
    }

    fn helper(&mut self, role: HelperRole, params: Vec<ast::Ident>, body: ast::Block) -> String {
        let name = format!("test#{}#{}", self.file.0, self.out.helpers.len());
        let params = params
            .into_iter()
            .map(|ident| ast::Field {
                doc: None,
                span: ident.span,
                ty: ast::TypeExpr {
                    kind: ast::TypeExprKind::Error,
                    span: ident.span,
                },
                name: ident,
            })
            .collect();
        let decl = ast::WorkflowDecl {
            doc: None,
            name: ast::Ident {
                name: name.clone().into(),
                span: body.span,
            },
            params,
            ret: None,
            accepts: Vec::new(),
            raises: Vec::new(),
            span: body.span,
            body,
        };
        self.out.helpers.push(Helper { role, decl });
        name
    }

    fn expr_helper(&mut self, role: HelperRole, params: Vec<ast::Ident>, expr: &Expr) -> String {
        let body = expr_block(expr.clone());
        self.helper(role, params, body)
    }

    /// The run named by a step's `in r1` (its name and workflow): `Some(None)` without one,
    /// `None` after an error (an unknown name, or a step about no run in particular).
    #[allow(clippy::option_option)]
    fn run_selector(&mut self, step: &ast::TestStep) -> Option<Option<(String, ast::Ident)>> {
        let Some(name) = &step.run else {
            return Some(None);
        };
        let about_a_run = matches!(
            step.kind,
            TestStepKind::ExpectGate { .. }
                | TestStepKind::Decide { .. }
                | TestStepKind::Provide { .. }
                | TestStepKind::Signal { .. }
                | TestStepKind::ExpectResult(_)
                | TestStepKind::ExpectQuery { .. }
                | TestStepKind::ExpectError { .. }
                | TestStepKind::ExpectStatus(_)
                | TestStepKind::ExpectAudit { .. }
                | TestStepKind::ExpectEscalated { .. }
                | TestStepKind::ExpectNotified { .. }
        );
        if !about_a_run {
            self.out.diagnostics.push(
                invalid(self.file, name.span, "this step is not about one run")
                    .with_message("`in` does not apply to this step")
                    .with_help("mocks, `start`, `advance` and the expectations about calls apply to every run of the test; leave `in …` out"),
            );
            return None;
        }
        match self.named.iter().find(|(n, _, _)| *n == name.name) {
            Some((n, workflow, _)) => Some(Some((n.clone(), workflow.clone()))),
            None => {
                let known: Vec<&str> = self.named.iter().map(|(n, _, _)| n.as_str()).collect();
                let help = match crate::diagnostics::did_you_mean(&name.name, known) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!(
                        "name a run when it starts: `let {} = start workflow(…)`",
                        name.name
                    ),
                };
                self.out.diagnostics.push(
                    invalid(self.file, name.span, "no run has this name")
                        .with_message(format!("No run named `{}`", name.name))
                        .with_help(help),
                );
                None
            }
        }
    }

    /// The workflow the step is about: the named run's, or the last `start`'s (an error at
    /// `span` when nothing was started).
    /// The body of a `(result) -> Bool` helper for `Pattern` or `== value`, and the check as
    /// written (for the report). `span` is the step's: resolutions are keyed by span.
    fn check_body(&self, check: &ast::ResultCheck, span: Span) -> (ast::Block, String) {
        let result = ast::Ident {
            name: "result".into(),
            span,
        };
        match check {
            ast::ResultCheck::Matches(pattern) => (
                match_block(result, pattern.clone(), span),
                self.src[pattern.span.range()].to_string(),
            ),
            ast::ResultCheck::Equals(expr) => {
                let compare = Expr {
                    span: expr.span,
                    kind: ExprKind::Binary {
                        op: ast::BinaryOp::Eq,
                        lhs: Box::new(Expr {
                            kind: ExprKind::Name("result".into()),
                            span,
                        }),
                        rhs: Box::new(expr.clone()),
                    },
                };
                (
                    expr_block(compare),
                    format!("== {}", &self.src[expr.span.range()]),
                )
            }
        }
    }

    fn run_workflow(
        &mut self,
        run: Option<&(String, ast::Ident)>,
        span: Span,
    ) -> Option<ast::Ident> {
        if let Some((_, workflow)) = run {
            return Some(workflow.clone());
        }
        self.started(span)
    }

    /// The workflow the last `start` started, or an error at `span`.
    fn started(&mut self, span: Span) -> Option<ast::Ident> {
        if self.started.is_none() {
            self.out.diagnostics.push(
                invalid(self.file, span, "no run has been started yet")
                    .with_message("This step needs a run")
                    .with_help("start the workflow first: `start name(arguments…)`"),
            );
        }
        self.started.clone()
    }

    fn step(&mut self, step: &ast::TestStep, run: Option<&(String, ast::Ident)>) -> Option<Action> {
        Some(match &step.kind {
            TestStepKind::Error => return None,
            TestStepKind::Mock {
                tool,
                params,
                behavior,
                times,
            } => {
                let answer = match behavior {
                    ast::MockBehavior::Returns(expr) => {
                        let role = HelperRole::ToolResult {
                            tool: tool.clone(),
                            params: params.clone(),
                        };
                        let helper =
                            self.expr_helper(role, params.clone().unwrap_or_default(), expr);
                        MockAnswer::Returns {
                            helper,
                            with_args: params.is_some(),
                        }
                    }
                    ast::MockBehavior::Replies(raw) => MockAnswer::Replies(raw.value.to_string()),
                    ast::MockBehavior::Fails {
                        kind,
                        message,
                        permanent,
                    } => {
                        // A builtin kind a tool can fail with, or (a name with a capital
                        // that is no builtin kind) a named error the tool raises.
                        let named = !flow_stdlib::ERROR_KINDS
                            .iter()
                            .any(|(k, _)| *k == kind.name)
                            && kind.name.starts_with(|c: char| c.is_uppercase());
                        if named {
                            self.reference(kind, RefKind::Error, None);
                        } else if !MOCK_FAILURES.contains(&kind.name.as_str()) {
                            self.out.diagnostics.push(
                                Diagnostic::error(
                                    codes::UNKNOWN_ERROR_KIND,
                                    self.file,
                                    kind.span,
                                    "a tool cannot fail with this kind",
                                )
                                .with_message(format!("`{}` is not a tool failure", kind.name))
                                .with_help(format!(
                                    "a tool fails with {}",
                                    MOCK_FAILURES.map(|k| format!("`{k}`")).join(", ")
                                )),
                            );
                            return None;
                        }
                        MockAnswer::Fails {
                            kind: kind.name.to_string(),
                            message: message.as_ref().map(|m| m.value.to_string()),
                            retryable: !permanent,
                        }
                    }
                };
                let args = params.as_ref().map(|p| (p.len(), step.span));
                self.reference(tool, RefKind::Tool, args);
                Action::Mock {
                    tool: tool.name.to_string(),
                    answer,
                    times: times.map(|(n, _)| n),
                }
            }
            TestStepKind::Start {
                name,
                workflow,
                input,
                by,
            } => {
                let input = match input {
                    ast::StartInput::Args(args) => {
                        let args: Vec<String> = args
                            .iter()
                            .enumerate()
                            .map(|(index, arg)| {
                                let role = HelperRole::WorkflowArg {
                                    workflow: workflow.clone(),
                                    index,
                                };
                                self.expr_helper(role, Vec::new(), arg)
                            })
                            .collect();
                        self.reference(workflow, RefKind::Workflow, Some((args.len(), step.span)));
                        StartInput::Args(args)
                    }
                    ast::StartInput::Json(text) => {
                        self.reference(workflow, RefKind::Workflow, None);
                        StartInput::Json(text.value.to_string())
                    }
                    ast::StartInput::JsonFile(path) => {
                        self.reference(workflow, RefKind::Workflow, None);
                        StartInput::JsonFile(path.value.to_string())
                    }
                };
                if let Some(name) = name {
                    self.name_run(name, workflow);
                }
                self.started = Some(workflow.clone());
                Action::Start {
                    name: name.as_ref().map(|n| n.name.to_string()),
                    workflow: workflow.name.to_string(),
                    input,
                    by: by.as_ref().map(|b| b.value.to_string()),
                }
            }
            TestStepKind::ExpectGate {
                input,
                gate,
                fields,
            } => {
                self.run_workflow(run, step.span)?;
                Action::ExpectGate {
                    input: *input,
                    gate: gate.value.to_string(),
                    fields: fields
                        .as_ref()
                        .map(|f| self.expr_helper(HelperRole::AuditFields, Vec::new(), f)),
                }
            }
            TestStepKind::Decide {
                approve,
                gate,
                user,
                comment,
                refused,
            } => {
                self.run_workflow(run, step.span)?;
                Action::Decide {
                    approve: *approve,
                    gate: gate.as_ref().map(|g| g.value.to_string()),
                    user: user.value.to_string(),
                    comment: comment.as_ref().map(|c| c.value.to_string()),
                    refused: *refused,
                }
            }
            TestStepKind::Provide {
                gate,
                user,
                value,
                refused,
            } => {
                self.run_workflow(run, step.span)?;
                let role = HelperRole::InputValue {
                    gate: gate.value.to_string(),
                    span: gate.span,
                    refused: *refused,
                };
                Action::Provide {
                    gate: gate.value.to_string(),
                    user: user.value.to_string(),
                    value: self.expr_helper(role, Vec::new(), value),
                    refused: *refused,
                }
            }
            TestStepKind::Signal {
                name,
                user,
                value,
                refused,
            } => {
                let workflow = self.run_workflow(run, step.span)?;
                let value = value.as_ref().map(|value| {
                    let role = HelperRole::SignalValue {
                        workflow,
                        signal: name.clone(),
                        refused: *refused,
                    };
                    self.expr_helper(role, Vec::new(), value)
                });
                Action::Signal {
                    name: name.name.to_string(),
                    user: user.value.to_string(),
                    value,
                    refused: *refused,
                }
            }
            TestStepKind::Cancel { compensate } => Action::Cancel {
                compensate: *compensate,
            },
            TestStepKind::Advance { by } => match by.kind {
                ExprKind::Duration(ms) => Action::Advance { ms },
                ExprKind::Error => return None,
                _ => {
                    self.out.diagnostics.push(
                        invalid(self.file, by.span, "not a duration")
                            .with_message("`advance` takes a duration")
                            .with_help(
                                "write how long to let pass, as `advance 25h` or `advance 3d`",
                            ),
                    );
                    return None;
                }
            },
            TestStepKind::ExpectResult(check) => {
                let workflow = self.run_workflow(run, step.span)?;
                let result = ast::Ident {
                    name: "result".into(),
                    span: step.span,
                };
                let (body, expected) = self.check_body(check, step.span);
                let helper = self.helper(HelperRole::ResultCheck { workflow }, vec![result], body);
                Action::ExpectResult { helper, expected }
            }
            TestStepKind::ExpectQuery { name, check } => {
                let workflow = self.run_workflow(run, step.span)?;
                let (body, expected) = self.check_body(check, step.span);
                let result = ast::Ident {
                    name: "result".into(),
                    span: step.span,
                };
                let role = HelperRole::QueryCheck {
                    workflow,
                    query: name.clone(),
                };
                let helper = self.helper(role, vec![result], body);
                Action::ExpectQuery {
                    query: name.name.to_string(),
                    helper,
                    expected,
                }
            }
            TestStepKind::ExpectError { kind, message } => {
                self.run_workflow(run, step.span)?;
                // A builtin kind, or a named error the checker finds in the file's scope.
                if !flow_stdlib::ERROR_KINDS
                    .iter()
                    .any(|(k, _)| *k == kind.name)
                {
                    self.reference(kind, RefKind::Error, None);
                }
                Action::ExpectError {
                    kind: kind.name.to_string(),
                    message: message.as_ref().map(|m| m.value.to_string()),
                }
            }
            TestStepKind::ExpectCalled {
                tool,
                negated,
                times,
                args,
            } => {
                let args = self.call_args(tool, args.as_deref(), step.span);
                Action::ExpectCalled {
                    tool: tool.name.to_string(),
                    negated: *negated,
                    times: times.map(|(n, _)| n),
                    args,
                }
            }
            TestStepKind::ExpectCallOrder { calls } => Action::ExpectCallOrder {
                calls: calls
                    .iter()
                    .map(|call| ExpectedCall {
                        tool: call.tool.name.to_string(),
                        args: self.call_args(&call.tool, call.args.as_deref(), step.span),
                    })
                    .collect(),
            },
            TestStepKind::ExpectAudit { event, fields } => Action::ExpectAudit {
                event: event.value.to_string(),
                fields: fields
                    .as_ref()
                    .map(|f| self.expr_helper(HelperRole::AuditFields, Vec::new(), f)),
            },
            TestStepKind::ExpectEscalated { gate } => Action::ExpectEscalated {
                gate: gate.value.to_string(),
            },
            TestStepKind::ExpectNotified { gate, fields } => Action::ExpectNotified {
                gate: gate.value.to_string(),
                fields: fields
                    .as_ref()
                    .map(|f| self.expr_helper(HelperRole::AuditFields, Vec::new(), f)),
            },
            TestStepKind::ExpectStatus(status) => {
                if !STATUSES.contains(&status.name.as_str()) {
                    self.out.diagnostics.push(
                        invalid(self.file, status.span, "not a run status")
                            .with_message(format!("`{}` is not a run status", status.name))
                            .with_help("a run is `completed`, `failed`, `waiting` or `cancelled`"),
                    );
                    return None;
                }
                Action::ExpectStatus {
                    status: status.name.to_string(),
                }
            }
        })
    }

    /// Names a run (`let r1 = start …`); a name is given once per test.
    fn name_run(&mut self, name: &ast::Ident, workflow: &ast::Ident) {
        if let Some((_, _, first)) = self.named.iter().find(|(n, _, _)| *n == name.name) {
            let first = *first;
            self.out.diagnostics.push(
                invalid(self.file, name.span, "a second run with this name")
                    .with_message(format!("Two runs are named `{}`", name.name))
                    .with_label(self.file, first, "the first one")
                    .with_help("give each run of a test a name of its own"),
            );
            return;
        }
        self.named
            .push((name.name.to_string(), workflow.clone(), name.span));
    }

    /// One helper per argument of an expected call of `tool` (typed as its parameters), and
    /// the reference to the tool.
    fn call_args(
        &mut self,
        tool: &ast::Ident,
        args: Option<&[Expr]>,
        span: Span,
    ) -> Option<Vec<String>> {
        let args = args.map(|args| {
            args.iter()
                .enumerate()
                .map(|(index, arg)| {
                    let role = HelperRole::ToolArg {
                        tool: tool.clone(),
                        index,
                    };
                    self.expr_helper(role, Vec::new(), arg)
                })
                .collect::<Vec<_>>()
        });
        let count = args.as_ref().map(|a| (a.len(), span));
        self.reference(tool, RefKind::Tool, count);
        args
    }

    /// Records a tool or workflow named by a step, with the number of arguments the step
    /// gives it (when it gives any), for the checker to resolve.
    fn reference(&mut self, name: &ast::Ident, kind: RefKind, args: Option<(usize, Span)>) {
        self.out.references.push(NameRef {
            name: name.clone(),
            kind,
            args,
        });
    }
}

fn expr_block(expr: Expr) -> ast::Block {
    ast::Block {
        span: expr.span,
        stmts: vec![Stmt {
            span: expr.span,
            kind: StmtKind::Expr(expr),
        }],
    }
}

/// `match result { pattern => true, _ => false }` (without the `_` arm when the pattern
/// matches everything).
fn match_block(result: ast::Ident, pattern: ast::Pattern, span: Span) -> ast::Block {
    let boolean = |value: bool, span: Span| Expr {
        kind: ExprKind::Bool(value),
        span,
    };
    // A bare name may be a unit variant (`Dropped`) or a binding: only `_` surely matches
    // everything. (The `_` arm after a binding is unreachable; warnings in tests are not
    // reported, see `program.rs`.)
    let catch_all = matches!(pattern.kind, ast::PatternKind::Wildcard);
    let pattern_span = pattern.span;
    let mut arms = vec![ast::MatchArm {
        body: boolean(true, pattern_span),
        span: pattern_span,
        pattern,
    }];
    if !catch_all {
        arms.push(ast::MatchArm {
            pattern: ast::Pattern {
                kind: ast::PatternKind::Wildcard,
                span: pattern_span,
            },
            body: boolean(false, pattern_span),
            span: pattern_span,
        });
    }
    expr_block(Expr {
        span,
        kind: ExprKind::Match {
            scrutinee: Box::new(Expr {
                kind: ExprKind::Name(result.name),
                span: result.span,
            }),
            arms,
        },
    })
}

/// Where an expression in a test would perform a step of a workflow (call a tool or a
/// workflow, wait, sleep, audit, read the clock): test expressions compute values only.
pub fn first_effect(block: &ast::Block, is_step: &dyn Fn(&str) -> bool) -> Option<Span> {
    let first: std::cell::Cell<Option<Span>> = std::cell::Cell::new(None);
    let note = |span: Span| {
        if first.get().is_none() {
            first.set(Some(span));
        }
    };
    walk_block(
        block,
        &mut |stmt| {
            if matches!(
                stmt.kind,
                StmtKind::Sleep(_)
                    | StmtKind::Audit { .. }
                    | StmtKind::Waive(_)
                    | StmtKind::ContinueAs { .. }
                    | StmtKind::Compensate
                    | StmtKind::LetUndo { .. }
                    | StmtKind::OnCancel(_)
            ) {
                note(stmt.span);
            }
        },
        &mut |expr| match &expr.kind {
            ExprKind::AwaitApproval { .. }
            | ExprKind::AwaitInput { .. }
            | ExprKind::AwaitSignal { .. }
            | ExprKind::Select { .. }
            | ExprKind::Parallel(_)
            | ExprKind::Retry { .. }
            | ExprKind::Timeout { .. } => note(expr.span),
            ExprKind::Call { callee, .. } => {
                if let ExprKind::Name(name) = &callee.kind
                    && is_step(name)
                {
                    note(expr.span);
                }
            }
            _ => {}
        },
    );
    first.get()
}

/// The first assignment in `block` to one of `outer` (variables declared outside it), or to
/// a field of one.
pub fn first_assignment_to(block: &ast::Block, outer: &[String]) -> Option<Span> {
    let first: std::cell::Cell<Option<Span>> = std::cell::Cell::new(None);
    // Names the block itself declares shadow the outer ones from there on.
    let own: std::cell::RefCell<Vec<String>> = std::cell::RefCell::new(Vec::new());
    walk_block(
        block,
        &mut |stmt| match &stmt.kind {
            StmtKind::Let { name, .. } | StmtKind::LetUndo { name, .. } => {
                own.borrow_mut().push(name.name.to_string())
            }
            StmtKind::Assign { target, .. } => {
                let mut base = target;
                while let ExprKind::Field { base: inner, .. }
                | ExprKind::Index { base: inner, .. } = &base.kind
                {
                    base = inner;
                }
                if let ExprKind::Name(name) = &base.kind
                    && outer.iter().any(|o| o.as_str() == name.as_str())
                    && !own.borrow().iter().any(|o| o.as_str() == name.as_str())
                    && first.get().is_none()
                {
                    first.set(Some(stmt.span));
                }
            }
            _ => {}
        },
        &mut |_| {},
    );
    first.get()
}

/// Every `await input<T> "gate"` of a block, wherever it stands (a `catch` block, the right
/// of `??`, a call's arguments, …): their types, in source order.
pub fn inputs_named<'a>(block: &'a ast::Block, gate: &str, found: &mut Vec<&'a ast::TypeExpr>) {
    walk_block(block, &mut |_| {}, &mut |expr| {
        if let ExprKind::AwaitInput { ty, name, .. } = &expr.kind
            && &*name.value == gate
        {
            found.push(ty);
        }
    });
}

/// Calls `on_stmt` with every statement and `on_expr` with every expression of a block,
/// each before what it holds, in source order. The matches are exhaustive, so a new kind of
/// statement or expression has to say what it holds before anything compiles.
pub fn walk_block<'a>(
    block: &'a ast::Block,
    on_stmt: &mut dyn FnMut(&'a Stmt),
    on_expr: &mut dyn FnMut(&'a Expr),
) {
    for stmt in &block.stmts {
        walk_stmt(stmt, on_stmt, on_expr);
    }
}

fn walk_stmt<'a>(
    stmt: &'a Stmt,
    on_stmt: &mut dyn FnMut(&'a Stmt),
    on_expr: &mut dyn FnMut(&'a Expr),
) {
    on_stmt(stmt);
    match &stmt.kind {
        StmtKind::Let { value, .. } => walk_expr(value, on_stmt, on_expr),
        StmtKind::LetUndo { value, undo, .. } => {
            walk_expr(value, on_stmt, on_expr);
            walk_block(undo, on_stmt, on_expr);
        }
        StmtKind::OnCancel(block) => walk_block(block, on_stmt, on_expr),
        StmtKind::Assign { target, value } => {
            walk_expr(target, on_stmt, on_expr);
            walk_expr(value, on_stmt, on_expr);
        }
        StmtKind::Expr(e) | StmtKind::Fail(e) | StmtKind::Sleep(e) | StmtKind::Return(Some(e)) => {
            walk_expr(e, on_stmt, on_expr)
        }
        StmtKind::While { cond: e, body } => {
            walk_expr(e, on_stmt, on_expr);
            walk_block(body, on_stmt, on_expr);
        }
        StmtKind::For { iter: e, body, .. } => {
            walk_expr(e, on_stmt, on_expr);
            walk_block(body, on_stmt, on_expr);
        }
        StmtKind::Query { body, .. } => walk_block(body, on_stmt, on_expr),
        StmtKind::Audit { fields, .. } => {
            for field in fields {
                walk_expr(&field.value, on_stmt, on_expr);
            }
        }
        StmtKind::Waive(waiver) => {
            for field in &waiver.fields {
                walk_expr(&field.value, on_stmt, on_expr);
            }
        }
        StmtKind::ContinueAs { args, .. } => {
            for arg in args {
                walk_expr(arg, on_stmt, on_expr);
            }
        }
        StmtKind::Return(None)
        | StmtKind::Break
        | StmtKind::Continue
        | StmtKind::Compensate
        | StmtKind::Error => {}
    }
}

fn walk_expr<'a>(
    expr: &'a Expr,
    on_stmt: &mut dyn FnMut(&'a Stmt),
    on_expr: &mut dyn FnMut(&'a Expr),
) {
    on_expr(expr);
    let mut each = |e: &'a Expr| walk_expr(e, on_stmt, on_expr);
    match &expr.kind {
        ExprKind::Str(parts) => {
            for part in parts {
                if let ast::StrPart::Interpolation(e) = part {
                    each(e);
                }
            }
        }
        ExprKind::List(items) => items.iter().for_each(each),
        ExprKind::Record(fields) => fields.iter().for_each(|f| each(&f.value)),
        ExprKind::Field { base, .. } | ExprKind::Unary { operand: base, .. } => each(base),
        ExprKind::Index { base: a, index: b } | ExprKind::Binary { lhs: a, rhs: b, .. } => {
            each(a);
            each(b);
        }
        ExprKind::Call { callee, args } => {
            each(callee);
            args.iter().for_each(each);
        }
        ExprKind::If {
            cond,
            then_block,
            else_branch,
        } => {
            walk_expr(cond, on_stmt, on_expr);
            walk_block(then_block, on_stmt, on_expr);
            if let Some(e) = else_branch {
                walk_expr(e, on_stmt, on_expr);
            }
        }
        ExprKind::Match { scrutinee, arms } => {
            each(scrutinee);
            arms.iter().for_each(|a| each(&a.body));
        }
        ExprKind::Select { arms } => {
            for arm in arms {
                match &arm.kind {
                    ast::SelectArmKind::After { duration } => each(duration),
                    ast::SelectArmKind::Wait { wait, .. } => each(wait),
                    ast::SelectArmKind::Signal { .. } => {}
                }
                each(&arm.body);
            }
        }
        ExprKind::Parallel(parallel) => match &parallel.branches {
            ast::ParallelBranches::Each {
                items, max, body, ..
            } => {
                walk_expr(items, on_stmt, on_expr);
                if let Some(max) = max {
                    walk_expr(max, on_stmt, on_expr);
                }
                walk_block(body, on_stmt, on_expr);
            }
            ast::ParallelBranches::Fields(fields) => fields
                .iter()
                .for_each(|f| walk_expr(&f.value, on_stmt, on_expr)),
        },
        ExprKind::Block(block) => walk_block(block, on_stmt, on_expr),
        ExprKind::Retry { policies, body, .. } => {
            for e in policies.iter().flat_map(|p| p.exprs()) {
                walk_expr(e, on_stmt, on_expr);
            }
            walk_block(body, on_stmt, on_expr);
        }
        ExprKind::Timeout { duration, body } => {
            walk_expr(duration, on_stmt, on_expr);
            walk_block(body, on_stmt, on_expr);
        }
        ExprKind::Try { body, catches } => {
            walk_block(body, on_stmt, on_expr);
            for catch in catches {
                walk_block(&catch.handler, on_stmt, on_expr);
            }
        }
        ExprKind::AwaitApproval { options, .. } | ExprKind::AwaitInput { options, .. } => {
            for option in options {
                each(&option.value);
                if let Some(after) = &option.after {
                    each(after);
                }
            }
        }
        ExprKind::Int(_)
        | ExprKind::Float(_)
        | ExprKind::Bool(_)
        | ExprKind::None
        | ExprKind::Duration(_)
        | ExprKind::Time(_)
        | ExprKind::Name(_)
        | ExprKind::AwaitSignal { .. }
        | ExprKind::Error => {}
    }
}
