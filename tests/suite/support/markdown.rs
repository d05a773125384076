//! Reading Markdown as GitHub renders it, as far as the documentation
//! checks need: the lines outside code blocks, the code blocks
//! themselves, the anchors headings make, the targets of links, and
//! where a relative link leads.

use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

/// The fence a line opens or closes a code block with (a run of three
/// or more backticks or tildes), or a shorter run that is none.
fn fence(line: &str) -> &str {
    let t = line.trim_start();
    let ticks = t.chars().take_while(|c| *c == '`').count();
    let tildes = t.chars().take_while(|c| *c == '~').count();
    &t[..ticks.max(tildes)]
}

/// Whether `run` closes the block `open` began.
fn closes(run: &str, open: &str) -> bool {
    run.len() >= open.len() && run[..1] == open[..1]
}

/// The lines of `text` outside fenced code blocks, numbered from 1.
pub fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut open: Option<&str> = None;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let run = fence(line);
        match open {
            Some(fence) if closes(run, fence) => open = None,
            Some(_) => {}
            None if run.len() >= 3 => open = Some(run),
            None => lines.push((i + 1, line)),
        }
    }
    lines
}

/// A fenced code block: its info string (`sh`, `text`, or empty), the
/// text of the last heading above it, and its lines, numbered from 1.
#[derive(Debug)]
pub struct Block<'a> {
    pub info: &'a str,
    pub heading: String,
    pub lines: Vec<(usize, &'a str)>,
}

/// Every fenced code block of `text`, in order.
pub fn blocks(text: &str) -> Vec<Block<'_>> {
    let mut found = Vec::new();
    let mut heading = String::new();
    let mut open: Option<(&str, Block)> = None;
    for (i, line) in text.lines().enumerate() {
        let run = fence(line);
        open = match open {
            Some((fence, block)) if closes(run, fence) => {
                found.push(block);
                None
            }
            Some((fence, mut block)) => {
                block.lines.push((i + 1, line));
                Some((fence, block))
            }
            None if run.len() >= 3 => {
                let info = line.trim_start()[run.len()..].trim();
                let lines = Vec::new();
                Some((run, Block { info, heading: heading.clone(), lines }))
            }
            None => {
                heading = atx(line).map_or(heading, str::to_string);
                None
            }
        };
    }
    found
}

/// The text of an ATX heading line (`## Text`), if `line` is one.
fn atx(line: &str) -> Option<&str> {
    let hashes = line.chars().take_while(|c| *c == '#').count();
    let after = &line[hashes..];
    let heading = (1..=6).contains(&hashes)
        && (after.is_empty() || after.starts_with(' '));
    heading.then(|| after.trim().trim_end_matches('#').trim_end())
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
pub fn anchors(text: &str) -> BTreeSet<String> {
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
        if let Some(heading) = atx(line) {
            add(heading);
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
pub fn targets(line: &str) -> Vec<String> {
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
pub fn percent_decoded(s: &str) -> String {
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
pub fn resolve(from: &Path, target: &str) -> Option<PathBuf> {
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
