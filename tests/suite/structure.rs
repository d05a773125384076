//! The crate's layers point one way: the public layer calls the models,
//! the models call the listener layer, nothing below imports anything
//! above. Checked from the source: every `crate::<module>` path in a
//! file is an edge from the file's top-level module to that module, and
//! the graph of those edges must have no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/models/process/child.rs`
/// → `models`); `None` for the crate root and the binary.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// The modules named by `crate::NAME` paths in `text`, comments
/// included (a doc link to a module above is a dependency too).
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let preceded = text[..i].chars().next_back();
        if preceded.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `readyloop_crate::`, not ours
        }
        let name: String = text[i + "crate::".len()..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.chars().next().is_some_and(char::is_lowercase) {
            found.insert(name);
        }
    }
    found
}

/// A cycle through `node`, if any, as the modules on it.
fn cycle(
    graph: &BTreeMap<String, BTreeSet<String>>,
    node: &str,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    if let Some(at) = path.iter().position(|n| n == node) {
        return Some(path[at..].to_vec());
    }
    path.push(node.to_string());
    for next in graph.get(node).into_iter().flatten() {
        if let Some(found) = cycle(graph, next, path) {
            return Some(found);
        }
    }
    path.pop();
    None
}

/// No module imports, through any chain, a module that imports it.
#[test]
fn the_modules_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(from) = top_module(&src, file) else { continue };
        let text = fs::read_to_string(file).expect("read source");
        let edges = graph.entry(from.clone()).or_default();
        edges.extend(named_modules(&text).into_iter().filter(|m| *m != from));
    }
    assert!(graph.len() > 10, "too few modules found: {graph:?}");
    assert!(graph["models"].contains("listener"), "{graph:?}");
    for node in graph.keys() {
        let found = cycle(&graph, node, &mut Vec::new());
        assert!(found.is_none(), "module cycle: {found:?}");
    }
}

/// The check sees a cycle when there is one.
#[test]
fn a_cycle_is_found() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.entry("server".into()).or_default().insert("models".into());
    graph.entry("models".into()).or_default().insert("server".into());
    assert!(cycle(&graph, "server", &mut Vec::new()).is_some());
    let text = "use crate::listener::Listener; // see crate::server";
    let names: Vec<String> = named_modules(text).into_iter().collect();
    assert_eq!(names, ["listener", "server"]);
}
