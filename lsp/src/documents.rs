//! The open documents, their analyses, and the loader that reads open buffers before disk.
//!
//! Each open document is analysed as the root of its own program (`flowc check FILE`
//! reports exactly the same diagnostics), through an [`OverlayLoader`] that reads the open
//! buffers first and the disk for everything else. An analysis remembers the files it
//! loaded; it is *stale* once one of them changed after it was made, so editing an imported
//! file makes the analyses of the files that import it stale too.
//!
//! Files that are not open but that an open document loads get the diagnostics that
//! document's program has for them (what `flowc check` on the open file reports there);
//! they are tracked in [`State::imported`] so they are cleared once no open document loads
//! them any more.

use flow_compiler::analysis::{Analysis, analyze};
use flow_compiler::sources::{FsLoader, SourceLoader};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tower_lsp_server::ls_types::Uri;

/// An analysis shared between the diagnostics worker and request handlers. The compiler's
/// program is `Send` but not `Sync`, hence the mutex (held only while answering a query).
pub type SharedAnalysis = Arc<Mutex<Analysis>>;

pub struct Cached {
    /// The state's generation when the inputs were read.
    pub generation: u64,
    pub analysis: SharedAnalysis,
    /// Every file the analysis loaded (the root and what it imports).
    pub files: Vec<String>,
}

pub struct Document {
    pub uri: Uri,
    pub version: i32,
    pub text: Arc<str>,
    pub analysis: Option<Cached>,
    /// The generation of the analysis whose diagnostics were last published (0: none).
    pub published_generation: u64,
}

/// What the diagnostics worker should do next.
pub enum Job {
    /// Analyse this document (its analysis is missing or stale).
    Analyze(String),
    /// Publish the diagnostics of its fresh analysis, made at this generation.
    Publish(String, SharedAnalysis, u64),
    /// Publish no diagnostics for a closed document.
    Clear(Uri),
}

#[derive(Default)]
pub struct State {
    /// Open documents by path (see [`path_of`]).
    pub docs: HashMap<String, Document>,
    /// Bumped by every change to any document.
    pub generation: u64,
    /// For each path, the generation of its last change (open, edit, close).
    pub changed_at: HashMap<String, u64>,
    /// What was last published for each URI, so unchanged diagnostics are not sent again.
    pub published: HashMap<String, String>,
    /// Closed documents whose diagnostics the worker must clear (all publishing happens on
    /// the worker, so a clear never overtakes an older publication).
    pub to_clear: Vec<Uri>,
    /// Files that are not open whose diagnostics were published because an open document
    /// loads them (path → URI).
    pub imported: HashMap<String, Uri>,
}

impl State {
    /// Records a change to `path` and returns the new generation.
    pub fn touch(&mut self, path: &str) -> u64 {
        self.generation += 1;
        self.changed_at.insert(path.to_string(), self.generation);
        self.generation
    }

    /// Whether an analysis made at `generation` over `files` is out of date.
    pub fn is_stale(&self, generation: u64, files: &[String]) -> bool {
        files
            .iter()
            .any(|f| self.changed_at.get(f).is_some_and(|&g| g > generation))
    }

    /// The document's analysis if it is up to date.
    pub fn fresh_analysis(&self, path: &str) -> Option<SharedAnalysis> {
        let cached = self.docs.get(path)?.analysis.as_ref()?;
        (!self.is_stale(cached.generation, &cached.files)).then(|| cached.analysis.clone())
    }

    /// The inputs of an analysis of `path`: the generation and the open buffers.
    pub fn snapshot(&self) -> (u64, OverlayLoader) {
        let overlay = self
            .docs
            .iter()
            .map(|(path, doc)| (path.clone(), doc.text.clone()))
            .collect();
        (self.generation, OverlayLoader { overlay })
    }

