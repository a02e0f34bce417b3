//! A small XML well-formedness checker for the SVG files the crate writes: one root element,
//! properly nested and closed tags, quoted attributes, and only the five predefined entities
//! (or character references) after `&`. It returns the elements so tests can look inside.

/// One element: its name, attributes (values unescaped), direct text (unescaped), and parent.
#[derive(Clone, Debug)]
pub struct Element {
    pub name: String,
    pub attributes: Vec<(String, String)>,
    pub text: String,
    pub parent: Option<usize>,
}

impl Element {
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parse `xml`, returning every element in document order, or what is wrong and where.
pub fn parse(xml: &str) -> Result<Vec<Element>, String> {
    let b = xml.as_bytes();
    let mut at = 0;
    let mut elements: Vec<Element> = Vec::new();
    let mut open: Vec<usize> = Vec::new();
    let mut roots = 0;
    let err = |at: usize, what: &str| Err(format!("byte {at}: {what}"));
    if xml.starts_with("<?xml") {
        at = match xml.find("?>") {
            Some(end) => end + 2,
            None => return err(0, "unterminated XML declaration"),
        };
    }
    while at < b.len() {
        if b[at] == b'<' {
            if xml[at..].starts_with("<!--") {
                match xml[at..].find("-->") {
                    Some(end) => at += end + 3,
                    None => return err(at, "unterminated comment"),
                }
            } else if xml[at..].starts_with("</") {
                let end = match xml[at..].find('>') {
                    Some(end) => at + end,
                    None => return err(at, "unterminated end tag"),
                };
                let name = xml[at + 2..end].trim();
                match open.pop() {
                    Some(i) if elements[i].name == name => {}
                    Some(i) => return err(at, &format!("</{name}> closes <{}>", elements[i].name)),
                    None => return err(at, &format!("</{name}> closes nothing")),
                }
                at = end + 1;
            } else {
                let (element, end, self_closing) = start_tag(xml, at)?;
                if open.is_empty() {
                    roots += 1;
                    if roots > 1 {
                        return err(at, "more than one root element");
                    }
                }
                elements.push(Element {
                    parent: open.last().copied(),
                    ..element
                });
                if !self_closing {
                    open.push(elements.len() - 1);
                }
                at = end;
            }
        } else {
            let end = xml[at..].find('<').map_or(b.len(), |e| at + e);
            let text = unescape(&xml[at..end]).map_err(|e| format!("byte {at}: {e}"))?;
            match open.last() {
                Some(&i) => elements[i].text.push_str(&text),
                None if text.trim().is_empty() => {}
                None => return err(at, "text outside the root element"),
            }
            at = end;
        }
    }
    if let Some(&i) = open.last() {
        return err(at, &format!("<{}> is never closed", elements[i].name));
    }
    if roots == 0 {
        return err(0, "no root element");
    }
    Ok(elements)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.')
}

/// Parse the start tag at `at`: the element, the byte after `>`, and whether it was `/>`.
fn start_tag(xml: &str, at: usize) -> Result<(Element, usize, bool), String> {
    let rest = &xml[at + 1..];
    let name_len = rest.find(|c: char| !is_name_char(c)).unwrap_or(rest.len());
    if name_len == 0 {
        return Err(format!("byte {at}: '<' not followed by a name"));
    }
    let name = rest[..name_len].to_string();
    let mut i = at + 1 + name_len;
    let mut attributes = Vec::new();
    loop {
        let trimmed = xml[i..].trim_start();
        let skipped = xml[i..].len() - trimmed.len();
        i += skipped;
        if trimmed.starts_with("/>") {
            return Ok((element(name, attributes), i + 2, true));
        }
        if trimmed.starts_with('>') {
            return Ok((element(name, attributes), i + 1, false));
        }
        if skipped == 0 {
            return Err(format!(
                "byte {i}: expected whitespace, '>' or '/>' in <{name}>"
            ));
        }
        let attr_len = trimmed.find(|c: char| !is_name_char(c)).unwrap_or(0);
        if attr_len == 0 {
            return Err(format!("byte {i}: bad attribute in <{name}>"));
        }
        let attr = trimmed[..attr_len].to_string();
        let after = &trimmed[attr_len..];
        let Some(quoted) = after.strip_prefix("=\"") else {
            return Err(format!("byte {i}: attribute {attr} is not =\"...\""));
        };
        let Some(close) = quoted.find('"') else {
            return Err(format!("byte {i}: attribute {attr} is not closed"));
        };
        let raw = &quoted[..close];
        if raw.contains('<') {
            return Err(format!("byte {i}: '<' inside attribute {attr}"));
        }
        if attributes.iter().any(|(n, _)| *n == attr) {
            return Err(format!("byte {i}: attribute {attr} given twice"));
        }
        let value = unescape(raw).map_err(|e| format!("byte {i}: {e}"))?;
        attributes.push((attr, value));
        i += attr_len + 2 + close + 1;
    }
}

fn element(name: String, attributes: Vec<(String, String)>) -> Element {
    Element {
        name,
        attributes,
        text: String::new(),
        parent: None,
    }
}

/// Replace entities and character references; a bare `&` or an unknown entity is an error,
/// and so is a character XML 1.0 does not allow.
pub fn unescape(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let Some(semi) = rest[amp..].find(';') else {
            return Err("'&' without ';'".into());
        };
        let entity = &rest[amp + 1..amp + semi];
        let ch = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| format!("unknown entity &{entity};"))?
            }
        };
        out.push(ch);
        rest = &rest[amp + semi + 1..];
    }
    out.push_str(rest);
    if let Some(bad) = out.chars().find(|&c| {
        ((c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r'))
            || c == '\u{FFFE}'
            || c == '\u{FFFF}'
    }) {
        return Err(format!(
            "character U+{:04X} is not allowed in XML",
            bad as u32
        ));
    }
    Ok(out)
}
