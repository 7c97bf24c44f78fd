//! The language server: LSP requests in, [`flow_compiler::analysis`] queries out.
//!
//! Document changes mutate the [`State`] synchronously, before any `.await` (handlers run
//! concurrently and may finish out of order), and wake the diagnostics worker: one thread
//! that re-analyses every open document whose analysis went stale, newest change first, and
//! publishes diagnostics that changed. Many rapid edits coalesce: the worker always reads
//! the latest text. Requests use the document's analysis when it is fresh and otherwise
//! analyse the current text themselves (on the blocking pool), so an answer never mixes an
//! old analysis with new positions.
//!
//! Nothing a client sends may bring the server down: positions are clamped, unknown
//! documents answer nothing, and every compiler call runs under `catch_unwind`.

use crate::documents::{
    Document, Job, OverlayLoader, SharedAnalysis, State, path_of, run_analysis, uri_of,
};
use crate::outline::Outlines;
use crate::position::{LineMap, apply_edit};
use flow_compiler::analysis::{self, Analysis, CompletionKind as Kind, SymbolKind as Sk};
use flow_compiler::diagnostics::{Diagnostic as FlowDiagnostic, Severity};
use flow_compiler::span::Span;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use tower_lsp_server::jsonrpc::Result;
use tower_lsp_server::ls_types::*;
use tower_lsp_server::{Client, LanguageServer, LspService, Server};

/// Runs the server over stdin and stdout until the client says `exit`.
pub async fn serve_stdio() {
    // stdin goes through the guard in `framing` first: see there why.
    let (input, feed) = tokio::io::duplex(1 << 16);
    tokio::spawn(crate::framing::sanitize(tokio::io::stdin(), feed));
    // stdout gets the library's messages through `outline::write_out`: see there why.
    let (output, sent) = tokio::io::duplex(1 << 16);
    let outlines = Arc::new(Outlines::new());
    let writer = tokio::spawn(crate::outline::write_out(
        sent,
        tokio::io::stdout(),
        outlines.clone(),
    ));
    let handle = tokio::runtime::Handle::current();
    let (service, socket) = LspService::build(move |client| Backend::new(client, handle, outlines))
        .custom_method(crate::framing::MALFORMED, Backend::malformed_message)
        .finish();
    Server::new(input, output, socket).serve(service).await;
    // The library's end of the pipe is closed now: let the last answers out.
    let _ = writer.await;
}

