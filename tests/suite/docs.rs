//! The documentation keeps up with the code: every relative link in
//! README.md and docs/*.md leads to a file that exists and to a heading
//! that makes its `#anchor`, every flag `--help` lists for `serve`,
//! `load` and `client` is documented, and every trap the source cites has
//! its entry in docs/traps.md. Read from the files and the binary's
//! `--help`: no server, no network.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::support::server::binary;

/// One Markdown file: its path from the repository root, and its text.
struct Doc {
    path: PathBuf,
    text: String,
}

/// The repository root.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every docs/*.md.
fn docs() -> Vec<Doc> {
    let mut paths = vec![PathBuf::from("README.md")];
    let mut more: Vec<PathBuf> = fs::read_dir(root().join("docs"))
        .expect("read docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| p.strip_prefix(root()).expect("under the root").to_owned())
        .collect();
    more.sort();
    paths.extend(more);
    paths
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(root().join(&path))
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            Doc { path, text }
        })
        .collect()
}

/// The lines of `text` outside fenced code blocks, numbered from 1.
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<String> = None;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        let run: String = t.chars().take_while(|c| *c == '`').collect();
        let run = match run.len() {
            0 => t.chars().take_while(|c| *c == '~').collect(),
            _ => run,
        };
        match &fence {
            Some(open) if run.len() >= open.len() && run[..1] == open[..1] => {
                fence = None;
            }
            Some(_) => {}
            None if run.len() >= 3 => fence = Some(run),
            None => lines.push((i + 1, line)),
        }
    }
    lines
}

/// `line` with its inline code spans blanked out (a link in backticks is
/// an example, not a link).
fn without_code(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        let ticks = rest[start..].chars().take_while(|c| *c == '`').count();
        let fence = &rest[start..start + ticks];
        let Some(len) = rest[start + ticks..].find(fence) else { break };
        out.push_str(&rest[..start]);
        rest = &rest[start + ticks + len + ticks..];
    }
    out.push_str(rest);
    out
}

/// The anchor GitHub gives a heading: lowercased, punctuation dropped
/// but for `-` and `_`, spaces made `-`. A link's text stands for the
/// link; backticks are punctuation.
fn slug(heading: &str) -> String {
    let mut text = heading.to_string();
    while let (Some(open), Some(mid)) = (text.find('['), text.find("](")) {
        let Some(close) = text[mid..].find(')') else { break };
        if open > mid {
            break;
        }
        let label = text[open + 1..mid].to_string();
        text.replace_range(open..mid + close + 1, &label);
    }
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every anchor the headings of `text` make; a repeated heading gets
/// `-1`, `-2`… as on GitHub. HTML `id="…"` and `name="…"` count too.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut found = BTreeSet::new();
    let mut ids = Vec::new();
    let mut add = |heading: &str| {
        let base = slug(heading);
        let n = seen.entry(base.clone()).or_insert(0);
        found.insert(match *n {
            0 => base.clone(),
            n => format!("{base}-{n}"),
        });
        *n += 1;
    };
    let lines = prose(text);
    for (k, &(_, line)) in lines.iter().enumerate() {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        let after = &line[hashes..];
        if (1..=6).contains(&hashes)
            && (after.is_empty() || after.starts_with(' '))
        {
            add(after.trim().trim_end_matches('#'));
        }
        let t = line.trim();
        let underline = !t.is_empty()
            && (t.chars().all(|c| c == '=') || t.chars().all(|c| c == '-'));
        if let (true, Some(&(n, prev))) =
            (underline, k.checked_sub(1).map(|j| &lines[j]))
        {
            let setext = lines[k].0 == n + 1 && !prev.trim().is_empty();
            if setext && !prev.starts_with('#') && !prev.starts_with('|') {
                add(prev);
            }
        }
        for key in ["id=\"", "name=\""] {
            for (i, _) in line.match_indices(key) {
                let value = &line[i + key.len()..];
                let end = value.find('"').unwrap_or(value.len());
                ids.push(value[..end].to_string());
            }
        }
    }
    found.extend(ids);
    found
}

/// The targets of the links of one line (inline links, images and
/// reference definitions), code spans left out.
fn targets(line: &str) -> Vec<String> {
    let line = without_code(line);
    let mut found = Vec::new();
    let t = line.trim_start();
    let definition = t.find(']').filter(|&end| t[end..].starts_with("]: "));
    if let (true, Some(end)) = (t.starts_with('['), definition) {
        let target = t[end + 3..].split_whitespace().next().unwrap_or("");
        found.push(target.trim_matches(['<', '>']).to_string());
    }
    for (i, _) in line.match_indices("](") {
        let rest = &line[i + 2..];
        let mut depth = 0;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                depth < 0
            })
            .map_or(rest.len(), |(j, _)| j);
        let inner = rest[..end].trim();
        let target = match inner.strip_prefix('<') {
            Some(angled) => angled.split('>').next().unwrap_or(""),
            None => inner.split_whitespace().next().unwrap_or(""),
        };
        found.push(target.to_string());
    }
    found
}

