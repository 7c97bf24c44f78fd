//! A readable listing of a module, for `flowc disasm` and snapshot tests.

use super::module::{Binding, Constant, Module};
use super::ops::Op;
use std::fmt::Write;

pub fn disassemble(module: &Module) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "; source sha256 {}", module.source_hash);
    for (index, tool) in module.tools.iter().enumerate() {
        let params: Vec<String> = tool
            .params
            .iter()
            .map(|(name, ty)| format!("{name}: {}", module.type_name(*ty)))
            .collect();
        let binding = match &tool.binding {
            Binding::Http { method, path } => format!("http {method} {path:?}"),
            Binding::Exec { command } => format!("exec {command:?}"),
            Binding::Llm { model, prompt } => format!("llm {model:?} prompt {prompt:?}"),
        };
        let _ = writeln!(
            out,
            "tool #{index} {}({}) -> {} via {binding}{}",
            tool.name,
            params.join(", "),
            module.type_name(tool.ret),
            if tool.sensitive { " sensitive" } else { "" }
        );
    }
    for function in &module.functions {
        let params: Vec<String> = function
            .params
            .iter()
            .map(|(name, ty)| format!("{name}: {}", module.type_name(*ty)))
            .collect();
        let _ = writeln!(
            out,
            "\nfn {}({}) -> {}   ; {} locals",
            function.name,
            params.join(", "),
            module.type_name(function.ret),
            function.locals
        );
        let mut last_line = None;
        for (pc, op) in function.code.iter().enumerate() {
            let source = match function.debug.get(pc) {
                Some(loc) if last_line != Some((loc.file, loc.line)) => {
                    last_line = Some((loc.file, loc.line));
                    let file = module
                        .files
                        .get(loc.file as usize)
                        .map(String::as_str)
                        .unwrap_or("?");
                    format!("  ; {file}:{}:{}", loc.line, loc.column)
                }
                _ => String::new(),
            };
            let _ = writeln!(out, "  {pc:>4}  {}{source}", show(module, *op));
        }
    }
    for (number, workflow) in module.workflows.iter().enumerate() {
        let params: Vec<String> = workflow
            .params
            .iter()
            .map(|(name, ty)| format!("{name}: {}", module.type_name(*ty)))
            .collect();
        let _ = writeln!(
            out,
            "\nworkflow {}({}) -> {}   ; {} locals",
            workflow.name,
            params.join(", "),
            module.type_name(workflow.ret),
            workflow.locals
        );
        for signal in module.signals_of(number as u32) {
            let senders: Vec<String> = signal.senders.iter().map(|s| s.to_string()).collect();
            let _ = writeln!(
                out,
                "  accepts {}: {} from {}",
                signal.name,
                module.type_name(signal.ty),
                senders.join(" or ")
            );
        }
        let mut last_line = None;
        for (pc, op) in workflow.code.iter().enumerate() {
            let location = workflow.debug.get(pc);
            let source = match location {
                Some(loc) if last_line != Some((loc.file, loc.line)) => {
                    last_line = Some((loc.file, loc.line));
                    let file = module
                        .files
                        .get(loc.file as usize)
                        .map(String::as_str)
                        .unwrap_or("?");
                    format!("  ; {file}:{}:{}", loc.line, loc.column)
                }
                _ => String::new(),
            };
            // An `await` with a context shows the context's type (format 4), whose field
            // order the inbox follows.
            let context = module
                .gate_context(number as u32, pc as u32)
                .map(|ty| format!(" context {}", module.type_name(ty)))
                .unwrap_or_default();
            let _ = writeln!(out, "  {pc:>4}  {}{context}{source}", show(module, *op));
        }
        for query in module
            .queries
            .iter()
            .filter(|q| q.workflow == number as u32)
        {
            let _ = writeln!(
                out,
                "\n  query {} -> {}   ; once the run is at instruction {} or later",
                query.name,
                module.type_name(query.ret),
                query.from_pc
            );
            for (pc, op) in query.code.iter().enumerate() {
                let _ = writeln!(out, "  {pc:>4}  {}", show(module, *op));
            }
        }
    }
    out
}

