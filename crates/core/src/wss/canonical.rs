//! Exclusive XML canonicalization (without comments, no inclusive prefixes) of an element this
//! access point wrote itself, streamed from its text. Signing eb:Messaging and the Body of an
//! envelope then needs no libxml2 tree of the unsigned envelope: parsing it and canonicalizing
//! two subtrees through libxml2 was about half of what signing cost besides the key operation.
//!
//! It covers what our writers produce: elements, attributes, namespace declarations, and text
//! with entity and character references. It declines (`None`) anything else — comments,
//! CDATA, processing instructions, a DOCTYPE, whitespace characters written literally in an
//! attribute value (they would need attribute-value normalization), a literal carriage return
//! in text (line-end normalization), characters XML does not allow — and the caller then
//! canonicalizes with libxml2. Debug builds compare every use with libxml2's result.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use std::borrow::Cow;

/// The exclusive canonical form of `element` (one element, nothing around it), whose
/// ancestors declare `inherited` (prefix, namespace URI; "" is the default namespace).
pub fn exclusive(element: &str, inherited: &[(&str, &str)]) -> Option<String> {
    let mut reader = Reader::from_str(element);
    reader.config_mut().check_end_names = true;
    let mut state = State {
        out: String::with_capacity(element.len() + 256),
        declared: inherited.iter().map(|(p, u)| ((*p).to_owned(), (*u).to_owned())).collect(),
        rendered: Vec::new(),
        open: Vec::new(),
    };
    let mut finished = false;
    loop {
        match reader.read_event().ok()? {
            Event::Start(start) if !finished => state.open(element, &start)?,
            Event::Empty(start) if !finished => {
                state.open(element, &start)?;
                state.close(element, start.name().into_inner())?;
                finished = state.open.is_empty();
            }
            Event::End(end) => {
                state.close(element, end.name().into_inner())?;
                finished = state.open.is_empty();
            }
            Event::Text(text) if !state.open.is_empty() => {
                let text = within(element, &text)?;
                if !push_checked(&mut state.out, text, text_escape, |b| b == b'\r') || text.contains("]]>") {
                    return None;
                }
            }
            Event::GeneralRef(reference) if !state.open.is_empty() => {
                let c = match reference.resolve_char_ref().ok()? {
                    Some(c) => c,
                    None => predefined(&reference.decode().ok()?)?,
                };
                if !is_xml_char(c) {
                    return None;
                }
                push_checked(&mut state.out, c.encode_utf8(&mut [0; 4]), text_escape, |_| false);
            }
            Event::Eof if finished => return Some(state.out),
            _ => return None,
        }
    }
}

/// An element open in the output: how many declarations and rendered namespaces were in
/// scope before it.
struct Open {
    declared: usize,
    rendered: usize,
}

struct State {
    out: String,
    /// Namespace declarations in scope, innermost last.
    declared: Vec<(String, String)>,
    /// Namespace declarations written on output ancestors, innermost last.
    rendered: Vec<(String, String)>,
    open: Vec<Open>,
}

