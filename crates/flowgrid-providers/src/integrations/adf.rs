//! Atlassian Document Format (ADF) from plain text or Markdown, for Jira descriptions.
//!
//! Jira Cloud's REST API v3 takes rich text only as ADF: `{"version": 1, "type": "doc",
//! "content": [...]}`. Plain text becomes one paragraph per blank-line-separated block, with
//! `hardBreak`s for single line breaks. Markdown supports the common subset: ATX headings
//! (`#`..`######`), paragraphs, bullet (`-`, `*`, `+`) and ordered (`1.`) lists, fenced code
//! blocks (with a language), block quotes (`>`), horizontal rules, and inline `**strong**`,
//! `*em*`/`_em_`, `` `code` `` and `[text](url)` links. Anything else stays text. ADF forbids
//! empty text nodes, so none are made.

use serde_json::{Value, json};

/// How a description is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Plain text.
    Text,
    /// Markdown (the subset above).
    Markdown,
}

/// The ADF document of `source`.
pub fn document(source: &str, format: Format) -> Value {
    let content = match format {
        Format::Text => text_blocks(source),
        Format::Markdown => markdown_blocks(source),
    };
    json!({"version": 1, "type": "doc", "content": content})
}

fn text(s: &str, marks: &[Value]) -> Option<Value> {
    if s.is_empty() {
        return None;
    }
    Some(if marks.is_empty() {
        json!({"type": "text", "text": s})
    } else {
        json!({"type": "text", "text": s, "marks": marks})
    })
}

fn paragraph(inline: Vec<Value>) -> Value {
    json!({"type": "paragraph", "content": inline})
}

/// Lines joined with hard breaks, each line's text made by `line`.
fn with_breaks(lines: &[&str], line: impl Fn(&str) -> Vec<Value>) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            out.push(json!({"type": "hardBreak"}));
        }
        out.extend(line(l));
    }
    out
}

fn text_blocks(source: &str) -> Vec<Value> {
    let normalized = source.replace("\r\n", "\n");
    normalized
        .split("\n\n")
        .map(|block| block.trim_matches('\n'))
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let lines: Vec<&str> = block.split('\n').collect();
            paragraph(with_breaks(&lines, |l| text(l, &[]).into_iter().collect()))
        })
        .collect()
}

fn heading_level(line: &str) -> Option<(u8, &str)> {
    let hashes = line.bytes().take_while(|b| *b == b'#').count();
    if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
        Some((hashes as u8, line[hashes..].trim()))
    } else {
        None
    }
}

fn bullet_item(line: &str) -> Option<&str> {
    let t = line.trim_start();
    ["- ", "* ", "+ "]
        .iter()
        .find_map(|p| t.strip_prefix(p))
        .filter(|_| !is_rule(line))
}

fn ordered_item(line: &str) -> Option<(u32, &str)> {
    let t = line.trim_start();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 9 {
        return None;
    }
    let rest = &t[digits..];
    let item = rest
        .strip_prefix(". ")
        .or_else(|| rest.strip_prefix(") "))?;
    Some((t[..digits].parse().ok()?, item))
}

fn is_rule(line: &str) -> bool {
    let t: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    t.len() >= 3
        && (t.chars().all(|c| c == '-')
            || t.chars().all(|c| c == '*')
            || t.chars().all(|c| c == '_'))
}

fn markdown_blocks(source: &str) -> Vec<Value> {
    let normalized = source.replace("\r\n", "\n");
    let lines: Vec<&str> = normalized.split('\n').collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim().is_empty() {
            i += 1;
            continue;
        }
        if let Some(fence) = line.trim_start().strip_prefix("```") {
            let language = fence.trim();
            let mut code = Vec::new();
            i += 1;
            while i < lines.len() && !lines[i].trim_start().starts_with("```") {
                code.push(lines[i]);
                i += 1;
            }
            i += 1; // the closing fence
            let body = code.join("\n");
            let mut block = json!({"type": "codeBlock", "content": text(&body, &[]).into_iter().collect::<Vec<_>>()});
            if !language.is_empty() {
                block["attrs"] = json!({"language": language});
            }
            blocks.push(block);
            continue;
        }
        if let Some((level, title)) = heading_level(line) {
            blocks.push(
                json!({"type": "heading", "attrs": {"level": level}, "content": inline(title)}),
            );
            i += 1;
            continue;
        }
        if is_rule(line) {
            blocks.push(json!({"type": "rule"}));
            i += 1;
            continue;
        }
        if bullet_item(line).is_some() {
            let mut items = Vec::new();
            while i < lines.len()
                && let Some(item) = bullet_item(lines[i])
            {
                items.push(list_item(item));
                i += 1;
            }
            blocks.push(json!({"type": "bulletList", "content": items}));
            continue;
        }
        if let Some((start, _)) = ordered_item(line) {
            let mut items = Vec::new();
            while i < lines.len()
                && let Some((_, item)) = ordered_item(lines[i])
            {
                items.push(list_item(item));
                i += 1;
            }
            blocks
                .push(json!({"type": "orderedList", "attrs": {"order": start}, "content": items}));
            continue;
        }
        if line.trim_start().starts_with('>') {
            let mut quoted = Vec::new();
            while i < lines.len() && lines[i].trim_start().starts_with('>') {
                let q = lines[i].trim_start().trim_start_matches('>');
                quoted.push(q.strip_prefix(' ').unwrap_or(q));
                i += 1;
            }
            let inner = markdown_blocks(&quoted.join("\n"))
                .into_iter()
                .filter(|b| {
                    b["type"] == "paragraph"
                        || b["type"] == "bulletList"
                        || b["type"] == "orderedList"
                        || b["type"] == "codeBlock"
                })
                .collect::<Vec<_>>();
            if !inner.is_empty() {
                blocks.push(json!({"type": "blockquote", "content": inner}));
            }
            continue;
        }
        let mut para = Vec::new();
        while i < lines.len() {
            let l = lines[i];
            if l.trim().is_empty()
                || heading_level(l).is_some()
                || l.trim_start().starts_with("```")
                || bullet_item(l).is_some()
                || ordered_item(l).is_some()
                || l.trim_start().starts_with('>')
                || is_rule(l)
            {
                break;
            }
            para.push(l.trim_end());
            i += 1;
        }
        blocks.push(paragraph(with_breaks(&para, inline)));
    }
    blocks
}