fn show(module: &Module, op: Op) -> String {
    let string = |n: u32| {
        module
            .string(n)
            .map(|s| format!("{s:?}"))
            .unwrap_or_else(|| format!("#{n}"))
    };
    match op {
        Op::Const(n) => format!(
            "const {}",
            match module.constants.get(n as usize) {
                Some(Constant::None) => "none".to_string(),
                Some(Constant::Bool(b)) => b.to_string(),
                Some(Constant::Int(i)) => i.to_string(),
                Some(Constant::Float(x)) => format!("{x:?}"),
                Some(Constant::Str(s)) => format!("{s:?}"),
                Some(Constant::Duration(ms)) => format!("{ms}ms"),
                Some(Constant::Time(ms)) =>
                    format!("time \"{}\"", flow_stdlib::time::format_time(*ms)),
                None => format!("#{n}?"),
            }
        ),
        Op::MakeRecord(n) => {
            let fields: Vec<String> = module
                .field_lists
                .get(n as usize)
                .map(|list| list.iter().map(|c| string(*c)).collect())
                .unwrap_or_default();
            format!("make_record {{{}}}", fields.join(", "))
        }
        Op::MakeVariant { ty, variant } => format!(
            "make_variant {}.{}",
            module.type_name(super::TypeRef(ty)),
            variant_name(module, ty, variant)
        ),
        Op::GetField(n) => format!("get_field {}", string(n)),
        Op::GetFieldOptional(n) => format!("get_field? {}", string(n)),
        Op::SetField(n) => format!("set_field {}", string(n)),
        Op::Conform(ty) => format!("conform {}", module.type_name(super::TypeRef(ty))),
        Op::IsVariant(n) => format!("is_variant {}", string(n)),
        Op::CallBuiltin { id, args } => format!(
            "call_builtin {}/{args}",
            flow_stdlib::Builtin::from_id(id)
                .map(|b| b.name().to_string())
                .unwrap_or_else(|| format!("#{id}"))
        ),
        Op::CallTool { tool } => format!(
            "call_tool {}",
            module
                .tools
                .get(tool as usize)
                .map(|t| t.name.clone())
                .unwrap_or_else(|| format!("#{tool}"))
        ),
        Op::CallWorkflow { workflow } => {
            format!("call_workflow {}", workflow_name(module, workflow))
        }
        Op::ContinueAs { workflow } => format!("continue_as {}", workflow_name(module, workflow)),
        Op::CallFunction { function } => format!(
            "call_function {}",
            module
                .functions
                .get(function as usize)
                .map(|f| f.name.clone())
                .unwrap_or_else(|| format!("#{function}"))
        ),
        Op::AwaitApproval { gate } => format!(
            "await_approval {:?}",
            module.gates.get(gate as usize).cloned().unwrap_or_default()
        ),
        Op::AwaitInput { request } => match module.input_requests.get(request as usize) {
            Some(r) => format!("await_input {:?} -> {}", r.name, module.type_name(r.ty)),
            None => format!("await_input #{request}"),
        },
        Op::Select(n) => match module.selects.get(n as usize) {
            Some(select) => {
                let arms: Vec<String> = select
                    .arms
                    .iter()
                    .map(
                        |arm| match arm.signal.and_then(|s| module.signals.get(s as usize)) {
                            Some(signal) => format!("signal {:?} -> {}", signal.name, arm.target),
                            None if arm.signal.is_some() => format!("signal #? -> {}", arm.target),
                            None => match arm.wait {
                                Some(w) => {
                                    format!("wait {} -> {}", workflow_name(module, w), arm.target)
                                }
                                None => format!("after -> {}", arm.target),
                            },
                        },
                    )
                    .collect();
                format!("select {{ {} }}", arms.join(", "))
            }
            None => format!("select #{n}"),
        },
        Op::Parallel(n) => match module.parallels.get(n as usize) {
            Some(parallel) => {
                let names: Vec<&str> = parallel
                    .fields
                    .and_then(|list| module.field_lists.get(list as usize))
                    .map(|list| list.iter().filter_map(|&s| module.string(s)).collect())
                    .unwrap_or_default();
                let branches: Vec<String> = parallel
                    .branches
                    .iter()
                    .enumerate()
                    .map(|(i, &w)| match names.get(i) {
                        Some(name) => format!("{name}: {}", workflow_name(module, w)),
                        None => format!("for {}", workflow_name(module, w)),
                    })
                    .collect();
                let collect = if parallel.collect { " collect" } else { "" };
                format!(
                    "parallel{collect} {{ {} }} captures {}",
                    branches.join(", "),
                    parallel.captures
                )
            }
            None => format!("parallel #{n}"),
        },
        Op::AwaitSignal { signal } => match module.signals.get(signal as usize) {
            Some(s) => format!("await_signal {:?} -> {}", s.name, module.type_name(s.ty)),
            None => format!("await_signal #{signal}"),
        },
        Op::Audit { event } => format!(
            "audit {:?}",
            module
                .events
                .get(event as usize)
                .cloned()
                .unwrap_or_default()
        ),
        Op::PushHandler { catch, kinds } => {
            let kinds = module
                .kind_lists
                .get(kinds as usize)
                .map(|k| k.join(", "))
                .unwrap_or_else(|| "any".to_string());
            format!("push_handler -> {catch} on {kinds}")
        }
        other => snake_case(&format!("{other:?}")),
    }
}

fn variant_name(module: &Module, ty: u32, variant: u32) -> String {
    match module.type_desc(super::TypeRef(ty)) {
        Some(super::TypeDesc::Enum { variants, .. }) => variants
            .get(variant as usize)
            .map(|(name, _)| name.clone())
            .unwrap_or_else(|| format!("#{variant}")),
        _ => format!("#{variant}"),
    }
}

/// `JumpIfFalse(12)` → `jump_if_false 12`.
fn snake_case(debug: &str) -> String {
    let (name, rest) = match debug.find('(') {
        Some(i) => (&debug[..i], debug[i + 1..].trim_end_matches(')')),
        None => (debug, ""),
    };
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    if !rest.is_empty() {
        out.push(' ');
        out.push_str(rest);
    }
    out
}

/// A workflow's name by its index (`#n` for an index the module does not have).
fn workflow_name(module: &Module, index: u32) -> String {
    module
        .workflows
        .get(index as usize)
        .map(|w| w.name.clone())
        .unwrap_or_else(|| format!("#{index}"))
}