impl State {
    /// Writes the start tag of `start`, a tag read from `input`.
    fn open(&mut self, input: &str, start: &BytesStart<'_>) -> Option<()> {
        let name = within(input, start.name().into_inner())?;
        let scope = Open { declared: self.declared.len(), rendered: self.rendered.len() };
        // The attributes, read once: (qualified name, raw value). Kept on the stack: a tag
        // with more is left to libxml2 (ours have at most three).
        let mut attributes = [("", ""); MAX_ATTRIBUTES];
        let mut count = 0;
        if !start.attributes_raw().iter().all(u8::is_ascii_whitespace) {
            for attribute in start.attributes() {
                let attribute = attribute.ok()?;
                if count == MAX_ATTRIBUTES {
                    return None;
                }
                attributes[count] = (within(input, attribute.key.into_inner())?, within(input, &attribute.value)?);
                count += 1;
            }
        }
        let attributes = &attributes[..count];
        // Declarations first: they bind the prefixes of this very tag.
        for &(key, raw) in attributes {
            let prefix = match key.strip_prefix("xmlns") {
                Some("") => "",
                Some(rest) => match rest.strip_prefix(':') {
                    Some(prefix) => prefix,
                    None => continue,
                },
                None => continue,
            };
            let value = attribute_value(raw)?;
            if prefix == "xml" || prefix == "xmlns" || (value.is_empty() && !prefix.is_empty()) {
                return None;
            }
            self.declared.push((prefix.to_owned(), value.into_owned()));
        }
        let declared = &self.declared;
        let (prefix, _) = split(name);
        let element_namespace = match lookup(declared, prefix) {
            Some(uri) => uri,
            None if prefix.is_empty() => "",
            None => return None,
        };
        // Namespaces the element visibly uses (its own, its attributes' prefixes), and its
        // attributes keyed as c14n sorts them: namespace URI, then local name.
        let mut used = [("", ""); MAX_ATTRIBUTES + 1];
        used[0] = (prefix, element_namespace);
        let mut used_count = 1;
        let mut sorted = [("", "", "", ""); MAX_ATTRIBUTES];
        let mut sorted_count = 0;
        for &(key, raw) in attributes {
            if key == "xmlns" || key.starts_with("xmlns:") {
                continue;
            }
            let (prefix, local) = split(key);
            let namespace = if prefix.is_empty() { "" } else { lookup(declared, prefix)? };
            if !prefix.is_empty() && prefix != "xml" {
                used[used_count] = (prefix, namespace);
                used_count += 1;
            }
            sorted[sorted_count] = (namespace, local, key, raw);
            sorted_count += 1;
        }
        let sorted = &mut sorted[..sorted_count];
        sorted.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        if sorted.windows(2).any(|w| w[0].0 == w[1].0 && w[0].1 == w[1].1) {
            return None;
        }
        let used = &mut used[..used_count];
        used.sort_unstable();
        let out = &mut self.out;
        out.push('<');
        out.push_str(name);
        let mut previous: Option<&str> = None;
        for &(prefix, uri) in used.iter() {
            if previous.replace(prefix) == Some(prefix) {
                continue;
            }
            let shown = self.rendered.iter().rev().find(|(p, _)| p == prefix).map(|(_, u)| u.as_str());
            // Not repeated when an output ancestor wrote the same; the default namespace
            // counts as "" until one is written (then `xmlns=""` undoes it).
            if shown.unwrap_or("") == uri && (shown.is_some() || prefix.is_empty()) {
                continue;
            }
            out.push_str(if prefix.is_empty() { " xmlns" } else { " xmlns:" });
            out.push_str(prefix);
            out.push_str("=\"");
            push_checked(out, uri, attribute_escape, |_| false);
            out.push('"');
            self.rendered.push((prefix.to_owned(), uri.to_owned()));
        }
        for &(_, _, key, raw) in sorted.iter() {
            out.push(' ');
            out.push_str(key);
            out.push_str("=\"");
            push_checked(out, &attribute_value(raw)?, attribute_escape, |_| false);
            out.push('"');
        }
        out.push('>');
        self.open.push(scope);
        Some(())
    }

    /// Closes the innermost open element, named `name` (None when there is none).
    fn close(&mut self, input: &str, name: &[u8]) -> Option<()> {
        let scope = self.open.pop()?;
        self.out.push_str("</");
        self.out.push_str(within(input, name)?);
        self.out.push('>');
        self.declared.truncate(scope.declared);
        self.rendered.truncate(scope.rendered);
        Some(())
    }
}

/// The namespace bound to `prefix` (`xml` is always bound; an empty binding is none).
fn lookup<'d>(declared: &'d [(String, String)], prefix: &str) -> Option<&'d str> {
    if prefix == "xml" {
        return Some(crate::ebms::ns::XML);
    }
    declared.iter().rev().find(|(p, _)| p == prefix).map(|(_, u)| u.as_str()).filter(|u| !u.is_empty())
}

fn split(name: &str) -> (&str, &str) {
    name.split_once(':').unwrap_or(("", name))
}

fn predefined(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => return None,
    })
}

/// Elements with more attributes are left to libxml2 (ours have at most three).
const MAX_ATTRIBUTES: usize = 8;

/// `part`, a slice the reader took from `input`, as the `str` it is in `input` (no second
/// UTF-8 check; `get` only checks the two ends fall between characters).
fn within<'a>(input: &'a str, part: &[u8]) -> Option<&'a str> {
    let offset = (part.as_ptr() as usize).checked_sub(input.as_ptr() as usize)?;
    input.get(offset..offset.checked_add(part.len())?)
}