pub struct Backend {
    client: Client,
    state: Arc<Mutex<State>>,
    wake: Mutex<mpsc::Sender<()>>,
    outlines: Arc<Outlines>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The stack of threads that run the compiler (deeply nested code recurses deeply; the
/// parser bounds the depth). Reserved, not committed, memory.
pub const ANALYSIS_STACK: usize = 256 * 1024 * 1024;

impl Backend {
    fn new(client: Client, handle: tokio::runtime::Handle, outlines: Arc<Outlines>) -> Backend {
        let state = Arc::new(Mutex::new(State::default()));
        let (wake, wakeups) = mpsc::channel();
        let worker_state = state.clone();
        let worker_client = client.clone();
        let spawned = std::thread::Builder::new()
            .name("flow-lsp diagnostics".to_string())
            .stack_size(ANALYSIS_STACK)
            .spawn(move || diagnostics_worker(worker_state, worker_client, handle, wakeups));
        if let Err(error) = spawned {
            eprintln!("flow-lsp: cannot start the diagnostics thread: {error}");
        }
        Backend {
            client,
            state,
            wake: Mutex::new(wake),
            outlines,
        }
    }

    /// A message `framing` could not pass on: say so in the client's log, and go on.
    async fn malformed_message(&self, params: serde_json::Value) {
        let reason = params["reason"].as_str().unwrap_or("a malformed message");
        self.client
            .log_message(MessageType::WARNING, format!("flow-lsp ignored {reason}"))
            .await;
    }

    fn wake_worker(&self) {
        let _ = lock(&self.wake).send(());
    }

    /// An up-to-date analysis with `uri` as its root (open or not), and its path.
    async fn analysis(&self, uri: &Uri) -> Option<(String, SharedAnalysis)> {
        let path = path_of(uri);
        let (generation, loader) = {
            let state = lock(&self.state);
            if let Some(fresh) = state.fresh_analysis(&path) {
                return Some((path, fresh));
            }
            state.snapshot()
        };
        let root = path.clone();
        let (analysis, files) =
            tokio::task::spawn_blocking(move || guarded_analysis(&root, &loader))
                .await
                .ok()?;
        let shared = Arc::new(Mutex::new(analysis));
        lock(&self.state).store(&path, generation, shared.clone(), files);
        Some((path, shared))
    }

    /// Runs `query` on the analysis of `uri` with the byte offset of `position` in the
    /// analysed text; `None` when the document is unknown or the query panicked.
    async fn at_position<R>(
        &self,
        uri: &Uri,
        position: Position,
        query: impl FnOnce(&Context<'_>, usize) -> Option<R>,
    ) -> Option<R> {
        let (path, shared) = self.analysis(uri).await?;
        // Always the state first, then the analysis (the worker's order).
        let state = lock(&self.state);
        let analysis = lock(&shared);
        let context = Context::new(&analysis, &state, &path);
        let text = analysis.text(&path)?;
        let offset = LineMap::new(text).offset(text, position);
        catch_unwind(AssertUnwindSafe(|| query(&context, offset))).ok()?
    }

    /// The references of the symbol under the cursor in the document's own program and in
    /// the programs of the other open documents that load its declaration (a type declared
    /// in `types.flow` is used by every open file importing it).
    async fn references_everywhere(
        &self,
        uri: &Uri,
        position: Position,
        include: bool,
    ) -> Option<Vec<Location>> {
        let (declaration, mut found) = self
            .at_position(uri, position, |cx, offset| {
                let sym = cx.analysis.symbol_at(cx.path, offset)?;
                let shared = !matches!(sym, analysis::Sym::Local(_) | analysis::Sym::Import(_));
                let declaration = cx.analysis.declaration(sym).filter(|_| shared);
                let found: Vec<Location> = cx
                    .analysis
                    .references(cx.path, offset, include)
                    .into_iter()
                    .filter_map(|l| cx.location(&l.path, l.span))
                    .collect();
                Some((declaration, found))
            })
            .await?;
        if let Some(declaration) = declaration {
            let others: Vec<Uri> = lock(&self.state)
                .docs
                .values()
                .map(|d| d.uri.clone())
                .filter(|u| u != uri)
                .collect();
            for other in others {
                let more = self
                    .with_analysis(&other, |cx| {
                        cx.analysis.file(&declaration.path)?;
                        let offset = declaration.span.start as usize;
                        Some(
                            cx.analysis
                                .references(&declaration.path, offset, include)
                                .into_iter()
                                .filter_map(|l| cx.location(&l.path, l.span))
                                .collect::<Vec<_>>(),
                        )
                    })
                    .await
                    .unwrap_or_default();
                found.extend(more);
            }
        }
        let mut seen = std::collections::HashSet::new();
        found.retain(|l| seen.insert(format!("{} {:?}", l.uri.as_str(), l.range)));
        Some(found)
    }

    async fn with_analysis<R>(
        &self,
        uri: &Uri,
        query: impl FnOnce(&Context<'_>) -> Option<R>,
    ) -> Option<R> {
        let (path, shared) = self.analysis(uri).await?;
        // Always the state first, then the analysis (the worker's order).
        let state = lock(&self.state);
        let analysis = lock(&shared);
        let context = Context::new(&analysis, &state, &path);
        catch_unwind(AssertUnwindSafe(|| query(&context))).ok()?
    }
}

/// The analysis of a request, with what is needed to express its answers in LSP terms.
struct Context<'a> {
    analysis: &'a Analysis,
    state: &'a State,
    path: &'a str,
    /// The line map of each file a range was asked in: built once per answer, not once per
    /// range (an outline of a 5,000-line file has thousands of ranges).
    lines: RefCell<HashMap<String, Rc<LineMap>>>,
}

impl<'a> Context<'a> {
    fn new(analysis: &'a Analysis, state: &'a State, path: &'a str) -> Context<'a> {
        Context {
            analysis,
            state,
            path,
            lines: RefCell::default(),
        }
    }

    fn range(&self, path: &str, span: Span) -> Option<Range> {
        let text = self.analysis.text(path)?;
        let map = self
            .lines
            .borrow_mut()
            .entry(path.to_string())
            .or_insert_with(|| Rc::new(LineMap::new(text)))
            .clone();
        Some(map.range(text, span.start as usize, span.end as usize))
    }

    fn location(&self, path: &str, span: Span) -> Option<Location> {
        Some(Location {
            uri: uri_of(self.state, path)?,
            range: self.range(path, span)?,
        })
    }

    fn edits(&self, edits: Vec<analysis::Edit>) -> WorkspaceEdit {
        let mut changes: HashMap<Uri, Vec<TextEdit>> = HashMap::new();
        for edit in edits {
            let (Some(uri), Some(range)) = (
                uri_of(self.state, &edit.path),
                self.range(&edit.path, edit.span),
            ) else {
                continue;
            };
            changes.entry(uri).or_default().push(TextEdit {
                range,
                new_text: edit.text,
            });
        }
        WorkspaceEdit {
            changes: Some(changes),
            ..WorkspaceEdit::default()
        }
    }
}

/// Analyses `path`; a panic in the compiler becomes an empty analysis, never a crash.
fn guarded_analysis(path: &str, loader: &OverlayLoader) -> (Analysis, Vec<String>) {
    match catch_unwind(AssertUnwindSafe(|| run_analysis(path, loader))) {
        Ok(result) => result,
        Err(_) => {
            eprintln!("flow-lsp: internal error while analysing {path}");
            (analysis::analyze(&[], loader), vec![path.to_string()])
        }
    }
}

/// Re-analyses stale open documents and publishes their diagnostics when they changed.
fn diagnostics_worker(
    state: Arc<Mutex<State>>,
    client: Client,
    handle: tokio::runtime::Handle,
    wakeups: mpsc::Receiver<()>,
) {
    // Publications leave in the order they are decided: all from this thread, each a task
    // on the runtime's (first in, first out) queue for tasks spawned from outside it.
    let send = |uri: Uri, diagnostics: Vec<Diagnostic>, version: Option<i32>| {
        let client = client.clone();
        handle.spawn(async move {
            client.publish_diagnostics(uri, diagnostics, version).await;
        });
    };
    while wakeups.recv().is_ok() {
        loop {
            while wakeups.try_recv().is_ok() {}
            let job = lock(&state).next_job();
            match job {
                None => break,
                Some(Job::Analyze(path)) => {
                    let (generation, loader) = lock(&state).snapshot();
                    let (analysis, files) = guarded_analysis(&path, &loader);
                    let shared = Arc::new(Mutex::new(analysis));
                    lock(&state).store(&path, generation, shared, files);
                    // The next round publishes it (or analyses again if it is stale already).
                }
                Some(Job::Publish(path, shared, generation)) => {
                    let publish = {
                        // Always the state first, then an analysis: the order requests use.
                        let mut state = lock(&state);
                        let analysis = lock(&shared);
                        if let Some(doc) = state.docs.get_mut(&path) {
                            doc.published_generation = generation;
                        }
                        catch_unwind(AssertUnwindSafe(|| {
                            prepare_publish(&mut state, &analysis, &path, generation)
                        }))
                        .unwrap_or_default()
                    };
                    for (uri, diagnostics, version) in publish {
                        send(uri, diagnostics, version);
                    }
                }
                Some(Job::Clear(uri)) => send(uri, Vec::new(), None),
            }
        }
    }
}

/// What to publish from the analysis of the open document `path`: its own diagnostics, and
/// those of every file it loads that is not open itself (under that file's URI: what
/// `flowc check` on the document reports there), each only when it differs from what was
/// published last for that URI. Nothing if the document closed.
fn prepare_publish(
    state: &mut State,
    analysis: &Analysis,
    path: &str,
    generation: u64,
) -> Vec<(Uri, Vec<Diagnostic>, Option<i32>)> {
    let Some(doc) = state.docs.get(path) else {
        return Vec::new();
    };
    let uri = doc.uri.clone();
    // The version the diagnostics belong to, if the text has not changed since.
    let current = state.changed_at.get(path).is_none_or(|&g| g <= generation);
    let version = current.then_some(doc.version);
    let mut out = Vec::new();
    let diagnostics = lsp_diagnostics(analysis, state, path);
    if let Some(diagnostics) = record_publication(state, &uri, diagnostics) {
        out.push((uri, diagnostics, version));
    }
    for file in analysis.paths() {
        if file == path || state.docs.contains_key(file) {
            // An open file publishes its own analysis.
            continue;
        }
        let Some(uri) = uri_of(state, file) else {
            continue;
        };
        let diagnostics = lsp_diagnostics(analysis, state, file);
        if diagnostics.is_empty() {
            if state.imported.remove(file).is_none() {
                // Never shown: nothing to clear.
                continue;
            }
        } else {
            state.imported.insert(file.to_string(), uri.clone());
        }
        if let Some(diagnostics) = record_publication(state, &uri, diagnostics) {
            out.push((uri, diagnostics, None));
        }
    }
    out
}

/// Records `diagnostics` as published for `uri` and returns them, unless they are what was
/// published last.
fn record_publication(
    state: &mut State,
    uri: &Uri,
    diagnostics: Vec<Diagnostic>,
) -> Option<Vec<Diagnostic>> {
    let key = serde_json::to_string(&diagnostics).unwrap_or_default();
    if state.published.get(uri.as_str()) == Some(&key) {
        return None;
    }
    state.published.insert(uri.as_str().to_string(), key);
    Some(diagnostics)
}

/// The diagnostics of `path` as LSP shows them: same code, range and message as
/// `flowc check`; the label, notes and help follow the message; secondary labels become
/// related information.
pub fn lsp_diagnostics(analysis: &Analysis, state: &State, path: &str) -> Vec<Diagnostic> {
    let context = Context::new(analysis, state, path);
    let mut out: Vec<Diagnostic> = analysis
        .diagnostics_for(path)
        .into_iter()
        .filter_map(|d| to_lsp_diagnostic(&context, d))
        .collect();
    out.extend(
        analysis
            .import_problems(path)
            .iter()
            .filter_map(|problem| import_diagnostic(&context, problem)),
    );
    // In position order, the compiler's own order kept among equals (the sort is stable).
    out.sort_by_key(|d| (d.range.start.line, d.range.start.character));
    out
}

/// How many errors of an imported file are listed as related information at its import.
const IMPORT_ERRORS_LISTED: usize = 20;

/// The mark at an `import` whose file (or what it imports) has errors: those errors are
/// published in their own files, but this program does not build either. It is the one
/// diagnostic without a code (it is not one of `flowc check`'s: that reports the errors
/// themselves, in the imported file).
fn import_diagnostic(
    context: &Context<'_>,
    problem: &analysis::ImportProblem<'_>,
) -> Option<Diagnostic> {
    let text = context.analysis.text(context.path)?;
    let written = text
        .get(problem.span.range())
        .unwrap_or("the imported file");
    let count = problem.errors.len();
    let plural = if count == 1 { "error" } else { "errors" };
    let elsewhere = problem
        .errors
        .iter()
        .filter(|d| context.analysis.path(d.file()) != problem.target)
        .count();
    let mut message = format!("imported file {written} has {count} {plural}");
    if elsewhere > 0 {
        let _ = write!(message, " ({elsewhere} of them in files it imports)");
    }
    message
        .push_str("\nhelp: open it to see them; this program does not build until they are fixed");
    let related: Vec<DiagnosticRelatedInformation> = problem
        .errors
        .iter()
        .take(IMPORT_ERRORS_LISTED)
        .filter_map(|d| {
            Some(DiagnosticRelatedInformation {
                location: context.location(context.analysis.path(d.file()), d.primary.span)?,
                message: format!("{}: {}", d.code.id, d.message),
            })
        })
        .collect();
    Some(Diagnostic {
        range: context.range(context.path, problem.span)?,
        severity: Some(DiagnosticSeverity::ERROR),
        code: None,
        source: Some("flow".to_string()),
        message,
        related_information: (!related.is_empty()).then_some(related),
        ..Diagnostic::default()
    })
}

fn to_lsp_diagnostic(context: &Context<'_>, d: &FlowDiagnostic) -> Option<Diagnostic> {
    let range = context.range(context.path, d.primary.span)?;
    let mut message = d.message.clone();
    if !d.primary.message.is_empty() {
        message.push('\n');
        message.push_str(&d.primary.message);
    }
    for note in &d.notes {
        message.push('\n');
        message.push_str(note);
    }
    if let Some(help) = &d.help {
        message.push_str("\nhelp: ");
        message.push_str(help);
    }
    let related: Vec<DiagnosticRelatedInformation> = d
        .secondary
        .iter()
        .filter_map(|label| {
            let path = context.analysis.path(label.file);
            Some(DiagnosticRelatedInformation {
                location: context.location(path, label.span)?,
                message: label.message.clone(),
            })
        })
        .collect();
    Some(Diagnostic {
        range,
        severity: Some(match d.severity {
            Severity::Error => DiagnosticSeverity::ERROR,
            Severity::Warning => DiagnosticSeverity::WARNING,
            Severity::Note => DiagnosticSeverity::INFORMATION,
        }),
        code: Some(NumberOrString::String(d.code.id.to_string())),
        source: Some("flow".to_string()),
        message,
        related_information: (!related.is_empty()).then_some(related),
        ..Diagnostic::default()
    })
}

fn completion_kind(kind: Kind) -> CompletionItemKind {
    match kind {
        Kind::Keyword => CompletionItemKind::KEYWORD,
        Kind::Variable => CompletionItemKind::VARIABLE,
        Kind::Field => CompletionItemKind::FIELD,
        Kind::Variant => CompletionItemKind::ENUM_MEMBER,
        Kind::Tool => CompletionItemKind::FUNCTION,
        Kind::Workflow => CompletionItemKind::FUNCTION,
        Kind::Function => CompletionItemKind::FUNCTION,
        Kind::Type => CompletionItemKind::STRUCT,
        Kind::Option => CompletionItemKind::PROPERTY,
    }
}

fn symbol_kind(kind: Sk) -> SymbolKind {
    match kind {
        Sk::Workflow => SymbolKind::FUNCTION,
        Sk::Function => SymbolKind::FUNCTION,
        Sk::Tool => SymbolKind::METHOD,
        Sk::Record => SymbolKind::STRUCT,
        Sk::Enum => SymbolKind::ENUM,
        Sk::Field => SymbolKind::FIELD,
        Sk::Variant => SymbolKind::ENUM_MEMBER,
        Sk::Test => SymbolKind::EVENT,
        Sk::Signal => SymbolKind::EVENT,
        Sk::Query => SymbolKind::PROPERTY,
    }
}

/// The outline of the context's file: its declarations with their fields and variants.
fn outline(cx: &Context<'_>) -> Vec<DocumentSymbol> {
    cx.analysis
        .symbols(cx.path)
        .into_iter()
        .filter_map(|s| document_symbol(cx, s))
        .collect()
}

fn document_symbol(
    context: &Context<'_>,
    symbol: analysis::DocumentSymbol,
) -> Option<DocumentSymbol> {
    let children: Vec<DocumentSymbol> = symbol
        .children
        .into_iter()
        .filter_map(|c| document_symbol(context, c))
        .collect();
    #[allow(deprecated)]
    Some(DocumentSymbol {
        name: symbol.name,
        detail: symbol.detail,
        kind: symbol_kind(symbol.kind),
        tags: None,
        deprecated: None,
        range: context.range(context.path, symbol.span)?,
        selection_range: context.range(context.path, symbol.selection)?,
        children: (!children.is_empty()).then_some(children),
    })
}

fn markdown(value: String) -> Documentation {
    Documentation::MarkupContent(MarkupContent {
        kind: MarkupKind::Markdown,
        value,
    })
}

/// The client command a test's code lens runs, with the file's path and the test's name.
pub const RUN_TEST_COMMAND: &str = "flow.runTest";

impl LanguageServer for Backend {
    async fn initialize(&self, _: InitializeParams) -> Result<InitializeResult> {
        Ok(InitializeResult {
            capabilities: ServerCapabilities {
                position_encoding: Some(PositionEncodingKind::UTF16),
                text_document_sync: Some(TextDocumentSyncCapability::Options(
                    TextDocumentSyncOptions {
                        open_close: Some(true),
                        change: Some(TextDocumentSyncKind::INCREMENTAL),
                        save: Some(TextDocumentSyncSaveOptions::SaveOptions(SaveOptions {
                            include_text: Some(false),
                        })),
                        ..TextDocumentSyncOptions::default()
                    },
                )),
                hover_provider: Some(HoverProviderCapability::Simple(true)),
                definition_provider: Some(OneOf::Left(true)),
                references_provider: Some(OneOf::Left(true)),
                rename_provider: Some(OneOf::Left(true)),
                completion_provider: Some(CompletionOptions {
                    trigger_characters: Some(vec![".".to_string()]),
                    ..CompletionOptions::default()
                }),
                document_symbol_provider: Some(OneOf::Left(true)),
                workspace_symbol_provider: Some(OneOf::Left(true)),
                code_action_provider: Some(CodeActionProviderCapability::Simple(true)),
                code_lens_provider: Some(CodeLensOptions {
                    resolve_provider: Some(false),
                }),
                document_formatting_provider: Some(OneOf::Left(true)),
                ..ServerCapabilities::default()
            },
            server_info: Some(ServerInfo {
                name: "flow-lsp".to_string(),
                version: Some(env!("CARGO_PKG_VERSION").to_string()),
            }),
            offset_encoding: None,
        })
    }

    async fn shutdown(&self) -> Result<()> {
        Ok(())
    }

    async fn did_open(&self, params: DidOpenTextDocumentParams) {
        let document = params.text_document;
        let path = path_of(&document.uri);
        {
            let mut state = lock(&self.state);
            state.touch(&path);
            state.published.remove(document.uri.as_str());
            // It publishes its own analysis from now on.
            state.imported.remove(&path);
            state.docs.insert(
                path,
                Document {
                    uri: document.uri,
                    version: document.version,
                    text: document.text.into(),
                    analysis: None,
                    published_generation: 0,
                },
            );
        }
        self.wake_worker();
    }

    async fn did_change(&self, params: DidChangeTextDocumentParams) {
        let path = path_of(&params.text_document.uri);
        {
            let mut state = lock(&self.state);
            let Some(doc) = state.docs.get_mut(&path) else {
                return;
            };
            // Versions only grow; an older or repeated change is a stale message.
            if params.text_document.version <= doc.version {
                return;
            }
            let mut text = doc.text.to_string();
            for change in params.content_changes {
                match change.range {
                    Some(range) => apply_edit(&mut text, range, &change.text),
                    None => text = change.text,
                }
            }
            doc.text = text.into();
            doc.version = params.text_document.version;
            state.touch(&path);
        }
        self.wake_worker();
    }

    async fn did_save(&self, params: DidSaveTextDocumentParams) {
        let path = path_of(&params.text_document.uri);
        {
            let mut state = lock(&self.state);
            if !state.docs.contains_key(&path) {
                return;
            }
            // Publish again even if nothing changed: a save asks for a fresh check.
            state.published.remove(params.text_document.uri.as_str());
            state.touch(&path);
        }
        self.wake_worker();
    }

    async fn did_close(&self, params: DidCloseTextDocumentParams) {
        let uri = params.text_document.uri;
        let path = path_of(&uri);
        {
            let mut state = lock(&self.state);
            state.docs.remove(&path);
            state.published.remove(uri.as_str());
            // Files importing it now read it from disk.
            state.touch(&path);
            state.to_clear.push(uri);
        }
        self.outlines.forget(&path);
        self.wake_worker();
    }

    async fn hover(&self, params: HoverParams) -> Result<Option<Hover>> {
        let at = params.text_document_position_params;
        Ok(self
            .at_position(&at.text_document.uri, at.position, |cx, offset| {
                let hover = cx.analysis.hover_at(cx.path, offset)?;
                Some(Hover {
                    contents: HoverContents::Markup(MarkupContent {
                        kind: MarkupKind::Markdown,
                        value: hover.markdown,
                    }),
                    range: cx.range(cx.path, hover.range),
                })
            })
            .await)
    }

    async fn goto_definition(
        &self,
        params: GotoDefinitionParams,
    ) -> Result<Option<GotoDefinitionResponse>> {
        let at = params.text_document_position_params;
        Ok(self
            .at_position(&at.text_document.uri, at.position, |cx, offset| {
                let target = cx.analysis.definition_at(cx.path, offset)?;
                let location = cx.location(&target.path, target.span)?;
                Some(GotoDefinitionResponse::Scalar(location))
            })
            .await)
    }

    async fn references(&self, params: ReferenceParams) -> Result<Option<Vec<Location>>> {
        let at = params.text_document_position;
        let include = params.context.include_declaration;
        Ok(self
            .references_everywhere(&at.text_document.uri, at.position, include)
            .await)
    }

    async fn rename(&self, params: RenameParams) -> Result<Option<WorkspaceEdit>> {
        let at = params.text_document_position;
        let new_name = params.new_name;
        // The document's own analysis decides whether this can be renamed at all.
        let allowed = self
            .at_position(&at.text_document.uri, at.position, |cx, offset| {
                Some(cx.analysis.rename(cx.path, offset, &new_name).map(|_| ()))
            })
            .await;
        match allowed {
            Some(Ok(())) => {}
            Some(Err(message)) => {
                return Err(tower_lsp_server::jsonrpc::Error::invalid_params(message));
            }
            None => return Ok(None),
        }
        let locations = self
            .references_everywhere(&at.text_document.uri, at.position, true)
            .await
            .unwrap_or_default();
        let mut changes: HashMap<Uri, Vec<TextEdit>> = HashMap::new();
        for location in locations {
            changes.entry(location.uri).or_default().push(TextEdit {
                range: location.range,
                new_text: new_name.clone(),
            });
        }
        Ok(Some(WorkspaceEdit {
            changes: Some(changes),
            ..WorkspaceEdit::default()
        }))
    }

    async fn completion(&self, params: CompletionParams) -> Result<Option<CompletionResponse>> {
        let at = params.text_document_position;
        Ok(self
            .at_position(&at.text_document.uri, at.position, |cx, offset| {
                let items = cx
                    .analysis
                    .completions_at(cx.path, offset)
                    .into_iter()
                    .enumerate()
                    .map(|(index, c)| CompletionItem {
                        label: c.label,
                        kind: Some(completion_kind(c.kind)),
                        detail: c.detail,
                        documentation: c.documentation.map(markdown),
                        // Keep the analysis's order (most relevant first).
                        sort_text: Some(format!("{index:04}")),
                        ..CompletionItem::default()
                    })
                    .collect();
                Some(CompletionResponse::Array(items))
            })
            .await)
    }

    async fn document_symbol(
        &self,
        params: DocumentSymbolParams,
    ) -> Result<Option<DocumentSymbolResponse>> {
        let Some((path, shared)) = self.analysis(&params.text_document.uri).await else {
            return Ok(None);
        };
        // The outline's text, once per analysis; the answer is a placeholder that
        // `outline::write_out` replaces by it (the library would build a `Value` of it).
        let text = self.outlines.text(&path, &shared, || {
            let state = lock(&self.state);
            let analysis = lock(&shared);
            let cx = Context::new(&analysis, &state, &path);
            let symbols: Vec<DocumentSymbol> =
                catch_unwind(AssertUnwindSafe(|| outline(&cx))).ok()?;
            serde_json::to_string(&symbols).ok()
        });
        let Some(text) = text else {
            return Ok(None);
        };
        #[allow(deprecated)]
        let placeholder = DocumentSymbol {
            name: self.outlines.placeholder(text),
            detail: None,
            kind: SymbolKind::NAMESPACE,
            tags: None,
            deprecated: None,
            range: Range::default(),
            selection_range: Range::default(),
            children: None,
        };
        Ok(Some(DocumentSymbolResponse::Nested(vec![placeholder])))
    }

    async fn symbol(
        &self,
        params: WorkspaceSymbolParams,
    ) -> Result<Option<WorkspaceSymbolResponse>> {
        let uris: Vec<Uri> = lock(&self.state)
            .docs
            .values()
            .map(|d| d.uri.clone())
            .collect();
        let mut out: Vec<WorkspaceSymbol> = Vec::new();
        for uri in uris {
            let found = self
                .with_analysis(&uri, |cx| {
                    Some(
                        cx.analysis
                            .workspace_symbols(&params.query)
                            .into_iter()
                            .filter_map(|(path, symbol)| {
                                Some(WorkspaceSymbol {
                                    name: symbol.name,
                                    kind: symbol_kind(symbol.kind),
                                    tags: None,
                                    container_name: None,
                                    location: OneOf::Left(cx.location(&path, symbol.selection)?),
                                    data: None,
                                })
                            })
                            .collect::<Vec<_>>(),
                    )
                })
                .await
                .unwrap_or_default();
            for symbol in found {
                let seen = out.iter().any(|s| {
                    s.name == symbol.name
                        && format!("{:?}", s.location) == format!("{:?}", symbol.location)
                });
                if !seen {
                    out.push(symbol);
                }
            }
        }
        Ok(Some(WorkspaceSymbolResponse::Nested(out)))
    }

    async fn code_action(&self, params: CodeActionParams) -> Result<Option<CodeActionResponse>> {
        let uri = params.text_document.uri;
        let wanted = params.range;
        let actions = self
            .with_analysis(&uri, |cx| {
                let text = cx.analysis.text(cx.path)?;
                let map = LineMap::new(text);
                let (start, end) = (map.offset(text, wanted.start), map.offset(text, wanted.end));
                let mut actions = Vec::new();
                for d in cx.analysis.diagnostics_for(cx.path) {
                    let span = d.primary.span;
                    let overlaps = span.start as usize <= end && start <= span.end as usize;
                    if !analysis::is_unapproved_call(d) || !overlaps {
                        continue;
                    }
                    let Some(edit) = cx.analysis.approval_gate_fix(cx.path, span) else {
                        continue;
                    };
                    let diagnostic = to_lsp_diagnostic(cx, d);
                    actions.push(CodeActionOrCommand::CodeAction(CodeAction {
                        title: "Insert an `await approval` gate before this call".to_string(),
                        kind: Some(CodeActionKind::QUICKFIX),
                        diagnostics: diagnostic.map(|d| vec![d]),
                        edit: Some(cx.edits(vec![edit])),
                        is_preferred: Some(true),
                        ..CodeAction::default()
                    }));
                }
                Some(actions)
            })
            .await;
        Ok(actions)
    }

    /// "Run test" above every `test` block: the client's `flow.runTest` command runs
    /// `flowc test FILE --filter NAME --exact` (the server itself never runs a workflow).
    async fn code_lens(&self, params: CodeLensParams) -> Result<Option<Vec<CodeLens>>> {
        let uri = params.text_document.uri;
        let lenses = self
            .with_analysis(&uri, |cx| {
                let lenses = cx
                    .analysis
                    .symbols(cx.path)
                    .into_iter()
                    .filter(|s| s.kind == analysis::SymbolKind::Test)
                    .filter_map(|s| {
                        Some(CodeLens {
                            range: cx.range(cx.path, s.selection)?,
                            command: Some(Command {
                                title: "▶ Run test".to_string(),
                                command: RUN_TEST_COMMAND.to_string(),
                                arguments: Some(vec![
                                    serde_json::Value::String(cx.path.to_string()),
                                    serde_json::Value::String(s.name),
                                ]),
                            }),
                            data: None,
                        })
                    })
                    .collect();
                Some(lenses)
            })
            .await;
        Ok(lenses)
    }

    async fn formatting(&self, params: DocumentFormattingParams) -> Result<Option<Vec<TextEdit>>> {
        let path = path_of(&params.text_document.uri);
        let text = match lock(&self.state).docs.get(&path) {
            Some(doc) => doc.text.clone(),
            None => return Ok(None),
        };
        // The engine of `flowc fmt`; a file with syntax errors is left as it is.
        let formatted = catch_unwind(AssertUnwindSafe(|| flow_compiler::format::format(&text)));
        match formatted {
            Ok(Ok(new_text)) if new_text == *text => Ok(Some(Vec::new())),
            Ok(Ok(new_text)) => {
                let map = LineMap::new(&text);
                Ok(Some(vec![TextEdit {
                    range: map.range(&text, 0, text.len()),
                    new_text,
                }]))
            }
            Ok(Err(error)) => {
                self.client
                    .log_message(MessageType::INFO, format!("{path}: not formatted: {error}"))
                    .await;
                Ok(None)
            }
            Err(_) => Ok(None),
        }
    }
}
