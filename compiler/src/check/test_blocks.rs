//! Checking `test` blocks: the tools and workflows their steps name, and their helper
//! workflows (see [`crate::testing`]) typed by the place each expression stands in — a mock's
//! answer as the tool's result, an argument as the parameter, `expect result` against the
//! started workflow's result. Helpers come after every workflow of the program, so the
//! program's own numbering (and its production bytecode) does not depend on its tests.

use super::{DeclChecker, ParamDef, Value, WorkflowDef, body};
use crate::check::{Checked, Resolutions, resolve_type};
use crate::diagnostics::{Diagnostic, codes, did_you_mean};
use crate::span::{FileId, Span};
use crate::syntax::{SyntaxTree, ast};
use crate::testing::{self, HelperRole, RefKind};
use crate::types::Type;

impl DeclChecker<'_> {
    /// Numbers every helper workflow after the program's own workflows.
    pub(super) fn collect_test_helpers(&mut self, trees: &[SyntaxTree]) {
        self.checked.program_workflows = self.checked.workflows.len();
        for (index, tree) in trees.iter().enumerate() {
            for helper in &tree.tests.helpers {
                self.checked.workflows.push(WorkflowDef {
                    name: helper.decl.name.name.clone(),
                    file: FileId(index as u32),
                    span: helper.decl.name.span,
                    params: Vec::new(),
                    ret: Type::Unknown,
                    ret_span: None,
                    doc: None,
                    signals: Vec::new(),
                    queries: Vec::new(),
                    raises: Vec::new(),
                    may_raise: None,
                });
            }
        }
    }

    /// Resolves what the steps name and gives each helper its parameter and result types.
    /// Returns, per helper, whether it could be typed (one that could not is not checked:
    /// the name it depends on has been reported).
    pub(super) fn resolve_test_helpers(&mut self, trees: &[SyntaxTree]) -> Vec<bool> {
        for (index, tree) in trees.iter().enumerate() {
            let file = FileId(index as u32);
            for reference in &tree.tests.references {
                self.check_reference(file, reference);
            }
        }
        let mut typed = Vec::new();
        let mut workflow = self.checked.program_workflows;
        for (index, tree) in trees.iter().enumerate() {
            let file = FileId(index as u32);
            for helper in &tree.tests.helpers {
                let signature = self.helper_signature(trees, file, &helper.role);
                typed.push(signature.is_some());
                if let Some((params, ret)) = signature {
                    let def = &mut self.checked.workflows[workflow];
                    def.params = params;
                    def.ret = ret;
                }
                workflow += 1;
            }
        }
        typed
    }

    fn lookup(&self, file: FileId, name: &str, kind: RefKind) -> Option<usize> {
        let scope = &self.checked.scopes[file.0 as usize];
        scope
            .lookup_values(name)
            .iter()
            .find_map(|(value, origin)| match (value, kind) {
                (Value::Tool(i), RefKind::Tool) | (Value::Workflow(i), RefKind::Workflow) => {
                    scope.note_use(*origin);
                    Some(*i)
                }
                _ => None,
            })
    }

    fn check_reference(&mut self, file: FileId, reference: &testing::NameRef) {
        let name = &reference.name;
        if reference.kind == RefKind::Error {
            return self.check_error_reference(file, name);
        }
        let what = match reference.kind {
            RefKind::Tool => "tool",
            RefKind::Workflow | RefKind::Error => "workflow",
        };
        let Some(index) = self.lookup(file, &name.name, reference.kind) else {
            let candidates: Vec<&str> = match reference.kind {
                RefKind::Tool => self.checked.tools.iter().map(|t| t.name.as_str()).collect(),
                RefKind::Workflow | RefKind::Error => self.checked.workflows
                    [..self.checked.program_workflows]
                    .iter()
                    .map(|w| w.name.as_str())
                    .collect(),
            };
            let mut diagnostic = Diagnostic::error(
                codes::UNKNOWN_NAME,
                file,
                name.span,
                format!("no {what} has this name"),
            )
            .with_message(format!("Unknown {what} `{}`", name.name));
            diagnostic = match did_you_mean(&name.name, candidates) {
                Some(s) => diagnostic.with_help(format!("did you mean `{s}`?")),
                None => diagnostic.with_help(format!(
                    "a test names the {what}s of its file and of the files it imports"
                )),
            };
            self.diagnostics.push(diagnostic);
            return;
        };
        let Some((given, _)) = reference.args else {
            return;
        };
        let wanted = match reference.kind {
            RefKind::Tool => self.checked.tools[index].params.len(),
            RefKind::Workflow | RefKind::Error => self.checked.workflows[index].params.len(),
        };
        if given != wanted {
            self.diagnostics.push(
                Diagnostic::error(
                    codes::WRONG_ARGUMENT_COUNT,
                    file,
                    name.span,
                    format!("expected {wanted} argument(s), found {given}"),
                )
                .with_message(format!("Wrong number of arguments for `{}`", name.name))
                .with_help("give one value per parameter, in the declared order"),
            );
        }
    }

    /// `expect error Name`: a builtin kind (checked when the test was read) or a named error
    /// this file can see.
    fn check_error_reference(&mut self, file: FileId, name: &crate::syntax::ast::Ident) {
        let scope = &self.checked.scopes[file.0 as usize];
        if scope
            .lookup_type(&name.name)
            .is_some_and(|ty| self.checked.error_of(ty).is_some())
        {
            return;
        }
        let kinds: Vec<&str> = flow_stdlib::ERROR_KINDS
            .iter()
            .map(|(k, _)| *k)
            .chain(self.checked.errors.iter().map(|e| e.name.as_str()))
            .collect();
        let help = match did_you_mean(&name.name, kinds.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!(
                "the error kinds are {}",
                kinds
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        self.diagnostics.push(
            Diagnostic::error(
                codes::UNKNOWN_ERROR_KIND,
                file,
                name.span,
                "not an error kind",
            )
            .with_message(format!("`{}` is not an error kind", name.name))
            .with_help(help),
        );
    }

    fn helper_signature(
        &mut self,
        trees: &[SyntaxTree],
        file: FileId,
        role: &HelperRole,
    ) -> Option<(Vec<ParamDef>, Type)> {
        match role {
            HelperRole::ToolResult { tool, params } => {
                let tool = &self.checked.tools[self.lookup(file, &tool.name, RefKind::Tool)?];
                let params = params
                    .iter()
                    .flatten()
                    .zip(&tool.params)
                    .map(|(name, param)| ParamDef {
                        name: name.name.clone(),
                        ty: param.ty.clone(),
                        span: name.span,
                    })
                    .collect();
                Some((params, tool.ret.clone()))
            }
            HelperRole::ToolArg { tool, index } => {
                let tool = &self.checked.tools[self.lookup(file, &tool.name, RefKind::Tool)?];
                Some((Vec::new(), tool.params.get(*index)?.ty.clone()))
            }
            HelperRole::WorkflowArg { workflow, index } => {
                let index_of = self.lookup(file, &workflow.name, RefKind::Workflow)?;
                let def = &self.checked.workflows[index_of];
                Some((Vec::new(), def.params.get(*index)?.ty.clone()))
            }
            HelperRole::ResultCheck { workflow } => {
                let index_of = self.lookup(file, &workflow.name, RefKind::Workflow)?;
                let ret = self.checked.workflows[index_of].ret.clone();
                let result = ParamDef {
                    name: "result".into(),
                    ty: ret,
                    span: workflow.span,
                };
                Some((vec![result], Type::Bool))
            }
            HelperRole::QueryCheck { workflow, query } => {
                let def = &self.checked.workflows
                    [self.lookup(file, &workflow.name, RefKind::Workflow)?];
                let Some((_, ty)) = def.queries.iter().find(|(n, _)| *n == query.name) else {
                    let names: Vec<String> =
                        def.queries.iter().map(|(n, _)| format!("`{n}`")).collect();
                    let help = if names.is_empty() {
                        format!(
                            "`{}` has no queries: declare one with `query name -> Type {{ … }}`",
                            def.name
                        )
                    } else {
                        format!("`{}` has {}", def.name, names.join(", "))
                    };
                    self.diagnostics.push(
                        Diagnostic::error(
                            codes::INVALID_TEST_STEP,
                            file,
                            query.span,
                            "not a query of the run's workflow",
                        )
                        .with_message(format!("`{}` has no query `{}`", def.name, query.name))
                        .with_help(help),
                    );
                    return None;
                };
                let result = ParamDef {
                    name: "result".into(),
                    ty: ty.clone(),
                    span: query.span,
                };
                Some((vec![result], Type::Bool))
            }
            HelperRole::AuditFields => Some((Vec::new(), Type::Unknown)),
            HelperRole::SignalValue {
                workflow,
                signal,
                refused,
            } => {
                let def = &self.checked.workflows
                    [self.lookup(file, &workflow.name, RefKind::Workflow)?];
                match def.signals.iter().find(|s| s.name == signal.name) {
                    Some(accepted) if *refused => {
                        Some((Vec::new(), accepted.ty.without_refinements()))
                    }
                    Some(accepted) => Some((Vec::new(), accepted.ty.clone())),
                    None => {
                        let names: Vec<String> = def
                            .signals
                            .iter()
                            .map(|s| format!("`{}`", s.name))
                            .collect();
                        let help = if names.is_empty() {
                            format!(
                                "`{}` accepts no signals (it has no `accepts` clause)",
                                def.name
                            )
                        } else {
                            format!("`{}` accepts {}", def.name, names.join(", "))
                        };
                        self.diagnostics.push(
                            Diagnostic::error(
                                codes::INVALID_TEST_STEP,
                                file,
                                signal.span,
                                "not a signal of the run's workflow",
                            )
                            .with_message(format!(
                                "`{}` does not accept a signal `{}`",
                                def.name, signal.name
                            ))
                            .with_help(help),
                        );
                        None
                    }
                }
            }
            HelperRole::InputValue {
                gate,
                span,
                refused,
            } => {
                let ty = self.input_type(trees, gate);
                if ty.is_none() {
                    self.diagnostics.push(
                        Diagnostic::error(
                            codes::INVALID_TEST_STEP,
                            file,
                            *span,
                            "no workflow awaits an input with this name",
                        )
                        .with_message(format!("No `await input` named \"{gate}\""))
                        .with_help(
                            "name an input the workflow waits for: `await input<T> \"name\"`",
                        ),
                    );
                }
                let ty = ty?;
                Some((
                    Vec::new(),
                    if *refused {
                        ty.without_refinements()
                    } else {
                        ty
                    },
                ))
            }
        }
    }

    /// The type of the first `await input<T> "gate"` in the program.
    fn input_type(&mut self, trees: &[SyntaxTree], gate: &str) -> Option<Type> {
        for (index, tree) in trees.iter().enumerate() {
            for item in &tree.module.items {
                let ast::Item::Workflow(workflow) = item else {
                    continue;
                };
                let mut found = Vec::new();
                testing::inputs_named(&workflow.body, gate, &mut found);
                if let Some(ty) = found.first() {
                    // The type's own mistakes are reported where it is written.
                    let mut quiet = Vec::new();
                    let file = FileId(index as u32);
                    return Some(resolve_type(&self.checked, file, ty, &mut quiet));
                }
            }
        }
        None
    }
}

/// Type-checks every helper that could be typed, after making sure it only computes.
pub(super) fn check_test_helpers(
    checked: &Checked,
    trees: &[SyntaxTree],
    typed: &[bool],
    diagnostics: &mut Vec<Diagnostic>,
    resolutions: &mut Resolutions,
) {
    let mut index = checked.program_workflows;
    let mut helper_number = 0;
    for (file_index, tree) in trees.iter().enumerate() {
        let file = FileId(file_index as u32);
        let scope = &checked.scopes[file_index];
        let is_step = |name: &str| scope.names_a_step(name);
        for helper in &tree.tests.helpers {
            let def = &checked.workflows[index];
            let ok = typed.get(helper_number).copied().unwrap_or(false);
            index += 1;
            helper_number += 1;
            if !ok {
                continue;
            }
            if let Some(span) = testing::first_effect(&helper.decl.body, &is_step) {
                diagnostics.push(effect_error(file, span));
                continue;
            }
            // A helper is one small value: it is never crowded.
            let start = diagnostics.len();
            body::check_workflow(
                checked,
                def,
                file,
                &helper.decl,
                diagnostics,
                start,
                resolutions,
            );
        }
    }
}

fn effect_error(file: FileId, span: Span) -> Diagnostic {
    Diagnostic::error(
        codes::TEST_EXPRESSION_HAS_EFFECTS,
        file,
        span,
        "this is a step of a workflow",
    )
    .with_message("A test's values cannot call tools, workflows or wait")
    .with_help("write the value itself; to script what a tool answers, use `mock tool returns …`")
}
