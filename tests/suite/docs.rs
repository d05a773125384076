//! The documentation keeps up with the code: every relative link in
//! README.md and docs/*.md leads to a file that exists and to a heading
//! that makes its `#anchor`, every flag `--help` lists for `serve`,
//! `load` and `client` is documented, with its default in a table row,
//! and every trap the source cites has its entry in docs/traps.md. Read from the files and the binary's
//! `--help`: no server, no network.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::markdown::{anchors, percent_decoded, prose};
use crate::support::markdown::{resolve, targets};
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

/// The output of `readyloop SUBCOMMAND --help`.
fn help(subcommand: &str) -> String {
    let out = Command::new(binary())
        .args([subcommand, "--help"])
        .output()
        .expect("run readyloop");
    assert!(out.status.success(), "{subcommand} --help: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The long flags a `--help` text lists (the first long form of each
/// line that starts with a dash), but for clap's `--help` and
/// `--version`.
fn flags(help: &str) -> Vec<String> {
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

/// The flags of `subcommand`'s `help` that no doc mentions, one line
/// each.
fn undocumented(subcommand: &str, help: &str, docs: &[Doc]) -> Vec<String> {
    let listed = flags(help);
    assert!(!listed.is_empty(), "no flag found in {subcommand} --help");
    listed
        .into_iter()
        .filter(|flag| !docs.iter().any(|d| mentions(&d.text, flag)))
        .map(|flag| {
            format!(
                "`readyloop {subcommand} --help` lists {flag}, which \
                 neither README.md nor docs/*.md mentions"
            )
        })
        .collect()
}

/// The problems `check` finds in the `--help` of `serve`, `load` and
/// `client` against README.md and docs/*.md.
fn each_subcommand(
    check: fn(&str, &str, &[Doc]) -> Vec<String>,
) -> Vec<String> {
    let docs = docs();
    ["serve", "load", "client"]
        .into_iter()
        .flat_map(|sub| check(sub, &help(sub), &docs))
        .collect()
}

/// Every flag `--help` lists for `serve`, `load` and `client` is named
/// in README.md or docs/*.md.
#[test]
fn every_flag_of_help_is_documented() {
    let missing = each_subcommand(undocumented);
    assert!(missing.is_empty(), "undocumented flags:\n{}", missing.join("\n"));
}

/// Each long flag of a `--help` text with the default it shows
/// (`[default: X]` on its line or in its description), if any.
fn defaults(help: &str) -> Vec<(String, Option<String>)> {
    let mut found: Vec<(String, Option<String>)> = Vec::new();
    for line in help.lines().map(str::trim_start) {
        let first = line.split_whitespace().next().unwrap_or("");
        let short = first.len() == 3 && first.ends_with(',');
        if first.starts_with("--") || (first.starts_with('-') && short) {
            // `--help` and `--version` have no entry: a placeholder
            // keeps their text from counting for the flag above.
            let flag = flags(line).into_iter().next().unwrap_or_default();
            found.push((flag, None));
        }
        let (Some(last), Some(i)) =
            (found.last_mut(), line.find("[default: "))
        else {
            continue;
        };
        let rest = &line[i + "[default: ".len()..];
        let value = &rest[..rest.find(']').unwrap_or(rest.len())];
        last.1.get_or_insert_with(|| value.to_string());
    }
    found.retain(|(flag, _)| !flag.is_empty());
    found
}

/// The table rows of `docs` whose first cell names `flag`.
fn rows<'a>(docs: &'a [Doc], flag: &str) -> Vec<&'a str> {
    docs.iter()
        .flat_map(|d| prose(&d.text))
        .map(|(_, line)| line.trim())
        .filter(|l| l.starts_with('|'))
        .filter(|l| mentions(l[1..].split('|').next().unwrap_or(""), flag))
        .collect()
}

/// The flags of `subcommand`'s `help` that no table row documents, or
/// whose rows all leave out the default `--help` shows, one line each.
fn without_row(subcommand: &str, help: &str, docs: &[Doc]) -> Vec<String> {
    let mut problems = Vec::new();
    for (flag, default) in defaults(help) {
        let rows = rows(docs, &flag);
        if rows.is_empty() {
            problems.push(format!(
                "`readyloop {subcommand} --help` lists {flag}, which no \
                 table row of README.md or docs/*.md documents"
            ));
        } else if let Some(value) =
            default.filter(|d| !rows.iter().any(|r| r.contains(d.as_str())))
        {
            problems.push(format!(
                "`readyloop {subcommand} {flag}` defaults to {value}, which \
                 no table row of {flag} says"
            ));
        }
    }
    problems
}

/// Every flag of `serve`, `load` and `client` has a row in a table of
/// README.md or docs/*.md (its first cell names the flag), and the
/// default `--help` shows is in that row.
#[test]
fn every_flag_has_a_row_with_its_default() {
    let missing = each_subcommand(without_row);
    assert!(
        missing.is_empty(),
        "flags without a row:\n{}",
        missing.join("\n")
    );
}

/// The row check can fail: a flag with no row and a row without the
/// flag's default are both named; a flag without a default needs only
/// its row, and `--help`'s own default counts for no flag.
#[test]
fn a_flag_without_a_row_or_its_default_is_named() {
    let help = "Options:\n      --size <BYTES>\n          Bytes per message\n\
        \n          [default: 64]\n\n      --duration <SECS>\n\
        \n      --pin\n  -q, --quiet  No progress [default: off]\n\
        \n  -h, --help  Print help [default: x]\n";
    let doc = Doc {
        path: PathBuf::from("docs/tools.md"),
        text: "| flag | default |\n|---|---|\n| `--size BYTES` | `32` |\n\
            | `--duration SECS` | 5 s |\n| `-q, --quiet` | off |\n\
            `--pin` is named in prose only.\n"
            .into(),
    };
    assert_eq!(
        without_row("load", help, &[doc]),
        [
            "`readyloop load --size` defaults to 64, which no table row of \
             --size says",
            "`readyloop load --help` lists --pin, which no table row of \
             README.md or docs/*.md documents",
        ]
    );
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
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read src")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
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

/// The traps `sources` (path, text) cite that `traps` has no entry
/// for, one line each: the id, and where it is cited.
fn without_entry(sources: &[(PathBuf, String)], traps: &str) -> Vec<String> {
    let have = entries(traps);
    let mut places: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, text) in sources {
        for (n, id) in cited(text) {
            let at = format!("{}:{n}", path.display());
            places.entry(id).or_default().push(at);
        }
    }
    places
        .into_iter()
        .filter(|(id, _)| !have.contains(id))
        .map(|(id, at)| {
            format!(
                "trap {id}, cited at {}, has no entry in docs/traps.md \
                 (a heading `## Trap {id}: …`)",
                at.join(", ")
            )
        })
        .collect()
}

/// Every trap the source cites in a comment or a log line has its entry
/// in docs/traps.md.
#[test]
fn every_trap_the_source_cites_has_an_entry() {
    let traps = fs::read_to_string(root().join("docs/traps.md"))
        .expect("read docs/traps.md");
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let sources: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|file| {
            let text = fs::read_to_string(&file).expect("read a source");
            let rel = file.strip_prefix(root()).unwrap_or(&file).to_owned();
            (rel, text)
        })
        .collect();
    let cites = sources.iter().flat_map(|(_, text)| cited(text)).count();
    assert!(cites > 0, "no trap cited in src/: is the pattern right?");
    let missing = without_entry(&sources, &traps);
    assert!(
        missing.is_empty(),
        "traps without an entry:\n{}",
        missing.join("\n")
    );
}

/// Both checks can fail: a flag no doc mentions (`--log` is not
/// `--log-level`) and a trap without an entry are named, with where.
#[test]
fn an_undocumented_flag_and_a_trap_without_an_entry_are_named() {
    let help = "Options:\n      --log-level <L>  Level\n      --log\n  \
        -c, --connections <C>\n          - idle: hold them\n  -h, --help\n";
    let doc = Doc {
        path: PathBuf::from("README.md"),
        text: "`--log-level` and -c, --connections".into(),
    };
    assert_eq!(
        undocumented("load", help, &[doc]),
        ["`readyloop load --help` lists --log, which neither README.md nor \
          docs/*.md mentions"]
    );
    let source = "// Trap 1: x\n// (trap C7) and entrap 9\nlet trap 2;\n";
    let traps = "## Trap 1: drain\n## Trap 2: fair\n";
    let sources = [(PathBuf::from("src/a.rs"), source.to_string())];
    assert_eq!(
        without_entry(&sources, traps),
        ["trap C7, cited at src/a.rs:2, has no entry in docs/traps.md (a \
          heading `## Trap C7: …`)"]
    );
}
