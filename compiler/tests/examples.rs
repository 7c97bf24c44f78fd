//! Every seed scenario in `examples/` checks clean: no errors and no warnings.

use flow_compiler::sources::SourceLoader;
use std::path::{Path, PathBuf};

/// Reads files relative to the workspace root.
struct FsLoader {
    root: PathBuf,
}

impl SourceLoader for FsLoader {
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        let full = if Path::new(path).is_absolute() {
            PathBuf::from(path)
        } else {
            self.root.join(path)
        };
        std::fs::read(&full).map_err(|e| e.to_string())
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the compiler crate lives inside the workspace")
        .to_path_buf()
}

#[test]
fn every_example_checks_clean() {
    let root = workspace_root();
    let loader = FsLoader { root: root.clone() };
    let mut paths: Vec<String> = std::fs::read_dir(root.join("examples"))
        .expect("examples/ exists")
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "flow"))
        .map(|path| {
            let name = path.file_name().expect("a file name").to_string_lossy();
            format!("examples/{name}")
        })
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 3,
        "expected the seed scenarios in examples/, found {paths:?}"
    );

    let mut failures = Vec::new();
    for path in &paths {
        let program = flow_compiler::check_paths(std::slice::from_ref(path), &loader)
            .unwrap_or_else(|e| panic!("cannot read {}: {}", e.path, e.reason));
        // Notes (an approval waived) are for reviewers, not problems.
        for d in program
            .diagnostics
            .iter()
            .filter(|d| d.is_error() || d.is_warning())
        {
            let file = program.db.display_name(d.file());
            let (line, col) = program.db.line_col(d.file(), d.primary.span.start as usize);
            let severity = if d.is_error() { "error" } else { "warning" };
            failures.push(format!(
                "{file}:{line}:{col}: {severity} {}: {} ({})",
                d.code.id, d.message, d.primary.message
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "examples must check clean (no errors, no warnings; notes are fine):\n{}",
        failures.join("\n")
    );
}