    /// Keeps `analysis` for `path` unless the document closed or a newer one is kept.
    pub fn store(
        &mut self,
        path: &str,
        generation: u64,
        analysis: SharedAnalysis,
        files: Vec<String>,
    ) {
        if let Some(doc) = self.docs.get_mut(path)
            && doc
                .analysis
                .as_ref()
                .is_none_or(|c| c.generation <= generation)
        {
            doc.analysis = Some(Cached {
                generation,
                analysis,
                files,
            });
        }
    }

    /// The next job of the diagnostics worker: clearing closed documents, then documents
    /// whose analysis is missing or stale (most recently changed first), then fresh analyses not yet published
    /// (a request may have made one).
    pub fn next_job(&mut self) -> Option<Job> {
        if let Some(uri) = self.to_clear.pop() {
            return Some(Job::Clear(uri));
        }
        if let Some(uri) = self.take_orphan() {
            return Some(Job::Clear(uri));
        }
        let mut stale: Vec<(u64, &String)> = Vec::new();
        let mut unpublished = None;
        for (path, doc) in &self.docs {
            match &doc.analysis {
                Some(cached) if !self.is_stale(cached.generation, &cached.files) => {
                    if cached.generation > doc.published_generation {
                        unpublished = Some(Job::Publish(
                            path.clone(),
                            cached.analysis.clone(),
                            cached.generation,
                        ));
                    }
                }
                _ => stale.push((self.changed_at.get(path).copied().unwrap_or(0), path)),
            }
        }
        stale.sort();
        match stale.last() {
            Some((_, path)) => Some(Job::Analyze((*path).clone())),
            None => unpublished,
        }
    }
}

impl State {
    /// A file published as an import that no open document loads any more (nor is it open
    /// itself): forgotten here, its URI returned to be cleared. An analysis that went stale
    /// still counts until it is replaced, so a file is never cleared just before it is
    /// published again.
    fn take_orphan(&mut self) -> Option<Uri> {
        let loaded = |path: &str| {
            self.docs.contains_key(path)
                || self.docs.values().any(|doc| {
                    doc.analysis
                        .as_ref()
                        .is_some_and(|c| c.files.iter().any(|f| f == path))
                })
        };
        let orphan = self.imported.keys().find(|path| !loaded(path))?.clone();
        let uri = self.imported.remove(&orphan)?;
        self.published.remove(uri.as_str());
        Some(uri)
    }
}

/// Reads open buffers first, then files on disk (absolute paths only).
pub struct OverlayLoader {
    overlay: HashMap<String, Arc<str>>,
}

impl SourceLoader for OverlayLoader {
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        if let Some(text) = self.overlay.get(path) {
            return Ok(text.as_bytes().to_vec());
        }
        if !path.starts_with('/') && !looks_like_windows_path(path) {
            return Err("no such file (not saved on disk)".to_string());
        }
        FsLoader.read(path)
    }
}

fn looks_like_windows_path(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.len() > 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':'
}

/// Analyses `path` as a root with the given inputs; returns the analysis and its files.
pub fn run_analysis(path: &str, loader: &OverlayLoader) -> (Analysis, Vec<String>) {
    let analysis = analyze(&[path.to_string()], loader);
    let files = analysis.paths().map(str::to_string).collect();
    (analysis, files)
}

/// The compiler's name for a document: its file path for `file:` URIs (with `/`
/// separators), the URI itself otherwise (`untitled:…`).
pub fn path_of(uri: &Uri) -> String {
    let is_file = uri.scheme().as_str().eq_ignore_ascii_case("file");
    if is_file && let Some(path) = uri.to_file_path() {
        return path.to_string_lossy().replace('\\', "/");
    }
    uri.as_str().to_string()
}

/// The URI of a path the compiler names: an open document's own URI, else a `file:` URI.
pub fn uri_of(state: &State, path: &str) -> Option<Uri> {
    if let Some(doc) = state.docs.get(path) {
        return Some(doc.uri.clone());
    }
    if path.starts_with('/') || looks_like_windows_path(path) {
        return Uri::from_file_path(path);
    }
    path.parse().ok()
}
