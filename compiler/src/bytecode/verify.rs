//! A structural check of a [`Module`]: what the interpreter relies on, proved before a run
//! starts instead of discovered in the middle of one.
//!
//! - Every operand names an existing table entry (constant, field list, type, tool, gate,
//!   local slot …), every jump lands inside the workflow, every instruction has a debug
//!   location and every workflow ends with `Return`.
//! - An abstract interpretation over each workflow follows every path and checks that the
//!   stack never underflows, that paths meeting at an instruction agree on the stack depth
//!   and on the nesting of handler and timeout regions, that `PopHandler`/`ExitTimeout`
//!   close the innermost region of their kind, that execution never falls off the end, and
//!   that `Return` always finds exactly one value on the stack.
//!
//! `flowc` runs it on everything it lowers; a runtime may run it on every artifact it loads.

use super::module::{Constant, Module, TypeDesc, TypeRef, WorkflowCode};
use super::ops::Op;

/// Values an instruction pops and pushes when it falls through to the next one. `None` when
/// an operand names something the module does not have.
///
/// Jumps are described by their fall-through: `JumpIfNotNone` pops its operand only when it
/// does not jump; `PushHandler`'s catch target starts with the error record pushed.
pub fn stack_effect(module: &Module, op: Op) -> Option<(u32, u32)> {
    Some(match op {
        Op::Const(_) | Op::LoadLocal(_) => (0, 1),
        Op::Dup => (1, 2),
        Op::Pop | Op::StoreLocal(_) => (1, 0),
        Op::MakeList(n) | Op::Concat(n) => (n, 1),
        Op::MakeRecord(list) => (len_u32(module.field_lists.get(list as usize)?.len()), 1),
        Op::MakeVariant { ty, variant } => (len_u32(variant_fields(module, ty, variant)?), 1),
        Op::GetField(_)
        | Op::GetFieldOptional(_)
        | Op::IsVariant(_)
        | Op::VariantField(_)
        | Op::IsNone
        | Op::Jitter
        | Op::Conform(_)
        | Op::Not
        | Op::Neg
        | Op::ToText => (1, 1),
        Op::Index
        | Op::Add
        | Op::Sub
        | Op::Mul
        | Op::Div
        | Op::Rem
        | Op::Eq
        | Op::NotEq
        | Op::Lt
        | Op::LtEq
        | Op::Gt
        | Op::GtEq
        | Op::SetField(_) => (2, 1),
        Op::Jump(_) | Op::PushHandler { .. } | Op::PopHandler | Op::ExitTimeout => (0, 0),
        Op::JumpIfFalse(_) | Op::JumpIfTrue(_) | Op::JumpIfNotNone(_) => (1, 0),
        Op::CallBuiltin { args, .. } => (u32::from(args), 1),
        Op::CallTool { tool } => (len_u32(module.tools.get(tool as usize)?.params.len()), 1),
        Op::CallWorkflow { workflow } => (
            len_u32(module.workflows.get(workflow as usize)?.params.len()),
            1,
        ),
        Op::ContinueAs { workflow } => (
            len_u32(module.workflows.get(workflow as usize)?.params.len()),
            0,
        ),
        Op::AwaitApproval { .. } | Op::AwaitInput { .. } => (1, 1),
        Op::AwaitSignal { .. } => (0, 1),
        Op::Select(n) => (len_u32(module.selects.get(n as usize)?.arity(module)?), 1),
        Op::Parallel(n) => (len_u32(module.parallels.get(n as usize)?.arity()), 1),
        Op::Compensate => (1, 1),
        Op::CallFunction { function } => (
            len_u32(module.functions.get(function as usize)?.params.len()),
            1,
        ),
        Op::Sleep | Op::Audit { .. } | Op::Fail | Op::Raise | Op::EnterTimeout | Op::Return => {
            (1, 0)
        }
    })
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The number of fields of variant `variant` of enum type `ty`.
fn variant_fields(module: &Module, ty: u32, variant: u32) -> Option<usize> {
    match module.type_desc(TypeRef(ty))? {
        TypeDesc::Enum { variants, .. } => Some(variants.get(variant as usize)?.1.len()),
        _ => None,
    }
}

/// A `parallel`: of this workflow, with branch workflows that exist, take the item (a
/// `parallel for`) and the captured values, are branches of no other `parallel`, and
/// number as many as its record has fields.
fn check_parallel(module: &Module, workflow: &WorkflowCode, n: u32) -> Result<(), String> {
    let Some(parallel) = module.parallels.get(n as usize) else {
        return Err(format!(
            "names parallel #{n}, but there are {}",
            module.parallels.len()
        ));
    };
    if module
        .workflows
        .get(parallel.workflow as usize)
        .map(|w| &w.name)
        != Some(&workflow.name)
    {
        return Err(format!("names parallel #{n} of another workflow"));
    }
    let expected = match parallel.fields {
        None => 1,
        Some(list) => module
            .field_lists
            .get(list as usize)
            .ok_or_else(|| format!("parallel #{n} names field list #{list}, which does not exist"))?
            .len(),
    };
    if parallel.branches.len() != expected || expected == 0 {
        return Err(format!(
            "parallel #{n} has {} branch workflow(s) for {expected} branch(es)",
            parallel.branches.len()
        ));
    }
    let item = usize::from(parallel.fields.is_none());
    for &branch in &parallel.branches {
        let Some(code) = module.workflows.get(branch as usize) else {
            return Err(format!(
                "parallel #{n} names workflow #{branch}, but there are {}",
                module.workflows.len()
            ));
        };
        if code.params.len() != item + parallel.captures as usize {
            return Err(format!(
                "parallel #{n} runs `{}`, which takes {} value(s) instead of {}",
                code.name,
                code.params.len(),
                item + parallel.captures as usize
            ));
        }
        let owners = module
            .parallels
            .iter()
            .filter(|p| p.branches.contains(&branch))
            .count();
        if owners != 1 || branch == parallel.workflow {
            return Err(format!(
                "parallel #{n} runs `{}`, which is not a branch of it alone",
                code.name
            ));
        }
    }
    Ok(())
}

/// Checks the whole module; the error names the workflow and instruction at fault.
pub fn verify(module: &Module) -> Result<(), String> {
    check_tables(module)?;
    for workflow in &module.workflows {
        check_workflow(module, workflow)
            .map_err(|e| format!("workflow `{}`: {e}", workflow.name))?;
    }
    for function in &module.functions {
        check_function(module, function)
            .map_err(|e| format!("function `{}`: {e}", function.name))?;
    }
    for query in &module.queries {
        check_query(module, query).map_err(|e| format!("query `{}`: {e}", query.name))?;
    }
    for undo in &module.undos {
        for index in [undo.workflow, undo.block] {
            if module.workflows.get(index as usize).is_none() {
                return Err(format!(
                    "an undo block names workflow #{index}, which does not exist"
                ));
            }
        }
    }
    for raise in &module.tool_raises {
        if module.tools.get(raise.tool as usize).is_none() {
            return Err(format!(
                "a tool error names tool #{}, which does not exist",
                raise.tool
            ));
        }
        if !matches!(module.type_desc(raise.error), Some(TypeDesc::Record { .. })) {
            return Err(format!(
                "a tool error of tool #{} is not a record type",
                raise.tool
            ));
        }
    }
    Ok(())
}

/// A function's code: well-formed like a workflow's, with no durable instruction (a call
/// runs to completion between two durable points of the run, outside any checkpoint) and
/// no `timeout` region (a function has no deadline of its own).
fn check_function(module: &Module, function: &crate::bytecode::FunctionCode) -> Result<(), String> {
    for (pc, op) in function.code.iter().enumerate() {
        if op.is_durable() {
            return Err(format!(
                "instruction {pc} ({op:?}) is a durable point; a function has none"
            ));
        }
        if matches!(op, Op::EnterTimeout | Op::ExitTimeout | Op::Jitter) {
            return Err(format!(
                "instruction {pc} ({op:?}) is not allowed in a function"
            ));
        }
    }
    if function.params.len() > usize::from(u16::MAX) {
        return Err("has more parameters than local slots can hold".into());
    }
    check_workflow(module, function)
}

/// A query's code: well-formed like a workflow's (on the workflow's local slots), with no
/// durable instruction (it runs on a copy of a run's state and must not change anything).
fn check_query(module: &Module, query: &crate::bytecode::QueryCode) -> Result<(), String> {
    let Some(workflow) = module.workflows.get(query.workflow as usize) else {
        return Err(format!(
            "names workflow #{}, which does not exist",
            query.workflow
        ));
    };
    if query.from_pc as usize > workflow.code.len() {
        return Err(format!(
            "starts at instruction {} of a workflow of {}",
            query.from_pc,
            workflow.code.len()
        ));
    }
    if module
        .queries
        .iter()
        .filter(|q| q.workflow == query.workflow && q.name == query.name)
        .count()
        > 1
    {
        return Err("is declared twice by one workflow".into());
    }
    check_type(module, query.ret, "the query's result")?;
    if let Some((pc, op)) = query
        .code
        .iter()
        .enumerate()
        .find(|(_, op)| op.is_durable())
    {
        return Err(format!(
            "instruction {pc} ({op:?}) is a durable point; a query only reads"
        ));
    }
    let code = WorkflowCode {
        name: workflow.name.clone(),
        params: Vec::new(),
        ret: query.ret,
        locals: workflow.locals,
        code: query.code.clone(),
        debug: query.debug.clone(),
    };
    check_workflow(module, &code)
}

fn check_type(module: &Module, ty: TypeRef, what: &str) -> Result<(), String> {
    if (ty.0 as usize) < module.types.len() {
        Ok(())
    } else {
        Err(format!(
            "{what} names type #{} of {}",
            ty.0,
            module.types.len()
        ))
    }
}

fn check_string(module: &Module, constant: u32, what: &str) -> Result<(), String> {
    match module.constants.get(constant as usize) {
        Some(Constant::Str(_)) => Ok(()),
        _ => Err(format!(
            "{what} names constant #{constant}, which is not a string"
        )),
    }
}

/// The module-level tables refer only to what exists.
fn check_tables(module: &Module) -> Result<(), String> {
    for (index, list) in module.field_lists.iter().enumerate() {
        for constant in list {
            check_string(module, *constant, &format!("field list #{index}"))?;
        }
    }
    for (index, desc) in module.types.iter().enumerate() {
        let what = format!("type #{index}");
        match desc {
            TypeDesc::List(t) | TypeDesc::Map(t) | TypeDesc::Optional(t) => {
                check_type(module, *t, &what)?
            }
            TypeDesc::Record { fields, .. } => {
                for (_, t) in fields {
                    check_type(module, *t, &what)?;
                }
            }
            TypeDesc::Enum { variants, .. } => {
                for (_, fields) in variants {
                    for (_, t) in fields {
                        check_type(module, *t, &what)?;
                    }
                }
            }
            TypeDesc::Refined { base, rule, .. } => {
                check_type(module, *base, &what)?;
                check_refined(module, *base, rule, &what)?;
            }
            _ => {}
        }
    }
    for tool in &module.tools {
        let what = format!("tool `{}`", tool.name);
        for (_, t) in &tool.params {
            check_type(module, *t, &what)?;
        }
        check_type(module, tool.ret, &what)?;
    }
    for request in &module.input_requests {
        let what = format!("input request `{}`", request.name);
        check_type(module, request.ty, &what)?;
        supplied_without_secret(module, request.ty, &what)?;
    }
    for workflow in &module.workflows {
        let what = format!("workflow `{}`", workflow.name);
        for (_, t) in &workflow.params {
            check_type(module, *t, &what)?;
        }
        check_type(module, workflow.ret, &what)?;
    }
    for context in &module.gate_contexts {
        let what = format!(
            "the gate context of workflow #{} instruction {}",
            context.workflow, context.pc
        );
        let op = module
            .workflows
            .get(context.workflow as usize)
            .and_then(|w| w.code.get(context.pc as usize));
        if !matches!(op, Some(Op::AwaitApproval { .. } | Op::AwaitInput { .. })) {
            return Err(format!("{what} names no `await` instruction"));
        }
        check_type(module, context.ty, &what)?;
    }
    for (index, signal) in module.signals.iter().enumerate() {
        let what = format!("signal `{}`", signal.name);
        if module.workflows.get(signal.workflow as usize).is_none() {
            return Err(format!(
                "{what} names workflow #{}, which does not exist",
                signal.workflow
            ));
        }
        if module.signals[..index]
            .iter()
            .any(|s| s.workflow == signal.workflow && s.name == signal.name)
        {
            return Err(format!("{what} is declared twice by one workflow"));
        }
        check_type(module, signal.ty, &what)?;
        supplied_without_secret(module, signal.ty, &what)?;
    }
    Ok(())
}

/// A refinement sits on a base it applies to (through other refinements, never itself), and
/// its pattern compiles within the size limits.
fn check_refined(
    module: &Module,
    mut base: TypeRef,
    rule: &super::Refinement,
    what: &str,
) -> Result<(), String> {
    use super::Refinement as R;
    let mut steps = 0;
    let desc = loop {
        match module.type_desc(base) {
            Some(TypeDesc::Refined { base: inner, .. }) if steps < module.types.len() => {
                base = *inner;
                steps += 1;
            }
            Some(TypeDesc::Refined { .. }) => {
                return Err(format!("{what} is refined in a circle"));
            }
            other => break other,
        }
    };
    let fits = matches!(
        (rule, desc),
        (R::IntRange { .. }, Some(TypeDesc::Int))
            | (R::FloatRange { .. }, Some(TypeDesc::Float))
            | (
                R::Matching(_) | R::NonEmpty | R::Length { .. },
                Some(TypeDesc::String)
            )
            | (R::NonEmpty | R::Length { .. }, Some(TypeDesc::List(_)))
    );

    if !fits {
        return Err(format!(
            "{what} has the refinement `{rule}` on a type it does not apply to"
        ));
    }
    if let R::Matching(pattern) = rule {
        super::refine::compile_pattern(pattern)
            .map_err(|why| format!("{what} has an invalid pattern: {why}"))?;
    }
    Ok(())
}

/// A value supplied from outside (an input, a signal) is recorded as it came, so its type may
/// not hold a `Secret` (the checker says so as E0321; a forged artifact is refused here).
fn supplied_without_secret(module: &Module, ty: TypeRef, what: &str) -> Result<(), String> {
    let mut seen = Vec::new();
    let mut todo = vec![ty];
    while let Some(ty) = todo.pop() {
        if seen.contains(&ty) {
            continue;
        }
        seen.push(ty);
        match module.type_desc(ty) {
            Some(TypeDesc::Secret) => {
                return Err(format!(
                    "{what} takes a `Secret` from outside, which would be recorded in clear"
                ));
            }
            Some(
                TypeDesc::List(t)
                | TypeDesc::Map(t)
                | TypeDesc::Optional(t)
                | TypeDesc::Refined { base: t, .. },
            ) => todo.push(*t),
            Some(TypeDesc::Record { fields, .. }) => todo.extend(fields.iter().map(|(_, t)| *t)),
            Some(TypeDesc::Enum { variants, .. }) => {
                todo.extend(variants.iter().flat_map(|(_, f)| f.iter().map(|(_, t)| *t)));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Operands of one instruction name existing things.
fn check_operands(module: &Module, workflow: &WorkflowCode, op: Op) -> Result<(), String> {
    let len = workflow.code.len();
    let within = |index: u32, count: usize, what: &str| {
        if (index as usize) < count {
            Ok(())
        } else {
            Err(format!("names {what} #{index}, but there are {count}"))
        }
    };
    if let Some(target) = op.target() {
        within(target, len, "instruction")?;
    }
    match op {
        Op::Const(n) => within(n, module.constants.len(), "constant"),
        Op::LoadLocal(slot) | Op::StoreLocal(slot) => {
            within(u32::from(slot), workflow.locals as usize, "local")
        }
        Op::MakeRecord(n) => within(n, module.field_lists.len(), "field list"),
        Op::MakeVariant { ty, variant } => variant_fields(module, ty, variant)
            .map(|_| ())
            .ok_or_else(|| {
                format!("names variant #{variant} of type #{ty}, which is no such enum variant")
            }),
        Op::GetField(n) | Op::GetFieldOptional(n) | Op::IsVariant(n) | Op::SetField(n) => {
            check_string(module, n, "the instruction")
        }
        Op::CallBuiltin { id, args } => match flow_stdlib::Builtin::from_id(id) {
            Some(builtin) if builtin.params().len() == usize::from(args) => Ok(()),
            Some(builtin) => Err(format!(
                "calls `{}` with {args} argument(s); it takes {}",
                builtin.name(),
                builtin.params().len()
            )),
            None => Err(format!("calls builtin #{id}, which does not exist")),
        },
        Op::CallTool { tool } => within(tool, module.tools.len(), "tool"),
        Op::CallWorkflow { workflow } => within(workflow, module.workflows.len(), "workflow"),
        Op::ContinueAs { workflow: next } => match module.workflows.get(next as usize) {
            Some(next) if next.name == workflow.name => Ok(()),
            Some(next) => Err(format!(
                "continues as workflow `{}`; a run can only continue as its own workflow",
                next.name
            )),
            None => within(next, module.workflows.len(), "workflow"),
        },
        Op::AwaitApproval { gate } => within(gate, module.gates.len(), "gate"),
        Op::AwaitInput { request } => within(request, module.input_requests.len(), "input request"),
        Op::Audit { event } => within(event, module.events.len(), "event"),
        Op::Select(n) => {
            let Some(select) = module.selects.get(n as usize) else {
                return within(n, module.selects.len(), "select");
            };
            if module
                .workflows
                .get(select.workflow as usize)
                .map(|w| &w.name)
                != Some(&workflow.name)
            {
                return Err(format!("names select #{n} of another workflow"));
            }
            if select.arms.is_empty() {
                return Err(format!("names select #{n}, which has no arms"));
            }
            for arm in &select.arms {
                within(arm.target, len, "instruction")?;
                if let Some(wait) = arm.wait {
                    let Some(code) = module.workflows.get(wait as usize) else {
                        return within(wait, module.workflows.len(), "workflow");
                    };
                    let owners = module
                        .selects
                        .iter()
                        .flat_map(|s| &s.arms)
                        .filter(|a| a.wait == Some(wait))
                        .count()
                        + module
                            .parallels
                            .iter()
                            .filter(|p| p.branches.contains(&wait))
                            .count();
                    if owners != 1 || arm.signal.is_some() || wait == select.workflow {
                        return Err(format!(
                            "waits in select #{n} for `{}`, which is not that arm's alone",
                            code.name
                        ));
                    }
                }
                if let Some(signal) = arm.signal {
                    match module.signals.get(signal as usize) {
                        Some(s) if s.workflow == select.workflow => {}
                        Some(s) => {
                            return Err(format!(
                                "waits in select #{n} for signal `{}` of another workflow",
                                s.name
                            ));
                        }
                        None => within(signal, module.signals.len(), "signal")?,
                    }
                }
            }
            Ok(())
        }
        Op::Parallel(n) => check_parallel(module, workflow, n),
        Op::AwaitSignal { signal } => match module.signals.get(signal as usize) {
            Some(s)
                if module.workflows.get(s.workflow as usize).map(|w| &w.name)
                    == Some(&workflow.name) =>
            {
                Ok(())
            }
            Some(s) => Err(format!(
                "waits for signal `{}` of another workflow; a run waits only for its own signals",
                s.name
            )),
            None => within(signal, module.signals.len(), "signal"),
        },
        Op::Conform(ty) => within(ty, module.types.len(), "type"),
        Op::CallFunction { function } => within(function, module.functions.len(), "function"),
        Op::PushHandler { kinds, .. } if kinds != u32::MAX => {
            within(kinds, module.kind_lists.len(), "kind list")
        }
        _ => Ok(()),
    }
}

/// A handler or timeout region, as the abstract interpretation tracks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Region {
    Handler,
    Timeout,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct State {
    depth: u32,
    regions: Vec<Region>,
}

fn check_workflow(module: &Module, workflow: &WorkflowCode) -> Result<(), String> {
    let code = &workflow.code;
    if code.last() != Some(&Op::Return) {
        return Err("does not end with `return`".into());
    }
    if workflow.debug.len() != code.len() {
        return Err(format!(
            "has {} instructions but {} debug locations",
            code.len(),
            workflow.debug.len()
        ));
    }
    if workflow.locals < workflow.params.len() as u32 {
        return Err("has fewer local slots than parameters".into());
    }
    for (pc, loc) in workflow.debug.iter().enumerate() {
        if loc.file as usize >= module.files.len() || loc.line == 0 || loc.column == 0 {
            return Err(format!(
                "instruction {pc} has an invalid debug location {loc:?}"
            ));
        }
    }
    for (pc, op) in code.iter().enumerate() {
        check_operands(module, workflow, *op).map_err(|e| format!("instruction {pc} {e}"))?;
    }

    let mut states: Vec<Option<State>> = vec![None; code.len()];
    let mut work = vec![0usize];
    states[0] = Some(State {
        depth: 0,
        regions: Vec::new(),
    });
    // Records `state` as the state on entry to `pc`, or checks it agrees with an earlier one.
    let arrive = |states: &mut Vec<Option<State>>,
                  work: &mut Vec<usize>,
                  from: usize,
                  pc: usize,
                  state: State|
     -> Result<(), String> {
        match states.get(pc) {
            None => Err(format!("instruction {from} falls off the end of the code")),
            Some(None) => {
                states[pc] = Some(state);
                work.push(pc);
                Ok(())
            }
            Some(Some(existing)) if *existing == state => Ok(()),
            Some(Some(existing)) => Err(format!(
                "paths meet at instruction {pc} with different states: depth {} {:?} (first), depth {} {:?} (from instruction {from})",
                existing.depth, existing.regions, state.depth, state.regions
            )),
        }
    };
    while let Some(pc) = work.pop() {
        let Some(state) = states[pc].clone() else {
            continue;
        };
        let op = code[pc];
        let (pops, pushes) = stack_effect(module, op)
            .ok_or_else(|| format!("instruction {pc} has an invalid operand"))?;
        if state.depth < pops {
            return Err(format!(
                "instruction {pc} ({op:?}) needs {pops} value(s) but the stack holds {}",
                state.depth
            ));
        }
        let mut next = State {
            depth: state.depth - pops + pushes,
            regions: state.regions.clone(),
        };
        match op {
            Op::Return => {
                if state.depth != 1 {
                    return Err(format!(
                        "`return` at instruction {pc} finds {} value(s) on the stack instead of 1",
                        state.depth
                    ));
                }
            }
            // The run ends here (`continue as` ends it and starts the next one).
            Op::Fail | Op::Raise | Op::ContinueAs { .. } => {}
            // The arm that happened goes on at its code, with its value pushed.
            Op::Select(n) => {
                let targets: Vec<u32> = module
                    .selects
                    .get(n as usize)
                    .map(|s| s.arms.iter().map(|a| a.target).collect())
                    .unwrap_or_default();
                for target in targets {
                    arrive(&mut states, &mut work, pc, target as usize, next.clone())?;
                }
            }
            Op::Jump(target) => arrive(&mut states, &mut work, pc, target as usize, next)?,
            Op::JumpIfFalse(target) | Op::JumpIfTrue(target) => {
                arrive(&mut states, &mut work, pc, target as usize, next.clone())?;
                arrive(&mut states, &mut work, pc, pc + 1, next)?;
            }
            Op::JumpIfNotNone(target) => {
                let kept = State {
                    depth: state.depth,
                    regions: state.regions.clone(),
                };
                arrive(&mut states, &mut work, pc, target as usize, kept)?;
                arrive(&mut states, &mut work, pc, pc + 1, next)?;
            }
            Op::PushHandler { catch, .. } => {
                // An error raised in the region unwinds the stack to this depth, closes the
                // regions opened since, and pushes the error record.
                let caught = State {
                    depth: state.depth + 1,
                    regions: state.regions.clone(),
                };
                arrive(&mut states, &mut work, pc, catch as usize, caught)?;
                next.regions.push(Region::Handler);
                arrive(&mut states, &mut work, pc, pc + 1, next)?;
            }
            Op::PopHandler | Op::ExitTimeout => {
                let wanted = if op == Op::PopHandler {
                    Region::Handler
                } else {
                    Region::Timeout
                };
                if next.regions.pop() != Some(wanted) {
                    return Err(format!(
                        "instruction {pc} ({op:?}) does not close the innermost region ({:?})",
                        state.regions
                    ));
                }
                arrive(&mut states, &mut work, pc, pc + 1, next)?;
            }
            Op::EnterTimeout => {
                next.regions.push(Region::Timeout);
                arrive(&mut states, &mut work, pc, pc + 1, next)?;
            }
            _ => arrive(&mut states, &mut work, pc, pc + 1, next)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytecode::module::{DebugLoc, WorkflowCode};

    fn module(code: Vec<Op>, locals: u32) -> Module {
        let debug = vec![
            DebugLoc {
                file: 0,
                line: 1,
                column: 1
            };
            code.len()
        ];
        Module {
            field_docs: Vec::new(),
            gate_contexts: Vec::new(),
            signals: Vec::new(),
            selects: Vec::new(),
            queries: Vec::new(),
            parallels: Vec::new(),
            tool_raises: Vec::new(),
            undos: Vec::new(),
            functions: Vec::new(),
            source_hash: String::new(),
            files: vec!["t.flow".into()],
            constants: vec![
                Constant::None,
                Constant::Bool(true),
                Constant::Str("x".into()),
            ],
            field_lists: vec![vec![2]],
            kind_lists: vec![],
            types: vec![TypeDesc::Unit],
            tools: vec![],
            gates: vec![],
            input_requests: vec![],
            events: vec![],
            workflows: vec![WorkflowCode {
                name: "w".into(),
                params: vec![],
                ret: TypeRef(0),
                locals,
                code,
                debug,
            }],
        }
    }

    /// `continue_as` ends the path (nothing needs to follow it) and may only name the
    /// workflow it is in.
    #[test]
    fn continue_as_names_its_own_workflow() {
        let own = module(
            vec![Op::ContinueAs { workflow: 0 }, Op::Const(0), Op::Return],
            0,
        );
        assert_eq!(verify(&own), Ok(()));
        let mut other = own.clone();
        let mut second = other.workflows[0].clone();
        second.name = "other".into();
        other.workflows.push(second);
        other.workflows[0].code[0] = Op::ContinueAs { workflow: 1 };
        let refused = verify(&other);
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("continues as workflow `other`")),
            "{refused:?}"
        );
        let mut missing = own.clone();
        missing.workflows[0].code[0] = Op::ContinueAs { workflow: 7 };
        assert!(verify(&missing).is_err_and(|e| e.contains("workflow #7")));
    }

    /// A gate context names an `await` instruction of an existing workflow, and a type.
    #[test]
    fn a_signal_or_input_that_takes_a_secret_is_refused() {
        use crate::bytecode::module::{InputRequest, SignalInfo};
        let mut signalled = module(vec![Op::AwaitSignal { signal: 0 }, Op::Return], 0);
        signalled.types.push(TypeDesc::Secret);
        let secret = TypeRef((signalled.types.len() - 1) as u32);
        signalled.types.push(TypeDesc::List(secret));
        let list = TypeRef((signalled.types.len() - 1) as u32);
        let signal = |ty| SignalInfo {
            workflow: 0,
            name: "key".into(),
            ty,
            senders: vec![],
        };
        signalled.signals = vec![signal(TypeRef(0))];
        assert_eq!(verify(&signalled), Ok(()));
        for ty in [secret, list] {
            let mut forged = signalled.clone();
            forged.signals = vec![signal(ty)];
            let refused = verify(&forged);
            assert!(
                refused
                    .as_ref()
                    .is_err_and(|e| e.contains("recorded in clear")),
                "{refused:?}"
            );
        }
        let mut asked = signalled.clone();
        asked.input_requests = vec![InputRequest {
            name: "key".into(),
            ty: secret,
        }];
        assert!(verify(&asked).is_err_and(|e| e.contains("input request `key`")));
    }

    #[test]
    fn gate_contexts_name_an_await_and_a_type() {
        use crate::bytecode::module::GateContext;
        let mut gated = module(
            vec![Op::Const(0), Op::AwaitApproval { gate: 0 }, Op::Return],
            0,
        );
        gated.gates = vec!["g".into()];
        let context = |workflow, pc, ty| GateContext {
            workflow,
            pc,
            ty: TypeRef(ty),
        };
        gated.gate_contexts = vec![context(0, 1, 0)];
        assert_eq!(verify(&gated), Ok(()));
        for (bad, why) in [
            (context(0, 0, 0), "names no `await` instruction"),
            (context(0, 9, 0), "names no `await` instruction"),
            (context(3, 1, 0), "names no `await` instruction"),
            (context(0, 1, 5), "names type #5 of 1"),
        ] {
            let mut forged = gated.clone();
            forged.gate_contexts = vec![bad];
            let refused = verify(&forged);
            assert!(
                refused.as_ref().is_err_and(|e| e.contains(why)),
                "{refused:?}"
            );
        }
    }

    fn with_function(code: Vec<Op>) -> Module {
        let mut m = module(
            vec![Op::Const(1), Op::CallFunction { function: 0 }, Op::Return],
            0,
        );
        let debug = m.workflows[0].debug[0];
        m.functions = vec![WorkflowCode {
            name: "f".into(),
            params: vec![("x".into(), TypeRef(0))],
            ret: TypeRef(0),
            locals: 1,
            debug: vec![debug; code.len()],
            code,
        }];
        m
    }

    /// A function's code is checked like a workflow's, and may not hold a durable point.
    #[test]
    fn function_code_is_verified_and_has_no_durable_point() {
        let fine = with_function(vec![Op::LoadLocal(0), Op::Return]);
        assert_eq!(verify(&fine), Ok(()));
        let recursive = with_function(vec![
            Op::LoadLocal(0),
            Op::CallFunction { function: 0 },
            Op::Return,
        ]);
        assert_eq!(verify(&recursive), Ok(()));
        let mut slept = with_function(vec![Op::LoadLocal(0), Op::Sleep, Op::Const(0), Op::Return]);
        slept.constants.push(Constant::Duration(1));
        let refused = verify(&slept);
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("function `f`") && e.contains("durable point")),
            "{refused:?}"
        );
        for (code, why) in [
            (vec![Op::LoadLocal(3), Op::Return], "local #3"),
            (vec![Op::Jump(7), Op::Return], "instruction #7"),
            (vec![Op::LoadLocal(0)], "does not end"),
            (
                vec![Op::LoadLocal(0), Op::EnterTimeout, Op::Const(0), Op::Return],
                "not allowed in a function",
            ),
            (
                vec![
                    Op::LoadLocal(0),
                    Op::CallFunction { function: 4 },
                    Op::Return,
                ],
                "function #4",
            ),
        ] {
            let refused = verify(&with_function(code));
            assert!(
                refused.as_ref().is_err_and(|e| e.contains(why)),
                "{why}: {refused:?}"
            );
        }
        let mut missing = with_function(vec![Op::LoadLocal(0), Op::Return]);
        missing.functions.clear();
        assert!(verify(&missing).is_err_and(|e| e.contains("function #0")));
    }

    #[test]
    fn accepts_a_balanced_branch() {
        let code = vec![
            Op::Const(1),
            Op::JumpIfFalse(4),
            Op::Const(0),
            Op::Jump(5),
            Op::Const(0),
            Op::Return,
        ];
        assert_eq!(verify(&module(code, 0)), Ok(()));
    }

    #[test]
    fn rejects_paths_that_disagree_on_depth() {
        let code = vec![
            Op::Const(1),
            Op::JumpIfFalse(4),
            Op::Const(0),
            Op::Const(0),
            Op::Const(0),
            Op::Return,
        ];
        let error = verify(&module(code, 0)).expect_err("depths differ");
        assert!(error.contains("different states"), "{error}");
    }

    #[test]
    fn rejects_underflow_bad_operands_and_a_missing_return() {
        let underflow = verify(&module(vec![Op::Pop, Op::Const(0), Op::Return], 0));
        assert!(underflow.expect_err("underflow").contains("needs 1 value"));
        let local = verify(&module(vec![Op::LoadLocal(3), Op::Return], 1));
        assert!(local.expect_err("bad local").contains("local #3"));
        let jump = verify(&module(vec![Op::Jump(9), Op::Return], 0));
        assert!(jump.expect_err("bad jump").contains("instruction #9"));
        let end = verify(&module(vec![Op::Const(0)], 0));
        assert!(end.expect_err("no return").contains("does not end"));
        let two = verify(&module(vec![Op::Const(0), Op::Const(0), Op::Return], 0));
        assert!(two.expect_err("two values").contains("finds 2"));
    }

    #[test]
    fn regions_must_nest() {
        let code = vec![
            Op::PushHandler {
                catch: 4,
                kinds: u32::MAX,
            },
            Op::Const(0),
            Op::ExitTimeout,
            Op::Return,
            Op::Return,
        ];
        let error = verify(&module(code, 0)).expect_err("wrong region closed");
        assert!(error.contains("innermost region"), "{error}");
        let code = vec![
            Op::PushHandler {
                catch: 4,
                kinds: u32::MAX,
            },
            Op::Const(0),
            Op::PopHandler,
            Op::Return,
            Op::Return,
        ];
        assert_eq!(verify(&module(code, 0)), Ok(()));
    }
}