/// `%20` and the like, decoded.
fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex =
            s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `target` as a path from the root, linked from the file `from`;
/// `None` if it climbs out of the repository.
fn resolve(from: &Path, target: &str) -> Option<PathBuf> {
    let base = match target.starts_with('/') {
        true => PathBuf::new(),
        false => from.parent().unwrap_or(Path::new("")).to_owned(),
    };
    let mut parts: Vec<String> = Vec::new();
    for part in base.join(target.trim_start_matches('/')).components() {
        match part {
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Normal(p) => parts.push(p.to_string_lossy().into()),
            _ => {}
        }
    }
    Some(parts.iter().collect())
}

/// Every broken relative link of `docs`, one line each: where it is,
/// what it names, and what is missing. Files not among `docs` are
/// looked up under the root.
fn broken_links(docs: &[Doc]) -> Vec<String> {
    let text_of = |path: &Path| match docs.iter().find(|d| d.path == path) {
        Some(doc) => Some(doc.text.clone()),
        None => fs::read_to_string(root().join(path)).ok(),
    };
    let mut problems = Vec::new();
    for doc in docs {
        let at = doc.path.display();
        for (n, line) in prose(&doc.text) {
            for target in targets(line) {
                if target.is_empty() || target.contains("://") {
                    continue;
                }
                if target.starts_with("mailto:") {
                    continue;
                }
                let (file, anchor) = match target.split_once('#') {
                    Some((f, a)) => (f, Some(a)),
                    None => (target.as_str(), None),
                };
                let path = match file {
                    "" => doc.path.clone(),
                    f => match resolve(&doc.path, &percent_decoded(f)) {
                        Some(p) => p,
                        None => {
                            problems.push(format!(
                                "{at}:{n}: link `{target}` leads out of \
                                 the repository"
                            ));
                            continue;
                        }
                    },
                };
                if !root().join(&path).exists() {
                    problems.push(format!(
                        "{at}:{n}: link `{target}` names {}, which does \
                         not exist",
                        path.display()
                    ));
                    continue;
                }
                let Some(anchor) = anchor.filter(|a| !a.is_empty()) else {
                    continue;
                };
                if !path.extension().is_some_and(|e| e == "md") {
                    continue; // `#L10` of a source file: GitHub's own
                }
                let text = text_of(&path).unwrap_or_default();
                if !anchors(&text).contains(&percent_decoded(anchor)) {
                    problems.push(format!(
                        "{at}:{n}: link `{target}`: no heading of {} makes \
                         the anchor `#{anchor}`",
                        path.display()
                    ));
                }
            }
        }
    }
    problems
}

/// Every relative link in README.md and docs/*.md names a file that
/// exists and, with a `#anchor`, a heading that makes it.
#[test]
fn every_relative_link_resolves() {
    let problems = broken_links(&docs());
    assert!(
        problems.is_empty(),
        "{} broken link(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The check can fail: a missing file and a missing anchor are each
/// named, and what is fine (an anchor made twice, a link in code, a web
/// address) is not.
#[test]
fn a_missing_file_and_a_missing_anchor_are_named() {
    let text = "# Top\n\n## Twice\n\n## Twice\n\n\
        ## `readyloop serve` flags\n\n\
        [a](src/lib.rs) [b](src/absent.rs) [c](#twice-1) [d](#absent)\n\
        [e](#readyloop-serve-flags) [f](https://example.com/x#y)\n\
        [g](docs/traps.md#trap-1-edge-triggered-drain-until-wouldblock)\n\
        `[h](src/in-code.rs)`\n\n```\n[i](src/in-a-block.rs)\n```\n\
        [j]: ../outside.md\n";
    let doc = Doc { path: PathBuf::from("README.md"), text: text.into() };
    let problems = broken_links(&[doc]);
    assert_eq!(
        problems,
        [
            "README.md:9: link `src/absent.rs` names src/absent.rs, which \
             does not exist",
            "README.md:9: link `#absent`: no heading of README.md makes the \
             anchor `#absent`",
            "README.md:17: link `../outside.md` leads out of the repository",
        ]
    );
}

/// Headings make the anchors GitHub makes.
#[test]
fn anchors_follow_githubs_rule() {
    let text = "## `readyloop serve` flags\n## Trap 4: EMFILE / ENFILE on \
        accept\n## Trap 8: read_closed() / is_error() are hints\n\
        ## Results\n## Results\nSetext\n------\n";
    let want = [
        "readyloop-serve-flags",
        "trap-4-emfile--enfile-on-accept",
        "trap-8-read_closed--is_error-are-hints",
        "results",
        "results-1",
        "setext",
    ];
    assert_eq!(anchors(text), BTreeSet::from(want.map(String::from)));
}

/// The long flags `readyloop SUBCOMMAND --help` lists, but for `--help`
/// and `--version`.
fn help_flags(subcommand: &str) -> Vec<String> {
    let out = Command::new(binary())
        .args([subcommand, "--help"])
        .output()
        .expect("run readyloop");
    assert!(out.status.success(), "{subcommand} --help: {out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    let mut flags = Vec::new();
    for line in help.lines().map(str::trim_start) {
        if !line.starts_with('-') {
            continue;
        }
        let Some(word) = line.split_whitespace().find(|w| w.starts_with("--"))
        else {
            continue;
        };
        let flag: String = word
            .chars()
            .enumerate()
            .take_while(|&(i, c)| i < 2 || c.is_alphanumeric() || c == '-')
            .map(|(_, c)| c)
            .collect();
        if !matches!(flag.as_str(), "--help" | "--version") {
            flags.push(flag);
        }
    }
    assert!(!flags.is_empty(), "no flag found in {subcommand} --help");
    flags
}

/// Whether `text` names `flag` whole (`--log` is not in `--log-level`).
fn mentions(text: &str, flag: &str) -> bool {
    let part = |c: char| c.is_alphanumeric() || c == '-';
    text.match_indices(flag).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + flag.len()..].chars().next();
        !before.is_some_and(part) && !after.is_some_and(part)
    })
}

