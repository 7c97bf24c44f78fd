//! The front door of the compiler: root paths in, every file they import loaded and parsed,
//! the import graph checked for missing files and cycles, and each file type-checked.
//! Out come the sources, the syntax trees, the checked program and all diagnostics.

use crate::check::{self, Checked};
use crate::diagnostics::{self, Diagnostic, codes};
use crate::sources::{SourceDb, SourceLoader, resolve_import};
use crate::span::{FileId, Span};
use crate::syntax::{self, SyntaxTree, ast};
use std::collections::HashMap;

pub struct Program {
    pub db: SourceDb,
    /// One per file in `db`, same order.
    pub trees: Vec<SyntaxTree>,
    /// For each file, its imports: the import item's span and the file it names (when found).
    pub imports: Vec<Vec<(Span, Option<FileId>)>>,
    pub roots: Vec<FileId>,
    pub checked: Checked,
    /// Sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
}

/// A root path that could not be read at all: a usage error, not a diagnostic in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootError {
    pub path: String,
    pub reason: String,
}

impl Program {
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    pub fn warnings(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_warning()).count()
    }

    /// Notes for a reviewer (approvals waived): neither errors nor warnings.
    pub fn notes(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == crate::diagnostics::Severity::Note)
            .count()
    }
}

/// Loads, parses and checks the given files and everything they import.
pub fn check_paths(roots: &[String], loader: &dyn SourceLoader) -> Result<Program, RootError> {
    load_and_check(roots, loader, false)
}

/// [`check_paths`], recording the facts an editor needs when `ide` is set
/// ([`crate::check::IdeFacts`], used by [`crate::analysis`]).
pub(crate) fn load_and_check(
    roots: &[String],
    loader: &dyn SourceLoader,
    ide: bool,
) -> Result<Program, RootError> {
    let mut loading = Loading {
        loader,
        db: SourceDb::default(),
        trees: Vec::new(),
        imports: Vec::new(),
        diagnostics: Vec::new(),
    };
    let mut root_ids = Vec::new();
    for root in roots {
        let path = resolve_import("", root);
        let path = if root.starts_with('/') {
            root.clone()
        } else {
            path
        };
        match loading.load(&path) {
            Ok(id) => root_ids.push(id),
            Err(reason) => {
                return Err(RootError {
                    path: root.clone(),
                    reason,
                });
            }
        }
    }
    loading.load_imports();
    loading.report_cycles();
    let Loading {
        db,
        trees,
        imports,
        mut diagnostics,
        ..
    } = loading;
    let checked = check::check_program_with(&db, &trees, &imports, &mut diagnostics, ide);
    drop_cascades(&mut diagnostics);
    drop_warnings_in_tests(&trees, &mut diagnostics);
    diagnostics::sort(&mut diagnostics);
    diagnostics.dedup();
    diagnostics::cap_per_file(&mut diagnostics);
    Ok(Program {
        db,
        trees,
        imports,
        roots: root_ids,
        checked,
        diagnostics,
    })
}

/// A test's values are checked as small helper workflows (see `testing.rs`): an unused
/// pattern binding or the `_` arm the runner adds after it would be noise, not advice.
fn drop_warnings_in_tests(trees: &[SyntaxTree], diagnostics: &mut Vec<Diagnostic>) {
    let tests: Vec<(FileId, Span)> = trees
        .iter()
        .enumerate()
        .flat_map(|(file, tree)| {
            tree.module.items.iter().filter_map(move |item| match item {
                ast::Item::Test(test) => Some((FileId(file as u32), test.span)),
                _ => None,
            })
        })
        .collect();
    if tests.is_empty() {
        return;
    }
    diagnostics.retain(|d| {
        d.is_error()
            || !tests.iter().any(|(file, span)| {
                d.file() == *file
                    && span.start <= d.primary.span.start
                    && d.primary.span.end <= span.end
            })
    });
}

/// In a file with syntax errors, semantic diagnostics are mostly echoes of the broken
/// syntax (a half-parsed `let` looks unused, a cut-off body looks like a missing return), so
/// such a file reports its syntax errors only; other files are still fully checked.
fn drop_cascades(diagnostics: &mut Vec<Diagnostic>) {
    let broken: std::collections::HashSet<FileId> = diagnostics
        .iter()
        .filter(|d| d.code.id.starts_with("E01"))
        .map(|d| d.file())
        .collect();
    diagnostics.retain(|d| is_syntax(d) || !broken.contains(&d.file()));
    // Names a file takes from an import that is missing are unknown for that reason only.
    let missing_import: std::collections::HashSet<FileId> = diagnostics
        .iter()
        .filter(|d| d.code == codes::IMPORT_NOT_FOUND)
        .map(|d| d.file())
        .collect();
    diagnostics.retain(|d| {
        !(missing_import.contains(&d.file())
            && (d.code == codes::UNKNOWN_NAME || d.code == codes::UNKNOWN_TYPE))
    });
}

fn is_syntax(diagnostic: &Diagnostic) -> bool {
    diagnostic.code.id.starts_with("E01")
        || diagnostic.code == codes::IMPORT_NOT_FOUND
        || diagnostic.code == codes::IMPORT_CYCLE
}

/// Checks one in-memory text as a file named `path` (imports are not followed).
pub fn check_text(path: &str, text: &str) -> Program {
    let loader = crate::sources::MemoryLoader::default().with(path, text);
    match check_paths(&[path.to_string()], &loader) {
        Ok(program) => program,
        Err(_) => unreachable_program(),
    }
}