/// An attribute's value, unescaped, when it holds only what the streamed form covers: no
/// whitespace character written literally (attribute-value normalization would turn it into
/// a space), no `<`, only characters XML allows.
fn attribute_value(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.bytes().all(|b| b >= 0x20 && b != b'<') || !(raw.is_ascii() || raw.chars().all(is_xml_char)) {
        return None;
    }
    let value = quick_xml::escape::unescape(raw).ok()?;
    // A character reference may name a character XML does not allow.
    if let Cow::Owned(unescaped) = &value
        && !unescaped.chars().all(is_xml_char)
    {
        return None;
    }
    Some(value)
}

/// Appends `text` with each byte `escape` names replaced by its reference (all ASCII, so the
/// slices between stay whole characters), checking on the way that every character is one
/// XML 1.0 allows and no byte is one `refused` names; false (output unusable) when one is.
#[inline]
fn push_checked(
    out: &mut String,
    text: &str,
    escape: impl Fn(u8) -> Option<&'static str>,
    refused: impl Fn(u8) -> bool,
) -> bool {
    let bytes = text.as_bytes();
    let mut from = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Most bytes are plain: skip them in a tight loop.
        if PLAIN[usize::from(bytes[i])] {
            i += 1;
            continue;
        }
        let byte = bytes[i];
        if (byte < 0x20 && !matches!(byte, b'\t' | b'\n' | b'\r')) || refused(byte) {
            return false;
        }
        if let Some(reference) = escape(byte) {
            out.push_str(&text[from..i]);
            out.push_str(reference);
            from = i + 1;
        }
        i += 1;
    }
    out.push_str(&text[from..]);
    text.is_ascii() || text.chars().all(is_xml_char)
}

/// Bytes that are never escaped, refused or checked further: printable ASCII other than the
/// characters some escape names. (Bytes of multi-byte characters are looked at, then passed.)
static PLAIN: [bool; 256] = {
    let mut plain = [false; 256];
    let mut byte = 0x20;
    while byte < 0x7F {
        plain[byte] = !matches!(byte as u8, b'&' | b'<' | b'>' | b'"');
        byte += 1;
    }
    plain
};

/// XML 1.0's `Char` production.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// C14N §2.3, text nodes (also the subtree walk's, `canonical_tree`).
pub(super) fn text_escape(byte: u8) -> Option<&'static str> {
    match byte {
        b'&' => Some("&amp;"),
        b'<' => Some("&lt;"),
        b'>' => Some("&gt;"),
        b'\r' => Some("&#xD;"),
        _ => None,
    }
}

/// C14N §2.3, attribute values and namespace URIs (also the subtree walk's).
pub(super) fn attribute_escape(byte: u8) -> Option<&'static str> {
    match byte {
        b'&' => Some("&amp;"),
        b'<' => Some("&lt;"),
        b'"' => Some("&quot;"),
        b'\t' => Some("&#x9;"),
        b'\n' => Some("&#xA;"),
        b'\r' => Some("&#xD;"),
        _ => None,
    }
}