/// Every flag `--help` lists for `serve`, `load` and `client` is named
/// in README.md or docs/*.md.
#[test]
fn every_flag_of_help_is_documented() {
    let docs = docs();
    let mut missing = Vec::new();
    for subcommand in ["serve", "load", "client"] {
        for flag in help_flags(subcommand) {
            if !docs.iter().any(|d| mentions(&d.text, &flag)) {
                missing.push(format!(
                    "`readyloop {subcommand} --help` lists {flag}, which \
                     neither README.md nor docs/*.md mentions"
                ));
            }
        }
    }
    assert!(missing.is_empty(), "undocumented flags:\n{}", missing.join("\n"));
}

/// Every trap id `text` cites (`Trap 7`, `trap C1`), with its line.
fn cited(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        for (i, _) in line.match_indices("rap ") {
            let before = line[..i].chars().next_back();
            let word = line[..i.saturating_sub(1)].chars().next_back();
            if !matches!(before, Some('T' | 't'))
                || word.is_some_and(char::is_alphanumeric)
            {
                continue;
            }
            let rest = &line[i + 4..];
            let letter = usize::from(rest.starts_with('C'));
            let digits = rest[letter..]
                .chars()
                .take_while(char::is_ascii_digit)
                .count();
            if digits > 0 {
                found.push((n + 1, rest[..letter + digits].to_string()));
            }
        }
    }
    found
}

/// Every `.rs` file under `dir`, sorted.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read src")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The trap ids docs/traps.md has an entry for: `## Trap ID: …`.
fn entries(traps: &str) -> BTreeSet<String> {
    prose(traps)
        .into_iter()
        .filter_map(|(_, line)| line.strip_prefix("## Trap "))
        .filter_map(|rest| rest.split_once(':'))
        .map(|(id, _)| id.trim().to_string())
        .collect()
}

/// Every trap the source cites in a comment or a log line has its entry
/// in docs/traps.md.
#[test]
fn every_trap_the_source_cites_has_an_entry() {
    let traps = fs::read_to_string(root().join("docs/traps.md"))
        .expect("read docs/traps.md");
    let have = entries(&traps);
    let mut files = Vec::new();
    sources(&root().join("src"), &mut files);
    let mut first: BTreeMap<String, String> = BTreeMap::new();
    for file in files {
        let text = fs::read_to_string(&file).expect("read a source");
        let rel = file.strip_prefix(root()).unwrap_or(&file).to_owned();
        for (n, id) in cited(&text) {
            first.entry(id).or_insert(format!("{}:{n}", rel.display()));
        }
    }
    assert!(first.contains_key("1"), "no trap cited at all: {first:?}");
    let missing: Vec<String> = first
        .iter()
        .filter(|(id, _)| !have.contains(*id))
        .map(|(id, at)| {
            format!(
                "{at} cites trap {id}, which has no entry in docs/traps.md \
                 (a heading `## Trap {id}: …`)"
            )
        })
        .collect();
    assert!(
        missing.is_empty(),
        "traps without an entry:\n{}",
        missing.join("\n")
    );
}