fn unreachable_program() -> Program {
    // `check_paths` over a loader that holds the root always loads it.
    Program {
        db: SourceDb::default(),
        trees: Vec::new(),
        imports: Vec::new(),
        roots: Vec::new(),
        checked: Checked::default(),
        diagnostics: Vec::new(),
    }
}

struct Loading<'a> {
    loader: &'a dyn SourceLoader,
    db: SourceDb,
    trees: Vec<SyntaxTree>,
    imports: Vec<Vec<(Span, Option<FileId>)>>,
    diagnostics: Vec<Diagnostic>,
}

impl Loading<'_> {
    /// Reads and parses a file once; later calls return the same id.
    fn load(&mut self, path: &str) -> Result<FileId, String> {
        if let Some(id) = self.db.find(path) {
            return Ok(id);
        }
        let bytes = self.loader.read(path)?;
        let id = match String::from_utf8(bytes) {
            Ok(text) => {
                let id = self.db.add(path, text);
                let tree = syntax::parse_file(id, self.db.text(id));
                self.trees.push(tree);
                id
            }
            Err(error) => {
                let valid = error.utf8_error().valid_up_to();
                let text = String::from_utf8_lossy(error.as_bytes()).into_owned();
                let id = self.db.add(path, text);
                // The stored text has U+FFFD where the bad bytes were; point at all of it.
                let bad = Span::new(valid, valid + char::REPLACEMENT_CHARACTER.len_utf8());
                let diagnostic = Diagnostic::error(
                    codes::NOT_UTF8,
                    id,
                    bad,
                    format!("invalid UTF-8 at byte {valid}"),
                )
                .with_help("save the file as UTF-8; a binary file is not a Flow source");
                self.trees.push(SyntaxTree {
                    module: ast::Module::default(),
                    doc_comments: Vec::new(),
                    comments: Vec::new(),
                    diagnostics: vec![diagnostic],
                    tests: Default::default(),
                });
                id
            }
        };
        self.imports.push(Vec::new());
        Ok(id)
    }

    /// Follows imports breadth-first until every imported file is loaded or reported.
    fn load_imports(&mut self) {
        let mut next = 0;
        while next < self.trees.len() {
            let from = FileId(next as u32);
            let wanted: Vec<(Span, String)> = self.trees[next]
                .module
                .items
                .iter()
                .filter_map(|item| match item {
                    ast::Item::Import(import) => {
                        Some((import.path.span, import.path.value.to_string()))
                    }
                    _ => None,
                })
                .collect();
            for (span, import) in wanted {
                let path = resolve_import(self.db.display_name(from), &import);
                let target = match self.load(&path) {
                    Ok(id) => Some(id),
                    Err(reason) => {
                        self.diagnostics.push(
                            Diagnostic::error(
                                codes::IMPORT_NOT_FOUND,
                                from,
                                span,
                                format!("cannot read `{path}`: {reason}"),
                            )
                            .with_note("names this file uses from it are not checked until it is found")
                            .with_help("imports are relative to the importing file; check the path and its spelling"),
                        );
                        None
                    }
                };
                self.imports[next].push((span, target));
            }
            next += 1;
        }
        for tree in &self.trees {
            self.diagnostics.extend(tree.diagnostics.iter().cloned());
        }
    }

    /// Reports each import that closes a cycle, naming the whole cycle.
    fn report_cycles(&mut self) {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Active,
            Done,
        }
        let count = self.trees.len();
        let mut marks = vec![Mark::New; count];
        let mut stack: Vec<FileId> = Vec::new();
        let mut found: HashMap<(FileId, Span), Vec<FileId>> = HashMap::new();

        fn visit(
            file: FileId,
            imports: &[Vec<(Span, Option<FileId>)>],
            marks: &mut [Mark],
            stack: &mut Vec<FileId>,
            found: &mut HashMap<(FileId, Span), Vec<FileId>>,
        ) {
            marks[file.0 as usize] = Mark::Active;
            stack.push(file);
            for &(span, target) in &imports[file.0 as usize] {
                let Some(target) = target else { continue };
                match marks[target.0 as usize] {
                    Mark::New => visit(target, imports, marks, stack, found),
                    Mark::Active => {
                        let start = stack.iter().position(|f| *f == target).unwrap_or(0);
                        found.insert((file, span), stack[start..].to_vec());
                    }
                    Mark::Done => {}
                }
            }
            stack.pop();
            marks[file.0 as usize] = Mark::Done;
        }

        for file in 0..count {
            if marks[file] == Mark::New {
                visit(
                    FileId(file as u32),
                    &self.imports,
                    &mut marks,
                    &mut stack,
                    &mut found,
                );
            }
        }
        let mut cycles: Vec<_> = found.into_iter().collect();
        cycles.sort();
        for ((file, span), cycle) in cycles {
            let mut names: Vec<&str> = cycle.iter().map(|f| self.db.display_name(*f)).collect();
            names.push(self.db.display_name(cycle[0]));
            self.diagnostics.push(
                Diagnostic::error(
                    codes::IMPORT_CYCLE,
                    file,
                    span,
                    "this import closes a cycle",
                )
                .with_message(format!("Import cycle: {}", names.join(" → ")))
                .with_help("move the declarations the files share into a separate file that each of them imports"),
            );
        }
    }
}