fn list_item(item: &str) -> Value {
    json!({"type": "listItem", "content": [paragraph(inline(item.trim()))]})
}

/// Inline Markdown: strong, emphasis, code and links; unmatched markers stay text.
fn inline(s: &str) -> Vec<Value> {
    let mut out = Vec::new();
    parse_inline(s, &[], &mut out);
    out
}

fn parse_inline(s: &str, marks: &[Value], out: &mut Vec<Value>) {
    let mut plain = String::new();
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        let found = match c {
            '`' => rest[1..].find('`').map(|end| {
                let code = &rest[1..1 + end];
                let mut m = marks
                    .iter()
                    .filter(|m| m["type"] == "link")
                    .cloned()
                    .collect::<Vec<_>>();
                m.push(json!({"type": "code"}));
                (text(code, &m).into_iter().collect::<Vec<_>>(), 2 + end)
            }),
            '*' | '_' if rest.starts_with("**") || rest.starts_with("__") => {
                let marker = &rest[..2];
                rest[2..].find(marker).filter(|end| *end > 0).map(|end| {
                    let mut m = marks.to_vec();
                    m.push(json!({"type": "strong"}));
                    let mut inner = Vec::new();
                    parse_inline(&rest[2..2 + end], &m, &mut inner);
                    (inner, 4 + end)
                })
            }
            '*' | '_' => {
                let marker = &rest[..1];
                rest[1..].find(marker).filter(|end| *end > 0).map(|end| {
                    let mut m = marks.to_vec();
                    m.push(json!({"type": "em"}));
                    let mut inner = Vec::new();
                    parse_inline(&rest[1..1 + end], &m, &mut inner);
                    (inner, 2 + end)
                })
            }
            '[' => link(rest).map(|(label, href, used)| {
                let mut m = marks.to_vec();
                m.push(json!({"type": "link", "attrs": {"href": href}}));
                let mut inner = Vec::new();
                parse_inline(label, &m, &mut inner);
                (inner, used)
            }),
            _ => None,
        };
        match found {
            Some((nodes, used)) if !nodes.is_empty() => {
                out.extend(text(&plain, marks));
                plain.clear();
                out.extend(nodes);
                rest = &rest[used..];
            }
            _ => {
                plain.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out.extend(text(&plain, marks));
}

/// `[label](href)` at the start of `s`: the label, the href and the bytes used.
fn link(s: &str) -> Option<(&str, &str, usize)> {
    let close = s.find("](")?;
    let label = &s[1..close];
    let after = &s[close + 2..];
    let end = after.find(')')?;
    let href = &after[..end];
    if label.is_empty() || href.is_empty() || href.contains(char::is_whitespace) {
        return None;
    }
    Some((label, href, close + 2 + end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_keeps_paragraphs_and_line_breaks() {
        let doc = document("one\ntwo\n\nthree", Format::Text);
        assert_eq!(
            doc,
            json!({"version": 1, "type": "doc", "content": [
                {"type": "paragraph", "content": [
                    {"type": "text", "text": "one"}, {"type": "hardBreak"}, {"type": "text", "text": "two"}]},
                {"type": "paragraph", "content": [{"type": "text", "text": "three"}]}
            ]})
        );
    }

    #[test]
    fn markdown_becomes_headings_lists_code_and_marks() {
        let doc = document(
            "# Title\n\nSome **bold** and *em* with `code` and [a link](https://example.org).\n\n- a\n- b\n\n1. x\n2. y\n\n```rust\nfn main() {}\n```",
            Format::Markdown,
        );
        let content = doc["content"].as_array().unwrap();
        let kinds: Vec<&str> = content
            .iter()
            .map(|b| b["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "heading",
                "paragraph",
                "bulletList",
                "orderedList",
                "codeBlock"
            ]
        );
        let para = &content[1]["content"];
        assert_eq!(
            para[1],
            json!({"type": "text", "text": "bold", "marks": [{"type": "strong"}]})
        );
        assert_eq!(
            para[3],
            json!({"type": "text", "text": "em", "marks": [{"type": "em"}]})
        );
        assert_eq!(
            para[5],
            json!({"type": "text", "text": "code", "marks": [{"type": "code"}]})
        );
        assert_eq!(
            para[7],
            json!({"type": "text", "text": "a link", "marks": [{"type": "link", "attrs": {"href": "https://example.org"}}]})
        );
        assert_eq!(content[4]["attrs"]["language"], "rust");
    }

    #[test]
    fn unmatched_markers_stay_text_and_no_text_node_is_empty() {
        let doc = document("2 * 3 = 6 and a_b\n\n****", Format::Markdown);
        let s = doc.to_string();
        assert!(!s.contains(r#""text":"""#), "{s}");
        assert_eq!(doc["content"][0]["content"][0]["text"], "2 * 3 = 6 and a_b");
    }
}