/// `value` as canonical XML writes an attribute value, so that parsing and canonicalizing it
/// gives back the same bytes.
pub fn push_attribute_value(out: &mut String, value: &str) {
    push_checked(out, value, attribute_escape, |_| false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wss::xml::Xml;

    const CONTEXT: [(&str, &str); 3] = [("a", "urn:a"), ("b", "urn:b"), ("", "urn:default")];

    /// libxml2's exclusive c14n of the root's first child, with `element` placed under a root
    /// that declares `CONTEXT`.
    fn libxml2(element: &str) -> String {
        let document = format!(r#"<a:root xmlns:a="urn:a" xmlns:b="urn:b" xmlns="urn:default">{element}</a:root>"#);
        let xml = Xml::parse(document.as_bytes()).unwrap();
        let root = xml.root().unwrap();
        let first = root.get_child_elements().into_iter().next().unwrap();
        String::from_utf8(xml.c14n_subtree(&first, &[]).unwrap()).unwrap()
    }

    #[test]
    fn agrees_with_libxml2() {
        for element in [
            r#"<a:x/>"#,
            r#"<a:x b:z="2" y="1" a:w="0"><b:y/>t</a:x>"#,
            r#"<x>default</x>"#,
            r#"<a:x><y xmlns=""><z/></y></a:x>"#,
            r#"<a:x xmlns:c="urn:c" xmlns:unused="urn:u"><c:y c:q="1"/><a:z/></a:x>"#,
            r#"<a:x xmlns:a="urn:other"><a:y xmlns:a="urn:a"/></a:x>"#,
            r#"<a:x v="&amp;&lt;&gt;&quot;&apos;&#9;&#10;&#13;&#233;">&amp;&lt;&gt;&quot;&apos;&#13;&#x1F600;é "q" 'a'</a:x>"#,
            r#"<a:x xml:lang="es" z="1"><b:y xml:lang="en"/></a:x>"#,
            r#"<a:x	 z = '1'  ></a:x   >"#,
            r#"<a:x><a:x><a:x/></a:x></a:x>"#,
            "<a:x>\n  line\ttab\n</a:x>",
            r#"<y xmlns="urn:y"><a:x><z/></a:x></y>"#,
            r#"<a:x h="2" g="3" f="4" e="5" d="6" c="7" b="8" a="9"/>"#,
        ] {
            assert_eq!(exclusive(element, &CONTEXT).as_deref(), Some(libxml2(element).as_str()), "{element}");
        }
    }

    #[test]
    fn declines_what_it_does_not_cover() {
        for element in [
            "<a:x><!-- c --></a:x>",
            "<a:x><![CDATA[c]]></a:x>",
            "<a:x><?pi x?></a:x>",
            "<a:x v=\"a\nb\"/>",
            "<a:x>a\r\nb</a:x>",
            "<a:x>&unknown;</a:x>",
            "<a:x>\u{1}</a:x>",
            "<a:x>&#1;</a:x>",
            "<c:x/>",
            "<a:x c:y=\"1\"/>",
            "<a:x b:y=\"1\" a:y=\"2\" xmlns:b=\"urn:a\"/>",
            "<a:x/><a:y/>",
            "<a:x>",
            "<a:x></a:y>",
            "text<a:x/>",
            "<a:x/>text",
            "<a:x xmlns:d=\"\"/>",
            r#"<a:x i="1" h="2" g="3" f="4" e="5" d="6" c="7" b="8" a="9"/>"#,
        ] {
            assert_eq!(exclusive(element, &CONTEXT), None, "{element}");
        }
    }

    use proptest::prelude::*;

    /// Elements from a small grammar that reaches every rule above: prefixed and unprefixed
    /// names, local and inherited declarations (some unused, some redeclaring), attributes in
    /// every namespace, `xml:lang`, and text and values with references and non-ASCII.
    fn element() -> impl Strategy<Value = String> {
        let name = prop::sample::select(vec!["a:e", "b:e", "c:f", "e", "a:g"]);
        let declaration = prop::sample::select(vec![
            "",
            r#" xmlns:c="urn:c""#,
            r#" xmlns="""#,
            r#" xmlns="urn:z""#,
            r#" xmlns:a="urn:b""#,
        ]);
        let attribute = prop::sample::select(vec![
            "",
            r#" v="1""#,
            r#" b:v="&amp;&#10;""#,
            r#" a:w="&quot;é""#,
            r#" xml:lang="es""#,
            r#" c:v="x""#,
        ]);
        let text = prop::sample::select(vec!["", "t", "&lt;&amp;&gt;", "&#13;&#x9;", " é ", "\n"]);
        let leaf = (name.clone(), declaration.clone(), attribute.clone(), text.clone())
            .prop_map(|(n, d, a, t)| format!("<{n}{d}{a} xmlns:c=\"urn:c\">{t}</{n}>"));
        leaf.prop_recursive(3, 12, 3, move |inner| {
            (name.clone(), declaration.clone(), attribute.clone(), text.clone(), prop::collection::vec(inner, 0..3))
                .prop_map(|(n, d, a, t, kids)| format!("<{n}{d}{a} xmlns:c=\"urn:c\">{t}{}</{n}>", kids.concat()))
        })
    }

    proptest! {
        #[test]
        fn agrees_with_libxml2_on_generated_elements(element in element()) {
            // Duplicate attributes after a redeclaration are refused by both.
            if let Ok(document) = Xml::parse(format!(r#"<a:root xmlns:a="urn:a" xmlns:b="urn:b" xmlns="urn:default">{element}</a:root>"#).as_bytes()) {
                drop(document);
                prop_assert_eq!(exclusive(&element, &CONTEXT), Some(libxml2(&element)));
            } else {
                prop_assert_eq!(exclusive(&element, &CONTEXT), None);
            }
        }
    }
}
