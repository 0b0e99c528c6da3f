//! Writes new destination weights into a VirtualService file in place: only the weight
//! values change (or a `weight:` is added where a destination had none); every other byte,
//! comments, order and quoting included, stays. The result is parsed again and checked before
//! it replaces the file (temp file + rename), so a half-done edit can never go live.

use std::path::Path;

/// One weight to write: `spec.http[route].route[dest].weight = weight` in the document that
/// starts at `doc_line` (1-based) of the file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightEdit {
    pub route: usize,
    pub dest: usize,
    pub weight: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("{0}")]
    Shape(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Replaces the integer after `weight:` on `line`, keeping what surrounds it.
fn replace_weight_value(line: &str, weight: u32) -> Option<String> {
    let at = line.find("weight:")? + "weight:".len();
    let rest = &line[at..];
    let spaces = rest.len() - rest.trim_start().len();
    let value = &rest[spaces..];
    let quoted = value.starts_with('"') || value.starts_with('\'');
    let digits_start = usize::from(quoted);
    let digits = value[digits_start..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    if digits == 0 {
        return None;
    }
    // A quoted value keeps its quotes: only the number changes.
    let start = at + spaces + digits_start;
    Some(format!(
        "{}{}{}",
        &line[..start],
        weight,
        &line[start + digits..]
    ))
}

/// Applies `edits` to the document of `text` that starts at `doc_line` (with `doc_text` its
/// text). Returns the new file text.
pub fn apply(
    text: &str,
    doc_line: usize,
    doc_text: &str,
    edits: &[WeightEdit],
) -> Result<String, EditError> {
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    // Inserted lines shift what follows; apply bottom-up so earlier line numbers hold.
    let mut planned: Vec<(usize, Edit)> = Vec::new();
    for e in edits {
        let item_path = format!("spec.http[{}].route[{}]", e.route, e.dest);
        let item = crate::config::locate::locate(doc_text, doc_line, &item_path) - 1;
        let item_line = lines.get(item).ok_or_else(|| {
            EditError::Shape(format!("{item_path}: line {} is past the file", item + 1))
        })?;
        if !item_line.trim_start().starts_with('-') {
            return Err(EditError::Shape(format!(
                "{item_path}: expected a list item at line {}, found {item_line:?}",
                item + 1
            )));
        }
        let weight_at =
            crate::config::locate::locate(doc_text, doc_line, &format!("{item_path}.weight")) - 1;
        let on_line = |i: usize| lines.get(i).is_some_and(|l| l.contains("weight:"));
        if weight_at != item
            && on_line(weight_at)
            && lines[weight_at].trim_start().starts_with("weight:")
        {
            planned.push((weight_at, Edit::Replace(e.weight)));
        } else if on_line(item) && lines[item].matches("weight:").count() == 1 {
            planned.push((item, Edit::Replace(e.weight)));
        } else if item_line
            .trim_start()
            .trim_start_matches('-')
            .trim_start()
            .starts_with('{')
        {
            planned.push((item, Edit::AppendFlow(e.weight)));
        } else {
            // Block style without a weight: a new key at the item's key column, after the
            // item's own lines.
            let dash = indent(item_line);
            let key_col =
                dash + 1 + item_line[dash + 1..].len() - item_line[dash + 1..].trim_start().len();
            let mut end = item + 1;
            while end < lines.len() {
                let l = &lines[end];
                let t = l.trim_start();
                if !t.is_empty() && !t.starts_with('#') && indent(l) <= dash {
                    break;
                }
                end += 1;
            }
            // Trailing blank or comment lines belong to what follows.
            while end > item + 1 && {
                let t = lines[end - 1].trim_start();
                t.is_empty() || t.starts_with('#')
            } {
                end -= 1;
            }
            planned.push((end, Edit::Insert(key_col, e.weight)));
        }
    }
    planned.sort_by_key(|p| std::cmp::Reverse(p.0));
    for (at, edit) in planned {
        match edit {
            Edit::Replace(w) => {
                let new = replace_weight_value(&lines[at], w).ok_or_else(|| {
                    EditError::Shape(format!("line {}: weight is not an integer", at + 1))
                })?;
                lines[at] = new;
            }
            Edit::AppendFlow(w) => {
                let l = &lines[at];
                let close = l.rfind('}').ok_or_else(|| {
                    EditError::Shape(format!("line {}: a flow mapping spanning lines", at + 1))
                })?;
                lines[at] = format!("{}, weight: {w}{}", &l[..close], &l[close..]);
            }
            Edit::Insert(col, w) => {
                lines.insert(at, format!("{}weight: {w}", " ".repeat(col)));
            }
        }
    }
    Ok(lines.join("\n"))
}

enum Edit {
    Replace(u32),
    AppendFlow(u32),
    Insert(usize, u32),
}

/// Replaces `path` with `text` atomically: a dot-named temp file beside it (the config loader
/// skips dot-entries) renamed over it.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), EditError> {
    let io = |source| EditError::Io {
        path: path.display().to_string(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.switchyard-{}.tmp", std::process::id()));
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(text: &str) -> Vec<Vec<Option<i64>>> {
        let v: yaml_serde::Value = yaml_serde::from_str(text).expect("yaml");
        v["spec"]["http"]
            .as_sequence()
            .expect("http")
            .iter()
            .map(|r| {
                r["route"]
                    .as_sequence()
                    .expect("route")
                    .iter()
                    .map(|d| {
                        d.get("weight").and_then(|w| {
                            w.as_i64()
                                .or_else(|| w.as_str().and_then(|s| s.parse().ok()))
                        })
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn block_flow_and_missing_weights_change_and_nothing_else_does() {
        let text = "# managed by hand\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: web   # the web tier\nspec:\n  hosts: [web]\n  http:\n  - name: primary\n    route:\n    - destination:\n        host: web\n        subset: v1\n      weight: 100 # stable\n    - destination:\n        host: web\n        subset: v2\n      weight: \"0\"\n  - name: flow\n    route:\n    - {destination: {host: web, subset: v1}, weight: 90}\n    - {destination: {host: web, subset: v2}}\n  - name: missing\n    route:\n    - destination:\n        host: web\n        subset: v1\n\n    # v2 comes later\n    - destination: {host: web, subset: v2}\n";
        let edits = [
            WeightEdit {
                route: 0,
                dest: 0,
                weight: 95,
            },
            WeightEdit {
                route: 0,
                dest: 1,
                weight: 5,
            },
            WeightEdit {
                route: 1,
                dest: 0,
                weight: 75,
            },
            WeightEdit {
                route: 1,
                dest: 1,
                weight: 25,
            },
            WeightEdit {
                route: 2,
                dest: 0,
                weight: 50,
            },
            WeightEdit {
                route: 2,
                dest: 1,
                weight: 50,
            },
        ];
        let out = apply(text, 1, text, &edits).expect("edit");
        assert_eq!(
            weights(&out),
            vec![
                vec![Some(95), Some(5)],
                vec![Some(75), Some(25)],
                vec![Some(50), Some(50)]
            ],
            "{out}"
        );
        assert!(out.contains("      weight: 95 # stable\n"), "{out}");
        assert!(out.contains("      weight: \"5\"\n"), "{out}");
        assert!(out.contains("  name: web   # the web tier\n"));
        assert!(out.contains("    # v2 comes later\n"));
        // Every line of the original is still there, in order, apart from the weights.
        let unweighted = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.trim_start().starts_with("weight:"))
                .map(|l| match l.find(", weight:") {
                    Some(i) => format!("{}}}", &l[..i]),
                    None => l.to_string(),
                })
                .collect()
        };
        // The flow item that had a weight lost its closing braces' text above; compare the
        // rest only.
        let (kept, now) = (unweighted(text), unweighted(&out));
        assert_eq!(kept.len(), now.len());
        for (a, b) in kept.iter().zip(&now) {
            if !a.contains("weight") {
                assert_eq!(a.trim_end_matches('}'), b.trim_end_matches('}'));
            }
        }
    }
}
