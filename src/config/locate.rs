//! Finds the line of a field inside one YAML document, so a diagnostic can point at
//! `file:line` rather than only at the resource. The YAML value tree carries no positions, so
//! this walks the block-style text the way a reader would: key by key, item by item. Flow-style
//! (`{a: 1}`, `[x, y]`) stops the walk at the nearest line found so far, which is still the
//! right neighbourhood.

/// `doc_text` is one document; `first_line` is the 1-based line of its first line in the file.
/// `field_path` looks like `spec.http[0].route[1].destination.subset`.
pub fn locate(doc_text: &str, first_line: usize, field_path: &str) -> usize {
    let lines: Vec<&str> = doc_text.lines().collect();
    let mut pos: Option<usize> = None;
    // Column of the key (or dash) that owns the region we are searching.
    let mut owner_col: isize = -1;
    for seg in segments(field_path) {
        let start = pos.map_or(0, |p| p + 1);
        let found = match seg {
            Segment::Key(key) => find_key(&lines, start, owner_col, key, pos),
            Segment::Index(n) => find_item(&lines, start, owner_col, n),
        };
        match found {
            Some((line, col)) => {
                pos = Some(line);
                owner_col = col;
            }
            None => break,
        }
    }
    first_line + pos.unwrap_or_else(|| first_content_line(&lines))
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            if let Ok(n) = idx.trim_end_matches(']').parse() {
                out.push(Segment::Index(n));
            }
        }
    }
    out
}

fn first_content_line(lines: &[&str]) -> usize {
    lines.iter().position(|l| is_content(l)).unwrap_or_default()
}

fn is_content(line: &str) -> bool {
    let t = line.trim_start();
    !t.is_empty() && !t.starts_with('#')
}

fn indent(line: &str) -> isize {
    (line.len() - line.trim_start_matches(' ').len()) as isize
}

/// Within the region owned by `owner_col`, the first line holding `key:`, possibly after one or
/// more `- ` list markers. On the owner's own line (`- name: x` owns `labels` below it, and a
/// `- key:` item line carries a sibling key) the search also looks after the dash.
fn find_key(
    lines: &[&str],
    start: usize,
    owner_col: isize,
    key: &str,
    owner_line: Option<usize>,
) -> Option<(usize, isize)> {
    // A key can sit on the owning item's own line: `- destination:` after `route[0]`.
    if let Some(p) = owner_line
        && let Some(col) = key_column(lines[p], key)
        && col > owner_col
    {
        return Some((p, col));
    }
    for (i, line) in lines.iter().enumerate().skip(start) {
        if !is_content(line) {
            continue;
        }
        if indent(line) <= owner_col {
            return None;
        }
        if let Some(col) = key_column(line, key)
            && col > owner_col
        {
            return Some((i, col));
        }
    }
    None
}

/// Column of `key:` on this line, after any `- ` markers; None if the line is another key.
fn key_column(line: &str, key: &str) -> Option<isize> {
    let mut col = indent(line);
    let mut rest = line.trim_start_matches(' ');
    while let Some(r) = rest.strip_prefix("- ") {
        let trimmed = r.trim_start_matches(' ');
        col += (rest.len() - trimmed.len()) as isize;
        rest = trimmed;
    }
    for quoted in [key.to_string(), format!("\"{key}\""), format!("'{key}'")] {
        if let Some(after) = rest.strip_prefix(quoted.as_str()) {
            let after = after.trim_start_matches(' ');
            if after.starts_with(':') {
                return Some(col);
            }
        }
    }
    None
}

/// The n-th `- ` item of the sequence that follows. Sequences may sit at the owner's own column
/// (`hosts:\n- a`), so items at `owner_col` count too, but only as dashes.
fn find_item(lines: &[&str], start: usize, owner_col: isize, n: usize) -> Option<(usize, isize)> {
    let mut item_col: Option<isize> = None;
    let mut seen = 0usize;
    for (i, line) in lines.iter().enumerate().skip(start) {
        if !is_content(line) {
            continue;
        }
        let col = indent(line);
        let is_dash = line.trim_start_matches(' ').starts_with('-');
        if col < owner_col || (col == owner_col && !is_dash) {
            return None;
        }
        match item_col {
            None if is_dash => {
                item_col = Some(col);
            }
            None => return None,
            Some(c) if col < c => return None,
            Some(c) if col == c && !is_dash => return None,
            Some(c) if col == c => {
                seen += 1;
            }
            Some(_) => continue,
        }
        if seen == n {
            return Some((i, col));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::locate;

    const DOC: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: reviews
        subset: v2
  - route:
    - destination:
        host: reviews
        subset: v3
      weight: 0
";

    #[test]
    fn finds_nested_fields() {
        assert_eq!(locate(DOC, 1, "metadata.name"), 4);
        assert_eq!(locate(DOC, 1, "spec.hosts[0]"), 7);
        assert_eq!(locate(DOC, 1, "spec.http[0].match[0].headers.end-user"), 11);
        assert_eq!(
            locate(DOC, 1, "spec.http[0].route[0].destination.subset"),
            16
        );
        assert_eq!(
            locate(DOC, 1, "spec.http[1].route[0].destination.subset"),
            20
        );
        assert_eq!(locate(DOC, 1, "spec.http[1].route[0].weight"), 21);
    }

    #[test]
    fn offsets_by_document_start_and_falls_back() {
        assert_eq!(locate(DOC, 10, "spec.http[1]"), 26);
        // A path that is not in the text stops at the deepest part found.
        assert_eq!(locate(DOC, 1, "spec.http[0].timeout"), 9);
        assert_eq!(locate(DOC, 1, ""), 1);
    }
}
